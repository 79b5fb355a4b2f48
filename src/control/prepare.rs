//! [`prepare`]: load, check and allocate everything a loop needs (engines, schedule table, DCTA
//! table, link executor, adaptation and audit state, every buffer), and send the Hello message.
//! Reached through [`LoopBuilder`](super::LoopBuilder).

use crate::model_set::ModelSet;
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
use crate::schedule::{CycleTable, Problem, ScheduleTable};
use crate::source::FrameSource;
use crate::telemetry::Telemetry;
use crate::view::Shape;
use crate::wire::{self, Message, TelemetryWriter};
use anyhow::bail;

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
    /// Frames a frame-gated policy tunes on (empty for the others).
    pub(crate) profile: Vec<Vec<u8>>,
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
        profile,
    } = p;
    check_parts(&manifest, &bundle, frame_shape, &source, reference.as_deref())?;
    if matches!(refresh::parse(&opts.policy), Some((refresh::Mode::Oracle, _))) && reference.is_none() {
        bail!(
            "--policy {}: the oracle refreshes what the reference recording says is stale; it is a \
             benchmark ceiling and needs the reference (not a live source)",
            opts.policy
        );
    }
    let n = bundle.n_models();
    let models = crate::engine::prepare_all(&manifest, frame_shape, backend.as_ref())?;
    let mut opts = opts;
    let window_len = opts.adaptation.label_every.max(1) as usize;
    let window_bytes = (window_len * (source.frame_len() + 4 * bundle.layout().stride())) as u64;
    // The bundle's DCTA table, decoded once: the board it names is the board `jetlink build` made the
    // bundle's tables for.
    let bundle_dcta = bundle
        .dcta
        .as_deref()
        .map(crate::dcta::PolicyTable::from_postcard)
        .transpose()
        .context("the bundle's DCTA table does not decode")?;
    let built_for = bundle_dcta.as_ref().map(|t| t.board.to_string());
    let (problem, table) = schedule_for(&bundle, built_for.as_deref(), board, &opts)?;
    // `auto` weighs the window against the budget in force (`--budget` lowers the board's), and
    // takes no window that would leave no model room.
    let in_force = board.model_budget_bytes.min(opts.budget_cap.unwrap_or(u64::MAX));
    let least = (0..n).map(|j| problem.model_mem[j]).min().unwrap_or(0);
    opts.adaptation.rule = match opts.adaptation.rule.resolve(window_bytes, in_force) {
        LabelRule::TopK
            if opts.adaptation.rule == LabelRule::Auto && in_force.saturating_sub(window_bytes) < least =>
        {
            LabelRule::Uniform
        }
        r => r,
    };
    let window_bytes = if opts.adapt && opts.adaptation.rule == LabelRule::TopK { window_bytes } else { 0 };
    let profile: Vec<&[u8]> = profile.iter().map(|f| f.as_slice()).collect();
    let cycles =
        CycleTable::build(&opts.policy, &problem, &table, &profile, opts.seed).with_context(|| {
            format!("unknown policy {:?}; {}", opts.policy, crate::schedule::cycle::POLICY_HELP)
        })?;
    // A policy that runs nothing at the run's budget says so at once (its outputs would all be
    // degraded); the budget each tick may differ, so the summary says it for the last tick's.
    let nominal = in_force.saturating_sub(window_bytes);
    // A window asked for (`--labels top-k`) that leaves no room for any model runs nothing and
    // degrades every output: said at once (a sweep's row still runs, and shows it).
    if window_bytes > 0 && nominal < least {
        log::warn!(
            "the top-k label window ({window_bytes} bytes: {window_len} frames and their outputs) leaves \
             {nominal} bytes of the model budget, below the smallest model's memory ({least} bytes): no \
             model can run (raise the budget, or --labels uniform, which keeps no window)"
        );
    }
    if let Some(note) = cycles.idle_note(&opts.policy, &problem, nominal) {
        log::warn!("{note}");
    }
    let dcta = dcta_for(bundle_dcta, &manifest, board)?;
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
        active: ModelSet::EMPTY,
        predicted: ModelSet::EMPTY,
        hold: ModelSet::EMPTY,
        held: ModelSet::EMPTY,
        level: None,
        phase_t: 0,
        run_out: vec![0.0; stride],
        age: vec![u32::MAX; n],
        held_age: vec![0; n],
        gate_frame: vec![0; source.frame_len()],
        have_gate: false,
        sig: vec![Default::default(); n],
        sig_fresh: ModelSet::EMPTY,
        loss: LossHead::new(n),
        window: LabelWindow::new(
            if opts.adapt && opts.adaptation.rule == LabelRule::TopK { window_len } else { 0 },
            source.frame_len(),
            stride,
        ),
        label_frame: vec![0; source.frame_len()],
        label_row: vec![0.0; stride],
        budget: u64::MAX,
        mem_used: 0,
        have_last: false,
        extra: Extra::default(),
        label_group: ModelSet::EMPTY,
        audits: AuditTally::new(n),
        next_index: 0,
        frame_index: 0,
        engine_ns: 0,
        refresh: refresh::parse(&opts.policy).map(|(mode, k)| {
            refresh::Refresh::new(mode, k, n, source.frame_len(), stride, &bundle.staleness)
        }),
        period_start: stats,
        stats,
        period_peak: 0,
        period_missed: false,
        last: TickReport::default(),
    };
    let plan = LoopPlan {
        board,
        kinds: bundle.models.iter().map(|m| m.kind).collect(),
        scorings: bundle.models.iter().map(|m| m.scoring).collect(),
        layout,
        problem,
        table,
        cycles,
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

/// The schedule problem (at most the options', else the board's `max-active-models` models a tick)
/// and its exact table: the bundle's (built by `jetlink build` for its board, under that board's
/// cap) when it was built for this board, that cap is the one in force and every entry keeps within
/// it; else one rebuilt (3^n choices, once). A table built under a smaller cap keeps within a larger
/// one but is not the best under it: it never runs more models than its own cap allowed. The board
/// a bundle was built for, `built_for`, is the one its DCTA table names (`jetlink build` writes both).
fn schedule_for(
    bundle: &Bundle,
    built_for: Option<&str>,
    board: &Board,
    opts: &LoopOptions,
) -> Result<(Problem, ScheduleTable)> {
    let mut problem = Problem::from_bundle(bundle);
    let board_cap = (board.max_active_models > 0).then_some(board.max_active_models as usize);
    let cap = opts.max_active.or(board_cap);
    if let Some(k) = cap {
        problem = problem.with_max_active(k);
    }
    if let Some(b) = &bundle.schedule {
        let table: ScheduleTable = crate::binfile::decode_whole(b)
            .map_err(|e| anyhow::anyhow!("the bundle's schedule table does not decode: {e}"))?;
        let k = problem.max_active;
        if table.mask.iter().any(|m| m.len() > k) {
            log::info!(
                "the bundle's schedule table runs more than {k} models a tick; rebuilding it for this cap"
            );
        } else if cap != board_cap {
            log::info!(
                "the bundle's schedule table was built for the board's own cap; rebuilding it for {k} models a tick"
            );
        } else if built_for != Some(board.name) {
            log::info!(
                "the bundle's schedule table was built for board {:?}, not {:?}; rebuilding it for this board",
                built_for.unwrap_or("unknown"),
                board.name
            );
        } else {
            return Ok((problem, table));
        }
    }
    let table = ScheduleTable::build(&problem);
    Ok((problem, table))
}

/// The bundle's DCTA table `t` when it was built for this board; otherwise (another board's
/// table, or none) the plain density greedy over this board's menu, as the log says.
fn dcta_for(t: Option<crate::dcta::PolicyTable>, manifest: &Manifest, board: &Board) -> Result<Option<Dcta>> {
    if let Some(t) = t {
        if t.board == board.name {
            return Ok(Some(Dcta::new(t).context("the bundle's DCTA table is unusable")?));
        }
        log::warn!(
            "the bundle's DCTA table was built for board {:?}, not {:?}; adaptation uses greedy",
            t.board,
            board.name
        );
    }
    match crate::dcta::Menu::from_manifest(manifest, board, &crate::dcta::CostModel::default()) {
        Ok(menu) => Ok(Some(Dcta::new(crate::dcta::PolicyTable::greedy(menu, board.name))?)),
        Err(e) => {
            log::warn!("this board's adaptation tasks cannot be posed ({e}); no adaptation");
            Ok(None)
        }
    }
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
