//! Temporal reuse over the committed MNIST demo: the hold scores measure agreement by age, and the
//! bundle carries those of its training part.

use jetlink::schedule::{HoldScores, MAX_HOLD_AGE};
use jetlink::sim::DemoSet;

#[test]
fn hold_scores_measure_what_a_held_output_is_worth() {
    let d = DemoSet::demo().unwrap();
    let cnn7 = d.bundle.models.iter().position(|m| m.name == "cnn7").unwrap();
    // The same frames with cnn7's output frozen: the held output is always right.
    let mut frozen = (*d.reference).clone();
    let (off, size, stride) = (frozen.offset(cnn7), d.bundle.models[cnn7].size as usize, frozen.stride());
    let first: Vec<f32> = frozen.values[off..off + size].to_vec();
    for r in 0..frozen.len() {
        frozen.values[r * stride + off..r * stride + off + size].copy_from_slice(&first);
    }
    // MNIST frames are independent digits: a held cnn7 output is worth chance on the real outputs,
    // and 1 on the frozen ones.
    let kinds: Vec<_> = d.bundle.models.iter().map(|m| m.kind).collect();
    let tol: Vec<_> = d.bundle.models.iter().map(|m| m.scoring).collect();
    let real = HoldScores::measure(&d.reference, &kinds, &tol, 0..d.stream.train_end);
    let fixed = HoldScores::measure(&frozen, &kinds, &tol, 0..d.stream.train_end);
    for age in [1, 2, 8] {
        assert!(real.get(cnn7, age) < 0.2, "{}", real.get(cnn7, age));
        assert_eq!(fixed.get(cnn7, age), 1.0);
    }
    // The committed bundle carries the hold scores of its training part (what `jetlink build`
    // measures), which the loop's holding policies plan with.
    assert_eq!(d.bundle.scores.hold.len(), d.bundle.n_models() * MAX_HOLD_AGE);
    assert_eq!(&d.bundle.scores.hold[..], real.table());
}
