//! A small synthetic workload (7 models, one of every output kind) for tests and examples: a
//! manifest with placeholder ONNX files and a recording whose model outputs are noisy functions of
//! two hidden per-frame variables (a digit class c and a shade u), with a drift segment in which some
//! relationships change.

use std::path::Path;

use anyhow::{Context, Result};

use crate::links::Rng;
use crate::manifest::{Cost, Manifest, ModelSpec, OutputKind};
use crate::recording::{RecordedModel, Recording};

const MODELS: [(&str, OutputKind, u32); 7] = [
    ("digit", OutputKind::Class, 10),
    ("parity", OutputKind::Class, 2),
    ("loops", OutputKind::Count, 1),
    ("emb", OutputKind::Embedding, 8),
    ("shade", OutputKind::Regression, 3),
    ("tags", OutputKind::Multilabel, 3),
    ("box", OutputKind::Box, 4),
];

/// The synthetic manifest; writes a placeholder `<name>.onnx` for every model into `dir`.
pub fn synthetic_manifest(dir: &Path) -> Result<Manifest> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut models = Vec::new();
    for (i, &(name, kind, size)) in MODELS.iter().enumerate() {
        let onnx = format!("{name}.onnx");
        std::fs::write(dir.join(&onnx), format!("placeholder model {name}"))
            .with_context(|| format!("writing {}", dir.join(&onnx).display()))?;
        models.push(ModelSpec {
            name: name.into(),
            onnx,
            kind,
            output: None,
            size,
            importance: 1.0,
            input_shape: vec![1, 1, 28, 28],
            view: vec![],
            tolerance: None,
            score: None,
            steps: None,
            decode: None,
            alphabet: None,
            cost: Cost {
                weight_bytes: 100_000 * (i as u64 + 1),
                activation_bytes: 10_000,
                flops: 1_000_000 * (i as u64 + 1),
                latency_us: 50.0 * (i as f64 + 1.0),
                latency_runtime: "synthetic".into(),
                origin: crate::manifest::CostOrigin::Manifest,
            },
            provenance: "synthetic".into(),
            onnx_bytes: None,
        });
    }
    Ok(Manifest {
        name: "synthetic".into(),
        stream: "synthetic.jls".into(),
        reference: None,
        models,
        dir: dir.to_path_buf(),
        path: dir.join("synthetic.toml"),
    })
}

/// `frames` rows (frame indices 0..frames); frames ≥ `drift_start` are drifted.
pub fn synthetic_recording(frames: usize, drift_start: usize, seed: u64) -> Recording {
    let mut rec = Recording::new(
        MODELS
            .iter()
            .map(|&(n, kind, size)| RecordedModel { name: n.into(), kind, size: size as usize })
            .collect(),
    );
    let mut proto_rng = Rng::new(0xe3b);
    let proto: Vec<f32> = (0..10 * 8).map(|_| proto_rng.normal()).collect();
    let mut rng = Rng::new(seed);
    let loops = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 2.0, 1.0];
    let mut row = Vec::with_capacity(rec.stride());
    for f in 0..frames {
        let drift = f >= drift_start;
        let c = rng.below(10);
        let u = rng.f32();
        row.clear();
        // digit: soft class scores.
        let mut z = [0.0f32; 10];
        for (k, v) in z.iter_mut().enumerate() {
            *v = if k == c { 3.0 } else { 0.0 } + 0.7 * rng.normal();
        }
        crate::links::activate(OutputKind::Class, &mut z);
        row.extend_from_slice(&z);
        // parity: flips under drift.
        let par = (c + drift as usize) % 2;
        let mut z = [0.0f32; 2];
        for (k, v) in z.iter_mut().enumerate() {
            *v = if k == par { 2.5 } else { 0.0 } + 0.5 * rng.normal();
        }
        crate::links::activate(OutputKind::Class, &mut z);
        row.extend_from_slice(&z);
        // loops: a count; one more under drift.
        row.push(loops[c] + drift as u8 as f32 + 0.1 * rng.normal());
        // emb: class prototype scaled by shade.
        for k in 0..8 {
            row.push(proto[c * 8 + k] * (1.0 + 0.5 * u) + 0.05 * rng.normal());
        }
        // shade: regression in [0, 1].
        for v in [u, u * u, c as f32 / 9.0] {
            row.push((v + 0.01 * rng.normal()).clamp(0.0, 1.0));
        }
        // tags: multilabel probabilities.
        for on in [c > 4, c.is_multiple_of(3), u > 0.5] {
            row.push(crate::links::sigmoid(if on { 4.0 } else { -4.0 } + 0.5 * rng.normal()));
        }
        // box: position from shade, height from class.
        row.extend_from_slice(&[0.5 * u, 0.1 + 0.03 * c as f32, 0.3, 0.3 + 0.2 * u]);
        rec.push(f as u32, &row);
    }
    rec
}
