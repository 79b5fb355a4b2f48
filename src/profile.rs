//! Measuring a model's costs (`[model.cost]`) from its ONNX file and a few frames, so that a user
//! never counts FLOPs or guesses activation bytes (`jetlink profile`; `build` and `run` call it for
//! models whose manifest has no cost block).
//!
//! What each figure is, exactly:
//! - `weight_bytes`: bytes of the file's initialisers plus array attributes (tree ensembles keep
//!   their tables there) — the same count the tract engine charges.
//! - `activation_bytes`: peak bytes of live tensors over one frame, walking tract's decluttered typed
//!   graph (the model's chosen output only) in evaluation order: a node's outputs become live when it
//!   runs and die after their last consumer; constants (weights) are not counted, the input is. This
//!   is the plan's live set, not tract's allocator (which may reuse or copy buffers).
//! - `flops`: 2 × the multiply-accumulates tract's cost model gives the matrix products (ONNX
//!   `MatMul`, `Gemm`, `Einsum`: tract's `EinSum`) and convolutions (`Conv`) of that graph.
//!   Element-wise ops, pooling, softmax, reductions and tree ensembles (`ai.onnx.ml`) are not counted.
//! - `latency_us`: median wall time of the engine call alone (the input view is applied before the
//!   clock starts) over N frames of the workload's stream on this machine, batch 1, one thread,
//!   under [`RUNTIME`].

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use crate::engine::{Backend, PreparedModel, TractBackend};
use crate::manifest::{Cost, CostOrigin, Manifest, ModelSpec};
use crate::stream::Stream;

/// The runtime the latency is measured under (`latency_runtime`).
pub const RUNTIME: &str = "tract-onnx 0.23 1 thread";

/// The figures of [`Cost`] that follow from the file alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticCost {
    pub weight_bytes: u64,
    pub activation_bytes: u64,
    pub flops: u64,
}

fn onnx_bytes(spec: &ModelSpec, path: &Path) -> Result<std::sync::Arc<Vec<u8>>> {
    match &spec.onnx_bytes {
        Some(b) => Ok(b.clone()),
        None => Ok(std::sync::Arc::new(crate::input::read(
            path,
            &format!("model {:?}: ONNX file", spec.name),
            crate::input::limit::MODEL,
        )?)),
    }
}

/// Weight bytes, peak live activation bytes and FLOPs of `spec`'s ONNX file (see the module doc).
pub fn static_cost(spec: &ModelSpec, path: &Path) -> Result<StaticCost> {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::ops::konst::Const;
    let bytes = onnx_bytes(spec, path)?;
    let onnx = tract_onnx::onnx();
    let proto = onnx
        .proto_model_for_read(&mut &bytes[..])
        .with_context(|| format!("{}: not a readable ONNX model", path.display()))?;
    let weight_bytes = crate::engine::tract_weight_bytes(&proto);
    let g = proto.graph.as_ref().context("ONNX model has no graph")?;
    let input_shape: Vec<usize> = spec.input_shape.iter().map(|&d| d as usize).collect();
    let mut typed = onnx
        .model_for_proto_model(&proto)
        .with_context(|| format!("{}: tract cannot translate the graph", path.display()))?
        .with_input_fact(0, f32::fact(&input_shape).into())?
        .into_typed()
        .with_context(|| format!("{}: tract cannot type the graph", path.display()))?;
    let ix = match &spec.output {
        None => 0,
        Some(want) => g.output.iter().position(|o| &o.name == want).with_context(|| {
            format!(
                "{}: model {:?}: field `output`: the file has no output {want:?}",
                path.display(),
                spec.name
            )
        })?,
    };
    let outlet = typed.output_outlets()?[ix];
    typed.select_output_outlets(&[outlet])?;
    let model = typed
        .into_decluttered()
        .with_context(|| format!("{}: tract cannot declutter the graph", path.display()))?;

    let fact_bytes = |f: &TypedFact| -> u64 {
        f.shape.as_concrete().map_or(0, |s| s.iter().product::<usize>() as u64)
            * f.datum_type.size_of() as u64
    };
    let order = model.eval_order()?;
    let mut last_use: HashMap<OutletId, usize> = HashMap::new();
    for (pos, &n) in order.iter().enumerate() {
        for i in &model.node(n).inputs {
            last_use.insert(*i, pos);
        }
    }
    for o in model.output_outlets()? {
        last_use.insert(*o, usize::MAX);
    }
    let (mut live, mut peak) = (0u64, 0u64);
    let mut alive: Vec<(OutletId, u64)> = Vec::new();
    let mut fma: u64 = 0;
    for (pos, &n) in order.iter().enumerate() {
        let node = model.node(n);
        if !node.op_is::<Const>() {
            for (k, o) in node.outputs.iter().enumerate() {
                let b = fact_bytes(&o.fact);
                live += b;
                alive.push((OutletId::new(n, k), b));
            }
        }
        peak = peak.max(live);
        alive.retain(|(o, b)| {
            let dead = last_use.get(o).is_none_or(|&l| l <= pos);
            if dead {
                live -= b;
            }
            !dead
        });
        let name = node.op.name();
        if ["EinSum", "Conv", "MatMul", "Gemm"].iter().any(|k| name.contains(k)) {
            let inputs = model.node_input_facts(n)?;
            for (c, d) in node.op.cost(&inputs)? {
                if matches!(c, tract_onnx::tract_core::ops::Cost::FMA(_)) {
                    fma += d.to_i64().map_or(0, |v| v.max(0) as u64);
                }
            }
        }
    }
    Ok(StaticCost { weight_bytes, activation_bytes: peak, flops: 2 * fma })
}

/// Every figure of `spec`'s `[model.cost]`: [`static_cost`], then the median latency of the engine
/// call over `frames` frames of `stream` (spread over its training part, one warm-up run first).
pub fn measure(spec: &ModelSpec, manifest: &Manifest, stream: &Stream, frames: usize) -> Result<Cost> {
    let path = manifest.path_of(&spec.onnx);
    let s = static_cost(spec, &path).with_context(|| format!("profiling model {:?}", spec.name))?;
    ensure!(!stream.is_empty(), "profiling model {:?}: the stream has no frames", spec.name);
    let mut m = PreparedModel::prepare(spec, manifest, stream.shape(), &TractBackend as &dyn Backend)?;
    let frames = frames.max(1);
    let span = stream.train_end.clamp(1, stream.len());
    let mut out = vec![0.0f32; spec.size as usize];
    let mut input = vec![0.0f32; m.view.output_len()];
    m.view.apply(stream.frame(0), &mut input);
    m.engine.run(&input, &mut out).map_err(|e| anyhow::anyhow!("model {:?}: {e}", spec.name))?;
    let mut us = Vec::with_capacity(frames);
    for k in 0..frames {
        let f = k * span / frames;
        m.view.apply(stream.frame(f), &mut input);
        let t = Instant::now();
        m.engine
            .run(&input, &mut out)
            .map_err(|e| anyhow::anyhow!("model {:?} on frame {f}: {e}", spec.name))?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let median = crate::percentile::percentile_sorting(&mut us, 50.0);
    Ok(Cost {
        weight_bytes: s.weight_bytes,
        activation_bytes: s.activation_bytes,
        flops: s.flops,
        latency_us: (median * 10.0).round() / 10.0,
        latency_runtime: RUNTIME.to_string(),
        origin: CostOrigin::Measured,
    })
}

/// Measure every model whose manifest has no `[model.cost]`; returns their names.
pub fn fill_missing(manifest: &mut Manifest, stream: &Stream, frames: usize) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for i in manifest.missing_costs() {
        let c = measure(&manifest.models[i], manifest, stream, frames)?;
        manifest.models[i].cost = c;
        names.push(manifest.models[i].name.clone());
    }
    Ok(names)
}

/// The `[model.cost]` block of one model, as TOML text to paste after its `[[model]]` entry.
pub fn cost_block(c: &Cost) -> String {
    format!(
        "[model.cost]                      # measured by `jetlink profile`\nweight_bytes = {}\nactivation_bytes = {}\nflops = {}\nlatency_us = {:.1}\nlatency_runtime = {:?}\n",
        c.weight_bytes, c.activation_bytes, c.flops, c.latency_us, c.latency_runtime
    )
}

/// The manifest text with a `[model.cost]` block written at the end of the `[[model]]` entry of
/// every model in `costs` (by index; those entries must have no cost block). Comments and layout
/// of everything else are kept. The result is parsed again and checked to carry exactly these costs.
pub fn write_costs(text: &str, manifest_path: &Path, costs: &[(usize, Cost)]) -> Result<String> {
    let is_model_header = |l: &str| {
        let t: String = l.split('#').next().unwrap_or("").chars().filter(|c| !c.is_whitespace()).collect();
        t == "[[model]]"
    };
    let lines: Vec<&str> = text.lines().collect();
    let headers: Vec<usize> = (0..lines.len()).filter(|&i| is_model_header(lines[i])).collect();
    let parsed: Manifest =
        toml::from_str(text).with_context(|| format!("parsing manifest {}", manifest_path.display()))?;
    if headers.len() != parsed.models.len() {
        bail!(
            "{}: found {} `[[model]]` lines for {} models; write the cost blocks by hand (jetlink profile prints them)",
            manifest_path.display(),
            headers.len(),
            parsed.models.len()
        );
    }
    let mut out = String::with_capacity(text.len() + 256 * costs.len());
    for (i, line) in lines.iter().enumerate() {
        // Insert before the header of model m+1 (or at the end) the block of model m.
        if let Some(m) = headers.iter().position(|&h| h == i).filter(|&m| m > 0) {
            push_block(&mut out, m - 1, costs);
        }
        out.push_str(line);
        out.push('\n');
    }
    push_block(&mut out, headers.len() - 1, costs);
    // A manifest written with CRLF line ends keeps them (`lines()` took them off).
    if text.contains("\r\n") {
        out = out.replace('\n', "\r\n");
    }
    let back: Manifest = toml::from_str(&out).with_context(|| {
        format!("{}: the manifest with cost blocks does not parse", manifest_path.display())
    })?;
    for (i, c) in costs {
        let b = &back.models[*i].cost;
        ensure!(
            b.weight_bytes == c.weight_bytes
                && b.flops == c.flops
                && b.activation_bytes == c.activation_bytes,
            "{}: model {:?}: the written cost block does not read back",
            manifest_path.display(),
            back.models[*i].name
        );
    }
    Ok(out)
}

fn push_block(out: &mut String, m: usize, costs: &[(usize, Cost)]) {
    if let Some((_, c)) = costs.iter().find(|(i, _)| *i == m) {
        while out.ends_with("\n\n") {
            out.pop();
        }
        out.push('\n');
        out.push_str(&cost_block(c));
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "name = \"w\"\nstream = \"s.jls\"\n\n[[model]]  # first\nname = \"a\"\nonnx = \"a.onnx\"\nkind = \"class\"\nsize = 2\ninput_shape = [1, 4]\nview = []\n\n[[model]]\nname = \"b\"\nonnx = \"b.onnx\"\nkind = \"count\"\nsize = 1\ninput_shape = [1, 4]\nview = []\n[model.cost]\nweight_bytes = 1\nactivation_bytes = 2\nflops = 3\nlatency_us = 4.0\nlatency_runtime = \"x\"\n";

    #[test]
    fn cost_blocks_are_written_after_the_right_model_and_read_back() {
        let m: Manifest = toml::from_str(TEXT).unwrap();
        assert_eq!(m.missing_costs(), [0]);
        assert_eq!(m.models[1].cost.origin, CostOrigin::Manifest);
        let c = Cost {
            weight_bytes: 40,
            activation_bytes: 24,
            flops: 16,
            latency_us: 1.5,
            latency_runtime: RUNTIME.into(),
            origin: CostOrigin::Measured,
        };
        let out = write_costs(TEXT, Path::new("m.toml"), &[(0, c.clone())]).unwrap();
        let back: Manifest = toml::from_str(&out).unwrap();
        assert!(back.missing_costs().is_empty());
        assert_eq!((back.models[0].cost.weight_bytes, back.models[0].cost.flops), (40, 16));
        assert_eq!(back.models[1].cost.flops, 3);
        assert!(out.contains("[[model]]  # first"), "comments kept:\n{out}");
        // CRLF line ends are kept, on every line.
        let crlf = write_costs(&TEXT.replace('\n', "\r\n"), Path::new("m.toml"), &[(0, c)]).unwrap();
        assert_eq!(crlf, out.replace('\n', "\r\n"));
    }

    #[test]
    fn a_missing_cost_binds_measured_not_the_figures() {
        let mut m: Manifest = toml::from_str(TEXT).unwrap();
        let before = crate::bundle::behaviour_digests(&m.models[0]);
        m.models[0].cost = Cost { weight_bytes: 9, origin: CostOrigin::Measured, ..Cost::missing() };
        assert_eq!(crate::bundle::behaviour_digests(&m.models[0]), before);
        m.models[0].output = Some("probabilities".into());
        let with_output = crate::bundle::behaviour_digests(&m.models[0]);
        assert!(with_output.iter().any(|f| f.field == "output"));
        assert!(!before.iter().any(|f| f.field == "output"));
    }
}
