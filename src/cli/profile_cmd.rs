//! `jetlink profile`: measure every model's `[model.cost]` (weight bytes, peak activation bytes,
//! FLOPs, latency on this machine; what each figure counts: `src/profile.rs`) and print the blocks,
//! or write the missing ones into the manifest.

use super::*;

#[derive(clap::Args)]
pub(crate) struct ProfileArgs {
    #[arg(long, default_value = DEMO_MANIFEST)]
    pub(crate) manifest: PathBuf,
    /// Frames the latency median is taken over (spread over the stream's training part).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub(crate) frames: u64,
    /// Write a `[model.cost]` block into the manifest for every model that has none (the file's other
    /// lines are kept as they are); models that have one keep it.
    #[arg(long)]
    pub(crate) write: bool,
}

pub(crate) fn profile(a: &ProfileArgs) -> Result<()> {
    let (manifest, stream) = load_workload(&a.manifest)?;
    let mut measured = Vec::new();
    for (i, spec) in manifest.models.iter().enumerate() {
        let c = jetlink::profile::measure(spec, &manifest, &stream, a.frames as usize)?;
        println!(
            "# {}: {} ({}){}",
            spec.name,
            manifest.path_of(&spec.onnx).display(),
            spec.kind.name(),
            if spec.cost.is_missing() { "" } else { "; the manifest has a cost block, kept as it is" }
        );
        println!("{}", jetlink::profile::cost_block(&c));
        measured.push((i, c));
    }
    println!(
        "# weight_bytes: initialisers + array attributes; activation_bytes: peak live tensors along tract's plan; \
         flops: 2 x multiply-accumulates of MatMul/Gemm/Einsum/Conv; latency: median of {} frames, {}",
        a.frames,
        jetlink::profile::RUNTIME
    );
    if a.write {
        let missing: Vec<(usize, jetlink::manifest::Cost)> =
            measured.into_iter().filter(|(i, _)| manifest.models[*i].cost.is_missing()).collect();
        if missing.is_empty() {
            println!(
                "{}: every model already has a [model.cost] block; nothing written",
                a.manifest.display()
            );
            return Ok(());
        }
        // Rewritten in place (atomically, keeping its mode): a symbolic link would be replaced by a
        // file, its target left as it was.
        if std::fs::symlink_metadata(&a.manifest).is_ok_and(|m| m.file_type().is_symlink()) {
            bail!(
                "--write: the manifest {} is a symbolic link; refusing to replace it (give the file it points to)",
                a.manifest.display()
            );
        }
        let text = jetlink::input::read_to_string(&a.manifest, "manifest", jetlink::input::limit::TEXT)?;
        let new = jetlink::profile::write_costs(&text, &a.manifest, &missing)?;
        jetlink::atomic::write_file(&a.manifest, new.as_bytes())
            .with_context(|| format!("writing manifest {}", a.manifest.display()))?;
        println!(
            "wrote [model.cost] for {} into {}",
            missing.iter().map(|(i, _)| manifest.models[*i].name.as_str()).collect::<Vec<_>>().join(", "),
            a.manifest.display()
        );
    }
    Ok(())
}
