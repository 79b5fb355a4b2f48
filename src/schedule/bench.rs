//! `jetlink bench mlink`: every scheduler over the evaluation part of a stream, at a sweep of memory
//! budgets, measured the paper's way (agreement of each delivered output with what that model would
//! have output on that frame), clean and drift segments apart.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use super::{Decision, Problem, ScheduleTable, Scheduler};
use crate::bundle::Bundle;
use crate::links::{Predictor, agreement};
use crate::recording::Recording;
use crate::stream::{Segment, Stream};

/// Settings of one benchmark run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Frames per scheduling period.
    pub period: usize,
    /// Share of each period's frames profiled (every model run) to refresh the scores; the paper used 1%.
    pub profile_share: f32,
    /// Weight, in frames, of the bundle's held-out scores against a period's profile.
    pub prior_frames: f32,
    /// Number of budget levels between the smallest model and all models.
    pub levels: usize,
    pub seed: u64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { period: 1000, profile_share: 0.01, prior_frames: 20.0, levels: 12, seed: 1 }
    }
}

/// Results of one method in one segment at one budget.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SegmentResult {
    pub frames: usize,
    /// Mean over tasks and frames of agreement (unweighted, as the paper reports).
    pub accuracy: f64,
    /// Importance-weighted.
    pub weighted_accuracy: f64,
    pub per_task: Vec<f64>,
    pub executions_saved: f64,
    pub flops_saved: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct MethodResult {
    pub method: String,
    pub budget_bytes: u64,
    pub peak_memory_bytes: u64,
    pub clean: SegmentResult,
    pub drift: SegmentResult,
    pub all: SegmentResult,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub workload: String,
    pub models: Vec<String>,
    pub model_memory_bytes: Vec<u64>,
    pub budgets: Vec<u64>,
    pub period_frames: usize,
    pub profile_frames_per_period: usize,
    pub lookup_ns_median: f64,
    pub table_entries: usize,
    pub results: Vec<MethodResult>,
}

#[derive(Default, Clone)]
struct Acc {
    frames: usize,
    agree: Vec<f64>,
    executions: u64,
    flops: u64,
}

impl Acc {
    fn new(n: usize) -> Acc {
        Acc { agree: vec![0.0; n], ..Default::default() }
    }
    fn finish(&self, p: &Problem) -> SegmentResult {
        let n = p.n;
        let f = self.frames.max(1) as f64;
        let per_task: Vec<f64> = self.agree.iter().map(|a| a / f).collect();
        let w: f64 = p.importance.iter().map(|&x| x as f64).sum();
        let total_flops: u64 = p.flops.iter().sum();
        SegmentResult {
            frames: self.frames,
            accuracy: per_task.iter().sum::<f64>() / n as f64,
            weighted_accuracy: per_task.iter().zip(&p.importance).map(|(a, &w)| a * w as f64).sum::<f64>()
                / w,
            per_task,
            executions_saved: 1.0 - self.executions as f64 / (f * n as f64),
            flops_saved: 1.0 - self.flops as f64 / (f * total_flops.max(1) as f64),
        }
    }
}

/// The budget sweep: geometric from the smallest model to all models (with their links).
pub fn budget_levels(p: &Problem, levels: usize) -> Vec<u64> {
    let lo = p.model_mem.iter().copied().min().unwrap_or(1).max(1) as f64;
    let hi = p.cost(p.all()) as f64;
    let mut v: Vec<u64> = (0..levels.max(2))
        .map(|k| (lo * (hi / lo).powf(k as f64 / (levels.max(2) - 1) as f64)).round() as u64)
        .collect();
    v.dedup();
    v
}

/// Refresh `base`'s scores from profile rows (every model's exact output): for every target and
/// every subset of the models that could run, blend the held-out score with the agreement measured
/// on the profile, weighting the held-out score as `prior` frames.
fn refresh_scores(
    base: &Problem,
    into: &mut Problem,
    predictor: &mut Predictor,
    bundle: &Bundle,
    rows: &[&[f32]],
    runnable: u64,
    prior: f32,
    out: &mut [f32],
) {
    into.score.copy_from_slice(&base.score);
    if rows.is_empty() {
        return;
    }
    let n = base.n;
    let offs: Vec<usize> = bundle
        .models
        .iter()
        .scan(0, |a, m| {
            let o = *a;
            *a += m.size as usize;
            Some(o)
        })
        .collect();
    let mut sums = vec![0.0f32; n << n];
    for row in rows {
        for mask in 0..=base.all() {
            if mask & !runnable != 0 || mask == 0 {
                continue;
            }
            if predictor.predict(mask, row, out).is_err() {
                continue;
            }
            for j in 0..n {
                if mask >> j & 1 == 0 {
                    let m = &bundle.models[j];
                    let r = offs[j]..offs[j] + m.size as usize;
                    sums[(j << n) | mask as usize] +=
                        agreement(m.kind, m.tolerance, &out[r.clone()], &row[r]);
                }
            }
        }
    }
    let k = rows.len() as f32;
    for mask in 0..=base.all() {
        if mask & !runnable != 0 || mask == 0 {
            continue;
        }
        for j in 0..n {
            if mask >> j & 1 == 0 {
                let i = (j << n) | mask as usize;
                into.score[i] = (prior * base.score[i] + sums[i]) / (prior + k);
            }
        }
    }
}

/// Run one scheduler over the evaluation frames at one budget.
#[allow(clippy::too_many_arguments)]
fn run_method(
    sched: &mut dyn Scheduler,
    profiles: bool,
    base: &Problem,
    bundle: &Bundle,
    stream: &Stream,
    reference: &Recording,
    budget: u64,
    opt: &BenchOptions,
) -> Result<MethodResult> {
    let n = base.n;
    let mut predictor = Predictor::new(bundle);
    let mut problem = base.clone();
    let stride = reference.stride();
    let mut out = vec![0.0f32; stride];
    let mut last = vec![0.0f32; stride];
    let mut have_last = false;
    let mut acc = [Acc::new(n), Acc::new(n)];
    let mut peak = 0u64;
    let start = stream.train_end;
    let runnable: u64 = (0..n).filter(|&i| base.model_mem[i] <= budget).fold(0, |m, i| m | 1 << i);
    let n_prof = if profiles { ((opt.period as f32 * opt.profile_share).ceil() as usize).max(1) } else { 0 };
    let mut frame = start;
    while frame < stream.len() {
        let end = (frame + opt.period).min(stream.len());
        // Profile: every model that fits alone runs on the first frames of the period, one after another.
        let prof_end = (frame + n_prof).min(end);
        if profiles {
            let rows: Vec<&[f32]> = (frame..prof_end)
                .map(|f| reference.row(reference.row_of_frame(f as u32).expect("reference row")))
                .collect();
            refresh_scores(
                base,
                &mut problem,
                &mut predictor,
                bundle,
                &rows,
                runnable,
                opt.prior_frames,
                &mut out,
            );
        }
        sched.select(&problem, budget);
        peak = peak.max(sched.peak_memory(&problem));
        if profiles && runnable != 0 {
            peak = peak.max(base.model_mem.iter().copied().filter(|&m| m <= budget).max().unwrap_or(0));
        }
        for f in frame..end {
            let row = reference.row(reference.row_of_frame(f as u32).context("reference lacks a frame")?);
            let seg = if stream.segment(f) == Segment::Drift { 1 } else { 0 };
            let a = &mut acc[seg];
            a.frames += 1;
            let decision = if f < prof_end {
                Decision::Run { active: runnable, predict: base.all() & !runnable }
            } else {
                sched.decide(stream.frame(f))
            };
            match decision {
                Decision::Run { active, predict } => {
                    a.executions += active.count_ones() as u64;
                    a.flops += (0..n).filter(|&i| active >> i & 1 == 1).map(|i| base.flops[i]).sum::<u64>();
                    if predict != 0 && active != 0 {
                        predictor.predict(active, row, &mut out).map_err(|e| anyhow::anyhow!("{e}"))?;
                    }
                    for j in 0..n {
                        let m = &bundle.models[j];
                        let r = reference.offset(j)..reference.offset(j) + m.size as usize;
                        let s = if active >> j & 1 == 1 {
                            out[r.clone()].copy_from_slice(&row[r.clone()]);
                            1.0
                        } else if predict >> j & 1 == 1 && active != 0 {
                            agreement(m.kind, m.tolerance, &out[r.clone()], &row[r.clone()])
                        } else {
                            out[r.clone()].fill(f32::NAN);
                            0.0
                        };
                        a.agree[j] += s as f64;
                    }
                    last.copy_from_slice(&out);
                    have_last = active != 0;
                }
                Decision::Reuse => {
                    for j in 0..n {
                        let m = &bundle.models[j];
                        let r = reference.offset(j)..reference.offset(j) + m.size as usize;
                        if have_last {
                            a.agree[j] += agreement(m.kind, m.tolerance, &last[r.clone()], &row[r]) as f64;
                        }
                    }
                }
            }
        }
        frame = end;
    }
    let mut all = Acc::new(n);
    all.frames = acc[0].frames + acc[1].frames;
    all.executions = acc[0].executions + acc[1].executions;
    all.flops = acc[0].flops + acc[1].flops;
    for j in 0..n {
        all.agree[j] = acc[0].agree[j] + acc[1].agree[j];
    }
    Ok(MethodResult {
        method: sched.name().to_string(),
        budget_bytes: budget,
        peak_memory_bytes: peak,
        clean: acc[0].finish(base),
        drift: acc[1].finish(base),
        all: all.finish(base),
    })
}

/// Median time of a schedule-table look-up, nanoseconds.
pub fn time_lookup(table: &ScheduleTable, budgets: &[u64]) -> f64 {
    let mut samples = Vec::with_capacity(200);
    let mut sink = 0u64;
    for _ in 0..200 {
        let t = Instant::now();
        for _ in 0..100 {
            for &b in budgets {
                sink ^= table.lookup(std::hint::black_box(b)).0;
            }
        }
        samples.push(t.elapsed().as_secs_f64() * 1e9 / (100 * budgets.len()) as f64);
    }
    std::hint::black_box(sink);
    crate::record::percentile(&samples, 50.0)
}

/// The whole benchmark.
pub fn run(
    bundle: &Bundle,
    stream: &Stream,
    reference: &Recording,
    opt: &BenchOptions,
) -> Result<BenchReport> {
    let base = Problem::from_bundle(bundle);
    let budgets = budget_levels(&base, opt.levels);
    // The frame filter tunes its threshold on the training part (consecutive frames, as it would see them).
    let prof: Vec<&[u8]> = (0..stream.train_end.min(1000)).map(|f| stream.frame(f)).collect();
    let table = ScheduleTable::build(&base);
    let mut results = Vec::new();
    let bar = indicatif::ProgressBar::new((super::NAMES.len() * budgets.len()) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("bench mlink [{bar:40}] {pos}/{len} {msg}").unwrap(),
    );
    for name in super::NAMES {
        for &b in &budgets {
            bar.set_message(format!("{name} @ {:.2} MB", b as f64 / 1e6));
            let mut s = super::by_name(name, &prof, opt.seed).expect("known scheduler");
            let profiles = matches!(name, "optimal" | "greedy");
            results.push(run_method(s.as_mut(), profiles, &base, bundle, stream, reference, b, opt)?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(BenchReport {
        workload: bundle.workload.clone(),
        models: bundle.models.iter().map(|m| m.name.clone()).collect(),
        model_memory_bytes: base.model_mem.clone(),
        budgets: budgets.clone(),
        period_frames: opt.period,
        profile_frames_per_period: ((opt.period as f32 * opt.profile_share).ceil() as usize).max(1),
        lookup_ns_median: time_lookup(&table, &budgets),
        table_entries: table.len(),
        results,
    })
}

/// The table printed by the command.
pub fn format_table(r: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<13} {:>9} {:>9} | {:>7} {:>7} {:>7} | {:>7} {:>7} | {:>7} {:>7}",
        "method", "budget MB", "peak MB", "acc", "clean", "drift", "exec sv", "FLOP sv", "w.acc", ""
    );
    for m in &r.results {
        let _ = writeln!(
            s,
            "{:<13} {:>9.3} {:>9.3} | {:>6.1}% {:>6.1}% {:>6.1}% | {:>6.1}% {:>6.1}% | {:>6.1}%",
            m.method,
            m.budget_bytes as f64 / 1e6,
            m.peak_memory_bytes as f64 / 1e6,
            100.0 * m.all.accuracy,
            100.0 * m.clean.accuracy,
            100.0 * m.drift.accuracy,
            100.0 * m.all.executions_saved,
            100.0 * m.all.flops_saved,
            100.0 * m.all.weighted_accuracy,
        );
    }
    s
}

/// Accuracy against executions saved, one line per method, as an SVG image.
pub fn svg_curves(r: &BenchReport) -> String {
    let (w, h, ml, mb) = (720.0, 440.0, 60.0, 50.0);
    let x = |v: f64| ml + v * (w - ml - 170.0);
    let y = |v: f64| h - mb - v * (h - mb - 20.0);
    let colors = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#7f7f7f"];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for k in 0..=10 {
        let v = k as f64 / 10.0;
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.0}%</text>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{:.0}%</text>",
            x(0.0),
            y(v),
            x(1.0),
            y(v),
            x(0.0) - 5.0,
            y(v) + 4.0,
            v * 100.0,
            x(v),
            h - mb + 18.0,
            v * 100.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">executions saved (evaluation frames, clean + drift)</text>\
         <text x=\"15\" y=\"{}\" transform=\"rotate(-90 15 {})\" text-anchor=\"middle\">accuracy (agreement with every model)</text>",
        x(0.5),
        h - 10.0,
        y(0.5),
        y(0.5)
    );
    for (ci, name) in super::NAMES.iter().enumerate() {
        let mut pts: Vec<(f64, f64)> = r
            .results
            .iter()
            .filter(|m| m.method == *name)
            .map(|m| (m.all.executions_saved, m.all.accuracy))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = pts.iter().map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b))).collect();
        let c = colors[ci % colors.len()];
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for (a, b) in &pts {
            let _ = writeln!(s, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>", x(*a), y(*b));
        }
        let _ = writeln!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"14\" height=\"3\" fill=\"{c}\"/><text x=\"{}\" y=\"{}\">{name}</text>",
            w - 150.0,
            40.0 + 20.0 * ci as f64,
            w - 130.0,
            45.0 + 20.0 * ci as f64
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Write the JSON and the SVG next to each other.
pub fn write_outputs(r: &BenchReport, json: &Path, svg: &Path) -> Result<()> {
    if let Some(d) = json.parent() {
        std::fs::create_dir_all(d).ok();
    }
    std::fs::write(json, serde_json::to_string_pretty(r)?)
        .with_context(|| format!("writing {}", json.display()))?;
    std::fs::write(svg, svg_curves(r)).with_context(|| format!("writing {}", svg.display()))?;
    Ok(())
}
