//! Links with the target's own last output as one more source: a held output of age `a` and the link
//! ensemble's prediction from the running models are combined as `α·held + (1 − α)·linked`, with one
//! weight α per (running set, target, age) fitted on the training part by the target's score rule
//! (α = 1 is plain holding, α = 0 plain linking, so on the frames it is fitted on the blend is never
//! worse than either).

use std::collections::HashMap;

use crate::bundle::Bundle;
use crate::links::{Predictor, agreement};
use crate::recording::Recording;
use crate::row::RowLayout;

/// The α grid searched.
pub const ALPHAS: [f32; 11] = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0];

/// Blend weights fitted lazily, as (running set, target, age) combinations are met; link predictions
/// of the fit frames are cached per running set.
pub struct Blend {
    layout: RowLayout,
    kinds: Vec<crate::manifest::OutputKind>,
    tolerances: Vec<f32>,
    /// Training frames used for fitting, as reference rows in frame order (consecutive frames).
    rows: Vec<usize>,
    predicted: HashMap<u64, Vec<f32>>,
    alpha: HashMap<(u64, usize, usize), f32>,
    scratch: Vec<f32>,
}

impl Blend {
    /// Fit on the recorded frames `frames` (at most `max_frames` of them, the first ones).
    pub fn new(
        bundle: &Bundle,
        reference: &Recording,
        frames: std::ops::Range<usize>,
        max_frames: usize,
    ) -> Blend {
        let rows = frames.filter_map(|f| reference.row_of_frame(f as u32)).take(max_frames).collect();
        Blend {
            layout: bundle.layout(),
            kinds: bundle.models.iter().map(|m| m.kind).collect(),
            tolerances: bundle.models.iter().map(|m| m.tolerance).collect(),
            rows,
            predicted: HashMap::new(),
            alpha: HashMap::new(),
            scratch: vec![0.0; bundle.layout().stride()],
        }
    }

    /// Weight of the held output of target `j`, `age` frames old, when `active` runs.
    pub fn alpha(
        &mut self,
        predictor: &mut Predictor,
        reference: &Recording,
        active: u64,
        j: usize,
        age: usize,
    ) -> f32 {
        let age = age.clamp(1, super::MAX_HOLD_AGE);
        if let Some(&a) = self.alpha.get(&(active, j, age)) {
            return a;
        }
        let stride = self.layout.stride();
        if !self.predicted.contains_key(&active) {
            let mut all = vec![0.0f32; self.rows.len() * stride];
            for (k, &r) in self.rows.iter().enumerate() {
                if predictor.predict(active, reference.row(r), &mut self.scratch).is_ok() {
                    all[k * stride..(k + 1) * stride].copy_from_slice(&self.scratch);
                } else {
                    all[k * stride..(k + 1) * stride].fill(f32::NAN);
                }
            }
            self.predicted.insert(active, all);
        }
        let pred = &self.predicted[&active];
        let r = self.layout.range(j);
        let mut mixed = vec![0.0f32; r.len()];
        let mut best = (f32::NEG_INFINITY, 1.0f32);
        for &a in &ALPHAS {
            let mut s = 0.0f32;
            for k in age..self.rows.len() {
                let old = &reference.row(self.rows[k - age])[r.clone()];
                let now = &reference.row(self.rows[k])[r.clone()];
                let lin = &pred[k * stride..(k + 1) * stride][r.clone()];
                mix(a, old, lin, &mut mixed);
                s += agreement(self.kinds[j], self.tolerances[j], &mixed, now);
            }
            if s > best.0 {
                best = (s, a);
            }
        }
        self.alpha.insert((active, j, age), best.1);
        best.1
    }
}

/// `out = α·held + (1 − α)·linked`.
pub fn mix(alpha: f32, held: &[f32], linked: &[f32], out: &mut [f32]) {
    for ((o, &h), &l) in out.iter_mut().zip(held).zip(linked) {
        *o = alpha * h + (1.0 - alpha) * l;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_convex() {
        let mut o = [0.0; 2];
        mix(0.25, &[4.0, 0.0], &[0.0, 8.0], &mut o);
        assert_eq!(o, [1.0, 6.0]);
        mix(1.0, &[4.0, 0.0], &[0.0, 8.0], &mut o);
        assert_eq!(o, [4.0, 0.0]);
    }
}
