//! Model links (MLink): small MLPs that map one model's output vector to another model's output
//! space, their per-target ensembles, scores, on-line adaptation and the allocation-free CPU
//! predictor that the CUDA kernels must match.
//!
//! The pipeline is load → train → score → predict, each its own step:
//! - [`build`] trains every link g_ij and every ensemble h_{A,j} from a [`Recording`](crate::recording::Recording)
//!   and scores them on held-out training frames, producing a [`Bundle`](crate::bundle::Bundle).
//! - [`Predictor`] is prepared once from a bundle (every buffer allocated up front) and then fills the
//!   outputs of the models that did not run, frame by frame, without allocating.
//! - [`Adapter`] fine-tunes the links (and ensemble) into one target on a small batch of fresh pairs,
//!   in place, again without allocating.
//!
//! Weights live in flat `f32` arenas ([`LinkSet`], [`EnsembleSet`]) with the row-major layouts
//! described there and in `docs/bundle-format.md`, so a GPU kernel can read the same bytes.

mod adapt;
pub mod ensemble;
pub mod mlp;
mod options;
mod predict;
mod rng;
mod weights;

pub use adapt::{AdaptOptions, AdaptStats, Adapter};
pub use ensemble::EnsembleDims;
pub use mlp::LinkDims;
pub use options::{BuildOptions, EnsembleFit, RegressionLoss, TrainOptions};
pub(crate) use options::{prepare_target, regression_like};
pub use predict::{BenchStats, DriftSignals, Predictor, bench_predict};
pub use rng::Rng;
pub use weights::{EnsembleSet, LinkSet, first_non_finite, slot_of_source, source_of_slot};

use crate::manifest::OutputKind;
use crate::model_set::ModelSet;

/// What the predictor and the adapter need of a set of trained links: each task's kind, tolerance
/// and output size, the weights, and the settings they were trained with. The bundle implements it
/// (links never import the bundle; the bundle imports links).
pub trait LinkModel {
    fn kinds(&self) -> Vec<OutputKind>;
    fn tolerances(&self) -> Vec<f32>;
    /// The layout of one row of every model's output.
    fn layout(&self) -> crate::row::RowLayout;
    fn link_set(&self) -> &LinkSet;
    fn ensemble_set(&self) -> &EnsembleSet;
    fn train_options(&self) -> &TrainOptions;
}

/// Largest number of models a bundle supports: [`ModelSet::CAP`], the one cap (the per-target
/// subset score table has 2^(n-1) entries).
pub const MAX_MODELS: usize = ModelSet::CAP;

/// Default agreement tolerance for regression outputs (absolute, per element).
pub const DEFAULT_TOLERANCE: f32 = 0.1;

/// Two embeddings agree when their cosine similarity is at least this.
pub const EMBEDDING_COSINE_THRESHOLD: f32 = 0.9;

/// Two boxes agree when their intersection over union is at least this.
pub const BOX_IOU_THRESHOLD: f32 = 0.5;

/// Errors of the per-frame paths (prediction, drift signals, adaptation). Small and `Copy` so the
/// control loop can carry them without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    #[error("input row has {got} values, expected {expected} (one recording row)")]
    RowLength { expected: usize, got: usize },
    #[error("output row has {got} values, expected {expected} (one recording row)")]
    OutLength { expected: usize, got: usize },
    #[error("model index {index} out of range (bundle has {models} models)")]
    BadModel { index: usize, models: usize },
    #[error("active set {mask} names models beyond the {models} in the bundle")]
    MaskOutOfRange { mask: ModelSet, models: usize },
    #[error("batch of {got} rows is not a multiple of the row length or exceeds the workspace ({max} rows)")]
    BadBatch { got: usize, max: usize },
    #[error("adaptation of target {target} needs at least one source other than the target")]
    NoSources { target: usize },
}

/// Score of one prediction against the model's exact output, in [0, 1]. Used for link and ensemble
/// scores, by the scheduler, and for the control loop's accuracy.
///
/// - `Class`: 1 when the top-1 classes agree.
/// - `Multilabel`: per-frame F1 of the labels above 0.5 (1 when both label sets are empty).
/// - `Regression`: 1 when every element is within `tolerance` (absolute).
/// - `Count`: 1 when every element is within 0.5 (|error| < 0.5).
/// - `Embedding`: 1 when cosine similarity ≥ [`EMBEDDING_COSINE_THRESHOLD`] (0.9).
/// - `Box` (`[x, y, w, h]`, top-left corner and size): 1 when IoU ≥ [`BOX_IOU_THRESHOLD`] (0.5).
///
/// A prediction containing NaN scores 0. Slices of different lengths score 0.
pub fn agreement(kind: OutputKind, tolerance: f32, predicted: &[f32], actual: &[f32]) -> f32 {
    if predicted.len() != actual.len() || predicted.is_empty() || predicted.iter().any(|v| v.is_nan()) {
        return 0.0;
    }
    let hit = |b: bool| if b { 1.0 } else { 0.0 };
    match kind {
        OutputKind::Class => hit(argmax(predicted) == argmax(actual)),
        OutputKind::Multilabel => {
            let (mut tp, mut fp, mut fn_) = (0u32, 0u32, 0u32);
            for (&p, &a) in predicted.iter().zip(actual) {
                match (p > 0.5, a > 0.5) {
                    (true, true) => tp += 1,
                    (true, false) => fp += 1,
                    (false, true) => fn_ += 1,
                    (false, false) => {}
                }
            }
            if tp + fp + fn_ == 0 { 1.0 } else { 2.0 * tp as f32 / (2 * tp + fp + fn_) as f32 }
        }
        OutputKind::Regression => hit(predicted.iter().zip(actual).all(|(p, a)| (p - a).abs() <= tolerance)),
        OutputKind::Count => hit(predicted.iter().zip(actual).all(|(p, a)| (p - a).abs() < 0.5)),
        OutputKind::Embedding => {
            let (mut dot, mut pp, mut aa) = (0.0f32, 0.0f32, 0.0f32);
            for (&p, &a) in predicted.iter().zip(actual) {
                dot += p * a;
                pp += p * p;
                aa += a * a;
            }
            if pp == 0.0 || aa == 0.0 {
                return hit(pp == aa);
            }
            hit(dot / (pp.sqrt() * aa.sqrt()) >= EMBEDDING_COSINE_THRESHOLD)
        }
        OutputKind::Box => {
            if predicted.len() != 4 {
                return 0.0;
            }
            hit(iou(predicted, actual) >= BOX_IOU_THRESHOLD)
        }
    }
}

/// Intersection over union of two `[x, y, w, h]` boxes (negative sizes count as empty).
pub fn iou(a: &[f32], b: &[f32]) -> f32 {
    let (aw, ah, bw, bh) = (a[2].max(0.0), a[3].max(0.0), b[2].max(0.0), b[3].max(0.0));
    let ix = ((a[0] + aw).min(b[0] + bw) - a[0].max(b[0])).max(0.0);
    let iy = ((a[1] + ah).min(b[1] + bh) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let union = aw * ah + bw * bh - inter;
    if union <= 0.0 { if a == b { 1.0 } else { 0.0 } } else { inter / union }
}

/// Index of the largest value (first one on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// The output activation of a kind, applied in place to pre-activation values: softmax (class),
/// sigmoid (multilabel), identity (everything else).
pub fn activate(kind: OutputKind, z: &mut [f32]) {
    match kind {
        OutputKind::Class => {
            let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut s = 0.0;
            for v in z.iter_mut() {
                *v = (*v - m).exp();
                s += *v;
            }
            for v in z.iter_mut() {
                *v /= s;
            }
        }
        OutputKind::Multilabel => {
            for v in z.iter_mut() {
                *v = sigmoid(*v);
            }
        }
        _ => {}
    }
}

#[inline]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Uncertainty of one activated output in [0, 1]: normalised entropy for class (entropy / ln n) and
/// mean binary entropy / ln 2 for multilabel. Other kinds return 0 (their uncertainty is the
/// variance across links, see [`DriftSignals`]).
pub fn entropy_uncertainty(kind: OutputKind, y: &[f32]) -> f32 {
    let h = |p: f32| if p > 1e-12 { -p * p.ln() } else { 0.0 };
    match kind {
        OutputKind::Class if y.len() > 1 => y.iter().map(|&p| h(p)).sum::<f32>() / (y.len() as f32).ln(),
        OutputKind::Multilabel => {
            y.iter().map(|&p| h(p) + h(1.0 - p)).sum::<f32>() / (y.len() as f32 * std::f32::consts::LN_2)
        }
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_by_kind() {
        use OutputKind::*;
        assert_eq!(agreement(Class, 0.1, &[0.1, 0.7, 0.2], &[0.2, 0.5, 0.3]), 1.0);
        assert_eq!(agreement(Class, 0.1, &[0.8, 0.1, 0.1], &[0.2, 0.5, 0.3]), 0.0);
        assert_eq!(agreement(Multilabel, 0.1, &[0.9, 0.2, 0.8], &[0.9, 0.1, 0.1]), 2.0 / 3.0);
        assert_eq!(agreement(Multilabel, 0.1, &[0.1, 0.2], &[0.3, 0.1]), 1.0);
        assert_eq!(agreement(Regression, 0.1, &[0.5, 0.55], &[0.45, 0.5]), 1.0);
        assert_eq!(agreement(Regression, 0.1, &[0.5, 0.75], &[0.45, 0.5]), 0.0);
        assert_eq!(agreement(Count, 0.1, &[2.4], &[2.0]), 1.0);
        assert_eq!(agreement(Count, 0.1, &[2.6], &[2.0]), 0.0);
        assert_eq!(agreement(Embedding, 0.1, &[1.0, 0.1], &[2.0, 0.0]), 1.0);
        assert_eq!(agreement(Embedding, 0.1, &[1.0, 1.0], &[1.0, 0.0]), 0.0);
        assert_eq!(agreement(Box, 0.1, &[0.0, 0.0, 1.0, 1.0], &[0.1, 0.0, 1.0, 1.0]), 1.0);
        assert_eq!(agreement(Box, 0.1, &[0.0, 0.0, 1.0, 1.0], &[0.6, 0.0, 1.0, 1.0]), 0.0);
        assert_eq!(agreement(Count, 0.1, &[f32::NAN], &[2.0]), 0.0);
        assert!((iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 1.0, 2.0, 2.0]) - 1.0 / 7.0).abs() < 1e-6);
    }

    #[test]
    fn activations() {
        let mut z = [1.0, 2.0, 3.0];
        activate(OutputKind::Class, &mut z);
        assert!((z.iter().sum::<f32>() - 1.0).abs() < 1e-6 && z[2] > z[1]);
        let mut z = [0.0];
        activate(OutputKind::Multilabel, &mut z);
        assert_eq!(z, [0.5]);
        assert!((entropy_uncertainty(OutputKind::Class, &[0.5, 0.5]) - 1.0).abs() < 1e-6);
        assert_eq!(entropy_uncertainty(OutputKind::Class, &[1.0, 0.0]), 0.0);
    }
}
