//! The DCTA policy: a compact table learnt on the host from many exactly solved periods, shipped in
//! the bundle ([`PolicyTable`]), and its device side ([`Dcta`]). The table is indexed by the coarse
//! context (power level × free-memory class × drift-mass bucket, with bucket edges at quantiles of
//! the sampled contexts, so long-tailed drift gets as many buckets as uniform drift) and holds the
//! capacity prices under which the priced greedy comes closest to the exact optimum in that cell.
//! The fine context (each target's drift, which targets are resident) enters the decision directly,
//! so the table stays small at any number of tasks. A decision is the priced greedy at the cell's
//! prices, improved by a bounded number of Lagrangian rounds and (on small instances) a node-capped
//! search: its work has a stated bound ([`Dcta::work_bound`]) and it never allocates. Contexts
//! outside the table start from unpriced greedy and are counted.

use serde::{Deserialize, Serialize};

use super::exact::ExactSolver;
use super::exchange::{CERTIFY, Exchanger};
use super::greedy::{Greedy, Price};
use super::lagrange::Prices;
use super::menu::{Choice, Context, Instance, Menu, OptionTimes};
use super::problem::{CostModel, clamp_drift};
use super::refine::Refiner;
use super::{DctaError, MAX_TASKS};
use crate::board::Board;
use crate::links::Rng;
use crate::manifest::Manifest;

/// Version of the [`PolicyTable`] layout; bump on any change to its fields or their meaning.
pub const FORMAT_VERSION: u16 = 2;

/// Rounds of the bounded improvement per decision ([`Refiner`]): enough that the held-out worst
/// case stays within a few percent of the optimum at every size the bench sweeps, few enough that a
/// decision's work stays a small multiple of one pass over the options.
pub const ROUNDS: usize = 4;

/// Up to this many options the device also runs a node-capped branch and bound from the improved
/// choice ([`ExactSolver::search_from`]): with few tasks the Lagrangian heuristic alone can miss the
/// one combination that fits (the worst held-out contexts at 64 options lost 9%), while the search
/// there needs a few dozen nodes.
pub const SEARCH_OPTIONS: usize = 256;

/// Nodes of that search per decision.
pub const SEARCH_NODES: u64 = 256;

/// Search nodes per exactly solved training context. Below about 8 tasks the branch and bound
/// finishes far inside this; at 16 tasks and 4 units it may not prove the optimum in any reasonable
/// time (the Lagrangian bound leaves a gap of about a percent that many near-optimal choices share),
/// and the best choice found serves as the reference instead.
pub const BUILD_NODES: u64 = 300_000;

/// Candidate time prices θ_time (see [`Price`]).
const TIME_GRID: [f32; 12] = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0];
/// Candidate memory prices θ_mem.
const MEM_GRID: [f32; 5] = [0.0, 0.1, 0.3, 1.0, 3.0];

/// How held-out and training drift values are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriftDistribution {
    /// d_j uniform in [0, 1].
    Uniform,
    /// d_j = u³ with u uniform: most targets drift little, a few a lot (task importance is
    /// long-tailed).
    LongTail,
    /// Half of the contexts of each (the policy is trained on this).
    Mixed,
}

/// How to build a policy table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyOptions {
    pub cost: CostModel,
    /// D: drift-mass buckets (edges at quantiles of the sampled contexts).
    pub buckets: u8,
    /// Free-memory classes (edges at quantiles of the sampled contexts).
    pub memory_classes: u8,
    /// Training contexts, each solved exactly.
    pub samples: usize,
    pub seed: u64,
    /// Build threads (0: all available).
    pub threads: usize,
}

impl Default for PolicyOptions {
    fn default() -> PolicyOptions {
        PolicyOptions {
            cost: CostModel::default(),
            buckets: 8,
            memory_classes: 3,
            samples: 3000,
            seed: 11,
            threads: 0,
        }
    }
}

/// The compressed policy: per cell, the index of its prices in the grids.
///
/// Cell index = (power level · memory classes + memory class) · buckets + drift-mass bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyTable {
    pub version: u16,
    /// Board the table was built for.
    pub board: String,
    /// The options of every task (needed to pose each period's knapsack on the device).
    pub menu: Menu,
    /// Upper edges of the drift-mass buckets but the last, ascending (mass = Σ w_j d_j / Σ w_j).
    pub mass_edges: Vec<f32>,
    /// Upper edges of the free-memory classes but the last, as shares of the menu's memory,
    /// ascending.
    pub memory_edges: Vec<f32>,
    /// Per cell, θ_time index (high nibble) and θ_mem index (low nibble).
    pub prices: Vec<u8>,
}

/// A sampled context, owned.
#[derive(Clone, Debug, PartialEq)]
pub struct SampledContext {
    pub drift: Vec<f32>,
    pub power_level: usize,
    pub free_mem: u64,
    pub resident: u64,
}

impl SampledContext {
    pub fn as_context(&self) -> Context<'_> {
        Context {
            drift: &self.drift,
            power_level: self.power_level,
            free_mem: self.free_mem,
            resident: self.resident,
        }
    }
}

/// Draw `count` contexts for `menu`: drift by `dist`, a uniform power level, free memory uniform up
/// to what swapping every target in would need (capped by the menu's memory), each target resident
/// with probability 1/3.
pub fn sample_contexts(menu: &Menu, dist: DriftDistribution, count: usize, seed: u64) -> Vec<SampledContext> {
    let n = menu.n_tasks();
    let all: u64 = menu.mem_bytes.iter().sum::<u64>().min(menu.memory_bytes).max(1);
    let mut rng = Rng::from_state(seed);
    (0..count)
        .map(|c| {
            let long = match dist {
                DriftDistribution::Uniform => false,
                DriftDistribution::LongTail => true,
                DriftDistribution::Mixed => c % 2 == 1,
            };
            let drift = (0..n).map(|_| if long { rng.f32().powi(3) } else { rng.f32() }).collect();
            let power_level = rng.below(menu.n_levels());
            let free_mem = (rng.f32() as f64 * all as f64) as u64;
            let mut resident = 0u64;
            for j in 0..n {
                if rng.below(3) == 0 {
                    resident |= 1 << j;
                }
            }
            SampledContext { drift, power_level, free_mem, resident }
        })
        .collect()
}

/// Drift mass of a context: Σ w_j d_j / Σ w_j.
fn mass(menu: &Menu, drift: &[f32]) -> f32 {
    let w: f32 = menu.weights.iter().sum();
    let m: f32 = menu.weights.iter().zip(drift).map(|(w, &d)| w * clamp_drift(d)).sum();
    if w > 0.0 { m / w } else { 0.0 }
}

/// Number of edges at or below `x` (the class of x).
#[inline]
fn class(edges: &[f32], x: f32) -> usize {
    edges.iter().take_while(|&&e| e <= x).count()
}

/// `k − 1` edges at the quantiles of `values` (sorted in place).
fn quantile_edges(values: &mut [f32], k: usize) -> Vec<f32> {
    values.sort_by(f32::total_cmp);
    let mut edges: Vec<f32> = (1..k).map(|i| values[(i * values.len() / k).min(values.len() - 1)]).collect();
    edges.dedup();
    edges
}

impl PolicyTable {
    pub fn n_tasks(&self) -> usize {
        self.menu.n_tasks()
    }

    fn memory_classes(&self) -> usize {
        self.memory_edges.len() + 1
    }

    fn buckets(&self) -> usize {
        self.mass_edges.len() + 1
    }

    /// Number of cells.
    pub fn cells(&self) -> usize {
        self.menu.n_levels() * self.memory_classes() * self.buckets()
    }

    /// The cell of a context (its power level must be in range).
    pub fn cell(&self, ctx: &Context) -> usize {
        let free = ctx.free_mem as f64 / self.menu.memory_bytes.max(1) as f64;
        let mc = class(&self.memory_edges, free as f32);
        let b = class(&self.mass_edges, mass(&self.menu, ctx.drift));
        (ctx.power_level * self.memory_classes() + mc) * self.buckets() + b
    }

    /// The prices of cell `c`.
    pub fn price(&self, c: usize) -> Price {
        let p = self.prices[c];
        Price { time: TIME_GRID[(p >> 4) as usize], mem: MEM_GRID[(p & 15) as usize] }
    }

    /// A table without learnt prices: every decision is the plain density greedy over `menu` (the
    /// fallback where the bundle has no table for this board).
    pub fn greedy(menu: Menu, board: &str) -> PolicyTable {
        let cells = menu.n_levels();
        PolicyTable {
            version: FORMAT_VERSION,
            board: board.to_string(),
            menu,
            mass_edges: Vec::new(),
            memory_edges: Vec::new(),
            // Index 0 of both grids: no price.
            prices: vec![0; cells],
        }
    }

    /// Serialised (postcard) form, as stored in the bundle.
    pub fn to_postcard(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a policy table always serialises")
    }

    /// Read a table written by [`to_postcard`](Self::to_postcard) and check it.
    pub fn from_postcard(bytes: &[u8]) -> Result<PolicyTable, DctaError> {
        let t: PolicyTable =
            crate::binfile::decode_whole(bytes).map_err(|_| DctaError::BadTable("not a postcard table"))?;
        t.validate()?;
        Ok(t)
    }

    /// Check every size and index, so that look-ups cannot go out of range.
    pub fn validate(&self) -> Result<(), DctaError> {
        if self.version != FORMAT_VERSION {
            return Err(DctaError::BadTable("unknown format version"));
        }
        self.menu.validate()?;
        let sorted = |e: &[f32]| e.iter().all(|x| x.is_finite()) && e.windows(2).all(|w| w[0] < w[1]);
        if !sorted(&self.mass_edges) || !sorted(&self.memory_edges) || self.buckets() > 255 {
            return Err(DctaError::BadTable("bucket edges must be finite and ascending"));
        }
        if self.prices.len() != self.cells() {
            return Err(DctaError::BadTable("prices must hold one entry per cell"));
        }
        if self
            .prices
            .iter()
            .any(|&p| (p >> 4) as usize >= TIME_GRID.len() || (p & 15) as usize >= MEM_GRID.len())
        {
            return Err(DctaError::BadTable("price index out of range"));
        }
        Ok(())
    }
}

/// Build the policy table for a manifest on a board (see `docs/dcta.md`).
pub fn build_policy(
    manifest: &Manifest,
    board: &Board,
    opts: &PolicyOptions,
) -> Result<PolicyTable, DctaError> {
    let menu = Menu::from_manifest(manifest, board, &opts.cost)?;
    build_policy_for(menu, board.name, opts)
}

/// Build the policy table for a menu (`opts.cost` is not used): sample contexts, solve each
/// exactly, and keep per cell the prices with the best mean quality (ties: the best worst case).
pub fn build_policy_for(menu: Menu, board: &str, opts: &PolicyOptions) -> Result<PolicyTable, DctaError> {
    menu.validate()?;
    if opts.buckets == 0 || opts.memory_classes == 0 || opts.samples == 0 {
        return Err(DctaError::BadOption {
            option: "buckets",
            reason: "buckets, classes and samples must be >= 1",
        });
    }
    let samples = sample_contexts(&menu, DriftDistribution::Mixed, opts.samples, opts.seed);
    let mut masses: Vec<f32> = samples.iter().map(|s| mass(&menu, &s.drift)).collect();
    let mass_edges = quantile_edges(&mut masses, opts.buckets as usize);
    let budget = menu.memory_bytes.max(1) as f64;
    let mut frees: Vec<f32> = samples.iter().map(|s| (s.free_mem as f64 / budget) as f32).collect();
    let memory_edges = quantile_edges(&mut frees, opts.memory_classes as usize);
    let mut table = PolicyTable {
        version: FORMAT_VERSION,
        board: board.to_string(),
        menu,
        mass_edges,
        memory_edges,
        prices: Vec::new(),
    };
    let cells = table.cells();
    let grid = TIME_GRID.len() * MEM_GRID.len();

    // Per sample: its cell, and the quality of every price pair.
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |t| t.get()),
        t => t,
    };
    let chunk = samples.len().div_ceil(threads).max(1);
    let mut scores = vec![0.0f64; samples.len() * grid];
    std::thread::scope(|s| {
        for (part, out) in samples.chunks(chunk).zip(scores.chunks_mut(chunk * grid)) {
            let menu = &table.menu;
            s.spawn(move || {
                let mut inst = Instance::for_menu(menu);
                let mut exact = ExactSolver::for_instance(&inst);
                let mut greedy = Greedy::with_size(menu.n_tasks());
                let mut refiner = Refiner::with_size(menu.n_tasks());
                let mut search = ExactSolver::for_instance(&inst);
                for (k, c) in part.iter().enumerate() {
                    menu.fill(&c.as_context(), &mut inst);
                    let (_, mut opt, _) = exact.solve_capped(&inst, BUILD_NODES);
                    let row = &mut out[k * grid..(k + 1) * grid];
                    for (g, slot) in row.iter_mut().enumerate() {
                        let price =
                            Price { time: TIME_GRID[g / MEM_GRID.len()], mem: MEM_GRID[g % MEM_GRID.len()] };
                        // Exactly as the device decides, but for its last step (the exchange of
                        // an uncertified decision), which only ever raises the value.
                        let got = decide(&inst, &mut greedy, &mut refiner, &mut search, price, ROUNDS);
                        *slot = inst.value_of(&got);
                    }
                    // Where the search stopped short, the best choice any method found is the
                    // reference (the ratios rank the prices the same way).
                    opt = row.iter().copied().fold(opt, f64::max);
                    for slot in row.iter_mut() {
                        *slot = if opt > 0.0 { *slot / opt } else { 1.0 };
                    }
                }
            });
        }
    });
    let mut sum = vec![0.0f64; cells * grid];
    let mut worst = vec![1.0f64; cells * grid];
    for (k, c) in samples.iter().enumerate() {
        let cell = table.cell(&c.as_context());
        for g in 0..grid {
            let q = scores[k * grid + g];
            sum[cell * grid + g] += q;
            worst[cell * grid + g] = worst[cell * grid + g].min(q);
        }
    }
    table.prices = (0..cells)
        .map(|c| {
            let mut best = 0usize;
            for g in 1..grid {
                let (a, b) = (
                    (sum[c * grid + g], worst[c * grid + g]),
                    (sum[c * grid + best], worst[c * grid + best]),
                );
                if a.0 > b.0 + 1e-9 || ((a.0 - b.0).abs() <= 1e-9 && a.1 > b.1) {
                    best = g;
                }
            }
            (((best / MEM_GRID.len()) as u8) << 4) | (best % MEM_GRID.len()) as u8
        })
        .collect();
    table.validate()?;
    Ok(table)
}

/// One decision as the device makes it, at the cell's prices `price`: the priced greedy, or the
/// unpriced one where that does better, then `rounds` rounds of the bounded improvement starting
/// from the same prices, then (up to [`SEARCH_OPTIONS`] options) a search of at most
/// [`SEARCH_NODES`] nodes from the improved choice. At most
/// `n + 2 · Greedy::work_bound_from + Refiner::work_bound + ExactSolver::search_work_bound` steps.
pub(crate) fn decide(
    inst: &Instance,
    greedy: &mut Greedy,
    refiner: &mut Refiner,
    search: &mut ExactSolver,
    price: Price,
    rounds: usize,
) -> Choice {
    // V from the tasks' tops, shared by both greedy solves.
    let total = Greedy::total_of(inst);
    let mut choice = greedy.solve_from(inst, price, total);
    let mut work = inst.n as u64 + greedy.work();
    if price != Price::NONE {
        // The cell's prices were learnt on sampled contexts; where this one is better served
        // without them, keep the unpriced answer (the policy never does worse than greedy).
        let plain = greedy.solve_from(inst, Price::NONE, total);
        work += greedy.work();
        if inst.value_of(&plain) > inst.value_of(&choice) {
            choice = plain;
        }
    }
    // The greedy's prices per share, as the improvement's first prices (λ = θ_time · V / m on each
    // unit, μ = θ_mem · V).
    let start = Prices::uniform(inst.m, price.time as f64 * total / inst.m as f64, price.mem as f64 * total);
    let mut out = refiner.refine(inst, choice, start, rounds);

    if inst.n * inst.q <= SEARCH_OPTIONS {
        out = search.search_from(inst, out, refiner.bound_prices(), refiner.bound(), SEARCH_NODES);
        work += search.work();
    }
    refiner.add_work(work);
    out
}

/// What the policy decided for one period: per task, the unit and the K it refreshes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub choice: Choice,
    /// Per task: the unit (or `u8::MAX`) and the K index.
    unit: [u8; MAX_TASKS],
    frames: [u32; MAX_TASKS],
}

impl Plan {
    /// The unit task j runs on, or `None`.
    pub fn unit_of(&self, j: usize) -> Option<usize> {
        self.choice.option_of(j).map(|_| self.unit[j] as usize)
    }

    /// The frames K task j refreshes with (0 when it does not run).
    pub fn frames_of(&self, j: usize) -> u32 {
        self.choice.option_of(j).map_or(0, |_| self.frames[j])
    }

    /// Number of tasks that run.
    pub fn assigned(&self) -> usize {
        self.choice.assigned()
    }
}

/// The device side of the policy: prepared once from a table, then [`allocate`](Self::allocate)
/// per period without allocating.
#[derive(Clone, Debug)]
pub struct Dcta {
    table: PolicyTable,
    inst: Instance,
    /// The menu's option times, looked up when a period's knapsack is posed.
    times: OptionTimes,
    greedy: Greedy,
    refiner: Refiner,
    search: ExactSolver,
    exchanger: Exchanger,
    /// Decisions the bound did not certify (exchanges tried), and those the exchanges improved.
    exchanged: u64,
    improved: u64,
    out: Plan,
    decisions: u64,
    fallbacks: u64,
    /// Steps of the last decision, and the most of any decision so far.
    work: u64,
    work_max: u64,
}

impl Dcta {
    /// Check the table and prepare every buffer.
    pub fn new(table: PolicyTable) -> Result<Dcta, DctaError> {
        table.validate()?;
        let n = table.n_tasks();
        Ok(Dcta {
            inst: Instance::for_menu(&table.menu),
            times: table.menu.option_times(),
            greedy: Greedy::with_size(n),
            refiner: Refiner::with_size(n),
            exchanger: Exchanger::with_size(n),
            exchanged: 0,
            improved: 0,
            search: ExactSolver::with_size(n, table.menu.per_task()),
            work: 0,
            work_max: 0,
            out: Plan { choice: Choice::empty(n), unit: [u8::MAX; MAX_TASKS], frames: [0; MAX_TASKS] },
            decisions: 0,
            fallbacks: 0,
            table,
        })
    }

    /// The plan for context `ctx`: the priced greedy at the prices of the context's cell (or the
    /// unpriced one where that does better), improved by at most [`ROUNDS`] rounds of Lagrangian
    /// pricing ([`Refiner`]). At most [`work_bound`](Self::work_bound) steps, no allocation.
    ///
    /// Outside the table (a drift slice of another length, or a power level the table was not built
    /// for), decides with unpriced greedy at the least-capacity level instead and counts a fallback.
    pub fn allocate(&mut self, ctx: &Context) -> &Plan {
        self.decisions += 1;
        let menu = &self.table.menu;
        let price = if ctx.drift.len() != menu.n_tasks() || ctx.power_level >= menu.n_levels() {
            self.fallbacks += 1;
            Price::NONE
        } else {
            self.table.price(self.table.cell(ctx))
        };
        menu.fill_cached(ctx, &mut self.inst, &self.times);
        let mut choice =
            decide(&self.inst, &mut self.greedy, &mut self.refiner, &mut self.search, price, ROUNDS);
        // Posing the knapsack is one pass over the options.
        self.work = self.inst.n as u64 * self.inst.q as u64 + self.refiner.work();
        // A decision not certified within CERTIFY of the optimum gets the exchanges: by the capped
        // search's bound where it ran (its value when it searched to the end: proven optimal),
        // else by the improvement's Lagrangian bound.
        let value = self.inst.value_of(&choice);
        let bound = if self.inst.n * self.inst.q <= SEARCH_OPTIONS {
            self.search.upper_bound()
        } else {
            self.refiner.bound()
        };
        if self.exchanges_apply() && value < CERTIFY * bound {
            self.exchanged += 1;
            choice = self.exchanger.improve(&self.inst, choice);
            self.work += self.exchanger.work();
            self.improved += u64::from(self.inst.value_of(&choice) > value);
        }
        self.work_max = self.work_max.max(self.work);
        self.out.choice = choice;
        for j in 0..menu.n_tasks() {
            if let Some(i) = choice.option_of(j) {
                let (u, k) = menu.option(i);
                self.out.unit[j] = u as u8;
                self.out.frames[j] = menu.frames[k];
            }
        }
        &self.out
    }

    /// Most steps one decision takes: posing the knapsack (n · q, the options' derived figures and
    /// each task's top included), V from the tops (n), two greedy solves sharing it
    /// ([`Greedy::work_bound_from`]), the improvement's rounds ([`Refiner::work_bound`]), and up to
    /// [`SEARCH_OPTIONS`] options the capped search ([`ExactSolver::search_work_bound`]), and on a
    /// one-unit board the exchanges of a decision the bound does not certify
    /// ([`Exchanger::work_bound`]).
    pub fn work_bound(&self) -> u64 {
        let (n, q, m, k) = (self.inst.n, self.inst.q, self.inst.m, self.inst.k);
        let search =
            if n * q <= SEARCH_OPTIONS { ExactSolver::search_work_bound(n, m, k, SEARCH_NODES) } else { 0 };
        (n * q) as u64
            + n as u64
            + 2 * Greedy::work_bound_from(n, q)
            + Refiner::work_bound(n, q, ROUNDS)
            + search
            + if self.exchanges_apply() { Exchanger::work_bound(n, q, k) } else { 0 }
    }

    /// Whether uncertified decisions get the exchanges: on one-unit boards only. An exchange makes
    /// room on one unit; with several units the Lagrangian bound leaves about half the larger
    /// decisions uncertified while the exchanges change almost none of them (docs/dcta.md, "On
    /// the device").
    fn exchanges_apply(&self) -> bool {
        self.inst.m == 1
    }

    /// Steps of the last decision.
    pub fn work(&self) -> u64 {
        self.work
    }

    /// Most steps of any decision so far.
    pub fn work_max(&self) -> u64 {
        self.work_max
    }

    /// The knapsack of the last decision.
    pub fn instance(&self) -> &Instance {
        &self.inst
    }

    /// Decisions made so far.
    pub fn decisions(&self) -> u64 {
        self.decisions
    }

    /// Decisions whose value the bound did not certify within [`CERTIFY`] of the optimum (the
    /// exchanges were tried), and how many of them the exchanges improved.
    pub fn exchanges(&self) -> (u64, u64) {
        (self.exchanged, self.improved)
    }

    /// Decisions that fell back to unpriced greedy because the context was outside the table.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks
    }

    pub fn table(&self) -> &PolicyTable {
        &self.table
    }

    /// Number of tasks the table was built for.
    pub fn n_tasks(&self) -> usize {
        self.table.n_tasks()
    }
}
