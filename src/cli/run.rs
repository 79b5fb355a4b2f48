//! `jetlink run`: the main job. Opens the workload, the bundle (trusted, not rolled back), the frame
//! source, the telemetry and the serial line, prepares the loop and drives it: watchdog pings,
//! signals (stop at the end of a tick, SIGHUP reload), telemetry-loss warning, then the summary.

use super::*;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub(crate) enum Engines {
    /// The real models, run by tract-onnx.
    Tract,
    /// The reference outputs replayed (fast; no inference runtime).
    Replay,
    /// TensorRT plans built on the board (`--features tensorrt`; see docs/tensorrt.md).
    #[cfg(feature = "tensorrt")]
    Tensorrt,
}

#[derive(clap::Args, Clone)]
pub(crate) struct RunArgs {
    #[arg(long, default_value = DEMO_MANIFEST)]
    pub(crate) manifest: PathBuf,
    #[arg(long, default_value = DEMO_BUNDLE)]
    pub(crate) bundle: PathBuf,
    #[arg(long, value_enum, default_value = "tract")]
    pub(crate) engines: Engines,
    /// First frame (default: the end of the training part).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=u32::MAX as u64))]
    pub(crate) from: Option<u64>,
    /// Number of frames (default: to the end of the stream).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=u32::MAX as u64))]
    pub(crate) frames: Option<u64>,
    /// Telemetry output: a tty or pty device, a FIFO, or `file:PATH` for a file (created, or replaced
    /// only if it already holds jetlink telemetry). Default: the board's serial device.
    #[arg(long)]
    pub(crate) serial: Option<String>,
    /// Rollback-protection state file (default: the board's `state-file`).
    #[arg(long)]
    pub(crate) state_file: Option<PathBuf>,
    /// Root under which the board's sysfs paths are read (a fake tree in tests; default `/`). Only
    /// for a board whose telemetry is read from sysfs.
    #[arg(long)]
    pub(crate) sysfs_root: Option<PathBuf>,
    /// Do not adapt links (the labelling flags, which only steer adaptation, are refused with it).
    #[arg(long, conflicts_with_all = ["labels", "uncertainty_sampling", "label_every"])]
    pub(crate) no_adapt: bool,
    /// At most this many models run per tick (default: the board's `max-active-models`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=jetlink::model_set::ModelSet::CAP as i64))]
    pub(crate) max_active: Option<u32>,
    /// Which frame a labelling tick labels (every `--label-every` ticks): `auto` (`top-k` where its
    /// window costs at most 1/32 of the board's model budget, else `uniform`), `uniform` (that tick's),
    /// `uncertainty` (that tick's, only if its predictions are at least as uncertain as their
    /// running mean), `loss-prediction` (only if its predicted loss is at least the running mean;
    /// a per-target head learnt on-line), `top-k` (the most uncertain of the last `--label-every`
    /// frames, kept in a window counted against the model budget).
    #[arg(long, default_value = "auto", value_parser = parse_label_rule)]
    pub(crate) labels: String,
    /// The same as `--labels uncertainty` (not with `--labels`).
    #[arg(long, conflicts_with = "labels")]
    pub(crate) uncertainty_sampling: bool,
    /// Label one frame for adaptation every this many ticks while targets are allocated (5 = 20%).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) label_every: u32,
    /// Where frames come from: `stream` (the manifest's stream, the default), `images:DIR` (PNG,
    /// JPEG, PGM in name order), `gst:PIPELINE` (a live GStreamer pipeline, e.g. a camera), or a
    /// video file (decoded with GStreamer). Frames are numbered from `--from`.
    #[arg(long, default_value = "stream")]
    pub(crate) source: String,
    /// With `--source` other than `stream`: the source's frames are the stream's frames from
    /// `--from` on (a test, or a recording of the stream), so accuracy is scored against the
    /// manifest's reference.
    #[arg(long)]
    pub(crate) reference_aligned: bool,
    /// Audit one predicted task every N ticks to estimate accuracy on-line (0: off). Default: 25
    /// when there is no reference to score against, else 0.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub(crate) audit_every: Option<u32>,
    /// Model memory budget for this run: bytes (`8000000`) or a share of the board's (`50%`). Only
    /// lowers the board's `model-budget-bytes`; a figure above it is refused.
    #[arg(long, value_parser = parse_budget)]
    pub(crate) budget: Option<Budget>,
    /// Trust bundles signed by this Ed25519 public key (hex, as `jetlink keygen` prints it) instead
    /// of the board's `bundle-key`. Only on a simulated board (`soc = "host"`), whose compiled-in key
    /// is the committed demo key anyway; refused on every Jetson board.
    #[arg(long, value_name = "PUBLIC_KEY_HEX")]
    pub(crate) trust_key: Option<String>,
    /// The simulated board's model memory budget (bytes), replacing its board file's
    /// `model-budget-bytes`: for a workload whose models do not fit host-sim's 12 MB two at a time
    /// (the video demo). Only on a simulated board (`soc = "host"`); refused on every Jetson board,
    /// whose budget is its board file's.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..=(1u64 << 40)))]
    pub(crate) sim_model_budget: Option<u64>,
    /// Scheduling policy: `optimal` (the exact table: run the best set, predict the rest through
    /// links), `optimal-hold` (a core set every tick plus a rotation; between runs each task is
    /// predicted or held from its model's last run, whichever scores better at that age),
    /// `interval-K` (every model every K-th tick, held between), `greedy`, `random`, `standalone`
    /// (no links), `frame-filter` (runs only on frames that changed, holds otherwise), `refresh-K`
    /// (n / K runs a tick, given to the held outputs most likely stale), `oracle-refresh-K` (the same
    /// knowing which are stale from the reference: a benchmark ceiling). K from 1 to 1000.
    #[arg(long, default_value = jetlink::control::DEFAULT_POLICY, value_parser = parse_policy)]
    pub(crate) policy: String,
    /// No progress bar.
    #[arg(long, short)]
    pub(crate) quiet: bool,
    /// Join a fleet (`--broker`, `--fleet`, `--fleet-key`; docs/fleet.md).
    #[command(flatten)]
    pub(crate) join: super::fleet::JoinArgs,
}

fn parse_label_rule(s: &str) -> Result<String, String> {
    match jetlink::control::LabelRule::by_name(s) {
        Some(_) => Ok(s.to_string()),
        None => Err(format!(
            "{s:?}: unknown label rule; rules: auto, uniform, uncertainty, loss-prediction, top-k"
        )),
    }
}

fn parse_policy(s: &str) -> Result<String, String> {
    if jetlink::schedule::cycle::is_policy(s) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?}: unknown policy; {}", jetlink::schedule::cycle::POLICY_HELP))
    }
}

/// `--budget`: bytes, or a percentage of the board's model budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Budget {
    Bytes(u64),
    Percent(f64),
}

fn parse_budget(s: &str) -> Result<Budget, String> {
    let t = s.trim().replace('_', "");
    if let Some(p) = t.strip_suffix('%') {
        let v: f64 = p.trim().parse().map_err(|e| format!("{s:?}: not a percentage: {e}"))?;
        if !(v.is_finite() && v > 0.0 && v <= 100.0) {
            return Err(format!("{s}: a percentage of the board's budget must be in (0, 100]"));
        }
        return Ok(Budget::Percent(v));
    }
    let v: u64 = t
        .parse()
        .map_err(|e| format!("{s:?}: expected bytes (e.g. 8000000) or a percentage (e.g. 50%): {e}"))?;
    if v == 0 {
        return Err(format!("{s}: a budget of 0 bytes runs nothing"));
    }
    Ok(Budget::Bytes(v))
}

/// The model budget in force (bytes) and where it comes from, for `--budget` on `board`.
pub(crate) fn budget_in_force(b: Option<Budget>, board: &jetlink::board::Board) -> Result<(u64, String)> {
    let full = board.model_budget_bytes;
    match b {
        None => Ok((full, format!("board {}'s model-budget-bytes", board.name))),
        Some(Budget::Percent(p)) => {
            let v = ((full as f64) * p / 100.0).floor() as u64;
            // A share too small to write out in full (1e-300) is written as the user wrote it.
            let shown = if p >= 1e-3 { format!("{p}") } else { format!("{p:e}") };
            Ok((v.max(1), format!("--budget {shown}% of board {}'s {full} bytes", board.name)))
        }
        Some(Budget::Bytes(v)) if v > full => bail!(
            "--budget {v} bytes is above board {}'s model budget of {full} bytes ({:.2} MB): --budget only lowers it (rebuild for another board file to raise it)",
            board.name,
            full as f64 / 1e6
        ),
        Some(Budget::Bytes(v)) => Ok((v, format!("--budget {v} bytes (board {} allows {full})", board.name))),
    }
}

/// The board the run uses: the compiled-in one, or on a simulated board the same one trusting the
/// `--trust-key` public key.
pub(crate) fn effective_board(a: &RunArgs) -> Result<&'static jetlink::board::Board> {
    let board = jetlink::board::current();
    if a.trust_key.is_none() {
        jetlink::signing::check_board_key(board)?;
    }
    if a.trust_key.is_none() && a.sim_model_budget.is_none() {
        return Ok(board);
    }
    let mut b = *board;
    if let Some(hex) = &a.trust_key {
        if board.soc != "host" {
            bail!(
                "--trust-key is refused on board {} (soc {}): a Jetson board trusts only the bundle-key it was built with (JETLINK_BUNDLE_KEY at build time, boards/README.md)",
                board.name,
                board.soc
            );
        }
        b.bundle_key =
            jetlink::signing::parse_public_key(hex).map_err(|e| anyhow::anyhow!("--trust-key: {e}"))?;
    }
    if let Some(bytes) = a.sim_model_budget {
        if board.soc != "host" {
            bail!(
                "--sim-model-budget is refused on board {} (soc {}): a Jetson board's budget is its board file's",
                board.name,
                board.soc
            );
        }
        let room = b.total_memory_bytes.saturating_sub(b.reserve_bytes);
        if bytes > room {
            bail!(
                "--sim-model-budget {bytes}: board {} has {} bytes of memory, {} of them reserved; its model budget can be at most {room} bytes",
                board.name,
                b.total_memory_bytes,
                b.reserve_bytes
            );
        }
        b.model_budget_bytes = bytes;
    }
    // Once per process (a sweep builds a few): the loop keeps a `&'static Board`.
    Ok(Box::leak(Box::new(b)))
}

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            manifest: DEMO_MANIFEST.into(),
            bundle: DEMO_BUNDLE.into(),
            engines: Engines::Tract,
            from: None,
            frames: None,
            serial: None,
            state_file: None,
            sysfs_root: None,
            no_adapt: false,
            max_active: None,
            uncertainty_sampling: false,
            labels: "auto".into(),
            label_every: 5,
            source: "stream".into(),
            reference_aligned: false,
            audit_every: None,
            budget: None,
            trust_key: None,
            sim_model_budget: None,
            policy: jetlink::control::DEFAULT_POLICY.into(),
            quiet: false,
            join: Default::default(),
        }
    }
}

/// Stop and reload requests from signals, set by the handlers and read once per tick (an atomic
/// load: no allocation, no system call).
pub(crate) struct Signals {
    pub(crate) stop: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) reload: Arc<std::sync::atomic::AtomicBool>,
}

impl Signals {
    /// SIGTERM and SIGINT ask the loop to stop at the end of the tick; SIGHUP asks for a bundle reload.
    pub(crate) fn register() -> Result<Signals> {
        let s = Signals { stop: super::stop_on_signals()?, reload: Arc::default() };
        signal_hook::flag::register(signal_hook::consts::SIGHUP, s.reload.clone())
            .context("installing the signal handlers")?;
        let _ = STOP.set(s.stop.clone());
        Ok(s)
    }
}

/// The stop flag of the registered handlers, for waits during preparation (a broker that does not
/// answer) that must end on SIGTERM too.
static STOP: std::sync::OnceLock<Arc<std::sync::atomic::AtomicBool>> = std::sync::OnceLock::new();

/// A stop signal arrived (after [`Signals::register`]).
#[cfg_attr(not(feature = "fleet"), allow(dead_code))]
pub(crate) fn stop_requested() -> bool {
    STOP.get().is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
}

/// The root the board's sysfs telemetry is read under: `--sysfs-root`, else `/`. Refused for a
/// board whose telemetry is not read from sysfs, where it would have no effect.
fn sysfs_root<'a>(a: &'a RunArgs, board: &jetlink::board::Board) -> Result<&'a Path> {
    match &a.sysfs_root {
        Some(root) if board.telemetry.source != jetlink::board::TelemetrySource::TegraSysfs => bail!(
            "--sysfs-root {}: board {}'s telemetry is {}, not read from sysfs, so the flag would have no effect",
            root.display(),
            board.name,
            match board.telemetry.source {
                jetlink::board::TelemetrySource::Nvml => "read through NVML",
                _ => "simulated (a trace)",
            }
        ),
        Some(root) => Ok(root),
        None => Ok(Path::new("/")),
    }
}

/// A loop builder for the workload with the engines `--engines` names.
pub(crate) fn loop_builder(
    a: &RunArgs,
    board: &'static jetlink::board::Board,
    manifest: &Manifest,
    bundle: Bundle,
    stream: &Arc<Stream>,
    reference: &Option<Arc<Recording>>,
) -> Result<LoopBuilder> {
    let mut b =
        LoopBuilder::new(board, manifest.clone(), bundle, stream.clone()).reference(reference.clone());
    if let Some(tap) = super::fleet::FLEET_TAP.get() {
        b = b.fleet(tap.clone());
    }
    Ok(match a.engines {
        Engines::Tract => b.engines(Box::new(TractBackend)),
        #[cfg(feature = "sim")]
        Engines::Replay => {
            let r = match (reference, &manifest.reference) {
                (Some(r), _) => r,
                (None, Some(_)) => bail!(
                    "--engines replay replays the reference's outputs for the stream's frames; a --source \
                     other than the stream gives other frames (--reference-aligned says they are the \
                     stream's, in order from --from)"
                ),
                (None, None) => bail!(
                    "--engines replay needs the manifest's reference recording; manifest {:?} names none",
                    manifest.name
                ),
            };
            b.engines(jetlink::sim::replay(r.clone()))
        }
        #[cfg(not(feature = "sim"))]
        Engines::Replay => {
            bail!("--engines replay is simulation: this build was made without the `sim` feature")
        }
        #[cfg(feature = "tensorrt")]
        Engines::Tensorrt => b.engines(Box::new(tensorrt_or_tract(board, manifest)?)),
    })
}

/// `--engines tensorrt`: a model with a plan for this board and TensorRT version runs on TensorRT,
/// every other model (no plan: a tree ensemble cannot be one) on tract; the header says which.
/// Compiled only with the `tensorrt` feature; not run anywhere yet (README).
#[cfg(feature = "tensorrt")]
fn tensorrt_or_tract(
    board: &'static jetlink::board::Board,
    manifest: &Manifest,
) -> Result<jetlink::engine::PerModelBackend> {
    use jetlink::engine::tensorrt::{loaded_version, plan_path};
    let trt = jetlink::engine::TensorRtBackend::for_board(board)?;
    let version = loaded_version()?;
    let mixed = jetlink::engine::PerModelBackend::new(
        Box::new(trt),
        Box::new(TractBackend),
        Box::new(move |_spec: &jetlink::manifest::ModelSpec, onnx: &Path| {
            plan_path(onnx, board.name, version).is_file()
        }),
        "tensorrt+tract-onnx",
    );
    let a = mixed.assignment(manifest);
    println!(
        "engines per model: {}",
        a.iter()
            .map(|(m, e)| if *e == "tensorrt" {
                format!("{m} tensorrt")
            } else {
                format!("{m} tract-onnx (no plan)")
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(mixed)
}

pub(crate) type Loop = control::Controller<Box<dyn FrameSource>, SerialWriter>;

/// The frame source for `--source`: the stream replayed over `from..to`, or a live source (with
/// handles on its pool and failure reason).
pub(crate) fn open_source(
    a: &RunArgs,
    spec: &SourceSpec,
    stream: &Arc<Stream>,
    from: usize,
    to: usize,
) -> Result<(Box<dyn FrameSource>, Option<(jetlink::source::FramePool, jetlink::source::gst::Failure)>)> {
    if *spec == SourceSpec::Stream {
        return Ok((Box::new(ReplaySource::new(stream.clone(), from..to)), None));
    }
    let s = LiveSource::open(spec, stream.shape(), from as u32)?;
    let h = s.handles();
    println!(
        "frames from {} ({})",
        a.source,
        if spec.is_live() { "live: drops when late" } else { "every frame" }
    );
    Ok((Box::new(s), Some(h)))
}

/// Everything `jetlink run` prepares before its first tick: the loop, and what the driver and the
/// summary need beside it. `jetlink bench mlink` prepares its rows here too, so that each row is
/// exactly what `jetlink run` does with the same arguments.
pub(crate) struct Prepared {
    pub(crate) board: &'static jetlink::board::Board,
    pub(crate) manifest: Manifest,
    pub(crate) stream: Arc<Stream>,
    pub(crate) reference: Option<Arc<Recording>>,
    pub(crate) state: jetlink::signing::RollbackState,
    pub(crate) opts: LoopOptions,
    pub(crate) handles: Option<(jetlink::source::FramePool, jetlink::source::gst::Failure)>,
    pub(crate) live: bool,
    pub(crate) serial_spec: String,
    /// Frames the run is planned for.
    pub(crate) planned: u64,
}

impl Prepared {
    pub(crate) fn ctx<'a>(&'a self, a: &'a RunArgs) -> RunCtx<'a> {
        RunCtx {
            a,
            board: self.board,
            manifest: &self.manifest,
            stream: &self.stream,
            reference: &self.reference,
            opts: self.opts.clone(),
            state: &self.state,
        }
    }
}

/// The fleet client a run joined with (`--fleet`), stopped after the run.
#[cfg(feature = "fleet")]
pub(crate) type FleetClient = Option<jetlink::fleet::client::FleetClient>;
#[cfg(not(feature = "fleet"))]
pub(crate) type FleetClient = Option<()>;

/// Open and check everything `a` names and prepare the loop; with `header`, print what runs.
pub(crate) fn prepare_run(a: &RunArgs, header: bool) -> Result<(Loop, Prepared, FleetClient)> {
    let board = effective_board(a)?;
    // Checked before anything is opened or joined (the serial output is emptied when opened).
    let root = sysfs_root(a, board)?;
    let (budget, mut budget_from) = budget_in_force(a.budget, board)?;
    if a.sim_model_budget.is_some() {
        budget_from = budget_from.replace("model-budget-bytes", "model budget (--sim-model-budget)");
    }
    let (mut manifest, stream) = load_workload(&a.manifest)?;
    // Read every ONNX file once: the bundle check hashes these bytes and the engines load them.
    manifest.pin_onnx()?;
    if a.engines != Engines::Replay {
        measure_missing_costs(&mut manifest, &stream, "jetlink run")?;
    }
    // A budget below every model's memory would run nothing and degrade every output: refused,
    // as a budget of 0 is.
    if let Some(m) = manifest.models.iter().min_by_key(|m| m.cost.memory_bytes()) {
        let least = m.cost.memory_bytes();
        if budget < least {
            bail!(
                "model budget {budget} bytes (from {budget_from}) is below the smallest model's memory ({}: {least} bytes): \
                 no model could run",
                m.name
            );
        }
    }
    let state = rollback_state(a, board);
    let bundle = trusted_bundle(a, &manifest, board, &state)?;
    if bundle.split.train_end as usize > stream.train_end {
        eprintln!(
            "note: bundle {} was fitted on frames up to {}, past the stream's training part (frames before {}): \
             what this run measures on those frames is in-sample, not held out",
            a.bundle.display(),
            bundle.split.train_end,
            stream.train_end
        );
    }
    let spec = SourceSpec::parse(&a.source)?;
    let live = spec != SourceSpec::Stream;
    if a.reference_aligned && !live {
        bail!(
            "--reference-aligned applies only with a --source other than `stream` (the stream's frames are the reference's)"
        );
    }
    let fleet_client = super::fleet::join(&a.join, board, &bundle, &state)?;
    // A live source's frames are not the stream's, unless the caller says they are.
    let reference = if live && !a.reference_aligned {
        None
    } else {
        load_reference_for(&manifest, &stream)?.map(Arc::new)
    };
    let stream = Arc::new(stream);
    let from = a.from.map_or(stream.train_end, |f| f as usize);
    let to = a.frames.map_or(stream.len(), |n| from.saturating_add(n as usize).min(stream.len()));
    if from >= to {
        bail!("--from {from}: no frames to run (the stream has {})", stream.len());
    }
    if let Some(n) = a.frames.filter(|&n| !live && (to - from) < n as usize) {
        eprintln!(
            "note: --frames {n} from frame {from}: the stream ends at frame {}, so {} frames run",
            stream.len(),
            to - from
        );
    }
    let builder = loop_builder(a, board, &manifest, bundle, &stream, &reference)?;
    let serial_spec = a.serial.clone().unwrap_or_else(|| board.serial.device.to_string());
    let serial = SerialWriter::open_spec(&serial_spec, board.serial.baud)?;
    let telemetry = jetlink::telemetry::open_for_board(board, root);
    if header {
        println!("jetlink {} on board {} ({})", env!("CARGO_PKG_VERSION"), board.name, board.description);
        println!(
            "workload {:?}: {} models; bundle {} (version {}, {} links); frames {from}..{to} of {} (drift from {}); engines {}; telemetry {}; serial {}",
            manifest.name,
            manifest.models.len(),
            a.bundle.display(),
            builder.bundle().version,
            builder.bundle().links.dims.len(),
            stream.len(),
            stream.drift_start,
            builder.engines_name(),
            telemetry.source_name(),
            serial_spec
        );
        println!(
            "model budget {} from {budget_from}{}",
            mb(budget),
            if a.trust_key.is_some() {
                format!(
                    "; bundles trusted from --trust-key (key id {})",
                    jetlink::bundle::hex(&jetlink::signing::key_id(&board.bundle_key))
                )
            } else {
                String::new()
            }
        );
    }
    let t = Instant::now();
    let (source, handles) = open_source(a, &spec, &stream, from, to)?;
    let opts = LoopOptions {
        drift_start: stream.drift_start as u32,
        adapt: !a.no_adapt,
        max_active: a.max_active.map(|k| k as usize),
        adaptation: jetlink::control::AdaptSettings {
            rule: if a.uncertainty_sampling {
                jetlink::control::LabelRule::Uncertainty
            } else {
                jetlink::control::LabelRule::by_name(&a.labels).unwrap_or_default()
            },
            label_every: a.label_every,
            ..Default::default()
        },
        audit_every: a.audit_every.unwrap_or(if reference.is_none() { 25 } else { 0 }),
        budget_cap: a.budget.map(|_| budget),
        adapt_frames: None,
        policy: a.policy.clone(),
        ..LoopOptions::default()
    };
    let ctl =
        builder.telemetry(telemetry).options(opts.clone()).build(source, TelemetryWriter::new(serial))?;
    if header {
        println!(
            "prepared in {:.0} ms; links run on the {}{}",
            t.elapsed().as_secs_f64() * 1e3,
            ctl.link_backend(),
            ctl.link_backend_note().map(|n| format!(" ({n})")).unwrap_or_default()
        );
    }
    let p = Prepared {
        board,
        manifest,
        stream,
        reference,
        state,
        opts,
        handles,
        live,
        serial_spec,
        planned: (to - from) as u64,
    };
    Ok((ctl, p, fleet_client))
}

pub(crate) fn run(a: &RunArgs) -> Result<()> {
    // Signals first: a SIGHUP or SIGTERM that arrives while the loop is prepared (or right after
    // "prepared in" is printed) is then handled by the loop, not by the default action.
    let signals = Signals::register()?;
    let (ctl, p, fleet_client) = prepare_run(a, true)?;
    let ctx = p.ctx(a);
    let (ctl, d) = drive(&ctx, ctl, &signals, p.planned, p.live, &p.serial_spec)?;
    let handles = p.handles.as_ref();
    if ctl.stats().ticks == 0 {
        if let Some(reason) = handles.and_then(|(_, f)| f.lock().unwrap_or_else(|e| e.into_inner()).clone()) {
            bail!("frame source {}: {reason}", a.source);
        }
    }
    print_summary(&ctx, &ctl, &d, handles.map(|(p, _)| p.stats()));
    #[cfg(feature = "fleet")]
    if let Some(c) = fleet_client {
        let s = c.stop();
        println!(
            "fleet: {} summaries acknowledged, {} waiting, {} dropped, {} resent; {} link updates; global links: {} accepted (version {}; {} as deltas, {} gaps, {} bytes received), {} refused{}",
            s.summaries_acked,
            s.stored,
            s.dropped,
            s.resent,
            s.link_updates,
            s.globals_accepted,
            s.global_version,
            s.deltas_applied,
            s.delta_gaps,
            s.global_bytes_received,
            s.globals_refused,
            s.last_refusal.map(|r| format!(" (last: {r})")).unwrap_or_default()
        );
    }
    #[cfg(not(feature = "fleet"))]
    let _ = fleet_client;
    let w = ctl.writer().stats();
    if w.dropped > 0 {
        eprintln!(
            "error: {} telemetry frames to {} were lost (last error: {}); exit status 3",
            w.dropped,
            p.serial_spec,
            telemetry_error(ctl.writer())
        );
        std::process::exit(EXIT_TELEMETRY_LOST);
    }
    if let Some(reason) = handles.and_then(|(_, f)| f.lock().unwrap_or_else(|e| e.into_inner()).clone()) {
        bail!("frame source {}: {reason}", a.source);
    }
    let s = ctl.stats();
    if s.ticks > 0 && s.frames == 0 {
        bail!(
            "frame source {}: none of its frames could be used ({} frame faults, every one counted above)",
            a.source,
            s.frame_faults
        );
    }
    if s.frame_faults + s.engine_faults > 0 {
        // The loop went on (their outputs were delivered flagged degraded), but data was lost.
        eprintln!(
            "error: frames that could not be read: {}, model runs that failed: {} (counted in the summary \
             above; their outputs were delivered flagged degraded); exit status {EXIT_FRAMES_LOST}",
            s.frame_faults, s.engine_faults
        );
        std::process::exit(EXIT_FRAMES_LOST);
    }
    Ok(())
}

/// What the driver and the summary share.
pub(crate) struct RunCtx<'a> {
    pub(crate) a: &'a RunArgs,
    pub(crate) board: &'static jetlink::board::Board,
    pub(crate) manifest: &'a Manifest,
    pub(crate) stream: &'a Arc<Stream>,
    pub(crate) reference: &'a Option<Arc<Recording>>,
    pub(crate) opts: LoopOptions,
    pub(crate) state: &'a jetlink::signing::RollbackState,
}

/// What the driver counted around the ticks.
#[derive(Default)]
pub(crate) struct DriveStats {
    pub(crate) loop_allocs: u64,
    pub(crate) runtime_allocs: u64,
    pub(crate) reloads_accepted: u64,
    pub(crate) reloads_refused: u64,
    pub(crate) ticks_before: u64,
    pub(crate) stopped_by_signal: bool,
    pub(crate) wall_s: f64,
}

/// Tick until the source ends, `--frames` ticks of a live source, or a stop signal; watchdog
/// pings, telemetry-loss warning, SIGHUP reloads and the progress bar around the ticks.
pub(crate) fn drive(
    ctx: &RunCtx,
    mut ctl: Loop,
    signals: &Signals,
    planned: u64,
    live: bool,
    serial_spec: &str,
) -> Result<(Loop, DriveStats)> {
    let a = ctx.a;
    let mut notify = jetlink::sd_notify::Notifier::from_env();
    if let Some(n) = notify.as_mut() {
        n.ready();
    }
    let mut d = DriveStats::default();
    let mut warned_loss = false;
    let names: Vec<String> = ctl.model_names().map(str::to_string).collect();
    let bar = if a.quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(planned) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed}<{eta} {msg}")
            .unwrap()
            .progress_chars("=> "),
    );
    let start = Instant::now();
    loop {
        let (l0, r0) = (alloc_count::loop_allocations(), alloc_count::runtime_allocations());
        let more = ctl.tick();
        let (l1, r1) = (alloc_count::loop_allocations(), alloc_count::runtime_allocations());
        d.loop_allocs += l1 - l0;
        d.runtime_allocs += r1 - r0;
        if let Some(n) = notify.as_mut() {
            n.tick();
        }
        if !warned_loss && ctl.writer().stats().dropped > 0 {
            warned_loss = true;
            let e = telemetry_error(ctl.writer());
            bar.suspend(|| {
                eprintln!(
                    "warning: telemetry to {serial_spec} is being lost ({e}); the drops are counted in the summary and the exit status will be 3"
                )
            });
        }
        if signals.stop.load(std::sync::atomic::Ordering::Relaxed) {
            d.stopped_by_signal = true;
            break;
        }
        // A live source runs until it ends, or for --frames ticks; one aligned with the reference
        // no further than the stream's frames (past them nothing is aligned).
        let cap = if a.reference_aligned { Some(planned) } else { a.frames };
        // Counted across reloads: a reloaded loop's own count starts again at 0.
        if !more || (live && cap.is_some_and(|f| d.ticks_before + ctl.stats().ticks >= f)) {
            break;
        }
        if signals.reload.swap(false, std::sync::atomic::Ordering::Relaxed) {
            // The reload holds the loop: the deadlines it spans are counted as missed.
            let t = Instant::now();
            ctl = reload(ctx, ctl, &mut d, &bar)?;
            ctl.count_stall(t.elapsed());
        }
        if ctl.stats().ticks % 50 == 0 {
            bar.set_position(ctl.stats().ticks);
            bar.set_message(progress_line(&ctl, &names));
        }
    }
    bar.finish_and_clear();
    ctl.finish();
    if let Some(n) = notify.as_ref() {
        n.stopping();
    }
    d.wall_s = start.elapsed().as_secs_f64();
    Ok((ctl, d))
}

/// SIGHUP: the existing reload path. Refused: the loop keeps its bundle and the refusal goes out as
/// `BundleRejected`. Accepted: a new loop over the same source and serial line replaces this one
/// between two ticks.
pub(crate) fn reload(
    ctx: &RunCtx,
    mut ctl: Loop,
    d: &mut DriveStats,
    bar: &indicatif::ProgressBar,
) -> Result<Loop> {
    let a = ctx.a;
    match ctl.offer_bundle(&a.bundle, ctx.manifest, ctx.board, Some(ctx.state)) {
        Err(e) => {
            d.reloads_refused += 1;
            bar.suspend(|| {
                eprintln!("SIGHUP: bundle {} refused, keeping the running one: {e}", a.bundle.display())
            });
            Ok(ctl)
        }
        Ok(new) => {
            d.reloads_accepted += 1;
            d.ticks_before += ctl.stats().ticks;
            ctl.finish();
            // The fleet's change fused against the old loop's links is not for the new one's.
            #[cfg(feature = "fleet")]
            if let Some(tap) = super::fleet::FLEET_TAP.get() {
                tap.loop_replaced();
            }
            let numbering = ctl.numbering();
            let (source, writer) = ctl.into_source_and_writer();
            let version = new.version;
            let mut ctl = loop_builder(a, ctx.board, ctx.manifest, new, ctx.stream, ctx.reference)?
                .sysfs_root(sysfs_root(a, ctx.board)?)
                .options(ctx.opts.clone())
                .build(source, writer)
                .context("SIGHUP: preparing the loop for the reloaded bundle")?;
            ctl.resume_numbering(numbering);
            let after = d.ticks_before;
            bar.suspend(|| {
                eprintln!(
                    "SIGHUP: bundle {} version {version} loaded after {after} ticks",
                    a.bundle.display()
                )
            });
            Ok(ctl)
        }
    }
}

pub(crate) fn progress_line(ctl: &Loop, names: &[String]) -> String {
    let (s, t) = (ctl.stats(), ctl.last().tick);
    format!(
        "acc {} | saved {} | mem {:.1}/{:.1} MB | {:.1} W | active {}",
        s.accuracy_all().map_or("-".into(), pct),
        pct(s.executions_saved(names.len())),
        ctl.active_memory() as f64 / 1e6,
        ctl.budget() as f64 / 1e6,
        t.power_mw as f64 / 1e3,
        (0..names.len())
            .filter(|&i| t.active.contains(i))
            .map(|i| names[i].as_str())
            .collect::<Vec<_>>()
            .join("+"),
    )
}

/// Megabytes with two decimals; small figures (under 0.1 MB) in bytes, so that small models show.
fn mb(bytes: u64) -> String {
    if bytes < 100_000 { format!("{bytes} bytes") } else { format!("{:.2} MB", bytes as f64 / 1e6) }
}

/// The run's summary on stdout.
pub(crate) fn print_summary(
    ctx: &RunCtx,
    ctl: &Loop,
    d: &DriveStats,
    source: Option<jetlink::source::PoolStats>,
) {
    let (a, board, s) = (ctx.a, ctx.board, ctl.stats());
    let names: Vec<&str> = ctl.model_names().collect();
    let n = names.len();
    if d.stopped_by_signal {
        println!(
            "\nstopped by a signal ({}) at the end of tick {}",
            super::stop_signal_name(),
            d.ticks_before + s.ticks
        );
    }
    if d.reloads_accepted + d.reloads_refused > 0 {
        println!(
            "bundle reloads (SIGHUP): {} accepted, {} refused; the figures below cover the {} ticks since the last accepted one",
            d.reloads_accepted, d.reloads_refused, s.ticks
        );
    }
    println!(
        "\nsummary over {} ticks ({:.1} s, {:.2} ms per tick on average)",
        s.ticks,
        d.wall_s,
        1e3 * d.wall_s / s.ticks.max(1) as f64
    );
    print_accuracy(ctl, &names);
    if let Some(ps) = source {
        println!(
            "  frame source           {} frames dropped (late ticks), {} restarts",
            ps.dropped, ps.restarts
        );
    }
    println!(
        "  executions saved       {} ({} inference and {} adaptation and audit runs counted; at most {} models run per tick)",
        pct(s.executions_saved(n)),
        s.executions,
        s.adapt_executions,
        ctl.max_active()
    );
    println!("  FLOPs saved            {}", pct(s.flops_saved()));
    if let Some(note) = ctl.link_backend_note() {
        println!("  links                  {} ({note})", ctl.link_backend());
    }
    println!(
        "  policy                 {} ({} outputs delivered held from their model's last run)",
        ctl.policy(),
        s.held_outputs
    );
    if let Some(note) = ctl.idle_note() {
        println!("  policy note            {note}");
    }
    if let Some((w, runs)) = ctl.refresh_weights() {
        let per: Vec<String> = names
            .iter()
            .zip(&w)
            .map(|(m, w)| {
                let w: Vec<String> = w.iter().map(|x| format!("{x:+.2}")).collect();
                format!("{m} [{}]", w.join(" "))
            })
            .collect();
        println!(
            "  staleness learnt       from {runs} runs; per task [bias, log age, frame change, 1 - hold score, fragility, last change]: {}",
            per.join(", ")
        );
    }
    let (rule, window) = ctl.label_rule();
    println!(
        "  labels                 {} every {} ticks{}",
        rule.name(),
        ctx.opts.adaptation.label_every,
        if window > 0 { format!(" (window of {} taken from the budget)", mb(window)) } else { String::new() }
    );
    println!(
        "  peak model memory      {} against a budget of {} (lowest budget seen {}; over budget on {} ticks)",
        mb(s.peak_mem),
        mb(ctx.opts.budget_cap.unwrap_or(board.model_budget_bytes)),
        mb(s.min_budget),
        s.budget_violations
    );
    let times: Vec<String> = ctl
        .run_times()
        .filter(|(_, t)| t.runs > 0)
        .map(|(m, t)| {
            let per = |ns: u64| ns as f64 / t.runs as f64 / 1e6;
            format!("{m} {:.2} ms (view {:.2})", per(t.view_ns + t.engine_ns), per(t.view_ns))
        })
        .collect();
    if !times.is_empty() {
        println!("  time per model run     {}", times.join(", "));
    }
    println!(
        "  deadline misses        {} of {} ticks at {} ms (max tick {:.1} ms)",
        s.deadline_misses,
        s.ticks,
        board.period_ms,
        s.max_tick_us as f64 / 1e3
    );
    println!(
        "  schedule changes       {} ({} memory sheds, {} power throttles)",
        s.schedule_changes, s.sheds, s.throttles
    );
    println!(
        "  adaptation tasks run   {} ({} abandoned; room made on {} ticks; DCTA {}: {} decisions, {} outside the table)",
        s.adapt_tasks,
        s.adapt_abandoned,
        s.adapt_room_ticks,
        if ctl.dcta().is_some() { "policy" } else { "absent" },
        ctl.dcta().map_or(0, |d| d.decisions()),
        ctl.dcta().map_or(0, |d| d.fallbacks())
    );
    if let Some(d) = ctl.dcta() {
        let started: u64 = s.adapt_by_unit.iter().sum();
        let units = &d.table().menu.units;
        let by_unit: Vec<String> =
            units.iter().zip(&s.adapt_by_unit).map(|(u, c)| format!("{c} on {u}")).collect();
        println!(
            "  refreshes planned      {started}: {}; {:.1} labelled frames asked per refresh",
            by_unit.join(", "),
            s.adapt_frames_planned as f64 / started.max(1) as f64
        );
    }
    println!(
        "  faults                 {} engine, {} frame, {} telemetry; {} outputs delivered degraded",
        s.engine_faults, s.frame_faults, s.telemetry_faults, s.degraded_outputs
    );
    let w = ctl.writer().stats();
    println!(
        "  serial telemetry       {} frames, {} bytes ({:.1} bytes per tick), {} dropped, one Tick every {} ticks",
        w.frames,
        w.bytes,
        w.bytes as f64 / s.ticks.max(1) as f64,
        w.dropped,
        ctl.writer().decimation()
    );
    println!(
        "  allocations in loop    {} (our code); {} inside the inference runtime ({})",
        d.loop_allocs,
        d.runtime_allocs,
        if a.engines == Engines::Tract { "tract allocates its tensors" } else { "replay" }
    );
}

/// Accuracy kept against the reference (or that there is none), and the on-line estimate from
/// audits when audits ran.
pub(crate) fn print_accuracy(ctl: &Loop, names: &[&str]) {
    let s = ctl.stats();
    if s.accuracy_all().is_some() {
        println!(
            "  accuracy kept          {} overall, {} clean, {} drift (agreement with every model's own output)",
            s.accuracy_all().map_or("-".into(), pct),
            s.accuracy(0).map_or("-".into(), pct),
            s.accuracy(1).map_or("-".into(), pct)
        );
        let f = (s.ref_frames[0] + s.ref_frames[1]).max(1) as f64;
        let per_task: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(j, m)| format!("{m} {}", pct((s.agree[0][j] + s.agree[1][j]) / f)))
            .collect();
        println!("  per task               {}", per_task.join(", "));
        let rules: Vec<String> = names
            .iter()
            .enumerate()
            .filter(|&(j, _)| ctl.scoring(j).declared())
            .map(|(j, m)| format!("{m} {}", ctl.scoring(j).rule.name()))
            .collect();
        if !rules.is_empty() {
            println!(
                "  by tolerance rule      {} overall, {} clean, {} drift (the same outputs, every model by its kind's own rule; declared rules: {})",
                s.accuracy_all_own().map_or("-".into(), pct),
                s.accuracy_own(0).map_or("-".into(), pct),
                s.accuracy_own(1).map_or("-".into(), pct),
                rules.join(", ")
            );
        }
        let seq: Vec<String> = (0..names.len())
            .filter(|&j| ctl.is_sequence(j))
            .map(|j| format!("{} {}", names[j], pct((s.similarity[0][j] + s.similarity[1][j]) / f)))
            .collect();
        if !seq.is_empty() {
            println!(
                "  sequences              {} (character level: 1 - normalised edit distance, or steps alike)",
                seq.join(", ")
            );
        }
    } else {
        println!("  accuracy kept          not measured (no reference recording)");
    }
    if s.ref_missing > 0 {
        println!(
            "  reference gaps         {} frames the reference recording lacks were delivered but not scored",
            s.ref_missing
        );
    }
    if let Some(e) = ctl.accuracy_estimate() {
        println!(
            "  accuracy estimated     {} ± {} (95% interval, from {} audits of predicted tasks)",
            pct(e.accuracy),
            pct(e.half_width),
            e.audits
        );
        let per_task: Vec<String> = names
            .iter()
            .enumerate()
            .filter_map(|(j, m)| {
                let (k, p) = ctl.audits().task(j);
                (k > 0).then(|| format!("{m} {} ({k})", pct(p)))
            })
            .collect();
        println!("  audited when predicted {}", per_task.join(", "));
    }
    // Audits that were due but found no room: said, with the sizes that decide it.
    if s.audits_no_room > 0 {
        let largest = ctl.model_memory().iter().copied().max().unwrap_or(0);
        println!(
            "  audits without room    {} of {} due could not run: the audited model did not fit beside the running ones within the budget (largest model {:.2} MB, lowest budget {:.2} MB){}",
            s.audits_no_room,
            s.audits_due,
            largest as f64 / 1e6,
            s.min_budget as f64 / 1e6,
            if s.audits_no_room == s.audits_due { "; no accuracy estimate" } else { "" }
        );
    }
}

/// Exit status of a run that completed but lost telemetry frames.
pub(crate) const EXIT_TELEMETRY_LOST: i32 = 3;
/// Exit status of a run that completed but could not read some frames or run some models.
pub(crate) const EXIT_FRAMES_LOST: i32 = 4;

pub(crate) fn rollback_state(a: &RunArgs, board: &jetlink::board::Board) -> jetlink::signing::RollbackState {
    match &a.state_file {
        Some(p) => jetlink::signing::RollbackState::new(p.clone()),
        None => jetlink::signing::RollbackState::for_board(board),
    }
}

/// The firmware's bundle load: signed by the board's `bundle-key`, built for the manifest and not
/// older than the highest version accepted (rollback protection), or refused before anything in it
/// is decoded, with a `BundleRejected` event on the serial line.
pub(crate) fn trusted_bundle(
    a: &RunArgs,
    manifest: &Manifest,
    board: &'static jetlink::board::Board,
    state: &jetlink::signing::RollbackState,
) -> Result<Bundle> {
    jetlink::signing::load_trusted_versioned(&a.bundle, manifest, board, state).or_else(|e| {
        let spec = a.serial.clone().unwrap_or_else(|| board.serial.device.to_string());
        if let Ok(serial) = SerialWriter::open_spec(&spec, board.serial.baud) {
            let mut w = TelemetryWriter::new(serial);
            jetlink::signing::report_rejection(&mut w, 0, &e);
            let _ = w.flush();
        }
        let code = e.reason_code();
        Err(e).with_context(|| format!("bundle {} refused (reason code {code})", a.bundle.display()))
    })
}

/// The last telemetry write error, with the OS's words for it where there was one.
fn telemetry_error(w: &jetlink::wire::TelemetryWriter<SerialWriter>) -> String {
    use jetlink::wire::WireError;
    match w.stats().last_error {
        Some(e @ WireError::Write(kind)) => match w.get_ref().os_error_of(kind) {
            Some(os) => format!("{e}: {os}"),
            None => e.to_string(),
        },
        Some(e) => e.to_string(),
        None => "none recorded".to_string(),
    }
}
