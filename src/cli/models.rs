//! `jetlink models`: every model over frames spread over a stream: latency, cost, output
//! statistics and difference from the reference.

use super::*;

#[derive(clap::Args)]
pub(crate) struct ModelsArgs {
    #[arg(long, default_value = DEMO_MANIFEST)]
    pub(crate) manifest: PathBuf,
    /// Frames to run, spread evenly over the whole stream.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) frames: u64,
}

pub(crate) fn models(a: &ModelsArgs) -> Result<()> {
    let board = jetlink::board::current();
    let (mut manifest, stream) = load_workload(&a.manifest)?;
    measure_missing_costs(&mut manifest, &stream, "jetlink models")?;
    let t = Instant::now();
    let mut models = engine::prepare_all(&manifest, stream.shape(), &TractBackend)?;
    println!("prepared {} engines (tract-onnx) in {:.0} ms", models.len(), t.elapsed().as_secs_f64() * 1e3);
    if stream.is_empty() {
        bail!("{}: the stream has no frames", a.manifest.display());
    }
    let reference = load_reference_for(&manifest, &stream)?;
    let n = (a.frames as usize).clamp(1, stream.len());
    if n < a.frames as usize {
        eprintln!(
            "note: --frames {}: the stream has {} frames; running every model on all of them",
            a.frames, n
        );
    }
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
            // `load_reference` took the reference's columns by model name, in the manifest's order.
            let row = r
                .row_of_frame(f as u32)
                .with_context(|| format!("the reference recording lacks frame {f}"))?;
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
