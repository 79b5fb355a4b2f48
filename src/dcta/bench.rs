//! `jetlink bench dcta`: the policy against the exact solver and the unpriced greedy, swept over the
//! problem size (tasks × K choices × units) on held-out contexts (uniform and long-tailed drift, drawn
//! with another seed than the policy's training contexts, plus any real contexts the caller passes):
//! time per decision, branch-and-bound nodes, quality against the exact optimum, energy per decision
//! (RAPL where readable, otherwise an estimate from CPU time and the board's CPU busy power, labelled
//! as such), table bytes and build time.

use std::hint::black_box;
use std::time::Instant;

use serde::Serialize;

use super::DctaError;
use super::exact::ExactSolver;
use super::greedy::{Greedy, Price};
use super::menu::{Choice, Instance, Menu};
use super::problem::{CostModel, Tatim};
use super::table::{
    Dcta, DriftDistribution, PolicyOptions, SampledContext, build_policy_for, sample_contexts,
};
use crate::board::{Board, ResourceKind};
use crate::links::Rng;
use crate::manifest::Manifest;

/// RAPL package energy counter (Intel, Linux powercap).
pub const RAPL_ENERGY: &str = "/sys/class/powercap/intel-rapl:0/energy_uj";
/// Wrap-around value of [`RAPL_ENERGY`].
pub const RAPL_RANGE: &str = "/sys/class/powercap/intel-rapl:0/max_energy_range_uj";
/// Per-thread CPU time (first field, ns).
const SCHEDSTAT: &str = "/proc/thread-self/schedstat";

/// Arguments of [`bench`].
#[derive(Clone, Debug, PartialEq)]
pub struct BenchArgs {
    /// How to build each size's policy (the cost model's `stress` decides how tight the knapsack is).
    pub policy: PolicyOptions,
    /// Sizes to sweep, (tasks, K choices): each has tasks × choices × the board's units options.
    /// Tasks beyond the manifest's models repeat them with work spread log-uniformly over
    /// `spread`-fold (several workloads' models on one board); K choices other than the cost
    /// model's own are spaced log-evenly over its range, their gain interpolated from its measured
    /// curve ([`CostModel::with_choices`]).
    pub sizes: Vec<(usize, usize)>,
    pub spread: f64,
    /// Held-out contexts per size and drift distribution.
    pub contexts: usize,
    pub seed: u64,
    /// Real contexts from the caller, evaluated at the manifest's own size.
    pub real: Vec<SampledContext>,
    /// Each method runs at least this long for the energy measurement.
    pub energy_seconds: f64,
    /// Sizes with more options than this are skipped (the default ladder reaches 1,024 options on
    /// every board: 8 tasks × 8 K × 4 units is 256, 64 tasks × 16 K × 1 unit is 1,024).
    pub max_options: usize,
    /// Search nodes per exact solve of a held-out context; where the search stops short the best
    /// choice found is the reference and the Lagrangian bound bounds the quality from below.
    pub exact_nodes: u64,
}

impl Default for BenchArgs {
    fn default() -> BenchArgs {
        let mut policy = PolicyOptions::default();
        policy.cost.stress = Some(1.5);
        BenchArgs {
            policy,
            sizes: vec![(2, 4), (4, 4), (8, 4), (8, 8), (16, 8), (16, 16), (32, 16), (64, 16)],
            spread: 10.0,
            contexts: 400,
            seed: 1,
            real: Vec::new(),
            energy_seconds: 0.2,
            max_options: 1024,
            exact_nodes: 200_000,
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

/// One method's figures at one size.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MethodStats {
    pub method: &'static str,
    /// Time per decision (posing the knapsack included), ns: median, 99th percentile and mean, over
    /// every timing (each context is timed three times).
    pub median_ns: f64,
    pub p99_ns: f64,
    pub mean_ns: f64,
    /// 99th percentile over contexts of each context's fastest timing, ns: the decision's own
    /// cost, with a timing that the shared host preempted or slowed left out.
    pub p99_own_ns: f64,
    /// Mean over contexts of achieved / optimal value (contexts with a positive optimum).
    pub quality: f64,
    /// Worst single context.
    pub quality_min: f64,
    /// Energy per decision, nJ.
    pub energy_nj: f64,
}

/// Figures of one problem size and drift distribution.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SizeReport {
    /// Options: tasks × K choices × units (the problem's size).
    pub tasks: usize,
    pub n_tasks: usize,
    pub choices: usize,
    pub units: usize,
    /// `uniform`, `long-tail`, or `loop` (the caller's real contexts).
    pub distribution: &'static str,
    pub contexts: usize,
    /// The policy's time per decision, µs: median and 99th percentile (as `lookup`).
    pub policy_median_us: f64,
    pub policy_p99_us: f64,
    /// The policy's own 99th percentile, µs (`lookup.p99_own_ns`).
    pub policy_p99_own_us: f64,
    /// Exact median time / policy median time.
    pub speedup: f64,
    /// Exact mean time / policy mean time.
    pub speedup_mean: f64,
    /// 1 − policy energy / exact energy.
    pub energy_saved: f64,
    /// The policy's quality: mean and worst over the held-out contexts, against the optimum (the
    /// best choice found where the exact search stopped at `exact_node_cap` nodes).
    pub quality_mean: f64,
    pub quality_worst: f64,
    /// Its 1st percentile over the contexts.
    pub quality_p1: f64,
    /// Mean and worst against an upper bound on the optimum (the proven optimum, else the
    /// Lagrangian bound): never above the true quality.
    pub quality_bound_mean: f64,
    pub quality_bound_worst: f64,
    /// Share of the held-out contexts the exact search proved optimal within `exact_node_cap`.
    pub exact_proven: f64,
    pub exact_node_cap: u64,
    /// Steps per decision of the policy (options looked at, plus ordering steps): the most any
    /// held-out context took, and the bound `Dcta::work_bound` states for this size.
    pub policy_work_max: u64,
    pub policy_work_bound: u64,
    /// Decisions whose steps exceeded the bound (0 unless the bound is wrong).
    pub policy_work_over: u64,
    /// Share of the held-out decisions that got the exchanges (on a one-unit board, those no bound
    /// certified within `dcta::CERTIFY` of the optimum), and share the exchanges improved.
    pub policy_exchanged: f64,
    pub policy_exchange_improved: f64,
    /// Postcard bytes of the policy table, as stored in the bundle.
    pub table_bytes: usize,
    pub cells: usize,
    pub build_seconds: f64,
    /// Branch-and-bound nodes per exact solve: median and 99th percentile.
    pub exact_nodes_median: f64,
    pub exact_nodes_p99: f64,
    /// Decisions outside the table.
    pub fallbacks: u64,
    pub lookup: MethodStats,
    pub exact: MethodStats,
    pub greedy: MethodStats,
}

/// Everything `jetlink bench dcta` reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchReport {
    pub board: String,
    pub units: Vec<String>,
    /// The K choices and their gains: the swept sizes' where they all have one count of K
    /// choices, else the cost model's (other counts are spaced log-evenly over its range).
    pub frames: Vec<u32>,
    pub gain: Vec<f32>,
    pub power_levels: Vec<f32>,
    /// ρ: all tasks' work at K₀ over the board's speed-weighted capacity at level 0.
    pub load: f64,
    pub energy: EnergySource,
    pub sizes: Vec<SizeReport>,
}

impl BenchReport {
    /// A plain-text table for the terminal.
    pub fn to_table(&self) -> String {
        let mut s = format!(
            "dcta bench: board {}, units {}, K choices {:?} (gain {:?}), {} power levels, load ρ = {:.2}\n\
             energy: {}\n\n",
            self.board,
            self.units.join(", "),
            self.frames,
            self.gain,
            self.power_levels.len(),
            self.load,
            match &self.energy {
                EnergySource::Rapl => "measured (RAPL package)".to_string(),
                EnergySource::Estimate { cpu_busy_mw, clock } =>
                    format!("ESTIMATE = CPU time ({clock}) × {cpu_busy_mw} mW board CPU busy power"),
            }
        );
        s += &format!(
            "{:>7} {:>5} {:<9} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9} {:>6} {:>7} {:>7}\n",
            "options",
            "tasks",
            "drift",
            "exact ns",
            "exact p99",
            "policy ns",
            "pol. p99",
            "own p99",
            "greedy ns",
            "energy",
            "quality",
            "p1",
            "worst",
            "vs bound",
            "proven",
            "work/bnd",
            "exch.",
            "bytes",
            "build s"
        );
        for z in &self.sizes {
            s += &format!(
                "{:>7} {:>5} {:<9} {:>10.0} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>7.1}% {:>7.2}% {:>7.2}% {:>7.2}% {:>7.2}% {:>6.0}% {:>8.2} {:>5.1}% {:>7} {:>7.1}\n",
                z.tasks,
                z.n_tasks,
                z.distribution,
                z.exact.median_ns,
                z.exact.p99_ns,
                z.lookup.median_ns,
                z.lookup.p99_ns,
                z.lookup.p99_own_ns,
                z.greedy.median_ns,
                100.0 * z.energy_saved,
                100.0 * z.quality_mean,
                100.0 * z.quality_p1,
                100.0 * z.quality_worst,
                100.0 * z.quality_bound_worst,
                100.0 * z.exact_proven,
                z.policy_work_max as f64 / z.policy_work_bound.max(1) as f64,
                100.0 * z.policy_exchanged,
                z.table_bytes,
                z.build_seconds
            );
        }
        s
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// Time per decision against problem size for the three methods (log–log), as SVG.
    pub fn to_svg(&self) -> String {
        let (w, h, l, r, t, b) = (640.0, 400.0, 70.0, 150.0, 30.0, 50.0);
        let pts: Vec<(f64, [f64; 3])> = self
            .sizes
            .iter()
            .filter(|z| z.distribution == "uniform")
            .map(|z| (z.tasks as f64, [z.exact.median_ns, z.lookup.median_ns, z.greedy.median_ns]))
            .collect();
        let mut svg = format!(
            "{}\n<text x=\"{l}\" y=\"18\">DCTA on {}: time per decision against options (uniform drift)</text>\n",
            crate::plot::svg_open(w, h),
            self.board
        );
        if pts.is_empty() {
            return svg + "</svg>\n";
        }
        let lg = |v: f64| v.max(1.0).log10();
        let (x0, x1) = (lg(pts[0].0), lg(pts[pts.len() - 1].0).max(lg(pts[0].0) + 1.0));
        let all = pts.iter().flat_map(|p| p.1);
        let (y0, y1) = all.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(lg(v)), b.max(lg(v))));
        let (y0, y1) = (y0.floor(), y1.ceil().max(y0.floor() + 1.0));
        let px = |x: f64| l + (lg(x) - x0) / (x1 - x0) * (w - l - r);
        let py = |y: f64| h - b - (lg(y) - y0) / (y1 - y0) * (h - t - b);
        svg += &format!(
            "<line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"black\"/>\n",
            h - b,
            w - r,
            h - b,
            h - b
        );
        for e in y0 as i32..=y1 as i32 {
            let y = py(10f64.powi(e));
            svg +=
                &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">1e{e} ns</text>\n", l - 4.0, y + 4.0);
        }
        for p in &pts {
            svg += &format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                px(p.0),
                h - b + 16.0,
                p.0
            );
        }
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">options (tasks × K × units)</text>\n",
            (l + w - r) / 2.0,
            h - 8.0
        );
        for (k, (name, colour)) in
            [("exact", "#c0392b"), ("policy", "#2471a3"), ("greedy", "#7f8c8d")].iter().enumerate()
        {
            let line: Vec<String> = pts.iter().map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1[k]))).collect();
            svg += &format!(
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
                line.join(" ")
            );
            let y = t + 20.0 * k as f64;
            svg += &format!(
                "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{colour}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{name}</text>\n",
                w - r + 10.0,
                w - r + 30.0,
                w - r + 35.0,
                y + 4.0
            );
        }
        svg + "</svg>\n"
    }
}

/// The problem data of `n` tasks on `board`: the manifest's models repeated, task work log-uniform
/// over a `spread`-fold range around each model's own (seeded), scaled to the cost model's `stress`.
pub fn tatim_of_size(
    base: &Tatim,
    n: usize,
    spread: f64,
    seed: u64,
    cost: &CostModel,
) -> Result<Tatim, DctaError> {
    if !(spread.is_finite() && spread >= 1.0) {
        return Err(DctaError::BadOption { option: "spread", reason: "must be finite and >= 1" });
    }
    if n == 0 || n > super::MAX_TASKS {
        return Err(DctaError::TaskCount { tasks: n, max: super::MAX_TASKS });
    }
    let n0 = base.n_tasks();
    let mut rng = Rng::from_state(seed);
    let work: Vec<f64> = (0..n).map(|j| base.work_us[j % n0] * spread.powf(rng.f32() as f64)).collect();
    let m = base.n_units();
    let weighted: f64 = base.speeds.iter().zip(base.capacity(0)).map(|(s, &c)| *s as f64 * c as f64).sum();
    let raw = work.iter().sum::<f64>() / weighted;
    let scale = cost.stress.map_or(1.0, |rho| rho / raw);
    let mut t = base.clone();
    t.tasks = (0..n)
        .map(|j| if j < n0 { base.tasks[j].clone() } else { format!("{}#{}", base.tasks[j % n0], j / n0) })
        .collect();
    t.weights = (0..n).map(|j| base.weights[j % n0]).collect();
    t.work_us = work.iter().map(|w| w * scale).collect();
    t.costs_us =
        (0..n * m).map(|i| (t.work_us[i / m] / base.speeds[i % m] as f64).ceil().max(1.0) as u64).collect();
    t.load = raw * scale;
    Ok(t)
}

/// Sweep the problem size for `manifest` on `board`: build each size's policy, then compare policy,
/// exact and greedy on held-out contexts.
pub fn bench(manifest: &Manifest, board: &Board, args: &BenchArgs) -> Result<BenchReport, DctaError> {
    if args.contexts == 0 || args.sizes.is_empty() {
        return Err(DctaError::BadOption {
            option: "contexts",
            reason: "need at least one context and one size",
        });
    }
    let base = Tatim::from_manifest(manifest, board, &args.policy.cost)?;
    let mem: Vec<u64> =
        manifest.models.iter().map(|m| m.cost.weight_bytes + m.cost.activation_bytes).collect();
    let weight: Vec<u64> = manifest.models.iter().map(|m| m.cost.weight_bytes).collect();
    let energy = EnergyMeter::new(board);
    let mut sizes = Vec::new();
    let mut load = base.load;
    for &(n, choices) in &args.sizes {
        if n == 0 || n > super::MAX_TASKS {
            return Err(DctaError::TaskCount { tasks: n, max: super::MAX_TASKS });
        }
        if n * choices * base.n_units() > args.max_options {
            continue;
        }
        let cost = &args.policy.cost.with_choices(choices)?;
        let tatim = tatim_of_size(&base, n, args.spread, args.seed ^ n as u64, cost)?;
        if n == base.n_tasks() {
            load = tatim.load;
        }
        let cyc = |v: &[u64]| (0..n).map(|j| v[j % v.len()]).collect::<Vec<u64>>();
        let slots = board.ticks_per_period / cost.label_every.max(1);
        let menu =
            Menu::from_tatim(&tatim, cost, &cyc(&mem), &cyc(&weight), board.model_budget_bytes, slots)?;
        let t0 = Instant::now();
        let table = build_policy_for(menu.clone(), board.name, &args.policy)?;
        let build_seconds = t0.elapsed().as_secs_f64();
        let table_bytes = table.to_postcard().len();
        let cells = table.cells();
        let mut dcta = Dcta::new(table)?;
        let mut sets: Vec<(&'static str, Vec<SampledContext>)> = vec![
            (
                "uniform",
                sample_contexts(
                    &menu,
                    DriftDistribution::Uniform,
                    args.contexts,
                    args.seed.wrapping_add(1000 + n as u64),
                ),
            ),
            (
                "long-tail",
                sample_contexts(
                    &menu,
                    DriftDistribution::LongTail,
                    args.contexts,
                    args.seed.wrapping_add(2000 + n as u64),
                ),
            ),
        ];
        if n == manifest.models.len() && choices == args.policy.cost.frames.len() && !args.real.is_empty() {
            sets.push(("loop", args.real.clone()));
        }
        for (name, ctxs) in sets {
            let z = measure(&menu, &mut dcta, &ctxs, &energy, args.energy_seconds, args.exact_nodes);
            sizes.push(SizeReport { distribution: name, table_bytes, cells, build_seconds, ..z });
        }
    }
    // The K choices the header names: those of the sizes swept where they all have one count (a
    // single `--tasks N --choices K` size), else the cost model's own.
    let counts: std::collections::BTreeSet<usize> = sizes.iter().map(|z| z.choices).collect();
    let named = match counts.iter().collect::<Vec<_>>()[..] {
        [&c] => args.policy.cost.with_choices(c)?,
        _ => args.policy.cost.clone(),
    };
    Ok(BenchReport {
        board: board.name.to_string(),
        units: base.units.clone(),
        frames: named.frames,
        gain: named.gain,
        power_levels: base.power_levels.clone(),
        load,
        energy: energy.source(),
        sizes,
    })
}

/// Timings of each context per method (the own p99 takes each context's fastest).
const TIMINGS: usize = 3;

/// Quality, nodes, time and energy of the three methods on `ctxs`.
fn measure(
    menu: &Menu,
    dcta: &mut Dcta,
    ctxs: &[SampledContext],
    energy: &EnergyMeter,
    seconds: f64,
    exact_nodes: u64,
) -> SizeReport {
    let mut inst = Instance::for_menu(menu);
    let mut exact = ExactSolver::for_instance(&inst);
    let mut greedy = Greedy::with_size(menu.n_tasks());
    let (mut sum, mut worst, mut count) = ([0.0f64; 3], [1.0f64; 3], 0usize);
    let (mut bound_sum, mut bound_worst, mut proven) = (0.0f64, 1.0f64, 0usize);
    let mut qualities = Vec::with_capacity(ctxs.len());
    let mut nodes = Vec::with_capacity(ctxs.len());
    let before = dcta.fallbacks();
    let exchanges_before = dcta.exchanges();
    let (mut work_max, mut work_over) = (0u64, 0u64);
    for c in ctxs {
        let ctx = c.as_context();
        let policy = dcta.allocate(&ctx).choice;
        work_max = work_max.max(dcta.work());
        work_over += (dcta.work() > dcta.work_bound()) as u64;
        menu.fill(&ctx, &mut inst);
        let (best, found, done) = exact.solve_capped(&inst, exact_nodes);
        nodes.push(exact.nodes().min(exact_nodes) as f64);
        let plain = greedy.solve(&inst, Price::NONE);
        let feasible = |ch: &Choice| if inst.is_feasible(ch) { inst.value_of(ch) } else { 0.0 };
        // Where the search stopped short, the best choice any method found is the reference.
        let opt = found.max(feasible(&policy)).max(feasible(&plain));
        if opt <= 0.0 {
            continue;
        }
        count += 1;
        proven += done as usize;
        for (k, ch) in [policy, best, plain].iter().enumerate() {
            let v = feasible(ch);
            sum[k] += v / opt;
            worst[k] = worst[k].min(v / opt);
        }
        qualities.push(feasible(&policy) / opt);
        let ub = if done { found } else { exact.upper_bound().max(opt) };
        bound_sum += feasible(&policy) / ub;
        bound_worst = bound_worst.min(feasible(&policy) / ub);
    }
    qualities.sort_by(f64::total_cmp);
    let quality_p1 = if qualities.is_empty() { 1.0 } else { crate::percentile::of_sorted(&qualities, 1.0) };
    let fallbacks = dcta.fallbacks() - before;
    let (tried, improved) = dcta.exchanges();
    let share = |x: u64| x as f64 / ctxs.len().max(1) as f64;
    let (policy_exchanged, policy_exchange_improved) =
        (share(tried - exchanges_before.0), share(improved - exchanges_before.1));
    let run = |method: &mut dyn FnMut(&SampledContext) -> Choice| -> (f64, f64, f64, f64, f64) {
        // Decision by decision: exact solve times are heavy-tailed, so a batch's mean would not be
        // a median. The clock's own cost (tens of ns) is in every figure.
        let mut samples = Vec::with_capacity(ctxs.len() * TIMINGS);
        for _ in 0..TIMINGS {
            for c in ctxs {
                let t = Instant::now();
                black_box(method(black_box(c)));
                samples.push(t.elapsed().as_nanos() as f64);
            }
        }
        let mean = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
        // Each context's fastest timing (samples are by repetition, then context).
        let mut own: Vec<f64> = (0..ctxs.len())
            .map(|c| (0..TIMINGS).map(|r| samples[r * ctxs.len() + c]).fold(f64::INFINITY, f64::min))
            .collect();
        let (_, p99_own) = percentiles(&mut own);
        let (median, p99) = percentiles(&mut samples);
        let start = energy.read();
        let t = Instant::now();
        let mut done = 0u64;
        while t.elapsed().as_secs_f64() < seconds || done == 0 {
            for c in ctxs {
                black_box(method(black_box(c)));
            }
            done += ctxs.len() as u64;
        }
        let nj = energy.joules_since(start, t.elapsed().as_secs_f64()) * 1e9 / done as f64;
        (median, p99, mean, nj, p99_own)
    };
    let lookup = run(&mut |c| dcta.allocate(&c.as_context()).choice);
    let ex = run(&mut |c| {
        menu.fill(&c.as_context(), &mut inst);
        exact.solve_capped(&inst, exact_nodes).0
    });
    let mut inst2 = Instance::for_menu(menu);
    let gr = run(&mut |c| {
        menu.fill(&c.as_context(), &mut inst2);
        greedy.solve(&inst2, Price::NONE)
    });
    let (nodes_median, nodes_p99) = percentiles(&mut nodes);
    let stats = |method,
                 (median_ns, p99_ns, mean_ns, energy_nj, p99_own_ns): (f64, f64, f64, f64, f64),
                 k: usize| MethodStats {
        method,
        median_ns,
        p99_ns,
        p99_own_ns,
        mean_ns,
        quality: if count > 0 { sum[k] / count as f64 } else { 1.0 },
        quality_min: worst[k],
        energy_nj,
    };
    let lookup = stats("policy", lookup, 0);
    let exact = stats("exact", ex, 1);
    SizeReport {
        tasks: menu.n_options(),
        n_tasks: menu.n_tasks(),
        choices: menu.n_choices(),
        units: menu.n_units(),
        distribution: "",
        contexts: ctxs.len(),
        speedup: exact.median_ns / lookup.median_ns.max(1e-3),
        speedup_mean: exact.mean_ns / lookup.mean_ns.max(1e-3),
        energy_saved: 1.0 - lookup.energy_nj / exact.energy_nj.max(1e-12),
        quality_mean: lookup.quality,
        quality_worst: lookup.quality_min,
        quality_p1,
        quality_bound_mean: if count > 0 { bound_sum / count as f64 } else { 1.0 },
        quality_bound_worst: bound_worst,
        exact_proven: if count > 0 { proven as f64 / count as f64 } else { 1.0 },
        exact_node_cap: exact_nodes,
        policy_work_max: work_max,
        policy_work_bound: dcta.work_bound(),
        policy_work_over: work_over,
        policy_exchanged,
        policy_exchange_improved,
        policy_median_us: lookup.median_ns / 1e3,
        policy_p99_us: lookup.p99_ns / 1e3,
        policy_p99_own_us: lookup.p99_own_ns / 1e3,
        table_bytes: 0,
        cells: 0,
        build_seconds: 0.0,
        exact_nodes_median: nodes_median,
        exact_nodes_p99: nodes_p99,
        fallbacks,
        greedy: stats("greedy", gr, 2),
        lookup,
        exact,
    }
}

/// Median and 99th percentile (sorts in place; 0 for no samples), by the one percentile rule.
fn percentiles(v: &mut [f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let p50 = crate::percentile::percentile_sorting(v, 50.0);
    (p50, crate::percentile::of_sorted(v, 99.0))
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
