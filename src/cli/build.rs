//! `jetlink build`: train the links and ensembles, precompute the schedule and DCTA tables, write
//! and sign the bundle and its score report.

use super::*;

#[derive(clap::Args)]
pub(crate) struct BuildArgs {
    #[arg(long, default_value = DEMO_MANIFEST)]
    pub(crate) manifest: PathBuf,
    /// Recording to train on (default: the manifest's reference).
    #[arg(long)]
    pub(crate) recording: Option<PathBuf>,
    #[arg(long, short, default_value = DEMO_BUNDLE)]
    pub(crate) out: PathBuf,
    /// Training epochs per link.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) epochs: Option<u32>,
    /// Hidden width floor (h = max(2·|Y_j|, floor)); 0 for the paper's 2·|Y_j|.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=4096))]
    pub(crate) hidden_floor: Option<u32>,
    /// The bundle's release number, inside the signed part: a board refuses a bundle older than the
    /// highest it has accepted (rollback protection). Raise it for every release.
    #[arg(long, default_value_t = 1)]
    pub(crate) bundle_version: u64,
    /// Link training recipe: `measured` (standardised regression targets, no dropout on them) or
    /// `paper` (the MLink paper's: dropout 0.5 everywhere, raw targets).
    #[arg(long, default_value = "measured", value_parser = ["measured", "paper"])]
    pub(crate) recipe: String,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1024))]
    pub(crate) threads: u64,
    /// Sign the bundle with this private key (`jetlink keygen`; the demo's is demo/keys/demo-insecure.key).
    #[arg(long)]
    pub(crate) key: Option<PathBuf>,
}

pub(crate) fn build(a: &BuildArgs) -> Result<()> {
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
    let mut bundle = jetlink::train::build(&manifest, &recording, stream.train_end, &opts)?;
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
