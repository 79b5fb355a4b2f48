//! The exact scheduler: every subset is scored once, ahead of time, and the budget → best-subset map
//! (a staircase over cost) is kept as a small table that the firmware searches in well under a
//! microsecond.

use crate::model_set::ModelSet;
use serde::{Deserialize, Serialize};

use super::{Decision, Problem, Scheduler};

/// Above this many models the table considers only "predict every other task" or "predict none"
/// per active set (2·2^n choices) instead of every (run, predict, nothing) assignment (3^n).
pub const MAX_FULL_ENUMERATION: usize = 10;

/// The Pareto staircase of (memory cost, objective) over every choice of which models run and which
/// tasks are predicted: entry k is the best choice among those costing at most `cost[k]`; costs and
/// objectives strictly increase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleTable {
    pub cost: Vec<u64>,
    /// Models that run.
    pub mask: Vec<ModelSet>,
    /// Tasks predicted through links.
    pub predicted: Vec<ModelSet>,
    pub objective: Vec<f32>,
}

impl ScheduleTable {
    /// Score every choice (3^n for n ≤ [`MAX_FULL_ENUMERATION`]) that runs at most
    /// `p.max_active` models, and keep the staircase.
    pub fn build(p: &Problem) -> ScheduleTable {
        let all = p.all();
        let mut choices: Vec<(u64, f32, ModelSet, ModelSet)> = Vec::new();
        for a in ModelSet::subsets(p.n) {
            if a.len() > p.max_active {
                continue;
            }
            let rest = all - a;
            if p.n <= MAX_FULL_ENUMERATION && !a.is_empty() {
                // Every subset of the remaining tasks.
                for q in rest.subsets_of() {
                    choices.push((p.cost_of(a, q), p.objective_of(a, q), a, q));
                }
            } else {
                let none = ModelSet::EMPTY;
                choices.push((p.cost_of(a, none), p.objective_of(a, none), a, none));
                if !a.is_empty() {
                    choices.push((p.cost_of(a, rest), p.objective_of(a, rest), a, rest));
                }
            }
        }
        // Cheapest first; among equal costs the best objective first, then fewer models.
        choices.sort_by(|x, y| x.0.cmp(&y.0).then(y.1.total_cmp(&x.1)).then(x.2.len().cmp(&y.2.len())));
        let mut t = ScheduleTable::default();
        for (c, o, m, q) in choices {
            if t.objective.last().is_none_or(|&best| o > best) {
                t.cost.push(c);
                t.mask.push(m);
                t.predicted.push(q);
                t.objective.push(o);
            }
        }
        t
    }

    /// Best choice within `budget`: (models to run, tasks to predict); (0, 0) when nothing fits.
    /// Binary search, no allocation.
    pub fn lookup(&self, budget: u64) -> (ModelSet, ModelSet) {
        let k = self.cost.partition_point(|&c| c <= budget);
        if k == 0 { (ModelSet::EMPTY, ModelSet::EMPTY) } else { (self.mask[k - 1], self.predicted[k - 1]) }
    }

    pub fn len(&self) -> usize {
        self.cost.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cost.is_empty()
    }
}

/// Exact search, through the table.
#[derive(Default)]
pub struct Optimal {
    table: ScheduleTable,
    active: ModelSet,
    predicted: ModelSet,
}

impl Optimal {
    /// Use a table computed earlier (the bundle's) instead of rebuilding it on the first `select`.
    pub fn with_table(table: ScheduleTable) -> Optimal {
        Optimal { table, active: ModelSet::EMPTY, predicted: ModelSet::EMPTY }
    }

    pub fn table(&self) -> &ScheduleTable {
        &self.table
    }

    pub fn active(&self) -> ModelSet {
        self.active
    }
}

impl Scheduler for Optimal {
    fn name(&self) -> &'static str {
        "optimal"
    }

    fn select(&mut self, problem: &Problem, budget: u64) {
        // Scores change when the period's profile refreshes them: rebuild (2^n subsets, microseconds
        // for the demo's 8 models).
        self.table = ScheduleTable::build(problem);
        (self.active, self.predicted) = self.table.lookup(budget);
    }

    fn decide(&mut self, _frame: &[u8]) -> Decision {
        Decision::Run { active: self.active, predict: self.predicted, hold: ModelSet::EMPTY }
    }

    fn peak_memory(&self, problem: &Problem) -> u64 {
        problem.cost_of(self.active, self.predicted)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::problem;
    use super::*;

    /// Brute force: best objective among every (run, predict) pair within the budget.
    fn brute(p: &Problem, budget: u64) -> f32 {
        let mut best = 0.0f32;
        for a in ModelSet::subsets(p.n) {
            for q in ModelSet::subsets(p.n) {
                if (q & a).is_empty() && p.cost_of(a, q) <= budget && a.len() <= p.max_active {
                    best = best.max(p.objective_of(a, q));
                }
            }
        }
        best
    }

    #[test]
    fn known_optimum_on_a_constructed_case() {
        // Model 2 is expensive but predicts everything well; models 0 and 1 are cheap and predict
        // only each other. With budget 100, {2} (cost 90) beats {0,1} (cost 20).
        let p = problem(&[10, 10, 90], &[1.0, 1.0, 1.0], |j, m| {
            if m.contains(2) {
                0.95
            } else if (j == 0 && m.contains(1)) || (j == 1 && m.contains(0)) {
                0.9
            } else {
                0.0
            }
        });
        let t = ScheduleTable::build(&p);
        assert_eq!(t.lookup(5).0, ModelSet::EMPTY);
        assert_eq!(t.lookup(10).0, ModelSet::from_bits(0b001));
        assert_eq!(t.lookup(20).0, ModelSet::from_bits(0b011));
        assert_eq!(t.lookup(95).0, ModelSet::from_bits(0b100));
        assert_eq!(t.lookup(100).0, ModelSet::from_bits(0b101));
        assert_eq!(t.lookup(1000).0, ModelSet::from_bits(0b111));
    }

    #[test]
    fn execution_budget_caps_the_models_run() {
        let mut rng = crate::links::Rng::new(11);
        for _ in 0..20 {
            let n = 2 + (rng.next_u64() % 5) as usize;
            let mem: Vec<u64> = (0..n).map(|_| 1 + rng.next_u64() % 50).collect();
            let scores: Vec<f32> = (0..n << n).map(|_| (rng.next_u64() % 1000) as f32 / 1000.0).collect();
            let k = 1 + (rng.next_u64() % (n as u64 - 1)) as usize;
            let p = problem(&mem, &vec![1.0; n], |j, m| scores[(j << n) | m.index()]).with_max_active(k);
            let t = ScheduleTable::build(&p);
            for budget in 0..mem.iter().sum::<u64>() + 10 {
                let (m, q) = t.lookup(budget);
                assert!(m.len() <= k, "{m} runs more than {k}");
                assert!((p.objective_of(m, q) - brute(&p, budget)).abs() < 1e-6, "budget {budget}, k {k}");
            }
        }
    }

    #[test]
    fn table_matches_brute_force_and_never_exceeds_the_budget() {
        let mut rng = crate::links::Rng::new(7);
        for _ in 0..50 {
            let n = 1 + (rng.next_u64() % 6) as usize;
            let mem: Vec<u64> = (0..n).map(|_| 1 + rng.next_u64() % 100).collect();
            let imp: Vec<f32> = (0..n).map(|_| 0.1 + (rng.next_u64() % 10) as f32 / 10.0).collect();
            let scores: Vec<f32> = (0..n << n).map(|_| (rng.next_u64() % 1000) as f32 / 1000.0).collect();
            let mut p = problem(&mem, &imp, |j, m| scores[(j << n) | m.index()]);
            for x in p.link_mem.iter_mut() {
                *x = rng.next_u64() % 5;
            }
            let t = ScheduleTable::build(&p);
            for budget in 0..(mem.iter().sum::<u64>() + 40) {
                let (m, q) = t.lookup(budget);
                assert_eq!(m & q, ModelSet::EMPTY);
                assert!(p.cost_of(m, q) <= budget);
                assert!((p.objective_of(m, q) - brute(&p, budget)).abs() < 1e-6, "budget {budget}");
                // At or above the no-link baseline at every budget.
                let mut s = super::super::Standalone::default();
                s.select(&p, budget);
                if let super::super::Decision::Run { active, .. } = s.decide(&[]) {
                    assert!(p.objective_of(m, q) >= p.standalone_objective(active) - 1e-6);
                }
            }
        }
    }
}
