//! Link training settings: the measured recipe and the paper's ([`TrainOptions`]), the build
//! options, and the target preparation the trainer and the on-line adapter share. The training
//! itself is `crate::train` (it writes a bundle; links do not know bundles).

use serde::{Deserialize, Serialize};

use super::activate;
use super::mlp::Loss;
use crate::manifest::{OutputKind, SeqDecode};

/// Loss for regression-like targets (regression, count, embedding). Boxes always use L1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegressionLoss {
    Mse,
    Mae,
}

/// What the ensemble weights are fitted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnsembleFit {
    /// Predictions of the final links on their own training rows (cheap, optimistic).
    InSample,
    /// Out-of-fold predictions: each link is also trained `folds` times on the fit rows minus one
    /// fold and predicts that fold (honest, `folds + 1` times the link training cost).
    OutOfFold { folds: u32 },
}

/// Training settings; stored in the bundle. [`TrainOptions::default`] is the measured recipe,
/// [`TrainOptions::paper`] the MLink paper's; `jetlink build --recipe paper|measured` picks one and
/// `jetlink bench mlink --recipes` reports both side by side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Hidden width = max(`hidden_factor`·|Y_j|, `hidden_floor`).
    pub hidden_factor: u32,
    pub hidden_floor: u32,
    /// Dropout on the hidden layer of links into class and multilabel targets.
    pub dropout: f32,
    /// Dropout on links into regression-like targets (regression, count, embedding, box).
    pub dropout_regression: f32,
    /// Train links into regression-like targets on standardised targets (per element, fit-row mean
    /// and standard deviation), then fold the scale back into the output layer, so that the stored
    /// link still predicts raw values and the predictor, kernels and adapter are unchanged.
    pub standardize_targets: bool,
    pub lr: f32,
    pub batch: u32,
    pub epochs: u32,
    pub regression_loss: RegressionLoss,
    /// Fraction of the training rows held out for scores (taken from the end).
    pub holdout_fraction: f32,
    pub ensemble_fit: EnsembleFit,
    pub ensemble_epochs: u32,
    pub ensemble_lr: f32,
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> TrainOptions {
        TrainOptions {
            hidden_factor: 2,
            // Measured on the demo: mean link score 0.561-0.564 with floor 64 vs 0.553 without; the gain
            // is on the 1- and 2-value targets.
            hidden_floor: 64,
            dropout: 0.5,
            // Measured on the demo (see README, "Link recipe"): dropout 0.5 on a 16-value regression
            // target keeps the links from fitting small values; 0 lifts ocr_det and loops.
            dropout_regression: 0.0,
            // Measured on the demo: the 16 pooled detector values (mean 0.04) are learnt far better
            // in standard units than raw.
            standardize_targets: true,
            lr: 0.01,
            batch: 32,
            epochs: 40,
            regression_loss: RegressionLoss::Mse,
            holdout_fraction: 0.2,
            // Measured on the demo (2 seeds): out-of-fold fitting scored no better on seven targets and
            // worse on the 16-value regression target (0.28-0.42 vs 0.42-0.50), at 2.5x the time.
            ensemble_fit: EnsembleFit::InSample,
            ensemble_epochs: 40,
            ensemble_lr: 0.002,
            seed: 0x006a_6574_6c69_6e6b,
        }
    }
}

impl TrainOptions {
    /// The MLink paper's recipe (dropout 0.5 everywhere, raw targets), kept selectable for comparison.
    pub fn paper() -> TrainOptions {
        TrainOptions { dropout_regression: 0.5, standardize_targets: false, ..TrainOptions::default() }
    }

    /// A recipe by name: `measured` (the default) or `paper`.
    pub fn by_name(name: &str) -> Option<TrainOptions> {
        match name {
            "measured" | "default" => Some(TrainOptions::default()),
            "paper" => Some(TrainOptions::paper()),
            _ => None,
        }
    }

    pub(crate) fn dropout_for(&self, kind: OutputKind) -> f32 {
        if regression_like(kind) { self.dropout_regression } else { self.dropout }
    }

    pub fn hidden(&self, target_size: usize) -> usize {
        (self.hidden_factor as usize * target_size).max(self.hidden_floor as usize).max(1)
    }
    pub(crate) fn loss(&self, kind: OutputKind) -> Loss {
        let reg = match self.regression_loss {
            RegressionLoss::Mse => Loss::Mse,
            RegressionLoss::Mae => Loss::Mae,
        };
        Loss::for_kind(kind, reg)
    }
}

/// Everything `build` needs besides the data.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub train: TrainOptions,
    /// Worker threads; 0 = all available cores.
    pub threads: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Fit an ensemble head for every source set of at most this many models, kept where it beats
    /// the shared head on held-out rows (0: shared heads only). `jetlink build` sets the board's
    /// `max-active-models`: the schedule never runs more.
    pub set_heads: usize,
    /// The first frame the links are fitted on: rows of frames `fit_from..train_end` (0 by
    /// default, the stream's training part). `jetlink build --fit-frames A..B` sets both; fitting
    /// on the evaluation frames themselves gives an in-sample ceiling.
    pub fit_from: usize,
    /// Fit on every row of the fit frames and measure the scores on a spread share
    /// (`holdout_fraction`) of those same rows, instead of holding the last rows out: an in-sample
    /// build, for a ceiling (`jetlink build --in-sample`).
    pub in_sample: bool,
}

impl Default for BuildOptions {
    fn default() -> BuildOptions {
        BuildOptions {
            train: TrainOptions::default(),
            threads: 0,
            progress: true,
            set_heads: 0,
            fit_from: 0,
            in_sample: false,
        }
    }
}

/// Kinds whose links regress values (and so take [`TrainOptions::dropout_regression`] and
/// standardised targets).
pub(crate) fn regression_like(kind: OutputKind) -> bool {
    match kind {
        OutputKind::Class | OutputKind::Multilabel => false,
        OutputKind::Sequence(q) => q.decode == crate::manifest::SeqDecode::Raw,
        _ => true,
    }
}

/// Training target of one output row: class rows that are not a probability distribution (logits)
/// go through softmax; multilabel rows are clamped to [0, 1]; each step of an `argmax` sequence is
/// treated like a class row; a `ctc` sequence is replaced by its canonical alignment
/// ([`ctc_canonical`]); everything else is used as is. Allocates nothing.
pub(crate) fn prepare_target(kind: OutputKind, row: &mut [f32]) {
    match kind {
        OutputKind::Class => {
            let sum: f32 = row.iter().sum();
            if row.iter().any(|&v| v < -1e-6) || (sum - 1.0).abs() > 1e-3 {
                activate(OutputKind::Class, row);
            }
        }
        OutputKind::Multilabel => row.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0)),
        OutputKind::Sequence(q) if q.decode == SeqDecode::Argmax => {
            let t = q.steps.max(1) as usize;
            if row.len() % t == 0 {
                for step in row.chunks_exact_mut(row.len() / t) {
                    prepare_target(OutputKind::Class, step);
                }
            }
        }
        OutputKind::Sequence(q) if q.decode == SeqDecode::Ctc => ctc_canonical(q.steps as usize, row),
        _ => {}
    }
}

/// Rewrite a `ctc` row (`steps` × C, step-major) as the canonical alignment of its greedy decoding:
/// symbol k of the decoded string, one-hot at step 2k, and the blank at every other step. It
/// decodes to the same string, and its k-th symbol is always at the same step, so a link learns
/// "the k-th character" instead of where the model happened to emit it (a position that moves with
/// every character's width). Strings longer than (steps + 1) / 2 keep their first symbols.
pub fn ctc_canonical(steps: usize, row: &mut [f32]) {
    if steps == 0 || row.len() % steps != 0 || row.len() < steps {
        return;
    }
    let c = row.len() / steps;
    const N: usize = crate::manifest::MAX_STEPS as usize;
    let mut sym = [0u16; N];
    let mut n = 0;
    for (slot, s) in sym.iter_mut().zip(super::ctc_symbols(row, c)) {
        *slot = s;
        n += 1;
    }
    row.fill(0.0);
    for (t, step) in row.chunks_exact_mut(c).enumerate() {
        let k = t / 2;
        let col = if t % 2 == 0 && k < n { sym[k] as usize + 1 } else { 0 };
        step[col.min(c - 1)] = 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_logits_become_distributions() {
        let mut r = [2.0, 0.0, -1.0];
        prepare_target(OutputKind::Class, &mut r);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6 && r[0] > r[1]);
        let mut p = [0.2, 0.8];
        prepare_target(OutputKind::Class, &mut p);
        assert_eq!(p, [0.2, 0.8]);
    }

    #[test]
    fn ctc_targets_become_their_canonical_alignment() {
        use crate::manifest::SeqShape;
        // C = 3 (blank, a, b); 6 steps reading "abb" as [a a _ b _ b].
        let k = OutputKind::Sequence(SeqShape { steps: 6, decode: SeqDecode::Ctc });
        let mut r = vec![0.0; 18];
        for (t, col) in [1, 1, 0, 2, 0, 2].into_iter().enumerate() {
            r[t * 3 + col] = 0.9;
            r[t * 3 + (col + 1) % 3] = 0.1;
        }
        let before = crate::links::ctc_string(&r, 3, "ab");
        prepare_target(k, &mut r);
        assert_eq!(before, "abb");
        assert_eq!(crate::links::ctc_string(&r, 3, "ab"), "abb");
        let argmax: Vec<usize> = r.chunks_exact(3).map(crate::links::argmax).collect();
        assert_eq!(argmax, [1, 0, 2, 0, 2, 0]);
        assert!(r.chunks_exact(3).all(|s| s.iter().sum::<f32>() == 1.0));
    }
}
