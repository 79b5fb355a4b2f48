//! `jetlink soak`: the control loop under seeded fault injection, its invariants checked.

use super::*;

#[derive(clap::Args)]
pub(crate) struct SoakArgs {
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub(crate) ticks: u64,
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Ticks before allocations are counted (default: a tenth of --ticks, at most 2000).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=1_000_000_000))]
    pub(crate) warmup: Option<u64>,
    #[arg(long, default_value = DEMO_MANIFEST)]
    pub(crate) manifest: PathBuf,
    #[arg(long, default_value = DEMO_BUNDLE)]
    pub(crate) bundle: PathBuf,
}

#[cfg(not(feature = "sim"))]
pub(crate) fn soak(_: &SoakArgs) -> Result<()> {
    bail!("the soak is simulation: this build was made without the `sim` feature")
}

#[cfg(feature = "sim")]
pub(crate) fn soak(a: &SoakArgs) -> Result<()> {
    let board = jetlink::board::current();
    let inputs = jetlink::sim::soak::SoakInputs::load(&a.manifest, &a.bundle, board)?;
    let mut opts = jetlink::sim::soak::SoakOptions::new(a.ticks, a.seed);
    if let Some(w) = a.warmup {
        opts.warmup = w;
    }
    let r = jetlink::sim::soak::run(&inputs, board, &opts)?;
    print!("{}", r.render());
    if !r.passed() {
        bail!("soak failed: {}", r.failures().join("; "));
    }
    Ok(())
}
