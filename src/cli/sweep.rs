//! `jetlink bench mlink`: a sweep of `jetlink run`. Every row is one run of the loop, prepared by
//! the same code as `jetlink run` (`run::prepare_run`) from the arguments its `command` field
//! spells out, and driven by the same driver; running that command prints the row's accuracy
//! (overall, clean, drift) and executions saved. Nothing here schedules, holds, labels or adapts.

use serde::Serialize;

use super::run::{Engines, RunArgs, Signals, drive, prepare_run};
use super::*;

/// The sweep's settings (`jetlink bench mlink` flags).
#[derive(Clone, Debug)]
pub(crate) struct SweepOptions {
    pub(crate) manifest: PathBuf,
    pub(crate) bundle: PathBuf,
    /// Policies, each run at every budget (with adaptation, as `jetlink run` does by default).
    pub(crate) policies: Vec<String>,
    /// Budgets as shares of the board's model budget, in (0, 1].
    pub(crate) budgets: Vec<f64>,
    pub(crate) max_active: Option<u32>,
    /// The labelling variants run for the first policy (`--no-adapt`, the other `--labels` rules,
    /// fewer labels), at every budget.
    pub(crate) variants: bool,
    pub(crate) frames: Option<u64>,
    pub(crate) trust_key: Option<String>,
    pub(crate) sim_model_budget: Option<u64>,
    pub(crate) state_file: Option<PathBuf>,
    pub(crate) engines: Engines,
}

/// The policies a default sweep runs.
pub(crate) const DEFAULT_POLICIES: &str =
    "optimal,optimal-hold,interval-2,interval-4,interval-8,greedy,random,standalone,frame-filter";

/// The budgets a default sweep runs, as shares of the board's model budget.
pub(crate) const DEFAULT_BUDGETS: &str = "25%,50%,75%,100%";

/// Accuracy kept by segment, as `jetlink run` prints it (`None`: the segment has no frames).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct Accuracy {
    pub(crate) overall: Option<f64>,
    pub(crate) clean: Option<f64>,
    pub(crate) drift: Option<f64>,
}

/// One run of the loop.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Row {
    /// Policy, with the labelling variant when not the default (`optimal+no-adapt`).
    pub(crate) method: String,
    pub(crate) policy: String,
    pub(crate) variant: String,
    /// The budget's share of the board's and the bytes in force.
    pub(crate) budget_share: f64,
    pub(crate) budget_bytes: u64,
    pub(crate) max_active: usize,
    pub(crate) accuracy: Accuracy,
    /// Where a model declares a score rule (`accuracy` is by those rules): the same runs scored by
    /// every model's own kind rule (tolerance). Absent when no rule is declared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) accuracy_tolerance: Option<Accuracy>,
    pub(crate) per_task: Vec<f64>,
    pub(crate) executions_saved: f64,
    pub(crate) flops_saved: f64,
    /// Inference runs, and adaptation and audit runs (both counted in the savings).
    pub(crate) executions: u64,
    pub(crate) adapt_executions: u64,
    pub(crate) adapt_tasks: u64,
    pub(crate) held_outputs: u64,
    pub(crate) degraded_outputs: u64,
    pub(crate) peak_mem: u64,
    pub(crate) budget_violations: u64,
    pub(crate) ticks: u64,
    pub(crate) wall_s: f64,
    /// The `jetlink run` command line that reproduces this row.
    pub(crate) command: String,
}

/// The best row meeting a savings floor on one segment.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Best {
    pub(crate) segment: &'static str,
    pub(crate) min_saved: f64,
    pub(crate) method: Option<String>,
    pub(crate) budget_share: Option<f64>,
    pub(crate) accuracy: Option<f64>,
    pub(crate) executions_saved: Option<f64>,
    pub(crate) command: Option<String>,
}

/// The sweep's JSON.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) workload: String,
    pub(crate) board: String,
    pub(crate) bundle: String,
    pub(crate) engines: String,
    pub(crate) models: Vec<String>,
    /// Per model, the bundle's hold scores by age 1..=32 (what the holding policies plan with).
    pub(crate) hold_agreement: Vec<Vec<f32>>,
    /// The main job's settings (`jetlink run` with no policy or labelling flag), also `results[0]`.
    pub(crate) main: Row,
    pub(crate) results: Vec<Row>,
    /// Best accuracy per segment at the savings floors (clean ≥ 75%, drift and overall ≥ 70%).
    pub(crate) best: Vec<Best>,
    pub(crate) wall_s: f64,
}

/// Parse `a,b,c` into names.
pub(crate) fn split_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect()
}

/// Parse budget shares: `25%` or `0.25`, in (0, 1].
pub(crate) fn parse_shares(s: &str) -> Result<Vec<f64>> {
    let mut v = Vec::new();
    for t in split_list(s) {
        let x = match t.strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
            None => t.parse::<f64>(),
        }
        .map_err(|e| anyhow::anyhow!("--budgets {t:?}: not a share ({e}); e.g. 50% or 0.5"))?;
        if !(x.is_finite() && x > 0.0 && x <= 1.0) {
            bail!("--budgets {t:?}: a share of the board's budget must be in (0, 100%]");
        }
        // Each row runs `jetlink run --budget` with the share to four decimals of a percent.
        if fmt_share(x) == "0" {
            bail!("--budgets {t:?}: below the smallest share a row can run (0.0001%)");
        }
        // Shares equal as a row runs them (four decimals of a percent) would run the same rows twice.
        if v.iter().any(|&y| fmt_share(y) == fmt_share(x)) {
            bail!("--budgets {t:?}: the same share as an earlier one ({}%)", fmt_share(x));
        }
        v.push(x);
    }
    if v.is_empty() {
        bail!("--budgets: no budget given");
    }
    Ok(v)
}

/// The labelling variants run beside the default: name and the `jetlink run` flags.
const VARIANTS: [(&str, &[&str]); 7] = [
    ("no-adapt", &["--no-adapt"]),
    ("top-k", &["--labels", "top-k"]),
    ("uniform", &["--labels", "uniform"]),
    ("uncertainty", &["--labels", "uncertainty"]),
    ("loss-prediction", &["--labels", "loss-prediction"]),
    ("labels-10%", &["--label-every", "10"]),
    ("uniform-10%", &["--labels", "uniform", "--label-every", "10"]),
];

impl SweepOptions {
    /// The `jetlink run` arguments of one row (after `jetlink run`).
    fn run_args(&self, policy: Option<&str>, share: f64, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        let mut push = |k: &str, val: Option<String>| {
            v.push(k.to_string());
            if let Some(x) = val {
                v.push(x);
            }
        };
        if self.manifest != Path::new(DEMO_MANIFEST) {
            push("--manifest", Some(self.manifest.display().to_string()));
        }
        if self.bundle != Path::new(DEMO_BUNDLE) {
            push("--bundle", Some(self.bundle.display().to_string()));
        }
        if self.engines == Engines::Replay {
            push("--engines", Some("replay".into()));
        }
        if let Some(p) = policy {
            push("--policy", Some(p.to_string()));
        }
        if share < 1.0 {
            push("--budget", Some(format!("{}%", fmt_share(share))));
        }
        if let Some(k) = self.max_active {
            push("--max-active", Some(k.to_string()));
        }
        if let Some(f) = self.frames {
            push("--frames", Some(f.to_string()));
        }
        if let Some(b) = self.sim_model_budget {
            push("--sim-model-budget", Some(b.to_string()));
        }
        if let Some(k) = &self.trust_key {
            push("--trust-key", Some(k.clone()));
        }
        if let Some(s) = &self.state_file {
            push("--state-file", Some(s.display().to_string()));
        }
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }
}

/// A share as a percentage without trailing zeros (`50`, `12.5`).
fn fmt_share(share: f64) -> String {
    let p = format!("{:.4}", share * 100.0);
    p.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `jetlink run` arguments parsed as the command line would parse them.
fn parse_run_args(args: &[String]) -> Result<RunArgs> {
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        run: RunArgs,
    }
    let argv = std::iter::once("jetlink-run".to_string()).chain(args.iter().cloned());
    Ok(<Wrap as clap::Parser>::try_parse_from(argv).context("a sweep row's jetlink run arguments")?.run)
}

/// Run every row; `serial_dir` receives each row's telemetry.
pub(crate) fn sweep(o: &SweepOptions, serial_dir: &Path) -> Result<Report> {
    let start = Instant::now();
    // First the main job's own settings (no policy or labelling flag) at the board's budget.
    let default = jetlink::control::DEFAULT_POLICY.to_string();
    let mut rows_args: Vec<(String, String, String, f64, Vec<String>)> =
        vec![("main".into(), default, String::new(), 1.0, o.run_args(None, 1.0, &[]))];
    for policy in &o.policies {
        for &share in &o.budgets {
            rows_args.push((
                policy.clone(),
                policy.clone(),
                String::new(),
                share,
                o.run_args(Some(policy), share, &[]),
            ));
        }
    }
    if o.variants {
        let policy = o.policies.first().context("--policies: no policy given")?;
        for (name, flags) in VARIANTS {
            for &share in &o.budgets {
                rows_args.push((
                    format!("{policy}+{name}"),
                    policy.clone(),
                    name.to_string(),
                    share,
                    o.run_args(Some(policy), share, flags),
                ));
            }
        }
    }
    let signals = Signals::register()?;
    let mut results = Vec::new();
    let mut header: Option<(String, String, Vec<String>, Vec<Vec<f32>>)> = None;
    for (k, (method, policy, variant, share, args)) in rows_args.into_iter().enumerate() {
        let mut full = args.clone();
        full.extend(["--quiet".to_string(), "--serial".to_string()]);
        full.push(format!("file:{}", serial_dir.join(format!("row-{k}.bin")).display()));
        let a = parse_run_args(&full)?;
        let t = Instant::now();
        let (ctl, p, _fleet) = prepare_run(&a, false).with_context(|| format!("row {method}"))?;
        let ctx = p.ctx(&a);
        let (ctl, d) = drive(&ctx, ctl, &signals, p.planned, p.live, &p.serial_spec)?;
        if d.stopped_by_signal {
            bail!("stopped by a signal ({}) during row {method}", super::stop_signal_name());
        }
        let s = ctl.stats();
        let n = ctl.n_models();
        if header.is_none() {
            // The bundle's hold scores, as the loop that just ran planned with them.
            let ages = jetlink::schedule::MAX_HOLD_AGE;
            let hold = ctl.hold_scores().chunks(ages).map(<[f32]>::to_vec).collect();
            header = Some((
                p.manifest.name.clone(),
                p.board.name.to_string(),
                ctl.model_names().map(str::to_string).collect(),
                hold,
            ));
        }
        let f = (s.ref_frames[0] + s.ref_frames[1]).max(1) as f64;
        let row = Row {
            method,
            policy,
            variant,
            budget_share: share,
            budget_bytes: p.opts.budget_cap.unwrap_or(p.board.model_budget_bytes),
            max_active: ctl.max_active(),
            accuracy: Accuracy { overall: s.accuracy_all(), clean: s.accuracy(0), drift: s.accuracy(1) },
            accuracy_tolerance: (0..n).any(|j| ctl.scoring(j).declared()).then(|| Accuracy {
                overall: s.accuracy_all_own(),
                clean: s.accuracy_own(0),
                drift: s.accuracy_own(1),
            }),
            per_task: (0..n).map(|j| (s.agree[0][j] + s.agree[1][j]) / f).collect(),
            executions_saved: s.executions_saved(n),
            flops_saved: s.flops_saved(),
            executions: s.executions,
            adapt_executions: s.adapt_executions,
            adapt_tasks: s.adapt_tasks,
            held_outputs: s.held_outputs,
            degraded_outputs: s.degraded_outputs,
            peak_mem: s.peak_mem,
            budget_violations: s.budget_violations,
            ticks: s.ticks,
            wall_s: t.elapsed().as_secs_f64(),
            command: format!("jetlink run {}", args.join(" ")),
        };
        println!(
            "{:<28} {:>6} of budget  accuracy {} (clean {}, drift {})  saved {}  held {}{}",
            row.method,
            format!("{}%", fmt_share(share)),
            opt_pct(row.accuracy.overall),
            opt_pct(row.accuracy.clean),
            opt_pct(row.accuracy.drift),
            pct(row.executions_saved),
            row.held_outputs,
            row.accuracy_tolerance
                .map_or(String::new(), |a| format!("  tolerance rule {}", opt_pct(a.overall)))
        );
        results.push(row);
    }
    let (workload, board, models, hold_agreement) = header.context("the sweep ran no row")?;
    let best = [("clean", 0.75), ("drift", 0.70), ("overall", 0.70)]
        .into_iter()
        .map(|(seg, floor)| best_row(&results, seg, floor))
        .collect();
    Ok(Report {
        main: results[0].clone(),
        workload,
        board,
        bundle: o.bundle.display().to_string(),
        engines: if o.engines == Engines::Replay { "replay".into() } else { "tract-onnx".into() },
        models,
        hold_agreement,
        results,
        best,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

fn opt_pct(x: Option<f64>) -> String {
    x.map_or("-".into(), pct)
}

fn segment(r: &Row, seg: &str) -> Option<f64> {
    match seg {
        "clean" => r.accuracy.clean,
        "drift" => r.accuracy.drift,
        _ => r.accuracy.overall,
    }
}

/// The most accurate row on `seg` among those saving at least `floor` of the executions.
fn best_row(rows: &[Row], seg: &'static str, floor: f64) -> Best {
    let b = rows
        .iter()
        .filter(|r| r.executions_saved >= floor)
        // A ceiling that reads the reference (`oracle-refresh-K`) is not a method a board can run.
        .filter(|r| !r.policy.starts_with("oracle-"))
        .filter_map(|r| segment(r, seg).map(|a| (a, r)))
        .max_by(|x, y| x.0.total_cmp(&y.0));
    Best {
        segment: seg,
        min_saved: floor,
        method: b.map(|(_, r)| r.method.clone()),
        budget_share: b.map(|(_, r)| r.budget_share),
        accuracy: b.map(|(a, _)| a),
        executions_saved: b.map(|(_, r)| r.executions_saved),
        command: b.map(|(_, r)| r.command.clone()),
    }
}

/// Accuracy (overall) against executions saved, one series per method over its budgets.
pub(crate) fn chart(r: &Report) -> jetlink::plot::LineChart {
    let mut series: Vec<jetlink::plot::Series> = Vec::new();
    for row in &r.results {
        let Some(acc) = row.accuracy.overall else { continue };
        let at = match series.iter().position(|s| s.name == row.method) {
            Some(i) => i,
            None => {
                series.push(jetlink::plot::Series { name: row.method.clone(), points: Vec::new() });
                series.len() - 1
            }
        };
        series[at].points.push((row.executions_saved, acc));
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    jetlink::plot::LineChart {
        title: format!("{}: jetlink run at each budget ({} engines)", r.workload, r.engines),
        x_label: "executions saved (adaptation and audit runs counted)".into(),
        y_label: "accuracy kept (every model, evaluation frames)".into(),
        x_range: (0.0, 1.0),
        y_range: (0.0, 1.0),
        percent: true,
        series,
    }
}

/// The best rows as text.
pub(crate) fn format_best(r: &Report) -> String {
    let mut s = String::new();
    for b in &r.best {
        match (&b.method, b.accuracy, b.executions_saved) {
            (Some(m), Some(a), Some(x)) => s.push_str(&format!(
                "best {} accuracy with at least {} saved: {} at {} saved ({m}, {}% budget)\n    {}\n",
                b.segment,
                pct(b.min_saved),
                pct(a),
                pct(x),
                fmt_share(b.budget_share.unwrap_or(1.0)),
                b.command.as_deref().unwrap_or("")
            )),
            _ => s.push_str(&format!("best {}: no row saves at least {}\n", b.segment, pct(b.min_saved))),
        }
    }
    s
}
