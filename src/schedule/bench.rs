//! `jetlink bench mlink`: every scheduler over the evaluation part of a stream, at a sweep of memory
//! budgets, measured the paper's way (agreement of each delivered output with what that model would
//! have output on that frame), clean and drift segments apart.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use super::{Decision, Problem, ScheduleTable, Scheduler};
use crate::bundle::Bundle;
use crate::links::{AdaptOptions, Adapter, Predictor, Rng, agreement};
use crate::recording::Recording;
use crate::row::RowLayout;
use crate::stream::{Segment, Stream};

/// Settings of one benchmark run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Frames per scheduling period.
    pub period: usize,
    /// Share of each period's frames profiled (every model run) to refresh the scores; the paper used 1%.
    pub profile_share: f32,
    /// Weight, in frames, of the bundle's held-out scores against a period's profile.
    pub prior_frames: f32,
    /// Number of budget levels between the smallest model and all models.
    pub levels: usize,
    pub seed: u64,
    /// Most models run per frame (the execution budget); `None` for no limit.
    pub max_active: Option<usize>,
    /// On-line adaptation variants run for `optimal` at every budget, beside no adaptation.
    pub adapt: Vec<AdaptSim>,
    /// Frames per adaptation period: the labelled frames of a period refresh the links at its end.
    pub adapt_period: usize,
    /// The `interval-K` baselines run (every model every K-th frame, held in between), each at every
    /// budget where its models can be spread over K frames (budgets that give the same split as a
    /// smaller one are skipped).
    pub intervals: Vec<usize>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        let mut adapt = Vec::new();
        for sampling in [Sampling::Uniform, Sampling::Uncertainty, Sampling::LossPrediction] {
            for share in [0.01, 0.02, 0.05, 0.10] {
                adapt.push(AdaptSim { sampling, share, ..AdaptSim::default() });
            }
        }
        BenchOptions {
            period: 1000,
            profile_share: 0.01,
            prior_frames: 20.0,
            levels: 12,
            seed: 1,
            max_active: None,
            adapt,
            adapt_period: 50,
            intervals: vec![1, 2, 3, 4, 6, 8, 12, 16],
        }
    }
}

/// How an adaptation period picks the frames on which the models that did not run are run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// Frames drawn at random (seeded), the same share every period.
    Uniform,
    /// The frames whose predicted outputs were least certain: entropy of class and multilabel
    /// predictions, disagreement between the links into each predicted target (all kinds).
    Uncertainty,
    /// The frames with the highest loss predicted by a learnt head per target (the MLink paper's
    /// loss prediction): a linear map from the target's predicted output and its drift signals to
    /// the expected disagreement with the target model, fitted on the labelled rows so far (MSE;
    /// the paper adds a pairwise ranking term). Falls back to uncertainty until 16 rows are labelled.
    LossPrediction,
}

impl Sampling {
    pub fn name(&self) -> &'static str {
        match self {
            Sampling::Uniform => "uniform",
            Sampling::Uncertainty => "uncertainty",
            Sampling::LossPrediction => "loss-prediction",
        }
    }
}

/// One on-line adaptation setting of the benchmark: in every period of `adapt_period` frames, a
/// `share` of the frames is picked by `sampling` and buffered; at the period's end the models that
/// did not run are run on them (counted as executions) and the links from the running models into
/// each of them, with its ensemble, take `steps` fine-tuning steps on the last `buffer` such rows.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AdaptSim {
    pub sampling: Sampling,
    pub share: f32,
    pub steps: u32,
    pub buffer: usize,
    pub lr: f32,
}

impl Default for AdaptSim {
    fn default() -> Self {
        AdaptSim { sampling: Sampling::Uncertainty, share: 0.05, steps: 2, buffer: 32, lr: 1e-3 }
    }
}

/// Results of one method in one segment at one budget.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SegmentResult {
    pub frames: usize,
    /// Mean over tasks and frames of agreement (unweighted, as the paper reports).
    pub accuracy: f64,
    /// Importance-weighted.
    pub weighted_accuracy: f64,
    pub per_task: Vec<f64>,
    pub executions_saved: f64,
    pub flops_saved: f64,
    /// Share of task outputs (tasks × frames) delivered by holding the model's last output.
    pub held_share: f64,
    /// Share of task outputs predicted through links.
    pub predicted_share: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct MethodResult {
    pub method: String,
    pub budget_bytes: u64,
    /// Most models run per frame (the number of models when there is no execution budget).
    pub max_active: usize,
    /// On-line adaptation: `none`, `uniform` or `uncertainty`.
    pub sampling: String,
    /// Share of each adaptation period's frames labelled by running the models that did not run.
    pub label_share: f32,
    /// Model executions spent on adaptation (included in every `executions_saved`).
    pub adapt_executions: u64,
    /// Accuracy of each adaptation period of the drift segment, in order.
    pub drift_curve: Vec<f64>,
    pub peak_memory_bytes: u64,
    pub clean: SegmentResult,
    pub drift: SegmentResult,
    pub all: SegmentResult,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub workload: String,
    pub models: Vec<String>,
    pub model_memory_bytes: Vec<u64>,
    pub budgets: Vec<u64>,
    pub period_frames: usize,
    pub profile_frames_per_period: usize,
    pub lookup_ns_median: f64,
    pub table_entries: usize,
    /// Per model, the agreement of its output held 1, 2, … [`super::MAX_HOLD_AGE`] frames with its
    /// output now, measured on the training part (what the hold choices are scored with).
    pub hold_agreement: Vec<Vec<f32>>,
    pub results: Vec<MethodResult>,
}

#[derive(Default, Clone)]
struct Acc {
    frames: usize,
    agree: Vec<f64>,
    executions: u64,
    flops: u64,
    held: u64,
    predicted: u64,
}

impl Acc {
    fn new(n: usize) -> Acc {
        Acc { agree: vec![0.0; n], ..Default::default() }
    }
    fn finish(&self, p: &Problem) -> SegmentResult {
        let n = p.n;
        let f = self.frames.max(1) as f64;
        let per_task: Vec<f64> = self.agree.iter().map(|a| a / f).collect();
        let w: f64 = p.importance.iter().map(|&x| x as f64).sum();
        let total_flops: u64 = p.flops.iter().sum();
        SegmentResult {
            frames: self.frames,
            accuracy: per_task.iter().sum::<f64>() / n as f64,
            weighted_accuracy: per_task.iter().zip(&p.importance).map(|(a, &w)| a * w as f64).sum::<f64>()
                / w,
            per_task,
            executions_saved: super::share_saved(self.executions, self.frames.max(1) as u64, n as u64),
            flops_saved: super::share_saved(self.flops, self.frames.max(1) as u64, total_flops.max(1)),
            held_share: self.held as f64 / (self.frames.max(1) * n.max(1)) as f64,
            predicted_share: self.predicted as f64 / (self.frames.max(1) * n.max(1)) as f64,
        }
    }
}

/// The budget sweep: geometric from the smallest model to all models (with their links).
pub fn budget_levels(p: &Problem, levels: usize) -> Vec<u64> {
    let lo = p.model_mem.iter().copied().min().unwrap_or(1).max(1) as f64;
    let hi = p.cost(p.all()) as f64;
    let mut v: Vec<u64> = (0..levels.max(2))
        .map(|k| (lo * (hi / lo).powf(k as f64 / (levels.max(2) - 1) as f64)).round() as u64)
        .collect();
    v.dedup();
    v
}

/// Refresh `base`'s scores from profile rows (every model's exact output): for every target and
/// every subset of the models that could run, blend the held-out score with the agreement measured
/// on the profile, weighting the held-out score as `prior` frames.
fn refresh_scores(
    base: &Problem,
    into: &mut Problem,
    predictor: &mut Predictor,
    bundle: &Bundle,
    rows: &[&[f32]],
    runnable: u64,
    prior: f32,
    out: &mut [f32],
) {
    into.score.copy_from_slice(&base.score);
    if rows.is_empty() {
        return;
    }
    let n = base.n;
    let layout = bundle.layout();
    let mut sums = vec![0.0f32; n << n];
    for row in rows {
        for mask in 0..=base.all() {
            if mask & !runnable != 0 || mask == 0 {
                continue;
            }
            if predictor.predict(mask, row, out).is_err() {
                continue;
            }
            for j in 0..n {
                if mask >> j & 1 == 0 {
                    let m = &bundle.models[j];
                    let r = layout.range(j);
                    sums[(j << n) | mask as usize] +=
                        agreement(m.kind, m.tolerance, &out[r.clone()], &row[r]);
                }
            }
        }
    }
    let k = rows.len() as f32;
    for mask in 0..=base.all() {
        if mask & !runnable != 0 || mask == 0 {
            continue;
        }
        for j in 0..n {
            if mask >> j & 1 == 0 {
                let i = (j << n) | mask as usize;
                into.score[i] = (prior * base.score[i] + sums[i]) / (prior + k);
            }
        }
    }
}

/// On-line adaptation state of one benchmark run: the period's candidate frames and the buffer of
/// labelled rows the links are fine-tuned on.
struct AdaptRun {
    sim: AdaptSim,
    adapter: Adapter,
    rng: Rng,
    /// (score, frame) of the current period's frames.
    candidates: Vec<(f32, usize)>,
    /// Ring of labelled rows, `buffer × stride`.
    rows: Vec<f32>,
    filled: usize,
    next: usize,
    executions: u64,
    credit: f64,
    heads: LossHeads,
}

impl AdaptRun {
    fn new(sim: AdaptSim, bundle: &Bundle, predictor: &Predictor, seed: u64) -> AdaptRun {
        let opts = AdaptOptions { lr: sim.lr, max_batch: sim.buffer.max(1), ..AdaptOptions::default() };
        let stride = predictor.stride();
        AdaptRun {
            sim,
            adapter: Adapter::new(bundle, predictor, opts),
            rng: Rng::derive(seed, &[0xada9]),
            candidates: Vec::new(),
            rows: vec![0.0; sim.buffer.max(1) * stride],
            filled: 0,
            next: 0,
            executions: 0,
            credit: 0.0,
            heads: LossHeads::new(bundle),
        }
    }

    /// Score this frame for sampling, after the predictor predicted the tasks outside `active`
    /// into `out`.
    fn observe(&mut self, predictor: &mut Predictor, frame: usize, active: u64, n: usize, out: &[f32]) {
        let uncertainty = |predictor: &mut Predictor| -> f32 {
            (0..n)
                .filter(|&j| active >> j & 1 == 0)
                .filter_map(|j| predictor.signals(j).ok())
                .map(|s| s.uncertainty.min(1.0) + s.disagreement)
                .sum()
        };
        let score = match self.sim.sampling {
            Sampling::Uniform => self.rng.f32(),
            Sampling::Uncertainty => uncertainty(predictor),
            Sampling::LossPrediction if self.heads.trained < 16 => uncertainty(predictor),
            Sampling::LossPrediction => {
                (0..n).filter(|&j| active >> j & 1 == 0).map(|j| self.heads.predict(predictor, j, out)).sum()
            }
        };
        self.candidates.push((score, frame));
    }

    /// End of an adaptation period: label the chosen frames (run every model that did not run and
    /// fits the budget alone, `fits`, on them), then fine-tune the links into each such target from the running models. Returns the
    /// labelled frames so their executions can be counted in their segments.
    fn end_period(
        &mut self,
        predictor: &mut Predictor,
        reference: &Recording,
        active: u64,
        fits: u64,
        n: usize,
        labelled: &mut Vec<usize>,
    ) -> Result<()> {
        labelled.clear();
        // The share is kept over the run: a period's fractional label carries over to the next.
        self.credit += self.candidates.len() as f64 * self.sim.share as f64;
        let k = (self.credit.floor() as usize).min(self.candidates.len());
        self.credit -= k as f64;
        self.candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let stride = predictor.stride();
        let cap = self.rows.len() / stride;
        for &(_, f) in self.candidates.iter().take(k) {
            let row = reference.row(reference.row_of_frame(f as u32).context("reference lacks a frame")?);
            self.rows[self.next * stride..(self.next + 1) * stride].copy_from_slice(row);
            self.next = (self.next + 1) % cap;
            self.filled = (self.filled + 1).min(cap);
            labelled.push(f);
        }
        self.candidates.clear();
        if active == 0 || self.filled == 0 {
            return Ok(());
        }
        // Targets are swapped in one at a time (the running models set aside meanwhile), so a target
        // can be labelled when it fits the budget alone.
        let targets = fits & !active;
        self.executions += labelled.len() as u64 * targets.count_ones() as u64;
        if self.sim.sampling == Sampling::LossPrediction {
            // The heads learn from the labelled rows as predicted before the links are refreshed.
            for &f in labelled.iter() {
                let row = reference.row(reference.row_of_frame(f as u32).context("reference lacks a frame")?);
                self.heads.learn(predictor, row, active, targets)?;
            }
        }
        let batch = &self.rows[..self.filled * stride];
        for j in 0..n {
            if targets >> j & 1 == 0 {
                continue;
            }
            for _ in 0..self.sim.steps {
                self.adapter.step(predictor, j, active, batch).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        Ok(())
    }
}

/// Loss-prediction heads, one per target: `loss ≈ b + w·[y, uncertainty, disagreement]` with `y`
/// the target's predicted (activated) output; trained by SGD on labelled rows.
struct LossHeads {
    /// Per model: weights (size + 2) then bias.
    w: Vec<Vec<f32>>,
    layout: RowLayout,
    kinds: Vec<crate::manifest::OutputKind>,
    tolerances: Vec<f32>,
    out: Vec<f32>,
    trained: usize,
}

impl LossHeads {
    fn new(bundle: &Bundle) -> LossHeads {
        let layout = bundle.layout();
        let stride = layout.stride();
        LossHeads {
            w: layout.sizes().iter().map(|&s| vec![0.0; s + 3]).collect(),
            layout,
            kinds: bundle.models.iter().map(|m| m.kind).collect(),
            tolerances: bundle.models.iter().map(|m| m.tolerance).collect(),
            out: vec![0.0; stride],
            trained: 0,
        }
    }

    fn features(&self, predictor: &mut Predictor, j: usize, out: &[f32], x: &mut [f32]) {
        let s = self.layout.size(j);
        x[..s].copy_from_slice(&out[self.layout.range(j)]);
        let sig = predictor.signals(j).unwrap_or_default();
        x[s] = sig.uncertainty.min(1.0);
        x[s + 1] = sig.disagreement;
    }

    /// Predicted loss of target j on the frame whose predictions are `out` (signals from the last
    /// prediction).
    fn predict(&self, predictor: &mut Predictor, j: usize, out: &[f32]) -> f32 {
        let mut x = [0.0f32; 64 + 2];
        let s = self.layout.size(j).min(64);
        if s < self.layout.size(j) {
            return 0.0;
        }
        self.features(predictor, j, out, &mut x);
        let w = &self.w[j];
        w[s + 2] + w[..s + 2].iter().zip(&x).map(|(a, b)| a * b).sum::<f32>()
    }

    /// One SGD step per target on a labelled row: its loss is 1 − agreement of the prediction.
    fn learn(&mut self, predictor: &mut Predictor, row: &[f32], active: u64, targets: u64) -> Result<()> {
        let mut out = std::mem::take(&mut self.out);
        predictor.predict(active, row, &mut out).map_err(|e| anyhow::anyhow!("{e}"))?;
        for j in 0..self.layout.len() {
            let s = self.layout.size(j);
            if targets >> j & 1 == 0 || s > 64 {
                continue;
            }
            let (r, mut x) = (self.layout.range(j), [0.0f32; 64 + 2]);
            self.features(predictor, j, &out, &mut x);
            let loss = 1.0 - agreement(self.kinds[j], self.tolerances[j], &out[r.clone()], &row[r]);
            let w = &mut self.w[j];
            let pred = w[s + 2] + w[..s + 2].iter().zip(&x).map(|(a, b)| a * b).sum::<f32>();
            let (err, lr) = (pred - loss, 0.05f32);
            for (wi, xi) in w[..s + 2].iter_mut().zip(&x) {
                *wi -= lr * err * xi.clamp(-10.0, 10.0);
            }
            w[s + 2] -= lr * err;
        }
        self.out = out;
        self.trained += 1;
        Ok(())
    }
}

/// Run one scheduler over the evaluation frames at one budget, with on-line adaptation when `adapt`
/// is given.
#[allow(clippy::too_many_arguments)]
fn run_method(
    sched: &mut dyn Scheduler,
    profiles: bool,
    base: &Problem,
    bundle: &Bundle,
    stream: &Stream,
    reference: &Recording,
    budget: u64,
    opt: &BenchOptions,
    adapt: Option<AdaptSim>,
    mut blend: Option<&mut super::Blend>,
) -> Result<MethodResult> {
    let n = base.n;
    let layout = bundle.layout();
    let mut predictor = Predictor::new(bundle);
    let mut adapt = adapt.map(|a| AdaptRun::new(a, bundle, &predictor, opt.seed));
    let mut labelled = Vec::new();
    let mut problem = base.clone();
    let stride = reference.stride();
    let mut out = vec![0.0f32; stride];
    let mut last = vec![0.0f32; stride];
    let mut have_last = false;
    // Each model's output at its last run (what a held task delivers), and whether it ran yet.
    let mut held = vec![0.0f32; stride];
    let mut ran = 0u64;
    let mut ran_at = vec![0usize; n];
    let mut acc = [Acc::new(n), Acc::new(n)];
    let mut curve = Vec::new();
    let mut period_agree = (0.0f64, 0usize);
    let mut peak = 0u64;
    let start = stream.train_end;
    let runnable: u64 = (0..n).filter(|&i| base.model_mem[i] <= budget).fold(0, |m, i| m | 1 << i);
    // Adapted runs refresh the scores from their labelled frames (every model's output is known on
    // them), so they need no separate profile.
    let n_prof = if profiles && adapt.is_none() && opt.profile_share > 0.0 {
        ((opt.period as f32 * opt.profile_share).ceil() as usize).max(1)
    } else {
        0
    };
    let mut frame = start;
    while frame < stream.len() {
        let end = (frame + opt.period).min(stream.len());
        // Profile: every model that fits alone runs on the first frames of the period, one after another.
        let prof_end = (frame + n_prof).min(end);
        if profiles {
            let rows: Vec<&[f32]> = match adapt.as_ref() {
                Some(ad) => ad.rows[..ad.filled * stride].chunks_exact(stride).collect(),
                None => (frame..prof_end)
                    .map(|f| reference.row(reference.row_of_frame(f as u32).expect("reference row")))
                    .collect(),
            };
            refresh_scores(
                base,
                &mut problem,
                &mut predictor,
                bundle,
                &rows,
                runnable,
                opt.prior_frames,
                &mut out,
            );
        }
        sched.select(&problem, budget);
        peak = peak.max(sched.peak_memory(&problem));
        if (profiles || adapt.is_some()) && runnable != 0 {
            peak = peak.max(base.model_mem.iter().copied().filter(|&m| m <= budget).max().unwrap_or(0));
        }
        let mut running = 0u64;
        for f in frame..end {
            let row = reference.row(reference.row_of_frame(f as u32).context("reference lacks a frame")?);
            let seg = if stream.segment(f) == Segment::Drift { 1 } else { 0 };
            let a = &mut acc[seg];
            a.frames += 1;
            let decision = if f < prof_end {
                Decision::Run { active: runnable, predict: base.all() & !runnable, hold: 0 }
            } else {
                sched.decide(stream.frame(f))
            };
            let mut frame_agree = 0.0f64;
            match decision {
                Decision::Run { active, predict, hold } => {
                    a.executions += active.count_ones() as u64;
                    a.flops += (0..n).filter(|&i| active >> i & 1 == 1).map(|i| base.flops[i]).sum::<u64>();
                    let blends = if blend.is_some() { hold & ran } else { 0 };
                    if (predict | blends) != 0 && active != 0 {
                        predictor.predict(active, row, &mut out).map_err(|e| anyhow::anyhow!("{e}"))?;
                        if f >= prof_end {
                            running = active;
                            if let Some(ad) = adapt.as_mut() {
                                ad.observe(&mut predictor, f, active, n, &out);
                            }
                        }
                    }
                    for j in 0..n {
                        let m = &bundle.models[j];
                        let r = layout.range(j);
                        let s = if active >> j & 1 == 1 {
                            out[r.clone()].copy_from_slice(&row[r.clone()]);
                            held[r.clone()].copy_from_slice(&row[r.clone()]);
                            ran |= 1 << j;
                            ran_at[j] = f;
                            1.0
                        } else if predict >> j & 1 == 1 && active != 0 {
                            a.predicted += 1;
                            agreement(m.kind, m.tolerance, &out[r.clone()], &row[r.clone()])
                        } else if hold >> j & 1 == 1 && ran >> j & 1 == 1 {
                            a.held += 1;
                            match blend.as_deref_mut() {
                                Some(b) if active != 0 => {
                                    let alpha = b.alpha(&mut predictor, reference, active, j, f - ran_at[j]);
                                    let linked = out[r.clone()].to_vec();
                                    super::blend::mix(alpha, &held[r.clone()], &linked, &mut out[r.clone()]);
                                }
                                _ => out[r.clone()].copy_from_slice(&held[r.clone()]),
                            }
                            agreement(m.kind, m.tolerance, &out[r.clone()], &row[r.clone()])
                        } else {
                            out[r.clone()].fill(f32::NAN);
                            0.0
                        };
                        a.agree[j] += s as f64;
                        frame_agree += s as f64;
                    }
                    last.copy_from_slice(&out);
                    have_last = active != 0 || hold & ran != 0;
                }
                Decision::Reuse => {
                    for j in 0..n {
                        let m = &bundle.models[j];
                        let r = layout.range(j);
                        if have_last {
                            let s = agreement(m.kind, m.tolerance, &last[r.clone()], &row[r]) as f64;
                            a.agree[j] += s;
                            frame_agree += s;
                        }
                    }
                }
            }
            if seg == 1 {
                period_agree.0 += frame_agree / n as f64;
                period_agree.1 += 1;
            }
            // Adaptation periods are counted from the start of the evaluation frames.
            let last_of_period =
                (f + 1 - start).is_multiple_of(opt.adapt_period.max(1)) || f + 1 == stream.len();
            if last_of_period {
                if let Some(ad) = adapt.as_mut() {
                    let before = ad.executions;
                    ad.end_period(&mut predictor, reference, running, runnable, n, &mut labelled)?;
                    let per_frame = (ad.executions - before) / labelled.len().max(1) as u64;
                    for &lf in &labelled {
                        let s = usize::from(stream.segment(lf) == Segment::Drift);
                        acc[s].executions += per_frame;
                    }
                }
                if period_agree.1 > 0 {
                    curve.push(period_agree.0 / period_agree.1 as f64);
                }
                period_agree = (0.0, 0);
            }
        }
        frame = end;
    }
    let mut all = Acc::new(n);
    all.frames = acc[0].frames + acc[1].frames;
    all.executions = acc[0].executions + acc[1].executions;
    all.flops = acc[0].flops + acc[1].flops;
    all.held = acc[0].held + acc[1].held;
    all.predicted = acc[0].predicted + acc[1].predicted;
    for j in 0..n {
        all.agree[j] = acc[0].agree[j] + acc[1].agree[j];
    }
    Ok(MethodResult {
        method: sched.name().to_string(),
        budget_bytes: budget,
        max_active: base.max_active,
        sampling: adapt.as_ref().map_or("none", |a| a.sim.sampling.name()).to_string(),
        label_share: adapt.as_ref().map_or(0.0, |a| a.sim.share),
        adapt_executions: adapt.as_ref().map_or(0, |a| a.executions),
        drift_curve: curve,
        peak_memory_bytes: peak,
        clean: acc[0].finish(base),
        drift: acc[1].finish(base),
        all: all.finish(base),
    })
}

impl MethodResult {
    /// Short name for tables: the method, and the adaptation setting when there is one
    /// (`optimal+unc5%`, `optimal+uni1%`).
    pub fn label(&self) -> String {
        match self.sampling.as_str() {
            "none" => self.method.clone(),
            s => format!("{}+{}{}%", self.method, &s[..3], (self.label_share * 100.0).round()),
        }
    }
}

/// The operating point of a target: among `results` whose executions saved in `seg` (adaptation
/// runs counted) are at least `min_saved`, the one with the best accuracy in `seg`.
pub fn best_at<'a>(
    results: &'a [MethodResult],
    seg: fn(&MethodResult) -> &SegmentResult,
    min_saved: f64,
    filter: impl Fn(&MethodResult) -> bool,
) -> Option<&'a MethodResult> {
    results
        .iter()
        .filter(|m| filter(m) && seg(m).executions_saved >= min_saved)
        .max_by(|a, b| seg(a).accuracy.total_cmp(&seg(b).accuracy))
}

/// The operating points the README reports: best clean accuracy with ≥ 75% of executions saved,
/// best drift and overall accuracy with ≥ 70% saved (adaptation counted), and the share of the
/// clean-vs-drift gap that adaptation wins back at the drift point.
pub fn format_targets(r: &BenchReport) -> String {
    let mut s = String::new();
    let pct = |v: f64| 100.0 * v;
    let line =
        |s: &mut String, what: &str, m: Option<&MethodResult>, seg: fn(&MethodResult) -> &SegmentResult| {
            match m {
                Some(m) => {
                    let _ = writeln!(
                        s,
                        "{what}: {:.1}% at {:.1}% saved ({} at {:.3} MB)",
                        pct(seg(m).accuracy),
                        pct(seg(m).executions_saved),
                        m.label(),
                        m.budget_bytes as f64 / 1e6
                    );
                }
                None => {
                    let _ = writeln!(s, "{what}: no run saves enough");
                }
            }
        };
    let any = |_: &MethodResult| true;
    let clean = best_at(&r.results, |m| &m.clean, 0.75, any);
    line(&mut s, "clean, >= 75% saved", clean, |m| &m.clean);
    let drift = best_at(&r.results, |m| &m.drift, 0.70, any);
    line(&mut s, "drift, >= 70% saved", drift, |m| &m.drift);
    line(&mut s, "all,   >= 70% saved", best_at(&r.results, |m| &m.all, 0.70, any), |m| &m.all);
    if let Some(d) = drift {
        let once = r
            .results
            .iter()
            .find(|m| m.method == d.method && m.sampling == "none" && m.budget_bytes == d.budget_bytes);
        if let Some(o) = once {
            let gap = o.clean.accuracy - o.drift.accuracy;
            let won = d.drift.accuracy - o.drift.accuracy;
            let _ = writeln!(
                s,
                "adaptation at that point: drift {:.1}% -> {:.1}%, clean-vs-drift gap {:.1} points, {:.0}% of it won back",
                pct(o.drift.accuracy),
                pct(d.drift.accuracy),
                pct(gap),
                if gap > 0.0 { 100.0 * won / gap } else { 0.0 }
            );
        }
    }
    s
}

/// Accuracy over the drift segment, period by period, trained once against adapted, at the budget
/// where adaptation wins back the most: an SVG image.
pub fn svg_drift(r: &BenchReport) -> String {
    let (w, h, ml, mb) = (720.0, 400.0, 60.0, 50.0);
    // The adapted run with the largest drift gain over the same budget's unadapted optimal.
    let base = |b: u64| {
        r.results.iter().find(|m| m.method == "optimal" && m.sampling == "none" && m.budget_bytes == b)
    };
    let best = r
        .results
        .iter()
        .filter(|m| m.sampling != "none" && m.all.executions_saved >= 0.5)
        .filter_map(|m| base(m.budget_bytes).map(|b0| (m.drift.accuracy - b0.drift.accuracy, m, b0)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let Some((_, adapted, once)) = best else {
        s.push_str(
            "<text x=\"20\" y=\"40\">no adapted run saving at least half the executions</text></svg>\n",
        );
        return s;
    };
    let periods = adapted.drift_curve.len().max(once.drift_curve.len()).max(2);
    let x = |k: f64| ml + k / (periods - 1) as f64 * (w - ml - 20.0);
    let y = |v: f64| h - mb - v * (h - mb - 40.0);
    for k in 0..=10 {
        let v = k as f64 / 10.0;
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0}%</text>",
            x(0.0),
            y(v),
            x((periods - 1) as f64),
            y(v),
            x(0.0) - 5.0,
            y(v) + 4.0,
            v * 100.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"20\" text-anchor=\"middle\">drift segment, budget {:.2} MB, at most {} models run: accuracy per adaptation period</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">adaptation period of the drift segment ({} periods)</text>",
        x((periods - 1) as f64 / 2.0),
        adapted.budget_bytes as f64 / 1e6,
        adapted.max_active,
        x((periods - 1) as f64 / 2.0),
        h - 10.0,
        periods
    );
    for (ci, (m, name)) in
        [(once, "trained once".to_string()), (adapted, format!("adapted ({})", adapted.label()))]
            .into_iter()
            .enumerate()
    {
        let c = ["#7f7f7f", "#d62728"][ci];
        let pts: Vec<String> = m
            .drift_curve
            .iter()
            .enumerate()
            .map(|(k, v)| format!("{:.1},{:.1}", x(k as f64), y(*v)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        );
        let _ = writeln!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"3\" fill=\"{c}\"/><text x=\"{}\" y=\"{}\">{name}: drift {:.1}%, saved {:.1}%</text>",
            ml + 20.0,
            h - mb - 40.0 + 18.0 * ci as f64,
            ml + 40.0,
            h - mb - 35.0 + 18.0 * ci as f64,
            100.0 * m.drift.accuracy,
            100.0 * m.drift.executions_saved
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Median time of a schedule-table look-up, nanoseconds.
pub fn time_lookup(table: &ScheduleTable, budgets: &[u64]) -> f64 {
    let mut samples = Vec::with_capacity(200);
    let mut sink = 0u64;
    for _ in 0..200 {
        let t = Instant::now();
        for _ in 0..100 {
            for &b in budgets {
                sink ^= table.lookup(std::hint::black_box(b)).0;
            }
        }
        samples.push(t.elapsed().as_secs_f64() * 1e9 / (100 * budgets.len()) as f64);
    }
    std::hint::black_box(sink);
    crate::record::percentile(&samples, 50.0)
}

/// The reference's columns for the bundle's models, taken by name in the bundle's order (a reference
/// recorded with the models in another order, or with more models, works); refused, naming the
/// model, when one is missing or has another kind or size.
fn check_reference(bundle: &Bundle, reference: &Recording) -> Result<Recording> {
    reference.select_by_name(
        bundle.models.iter().map(|m| (m.name.as_str(), m.kind, m.size as usize)),
        "the reference recording",
    )
}

/// Agreement of each model's output held by age, measured on the training part of the stream.
pub fn hold_scores(bundle: &Bundle, reference: &Recording, stream: &Stream) -> super::HoldScores {
    let kinds: Vec<_> = bundle.models.iter().map(|m| m.kind).collect();
    let tolerances: Vec<f32> = bundle.models.iter().map(|m| m.tolerance).collect();
    super::HoldScores::measure(reference, &kinds, &tolerances, 0..stream.train_end)
}

/// The whole benchmark.
pub fn run(
    bundle: &Bundle,
    stream: &Stream,
    reference: &Recording,
    opt: &BenchOptions,
) -> Result<BenchReport> {
    let reference = &check_reference(bundle, reference)?;
    let hold = hold_scores(bundle, reference, stream);
    let mut base = Problem::from_bundle(bundle).with_hold(&hold);
    if let Some(k) = opt.max_active {
        base = base.with_max_active(k);
    }
    let budgets = budget_levels(&base, opt.levels);
    // The frame filter tunes its threshold on the training part (consecutive frames, as it would see them).
    let prof: Vec<&[u8]> = (0..stream.train_end.min(1000)).map(|f| stream.frame(f)).collect();
    let table = ScheduleTable::build(&base);
    let mut results = Vec::new();
    let bar = indicatif::ProgressBar::new(
        ((super::NAMES.len() + 1 + opt.adapt.len() + opt.intervals.len()) * budgets.len()) as u64,
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template("bench mlink [{bar:40}] {pos}/{len} {msg}").unwrap(),
    );
    for name in super::NAMES {
        for &b in &budgets {
            bar.set_message(format!("{name} @ {:.2} MB", b as f64 / 1e6));
            let mut s = super::by_name(name, &prof, opt.seed).expect("known scheduler");
            let profiles = matches!(name, "optimal" | "optimal-hold" | "greedy");
            results.push(run_method(
                s.as_mut(),
                profiles,
                &base,
                bundle,
                stream,
                reference,
                b,
                opt,
                None,
                None,
            )?);
            bar.inc(1);
        }
    }
    // optimal-hold whose held outputs are blended with the links' predictions (the target's own last
    // output and its age as one more source of its link ensemble).
    let mut blend = super::Blend::new(bundle, reference, 0..stream.train_end, 1000);
    for &b in &budgets {
        bar.set_message(format!("optimal-hold-blend @ {:.2} MB", b as f64 / 1e6));
        let mut s = super::OptimalHold::default();
        let mut r =
            run_method(&mut s, true, &base, bundle, stream, reference, b, opt, None, Some(&mut blend))?;
        r.method = "optimal-hold-blend".into();
        results.push(r);
        bar.inc(1);
    }
    for &k in &opt.intervals {
        let mut seen: Vec<Vec<u64>> = Vec::new();
        for &b in &budgets {
            bar.set_message(format!("interval-{k} @ {:.2} MB", b as f64 / 1e6));
            bar.inc(1);
            let mut s = super::Interval::new(k);
            s.select(&base, b);
            // Only the budgets where the models can be spread over k frames, and each split once
            // (at the smallest budget that allows it).
            if !s.feasible() || seen.iter().any(|g| g == s.groups()) {
                continue;
            }
            seen.push(s.groups().to_vec());
            let mut r = run_method(&mut s, false, &base, bundle, stream, reference, b, opt, None, None)?;
            r.method = format!("interval-{k}");
            results.push(r);
        }
    }
    for &sim in &opt.adapt {
        for &b in &budgets {
            bar.set_message(format!(
                "optimal+{} {:.0}% @ {:.2} MB",
                sim.sampling.name(),
                sim.share * 100.0,
                b as f64 / 1e6
            ));
            let mut s = super::by_name("optimal", &prof, opt.seed).expect("known scheduler");
            results.push(run_method(
                s.as_mut(),
                true,
                &base,
                bundle,
                stream,
                reference,
                b,
                opt,
                Some(sim),
                None,
            )?);
            // Adapted links with temporal reuse: optimal-hold at the 5% share only (at each adaptation
            // period's end the links from the models running then are fine-tuned).
            if (sim.share - 0.05).abs() < 1e-6 {
                let mut s = super::OptimalHold::default();
                let r = run_method(&mut s, true, &base, bundle, stream, reference, b, opt, Some(sim), None)?;
                results.push(r);
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(BenchReport {
        workload: bundle.workload.clone(),
        models: bundle.models.iter().map(|m| m.name.clone()).collect(),
        model_memory_bytes: base.model_mem.clone(),
        budgets: budgets.clone(),
        period_frames: opt.period,
        profile_frames_per_period: ((opt.period as f32 * opt.profile_share).ceil() as usize).max(1),
        lookup_ns_median: time_lookup(&table, &budgets),
        table_entries: table.len(),
        hold_agreement: (0..base.n)
            .map(|j| (1..=super::MAX_HOLD_AGE).map(|a| base.hold_score(j, a)).collect())
            .collect(),
        results,
    })
}

/// `optimal` without adaptation at every budget of `budgets`, over another bundle of the same
/// workload (links trained with another recipe); the method is reported as `optimal-{label}`.
pub fn run_optimal(
    bundle: &Bundle,
    stream: &Stream,
    reference: &Recording,
    opt: &BenchOptions,
    budgets: &[u64],
    label: &str,
) -> Result<Vec<MethodResult>> {
    let reference = &check_reference(bundle, reference)?;
    let hold = hold_scores(bundle, reference, stream);
    let mut base = Problem::from_bundle(bundle).with_hold(&hold);
    if let Some(k) = opt.max_active {
        base = base.with_max_active(k);
    }
    let mut out = Vec::new();
    for &b in budgets {
        let mut s = super::by_name("optimal", &[], opt.seed).expect("known scheduler");
        let mut r = run_method(s.as_mut(), true, &base, bundle, stream, reference, b, opt, None, None)?;
        r.method = format!("optimal-{label}");
        out.push(r);
    }
    Ok(out)
}

/// The table printed by the command.
pub fn format_table(r: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<13} {:>9} {:>9} | {:>7} {:>7} {:>7} | {:>7} {:>7} | {:>7} {:>7}",
        "method", "budget MB", "peak MB", "acc", "clean", "drift", "exec sv", "FLOP sv", "w.acc", ""
    );
    if let Some(m) = r.results.first() {
        let _ =
            writeln!(s, "(at most {} models run per frame; exec sv counts adaptation runs)", m.max_active);
    }
    for m in &r.results {
        let _ = writeln!(
            s,
            "{:<13} {:>9.3} {:>9.3} | {:>6.1}% {:>6.1}% {:>6.1}% | {:>6.1}% {:>6.1}% | {:>6.1}%",
            m.label(),
            m.budget_bytes as f64 / 1e6,
            m.peak_memory_bytes as f64 / 1e6,
            100.0 * m.all.accuracy,
            100.0 * m.clean.accuracy,
            100.0 * m.drift.accuracy,
            100.0 * m.all.executions_saved,
            100.0 * m.all.flops_saved,
            100.0 * m.all.weighted_accuracy,
        );
    }
    s
}

/// The curve a result belongs to: its label, with every `interval-K` on one curve (`interval-k`).
pub fn curve_of(m: &MethodResult) -> String {
    if m.method.starts_with("interval-") { "interval-k".to_string() } else { m.label() }
}

/// Accuracy against executions saved per curve ([`curve_of`]): every point of each curve that no
/// other point of the same curve beats on both (the upper-left front), in order of executions saved.
pub fn curves(r: &BenchReport) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for m in &r.results {
        let c = curve_of(m);
        let pt = (m.all.executions_saved, m.all.accuracy);
        match out.iter_mut().find(|(n, _)| *n == c) {
            Some((_, v)) => v.push(pt),
            None => out.push((c, vec![pt])),
        }
    }
    for (_, v) in &mut out {
        let all = v.clone();
        v.retain(|&(s, a)| !all.iter().any(|&(s2, a2)| s2 >= s && a2 >= a && (s2 > s || a2 > a)));
        v.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.total_cmp(&y.1)));
        v.dedup();
    }
    out
}

/// The curves as text: per curve, `saved% → accuracy%` at each front point.
pub fn format_curves(r: &BenchReport) -> String {
    let mut s =
        String::from("accuracy against executions saved (all evaluation frames; front of each method):\n");
    for (name, pts) in curves(r) {
        let p: Vec<String> =
            pts.iter().map(|(sv, a)| format!("{:.1}%->{:.1}%", 100.0 * sv, 100.0 * a)).collect();
        let _ = writeln!(s, "  {name:<20} {}", p.join("  "));
    }
    s
}

/// Agreement of each model's held output by age, as text (ages 1, 2, 4, 8, 16).
pub fn format_hold(r: &BenchReport) -> String {
    let mut s = String::from("held output agreeing with the model's own output, by age (training part):\n");
    for (name, h) in r.models.iter().zip(&r.hold_agreement) {
        let p: Vec<String> = [1usize, 2, 4, 8, 16]
            .iter()
            .filter(|&&a| a <= h.len())
            .map(|&a| format!("{a}: {:.2}", h[a - 1]))
            .collect();
        let _ = writeln!(s, "  {name:<12} {}", p.join("  "));
    }
    s
}

/// Accuracy against executions saved, one line per curve ([`curves`]: the schedulers, `interval-k`
/// and the adapted runs at a 5% label share), as an SVG image.
pub fn svg_curves(r: &BenchReport) -> String {
    let (w, h, ml, mb) = (720.0, 440.0, 60.0, 50.0);
    let x = |v: f64| ml + v * (w - ml - 170.0);
    let y = |v: f64| h - mb - v * (h - mb - 20.0);
    let colors = [
        "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#7f7f7f", "#9467bd", "#8c564b", "#e377c2", "#17becf",
        "#bcbd22", "#000000", "#aec7e8",
    ];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for k in 0..=10 {
        let v = k as f64 / 10.0;
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0}%</text>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{:.0}%</text>",
            x(0.0),
            y(v),
            x(1.0),
            y(v),
            x(0.0) - 5.0,
            y(v) + 4.0,
            v * 100.0,
            x(v),
            h - mb + 18.0,
            v * 100.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">executions saved (evaluation frames, clean + drift)</text>\
         <text x=\"15\" y=\"{}\" transform=\"rotate(-90 15 {})\" text-anchor=\"middle\">accuracy (agreement with every model)</text>",
        x(0.5),
        h - 10.0,
        y(0.5),
        y(0.5)
    );
    let shown: Vec<(String, Vec<(f64, f64)>)> =
        curves(r).into_iter().filter(|(n, _)| !n.contains('+') || n.ends_with("5%")).collect();
    for (ci, (name, pts)) in shown.iter().enumerate() {
        let path: Vec<String> = pts.iter().map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b))).collect();
        let c = colors[ci % colors.len()];
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for (a, b) in pts.iter() {
            let _ = writeln!(s, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>", x(*a), y(*b));
        }
        let _ = writeln!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"3\" fill=\"{c}\"/><text x=\"{}\" y=\"{}\">{name}</text>",
            w - 150.0,
            40.0 + 20.0 * ci as f64,
            w - 130.0,
            45.0 + 20.0 * ci as f64
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Write the JSON and the SVG next to each other.
pub fn write_outputs(r: &BenchReport, json: &Path, svg: &Path) -> Result<()> {
    if let Some(d) = json.parent() {
        std::fs::create_dir_all(d).ok();
    }
    // Atomically (temporary file, fsync, rename): an interrupted run leaves the old files whole.
    crate::atomic::write_file(json, serde_json::to_string_pretty(r)?.as_bytes())
        .with_context(|| format!("writing {}", json.display()))?;
    crate::atomic::write_file(svg, svg_curves(r).as_bytes())
        .with_context(|| format!("writing {}", svg.display()))?;
    let drift = svg
        .with_file_name(format!("{}-drift.svg", svg.file_stem().and_then(|s| s.to_str()).unwrap_or("mlink")));
    crate::atomic::write_file(&drift, svg_drift(r).as_bytes())
        .with_context(|| format!("writing {}", drift.display()))?;
    Ok(())
}
