//! The priced greedy: the policy's run-time step and the exact solver's first incumbent. Each task
//! picks the option with the best value less the prices of the time and memory it takes; tasks are
//! admitted by value per share of capacity while they fit (a task that no longer fits takes its best
//! option that does); a last pass moves each task to the most valuable option that still fits.
//! O(n · q) option steps and an ordering of the tasks per solve, no allocation. With
//! [`Price::NONE`] it is the plain density greedy.

use serde::{Deserialize, Serialize};

use super::menu::{Choice, Instance};
use super::{MAX_CHOICES, MAX_UNITS};

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
    /// Scratch of the tasks' ordering.
    sorter: TaskOrder,
    /// One task's scores.
    row: Vec<f64>,
    /// V of the last solve.
    total: f64,
    /// Steps of the last solve: options looked at, plus ordering steps.
    work: u64,
}

const NONE: u8 = Choice::NONE;

impl Greedy {
    pub fn with_size(n: usize) -> Greedy {
        Greedy {
            pick: vec![NONE; n],
            eff: vec![0.0; n],
            order: vec![0; n],
            sorter: TaskOrder::with_size(n),
            row: vec![0.0; MAX_UNITS * MAX_CHOICES],
            total: 0.0,
            work: 0,
        }
    }

    /// Most steps a solve takes on n tasks of q options: V from the tasks' tops (n), then
    /// [`work_bound_from`](Self::work_bound_from).
    pub fn work_bound(n: usize, q: usize) -> u64 {
        n as u64 + Self::work_bound_from(n, q)
    }

    /// Most steps [`solve_from`](Self::solve_from) takes: a pass over the options for the priced
    /// picks (none unpriced: each task's top is known), one step a task for their efficiencies, the
    /// tasks' ordering ([`TaskOrder`]), and
    /// [`pack`]'s fallbacks and upgrades (at most a pass each).
    pub fn work_bound_from(n: usize, q: usize) -> u64 {
        (3 * n * q + n) as u64 + sort_bound(n)
    }

    /// Steps the last solve took (options looked at, plus ordering steps).
    pub fn work(&self) -> u64 {
        self.work
    }

    /// V = Σ_j (best value of task j) of the last solve: what its prices are relative to.
    pub fn total(&self) -> f64 {
        self.total
    }

    /// V = Σ_j (best usable value of task j), from the instance's derived tops (n steps).
    pub fn total_of(inst: &Instance) -> f64 {
        inst.top_value[..inst.n].iter().sum()
    }

    /// A feasible choice for `inst` at prices `price`. Panics if `inst` has more tasks than the
    /// scratch.
    pub fn solve(&mut self, inst: &Instance, price: Price) -> Choice {
        let total = Self::total_of(inst);
        let c = self.solve_from(inst, price, total);
        self.work += inst.n as u64;
        c
    }

    /// [`solve`](Self::solve) with V already known (`total` = [`Greedy::total_of`]), so that two
    /// solves of one instance at different prices share that pass.
    pub fn solve_from(&mut self, inst: &Instance, price: Price, total: f64) -> Choice {
        let (n, q, m) = (inst.n, inst.q, inst.m);
        assert!(n <= self.pick.len(), "instance larger than the greedy ({n} tasks)");
        self.total = total;
        self.work = 0;
        if total <= 0.0 {
            return Choice::empty(n);
        }
        let lambda = price.time as f64 * total / m as f64;
        let mu = price.mem as f64 * total;
        let score =
            |o: usize, _u: usize| inst.value[o] - lambda * inst.time_share[o] - mu * inst.mem_share[o];
        let mut len = 0;
        for j in 0..n {
            self.pick[j] = NONE;
            let row = j * q..(j + 1) * q;
            let (live, ts, ms) =
                (&inst.live[row.clone()], &inst.time_share[row.clone()], &inst.mem_share[row]);
            let i = if price == Price::NONE {
                // Unpriced, the pick is the task's most valuable usable option: known already.
                if inst.top_at[j] == NONE {
                    continue;
                }
                inst.top_at[j] as usize
            } else {
                // The first largest priced score above 0 (an option not usable has `live` −∞ and
                // is never taken), without branches.
                let Some((_, i)) = first_max_priced(live, ts, ms, (lambda, mu), 0.0) else {
                    continue;
                };
                self.work += q as u64;
                i
            };
            self.pick[j] = i as u8;
            self.eff[j] = live[i] / (ts[i] + ms[i]).max(1e-12);
            self.order[len] = j as u8;
            len += 1;
        }
        self.work += n as u64;
        self.work += self.sorter.sort(&self.eff, &mut self.order[..len]);
        let unranked = (0..n).filter(|&j| self.pick[j] == NONE);
        let (choice, work) =
            pack(inst, &self.order[..len], |j| self.pick[j] as usize, score, unranked, &mut self.row);
        self.work += work;
        choice
    }
}

/// Most steps [`TaskOrder::sort`] takes for a scratch of n tasks: 2n looked at and at most
/// n (n − 1) / 2 moves.
pub(crate) fn sort_bound(n: usize) -> u64 {
    (2 * n + n * n.saturating_sub(1) / 2) as u64
}

/// The largest value of `row` strictly above `floor` and the first index holding it (`None` when
/// no value is above `floor`): what a scan keeping the first strictly larger value finds.
#[inline]
pub(crate) fn first_max(row: &[f64], floor: f64) -> Option<(f64, usize)> {
    first_max_of(row.len(), floor, |i| row[i])
}

/// [`first_max`] of the values `value(0)`, …, `value(len − 1)`, each computed where it is compared
/// (no row written and read back), in four interleaved lanes, so that each comparison does not
/// wait on the one before and none branches.
#[inline]
pub(crate) fn first_max_of(len: usize, floor: f64, value: impl Fn(usize) -> f64) -> Option<(f64, usize)> {
    let mut best = [floor; 4];
    let mut at = [usize::MAX; 4];
    let quads = len / 4;
    for c in 0..quads {
        for l in 0..4 {
            let v = value(4 * c + l);
            let better = v > best[l];
            best[l] = if better { v } else { best[l] };
            at[l] = if better { 4 * c + l } else { at[l] };
        }
    }
    for (l, i) in (4 * quads..len).enumerate() {
        let v = value(i);
        if v > best[l] {
            (best[l], at[l]) = (v, i);
        }
    }
    merge_lanes(best, at)
}

/// [`first_max`] of the priced values `live[i] − a · x[i] − b · y[i]` (an option not usable has
/// `live` −∞, so its priced value is −∞ and never taken: no test), over slices in chunks of four
/// so that no look is bounds-checked and none branches: the scan every round of the improvement
/// and every priced greedy makes over the options. `a`, `b`, `x` and `y` must be finite.
#[inline]
pub(crate) fn first_max_priced(
    live: &[f64],
    x: &[f64],
    y: &[f64],
    (a, b): (f64, f64),
    floor: f64,
) -> Option<(f64, usize)> {
    let len = live.len();
    let (x, y) = (&x[..len], &y[..len]);
    let priced = |l: f64, x: f64, y: f64| l - a * x - b * y;
    let mut best = [floor; 4];
    let mut at = [usize::MAX; 4];
    let chunks = live.chunks_exact(4).zip(x.chunks_exact(4)).zip(y.chunks_exact(4));
    for (c, ((l4, x4), y4)) in chunks.enumerate() {
        for l in 0..4 {
            let v = priced(l4[l], x4[l], y4[l]);
            let better = v > best[l];
            best[l] = if better { v } else { best[l] };
            at[l] = if better { 4 * c + l } else { at[l] };
        }
    }
    let tail = len - len % 4;
    for (l, i) in (tail..len).enumerate() {
        let v = priced(live[i], x[i], y[i]);
        if v > best[l] {
            (best[l], at[l]) = (v, i);
        }
    }
    merge_lanes(best, at)
}

/// The first largest of four lanes' (value, first index) pairs (`usize::MAX`: the lane found none).
#[inline]
fn merge_lanes(best: [f64; 4], at: [usize; 4]) -> Option<(f64, usize)> {
    // Across lanes: the largest, and among equal values the first index.
    let mut out: Option<(f64, usize)> = None;
    for l in 0..4 {
        if at[l] != usize::MAX {
            let take = match out {
                None => true,
                Some((v, i)) => best[l] > v || (best[l] == v && at[l] < i),
            };
            if take {
                out = Some((best[l], at[l]));
            }
        }
    }
    out
}

/// Orders tasks by a key, largest first, ties by index ([`TaskOrder::sort`]), starting from the
/// order of its previous call: successive orderings of one decision (and of successive periods)
/// differ little, so an insertion sort from there moves few tasks.
#[derive(Clone, Debug)]
pub(crate) struct TaskOrder {
    /// Every task, in the order of the previous call (a permutation of 0..capacity).
    perm: Vec<u8>,
    /// Which tasks the current call orders.
    wanted: Vec<bool>,
    /// The next `perm`, built beside it.
    next: Vec<u8>,
}

impl TaskOrder {
    pub fn with_size(n: usize) -> TaskOrder {
        TaskOrder { perm: (0..n as u8).collect(), wanted: vec![false; n], next: vec![0; n] }
    }

    /// Sort the task indices `idx` by `key` (indexed by task): largest key first, equal keys by
    /// index, a total order, so the result does not depend on the starting order. Returns its
    /// steps (a task looked at or moved), at most [`sort_bound`]. Hand-written because the decision
    /// needs a stated bound on its work and no allocation (the standard library's stable sort
    /// allocates; its unstable sort states no bound).
    pub fn sort(&mut self, key: &[f64], idx: &mut [u8]) -> u64 {
        let cap = self.perm.len();
        assert!(idx.len() <= cap, "more tasks than the order's scratch ({})", idx.len());
        for &j in idx.iter() {
            self.wanted[j as usize] = true;
        }
        // The wanted tasks in their previous order.
        let mut len = 0;
        for &j in &self.perm {
            if self.wanted[j as usize] {
                idx[len] = j;
                len += 1;
            }
        }
        let before = |a: u8, b: u8| {
            let (ka, kb) = (key[a as usize], key[b as usize]);
            ka > kb || (ka == kb && a < b)
        };
        let mut steps = cap as u64;
        for t in 1..len {
            let x = idx[t];
            let mut s = t;
            while s > 0 && before(x, idx[s - 1]) {
                idx[s] = idx[s - 1];
                s -= 1;
            }
            steps += (t - s) as u64;
            idx[s] = x;
        }
        // Next call starts from this order: the sorted tasks, then the others as they were.
        self.next[..len].copy_from_slice(&idx[..len]);
        let mut at = len;
        for &j in &self.perm {
            if !self.wanted[j as usize] {
                self.next[at] = j;
                at += 1;
            }
        }
        std::mem::swap(&mut self.perm, &mut self.next);
        for &j in idx.iter() {
            self.wanted[j as usize] = false;
        }
        steps + len as u64
    }
}

/// The second half of a priced greedy, shared by [`Greedy`] and the Lagrangian improvement
/// (`refine.rs`): admit the tasks of `order` in turn, each at its option `want(j)` or, when that
/// does not fit what the tasks before it left, at its fitting option of highest `score(o, u)` (option
/// o = j · q + i on unit u)
/// (skipped when none fits); then move every task (`order` first, then `rest`) to its most valuable
/// option that fits what the others leave. Returns the choice and the options looked at.
pub(crate) fn pack(
    inst: &Instance,
    order: &[u8],
    want: impl Fn(usize) -> usize,
    score: impl Fn(usize, usize) -> f64,
    rest: impl Iterator<Item = usize>,
    row: &mut [f64],
) -> (Choice, u64) {
    let (n, q, m, k) = (inst.n, inst.q, inst.m, inst.k);
    let mut work = 0u64;
    let mut choice = Choice::empty(n);
    let mut rem = [0u64; MAX_UNITS];
    rem[..m].copy_from_slice(&inst.cap[..m]);
    let mut mem_rem = inst.mem_cap;
    let row = &mut row[..q];
    for &j in order {
        let j = j as usize;
        let mut take = want(j);
        let o = j * q + take;
        if !(inst.time[o] <= rem[inst.unit(take)] && inst.mem[o] <= mem_rem) {
            // The fitting usable options' scores (−∞ elsewhere), then the first largest.
            let span = j * q..(j + 1) * q;
            let (live, time, mem) = (&inst.live[span.clone()], &inst.time[span.clone()], &inst.mem[span]);
            for u in 0..m {
                let unit = u * k..(u + 1) * k;
                let (live, time, mem) = (&live[unit.clone()], &time[unit.clone()], &mem[unit.clone()]);
                for (c, r) in row[unit].iter_mut().enumerate() {
                    let ok = (live[c] > 0.0) & (time[c] <= rem[u]) & (mem[c] <= mem_rem);
                    *r = if ok { score(j * q + u * k + c, u) } else { f64::NEG_INFINITY };
                }
            }
            work += q as u64;
            let Some((_, i)) = first_max(row, f64::NEG_INFINITY) else {
                continue;
            };
            take = i;
        }
        let o = j * q + take;
        rem[inst.unit(take)] -= inst.time[o];
        mem_rem -= inst.mem[o];
        choice.set(j, Some(take));
    }
    // Upgrade: each task to its most valuable option that fits what the others leave.
    let tasks = order.iter().map(|&j| j as usize).chain(rest);
    work += upgrade(inst, &mut choice, &mut rem, &mut mem_rem, tasks, row);
    (choice, work)
}

/// Move each of `tasks`, in turn, to its most valuable option that fits what the others leave
/// (`rem` per unit and `mem_rem`, updated). Returns the options looked at: at most q a task
/// (⌈log2 (k + 1)⌉ ≤ k a unit where its options rise with K, [`Instance::rising`]), 1 for a task
/// already at its top.
pub(crate) fn upgrade(
    inst: &Instance,
    choice: &mut Choice,
    rem: &mut [u64; MAX_UNITS],
    mem_rem: &mut u64,
    tasks: impl Iterator<Item = usize>,
    row: &mut [f64],
) -> u64 {
    let (q, m, k) = (inst.q, inst.m, inst.k);
    let row = &mut row[..q];
    let mut work = 0;
    for j in tasks {
        let now = choice.option_of(j);
        // A task at its most valuable usable option (or with none) has nothing to move to.
        if now.map_or(0.0, |i| inst.value[j * q + i]) >= inst.top_value[j] {
            work += 1;
            continue;
        }
        if let Some(i) = now {
            let o = j * q + i;
            rem[inst.unit(i)] += inst.time[o];
            *mem_rem += inst.mem[o];
        }
        let span = j * q..(j + 1) * q;
        let (value, time, mem) = (&inst.value[span.clone()], &inst.time[span.clone()], &inst.mem[span]);
        // Only a value above the current one (or above 0) moves the task.
        let floor = now.map_or(0.0, |i| value[i]);
        let pick = if inst.rising(j) {
            // The same pick without a full scan: on each unit the options that fit are a prefix and
            // the last of them is the most valuable.
            let mut best: Option<(f64, usize)> = None;
            for (u, &left) in rem[..m].iter().enumerate() {
                // How many fit: a binary search of the prefix (⌈log2 (k + 1)⌉ looks).
                let base = u * k;
                let (mut lo, mut hi) = (0, k);
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    if time[base + mid] <= left && mem[base + mid] <= *mem_rem {
                        lo = mid + 1;
                    } else {
                        hi = mid;
                    }
                    work += 1;
                }
                // The last that fits is the first to hold its value (rising: no two equal values
                // above 0, and only a value above the floor, itself at least 0, is taken).
                if lo == 0 {
                    continue;
                }
                let v = value[base + lo - 1];
                if v > best.map_or(floor, |b| b.0) {
                    best = Some((v, base + lo - 1));
                }
            }
            best.map(|(_, i)| i).or(now)
        } else {
            for u in 0..m {
                for c in u * k..(u + 1) * k {
                    let ok = (time[c] <= rem[u]) & (mem[c] <= *mem_rem);
                    row[c] = if ok { value[c] } else { 0.0 };
                }
            }
            work += q as u64;
            first_max(row, floor).map(|(_, i)| i).or(now)
        };
        if let Some(i) = pick {
            let o = j * q + i;
            rem[inst.unit(i)] -= inst.time[o];
            *mem_rem -= inst.mem[o];
        }
        choice.set(j, pick);
    }
    work
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The task order is the total order (key descending, index ascending) from any previous
    /// order, on subsets of every size, within its bound; an order already sorted costs one pass.
    #[test]
    fn task_order_sorts_any_subset_within_its_bound() {
        let n = 64;
        let mut order = TaskOrder::with_size(n);
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for round in 0..300 {
            // Few distinct keys, so that ties by index are exercised.
            let key: Vec<f64> = (0..n).map(|_| (next() % 9) as f64 * 0.25).collect();
            let len = if round % 3 == 0 { n } else { next() % (n + 1) };
            let mut idx: Vec<u8> = (0..n as u8).filter(|_| next() % 4 != 0).take(len).collect();
            let mut want = idx.clone();
            want.sort_by(|&a, &b| key[b as usize].total_cmp(&key[a as usize]).then(a.cmp(&b)));
            let steps = order.sort(&key, &mut idx);
            assert_eq!(idx, want, "round {round}");
            assert!(steps <= sort_bound(n), "{steps} steps over the bound {}", sort_bound(n));
            // Sorting the same again moves nothing.
            let again = order.sort(&key, &mut idx);
            assert_eq!(idx, want);
            assert!(again <= (2 * n + idx.len()) as u64, "{again} steps on a sorted order");
        }
    }

    /// The upgrade's search of a rising row picks what the full scan picks: each task in turn to
    /// the first most valuable option that fits what the others leave, within q steps a task, on
    /// instances whose rows rise (level only at 0) and on some whose rows do not (equal values
    /// above 0 among them).
    #[test]
    fn upgrade_of_rising_rows_picks_what_a_full_scan_picks() {
        let mut seed = 11u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        let mut rising_seen = 0;
        for round in 0..400 {
            let (n, m, k) = (1 + next() as usize % 12, 1 + next() as usize % 3, 1 + next() as usize % 9);
            let q = m * k;
            let mut inst = Instance::with_size(n, m, k);
            let cap: Vec<u64> = (0..m).map(|_| 20 + next() % 200).collect();
            inst.set_capacity(&cap, 50 + next() % 400);
            for j in 0..n {
                for u in 0..m {
                    let (mut v, mut t, mut mm) = (0.0f64, 1 + next() % 20, next() % 30);
                    for c in 0..k {
                        // Rising rows (values level only at 0); one round in four anything,
                        // one in four with repeated values above 0 (not rising: the full scan).
                        if round % 4 == 0 {
                            (v, t, mm) = ((next() % 9) as f64, 1 + next() % 90, next() % 120);
                        } else {
                            let step = if round % 4 == 1 { next() % 3 } else { 1 + next() % 3 };
                            if v > 0.0 || next() % 2 == 0 {
                                v += step as f64;
                            }
                            t += next() % 25;
                            mm += next() % 30;
                        }
                        inst.set_option(j * q + u * k + c, v, t, mm);
                    }
                }
            }
            rising_seen += (0..n).filter(|&j| inst.rising(j)).count();
            // A start that fits: each task at its first option while that fits.
            let mut start = Choice::empty(n);
            let (mut rem, mut mem_rem) = ([0u64; MAX_UNITS], inst.mem_cap);
            rem[..m].copy_from_slice(&cap);
            for j in 0..n {
                let i = (next() as usize) % q;
                let o = j * q + i;
                if next() % 2 == 0 && inst.time[o] <= rem[inst.unit(i)] && inst.mem[o] <= mem_rem {
                    rem[inst.unit(i)] -= inst.time[o];
                    mem_rem -= inst.mem[o];
                    start.set(j, Some(i));
                }
            }
            // The reference: a full scan, task by task.
            let (mut want, mut w_rem, mut w_mem) = (start, rem, mem_rem);
            for j in 0..n {
                if let Some(i) = want.option_of(j) {
                    w_rem[inst.unit(i)] += inst.time[j * q + i];
                    w_mem += inst.mem[j * q + i];
                }
                let floor = want.option_of(j).map_or(0.0, |i| inst.value[j * q + i]);
                let mut pick = want.option_of(j);
                let mut best = floor;
                for i in 0..q {
                    let o = j * q + i;
                    if inst.time[o] <= w_rem[inst.unit(i)] && inst.mem[o] <= w_mem && inst.value[o] > best {
                        (best, pick) = (inst.value[o], Some(i));
                    }
                }
                if let Some(i) = pick {
                    w_rem[inst.unit(i)] -= inst.time[j * q + i];
                    w_mem -= inst.mem[j * q + i];
                }
                want.set(j, pick);
            }
            let mut got = start;
            let mut row = vec![0.0; MAX_UNITS * MAX_CHOICES];
            // Task by task (the same as all at once: they are taken in turn), each within q steps.
            for j in 0..n {
                let work = upgrade(&inst, &mut got, &mut rem, &mut mem_rem, j..j + 1, &mut row);
                assert!(work <= q as u64, "round {round}, task {j}: {work} steps for {q} options");
            }
            assert_eq!(got, want, "round {round}");
            assert_eq!((rem, mem_rem), (w_rem, w_mem), "round {round}");
        }
        assert!(rising_seen > 500, "only {rising_seen} rising tasks drawn");
    }
}
