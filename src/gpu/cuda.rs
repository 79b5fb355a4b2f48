//! The CUDA link executor: `kernels/links.cu` compiled by NVRTC at start-up for the GPU found, the
//! bundle's weights laid out once in device memory, and one fused launch per tick.
//!
//! Start-up ([`CudaLinks::new`]) checks that the driver library and NVRTC can be loaded before any
//! call (cudarc panics on a missing library otherwise), picks the GPU's compute capability (or the
//! newest NVRTC supports below it) and loads the PTX from the on-disk cache when a previous start
//! compiled the same source with the same options for the same architecture, driver and NVRTC
//! ([`cache_dir`]); NVRTC errors carry the compiler log. Everything the tick needs (device
//! buffers, pinned staging buffers) is allocated here; [`CudaLinks::predict`] and
//! [`CudaLinks::predict_batch`] never allocate: they launch through the driver API with fixed
//! argument arrays.

use crate::model_set::ModelSet;
use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, DriverError, sys,
};
use cudarc::nvrtc::{self, CompileError, CompileOptions, Ptx};

use super::layout::{DeviceLayout, LayoutError};
use crate::bundle::{Bundle, hex, sha256};
use crate::links::{EnsembleSet, LinkError, LinkSet};
use crate::manifest::OutputKind;

/// The kernel source, embedded.
pub const SOURCE: &str = include_str!("../../kernels/links.cu");

/// Options passed to NVRTC besides the architecture (also used by `.ci/check-kernels.sh`).
pub const COMPILE_OPTIONS: &[&str] = &["--std=c++14"];

/// Threads per block of every kernel.
pub const THREADS: u32 = 256;

/// Dynamic shared memory a block may use without opting in (every CUDA GPU since sm_20).
const MAX_SHARED: usize = 48 * 1024;

/// Errors of the per-tick paths: small and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    #[error("CUDA {call} failed: {code:?}")]
    Driver { call: &'static str, code: sys::CUresult },
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("new weights have other shapes than the ones laid out at start")]
    WeightShapes,
}

/// Why the CUDA path could not start; the caller falls back to the CPU.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GpuInitError {
    #[error("no CUDA driver library (libcuda) found")]
    NoDriver,
    #[error("no NVRTC library (libnvrtc) found")]
    NoNvrtc,
    #[error("the CUDA driver reports no GPU")]
    NoDevice,
    #[error("CUDA {call} failed: {code:?}")]
    Driver { call: &'static str, code: sys::CUresult },
    #[error("NVRTC could not compile kernels/links.cu for {arch} (options {options:?}):\n{log}")]
    Compile { arch: String, options: Vec<String>, log: String },
    #[error("the kernels need {need} bytes of shared memory per block, more than {max}")]
    SharedMemory { need: usize, max: usize },
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

impl From<GpuError> for GpuInitError {
    fn from(e: GpuError) -> GpuInitError {
        match e {
            GpuError::Driver { call, code } => GpuInitError::Driver { call, code },
            other => GpuInitError::Compile { arch: String::new(), options: vec![], log: other.to_string() },
        }
    }
}

fn drv(call: &'static str) -> impl Fn(DriverError) -> GpuError {
    move |e| GpuError::Driver { call, code: e.0 }
}

fn drv_init(call: &'static str) -> impl Fn(DriverError) -> GpuInitError {
    move |e| GpuInitError::Driver { call, code: e.0 }
}

/// Where compiled PTX is kept: `$JETLINK_CACHE_DIR`, else `$XDG_CACHE_HOME/jetlink`, else
/// `~/.cache/jetlink`.
pub fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("JETLINK_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|p| p.join("jetlink")))
        .or_else(|| env("HOME").map(|p| p.join(".cache").join("jetlink")))
}

/// Cache file name: hash of the source, the options and the crate version; architecture; driver
/// and NVRTC versions.
pub fn cache_file_name(arch: u32, driver: i32, nvrtc: (i32, i32)) -> String {
    let mut key = Vec::from(SOURCE.as_bytes());
    for o in COMPILE_OPTIONS {
        key.push(0);
        key.extend_from_slice(o.as_bytes());
    }
    key.push(0);
    key.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    let h = hex(&sha256(&key));
    format!("links-{}-compute_{arch}-driver{driver}-nvrtc{}.{}.ptx", &h[..16], nvrtc.0, nvrtc.1)
}

/// Where the PTX of this start came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PtxOrigin {
    /// Read from this cache file.
    Cached(PathBuf),
    /// Compiled now (and written to the cache file when there is one).
    Compiled(Option<PathBuf>),
}

/// What was found and chosen at start-up.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub name: String,
    pub compute: (i32, i32),
    /// The virtual architecture compiled for, e.g. 87 for `compute_87`.
    pub arch: u32,
    /// `cuDriverGetVersion`, e.g. 12060.
    pub driver: i32,
    pub nvrtc: (i32, i32),
    pub ptx: PtxOrigin,
    pub compile_ms: f64,
}

/// Page-locked host memory for the staging copies (allocated once; freed on drop).
struct Pinned<T: Copy> {
    ptr: *mut T,
    len: usize,
}

impl<T: Copy> Pinned<T> {
    fn new(len: usize) -> Result<Pinned<T>, GpuError> {
        let mut p: *mut c_void = std::ptr::null_mut();
        let bytes = (len * std::mem::size_of::<T>()).max(1);
        unsafe { sys::cuMemAllocHost_v2(&mut p, bytes) }.result().map_err(drv("cuMemAllocHost"))?;
        Ok(Pinned { ptr: p.cast(), len })
    }
    fn slice(&self, n: usize) -> &[T] {
        unsafe { std::slice::from_raw_parts(self.ptr, n.min(self.len)) }
    }
    fn slice_mut(&mut self, n: usize) -> &mut [T] {
        unsafe { std::slice::from_raw_parts_mut(self.ptr, n.min(self.len)) }
    }
}

impl<T: Copy> Drop for Pinned<T> {
    fn drop(&mut self) {
        unsafe {
            let _ = sys::cuMemFreeHost(self.ptr.cast());
        }
    }
}

struct Kernels {
    fused_f32: CudaFunction,
    link_one: CudaFunction,
    ensemble_one: CudaFunction,
    empty: CudaFunction,
}

/// The bundle's links on one GPU. Field order matters: host staging is freed before the context.
pub struct CudaLinks {
    h_rows: Pinned<f32>,
    h_out: Pinned<f32>,
    h_masks: Pinned<u64>,
    layout: DeviceLayout,
    max_batch: usize,
    // Raw device pointers of the buffers below, for allocation-free launches.
    p_lp: u64,
    p_ep: u64,
    p_models: u64,
    p_links: u64,
    p_rows: u64,
    p_out: u64,
    p_masks: u64,
    p_z: u64,
    lp: CudaSlice<f32>,
    ep: CudaSlice<f32>,
    _models: CudaSlice<u32>,
    _links: CudaSlice<u32>,
    _rows: CudaSlice<f32>,
    _out: CudaSlice<f32>,
    _masks: CudaSlice<u64>,
    _z: CudaSlice<f32>,
    k: Kernels,
    start: CudaEvent,
    stop: CudaEvent,
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
    info: DeviceInfo,
}

/// Check the libraries, then create a context on GPU 0 (cudarc panics if a library is missing, so
/// this is the only way in).
fn open_context() -> Result<Arc<CudaContext>, GpuInitError> {
    if !unsafe { sys::is_culib_present() } {
        return Err(GpuInitError::NoDriver);
    }
    if !unsafe { nvrtc::sys::is_culib_present() } {
        return Err(GpuInitError::NoNvrtc);
    }
    cudarc::driver::result::init().map_err(drv_init("cuInit"))?;
    let count = CudaContext::device_count().map_err(drv_init("cuDeviceGetCount"))?;
    if count < 1 {
        return Err(GpuInitError::NoDevice);
    }
    CudaContext::new(0).map_err(drv_init("cuCtxCreate"))
}

fn nvrtc_version() -> (i32, i32) {
    let (mut a, mut b) = (0, 0);
    let _ = unsafe { nvrtc::sys::nvrtcVersion(&mut a, &mut b) };
    (a, b)
}

/// The newest virtual architecture NVRTC supports that is not newer than the GPU's.
fn pick_arch(compute: (i32, i32)) -> u32 {
    let want = (compute.0 * 10 + compute.1) as u32;
    let mut count = 0;
    if unsafe { nvrtc::sys::nvrtcGetNumSupportedArchs(&mut count) } != nvrtc::sys::nvrtcResult::NVRTC_SUCCESS
        || count <= 0
    {
        return want;
    }
    let mut archs = vec![0i32; count as usize];
    if unsafe { nvrtc::sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }
        != nvrtc::sys::nvrtcResult::NVRTC_SUCCESS
    {
        return want;
    }
    archs.into_iter().map(|a| a as u32).filter(|&a| a <= want).max().unwrap_or(want)
}

/// Compile the kernels for `compute_{arch}`, with the compiler log on failure.
pub fn compile(arch: u32) -> Result<Ptx, GpuInitError> {
    let mut options = vec![format!("--gpu-architecture=compute_{arch}")];
    options.extend(COMPILE_OPTIONS.iter().map(|s| s.to_string()));
    let opts =
        CompileOptions { options: options.clone(), name: Some("links.cu".into()), ..Default::default() };
    nvrtc::compile_ptx_with_opts(SOURCE, opts).map_err(|e| {
        let log = match &e {
            CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => format!("{other:?}"),
        };
        GpuInitError::Compile { arch: format!("compute_{arch}"), options, log }
    })
}

fn load_kernels(ctx: &Arc<CudaContext>, ptx: Ptx) -> Result<Kernels, DriverError> {
    let m = ctx.load_module(ptx)?;
    Ok(Kernels {
        fused_f32: m.load_function("links_fused_f32")?,
        link_one: m.load_function("link_one_f32")?,
        ensemble_one: m.load_function("ensemble_one_f32")?,
        empty: m.load_function("empty_kernel")?,
    })
}

/// Load the kernels from the cache or compile them (and fill the cache).
fn kernels_for(
    ctx: &Arc<CudaContext>,
    arch: u32,
    driver: i32,
    nv: (i32, i32),
) -> Result<(Kernels, PtxOrigin), GpuInitError> {
    let path = cache_dir().map(|d| d.join(cache_file_name(arch, driver, nv)));
    if let Some(p) = &path
        && let Ok(text) = std::fs::read_to_string(p)
    {
        match load_kernels(ctx, Ptx::from_src(text)) {
            Ok(k) => return Ok((k, PtxOrigin::Cached(p.clone()))),
            Err(e) => log::warn!("cached PTX {} did not load ({e:?}); recompiling", p.display()),
        }
    }
    let ptx = compile(arch)?;
    let text = ptx.to_src();
    let k = load_kernels(ctx, ptx).map_err(drv_init("cuModuleLoadData"))?;
    let written = path.filter(|p| {
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        let ok = p.parent().is_some_and(|d| std::fs::create_dir_all(d).is_ok())
            && std::fs::write(&tmp, &text).is_ok()
            && std::fs::rename(&tmp, p).is_ok();
        if !ok {
            log::warn!("could not write the PTX cache {}", p.display());
        }
        ok
    });
    Ok((k, PtxOrigin::Compiled(written)))
}

fn dptr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    s.device_ptr(stream).0
}

impl CudaLinks {
    /// Lay out the links on GPU 0 for up to `max_batch` frames per launch.
    pub fn new(
        kinds: &[OutputKind],
        sizes: &[usize],
        links: &LinkSet,
        ensembles: &EnsembleSet,
        max_batch: usize,
    ) -> Result<CudaLinks, GpuInitError> {
        let layout = DeviceLayout::new(kinds, sizes, links, ensembles)?;
        let need = layout.fused_shared_bytes();
        if need > MAX_SHARED {
            return Err(GpuInitError::SharedMemory { need, max: MAX_SHARED });
        }
        let ctx = open_context()?;
        // One stream, no cross-stream tracking: launches must not record events or allocate.
        unsafe { ctx.disable_event_tracking() };
        let compute = ctx.compute_capability().map_err(drv_init("cuDeviceGetAttribute"))?;
        let name = ctx.name().map_err(drv_init("cuDeviceGetName"))?;
        let mut driver = 0;
        unsafe { sys::cuDriverGetVersion(&mut driver) }.result().map_err(drv_init("cuDriverGetVersion"))?;
        let nv = nvrtc_version();
        let arch = pick_arch(compute);
        let t0 = std::time::Instant::now();
        let (k, ptx) = kernels_for(&ctx, arch, driver, nv)?;
        let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
        let stream = ctx.new_stream().map_err(drv_init("cuStreamCreate"))?;
        let max_batch = max_batch.max(1);
        let stride = layout.stride as usize;
        let up = |e| drv_init("cuMemcpyHtoD")(e);
        let lp = stream.clone_htod(&links.params).map_err(up)?;
        let ep = stream.clone_htod(&ensembles.params).map_err(up)?;
        let models = stream.clone_htod(&layout.models).map_err(up)?;
        let dlinks = stream.clone_htod(&layout.links).map_err(up)?;
        let alloc = |e| drv_init("cuMemAlloc")(e);
        let rows = stream.alloc_zeros::<f32>(max_batch * stride).map_err(alloc)?;
        let out = stream.alloc_zeros::<f32>(max_batch * stride).map_err(alloc)?;
        let masks = stream.alloc_zeros::<u64>(max_batch).map_err(alloc)?;
        let z = stream.alloc_zeros::<f32>(*layout.z_off.last().unwrap_or(&0) as usize + 1).map_err(alloc)?;
        let ev = |e| drv_init("cuEventCreate")(e);
        let start = ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(ev)?;
        let stop = ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(ev)?;
        stream.synchronize().map_err(drv_init("cuStreamSynchronize"))?;
        Ok(CudaLinks {
            h_rows: Pinned::new(max_batch * stride)?,
            h_out: Pinned::new(max_batch * stride)?,
            h_masks: Pinned::new(max_batch)?,
            p_lp: dptr(&lp, &stream),
            p_ep: dptr(&ep, &stream),
            p_models: dptr(&models, &stream),
            p_links: dptr(&dlinks, &stream),
            p_rows: dptr(&rows, &stream),
            p_out: dptr(&out, &stream),
            p_masks: dptr(&masks, &stream),
            p_z: dptr(&z, &stream),
            layout,
            max_batch,
            lp,
            ep,
            _models: models,
            _links: dlinks,
            _rows: rows,
            _out: out,
            _masks: masks,
            _z: z,
            k,
            start,
            stop,
            stream,
            ctx,
            info: DeviceInfo { name, compute, arch, driver, nvrtc: nv, ptx, compile_ms },
        })
    }

    /// [`new`](Self::new) with a bundle's models and weights.
    pub fn from_bundle(bundle: &Bundle, max_batch: usize) -> Result<CudaLinks, GpuInitError> {
        let kinds: Vec<OutputKind> = bundle.models.iter().map(|m| m.kind).collect();
        CudaLinks::new(&kinds, &bundle.sizes(), &bundle.links, &bundle.ensembles, max_batch)
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    pub fn layout(&self) -> &DeviceLayout {
        &self.layout
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn check(&self, active: ModelSet) -> Result<(), LinkError> {
        let n = self.layout.n as usize;
        if active.exceeds(n) {
            return Err(LinkError::MaskOutOfRange { mask: active, models: n });
        }
        Ok(())
    }

    /// Same contract as [`crate::links::Predictor::predict`], on the GPU: copy the row in, one
    /// fused launch, copy the row out, wait. Never allocates.
    pub fn predict(&mut self, active: ModelSet, row: &[f32], out: &mut [f32]) -> Result<(), GpuError> {
        let stride = self.layout.stride as usize;
        if row.len() != stride {
            return Err(LinkError::RowLength { expected: stride, got: row.len() }.into());
        }
        if out.len() != stride {
            return Err(LinkError::OutLength { expected: stride, got: out.len() }.into());
        }
        self.check(active)?;
        self.h_rows.slice_mut(stride).copy_from_slice(row);
        self.upload_staged(1, false)?;
        self.launch_fused(active, 1, false)?;
        self.download(out)
    }

    /// A batch of frames in one launch: frame f of `rows` (each one row long) with active mask
    /// `masks[f]`; `out` like `rows`. At most [`max_batch`](Self::max_batch) frames.
    pub fn predict_batch(
        &mut self,
        masks: &[ModelSet],
        rows: &[f32],
        out: &mut [f32],
    ) -> Result<(), GpuError> {
        let stride = self.layout.stride as usize;
        let frames = masks.len();
        if frames == 0 || frames > self.max_batch || rows.len() != frames * stride {
            return Err(LinkError::BadBatch { got: rows.len(), max: self.max_batch }.into());
        }
        if out.len() != rows.len() {
            return Err(LinkError::OutLength { expected: rows.len(), got: out.len() }.into());
        }
        for &m in masks {
            self.check(m)?;
        }
        self.h_rows.slice_mut(rows.len()).copy_from_slice(rows);
        self.stage_masks(masks);
        self.upload_staged(frames, true)?;
        self.launch_fused(ModelSet::EMPTY, frames, true)?;
        self.download(out)
    }

    /// Stage per-frame sets for the kernel, which reads each as a `u64` word.
    fn stage_masks(&mut self, masks: &[ModelSet]) {
        for (h, m) in self.h_masks.slice_mut(masks.len()).iter_mut().zip(masks) {
            *h = u64::from(m.bits());
        }
    }

    /// Copy `frames` staged rows (and masks) to the device, asynchronously.
    fn upload_staged(&mut self, frames: usize, masks: bool) -> Result<(), GpuError> {
        let s = self.stream.cu_stream();
        let bytes = frames * self.layout.stride as usize * 4;
        unsafe { sys::cuMemcpyHtoDAsync_v2(self.p_rows, self.h_rows.ptr.cast(), bytes, s) }
            .result()
            .map_err(drv("cuMemcpyHtoDAsync"))?;
        if masks {
            unsafe { sys::cuMemcpyHtoDAsync_v2(self.p_masks, self.h_masks.ptr.cast(), frames * 8, s) }
                .result()
                .map_err(drv("cuMemcpyHtoDAsync"))?;
        }
        Ok(())
    }

    /// Copy `out.len()` values of the device output back and wait for the stream.
    fn download(&mut self, out: &mut [f32]) -> Result<(), GpuError> {
        let s = self.stream.cu_stream();
        let n = out.len().min(self.h_out.len);
        unsafe { sys::cuMemcpyDtoHAsync_v2(self.h_out.ptr.cast(), self.p_out, n * 4, s) }
            .result()
            .map_err(drv("cuMemcpyDtoHAsync"))?;
        self.synchronize()?;
        out[..n].copy_from_slice(self.h_out.slice(n));
        Ok(())
    }

    /// Stage rows (and per-frame masks) on the device for the launch-only methods below.
    pub fn upload_rows(&mut self, rows: &[f32], masks: Option<&[ModelSet]>) -> Result<(), GpuError> {
        let stride = self.layout.stride as usize;
        let frames = rows.len() / stride;
        if frames == 0 || frames > self.max_batch || rows.len() != frames * stride {
            return Err(LinkError::BadBatch { got: rows.len(), max: self.max_batch }.into());
        }
        self.h_rows.slice_mut(rows.len()).copy_from_slice(rows);
        if let Some(m) = masks {
            self.stage_masks(&m[..m.len().min(frames)]);
        }
        self.upload_staged(frames, masks.is_some())?;
        self.synchronize()
    }

    /// Read back `out.len()` values of the device output (after a launch-only method).
    pub fn read_out(&mut self, out: &mut [f32]) -> Result<(), GpuError> {
        self.download(out)
    }

    fn launch(
        &self,
        f: &CudaFunction,
        grid: (u32, u32),
        shared: usize,
        params: &mut [*mut c_void],
    ) -> Result<(), GpuError> {
        unsafe {
            sys::cuLaunchKernel(
                f.cu_function(),
                grid.0,
                grid.1,
                1,
                THREADS,
                1,
                1,
                shared as u32,
                self.stream.cu_stream(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        }
        .result()
        .map_err(drv("cuLaunchKernel"))
    }

    /// The fused kernel over `frames` staged rows: every frame with `active`, or with its own mask
    /// when `per_frame` (staged by [`upload_rows`](Self::upload_rows)). Does not wait.
    pub fn launch_fused(&mut self, active: ModelSet, frames: usize, per_frame: bool) -> Result<(), GpuError> {
        let l = &self.layout;
        let (mut lp, mut ep, mut models, mut links) = (self.p_lp, self.p_ep, self.p_models, self.p_links);
        let (mut n, mut stride, mut mask) = (l.n, l.stride, u64::from(active.bits()));
        let mut masks = if per_frame { self.p_masks } else { 0u64 };
        let (mut rows, mut out) = (self.p_rows, self.p_out);
        let (mut mx, mut ma, mut mz, mut my) = (l.max_x, l.max_a, l.max_z, l.max_y);
        let mut params: [*mut c_void; 14] = [
            (&mut lp as *mut u64).cast(),
            (&mut ep as *mut u64).cast(),
            (&mut models as *mut u64).cast(),
            (&mut links as *mut u64).cast(),
            (&mut n as *mut u32).cast(),
            (&mut stride as *mut u32).cast(),
            (&mut mask as *mut u64).cast(),
            (&mut masks as *mut u64).cast(),
            (&mut rows as *mut u64).cast(),
            (&mut out as *mut u64).cast(),
            (&mut mx as *mut u32).cast(),
            (&mut ma as *mut u32).cast(),
            (&mut mz as *mut u32).cast(),
            (&mut my as *mut u32).cast(),
        ];
        let frames = frames.clamp(1, self.max_batch) as u32;
        self.launch(&self.k.fused_f32, (l.n, frames), l.fused_shared_bytes(), &mut params)
    }

    /// The unfused baseline for frame 0 of the staged rows: one launch per running link, then one
    /// per predicted target for its ensemble. Active targets' slices are not copied. Does not wait.
    pub fn launch_per_link(&mut self, active: ModelSet) -> Result<(), GpuError> {
        let l = &self.layout;
        let n = l.n as usize;
        let k = n - 1;
        for j in 0..n {
            if active.contains(j) {
                continue;
            }
            for s in 0..k {
                if !active.contains(crate::links::source_of_slot(j, s)) {
                    continue;
                }
                let (mut lp, mut models, mut links, mut nn) = (self.p_lp, self.p_models, self.p_links, l.n);
                let (mut jj, mut ss, mut row, mut z, mut zoff) =
                    (j as u32, s as u32, self.p_rows, self.p_z, l.z_off[j]);
                let (mut mx, mut ma) = (l.max_x, l.max_a);
                let mut params: [*mut c_void; 11] = [
                    (&mut lp as *mut u64).cast(),
                    (&mut models as *mut u64).cast(),
                    (&mut links as *mut u64).cast(),
                    (&mut nn as *mut u32).cast(),
                    (&mut jj as *mut u32).cast(),
                    (&mut ss as *mut u32).cast(),
                    (&mut row as *mut u64).cast(),
                    (&mut z as *mut u64).cast(),
                    (&mut zoff as *mut u32).cast(),
                    (&mut mx as *mut u32).cast(),
                    (&mut ma as *mut u32).cast(),
                ];
                self.launch(&self.k.link_one, (1, 1), 4 * (l.max_x + l.max_a) as usize, &mut params)?;
            }
            let (mut ep, mut models, mut links, mut nn) = (self.p_ep, self.p_models, self.p_links, l.n);
            let (mut jj, mut act, mut z, mut zoff, mut out) =
                (j as u32, u64::from(active.bits()), self.p_z, l.z_off[j], self.p_out);
            let mut mz = l.max_z;
            let mut params: [*mut c_void; 10] = [
                (&mut ep as *mut u64).cast(),
                (&mut models as *mut u64).cast(),
                (&mut links as *mut u64).cast(),
                (&mut nn as *mut u32).cast(),
                (&mut jj as *mut u32).cast(),
                (&mut act as *mut u64).cast(),
                (&mut z as *mut u64).cast(),
                (&mut zoff as *mut u32).cast(),
                (&mut out as *mut u64).cast(),
                (&mut mz as *mut u32).cast(),
            ];
            self.launch(&self.k.ensemble_one, (1, 1), 4 * (l.max_z + l.max_y) as usize, &mut params)?;
        }
        Ok(())
    }

    /// An empty kernel, one block: the launch floor.
    pub fn launch_empty(&mut self) -> Result<(), GpuError> {
        self.launch(&self.k.empty, (1, 1), 0, &mut [])
    }

    /// Device time of what `f` enqueues, in µs, measured with CUDA events (waits for it).
    pub fn time_us(&mut self, mut f: impl FnMut(&mut Self) -> Result<(), GpuError>) -> Result<f64, GpuError> {
        self.start.record(&self.stream).map_err(drv("cuEventRecord"))?;
        f(self)?;
        self.stop.record(&self.stream).map_err(drv("cuEventRecord"))?;
        self.stop.synchronize().map_err(drv("cuEventSynchronize"))?;
        let ms = self.start.elapsed_ms(&self.stop).map_err(drv("cuEventElapsedTime"))?;
        Ok(ms as f64 * 1e3)
    }

    /// Fill the device output with NaN, so that an element a kernel fails to write shows up.
    pub fn poison_out(&mut self) -> Result<(), GpuError> {
        let words = self.max_batch * self.layout.stride as usize;
        unsafe { sys::cuMemsetD32Async(self.p_out, 0x7fc0_0000, words, self.stream.cu_stream()) }
            .result()
            .map_err(drv("cuMemsetD32Async"))?;
        self.synchronize()
    }

    /// Wait for everything enqueued.
    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.stream.synchronize().map_err(drv("cuStreamSynchronize"))
    }

    /// Replace the weights (after adaptation) with new values of the same shapes.
    pub fn update_weights(&mut self, links: &LinkSet, ensembles: &EnsembleSet) -> Result<(), GpuError> {
        if links.params.len() != self.lp.len() || ensembles.params.len() != self.ep.len() {
            return Err(GpuError::WeightShapes);
        }
        let s = self.stream.cu_stream();
        unsafe {
            sys::cuMemcpyHtoDAsync_v2(self.p_lp, links.params.as_ptr().cast(), links.params.len() * 4, s)
                .result()
                .map_err(drv("cuMemcpyHtoDAsync"))?;
            sys::cuMemcpyHtoDAsync_v2(
                self.p_ep,
                ensembles.params.as_ptr().cast(),
                ensembles.params.len() * 4,
                s,
            )
            .result()
            .map_err(drv("cuMemcpyHtoDAsync"))?;
        }
        self.synchronize()
    }
}

impl Drop for CudaLinks {
    fn drop(&mut self) {
        // The pinned buffers are freed through the context; make it current on this thread.
        let _ = self.ctx.bind_to_thread();
        let _ = self.stream.synchronize();
    }
}
