//! `jetlink record`: every model over a range of a stream, written as a recording.

use super::*;

#[derive(clap::Args)]
pub(crate) struct RecordArgs {
    #[arg(long, default_value = DEMO_MANIFEST)]
    pub(crate) manifest: PathBuf,
    /// Output file (`.gz` compresses).
    #[arg(long, short)]
    pub(crate) out: PathBuf,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=u32::MAX as u64))]
    pub(crate) from: u64,
    /// One past the last frame (default: the end of the training part).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=u32::MAX as u64))]
    pub(crate) to: Option<u64>,
    /// Replace an existing output that is not of this kind (never a device or a FIFO).
    #[arg(long)]
    pub(crate) force: bool,
}

pub(crate) fn record_cmd(a: &RecordArgs) -> Result<()> {
    let (manifest, stream) = load_workload(&a.manifest)?;
    // Checked before any model runs (and after the workload's files are read, none of which it
    // may replace): a refused --out costs nothing.
    jetlink::output::prepare(&a.out, "--out", jetlink::output::Kind::Recording, a.force)?;
    let to = a.to.map_or(stream.train_end, |t| t as usize);
    let from = a.from as usize;
    if from >= to || to > stream.len() {
        let to_is = if a.to.is_some() {
            format!("--to {to}")
        } else {
            format!("the end of the stream's training part (frame {to}, the default --to)")
        };
        bail!("--from {from} and {to_is}: need from < to <= {} (frames in the stream)", stream.len());
    }
    let mut models = engine::prepare_all(&manifest, stream.shape(), &TractBackend)?;
    jetlink::output::make_folder(&a.out, "--out")?;
    let (rec, _) = record::record(&mut models, &stream, from..to, true)?;
    // Again now that the inputs are read: none of them is replaced.
    jetlink::output::check_replace(&a.out, "--out", jetlink::output::Kind::Recording, a.force)?;
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
