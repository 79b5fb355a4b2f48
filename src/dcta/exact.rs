//! The exact TATIM solver: depth-first branch and bound over tasks in order of value density, each
//! task onto any unit it fits or onto none. The bound is Dantzig's fractional knapsack over the
//! remaining tasks with each task's cheapest cost and the units' pooled remaining capacity; units
//! with identical costs and capacity are not tried twice from the same remaining capacity; the
//! greedy answer is the first incumbent. The workspace is fixed-size: solving does not allocate.

use super::greedy::greedy;
use super::problem::{Allocation, Problem};
use super::{MAX_TASKS, MAX_UNITS};

const NO_TWIN: u8 = u8::MAX;

/// A reusable exact solver.
#[derive(Clone, Debug)]
pub struct ExactSolver {
    p: Problem,
    /// Tasks worth branching on, by density v_j / cmin_j descending.
    order: [u8; MAX_TASKS],
    len: usize,
    cmin: [u64; MAX_TASKS],
    /// Per task, units by c_ju / C_u ascending (the branching order).
    units: [[u8; MAX_UNITS]; MAX_TASKS],
    /// An earlier unit with the same costs and capacity, or `NO_TWIN`.
    twin: [u8; MAX_UNITS],
    rem: [u64; MAX_UNITS],
    cur: Allocation,
    best: Allocation,
    best_value: f64,
    nodes: u64,
}

impl Default for ExactSolver {
    fn default() -> ExactSolver {
        ExactSolver::new()
    }
}

impl ExactSolver {
    pub fn new() -> ExactSolver {
        let p = Problem {
            n: 0,
            m: 0,
            values: [0.0; MAX_TASKS],
            costs: [[0; MAX_UNITS]; MAX_TASKS],
            capacity: [0; MAX_UNITS],
        };
        ExactSolver {
            p,
            order: [0; MAX_TASKS],
            len: 0,
            cmin: [0; MAX_TASKS],
            units: [[0; MAX_UNITS]; MAX_TASKS],
            twin: [NO_TWIN; MAX_UNITS],
            rem: [0; MAX_UNITS],
            cur: Allocation::empty(0),
            best: Allocation::empty(0),
            best_value: 0.0,
            nodes: 0,
        }
    }

    /// An optimal allocation of `p` and its value.
    pub fn solve(&mut self, p: &Problem) -> (Allocation, f64) {
        self.p = *p;
        let (n, m) = (p.n, p.m);
        self.len = 0;
        self.nodes = 0;
        for j in 0..n {
            let mut c = u64::MAX;
            for u in 0..m {
                if p.costs[j][u] <= p.capacity[u] {
                    c = c.min(p.costs[j][u]);
                }
            }
            if c == u64::MAX || p.values[j] <= 0.0 {
                continue;
            }
            self.cmin[j] = c;
            let d = p.values[j] / c.max(1) as f64;
            let mut i = self.len;
            while i > 0 {
                let k = self.order[i - 1] as usize;
                if p.values[k] / self.cmin[k].max(1) as f64 >= d {
                    break;
                }
                self.order[i] = self.order[i - 1];
                i -= 1;
            }
            self.order[i] = j as u8;
            self.len += 1;
            // Units by share of capacity, ascending.
            let row = &mut self.units[j];
            for (u, slot) in row.iter_mut().enumerate().take(m) {
                *slot = u as u8;
            }
            let share = |u: u8| p.costs[j][u as usize] as f64 / p.capacity[u as usize].max(1) as f64;
            for a in 1..m {
                let mut b = a;
                while b > 0 && share(row[b - 1]) > share(row[b]) {
                    row.swap(b - 1, b);
                    b -= 1;
                }
            }
        }
        for u in 0..m {
            self.twin[u] = NO_TWIN;
            for t in 0..u {
                if p.capacity[t] == p.capacity[u] && (0..n).all(|j| p.costs[j][t] == p.costs[j][u]) {
                    self.twin[u] = t as u8;
                    break;
                }
            }
        }
        self.best = greedy(p);
        self.best_value = p.value_of(&self.best);
        self.cur = Allocation::empty(n);
        self.rem[..m].copy_from_slice(&p.capacity[..m]);
        self.dfs(0, 0.0);
        (self.best, self.best_value)
    }

    /// Search nodes visited by the last [`solve`](Self::solve).
    pub fn nodes(&self) -> u64 {
        self.nodes
    }

    fn dfs(&mut self, k: usize, value: f64) {
        self.nodes += 1;
        if value > self.best_value {
            self.best_value = value;
            self.best = self.cur;
        }
        if k == self.len || value + self.bound(k) <= self.best_value * (1.0 + 1e-12) {
            return;
        }
        let j = self.order[k] as usize;
        let v = self.p.values[j];
        for i in 0..self.p.m {
            let u = self.units[j][i] as usize;
            let c = self.p.costs[j][u];
            if c > self.rem[u] {
                continue;
            }
            let t = self.twin[u];
            if t != NO_TWIN && self.rem[t as usize] == self.rem[u] {
                continue;
            }
            self.rem[u] -= c;
            self.cur.set(j, Some(u));
            self.dfs(k + 1, value + v);
            self.cur.set(j, None);
            self.rem[u] += c;
        }
        self.dfs(k + 1, value);
    }

    /// Fractional-knapsack bound on what tasks `order[k..]` can still add.
    fn bound(&self, k: usize) -> f64 {
        let p = &self.p;
        let mut cap: u64 = self.rem[..p.m].iter().sum();
        let mut b = 0.0;
        for &j in &self.order[k..self.len] {
            let j = j as usize;
            if !(0..p.m).any(|u| p.costs[j][u] <= self.rem[u]) {
                continue;
            }
            let c = self.cmin[j];
            if c <= cap {
                cap -= c;
                b += p.values[j];
            } else {
                b += p.values[j] * cap as f64 / c as f64;
                break;
            }
        }
        b
    }
}
