//! On-line adaptation inside the loop: which targets a period refreshes, which frames are labelled
//! (the models that did not run are run on them), the ring of labelled rows, and fine-tuning one
//! target per tick. Every buffer is sized in [`OnlineAdaptation::new`]; nothing here allocates per
//! tick.
//!
//! A period's DCTA allocation names the targets to refresh. Every `label_every`-th tick (with
//! uncertainty sampling, only when the frame's predictions are at least as uncertain as their
//! running mean) is a *labelling* tick: each allocated target that is not running is run on the
//! frame, within the budget (the loop sets active models aside to make room, see
//! `Controller::make_room`), and the whole row, with the mask of models whose outputs it holds, goes
//! into the ring. After every `tune_every` labelled frames each allocated target is fine-tuned, one
//! target per tick, on the ring's rows that hold it and the running sources.

use crate::bundle::Bundle;
use crate::links::{AdaptOptions, Adapter, LinkError, Predictor, agreement};
use crate::manifest::OutputKind;
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
    /// Label only frames at least as uncertain as the running mean (else every `label_every`-th).
    pub uncertainty_sampling: bool,
}

impl Default for AdaptSettings {
    /// Measured on the demo's main job (`--engines replay`, drift segment, no adaptation 74.5% at 75.0%
    /// saved): 10% labels, a ring of 32, 2 steps after every 4 labels gave 81.2% at 73.6% saved;
    /// 8 steps after every 8 labels on a ring of 64, 77.4%; 5% labels, 75.6–76.3%; gating on
    /// uncertainty, 79.8% (room made for a frame the gate then skips costs accuracy).
    fn default() -> Self {
        AdaptSettings { label_every: 10, ring: 32, tune_every: 4, steps: 2, uncertainty_sampling: false }
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
    tolerances: Vec<f32>,
    layout: RowLayout,
    /// Ring of labelled rows (`ring × stride`) and, per row, the models whose outputs it holds.
    rows: Vec<f32>,
    valid: Vec<u64>,
    next: usize,
    filled: usize,
    /// Rows selected for one fine-tuning batch, compacted.
    batch: Vec<f32>,
    scratch: Vec<f32>,
    /// Targets allocated this period, and those still to fine-tune.
    targets: u64,
    pending: u64,
    /// Targets of this period that got at least one label.
    labelled_targets: u64,
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
            tolerances: bundle.models.iter().map(|m| m.tolerance).collect(),
            layout,
            rows: vec![0.0; ring * stride],
            valid: vec![0; ring],
            next: 0,
            filled: 0,
            batch: vec![0.0; ring * stride],
            scratch: vec![0.0; stride],
            targets: 0,
            pending: 0,
            labelled_targets: 0,
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
    pub fn start_period(&mut self, targets: u64, frames: &[u32]) -> u64 {
        let abandoned = self.targets & !self.labelled_targets;
        for (j, (q, g)) in self.quota.iter_mut().zip(self.got.iter_mut()).enumerate() {
            *q = if targets >> j & 1 == 1 { frames.get(j).copied().unwrap_or(u32::MAX) } else { 0 };
            *g = 0;
        }
        self.targets = targets;
        self.labelled_targets = 0;
        self.pending = 0;
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
    pub fn ring(&self) -> (&[f32], &[u64], usize) {
        (&self.rows, &self.valid, self.filled)
    }

    /// Targets allocated this period.
    pub fn targets(&self) -> u64 {
        self.targets
    }

    /// Whether this tick is due to label a frame (before the engines run: room is made for it).
    pub fn due(&self) -> bool {
        self.targets != 0 && self.since_label + 1 >= self.settings.label_every
    }

    /// After the prediction of this tick: with uncertainty sampling, whether the frame is uncertain
    /// enough to label (`signal` is the mean uncertainty of the allocated targets' predictions).
    pub fn accept(&mut self, signal: Option<f32>) -> bool {
        if !self.settings.uncertainty_sampling {
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
    pub fn push(&mut self, row: &[f32], valid: u64) {
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
        let mut full = 0u64;
        for j in 0..self.got.len() {
            if hit >> j & 1 == 1 {
                self.got[j] += 1;
                if self.got[j] >= self.quota[j] {
                    full |= 1 << j;
                }
            }
        }
        for (j, s) in self.samples.iter_mut().enumerate() {
            *s = s.saturating_add((hit >> j & 1) as u32);
        }
        if self.new_labels >= self.settings.tune_every || full != 0 {
            self.pending |= (self.targets & self.labelled_targets) | full;
            self.new_labels = 0;
        }
        // A target with its K frames is tuned (pending) and labelled no more this period.
        self.targets &= !full;
    }

    /// Fine-tune the lowest pending target from `sources` on the ring's rows that hold it and every
    /// source. One target per call (per tick).
    pub fn tune_one(
        &mut self,
        predictor: &mut Predictor,
        sources: u64,
    ) -> Option<Result<TuneReport, LinkError>> {
        if self.pending == 0 {
            return None;
        }
        let j = self.pending.trailing_zeros() as usize;
        self.pending &= !(1u64 << j);
        // The sources every row holding j also holds (rows labelled while active models were set
        // aside lack those models).
        let mut common = u64::MAX;
        for r in 0..self.filled {
            if self.valid[r] >> j & 1 == 1 {
                common &= self.valid[r];
            }
        }
        let sources = sources & common & !(1u64 << j);
        if sources == 0 {
            return None;
        }
        let need = sources | 1u64 << j;
        let mut rows = 0;
        for r in 0..self.filled {
            if self.valid[r] & need == need {
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
                    agreement(self.kinds[j], self.tolerances[j], &self.scratch[sj.clone()], &row[sj.clone()]);
            }
        }
        Some(Ok(TuneReport { target: j, agreement: sum / rows as f32 }))
    }
}
