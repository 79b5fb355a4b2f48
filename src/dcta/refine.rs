//! The device's bounded improvement of a decision: a few rounds of Lagrangian pricing, each a fixed
//! number of passes over the options. A round lets every task take its best option under the current
//! capacity prices ([`Prices`]; that also gives an upper bound on the optimum), repairs that into a
//! feasible choice (tasks admitted by reduced value, a task that no longer fits takes its best option
//! that does, then each task moves to its most valuable option that still fits), keeps it if it beats
//! the best so far, and moves the prices by a subgradient step. The rounds stop early once the best
//! choice reaches the bound (it is optimal). Work per call is at most
//! rounds × (3 · n · q + the ordering's bound) option and ordering steps ([`Refiner::work_bound`]), counted as it runs
//! ([`Refiner::work`]); nothing is allocated.

use super::MAX_UNITS;
use super::greedy::{TaskOrder, first_max_of, first_max_priced, sort_bound};
use super::lagrange::{Prices, Shares};
use super::menu::{Choice, Instance};

/// Scratch of the bounded improvement (sized once).
#[derive(Clone, Debug)]
pub struct Refiner {
    /// Per task: its best reduced value under the round's prices.
    red: Vec<f64>,
    order: Vec<u8>,
    /// Scratch of the tasks' ordering.
    sorter: TaskOrder,
    /// One task's reduced values.
    row: Vec<f64>,
    lag: Choice,
    work: u64,
    bound: f64,
    prices: Prices,
    /// The prices at which `bound` was met.
    bound_prices: Prices,
}

impl Refiner {
    pub fn with_size(n: usize) -> Refiner {
        Refiner {
            red: vec![0.0; n],
            order: vec![0; n],
            sorter: TaskOrder::with_size(n),
            row: vec![0.0; super::MAX_UNITS * super::MAX_CHOICES],
            lag: Choice::empty(n),
            work: 0,
            bound: f64::INFINITY,
            prices: Prices::default(),
            bound_prices: Prices::default(),
        }
    }

    /// Most steps [`refine`](Self::refine) takes on n tasks of q options in `rounds` rounds.
    pub fn work_bound(n: usize, q: usize, rounds: usize) -> u64 {
        rounds as u64 * ((3 * n * q) as u64 + sort_bound(n))
    }

    /// Steps the last call took (options looked at, plus ordering steps).
    pub fn work(&self) -> u64 {
        self.work
    }

    /// Count `steps` done for the same decision outside the improvement (the decision's total).
    pub(crate) fn add_work(&mut self, steps: u64) {
        self.work += steps;
    }

    /// The smallest Lagrangian upper bound on the optimum the last call met (infinite when it ran no
    /// round).
    pub fn bound(&self) -> f64 {
        self.bound
    }

    /// The prices the last call ended with.
    pub fn prices(&self) -> Prices {
        self.prices
    }

    /// The prices at which the last call met its smallest bound ([`bound`](Self::bound)).
    pub fn bound_prices(&self) -> Prices {
        self.bound_prices
    }

    /// A feasible choice at least as good as `start` (which must be feasible), from at most `rounds`
    /// rounds starting at `prices`. Panics if `inst` has more tasks than the scratch.
    pub fn refine(&mut self, inst: &Instance, start: Choice, prices: Prices, rounds: usize) -> Choice {
        let n = inst.n;
        assert!(n <= self.red.len(), "instance larger than the refiner ({n} tasks)");
        let sh = Shares::of(inst);
        let mut best = start;
        let mut best_v = inst.value_of(&start);
        let mut p = prices;
        self.work = 0;
        self.bound = f64::INFINITY;
        self.bound_prices = p;
        self.lag = Choice::empty(n);
        // θ of the Polyak step, halved after a round that did not lower the bound (the usual rule).
        let mut theta = 1.0;
        for _ in 0..rounds {
            let l = self.relax(inst, &sh, &p);
            if l < self.bound {
                self.bound = l;
                self.bound_prices = p;
            } else {
                theta *= 0.5;
            }
            if best_v >= l - 1e-9 * l.abs() {
                break; // the best choice reaches the bound: optimal
            }
            let cand = self.repair(inst, &sh, &p);
            let v = inst.value_of(&cand);
            if v > best_v {
                (best, best_v) = (cand, v);
            }
            if !p.step(inst, &self.lag, l, best_v, theta) {
                break;
            }
        }
        self.prices = p;
        best
    }

    /// Every task's best usable option under prices `p` (into `lag` and `red`); returns the bound.
    fn relax(&mut self, inst: &Instance, sh: &Shares, p: &Prices) -> f64 {
        let (n, q, m) = (inst.n, inst.q, inst.m);
        let mut l = p.capacity_term(m, &[1.0; MAX_UNITS], 1.0);
        // Prices per µs and per byte-frame (the unit of an option is looked up, not divided for).
        let mut per_us = [0.0f64; MAX_UNITS];
        for u in 0..m {
            per_us[u] = p.unit[u] * sh.unit[u];
        }
        let per_mem = p.mem * sh.mem;
        for j in 0..n {
            // The first largest reduced value above 0 (an option not usable has `live` −∞ and is
            // never taken).
            let row = j * q..(j + 1) * q;
            let (live, tf, mf) = (&inst.live[row.clone()], &inst.time_f[row.clone()], &inst.mem_f[row]);
            let best = if m == 1 {
                // One unit: one price per µs, a scan of slices.
                first_max_priced(live, tf, mf, (per_us[0], per_mem), 0.0)
            } else {
                // Several: the unit's price looked up where each option is compared (a scan per
                // unit costs more at a few K per unit).
                first_max_of(q, 0.0, |i| live[i] - per_us[inst.unit(i)] * tf[i] - per_mem * mf[i])
            };
            let best = best.map_or((0.0, None), |(r, i)| (r, Some(i)));
            self.red[j] = best.0;
            self.lag.set(j, best.1);
            l += best.0;
        }
        self.work += (n * q) as u64;
        l
    }

    /// A feasible choice near the Lagrangian one.
    fn repair(&mut self, inst: &Instance, sh: &Shares, p: &Prices) -> Choice {
        let n = inst.n;
        let mut len = 0;
        for j in 0..n {
            if self.lag.option_of(j).is_some() {
                self.order[len] = j as u8;
                len += 1;
            }
        }
        self.work += self.sorter.sort(&self.red, &mut self.order[..len]);
        let rest = (0..n).filter(|&j| self.lag.option_of(j).is_none());
        let want = |j: usize| self.lag.option_of(j).expect("ordered tasks have a Lagrangian option");
        let (c, work) = super::greedy::pack(
            inst,
            &self.order[..len],
            want,
            |o, u| p.reduced_at(inst, sh, o, u),
            rest,
            &mut self.row,
        );
        self.work += work;
        c
    }
}
