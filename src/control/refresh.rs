//! Refresh what has gone stale (`--policy refresh-K`, and its ceiling `oracle-refresh-K`): at the
//! execution rate of `interval-K` (n / K model runs a tick, within the budget and the board's cap),
//! run the tasks whose held outputs are most likely to have changed, and hold the others.
//!
//! `refresh-K` predicts staleness per task with a logistic model over six signals ([`features`]):
//! a bias, how long the output has been held (log age), how much the frame has changed since the
//! task last ran (the cumulative mean absolute pixel difference of consecutive frames, scaled by its
//! running mean per tick), the bundle's own measure of how a held output of that age agrees with the
//! model (its hold score), how near the held output is to changing its verdict under the model's
//! score rule ([`crate::scoring::Scoring::fragility`]), and how much the output changed at the
//! task's last run. `jetlink build` fits the weights per task on the training frames ([`fit`]:
//! every training frame and every age up to [`FIT_AGES`], the label how far the output then
//! disagrees with the one held, by the loop's one agreement function); the bundle carries them
//! (`Bundle::staleness`). The loop starts from them (from the hold score alone for a bundle without
//! them) and learns on-line from every run of a task that had a held output, one gradient step a
//! run. Every signal's weight is kept at 0 or above ([`monotone`]): a held output never looks
//! fresher for being older or for the frame having changed more.
//! `oracle-refresh-K` knows the answer: it refreshes the held outputs that disagree with the
//! reference now (oldest first): a ceiling for the benchmark, not a policy for a board.
//!
//! Every buffer is allocated in [`Refresh::new`]; a tick only computes.

use crate::links::agreement;
use crate::manifest::OutputKind;
use crate::schedule::MAX_HOLD_AGE;
use crate::scoring::Scoring;

/// Signals per task: bias, log age, frame change since the task ran, 1 − hold score at that age,
/// fragility of the held output, change at the last run.
pub const FEATURES: usize = 6;
/// Step of the on-line logistic regression.
const RATE: f32 = 0.05;
/// The weights before anything is learnt: the hold score's signal alone, p = σ(4·(1 − h) − 2).
pub const PRIOR: [f32; FEATURES] = [-2.0, 0.0, 0.0, 4.0, 0.0, 0.0];
/// Ages the build-time fit samples (`refresh-K` holds an output at most 2K ticks).
pub const FIT_AGES: usize = 16;

/// The model's signals: `age` ticks held, `since` the frame change since the task last ran in units
/// of the mean change per tick, `hold` the hold score at that age, `fragility` of the held output,
/// `last` the change at the task's last run (1 − agreement with the output before).
pub fn features(age: u32, since: f32, hold: f32, fragility: f32, last: f32) -> [f32; FEATURES] {
    [1.0, (age as f32).ln_1p() / 4.0, (since / 8.0).min(4.0), 1.0 - hold, fragility, last]
}

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
    /// Per task, how much its output changed at its last run (1 − agreement with the one before).
    last_change: Vec<f32>,
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
    /// `init`: the weights `jetlink build` fitted, one row a task (the bundle's); [`PRIOR`] for
    /// every task when it has none for each.
    pub fn new(
        mode: Mode,
        k: u32,
        n: usize,
        frame_len: usize,
        stride: usize,
        init: &[[f32; FEATURES]],
    ) -> Refresh {
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
            weights: if init.len() == n {
                init.iter().map(|&w| monotone(w)).collect()
            } else {
                vec![PRIOR; n]
            },
            last_change: vec![0.0; n],
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
    /// task; `fragility`: of its held output).
    fn features(&self, j: usize, age: u32, hold: &[f32], fragility: f32) -> [f32; FEATURES] {
        let a = (age.max(1) as usize).min(MAX_HOLD_AGE);
        let h = hold.get(j * MAX_HOLD_AGE + a - 1).copied().unwrap_or(0.0);
        let since = (self.change - self.change_at_run[j]) as f32 / self.mean_step.max(1e-3);
        features(age, since, h, fragility, self.last_change[j])
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
    pub fn score(&mut self, age: &[u32], hold: &[f32], importance: &[f32], held: Held<'_>) -> &[f32] {
        for j in 0..self.score.len() {
            let r = held.layout.range(j);
            let fragility = held.scorings[j].fragility(&held.outputs[r.clone()]);
            self.x[j] = self.features(j, age[j], hold, fragility);
            let stale = if age[j] == u32::MAX {
                f32::INFINITY
            } else {
                match self.mode {
                    Mode::Oracle => {
                        let a = agreement(
                            held.kinds[j],
                            held.scorings[j],
                            &held.outputs[r.clone()],
                            &self.reference[r],
                        );
                        // Stale first, the oldest among equals; an output that is not stale is
                        // worth nothing (the oracle refreshes only what is stale).
                        if a < 1.0 { (1.0 - a) + age[j].min(1 << 20) as f32 * 1e-7 } else { 0.0 }
                    }
                    Mode::Learnt => {
                        let w = &self.weights[j];
                        sigmoid((0..FEATURES).map(|f| w[f] * self.x[j][f]).sum())
                    }
                }
            };
            // The learnt policy lets no task wait more than 2K ticks: past that it goes first (a
            // prediction that stays low would otherwise leave an output held for ever). The oracle
            // needs no such rule: it refreshes what is stale now, oldest first, and nothing else.
            let overdue = match self.mode {
                Mode::Learnt if age[j] != u32::MAX && age[j] as f32 >= 2.0 * self.k as f32 => 2.0,
                _ => 0.0,
            };
            self.score[j] = stale * importance[j].max(1e-3) + overdue;
        }
        &self.score
    }

    /// Task `j` ran: its fresh output `new` replaces the held `old` (None: it had none). Learn from
    /// how far they disagree, with the signals it was chosen on, and restart its change count.
    pub fn ran(&mut self, j: usize, kind: OutputKind, scoring: Scoring, new: &[f32], old: Option<&[f32]>) {
        if let Some(old) = old {
            let y = 1.0 - agreement(kind, scoring, new, old);
            if self.mode == Mode::Learnt {
                let x = self.x[j];
                let w = &mut self.weights[j];
                let p = sigmoid((0..FEATURES).map(|f| w[f] * x[f]).sum());
                for f in 0..FEATURES {
                    w[f] -= RATE * (p - y) * x[f];
                }
                *w = monotone(*w);
                self.updates += 1;
            }
            self.last_change[j] = y;
        }
        self.change_at_run[j] = self.change;
    }

    /// The learnt weights of task `j` (bias, log age, frame change, 1 − hold score, fragility, last
    /// change).
    pub fn weights(&self, j: usize) -> [f32; FEATURES] {
        self.weights[j]
    }
}

/// What the staleness model reads of every task's held output: kinds, scoring, the row layout and
/// the outputs of each task's last run.
#[derive(Clone, Copy)]
pub struct Held<'a> {
    pub kinds: &'a [OutputKind],
    pub scorings: &'a [Scoring],
    pub layout: &'a crate::row::RowLayout,
    pub outputs: &'a [f32],
}

/// Fit the staleness weights of every task on the training part of a recording, for `jetlink
/// build`. `rows[f]` is frame f's recorded outputs (`None` where the recording lacks the frame) and
/// `frames[f]` its pixels, for frames 0.. in order. For each frame t and age a in 1..=[`FIT_AGES`]
/// with frames t, t − a and t − 2a recorded: the signals of task j's output of frame t − a held a ticks (the
/// frame change over those ticks from `frames`, when given; the hold score `hold`; the fragility of
/// the held output; the change from t − 2a to t − a as the last run's), and the label 1 − agreement
/// of the output at t with the held one. Logistic regression with those soft labels, from
/// [`PRIOR`] ([`logistic`], Newton's method; deterministic).
pub fn fit(
    rows: &[Option<&[f32]>],
    kinds: &[OutputKind],
    scorings: &[Scoring],
    layout: &crate::row::RowLayout,
    hold: &[f32],
    frames: Option<&[&[u8]]>,
) -> Vec<[f32; FEATURES]> {
    let t_n = rows.len();
    // Cumulative frame change and its mean step, as the loop computes them (its mean is a running
    // one; here it is the whole training part's).
    let mut change = vec![0.0f64; t_n];
    let mut mean_step = 0.0f32;
    if let Some(f) = frames.filter(|f| f.len() == t_n && t_n > 1) {
        for t in 1..t_n {
            let d = crate::schedule::frame_difference(f[t], f[t - 1]);
            change[t] = change[t - 1] + d as f64;
        }
        mean_step = (change[t_n - 1] / (t_n - 1) as f64) as f32;
    }
    (0..kinds.len())
        .map(|j| {
            let r = layout.range(j);
            let (mut xs, mut ys) = (Vec::new(), Vec::new());
            for a in 1..=FIT_AGES {
                for t in 2 * a..t_n {
                    let (Some(now), Some(held), Some(before)) = (rows[t], rows[t - a], rows[t - 2 * a])
                    else {
                        continue;
                    };
                    let (now, held, before) = (&now[r.clone()], &held[r.clone()], &before[r.clone()]);
                    let since =
                        if mean_step > 0.0 { (change[t] - change[t - a]) as f32 / mean_step } else { 0.0 };
                    let h = hold.get(j * MAX_HOLD_AGE + a.min(MAX_HOLD_AGE) - 1).copied().unwrap_or(0.0);
                    let last = 1.0 - agreement(kinds[j], scorings[j], held, before);
                    xs.push(features(a as u32, since, h, scorings[j].fragility(held), last));
                    ys.push(1.0 - agreement(kinds[j], scorings[j], now, held));
                }
            }
            monotone(logistic(&xs, &ys))
        })
        .collect()
}

/// The weights with no signal's below 0 (the bias is free). Every signal is built so that more of
/// it means a staler output: older, more frame change, a lower hold score, nearer the rule's
/// threshold, a larger change at the last run. Unconstrained, two signals that move together (the
/// log age, and the hold score at that age) share their weight so that one comes out negative, and
/// the predicted staleness can fall as an output ages: the policy then leaves it held ever longer.
/// The build's fit, the weights a bundle brings and every on-line step are projected onto w ≥ 0.
pub fn monotone(mut w: [f32; FEATURES]) -> [f32; FEATURES] {
    for v in &mut w[1..] {
        *v = v.max(0.0);
    }
    w
}

/// Logistic regression with soft labels in [0, 1] by Newton's method (iteratively reweighted least
/// squares from [`PRIOR`], each step halved until it lowers the objective, a ridge of 1e-4 per
/// sample pulling every weight towards the prior, so that a signal without data stays at its prior
/// weight and a task that never changed in training keeps a bias that on-line learning can still
/// move), with no signal's weight below 0 ([`monotone`]): a signal that comes out negative is held
/// at 0 and the others refitted, the most negative first (at most one refit a signal).
/// Hand-written: 6 unknowns, a 6 × 6 solve; deterministic. [`PRIOR`] when there are no samples or
/// a step is not finite.
fn logistic(xs: &[[f32; FEATURES]], ys: &[f32]) -> [f32; FEATURES] {
    const F: usize = FEATURES;
    let mut w: [f64; F] = PRIOR.map(f64::from);
    if xs.is_empty() {
        return PRIOR;
    }
    let ridge = 1e-4 * xs.len() as f64;
    // The penalised negative log-likelihood at `w`.
    let loss = |w: &[f64; F]| -> f64 {
        let mut l = 0.0;
        for (x, &y) in xs.iter().zip(ys) {
            let z: f64 = (0..F).map(|f| w[f] * f64::from(x[f])).sum();
            // −[y log p + (1 − y) log(1 − p)], p = σ(z), written stably.
            l += z.max(0.0) + (-z.abs()).exp().ln_1p() - f64::from(y) * z;
        }
        l + 0.5 * ridge * (0..F).map(|f| (w[f] - f64::from(PRIOR[f])).powi(2)).sum::<f64>()
    };
    let mut held = [false; F];
    for _ in 0..F {
        let mut now = loss(&w);
        for _ in 0..20 {
            // Gradient and Hessian of the penalised negative log-likelihood.
            let mut g = [0.0f64; F];
            let mut h = [[0.0f64; F]; F];
            for (x, &y) in xs.iter().zip(ys) {
                let z: f64 = (0..F).map(|f| w[f] * f64::from(x[f])).sum();
                let p = 1.0 / (1.0 + (-z).exp());
                let s = (p * (1.0 - p)).max(1e-6);
                for a in 0..F {
                    g[a] += (p - f64::from(y)) * f64::from(x[a]);
                    for b in 0..F {
                        h[a][b] += s * f64::from(x[a]) * f64::from(x[b]);
                    }
                }
            }
            for f in 0..F {
                g[f] += ridge * (w[f] - f64::from(PRIOR[f]));
                h[f][f] += ridge;
            }
            // A weight held at 0 does not move: its row and column leave the solve.
            for f in (0..F).filter(|&f| held[f]) {
                g[f] = 0.0;
                for b in 0..F {
                    (h[f][b], h[b][f]) = (0.0, 0.0);
                }
                h[f][f] = 1.0;
            }
            let Some(step) = solve(h, g) else { return PRIOR };
            // The Newton step, halved until the objective does not rise (at most 30 halvings).
            let mut t = 1.0;
            let mut moved = false;
            for _ in 0..30 {
                let next: [f64; F] = std::array::from_fn(|f| w[f] - t * step[f]);
                let l = loss(&next);
                if next.iter().all(|v| v.is_finite()) && l <= now {
                    (w, now, moved) = (next, l, true);
                    break;
                }
                t *= 0.5;
            }
            if !moved {
                break;
            }
        }
        // The most negative signal weight, if any, is held at 0 and the others refitted.
        match (1..F).filter(|&f| w[f] < 0.0).min_by(|&a, &b| w[a].total_cmp(&w[b])) {
            Some(f) => (held[f], w[f]) = (true, 0.0),
            None => break,
        }
    }
    w.map(|v| v as f32)
}

/// Solve `h · x = g` (Gaussian elimination with partial pivoting); `None` when `h` is singular.
fn solve<const F: usize>(mut h: [[f64; F]; F], mut g: [f64; F]) -> Option<[f64; F]> {
    for c in 0..F {
        let p = (c..F).max_by(|&a, &b| h[a][c].abs().total_cmp(&h[b][c].abs()))?;
        if h[p][c].abs() < 1e-12 {
            return None;
        }
        h.swap(c, p);
        g.swap(c, p);
        for r in c + 1..F {
            let k = h[r][c] / h[c][c];
            for j in c..F {
                h[r][j] -= k * h[c][j];
            }
            g[r] -= k * g[c];
        }
    }
    let mut x = [0.0f64; F];
    for c in (0..F).rev() {
        x[c] = (g[c] - (c + 1..F).map(|j| h[c][j] * x[j]).sum::<f64>()) / h[c][c];
    }
    Some(x)
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
        let mut r = Refresh::new(Mode::Learnt, 2, 5, 4, 5, &[]);
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
        let mut r = Refresh::new(Mode::Learnt, 1, 2, 4, 4, &[]);
        let (kinds, scorings) = ([OutputKind::Class; 2], [Scoring::tolerance(0.1); 2]);
        let layout = crate::row::RowLayout::new([2, 2]);
        let outputs = [0.0; 4];
        let held = Held { kinds: &kinds, scorings: &scorings, layout: &layout, outputs: &outputs };
        for t in 0..200u8 {
            r.observe_frame(&[t; 4]);
            // Age 1: not overdue (2K = 2), so the learnt staleness alone decides.
            r.score(&[1, 1], &hold, &[1.0, 1.0], held);
            r.ran(0, OutputKind::Class, Scoring::tolerance(0.1), &[1.0, 0.0], Some(&[0.0, 1.0]));
            r.ran(1, OutputKind::Class, Scoring::tolerance(0.1), &[1.0, 0.0], Some(&[1.0, 0.0]));
        }
        let s = r.score(&[1, 1], &hold, &[1.0, 1.0], held);
        assert!(s[0] > 0.8 && s[1] < 0.2, "{s:?}");
        assert_eq!(r.updates, 400);
    }

    /// Past 2K ticks held, the learnt policy refreshes an output whatever it predicts; the oracle
    /// values only what the reference says is stale (an output that is not scores 0, however old),
    /// the oldest first among equals.
    #[test]
    fn only_the_learnt_policy_forces_old_outputs() {
        let hold = vec![1.0; 2 * MAX_HOLD_AGE];
        let (kinds, scorings) = ([OutputKind::Class; 2], [Scoring::tolerance(0.1); 2]);
        let layout = crate::row::RowLayout::new([2, 2]);
        // Task 0 still agrees with the reference; task 1 does not.
        let outputs = [1.0, 0.0, 1.0, 0.0];
        let held = Held { kinds: &kinds, scorings: &scorings, layout: &layout, outputs: &outputs };
        let age = [40, 1];
        let mut oracle = Refresh::new(Mode::Oracle, 2, 2, 4, 4, &[]);
        oracle.reference.copy_from_slice(&[1.0, 0.0, 0.0, 1.0]);
        let s = oracle.score(&age, &hold, &[1.0, 1.0], held).to_vec();
        assert!(s[0] == 0.0 && s[1] >= 1.0, "{s:?}");
        // Both stale: the older first.
        oracle.reference.copy_from_slice(&[0.0, 1.0, 0.0, 1.0]);
        let s = oracle.score(&[3, 2], &hold, &[1.0, 1.0], held);
        assert!(s[0] > s[1] && s[1] >= 1.0, "{s:?}");
        let mut learnt = Refresh::new(Mode::Learnt, 2, 2, 4, 4, &[]);
        let s = learnt.score(&age, &hold, &[1.0, 1.0], held);
        assert!(s[0] >= 2.0, "{s:?}");
    }

    #[test]
    fn the_build_fit_learns_which_task_changes() {
        // Task 0 flips its class every frame; task 1 never changes.
        let rows: Vec<Vec<f32>> = (0..120)
            .map(|t| if t % 2 == 0 { vec![1.0, 0.0, 1.0, 0.0] } else { vec![0.0, 1.0, 1.0, 0.0] })
            .collect();
        let rows: Vec<Option<&[f32]>> = rows.iter().map(|r| Some(r.as_slice())).collect();
        let (kinds, scorings) = ([OutputKind::Class; 2], [Scoring::tolerance(0.1); 2]);
        let layout = crate::row::RowLayout::new([2, 2]);
        let hold = vec![0.5; 2 * MAX_HOLD_AGE];
        let w = fit(&rows, &kinds, &scorings, &layout, &hold, None);
        let p = |j: usize, a: u32, last: f32| {
            let x = features(a, 0.0, 0.5, 0.0, last);
            sigmoid((0..FEATURES).map(|f| w[j][f] * x[f]).sum())
        };
        // Odd ages are stale for task 0 (and its last run changed then), never for task 1.
        assert!(p(0, 1, 1.0) > 0.6, "{w:?}");
        assert!(p(1, 1, 0.0) < 0.2, "{w:?}");
        assert_eq!(w, fit(&rows, &kinds, &scorings, &layout, &hold, None), "deterministic");
    }

    /// Labels that fall with age (here: an output that changes on odd ages only, and more at age 1
    /// than later) would give the log age a negative weight; the fit holds it at 0 and refits the
    /// others, so the predicted staleness never falls as an output ages, and on-line steps keep it so.
    #[test]
    fn no_signal_weight_goes_negative() {
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for a in 1..=16u32 {
            for i in 0..40 {
                let last = (i % 2) as f32;
                xs.push(features(a, 0.0, 0.5, 0.0, last));
                // Stale when the last run changed, less so the older the output.
                ys.push(if last > 0.0 { 1.0 / a as f32 } else { 0.0 });
            }
        }
        let free = {
            // The same fit with the constraint lifted, for contrast: the age's weight is negative.
            let mut w = PRIOR.map(f64::from);
            for _ in 0..50 {
                let mut g = [0.0f64; FEATURES];
                for (x, &y) in xs.iter().zip(&ys) {
                    let z: f64 = (0..FEATURES).map(|f| w[f] * f64::from(x[f])).sum();
                    let p = 1.0 / (1.0 + (-z).exp());
                    for f in 0..FEATURES {
                        g[f] += (p - f64::from(y)) * f64::from(x[f]) / xs.len() as f64;
                    }
                }
                for f in 0..FEATURES {
                    w[f] -= 4.0 * g[f];
                }
            }
            w
        };
        assert!(free[1] < 0.0, "the unconstrained age weight {:.3} should be negative", free[1]);
        let w = logistic(&xs, &ys);
        assert!(w[1..].iter().all(|&v| v >= 0.0), "{w:?}");
        assert_eq!(w[1], 0.0, "{w:?}");
        assert!(w[5] > 1.0, "the last change still carries the prediction: {w:?}");
        // On-line steps on the same data keep every signal's weight at 0 or above.
        let mut r = Refresh::new(Mode::Learnt, 2, 1, 4, 2, &[w]);
        r.x[0] = features(16, 0.0, 0.5, 0.0, 1.0);
        for _ in 0..200 {
            r.ran(0, OutputKind::Class, Scoring::tolerance(0.1), &[1.0, 0.0], Some(&[1.0, 0.0]));
        }
        assert!(r.weights(0)[1..].iter().all(|&v| v >= 0.0), "{:?}", r.weights(0));
    }
}
