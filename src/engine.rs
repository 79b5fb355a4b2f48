//! Engines: the black-box models behind one small trait (load, describe, memory cost, run one frame
//! into a caller's buffer). The host backend is `tract-onnx`; TensorRT on the board is another backend
//! of the same trait. No backend type appears in the trait.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

use crate::manifest::{Manifest, ModelSpec};
use crate::view::{Shape, View};

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

/// Errors of one inference call: small and `Copy`, so the control loop can count and report them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("input has {got} values, the engine takes {need}")]
    InputSize { got: usize, need: usize },
    #[error("output buffer has {got} values, the engine gives {need}")]
    OutputSize { got: usize, need: usize },
    #[error("the runtime failed to run the model")]
    Runtime,
    #[error("the runtime returned a tensor of the wrong type or shape")]
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
}

/// A way of loading models.
pub trait Backend {
    fn name(&self) -> &'static str;
    fn load(&self, spec: &ModelSpec, path: &Path) -> Result<Box<dyn Engine>>;
}

/// The host backend: `tract-onnx`, pure Rust.
pub struct TractBackend;

struct TractEngine {
    info: EngineInfo,
    memory: u64,
    plan: std::sync::Arc<tract_onnx::prelude::TypedRunnableModel>,
    input_shape: Vec<usize>,
}

/// Bytes of an ONNX model's weights: initialisers plus array attributes (tree ensembles keep their
/// tables in attributes).
fn onnx_weight_bytes(proto: &tract_onnx::pb::ModelProto) -> u64 {
    let tensor = |t: &tract_onnx::pb::TensorProto| {
        (t.raw_data.len() + 4 * t.float_data.len() + 4 * t.int32_data.len() + 8 * t.int64_data.len()) as u64
    };
    let Some(g) = proto.graph.as_ref() else { return 0 };
    let init: u64 = g.initializer.iter().map(tensor).sum();
    let attrs: u64 = g
        .node
        .iter()
        .flat_map(|n| n.attribute.iter())
        .map(|a| (4 * a.floats.len() + 8 * a.ints.len()) as u64 + a.t.as_ref().map(tensor).unwrap_or(0))
        .sum();
    init + attrs
}

impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        "tract-onnx"
    }

    fn load(&self, spec: &ModelSpec, path: &Path) -> Result<Box<dyn Engine>> {
        use tract_onnx::prelude::*;
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let onnx = tract_onnx::onnx();
        let proto = onnx
            .proto_model_for_read(&mut &bytes[..])
            .with_context(|| format!("{}: not a readable ONNX model", path.display()))?;
        let weights = onnx_weight_bytes(&proto);
        let g = proto.graph.as_ref().context("ONNX model has no graph")?;
        let init: std::collections::HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<_> = g.input.iter().filter(|i| !init.contains(i.name.as_str())).collect();
        ensure!(
            inputs.len() == 1,
            "{}: has {} inputs, jetlink engines take one",
            path.display(),
            inputs.len()
        );
        let input_name = inputs[0].name.clone();
        let output_name = g.output.first().context("ONNX model has no output")?.name.clone();
        let input_shape: Vec<usize> = spec.input_shape.iter().map(|&d| d as usize).collect();
        let model = onnx
            .model_for_proto_model(&proto)
            .with_context(|| format!("{}: tract cannot translate the graph", path.display()))?
            .with_input_fact(0, f32::fact(&input_shape).into())?
            .into_optimized()
            .with_context(|| format!("{}: tract cannot optimise the graph", path.display()))?;
        let out_fact = model.output_fact(0)?;
        let out_shape: Vec<usize> = out_fact
            .shape
            .as_concrete()
            .with_context(|| {
                format!("{}: output shape {:?} is not concrete", path.display(), out_fact.shape)
            })?
            .to_vec();
        let out_len: usize = out_shape.iter().product();
        if out_len != spec.size as usize {
            bail!(
                "{}: model {:?} outputs {:?} ({out_len} values) but the manifest says size = {}",
                path.display(),
                spec.name,
                out_shape,
                spec.size
            );
        }
        let plan = model.into_runnable()?;
        Ok(Box::new(TractEngine {
            info: EngineInfo {
                backend: "tract-onnx",
                input: TensorInfo { name: input_name, shape: input_shape.clone() },
                output: TensorInfo { name: output_name, shape: out_shape },
            },
            memory: weights + spec.cost.activation_bytes,
            plan,
            input_shape,
        }))
    }
}

impl Engine for TractEngine {
    fn info(&self) -> &EngineInfo {
        &self.info
    }

    fn memory_bytes(&self) -> u64 {
        self.memory
    }

    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError> {
        use tract_onnx::prelude::*;
        let need = self.info.input.len();
        if input.len() != need {
            return Err(EngineError::InputSize { got: input.len(), need });
        }
        let need = self.info.output.len();
        if output.len() != need {
            return Err(EngineError::OutputSize { got: output.len(), need });
        }
        // tract takes its input by value: this allocation is inside the runtime's contract.
        let t = Tensor::from_shape(&self.input_shape, input).map_err(|_| EngineError::Runtime)?;
        let out = self.plan.run(tvec!(t.into())).map_err(|e| {
            log::warn!("tract run failed: {e:#}");
            EngineError::Runtime
        })?;
        let view = out[0].to_plain_array_view::<f32>().map_err(|_| EngineError::BadOutput)?;
        if view.len() != output.len() {
            return Err(EngineError::BadOutput);
        }
        for (o, v) in output.iter_mut().zip(view.iter()) {
            *o = *v;
        }
        Ok(())
    }
}

/// One model ready to run on frames: its view, its engine and its input buffer.
pub struct PreparedModel {
    pub spec: ModelSpec,
    pub view: View,
    pub engine: Box<dyn Engine>,
    input: Vec<f32>,
}

impl PreparedModel {
    pub fn prepare(
        spec: &ModelSpec,
        manifest: &Manifest,
        frame: Shape,
        backend: &dyn Backend,
    ) -> Result<Self> {
        let view =
            View::prepare(&spec.view, frame).with_context(|| format!("model {:?}: view", spec.name))?;
        view.check_input(&spec.input_shape).with_context(|| format!("model {:?}: view", spec.name))?;
        let path = manifest.path_of(&spec.onnx);
        let engine = backend.load(spec, &path).with_context(|| {
            format!("model {:?}: loading {} with {}", spec.name, path.display(), backend.name())
        })?;
        let input = vec![0.0; view.output_len()];
        Ok(PreparedModel { spec: spec.clone(), view, engine, input })
    }

    /// View the frame and run the engine into `out` (`spec.size` values).
    pub fn run(&mut self, frame: &[u8], out: &mut [f32]) -> Result<(), EngineError> {
        self.view.apply(frame, &mut self.input);
        self.engine.run(&self.input, out)
    }
}

/// Prepare every model of a manifest.
pub fn prepare_all(manifest: &Manifest, frame: Shape, backend: &dyn Backend) -> Result<Vec<PreparedModel>> {
    manifest.models.iter().map(|m| PreparedModel::prepare(m, manifest, frame, backend)).collect()
}
