//! The simulated source: replays a telemetry trace (CSV: `tick,mem_available_bytes,power_mw,
//! gpu_load_permille`), looping at its end, and the deterministic generator of the demo's trace.
//!
//! The trace's `mem_available_bytes` is memory free of other tenants; the source reports it net of
//! what our own models hold ([`Source::set_own_usage`]), as `MemAvailable` would on a board.

use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{Sample, Source, TelemetryError, Valid};
use crate::board::Board;

/// The CSV header of a trace file.
pub const TRACE_HEADER: &str = "tick,mem_available_bytes,power_mw,gpu_load_permille";

/// One tick of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRow {
    pub mem_available_bytes: u64,
    pub power_mw: u32,
    pub gpu_load_permille: u16,
}

/// Replays a trace, one row per sample, looping.
pub struct Simulated {
    rows: Vec<TraceRow>,
    pos: usize,
    mem_total_bytes: u64,
    own_bytes: u64,
    n_rails: usize,
}

impl Simulated {
    /// A source over `rows`; `mem_total_bytes` is the simulated board's memory, `n_rails` how many
    /// rails the board lists (the first carries the total, the others read 0).
    pub fn new(rows: Vec<TraceRow>, mem_total_bytes: u64, n_rails: usize) -> Result<Simulated> {
        if rows.is_empty() {
            bail!("empty telemetry trace");
        }
        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.mem_available_bytes > mem_total_bytes) {
            bail!(
                "trace tick {i}: mem_available_bytes {} above the board's {mem_total_bytes}",
                r.mem_available_bytes
            );
        }
        Ok(Simulated { rows, pos: 0, mem_total_bytes, own_bytes: 0, n_rails: n_rails.min(super::MAX_RAILS) })
    }

    /// Open the board's `trace` file (absolute: `build.rs` resolves a board file's relative `trace`
    /// against the repository, so the working directory does not matter).
    pub fn open_for_board(board: &Board) -> Result<Simulated> {
        let path =
            board.telemetry.trace.with_context(|| format!("board {}: no telemetry.trace", board.name))?;
        let rows = load_trace(Path::new(path))?;
        Simulated::new(rows, board.total_memory_bytes, board.telemetry.rails.len().max(1))
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Jump to row `pos` (modulo the length).
    pub fn seek(&mut self, pos: usize) {
        self.pos = pos % self.rows.len();
    }
}

impl Source for Simulated {
    fn sample(&mut self, out: &mut Sample) -> Result<(), TelemetryError> {
        let r = self.rows[self.pos];
        self.pos = (self.pos + 1) % self.rows.len();
        out.mem_total_bytes = self.mem_total_bytes;
        out.mem_available_bytes = r.mem_available_bytes.saturating_sub(self.own_bytes);
        out.power_mw = r.power_mw;
        out.rail_mw.clear();
        for i in 0..self.n_rails {
            let _ = out.rail_mw.push(if i == 0 { r.power_mw } else { 0 });
        }
        out.gpu_load_permille = r.gpu_load_permille;
        out.valid = Valid::MEM | Valid::POWER | Valid::LOAD;
        Ok(())
    }

    fn name(&self) -> &'static str {
        "simulated"
    }

    fn set_own_usage(&mut self, bytes: u64) {
        self.own_bytes = bytes;
    }
}

/// Read a trace file. Ticks must count 0, 1, 2, …; `#` lines are comments.
pub fn load_trace(path: &Path) -> Result<Vec<TraceRow>> {
    let text = crate::input::read_to_string(path, "trace", crate::input::limit::TEXT)?;
    parse_trace(&text).with_context(|| format!("trace {}", path.display()))
}

/// Parse trace CSV text (see [`load_trace`]).
pub fn parse_trace(text: &str) -> Result<Vec<TraceRow>> {
    let mut rows = Vec::new();
    let mut header = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !header {
            if line != TRACE_HEADER {
                bail!("line {}: expected header `{TRACE_HEADER}`", i + 1);
            }
            header = true;
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != 4 {
            bail!("line {}: expected 4 fields, found {}", i + 1, f.len());
        }
        let num = |k: usize| -> Result<u64> {
            f[k].parse::<u64>().with_context(|| format!("line {}: field {} `{}`", i + 1, k + 1, f[k]))
        };
        if num(0)? != rows.len() as u64 {
            bail!("line {}: tick {} out of order (expected {})", i + 1, f[0], rows.len());
        }
        let power = u32::try_from(num(2)?).with_context(|| format!("line {}: power_mw too large", i + 1))?;
        let load = num(3)?;
        if load > 1000 {
            bail!("line {}: gpu_load_permille {load} above 1000", i + 1);
        }
        rows.push(TraceRow { mem_available_bytes: num(1)?, power_mw: power, gpu_load_permille: load as u16 });
    }
    if !header {
        bail!("no header `{TRACE_HEADER}`");
    }
    Ok(rows)
}

/// Write a trace as CSV.
pub fn write_trace(rows: &[TraceRow], mut w: impl Write) -> io::Result<()> {
    writeln!(w, "{TRACE_HEADER}")?;
    for (t, r) in rows.iter().enumerate() {
        writeln!(w, "{t},{},{},{}", r.mem_available_bytes, r.power_mw, r.gpu_load_permille)?;
    }
    Ok(())
}

/// Where the demo trace's memory drops and power spikes sit, for tests and the generator.
pub mod demo {
    /// Ticks in the demo trace (2 minutes at 30 fps), looped.
    pub const TICKS: usize = 3600;
    pub const SEED: u64 = 0x6a65_746c_696e_6b21;
    /// Power spikes: (first tick, length, extra mW over the load-driven power).
    pub const SPIKES: [(usize, usize, u32); 5] =
        [(400, 25, 4_200), (1_100, 40, 3_600), (1_900, 12, 5_800), (2_600, 40, 3_900), (3_300, 20, 4_600)];
    /// Memory drops: (first tick, ramp ticks, hold ticks, floor bytes).
    pub const DROPS: [(usize, usize, usize, u64); 2] =
        [(1_300, 60, 240, 22_000_000), (2_850, 45, 150, 26_000_000)];
    /// Memory free of other tenants outside the drops (mean of a slow walk).
    pub const BASE_MEM: u64 = 150_000_000;
}

/// SplitMix64: a small deterministic generator (integer only, so the trace is the same bytes on
/// every platform).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Roughly normal integer noise with standard deviation about `sd` (sum of 4 uniforms).
    fn noise(&mut self, sd: i64) -> i64 {
        // Uniform on [-1, 1) has sd 1/sqrt(3); 4 of them sum to sd 2/sqrt(3) ≈ 1.155.
        let sum: i64 = (0..4).map(|_| (self.next() >> 33) as i64 - (1 << 30)).sum();
        sum * sd / ((1i64 << 30) * 1155 / 1000)
    }
}

/// The demo trace: GPU load on a slow triangle wave with noise, power following load plus noise
/// and the [`demo::SPIKES`] above the host-sim budget (10 W), and memory on a mean-reverting walk
/// around [`demo::BASE_MEM`] with the [`demo::DROPS`].
pub fn synth_demo_trace() -> Vec<TraceRow> {
    let mut rng = Rng(demo::SEED);
    let mut walk: i64 = 0;
    (0..demo::TICKS)
        .map(|t| {
            // Load: a triangle wave of period 600 ticks between 250 and 650 ‰, plus noise.
            let phase = (t % 600) as i64;
            let tri = if phase < 300 { phase } else { 600 - phase };
            let spike = demo::SPIKES.iter().find(|&&(s, n, _)| t >= s && t < s + n).map(|s| s.2);
            let mut load = 250 + tri * 400 / 300 + rng.noise(40);
            if spike.is_some() {
                load = 940 + rng.noise(20);
            }
            let load = load.clamp(0, 1000);
            // Power: 5.2 W idle + 3.5 mW per ‰ of load, noise, spikes.
            let power = 5_200 + load * 7 / 2 + rng.noise(250) + spike.map_or(0, i64::from);
            // Memory: an Ornstein-Uhlenbeck walk (sd ~ 4 MB), noise, and the drops.
            walk = walk - walk / 50 + rng.noise(800_000);
            let mut mem = demo::BASE_MEM as i64 + walk + rng.noise(300_000);
            for &(start, ramp, hold, floor) in &demo::DROPS {
                let depth = mem - floor as i64;
                let k = t as i64 - start as i64;
                let (ramp, hold) = (ramp as i64, hold as i64);
                let frac_milli = if k < 0 || k >= 2 * ramp + hold {
                    0
                } else if k < ramp {
                    k * 1000 / ramp
                } else if k < ramp + hold {
                    1000
                } else {
                    (2 * ramp + hold - k) * 1000 / ramp
                };
                if frac_milli > 0 {
                    mem = mem - depth * frac_milli / 1000 + rng.noise(200_000);
                }
            }
            TraceRow {
                mem_available_bytes: mem.max(0) as u64,
                power_mw: power.max(0) as u32,
                gpu_load_permille: load as u16,
            }
        })
        .collect()
}
