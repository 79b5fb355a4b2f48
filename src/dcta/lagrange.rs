//! Lagrangian prices of a period's knapsack: one price per capacity (each unit's time and the
//! memory), in value per share of that capacity. For any prices ≥ 0, relaxing the capacities gives an
//! upper bound on the optimum that splits by task, L = Σ_u a_u + b + Σ_j max(0, max_o r_o) with
//! r_o = v_o − a_u · t_o / C_u − b · mem_o / M, because every task then just takes its best reduced
//! option. Both the device's bounded improvement ([`super::Refiner`]) and the exact solver's bound
//! use it; the subgradient step here is shared by both.

use super::MAX_UNITS;
use super::menu::{Choice, Instance};

/// Prices of the capacities in value per share: `unit[u]` for unit u's time, `mem` for the memory.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Prices {
    pub unit: [f64; MAX_UNITS],
    pub mem: f64,
}

/// The reciprocals of an instance's capacities (0 where a capacity is 0: such a capacity admits
/// only options that need none of it, which [`Instance::usable`] already filters).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Shares {
    pub unit: [f64; MAX_UNITS],
    pub mem: f64,
}

impl Shares {
    pub fn of(inst: &Instance) -> Shares {
        let mut s = Shares::default();
        for u in 0..inst.m {
            s.unit[u] = if inst.cap[u] > 0 { 1.0 / inst.cap[u] as f64 } else { 0.0 };
        }
        s.mem = if inst.mem_cap > 0 { 1.0 / inst.mem_cap as f64 } else { 0.0 };
        s
    }
}

impl Prices {
    /// The same price per share on every unit's time and `mem` on the memory: the priced greedy's
    /// prices (`Price`) in this form.
    pub fn uniform(m: usize, unit: f64, mem: f64) -> Prices {
        let mut p = Prices { mem, ..Prices::default() };
        p.unit[..m].fill(unit);
        p
    }

    /// Reduced value of option i of task j.
    #[inline]
    pub(crate) fn reduced(&self, inst: &Instance, sh: &Shares, j: usize, i: usize) -> f64 {
        self.reduced_at(inst, sh, j * inst.q + i, inst.unit(i))
    }

    /// Reduced value of option `o` (= j · q + i) on its unit `u`.
    #[inline]
    pub(crate) fn reduced_at(&self, inst: &Instance, sh: &Shares, o: usize, u: usize) -> f64 {
        inst.value[o] - self.unit[u] * inst.time_f[o] * sh.unit[u] - self.mem * inst.mem_f[o] * sh.mem
    }

    /// The capacity term of the bound for remaining capacities given as shares.
    #[inline]
    pub(crate) fn capacity_term(&self, m: usize, unit_share: &[f64], mem_share: f64) -> f64 {
        (0..m).map(|u| self.unit[u] * unit_share[u]).sum::<f64>() + self.mem * mem_share
    }

    /// One subgradient step from the Lagrangian solution `lag` (each task's best reduced option):
    /// raise the price of a capacity it overfills, lower (not below 0) one it leaves free, by the
    /// Polyak step θ · (bound − best known value) / ‖g‖². Returns false when the gradient is 0 (the
    /// Lagrangian solution fits with every priced capacity full: the prices are optimal).
    pub(crate) fn step(&mut self, inst: &Instance, lag: &Choice, bound: f64, best: f64, theta: f64) -> bool {
        let sh = Shares::of(inst);
        let mut g = [0.0f64; MAX_UNITS + 1];
        for j in 0..inst.n {
            if let Some(i) = lag.option_of(j) {
                let o = j * inst.q + i;
                g[inst.unit(i)] += inst.time_f[o] * sh.unit[inst.unit(i)];
                g[MAX_UNITS] += inst.mem_f[o] * sh.mem;
            }
        }
        let mut norm = 0.0;
        for u in 0..inst.m {
            g[u] -= 1.0;
            // A free capacity whose price is already 0 cannot move: it adds nothing to the step.
            if g[u] < 0.0 && self.unit[u] <= 0.0 {
                g[u] = 0.0;
            }
            norm += g[u] * g[u];
        }
        g[MAX_UNITS] -= 1.0;
        if g[MAX_UNITS] < 0.0 && self.mem <= 0.0 {
            g[MAX_UNITS] = 0.0;
        }
        norm += g[MAX_UNITS] * g[MAX_UNITS];
        if norm <= 1e-18 {
            return false;
        }
        let s = theta * (bound - best).max(1e-9 * bound.abs().max(1e-12)) / norm;
        for u in 0..inst.m {
            self.unit[u] = (self.unit[u] + s * g[u]).max(0.0);
        }
        self.mem = (self.mem + s * g[MAX_UNITS]).max(0.0);
        true
    }
}
