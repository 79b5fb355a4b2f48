//! The priced greedy: the policy's run-time step and the exact solver's first incumbent. Each task
//! picks the option with the best value less the prices of the time and memory it takes; tasks are
//! admitted by value per share of capacity while they fit (a task that no longer fits takes its best
//! option that does); a last pass moves each task to the most valuable option that still fits.
//! O(n · q) per decision, no allocation. With [`Price::NONE`] it is the plain density greedy.

use serde::{Deserialize, Serialize};

use super::MAX_UNITS;
use super::menu::{Choice, Instance};

/// Prices θ of capacity, relative to the instance: λ = θ_time · V / m per share of a unit's time and
/// μ = θ_mem · V per share of the free memory, V = Σ_j (best value of task j).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub time: f32,
    pub mem: f32,
}

impl Price {
    /// No price: options by value, tasks by density.
    pub const NONE: Price = Price { time: 0.0, mem: 0.0 };
}

/// Scratch of the priced greedy (sized once).
#[derive(Clone, Debug)]
pub struct Greedy {
    pick: Vec<u8>,
    eff: Vec<f64>,
    order: Vec<u8>,
    /// V of the last solve.
    total: f64,
    /// Steps of the last solve: options looked at, plus ordering steps.
    work: u64,
}

const NONE: u8 = Choice::NONE;

impl Greedy {
    pub fn with_size(n: usize) -> Greedy {
        Greedy { pick: vec![NONE; n], eff: vec![0.0; n], order: vec![0; n], total: 0.0, work: 0 }
    }

    /// Most steps a solve takes on n tasks of q options: four passes over the options (best
    /// values, priced picks, fallbacks, upgrades) and an insertion sort of the tasks.
    pub fn work_bound(n: usize, q: usize) -> u64 {
        (4 * n * q + n * n) as u64
    }

    /// Steps the last solve took (options looked at, plus ordering steps).
    pub fn work(&self) -> u64 {
        self.work
    }

    /// V = Σ_j (best value of task j) of the last solve: what its prices are relative to.
    pub fn total(&self) -> f64 {
        self.total
    }

    /// A feasible choice for `inst` at prices `price`. Panics if `inst` has more tasks than the
    /// scratch.
    pub fn solve(&mut self, inst: &Instance, price: Price) -> Choice {
        let (n, q, m, k) = (inst.n, inst.q, inst.m, inst.k);
        assert!(n <= self.pick.len(), "instance larger than the greedy ({n} tasks)");
        // Options are walked unit by unit (option u · k + c), in the same order as by index, so
        // that no option needs a division to find its unit.
        let usable = |o: usize, u: usize| {
            inst.value[o] > 0.0 && inst.time[o] <= inst.cap[u] && inst.mem[o] <= inst.mem_cap
        };
        let mut total = 0.0;
        for j in 0..n {
            let mut best = 0.0f64;
            for u in 0..m {
                for c in 0..k {
                    let o = j * q + u * k + c;
                    if usable(o, u) {
                        best = best.max(inst.value[o]);
                    }
                }
            }
            total += best;
        }
        self.total = total;
        self.work = (n * q) as u64;
        if total <= 0.0 {
            return Choice::empty(n);
        }
        let lambda = price.time as f64 * total / m as f64;
        let mu = price.mem as f64 * total;
        let shares_on = |o: usize, u: usize| -> (f64, f64) {
            let st = inst.time[o] as f64 / inst.cap[u].max(1) as f64;
            let sm = if inst.mem[o] > 0 { inst.mem[o] as f64 / inst.mem_cap.max(1) as f64 } else { 0.0 };
            (st, sm)
        };
        let shares = |j: usize, i: usize| shares_on(j * q + i, inst.unit(i));
        let score_on = |o: usize, u: usize| {
            let (st, sm) = shares_on(o, u);
            inst.value[o] - lambda * st - mu * sm
        };
        let score = |j: usize, i: usize| score_on(j * q + i, inst.unit(i));
        let mut len = 0;
        for j in 0..n {
            self.pick[j] = NONE;
            let mut best = (0.0, NONE);
            for u in 0..m {
                for c in 0..k {
                    let o = j * q + u * k + c;
                    if usable(o, u) {
                        let s = score_on(o, u);
                        if s > best.0 {
                            best = (s, (u * k + c) as u8);
                        }
                    }
                }
            }
            if best.1 == NONE {
                continue;
            }
            self.pick[j] = best.1;
            let (st, sm) = shares(j, best.1 as usize);
            let e = inst.value[j * q + best.1 as usize] / (st + sm).max(1e-12);
            self.eff[j] = e;
            let mut at = len;
            while at > 0 && self.eff[self.order[at - 1] as usize] < e {
                self.order[at] = self.order[at - 1];
                at -= 1;
            }
            self.order[at] = j as u8;
            len += 1;
        }
        self.work += (n * q + n * n) as u64;
        let unranked = (0..n).filter(|&j| self.pick[j] == NONE);
        let (choice, work) = pack(inst, &self.order[..len], |j| self.pick[j] as usize, score, unranked);
        self.work += work;
        choice
    }
}

/// The second half of a priced greedy, shared by [`Greedy`] and the Lagrangian improvement
/// (`refine.rs`): admit the tasks of `order` in turn, each at its option `want(j)` or, when that
/// does not fit what the tasks before it left, at its fitting option of highest `score(j, i)`
/// (skipped when none fits); then move every task (`order` first, then `rest`) to its most valuable
/// option that fits what the others leave. Returns the choice and the options looked at.
pub(crate) fn pack(
    inst: &Instance,
    order: &[u8],
    want: impl Fn(usize) -> usize,
    score: impl Fn(usize, usize) -> f64,
    rest: impl Iterator<Item = usize>,
) -> (Choice, u64) {
    let (n, q, m, k) = (inst.n, inst.q, inst.m, inst.k);
    let mut work = 0u64;
    let mut choice = Choice::empty(n);
    let mut rem = [0u64; MAX_UNITS];
    rem[..m].copy_from_slice(&inst.cap[..m]);
    let mut mem_rem = inst.mem_cap;
    let fits = |rem: &[u64; MAX_UNITS], mem_rem: u64, j: usize, i: usize| {
        let o = j * q + i;
        inst.time[o] <= rem[inst.unit(i)] && inst.mem[o] <= mem_rem
    };
    for &j in order {
        let j = j as usize;
        let mut take = want(j);
        if !fits(&rem, mem_rem, j, take) {
            let mut best = (f64::NEG_INFINITY, usize::MAX);
            for i in 0..q {
                if inst.value[j * q + i] > 0.0 && fits(&rem, mem_rem, j, i) {
                    let s = score(j, i);
                    if s > best.0 {
                        best = (s, i);
                    }
                }
            }
            work += q as u64;
            if best.1 == usize::MAX {
                continue;
            }
            take = best.1;
        }
        let o = j * q + take;
        rem[inst.unit(take)] -= inst.time[o];
        mem_rem -= inst.mem[o];
        choice.set(j, Some(take));
    }
    // Upgrade: each task to its most valuable option that fits what the others leave.
    for j in order.iter().map(|&j| j as usize).chain(rest) {
        if let Some(i) = choice.option_of(j) {
            let o = j * q + i;
            rem[inst.unit(i)] += inst.time[o];
            mem_rem += inst.mem[o];
        }
        let mut best = (choice.option_of(j).map_or(0.0, |i| inst.value[j * q + i]), choice.option_of(j));
        for u in 0..m {
            for c in 0..k {
                let o = j * q + u * k + c;
                let v = inst.value[o];
                if v > best.0 && inst.time[o] <= rem[u] && inst.mem[o] <= mem_rem {
                    best = (v, Some(u * k + c));
                }
            }
        }
        if let Some(i) = best.1 {
            let o = j * q + i;
            rem[inst.unit(i)] -= inst.time[o];
            mem_rem -= inst.mem[o];
        }
        choice.set(j, best.1);
    }
    work += (n * q) as u64;
    (choice, work)
}
