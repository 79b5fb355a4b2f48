//! The per-target ensemble h_{A,j}: learned weights over the concatenated pre-activation link
//! predictions into target j, restricted to the available sources A, then j's activation.
//!
//! One dense layer over the concatenation would have to serve every subset with the same weights;
//! measured on the synthetic workload it fell below the best single link (shade: 0.38 against 0.90)
//! because it cannot lean on a strong source when present and on the others when not. So the
//! layer is block-structured: each source slot s has its own dense block `W_s` (out × out), and the
//! blocks are mixed by per-output source weights renormalised over the available sources:
//! `y[o] = b[o] + Σ_{s∈A} w_{s,o}·(W_s·z_s)[o]`, `w_{·,o} = softmax over s∈A of α[s][o]`.
//! With A empty, y = b (the prior).
//!
//! Parameter block of one target (row-major, contiguous), k = n − 1 source slots (the other models in
//! model order), out = |Y_j|: `W[k][out][out]`, then `α[k][out]`, then `b[out]`. Initialised to
//! identity blocks, α = 0, b = 0: the plain mean of the available links. Trained with random source
//! subsets (each slot present with probability ½), so the one parameter set serves every subset.

use crate::model_set::ModelSet;
use serde::{Deserialize, Serialize};

use super::Rng;
use super::mlp::{Loss, RmsProp, dot, output_loss_grad};

/// Shape of one target's ensemble.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnsembleDims {
    /// Source slots (n − 1).
    pub sources: u32,
    /// Output size of the target.
    pub output: u32,
}

impl EnsembleDims {
    fn ko(&self) -> (usize, usize) {
        (self.sources as usize, self.output as usize)
    }
    /// Offset of α in the block.
    pub fn alpha_start(&self) -> usize {
        let (k, o) = self.ko();
        k * o * o
    }
    /// Offset of b in the block.
    pub fn bias_start(&self) -> usize {
        let (k, o) = self.ko();
        k * o * o + k * o
    }
    pub fn len(&self) -> usize {
        self.bias_start() + self.output as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Identity blocks, α = 0, b = 0: the mean of the available links.
pub fn init_params(d: EnsembleDims) -> Vec<f32> {
    let (k, no) = d.ko();
    let mut p = vec![0.0; d.len()];
    for s in 0..k {
        for o in 0..no {
            p[(s * no + o) * no + o] = 1.0;
        }
    }
    p
}

/// Pre-activation ensemble output `y` from slot outputs `z` (`k·out`, absent slots ignored) and slot
/// mask `mask` (bit s = slot s available). `u` is scratch of length `k·out` (per-slot block outputs).
#[inline]
pub fn forward(d: EnsembleDims, p: &[f32], z: &[f32], mask: ModelSet, u: &mut [f32], y: &mut [f32]) {
    let (k, no) = d.ko();
    let (alpha, b) = (&p[d.alpha_start()..d.bias_start()], &p[d.bias_start()..d.len()]);
    for s in 0..k {
        if !mask.contains(s) {
            continue;
        }
        let w = &p[s * no * no..(s + 1) * no * no];
        let zs = &z[s * no..(s + 1) * no];
        for o in 0..no {
            u[s * no + o] = dot(&w[o * no..(o + 1) * no], zs);
        }
    }
    for o in 0..no {
        let mut m = f32::NEG_INFINITY;
        for s in 0..k {
            if mask.contains(s) {
                m = m.max(alpha[s * no + o]);
            }
        }
        let (mut num, mut den) = (0.0, 0.0);
        for s in 0..k {
            if mask.contains(s) {
                let e = (alpha[s * no + o] - m).exp();
                num += e * u[s * no + o];
                den += e;
            }
        }
        y[o] = b[o] + if den > 0.0 { num / den } else { 0.0 };
    }
}

/// One sample: forward, loss against `t`, `scale_g`·gradient added into `g`. `u` (`k·out`), `y`, `dy`
/// (`out`) are scratch. Returns the loss.
#[allow(clippy::too_many_arguments)]
pub fn accumulate_grad(
    d: EnsembleDims,
    p: &[f32],
    loss: Loss,
    z: &[f32],
    mask: ModelSet,
    t: &[f32],
    scale_g: f32,
    u: &mut [f32],
    y: &mut [f32],
    dy: &mut [f32],
    g: &mut [f32],
) -> f32 {
    let (k, no) = d.ko();
    forward(d, p, z, mask, u, y);
    let l = output_loss_grad(loss, &y[..no], t, &mut dy[..no]);
    let (a0, b0) = (d.alpha_start(), d.bias_start());
    for o in 0..no {
        let dyo = dy[o] * scale_g;
        g[b0 + o] += dyo;
        let mut m = f32::NEG_INFINITY;
        for s in 0..k {
            if mask.contains(s) {
                m = m.max(p[a0 + s * no + o]);
            }
        }
        let mut den = 0.0;
        for s in 0..k {
            if mask.contains(s) {
                den += (p[a0 + s * no + o] - m).exp();
            }
        }
        let mix = y[o] - p[b0 + o];
        for s in 0..k {
            if !mask.contains(s) {
                continue;
            }
            let w = (p[a0 + s * no + o] - m).exp() / den;
            g[a0 + s * no + o] += dyo * w * (u[s * no + o] - mix);
            let zs = &z[s * no..(s + 1) * no];
            let grow = &mut g[(s * no + o) * no..(s * no + o + 1) * no];
            for dd in 0..no {
                grow[dd] += dyo * w * zs[dd];
            }
        }
    }
    l
}

/// The block of a head for exactly the source slots `slots`, cut from a full block `p` of dims `d`:
/// the blocks `W_s` and weights `α[s]` of those slots, in slot order, then `b`. With the slots'
/// outputs gathered in the same order ([`gather`]) it predicts what `p` predicts with `slots`.
pub fn compact(d: EnsembleDims, p: &[f32], slots: ModelSet) -> Vec<f32> {
    let no = d.output as usize;
    let c = EnsembleDims { sources: slots.len() as u32, output: d.output };
    let mut q = Vec::with_capacity(c.len());
    for s in slots {
        q.extend_from_slice(&p[s * no * no..(s + 1) * no * no]);
    }
    for s in slots {
        q.extend_from_slice(&p[d.alpha_start() + s * no..d.alpha_start() + (s + 1) * no]);
    }
    q.extend_from_slice(&p[d.bias_start()..d.len()]);
    q
}

/// Copy the outputs of the slots in `slots` from `z` (every slot, `k·out`) into `into`, in slot
/// order (the input of a [`compact`] head).
#[inline]
pub fn gather(no: usize, z: &[f32], slots: ModelSet, into: &mut [f32]) {
    for (c, s) in slots.iter().enumerate() {
        into[c * no..(c + 1) * no].copy_from_slice(&z[s * no..(s + 1) * no]);
    }
}

/// Fit an ensemble on rows of `z` (`rows × k·out`, link predictions, ideally out-of-fold) against
/// targets `t` (`rows × out`): with `slots` `None` the shared head, drawing a random source subset
/// per sample; with `Some(set)`, a head for exactly that set of source slots.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    d: EnsembleDims,
    p: &mut [f32],
    loss: Loss,
    z: &[f32],
    t: &[f32],
    rows: &[usize],
    epochs: usize,
    batch: usize,
    opt: RmsProp,
    rng: &mut Rng,
    slots: Option<ModelSet>,
) {
    let (k, no) = (d.sources as usize, d.output as usize);
    let width = k * no;
    let mut order = rows.to_vec();
    let mut g = vec![0.0; d.len()];
    let mut v = vec![0.0; d.len()];
    let (mut u, mut y, mut dy) = (vec![0.0; k * no], vec![0.0; no], vec![0.0; no]);
    for _ in 0..epochs {
        rng.shuffle(&mut order);
        for chunk in order.chunks(batch.max(1)) {
            g.fill(0.0);
            let sc = 1.0 / chunk.len() as f32;
            for &r in chunk {
                let mask = match slots {
                    Some(s) => s,
                    None => ModelSet::from_bits(rng.next_u64() as u16) & ModelSet::all(k),
                };
                accumulate_grad(
                    d,
                    p,
                    loss,
                    &z[r * width..(r + 1) * width],
                    mask,
                    &t[r * no..(r + 1) * no],
                    sc,
                    &mut u,
                    &mut y,
                    &mut dy,
                    &mut g,
                );
            }
            if let Loss::StepCrossEntropy { steps } = loss {
                within_steps(d, steps as usize, &mut g);
            }
            opt.step(p, &g, &mut v);
        }
    }
}

/// Zero the entries of every slot's block `W_s` that mix values of different steps of a sequence
/// target (`steps` steps of out / steps values): a block that starts within its steps (the
/// identity) stays so. A sequence's steps are the same kind of value at different places, and a
/// dense out × out block learns from a few hundred rows which place predicts which; measured on
/// `demo-seq` it overfits (docs/sequences.md).
fn within_steps(d: EnsembleDims, steps: usize, g: &mut [f32]) {
    let (k, no) = d.ko();
    if steps == 0 || no % steps != 0 {
        return;
    }
    let c = no / steps;
    for s in 0..k {
        for o in 0..no {
            let row = &mut g[(s * no + o) * no..(s * no + o + 1) * no];
            let (lo, hi) = (o / c * c, o / c * c + c);
            row[..lo].fill(0.0);
            row[hi..].fill(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_mean_over_available_sources() {
        let d = EnsembleDims { sources: 3, output: 2 };
        let p = init_params(d);
        let z = [1.0, 2.0, 3.0, 4.0, 100.0, 100.0];
        let (mut u, mut y) = ([0.0; 6], [0.0; 2]);
        forward(d, &p, &z, ModelSet::from_bits(0b011), &mut u, &mut y);
        assert!((y[0] - 2.0).abs() < 1e-5 && (y[1] - 3.0).abs() < 1e-5, "{y:?}");
        forward(d, &p, &z, ModelSet::EMPTY, &mut u, &mut y);
        assert_eq!(y, [0.0, 0.0]);
    }

    #[test]
    fn a_compact_head_predicts_what_the_full_block_does_with_its_slots() {
        let d = EnsembleDims { sources: 4, output: 3 };
        let mut rng = Rng::new(3);
        let p: Vec<f32> = (0..d.len()).map(|_| rng.symmetric(1.0)).collect();
        let z: Vec<f32> = (0..12).map(|_| rng.symmetric(2.0)).collect();
        let slots = ModelSet::from_bits(0b1010);
        let (mut u, mut y) = ([0.0; 12], [0.0; 3]);
        forward(d, &p, &z, slots, &mut u, &mut y);
        let c = EnsembleDims { sources: 2, output: 3 };
        let q = compact(d, &p, slots);
        assert_eq!(q.len(), c.len());
        let mut zc = [0.0; 6];
        gather(3, &z, slots, &mut zc);
        let mut yc = [0.0; 3];
        forward(c, &q, &zc, ModelSet::all(2), &mut u, &mut yc);
        assert_eq!(y, yc);
    }

    #[test]
    fn gradients_match_finite_differences() {
        for (loss, t) in [
            (Loss::CrossEntropy, vec![0.2, 0.5, 0.3]),
            (Loss::BinaryCrossEntropy, vec![1.0, 0.0, 0.4]),
            (Loss::Mse, vec![0.5, -0.5, 1.5]),
            (Loss::Mae, vec![9.0, -9.0, 9.0]),
        ] {
            let d = EnsembleDims { sources: 3, output: 3 };
            let mut rng = Rng::new(9);
            let p: Vec<f32> = (0..d.len()).map(|_| rng.symmetric(0.5)).collect();
            let z: Vec<f32> = (0..9).map(|_| rng.symmetric(2.0)).collect();
            let mask = ModelSet::from_bits(0b101);
            let (mut u, mut y, mut dy) = ([0.0; 9], [0.0; 3], [0.0; 3]);
            let mut g = vec![0.0; d.len()];
            accumulate_grad(d, &p, loss, &z, mask, &t, 1.0, &mut u, &mut y, &mut dy, &mut g);
            let eps = 1e-2;
            for i in 0..d.len() {
                let mut pp = p.clone();
                let mut gg = vec![0.0; d.len()];
                pp[i] += eps;
                let lp =
                    accumulate_grad(d, &pp, loss, &z, mask, &t, 1.0, &mut u, &mut y, &mut dy, &mut gg) as f64;
                pp[i] -= 2.0 * eps;
                let lm =
                    accumulate_grad(d, &pp, loss, &z, mask, &t, 1.0, &mut u, &mut y, &mut dy, &mut gg) as f64;
                let num = (lp - lm) / (2.0 * eps as f64);
                let err = (num - g[i] as f64).abs() / (1e-2 + num.abs().max(g[i].abs() as f64));
                assert!(err < 2e-2, "{loss:?} param {i}: numeric {num} analytic {}", g[i]);
            }
        }
    }

    /// A sequence target's blocks only ever mix values within a step: fitted from the identity,
    /// every entry across steps stays zero, and the fit still moves the entries within a step.
    #[test]
    fn sequence_blocks_stay_within_their_steps() {
        let (steps, c) = (3usize, 2usize);
        let d = EnsembleDims { sources: 2, output: (steps * c) as u32 };
        let no = steps * c;
        let mut rng = Rng::new(5);
        let rows = 40;
        let z: Vec<f32> = (0..rows * 2 * no).map(|_| rng.symmetric(2.0)).collect();
        let t: Vec<f32> = (0..rows)
            .flat_map(|r| {
                (0..steps).flat_map(move |s| if (r + s) % 2 == 0 { [1.0, 0.0] } else { [0.0, 1.0] })
            })
            .collect();
        let mut p = init_params(d);
        let order: Vec<usize> = (0..rows).collect();
        let loss = Loss::StepCrossEntropy { steps: steps as u32 };
        fit(d, &mut p, loss, &z, &t, &order, 5, 8, RmsProp::new(0.01), &mut rng, None);
        let mut moved = false;
        for s in 0..2 {
            for o in 0..no {
                for i in 0..no {
                    let w = p[(s * no + o) * no + i];
                    if o / c != i / c {
                        assert_eq!(w, 0.0, "slot {s}: entry ({o}, {i}) mixes steps");
                    } else {
                        moved |= w != if o == i { 1.0 } else { 0.0 };
                    }
                }
            }
        }
        assert!(moved, "the fit changed nothing within the steps");
    }
}
