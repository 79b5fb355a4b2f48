//! MLink scheduling: which models run under a memory budget, so that the importance-weighted mean of
//! delivered-output accuracy is highest. The exact choice is precomputed into a table; the paper's
//! greedy rule and the baselines it was compared with sit behind the same interface.
//!
//! Objective for an active set A (bit i of a mask = model i runs), tasks j with importance w_j:
//! `J(A) = Σ_j w_j · (1 if j ∈ A else p(h_{A,j})) / Σ_j w_j`, subject to
//! `Σ_{i∈A} c(f_i) + Σ_{j∉A} (Σ_{i∈A} c(g_ij) + c(h_j)) ≤ B` (model memory plus the links used).

mod baselines;
pub mod cycle;
mod greedy;
mod hold;
mod optimal;

pub use baselines::{FrameFilter, RandomFit, Standalone, frame_difference};
pub use cycle::CycleTable;
pub use greedy::Greedy;
pub use hold::{HoldScores, Interval, MAX_HOLD_AGE, OptimalHold, Phase};
pub use optimal::{Optimal, ScheduleTable};

use crate::bundle::Bundle;
use crate::model_set::ModelSet;

/// Share of work saved, as every report states it (savings of executions and FLOPs).
pub fn share_saved(done: u64, frames: u64, per_frame: u64) -> f64 {
    let due = frames as f64 * per_frame as f64;
    if due <= 0.0 { 0.0 } else { 1.0 - done as f64 / due }
}

/// The largest workload an exhaustive search handles (2^16 subsets).
pub const MAX_EXHAUSTIVE: usize = 16;

/// Everything a scheduler needs to know: costs, importances and the score of every target's
/// ensemble for every source subset.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub n: usize,
    pub importance: Vec<f32>,
    /// Memory of each model while it runs, bytes.
    pub model_mem: Vec<u64>,
    /// FLOPs of each model per frame.
    pub flops: Vec<u64>,
    /// Most models run per frame (an execution budget beside the memory budget: GPU time per tick);
    /// `n` for none.
    pub max_active: usize,
    /// Bytes of link i → j, `[j * n + i]`.
    pub link_mem: Vec<u64>,
    /// Bytes of target j's ensemble layer.
    pub ens_mem: Vec<u64>,
    /// `[j << n | mask]`: score of target j predicted from the active set `mask` (full model mask; the
    /// entry is meaningless when bit j is set).
    pub score: Vec<f32>,
    /// `[j * MAX_HOLD_AGE + age - 1]`: agreement of task j's output held `age` frames
    /// (1..=[`MAX_HOLD_AGE`]) with the model's output now ([`HoldScores`]); 0 where not measured.
    pub hold: Vec<f32>,
}

impl Problem {
    /// The problem a bundle poses, with its held-out scores and hold scores.
    pub fn from_bundle(b: &Bundle) -> Problem {
        let n = b.n_models();
        assert!(n <= MAX_EXHAUSTIVE, "{n} models: at most {MAX_EXHAUSTIVE}");
        let k = n - 1;
        let mut link_mem = vec![0u64; n * n];
        for j in 0..n {
            for s in 0..k {
                let i = crate::links::source_of_slot(j, s);
                link_mem[j * n + i] = 4 * b.links.dims[j * k + s].len() as u64;
            }
        }
        // A target's shared head and its per-source-set heads are all resident while it is predicted.
        let ens_mem = (0..n).map(|j| 4 * b.ensembles.target_len(j) as u64).collect();
        let mut score = vec![0.0f32; n << n];
        for j in 0..n {
            for mask in ModelSet::subsets(n) {
                if !mask.contains(j) {
                    score[(j << n) | mask.index()] = b.subset_score(j, mask);
                }
            }
        }
        Problem {
            n,
            importance: b.models.iter().map(|m| m.importance).collect(),
            model_mem: b.models.iter().map(|m| m.memory_bytes).collect(),
            flops: b.models.iter().map(|m| m.flops).collect(),
            max_active: n,
            link_mem,
            ens_mem,
            score,
            hold: b.scores.hold.clone(),
        }
    }

    /// The same problem with the agreement of held outputs by age (temporal reuse) measured.
    pub fn with_hold(mut self, hold: &HoldScores) -> Problem {
        self.hold = hold.table().to_vec();
        self
    }

    /// Agreement of task j's output held `age` frames (1 at age 0; ages past [`MAX_HOLD_AGE`] score
    /// as that age).
    pub fn hold_score(&self, j: usize, age: usize) -> f32 {
        if age == 0 { 1.0 } else { self.hold[j * MAX_HOLD_AGE + age.min(MAX_HOLD_AGE) - 1] }
    }

    /// The same problem with at most `k` models run per frame (at least 1).
    pub fn with_max_active(mut self, k: usize) -> Problem {
        self.max_active = k.clamp(1, self.n);
        self
    }

    pub fn all(&self) -> ModelSet {
        ModelSet::all(self.n)
    }

    /// Score of target `j` when `mask` runs (1 when j itself runs, 0 when nothing runs).
    pub fn p(&self, j: usize, mask: ModelSet) -> f32 {
        if mask.contains(j) {
            1.0
        } else if mask.is_empty() {
            0.0
        } else {
            self.score[(j << self.n) | mask.index()]
        }
    }

    /// Memory of running `active` and predicting the targets in `predicted` from it (links from
    /// every active model into each predicted target, and its ensemble layer).
    pub fn cost_of(&self, active: ModelSet, predicted: ModelSet) -> u64 {
        let mut c = 0;
        for j in 0..self.n {
            if active.contains(j) {
                c += self.model_mem[j];
            } else if predicted.contains(j) && !active.is_empty() {
                c += self.ens_mem[j];
                for i in 0..self.n {
                    if active.contains(i) {
                        c += self.link_mem[j * self.n + i];
                    }
                }
            }
        }
        c
    }

    /// Importance-weighted accuracy of running `active` and predicting `predicted` (the other tasks
    /// deliver nothing and score 0).
    pub fn objective_of(&self, active: ModelSet, predicted: ModelSet) -> f32 {
        let w: f32 = self.importance.iter().sum();
        if w <= 0.0 {
            return 0.0;
        }
        let mut o = 0.0;
        for j in 0..self.n {
            if active.contains(j) {
                o += self.importance[j];
            } else if predicted.contains(j) {
                o += self.importance[j] * self.p(j, active);
            }
        }
        o / w
    }

    /// Memory of running `mask` and predicting every other task from it (the paper's setting).
    pub fn cost(&self, mask: ModelSet) -> u64 {
        self.cost_of(mask, self.all() - mask)
    }

    /// Memory of running `mask` without links.
    pub fn model_cost(&self, mask: ModelSet) -> u64 {
        mask.iter().map(|i| self.model_mem[i]).sum()
    }

    /// Importance-weighted expected accuracy of running `mask` and predicting the rest.
    pub fn objective(&self, mask: ModelSet) -> f32 {
        let w: f32 = self.importance.iter().sum();
        if w <= 0.0 {
            return 0.0;
        }
        (0..self.n).map(|j| self.importance[j] * self.p(j, mask)).sum::<f32>() / w
    }

    /// Importance-weighted share of tasks delivered by running `mask` alone (no links).
    pub fn standalone_objective(&self, mask: ModelSet) -> f32 {
        let w: f32 = self.importance.iter().sum();
        mask.iter().map(|j| self.importance[j]).sum::<f32>() / w.max(f32::MIN_POSITIVE)
    }
}

/// What to do with one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run the models in `active`, predict the tasks in `predict` through links and deliver the
    /// tasks in `hold` as their model last output them (temporal reuse; the output's age is the
    /// frames since that run); the other tasks deliver nothing new.
    Run { active: ModelSet, predict: ModelSet, hold: ModelSet },
    /// Run nothing; deliver the last delivered outputs again.
    Reuse,
}

/// A scheduling policy. `select` is called at each period start and whenever the budget changes;
/// `decide` once per frame and must not allocate.
pub trait Scheduler {
    fn name(&self) -> &'static str;
    fn select(&mut self, problem: &Problem, budget: u64);
    fn decide(&mut self, frame: &[u8]) -> Decision;
    /// Largest memory this policy holds at once under its current selection.
    fn peak_memory(&self, problem: &Problem) -> u64;
    /// Decisions after which `decide` repeats itself under the current selection (frame-dependent
    /// policies: 1, with [`Self::frame_threshold`]).
    fn cycle(&self) -> usize {
        1
    }
    /// A frame-dependent policy's gate: a frame differing from the last one run by at most this
    /// (mean absolute byte difference) runs nothing and holds every output.
    fn frame_threshold(&self) -> Option<f32> {
        None
    }
}

/// The schedulers by name, for command lines and benchmarks (`interval-K`, one per K, besides).
pub const NAMES: [&str; 6] = ["optimal", "optimal-hold", "greedy", "standalone", "frame-filter", "random"];

/// The largest K of `interval-K` and `refresh-K`: a cycle of K phases a level is built for it, so
/// K is bounded (a run every 1,000 frames is far past any useful interval).
pub const MAX_INTERVAL: u32 = 1000;

/// K of a policy name's `-K` suffix: 1 to [`MAX_INTERVAL`].
pub fn interval_k(k: &str) -> Option<u32> {
    // Plain decimal digits, no sign and no leading zero: `interval-+5` and `interval-05` are not
    // names a table or a report would ever show.
    let plain = k.bytes().all(|b| b.is_ascii_digit()) && !k.starts_with('0');
    k.parse().ok().filter(|k| plain && (1..=MAX_INTERVAL).contains(k))
}

/// Make a scheduler by name (`interval-K` for [`Interval`] with K from 1 to [`MAX_INTERVAL`]).
/// `profile` is a slice of frames for tuning (frame filter).
pub fn by_name(name: &str, profile: &[&[u8]], seed: u64) -> Option<Box<dyn Scheduler>> {
    if let Some(k) = name.strip_prefix("interval-") {
        return interval_k(k).map(|k| Box::new(Interval::new(k as usize)) as Box<dyn Scheduler>);
    }
    Some(match name {
        "optimal" => Box::new(Optimal::default()),
        "optimal-hold" => Box::new(OptimalHold::default()),
        "greedy" => Box::new(Greedy::default()),
        "standalone" => Box::new(Standalone::default()),
        "frame-filter" => Box::new(FrameFilter::new(profile)),
        "random" => Box::new(RandomFit::new(seed)),
        _ => return None,
    })
}

#[cfg(test)]
pub(crate) mod testing {
    use super::Problem;
    use crate::model_set::ModelSet;

    /// A small problem with hand-set scores: `score(j, mask)` from a closure.
    pub fn problem(mem: &[u64], importance: &[f32], score: impl Fn(usize, ModelSet) -> f32) -> Problem {
        let n = mem.len();
        let mut s = vec![0.0; n << n];
        for j in 0..n {
            for mask in ModelSet::subsets(n) {
                s[(j << n) | mask.index()] = score(j, mask);
            }
        }
        Problem {
            n,
            importance: importance.to_vec(),
            model_mem: mem.to_vec(),
            flops: mem.to_vec(),
            max_active: n,
            link_mem: vec![0; n * n],
            ens_mem: vec![0; n],
            score: s,
            hold: vec![0.0; n * super::MAX_HOLD_AGE],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::problem;
    use crate::model_set::ModelSet;

    #[test]
    fn objective_and_cost() {
        let mut p =
            problem(
                &[10, 20, 30],
                &[1.0, 1.0, 2.0],
                |j, m| if m.is_empty() { 0.0 } else { 0.5 + 0.1 * j as f32 },
            );
        assert_eq!(p.cost(ModelSet::from_bits(0b011)), 30);
        assert_eq!(p.objective(ModelSet::from_bits(0)), 0.0);
        // A = {0}: tasks 1, 2 predicted at 0.6 and 0.7.
        assert!((p.objective(ModelSet::from_bits(0b001)) - (1.0 + 0.6 + 2.0 * 0.7) / 4.0).abs() < 1e-6);
        // Predicting only task 2.
        assert!(
            (p.objective_of(ModelSet::from_bits(0b001), ModelSet::from_bits(0b100))
                - (1.0 + 2.0 * 0.7) / 4.0)
                .abs()
                < 1e-6
        );
        assert_eq!(p.objective(ModelSet::from_bits(0b111)), 1.0);
        p.link_mem[2 * 3] = 5; // link 0 → 2
        p.ens_mem[2] = 1;
        assert_eq!(p.cost(ModelSet::from_bits(0b001)), 10 + 5 + 1 + p.ens_mem[1]);
        assert_eq!(p.cost_of(ModelSet::from_bits(0b001), ModelSet::from_bits(0b100)), 10 + 5 + 1);
        assert_eq!(p.cost_of(ModelSet::from_bits(0b001), ModelSet::from_bits(0)), 10);
        assert_eq!(p.standalone_objective(ModelSet::from_bits(0b100)), 0.5);
    }
}
