//! Running every model of a workload over a stream: the paired outputs that links are trained on
//! (`jetlink record`), with per-model latency and output statistics.

use std::time::Instant;

use anyhow::Result;

use crate::engine::PreparedModel;
use crate::recording::{RecordedModel, Recording};
use crate::stream::Stream;

/// Per-model timing and output statistics over a run.
#[derive(Clone, Debug, Default)]
pub struct ModelStats {
    pub latencies_us: Vec<f64>,
    pub errors: u64,
    pub min: f32,
    pub max: f32,
    pub sum: f64,
    pub count: u64,
    /// For class outputs: how often each index was the top one.
    pub argmax_hist: Vec<u64>,
}

impl ModelStats {
    fn new(size: usize) -> Self {
        ModelStats {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            argmax_hist: vec![0; size],
            ..Default::default()
        }
    }

    fn add(&mut self, out: &[f32]) {
        let mut best = 0;
        for (i, &v) in out.iter().enumerate() {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
            self.sum += v as f64;
            if v > out[best] {
                best = i;
            }
        }
        self.count += out.len() as u64;
        self.argmax_hist[best] += 1;
    }

    /// Add another run's statistics to these.
    pub fn merge(&mut self, b: &ModelStats) {
        self.latencies_us.extend_from_slice(&b.latencies_us);
        self.errors += b.errors;
        self.min = self.min.min(b.min);
        self.max = self.max.max(b.max);
        self.sum += b.sum;
        self.count += b.count;
        for (x, y) in self.argmax_hist.iter_mut().zip(&b.argmax_hist) {
            *x += y;
        }
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.sum / self.count as f64 }
    }

    /// Latency percentile (0..=100), microseconds.
    pub fn latency_percentile(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p)
    }
}

pub use crate::percentile::percentile;

/// Run all models over `frames` of the stream; return the recording and the statistics.
pub fn record(
    models: &mut [PreparedModel],
    stream: &Stream,
    frames: std::ops::Range<usize>,
    progress: bool,
) -> Result<(Recording, Vec<ModelStats>)> {
    let header = models.iter().map(|m| RecordedModel::of(&m.spec)).collect();
    let mut rec = Recording::new(header);
    let mut stats: Vec<_> = models.iter().map(|m| ModelStats::new(m.spec.size as usize)).collect();
    let mut row = vec![0.0f32; rec.stride()];
    let mut bar = crate::progress::Progress::new("record", "frames", frames.len() as u64, progress);
    for f in frames {
        let frame = stream.frame(f);
        let mut at = 0;
        for (m, st) in models.iter_mut().zip(stats.iter_mut()) {
            let n = m.spec.size as usize;
            let out = &mut row[at..at + n];
            let t = Instant::now();
            match m.run(f as u32, frame, out) {
                Ok(()) => {
                    st.latencies_us.push(t.elapsed().as_secs_f64() * 1e6);
                    st.add(out);
                }
                Err(e) => {
                    st.errors += 1;
                    anyhow::bail!("model {:?} failed on frame {f}: {e}", m.spec.name);
                }
            }
            at += n;
        }
        rec.push(f as u32, &row);
        bar.inc(1);
    }
    bar.finish();
    Ok((rec, stats))
}
