//! Per-tick link time on the GPU for the demo bundle: the fused kernel, one launch per link, an
//! empty launch (the floor), a whole `predict` (copies in and out included), a 1024-frame batch, and
//! the CPU predictor; also exports the weights, rows and CPU outputs for `tools/gpu/torch_links.py`.
//!
//! `cargo run --release --features cuda --example gpu_bench -- [REPO_ROOT] [OUT_DIR]`
//! (tools/gpu/run_on_device.sh runs it on the lent GPU machine).

#[cfg(not(feature = "cuda"))]
fn main() {
    eprintln!("gpu_bench needs the `cuda` feature: cargo run --release --features cuda --example gpu_bench");
}

#[cfg(feature = "cuda")]
fn main() -> anyhow::Result<()> {
    bench::run()
}

#[cfg(feature = "cuda")]
mod bench {
    use std::io::Write;
    use std::path::PathBuf;
    use std::time::Instant;

    use anyhow::Context;
    use jetlink::bundle::Bundle;
    use jetlink::gpu::cuda::CudaLinks;
    use jetlink::links::Predictor;
    use jetlink::model_set::ModelSet;
    use jetlink::recording::Recording;

    /// Active sets timed: 1, 2 and 4 models running (the brief's PyTorch anchors), and 6.
    const MASKS: [u16; 4] = [0b1, 0b11, 0b1111, 0b11_1111];
    const WARMUP: usize = 300;
    const REPS: usize = 3000;
    const BATCH: usize = 1024;

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    fn write_f32(path: PathBuf, v: &[f32]) -> anyhow::Result<()> {
        let mut f = std::fs::File::create(&path).with_context(|| path.display().to_string())?;
        for x in v {
            f.write_all(&x.to_le_bytes())?;
        }
        Ok(())
    }

    pub fn run() -> anyhow::Result<()> {
        let args: Vec<String> = std::env::args().collect();
        let root = PathBuf::from(args.get(1).map(String::as_str).unwrap_or(env!("CARGO_MANIFEST_DIR")));
        let out_dir = PathBuf::from(args.get(2).map(String::as_str).unwrap_or("target/gpu-bench"));
        std::fs::create_dir_all(&out_dir)?;
        let bundle = Bundle::load(&root.join("demo/demo.bundle"))?;
        let rec = Recording::load(&root.join("demo/reference.jlr.gz"))?;
        let mut g = CudaLinks::from_bundle(&bundle, BATCH).map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("{:?}", g.info());
        let mut cpu = Predictor::new(&bundle);
        let stride = cpu.stride();
        let n = bundle.n_models();

        // Export for the PyTorch baseline: weights, one row, and the CPU's output for each mask.
        let row = rec.row(0).to_vec();
        write_f32(out_dir.join("links.bin"), &bundle.links.params)?;
        write_f32(out_dir.join("ensembles.bin"), &bundle.ensembles.params)?;
        write_f32(out_dir.join("row.bin"), &row)?;
        let mut reference = Vec::new();
        let mut out = vec![0.0; stride];
        for &m in &MASKS {
            cpu.predict(ModelSet::from_bits(m), &row, &mut out)?;
            reference.extend_from_slice(&out);
        }
        write_f32(out_dir.join("reference.bin"), &reference)?;
        let meta = serde_json::json!({
            "n": n,
            "sizes": bundle.sizes(),
            "kinds": bundle.models.iter().map(|m| format!("{:?}", m.kind)).collect::<Vec<_>>(),
            "link_dims": bundle.links.dims.iter().map(|d| [d.input, d.hidden, d.output]).collect::<Vec<_>>(),
            "link_offsets": bundle.links.offsets,
            "ensemble_offsets": bundle.ensembles.offsets,
            "masks": MASKS,
        });
        std::fs::write(out_dir.join("weights.json"), serde_json::to_string_pretty(&meta)?)?;

        // Batch rows: the first BATCH reference frames, each with its own mask.
        let frames = BATCH.min(rec.len());
        let rows: Vec<f32> = (0..frames).flat_map(|f| rec.row(f).iter().copied()).collect();
        let masks: Vec<ModelSet> = (0..frames).map(|f| ModelSet::from_bits(MASKS[f % MASKS.len()])).collect();

        let mut results = Vec::new();
        println!(
            "{:>8} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}",
            "mask", "links", "fused", "per-link", "empty", "predict", "cpu", "batch/frame"
        );
        for &bits in &MASKS {
            let links: u32 = (0..n).filter(|&j| bits >> j & 1 == 0).map(|_| bits.count_ones()).sum();
            let m = ModelSet::from_bits(bits);
            g.upload_rows(&row, None)?;
            let time = |g: &mut CudaLinks,
                        f: &mut dyn FnMut(&mut CudaLinks) -> Result<(), jetlink::gpu::cuda::GpuError>|
             -> anyhow::Result<f64> {
                for _ in 0..WARMUP {
                    g.time_us(|g| f(g))?;
                }
                let v: Result<Vec<f64>, _> = (0..REPS).map(|_| g.time_us(|g| f(g))).collect();
                Ok(median(v?))
            };
            let fused = time(&mut g, &mut |g| g.launch_fused(m, 1, false))?;
            let per_link = time(&mut g, &mut |g| g.launch_per_link(m))?;
            let empty = time(&mut g, &mut |g| g.launch_empty())?;
            // Whole predict, wall clock: copy in, launch, copy out, wait.
            let mut wall = Vec::with_capacity(REPS);
            for r in 0..WARMUP + REPS {
                let rr = rec.row(r % rec.len());
                let t0 = Instant::now();
                g.predict(m, rr, &mut out)?;
                if r >= WARMUP {
                    wall.push(t0.elapsed().as_secs_f64() * 1e6);
                }
            }
            let predict = median(wall);
            let mut cw = Vec::with_capacity(REPS * 4);
            for r in 0..WARMUP + REPS * 4 {
                let rr = rec.row(r % rec.len());
                let t0 = Instant::now();
                cpu.predict(m, rr, &mut out)?;
                std::hint::black_box(&out);
                if r >= WARMUP {
                    cw.push(t0.elapsed().as_secs_f64() * 1e6);
                }
            }
            let cpu_us = median(cw);
            g.upload_rows(&rows, Some(&masks))?;
            let bv: Result<Vec<f64>, _> =
                (0..200).map(|_| g.time_us(|g| g.launch_fused(ModelSet::EMPTY, frames, true))).collect();
            let batch = median(bv?);
            println!(
                "{m:>#8b} {links:>6} {fused:>10.2} {per_link:>10.2} {empty:>10.2} {predict:>10.2} {cpu_us:>10.2} {:>12.4}",
                batch / frames as f64
            );
            results.push(serde_json::json!({
                "mask": m, "links": links, "fused_us": fused, "per_link_us": per_link, "empty_us": empty,
                "predict_wall_us": predict, "cpu_us": cpu_us, "batch_frames": frames, "batch_us": batch,
            }));
        }
        let info = g.info();
        let summary = serde_json::json!({
            "device": info.name, "compute": [info.compute.0, info.compute.1], "arch": info.arch,
            "driver": info.driver, "nvrtc": [info.nvrtc.0, info.nvrtc.1], "ptx": format!("{:?}", info.ptx),
            "startup_compile_ms": info.compile_ms, "warmup": WARMUP, "reps": REPS, "results": results,
        });
        std::fs::write(out_dir.join("rust_bench.json"), serde_json::to_string_pretty(&summary)?)?;
        // A second start hits the PTX cache.
        let t0 = Instant::now();
        let g2 = CudaLinks::from_bundle(&bundle, 1).map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("second start: {:.1} ms, PTX {:?}", t0.elapsed().as_secs_f64() * 1e3, g2.info().ptx);
        Ok(())
    }
}
