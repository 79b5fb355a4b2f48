//! The link MLP on flat `f32` slices: forward pass, output losses by kind, back-propagation and the
//! RMSprop update. Nothing here allocates; callers own every buffer ([`Scratch`], gradients).
//!
//! One link's parameter block (all row-major, contiguous, in this order):
//! ```text
//! mean[in]  inv_std[in]  W1[hidden][in]  b1[hidden]  W2[out][hidden]  b2[out]
//! ```
//! Forward: `x̂ = (x − mean)·inv_std`, `a = relu(W1·x̂ + b1)` (training: inverted dropout on `a`),
//! `z = W2·a + b2`, then the target kind's activation on `z` (see [`crate::links::activate`]).

use serde::{Deserialize, Serialize};

use super::Rng;
use super::tying::StepTie;
use crate::manifest::OutputKind;

/// Shape of one link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkDims {
    pub input: u32,
    pub hidden: u32,
    pub output: u32,
}

impl LinkDims {
    pub fn new(input: usize, hidden: usize, output: usize) -> LinkDims {
        LinkDims { input: input as u32, hidden: hidden as u32, output: output as u32 }
    }
    fn io(&self) -> (usize, usize, usize) {
        (self.input as usize, self.hidden as usize, self.output as usize)
    }
    /// Number of `f32` in the parameter block.
    pub fn len(&self) -> usize {
        let (i, h, o) = self.io();
        2 * i + h * i + h + o * h + o
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Offset of the first trainable value (W1); mean and inv_std come before it.
    pub fn trainable_start(&self) -> usize {
        2 * self.input as usize
    }
    /// Split a parameter block into (mean, inv_std, W1, b1, W2, b2).
    #[allow(clippy::type_complexity)]
    pub fn split<'a>(
        &self,
        p: &'a [f32],
    ) -> (&'a [f32], &'a [f32], &'a [f32], &'a [f32], &'a [f32], &'a [f32]) {
        let (i, h, o) = self.io();
        let (mean, r) = p.split_at(i);
        let (inv_std, r) = r.split_at(i);
        let (w1, r) = r.split_at(h * i);
        let (b1, r) = r.split_at(h);
        let (w2, b2) = r.split_at(o * h);
        (mean, inv_std, w1, b1, w2, &b2[..o])
    }
    #[allow(clippy::type_complexity)]
    fn split_mut<'a>(
        &self,
        p: &'a mut [f32],
    ) -> (&'a mut [f32], &'a mut [f32], &'a mut [f32], &'a mut [f32], &'a mut [f32], &'a mut [f32]) {
        let (i, h, o) = self.io();
        let (mean, r) = p.split_at_mut(i);
        let (inv_std, r) = r.split_at_mut(i);
        let (w1, r) = r.split_at_mut(h * i);
        let (b1, r) = r.split_at_mut(h);
        let (w2, b2) = r.split_at_mut(o * h);
        (mean, inv_std, w1, b1, w2, &mut b2[..o])
    }
}

/// Which loss a link or ensemble minimises; decided by the target kind (and the regression option).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Loss {
    /// Softmax cross-entropy against soft targets.
    CrossEntropy,
    /// Sigmoid binary cross-entropy, mean over elements.
    BinaryCrossEntropy,
    /// Mean squared error over elements.
    Mse,
    /// Mean absolute error over elements (also the L1 loss for boxes).
    Mae,
    /// Softmax cross-entropy per step of a `steps` × C sequence, mean over steps (`ctc` and
    /// `argmax` sequence targets).
    StepCrossEntropy { steps: u32 },
}

impl Loss {
    /// The loss for a target kind: CE (class), BCE (multilabel), L1 (box), and `regression` (MSE or
    /// MAE) for regression, count and embedding.
    pub fn for_kind(kind: OutputKind, regression: Loss) -> Loss {
        match kind {
            OutputKind::Class => Loss::CrossEntropy,
            OutputKind::Multilabel => Loss::BinaryCrossEntropy,
            OutputKind::Box => Loss::Mae,
            OutputKind::Sequence(q) if q.decode != crate::manifest::SeqDecode::Raw => {
                Loss::StepCrossEntropy { steps: q.steps }
            }
            _ => regression,
        }
    }
}

/// Loss of pre-activation `z` against target `t`, writing dL/dz into `dz`.
pub fn output_loss_grad(loss: Loss, z: &[f32], t: &[f32], dz: &mut [f32]) -> f32 {
    let n = z.len() as f32;
    match loss {
        Loss::StepCrossEntropy { steps } => {
            let t_steps = steps.max(1) as usize;
            let c = z.len() / t_steps;
            if c == 0 || c * t_steps != z.len() {
                return 0.0;
            }
            let mut l = 0.0;
            for ((zs, ts), ds) in z.chunks_exact(c).zip(t.chunks_exact(c)).zip(dz.chunks_exact_mut(c)) {
                l += output_loss_grad(Loss::CrossEntropy, zs, ts, ds);
            }
            let inv = 1.0 / t_steps as f32;
            dz.iter_mut().for_each(|d| *d *= inv);
            l * inv
        }
        Loss::CrossEntropy => {
            let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut s = 0.0f32;
            for (d, &v) in dz.iter_mut().zip(z) {
                *d = (v - m).exp();
                s += *d;
            }
            let lse = m + s.ln();
            let tsum: f32 = t.iter().sum();
            let mut l = 0.0;
            for ((d, &v), &ti) in dz.iter_mut().zip(z).zip(t) {
                l -= ti * (v - lse);
                *d = *d / s * tsum - ti;
            }
            l
        }
        Loss::BinaryCrossEntropy => {
            let mut l = 0.0;
            for ((d, &v), &ti) in dz.iter_mut().zip(z).zip(t) {
                // softplus(v) − t·v, stable for large |v|.
                l += v.max(0.0) + (-v.abs()).exp().ln_1p() - ti * v;
                *d = (super::sigmoid(v) - ti) / n;
            }
            l / n
        }
        Loss::Mse => {
            let mut l = 0.0;
            for ((d, &v), &ti) in dz.iter_mut().zip(z).zip(t) {
                let e = v - ti;
                l += e * e;
                *d = 2.0 * e / n;
            }
            l / n
        }
        Loss::Mae => {
            let mut l = 0.0;
            for ((d, &v), &ti) in dz.iter_mut().zip(z).zip(t) {
                let e = v - ti;
                l += e.abs();
                *d = if e > 0.0 {
                    1.0 / n
                } else if e < 0.0 {
                    -1.0 / n
                } else {
                    0.0
                };
            }
            l / n
        }
    }
}

/// Per-link working buffers, sized for the largest link that will use them.
#[derive(Clone, Debug)]
pub struct Scratch {
    pub(crate) xn: Vec<f32>,
    pub(crate) a: Vec<f32>,
    keep: Vec<f32>,
    z: Vec<f32>,
    dz: Vec<f32>,
}

impl Scratch {
    pub fn new(max_input: usize, max_hidden: usize, max_output: usize) -> Scratch {
        Scratch {
            xn: vec![0.0; max_input],
            a: vec![0.0; max_hidden],
            keep: vec![0.0; max_hidden],
            z: vec![0.0; max_output],
            dz: vec![0.0; max_output],
        }
    }
    pub fn for_dims(d: LinkDims) -> Scratch {
        Scratch::new(d.input as usize, d.hidden as usize, d.output as usize)
    }
}

/// Dot product with eight independent accumulators, so the compiler can vectorise it (a single
/// running sum is a serial dependency chain in IEEE arithmetic). Summation order: lane i takes
/// elements i, i+8, …; lanes are combined pairwise, then the tail is added.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Inference: pre-activation output `z` of one link for input `x`.
#[inline]
pub fn forward(d: LinkDims, p: &[f32], x: &[f32], xn: &mut [f32], a: &mut [f32], z: &mut [f32]) {
    let (ni, nh, no) = d.io();
    let (mean, inv_std, w1, b1, w2, b2) = d.split(p);
    let (xn, a, z) = (&mut xn[..ni], &mut a[..nh], &mut z[..no]);
    for k in 0..ni {
        xn[k] = (x[k] - mean[k]) * inv_std[k];
    }
    for h in 0..nh {
        a[h] = (b1[h] + dot(&w1[h * ni..(h + 1) * ni], xn)).max(0.0);
    }
    for o in 0..no {
        z[o] = b2[o] + dot(&w2[o * nh..(o + 1) * nh], a);
    }
}

/// Training step for one sample: forward (with inverted dropout of rate `dropout` when `rng` is
/// given), loss against `t`, and `scale`·gradient added into `g` (same layout as `p`). Returns the
/// sample's loss. With `z_out`, the pre-activation output is also copied there.
#[allow(clippy::too_many_arguments)]
pub fn accumulate_grad(
    d: LinkDims,
    p: &[f32],
    loss: Loss,
    x: &[f32],
    t: &[f32],
    scale: f32,
    dropout: Option<(&mut Rng, f32)>,
    s: &mut Scratch,
    g: &mut [f32],
) -> f32 {
    let (ni, nh, no) = d.io();
    let (mean, inv_std, w1, b1, w2, b2) = d.split(p);
    let xn = &mut s.xn[..ni];
    let a = &mut s.a[..nh];
    let keep = &mut s.keep[..nh];
    let z = &mut s.z[..no];
    let dz = &mut s.dz[..no];
    for k in 0..ni {
        xn[k] = (x[k] - mean[k]) * inv_std[k];
    }
    match dropout {
        Some((rng, rate)) if rate > 0.0 => {
            let inv = 1.0 / (1.0 - rate);
            for kh in keep.iter_mut() {
                *kh = if rng.f32() < rate { 0.0 } else { inv };
            }
        }
        _ => keep.fill(1.0),
    }
    for h in 0..nh {
        a[h] = (b1[h] + dot(&w1[h * ni..(h + 1) * ni], xn)).max(0.0) * keep[h];
    }
    for o in 0..no {
        z[o] = b2[o] + dot(&w2[o * nh..(o + 1) * nh], a);
    }
    let l = output_loss_grad(loss, z, t, dz);
    let (_, _, gw1, gb1, gw2, gb2) = d.split_mut(g);
    for o in 0..no {
        let dzo = dz[o] * scale;
        gb2[o] += dzo;
        let grow = &mut gw2[o * nh..(o + 1) * nh];
        for h in 0..nh {
            grow[h] += dzo * a[h];
        }
    }
    for h in 0..nh {
        if a[h] <= 0.0 {
            continue;
        }
        let mut da = 0.0;
        for o in 0..no {
            da += w2[o * nh + h] * dz[o];
        }
        let da = da * keep[h] * scale;
        gb1[h] += da;
        let grow = &mut gw1[h * ni..(h + 1) * ni];
        for k in 0..ni {
            grow[k] += da * xn[k];
        }
    }
    l
}

/// RMSprop hyper-parameters (Keras defaults besides the learning rate).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RmsProp {
    pub lr: f32,
    pub rho: f32,
    pub eps: f32,
}

impl RmsProp {
    pub fn new(lr: f32) -> RmsProp {
        RmsProp { lr, rho: 0.9, eps: 1e-7 }
    }
    /// `v ← ρv + (1−ρ)g²; p ← p − lr·g/(√v + ε)` over the given slices.
    #[inline]
    pub fn step(&self, p: &mut [f32], g: &[f32], v: &mut [f32]) {
        for ((pi, &gi), vi) in p.iter_mut().zip(g).zip(v.iter_mut()) {
            *vi = self.rho * *vi + (1.0 - self.rho) * gi * gi;
            *pi -= self.lr * gi / (vi.sqrt() + self.eps);
        }
    }
}

/// Glorot-uniform weights, zero first-layer bias, `b2` from `b2_init`; mean/inv_std given.
pub fn init_params(d: LinkDims, mean: &[f32], inv_std: &[f32], b2_init: &[f32], rng: &mut Rng) -> Vec<f32> {
    let (ni, nh, no) = d.io();
    let mut p = vec![0.0; d.len()];
    let (m, s, w1, _b1, w2, b2) = d.split_mut(&mut p);
    m.copy_from_slice(mean);
    s.copy_from_slice(inv_std);
    let a1 = (6.0 / (ni + nh) as f32).sqrt();
    w1.iter_mut().for_each(|w| *w = rng.symmetric(a1));
    let a2 = (6.0 / (nh + no) as f32).sqrt();
    w2.iter_mut().for_each(|w| *w = rng.symmetric(a2));
    b2.copy_from_slice(b2_init);
    p
}

/// Fold a target standardisation into a trained link: the link was trained to output
/// `(y − mean)·inv_std`; afterwards it outputs `y` (row `o` of W2 and b2[o] scaled by sd = 1/inv_std,
/// then mean added to b2). An element with `inv_std` 0 (constant in training) becomes that constant.
pub fn fold_output_scale(d: LinkDims, p: &mut [f32], mean: &[f32], inv_std: &[f32]) {
    let (_, nh, no) = d.io();
    let (_, _, _, _, w2, b2) = d.split_mut(p);
    for o in 0..no {
        let sd = if inv_std[o] > 0.0 { 1.0 / inv_std[o] } else { 0.0 };
        w2[o * nh..(o + 1) * nh].iter_mut().for_each(|w| *w *= sd);
        b2[o] = b2[o] * sd + mean[o];
    }
}

/// Settings of one link's training run.
#[derive(Clone, Copy, Debug)]
pub struct FitSettings {
    pub loss: Loss,
    pub epochs: usize,
    pub batch: usize,
    pub dropout: f32,
    pub opt: RmsProp,
}

/// Train one link in place on rows `rows` of `x` (`rows × d.input`) and `t` (`rows × d.output`).
/// With `tie`, every batch's gradient is tied first ([`StepTie::tie_gradient`]), so a link whose
/// weights start tied stays tied.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    d: LinkDims,
    p: &mut [f32],
    x: &[f32],
    t: &[f32],
    rows: &[usize],
    cfg: &FitSettings,
    rng: &mut Rng,
    tie: Option<&StepTie>,
) {
    let (ni, _, no) = d.io();
    let mut order = rows.to_vec();
    let mut g = vec![0.0; d.len()];
    let mut v = vec![0.0; d.len()];
    let mut s = Scratch::for_dims(d);
    let ts = d.trainable_start();
    for _ in 0..cfg.epochs {
        rng.shuffle(&mut order);
        for chunk in order.chunks(cfg.batch.max(1)) {
            g[ts..].fill(0.0);
            let scale = 1.0 / chunk.len() as f32;
            for &r in chunk {
                accumulate_grad(
                    d,
                    p,
                    cfg.loss,
                    &x[r * ni..(r + 1) * ni],
                    &t[r * no..(r + 1) * no],
                    scale,
                    Some((&mut *rng, cfg.dropout)),
                    &mut s,
                    &mut g,
                );
            }
            if let Some(tie) = tie {
                tie.tie_gradient(&mut g);
            }
            cfg.opt.step(&mut p[ts..], &g[ts..], &mut v[ts..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central finite differences (in f64 around f32 parameters) against the analytic gradient,
    /// for every activation/loss pair, dropout off.
    fn check(loss: Loss, target: &[f32]) {
        let d = LinkDims::new(5, 7, target.len());
        let mut rng = Rng::new(11);
        let mean: Vec<f32> = (0..5).map(|_| rng.symmetric(0.5)).collect();
        let inv: Vec<f32> = (0..5).map(|_| 0.5 + rng.f32()).collect();
        let b2: Vec<f32> = (0..d.output).map(|_| rng.symmetric(0.3)).collect();
        let mut p = init_params(d, &mean, &inv, &b2, &mut rng);
        // Non-zero first-layer bias so few ReLUs sit at the kink.
        let ts = d.trainable_start() + 35;
        for v in &mut p[ts..ts + 7] {
            *v = rng.symmetric(0.5);
        }
        let x: Vec<f32> = (0..5).map(|_| rng.symmetric(2.0)).collect();
        let mut s = Scratch::for_dims(d);
        let mut g = vec![0.0; d.len()];
        accumulate_grad(d, &p, loss, &x, target, 1.0, None, &mut s, &mut g);
        let lossf = |p: &[f32]| -> f64 {
            let mut s = Scratch::for_dims(d);
            let mut g = vec![0.0; d.len()];
            accumulate_grad(d, p, loss, &x, target, 1.0, None, &mut s, &mut g) as f64
        };
        let eps = 1e-2f32;
        let mut worst = 0.0f64;
        for k in d.trainable_start()..d.len() {
            let mut pp = p.clone();
            pp[k] += eps;
            let lp = lossf(&pp);
            pp[k] -= 2.0 * eps;
            let lm = lossf(&pp);
            let num = (lp - lm) / (2.0 * eps as f64);
            let err = (num - g[k] as f64).abs() / (1e-2 + num.abs().max(g[k].abs() as f64));
            worst = worst.max(err);
        }
        assert!(worst < 2e-2, "{loss:?}: worst relative gradient error {worst}");
    }

    #[test]
    fn gradients_match_finite_differences() {
        check(Loss::CrossEntropy, &[0.1, 0.6, 0.3]);
        check(Loss::StepCrossEntropy { steps: 2 }, &[0.1, 0.6, 0.3, 0.5, 0.25, 0.25]);
        check(Loss::BinaryCrossEntropy, &[0.0, 1.0, 0.7, 0.2]);
        check(Loss::Mse, &[0.3, -1.2, 2.0]);
        // MAE/L1: targets far from the outputs so no element sits at the kink.
        check(Loss::Mae, &[5.0, -5.0, 4.0, -4.0]);
    }

    #[test]
    fn folded_scale_predicts_raw_values() {
        let d = LinkDims::new(3, 4, 2);
        let mut rng = Rng::new(9);
        let mut p = init_params(d, &[0.0; 3], &[1.0; 3], &[0.2, -0.3], &mut rng);
        let x = [0.3, -0.2, 0.9];
        let (mut xn, mut a, mut z) = ([0.0; 3], [0.0; 4], [0.0; 2]);
        forward(d, &p, &x, &mut xn, &mut a, &mut z);
        let (mean, inv_std) = ([5.0, -1.0], [4.0, 0.0]);
        fold_output_scale(d, &mut p, &mean, &inv_std);
        let mut raw = [0.0; 2];
        forward(d, &p, &x, &mut xn, &mut a, &mut raw);
        assert!((raw[0] - (z[0] / 4.0 + 5.0)).abs() < 1e-5, "{raw:?} from {z:?}");
        assert_eq!(raw[1], -1.0);
    }

    #[test]
    fn forward_matches_training_forward() {
        let d = LinkDims::new(3, 4, 2);
        let mut rng = Rng::new(3);
        let p = init_params(d, &[0.0; 3], &[1.0; 3], &[0.1, -0.1], &mut rng);
        let x = [0.3, -0.2, 0.9];
        let (mut xn, mut a, mut z) = ([0.0; 3], [0.0; 4], [0.0; 2]);
        forward(d, &p, &x, &mut xn, &mut a, &mut z);
        let mut s = Scratch::for_dims(d);
        let mut g = vec![0.0; d.len()];
        accumulate_grad(d, &p, Loss::Mse, &x, &[0.0, 0.0], 1.0, None, &mut s, &mut g);
        assert_eq!(&s.z[..2], &z);
    }

    #[test]
    fn fit_learns_a_mapping() {
        let d = LinkDims::new(2, 16, 1);
        let mut rng = Rng::new(5);
        let n = 400;
        let x: Vec<f32> = (0..2 * n).map(|_| rng.symmetric(1.0)).collect();
        let t: Vec<f32> = (0..n).map(|r| x[2 * r] - 2.0 * x[2 * r + 1]).collect();
        let mut p = init_params(d, &[0.0; 2], &[1.0; 2], &[0.0], &mut rng);
        let rows: Vec<usize> = (0..n).collect();
        let cfg =
            FitSettings { loss: Loss::Mse, epochs: 60, batch: 32, dropout: 0.0, opt: RmsProp::new(0.01) };
        fit(d, &mut p, &x, &t, &rows, &cfg, &mut rng, None);
        let (mut xn, mut a, mut z) = ([0.0; 2], [0.0; 16], [0.0; 1]);
        let mut err = 0.0;
        for r in 0..n {
            forward(d, &p, &x[2 * r..2 * r + 2], &mut xn, &mut a, &mut z);
            err += (z[0] - t[r]).powi(2);
        }
        assert!(err / (n as f32) < 0.02, "mse {}", err / n as f32);
    }
}
