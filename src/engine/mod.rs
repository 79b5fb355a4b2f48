//! Engines: the black-box models behind one small trait (load, describe, memory cost, run one frame
//! into a caller's buffer). The host backend is `tract-onnx`; TensorRT on the board is another backend
//! of the same trait. No backend type appears in the trait.

use std::path::Path;

use anyhow::{Context, Result};

use crate::manifest::{Manifest, ModelSpec};
use crate::view::{Shape, View};

mod mixed;
mod tract;
pub use mixed::{HasNative, PerModelBackend};
pub use tract::TractBackend;
pub(crate) use tract::onnx_weight_bytes as tract_weight_bytes;
#[cfg(feature = "tensorrt")]
pub mod tensorrt;
#[cfg(feature = "tensorrt")]
pub use tensorrt::TensorRtBackend;

/// Name and shape of one input or output tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What an engine takes and gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineInfo {
    pub backend: &'static str,
    pub input: TensorInfo,
    pub output: TensorInfo,
}

impl EngineInfo {
    /// Check a caller's buffers against the engine's input and output tensors.
    pub fn check_buffers(&self, input: &[f32], output: &[f32]) -> Result<(), EngineError> {
        let need = self.input.len();
        if input.len() != need {
            return Err(EngineError::InputSize { got: input.len(), need });
        }
        let need = self.output.len();
        if output.len() != need {
            return Err(EngineError::OutputSize { got: output.len(), need });
        }
        Ok(())
    }
}

/// Errors of one inference call: small and `Copy`, so the control loop can count and report them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("input has {got} values, the engine takes {need}")]
    InputSize { got: usize, need: usize },
    #[error("output buffer has {got} values, the engine gives {need}")]
    OutputSize { got: usize, need: usize },
    #[error("the runtime failed to run the model")]
    Runtime,
    #[error("the runtime returned a tensor of the wrong type or shape, or a value that is not finite")]
    BadOutput,
    #[error("inference exceeded its deadline")]
    Timeout,
}

/// One loaded model.
pub trait Engine: Send {
    fn info(&self) -> &EngineInfo;
    /// Memory this engine holds while loaded (weights plus peak activations), bytes.
    fn memory_bytes(&self) -> u64;
    /// Run one frame: `input` has `info().input.len()` values, `output` gets `info().output.len()`.
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError>;
    /// The index of the frame the next [`run`](Engine::run) is for. Engines that run a model ignore
    /// it; a replay engine (simulation) plays back that frame's recorded output.
    fn set_frame(&mut self, _index: u32) {}
}

/// A way of loading models.
pub trait Backend {
    fn name(&self) -> &'static str;
    fn load(&self, spec: &ModelSpec, path: &Path) -> Result<Box<dyn Engine>>;
}

/// One model ready to run on frames: its view, its engine and its input buffer.
pub struct PreparedModel {
    pub spec: ModelSpec,
    pub view: View,
    pub engine: Box<dyn Engine>,
    input: Vec<f32>,
    /// Where its time went: runs, and nanoseconds in the view (frame → input tensor) and in the
    /// engine (the model itself, the runtime's input and output copies included).
    pub time: RunTime,
}

/// A model's run count and time split, summed over its runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunTime {
    pub runs: u64,
    pub view_ns: u64,
    pub engine_ns: u64,
}

impl PreparedModel {
    pub fn prepare(
        spec: &ModelSpec,
        manifest: &Manifest,
        frame: Shape,
        backend: &dyn Backend,
    ) -> Result<Self> {
        let what = || format!("manifest {}: model {:?}: view", manifest.path.display(), spec.name);
        let view = View::prepare(&spec.view, frame).with_context(what)?;
        view.check_input(&spec.input_shape).with_context(what)?;
        let path = manifest.path_of(&spec.onnx);
        let engine = backend.load(spec, &path).with_context(|| {
            format!("model {:?}: loading {} with {}", spec.name, path.display(), backend.name())
        })?;
        let input = vec![0.0; view.output_len()];
        Ok(PreparedModel { spec: spec.clone(), view, engine, input, time: RunTime::default() })
    }

    /// View frame `index` (its pixels `frame`) and run the engine into `out` (`spec.size` values).
    pub fn run(&mut self, index: u32, frame: &[u8], out: &mut [f32]) -> Result<(), EngineError> {
        let t0 = std::time::Instant::now();
        self.view.apply(frame, &mut self.input);
        let t1 = std::time::Instant::now();
        self.engine.set_frame(index);
        let res = self.engine.run(&self.input, out);
        self.time.runs += 1;
        self.time.view_ns += (t1 - t0).as_nanos() as u64;
        self.time.engine_ns += t1.elapsed().as_nanos() as u64;
        res?;
        // Numbers are checked finite where they enter: a NaN or infinite output is a bad output
        // (counted as an engine fault, the task delivered degraded), never a source for links.
        if out.iter().all(|v| v.is_finite()) { Ok(()) } else { Err(EngineError::BadOutput) }
    }
}

/// Prepare every model of a manifest.
pub fn prepare_all(manifest: &Manifest, frame: Shape, backend: &dyn Backend) -> Result<Vec<PreparedModel>> {
    manifest.models.iter().map(|m| PreparedModel::prepare(m, manifest, frame, backend)).collect()
}
