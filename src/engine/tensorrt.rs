//! The board engine backend: TensorRT plans, built on the board by `tools/trt/build_plans.sh` and run
//! through a small C++ shim (`tensorrt/shim.cpp`, compiled by `build.rs`). Only with the `tensorrt`
//! cargo feature; see docs/tensorrt.md for the plan naming, the sidecar and what was verified.
//!
//! Shape of it: [`TensorRtBackend::new`] checks the TensorRT library loaded at run time against the
//! headers the shim was compiled with, creates the one TensorRT runtime and the one CUDA stream every
//! engine enqueues on. [`Backend::load`] finds the model's plan from its ONNX path, refuses a plan
//! whose sidecar says it was built for another TensorRT version, board or GPU, deserialises it,
//! creates an execution context on device memory it allocates itself, and allocates every buffer a
//! frame needs. [`Engine::run`] then only copies, enqueues and waits: no allocation.

use std::ffi::{CStr, CString, c_char, c_void};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result, bail, ensure};

use super::{Backend, Engine, EngineError, EngineInfo, TensorInfo};
use crate::board::Board;
use crate::manifest::ModelSpec;

mod ffi;
pub mod plan;

pub use plan::{PlanSidecar, PlanTarget, TrtVersion, plan_path};

/// The TensorRT version of the headers the shim was compiled against.
pub fn compiled_version() -> TrtVersion {
    let (mut major, mut minor, mut patch) = (0, 0, 0);
    // SAFETY: writes three integers through valid pointers.
    unsafe { ffi::jl_trt_compiled_version(&mut major, &mut minor, &mut patch) };
    TrtVersion::new(major as u32, minor as u32, patch as u32)
}

/// The version of the `libnvinfer` loaded at run time (`getInferLibVersion()`).
pub fn loaded_version() -> Result<TrtVersion> {
    // SAFETY: no arguments; the library is linked.
    let code = unsafe { ffi::jl_trt_loaded_version() };
    TrtVersion::from_lib_code(code)
        .with_context(|| format!("getInferLibVersion() returned {code}, not a version"))
}

/// Messages the ring had dropped when it was last drained.
static LOG_DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Move the shim's log ring into `log`, and return its error messages joined, for an error's context.
fn drain_log() -> String {
    // SAFETY: no arguments.
    let dropped = unsafe { ffi::jl_trt_log_dropped() };
    let before = LOG_DROPPED.swap(dropped, std::sync::atomic::Ordering::Relaxed);
    if dropped > before {
        log::warn!(target: "tensorrt", "{} TensorRT messages were lost (log ring full)", dropped - before);
    }
    let mut errors = Vec::new();
    let mut buf = [0 as c_char; 512];
    let mut severity = 0i32;
    // SAFETY: `buf` is writable for its length; the shim NUL-terminates within it.
    while unsafe { ffi::jl_trt_log_pop(&mut severity, buf.as_mut_ptr(), buf.len()) } == 1 {
        // SAFETY: NUL-terminated by jl_trt_log_pop.
        let msg = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
        match severity {
            0 | 1 => {
                log::error!(target: "tensorrt", "{msg}");
                errors.push(msg.into_owned());
            }
            2 => log::warn!(target: "tensorrt", "{msg}"),
            3 => log::debug!(target: "tensorrt", "{msg}"),
            _ => log::trace!(target: "tensorrt", "{msg}"),
        }
    }
    if errors.is_empty() { "TensorRT logged no error".to_string() } else { errors.join("; ") }
}

fn cuda_error(code: i32) -> String {
    // SAFETY: the shim returns a static, NUL-terminated string for every code.
    unsafe { CStr::from_ptr(ffi::jl_cuda_error_string(code)) }.to_string_lossy().into_owned()
}

fn cuda(code: i32, what: &str) -> Result<()> {
    if code == 0 { Ok(()) } else { bail!("{what}: CUDA error {code} ({})", cuda_error(code)) }
}

/// Bytes per element of a TensorRT `DataType`, and its name.
fn dtype(code: i32) -> Option<(&'static str, f64)> {
    Some(match code {
        0 => ("FLOAT", 4.0),
        1 => ("HALF", 2.0),
        2 => ("INT8", 1.0),
        3 => ("INT32", 4.0),
        4 => ("BOOL", 1.0),
        5 => ("UINT8", 1.0),
        6 => ("FP8", 1.0),
        7 => ("BF16", 2.0),
        8 => ("INT64", 8.0),
        9 => ("INT4", 0.5),
        _ => return None,
    })
}

/// The runtime, the stream and a lock for deserialisation; shared by the backend and every engine it
/// loaded, so it goes last.
struct Shared {
    runtime: *mut ffi::jl_trt_runtime,
    stream: *mut c_void,
    /// `setDLACore` + `deserializeCudaEngine` must not interleave between threads.
    lock: Mutex<()>,
}

// SAFETY: the runtime is only used under `lock`; CUDA streams may be used from any thread.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: every engine holding an Arc of this is gone; the handles were created by the shim.
        unsafe {
            if !self.stream.is_null() {
                ffi::jl_cuda_stream_synchronize(self.stream);
                ffi::jl_cuda_stream_destroy(self.stream);
            }
            if !self.runtime.is_null() {
                ffi::jl_trt_runtime_destroy(self.runtime);
            }
        }
    }
}

/// The TensorRT backend for the board this binary was built for.
pub struct TensorRtBackend {
    shared: Arc<Shared>,
    board: &'static Board,
    version: TrtVersion,
}

impl TensorRtBackend {
    /// For the board selected at build time (`JETLINK_BOARD`).
    pub fn new() -> Result<Self> {
        Self::for_board(crate::board::current())
    }

    /// Check the loaded TensorRT against the compiled one, create the runtime and the stream.
    pub fn for_board(board: &'static Board) -> Result<Self> {
        let compiled = compiled_version();
        let loaded = loaded_version()?;
        if loaded.major != compiled.major {
            bail!(
                "the TensorRT shim was compiled against TensorRT {compiled} headers but libnvinfer \
                 {loaded} is loaded: rebuild jetlink with `--features tensorrt` against this board's \
                 TensorRT (JetPack's tensorrt-dev)"
            );
        }
        if (loaded.major, loaded.minor) != (compiled.major, compiled.minor) {
            log::warn!(
                "TensorRT shim compiled against {compiled}, libnvinfer {loaded} loaded; plans are \
                 looked up for {}",
                loaded.short()
            );
        }
        // TensorRT's verbose messages only when `log` would show them.
        let threshold = if log::log_enabled!(target: "tensorrt", log::Level::Trace) { 4 } else { 3 };
        // SAFETY: no preconditions (here and for jl_trt_runtime_create).
        unsafe { ffi::jl_trt_log_set_threshold(threshold) };
        let runtime = unsafe { ffi::jl_trt_runtime_create() };
        if runtime.is_null() {
            bail!("TensorRT: createInferRuntime failed: {}", drain_log());
        }
        let mut shared = Shared { runtime, stream: std::ptr::null_mut(), lock: Mutex::new(()) };
        // SAFETY: writes a stream handle; `shared`'s Drop cleans up on the error path.
        cuda(unsafe { ffi::jl_cuda_stream_create(&mut shared.stream) }, "cudaStreamCreateWithFlags")?;
        drain_log();
        Ok(TensorRtBackend { shared: Arc::new(shared), board, version: loaded })
    }

    /// The TensorRT version loaded at run time; plans are looked up for it.
    pub fn tensorrt_version(&self) -> TrtVersion {
        self.version
    }

    /// The `cudaStream_t` every engine of this backend enqueues on and synchronises, as a raw pointer,
    /// so other CUDA work (the link kernels) can be ordered on the same stream. Valid while this
    /// backend or any engine it loaded is alive.
    pub fn cuda_stream(&self) -> *mut c_void {
        self.shared.stream
    }

    fn target(&self) -> PlanTarget<'static> {
        PlanTarget { board: self.board.name, cuda_arch: self.board.cuda_arch, tensorrt: self.version }
    }
}

// ---- owned handles (each frees itself; `TrtEngine` orders their drops) --------------------------

struct EngineHandle(*mut ffi::jl_trt_engine);
impl Drop for EngineHandle {
    fn drop(&mut self) {
        // SAFETY: created by jl_trt_engine_deserialize; its contexts are dropped before it.
        unsafe { ffi::jl_trt_engine_destroy(self.0) }
    }
}

struct ContextHandle(*mut ffi::jl_trt_context);
impl Drop for ContextHandle {
    fn drop(&mut self) {
        // SAFETY: created by jl_trt_context_create; no work is in flight (TrtEngine::drop synchronised).
        unsafe { ffi::jl_trt_context_destroy(self.0) }
    }
}

struct DeviceMem(*mut c_void);
impl DeviceMem {
    fn alloc(bytes: usize, what: &str) -> Result<Self> {
        let mut p = std::ptr::null_mut();
        if bytes > 0 {
            // SAFETY: writes a device pointer.
            cuda(
                unsafe { ffi::jl_cuda_malloc(&mut p, bytes) },
                &format!("cudaMalloc {bytes} bytes for {what}"),
            )?;
        }
        Ok(DeviceMem(p))
    }
}
impl Drop for DeviceMem {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: from cudaMalloc; nothing uses it any more.
            unsafe { ffi::jl_cuda_free(self.0) };
        }
    }
}

/// Page-locked host memory, so the copies on the stream are asynchronous.
struct HostMem(*mut c_void);
impl HostMem {
    fn alloc(bytes: usize, what: &str) -> Result<Self> {
        let mut p = std::ptr::null_mut();
        // SAFETY: writes a host pointer. At least one byte, so the pointer is never null.
        cuda(
            unsafe { ffi::jl_cuda_malloc_host(&mut p, bytes.max(1)) },
            &format!("cudaMallocHost {bytes} bytes for {what}"),
        )?;
        Ok(HostMem(p))
    }
}
impl Drop for HostMem {
    fn drop(&mut self) {
        // SAFETY: from cudaMallocHost; nothing uses it any more.
        unsafe { ffi::jl_cuda_free_host(self.0) };
    }
}

/// One IO tensor as the engine lists it.
struct Io {
    name: CString,
    mode: i32,
    dtype: i32,
    dims: Vec<i64>,
}

fn dims_of(io: &ffi::jl_trt_io) -> Vec<i64> {
    io.dims[..(io.nb_dims.clamp(0, ffi::MAX_DIMS as i32) as usize)].to_vec()
}

struct TrtEngine {
    info: EngineInfo,
    memory: u64,
    in_bytes: usize,
    out_bytes: usize,
    // Drop order is declaration order: the context before its engine, both before the device memory
    // they use, all before the runtime and stream in `shared`.
    _context: ContextHandle,
    context: *mut ffi::jl_trt_context,
    _engine: EngineHandle,
    _scratch: DeviceMem,
    input: DeviceMem,
    /// Every output the plan has; the first is the model's output (as in the tract backend), the
    /// others are bound because `enqueueV3` needs an address for each.
    outputs: Vec<DeviceMem>,
    host_in: HostMem,
    host_out: HostMem,
    shared: Arc<Shared>,
}

// SAFETY: the context and the buffers belong to this engine alone and are used through `&mut self`,
// one thread at a time; TensorRT allows a context to move between threads, and the shared stream and
// runtime are `Sync` (see `Shared`).
unsafe impl Send for TrtEngine {}

impl Drop for TrtEngine {
    fn drop(&mut self) {
        // Nothing may still run on this engine's buffers when they are freed.
        // SAFETY: a valid stream.
        unsafe { ffi::jl_cuda_stream_synchronize(self.shared.stream) };
    }
}

impl Backend for TensorRtBackend {
    fn name(&self) -> &'static str {
        "tensorrt"
    }

    /// `path` is the model's ONNX file; the plan is found next to it (see [`plan::plan_path`]).
    fn load(&self, spec: &ModelSpec, path: &Path) -> Result<Box<dyn Engine>> {
        let (plan_file, sidecar) = plan::locate(path, &self.target())?;
        let pf = plan_file.display();
        let bytes = std::fs::read(&plan_file).with_context(|| format!("reading {pf}"))?;
        let engine = {
            let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(core) = sidecar.dla_core {
                // SAFETY: a live runtime, under the lock.
                if unsafe { ffi::jl_trt_runtime_set_dla_core(self.shared.runtime, core as i32) } != 0 {
                    bail!("{pf}: the plan runs on DLA core {core}: {}", drain_log());
                }
            }
            // SAFETY: a live runtime; `bytes` is read for its length only during the call.
            unsafe { ffi::jl_trt_engine_deserialize(self.shared.runtime, bytes.as_ptr().cast(), bytes.len()) }
        };
        if engine.is_null() {
            bail!("{pf}: TensorRT could not deserialise the plan: {}", drain_log());
        }
        let engine = EngineHandle(engine);

        // SAFETY (this block): `engine.0` is a live engine; names point into it.
        let n = unsafe { ffi::jl_trt_engine_nb_io(engine.0) };
        let mut ios = Vec::new();
        for i in 0..n {
            let mut io = ffi::jl_trt_io::default();
            if unsafe { ffi::jl_trt_engine_io(engine.0, i, &mut io) } != 0 || io.name.is_null() {
                bail!("{pf}: cannot read IO tensor {i}: {}", drain_log());
            }
            let name = unsafe { CStr::from_ptr(io.name) }.to_owned();
            ios.push(Io { name, mode: io.mode, dtype: io.dtype, dims: dims_of(&io) });
        }
        let inputs: Vec<&Io> = ios.iter().filter(|t| t.mode == ffi::IO_INPUT).collect();
        let outputs: Vec<&Io> = ios.iter().filter(|t| t.mode == ffi::IO_OUTPUT).collect();
        ensure!(inputs.len() == 1, "{pf}: has {} inputs, jetlink engines take one", inputs.len());
        ensure!(!outputs.is_empty(), "{pf}: has no output");
        let (input, output) = (inputs[0], outputs[0]);
        for (what, t) in [("input", input), ("output", output)] {
            if t.dtype != 0 {
                let name = dtype(t.dtype).map_or("unknown", |d| d.0);
                bail!(
                    "{pf}: {what} {:?} is {name}, jetlink exchanges FLOAT (build the plan without \
                     --inputIOFormats/--outputIOFormats)",
                    t.name
                );
            }
        }

        // The execution context, on device memory we own (the scheduler charges it to this model).
        // SAFETY: a live engine.
        let dev = unsafe { ffi::jl_trt_engine_device_memory(engine.0) };
        ensure!(dev >= 0, "{pf}: TensorRT reports no device memory size: {}", drain_log());
        let scratch = DeviceMem::alloc(dev as usize, "the execution context")?;
        // SAFETY: a live engine; `scratch` holds `dev` bytes and outlives the context (field order).
        let context = unsafe { ffi::jl_trt_context_create(engine.0, scratch.0, dev) };
        if context.is_null() {
            bail!("{pf}: TensorRT could not create an execution context: {}", drain_log());
        }
        let context = ContextHandle(context);

        let (in_shape, dynamic) = plan::resolve_input_shape(&input.dims, &spec.input_shape)
            .map_err(|e| anyhow::anyhow!("{pf}: model {:?}: {e}", spec.name))?;
        if dynamic {
            // SAFETY: a live context; `in_shape` is read for its length.
            let rc = unsafe {
                ffi::jl_trt_context_set_input_shape(
                    context.0,
                    input.name.as_ptr(),
                    in_shape.len() as i32,
                    in_shape.as_ptr(),
                )
            };
            if rc != 0 {
                bail!("{pf}: input {:?}: setInputShape({in_shape:?}) failed: {}", input.name, drain_log());
            }
        }

        // Output shapes as the context resolves them, and one device buffer per output.
        let mut out_bufs = Vec::new();
        let mut out_shape = Vec::new();
        let mut out_alloc = 0u64;
        for (k, o) in outputs.iter().enumerate() {
            let mut io = ffi::jl_trt_io::default();
            // SAFETY: a live context and name.
            if unsafe { ffi::jl_trt_context_tensor_shape(context.0, o.name.as_ptr(), &mut io) } != 0 {
                bail!("{pf}: output {:?}: no shape: {}", o.name, drain_log());
            }
            let shape = dims_of(&io);
            ensure!(
                shape.iter().all(|&d| d >= 0),
                "{pf}: output {:?} has unresolved shape {shape:?}",
                o.name
            );
            let len: i64 = shape.iter().product();
            let Some((_, size)) = dtype(o.dtype) else {
                bail!("{pf}: output {:?} has unknown type {}", o.name, o.dtype)
            };
            let bytes_k = (len as f64 * size).ceil() as usize;
            out_alloc += bytes_k as u64;
            let buf = DeviceMem::alloc(bytes_k, "an output")?;
            // SAFETY: a live context; the buffer outlives it (field order).
            if unsafe { ffi::jl_trt_context_set_tensor_address(context.0, o.name.as_ptr(), buf.0) } != 0 {
                bail!("{pf}: output {:?}: setTensorAddress failed: {}", o.name, drain_log());
            }
            if k == 0 {
                out_shape = shape.iter().map(|&d| d as usize).collect::<Vec<_>>();
            }
            out_bufs.push(buf);
        }
        let out_len: usize = out_shape.iter().product();
        if out_len != spec.size as usize {
            bail!(
                "{pf}: model {:?} outputs {:?} ({out_len} values) but the manifest says size = {}",
                spec.name,
                out_shape,
                spec.size
            );
        }
        let in_len: usize = in_shape.iter().map(|&d| d as usize).product();
        let (in_bytes, out_bytes) = (in_len * 4, out_len * 4);
        let input_buf = DeviceMem::alloc(in_bytes, "the input")?;
        // SAFETY: a live context; the buffer outlives it.
        if unsafe { ffi::jl_trt_context_set_tensor_address(context.0, input.name.as_ptr(), input_buf.0) } != 0
        {
            bail!("{pf}: input {:?}: setTensorAddress failed: {}", input.name, drain_log());
        }
        let host_in = HostMem::alloc(in_bytes, "the input")?;
        let host_out = HostMem::alloc(out_bytes, "the output")?;
        drain_log();

        // Weights: a deserialised engine holds about its plan's size on the device (TensorRT has no
        // per-engine weight query before 10.x's weight streaming); plus the context and the IO.
        let io_bytes = in_bytes as u64 + out_alloc;
        let memory = bytes.len() as u64 + dev as u64 + io_bytes;
        log::info!(
            "{pf}: TensorRT {} plan ({}, {}{}), {} bytes, context {} bytes",
            sidecar.tensorrt,
            sidecar.gpu,
            sidecar.precision,
            sidecar.dla_core.map(|c| format!(", DLA {c}")).unwrap_or_default(),
            bytes.len(),
            dev
        );
        let ctx_ptr = context.0;
        Ok(Box::new(TrtEngine {
            info: EngineInfo {
                backend: "tensorrt",
                input: TensorInfo {
                    name: input.name.to_string_lossy().into_owned(),
                    shape: in_shape.iter().map(|&d| d as usize).collect(),
                },
                output: TensorInfo { name: output.name.to_string_lossy().into_owned(), shape: out_shape },
            },
            memory,
            in_bytes,
            out_bytes,
            _context: context,
            context: ctx_ptr,
            _engine: engine,
            _scratch: scratch,
            input: input_buf,
            outputs: out_bufs,
            host_in,
            host_out,
            shared: self.shared.clone(),
        }))
    }
}

impl TrtEngine {
    fn fail(&self, what: &str, code: i32) -> EngineError {
        log::warn!("tensorrt {}: {what} failed ({code}): {}", self.info.output.name, drain_log());
        EngineError::Runtime
    }
}

impl Engine for TrtEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn memory_bytes(&self) -> u64 {
        self.memory
    }

    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError> {
        let need = self.in_bytes / 4;
        if input.len() != need {
            return Err(EngineError::InputSize { got: input.len(), need });
        }
        let need = self.out_bytes / 4;
        if output.len() != need {
            return Err(EngineError::OutputSize { got: output.len(), need });
        }
        let stream = self.shared.stream;
        // SAFETY: the host buffers hold in_bytes / out_bytes (page-locked, so suitably aligned for
        // f32); the device buffers are bound to the context; everything is used on one stream and
        // waited for before returning.
        unsafe {
            std::ptr::copy_nonoverlapping(input.as_ptr(), self.host_in.0.cast::<f32>(), input.len());
            let rc = ffi::jl_cuda_memcpy_htod_async(self.input.0, self.host_in.0, self.in_bytes, stream);
            if rc != 0 {
                return Err(self.fail("cudaMemcpyAsync to device", rc));
            }
            if ffi::jl_trt_context_enqueue(self.context, stream) != 0 {
                return Err(self.fail("enqueueV3", -1));
            }
            let rc =
                ffi::jl_cuda_memcpy_dtoh_async(self.host_out.0, self.outputs[0].0, self.out_bytes, stream);
            if rc != 0 {
                return Err(self.fail("cudaMemcpyAsync to host", rc));
            }
            let rc = ffi::jl_cuda_stream_synchronize(stream);
            if rc != 0 {
                return Err(self.fail("cudaStreamSynchronize", rc));
            }
            std::ptr::copy_nonoverlapping(self.host_out.0.cast::<f32>(), output.as_mut_ptr(), output.len());
        }
        Ok(())
    }
}
