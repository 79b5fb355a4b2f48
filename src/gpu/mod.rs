//! Link execution on the CPU or on a CUDA GPU behind one interface, [`LinkExecutor`].
//!
//! With the `cuda` feature, [`LinkExecutor::new`] looks for the CUDA driver library and a GPU, compiles
//! `kernels/links.cu` with NVRTC for that GPU (PTX cached on disk, see [`cuda`]) and lays the
//! bundle's weights out once in device memory; each tick is then one fused kernel launch. Without
//! the feature, or with no driver, no GPU, or a failed start, it logs the reason once and uses the
//! allocation-free CPU [`Predictor`], which is also the reference the kernels are tested against.

pub mod layout;

#[cfg(feature = "cuda")]
pub mod cuda;

use crate::bundle::Bundle;
use crate::links::{LinkError, Predictor};
use crate::model_set::ModelSet;

pub use layout::{DeviceLayout, LayoutError};

/// Which implementation a [`LinkExecutor`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    Cuda,
}

/// Errors of [`LinkExecutor::predict`]: small and `Copy`, for the control loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[cfg(feature = "cuda")]
    #[error(transparent)]
    Gpu(#[from] cuda::GpuError),
}

/// Every Nth prediction on the GPU path also runs the CPU predictor, so that drift signals (link
/// uncertainty and disagreement) stay sampled.
pub const SIGNAL_EVERY: u32 = 8;

/// Predicts the outputs of the models that did not run: the one link path of the control loop.
/// The CPU [`Predictor`] is the reference and always present (it carries drift signals and on-line
/// adaptation, see [`LinkExecutor::predictor_mut`]); with the `cuda` feature and a usable GPU, each
/// prediction is one fused kernel launch instead, falling back to the CPU for a call that fails.
pub struct LinkExecutor {
    cpu: Predictor,
    #[cfg(feature = "cuda")]
    gpu: Option<cuda::CudaLinks>,
    /// CPU predictions on the GPU path's signal-sampling calls.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    scratch: Vec<f32>,
    calls: u32,
    /// Why the CPU path runs where the GPU path was asked for, when the bundle decides it.
    cpu_note: Option<&'static str>,
}

/// Why a bundle with a sequence output runs its links on the CPU under the `cuda` feature: the
/// kernels apply one activation per target (softmax, sigmoid or identity), not softmax per step.
pub const SEQUENCE_CPU_NOTE: &str = "sequence links have no CUDA kernel";

impl LinkExecutor {
    /// The GPU path where the `cuda` feature is on and a usable GPU is found, else the CPU path;
    /// the reason for falling back is logged once per process.
    pub fn new(bundle: &Bundle) -> LinkExecutor {
        #[cfg_attr(not(feature = "cuda"), allow(unused_mut))]
        let mut e = LinkExecutor::cpu(bundle);
        #[cfg(feature = "cuda")]
        if bundle.models.iter().any(|m| m.kind.seq().is_some()) {
            // Vector-only bundles take the GPU path exactly as before; a bundle with a sequence
            // output runs every link on the CPU (one path per bundle), and the summary says why.
            e.cpu_note = Some(SEQUENCE_CPU_NOTE);
            return e;
        }
        #[cfg(feature = "cuda")]
        match cuda::CudaLinks::from_bundle(bundle, 1) {
            Ok(c) => e.gpu = Some(c),
            Err(e) => log_fallback_once(&e),
        }
        e
    }

    /// Always the CPU path.
    pub fn cpu(bundle: &Bundle) -> LinkExecutor {
        let cpu = Predictor::new(bundle);
        LinkExecutor {
            scratch: vec![0.0; cpu.stride()],
            cpu,
            #[cfg(feature = "cuda")]
            gpu: None,
            calls: 0,
            cpu_note: None,
        }
    }

    /// Why the links run on the CPU although this build has the GPU path (a sequence output), if
    /// the bundle is the reason; `None` otherwise.
    pub fn cpu_note(&self) -> Option<&'static str> {
        self.cpu_note
    }

    pub fn backend(&self) -> Backend {
        #[cfg(feature = "cuda")]
        if self.gpu.is_some() {
            return Backend::Cuda;
        }
        Backend::Cpu
    }

    /// Same contract as [`Predictor::predict`]: `out` receives a full row, active slices copied from
    /// `row`, the others predicted and activated. Returns whether the CPU predictor ran on this call
    /// (then its [`Predictor::signals`] are fresh). Never allocates.
    pub fn predict(&mut self, active: ModelSet, row: &[f32], out: &mut [f32]) -> Result<bool, ExecError> {
        self.calls = self.calls.wrapping_add(1);
        #[cfg(feature = "cuda")]
        // The kernels compute the shared heads: a call where a per-source-set head applies runs on
        // the CPU (a few microseconds), so both paths deliver the same predictions.
        if let Some(g) = self.gpu.as_mut().filter(|_| !self.cpu.uses_set_head(active)) {
            if g.predict(active, row, out).is_ok() {
                let sample = self.calls % SIGNAL_EVERY == 0
                    && self.cpu.predict(active, row, &mut self.scratch).is_ok();
                return Ok(sample);
            }
            // A GPU fault falls back to the CPU for this call.
        }
        self.cpu.predict(active, row, out)?;
        Ok(true)
    }

    /// The CPU predictor: drift signals, and the weights on-line adaptation updates in place (call
    /// [`LinkExecutor::weights_changed`] afterwards).
    pub fn predictor(&self) -> &Predictor {
        &self.cpu
    }

    pub fn predictor_mut(&mut self) -> &mut Predictor {
        &mut self.cpu
    }

    /// Copy the CPU predictor's weights to the GPU after adaptation changed them.
    pub fn weights_changed(&mut self) {
        #[cfg(feature = "cuda")]
        if let Some(g) = self.gpu.as_mut() {
            let _ = g.update_weights(self.cpu.links(), self.cpu.ensembles());
        }
    }
}

#[cfg(feature = "cuda")]
fn log_fallback_once(e: &cuda::GpuInitError) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| log::warn!("link kernels: using the CPU path ({e})"));
}
