//! The CUDA link kernels against the CPU predictor (`--features cuda`): fresh random weights and
//! inputs for every output kind and every active mask, batches with per-frame masks, and the demo
//! bundle on its reference rows. The device output is poisoned with NaN before every run, so an
//! element the kernel fails to write fails the test. Without a driver or a GPU every test prints why
//! and passes (CI has no GPU).
#![cfg(feature = "cuda")]

use std::path::PathBuf;

use jetlink::bundle::Bundle;
use jetlink::gpu::cuda::{CudaLinks, GpuInitError};
use jetlink::gpu::{Backend, LinkExecutor};
use jetlink::links::{EnsembleDims, EnsembleSet, LinkDims, LinkSet, Predictor, Rng, source_of_slot};
use jetlink::manifest::OutputKind;
use jetlink::model_set::ModelSet;
use jetlink::recording::Recording;

/// Largest relative error allowed: ‖gpu − cpu‖ / ‖cpu‖ over one frame's predicted values.
const TOLERANCE: f64 = 1e-5;

/// The repository root: `$JETLINK_ROOT` (for test binaries run on another machine), else the
/// crate's directory.
fn root() -> PathBuf {
    std::env::var_os("JETLINK_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn demo_bundle() -> Bundle {
    Bundle::load(&root().join("demo/demo.bundle")).expect("demo bundle")
}

/// The GPU executor, or `None` (with a printed reason) where this machine has no usable GPU.
fn gpu(bundle: &Bundle, max_batch: usize, test: &str) -> Option<CudaLinks> {
    match CudaLinks::from_bundle(bundle, max_batch) {
        Ok(c) => Some(c),
        Err(e @ (GpuInitError::NoDriver | GpuInitError::NoNvrtc | GpuInitError::NoDevice)) => {
            println!("SKIPPED {test}: no GPU here ({e})");
            None
        }
        Err(e) => panic!("{test}: CUDA start failed: {e}"),
    }
}

fn fresh_seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let seed = t.as_nanos() as u64;
    println!("seed {seed}");
    seed
}

/// A bundle with the demo's metadata but the given models and fresh random weights.
fn random_bundle(spec: &[(OutputKind, usize, usize)], rng: &mut Rng) -> Bundle {
    let mut b = demo_bundle();
    let template = b.models[0].clone();
    b.models = spec
        .iter()
        .enumerate()
        .map(|(i, &(kind, size, _))| {
            let mut m = template.clone();
            m.name = format!("m{i}");
            m.kind = kind;
            m.size = size as u32;
            m
        })
        .collect();
    let n = spec.len();
    let mut dims = Vec::new();
    for j in 0..n {
        for s in 0..n - 1 {
            let i = source_of_slot(j, s);
            dims.push(LinkDims::new(spec[i].1, spec[j].2, spec[j].1));
        }
    }
    let mut links = LinkSet::with_dims(n, dims);
    for idx in 0..links.dims.len() {
        let d = links.dims[idx];
        let block = links.block_mut(idx);
        let ni = d.input as usize;
        for (p, v) in block.iter_mut().enumerate() {
            *v = if p < ni {
                rng.symmetric(1.0)
            } else if p < 2 * ni {
                0.5 + 1.5 * rng.f32()
            } else {
                rng.symmetric(0.6)
            };
        }
    }
    let mut ens = EnsembleSet::with_dims(
        spec.iter()
            .map(|&(_, size, _)| EnsembleDims { sources: (n - 1) as u32, output: size as u32 })
            .collect(),
    );
    for v in ens.params.iter_mut() {
        *v = rng.symmetric(1.0);
    }
    b.links = links;
    b.ensembles = ens;
    b.scores.link = vec![1.0; n * n];
    b.scores.subset = vec![1.0; n << (n - 1)];
    b.scores.constant = vec![0.0; n];
    b.scores.hold = vec![0.5; n * jetlink::schedule::MAX_HOLD_AGE];
    b.staleness.clear();
    b.validate().expect("random bundle is consistent");
    b
}

/// Relative error of `got` against `want` over the predicted (inactive) slices; NaN counts as ∞.
fn frame_error(bundle: &Bundle, active: ModelSet, got: &[f32], want: &[f32]) -> f64 {
    let (mut diff, mut norm, mut at) = (0.0f64, 0.0f64, 0usize);
    for (j, &size) in bundle.sizes().iter().enumerate() {
        let r = at..at + size;
        at += size;
        if active.contains(j) {
            assert_eq!(&got[r.clone()], &want[r], "active slice {j} must be copied exactly");
            continue;
        }
        for (&g, &w) in got[r.clone()].iter().zip(&want[r]) {
            if !g.is_finite() {
                return f64::INFINITY;
            }
            diff += (g as f64 - w as f64).powi(2);
            norm += (w as f64).powi(2);
        }
    }
    if norm == 0.0 { diff.sqrt() } else { (diff / norm).sqrt() }
}

/// The bundle with its shared ensemble heads only: what the kernels compute (a call where a
/// per-source-set head applies runs on the CPU, see `executor_falls_back_or_matches`).
fn shared_heads(bundle: &Bundle) -> Bundle {
    let mut b = bundle.clone();
    b.ensembles = b.ensembles.shared_only();
    b
}

/// Every mask (all 2^n, the empty and the full set included) on `rows` fresh rows, one tick each.
fn check_ticks(bundle: &Bundle, gpu: &mut CudaLinks, rows: &[Vec<f32>], label: &str) -> f64 {
    let n = bundle.n_models();
    let mut cpu = Predictor::new(&shared_heads(bundle));
    let stride = cpu.stride();
    let (mut want, mut got) = (vec![0.0; stride], vec![0.0; stride]);
    let mut worst = 0.0f64;
    for (r, row) in rows.iter().enumerate() {
        for active in ModelSet::subsets(n) {
            cpu.predict(active, row, &mut want).unwrap();
            gpu.poison_out().unwrap();
            got.fill(f32::NAN);
            gpu.predict(active, row, &mut got).unwrap();
            let e = frame_error(bundle, active, &got, &want);
            assert!(
                e <= TOLERANCE,
                "{label}: row {r} mask {active}: relative error {e}\n gpu {got:?}\n cpu {want:?}"
            );
            worst = worst.max(e);
        }
    }
    println!("{label}: {} rows × {} masks, worst relative error {worst:.2e}", rows.len(), 1u64 << n);
    worst
}

fn random_rows(stride: usize, count: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
    (0..count).map(|_| (0..stride).map(|_| rng.symmetric(2.0)).collect()).collect()
}

#[test]
fn random_weights_every_output_kind() {
    let mut rng = Rng::new(fresh_seed());
    // (kind, output size, hidden width of links into it): every kind, sizes that are not multiples
    // of 8, a 1-value target, and widths above the block size.
    let spec = [
        (OutputKind::Class, 10, 20),
        (OutputKind::Multilabel, 7, 64),
        (OutputKind::Regression, 3, 64),
        (OutputKind::Count, 1, 64),
        (OutputKind::Embedding, 33, 66),
        (OutputKind::Box, 4, 300),
    ];
    let bundle = random_bundle(&spec, &mut rng);
    let Some(mut g) = gpu(&bundle, 1, "random_weights_every_output_kind") else { return };
    println!("{:?}", g.info());
    let rows = random_rows(bundle.sizes().iter().sum(), 4, &mut rng);
    check_ticks(&bundle, &mut g, &rows, "every kind");
}

#[test]
fn random_wide_targets() {
    let mut rng = Rng::new(fresh_seed());
    // Outputs wider than a warp and a block: the softmax and every loop stride over threads.
    let spec =
        [(OutputKind::Class, 300, 40), (OutputKind::Multilabel, 70, 90), (OutputKind::Regression, 9, 18)];
    let bundle = random_bundle(&spec, &mut rng);
    let Some(mut g) = gpu(&bundle, 1, "random_wide_targets") else { return };
    let rows = random_rows(bundle.sizes().iter().sum(), 3, &mut rng);
    check_ticks(&bundle, &mut g, &rows, "wide targets");
}

#[test]
fn batch_with_per_frame_masks() {
    let mut rng = Rng::new(fresh_seed());
    let spec = [
        (OutputKind::Class, 10, 20),
        (OutputKind::Multilabel, 5, 10),
        (OutputKind::Count, 1, 64),
        (OutputKind::Box, 4, 8),
    ];
    let bundle = random_bundle(&spec, &mut rng);
    let frames = 257;
    let Some(mut g) = gpu(&bundle, frames, "batch_with_per_frame_masks") else { return };
    let mut cpu = Predictor::new(&bundle);
    let stride = cpu.stride();
    let rows: Vec<f32> = (0..frames * stride).map(|_| rng.symmetric(2.0)).collect();
    let masks: Vec<ModelSet> =
        (0..frames).map(|_| ModelSet::from_bits(rng.next_u64() as u16 & 0b1111)).collect();
    let mut got = vec![f32::NAN; frames * stride];
    g.poison_out().unwrap();
    g.predict_batch(&masks, &rows, &mut got).unwrap();
    let mut want = vec![0.0; stride];
    for (f, &mask) in masks.iter().enumerate() {
        let r = f * stride..(f + 1) * stride;
        cpu.predict(mask, &rows[r.clone()], &mut want).unwrap();
        let e = frame_error(&bundle, mask, &got[r], &want);
        assert!(e <= TOLERANCE, "frame {f} mask {mask}: relative error {e}");
    }
    assert!(g.predict_batch(&masks[..0], &rows[..0], &mut got[..0]).is_err());
}

#[test]
fn demo_bundle_on_reference_rows() {
    let bundle = demo_bundle();
    let Some(mut g) = gpu(&bundle, 1, "demo_bundle_on_reference_rows") else { return };
    let rec = Recording::load(&root().join("demo/reference.jlr.gz")).expect("reference recording");
    let step = (rec.len() / 16).max(1);
    let rows: Vec<Vec<f32>> = (0..rec.len()).step_by(step).take(16).map(|r| rec.row(r).to_vec()).collect();
    check_ticks(&bundle, &mut g, &rows, "demo bundle");
}

#[test]
fn executor_falls_back_or_matches() {
    let bundle = demo_bundle();
    let mut exec = LinkExecutor::new(&bundle);
    let mut cpu = LinkExecutor::cpu(&bundle);
    assert_eq!(cpu.backend(), Backend::Cpu);
    println!("executor backend: {:?}", exec.backend());
    let rec = Recording::load(&root().join("demo/reference.jlr.gz")).expect("reference recording");
    let stride = rec.stride();
    let (mut a, mut b) = (vec![f32::NAN; stride], vec![0.0; stride]);
    let sets = [0b1u16, 0b11, 0b1111, 0b1010_0101].map(ModelSet::from_bits);
    // The demo bundle has per-source-set heads: some of these calls run on the CPU path.
    assert!(sets.iter().any(|&a| cpu.predictor().uses_set_head(a)));
    for active in sets {
        exec.predict(active, rec.row(0), &mut a).unwrap();
        cpu.predict(active, rec.row(0), &mut b).unwrap();
        assert!(frame_error(&bundle, active, &a, &b) <= TOLERANCE);
    }
    assert!(exec.predict(ModelSet::single(bundle.n_models()), rec.row(0), &mut a).is_err());
    assert!(exec.predict(ModelSet::from_bits(1), &rec.row(0)[1..], &mut a).is_err());
}

#[test]
fn ptx_cache_key_changes_with_target() {
    use jetlink::gpu::cuda::cache_file_name;
    let a = cache_file_name(87, 11040, (11, 4));
    assert_ne!(a, cache_file_name(72, 11040, (11, 4)));
    assert_ne!(a, cache_file_name(87, 12020, (11, 4)));
    assert_ne!(a, cache_file_name(87, 11040, (12, 2)));
    assert!(a.starts_with("links-") && a.ends_with(".ptx"), "{a}");
}
