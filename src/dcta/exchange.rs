//! The device's last step for a decision that no upper bound certifies: bounded exchanges. When a
//! decision's value is below [`CERTIFY`] of an upper bound on the optimum, the optimum may hold a
//! task (or a larger K) that the priced rules never admitted because the room it needs is spread
//! over several other tasks. One exchange moves one task j to one of its options o and makes the
//! room o needs on its unit by the cheapest downgrades of the other tasks on that unit (value lost
//! per µs freed; each task first to its most valuable quicker option there, then out), then refills
//! what is left over ([`greedy::upgrade`]). Every (task, option) pair is priced in O(log n) from the
//! downgrades' prefix sums; the best few are tried in order of gain and the first that fits the
//! memory is kept (its gain is exact, so it raises the value). At most [`EXCHANGES`] exchanges a
//! decision; no allocation, and the work is bounded by [`Exchanger::work_bound`].

use super::greedy;
use super::menu::{Choice, Instance};
use super::{MAX_CHOICES, MAX_TASKS, MAX_UNITS};

/// A decision worth at least this share of its Lagrangian upper bound is certified good enough (the
/// worst-case quality the policy aims at) and is not exchanged.
pub const CERTIFY: f64 = 0.97;

/// Most exchanges made in one decision.
pub const EXCHANGES: usize = 1;

/// The best candidate exchanges kept per pass, tried in order of gain (the first may not fit the
/// memory, which the pricing by time does not see).
const KEPT: usize = 4;

/// One downgrade of a task: from `from` to `to` (an option, or out), freeing `dt` µs on `unit` and
/// losing `dv` of value.
#[derive(Clone, Copy, Debug, Default)]
struct Step {
    task: u8,
    unit: u8,
    to: u8,
    dv: f64,
    dt: u64,
    /// Value lost per µs freed (the sort key).
    rate: f64,
}

/// A candidate exchange: task `task` to option `option`, with the first `upto` downgrades of its
/// unit's sorted list (the task's own left out), for `gain` of value.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    gain: f64,
    task: u8,
    option: u8,
    upto: u16,
}

/// Scratch of the exchanges (sized once).
#[derive(Clone, Debug)]
pub struct Exchanger {
    steps: Vec<Step>,
    /// Sort keys of `steps` ([`sort_key`]: unit, then value lost per µs freed, then index), sorted;
    /// the low 16 bits of each are its index into `steps`.
    order: Vec<u64>,
    /// Per sorted position: µs freed and value lost by the unit's downgrades up to it (inclusive).
    freed: Vec<u64>,
    lost: Vec<f64>,
    /// Per unit: its range in `order`.
    span: [(u16, u16); MAX_UNITS],
    /// Per task: the sorted positions of its (at most two) downgrades.
    at: Vec<[u16; 2]>,
    best: [Candidate; KEPT],
    row: Vec<f64>,
    work: u64,
}

const NO_POS: u16 = u16::MAX;

impl Exchanger {
    pub fn with_size(n: usize) -> Exchanger {
        assert!(n <= MAX_TASKS);
        let s = 2 * n;
        Exchanger {
            steps: vec![Step::default(); s],
            order: vec![0; s],
            freed: vec![0; s],
            lost: vec![0.0; s],
            span: [(0, 0); MAX_UNITS],
            at: vec![[NO_POS; 2]; n],
            best: [Candidate { gain: 0.0, task: 0, option: 0, upto: 0 }; KEPT],
            row: vec![0.0; MAX_UNITS * MAX_CHOICES],
            work: 0,
        }
    }

    /// Steps the last call took.
    pub fn work(&self) -> u64 {
        self.work
    }

    /// Most steps [`improve`](Self::improve) takes on n tasks of q options (k per unit): per
    /// exchange, the loads (n), each task's step down (k), the downgrades' sort (a heap sort of at
    /// most s = 2n: at most 2·s·(⌈log₂ s⌉ + 1) comparisons), their prefix sums (s), every option
    /// priced (q per task, each with up to three binary searches of at most ⌈log₂ s⌉ + 2 steps),
    /// the [`KEPT`] candidates tried (2n each to build and check), and one refill (n · q).
    pub fn work_bound(n: usize, q: usize, k: usize) -> u64 {
        let s = (2 * n).max(1) as u64;
        let lg = 64 - (s - 1).leading_zeros() as u64;
        let (n, q, k) = (n as u64, q as u64, k as u64);
        let per = n + n * k + 2 * s * (lg + 1) + s + n * q * (1 + 3 * (lg + 2)) + KEPT as u64 * 2 * n + n * q;
        EXCHANGES as u64 * per
    }

    /// A feasible choice at least as good as `start` (which must be feasible): up to [`EXCHANGES`]
    /// exchanges, each kept only if it raises the value.
    pub fn improve(&mut self, inst: &Instance, start: Choice) -> Choice {
        assert!(inst.n <= self.at.len(), "instance larger than the exchanger ({} tasks)", inst.n);
        self.work = 0;
        let mut best = start;
        let mut best_v = inst.value_of(&start);
        for _ in 0..EXCHANGES {
            match self.exchange(inst, &best, best_v) {
                Some((c, v)) => (best, best_v) = (c, v),
                None => break,
            }
        }
        best
    }

    /// One exchange from `cur` (worth `cur_v`): the best that fits and raises the value, if any.
    fn exchange(&mut self, inst: &Instance, cur: &Choice, cur_v: f64) -> Option<(Choice, f64)> {
        let (n, q, m, k) = (inst.n, inst.q, inst.m, inst.k);
        // What is left of each unit (the memory is checked on each candidate built).
        let (rem, _) = inst.left_by(cur);
        self.work += n as u64;

        // Each running task's downgrades: its most valuable quicker option on the same unit, then
        // out; merged into one step where going out costs less per µs than the step down (so that
        // the sorted list always takes a task's steps in order).
        let mut s = 0;
        for j in 0..n {
            self.at[j] = [NO_POS; 2];
            let Some(c) = cur.option_of(j) else { continue };
            let (u, o) = (inst.unit(c), j * q + c);
            let (vc, tc) = (inst.value[o], inst.time[o]);
            // The first most valuable usable option quicker than c, in one branch-free pass.
            let span = j * q + u * k..j * q + (u + 1) * k;
            let row = &mut self.row[..k];
            for ((r, &v), &t) in row.iter_mut().zip(&inst.live[span.clone()]).zip(&inst.time[span]) {
                *r = if t < tc { v } else { 0.0 };
            }
            let down = greedy::first_max(row, 0.0).map(|(_, i)| u * k + i);
            self.work += k as u64;
            let out = step(j, u, Choice::NONE, vc, tc);
            match down {
                Some(d) => {
                    let (vd, td) = (inst.value[j * q + d], inst.time[j * q + d]);
                    let first = step(j, u, d as u8, vc - vd, tc - td);
                    let then = step(j, u, Choice::NONE, vd, td);
                    if then.rate < first.rate || td == 0 {
                        self.steps[s] = out;
                        s += 1;
                    } else {
                        self.steps[s] = first;
                        self.steps[s + 1] = then;
                        s += 2;
                    }
                }
                None if tc > 0 => {
                    self.steps[s] = out;
                    s += 1;
                }
                None => {}
            }
        }
        for (i, o) in self.order[..s].iter_mut().enumerate() {
            *o = sort_key(&self.steps[i], i);
        }
        self.work += heap_sort(&mut self.order[..s], |a, b| a < b);
        // Prefix sums per unit, each task's positions, each unit's span.
        self.span = [(0, 0); MAX_UNITS];
        let mut p = 0;
        for u in 0..m {
            let from = p;
            let (mut f, mut l) = (0u64, 0.0f64);
            while p < s && self.sorted(p).unit as usize == u {
                let st = self.sorted(p);
                (f, l) = (f + st.dt, l + st.dv);
                (self.freed[p], self.lost[p]) = (f, l);
                let slot = &mut self.at[st.task as usize];
                let which = usize::from(slot[0] != NO_POS);
                slot[which] = p as u16;
                p += 1;
            }
            self.span[u] = (from as u16, p as u16);
        }
        self.work += s as u64;

        // Price every (task, option) that is worth more than the task's current option. A gain is
        // at most the option's value over the current one, plus what downgrades that gain value
        // (a quicker option worth more, which only the memory can have kept out) could add.
        let bonus: f64 = self.steps[..s].iter().map(|st| (-st.dv).max(0.0)).sum();
        self.best = [Candidate { gain: 0.0, task: 0, option: 0, upto: 0 }; KEPT];
        for j in 0..n {
            let now = cur.option_of(j);
            let v_now = now.map_or(0.0, |i| inst.value[j * q + i]);
            self.work += q as u64;
            // No option of this task is worth more, or gains enough to be kept.
            if v_now >= inst.top_value[j] || inst.top_value[j] - v_now + bonus <= self.best[KEPT - 1].gain {
                continue;
            }
            for i in 0..q {
                let o = j * q + i;
                // Skip it when even that bound cannot beat the candidates kept.
                if inst.live[o] <= v_now || inst.live[o] - v_now + bonus <= self.best[KEPT - 1].gain {
                    continue;
                }
                let u = inst.unit(i);
                let own = now.filter(|&c| inst.unit(c) == u).map_or(0, |c| inst.time[j * q + c]);
                let need = inst.time[o].saturating_sub(own + rem[u]);
                let Some((upto, lost)) = self.room(u, j, need) else { continue };
                let gain = inst.value[o] - v_now - lost;
                self.keep(Candidate { gain, task: j as u8, option: i as u8, upto });
            }
        }

        // Try the best candidates in order of gain: the first that fits the memory (the pricing
        // saw time only) raises the value by its gain, exactly; then refill what the downgrades
        // freed beyond the need.
        for c in 0..KEPT {
            let cand = self.best[c];
            if cand.gain <= 1e-12 * cur_v.abs().max(1e-300) {
                break;
            }
            let j = cand.task as usize;
            let mut next = *cur;
            let u = inst.unit(cand.option as usize);
            let (from, _) = self.span[u];
            for p in from as usize..cand.upto as usize {
                let st = self.sorted(p);
                if st.task as usize != j {
                    next.set(st.task as usize, (st.to != Choice::NONE).then_some(st.to as usize));
                }
            }
            next.set(j, Some(cand.option as usize));
            self.work += 2 * n as u64;
            if !inst.is_feasible(&next) {
                continue;
            }
            let (mut rem, mut mem_rem) = inst.left_by(&next);
            self.work += greedy::upgrade(inst, &mut next, &mut rem, &mut mem_rem, 0..n, &mut self.row);
            let v = inst.value_of(&next);
            return (v > cur_v).then_some((next, v));
        }
        None
    }

    /// The room `need` µs on unit `u` for task `j`: the end (exclusive) of the shortest prefix of
    /// the unit's sorted downgrades, task j's own left out, that frees at least `need`, and the
    /// value it loses. `None` when the unit's other downgrades cannot free that much.
    fn room(&mut self, u: usize, j: usize, need: u64) -> Option<(u16, f64)> {
        let (from, to) = (self.span[u].0 as usize, self.span[u].1 as usize);
        if need == 0 {
            return Some((from as u16, 0.0));
        }
        // The prefix sums include task j's own steps: search, take out j's steps inside the
        // prefix, and search again for the larger need (j has at most two steps: three searches).
        let mut want = need;
        for _ in 0..3 {
            // The first position whose prefix (within the unit) frees `want`.
            let (mut lo, mut hi) = (from, to);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if self.freed[mid] >= want {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
                self.work += 1;
            }
            self.work += 1;
            if lo == to {
                return None;
            }
            let (mut own_t, mut own_v) = (0u64, 0.0f64);
            for &a in &self.at[j] {
                if a != NO_POS && (from..=lo).contains(&(a as usize)) {
                    let st = self.sorted(a as usize);
                    own_t += st.dt;
                    own_v += st.dv;
                }
            }
            if self.freed[lo] - own_t >= need {
                return Some(((lo + 1) as u16, self.lost[lo] - own_v));
            }
            want = need + own_t;
        }
        None
    }

    /// The downgrade at sorted position `p`.
    #[inline]
    fn sorted(&self, p: usize) -> Step {
        self.steps[(self.order[p] & 0xffff) as usize]
    }

    /// Keep `c` among the [`KEPT`] best by gain (ties: the earlier candidate).
    fn keep(&mut self, c: Candidate) {
        if c.gain <= self.best[KEPT - 1].gain {
            return;
        }
        let mut at = KEPT - 1;
        while at > 0 && self.best[at - 1].gain < c.gain {
            self.best[at] = self.best[at - 1];
            at -= 1;
        }
        self.best[at] = c;
    }
}

/// A step's sort key: its unit (top 8 bits), its rate as the top 40 bits of the float's
/// order-preserving bit pattern (so rates within about 4e-9 of each other tie), then its index i
/// (low 16 bits). Plain integers sort fastest; no two keys are equal.
#[inline]
fn sort_key(st: &Step, i: usize) -> u64 {
    let b = st.rate.to_bits();
    let ordered = if b >> 63 == 1 { !b } else { b | 1 << 63 };
    (st.unit as u64) << 56 | (ordered >> 24) << 16 | i as u64
}

/// Task j's downgrade on unit u to `to` (an option, or [`Choice::NONE`]): `dv` lost, `dt` freed.
#[inline]
fn step(j: usize, u: usize, to: u8, dv: f64, dt: u64) -> Step {
    Step { task: j as u8, unit: u as u8, to, dv, dt, rate: dv / dt.max(1) as f64 }
}

/// Sort `v` by `less` in place (a heap sort: at most 2·s·(⌈log₂ s⌉ + 1) comparisons for s items,
/// returned: 2·s to build the heap, 2·⌈log₂ s⌉ for each of the s − 1 items taken off).
/// Hand-written because the standard library's sorts state no bound on their steps, and the
/// decision's work bound needs one.
fn heap_sort<T: Copy>(v: &mut [T], mut less: impl FnMut(T, T) -> bool) -> u64 {
    let n = v.len();
    let mut work = 0u64;
    let mut sift = |v: &mut [T], mut root: usize, end: usize, work: &mut u64| loop {
        let mut child = 2 * root + 1;
        if child >= end {
            break;
        }
        if child + 1 < end {
            *work += 1;
            if less(v[child], v[child + 1]) {
                child += 1;
            }
        }
        *work += 1;
        if !less(v[root], v[child]) {
            break;
        }
        v.swap(root, child);
        root = child;
    };
    for i in (0..n / 2).rev() {
        sift(v, i, n, &mut work);
    }
    for end in (1..n).rev() {
        v.swap(0, end);
        sift(v, 0, end, &mut work);
    }
    work
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_sort_sorts_within_its_bound() {
        let mut x = 12345u64;
        for len in [0usize, 1, 2, 3, 7, 64, 128] {
            let keys: Vec<u32> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 50) as u32
                })
                .collect();
            let mut v: Vec<u16> = (0..len as u16).collect();
            let w = heap_sort(&mut v, |a, b| (keys[a as usize], a) < (keys[b as usize], b));
            let sorted: Vec<(u32, u16)> = v.iter().map(|&i| (keys[i as usize], i)).collect();
            assert!(sorted.windows(2).all(|p| p[0] < p[1]), "{sorted:?}");
            let s = len.max(1) as u64;
            let lg = 64 - (s - 1).leading_zeros() as u64;
            assert!(w <= 2 * s * (lg + 1), "{len} items: {w} comparisons");
        }
    }
}
