//! The `jetlink` command line: the main job (the demo on the simulated board) and the host tools.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use jetlink::engine::{self, TractBackend};
use jetlink::manifest::Manifest;
use jetlink::record::{self, percentile};
use jetlink::recording::Recording;
use jetlink::stream::Stream;
use jetlink::view::Shape;

const DEMO_MANIFEST: &str = "demo/manifest.toml";

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
    /// The main job: run the workload on the simulated board (default command).
    Run(RunArgs),
    /// Run every model over a stream and write the paired outputs (a recording).
    Record(RecordArgs),
    /// Show the board compiled into this binary, and every board known.
    Boards,
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, default_value = DEMO_MANIFEST)]
    manifest: PathBuf,
    /// Frames to run, spread evenly over the whole stream.
    #[arg(long, default_value_t = 600)]
    frames: usize,
}

#[derive(clap::Args)]
struct RecordArgs {
    #[arg(long, default_value = DEMO_MANIFEST)]
    manifest: PathBuf,
    /// Output file (`.gz` compresses).
    #[arg(long, short)]
    out: PathBuf,
    /// First frame.
    #[arg(long, default_value_t = 0)]
    from: usize,
    /// One past the last frame (default: the end of the training part).
    #[arg(long)]
    to: Option<usize>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Cmd::Run(RunArgs { manifest: DEMO_MANIFEST.into(), frames: 600 })) {
        Cmd::Run(a) => run(&a),
        Cmd::Record(a) => record_cmd(&a),
        Cmd::Boards => boards(),
    }
}

fn load_workload(path: &Path) -> Result<(Manifest, Stream)> {
    let manifest = Manifest::load(path)?;
    let stream = Stream::load(&manifest.path_of(&manifest.stream))
        .with_context(|| format!("stream of manifest {}", path.display()))?;
    Ok((manifest, stream))
}

fn frame_shape(s: &Stream) -> Shape {
    Shape { h: s.height, w: s.width, c: s.channels }
}

fn record_cmd(a: &RecordArgs) -> Result<()> {
    let (manifest, stream) = load_workload(&a.manifest)?;
    let to = a.to.unwrap_or(stream.train_end);
    if a.from >= to || to > stream.len() {
        bail!("--from {} --to {to}: need from < to <= {} (frames in the stream)", a.from, stream.len());
    }
    let mut models = engine::prepare_all(&manifest, frame_shape(&stream), &TractBackend)?;
    let (rec, _) = record::record(&mut models, &stream, a.from..to, true)?;
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

fn run(a: &RunArgs) -> Result<()> {
    let board = jetlink::board::current();
    let (manifest, stream) = load_workload(&a.manifest)?;
    println!("jetlink {} on board {} ({})", env!("CARGO_PKG_VERSION"), board.name, board.description);
    println!(
        "workload {:?}: {} models, stream of {} frames ({} train, drift from {})",
        manifest.name,
        manifest.models.len(),
        stream.len(),
        stream.train_end,
        stream.drift_start
    );
    let t = std::time::Instant::now();
    let mut models = engine::prepare_all(&manifest, frame_shape(&stream), &TractBackend)?;
    println!("prepared {} engines (tract-onnx) in {:.0} ms", models.len(), t.elapsed().as_secs_f64() * 1e3);
    let reference = match &manifest.reference {
        Some(r) => Some(Recording::load(&manifest.path_of(r))?),
        None => None,
    };
    let n = a.frames.clamp(1, stream.len());
    let step = stream.len() / n;
    let frames: Vec<usize> = (0..n).map(|i| i * step).collect();
    let mut stats = Vec::new();
    let mut max_diff = vec![0.0f32; models.len()];
    for (k, &f) in frames.iter().enumerate() {
        let (rec, st) = record::record(&mut models, &stream, f..f + 1, false)?;
        if k == 0 {
            stats = st;
        } else {
            for (a, b) in stats.iter_mut().zip(st) {
                a.latencies_us.extend(b.latencies_us);
                a.min = a.min.min(b.min);
                a.max = a.max.max(b.max);
                a.sum += b.sum;
                a.count += b.count;
                for (x, y) in a.argmax_hist.iter_mut().zip(b.argmax_hist) {
                    *x += y;
                }
            }
        }
        if let Some(r) = &reference {
            let row = r.row_of_frame(f as u32).context("reference lacks a frame")?;
            for (m, d) in max_diff.iter_mut().enumerate() {
                for (x, y) in rec.output(0, m).iter().zip(r.output(row, m)) {
                    *d = d.max((x - y).abs());
                }
            }
        }
    }
    println!("\nran every model on {n} frames spread over the stream (every {step}th frame)\n");
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
        "\nall models per frame: {:.0} us (tract, p50 sum), {:.1} MFLOPs, {:.2} MB engine memory; board model budget {:.2} MB",
        total_lat,
        total_flops as f64 / 1e6,
        total_mem as f64 / 1e6,
        board.model_budget_bytes as f64 / 1e6
    );
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
