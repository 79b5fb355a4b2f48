//! [`prepare`]: load, check and allocate everything a loop needs (engines, schedule table, DCTA
//! table, link executor, adaptation and audit state, every buffer), and send the Hello message.
//! Reached through [`LoopBuilder`](super::LoopBuilder).

use std::sync::Arc;

use anyhow::{Context, Result, ensure};

use super::*;
use crate::board::Board;
use crate::bundle::Bundle;
use crate::dcta::Dcta;
use crate::engine::Backend;
use crate::gpu::LinkExecutor;
use crate::links::MAX_MODELS;
use crate::manifest::Manifest;
use crate::recording::Recording;
use crate::schedule::{Problem, ScheduleTable};
use crate::source::FrameSource;
use crate::telemetry::Telemetry;
use crate::view::Shape;
use crate::wire::{self, Message, TelemetryWriter};

/// Everything `prepare` needs.
pub(super) struct Parts<S: FrameSource, W: embedded_io::Write> {
    pub(crate) board: &'static Board,
    pub(crate) manifest: Manifest,
    pub(crate) bundle: Bundle,
    pub(crate) frame_shape: Shape,
    pub(crate) backend: Box<dyn Backend>,
    pub(crate) source: S,
    pub(crate) telemetry: Telemetry,
    pub(crate) writer: TelemetryWriter<W>,
    pub(crate) reference: Option<Arc<Recording>>,
    pub(crate) opts: LoopOptions,
    pub(crate) fleet: Option<Arc<crate::fleet::tap::FleetTap>>,
}

/// Load, check and allocate everything; send the Hello message.
pub(super) fn prepare<S: FrameSource, W: embedded_io::Write>(p: Parts<S, W>) -> Result<Controller<S, W>> {
    let Parts {
        board,
        manifest,
        bundle,
        frame_shape,
        backend,
        source,
        telemetry,
        mut writer,
        reference,
        opts,
        fleet,
    } = p;
    check_parts(&manifest, &bundle, frame_shape, &source, reference.as_deref())?;
    let n = bundle.n_models();
    let models = crate::engine::prepare_all(&manifest, frame_shape, backend.as_ref())?;
    let (problem, table) = schedule_for(&bundle, board, &opts)?;
    let dcta = dcta_for(&bundle, board)?;
    let links = LinkExecutor::new(&bundle);
    let online = OnlineAdaptation::new(&bundle, links.predictor(), opts.adaptation);
    let layout = bundle.layout();
    let stride = layout.stride();
    writer.set_decimation(
        wire::LinePlan::new(
            board.serial.baud,
            board.period_ms,
            wire::frame_len(&Message::Tick(wire::typical_tick())),
        )
        .decimation,
    );
    let _ = writer.send(&hello(board, &bundle)?);
    let mut stats = LoopStats { n_models: n, min_budget: u64::MAX, ..Default::default() };
    stats.all_flops_per_frame = problem.flops.iter().sum();
    let st = LoopState {
        links,
        online,
        dcta,
        governor: PowerGovernor::new(),
        drift: DriftTracker::new(n),
        frame: vec![0; source.frame_len()],
        frames: vec![0; n],
        row: vec![0.0; stride],
        out: vec![0.0; stride],
        last_out: vec![0.0; stride],
        tick_no: 0,
        period: 0,
        active: 0,
        predicted: 0,
        budget: u64::MAX,
        mem_used: 0,
        have_last: false,
        extra: Extra::default(),
        label_group: 0,
        audits: AuditTally::new(n),
        next_index: 0,
        frame_index: 0,
        engine_ns: 0,
        period_start: stats,
        stats,
        period_peak: 0,
        period_missed: false,
        last: TickReport::default(),
    };
    let plan = LoopPlan {
        board,
        kinds: bundle.models.iter().map(|m| m.kind).collect(),
        tolerances: bundle.models.iter().map(|m| m.tolerance).collect(),
        layout,
        problem,
        table,
        opts,
    };
    Ok(Controller { plan, io: LoopIo { source, telemetry, writer, models, reference, fleet }, st })
}

fn check_parts(
    manifest: &Manifest,
    bundle: &Bundle,
    frame_shape: Shape,
    source: &impl FrameSource,
    reference: Option<&Recording>,
) -> Result<()> {
    bundle.check_manifest(manifest).context("the bundle does not match the manifest")?;
    let n = bundle.n_models();
    ensure!(n <= MAX_MODELS, "{n} models: the loop's masks hold at most {MAX_MODELS}");
    ensure!(
        source.frame_len() == frame_shape.len(),
        "frame source gives {} bytes, frames have {}",
        source.frame_len(),
        frame_shape.len()
    );
    if let Some(r) = reference {
        for (i, m) in bundle.models.iter().enumerate() {
            ensure!(
                r.models.get(i).is_some_and(|rm| rm.name == m.name && rm.size == m.size as usize),
                "the reference recording's model {i} is not {:?}",
                m.name
            );
        }
    }
    Ok(())
}

/// The schedule problem and its table: the bundle's table, or one rebuilt (3^n choices, once)
/// when an execution budget applies (the options', else the board's `max-active-models`).
fn schedule_for(bundle: &Bundle, board: &Board, opts: &LoopOptions) -> Result<(Problem, ScheduleTable)> {
    let problem = Problem::from_bundle(bundle);
    let cap = opts.max_active.or((board.max_active_models > 0).then_some(board.max_active_models as usize));
    Ok(match (&bundle.schedule, cap) {
        (_, Some(k)) => {
            let problem = problem.with_max_active(k);
            let table = ScheduleTable::build(&problem);
            (problem, table)
        }
        (Some(b), None) => {
            (problem, postcard::from_bytes(b).context("the bundle's schedule table does not decode")?)
        }
        (None, None) => {
            let table = ScheduleTable::build(&problem);
            (problem, table)
        }
    })
}

/// The bundle's DCTA table when it was built for this board.
fn dcta_for(bundle: &Bundle, board: &Board) -> Result<Option<Dcta>> {
    let Some(b) = &bundle.dcta else { return Ok(None) };
    let t = crate::dcta::PolicyTable::from_postcard(b).context("the bundle's DCTA table does not decode")?;
    if t.board == board.name {
        return Ok(Some(Dcta::new(t).context("the bundle's DCTA table is unusable")?));
    }
    log::warn!(
        "the bundle's DCTA table was built for board {:?}, not {:?}; adaptation uses greedy",
        t.board,
        board.name
    );
    Ok(None)
}

fn hello(board: &Board, bundle: &Bundle) -> Result<Message> {
    let hash = crate::bundle::sha256(&bundle.to_bytes()?);
    let mut name = heapless::String::<24>::new();
    for c in board.name.chars().take(24) {
        let _ = name.push(c);
    }
    let v = |s: &str| s.parse::<u16>().unwrap_or(0);
    Ok(Message::Hello(wire::Hello {
        proto_version: wire::PROTO_VERSION,
        firmware: (
            v(env!("CARGO_PKG_VERSION_MAJOR")),
            v(env!("CARGO_PKG_VERSION_MINOR")),
            v(env!("CARGO_PKG_VERSION_PATCH")),
        ),
        board: name,
        bundle_hash: hash[..8].try_into().expect("8 bytes"),
        n_models: bundle.n_models() as u8,
        period_ms: board.period_ms,
    }))
}
