//! The exact solver of a period's multiple-choice knapsack ([`Instance`]): depth-first branch and
//! bound over tasks, each onto one of its options or none. The bound is the LP relaxation with the
//! units' time pooled into capacity shares (and, as a second bound, time and memory shares summed),
//! solved greedily over the upper convex hull of each task's options (Sinha and Zoltners' bound for
//! the multiple-choice knapsack). A third is Lagrangian: at the prices of the root's subgradient
//! rounds ([`super::Refiner`]), whose best choice is the first incumbent; the same prices fix out
//! the options that cannot beat the incumbent. The tightest bound prunes. Units with identical costs
//! and capacity are not tried twice from the same remaining capacity. A solve may be capped by
//! nodes (it then says it did not prove the optimum), and the device runs a cheap capped search
//! ([`ExactSolver::search_from`]) from its own choice. Buffers are sized once: a solve does not
//! allocate.

use super::greedy::{Greedy, Price};
use super::lagrange::{Prices, Shares};
use super::menu::{Choice, Instance};
use super::refine::Refiner;
use super::{MAX_TASKS, MAX_UNITS};

const NO_TWIN: u8 = u8::MAX;

/// Subgradient rounds at the root: they give the first incumbent (the device's improvement run
/// longer) and the Lagrangian prices of the bound. A few hundred cost O(rounds · options), far below
/// one deep search at the sizes where the search matters.
const ROOT_ROUNDS: usize = 200;

/// Nodes of the first, quick search (no subgradient rounds): enough for most instances of up to
/// about 4 tasks, which then cost microseconds rather than the rounds' tens.
const QUICK_NODES: u64 = 256;
const UNRANKED: u8 = u8::MAX;

/// One segment of a task's upper hull in (share, value).
#[derive(Clone, Copy, Debug, Default)]
struct Seg {
    task: u8,
    ds: f64,
    dv: f64,
    eff: f64,
}

/// A reusable exact solver.
#[derive(Clone, Debug)]
pub struct ExactSolver {
    /// Tasks worth branching on, by their best hull efficiency, descending.
    order: [u8; MAX_TASKS],
    /// Position of each task in `order`, or `UNRANKED`.
    rank: [u8; MAX_TASKS],
    len: usize,
    /// Per task, its usable options by value, descending (n × q), and how many.
    cand: Vec<u8>,
    ncand: [u8; MAX_TASKS],
    /// Efficiency of each task's first hull segment (relaxation 0).
    eff0: [f64; MAX_TASKS],
    /// Hull segments of both relaxations, by efficiency descending: work pooled over the units
    /// (time × the unit's speed against Σ speed × remaining time), and capacity shares pooled (time
    /// and memory shares summed).
    segs: [Vec<Seg>; 2],
    /// Σ of the best values of the tasks from position k of `order` on.
    vmax_tail: [f64; MAX_TASKS + 1],
    /// Scratch for one task's hull: (share, value).
    pts: Vec<(f64, f64)>,
    twin: [u8; MAX_UNITS],
    rem: [u64; MAX_UNITS],
    mem_rem: u64,
    cur: Choice,
    best: Choice,
    best_value: f64,
    nodes: u64,
    /// Stop after this many nodes ([`solve_capped`](ExactSolver::solve_capped)).
    max_nodes: u64,
    greedy: Greedy,
    refiner: Refiner,
    /// Lagrangian prices of the bound, and the capacities' reciprocals.
    prices: Prices,
    shares: Shares,
    /// Σ of the best reduced values (under `prices`) of the tasks from position k of `order` on.
    lag_tail: [f64; MAX_TASKS + 1],
    /// Per task, whether leaving it out can still beat the incumbent (reduced-cost fixing).
    none_ok: [bool; MAX_TASKS],
    /// The Lagrangian bound at `prices`.
    root_bound: f64,
    /// The device's search: no hull bounds, only the O(units) ones.
    cheap: bool,
    /// Steps of the last device search.
    work: u64,
}

impl ExactSolver {
    /// A solver for instances of up to `n` tasks with `q` options each.
    pub fn with_size(n: usize, q: usize) -> ExactSolver {
        ExactSolver {
            order: [0; MAX_TASKS],
            rank: [UNRANKED; MAX_TASKS],
            len: 0,
            cand: vec![0; n * q],
            ncand: [0; MAX_TASKS],
            eff0: [0.0; MAX_TASKS],
            segs: [Vec::with_capacity(n * q), Vec::with_capacity(n * q)],
            vmax_tail: [0.0; MAX_TASKS + 1],
            pts: Vec::with_capacity(q),
            twin: [NO_TWIN; MAX_UNITS],
            rem: [0; MAX_UNITS],
            mem_rem: 0,
            cur: Choice::empty(0),
            best: Choice::empty(0),
            best_value: 0.0,
            nodes: 0,
            max_nodes: u64::MAX,
            greedy: Greedy::with_size(n),
            refiner: Refiner::with_size(n),
            prices: Prices::default(),
            shares: Shares::default(),
            lag_tail: [0.0; MAX_TASKS + 1],
            none_ok: [true; MAX_TASKS],
            root_bound: f64::INFINITY,
            cheap: false,
            work: 0,
        }
    }

    /// A solver sized for `inst`.
    pub fn for_instance(inst: &Instance) -> ExactSolver {
        ExactSolver::with_size(inst.n, inst.q)
    }

    /// An optimal choice for `inst` and its value. Panics if `inst` is larger than the solver.
    pub fn solve(&mut self, inst: &Instance) -> (Choice, f64) {
        let (c, v, _) = self.solve_capped(inst, u64::MAX);
        (c, v)
    }

    /// The best choice found within `max_nodes` search nodes, its value, and whether it is proven
    /// optimal (the search finished). [`upper_bound`](Self::upper_bound) then bounds the optimum from above.
    pub fn solve_capped(&mut self, inst: &Instance, max_nodes: u64) -> (Choice, f64, bool) {
        self.cheap = false;
        self.work = 0;
        self.setup(inst);
        // First a short search from the plain greedy with the hull bounds alone (zero prices fix
        // nothing): small instances finish here, for the cost of no subgradient rounds.
        let quick = QUICK_NODES.min(max_nodes);
        self.max_nodes = quick;
        self.best = self.greedy.solve(inst, Price::NONE);
        self.best_value = inst.value_of(&self.best);
        self.root_bound = f64::INFINITY;
        self.lagrangian_fixing(inst, Prices::default());
        self.search(inst);
        if self.nodes <= quick {
            return (self.best, self.best_value, true);
        }
        // Then the root's rounds from the best choice so far, the Lagrangian bound and fixing, and
        // the search again with the nodes left.
        let spent = self.nodes;
        self.best = self.refiner.refine(inst, self.best, Prices::default(), ROOT_ROUNDS);
        self.best_value = inst.value_of(&self.best);
        self.root_bound = self.refiner.bound();
        self.lagrangian_fixing(inst, self.refiner.bound_prices());
        self.max_nodes = max_nodes.saturating_sub(spent);
        self.nodes = 0;
        self.search(inst);
        // Count both searches' nodes against the whole cap.
        self.nodes = self.nodes.saturating_add(spent);
        self.max_nodes = max_nodes;
        (self.best, self.best_value, self.nodes <= self.max_nodes)
    }

    /// Depth-first search from the root with the current incumbent, bound and candidates.
    fn search(&mut self, inst: &Instance) {
        let (n, m) = (inst.n, inst.m);
        self.cur = Choice::empty(n);
        self.rem[..m].copy_from_slice(&inst.cap[..m]);
        self.mem_rem = inst.mem_cap;
        self.dfs(inst, 0, 0.0);
    }

    /// An upper bound on the optimum of the last solve: its value when proven, else the
    /// Lagrangian bound of the root.
    pub fn upper_bound(&self) -> f64 {
        if self.nodes <= self.max_nodes { self.best_value } else { self.root_bound.max(self.best_value) }
    }

    /// The device's node-capped search: from a feasible incumbent `start` and Lagrangian prices
    /// `prices` whose bound is `bound` (the bounded improvement's, [`Refiner::bound_prices`]), with
    /// no root rounds and no hull bounds, so that each node costs O(units + its options).
    /// Returns the best choice found (never worse than `start`); [`work`](Self::work) counts the
    /// steps taken, at most [`search_work_bound`](Self::search_work_bound). No allocation.
    pub fn search_from(
        &mut self,
        inst: &Instance,
        start: Choice,
        prices: Prices,
        bound: f64,
        max_nodes: u64,
    ) -> Choice {
        let (n, m) = (inst.n, inst.m);
        self.max_nodes = max_nodes;
        self.cheap = true;
        self.work = 0;
        self.setup(inst);
        self.best = start;
        self.best_value = inst.value_of(&start);
        self.root_bound = bound;
        self.lagrangian_fixing(inst, prices);
        self.cur = Choice::empty(n);
        self.rem[..m].copy_from_slice(&inst.cap[..m]);
        self.mem_rem = inst.mem_cap;
        self.dfs(inst, 0, 0.0);
        self.best
    }

    /// Most steps [`search_from`](Self::search_from) takes on n tasks of q options (k per unit, m
    /// units) with `max_nodes` nodes: the set-up (candidates by value and again by reduced value,
    /// two insertion sorts of at most q²/2 moves per task, the task order, twin units, the
    /// reduced-cost fixing) and per node its bound (m + 1) and its options (q).
    pub fn search_work_bound(n: usize, m: usize, k: usize, max_nodes: u64) -> u64 {
        let q = m * k;
        (n * q + n * q * q / 2 + n * n + m * m * n * k + 2 * n * q) as u64
            + (max_nodes + 1) * (m + 1 + q) as u64
    }

    /// Steps of the last [`search_from`](Self::search_from).
    pub fn work(&self) -> u64 {
        self.work
    }

    /// Order the tasks, list each one's usable options by value, and (unless `cheap`) build the
    /// hull segments of both LP bounds; find twin units.
    fn setup(&mut self, inst: &Instance) {
        let (n, q, m) = (inst.n, inst.q, inst.m);
        assert!(n * q <= self.cand.len(), "instance larger than the solver ({n} × {q})");
        self.nodes = 0;
        self.len = 0;
        // Each solve's hulls only: segments left from an earlier instance would loosen the bound
        // (and grow the buffers) solve after solve.
        for s in &mut self.segs {
            s.clear();
        }
        for j in 0..n {
            self.rank[j] = UNRANKED;
            let row = &mut self.cand[j * q..(j + 1) * q];
            let mut c = 0;
            for i in 0..q {
                if inst.usable(j, i) {
                    // Insert by value, descending.
                    let v = inst.value[j * q + i];
                    let mut at = c;
                    while at > 0 && inst.value[j * q + row[at - 1] as usize] < v {
                        row[at] = row[at - 1];
                        at -= 1;
                        self.work += 1;
                    }
                    row[at] = i as u8;
                    c += 1;
                }
            }
            self.ncand[j] = c as u8;
            if c == 0 {
                continue;
            }
            let first = if self.cheap {
                // No hulls: tasks branch by their best value.
                inst.value[j * q + self.cand[j * q] as usize]
            } else {
                let first = self.hull(inst, j, 0);
                self.hull(inst, j, 1);
                first
            };
            self.eff0[j] = first;
            // Insert j into the branching order by its best efficiency.
            let mut at = self.len;
            while at > 0 && self.eff0[self.order[at - 1] as usize] < first {
                self.order[at] = self.order[at - 1];
                at -= 1;
            }
            self.order[at] = j as u8;
            self.len += 1;
        }
        for (k, &j) in self.order[..self.len].iter().enumerate() {
            self.rank[j as usize] = k as u8;
        }
        self.vmax_tail[self.len] = 0.0;
        for k in (0..self.len).rev() {
            let j = self.order[k] as usize;
            let best = self.cand[j * q] as usize; // candidates are by value, descending
            self.vmax_tail[k] = self.vmax_tail[k + 1] + inst.value[j * q + best];
        }
        for s in &mut self.segs {
            s.sort_unstable_by(|a, b| b.eff.total_cmp(&a.eff));
        }
        self.work += (n * q + n * n + m * m * n * inst.k) as u64;
        for u in 0..m {
            self.twin[u] = NO_TWIN;
            for t in 0..u {
                let same = inst.cap[t] == inst.cap[u]
                    && (0..n).all(|j| {
                        (0..inst.k)
                            .all(|c| inst.time[j * q + t * inst.k + c] == inst.time[j * q + u * inst.k + c])
                    });
                if same {
                    self.twin[u] = t as u8;
                    break;
                }
            }
        }
    }

    /// Prepare the Lagrangian bound at the root's best prices, and drop the options that cannot beat
    /// the incumbent under it: fixing task j to option o leaves at most L − r*_j + r_o, with r*_j the
    /// task's best reduced value (0 for leaving it out).
    fn lagrangian_fixing(&mut self, inst: &Instance, prices: Prices) {
        let q = inst.q;
        self.prices = prices;
        self.shares = Shares::of(inst);
        let root = self.root_bound;
        self.work += 2 * (inst.n * q) as u64;
        // A margin for rounding: keep whatever might tie within it (never drop a true optimum).
        let slack = 1e-9 * (1.0 + root.abs());
        self.lag_tail[self.len] = 0.0;
        for k in (0..self.len).rev() {
            let j = self.order[k] as usize;
            let mut top = 0.0f64;
            for c in 0..self.ncand[j] as usize {
                top = top.max(self.prices.reduced(inst, &self.shares, j, self.cand[j * q + c] as usize));
            }
            self.lag_tail[k] = self.lag_tail[k + 1] + top;
            if !root.is_finite() {
                self.none_ok[j] = true;
                continue;
            }
            let mut kept = 0;
            for c in 0..self.ncand[j] as usize {
                let i = self.cand[j * q + c];
                if root - top + self.prices.reduced(inst, &self.shares, j, i as usize) + slack
                    > self.best_value
                {
                    self.cand[j * q + kept] = i;
                    kept += 1;
                }
            }
            self.ncand[j] = kept as u8;
            self.none_ok[j] = root - top + slack > self.best_value;
            if self.cheap {
                // The capped search meets few nodes: try each task's options by reduced value, the
                // order in which the prices say they are worth their capacity.
                let row = &mut self.cand[j * q..j * q + kept];
                for a in 1..row.len() {
                    let (i, r) = (row[a], self.prices.reduced(inst, &self.shares, j, row[a] as usize));
                    let mut at = a;
                    while at > 0 && self.prices.reduced(inst, &self.shares, j, row[at - 1] as usize) < r {
                        row[at] = row[at - 1];
                        at -= 1;
                        self.work += 1;
                    }
                    row[at] = i;
                }
            }
        }
    }

    /// Search nodes visited by the last [`solve`](Self::solve).
    pub fn nodes(&self) -> u64 {
        self.nodes
    }

    /// Size of option i of task j under relaxation r: its work (time × speed) for r = 0, else its
    /// time and memory shares.
    #[inline]
    fn size(&self, inst: &Instance, j: usize, i: usize, r: usize) -> Option<f64> {
        let o = j * inst.q + i;
        if r == 0 {
            return Some(inst.time[o] as f64 * inst.speed[inst.unit(i)]);
        }
        let mut s = inst.time[o] as f64 / inst.cap[inst.unit(i)].max(1) as f64;
        if inst.mem[o] > 0 {
            s += inst.mem[o] as f64 / inst.mem_cap.max(1) as f64;
        }
        Some(s)
    }

    /// Push task j's upper-hull segments for relaxation r; returns the first segment's efficiency.
    fn hull(&mut self, inst: &Instance, j: usize, r: usize) -> f64 {
        let q = inst.q;
        self.pts.clear();
        for &i in &self.cand[j * q..j * q + self.ncand[j] as usize] {
            let i = i as usize;
            if let Some(s) = self.size(inst, j, i, r) {
                self.pts.push((s, inst.value[j * q + i]));
            }
        }
        self.pts.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
        // Upper concave hull from the origin, kept in place at the front of `pts`.
        let mut h = 0usize;
        let mut last_v = 0.0f64;
        for p in 0..self.pts.len() {
            let (s, v) = self.pts[p];
            if v <= last_v {
                continue; // dominated: no more value for at least as much share
            }
            while h > 0 {
                let (ps, pv) = if h >= 2 { self.pts[h - 2] } else { (0.0, 0.0) };
                let (ms, mv) = self.pts[h - 1];
                // Drop the middle point when it lies on or below the line from the previous to p.
                if (mv - pv) * (s - ps) <= (v - pv) * (ms - ps) {
                    h -= 1;
                } else {
                    break;
                }
            }
            self.pts[h] = (s, v);
            h += 1;
            last_v = v;
        }
        let (mut ps, mut pv) = (0.0, 0.0);
        let mut first = 0.0;
        for p in 0..h {
            let (s, v) = self.pts[p];
            let (ds, dv) = (s - ps, v - pv);
            let eff = if ds > 0.0 { dv / ds } else { f64::INFINITY };
            if p == 0 {
                first = eff;
            }
            self.segs[r].push(Seg { task: j as u8, ds, dv, eff });
            (ps, pv) = (s, v);
        }
        first
    }

    fn dfs(&mut self, inst: &Instance, k: usize, value: f64) {
        self.nodes += 1;
        if self.nodes > self.max_nodes {
            return;
        }
        self.work += (inst.m + 1) as u64;
        if value > self.best_value {
            self.best_value = value;
            self.best = self.cur;
        }
        if k == self.len || value + self.bound(inst, k) <= self.best_value * (1.0 + 1e-12) {
            return;
        }
        let j = self.order[k] as usize;
        let q = inst.q;
        self.work += self.ncand[j] as u64;
        for c in 0..self.ncand[j] as usize {
            let i = self.cand[j * q + c] as usize;
            let o = j * q + i;
            let u = inst.unit(i);
            let (t, mem) = (inst.time[o], inst.mem[o]);
            if t > self.rem[u] || mem > self.mem_rem {
                continue;
            }
            let tw = self.twin[u];
            if tw != NO_TWIN && self.rem[tw as usize] == self.rem[u] {
                continue;
            }
            self.rem[u] -= t;
            self.mem_rem -= mem;
            self.cur.set(j, Some(i));
            self.dfs(inst, k + 1, value + inst.value[o]);
            self.cur.set(j, None);
            self.rem[u] += t;
            self.mem_rem += mem;
        }
        if self.none_ok[j] {
            self.dfs(inst, k + 1, value);
        }
    }

    /// Bound on what the tasks `order[k..]` can still add: the smallest of their best values summed
    /// and the two pooled LP relaxations.
    fn bound(&self, inst: &Instance, k: usize) -> f64 {
        let mut shares = [0.0f64; MAX_UNITS];
        for u in 0..inst.m {
            shares[u] = self.rem[u] as f64 * self.shares.unit[u];
        }
        let lagrangian = self.prices.capacity_term(inst.m, &shares, self.mem_rem as f64 * self.shares.mem)
            + self.lag_tail[k];
        if self.cheap {
            return self.vmax_tail[k].min(lagrangian);
        }
        let fill = |segs: &[Seg], mut cap: f64| {
            let mut b = 0.0;
            for s in segs {
                if (self.rank[s.task as usize] as usize) < k {
                    continue;
                }
                if s.ds <= cap {
                    cap -= s.ds;
                    b += s.dv;
                } else {
                    b += s.dv * cap / s.ds;
                    break;
                }
            }
            b
        };
        let work: f64 = (0..inst.m).map(|u| self.rem[u] as f64 * inst.speed[u]).sum();
        let time_share: f64 =
            (0..inst.m).filter(|&u| inst.cap[u] > 0).map(|u| self.rem[u] as f64 / inst.cap[u] as f64).sum();
        let mem_share = if inst.mem_cap > 0 { self.mem_rem as f64 / inst.mem_cap as f64 } else { 0.0 };
        let pooled = fill(&self.segs[1], time_share + mem_share);
        self.vmax_tail[k].min(fill(&self.segs[0], work)).min(pooled).min(lagrangian)
    }
}
