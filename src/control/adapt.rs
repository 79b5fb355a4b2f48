//! On-line adaptation inside the loop: which targets a period refreshes, which frames are labelled
//! (the models that did not run are run on them), the ring of labelled rows, and fine-tuning one
//! target per tick. Every buffer is sized in [`OnlineAdaptation::new`]; nothing here allocates per
//! tick.
//!
//! A period's DCTA allocation names the targets to refresh. Every `label_every`-th tick is a
//! *labelling* tick ([`LabelRule`] says which frame it labels, causally: this one, this one only if
//! its predictions look uncertain or lossy enough, or the most uncertain of the last
//! `label_every` frames kept in a [`LabelWindow`]): each allocated target that is not running is run
//! on the frame, within the budget (the loop sets active models aside to make room, see
//! `Controller::make_room`), and the whole row, with the mask of models whose outputs it holds, goes
//! into the ring. After every `tune_every` labelled frames each allocated target is fine-tuned, one
//! target per tick, on the ring's rows that hold it and the running sources.

use crate::bundle::Bundle;
use crate::links::{AdaptOptions, Adapter, LinkError, Predictor, agreement};
use crate::manifest::OutputKind;
use crate::model_set::ModelSet;
use crate::row::RowLayout;

/// Settings of on-line adaptation in the loop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptSettings {
    /// Label one frame every this many ticks (20 = 5% of frames) while targets are allocated.
    pub label_every: u32,
    /// Labelled rows kept (the most recent); also the largest fine-tuning batch.
    pub ring: usize,
    /// Fine-tune after this many new labelled frames.
    pub tune_every: u32,
    /// RMSprop steps per target per fine-tuning.
    pub steps: u32,
    /// Which frame a labelling tick labels.
    pub rule: LabelRule,
}

/// How a labelling tick picks its frame; every rule labels at most one frame every `label_every`
/// ticks, and decides from what the loop has seen so far (causal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LabelRule {
    /// `top-k` when its window costs at most [`LabelRule::AUTO_WINDOW_SHARE`] of the board's model
    /// budget, else `uniform` (decided in `prepare`).
    #[default]
    Auto,
    /// The frame of every `label_every`-th tick.
    Uniform,
    /// That frame, only if its predictions' uncertainty ([`DriftSignals::score`]) is at least its
    /// running mean.
    Uncertainty,
    /// That frame, only if its predicted loss is at least the running mean: a linear head per
    /// target from the uncertainty signals to the disagreement of the delivered prediction with the
    /// target's own output, fitted on-line on the labelled frames (the MLink paper's loss
    /// prediction, causal).
    LossPrediction,
    /// The most uncertain of the last `label_every` frames, kept in a window whose bytes count
    /// against the model budget.
    TopK,
}

impl LabelRule {
    pub const ALL: [LabelRule; 5] = [
        LabelRule::Auto,
        LabelRule::Uniform,
        LabelRule::Uncertainty,
        LabelRule::LossPrediction,
        LabelRule::TopK,
    ];

    /// `auto` takes `top-k` when its window of frames costs at most this share of the model budget.
    pub const AUTO_WINDOW_SHARE: f64 = 1.0 / 32.0;

    /// The rule `auto` stands for, given the window's bytes and the board's model budget.
    pub fn resolve(self, window_bytes: u64, model_budget: u64) -> LabelRule {
        match self {
            LabelRule::Auto if window_bytes as f64 <= Self::AUTO_WINDOW_SHARE * model_budget as f64 => {
                LabelRule::TopK
            }
            LabelRule::Auto => LabelRule::Uniform,
            r => r,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LabelRule::Auto => "auto",
            LabelRule::Uniform => "uniform",
            LabelRule::Uncertainty => "uncertainty",
            LabelRule::LossPrediction => "loss-prediction",
            LabelRule::TopK => "top-k",
        }
    }

    pub fn by_name(s: &str) -> Option<LabelRule> {
        LabelRule::ALL.into_iter().find(|r| r.name() == s)
    }
}

impl Default for AdaptSettings {
    /// Measured on the demo's main job (`--engines replay`, drift segment; `jetlink bench mlink`
    /// sweeps the rules): the most uncertain of every 5 frames (`top-k`, 20% of ticks labelling)
    /// gave 82.9% drift at 72.4% saved, against 82.2% for every 5th frame (`uniform`), 81.6% for
    /// the uncertainty and loss-prediction gates, and 80.8% for every 10th frame; beyond that the
    /// labels a refresh may take (the DCTA plan's K) cap the gain. A ring of 16–64 rows, 2 or 4
    /// steps, after every 2 or 4 labels: within 0.3 points. `auto` keeps top-k off where its window
    /// of frames would take a real share of the model budget (the video demo's 5 frames: 1.7 MB).
    fn default() -> Self {
        AdaptSettings { label_every: 5, ring: 32, tune_every: 4, steps: 2, rule: LabelRule::Auto }
    }
}

/// What one tick's adaptation did, for telemetry.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TuneReport {
    pub target: usize,
    /// Agreement of the refreshed ensemble on the rows it was tuned on.
    pub agreement: f32,
}

/// The loop's adaptation state.
pub struct OnlineAdaptation {
    settings: AdaptSettings,
    adapter: Adapter,
    kinds: Vec<OutputKind>,
    scorings: Vec<crate::scoring::Scoring>,
    layout: RowLayout,
    /// Ring of labelled rows (`ring × stride`) and, per row, the models whose outputs it holds.
    rows: Vec<f32>,
    valid: Vec<ModelSet>,
    next: usize,
    filled: usize,
    /// Rows selected for one fine-tuning batch, compacted.
    batch: Vec<f32>,
    scratch: Vec<f32>,
    /// Targets allocated this period, and those still to fine-tune.
    targets: ModelSet,
    pending: ModelSet,
    /// Targets of this period that got at least one label.
    labelled_targets: ModelSet,
    /// Per target, the labelled frames K the period's plan gives it, and how many it got.
    quota: Vec<u32>,
    got: Vec<u32>,
    since_label: u32,
    new_labels: u32,
    total_labels: u64,
    mean_signal: f32,
    seen: u32,
    /// Labelled rows per target so far (rows labelled while it was an allocated target).
    samples: Vec<u32>,
}

impl OnlineAdaptation {
    pub fn new(bundle: &Bundle, predictor: &Predictor, settings: AdaptSettings) -> OnlineAdaptation {
        let ring = settings.ring.max(1);
        let layout = bundle.layout();
        let stride = layout.stride();
        OnlineAdaptation {
            settings: AdaptSettings { ring, label_every: settings.label_every.max(1), ..settings },
            adapter: Adapter::new(
                bundle,
                predictor,
                AdaptOptions { max_batch: ring, ..AdaptOptions::default() },
            ),
            kinds: bundle.models.iter().map(|m| m.kind).collect(),
            scorings: bundle.models.iter().map(|m| m.scoring).collect(),
            layout,
            rows: vec![0.0; ring * stride],
            valid: vec![ModelSet::EMPTY; ring],
            next: 0,
            filled: 0,
            batch: vec![0.0; ring * stride],
            scratch: vec![0.0; stride],
            targets: ModelSet::EMPTY,
            pending: ModelSet::EMPTY,
            labelled_targets: ModelSet::EMPTY,
            quota: vec![0; bundle.n_models()],
            got: vec![0; bundle.n_models()],
            since_label: 0,
            new_labels: 0,
            total_labels: 0,
            mean_signal: 0.0,
            seen: 0,
            samples: vec![0; bundle.n_models()],
        }
    }

    /// A new period: refresh `targets` (bit j = target j), target j on at most `frames[j]` labelled
    /// frames (its K; labelling stops for a target once it has them, after which it is tuned once
    /// more). Returns the targets of the period that ends which never got a label (abandoned).
    pub fn start_period(&mut self, targets: ModelSet, frames: &[u32]) -> ModelSet {
        let abandoned = self.targets - self.labelled_targets;
        for (j, (q, g)) in self.quota.iter_mut().zip(self.got.iter_mut()).enumerate() {
            *q = if targets.contains(j) { frames.get(j).copied().unwrap_or(u32::MAX) } else { 0 };
            *g = 0;
        }
        self.targets = targets;
        self.labelled_targets = ModelSet::EMPTY;
        self.pending = ModelSet::EMPTY;
        self.new_labels = 0;
        abandoned
    }

    /// Labelled frames so far.
    pub fn labels(&self) -> u64 {
        self.total_labels
    }

    /// Labelled rows per target so far.
    pub fn samples(&self) -> &[u32] {
        &self.samples
    }

    /// The ring of labelled rows (`ring × stride`), each row's valid-model mask, and how many
    /// rows are filled.
    pub fn ring(&self) -> (&[f32], &[ModelSet], usize) {
        (&self.rows, &self.valid, self.filled)
    }

    /// Targets allocated this period.
    pub fn targets(&self) -> ModelSet {
        self.targets
    }

    /// Whether this tick is due to label a frame (before the engines run: room is made for it).
    pub fn due(&self) -> bool {
        !self.targets.is_empty() && self.since_label + 1 >= self.settings.label_every
    }

    /// After the prediction of this tick: with a gating rule, whether the frame is uncertain (or
    /// lossy) enough to label (`signal`: the allocated targets' mean uncertainty or predicted loss).
    pub fn accept(&mut self, signal: Option<f32>) -> bool {
        if !matches!(self.settings.rule, LabelRule::Uncertainty | LabelRule::LossPrediction) {
            return true;
        }
        let Some(u) = signal else { return true };
        self.seen += 1;
        self.mean_signal += (u - self.mean_signal) / self.seen.min(256) as f32;
        self.seen <= 1 || u >= self.mean_signal
    }

    /// Count a tick that was not labelled.
    pub fn skip(&mut self) {
        self.since_label = self.since_label.saturating_add(1);
    }

    /// Store a labelled row holding the outputs of the models in `valid`.
    pub fn push(&mut self, row: &[f32], valid: ModelSet) {
        let cap = self.valid.len();
        let s = self.layout.stride();
        self.rows[self.next * s..(self.next + 1) * s].copy_from_slice(row);
        self.valid[self.next] = valid;
        self.next = (self.next + 1) % cap;
        self.filled = (self.filled + 1).min(cap);
        self.since_label = 0;
        self.new_labels += 1;
        self.total_labels += 1;
        let hit = valid & self.targets;
        self.labelled_targets |= hit;
        let mut full = ModelSet::EMPTY;
        for j in 0..self.got.len() {
            if hit.contains(j) {
                self.got[j] += 1;
                if self.got[j] >= self.quota[j] {
                    full.insert(j);
                }
            }
        }
        for (j, s) in self.samples.iter_mut().enumerate() {
            *s = s.saturating_add(u32::from(hit.contains(j)));
        }
        if self.new_labels >= self.settings.tune_every || !full.is_empty() {
            self.pending |= (self.targets & self.labelled_targets) | full;
            self.new_labels = 0;
        }
        // A target with its K frames is tuned (pending) and labelled no more this period.
        self.targets -= full;
    }

    /// Fine-tune the lowest pending target from `sources` on the ring's rows that hold it and every
    /// source. One target per call (per tick).
    pub fn tune_one(
        &mut self,
        predictor: &mut Predictor,
        sources: ModelSet,
    ) -> Option<Result<TuneReport, LinkError>> {
        let j = self.pending.first()?;
        self.pending.remove(j);
        // The sources every row holding j also holds (rows labelled while active models were set
        // aside lack those models).
        let mut common = ModelSet::all(ModelSet::CAP);
        for r in 0..self.filled {
            if self.valid[r].contains(j) {
                common &= self.valid[r];
            }
        }
        let sources = (sources & common).without(j);
        if sources.is_empty() {
            return None;
        }
        let need = sources.with(j);
        let mut rows = 0;
        for r in 0..self.filled {
            if need.is_subset(self.valid[r]) {
                let s = self.layout.stride();
                let at = rows * s;
                self.batch[at..at + s].copy_from_slice(&self.rows[r * s..(r + 1) * s]);
                rows += 1;
            }
        }
        if rows == 0 {
            return None;
        }
        let stride = self.layout.stride();
        let batch = &self.batch[..rows * stride];
        for _ in 0..self.settings.steps {
            if let Err(e) = self.adapter.step(predictor, j, sources, batch) {
                return Some(Err(e));
            }
        }
        let sj = self.layout.range(j);
        let mut sum = 0.0f32;
        for row in batch.chunks_exact(stride) {
            if predictor.predict(sources, row, &mut self.scratch).is_ok() {
                sum +=
                    agreement(self.kinds[j], self.scorings[j], &self.scratch[sj.clone()], &row[sj.clone()]);
            }
        }
        Some(Ok(TuneReport { target: j, agreement: sum / rows as f32 }))
    }
}

/// Per target, a linear head from a prediction's uncertainty signals to its expected loss (1 −
/// agreement with the target's own output), fitted on-line by normalised least mean squares on the
/// labelled frames.
pub struct LossHead {
    /// Per target: weights of (1, uncertainty, disagreement).
    w: Vec<[f32; 3]>,
}

impl LossHead {
    /// Step size of the normalised LMS update.
    const RATE: f32 = 0.1;

    pub fn new(n: usize) -> LossHead {
        // Start from "loss = the uncertainty score" (the uncertainty rule).
        LossHead { w: vec![[0.0, 0.5, 0.5]; n] }
    }

    fn x(s: &crate::links::DriftSignals) -> [f32; 3] {
        [1.0, s.uncertainty.min(1.0), s.disagreement]
    }

    /// Predicted loss of target `j`'s prediction with signals `s`.
    pub fn predict(&self, j: usize, s: &crate::links::DriftSignals) -> f32 {
        let x = Self::x(s);
        self.w[j].iter().zip(x).map(|(w, x)| w * x).sum()
    }

    /// Learn from one labelled prediction: its signals and the loss it had.
    pub fn learn(&mut self, j: usize, s: &crate::links::DriftSignals, loss: f32) {
        let x = Self::x(s);
        let err = loss - self.predict(j, s);
        let norm: f32 = 1.0 + x.iter().map(|v| v * v).sum::<f32>();
        for (w, v) in self.w[j].iter_mut().zip(x) {
            *w += Self::RATE * err * v / norm;
        }
    }
}

/// The last frames seen, with the row of outputs each tick produced, the models valid in it and
/// its uncertainty, for the top-k rule: a labelling tick labels the most uncertain one not yet
/// labelled. Sized in `prepare`; its bytes count against the model budget.
pub struct LabelWindow {
    frame_len: usize,
    stride: usize,
    frames: Vec<u8>,
    rows: Vec<f32>,
    valid: Vec<ModelSet>,
    index: Vec<u32>,
    score: Vec<f32>,
    taken: Vec<bool>,
    next: usize,
    filled: usize,
}

impl LabelWindow {
    /// A window of `len` frames (0: none).
    pub fn new(len: usize, frame_len: usize, stride: usize) -> LabelWindow {
        LabelWindow {
            frame_len,
            stride,
            frames: vec![0; len * frame_len],
            rows: vec![0.0; len * stride],
            valid: vec![ModelSet::EMPTY; len],
            index: vec![0; len],
            score: vec![0.0; len],
            taken: vec![true; len],
            next: 0,
            filled: 0,
        }
    }

    /// Bytes the window holds (what it takes from the model budget).
    pub fn bytes(&self) -> u64 {
        (self.frames.len() + 4 * self.rows.len()) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.valid.is_empty()
    }

    /// Keep this tick's frame, its row, the models valid in it and its uncertainty.
    pub fn push(&mut self, frame: &[u8], index: u32, row: &[f32], valid: ModelSet, score: f32) {
        let cap = self.valid.len();
        if cap == 0 || frame.len() != self.frame_len || row.len() != self.stride {
            return;
        }
        let k = self.next;
        self.frames[k * self.frame_len..(k + 1) * self.frame_len].copy_from_slice(frame);
        self.rows[k * self.stride..(k + 1) * self.stride].copy_from_slice(row);
        (self.valid[k], self.index[k], self.score[k], self.taken[k]) = (valid, index, score, false);
        self.next = (k + 1) % cap;
        self.filled = (self.filled + 1).min(cap);
    }

    /// The most uncertain frame not yet labelled (ties: the newest), taken.
    pub fn take_best(&mut self) -> Option<usize> {
        let cap = self.valid.len();
        let mut best: Option<usize> = None;
        for back in 1..=self.filled {
            let k = (self.next + cap - back) % cap;
            if !self.taken[k] && best.is_none_or(|b| self.score[k] > self.score[b]) {
                best = Some(k);
            }
        }
        if let Some(k) = best {
            self.taken[k] = true;
        }
        best
    }

    /// Entry `k`: its frame, frame index, row and valid models.
    pub fn entry(&self, k: usize) -> (&[u8], u32, &[f32], ModelSet) {
        (
            &self.frames[k * self.frame_len..(k + 1) * self.frame_len],
            self.index[k],
            &self.rows[k * self.stride..(k + 1) * self.stride],
            self.valid[k],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::DriftSignals;

    #[test]
    fn the_window_gives_the_most_uncertain_frame_once() {
        let mut w = LabelWindow::new(3, 2, 1);
        assert_eq!(w.take_best(), None);
        for (i, s) in [(0u32, 0.2f32), (1, 0.9), (2, 0.5), (3, 0.1)] {
            w.push(&[i as u8, 0], i, &[i as f32], ModelSet::from_bits(1), s);
        }
        // Frame 0 fell out of the window; frame 1 is the most uncertain, then 2, then 3.
        let k = w.take_best().unwrap();
        assert_eq!(w.entry(k).1, 1);
        let k = w.take_best().unwrap();
        assert_eq!(w.entry(k).1, 2);
        let k = w.take_best().unwrap();
        assert_eq!(w.entry(k), (&[3u8, 0][..], 3, &[3.0f32][..], ModelSet::from_bits(1)));
        assert_eq!(w.take_best(), None);
        assert_eq!(w.bytes(), 3 * 2 + 3 * 4);
        assert_eq!(LabelRule::by_name("top-k"), Some(LabelRule::TopK));
    }

    #[test]
    fn the_loss_head_learns_which_signal_predicts_the_loss() {
        // Loss follows disagreement, not entropy.
        let mut h = LossHead::new(1);
        let mut rng = crate::links::Rng::new(3);
        for _ in 0..4000 {
            let (u, d) = (rng.f32(), rng.f32());
            h.learn(0, &DriftSignals { uncertainty: u, disagreement: d, links: 2 }, d);
        }
        let lo = h.predict(0, &DriftSignals { uncertainty: 1.0, disagreement: 0.0, links: 2 });
        let hi = h.predict(0, &DriftSignals { uncertainty: 0.0, disagreement: 1.0, links: 2 });
        assert!(lo < 0.15 && hi > 0.85, "{lo} {hi}");
    }
}
