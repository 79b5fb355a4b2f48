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
    /// The bundle to write (its report beside it). Required, except with the demo's manifest, whose
    /// bundle is demo/demo.bundle.
    #[arg(long, short)]
    pub(crate) out: Option<PathBuf>,
    /// Replace an existing output that is not of this kind (never a device or a FIFO).
    #[arg(long)]
    pub(crate) force: bool,
    /// Training epochs per link.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) epochs: Option<u32>,
    /// Hidden width floor (h = max(2·|Y_j|, floor)); 0 for the paper's 2·|Y_j|.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=4096))]
    pub(crate) hidden_floor: Option<u32>,
    /// Fit an ensemble head per source set of at most N models, kept where it beats the shared head
    /// on held-out rows (default: the board's `max-active-models`; 0: shared heads only).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=jetlink::model_set::ModelSet::CAP as i64))]
    pub(crate) set_heads: Option<u32>,
    /// The bundle's release number, inside the signed part: a board refuses a bundle older than the
    /// highest it has accepted (rollback protection). Raise it for every release, by small steps: a
    /// board that accepted version V refuses every bundle below it, so 1 to 4294967295.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=u32::MAX as u64))]
    pub(crate) bundle_version: u64,
    /// Link training recipe: `measured` (standardised regression targets, no dropout on them) or
    /// `paper` (the MLink paper's: dropout 0.5 everywhere, raw targets).
    #[arg(long, default_value = "measured", value_parser = ["measured", "paper"])]
    pub(crate) recipe: String,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1024))]
    pub(crate) threads: u64,
    /// Sign the bundle with this private key (`jetlink keygen`; the demo's is demo/keys/demo-insecure.key).
    /// Read and checked before any training.
    #[arg(long)]
    pub(crate) key: Option<PathBuf>,
    /// Write the bundle unsigned (host tools only: no board loads it).
    #[arg(long, conflicts_with = "key")]
    pub(crate) unsigned: bool,
    /// Fit the links (and everything else `build` learns) on the recording's frames A..B instead of
    /// the stream's training part; the last fifth of them is held out for the link scores, as
    /// usual (`--in-sample` fits them all). A range that reaches the evaluation frames is said on
    /// standard error: what `jetlink run` measures there is then not held out.
    #[arg(long, value_name = "A..B", value_parser = frame_range)]
    pub(crate) fit_frames: Option<std::ops::Range<usize>>,
    /// With `--fit-frames`: fit on every one of those frames and measure the link scores (which the
    /// planner ranks by) on a spread fifth of them, instead of holding the last fifth out: a true
    /// in-sample ceiling.
    #[arg(long, requires = "fit_frames")]
    pub(crate) in_sample: bool,
}

/// `A..B` with A < B, frames of the stream.
fn frame_range(s: &str) -> std::result::Result<std::ops::Range<usize>, String> {
    let (a, b) = s.split_once("..").ok_or_else(|| format!("{s:?}: expected A..B (frames A to B - 1)"))?;
    let num =
        |x: &str| x.trim().parse::<usize>().map_err(|e| format!("{s:?}: {x:?} is not a frame number: {e}"));
    let (a, b) = (num(a)?, num(b)?);
    if a >= b {
        return Err(format!("{s:?}: the range is empty (A must be below B)"));
    }
    Ok(a..b)
}

/// Whether `manifest` is the demo's (this checkout's demo/manifest.toml, wherever it is run from).
fn is_demo_manifest(manifest: &Path) -> bool {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEMO_MANIFEST);
    match (manifest.canonicalize(), demo.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The key the bundle will be signed with, read before anything is trained; its id is printed as
/// `jetlink keygen` prints it.
fn signing_key(a: &BuildArgs, board: &jetlink::board::Board) -> Result<Option<ed25519_dalek::SigningKey>> {
    let trusted = jetlink::bundle::hex(&jetlink::signing::key_id(&board.bundle_key));
    let Some(path) = &a.key else {
        if !a.unsigned {
            bail!(
                "no --key: give the private key to sign with (`jetlink keygen --out FILE` makes one; board {} trusts key id {trusted}), or --unsigned for a bundle no board loads; nothing was trained or written",
                board.name
            );
        }
        println!(
            "writing an UNSIGNED bundle (--unsigned): no board loads it; board {} trusts key id {trusted}",
            board.name
        );
        return Ok(None);
    };
    let key = jetlink::signing::read_private_key(path).with_context(|| {
        format!(
            "--key {}: not a usable private key (make one with `jetlink keygen --out FILE`); nothing was trained or written. Board {} trusts key id {trusted}",
            path.display(),
            board.name
        )
    })?;
    let public = key.verifying_key().to_bytes();
    let id = jetlink::bundle::hex(&jetlink::signing::key_id(&public));
    if public == board.bundle_key {
        println!("signing with key id {id} ({}), the key board {} trusts", path.display(), board.name);
    } else {
        println!(
            "signing with key id {id} ({}); note: board {} trusts key id {trusted}, so it will refuse this bundle unless built with JETLINK_BUNDLE_KEY (or run on host-sim with --trust-key)",
            path.display(),
            board.name
        );
    }
    Ok(Some(key))
}

pub(crate) fn build(a: &BuildArgs) -> Result<()> {
    let board = jetlink::board::current();
    let out = match &a.out {
        Some(o) => o.clone(),
        None if is_demo_manifest(&a.manifest) => Path::new(env!("CARGO_MANIFEST_DIR")).join(DEMO_BUNDLE),
        None => bail!(
            "--out is required: {} is not the demo's manifest, and jetlink build never writes {DEMO_BUNDLE} for another workload",
            a.manifest.display()
        ),
    };
    // The bundle and the reports beside it, by the output rule: checked now (a refused output
    // costs nothing), and again once the inputs are read (none of them may be replaced), both
    // before the training.
    let check_outputs = || -> Result<()> {
        jetlink::output::prepare(&out, "--out", jetlink::output::Kind::Bundle, a.force)?;
        for (p, kind) in jetlink::report::report_paths(&out) {
            jetlink::output::check_replace(&p, "report", kind, a.force)?;
        }
        Ok(())
    };
    check_outputs()?;
    let key = signing_key(a, board)?;
    let (mut manifest, stream) = load_workload(&a.manifest)?;
    measure_missing_costs(&mut manifest, &stream, "jetlink build")?;
    let rec_path = match &a.recording {
        Some(p) => p.clone(),
        None => manifest.path_of(
            manifest.reference.as_ref().context("no --recording and the manifest has no reference")?,
        ),
    };
    let recording = load_recording_for(&manifest, &rec_path)?;
    jetlink::workload::within_stream(&recording, &rec_path, &stream, &manifest.path_of(&manifest.stream))?;
    check_outputs()?;
    let mut opts = jetlink::links::BuildOptions { threads: a.threads as usize, ..Default::default() };
    opts.train = jetlink::links::TrainOptions::by_name(&a.recipe).context("unknown --recipe")?;
    if let Some(e) = a.epochs {
        opts.train.epochs = e;
    }
    if let Some(f) = a.hidden_floor {
        opts.train.hidden_floor = f;
    }
    opts.set_heads = a.set_heads.map_or(board.max_active_models as usize, |k| k as usize);
    let fit = a.fit_frames.clone().unwrap_or(0..stream.train_end);
    if fit.end > stream.len() {
        bail!("--fit-frames {}..{}: the stream has {} frames", fit.start, fit.end, stream.len());
    }
    if a.in_sample {
        eprintln!(
            "note: --in-sample: every link is fitted on all of frames {}..{} and scored on some of them: \
             the bundle is an in-sample ceiling",
            fit.start, fit.end
        );
    } else if fit.end > stream.train_end {
        eprintln!(
            "note: --fit-frames {}..{} reaches the stream's evaluation frames (from {}): what `jetlink run` \
             measures there with this bundle is in-sample (a ceiling), not held out",
            fit.start, fit.end, stream.train_end
        );
    }
    opts.fit_from = fit.start;
    opts.in_sample = a.in_sample;
    jetlink::output::make_folder(&out, "--out")?;
    let t = Instant::now();
    let mut bundle = jetlink::train::build(&manifest, &recording, fit.end, &opts)?;
    bundle.staleness = jetlink::train::fit_staleness(&bundle, &recording, Some(&stream), fit.start);
    // The rows read: in-sample, the held-out ones are fitted rows scored again.
    let split = &bundle.split;
    let rows = (split.fit_rows + if a.in_sample { 0 } else { split.holdout_rows }) as usize;
    if a.fit_frames.is_some() && rows < fit.len() {
        eprintln!(
            "note: --fit-frames {}..{}: the recording has {rows} of those {} frames; the links were fitted on those",
            fit.start,
            fit.end,
            fit.len()
        );
    }
    bundle.version = a.bundle_version;
    // Training on values too large for f32 arithmetic (1e37 is finite, its square is not) gives
    // weights that are not finite: refused here, naming the recording, not later by every loader.
    if let Err(e) = bundle.validate() {
        let (model, largest) = largest_value(&recording, &manifest);
        bail!(
            "training on recording {} gave links that are not usable ({e}); its largest value is {largest:e} \
             (model {model:?}): rescale that model's output",
            rec_path.display()
        );
    }
    let train_s = t.elapsed().as_secs_f64();
    // The exact table under the board's execution cap (`max-active-models`), which the loop then
    // uses as it is.
    let mut problem = jetlink::schedule::Problem::from_bundle(&bundle);
    if board.max_active_models > 0 {
        problem = problem.with_max_active(board.max_active_models as usize);
    }
    let table = jetlink::schedule::ScheduleTable::build(&problem);
    bundle.schedule = Some(postcard::to_stdvec(&table)?);
    let policy = jetlink::dcta::build_policy(&manifest, board, &jetlink::dcta::PolicyOptions::default())
        .context("building the DCTA policy table")?;
    bundle.dcta = Some(policy.to_postcard());
    let bytes = bundle.to_bytes()?;
    let bytes = match &key {
        Some(k) => jetlink::signing::sign_bundle(&bytes, k).context("signing the bundle")?,
        None => bytes,
    };
    jetlink::output::write(&out, "--out", jetlink::output::Kind::Bundle, a.force, &bytes)?;
    let [md, svg] = jetlink::report::write_reports(&bundle, &out, a.force, a.in_sample)?;
    println!("{}", jetlink::report::scores_markdown(&bundle, a.in_sample));
    println!(
        "trained {} links and {} ensembles in {:.1} s; schedule table {} entries; DCTA policy for {} ({} cells, {} options, {} bytes)",
        bundle.links.dims.len(),
        bundle.n_models(),
        train_s,
        table.len(),
        board.name,
        policy.cells(),
        policy.menu.n_options(),
        policy.to_postcard().len()
    );
    let n = bundle.n_models();
    let fitted: usize = n * jetlink::model_set::ModelSet::subsets(n - 1)
        .filter(|s| !s.is_empty() && s.len() <= opts.set_heads)
        .count();
    println!(
        "per-source-set ensemble heads: {} kept of {fitted} fitted (sets of at most {} models; kept where they beat the shared head by {:.1} points on the {} held-out rows)",
        bundle.ensembles.heads.len(),
        opts.set_heads,
        100.0 * jetlink::train::set_head_margin(bundle.split.holdout_rows as usize),
        bundle.split.holdout_rows
    );
    println!(
        "wrote {} ({} bytes, {}), {}, {}",
        out.display(),
        std::fs::metadata(&out)?.len(),
        match &key {
            Some(k) => format!(
                "signed by key id {}",
                jetlink::bundle::hex(&jetlink::signing::key_id(&k.verifying_key().to_bytes()))
            ),
            None => "unsigned".into(),
        },
        md.display(),
        svg.display()
    );
    Ok(())
}

/// The model whose recorded outputs reach the largest magnitude, and that magnitude.
fn largest_value(rec: &Recording, manifest: &Manifest) -> (String, f32) {
    let mut best = (String::new(), 0.0f32);
    for (j, m) in manifest.models.iter().enumerate() {
        for r in 0..rec.len() {
            let v = rec.output(r, j).iter().fold(0.0f32, |a, x| a.max(x.abs()));
            if v > best.1 {
                best = (m.name.clone(), v);
            }
        }
    }
    best
}
