//! The host engine backend: ONNX models run by `tract-onnx` (pure Rust, x86_64 and aarch64).

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

use super::{Backend, Engine, EngineError, EngineInfo, TensorInfo};
use crate::manifest::ModelSpec;

/// The host backend: `tract-onnx`, pure Rust.
pub struct TractBackend;

struct TractEngine {
    info: EngineInfo,
    memory: u64,
    /// One run state per engine, made once: `plan.run` would build a fresh state on every call.
    state: tract_onnx::prelude::TypedSimpleState,
    input_shape: Vec<usize>,
}

/// Bytes of an ONNX model's weights: initialisers plus array attributes (tree ensembles keep their
/// tables in attributes).
pub(crate) fn onnx_weight_bytes(proto: &tract_onnx::pb::ModelProto) -> u64 {
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

/// Every output of a typed model: its ONNX name, element type and shape as tract infers it.
fn output_facts(
    typed: &tract_onnx::prelude::TypedModel,
    g: &tract_onnx::pb::GraphProto,
) -> Vec<(String, tract_onnx::prelude::DatumType, String)> {
    (0..typed.outputs.len())
        .map(|i| {
            let name = g.output.get(i).map(|o| o.name.clone()).unwrap_or_else(|| format!("#{i}"));
            // `i` < the number of outputs, so the fact exists.
            let f = typed.output_fact(i).expect("an output of the model");
            (name, f.datum_type, format!("[{:?}]", f.shape))
        })
        .collect()
}

/// The shape an ONNX graph input declares, each dimension a number or `None` (symbolic, such as a
/// batch); `None` when the file declares no shape.
fn declared_input_shape(input: &tract_onnx::pb::ValueInfoProto) -> Option<Vec<Option<u64>>> {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
    use tract_onnx::pb::type_proto::Value as Type;
    let Some(Type::TensorType(t)) = input.r#type.as_ref()?.value.as_ref() else { return None };
    let dims = &t.shape.as_ref()?.dim;
    Some(
        dims.iter()
            .map(|d| match &d.value {
                Some(Dim::DimValue(v)) if *v > 0 => Some(*v as u64),
                _ => None,
            })
            .collect(),
    )
}

impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        "tract-onnx"
    }

    fn load(&self, spec: &ModelSpec, path: &Path) -> Result<Box<dyn Engine>> {
        use tract_onnx::prelude::*;
        // The bytes the bundle check hashed, when the manifest pinned them (the firmware's path);
        // otherwise read the file now (host tools).
        let read;
        let bytes: &[u8] = match &spec.onnx_bytes {
            Some(pinned) => pinned,
            None => {
                read = crate::input::read(path, "ONNX file", crate::input::limit::MODEL)?;
                &read
            }
        };
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
        let input_shape: Vec<usize> = spec.input_shape.iter().map(|&d| d as usize).collect();
        // The manifest's shape replaces the file's input fact below: where the file declares a
        // concrete shape, they must agree (some graphs would run on the wrong size and say nothing).
        if let Some(declared) = declared_input_shape(inputs[0]) {
            let fits = declared.len() == input_shape.len()
                && declared.iter().zip(&input_shape).all(|(d, &m)| d.is_none_or(|d| d as usize == m));
            if !fits {
                let shown: Vec<String> =
                    declared.iter().map(|d| d.map_or("?".to_string(), |d| d.to_string())).collect();
                bail!(
                    "{}: model {:?}: the manifest's input_shape {:?} does not match the input the file declares, [{}]",
                    path.display(),
                    spec.name,
                    spec.input_shape,
                    shown.join(", ")
                );
            }
        }
        let typed = onnx
            .model_for_proto_model(&proto)
            .with_context(|| format!("{}: tract cannot translate the graph", path.display()))?
            .with_input_fact(0, f32::fact(&input_shape).into())?
            .into_typed()
            .with_context(|| format!("{}: tract cannot type the graph", path.display()))?;
        let outputs = output_facts(&typed, g);
        let listing =
            || outputs.iter().map(|(n, dt, s)| format!("{n:?} {dt:?} {s}")).collect::<Vec<_>>().join(", ");
        let ix = match &spec.output {
            None => 0,
            Some(want) => outputs.iter().position(|(n, _, _)| n == want).with_context(|| {
                format!(
                    "{}: model {:?}: field `output`: the file has no output {want:?}; its outputs are {}",
                    path.display(),
                    spec.name,
                    listing()
                )
            })?,
        };
        ensure!(!outputs.is_empty(), "{}: ONNX model has no output", path.display());
        let (output_name, dt, shown) = &outputs[ix];
        let out_shape: Option<Vec<usize>> = typed.output_fact(ix)?.shape.as_concrete().map(|s| s.to_vec());
        let out_len = out_shape.as_ref().map(|s| s.iter().product::<usize>());
        if out_len != Some(spec.size as usize) || *dt != f32::datum_type() {
            bail!(
                "{}: model {:?}: output {output_name:?} is {dt:?} {shown} ({} values) but the manifest says size = {} of f32{}; the file's outputs are {} (choose one with `output = \"NAME\"`)",
                path.display(),
                spec.name,
                out_len.map_or("a symbolic number of".into(), |l| l.to_string()),
                spec.size,
                if spec.output.is_none() { " (no `output` key: the first output)" } else { "" },
                listing()
            );
        }
        let out_shape = out_shape.unwrap_or_default();
        let output_name = output_name.clone();
        let mut typed = typed;
        let outlet = typed.output_outlets()?[ix];
        typed.select_output_outlets(&[outlet])?;
        let model = typed
            .into_optimized()
            .with_context(|| format!("{}: tract cannot optimise the graph", path.display()))?;
        let plan = model.into_runnable()?;
        let state =
            plan.spawn().with_context(|| format!("{}: tract cannot make a run state", path.display()))?;
        Ok(Box::new(TractEngine {
            info: EngineInfo {
                backend: "tract-onnx",
                input: TensorInfo { name: input_name, shape: input_shape.clone() },
                output: TensorInfo { name: output_name, shape: out_shape },
            },
            memory: weights + spec.cost.activation_bytes,
            state,
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
        self.info.check_buffers(input, output)?;
        // tract takes its input by value: this allocation is inside the runtime's contract.
        let t = Tensor::from_shape(&self.input_shape, input).map_err(|_| EngineError::Runtime)?;
        let out = self.state.run(tvec!(t.into())).map_err(|e| {
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
