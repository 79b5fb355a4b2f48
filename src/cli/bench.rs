//! `jetlink bench mlink|dcta|links|loop|fleet|seq`: the benchmarks, each writing JSON (and plots) under
//! `--out-dir`.

use super::*;
use jetlink::output::Kind;

#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    #[arg(value_enum)]
    pub(crate) what: BenchWhat,
    #[arg(long, default_value = DEMO_MANIFEST)]
    pub(crate) manifest: PathBuf,
    #[arg(long, default_value = DEMO_BUNDLE)]
    pub(crate) bundle: PathBuf,
    /// Where the JSON (and image) go.
    #[arg(long, default_value = "out/bench")]
    pub(crate) out_dir: PathBuf,
    /// Replace output files that are not this bench's kind (JSON, SVG).
    #[arg(long)]
    pub(crate) force: bool,
    /// Board for `dcta` (default: this binary's).
    #[arg(long)]
    pub(crate) board: Option<String>,
    /// Ticks for `loop`.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub(crate) ticks: u64,
    /// `dcta`: task work spread over this many-fold range around each model's own (tasks beyond
    /// the manifest's models repeat them: several workloads' models on one board).
    #[arg(long, default_value_t = 10.0, value_parser = finite_in(1.0, 1e6))]
    pub(crate) spread: f64,
    /// `dcta`: one size, N tasks (options = N × K choices × units) instead of the sweep.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub(crate) tasks: Option<u64>,
    /// `dcta`: K choices per task with `--tasks` (the cost model's 4 by default; others are
    /// spaced log-evenly over its range with interpolated gains).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=16), requires = "tasks")]
    pub(crate) choices: u64,
    /// `dcta`: search nodes per exact solve of a held-out context (where the search stops short,
    /// the best choice found is the reference and the quality against the bound is reported too).
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=u64::MAX))]
    pub(crate) exact_nodes: u64,
    /// `dcta`: training contexts per size, each solved exactly to learn the policy.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) samples: u64,
    /// `dcta`: held-out contexts per size and drift distribution.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) contexts: u64,
    /// `dcta`: load ρ, the work of all tasks over the board's adaptation capacity.
    #[arg(long, default_value_t = 1.5, value_parser = finite_in(0.01, 1000.0))]
    pub(crate) stress: f64,
    /// `mlink`: at most this many models run per tick (`jetlink run --max-active`; default: the
    /// board's `max-active-models`). `seq`: the most models running while a sequence target is
    /// predicted (default: half the manifest's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=jetlink::model_set::ModelSet::CAP as i64))]
    pub(crate) max_active: Option<u32>,
    /// `mlink`: the policies swept (`jetlink run --policy`), each at every budget.
    #[arg(long, default_value = super::sweep::DEFAULT_POLICIES)]
    pub(crate) policies: String,
    /// `mlink`: the budgets swept, as shares of the board's model budget (`jetlink run --budget`;
    /// never above the board's).
    #[arg(long, default_value = super::sweep::DEFAULT_BUDGETS)]
    pub(crate) budgets: String,
    /// `mlink`: skip the labelling variants of the first policy (no adaptation, the other
    /// `--labels` rules, 10% labels).
    #[arg(long)]
    pub(crate) no_variants: bool,
    /// `mlink`: frames per run (`jetlink run --frames`; default: the evaluation part).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=u32::MAX as u64))]
    pub(crate) frames: Option<u64>,
    /// `mlink`: engines of every run (`jetlink run --engines`): `replay` (the default here: the
    /// reference outputs, the same as the models', fast) or `tract`.
    #[arg(long, value_enum, default_value = "replay")]
    pub(crate) engines: super::run::Engines,
    /// `mlink`: `jetlink run --trust-key` for every run (a bundle signed by your own key).
    #[arg(long, value_name = "PUBLIC_KEY_HEX")]
    pub(crate) trust_key: Option<String>,
    /// `mlink`: `jetlink run --sim-model-budget` for every run (the simulated board only).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..=(1u64 << 40)))]
    pub(crate) sim_model_budget: Option<u64>,
    /// `mlink`: `jetlink run --state-file` for every run.
    #[arg(long)]
    pub(crate) state_file: Option<PathBuf>,
    /// `fleet`: simulated boards against a local Mosquitto.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=5000))]
    pub(crate) boards: u64,
    /// `fleet`: aggregation periods.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub(crate) periods: u64,
    /// `fleet`: groups the boards are spread over (board b in group b mod G; 0: no groups), each
    /// averaged apart as well as the whole fleet (docs/fleet.md, "Groups").
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub(crate) groups: u64,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum BenchWhat {
    Mlink,
    Dcta,
    /// The accuracy a refresh on K labelled frames wins back on the drift segment, per K (the DCTA
    /// cost model's gain curve).
    AdaptGain,
    Links,
    Loop,
    Fleet,
    /// Links to and from sequence outputs against the constant and the "reduce first" link, the
    /// sequence targets predicted with at most half the models running, and predictor times
    /// (`jetlink::seqbench`); writes seq.json.
    Seq,
}

/// Flags every benchmark reads.
const EVERY_BENCH: [&str; 4] = ["what", "manifest", "out_dir", "force"];

/// The benchmarks each flag of `jetlink bench` applies to (`None`: every one, [`EVERY_BENCH`]). A
/// flag given on the command line for a benchmark that does not read it is refused
/// ([`bench_flags_apply`]) rather than silently ignored.
fn flag_applies(flag: &str) -> Option<&'static [BenchWhat]> {
    use BenchWhat::*;
    Some(match flag {
        f if EVERY_BENCH.contains(&f) => return None,
        "bundle" => &[Mlink, Dcta, AdaptGain, Links, Loop, Fleet],
        "board" | "spread" | "tasks" | "choices" | "exact_nodes" | "samples" | "contexts" | "stress" => {
            &[Dcta]
        }
        "ticks" => &[Loop],
        "max_active" => &[Mlink, Seq],
        "policies" | "budgets" | "no_variants" | "frames" | "engines" | "trust_key" | "sim_model_budget"
        | "state_file" => &[Mlink],
        "boards" | "periods" | "groups" => &[Fleet],
        _ => return None,
    })
}

/// Refuse a flag given on the command line that the chosen benchmark does not read, naming the
/// flag and the benchmarks it is for.
pub(crate) fn bench_flags_apply(a: &BenchArgs, m: &clap::ArgMatches) -> Result<()> {
    for id in m.ids() {
        let id = id.as_str();
        if m.value_source(id) != Some(clap::parser::ValueSource::CommandLine) {
            continue;
        }
        if let Some(whats) = flag_applies(id).filter(|w| !w.contains(&a.what)) {
            let name =
                |w: &BenchWhat| w.to_possible_value().map_or(String::new(), |v| v.get_name().to_string());
            bail!(
                "--{} does not apply to `jetlink bench {}`: it is read by `bench {}` only",
                id.replace('_', "-"),
                name(&a.what),
                whats.iter().map(name).collect::<Vec<_>>().join("`, `bench ")
            );
        }
    }
    Ok(())
}

/// The files `bench` writes under `--out-dir`, with their kinds.
fn bench_outputs(a: &BenchArgs) -> Vec<(PathBuf, Kind)> {
    let names: &[(&str, Kind)] = match a.what {
        // Each report's first key (the first field its JSON writes) tells it from a user's JSON.
        BenchWhat::Mlink => &[("mlink.json", Kind::Json("workload")), ("mlink.svg", Kind::Svg)],
        BenchWhat::Dcta => &[("dcta.json", Kind::Json("board")), ("dcta.svg", Kind::Svg)],
        BenchWhat::AdaptGain => &[("adapt-gain.json", Kind::Json("drift_accuracy"))],
        BenchWhat::Links => &[("links.json", Kind::Json("calls"))],
        BenchWhat::Loop => &[("loop.json", Kind::Json("adaptation"))],
        BenchWhat::Seq => &[("seq.json", Kind::Json("workload"))],
        BenchWhat::Fleet => {
            // fleet-N, or fleet-N-gG with groups.
            let stem = match a.groups {
                0 => format!("fleet-{}", a.boards),
                g => format!("fleet-{}-g{g}", a.boards),
            };
            return vec![
                (a.out_dir.join(format!("{stem}.json")), Kind::Json("boards")),
                (a.out_dir.join(format!("{stem}.svg")), Kind::Svg),
            ];
        }
    };
    names.iter().map(|&(n, k)| (a.out_dir.join(n), k)).collect()
}

/// Write output `i` of [`bench_outputs`] by the output rule; returns its path.
fn put(a: &BenchArgs, i: usize, bytes: &[u8]) -> Result<PathBuf> {
    let (path, kind) = bench_outputs(a).swap_remove(i);
    jetlink::output::write(&path, "bench output", kind, a.force, bytes)?;
    Ok(path)
}

pub(crate) fn bench(a: &BenchArgs) -> Result<()> {
    if a.out_dir.exists() && !a.out_dir.is_dir() {
        bail!("--out-dir {} exists and is not a folder", a.out_dir.display());
    }
    if !a.out_dir.exists() && a.out_dir.symlink_metadata().is_ok() {
        bail!(
            "--out-dir {} is a symbolic link to {}, which does not exist",
            a.out_dir.display(),
            std::fs::read_link(&a.out_dir).map_or("an unreadable target".into(), |t| t.display().to_string())
        );
    }
    std::fs::create_dir_all(&a.out_dir).with_context(|| format!("creating {}", a.out_dir.display()))?;
    // Every output is checked before the bench runs, not refused after it.
    for (p, kind) in bench_outputs(a) {
        jetlink::output::check_replace(&p, "bench output", kind, a.force)?;
    }
    match a.what {
        BenchWhat::Fleet => bench_fleet(a)?,
        BenchWhat::Mlink => {
            let o = super::sweep::SweepOptions {
                manifest: a.manifest.clone(),
                bundle: a.bundle.clone(),
                policies: super::sweep::split_list(&a.policies),
                budgets: super::sweep::parse_shares(&a.budgets)?,
                max_active: a.max_active,
                variants: !a.no_variants,
                frames: a.frames,
                trust_key: a.trust_key.clone(),
                sim_model_budget: a.sim_model_budget,
                state_file: a.state_file.clone(),
                engines: a.engines,
            };
            if o.policies.is_empty() {
                bail!(
                    "--policies {:?} names no policy; {}",
                    a.policies,
                    jetlink::schedule::cycle::POLICY_HELP
                );
            }
            for (i, p) in o.policies.iter().enumerate() {
                if !jetlink::schedule::cycle::is_policy(p) {
                    bail!("--policies {p:?}: unknown policy; {}", jetlink::schedule::cycle::POLICY_HELP);
                }
                if o.policies[..i].contains(p) {
                    bail!("--policies: {p:?} is given twice (each policy is one row per budget)");
                }
            }
            // Each run's telemetry goes to a scratch folder, removed after the sweep.
            let serial_dir = std::env::temp_dir().join(format!("jetlink-sweep-{}", std::process::id()));
            std::fs::create_dir_all(&serial_dir)
                .with_context(|| format!("creating {}", serial_dir.display()))?;
            let r = super::sweep::sweep(&o, &serial_dir);
            let _ = std::fs::remove_dir_all(&serial_dir);
            let r = r?;
            print!("{}", super::sweep::format_best(&r));
            let json = put(a, 0, serde_json::to_string_pretty(&r)?.as_bytes())?;
            let svg = put(a, 1, super::sweep::chart(&r).to_svg().as_bytes())?;
            println!(
                "{} runs in {:.1} s; wrote {} and {}",
                r.results.len(),
                r.wall_s,
                json.display(),
                svg.display()
            );
        }
        BenchWhat::Dcta => {
            let manifest = Manifest::load(&a.manifest)?;
            let board = match &a.board {
                Some(b) => {
                    jetlink::board::by_name(b).with_context(|| format!("--board {b:?}: no such board"))?
                }
                None => jetlink::board::current(),
            };
            let mut args = jetlink::dcta::BenchArgs::default();
            args.policy.cost.stress = Some(a.stress);
            args.spread = a.spread;
            args.contexts = a.contexts as usize;
            args.policy.samples = a.samples as usize;
            args.exact_nodes = a.exact_nodes;
            if let Some(n) = a.tasks {
                args.sizes = vec![(n as usize, a.choices as usize)];
            }
            // The contexts the loop met over the demo stream (drift levels at each period boundary).
            args.real = demo_drift_contexts(a, board)?;
            println!("{} real contexts from the control loop over the demo stream", args.real.len());
            let r = jetlink::dcta::bench(&manifest, board, &args)?;
            print!("{}", r.to_table());
            let json = put(a, 0, r.to_json().as_bytes())?;
            let svg = put(a, 1, r.to_svg().as_bytes())?;
            println!("wrote {} and {}", json.display(), svg.display());
        }
        BenchWhat::AdaptGain => bench_adapt_gain(a)?,
        BenchWhat::Links => {
            let manifest = Manifest::load(&a.manifest)?;
            let bundle = Bundle::load_for(&a.bundle, &manifest)?;
            let reference =
                load_reference(&manifest)?.context("bench links needs the manifest's reference recording")?;
            let s = jetlink::links::bench_predict(&bundle, &reference, 20_000)?;
            println!(
                "CPU link inference per frame (every target not run, all its links and its ensemble): mean {:.2} us, p50 {:.2} us, p99 {:.2} us, max {:.2} us over {} calls",
                s.mean_us, s.p50_us, s.p99_us, s.max_us, s.calls
            );
            for (k, us) in s.mean_us_by_active.iter().enumerate() {
                if *us > 0.0 {
                    println!("  {k} active: {us:.2} us");
                }
            }
            println!("  slowest mask {:#b}: {:.2} us", s.worst_mask, s.worst_mask_us);
            let json = serde_json::json!({
                "calls": s.calls,
                "mean_us": s.mean_us,
                "p50_us": s.p50_us,
                "p99_us": s.p99_us,
                "max_us": s.max_us,
                "mean_us_by_active": s.mean_us_by_active,
            });
            let path = put(a, 0, serde_json::to_string_pretty(&json)?.as_bytes())?;
            println!("wrote {}", path.display());
        }
        BenchWhat::Loop => bench_loop(a)?,
        BenchWhat::Seq => bench_seq(a)?,
    }
    Ok(())
}

fn bench_seq(a: &BenchArgs) -> Result<()> {
    let manifest = Manifest::load(&a.manifest)?;
    let stream = jetlink::stream::Stream::load(&manifest.path_of(&manifest.stream))?;
    let reference = load_reference_for(&manifest, &stream)?
        .context("bench seq needs the manifest's reference recording")?;
    let max_active = a.max_active.map(|k| k as usize).unwrap_or(manifest.models.len() / 2).max(1);
    // The heads `jetlink build` fits: one per source set of at most the board's execution cap.
    let set_heads = jetlink::board::current().max_active_models as usize;
    let opts = jetlink::links::BuildOptions { progress: false, set_heads, ..Default::default() };
    let r = jetlink::seqbench::bench(
        &manifest,
        &reference,
        stream.train_end,
        stream.drift_start,
        max_active,
        &opts,
    )?;
    print!("{}", r.to_table());
    let path = put(a, 0, serde_json::to_string_pretty(&r)?.as_bytes())?;
    println!("{:.1} s; wrote {}", r.wall_s, path.display());
    Ok(())
}

/// The drift levels the control loop computes at each period boundary over the demo stream (replay
/// engines), as DCTA contexts at full power with the models running then resident.
pub(crate) fn demo_drift_contexts(
    a: &BenchArgs,
    board: &jetlink::board::Board,
) -> Result<Vec<jetlink::dcta::SampledContext>> {
    let mut ctl = replay_loop(a, None, None)?;
    let mut out = Vec::new();
    let tpp = jetlink::board::current().ticks_per_period.max(1) as u64;
    while ctl.tick() {
        if ctl.stats().ticks % tpp == 1 && ctl.drift().iter().any(|&d| d > 0.0) {
            out.push(jetlink::dcta::SampledContext {
                drift: ctl.drift().to_vec(),
                power_level: 0,
                free_mem: board.model_budget_bytes,
                resident: u64::from(ctl.active().bits()),
            });
        }
    }
    Ok(out)
}

/// The gain curve g(K): the main job's loop (replay engines) on the evaluation stream without
/// adaptation and with every refresh on K labelled frames, for each K of the cost model; g(K) is the
/// drift-segment accuracy won back with K over the most any K won back. Measured twice: with the
/// loop's default labelling (`gain`), and with every 10th frame labelled (`gain_uniform_10`, the
/// curve the DCTA cost model uses, `dcta::MEASURED_GAIN`).
fn bench_adapt_gain(a: &BenchArgs) -> Result<()> {
    let frames = jetlink::dcta::CostModel::default().frames;
    let uniform_10 = jetlink::control::AdaptSettings {
        rule: jetlink::control::LabelRule::Uniform,
        label_every: 10,
        ..Default::default()
    };
    let run = |k: Option<u32>, labels: Option<jetlink::control::AdaptSettings>| -> Result<f64> {
        let mut ctl = replay_loop_with(a, None, Some(k), labels)?;
        while ctl.tick() {}
        ctl.stats().accuracy(1).context("the benchmark needs a drift segment with reference frames")
    };
    let base = run(None, None)?;
    println!("no adaptation: drift-segment accuracy {:.2}%", 100.0 * base);
    let curve = |labels: Option<jetlink::control::AdaptSettings>,
                 name: &str|
     -> Result<(Vec<f64>, Vec<f64>)> {
        let mut acc = Vec::new();
        for &k in &frames {
            let v = run(Some(k), labels)?;
            println!(
                "{name}, K = {k:>3}: drift-segment accuracy {:.2}% ({:+.2} points)",
                100.0 * v,
                100.0 * (v - base)
            );
            acc.push(v);
        }
        let best = acc.iter().map(|v| v - base).fold(0.0, f64::max);
        let gain: Vec<f64> =
            acc.iter().map(|v| if best > 0.0 { ((v - base) / best).clamp(0.0, 1.0) } else { 0.0 }).collect();
        println!(
            "{name}: gain g(K) = {:?}",
            gain.iter().map(|g| (g * 1000.0).round() / 1000.0).collect::<Vec<_>>()
        );
        Ok((acc, gain))
    };
    let (acc, gain) = curve(None, "default labelling")?;
    let (acc_u, gain_u) = curve(Some(uniform_10), "every 10th frame")?;
    let json = serde_json::json!({
        "frames": frames,
        "no_adapt_drift_accuracy": base,
        "drift_accuracy": acc,
        "gain": gain,
        "drift_accuracy_uniform_10": acc_u,
        "gain_uniform_10": gain_u,
    });
    let path = put(a, 0, serde_json::to_string_pretty(&json)?.as_bytes())?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The loop on this binary's board over the evaluation part of the demo (or its first `ticks`
/// frames) with replay engines and an in-memory serial sink sized up front, so that the sink itself
/// does not allocate.
/// Engines that replay the reference (simulation).
fn replay_engines(reference: Arc<Recording>) -> Result<Box<dyn engine::Backend>> {
    #[cfg(feature = "sim")]
    return Ok(jetlink::sim::replay(reference));
    #[cfg(not(feature = "sim"))]
    {
        let _ = reference;
        bail!("the loop benchmark replays the reference: this build was made without the `sim` feature")
    }
}

/// `adapt_frames`: `Some(None)` turns adaptation off, `Some(Some(k))` makes every refresh use K = k.
pub(crate) fn replay_loop(
    a: &BenchArgs,
    ticks: Option<usize>,
    adapt_frames: Option<Option<u32>>,
) -> Result<control::Controller<ReplaySource, jetlink::serial::MemWriter>> {
    replay_loop_with(a, ticks, adapt_frames, None)
}

/// [`replay_loop`] with these adaptation settings instead of the default ones.
pub(crate) fn replay_loop_with(
    a: &BenchArgs,
    ticks: Option<usize>,
    adapt_frames: Option<Option<u32>>,
    adaptation: Option<jetlink::control::AdaptSettings>,
) -> Result<control::Controller<ReplaySource, jetlink::serial::MemWriter>> {
    let board = jetlink::board::current();
    let (manifest, stream) = load_workload(&a.manifest)?;
    let bundle = Bundle::load_for(&a.bundle, &manifest)?;
    let reference = Arc::new(
        load_reference_for(&manifest, &stream)?.context("the benchmark needs the reference recording")?,
    );
    let stream = Arc::new(stream);
    let from = stream.train_end;
    let to = ticks.map_or(stream.len(), |t| from.saturating_add(t).min(stream.len()));
    // Room for every frame up front, so that writing telemetry does not grow a vector.
    let writer = TelemetryWriter::new(jetlink::serial::MemWriter {
        data: Vec::with_capacity(64 * (to - from) + 4096),
        ..Default::default()
    });
    let mut builder = LoopBuilder::new(board, manifest, bundle, stream)
        .reference(Some(reference.clone()))
        .engines(replay_engines(reference)?);
    if let Some(s) = adaptation {
        builder.options_mut().adaptation = s;
    }
    match adapt_frames {
        Some(None) => builder.options_mut().adapt = false,
        Some(k) => builder.options_mut().adapt_frames = k,
        None => {}
    }
    builder.build_replay(from..to, writer)
}

/// Per-tick overhead of the loop outside engine inference: replay engines, a memory writer.
pub(crate) fn bench_loop(a: &BenchArgs) -> Result<()> {
    let n = a.ticks as usize;
    let mut ctl = replay_loop(a, Some(n), None)?;
    let tpp = jetlink::board::current().ticks_per_period.max(1) as u64;
    // Time outside the engines per tick, by what the tick did: a plain tick, a tick with an
    // adaptation step (a label run or a fine-tuning step: `Tick.adapt_task`), a period start (the
    // summary, drift levels and the DCTA decision).
    let mut by_kind: [Vec<f64>; 3] = [Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n)];
    let mut all = Vec::with_capacity(n);
    let mut with_engines = Vec::with_capacity(n);
    let mut alloc_ticks: Vec<(u64, u64)> = Vec::with_capacity(64);
    let a0 = alloc_count::loop_allocations();
    loop {
        let before = alloc_count::loop_allocations();
        let tick_no = ctl.stats().ticks;
        let t = Instant::now();
        if !ctl.tick() {
            break;
        }
        let total = t.elapsed().as_secs_f64() * 1e6;
        let outside = total - ctl.last_engine_ns() as f64 / 1e3;
        let kind = if tick_no % tpp == 0 {
            2
        } else if ctl.last().tick.adapt_task != jetlink::wire::NO_ADAPT_TASK {
            1
        } else {
            0
        };
        by_kind[kind].push(outside);
        all.push(outside);
        with_engines.push(total);
        let d = alloc_count::loop_allocations() - before;
        if d > 0 && alloc_ticks.len() < alloc_ticks.capacity() {
            alloc_ticks.push((ctl.stats().ticks - 1, d));
        }
    }
    let allocs = alloc_count::loop_allocations() - a0;
    if !alloc_ticks.is_empty() {
        println!("ticks that allocated (tick, count): {alloc_ticks:?}");
    }
    let summary = |v: &[f64]| {
        serde_json::json!({
            "ticks": v.len(),
            "median_us": percentile(v, 50.0),
            "p99_us": percentile(v, 99.0),
            "max_us": percentile(v, 100.0),
        })
    };
    let names = ["plain", "adaptation", "period_start"];
    println!("loop time per tick outside engine inference (replay engines, {} ticks):", all.len());
    if all.len() < n {
        println!(
            "  (--ticks {n} asked for more ticks than the workload's evaluation part has frames: each frame \
             is replayed once)"
        );
    }
    for (k, v) in by_kind.iter().enumerate() {
        if !v.is_empty() {
            println!(
                "  {:<13} {:>6} ticks: median {:.2} us, p99 {:.2} us, max {:.2} us",
                names[k],
                v.len(),
                percentile(v, 50.0),
                percentile(v, 99.0),
                percentile(v, 100.0)
            );
        }
    }
    println!(
        "  all           {:>6} ticks: median {:.2} us, p99 {:.2} us, max {:.2} us; allocations {allocs}",
        all.len(),
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        percentile(&all, 100.0)
    );
    println!(
        "whole tick including the engines' input views and replayed inference: median {:.2} us, p99 {:.2} us; links on the {}",
        percentile(&with_engines, 50.0),
        percentile(&with_engines, 99.0),
        ctl.link_backend()
    );
    let json = serde_json::json!({
        "ticks": all.len(),
        "plain": summary(&by_kind[0]),
        "adaptation": summary(&by_kind[1]),
        "period_start": summary(&by_kind[2]),
        "all": summary(&all),
        "whole_tick": summary(&with_engines),
        "allocations": allocs,
        "links": ctl.link_backend(),
    });
    let path = put(a, 0, serde_json::to_string_pretty(&json)?.as_bytes())?;
    println!("wrote {}", path.display());
    Ok(())
}

#[cfg(all(feature = "fleet", feature = "sim"))]
fn bench_fleet(a: &BenchArgs) -> Result<()> {
    use jetlink::fleet::bench::{FleetBenchOptions, run};
    let (manifest, _) = load_workload(&a.manifest)?;
    let bundle = Bundle::load_for(&a.bundle, &manifest)?;
    let reference =
        load_reference(&manifest)?.context("bench fleet needs the manifest's reference recording")?;
    let o = FleetBenchOptions {
        boards: a.boards as usize,
        periods: a.periods as usize,
        groups: a.groups as usize,
        ..Default::default()
    };
    let r = run(&bundle, &reference, &o)?;
    println!(
        "fleet bench: {} boards{}, {} periods, {}; bundle links {} bytes",
        r.boards,
        if r.groups > 0 { format!(" in {} groups", r.groups) } else { String::new() },
        r.periods,
        r.broker,
        r.bundle_link_bytes
    );
    println!(
        "per board per period: up {:.0} bytes (summary {:.0}, task offer, link updates), down {:.0} bytes received (signed global links: the whole update at join, then deltas; allocation {} bytes), {} a period from the second on; {} task offers",
        r.up_bytes_per_board_per_period,
        r.summary_bytes,
        r.down_bytes_per_board_per_period,
        r.assigned_bytes,
        // One period has no second one.
        if r.down_bytes_per_board_later_periods.is_finite() {
            format!("{:.0} bytes", r.down_bytes_per_board_later_periods)
        } else {
            "no figure (one period)".to_string()
        },
        r.task_offers
    );
    for x in &r.rounds {
        println!(
            "  version {}: {} boards averaged and signed in {:.0} us, {} bytes whole, {} bytes delta; last update -> every board fused {:.1} ms (from the first update {:.1} ms)",
            x.version, x.boards, x.aggregate_us, x.global_bytes, x.delta_bytes, x.e2e_ms, x.e2e_from_first_ms
        );
    }
    println!(
        "median averaging {:.0} us; end-to-end median {:.1} ms, max {:.1} ms",
        r.aggregate_us_median, r.e2e_ms_median, r.e2e_ms_max
    );
    let json = put(a, 0, (serde_json::to_string_pretty(&r)? + "\n").as_bytes())?;
    let svg = put(a, 1, jetlink::fleet::bench::svg(&r).as_bytes())?;
    println!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}

#[cfg(not(all(feature = "fleet", feature = "sim")))]
fn bench_fleet(_: &BenchArgs) -> Result<()> {
    bail!("bench fleet needs the `fleet` and `sim` features")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag of `jetlink bench` is in the table of what reads it: a new flag cannot slip past
    /// the check.
    #[test]
    fn every_bench_flag_is_placed() {
        let cmd = <BenchArgs as clap::Args>::augment_args(clap::Command::new("bench"));
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            assert!(
                EVERY_BENCH.contains(&id) || flag_applies(id).is_some(),
                "--{id} is not in flag_applies: say which benchmarks read it"
            );
        }
    }
}
