//! The exact scheduler: every subset is scored once, ahead of time, and the budget → best-subset map
//! (a staircase over cost) is kept as a small table that the firmware searches in well under a
//! microsecond.

use serde::{Deserialize, Serialize};

use super::{Decision, Problem, Scheduler};

/// The Pareto staircase of (memory cost, objective): entry k is the best subset among those costing
/// at most `cost[k]`; costs strictly increase and so do objectives.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleTable {
    pub cost: Vec<u64>,
    pub mask: Vec<u64>,
    pub objective: Vec<f32>,
}

impl ScheduleTable {
    /// Score every subset of the problem (2^n) and keep the staircase.
    pub fn build(p: &Problem) -> ScheduleTable {
        let mut all: Vec<(u64, f32, u64)> = (0..=p.all()).map(|m| (p.cost(m), p.objective(m), m)).collect();
        // Cheapest first; among equal costs the best objective first, then fewer models.
        all.sort_by(|a, b| {
            a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)).then(a.2.count_ones().cmp(&b.2.count_ones()))
        });
        let mut t = ScheduleTable::default();
        for (c, o, m) in all {
            if t.objective.last().is_none_or(|&best| o > best) {
                t.cost.push(c);
                t.mask.push(m);
                t.objective.push(o);
            }
        }
        t
    }

    /// Best subset within `budget` (0 when nothing fits). Binary search, no allocation.
    pub fn lookup(&self, budget: u64) -> u64 {
        let k = self.cost.partition_point(|&c| c <= budget);
        if k == 0 { 0 } else { self.mask[k - 1] }
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
    active: u64,
}

impl Optimal {
    /// Use a table computed earlier (the bundle's) instead of rebuilding it on the first `select`.
    pub fn with_table(table: ScheduleTable) -> Optimal {
        Optimal { table, active: 0 }
    }

    pub fn table(&self) -> &ScheduleTable {
        &self.table
    }

    pub fn active(&self) -> u64 {
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
        self.active = self.table.lookup(budget);
    }

    fn decide(&mut self, _frame: &[u8]) -> Decision {
        Decision::Run { active: self.active, predict: true }
    }

    fn peak_memory(&self, problem: &Problem) -> u64 {
        problem.cost(self.active)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::problem;
    use super::*;

    /// Brute force: best objective among subsets within the budget.
    fn brute(p: &Problem, budget: u64) -> f32 {
        (0..=p.all()).filter(|&m| p.cost(m) <= budget).map(|m| p.objective(m)).fold(0.0, f32::max)
    }

    #[test]
    fn known_optimum_on_a_constructed_case() {
        // Model 2 is expensive but predicts everything well; models 0 and 1 are cheap and predict
        // only each other. With budget 100, {2} (cost 90) beats {0,1} (cost 20).
        let p = problem(&[10, 10, 90], &[1.0, 1.0, 1.0], |j, m| {
            if m & 0b100 != 0 {
                0.95
            } else if (j == 0 && m & 0b010 != 0) || (j == 1 && m & 0b001 != 0) {
                0.9
            } else {
                0.0
            }
        });
        let t = ScheduleTable::build(&p);
        assert_eq!(t.lookup(5), 0);
        assert_eq!(t.lookup(10), 0b001);
        assert_eq!(t.lookup(20), 0b011);
        assert_eq!(t.lookup(95), 0b100);
        assert_eq!(t.lookup(100), 0b101);
        assert_eq!(t.lookup(1000), 0b111);
    }

    #[test]
    fn table_matches_brute_force_and_never_exceeds_the_budget() {
        let mut rng = crate::links::Rng::new(7);
        for _ in 0..50 {
            let n = 1 + (rng.next_u64() % 6) as usize;
            let mem: Vec<u64> = (0..n).map(|_| 1 + rng.next_u64() % 100).collect();
            let imp: Vec<f32> = (0..n).map(|_| 0.1 + (rng.next_u64() % 10) as f32 / 10.0).collect();
            let scores: Vec<f32> = (0..n << n).map(|_| (rng.next_u64() % 1000) as f32 / 1000.0).collect();
            let mut p = problem(&mem, &imp, |j, m| scores[(j << n) | m as usize]);
            for x in p.link_mem.iter_mut() {
                *x = rng.next_u64() % 5;
            }
            let t = ScheduleTable::build(&p);
            for budget in 0..(mem.iter().sum::<u64>() + 40) {
                let m = t.lookup(budget);
                assert!(p.cost(m) <= budget);
                assert!((p.objective(m) - brute(&p, budget)).abs() < 1e-6, "budget {budget}");
            }
        }
    }
}
