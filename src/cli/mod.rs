//! The command line's commands, one file each, and what they share: the demo's paths, workload and
//! reference loading, value parsers for numeric flags, formatting.

pub(crate) use std::path::{Path, PathBuf};
pub(crate) use std::sync::Arc;
pub(crate) use std::time::Instant;

pub(crate) use anyhow::{Context, Result, bail};
pub(crate) use clap::ValueEnum;

pub(crate) use jetlink::alloc_count;
pub(crate) use jetlink::bundle::Bundle;
pub(crate) use jetlink::control::{self, LoopBuilder, LoopOptions};
pub(crate) use jetlink::engine::{self, TractBackend};
pub(crate) use jetlink::manifest::Manifest;
pub(crate) use jetlink::record::{self, percentile};
pub(crate) use jetlink::recording::Recording;
pub(crate) use jetlink::serial::SerialWriter;
pub(crate) use jetlink::source::{FrameSource, LiveSource, ReplaySource, SourceSpec};
pub(crate) use jetlink::stream::Stream;
pub(crate) use jetlink::view::Shape;
pub(crate) use jetlink::wire::TelemetryWriter;

mod bench;
mod boards;
mod build;
mod fleet;
mod keys;
mod models;
mod monitor;
mod profile_cmd;
mod record_cmd;
mod run;
mod soak;
mod stream_cmd;
mod sweep;

pub(crate) use bench::{BenchArgs, bench, bench_flags_apply};
pub(crate) use boards::boards;
pub(crate) use build::{BuildArgs, build};
pub(crate) use fleet::{FleetArgs, fleet};
pub(crate) use keys::{KeygenArgs, SignArgs, keygen, sign};
pub(crate) use models::{ModelsArgs, models};
pub(crate) use monitor::{MonitorArgs, monitor};
pub(crate) use profile_cmd::{ProfileArgs, profile};
pub(crate) use record_cmd::{RecordArgs, record_cmd};
pub(crate) use run::{RunArgs, run};
pub(crate) use soak::{SoakArgs, soak};
pub(crate) use stream_cmd::{StreamArgs, stream_cmd};

pub(crate) const DEMO_MANIFEST: &str = "demo/manifest.toml";
pub(crate) const DEMO_BUNDLE: &str = "demo/demo.bundle";

/// A clap value parser for a finite `f64` in `lo..=hi` (NaN, infinities and values outside refused
/// at parse time, with the range in the message).
pub(crate) fn finite_in(
    lo: f64,
    hi: f64,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let v: f64 = s.trim().parse().map_err(|e| format!("{s:?} is not a number: {e}"))?;
        if !v.is_finite() || v < lo || v > hi {
            return Err(format!("{s} is not a finite number in {lo}..={hi}"));
        }
        Ok(v)
    }
}

/// The manifest and its stream (see [`jetlink::workload::Workload`] for the whole workload).
pub(crate) fn load_workload(path: &Path) -> Result<(Manifest, Stream)> {
    let manifest = Manifest::load(path)?;
    let stream = Stream::load(&manifest.path_of(&manifest.stream))
        .with_context(|| format!("stream of manifest {}", path.display()))?;
    Ok((manifest, stream))
}

/// The manifest's reference recording, its columns taken by model name in the manifest's order
/// (refused, naming the model, when it lacks one).
pub(crate) fn load_reference(manifest: &Manifest) -> Result<Option<Recording>> {
    manifest.reference.as_ref().map(|r| load_recording_for(manifest, &manifest.path_of(r))).transpose()
}

/// [`load_reference`], refused when it has rows past the end of `stream` (the manifest's).
pub(crate) fn load_reference_for(manifest: &Manifest, stream: &Stream) -> Result<Option<Recording>> {
    let rec = load_reference(manifest)?;
    if let Some(r) = &rec {
        jetlink::workload::reference_within_stream(manifest, r, stream)?;
    }
    Ok(rec)
}

/// A recording, its columns taken by model name in the manifest's order.
pub(crate) fn load_recording_for(manifest: &Manifest, path: &Path) -> Result<Recording> {
    let rec = Recording::load(path)?;
    rec.into_selected(
        manifest.models.iter().map(|m| (m.name.as_str(), m.kind, m.size as usize)),
        &format!("recording {}", path.display()),
    )
}

/// Measure the costs of the models whose manifest has no `[model.cost]` (on `frames` frames of the
/// stream) and say so on stdout, naming who measured them.
pub(crate) fn measure_missing_costs(manifest: &mut Manifest, stream: &Stream, who: &str) -> Result<()> {
    let n = manifest.missing_costs().len();
    if n == 0 {
        return Ok(());
    }
    let t = Instant::now();
    let names = jetlink::profile::fill_missing(manifest, stream, PROFILE_FRAMES)?;
    println!(
        "costs measured by {who} on this machine for {} ({}; {} frames, {:.1} s): no [model.cost] in the manifest",
        names.join(", "),
        jetlink::profile::RUNTIME,
        PROFILE_FRAMES,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Frames the latency of an unprofiled model is measured over.
pub(crate) const PROFILE_FRAMES: usize = 20;

pub(crate) fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// A flag set when SIGTERM or SIGINT arrives: the commands that run until stopped (`run`, `fleet
/// aggregate`, `monitor`) end their work on it and report, instead of dying of the signal.
pub(crate) fn stop_on_signals() -> Result<Arc<std::sync::atomic::AtomicBool>> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let which = STOP_SIGNAL.get_or_init(Arc::default).clone();
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing the signal handlers")?;
        signal_hook::flag::register_usize(sig, which.clone(), sig as usize)
            .context("installing the signal handlers")?;
    }
    Ok(stop)
}

/// The last stop signal that arrived ([`stop_on_signals`]), by number (0: none).
static STOP_SIGNAL: std::sync::OnceLock<Arc<std::sync::atomic::AtomicUsize>> = std::sync::OnceLock::new();

/// The name of the stop signal that arrived last, for the message that reports the stop.
pub(crate) fn stop_signal_name() -> &'static str {
    let n = STOP_SIGNAL.get().map_or(0, |s| s.load(std::sync::atomic::Ordering::Relaxed));
    match n as i32 {
        signal_hook::consts::SIGTERM => "SIGTERM",
        signal_hook::consts::SIGINT => "SIGINT",
        _ => "a signal",
    }
}
