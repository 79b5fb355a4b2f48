//! The greedy baseline: tasks in order of importance per unit of normalised cost, each onto the unit
//! where it takes the smallest share of the capacity among those it still fits. O(n·(n + m)), no
//! allocation; the device's fallback outside the policy table.

use super::problem::{Allocation, Problem};
use super::{MAX_TASKS, MAX_UNITS};

/// Greedy allocation of `p` (always feasible).
pub fn greedy(p: &Problem) -> Allocation {
    greedy_first(p, p.n)
}

/// Greedy over the first `k ≤ n` tasks only; the others stay unassigned.
pub(crate) fn greedy_first(p: &Problem, k: usize) -> Allocation {
    let mut a = Allocation::empty(p.n);
    let k = k.min(p.n);
    // Density v_j / min_u (c_ju / C_u); tasks that fit nowhere or are worth nothing are left out.
    let mut order = [0u8; MAX_TASKS];
    let mut density = [0.0f64; MAX_TASKS];
    let mut len = 0;
    for j in 0..k {
        let mut best = f64::INFINITY;
        for u in 0..p.m {
            if p.costs[j][u] <= p.capacity[u] && p.capacity[u] > 0 {
                best = best.min(p.costs[j][u] as f64 / p.capacity[u] as f64);
            }
        }
        if best.is_finite() && p.values[j] > 0.0 {
            density[j] = p.values[j] / best.max(f64::MIN_POSITIVE);
            // Insertion sort, descending density; ties keep task order.
            let mut i = len;
            while i > 0 && density[order[i - 1] as usize] < density[j] {
                order[i] = order[i - 1];
                i -= 1;
            }
            order[i] = j as u8;
            len += 1;
        }
    }
    let mut rem = [0u64; MAX_UNITS];
    rem[..p.m].copy_from_slice(&p.capacity[..p.m]);
    for &j in &order[..len] {
        let j = j as usize;
        let mut pick = None;
        let mut share = f64::INFINITY;
        for (u, &r) in rem.iter().enumerate().take(p.m) {
            let c = p.costs[j][u];
            if c <= r {
                let s = c as f64 / p.capacity[u] as f64;
                if s < share {
                    share = s;
                    pick = Some(u);
                }
            }
        }
        if let Some(u) = pick {
            rem[u] -= p.costs[j][u];
            a.set(j, Some(u));
        }
    }
    a
}
