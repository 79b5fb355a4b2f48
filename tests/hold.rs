//! Temporal reuse over the committed MNIST demo: the hold + link blend weighs a held output by what
//! it is worth on the training frames, and the hold scores measure agreement by age.

use jetlink::links::Predictor;
use jetlink::schedule::{Blend, HoldScores};
use jetlink::sim::DemoSet;

#[test]
fn blend_weights_follow_what_the_held_output_is_worth() {
    let d = DemoSet::demo().unwrap();
    let cnn7 = d.bundle.models.iter().position(|m| m.name == "cnn7").unwrap();
    let mlp = d.bundle.models.iter().position(|m| m.name == "digit_mlp").unwrap();
    let active = 1u64 << mlp;
    let mut predictor = Predictor::new(&d.bundle);
    // MNIST frames are independent digits: a held cnn7 output is worth chance, the link from the
    // MLP far more, so the held output gets little weight.
    let mut b = Blend::new(&d.bundle, &d.reference, 0..d.stream.train_end, 400);
    let a = b.alpha(&mut predictor, &d.reference, active, cnn7, 1);
    assert!(a < 0.5, "alpha {a}");
    // The same frames with cnn7's output frozen: the held output is always right, the link is not.
    let mut frozen = (*d.reference).clone();
    let (off, size, stride) = (frozen.offset(cnn7), d.bundle.models[cnn7].size as usize, frozen.stride());
    let first: Vec<f32> = frozen.values[off..off + size].to_vec();
    for r in 0..frozen.len() {
        frozen.values[r * stride + off..r * stride + off + size].copy_from_slice(&first);
    }
    let mut b = Blend::new(&d.bundle, &frozen, 0..d.stream.train_end, 400);
    for age in [1, 5, 40] {
        assert_eq!(b.alpha(&mut predictor, &frozen, active, cnn7, age), 1.0, "age {age}");
    }
    // And the hold scores see the same: chance on the real outputs, 1 on the frozen ones.
    let kinds: Vec<_> = d.bundle.models.iter().map(|m| m.kind).collect();
    let tol: Vec<f32> = d.bundle.models.iter().map(|m| m.tolerance).collect();
    let real = HoldScores::measure(&d.reference, &kinds, &tol, 0..d.stream.train_end);
    let fixed = HoldScores::measure(&frozen, &kinds, &tol, 0..d.stream.train_end);
    for age in [1, 2, 8] {
        assert!(real.get(cnn7, age) < 0.2, "{}", real.get(cnn7, age));
        assert_eq!(fixed.get(cnn7, age), 1.0);
    }
}
