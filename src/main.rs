//! The `jetlink` command line: the main job (the control loop; on `host-sim` over the bundled demo)
//! and the host tools (record, build, bench, monitor).

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Subcommand};

use jetlink::alloc_count::CountingAllocator;

mod cli;
use cli::*;

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

#[derive(clap::Parser)]
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
    /// Write a stream file from a folder of images (PNG, JPEG, PGM), in name order.
    Stream(StreamArgs),
    /// Measure every model's costs (weights, activations, FLOPs, latency) for `[model.cost]`.
    Profile(ProfileArgs),
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
    /// A fleet of boards over MQTT: `aggregate` (average and sign links, allocate tasks), `status`.
    Fleet(FleetArgs),
    /// Fault-injection soak of the control loop on the simulated board (replay engines, looped frames).
    Soak(SoakArgs),
}

fn main() -> Result<()> {
    // Die quietly on a closed pipe (`jetlink boards | head`), as command-line tools do, instead of
    // panicking in println!.
    // SAFETY: resetting a signal disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Some(Cmd::Bench(a)), Some(m)) = (&cli.command, matches.subcommand_matches("bench")) {
        bench_flags_apply(a, m)?;
    }
    match cli.command.unwrap_or(Cmd::Run(RunArgs::default())) {
        Cmd::Run(a) => run(&a),
        Cmd::Models(a) => models(&a),
        Cmd::Record(a) => record_cmd(&a),
        Cmd::Stream(a) => stream_cmd(&a),
        Cmd::Profile(a) => profile(&a),
        Cmd::Build(a) => build(&a),
        Cmd::Bench(a) => bench(&a),
        Cmd::Monitor(a) => monitor(&a),
        Cmd::Boards => boards(),
        Cmd::Keygen(a) => keygen(&a),
        Cmd::Sign(a) => sign(&a),
        Cmd::Soak(a) => soak(&a),
        Cmd::Fleet(a) => fleet(&a),
    }
}
