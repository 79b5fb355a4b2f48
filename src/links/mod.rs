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
mod tying;
mod weights;

pub use adapt::{AdaptOptions, AdaptStats, Adapter};
pub use ensemble::EnsembleDims;
pub use mlp::LinkDims;
pub use options::ctc_canonical;
pub use options::{BuildOptions, EnsembleFit, RegressionLoss, TrainOptions};
pub(crate) use options::{prepare_target, regression_like};
pub use predict::{BenchStats, DriftSignals, Predictor, bench_predict};
pub use rng::Rng;
pub use tying::StepTie;
pub use weights::{EnsembleSet, LinkSet, first_non_finite, slot_of_source, source_of_slot};

use crate::manifest::{MAX_STEPS, OutputKind, SeqDecode, SeqShape};
use crate::model_set::ModelSet;
use crate::scoring::Scoring;

/// What the predictor and the adapter need of a set of trained links: each task's kind, scoring
/// and output size, the weights, and the settings they were trained with. The bundle implements it
/// (links never import the bundle; the bundle imports links).
pub trait LinkModel {
    fn kinds(&self) -> Vec<OutputKind>;
    fn scorings(&self) -> Vec<crate::scoring::Scoring>;
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
/// - `Sequence`, by its decoding rule: `ctc`, 1 when the greedy-decoded strings are equal; `argmax`,
///   1 when every step's class is equal; `raw`, 1 when every value is within `tolerance`. The
///   partial credit of a miss is [`sequence_similarity`].
///
/// A model that declares a score rule ([`crate::scoring::ScoreRule`]) is judged by that rule
/// instead; `scoring.own()` gives the kind's rule above. A prediction containing NaN scores 0.
/// Slices of different lengths score 0.
pub fn agreement(kind: OutputKind, scoring: Scoring, predicted: &[f32], actual: &[f32]) -> f32 {
    if predicted.len() != actual.len() || predicted.is_empty() || predicted.iter().any(|v| v.is_nan()) {
        return 0.0;
    }
    if scoring.declared() {
        return crate::scoring::judge(scoring.rule, predicted, actual);
    }
    let tolerance = scoring.tolerance;
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
        OutputKind::Sequence(q) => {
            let Some(c) = per_step(q, predicted.len()) else { return 0.0 };
            match q.decode {
                SeqDecode::Ctc => hit(ctc_symbols(predicted, c).eq(ctc_symbols(actual, c))),
                SeqDecode::Argmax => hit(predicted
                    .chunks_exact(c)
                    .zip(actual.chunks_exact(c))
                    .all(|(p, a)| argmax(p) == argmax(a))),
                SeqDecode::Raw => hit(predicted.iter().zip(actual).all(|(p, a)| (p - a).abs() <= tolerance)),
            }
        }
    }
}

/// Values per step of a sequence row of `len` values (`None` when `len` is not `steps` × C).
pub(crate) fn per_step(q: SeqShape, len: usize) -> Option<usize> {
    let t = q.steps as usize;
    (t > 0 && len % t == 0 && len >= t).then_some(len / t)
}

/// The greedy CTC decoding of a step-major row of C values per step: the column of each step's
/// largest value, repeats collapsed, blanks (column 0) dropped. Symbols are the column − 1 (the
/// index into the model's alphabet). An iterator: decoding allocates nothing.
pub fn ctc_symbols(row: &[f32], c: usize) -> impl Iterator<Item = u16> + '_ {
    let mut prev = 0usize;
    row.chunks_exact(c.max(1)).filter_map(move |step| {
        let k = argmax(step);
        let emit = k != 0 && k != prev;
        prev = k;
        emit.then(|| (k - 1) as u16)
    })
}

/// Whether links read outputs of this kind through [`source_input`]: a symbol sequence (`ctc` or
/// `argmax`), which a link reads as the symbols it decodes to, so that what the sequence says
/// does not move with where or how confidently the model emitted it.
pub fn canonical_input(kind: OutputKind) -> bool {
    matches!(kind, OutputKind::Sequence(q) if q.decode != SeqDecode::Raw)
}

/// The input a link reads from a source's output `src`: for a `ctc` sequence its canonical
/// alignment ([`ctc_canonical`]: the k-th decoded symbol one-hot at step 2k), for an `argmax`
/// sequence each step's class one-hot, written into `buf` (at least `src.len()` long); any other
/// output as is. Used by the trainer, the predictor and the adapter alike; allocates nothing.
///
/// Reading an `argmax` source one-hot (bundle format 9) was measured on `demo-seq`: a link that
/// maps each position's symbol ([`StepTie`]) learns the readers' confusions from the symbols, and
/// from the raw scores it did worse than copying the other reader's string (docs/sequences.md).
pub fn source_input<'a>(kind: OutputKind, src: &'a [f32], buf: &'a mut [f32]) -> &'a [f32] {
    match kind {
        OutputKind::Sequence(q) if q.decode == SeqDecode::Ctc => {
            let b = &mut buf[..src.len()];
            b.copy_from_slice(src);
            ctc_canonical(q.steps as usize, b);
            b
        }
        OutputKind::Sequence(q) if q.decode == SeqDecode::Argmax => {
            let b = &mut buf[..src.len()];
            match per_step(q, src.len()) {
                Some(c) => {
                    for (to, from) in b.chunks_exact_mut(c).zip(src.chunks_exact(c)) {
                        to.fill(0.0);
                        to[argmax(from)] = 1.0;
                    }
                }
                None => b.copy_from_slice(src),
            }
            b
        }
        _ => src,
    }
}

/// Partial credit of a sequence prediction in [0, 1], the character-level figure reported beside
/// [`agreement`]: `ctc`, 1 − the edit distance between the decoded strings / the longer length
/// (1 when both are empty); `argmax`, the share of steps whose class is equal; `raw`, the share of
/// steps whose values are all within `tolerance`. Other kinds: [`agreement`]. Allocates nothing
/// (fixed buffers of [`MAX_STEPS`] symbols on the stack).
pub fn sequence_similarity(kind: OutputKind, scoring: Scoring, predicted: &[f32], actual: &[f32]) -> f32 {
    let OutputKind::Sequence(q) = kind else { return agreement(kind, scoring, predicted, actual) };
    let tolerance = scoring.tolerance;
    if predicted.len() != actual.len() || predicted.iter().any(|v| v.is_nan()) {
        return 0.0;
    }
    let Some(c) = per_step(q, predicted.len()) else { return 0.0 };
    let steps = q.steps as f32;
    match q.decode {
        SeqDecode::Ctc => {
            const N: usize = MAX_STEPS as usize;
            let (mut a, mut b) = ([0u16; N], [0u16; N]);
            let fill = |buf: &mut [u16; N], row: &[f32]| {
                let mut n = 0;
                for (slot, s) in buf.iter_mut().zip(ctc_symbols(row, c)) {
                    *slot = s;
                    n += 1;
                }
                n
            };
            let (na, nb) = (fill(&mut a, predicted), fill(&mut b, actual));
            let longer = na.max(nb);
            if longer == 0 {
                return 1.0;
            }
            1.0 - edit_distance(&a[..na], &b[..nb]) as f32 / longer as f32
        }
        SeqDecode::Argmax => {
            predicted
                .chunks_exact(c)
                .zip(actual.chunks_exact(c))
                .filter(|(p, a)| argmax(p) == argmax(a))
                .count() as f32
                / steps
        }
        SeqDecode::Raw => {
            predicted
                .chunks_exact(c)
                .zip(actual.chunks_exact(c))
                .filter(|(p, a)| p.iter().zip(a.iter()).all(|(x, y)| (x - y).abs() <= tolerance))
                .count() as f32
                / steps
        }
    }
}

/// Levenshtein distance (unit insert, delete, substitute) between two symbol strings of at most
/// [`MAX_STEPS`] symbols each, with one row of a fixed stack buffer.
pub fn edit_distance(a: &[u16], b: &[u16]) -> usize {
    const N: usize = MAX_STEPS as usize + 1;
    let (a, b) = (&a[..a.len().min(N - 1)], &b[..b.len().min(N - 1)]);
    let mut row = [0u16; N];
    for (j, r) in row.iter_mut().enumerate().take(b.len() + 1) {
        *r = j as u16;
    }
    for (i, &x) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i as u16 + 1;
        for (j, &y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = (up + 1).min(row[j] + 1).min(diag + u16::from(x != y));
            diag = up;
        }
    }
    row[b.len()] as usize
}

/// The decoded string of a `ctc` sequence row over `alphabet` (symbols beyond it as `?`), for
/// reports and tools (allocates; not for the per-frame path).
pub fn ctc_string(row: &[f32], c: usize, alphabet: &str) -> String {
    let chars: Vec<char> = alphabet.chars().collect();
    ctc_symbols(row, c).map(|s| chars.get(s as usize).copied().unwrap_or('?')).collect()
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
/// sigmoid (multilabel), softmax over each step (`ctc` and `argmax` sequences), identity
/// (everything else).
pub fn activate(kind: OutputKind, z: &mut [f32]) {
    match kind {
        OutputKind::Sequence(q) if q.decode != SeqDecode::Raw => {
            if let Some(c) = per_step(q, z.len()) {
                for step in z.chunks_exact_mut(c) {
                    activate(OutputKind::Class, step);
                }
            }
        }
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
        // The mean over steps of each step's normalised entropy.
        OutputKind::Sequence(q) if q.decode != SeqDecode::Raw => match per_step(q, y.len()) {
            Some(c) if c > 1 => {
                y.chunks_exact(c).map(|s| entropy_uncertainty(OutputKind::Class, s)).sum::<f32>()
                    / q.steps as f32
            }
            _ => 0.0,
        },
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    /// The kind's own rule with tolerance 0.1.
    const T01: Scoring = Scoring::tolerance(0.1);
    use super::*;

    #[test]
    fn agreement_by_kind() {
        use OutputKind::*;
        assert_eq!(agreement(Class, T01, &[0.1, 0.7, 0.2], &[0.2, 0.5, 0.3]), 1.0);
        assert_eq!(agreement(Class, T01, &[0.8, 0.1, 0.1], &[0.2, 0.5, 0.3]), 0.0);
        assert_eq!(agreement(Multilabel, T01, &[0.9, 0.2, 0.8], &[0.9, 0.1, 0.1]), 2.0 / 3.0);
        assert_eq!(agreement(Multilabel, T01, &[0.1, 0.2], &[0.3, 0.1]), 1.0);
        assert_eq!(agreement(Regression, T01, &[0.5, 0.55], &[0.45, 0.5]), 1.0);
        assert_eq!(agreement(Regression, T01, &[0.5, 0.75], &[0.45, 0.5]), 0.0);
        assert_eq!(agreement(Count, T01, &[2.4], &[2.0]), 1.0);
        assert_eq!(agreement(Count, T01, &[2.6], &[2.0]), 0.0);
        assert_eq!(agreement(Embedding, T01, &[1.0, 0.1], &[2.0, 0.0]), 1.0);
        assert_eq!(agreement(Embedding, T01, &[1.0, 1.0], &[1.0, 0.0]), 0.0);
        assert_eq!(agreement(Box, T01, &[0.0, 0.0, 1.0, 1.0], &[0.1, 0.0, 1.0, 1.0]), 1.0);
        assert_eq!(agreement(Box, T01, &[0.0, 0.0, 1.0, 1.0], &[0.6, 0.0, 1.0, 1.0]), 0.0);
        assert_eq!(agreement(Count, T01, &[f32::NAN], &[2.0]), 0.0);
        assert!((iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 1.0, 2.0, 2.0]) - 1.0 / 7.0).abs() < 1e-6);
    }

    fn seq(decode: SeqDecode, steps: u32) -> OutputKind {
        OutputKind::Sequence(SeqShape { steps, decode })
    }

    /// One-hot step-major rows of C = 3 (blank, 'a', 'b') from a column list.
    fn onehot(cols: &[usize]) -> Vec<f32> {
        let mut v = vec![0.0; cols.len() * 3];
        for (t, &k) in cols.iter().enumerate() {
            v[t * 3 + k] = 1.0;
        }
        v
    }

    #[test]
    fn sequence_agreement_by_decode_rule() {
        let ctc = seq(SeqDecode::Ctc, 5);
        // "ab" three ways: different alignments, repeats and blanks decode to the same string.
        let ab1 = onehot(&[1, 1, 0, 2, 0]);
        let ab2 = onehot(&[0, 1, 2, 2, 2]);
        let aab = onehot(&[1, 0, 1, 2, 0]);
        assert_eq!(ctc_symbols(&ab1, 3).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(ctc_string(&aab, 3, "ab"), "aab");
        assert_eq!(agreement(ctc, T01, &ab1, &ab2), 1.0);
        assert_eq!(agreement(ctc, T01, &ab1, &aab), 0.0);
        // Edit distance 1 over the longer length 3.
        assert!((sequence_similarity(ctc, T01, &aab, &ab1) - 2.0 / 3.0).abs() < 1e-6);
        assert_eq!(sequence_similarity(ctc, T01, &onehot(&[0; 5]), &onehot(&[0; 5])), 1.0);
        assert_eq!(sequence_similarity(ctc, T01, &onehot(&[0; 5]), &ab1), 0.0);
        // Per-step classes: the alignments differ, so argmax disagrees where ctc agrees.
        let am = seq(SeqDecode::Argmax, 5);
        assert_eq!(agreement(am, T01, &ab1, &ab1), 1.0);
        assert_eq!(agreement(am, T01, &ab1, &ab2), 0.0);
        assert!((sequence_similarity(am, T01, &ab1, &ab2) - 2.0 / 5.0).abs() < 1e-6);
        // Raw: a tolerance on every value; partial credit per step.
        let raw = seq(SeqDecode::Raw, 2);
        assert_eq!(agreement(raw, T01, &[0.0, 1.0, 2.0, 3.0], &[0.05, 1.0, 2.0, 3.0]), 1.0);
        assert_eq!(agreement(raw, T01, &[0.0, 1.0, 2.0, 3.5], &[0.05, 1.0, 2.0, 3.0]), 0.0);
        assert_eq!(sequence_similarity(raw, T01, &[0.0, 1.0, 2.0, 3.5], &[0.05, 1.0, 2.0, 3.0]), 0.5);
        // A row that is not steps × C, or NaN, scores 0.
        assert_eq!(agreement(ctc, T01, &ab1[..14], &ab2[..14]), 0.0);
        let mut nan = ab1.clone();
        nan[4] = f32::NAN;
        assert_eq!(agreement(ctc, T01, &nan, &ab1), 0.0);
        assert_eq!(sequence_similarity(ctc, T01, &nan, &ab1), 0.0);
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance(&[1, 2, 3], &[1, 2, 3]), 0);
        assert_eq!(edit_distance(&[1, 2, 3], &[1, 3]), 1);
        assert_eq!(edit_distance(&[], &[4, 4]), 2);
        assert_eq!(edit_distance(&[1, 2, 3, 4], &[2, 1, 3, 5]), 3);
        assert_eq!(edit_distance(&[7, 8, 9], &[1, 7, 8, 9]), 1);
    }

    #[test]
    fn sequence_activation_is_per_step() {
        let k = seq(SeqDecode::Ctc, 2);
        let mut z = [0.0, 1.0, 2.0, 5.0, 0.0, 0.0];
        activate(k, &mut z);
        assert!((z[..3].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((z[3..].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(z[2] > z[1] && z[3] > z[4]);
        let u = entropy_uncertainty(k, &[1.0 / 3.0; 6]);
        assert!((u - 1.0).abs() < 1e-5, "{u}");
        let mut r = [1.0, 2.0];
        activate(seq(SeqDecode::Raw, 1), &mut r);
        assert_eq!(r, [1.0, 2.0]);
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
