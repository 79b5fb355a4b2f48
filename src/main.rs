//! The `jetlink` command line: the main job (the control loop; on `host-sim` over the bundled demo)
//! and the host tools (record, build, bench, monitor).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use jetlink::alloc_count::{self, CountingAllocator};
use jetlink::bundle::Bundle;
use jetlink::control::{self, LoopOptions, Parts};
use jetlink::engine::{self, Backend, FrameCursor, ReplayBackend, TractBackend};
use jetlink::manifest::Manifest;
use jetlink::record::{self, percentile};
use jetlink::recording::Recording;
use jetlink::serial::SerialWriter;
use jetlink::source::{FrameSource, LiveSource, ReplaySource, SourceSpec};
use jetlink::stream::Stream;
use jetlink::view::Shape;
use jetlink::wire::TelemetryWriter;

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

const DEMO_MANIFEST: &str = "demo/manifest.toml";
const DEMO_BUNDLE: &str = "demo/demo.bundle";

#[derive(Parser)]
#[command(
    name = "jetlink",
    version,
    about = "Run several black-box models under a memory budget, linking the ones that do not run"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// The main job: the control loop on this binary's board (default command).
    Run(RunArgs),
    /// Run every model over part of a stream and print latency, cost and output statistics.
    Models(ModelsArgs),
    /// Run every model over a stream and write the paired outputs (a recording).
    Record(RecordArgs),
    /// Train every link and ensemble from a recording and write the bundle and its report.
    Build(BuildArgs),
    /// Benchmarks: `mlink` (schedulers), `dcta` (task allocation), `links` (CPU link inference), `loop`.
    Bench(BenchArgs),
    /// Decode a telemetry stream (a tty or a file) into a live table, optionally CSV.
    Monitor(MonitorArgs),
    /// Show the board compiled into this binary, and every board known.
    Boards,
    /// Make an Ed25519 key pair for signing bundles: writes the private key (mode 0600) and prints
    /// the public key, for a board file's `bundle-key`.
    Keygen(KeygenArgs),
    /// Sign a bundle with a private key (in place, or to --out); the board loads only bundles
    /// signed by its `bundle-key`.
    Sign(SignArgs),
    /// Fault-injection soak of the control loop on the simulated board (replay engines, looped frames).
    Soak(SoakArgs),
}

#[derive(clap::Args)]
struct KeygenArgs {
    /// Private key file to create (PKCS#8 PEM); never overwritten.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct SignArgs {
    /// Private key file (from `jetlink keygen`).
    #[arg(long)]
    key: PathBuf,
    /// The bundle to sign.
    bundle: PathBuf,
    /// Write the signed bundle here instead of replacing the input.
    #[arg(long, short)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SoakArgs {
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    ticks: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Ticks before allocations are counted (default: a tenth of --ticks, at most 2000).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=1_000_000_000))]
    warmup: Option<u64>,
    #[arg(long, default_value = DEMO_MANIFEST)]
    manifest: PathBuf,
    #[arg(long, default_value = DEMO_BUNDLE)]
    bundle: PathBuf,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Engines {
    /// The real models, run by tract-onnx.
    Tract,
    /// The reference outputs replayed (fast; no inference runtime).
    Replay,
    /// TensorRT plans built on the board (`--features tensorrt`; see docs/tensorrt.md).
    #[cfg(feature = "tensorrt")]
    Tensorrt,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    #[arg(long, default_value = DEMO_MANIFEST)]
    manifest: PathBuf,
    #[arg(long, default_value = DEMO_BUNDLE)]
    bundle: PathBuf,
    #[arg(long, value_enum, default_value = "tract")]
    engines: Engines,
    /// First frame (default: the end of the training part).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=u32::MAX as u64))]
    from: Option<u64>,
    /// Number of frames (default: to the end of the stream).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=u32::MAX as u64))]
    frames: Option<u64>,
    /// Telemetry output: a tty or pty device, a FIFO, or `file:PATH` for a file (created, or replaced
    /// only if it already holds jetlink telemetry). Default: the board's serial device.
    #[arg(long)]
    serial: Option<String>,
    /// Rollback-protection state file (default: the board's `state-file`).
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Root under which the board's sysfs paths are read (a fake tree in tests).
    #[arg(long, default_value = "/")]
    sysfs_root: PathBuf,
    /// Do not adapt links.
    #[arg(long)]
    no_adapt: bool,
    /// At most this many models run per tick (default: the board's `max-active-models`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    max_active: Option<u32>,
    /// Adaptation takes only frames on which the target is at least as uncertain as its running
    /// mean, instead of every frame in turn.
    #[arg(long)]
    uncertainty_sampling: bool,
    /// Label one frame for adaptation every this many ticks while targets are allocated (10 = 10%).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    label_every: u32,
    /// Where frames come from: `stream` (the manifest's stream, the default), `images:DIR` (PNG,
    /// JPEG, PGM in name order), `gst:PIPELINE` (a live GStreamer pipeline, e.g. a camera), or a
    /// video file (decoded with GStreamer). Frames are numbered from `--from`.
    #[arg(long, default_value = "stream")]
    source: String,
    /// With `--source` other than `stream`: the source's frames are the stream's frames from
    /// `--from` on (a test, or a recording of the stream), so accuracy is scored against the
    /// manifest's reference.
    #[arg(long)]
    reference_aligned: bool,
    /// Audit one predicted task every N ticks to estimate accuracy on-line (0: off). Default: 25
    /// when there is no reference to score against, else 0.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    audit_every: Option<u32>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
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
            sysfs_root: "/".into(),
            no_adapt: false,
            max_active: None,
            uncertainty_sampling: false,
            label_every: 10,
            source: "stream".into(),
            reference_aligned: false,
            audit_every: None,
            quiet: false,
        }
    }
}

#[derive(clap::Args)]
struct ModelsArgs {
    #[arg(long, default_value = DEMO_MANIFEST)]
    manifest: PathBuf,
    /// Frames to run, spread evenly over the whole stream.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    frames: u64,
}

#[derive(clap::Args)]
struct RecordArgs {
    #[arg(long, default_value = DEMO_MANIFEST)]
    manifest: PathBuf,
    /// Output file (`.gz` compresses).
    #[arg(long, short)]
    out: PathBuf,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=u32::MAX as u64))]
    from: u64,
    /// One past the last frame (default: the end of the training part).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=u32::MAX as u64))]
    to: Option<u64>,
}

#[derive(clap::Args)]
struct BuildArgs {
    #[arg(long, default_value = DEMO_MANIFEST)]
    manifest: PathBuf,
    /// Recording to train on (default: the manifest's reference).
    #[arg(long)]
    recording: Option<PathBuf>,
    #[arg(long, short, default_value = DEMO_BUNDLE)]
    out: PathBuf,
    /// Training epochs per link.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    epochs: Option<u32>,
    /// Hidden width floor (h = max(2·|Y_j|, floor)); 0 for the paper's 2·|Y_j|.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=4096))]
    hidden_floor: Option<u32>,
    /// The bundle's release number, inside the signed part: a board refuses a bundle older than the
    /// highest it has accepted (rollback protection). Raise it for every release.
    #[arg(long, default_value_t = 1)]
    bundle_version: u64,
    /// Link training recipe: `measured` (standardised regression targets, no dropout on them) or
    /// `paper` (the MLink paper's: dropout 0.5 everywhere, raw targets).
    #[arg(long, default_value = "measured", value_parser = ["measured", "paper"])]
    recipe: String,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1024))]
    threads: u64,
    /// Sign the bundle with this private key (`jetlink keygen`; the demo's is demo/keys/demo-insecure.key).
    #[arg(long)]
    key: Option<PathBuf>,
}

#[derive(clap::Args)]
struct BenchArgs {
    #[arg(value_enum)]
    what: BenchWhat,
    #[arg(long, default_value = DEMO_MANIFEST)]
    manifest: PathBuf,
    #[arg(long, default_value = DEMO_BUNDLE)]
    bundle: PathBuf,
    /// Where the JSON (and image) go.
    #[arg(long, default_value = "out/bench")]
    out_dir: PathBuf,
    /// Board for `dcta` (default: this binary's).
    #[arg(long)]
    board: Option<String>,
    /// Ticks for `loop`.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    ticks: u64,
    /// `dcta`: synthetic task costs spread over this many-fold range (a deployment of comparable
    /// models, where the knapsack is combinatorial) instead of the manifest's.
    #[arg(long, value_parser = finite_in(1.0, 1e6))]
    spread: Option<f64>,
    /// `dcta`: draw long-tailed drift (a few tasks drift a lot) instead of uniform.
    #[arg(long)]
    long_tail: bool,
    /// `dcta`: load ρ, the work of all tasks over the board's adaptation capacity.
    #[arg(long, default_value_t = 1.5, value_parser = finite_in(0.01, 1000.0))]
    stress: f64,
    /// `mlink`: at most this many models run per frame (an execution budget beside the memory one).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    max_active: Option<u64>,
    /// `mlink`: frames per on-line adaptation period.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    adapt_period: u64,
    /// `mlink`: skip the on-line adaptation variants.
    #[arg(long)]
    no_adapt: bool,
    /// `mlink`: fine-tuning steps per target at the end of each adaptation period.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    adapt_steps: u32,
    /// `mlink`: fine-tuning learning rate (RMSprop).
    #[arg(long, default_value_t = 1e-3, value_parser = finite_in_f32(0.0, 10.0))]
    adapt_lr: f32,
    /// `mlink`: labelled rows kept for fine-tuning (the most recent).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    adapt_buffer: u64,
    /// `mlink`: share of each scheduling period profiled (every model that fits runs) to refresh
    /// the scores; adapted runs profile on their labelled frames instead.
    #[arg(long, default_value_t = 0.01, value_parser = finite_in_f32(0.0, 1.0))]
    profile_share: f32,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum BenchWhat {
    Mlink,
    Dcta,
    Links,
    Loop,
}

#[derive(clap::Args)]
struct MonitorArgs {
    /// A tty (e.g. /dev/ttyUSB0) or a file written by `jetlink run --serial`.
    path: PathBuf,
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Keep reading a file as it grows.
    #[arg(long)]
    follow: bool,
    /// Stop after this many seconds without a byte (0 to 1,000,000).
    #[arg(long, value_parser = finite_in(0.0, 1e6))]
    idle_exit: Option<f64>,
    #[arg(long, default_value_t = 115_200, value_parser = clap::value_parser!(u32).range(50..=12_000_000))]
    baud: u32,
}

fn main() -> Result<()> {
    // Die quietly on a closed pipe (`jetlink boards | head`), as command-line tools do, instead of
    // panicking in println!.
    // SAFETY: resetting a signal disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Cmd::Run(RunArgs::default())) {
        Cmd::Run(a) => run(&a),
        Cmd::Models(a) => models(&a),
        Cmd::Record(a) => record_cmd(&a),
        Cmd::Build(a) => build(&a),
        Cmd::Bench(a) => bench(&a),
        Cmd::Monitor(a) => monitor(&a),
        Cmd::Boards => boards(),
        Cmd::Keygen(a) => keygen(&a),
        Cmd::Sign(a) => sign(&a),
        Cmd::Soak(a) => soak(&a),
    }
}

/// A clap value parser for a finite `f64` in `lo..=hi` (NaN, infinities and values outside refused
/// at parse time, with the range in the message).
fn finite_in(lo: f64, hi: f64) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let v: f64 = s.trim().parse().map_err(|e| format!("{s:?} is not a number: {e}"))?;
        if !v.is_finite() || v < lo || v > hi {
            return Err(format!("{s} is not a finite number in {lo}..={hi}"));
        }
        Ok(v)
    }
}

fn finite_in_f32(lo: f64, hi: f64) -> impl Fn(&str) -> Result<f32, String> + Clone + Send + Sync + 'static {
    let p = finite_in(lo, hi);
    move |s: &str| p(s).map(|v| v as f32)
}

fn load_workload(path: &Path) -> Result<(Manifest, Stream)> {
    let manifest = Manifest::load(path)?;
    let stream = Stream::load(&manifest.path_of(&manifest.stream))
        .with_context(|| format!("stream of manifest {}", path.display()))?;
    Ok((manifest, stream))
}

fn load_reference(manifest: &Manifest) -> Result<Option<Recording>> {
    manifest.reference.as_ref().map(|r| Recording::load(&manifest.path_of(r))).transpose()
}

fn frame_shape(s: &Stream) -> Shape {
    Shape { h: s.height, w: s.width, c: s.channels }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// Stop and reload requests from signals, set by the handlers and read once per tick (an atomic
/// load: no allocation, no system call).
struct Signals {
    stop: Arc<std::sync::atomic::AtomicBool>,
    reload: Arc<std::sync::atomic::AtomicBool>,
}

impl Signals {
    /// SIGTERM and SIGINT ask the loop to stop at the end of the tick; SIGHUP asks for a bundle reload.
    fn register() -> Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let s = Signals { stop: Arc::default(), reload: Arc::default() };
        for sig in [SIGTERM, SIGINT] {
            signal_hook::flag::register(sig, s.stop.clone()).context("installing the signal handlers")?;
        }
        signal_hook::flag::register(SIGHUP, s.reload.clone()).context("installing the signal handlers")?;
        Ok(s)
    }
}

/// The engines backend for `--engines`.
fn make_backend(
    a: &RunArgs,
    reference: &Option<Arc<Recording>>,
    #[allow(unused_variables)] board: &'static jetlink::board::Board,
) -> Result<(Box<dyn Backend>, Option<FrameCursor>)> {
    Ok(match a.engines {
        Engines::Tract => (Box::new(TractBackend), None),
        Engines::Replay => {
            let r = reference.clone().context("--engines replay needs the manifest's reference recording")?;
            let cursor = FrameCursor::default();
            (Box::new(ReplayBackend { recording: r, cursor: cursor.clone() }), Some(cursor))
        }
        #[cfg(feature = "tensorrt")]
        Engines::Tensorrt => (Box::new(jetlink::engine::TensorRtBackend::for_board(board)?), None),
    })
}

type Loop = control::Controller<Box<dyn FrameSource>, SerialWriter>;

/// The frame source for `--source`: the stream replayed over `from..to`, or a live source (with
/// handles on its pool and failure reason).
fn open_source(
    a: &RunArgs,
    spec: &SourceSpec,
    stream: &Arc<Stream>,
    from: usize,
    to: usize,
) -> Result<(Box<dyn FrameSource>, Option<(jetlink::source::FramePool, jetlink::source::gst::Failure)>)> {
    if *spec == SourceSpec::Stream {
        return Ok((Box::new(ReplaySource::new(stream.clone(), from..to)), None));
    }
    let s = LiveSource::open(spec, frame_shape(stream), from as u32)?;
    let h = s.handles();
    println!("frames from {} ({})", a.source, if spec.is_live() { "live: drops when late" } else { "every frame" });
    Ok((Box::new(s), Some(h)))
}

fn run(a: &RunArgs) -> Result<()> {
    let board = jetlink::board::current();
    let (mut manifest, stream) = load_workload(&a.manifest)?;
    // Read every ONNX file once: the bundle check hashes these bytes and the engines load them.
    manifest.pin_onnx()?;
    let state = rollback_state(a, board);
    let bundle = trusted_bundle(a, &manifest, board, &state)?;
    let spec = SourceSpec::parse(&a.source)?;
    let live = spec != SourceSpec::Stream;
    // A live source's frames are not the stream's, unless the caller says they are.
    let reference = if live && !a.reference_aligned { None } else { load_reference(&manifest)?.map(Arc::new) };
    let stream = Arc::new(stream);
    let from = a.from.map_or(stream.train_end, |f| f as usize);
    let to = a.frames.map_or(stream.len(), |n| from.saturating_add(n as usize).min(stream.len()));
    if from >= to {
        bail!("--from {from}: no frames to run (the stream has {})", stream.len());
    }
    let (backend, cursor) = make_backend(a, &reference, board)?;
    let serial_spec = a.serial.clone().unwrap_or_else(|| board.serial.device.to_string());
    let serial = SerialWriter::open_spec(&serial_spec, board.serial.baud)?;
    let signals = Signals::register()?;
    let telemetry = jetlink::telemetry::open_for_board(board, &a.sysfs_root);
    println!("jetlink {} on board {} ({})", env!("CARGO_PKG_VERSION"), board.name, board.description);
    println!(
        "workload {:?}: {} models; bundle {} (version {}, {} links); frames {from}..{to} of {} (drift from {}); engines {}; telemetry {}; serial {}",
        manifest.name,
        manifest.models.len(),
        a.bundle.display(),
        bundle.version,
        bundle.links.dims.len(),
        stream.len(),
        stream.drift_start,
        backend.name(),
        telemetry.source_name(),
        serial_spec
    );
    let t = Instant::now();
    let (source, handles) = open_source(a, &spec, &stream, from, to)?;
    let opts = LoopOptions {
        drift_start: stream.drift_start as u32,
        adapt: !a.no_adapt,
        max_active: a.max_active.map(|k| k as usize),
        adaptation: jetlink::control::AdaptSettings {
            uncertainty_sampling: a.uncertainty_sampling,
            label_every: a.label_every,
            ..Default::default()
        },
        audit_every: a.audit_every.unwrap_or(if reference.is_none() { 25 } else { 0 }),
    };
    let ctl = control::prepare(Parts {
        board,
        frame_shape: frame_shape(&stream),
        source,
        manifest: manifest.clone(),
        bundle,
        backend,
        cursor,
        telemetry,
        writer: TelemetryWriter::new(serial),
        reference: reference.clone(),
        opts: opts.clone(),
    })?;
    println!("prepared in {:.0} ms; links run on the {}", t.elapsed().as_secs_f64() * 1e3, ctl.link_backend());
    let ctx = RunCtx { a, board, manifest: &manifest, stream: &stream, reference: &reference, opts, state: &state };
    let (ctl, d) = drive(&ctx, ctl, &signals, (to - from) as u64, live, &serial_spec)?;
    if ctl.stats().ticks == 0 {
        if let Some(reason) = handles.as_ref().and_then(|(_, f)| f.lock().unwrap_or_else(|e| e.into_inner()).clone()) {
            bail!("frame source {}: {reason}", a.source);
        }
    }
    print_summary(&ctx, &ctl, &d, handles.as_ref().map(|(p, _)| p.stats()));
    let w = ctl.writer().stats();
    if w.dropped > 0 {
        eprintln!(
            "error: {} telemetry frames to {serial_spec} were lost (last error {:?}); exit status 3",
            w.dropped, w.last_error
        );
        std::process::exit(EXIT_TELEMETRY_LOST);
    }
    if let Some(reason) = handles.and_then(|(_, f)| f.lock().unwrap_or_else(|e| e.into_inner()).clone()) {
        bail!("frame source {}: {reason}", a.source);
    }
    Ok(())
}

/// What the driver and the summary share.
struct RunCtx<'a> {
    a: &'a RunArgs,
    board: &'static jetlink::board::Board,
    manifest: &'a Manifest,
    stream: &'a Arc<Stream>,
    reference: &'a Option<Arc<Recording>>,
    opts: LoopOptions,
    state: &'a jetlink::signing::RollbackState,
}

/// What the driver counted around the ticks.
#[derive(Default)]
struct DriveStats {
    loop_allocs: u64,
    runtime_allocs: u64,
    reloads_accepted: u64,
    reloads_refused: u64,
    ticks_before: u64,
    stopped_by_signal: bool,
    wall_s: f64,
}

/// Tick until the source ends, `--frames` ticks of a live source, or a stop signal; watchdog
/// pings, telemetry-loss warning, SIGHUP reloads and the progress bar around the ticks.
fn drive(ctx: &RunCtx, mut ctl: Loop, signals: &Signals, planned: u64, live: bool, serial_spec: &str) -> Result<(Loop, DriveStats)> {
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
            let e = ctl.writer().stats().last_error;
            bar.suspend(|| {
                eprintln!(
                    "warning: telemetry to {serial_spec} is being lost ({e:?}); the drops are counted in the summary and the exit status will be 3"
                )
            });
        }
        if signals.stop.load(std::sync::atomic::Ordering::Relaxed) {
            d.stopped_by_signal = true;
            break;
        }
        // A live source runs until it ends, or for --frames ticks.
        if !more || (live && a.frames.is_some_and(|f| ctl.stats().ticks >= f)) {
            break;
        }
        if signals.reload.swap(false, std::sync::atomic::Ordering::Relaxed) {
            ctl = reload(ctx, ctl, &mut d, &bar)?;
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
fn reload(ctx: &RunCtx, mut ctl: Loop, d: &mut DriveStats, bar: &indicatif::ProgressBar) -> Result<Loop> {
    let a = ctx.a;
    match jetlink::signing::reload_versioned(&mut ctl, &a.bundle, ctx.manifest, ctx.board, ctx.state) {
        Err(e) => {
            d.reloads_refused += 1;
            bar.suspend(|| eprintln!("SIGHUP: bundle {} refused, keeping the running one: {e}", a.bundle.display()));
            Ok(ctl)
        }
        Ok(new) => {
            d.reloads_accepted += 1;
            d.ticks_before += ctl.stats().ticks;
            ctl.finish();
            let (source, writer) = ctl.into_source_and_writer();
            let (backend, cursor) = make_backend(a, ctx.reference, ctx.board)?;
            let version = new.version;
            let ctl = control::prepare(Parts {
                board: ctx.board,
                frame_shape: frame_shape(ctx.stream),
                source,
                manifest: ctx.manifest.clone(),
                bundle: new,
                backend,
                cursor,
                telemetry: jetlink::telemetry::open_for_board(ctx.board, &a.sysfs_root),
                writer,
                reference: ctx.reference.clone(),
                opts: ctx.opts.clone(),
            })
            .context("SIGHUP: preparing the loop for the reloaded bundle")?;
            let after = d.ticks_before;
            bar.suspend(|| eprintln!("SIGHUP: bundle {} version {version} loaded after {after} ticks", a.bundle.display()));
            Ok(ctl)
        }
    }
}

fn progress_line(ctl: &Loop, names: &[String]) -> String {
    let (s, t) = (ctl.stats(), ctl.last().tick);
    format!(
        "acc {} | saved {} | mem {:.1}/{:.1} MB | {:.1} W | active {}",
        s.accuracy_all().map_or("-".into(), pct),
        pct(s.executions_saved(names.len())),
        ctl.active_memory() as f64 / 1e6,
        ctl.budget() as f64 / 1e6,
        t.power_mw as f64 / 1e3,
        (0..names.len()).filter(|&i| t.active >> i & 1 == 1).map(|i| names[i].as_str()).collect::<Vec<_>>().join("+"),
    )
}

/// The run's summary on stdout.
fn print_summary(ctx: &RunCtx, ctl: &Loop, d: &DriveStats, source: Option<jetlink::source::PoolStats>) {
    let (a, board, s) = (ctx.a, ctx.board, ctl.stats());
    let names: Vec<&str> = ctl.model_names().collect();
    let n = names.len();
    if d.stopped_by_signal {
        println!("\nstopped by a signal at the end of tick {} (SIGTERM, SIGINT)", d.ticks_before + s.ticks);
    }
    if d.reloads_accepted + d.reloads_refused > 0 {
        println!(
            "bundle reloads (SIGHUP): {} accepted, {} refused; the figures below cover the {} ticks since the last accepted one",
            d.reloads_accepted, d.reloads_refused, s.ticks
        );
    }
    println!("\nsummary over {} ticks ({:.1} s, {:.2} ms per tick on average)", s.ticks, d.wall_s, 1e3 * d.wall_s / s.ticks.max(1) as f64);
    print_accuracy(ctl, &names);
    if let Some(ps) = source {
        println!("  frame source           {} frames dropped (late ticks), {} restarts", ps.dropped, ps.restarts);
    }
    println!(
        "  executions saved       {} ({} inference and {} adaptation and audit runs counted; at most {} models run per tick)",
        pct(s.executions_saved(n)),
        s.executions,
        s.adapt_executions,
        ctl.max_active()
    );
    println!("  FLOPs saved            {}", pct(s.flops_saved()));
    println!(
        "  peak model memory      {:.2} MB against a budget of {:.2} MB (lowest budget seen {:.2} MB; over budget on {} ticks)",
        s.peak_mem as f64 / 1e6,
        board.model_budget_bytes as f64 / 1e6,
        s.min_budget as f64 / 1e6,
        s.budget_violations
    );
    println!(
        "  deadline misses        {} of {} ticks at {} ms (max tick {:.1} ms)",
        s.deadline_misses,
        s.ticks,
        board.period_ms,
        s.max_tick_us as f64 / 1e3
    );
    println!("  schedule changes       {} ({} memory sheds, {} power throttles)", s.schedule_changes, s.sheds, s.throttles);
    println!(
        "  adaptation tasks run   {} ({} abandoned; room made on {} ticks; DCTA {}: {} decisions, {} greedy fallbacks)",
        s.adapt_tasks,
        s.adapt_abandoned,
        s.adapt_room_ticks,
        if ctl.dcta().is_some() { "table" } else { "absent" },
        ctl.dcta().map_or(0, |d| d.decisions()),
        ctl.dcta().map_or(0, |d| d.fallbacks())
    );
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
fn print_accuracy(ctl: &Loop, names: &[&str]) {
    let s = ctl.stats();
    if s.accuracy_all().is_some() {
        println!(
            "  accuracy kept          {} overall, {} clean, {} drift (agreement with every model's own output)",
            s.accuracy_all().map_or("-".into(), pct),
            s.accuracy(0).map_or("-".into(), pct),
            s.accuracy(1).map_or("-".into(), pct)
        );
        let f = (s.ref_frames[0] + s.ref_frames[1]).max(1) as f64;
        let per_task: Vec<String> =
            names.iter().enumerate().map(|(j, m)| format!("{m} {}", pct((s.agree[0][j] + s.agree[1][j]) / f))).collect();
        println!("  per task               {}", per_task.join(", "));
    } else {
        println!("  accuracy kept          not measured (no reference recording)");
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
}

/// Exit status of a run that completed but lost telemetry frames.
const EXIT_TELEMETRY_LOST: i32 = 3;

fn rollback_state(a: &RunArgs, board: &jetlink::board::Board) -> jetlink::signing::RollbackState {
    match &a.state_file {
        Some(p) => jetlink::signing::RollbackState::new(p.clone()),
        None => jetlink::signing::RollbackState::for_board(board),
    }
}

fn models(a: &ModelsArgs) -> Result<()> {
    let board = jetlink::board::current();
    let (manifest, stream) = load_workload(&a.manifest)?;
    let t = Instant::now();
    let mut models = engine::prepare_all(&manifest, frame_shape(&stream), &TractBackend)?;
    println!("prepared {} engines (tract-onnx) in {:.0} ms", models.len(), t.elapsed().as_secs_f64() * 1e3);
    let reference = load_reference(&manifest)?;
    if stream.is_empty() {
        bail!("{}: the stream has no frames", a.manifest.display());
    }
    let n = (a.frames as usize).clamp(1, stream.len());
    let step = stream.len() / n;
    let mut stats: Vec<record::ModelStats> = Vec::new();
    let mut max_diff = vec![0.0f32; models.len()];
    for k in 0..n {
        let f = k * step;
        let (rec, st) = record::record(&mut models, &stream, f..f + 1, false)?;
        if stats.is_empty() {
            stats = st;
        } else {
            for (a, b) in stats.iter_mut().zip(st) {
                a.merge(&b);
            }
        }
        if let Some(r) = &reference {
            let row = r.row_of_frame(f as u32).context("reference lacks a frame")?;
            if r.models.len() != models.len() {
                bail!(
                    "the manifest's reference recording has {} models, the manifest {} ({}): record it again",
                    r.models.len(),
                    models.len(),
                    a.manifest.display()
                );
            }
            for (m, d) in max_diff.iter_mut().enumerate() {
                for (x, y) in rec.output(0, m).iter().zip(r.output(row, m)) {
                    *d = d.max((x - y).abs());
                }
            }
        }
    }
    println!("ran every model on {n} frames spread over the stream (every {step}th frame)\n");
    println!(
        "{:<10} {:<10} {:>4} {:>10} {:>10} {:>10} {:>12} {:>10} {:>12} {:>9} {:>9} {:>9} {:>10}",
        "model",
        "kind",
        "size",
        "p50 us",
        "p99 us",
        "ort us",
        "weights B",
        "activ. B",
        "FLOPs",
        "out min",
        "out mean",
        "out max",
        "max |ref|"
    );
    for ((m, st), d) in models.iter().zip(&stats).zip(&max_diff) {
        let c = &m.spec.cost;
        println!(
            "{:<10} {:<10} {:>4} {:>10.1} {:>10.1} {:>10.1} {:>12} {:>10} {:>12} {:>9.3} {:>9.3} {:>9.3} {:>10}",
            m.spec.name,
            m.spec.kind.name(),
            m.spec.size,
            st.latency_percentile(50.0),
            st.latency_percentile(99.0),
            c.latency_us,
            c.weight_bytes,
            c.activation_bytes,
            c.flops,
            st.min,
            st.mean(),
            st.max,
            if reference.is_some() { format!("{d:.1e}") } else { "-".into() },
        );
    }
    let total_lat: f64 = stats.iter().map(|s| percentile(&s.latencies_us, 50.0)).sum();
    let total_mem: u64 = models.iter().map(|m| m.engine.memory_bytes()).sum();
    let total_flops: u64 = manifest.models.iter().map(|m| m.cost.flops).sum();
    println!(
        "\nall models per frame: {:.0} us (tract, p50 sum), {:.1} MFLOPs, {:.2} MB engine memory; board {} model budget {:.2} MB",
        total_lat,
        total_flops as f64 / 1e6,
        total_mem as f64 / 1e6,
        board.name,
        board.model_budget_bytes as f64 / 1e6
    );
    Ok(())
}

fn record_cmd(a: &RecordArgs) -> Result<()> {
    let (manifest, stream) = load_workload(&a.manifest)?;
    let to = a.to.map_or(stream.train_end, |t| t as usize);
    let from = a.from as usize;
    if from >= to || to > stream.len() {
        bail!("--from {from} --to {to}: need from < to <= {} (frames in the stream)", stream.len());
    }
    let mut models = engine::prepare_all(&manifest, frame_shape(&stream), &TractBackend)?;
    let (rec, _) = record::record(&mut models, &stream, from..to, true)?;
    rec.save(&a.out)?;
    println!(
        "recorded {} frames x {} models ({} values per frame) to {}",
        rec.len(),
        rec.models.len(),
        rec.stride(),
        a.out.display()
    );
    Ok(())
}

fn build(a: &BuildArgs) -> Result<()> {
    let board = jetlink::board::current();
    let (manifest, stream) = load_workload(&a.manifest)?;
    let rec_path = match &a.recording {
        Some(p) => p.clone(),
        None => manifest.path_of(
            manifest.reference.as_ref().context("no --recording and the manifest has no reference")?,
        ),
    };
    let recording = Recording::load(&rec_path)?;
    let mut opts = jetlink::links::BuildOptions { threads: a.threads as usize, ..Default::default() };
    opts.train = jetlink::links::TrainOptions::by_name(&a.recipe).context("unknown --recipe")?;
    if let Some(e) = a.epochs {
        opts.train.epochs = e;
    }
    if let Some(f) = a.hidden_floor {
        opts.train.hidden_floor = f;
    }
    let t = Instant::now();
    let mut bundle = jetlink::links::build(&manifest, &recording, stream.train_end, &opts)?;
    bundle.version = a.bundle_version;
    let train_s = t.elapsed().as_secs_f64();
    let table = jetlink::schedule::ScheduleTable::build(&jetlink::schedule::Problem::from_bundle(&bundle));
    bundle.schedule = Some(postcard::to_stdvec(&table)?);
    let policy = jetlink::dcta::build_policy(&manifest, board, &jetlink::dcta::PolicyOptions::default())
        .context("building the DCTA policy table")?;
    bundle.dcta = Some(policy.to_postcard());
    if let Some(d) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    bundle.save(&a.out)?;
    if let Some(key) = &a.key {
        sign(&SignArgs { key: key.clone(), bundle: a.out.clone(), out: None })?;
    }
    let [md, svg] = jetlink::report::write_reports(&bundle, &a.out)?;
    println!("{}", jetlink::report::scores_markdown(&bundle));
    println!(
        "trained {} links and {} ensembles in {:.1} s; schedule table {} entries; DCTA table for {} ({} cells, {} allocations)",
        bundle.links.dims.len(),
        bundle.n_models(),
        train_s,
        table.len(),
        board.name,
        policy.cells(),
        policy.n_allocations()
    );
    println!(
        "wrote {} ({} bytes), {}, {}",
        a.out.display(),
        std::fs::metadata(&a.out)?.len(),
        md.display(),
        svg.display()
    );
    Ok(())
}

fn bench(a: &BenchArgs) -> Result<()> {
    std::fs::create_dir_all(&a.out_dir).with_context(|| format!("creating {}", a.out_dir.display()))?;
    match a.what {
        BenchWhat::Mlink => {
            let (manifest, stream) = load_workload(&a.manifest)?;
            let bundle = Bundle::load_for(&a.bundle, &manifest)?;
            let reference =
                load_reference(&manifest)?.context("bench mlink needs the manifest's reference recording")?;
            let mut opts = jetlink::schedule::bench::BenchOptions {
                max_active: a.max_active.map(|k| k as usize),
                adapt_period: a.adapt_period as usize,
                ..Default::default()
            };
            if a.no_adapt {
                opts.adapt.clear();
            }
            opts.profile_share = a.profile_share.clamp(0.0, 1.0);
            for sim in &mut opts.adapt {
                sim.steps = a.adapt_steps;
                sim.lr = a.adapt_lr;
                sim.buffer = a.adapt_buffer as usize;
            }
            let mut r = jetlink::schedule::bench::run(&bundle, &stream, &reference, &opts)?;
            // The paper's link recipe beside the bundle's, trained here from the same reference.
            if bundle.settings != jetlink::links::TrainOptions::paper() {
                let train = jetlink::links::BuildOptions {
                    train: jetlink::links::TrainOptions { seed: bundle.settings.seed, ..jetlink::links::TrainOptions::paper() },
                    threads: 0,
                    progress: false,
                };
                let paper = jetlink::links::build(&manifest, &reference, stream.train_end, &train)
                    .context("training the paper recipe for comparison")?;
                let budgets = r.budgets.clone();
                r.results.extend(jetlink::schedule::bench::run_optimal(
                    &paper, &stream, &reference, &opts, &budgets, "paper-recipe",
                )?);
            }
            print!("{}", jetlink::schedule::bench::format_table(&r));
            print!("{}", jetlink::schedule::bench::format_targets(&r));
            println!(
                "schedule look-up: {:.1} ns median ({} table entries)",
                r.lookup_ns_median, r.table_entries
            );
            let (json, svg) = (a.out_dir.join("mlink.json"), a.out_dir.join("mlink.svg"));
            jetlink::schedule::bench::write_outputs(&r, &json, &svg)?;
            println!("wrote {} and {}", json.display(), svg.display());
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
            if let Some(spread) = a.spread {
                args.workload = jetlink::dcta::Workload::Spread { seed: 7, spread };
            }
            if a.long_tail {
                args.distribution = jetlink::dcta::DriftDistribution::LongTail;
            }
            // The contexts the loop met over the demo stream (drift levels at each period boundary).
            args.real = demo_drift_contexts(a)?;
            println!("{} real contexts from the control loop over the demo stream", args.real.len());
            let r = jetlink::dcta::bench(&manifest, board, &args)?;
            print!("{}", r.to_table());
            let json = a.out_dir.join(format!("dcta-{}.json", board.name));
            jetlink::atomic::write_file(&json, r.to_json().as_bytes())
                .with_context(|| format!("writing {}", json.display()))?;
            println!("wrote {}", json.display());
        }
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
        }
        BenchWhat::Loop => bench_loop(a)?,
    }
    Ok(())
}

/// The drift levels the control loop computes at each period boundary over the demo stream (replay
/// engines), as DCTA contexts at full power.
fn demo_drift_contexts(a: &BenchArgs) -> Result<Vec<(Vec<f32>, usize)>> {
    let mut ctl = replay_loop(a, None)?;
    let mut out = Vec::new();
    let tpp = jetlink::board::current().ticks_per_period.max(1) as u64;
    while ctl.tick() {
        if ctl.stats().ticks % tpp == 1 && ctl.drift().iter().any(|&d| d > 0.0) {
            out.push((ctl.drift().to_vec(), 0));
        }
    }
    Ok(out)
}

/// The loop on this binary's board over the evaluation part of the demo (or its first `ticks`
/// frames) with replay engines and an in-memory serial sink sized up front, so that the sink itself
/// does not allocate.
fn replay_loop(
    a: &BenchArgs,
    ticks: Option<usize>,
) -> Result<control::Controller<ReplaySource, jetlink::serial::MemWriter>> {
    let board = jetlink::board::current();
    let (manifest, stream) = load_workload(&a.manifest)?;
    let bundle = Bundle::load_for(&a.bundle, &manifest)?;
    let reference =
        Arc::new(load_reference(&manifest)?.context("the benchmark needs the reference recording")?);
    let stream = Arc::new(stream);
    let cursor = FrameCursor::default();
    let from = stream.train_end;
    let to = ticks.map_or(stream.len(), |t| from.saturating_add(t).min(stream.len()));
    control::prepare(Parts {
        board,
        frame_shape: frame_shape(&stream),
        source: ReplaySource::new(stream.clone(), from..to),
        manifest,
        bundle,
        backend: Box::new(ReplayBackend { recording: reference.clone(), cursor: cursor.clone() }),
        cursor: Some(cursor),
        telemetry: jetlink::telemetry::open_for_board(board, Path::new("/")),
        writer: TelemetryWriter::new(jetlink::serial::MemWriter {
            data: Vec::with_capacity(64 * (to - from) + 4096),
            ..Default::default()
        }),
        reference: Some(reference),
        opts: LoopOptions { drift_start: stream.drift_start as u32, ..LoopOptions::default() },
    })
}

/// Per-tick overhead of the loop outside engine inference: replay engines, a memory writer.
fn bench_loop(a: &BenchArgs) -> Result<()> {
    let n = a.ticks as usize;
    let mut ctl = replay_loop(a, Some(n))?;
    let mut us = Vec::with_capacity(n);
    let mut with_engines = Vec::with_capacity(n);
    let mut alloc_ticks: Vec<(u64, u64)> = Vec::with_capacity(64);
    let a0 = alloc_count::loop_allocations();
    loop {
        let before = alloc_count::loop_allocations();
        let t = Instant::now();
        if !ctl.tick() {
            break;
        }
        let total = t.elapsed().as_secs_f64() * 1e6;
        us.push(total - ctl.last_engine_ns() as f64 / 1e3);
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
    println!(
        "loop overhead per tick outside engine inference (replay engines, {} ticks): median {:.2} us, p99 {:.2} us, max {:.2} us; allocations {}",
        us.len(),
        percentile(&us, 50.0),
        percentile(&us, 99.0),
        percentile(&us, 100.0),
        allocs
    );
    println!(
        "whole tick including the engines' input views and replayed inference: median {:.2} us, p99 {:.2} us; links on the {}",
        percentile(&with_engines, 50.0),
        percentile(&with_engines, 99.0),
        ctl.link_backend()
    );
    Ok(())
}

fn monitor(a: &MonitorArgs) -> Result<()> {
    let opts = jetlink::monitor::MonitorOptions {
        csv: a.csv.as_deref(),
        follow: a.follow,
        idle_exit: a.idle_exit.map(std::time::Duration::from_secs_f64),
        baud: a.baud,
        live: true,
    };
    let s = jetlink::monitor::monitor(&a.path, &opts)?;
    let mut text = String::new();
    jetlink::monitor::render(&a.path.display().to_string(), &s, &mut text);
    println!("{text}");
    if let Some(damage) = s.damage() {
        eprintln!("jetlink monitor: {damage}");
        std::process::exit(EXIT_TELEMETRY_LOST);
    }
    Ok(())
}

fn boards() -> Result<()> {
    let cur = jetlink::board::current();
    println!("compiled for: {}", cur.name);
    for b in jetlink::board::boards::ALL {
        println!(
            "{} {:<14} {:<5} {:<6} mem {:>6.1} GiB budget {:>7.3} GiB power {:>3} W  telemetry {:?}  serial {} @ {}  units {}",
            if b.name == cur.name { "*" } else { " " },
            b.name,
            b.soc,
            b.cuda_arch,
            b.total_memory_bytes as f64 / (1u64 << 30) as f64,
            b.model_budget_bytes as f64 / (1u64 << 30) as f64,
            b.power_budget_mw / 1000,
            b.telemetry.source,
            b.serial.device,
            b.serial.baud,
            b.resources.iter().map(|r| r.name).collect::<Vec<_>>().join(","),
        );
    }
    Ok(())
}

/// The firmware's bundle load: signed by the board's `bundle-key`, built for the manifest and not
/// older than the highest version accepted (rollback protection), or refused before anything in it
/// is decoded, with a `BundleRejected` event on the serial line.
fn trusted_bundle(
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

fn keygen(a: &KeygenArgs) -> Result<()> {
    if let Some(d) = a.out.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
        bail!("--out {}: the folder {} does not exist", a.out.display(), d.display());
    }
    let key = jetlink::signing::generate_key()?;
    jetlink::signing::write_private_key(&a.out, &key)?;
    let public = key.verifying_key().to_bytes();
    eprintln!(
        "wrote the private key to {} (mode 0600; keep it off the board and out of the repository); key id {}",
        a.out.display(),
        jetlink::bundle::hex(&jetlink::signing::key_id(&public))
    );
    eprintln!("public key, for the board file: bundle-key = \"{}\"", jetlink::bundle::hex(&public));
    println!("{}", jetlink::bundle::hex(&public));
    Ok(())
}

fn sign(a: &SignArgs) -> Result<()> {
    let key = jetlink::signing::read_private_key(&a.key)?;
    let bytes = std::fs::read(&a.bundle).with_context(|| format!("reading bundle {}", a.bundle.display()))?;
    let signed = jetlink::signing::sign_bundle(&bytes, &key)
        .with_context(|| format!("{}: not a valid bundle, not signing it", a.bundle.display()))?;
    let out = a.out.as_ref().unwrap_or(&a.bundle);
    // Write beside the target and rename, so that an interrupted sign never leaves half a bundle.
    jetlink::atomic::write_file(out, &signed).with_context(|| format!("writing {}", out.display()))?;
    let public = key.verifying_key().to_bytes();
    println!(
        "signed {} ({} bytes) with key {} (public {})",
        out.display(),
        signed.len(),
        jetlink::bundle::hex(&jetlink::signing::key_id(&public)),
        jetlink::bundle::hex(&public)
    );
    let board = jetlink::board::current();
    if public != board.bundle_key {
        println!("note: board {} trusts another key; it will refuse this bundle", board.name);
    }
    Ok(())
}

fn soak(a: &SoakArgs) -> Result<()> {
    let board = jetlink::board::current();
    let inputs = jetlink::soak::SoakInputs::load(&a.manifest, &a.bundle, board)?;
    let mut opts = jetlink::soak::SoakOptions::new(a.ticks, a.seed);
    if let Some(w) = a.warmup {
        opts.warmup = w;
    }
    let r = jetlink::soak::run(&inputs, board, &opts)?;
    print!("{}", r.render());
    if !r.passed() {
        bail!("soak failed: {}", r.failures.join("; "));
    }
    Ok(())
}
