//! `jetlink bench fleet`: N simulated boards (threads with real fleet clients) and the aggregator
//! against a local Mosquitto. Each period every board queues a summary and offers links for the
//! targets it adapted (the bundle's weights plus seeded noise: what is measured is the transport
//! and the averaging, not accuracy) and offers its drifting targets as adaptation tasks (seeded
//! drift levels); the aggregator averages once all N updates are in and allocates the tasks. Measured:
//! bytes per board per period (MQTT payloads, up and down), averaging-and-signing time, and
//! end-to-end latency from the last board's update to every board holding fused links.

use crate::model_set::ModelSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ed25519_dalek::SigningKey;
use serde::Serialize;

use super::aggregate::{AggregateOptions, Aggregator};
use super::broker::Mosquitto;
use super::model_hash;
use super::sim::SimBoard;
use crate::bundle::Bundle;
use crate::links::Rng;
use crate::recording::Recording;
use crate::wire::PeriodSummary;

/// Bench settings.
#[derive(Clone, Debug)]
pub struct FleetBenchOptions {
    pub boards: usize,
    pub periods: usize,
    /// Targets each board adapted per period (their links travel).
    pub targets_per_period: usize,
    /// Labelled rows per adapted target per period.
    pub samples_per_period: u32,
    /// Labelled rows each board fuses on.
    pub val_rows: usize,
    pub seed: u64,
    /// Groups the boards are spread over (board b in group b mod `groups`; 0: none).
    pub groups: usize,
}

impl Default for FleetBenchOptions {
    fn default() -> Self {
        FleetBenchOptions {
            boards: 100,
            periods: 3,
            targets_per_period: 2,
            samples_per_period: 16,
            val_rows: 16,
            seed: 1,
            groups: 0,
        }
    }
}

/// One aggregation round.
#[derive(Clone, Debug, Serialize)]
pub struct RoundFigures {
    pub version: u64,
    pub boards: u32,
    /// Averaging and signing the fleet's update and every group's.
    pub aggregate_us: f64,
    /// The groups' whole updates and deltas this round, bytes in all (0 without groups).
    pub group_bytes: usize,
    pub group_delta_bytes: usize,
    pub global_bytes: usize,
    /// The signed delta from the previous version, what a following board receives (0 in the
    /// first round: boards take the whole update).
    pub delta_bytes: usize,
    /// From the last board's update offered to every board holding fused links.
    pub e2e_ms: f64,
    /// From the first board's update offered.
    pub e2e_from_first_ms: f64,
}

/// What `jetlink bench fleet` writes.
#[derive(Clone, Debug, Serialize)]
pub struct FleetBenchReport {
    pub boards: usize,
    /// Groups the boards were spread over (0: none); each round then also averages and signs each
    /// group's update, and a board receives its group's.
    pub groups: usize,
    pub periods: usize,
    pub broker: String,
    pub bundle_link_bytes: usize,
    pub up_bytes_per_board_per_period: f64,
    /// Measured at the boards: global update bytes each received (the whole update at join, then
    /// deltas), plus its task allocation, per period.
    pub down_bytes_per_board_per_period: f64,
    /// The same from the second period on (deltas only): the steady state.
    pub down_bytes_per_board_later_periods: f64,
    pub summary_bytes: f64,
    /// Task offers sent (one per board per period) and the size of one board's allocation.
    pub task_offers: u32,
    pub assigned_bytes: usize,
    pub rounds: Vec<RoundFigures>,
    pub aggregate_us_median: f64,
    pub e2e_ms_median: f64,
    pub e2e_ms_max: f64,
    pub note: String,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() { 0.0 } else { crate::percentile::percentile_sorting(v, 50.0) }
}

/// Run the bench; see the module docs.
pub fn run(bundle: &Bundle, rec: &Recording, o: &FleetBenchOptions) -> Result<FleetBenchReport> {
    if o.boards == 0 || o.periods == 0 {
        bail!("--boards and --periods must be at least 1");
    }
    if o.groups > o.boards {
        bail!("--groups {} is more than --boards {}: every group needs a board", o.groups, o.boards);
    }
    let mut broker = Mosquitto::start()?;
    let version = std::process::Command::new(Mosquitto::find().context("mosquitto")?)
        .arg("-h")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_owned))
        .unwrap_or_else(|| "mosquitto".into());
    let cfg = broker.config("bench");
    let key = SigningKey::from_bytes(&[7; 32]);
    let pk = key.verifying_key().to_bytes();
    let agg = Aggregator::start(
        cfg.clone(),
        AggregateOptions {
            key,
            model_hash: model_hash(bundle),
            period: Duration::from_secs(3600),
            min_boards: o.boards,
            rounds: None,
            start_version: 0,
            shapes: crate::fleet::fuse::target_shapes(&bundle.links, &bundle.ensembles),
            boards: None,
            forget_after: Some(crate::fleet::FORGET_AFTER_ROUNDS),
            poll: Duration::from_millis(10),
        },
    )?;
    let mut boards = Vec::with_capacity(o.boards);
    for b in 0..o.boards {
        let c =
            super::FleetConfig { group: (o.groups > 0).then(|| format!("g{}", b % o.groups)), ..cfg.clone() };
        boards.push(SimBoard::join(&c, bundle, &format!("board-{b:05}"), pk, o.val_rows)?);
    }
    let deadline = Duration::from_secs(60 + o.boards as u64);
    let t = Instant::now();
    for sb in &boards {
        if !sb.client.wait_for(deadline.saturating_sub(t.elapsed()), |s| s.connected) {
            bail!("board {} did not connect to the broker", sb.name);
        }
    }
    let n = bundle.n_models();
    let mut rng = Rng::new(o.seed);
    let mut samples = vec![vec![0u32; n]; o.boards];
    let val: Vec<usize> =
        (0..o.val_rows.min(rec.len())).map(|i| i * rec.len().max(1) / o.val_rows.max(1)).collect();
    let mut rounds = Vec::new();
    let base = crate::links::Predictor::new(bundle);
    for p in 0..o.periods {
        let mut first = None;
        for (b, sb) in boards.iter_mut().enumerate() {
            // This period's adapted targets: their weights move a little, their samples grow.
            sb.predictor.links.params.copy_from_slice(&base.links.params);
            for v in sb.predictor.links.params.iter_mut() {
                *v += rng.symmetric(1e-3);
            }
            for k in 0..o.targets_per_period.min(n) {
                samples[b][(b + p + k) % n] += o.samples_per_period;
            }
            sb.tap.push_summary(PeriodSummary { period: p as u32, ticks: 250, ..Default::default() });
            // Pending adaptation tasks: seeded drift levels, none taken locally.
            let drift: Vec<f32> = (0..n).map(|_| rng.symmetric(1.0).max(0.0)).collect();
            sb.tap.offer_tasks(p as u32, &drift, ModelSet::EMPTY);
            sb.offer(rec, &samples[b], &val);
            first.get_or_insert_with(Instant::now);
        }
        let last = Instant::now();
        let want = p as u64 + 1;
        for sb in &boards {
            if !sb.client.wait_for(deadline, |s| s.global_version >= want) {
                bail!("board {} did not get global version {want} within {deadline:?}", sb.name);
            }
        }
        let done = boards.iter().filter_map(|sb| sb.client.stats().fused_at).max().unwrap_or(last);
        let st = agg.stats();
        let r = st.rounds.iter().find(|r| r.version == want).context("round report")?;
        rounds.push(RoundFigures {
            version: want,
            boards: r.boards,
            aggregate_us: r.aggregate_us,
            group_bytes: r.group_bytes,
            group_delta_bytes: r.group_delta_bytes,
            global_bytes: r.bytes,
            delta_bytes: r.delta_bytes,
            e2e_ms: done.saturating_duration_since(last).as_secs_f64() * 1e3,
            e2e_from_first_ms: done.saturating_duration_since(first.unwrap_or(last)).as_secs_f64() * 1e3,
        });
    }
    // Let the last summaries be acknowledged before reading the byte counts.
    for sb in &boards {
        sb.client.wait_for(Duration::from_secs(10), |s| s.stored == 0);
    }
    let stats: Vec<_> = boards.iter().map(|b| b.client.stats()).collect();
    let up: u64 = stats.iter().map(|s| s.bytes_published).sum();
    let summary_bytes = {
        let m = super::msg::SummaryMsg {
            proto: super::msg::FLEET_PROTO,
            board: "board-00000".into(),
            model_hash: [0; 8],
            queued_unix_s: 1_800_000_000,
            summary: Default::default(),
        };
        postcard::to_stdvec(&m)?.len() as f64
    };
    let assigned_bytes = postcard::to_stdvec(&super::msg::Assigned {
        proto: super::msg::FLEET_PROTO,
        period: o.periods as u32,
        targets: ModelSet::all(n.min(ModelSet::CAP)),
    })?
    .len();
    let offers: u32 = stats.iter().map(|s| s.task_offers).sum();
    let received: u64 = stats.iter().map(|s| s.global_bytes_received).sum();
    let down = received as f64 / o.boards as f64 + (assigned_bytes * o.periods) as f64;
    // A board follows its group's deltas where it has one (the groups' are about the same size).
    let later: Vec<f64> = rounds
        .iter()
        .skip(1)
        .map(|r| match o.groups {
            0 => (r.delta_bytes + assigned_bytes) as f64,
            g => r.group_delta_bytes as f64 / g as f64 + assigned_bytes as f64,
        })
        .collect();
    drop(boards);
    let _ = agg.stop();
    broker.stop();
    let mut agg_us: Vec<f64> = rounds.iter().map(|r| r.aggregate_us).collect();
    let mut e2e: Vec<f64> = rounds.iter().map(|r| r.e2e_ms).collect();
    Ok(FleetBenchReport {
        boards: o.boards,
        groups: o.groups,
        periods: o.periods,
        broker: version,
        bundle_link_bytes: 4 * (base.links.params.len() + base.ensembles.params.len()),
        up_bytes_per_board_per_period: up as f64 / (o.boards * o.periods) as f64,
        down_bytes_per_board_per_period: down / o.periods as f64,
        down_bytes_per_board_later_periods: if later.is_empty() {
            f64::NAN
        } else {
            later.iter().sum::<f64>() / later.len() as f64
        },
        summary_bytes,
        task_offers: offers,
        assigned_bytes,
        aggregate_us_median: median(&mut agg_us),
        e2e_ms_max: e2e.iter().copied().fold(0.0, f64::max),
        e2e_ms_median: median(&mut e2e),
        rounds,
        note: format!(
            "{} targets adapted per board per period ({} labelled rows each); link weights are the bundle's plus seeded noise; MQTT payload bytes (headers not counted); one process, loopback, this machine",
            o.targets_per_period, o.samples_per_period
        ),
    })
}

/// A small SVG: end-to-end latency and averaging time per round.
pub fn svg(r: &FleetBenchReport) -> String {
    let (w, h, m) = (640.0, 320.0, 60.0);
    let ymax = r.rounds.iter().map(|x| x.e2e_from_first_ms).fold(1.0, f64::max) * 1.1;
    let nx = r.rounds.len().max(1) as f64;
    let x = |i: usize| m + (w - 2.0 * m) * (i as f64 + 0.5) / nx;
    let y = |v: f64| h - m - (h - 2.0 * m) * v / ymax;
    let mut s = String::new();
    let _ = writeln!(s, "{}", crate::plot::svg_open(w, h));
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{m}\" y=\"24\">jetlink bench fleet: {} boards, {}; up {:.0} B, down {:.0} B per board per period</text>",
        r.boards, r.broker, r.up_bytes_per_board_per_period, r.down_bytes_per_board_per_period
    );
    let _ =
        writeln!(s, "<line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>", h - m, w - m, h - m);
    let _ = writeln!(s, "<line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>", h - m);
    let _ = writeln!(s, "<text x=\"8\" y=\"{}\">{:.0} ms</text>", m + 4.0, ymax);
    let _ = writeln!(s, "<text x=\"8\" y=\"{}\">0</text>", h - m);
    for (i, rd) in r.rounds.iter().enumerate() {
        let bw = 14.0;
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bw}\" height=\"{:.1}\" fill=\"#4477aa\"/>",
            x(i) - bw - 1.0,
            y(rd.e2e_ms),
            h - m - y(rd.e2e_ms)
        );
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bw}\" height=\"{:.1}\" fill=\"#ee6677\"/>",
            x(i) + 1.0,
            y(rd.e2e_from_first_ms),
            h - m - y(rd.e2e_from_first_ms)
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">v{} ({:.0} us avg)</text>",
            x(i),
            h - m + 16.0,
            rd.version,
            rd.aggregate_us
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{m}\" y=\"{}\"><tspan fill=\"#4477aa\">■ last update → all boards fused</tspan>  <tspan fill=\"#ee6677\">■ first update → all boards fused</tspan></text>",
        h - 12.0
    );
    s.push_str("</svg>\n");
    s
}
