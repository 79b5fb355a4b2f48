//! Position-tied links between two symbol sequences (`ctc` or `argmax` on both sides): the k-th
//! symbol of the target is read from the k-th symbol of the source by one small map shared by
//! every position. The link is stored and run as the ordinary dense link ([`super::mlp`]); the
//! tying is a constraint on its weights while it is trained, so the predictor, the kernels, the
//! bundle, adaptation and fleet averaging treat it as any link.
//!
//! Measured on `demo-seq` (docs/sequences.md): a dense link from one reader's 6 positions to the
//! recogniser's 38 × 12 values has to learn each position's map separately from 800 rows and
//! overfits; a copy of the other reader's string, position by position, already agrees more
//! often. With the map shared, each row teaches it as many examples as the string has symbols.
//!
//! Layout of a tied link with `K` positions and `h` hidden units per position (hidden = K·h):
//! hidden units `k·h..(k+1)·h` read only source position k's C_s values (W1, one block shared by
//! every k; b1 shared likewise) and write only target position k's C_t values (W2, one block
//! shared by every k). Everything else in W1 and W2 is zero and stays zero during training; the
//! output bias b2 is free per value, so the steps between and after the positions (the blanks of a
//! `ctc` target) and a position's own prior are learnt as they are by a dense link.

use super::mlp::LinkDims;
use crate::manifest::{OutputKind, SeqDecode};

/// Where a sequence's symbols sit in the row a link reads or writes: position k at step
/// `stride·k`, `per_step` values per step, `positions` positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Symbols {
    stride: usize,
    per_step: usize,
    positions: usize,
}

impl Symbols {
    /// A `ctc` sequence as links see it (its canonical alignment, [`super::ctc_canonical`]: symbol
    /// k at step 2k) or an `argmax` sequence (one symbol per step); `raw` and other kinds have none.
    fn of(kind: OutputKind, size: usize) -> Option<Symbols> {
        let q = kind.seq()?;
        let steps = q.steps as usize;
        let per_step = super::per_step(q, size)?;
        match q.decode {
            SeqDecode::Ctc => Some(Symbols { stride: 2, per_step, positions: steps.div_ceil(2) }),
            SeqDecode::Argmax => Some(Symbols { stride: 1, per_step, positions: steps }),
            SeqDecode::Raw => None,
        }
    }

    /// Offset of position k's first value.
    fn at(&self, k: usize) -> usize {
        self.stride * k * self.per_step
    }
}

/// The tying of one link: positions, hidden units per position, and where the positions sit in
/// the source and the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepTie {
    src: Symbols,
    tgt: Symbols,
    positions: usize,
    per_position: usize,
    input: usize,
    output: usize,
}

impl StepTie {
    /// The tying of a link from `source` (`source_size` values) into `target`, with
    /// `per_position` hidden units per position; `None` unless both are `ctc` or `argmax`
    /// sequences.
    pub fn between(
        source: OutputKind,
        source_size: usize,
        target: OutputKind,
        target_size: usize,
        per_position: usize,
    ) -> Option<StepTie> {
        let (src, tgt) = (Symbols::of(source, source_size)?, Symbols::of(target, target_size)?);
        let positions = src.positions.min(tgt.positions);
        (positions > 0 && per_position > 0).then_some(StepTie {
            src,
            tgt,
            positions,
            per_position,
            input: source_size,
            output: target_size,
        })
    }

    /// Positions tied: the fewer of the source's and the target's symbols.
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// The same tying with `per_position` hidden units per position (at least 1).
    pub fn with_width(self, per_position: usize) -> StepTie {
        StepTie { per_position: per_position.max(1), ..self }
    }

    /// The dense link that holds it.
    pub fn dims(&self) -> LinkDims {
        LinkDims::new(self.input, self.positions * self.per_position, self.output)
    }

    /// Tie a gradient (or an update) over a parameter block of [`dims`](Self::dims): each shared
    /// value gets the sum of its copies' gradients, every copy the same, and everything outside
    /// the blocks zero. The gradient of the loss with respect to the shared weights, so a step
    /// along it keeps tied weights tied and zero weights zero. `mean` and `inv_std` untouched.
    pub fn tie_gradient(&self, g: &mut [f32]) {
        self.tie(g, false, &mut vec![0.0; self.scratch_len()]);
    }

    /// [`tie_gradient`](Self::tie_gradient) with the caller's workspace (at least
    /// [`scratch_len`](Self::scratch_len) values), allocating nothing: on-line adaptation keeps a
    /// tied link tied this way.
    pub fn tie_gradient_in(&self, g: &mut [f32], scratch: &mut [f32]) {
        self.tie(g, false, scratch);
    }

    /// Values of workspace [`tie_gradient_in`](Self::tie_gradient_in) needs: the shared blocks.
    pub fn scratch_len(&self) -> usize {
        let (h, cs, ct) = (self.per_position, self.src.per_step, self.tgt.per_step);
        h * cs + h + ct * h
    }

    /// Make a freshly initialised block tied: position 0's blocks copied to every position, the
    /// rest of W1 and W2 zero.
    pub fn tie_params(&self, p: &mut [f32]) {
        self.tie(p, true, &mut vec![0.0; self.scratch_len()]);
    }

    /// Whether the parameter block `p` (of [`dims`](Self::dims)) holds this tying: every copy of
    /// a shared value equal, everything outside the blocks zero.
    pub fn holds(&self, p: &[f32]) -> bool {
        let d = self.dims();
        if p.len() != d.len() {
            return false;
        }
        let mut q = p.to_vec();
        self.tie_params(&mut q);
        q == p
    }

    fn tie(&self, g: &mut [f32], first: bool, scratch: &mut [f32]) {
        let d = self.dims();
        let (ni, nh, no) = (d.input as usize, d.hidden as usize, d.output as usize);
        let (h, cs, ct, kk) = (self.per_position, self.src.per_step, self.tgt.per_step, self.positions);
        let start = d.trainable_start();
        let (w1, r) = g[start..d.len()].split_at_mut(nh * ni);
        let (b1, r) = r.split_at_mut(nh);
        let (w2, _b2) = r.split_at_mut(no * nh);
        // The shared value of one tied family: the first copy's, or the sum of all.
        let shared = |vals: &mut dyn Iterator<Item = f32>| -> f32 {
            if first { vals.next().unwrap_or(0.0) } else { vals.sum() }
        };
        let (s1, r) = scratch[..self.scratch_len()].split_at_mut(h * cs);
        let (sb, s2) = r.split_at_mut(h);
        for u in 0..h {
            for c in 0..cs {
                s1[u * cs + c] = shared(&mut (0..kk).map(|k| w1[(k * h + u) * ni + self.src.at(k) + c]));
            }
        }
        for (u, v) in sb.iter_mut().enumerate() {
            *v = shared(&mut (0..kk).map(|k| b1[k * h + u]));
        }
        for c in 0..ct {
            for u in 0..h {
                s2[c * h + u] = shared(&mut (0..kk).map(|k| w2[(self.tgt.at(k) + c) * nh + k * h + u]));
            }
        }
        w1.fill(0.0);
        w2.fill(0.0);
        for k in 0..kk {
            for u in 0..h {
                let row = (k * h + u) * ni + self.src.at(k);
                w1[row..row + cs].copy_from_slice(&s1[u * cs..(u + 1) * cs]);
                b1[k * h + u] = sb[u];
            }
            for c in 0..ct {
                let row = (self.tgt.at(k) + c) * nh + k * h;
                w2[row..row + h].copy_from_slice(&s2[c * h..(c + 1) * h]);
            }
        }
    }

    /// Replace the per-value input normalisation of the read values by one pooled over the
    /// positions (value c of every position shares a mean and a scale), so that the shared map
    /// sees every position on the same scale. `mean` and `inv_std` are a link's first two slices;
    /// a scale of 0 marks a value that was constant (then read as 0).
    pub fn pool_normalisation(&self, mean: &mut [f32], inv_std: &mut [f32]) {
        let (cs, kk) = (self.src.per_step, self.positions);
        for c in 0..cs {
            let (mut m, mut m2) = (0.0f64, 0.0f64);
            for k in 0..kk {
                let e = self.src.at(k) + c;
                let (mu, is) = (mean[e] as f64, inv_std[e] as f64);
                let var = if is > 0.0 { 1.0 / (is * is) } else { 0.0 };
                m += mu;
                m2 += var + mu * mu;
            }
            let (m, m2) = (m / kk as f64, m2 / kk as f64);
            let sd = (m2 - m * m).max(0.0).sqrt();
            let inv = if sd < 1e-6 { 0.0 } else { (1.0 / sd) as f32 };
            for k in 0..kk {
                let e = self.src.at(k) + c;
                mean[e] = m as f32;
                inv_std[e] = inv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::Rng;
    use crate::links::mlp::{self, FitSettings, Loss, RmsProp, Scratch};
    use crate::manifest::SeqShape;

    fn argmax_seq(steps: u32) -> OutputKind {
        OutputKind::Sequence(SeqShape { steps, decode: SeqDecode::Argmax })
    }
    fn ctc_seq(steps: u32) -> OutputKind {
        OutputKind::Sequence(SeqShape { steps, decode: SeqDecode::Ctc })
    }

    #[test]
    fn only_symbol_sequences_are_tied() {
        assert!(StepTie::between(argmax_seq(3), 12, ctc_seq(7), 35, 4).is_some());
        assert!(StepTie::between(OutputKind::Class, 4, ctc_seq(7), 35, 4).is_none());
        let raw = OutputKind::Sequence(SeqShape { steps: 3, decode: SeqDecode::Raw });
        assert!(StepTie::between(raw, 12, ctc_seq(7), 35, 4).is_none());
        // ctc target of 7 steps has 4 positions (steps 0, 2, 4, 6); the source has 3.
        let t = StepTie::between(argmax_seq(3), 12, ctc_seq(7), 35, 4).unwrap();
        assert_eq!(t.dims(), LinkDims::new(12, 12, 35));
    }

    /// The tied gradient is the gradient with respect to the shared weights: a finite difference
    /// along one shared weight (all its copies moved together) matches the tied gradient there.
    #[test]
    fn tied_gradient_is_the_shared_weights_gradient() {
        let t = StepTie::between(argmax_seq(3), 9, ctc_seq(5), 20, 2).unwrap();
        let d = t.dims();
        let mut rng = Rng::new(4);
        let mut p = mlp::init_params(d, &[0.0; 9], &[1.0; 9], &[0.1; 20], &mut rng);
        t.tie_params(&mut p);
        let x: Vec<f32> = (0..9).map(|_| rng.symmetric(1.0)).collect();
        let tgt: Vec<f32> =
            (0..5).flat_map(|s| (0..4).map(move |c| if c == s % 4 { 1.0 } else { 0.0 })).collect();
        let loss = Loss::StepCrossEntropy { steps: 5 };
        let lossf = |p: &[f32]| {
            let mut g = vec![0.0; d.len()];
            mlp::accumulate_grad(d, p, loss, &x, &tgt, 1.0, None, &mut Scratch::for_dims(d), &mut g) as f64
        };
        let mut g = vec![0.0; d.len()];
        mlp::accumulate_grad(d, &p, loss, &x, &tgt, 1.0, None, &mut Scratch::for_dims(d), &mut g);
        t.tie_gradient(&mut g);
        // W1 value (unit 1, column 2) of each position: rows 0·2+1, 1·2+1, 2·2+1 at column k·3+2.
        let start = d.trainable_start();
        let copies: Vec<usize> = (0..3).map(|k| start + (k * 2 + 1) * 9 + k * 3 + 2).collect();
        let eps = 1e-2;
        let moved = |sign: f32| {
            let mut q = p.clone();
            copies.iter().for_each(|&c| q[c] += sign * eps);
            lossf(&q)
        };
        let num = (moved(1.0) - moved(-1.0)) / (2.0 * eps as f64);
        for &c in &copies {
            assert!((num - g[c] as f64).abs() < 2e-2 * (1e-2 + num.abs()), "numeric {num}, tied {}", g[c]);
        }
        // Outside the blocks the gradient is zero: column 0 of a position-1 unit.
        assert_eq!(g[start + 2 * 9], 0.0);
    }

    /// Training under the tie keeps the weights tied and learns a position-wise map from every
    /// position, including positions whose symbols the rows rarely show.
    #[test]
    fn a_tied_link_learns_one_map_for_every_position() {
        // Source: 4 steps × 3 classes (argmax); target: the class + 1 mod 3 at each step, ctc over
        // [blank, a, b, c], 8 steps (positions at steps 0, 2, 4, 6).
        let (src, tgt) = (argmax_seq(4), ctc_seq(8));
        let t = StepTie::between(src, 12, tgt, 32, 8).unwrap();
        let d = t.dims();
        let mut rng = Rng::new(7);
        let rows = 300;
        let (mut x, mut y) = (vec![0.0f32; rows * 12], vec![0.0f32; rows * 32]);
        for r in 0..rows {
            for k in 0..4 {
                // Position 3 sees class 0 only: the map for 0 is learnt at the others.
                let c = if k == 3 { 0 } else { rng.below(3) };
                x[r * 12 + k * 3 + c] = 1.0;
                for s in 0..8 {
                    let col = if s % 2 == 0 && s / 2 == k { (c + 1) % 3 + 1 } else { 0 };
                    if s / 2 == k || s % 2 == 1 {
                        y[r * 32 + s * 4 + col] = 1.0;
                    }
                }
            }
        }
        let mut p = mlp::init_params(d, &[0.0; 12], &[1.0; 12], &[0.0; 32], &mut rng);
        t.tie_params(&mut p);
        let cfg = FitSettings {
            loss: Loss::StepCrossEntropy { steps: 8 },
            epochs: 30,
            batch: 16,
            dropout: 0.0,
            opt: RmsProp::new(0.01),
        };
        let order: Vec<usize> = (0..rows).collect();
        mlp::fit(d, &mut p, &x, &y, &order, &cfg, &mut rng, Some(&t));
        let mut again = p.clone();
        t.tie_params(&mut again);
        assert_eq!(p, again, "training kept the weights tied");
        // Position 0 reads class 2: step 0 predicts symbol (2+1) mod 3 = 0, column 1.
        let mut q = vec![0.0f32; 12];
        q[2] = 1.0;
        q[3 + 2] = 1.0;
        q[6 + 2] = 1.0;
        q[9 + 2] = 1.0;
        let (mut xn, mut a, mut z) = (vec![0.0; 12], vec![0.0; d.hidden as usize], vec![0.0; 32]);
        mlp::forward(d, &p, &q, &mut xn, &mut a, &mut z);
        for k in 0..4 {
            let step = &z[2 * k * 4..2 * k * 4 + 4];
            assert_eq!(crate::links::argmax(step), 1, "position {k}: {step:?}");
        }
    }
}
