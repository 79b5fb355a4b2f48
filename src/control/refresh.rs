//! Refresh what has gone stale (`--policy refresh-K`, and its ceiling `oracle-refresh-K`): at the
//! execution rate of `interval-K` (n / K model runs a tick, within the budget and the board's cap),
//! run the tasks whose held outputs are most likely to have changed, and hold the others.
//!
//! `refresh-K` predicts staleness per task with a logistic model over four signals: a bias, how
//! long the output has been held (log age), how much the frame has changed since the task last ran
//! (the cumulative mean absolute pixel difference of consecutive frames, scaled by its running mean
//! per tick), and the bundle's own measure of how a held output of that age agrees with the model
//! (its hold score, learnt at `build`). It starts from that hold score alone and learns on-line,
//! from every run of a task that had a held output: the label is how far the fresh output disagrees
//! with the one it replaces (the loop's one agreement function), one gradient step a run.
//! `oracle-refresh-K` knows the answer: it refreshes the held outputs that disagree with the
//! reference now (oldest first): a ceiling for the benchmark, not a policy for a board.
//!
//! Every buffer is allocated in [`Refresh::new`]; a tick only computes.

use crate::links::agreement;
use crate::manifest::OutputKind;
use crate::schedule::MAX_HOLD_AGE;

/// Signals per task: bias, log age, frame change since the task ran, 1 − hold score at that age.
const FEATURES: usize = 4;
/// Step of the on-line logistic regression.
const RATE: f32 = 0.05;

/// Which staleness the policy ranks by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The learnt predictor.
    Learnt,
    /// The reference's answer (a benchmark ceiling; needs a reference recording).
    Oracle,
}

/// `refresh-K` or `oracle-refresh-K`: the mode and K.
pub fn parse(policy: &str) -> Option<(Mode, u32)> {
    crate::schedule::cycle::refresh_policy(policy)
        .map(|(oracle, k)| (if oracle { Mode::Oracle } else { Mode::Learnt }, k))
}

pub struct Refresh {
    pub mode: Mode,
    /// Model runs a tick (n / K), accumulated: a tick runs the whole part.
    rate: f32,
    k: u32,
    credit: f32,
    /// Cumulative frame change (f64: it only grows), its value when each task last ran, and the
    /// running mean per tick.
    change: f64,
    change_at_run: Vec<f64>,
    mean_step: f32,
    steps: u32,
    prev: Vec<u8>,
    have_prev: bool,
    weights: Vec<[f32; FEATURES]>,
    /// This tick's signals and scores per task.
    x: Vec<[f32; FEATURES]>,
    score: Vec<f32>,
    /// The oracle's reference outputs for this frame, in the loop's row layout.
    pub reference: Vec<f32>,
    /// Runs learnt from.
    pub updates: u64,
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

impl Refresh {
    pub fn new(mode: Mode, k: u32, n: usize, frame_len: usize, stride: usize) -> Refresh {
        Refresh {
            mode,
            rate: n as f32 / k.max(1) as f32,
            k: k.max(1),
            credit: 0.0,
            change: 0.0,
            change_at_run: vec![0.0; n],
            mean_step: 0.0,
            steps: 0,
            prev: vec![0; frame_len],
            have_prev: false,
            // The hold score's signal alone at first: p = σ(4·(1 − h) − 2).
            weights: vec![[-2.0, 0.0, 0.0, 4.0]; n],
            x: vec![[0.0; FEATURES]; n],
            score: vec![0.0; n],
            reference: vec![0.0; stride],
            updates: 0,
        }
    }

    /// The frame of this tick (before the choice): the cumulative change moves on.
    pub fn observe_frame(&mut self, frame: &[u8]) {
        if self.have_prev {
            let d = crate::schedule::frame_difference(frame, &self.prev);
            self.change += d as f64;
            self.steps += 1;
            self.mean_step += (d - self.mean_step) / self.steps as f32;
        }
        self.prev.copy_from_slice(frame);
        self.have_prev = true;
    }

    /// Task `j`'s signals at `age` ticks held (`hold`: the bundle's hold scores, `MAX_HOLD_AGE` a
    /// task).
    fn features(&self, j: usize, age: u32, hold: &[f32]) -> [f32; FEATURES] {
        let a = (age.max(1) as usize).min(MAX_HOLD_AGE);
        let h = hold.get(j * MAX_HOLD_AGE + a - 1).copied().unwrap_or(0.0);
        let since = (self.change - self.change_at_run[j]) as f32;
        let scale = self.mean_step.max(1e-3) * 8.0;
        [1.0, (age as f32).ln_1p() / 4.0, (since / scale).min(4.0), 1.0 - h]
    }

    /// How many tasks this tick may run (the whole part of the accumulated rate), at most `cap`.
    pub fn take_runs(&mut self, cap: usize) -> usize {
        self.credit = (self.credit + self.rate).min(self.rate.max(1.0) * 2.0);
        (self.credit.floor() as usize).min(cap)
    }

    /// Give back what was not run (the budget did not fit it).
    pub fn spent(&mut self, ran: usize) {
        self.credit = (self.credit - ran as f32).max(0.0);
    }

    /// Score every task for this tick: the predicted (or, for the oracle, actual: its held output
    /// against [`Refresh::reference`], filled by the loop) staleness of its held output, weighted
    /// by importance; a task with no output yet scores highest.
    #[allow(clippy::too_many_arguments)]
    pub fn score(
        &mut self,
        age: &[u32],
        hold: &[f32],
        importance: &[f32],
        oracle: Option<(&[OutputKind], &[crate::scoring::Scoring], &crate::row::RowLayout, &[f32])>,
    ) -> &[f32] {
        for j in 0..self.score.len() {
            self.x[j] = self.features(j, age[j], hold);
            let stale = if age[j] == u32::MAX {
                f32::INFINITY
            } else {
                match (self.mode, oracle) {
                    (Mode::Oracle, Some((kinds, tol, layout, held))) => {
                        let r = layout.range(j);
                        let a = agreement(kinds[j], tol[j], &held[r.clone()], &self.reference[r]);
                        // Stale first, then the oldest.
                        (1.0 - a) + age[j].min(1 << 20) as f32 * 1e-7
                    }
                    _ => {
                        let w = &self.weights[j];
                        sigmoid((0..FEATURES).map(|f| w[f] * self.x[j][f]).sum())
                    }
                }
            };
            // No task waits more than 2K ticks: past that it goes first (held outputs age out).
            let overdue = if age[j] != u32::MAX && age[j] as f32 >= 2.0 * self.k as f32 { 2.0 } else { 0.0 };
            self.score[j] = stale * importance[j].max(1e-3) + overdue;
        }
        &self.score
    }

    /// Task `j` ran: its fresh output `new` replaces the held `old` (None: it had none). Learn from
    /// how far they disagree, with the signals it was chosen on, and restart its change count.
    pub fn ran(
        &mut self,
        j: usize,
        kind: OutputKind,
        tol: crate::scoring::Scoring,
        new: &[f32],
        old: Option<&[f32]>,
    ) {
        if let (Some(old), Mode::Learnt) = (old, self.mode) {
            let y = 1.0 - agreement(kind, tol, new, old);
            let x = self.x[j];
            let w = &mut self.weights[j];
            let p = sigmoid((0..FEATURES).map(|f| w[f] * x[f]).sum());
            for f in 0..FEATURES {
                w[f] -= RATE * (p - y) * x[f];
            }
            self.updates += 1;
        }
        self.change_at_run[j] = self.change;
    }

    /// The learnt weights of task `j` (bias, log age, frame change, 1 − hold score).
    pub fn weights(&self, j: usize) -> [f32; FEATURES] {
        self.weights[j]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_rate_and_learning() {
        assert_eq!(parse("refresh-4"), Some((Mode::Learnt, 4)));
        assert_eq!(parse("oracle-refresh-2"), Some((Mode::Oracle, 2)));
        assert_eq!(parse("refresh-0"), None);
        assert_eq!(parse("interval-4"), None);
        // 5 tasks at K = 2: 2.5 runs a tick, so 2, 3, 2, 3 … within a cap of 3.
        let mut r = Refresh::new(Mode::Learnt, 2, 5, 4, 5);
        let runs: Vec<usize> = (0..4)
            .map(|_| {
                let k = r.take_runs(3);
                r.spent(k);
                k
            })
            .collect();
        assert_eq!(runs, [2, 3, 2, 3]);
        // A task whose output always changes learns a higher staleness than one that never does.
        let hold = vec![0.5; 2 * MAX_HOLD_AGE];
        let mut r = Refresh::new(Mode::Learnt, 1, 2, 4, 4);
        for t in 0..200u8 {
            r.observe_frame(&[t; 4]);
            // Age 1: not overdue (2K = 2), so the learnt staleness alone decides.
            r.score(&[1, 1], &hold, &[1.0, 1.0], None);
            r.ran(
                0,
                OutputKind::Class,
                crate::scoring::Scoring::tolerance(0.1),
                &[1.0, 0.0],
                Some(&[0.0, 1.0]),
            );
            r.ran(
                1,
                OutputKind::Class,
                crate::scoring::Scoring::tolerance(0.1),
                &[1.0, 0.0],
                Some(&[1.0, 0.0]),
            );
        }
        let s = r.score(&[1, 1], &hold, &[1.0, 1.0], None);
        assert!(s[0] > 0.8 && s[1] < 0.2, "{s:?}");
        assert_eq!(r.updates, 400);
    }
}
