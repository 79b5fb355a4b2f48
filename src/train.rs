//! Host-side training of every link and ensemble of a workload from a recording, and their scores
//! on held-out training frames, into a [`Bundle`]: the `jetlink build` step.
//!
//! Data split (recording rows whose stream frame is `< train_end`, and at least
//! [`BuildOptions::fit_from`], in frame order): the first `1 − holdout_fraction` are the *fit* rows
//! (links and ensembles are trained on them), the last `holdout_fraction` the *holdout* rows (every
//! score is measured on them). Evaluation frames (`>= train_end`) are never read. An in-sample
//! build ([`BuildOptions::in_sample`], for a ceiling) fits every row and scores a spread share of
//! them.

use crate::model_set::ModelSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Result, bail, ensure};

use crate::bundle::{Bundle, DataSplit, ModelDesc, Scores};
use crate::links::ensemble::{self, EnsembleDims};
use crate::links::mlp::{self, FitSettings, LinkDims, RmsProp};
use crate::links::{
    BuildOptions, EnsembleFit, EnsembleSet, LinkSet, MAX_MODELS, Rng, StepTie, TrainOptions, activate,
    agreement, prepare_target, regression_like, source_of_slot,
};
use crate::manifest::{Manifest, OutputKind};
use crate::recording::Recording;

/// Per-model training matrices over the local rows (fit rows, then holdout rows).
struct Data {
    kinds: Vec<OutputKind>,
    sizes: Vec<usize>,
    scorings: Vec<crate::scoring::Scoring>,
    /// Raw outputs per model, `rows × size`.
    raw: Vec<Vec<f32>>,
    /// Link inputs per model where they differ from the raw outputs (a ctc sequence's canonical
    /// alignment, `links::source_input`), `rows × size`.
    input: Vec<Option<Vec<f32>>>,
    /// Training targets per model (class rows turned into distributions).
    target: Vec<Vec<f32>>,
    mean: Vec<Vec<f32>>,
    inv_std: Vec<Vec<f32>>,
    fit: usize,
    hold: usize,
}

struct LinkResult {
    params: Vec<f32>,
    /// Pre-activation predictions on the fit rows (out-of-fold or in-sample), `fit × out`.
    z_fit: Vec<f32>,
    /// Pre-activation predictions on the holdout rows, `hold × out`.
    z_hold: Vec<f32>,
    score: f32,
}

/// Train and score every link and ensemble of `manifest` on `recording` rows of frames
/// `opts.fit_from..train_end`.
pub fn build(
    manifest: &Manifest,
    recording: &Recording,
    train_end: usize,
    opts: &BuildOptions,
) -> Result<Bundle> {
    let models = ModelDesc::from_manifest(manifest)?;
    check_recording(manifest, recording)?;
    let n = models.len();
    ensure!((2..=MAX_MODELS).contains(&n), "links need 2..={MAX_MODELS} models, the manifest has {n}");
    let t = &opts.train;
    ensure!(t.batch > 0 && t.epochs > 0, "batch and epochs must be at least 1");
    ensure!((0.0..1.0).contains(&t.dropout), "dropout {} must be in [0, 1)", t.dropout);
    ensure!(
        (0.0..1.0).contains(&t.dropout_regression),
        "dropout_regression {} must be in [0, 1)",
        t.dropout_regression
    );
    ensure!(
        t.holdout_fraction > 0.0 && t.holdout_fraction < 1.0,
        "holdout_fraction {} must be in (0, 1)",
        t.holdout_fraction
    );

    let fit = opts.fit_from..train_end;
    let mut rows: Vec<usize> =
        (0..recording.len()).filter(|&r| fit.contains(&(recording.frames[r] as usize))).collect();
    rows.sort_by_key(|&r| recording.frames[r]);
    ensure!(
        rows.len() >= 10,
        "only {} recorded frames in {}..{train_end}; links need at least 10",
        rows.len(),
        fit.start
    );
    let hold = ((rows.len() as f32 * t.holdout_fraction).ceil() as usize).clamp(1, rows.len() - 2);
    let data = if opts.in_sample {
        // Every row is fitted; the scores are measured on `hold` of them spread over the range.
        let fit = rows.len();
        let spread: Vec<usize> = (0..hold).map(|k| rows[k * fit / hold]).collect();
        rows.extend(spread);
        Data::new(manifest, recording, &rows, fit, hold)
    } else {
        Data::new(manifest, recording, &rows, rows.len() - hold, hold)
    };
    let folds = match t.ensemble_fit {
        EnsembleFit::OutOfFold { folds } if folds >= 2 => {
            ensure!(folds as usize <= data.fit, "{folds} folds but only {} fit rows", data.fit);
            folds as usize
        }
        _ => 0,
    };

    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map(|p| p.get()).unwrap_or(1)
    } else {
        opts.threads
    };
    let n_links = n * (n - 1);
    let bar = if opts.progress {
        let b = indicatif::ProgressBar::new((n_links + n) as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>10} [{bar:40}] {pos}/{len} links+ensembles {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_message("training");
        b
    } else {
        indicatif::ProgressBar::hidden()
    };

    // Links, in link-index order (target-major), spread over worker threads.
    let link_results: Vec<LinkResult> = parallel_map(n_links, threads, |idx| {
        let (j, s) = (idx / (n - 1), idx % (n - 1));
        let r = train_link(&data, t, source_of_slot(j, s), j, folds);
        bar.inc(1);
        r
    });

    let dims: Vec<LinkDims> = (0..n_links)
        .map(|idx| {
            let (j, s) = (idx / (n - 1), idx % (n - 1));
            link_shape(&data, t, source_of_slot(j, s), j).0
        })
        .collect();
    let mut links = LinkSet::with_dims(n, dims);
    let mut link_scores = vec![1.0f32; n * n];
    for (idx, r) in link_results.iter().enumerate() {
        links.block_mut(idx).copy_from_slice(&r.params);
        let (j, s) = (idx / (n - 1), idx % (n - 1));
        link_scores[j * n + source_of_slot(j, s)] = r.score;
    }

    // Ensembles, one per target, with their subset score tables.
    let ens_results: Vec<EnsembleResult> = parallel_map(n, threads, |j| {
        let r = train_ensemble(&data, t, j, &link_results[j * (n - 1)..(j + 1) * (n - 1)], opts.set_heads);
        bar.inc(1);
        r
    });
    bar.finish_with_message("done");
    let mut ensembles = EnsembleSet::with_dims(
        (0..n).map(|j| EnsembleDims { sources: (n - 1) as u32, output: data.sizes[j] as u32 }).collect(),
    );
    let mut subset = Vec::with_capacity(n << (n - 1));
    for (j, r) in ens_results.iter().enumerate() {
        ensembles.block_mut(j).copy_from_slice(&r.shared);
        subset.extend_from_slice(&r.table);
    }
    for (j, r) in ens_results.iter().enumerate() {
        for (slots, q) in &r.heads {
            ensembles.push_head(j, *slots, q);
        }
    }

    let kinds: Vec<_> = models.iter().map(|m| m.kind).collect();
    let scorings: Vec<crate::scoring::Scoring> = models.iter().map(|m| m.scoring).collect();
    Ok(Bundle {
        // Fitted by `fit_staleness` where the frames are at hand (`jetlink build`).
        staleness: Vec::new(),
        producer: format!("jetlink {}", env!("CARGO_PKG_VERSION")),
        workload: manifest.name.clone(),
        version: 1,
        models,
        settings: t.clone(),
        split: DataSplit {
            train_end: train_end as u64,
            fit_rows: data.fit as u32,
            holdout_rows: data.hold as u32,
        },
        links,
        ensembles,
        scores: Scores {
            link: link_scores,
            subset,
            constant: (0..n).map(|j| data.constant_score(j)).collect(),
            hold: crate::schedule::HoldScores::measure(recording, &kinds, &scorings, fit.clone())
                .table()
                .to_vec(),
        },
        schedule: None,
        dcta: None,
    })
}

/// Run `f(0..count)` over `threads` scoped workers; results in index order.
fn parallel_map<T: Send>(count: usize, threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<T>>> = Mutex::new((0..count).map(|_| None).collect());
    std::thread::scope(|sc| {
        for _ in 0..threads.clamp(1, count.max(1)) {
            sc.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let r = f(i);
                    out.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    out.into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every job ran"))
        .collect()
}

fn check_recording(manifest: &Manifest, rec: &Recording) -> Result<()> {
    if rec.models.len() != manifest.models.len() {
        bail!(
            "recording has {} models, manifest {:?} has {}",
            rec.models.len(),
            manifest.name,
            manifest.models.len()
        );
    }
    for (i, (m, r)) in manifest.models.iter().zip(&rec.models).enumerate() {
        if m.name != r.name || m.kind != r.kind || m.size as usize != r.size {
            bail!(
                "model {i}: manifest has {:?} ({}, size {}), recording has {:?} ({}, size {})",
                m.name,
                m.kind.name(),
                m.size,
                r.name,
                r.kind.name(),
                r.size
            );
        }
    }
    Ok(())
}

impl Data {
    fn new(manifest: &Manifest, rec: &Recording, rows: &[usize], fit: usize, hold: usize) -> Data {
        let n = manifest.models.len();
        let mut d = Data {
            kinds: manifest.models.iter().map(|m| m.kind).collect(),
            sizes: manifest.models.iter().map(|m| m.size as usize).collect(),
            scorings: manifest.models.iter().map(|m| m.scoring()).collect(),
            raw: Vec::with_capacity(n),
            input: Vec::with_capacity(n),
            target: Vec::with_capacity(n),
            mean: Vec::with_capacity(n),
            inv_std: Vec::with_capacity(n),
            fit,
            hold,
        };
        for m in 0..n {
            let size = d.sizes[m];
            let mut raw = Vec::with_capacity(rows.len() * size);
            for &r in rows {
                raw.extend_from_slice(rec.output(r, m));
            }
            let mut target = raw.clone();
            for row in target.chunks_exact_mut(size) {
                prepare_target(d.kinds[m], row);
            }
            // What links from this model read (its output, or a ctc sequence's canonical alignment);
            // the input normalisation is fitted on that.
            let input = crate::links::canonical_input(d.kinds[m]).then(|| {
                let mut buf = vec![0.0; size];
                raw.chunks_exact(size)
                    .flat_map(|row| crate::links::source_input(d.kinds[m], row, &mut buf).to_vec())
                    .collect::<Vec<f32>>()
            });
            let x = input.as_deref().unwrap_or(&raw);
            let (mut mean, mut var) = (vec![0.0f64; size], vec![0.0f64; size]);
            for row in x[..fit * size].chunks_exact(size) {
                for (k, &v) in row.iter().enumerate() {
                    mean[k] += v as f64;
                }
            }
            mean.iter_mut().for_each(|v| *v /= fit as f64);
            for row in x[..fit * size].chunks_exact(size) {
                for (k, &v) in row.iter().enumerate() {
                    var[k] += (v as f64 - mean[k]).powi(2);
                }
            }
            let inv_std = var
                .iter()
                .map(|&v| {
                    let sd = (v / fit as f64).sqrt();
                    if sd < 1e-6 { 0.0 } else { (1.0 / sd) as f32 }
                })
                .collect();
            d.raw.push(raw);
            d.input.push(input);
            d.target.push(target);
            d.mean.push(mean.iter().map(|&v| v as f32).collect());
            d.inv_std.push(inv_std);
        }
        d
    }

    /// Score of the constant predictor (the fit rows' mean target, activated as a link output is) on
    /// the holdout rows: what a score rule gives a link that learnt nothing.
    fn constant_score(&self, j: usize) -> f32 {
        let size = self.sizes[j];
        let mut c = vec![0.0f64; size];
        for row in self.target[j][..self.fit * size].chunks_exact(size) {
            for (k, &v) in row.iter().enumerate() {
                c[k] += v as f64;
            }
        }
        let c: Vec<f32> = c.iter().map(|&v| (v / self.fit as f64) as f32).collect();
        let mut acc = 0.0f64;
        for r in self.fit..self.fit + self.hold {
            let actual = &self.raw[j][r * size..(r + 1) * size];
            acc += agreement(self.kinds[j], self.scorings[j], &c, actual) as f64;
        }
        (acc / self.hold.max(1) as f64) as f32
    }

    /// Initial output bias for a target: the pre-activation of the mean target over the fit rows.
    fn b2_init(&self, j: usize) -> Vec<f32> {
        let size = self.sizes[j];
        let mut m = vec![0.0f64; size];
        for row in self.target[j][..self.fit * size].chunks_exact(size) {
            for (k, &v) in row.iter().enumerate() {
                m[k] += v as f64;
            }
        }
        m.iter()
            .map(|&v| {
                let v = (v / self.fit as f64) as f32;
                match self.kinds[j] {
                    OutputKind::Class => v.max(1e-4).ln(),
                    OutputKind::Multilabel => {
                        let p = v.clamp(1e-4, 1.0 - 1e-4);
                        (p / (1.0 - p)).ln()
                    }
                    _ => v,
                }
            })
            .collect()
    }
}

fn predict_rows(d: LinkDims, p: &[f32], x: &[f32], rows: std::ops::Range<usize>, z: &mut [f32]) {
    let (ni, no) = (d.input as usize, d.output as usize);
    let (mut xn, mut a) = (vec![0.0; ni], vec![0.0; d.hidden as usize]);
    for (k, r) in rows.enumerate() {
        mlp::forward(d, p, &x[r * ni..(r + 1) * ni], &mut xn, &mut a, &mut z[k * no..(k + 1) * no]);
    }
}

/// The shape of link i → j: between two symbol sequences (`ctc` or `argmax` on both sides) a
/// position-tied link ([`StepTie`]) with the width rule applied to one target step's values per
/// position, but never wider in all than the dense link (it is stored and run as one, so it never
/// costs more memory or time); otherwise a dense link with the width rule applied to the whole
/// target.
fn link_shape(data: &Data, t: &TrainOptions, i: usize, j: usize) -> (LinkDims, Option<StepTie>) {
    let dense = LinkDims::new(data.sizes[i], t.hidden(data.sizes[j]), data.sizes[j]);
    let per_step = data.kinds[j].seq().map_or(data.sizes[j], |q| data.sizes[j] / q.steps.max(1) as usize);
    match StepTie::between(data.kinds[i], data.sizes[i], data.kinds[j], data.sizes[j], 1) {
        Some(tie) => {
            let tie = tie.with_width(t.hidden(per_step).min(dense.hidden as usize / tie.positions()));
            (tie.dims(), Some(tie))
        }
        None => (dense, None),
    }
}

fn train_link(data: &Data, t: &TrainOptions, i: usize, j: usize, folds: usize) -> LinkResult {
    let (d, tie) = link_shape(data, t, i, j);
    let no = d.output as usize;
    let cfg = FitSettings {
        loss: t.loss(data.kinds[j]),
        epochs: t.epochs as usize,
        batch: t.batch as usize,
        dropout: t.dropout_for(data.kinds[j]),
        opt: RmsProp::new(t.lr),
    };
    // Standardised targets: train on (y − mean)/sd, then fold sd and mean into W2 and b2.
    let standard = t.standardize_targets && regression_like(data.kinds[j]);
    let scaled: Vec<f32>;
    let (b2, y) = if standard {
        let (m, s) = (&data.mean[j], &data.inv_std[j]);
        scaled = data.target[j]
            .chunks_exact(no)
            .flat_map(|row| row.iter().enumerate().map(|(k, &v)| (v - m[k]) * s[k]))
            .collect();
        (vec![0.0; no], &scaled)
    } else {
        (data.b2_init(j), &data.target[j])
    };
    let x = data.input[i].as_deref().unwrap_or(&data.raw[i]);
    let train_one = |rows: &[usize], fold: u64| {
        let mut rng = Rng::derive(t.seed, &[i as u64, j as u64, fold]);
        let mut p = mlp::init_params(d, &data.mean[i], &data.inv_std[i], &b2, &mut rng);
        if let Some(tie) = &tie {
            let (mean, rest) = p.split_at_mut(d.input as usize);
            tie.pool_normalisation(mean, &mut rest[..d.input as usize]);
            tie.tie_params(&mut p);
        }
        mlp::fit(d, &mut p, x, y, rows, &cfg, &mut rng, tie.as_ref());
        if standard {
            mlp::fold_output_scale(d, &mut p, &data.mean[j], &data.inv_std[j]);
        }
        p
    };
    let all_fit: Vec<usize> = (0..data.fit).collect();
    let params = train_one(&all_fit, 0);
    let mut z_fit = vec![0.0; data.fit * no];
    if folds >= 2 {
        for f in 0..folds {
            let (lo, hi) = (f * data.fit / folds, (f + 1) * data.fit / folds);
            let rows: Vec<usize> = (0..lo).chain(hi..data.fit).collect();
            let pf = train_one(&rows, f as u64 + 1);
            predict_rows(d, &pf, x, lo..hi, &mut z_fit[lo * no..hi * no]);
        }
    } else {
        predict_rows(d, &params, x, 0..data.fit, &mut z_fit);
    }
    let mut z_hold = vec![0.0; data.hold * no];
    predict_rows(d, &params, x, data.fit..data.fit + data.hold, &mut z_hold);
    let mut y_act = vec![0.0; no];
    let mut score = 0.0f64;
    for (k, z) in z_hold.chunks_exact(no).enumerate() {
        y_act.copy_from_slice(z);
        activate(data.kinds[j], &mut y_act);
        let actual = &data.raw[j][(data.fit + k) * no..(data.fit + k + 1) * no];
        score += agreement(data.kinds[j], data.scorings[j], &y_act, actual) as f64;
    }
    LinkResult { params, z_fit, z_hold, score: (score / data.hold as f64) as f32 }
}

/// Score of ensemble parameters `p` of target j with source slots `slots` on the holdout rows.
fn holdout_score(data: &Data, j: usize, d: EnsembleDims, p: &[f32], z_hold: &[f32], slots: ModelSet) -> f32 {
    let (k, no) = (d.sources as usize, d.output as usize);
    let (mut u, mut y) = (vec![0.0; k * no], vec![0.0; no]);
    let mut acc = 0.0f64;
    for r in 0..data.hold {
        ensemble::forward(d, p, &z_hold[r * k * no..(r + 1) * k * no], slots, &mut u, &mut y);
        activate(data.kinds[j], &mut y);
        let actual = &data.raw[j][(data.fit + r) * no..(data.fit + r + 1) * no];
        acc += agreement(data.kinds[j], data.scorings[j], &y, actual) as f64;
    }
    (acc / data.hold as f64) as f32
}

/// A per-source-set head is kept only when it beats the shared head on the `hold` held-out rows by
/// at least this share of them: one point, and at least two rows, so that choosing on those rows
/// does not keep noise.
pub fn set_head_margin(hold: usize) -> f32 {
    0.01f32.max(2.0 / hold.max(1) as f32)
}

/// Target j's ensemble trained on its links' fit-row predictions: the shared head, its subset score
/// table (2^(n−1) entries, indexed by slot set) measured on the holdout rows, and the heads for
/// source sets of at most `set_heads` models that beat it there (their scores replace the table's).
struct EnsembleResult {
    shared: Vec<f32>,
    table: Vec<f32>,
    heads: Vec<(ModelSet, Vec<f32>)>,
}

fn train_ensemble(
    data: &Data,
    t: &TrainOptions,
    j: usize,
    links: &[LinkResult],
    set_heads: usize,
) -> EnsembleResult {
    let k = links.len();
    let no = data.sizes[j];
    let d = EnsembleDims { sources: k as u32, output: no as u32 };
    let gather = |rows: usize, pick: &dyn Fn(&LinkResult) -> &[f32]| {
        let mut z = vec![0.0; rows * k * no];
        for r in 0..rows {
            for (s, l) in links.iter().enumerate() {
                z[(r * k + s) * no..(r * k + s + 1) * no].copy_from_slice(&pick(l)[r * no..(r + 1) * no]);
            }
        }
        z
    };
    let z_fit = gather(data.fit, &|l| &l.z_fit);
    let z_hold = gather(data.hold, &|l| &l.z_hold);
    let mut p = ensemble::init_params(d);
    let mut rng = Rng::derive(t.seed, &[u64::MAX, j as u64]);
    let rows: Vec<usize> = (0..data.fit).collect();
    let fit = |d: EnsembleDims, p: &mut [f32], z_fit: &[f32], rng: &mut Rng, slots: Option<ModelSet>| {
        ensemble::fit(
            d,
            p,
            t.loss(data.kinds[j]),
            z_fit,
            &data.target[j][..data.fit * no],
            &rows,
            t.ensemble_epochs as usize,
            t.batch as usize,
            RmsProp::new(t.ensemble_lr),
            rng,
            slots,
        )
    };
    fit(d, &mut p, &z_fit, &mut rng, None);
    let mut table: Vec<f32> =
        ModelSet::subsets(k).map(|slots| holdout_score(data, j, d, &p, &z_hold, slots)).collect();
    // Heads per source set: the shared head's blocks for the set's slots, fine-tuned with the set
    // always present (see `ensemble::compact`).
    let mut heads = Vec::new();
    let cut = |z: &[f32], rows: usize, slots: ModelSet| {
        let mut c = vec![0.0; rows * slots.len() * no];
        for r in 0..rows {
            let zr = &z[r * k * no..(r + 1) * k * no];
            ensemble::gather(no, zr, slots, &mut c[r * slots.len() * no..(r + 1) * slots.len() * no]);
        }
        c
    };
    for slots in ModelSet::subsets(k).filter(|s| !s.is_empty() && s.len() <= set_heads) {
        let c = EnsembleDims { sources: slots.len() as u32, output: no as u32 };
        let all = ModelSet::all(slots.len());
        let mut q = ensemble::compact(d, &p, slots);
        let mut rng = Rng::derive(t.seed, &[u64::MAX - 1, j as u64, u64::from(slots.bits())]);
        fit(c, &mut q, &cut(&z_fit, data.fit, slots), &mut rng, Some(all));
        let score = holdout_score(data, j, c, &q, &cut(&z_hold, data.hold, slots), all);
        if score >= table[slots.index()] + set_head_margin(data.hold) {
            table[slots.index()] = score;
            heads.push((slots, q));
        }
    }
    EnsembleResult { shared: p, table, heads }
}

/// The staleness model's weights for `bundle` ([`crate::control::refresh::fit`]) from the rows of
/// `recording` of frames `from..` the bundle's `train_end` (the frames its links were fitted on:
/// [`BuildOptions::fit_from`]), in order, and, when given, the stream's frames of the same rows (the
/// frame-change signal; without them its weight stays 0).
pub fn fit_staleness(
    bundle: &Bundle,
    recording: &Recording,
    frames: Option<&crate::stream::Stream>,
    from: usize,
) -> Vec<[f32; crate::control::refresh::FEATURES]> {
    // Every training frame in order, with its recorded outputs where the recording has it.
    let train_end = bundle.split.train_end as usize;
    let span = from.min(train_end)..train_end;
    let outputs: Vec<Option<&[f32]>> = span
        .clone()
        .map(|f| u32::try_from(f).ok().and_then(|f| recording.row_of_frame(f)).map(|r| recording.row(r)))
        .collect();
    let pixels: Option<Vec<&[u8]>> =
        frames.filter(|s| s.meta.len() >= train_end).map(|s| span.map(|f| s.frame(f)).collect());
    let kinds: Vec<OutputKind> = bundle.models.iter().map(|m| m.kind).collect();
    let scorings: Vec<crate::scoring::Scoring> = bundle.models.iter().map(|m| m.scoring).collect();
    crate::control::refresh::fit(
        &outputs,
        &kinds,
        &scorings,
        &bundle.layout(),
        &bundle.scores.hold,
        pixels.as_deref(),
    )
}
