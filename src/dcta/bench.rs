//! `jetlink bench dcta`: table look-up against the exact solver and the greedy baseline on held-out
//! contexts (continuous drift values, never the bucket centres the table was built from, plus any
//! real contexts the caller passes): time per decision, quality under the true (unquantised)
//! importances, and energy per decision (RAPL where readable, otherwise an estimate from CPU time and
//! the board's CPU busy power, labelled as such).

use std::hint::black_box;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::DctaError;
use super::exact::ExactSolver;
use super::greedy::greedy;
use super::problem::{Allocation, Problem, Tatim, importance};
use super::table::{Dcta, PolicyOptions, build_policy_for};
use crate::board::{Board, ResourceKind};
use crate::manifest::Manifest;

/// RAPL package energy counter (Intel, Linux powercap).
pub const RAPL_ENERGY: &str = "/sys/class/powercap/intel-rapl:0/energy_uj";
/// Wrap-around value of [`RAPL_ENERGY`].
pub const RAPL_RANGE: &str = "/sys/class/powercap/intel-rapl:0/max_energy_range_uj";
/// Per-thread CPU time (first field, ns).
const SCHEDSTAT: &str = "/proc/thread-self/schedstat";

/// How held-out drift values are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriftDistribution {
    /// d_j uniform in [0, 1].
    Uniform,
    /// d_j = u³ with u uniform: most targets drift little, a few a lot (task importance is
    /// long-tailed).
    LongTail,
}

/// Where the tasks' work t_j comes from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Workload {
    /// The manifest, through the cost model. The demo's work is dominated by its two OCR models, so
    /// its knapsack has few distinct answers.
    Manifest,
    /// The manifest's tasks and importances with synthetic work: t_j log-uniform over a
    /// `spread`-fold range (seeded), then scaled to the cost model's `stress` (a deployment of
    /// several models of comparable size, where the knapsack is combinatorial).
    Spread { seed: u64, spread: f64 },
}

/// Arguments of [`bench`].
#[derive(Clone, Debug, PartialEq)]
pub struct BenchArgs {
    /// How to build the table (the cost model's `stress` decides how tight the knapsack is).
    pub policy: PolicyOptions,
    pub workload: Workload,
    /// Held-out contexts to draw.
    pub contexts: usize,
    pub distribution: DriftDistribution,
    pub seed: u64,
    /// Real contexts from the caller (drift per task, power level), evaluated with the drawn ones.
    pub real: Vec<(Vec<f32>, usize)>,
    /// Each method runs at least this long for the energy measurement.
    pub energy_seconds: f64,
}

impl Default for BenchArgs {
    fn default() -> BenchArgs {
        let mut policy = PolicyOptions::default();
        policy.cost.stress = Some(1.5);
        BenchArgs {
            policy,
            workload: Workload::Manifest,
            contexts: 2000,
            distribution: DriftDistribution::Uniform,
            seed: 1,
            real: Vec::new(),
            energy_seconds: 0.3,
        }
    }
}

/// Where the energy figures come from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum EnergySource {
    /// Measured: RAPL package energy over each method's run (includes the idle package power).
    Rapl,
    /// Estimated: the thread's CPU time (`clock`: schedstat, or wall time where that is unreadable)
    /// × the board's CPU busy power.
    Estimate { cpu_busy_mw: u32, clock: &'static str },
}

/// One method's figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MethodStats {
    pub method: &'static str,
    /// Time per decision, ns: median and 99th percentile over batches of [`BATCH`] decisions.
    pub median_ns: f64,
    pub p99_ns: f64,
    /// Σ achieved importance / Σ optimal importance, under the true importances.
    pub quality: f64,
    /// Worst single context (achieved / optimal), contexts with a positive optimum.
    pub quality_min: f64,
    /// Energy per decision, nJ.
    pub energy_nj: f64,
}

/// Decisions per timing sample.
pub const BATCH: usize = 8;

/// Everything `jetlink bench dcta` reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchReport {
    pub board: String,
    pub tasks: usize,
    pub units: Vec<String>,
    pub power_levels: Vec<f32>,
    /// ρ: all tasks' work over the board's speed-weighted capacity at level 0.
    pub load: f64,
    pub workload: Workload,
    /// t_j, µs on a speed-1 unit.
    pub work_us: Vec<f64>,
    pub buckets: u8,
    pub cells: usize,
    pub allocations: usize,
    /// Postcard size of the table, as stored in the bundle.
    pub table_bytes: usize,
    pub build_seconds: f64,
    pub contexts: usize,
    pub distribution: DriftDistribution,
    pub energy: EnergySource,
    pub lookup: MethodStats,
    pub exact: MethodStats,
    pub greedy: MethodStats,
    /// Exact median time / look-up median time.
    pub time_ratio: f64,
    /// 1 − look-up energy / exact energy.
    pub energy_saving: f64,
    /// Greedy fallbacks of the look-up on these contexts.
    pub fallbacks: u64,
    /// Mean branch-and-bound nodes per exact solve.
    pub exact_nodes: f64,
}

impl BenchReport {
    /// A plain-text table for the terminal.
    pub fn to_table(&self) -> String {
        let mut s = format!(
            "dcta bench: board {}, {} tasks on {} ({} power levels), load ρ = {:.2}, workload {:?}\n\
             table: {} buckets, {} cells, {} distinct allocations, {} bytes, built in {:.2} s\n\
             {} held-out contexts ({:?} drift); energy: {}\n\n",
            self.board,
            self.tasks,
            self.units.join(", "),
            self.power_levels.len(),
            self.load,
            self.workload,
            self.buckets,
            self.cells,
            self.allocations,
            self.table_bytes,
            self.build_seconds,
            self.contexts,
            self.distribution,
            match &self.energy {
                EnergySource::Rapl => "measured (RAPL package)".to_string(),
                EnergySource::Estimate { cpu_busy_mw, clock } =>
                    format!("ESTIMATE = CPU time ({clock}) × {cpu_busy_mw} mW board CPU busy power"),
            }
        );
        s += &format!(
            "{:<8} {:>12} {:>12} {:>10} {:>10} {:>14}\n",
            "method", "median ns", "p99 ns", "quality", "worst", "energy nJ"
        );
        for m in [&self.lookup, &self.exact, &self.greedy] {
            s += &format!(
                "{:<8} {:>12.1} {:>12.1} {:>9.2}% {:>9.2}% {:>14.1}\n",
                m.method,
                m.median_ns,
                m.p99_ns,
                100.0 * m.quality,
                100.0 * m.quality_min,
                m.energy_nj
            );
        }
        s += &format!(
            "\nlook-up vs exact: {:.0}× faster (median), {:.1}% less energy; {} fallbacks; exact: {:.0} nodes/solve\n",
            self.time_ratio,
            100.0 * self.energy_saving,
            self.fallbacks,
            self.exact_nodes
        );
        s
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }
}

struct Ctx {
    drift: Vec<f32>,
    level: usize,
}

/// Build the table for `manifest` on `board` and compare look-up, exact and greedy on held-out
/// contexts.
pub fn bench(manifest: &Manifest, board: &Board, args: &BenchArgs) -> Result<BenchReport, DctaError> {
    let mut tatim = Tatim::from_manifest(manifest, board, &args.policy.cost)?;
    if let Workload::Spread { seed, spread } = args.workload {
        if !(spread.is_finite() && spread >= 1.0) {
            return Err(DctaError::BadOption { option: "spread", reason: "must be finite and >= 1" });
        }
        let mut rng = crate::links::Rng::from_state(seed);
        let work: Vec<f64> = (0..tatim.n_tasks()).map(|_| spread.powf(rng.f32() as f64) * 1e3).collect();
        tatim = tatim.with_work(&work, args.policy.cost.stress)?;
    }
    bench_tatim(tatim, board, args)
}

fn bench_tatim(tatim: Tatim, board: &Board, args: &BenchArgs) -> Result<BenchReport, DctaError> {
    if args.contexts == 0 && args.real.is_empty() {
        return Err(DctaError::BadOption { option: "contexts", reason: "need at least one context" });
    }
    let t0 = Instant::now();
    let table = build_policy_for(tatim.clone(), board.name, &args.policy)?;
    let build_seconds = t0.elapsed().as_secs_f64();
    let table_bytes = table.to_postcard().len();
    let (cells, allocations, buckets) = (table.cells(), table.n_allocations(), table.buckets);
    let mut dcta = Dcta::new(table)?;

    let (n, levels) = (tatim.n_tasks(), tatim.n_levels());
    let mut rng = crate::links::Rng::from_state(args.seed);
    let mut ctxs: Vec<Ctx> = (0..args.contexts)
        .map(|_| Ctx {
            drift: (0..n)
                .map(|_| match args.distribution {
                    DriftDistribution::Uniform => rng.f32(),
                    DriftDistribution::LongTail => rng.f32().powi(3),
                })
                .collect(),
            level: rng.below(levels),
        })
        .collect();
    ctxs.extend(args.real.iter().map(|(d, l)| Ctx { drift: d.clone(), level: *l }));
    let bases: Vec<Problem> = (0..levels).map(|l| tatim.base_problem(l)).collect::<Result<_, _>>()?;
    let weights = tatim.weights.clone();
    let problem = |c: &Ctx| {
        let mut p = bases[c.level.min(levels - 1)];
        for (j, &d) in c.drift.iter().enumerate().take(n) {
            p.values[j] = importance(weights[j], d);
        }
        p
    };

    // Quality under the true importances.
    let mut solver = ExactSolver::new();
    let (mut opt_sum, mut got) = (0.0, [0.0f64; 3]);
    let mut worst = [1.0f64; 3];
    let mut nodes = 0u64;
    let before = dcta.fallbacks();
    for c in &ctxs {
        let p = problem(c);
        let (exact, opt) = solver.solve(&p);
        nodes += solver.nodes();
        let picks = [*dcta.allocate(&c.drift, c.level), exact, greedy(&p)];
        opt_sum += opt;
        for (k, a) in picks.iter().enumerate() {
            let v = if p.is_feasible(a) { p.value_of(a) } else { 0.0 };
            got[k] += v;
            if opt > 0.0 {
                worst[k] = worst[k].min(v / opt);
            }
        }
    }
    let fallbacks = dcta.fallbacks() - before;

    let energy = EnergyMeter::new(board);
    let run = |method: &mut dyn FnMut(&Ctx) -> Allocation| -> (f64, f64, f64) {
        let mut samples = Vec::new();
        for _ in 0..3 {
            for batch in ctxs.chunks(BATCH) {
                let t = Instant::now();
                for c in batch {
                    black_box(method(black_box(c)));
                }
                samples.push(t.elapsed().as_nanos() as f64 / batch.len() as f64);
            }
        }
        samples.sort_by(f64::total_cmp);
        let median = samples[samples.len() / 2];
        let p99 = samples[((samples.len() as f64 * 0.99) as usize).min(samples.len() - 1)];
        let start = energy.read();
        let t = Instant::now();
        let mut count = 0u64;
        while t.elapsed().as_secs_f64() < args.energy_seconds {
            for c in &ctxs {
                black_box(method(black_box(c)));
            }
            count += ctxs.len() as u64;
        }
        let nj = energy.joules_since(start, t.elapsed().as_secs_f64()) * 1e9 / count as f64;
        (median, p99, nj)
    };
    let lookup = run(&mut |c| *dcta.allocate(&c.drift, c.level));
    let exact = run(&mut |c| solver.solve(&problem(c)).0);
    let greedy_t = run(&mut |c| greedy(&problem(c)));

    let stats = |method, (median_ns, p99_ns, energy_nj): (f64, f64, f64), k: usize| MethodStats {
        method,
        median_ns,
        p99_ns,
        quality: if opt_sum > 0.0 { got[k] / opt_sum } else { 1.0 },
        quality_min: worst[k],
        energy_nj,
    };
    Ok(BenchReport {
        board: board.name.to_string(),
        tasks: n,
        units: tatim.units.clone(),
        power_levels: tatim.power_levels.clone(),
        load: tatim.load,
        workload: args.workload,
        work_us: tatim.work_us.clone(),
        buckets,
        cells,
        allocations,
        table_bytes,
        build_seconds,
        contexts: ctxs.len(),
        distribution: args.distribution,
        energy: energy.source(),
        lookup: stats("lookup", lookup, 0),
        exact: stats("exact", exact, 1),
        greedy: stats("greedy", greedy_t, 2),
        time_ratio: exact.0 / lookup.0.max(1e-3),
        energy_saving: 1.0 - lookup.2 / exact.2.max(1e-12),
        fallbacks,
        exact_nodes: nodes as f64 / ctxs.len() as f64,
    })
}

/// Energy over a stretch of work: RAPL where readable, else CPU time × the board's CPU busy power.
struct EnergyMeter {
    rapl_range_uj: Option<u64>,
    cpu_busy_mw: u32,
    schedstat: bool,
}

impl EnergyMeter {
    fn new(board: &Board) -> EnergyMeter {
        let rapl = read_u64(RAPL_ENERGY).map(|_| read_u64(RAPL_RANGE).unwrap_or(u64::MAX));
        let cpu_busy_mw =
            board.resources.iter().find(|r| r.kind == ResourceKind::Cpu).map_or(0, |r| r.busy_power_mw);
        EnergyMeter { rapl_range_uj: rapl, cpu_busy_mw, schedstat: read_schedstat().is_some() }
    }

    fn source(&self) -> EnergySource {
        match self.rapl_range_uj {
            Some(_) => EnergySource::Rapl,
            None => EnergySource::Estimate {
                cpu_busy_mw: self.cpu_busy_mw,
                clock: if self.schedstat { "schedstat" } else { "wall" },
            },
        }
    }

    /// A reading: RAPL µJ or thread CPU ns.
    fn read(&self) -> u64 {
        match self.rapl_range_uj {
            Some(_) => read_u64(RAPL_ENERGY).unwrap_or(0),
            None => read_schedstat().unwrap_or(0),
        }
    }

    fn joules_since(&self, start: u64, wall_s: f64) -> f64 {
        let now = self.read();
        match self.rapl_range_uj {
            Some(range) => {
                let d = if now >= start { now - start } else { range - start + now };
                d as f64 * 1e-6
            }
            None => {
                let cpu_s = if self.schedstat { now.saturating_sub(start) as f64 * 1e-9 } else { wall_s };
                cpu_s * self.cpu_busy_mw as f64 * 1e-3
            }
        }
    }
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_schedstat() -> Option<u64> {
    std::fs::read_to_string(SCHEDSTAT).ok()?.split_whitespace().next()?.parse().ok()
}
