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

/// Predicts the outputs of the models that did not run, on the CPU or the GPU.
#[allow(clippy::large_enum_variant)]
pub enum LinkExecutor {
    Cpu(Predictor),
    #[cfg(feature = "cuda")]
    Cuda(cuda::CudaLinks),
}

impl LinkExecutor {
    /// The GPU path where the `cuda` feature is on and a usable GPU is found, else the CPU path;
    /// the reason for falling back is logged once per process.
    pub fn new(bundle: &Bundle) -> LinkExecutor {
        #[cfg(feature = "cuda")]
        match cuda::CudaLinks::from_bundle(bundle, 1) {
            Ok(c) => return LinkExecutor::Cuda(c),
            Err(e) => log_fallback_once(&e),
        }
        LinkExecutor::cpu(bundle)
    }

    /// Always the CPU path.
    pub fn cpu(bundle: &Bundle) -> LinkExecutor {
        LinkExecutor::Cpu(Predictor::new(bundle))
    }

    pub fn backend(&self) -> Backend {
        match self {
            LinkExecutor::Cpu(_) => Backend::Cpu,
            #[cfg(feature = "cuda")]
            LinkExecutor::Cuda(_) => Backend::Cuda,
        }
    }

    /// Same contract as [`Predictor::predict`]: `out` receives a full row, active slices copied from
    /// `row`, the others predicted and activated. Never allocates.
    pub fn predict(&mut self, active: u64, row: &[f32], out: &mut [f32]) -> Result<(), ExecError> {
        match self {
            LinkExecutor::Cpu(p) => Ok(p.predict(active, row, out)?),
            #[cfg(feature = "cuda")]
            LinkExecutor::Cuda(c) => Ok(c.predict(active, row, out)?),
        }
    }
}

#[cfg(feature = "cuda")]
fn log_fallback_once(e: &cuda::GpuInitError) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| log::warn!("link kernels: using the CPU path ({e})"));
}
