//! The engine layer against the reference: every demo model, run by tract through its view, matches
//! the outputs onnxruntime gave when the demo was built (absolute tolerance 1e-4).

use std::path::Path;

use jetlink::engine::{self, Backend, EngineError, TractBackend};
use jetlink::manifest::Manifest;
use jetlink::record;
use jetlink::recording::Recording;
use jetlink::stream::Stream;

const TOL: f32 = 1e-4;

fn demo() -> (Manifest, Stream, Recording) {
    let m = Manifest::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/demo/manifest.toml"))).unwrap();
    let s = Stream::load(&m.path_of(&m.stream)).unwrap();
    let r = Recording::load(&m.path_of(m.reference.as_ref().unwrap())).unwrap();
    (m, s, r)
}

#[test]
fn every_model_matches_the_onnxruntime_reference() {
    let (m, s, r) = demo();
    assert_eq!(r.len(), s.len(), "reference covers the whole stream");
    let mut models = engine::prepare_all(&m, s.shape(), &TractBackend).unwrap();
    // Frames from the training part, the clean evaluation part and across the drift segment.
    let frames: Vec<usize> =
        (0..8).map(|i| i * 250).chain((0..8).map(|i| s.drift_start + i * 600 + 7)).collect();
    let mut worst = vec![0.0f32; models.len()];
    for &f in &frames {
        let (rec, _) = record::record(&mut models, &s, f..f + 1, false).unwrap();
        let row = r.row_of_frame(f as u32).unwrap();
        for (mi, w) in worst.iter_mut().enumerate() {
            for (a, b) in rec.output(0, mi).iter().zip(r.output(row, mi)) {
                assert!(a.is_finite());
                *w = w.max((a - b).abs());
            }
        }
    }
    for (mi, w) in worst.iter().enumerate() {
        assert!(*w <= TOL, "model {} differs from the reference by {w} (> {TOL})", m.models[mi].name);
    }
}

#[test]
fn engines_describe_themselves_and_check_buffers() {
    let (m, s, _) = demo();
    for spec in &m.models {
        let mut p = engine::PreparedModel::prepare(spec, &m, s.shape(), &TractBackend).unwrap();
        let info = p.engine.info().clone();
        assert_eq!(info.backend, "tract-onnx");
        assert_eq!(info.output.len(), spec.size as usize);
        assert_eq!(info.input.shape, spec.input_shape.iter().map(|&d| d as usize).collect::<Vec<_>>());
        assert!(p.engine.memory_bytes() >= spec.cost.activation_bytes);
        let need = info.input.len();
        let mut out = vec![0.0; spec.size as usize];
        assert_eq!(
            p.engine.run(&vec![0.0; need + 1], &mut out),
            Err(EngineError::InputSize { got: need + 1, need })
        );
        let mut short = vec![0.0; spec.size as usize + 3];
        assert!(matches!(p.engine.run(&vec![0.0; need], &mut short), Err(EngineError::OutputSize { .. })));
        assert!(p.run(0, s.frame(0), &mut out).is_ok());
    }
}

#[test]
fn a_manifest_that_disagrees_with_the_model_is_refused() {
    let (mut m, s, _) = demo();
    m.models[0].size = 11;
    let e = engine::PreparedModel::prepare(&m.models[0], &m, s.shape(), &TractBackend).err().unwrap();
    let msg = format!("{e:#}");
    assert!(msg.contains("digit_mlp") && msg.contains("size = 11"), "{msg}");

    let (mut m, s, _) = demo();
    m.models[1].onnx = "models/missing.onnx".into();
    let msg = format!(
        "{:#}",
        engine::PreparedModel::prepare(&m.models[1], &m, s.shape(), &TractBackend).err().unwrap()
    );
    assert!(msg.contains("missing.onnx"), "{msg}");

    let (mut m, s, _) = demo();
    m.models[2].input_shape = vec![1, 3, 14, 14];
    let msg = format!(
        "{:#}",
        engine::PreparedModel::prepare(&m.models[2], &m, s.shape(), &TractBackend).err().unwrap()
    );
    assert!(msg.contains("needs 588"), "{msg}");
}

#[test]
fn manifest_errors_name_the_field() {
    let dir = std::env::temp_dir().join(format!("jetlink-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/demo/manifest.toml")).unwrap();
    let p = dir.join("manifest.toml");
    std::fs::write(&p, good.replacen("kind = \"class\"", "kind = \"klass\"", 1)).unwrap();
    let e = format!("{:#}", Manifest::load(&p).unwrap_err());
    assert!(e.contains("manifest.toml") && e.contains("klass"), "{e}");
    std::fs::write(&p, good.replacen("importance = 1.0", "importance = 1.0\nimportanse = 2.0", 1)).unwrap();
    let e = format!("{:#}", Manifest::load(&p).unwrap_err());
    assert!(e.contains("unknown field `importanse`"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tract_backend_is_named() {
    assert_eq!(TractBackend.name(), "tract-onnx");
}
