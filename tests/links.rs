//! Links end to end on the synthetic workload: training and scores per kind, the allocation-free
//! predictor and adaptation (checked with a counting global allocator), determinism, and (ignored)
//! measurements on the demo recording.

use std::path::PathBuf;

use jetlink::alloc_count::{CountingAllocator, allocations_in as allocations};
use jetlink::bundle::Bundle;
use jetlink::links::{self, AdaptOptions, Adapter, BuildOptions, EnsembleFit, Predictor, TrainOptions};
use jetlink::manifest::OutputKind;
use jetlink::model_set::ModelSet;
use jetlink::sim::{synthetic_manifest, synthetic_recording};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("jetlink-links-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

const TRAIN_END: usize = 1500;
const DRIFT: usize = 2000;

fn quick_options() -> BuildOptions {
    BuildOptions {
        train: TrainOptions {
            epochs: 20,
            ensemble_epochs: 20,
            ensemble_fit: EnsembleFit::OutOfFold { folds: 2 },
            ..TrainOptions::default()
        },
        threads: 2,
        progress: false,
        set_heads: 1,
        fit_from: 0,
        in_sample: false,
    }
}

fn synthetic_bundle(name: &str) -> (jetlink::manifest::Manifest, jetlink::recording::Recording, Bundle) {
    let m = synthetic_manifest(&tmp_dir(name)).unwrap();
    let rec = synthetic_recording(3000, DRIFT, 7);
    let b = jetlink::train::build(&m, &rec, TRAIN_END, &quick_options()).unwrap();
    (m, rec, b)
}

#[test]
fn links_learn_every_kind() {
    let (_, _, b) = synthetic_bundle("kinds");
    println!("{}", jetlink::report::scores_markdown(&b, false));
    let idx = |n: &str| b.models.iter().position(|m| m.name == n).unwrap();
    // Strongly related pairs score high.
    assert!(b.link_score(idx("digit"), idx("parity")) > 0.9, "digit->parity {}", b.link_score(0, 1));
    assert!(b.link_score(idx("digit"), idx("loops")) > 0.9, "digit->loops");
    assert!(b.link_score(idx("emb"), idx("digit")) > 0.8, "emb->digit");
    assert!(b.link_score(idx("digit"), idx("tags")) > 0.5, "digit->tags");
    assert!(b.ensemble_score(idx("shade")) > 0.5, "shade ensemble {}", b.ensemble_score(idx("shade")));
    assert!(b.ensemble_score(idx("box")) > 0.8, "box ensemble {}", b.ensemble_score(idx("box")));
    assert!(b.ensemble_score(idx("emb")) > 0.8, "emb ensemble {}", b.ensemble_score(idx("emb")));
    // A weakly related pair scores lower than the ensemble.
    assert!(b.link_score(idx("parity"), idx("digit")) < b.ensemble_score(idx("digit")));
    // Every score is a probability, the table has 2^(n-1) entries per target.
    assert!(b.scores.link.iter().chain(&b.scores.subset).all(|v| (0.0..=1.0).contains(v)));
    assert_eq!(b.scores.subset.len(), 7 << 6);
    // More sources never hurt much: the all-sources ensemble beats the bias-only prediction.
    for j in 0..7 {
        assert!(b.ensemble_score(j) >= b.subset_score(j, ModelSet::EMPTY), "target {j}");
    }
    // Every score rule gives the constant predictor (the training mean) less than the links earn.
    assert_eq!(b.scores.constant.len(), 7);
    for j in 0..7 {
        assert!(
            b.scores.constant[j] < b.ensemble_score(j),
            "target {j}: constant {} vs ensemble {}",
            b.scores.constant[j],
            b.ensemble_score(j)
        );
    }
    // Every model kind was exercised.
    for k in OutputKind::ALL {
        assert!(b.models.iter().any(|m| m.kind == k), "{k:?}");
    }
}

#[test]
fn build_is_deterministic() {
    let m = synthetic_manifest(&tmp_dir("det")).unwrap();
    let rec = synthetic_recording(600, 10_000, 3);
    let mut o = quick_options();
    o.train.epochs = 3;
    o.train.ensemble_epochs = 3;
    let a = jetlink::train::build(&m, &rec, 500, &o).unwrap();
    o.threads = 1;
    let b = jetlink::train::build(&m, &rec, 500, &o).unwrap();
    assert_eq!(a.to_bytes().unwrap(), b.to_bytes().unwrap());
    // Evaluation frames are never read: changing them changes nothing.
    let mut rec2 = rec.clone();
    let s = rec2.stride();
    rec2.values[550 * s..].iter_mut().for_each(|v| *v = 123.0);
    let c = jetlink::train::build(&m, &rec2, 500, &o).unwrap();
    assert_eq!(a.to_bytes().unwrap(), c.to_bytes().unwrap());
}

/// `fit_from` (`jetlink build --fit-frames A..B`): the links are fitted on frames A..B alone, and
/// frames outside them are never read.
#[test]
fn the_fit_frames_are_the_only_frames_read() {
    let m = synthetic_manifest(&tmp_dir("fitfrom")).unwrap();
    let rec = synthetic_recording(600, 10_000, 3);
    let mut o = quick_options();
    o.train.epochs = 3;
    o.train.ensemble_epochs = 3;
    o.fit_from = 200;
    let a = jetlink::train::build(&m, &rec, 500, &o).unwrap();
    assert_eq!((a.split.fit_rows + a.split.holdout_rows) as usize, 300, "rows of frames 200..500");
    // Frames before 200 and from 500 on are not read: changing them changes nothing.
    let mut rec2 = rec.clone();
    let s = rec2.stride();
    rec2.values[..200 * s].iter_mut().for_each(|v| *v = 123.0);
    rec2.values[500 * s..].iter_mut().for_each(|v| *v = -7.0);
    let b = jetlink::train::build(&m, &rec2, 500, &o).unwrap();
    assert_eq!(a.to_bytes().unwrap(), b.to_bytes().unwrap());
    // Frames 200..500 are: the same build from frame 0 differs.
    o.fit_from = 0;
    let c = jetlink::train::build(&m, &rec, 500, &o).unwrap();
    assert_ne!(a.to_bytes().unwrap(), c.to_bytes().unwrap());
    // In-sample: every row of 200..500 is fitted, a spread fifth of them scored; still nothing
    // outside the range is read.
    o.fit_from = 200;
    o.in_sample = true;
    let d = jetlink::train::build(&m, &rec, 500, &o).unwrap();
    assert_eq!((d.split.fit_rows, d.split.holdout_rows), (300, 60));
    let e = jetlink::train::build(&m, &rec2, 500, &o).unwrap();
    assert_eq!(d.to_bytes().unwrap(), e.to_bytes().unwrap());
    assert_ne!(a.to_bytes().unwrap(), d.to_bytes().unwrap());
    // Its scores report says the scored rows were fitted too.
    assert!(jetlink::report::scores_markdown(&d, true).contains("60 of the frames the links were fitted on"));
    assert!(jetlink::report::scores_markdown(&a, false).contains("held-out training frames"));
}

/// Agreement of target j on the holdout rows when the models in `active` run.
fn holdout_agreement(
    b: &Bundle,
    rec: &jetlink::recording::Recording,
    p: &mut Predictor,
    j: usize,
    active: ModelSet,
) -> f32 {
    let hold = (b.split.fit_rows as usize)..(b.split.fit_rows + b.split.holdout_rows) as usize;
    let mut out = vec![0.0; p.stride()];
    let m = &b.models[j];
    let o = rec.offset(j);
    let mut acc = 0.0;
    for r in hold.clone() {
        p.predict(active, rec.row(r), &mut out).unwrap();
        acc += links::agreement(m.kind, m.scoring, &out[o..o + m.size as usize], rec.output(r, j));
    }
    acc / hold.len() as f32
}

#[test]
fn set_heads_are_kept_where_they_beat_the_shared_head() {
    let (_, rec, b) = synthetic_bundle("set-heads");
    let n = b.n_models();
    let mut with = Predictor::new(&b);
    let mut shared = b.clone();
    shared.ensembles = shared.ensembles.shared_only();
    let mut without = Predictor::new(&shared);
    assert!(!b.ensembles.heads.is_empty(), "no head beat the shared one on the synthetic workload");
    for h in &b.ensembles.heads {
        let j = h.target as usize;
        assert_eq!(h.slots.len(), 1, "heads are fitted for sets of at most set_heads = 1 model");
        let active: ModelSet = h.slots.iter().map(|s| links::source_of_slot(j, s)).collect();
        assert!(with.uses_set_head(active) && !without.uses_set_head(active));
        let a = holdout_agreement(&b, &rec, &mut with, j, active);
        let s = holdout_agreement(&b, &rec, &mut without, j, active);
        // The stored subset score is the head's, measured on the same rows, and beats the shared
        // head's by the margin.
        assert!(
            (a - b.subset_score(j, active)).abs() < 1e-4,
            "target {j} from {active}: {a} vs {}",
            b.subset_score(j, active)
        );
        assert!(
            a >= s + jetlink::train::set_head_margin(b.split.holdout_rows as usize) - 1e-6,
            "target {j} from {active}: head {a}, shared {s}"
        );
    }
    // A set without a head predicts exactly as the shared head does.
    let all = ModelSet::all(n);
    let mut o1 = vec![0.0; with.stride()];
    let mut o2 = vec![0.0; with.stride()];
    with.predict(all.without(0), rec.row(0), &mut o1).unwrap();
    without.predict(all.without(0), rec.row(0), &mut o2).unwrap();
    assert_eq!(o1, o2);
}

#[test]
fn predictor_matches_scores_and_does_not_allocate() {
    let (_, rec, b) = synthetic_bundle("predict");
    let mut p = Predictor::new(&b);
    let n = b.n_models();
    let mut out = vec![0.0; p.stride()];
    let all = ModelSet::all(n);
    // Accuracy of the ensemble from all other models on the holdout rows equals the stored score.
    let hold = (b.split.fit_rows as usize)..(b.split.fit_rows + b.split.holdout_rows) as usize;
    for j in 0..n {
        let mut acc = 0.0;
        for r in hold.clone() {
            p.predict(all.without(j), rec.row(r), &mut out).unwrap();
            let m = &b.models[j];
            let o = rec.offset(j);
            acc += links::agreement(m.kind, m.scoring, &out[o..o + m.size as usize], rec.output(r, j));
        }
        let acc = acc / hold.len() as f32;
        assert!((acc - b.ensemble_score(j)).abs() < 1e-4, "target {j}: {acc} vs {}", b.ensemble_score(j));
    }
    // Active slices are copied; no allocation in predict or signals.
    let row = rec.row(2500).to_vec();
    let (_, allocs) = allocations(|| {
        for mask in ModelSet::subsets(n).filter(|m| !m.is_empty() && *m != all) {
            p.predict(mask, &row, &mut out).unwrap();
            for j in 0..n {
                let s = p.signals(j).unwrap();
                assert!(s.disagreement >= 0.0 && s.disagreement <= 1.0);
            }
        }
    });
    assert_eq!(allocs, 0, "predict/signals allocated");
    p.predict(ModelSet::from_bits(0b1), &row, &mut out).unwrap();
    assert_eq!(out[..10], row[..10]);
    // Errors are typed.
    assert!(matches!(
        p.predict(ModelSet::single(9), &row, &mut out),
        Err(links::LinkError::MaskOutOfRange { .. })
    ));
    assert!(matches!(
        p.predict(ModelSet::from_bits(1), &row[1..], &mut out),
        Err(links::LinkError::RowLength { .. })
    ));
    let flags = [true, false, false, false, false, false, false];
    p.predict_flags(&flags, &row, &mut out).unwrap();
}

#[test]
fn drift_raises_signals() {
    let (_, rec, b) = synthetic_bundle("signals");
    let mut p = Predictor::new(&b);
    let mut out = vec![0.0; p.stride()];
    // parity predicted from digit + loops + emb: its links disagree more once parity flips.
    let active = ModelSet::from_bits(0b1101).without(1);
    let mean_dis = |p: &mut Predictor, out: &mut Vec<f32>, rows: std::ops::Range<usize>| {
        let mut d = 0.0;
        for r in rows.clone() {
            p.predict(active, rec.row(r), out).unwrap();
            d += p.signals(2).unwrap().uncertainty + p.signals(1).unwrap().disagreement;
        }
        d / rows.len() as f32
    };
    let _ = mean_dis(&mut p, &mut out, 1600..1700);
    // Signals are in range.
    p.predict(active, rec.row(2100), &mut out).unwrap();
    let s = p.signals(1).unwrap();
    assert!((0.0..=1.0).contains(&s.uncertainty) && s.links == 3, "{s:?}");
    assert_eq!(p.signals(0).unwrap(), links::DriftSignals::default());
}

#[test]
fn adaptation_reduces_loss_on_drift_without_allocating() {
    let (_, rec, b) = synthetic_bundle("adapt");
    let mut p = Predictor::new(&b);
    let mut ad = Adapter::new(&b, &p, AdaptOptions::default());
    let target = 1; // parity flips after DRIFT
    let sources = ModelSet::from_bits(0b1 | 0b100 | 0b1000); // digit, loops, emb
    let batch: Vec<f32> = (DRIFT + 100..DRIFT + 150).flat_map(|r| rec.row(r).to_vec()).collect();
    let test: Vec<f32> = (DRIFT + 500..DRIFT + 550).flat_map(|r| rec.row(r).to_vec()).collect();
    let before = ad.loss(&mut p, target, sources, &batch).unwrap();
    let test_before = ad.loss(&mut p, target, sources, &test).unwrap();
    let (stats, allocs) = allocations(|| ad.step(&mut p, target, sources, &batch).unwrap());
    assert_eq!(allocs, 0, "adaptation step allocated");
    let after_one = ad.loss(&mut p, target, sources, &batch).unwrap();
    assert!(after_one < before, "one step: {before} -> {after_one}");
    assert_eq!(stats.links, 3);
    let (_, allocs) = allocations(|| {
        for _ in 0..100 {
            ad.step(&mut p, target, sources, &batch).unwrap();
        }
    });
    assert_eq!(allocs, 0);
    let after = ad.loss(&mut p, target, sources, &batch).unwrap();
    let test_after = ad.loss(&mut p, target, sources, &test).unwrap();
    assert!(after < 0.5 * before, "100 steps: {before} -> {after}");
    assert!(test_after < test_before, "fresh drifted frames: {test_before} -> {test_after}");
    // The predictor uses the adapted weights: parity top-1 agreement on fresh drifted frames recovers.
    let mut out = vec![0.0; p.stride()];
    let mut acc = 0.0;
    for r in DRIFT + 500..DRIFT + 700 {
        p.predict(sources, rec.row(r), &mut out).unwrap();
        acc += links::agreement(
            OutputKind::Class,
            jetlink::scoring::Scoring::tolerance(0.1),
            &out[10..12],
            rec.output(r, 1),
        );
    }
    assert!(acc / 200.0 > 0.8, "adapted parity agreement {}", acc / 200.0);
    // Bad inputs are typed errors.
    assert!(matches!(
        ad.step(&mut p, target, ModelSet::single(target), &batch),
        Err(links::LinkError::NoSources { .. })
    ));
    assert!(matches!(ad.step(&mut p, target, sources, &batch[1..]), Err(links::LinkError::BadBatch { .. })));
}

/// Measurements on the demo recording (run with `--ignored --nocapture` once demo/ exists):
/// training time, scores with/without the hidden floor and out-of-fold fitting, predict µs/frame.
#[test]
#[ignore]
fn demo_measurements() {
    let manifest = jetlink::manifest::Manifest::load(std::path::Path::new("demo/manifest.toml")).unwrap();
    let rec = jetlink::recording::Recording::load(std::path::Path::new("demo/reference.jlr.gz")).unwrap();
    let train_end = 2000;
    let d = TrainOptions::default;
    let oof = EnsembleFit::OutOfFold { folds: 3 };
    let mut variants: Vec<(String, TrainOptions)> = vec![("default".into(), d())];
    for seed in [1u64, 2] {
        for floor in [0u32, 64] {
            for fit in [EnsembleFit::InSample, oof] {
                let t = TrainOptions { hidden_floor: floor, ensemble_fit: fit, seed, ..d() };
                variants.push((format!("floor {floor} {fit:?} seed {seed}"), t));
            }
        }
    }
    for (name, t) in variants {
        let o = BuildOptions {
            train: t,
            threads: 2,
            progress: false,
            set_heads: 0,
            fit_from: 0,
            in_sample: false,
        };
        let t0 = std::time::Instant::now();
        let b = jetlink::train::build(&manifest, &rec, train_end, &o).unwrap();
        let secs = t0.elapsed().as_secs_f64();
        let n = b.n_models();
        let ml: f32 = (0..n)
            .flat_map(|j| (0..n).filter(move |&i| i != j).map(move |i| (i, j)))
            .map(|(i, j)| b.link_score(i, j))
            .sum::<f32>()
            / (n * (n - 1)) as f32;
        let me: f32 = (0..n).map(|j| b.ensemble_score(j)).sum::<f32>() / n as f32;
        let ens: Vec<String> = (0..n).map(|j| format!("{:.3}", b.ensemble_score(j))).collect();
        println!("{name:>40}: {secs:5.1} s, mean link {ml:.3}, mean ens {me:.3} [{}]", ens.join(" "));
        if name == "default" {
            println!("{}", jetlink::report::scores_markdown(&b, false));
            let s = links::bench_predict(&b, &rec, 200_000).unwrap();
            println!("predict: {s:?}");
        }
    }
}
