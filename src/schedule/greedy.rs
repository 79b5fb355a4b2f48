//! The MLink paper's greedy rule: rank models by activation probability
//! `P_i = (1 + P¹_i − P²_i) / (w · c(f_i))`, with P¹_i the mean score of links out of i, P²_i the mean
//! score of links into i and `w = 2 / min c`, then activate in that order while the budget allows.

use super::{Decision, Problem, Scheduler};
use crate::model_set::ModelSet;

#[derive(Default)]
pub struct Greedy {
    active: ModelSet,
    all: ModelSet,
    order: Vec<usize>,
}

impl Greedy {
    /// Models in decreasing activation probability.
    pub fn ranking(p: &Problem) -> Vec<usize> {
        let n = p.n;
        let min_c = p.model_mem.iter().copied().min().unwrap_or(1).max(1) as f64;
        let w = 2.0 / min_c;
        let single = |i: usize, j: usize| p.p(j, ModelSet::single(i)) as f64;
        let prob: Vec<f64> = (0..n)
            .map(|i| {
                let others = (n - 1).max(1) as f64;
                let out: f64 = (0..n).filter(|&j| j != i).map(|j| single(i, j)).sum::<f64>() / others;
                let into: f64 = (0..n).filter(|&j| j != i).map(|j| single(j, i)).sum::<f64>() / others;
                (1.0 + out - into) / (w * p.model_mem[i].max(1) as f64)
            })
            .collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| prob[b].total_cmp(&prob[a]).then(a.cmp(&b)));
        order
    }
}

impl Scheduler for Greedy {
    fn name(&self) -> &'static str {
        "greedy"
    }

    fn select(&mut self, problem: &Problem, budget: u64) {
        self.order = Greedy::ranking(problem);
        self.all = problem.all();
        let mut a = ModelSet::EMPTY;
        for &i in &self.order {
            let next = a.with(i);
            if problem.cost(next) <= budget && next.len() <= problem.max_active {
                a = next;
            }
        }
        self.active = a;
    }

    fn decide(&mut self, _frame: &[u8]) -> Decision {
        Decision::Run { active: self.active, predict: self.all - self.active, hold: ModelSet::EMPTY }
    }

    fn peak_memory(&self, problem: &Problem) -> u64 {
        problem.cost(self.active)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::problem;
    use super::*;

    #[test]
    fn ranks_good_cheap_sources_first_and_respects_the_budget() {
        // Model 0 predicts the others well (0.9) and is poorly predicted; model 2 is expensive.
        let p = problem(&[10, 10, 40], &[1.0; 3], |j, m| match (j, m.bits()) {
            (_, 0b001) => 0.9,
            (0, _) => 0.1,
            _ => 0.5,
        });
        assert_eq!(Greedy::ranking(&p)[0], 0);
        let mut g = Greedy::default();
        g.select(&p, 25);
        assert_eq!(g.active, ModelSet::from_bits(0b011));
        assert!(p.cost(g.active) <= 25);
        g.select(&p, 5);
        assert_eq!(g.active, ModelSet::EMPTY);
    }
}
