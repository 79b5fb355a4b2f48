//! Memory, power and GPU-load telemetry: one [`Source`] trait over Tegra sysfs, NVML and a replayed
//! trace, chosen by the board file, and a [`Telemetry`] wrapper that validates every sample, keeps
//! the last good one and counts failures, so the control loop never stops on a bad reading.
//!
//! Sources are opened once (paths resolved, files opened, traces loaded); [`Source::sample`] then
//! reads into a caller-owned [`Sample`] without allocating.

pub mod nvml;
pub mod sim;
pub mod tegra;

use std::path::{Path, PathBuf};

use crate::board::{self, Board};

/// Most power rails a sample carries.
pub const MAX_RAILS: usize = 8;

/// Readings above this are garbage, not power (a 2 kW edge box is already absurd).
pub const MAX_PLAUSIBLE_POWER_MW: u32 = 2_000_000;

/// Why a sample could not be had. `Copy`, so the per-tick path reports it without allocating; the
/// discriminant is what `wire::EventCode::TelemetryFault` carries in `a`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum TelemetryError {
    /// The source does not exist here (no NVML library, no hwmon device, no trace).
    Unavailable = 1,
    /// A file or device that was there could not be read.
    Unreadable = 2,
    /// A value could not be parsed, or is impossible (negative, absurd, available > total).
    Garbage = 3,
    /// An injected failure (tests, fault drills).
    Injected = 4,
}

impl core::fmt::Display for TelemetryError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            TelemetryError::Unavailable => "telemetry source unavailable",
            TelemetryError::Unreadable => "telemetry source unreadable",
            TelemetryError::Garbage => "telemetry value is garbage",
            TelemetryError::Injected => "injected telemetry fault",
        })
    }
}

impl std::error::Error for TelemetryError {}

/// Which fields of a [`Sample`] hold a reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Valid(u8);

impl Valid {
    pub const MEM: Valid = Valid(1 << 0);
    pub const GPU_MEM: Valid = Valid(1 << 1);
    pub const POWER: Valid = Valid(1 << 2);
    pub const LOAD: Valid = Valid(1 << 3);
    pub const NONE: Valid = Valid(0);

    pub fn contains(self, other: Valid) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: Valid) {
        self.0 |= other.0;
    }

    pub fn bits(self) -> u8 {
        self.0
    }
}

impl core::ops::BitOr for Valid {
    type Output = Valid;
    fn bitor(self, rhs: Valid) -> Valid {
        Valid(self.0 | rhs.0)
    }
}

/// One reading. Sources fill the fields they have and mark them in `valid`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub mem_total_bytes: u64,
    /// Memory the system could give out now (MemAvailable; NVML free on a discrete GPU).
    pub mem_available_bytes: u64,
    /// GPU memory in use (NvMapMemUsed on Jetson, NVML used on a discrete GPU).
    pub gpu_mem_used_bytes: u64,
    /// Sum of the board's `in-total` rails.
    pub power_mw: u32,
    /// Every rail of the board file, in its order.
    pub rail_mw: heapless::Vec<u32, MAX_RAILS>,
    pub gpu_load_permille: u16,
    pub valid: Valid,
}

impl Sample {
    /// What a loop should assume before any good reading: the board's static figures (the
    /// configured model budget plus reserve available, no power reading), with nothing valid.
    pub fn fallback(board: &Board) -> Sample {
        Sample {
            mem_total_bytes: board.total_memory_bytes,
            mem_available_bytes: board.model_budget_bytes + board.reserve_bytes,
            ..Sample::default()
        }
    }

    /// Reset to empty, keeping the rail buffer's storage.
    pub fn clear(&mut self) {
        self.mem_total_bytes = 0;
        self.mem_available_bytes = 0;
        self.gpu_mem_used_bytes = 0;
        self.power_mw = 0;
        self.rail_mw.clear();
        self.gpu_load_permille = 0;
        self.valid = Valid::NONE;
    }

    /// Copy `other` into `self` without allocating.
    pub fn copy_from(&mut self, other: &Sample) {
        self.clone_from(other);
    }

    /// Impossible values: available above total, absurd power, load above 1000 ‰.
    pub fn check(&self) -> Result<(), TelemetryError> {
        let mem_ok = !self.valid.contains(Valid::MEM)
            || (self.mem_total_bytes > 0 && self.mem_available_bytes <= self.mem_total_bytes);
        let gpu_ok = !self.valid.contains(Valid::GPU_MEM)
            || self.mem_total_bytes == 0
            || self.gpu_mem_used_bytes <= self.mem_total_bytes;
        let power_ok = !self.valid.contains(Valid::POWER)
            || (self.power_mw <= MAX_PLAUSIBLE_POWER_MW
                && self.rail_mw.iter().all(|&r| r <= MAX_PLAUSIBLE_POWER_MW));
        let load_ok = !self.valid.contains(Valid::LOAD) || self.gpu_load_permille <= 1000;
        if mem_ok && gpu_ok && power_ok && load_ok { Ok(()) } else { Err(TelemetryError::Garbage) }
    }

    /// The model budget this reading allows: the board's budget, shrunk when the memory the system
    /// could give us (`mem_available` + what our models hold now, `own_bytes`) minus the reserve is
    /// smaller. Without a memory reading, the board's budget.
    pub fn model_budget_bytes(&self, board: &Board, own_bytes: u64) -> u64 {
        if !self.valid.contains(Valid::MEM) {
            return board.model_budget_bytes;
        }
        let could_have = (self.mem_available_bytes + own_bytes).saturating_sub(board.reserve_bytes);
        could_have.min(board.model_budget_bytes)
    }
}

/// A telemetry source. `sample` fills `out` (cleared by the caller) without allocating.
pub trait Source: Send {
    fn sample(&mut self, out: &mut Sample) -> Result<(), TelemetryError>;
    fn name(&self) -> &'static str;
    /// Memory our own models hold now. Only the simulated source uses it: its trace is memory free
    /// of other tenants, and it reports `mem_available` net of this, as a real board would.
    fn set_own_usage(&mut self, _bytes: u64) {}
}

/// A source that could not be opened: every sample is `Unavailable`.
pub struct Dead {
    pub why: TelemetryError,
}

impl Source for Dead {
    fn sample(&mut self, _out: &mut Sample) -> Result<(), TelemetryError> {
        Err(self.why)
    }
    fn name(&self) -> &'static str {
        "dead"
    }
}

/// Counts kept by [`Telemetry`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TelemetryStats {
    pub samples: u64,
    pub good: u64,
    pub failures: u64,
    /// Failures since the last good sample.
    pub consecutive_failures: u32,
    pub last_error: Option<TelemetryError>,
}

/// The source the loop holds: polls it, validates, keeps the last good sample (or the board's
/// fallback before the first), counts failures. Never panics.
pub struct Telemetry {
    source: Box<dyn Source>,
    latest: Sample,
    scratch: Sample,
    have_good: bool,
    stats: TelemetryStats,
}

impl Telemetry {
    /// Wrap `source`; `fallback` is what [`Telemetry::latest`] gives before the first good sample.
    pub fn new(source: Box<dyn Source>, fallback: Sample) -> Telemetry {
        Telemetry {
            source,
            latest: fallback,
            scratch: Sample::default(),
            have_good: false,
            stats: Default::default(),
        }
    }

    /// Take one sample. On success [`Telemetry::latest`] is fresh; on failure it keeps the last
    /// good sample and the error is returned (and counted) for the loop to flag.
    pub fn poll(&mut self) -> Result<(), TelemetryError> {
        self.stats.samples += 1;
        self.scratch.clear();
        let r = self.source.sample(&mut self.scratch).and_then(|()| self.scratch.check());
        match r {
            Ok(()) => {
                self.latest.copy_from(&self.scratch);
                self.have_good = true;
                self.stats.good += 1;
                self.stats.consecutive_failures = 0;
                Ok(())
            }
            Err(e) => {
                self.stats.failures += 1;
                self.stats.consecutive_failures = self.stats.consecutive_failures.saturating_add(1);
                self.stats.last_error = Some(e);
                Err(e)
            }
        }
    }

    /// The last good sample, or the fallback if there has been none.
    pub fn latest(&self) -> &Sample {
        &self.latest
    }

    /// Whether any sample has been good.
    pub fn has_reading(&self) -> bool {
        self.have_good
    }

    pub fn stats(&self) -> TelemetryStats {
        self.stats
    }

    pub fn source_name(&self) -> &'static str {
        self.source.name()
    }

    /// Tell the source how much memory our models hold (see [`Source::set_own_usage`]).
    pub fn set_own_usage(&mut self, bytes: u64) {
        self.source.set_own_usage(bytes)
    }
}

/// Resolve a board-file path: absolute paths are taken under `root` (`/` on a board, a fake tree
/// in tests), relative ones (the simulated trace) against the working directory.
pub fn resolve(root: &Path, path: &str) -> PathBuf {
    match path.strip_prefix('/') {
        Some(rel) => root.join(rel),
        None => PathBuf::from(path),
    }
}

/// Open the source the board file names. A source that cannot be opened gives a [`Telemetry`] over
/// a [`Dead`] source (logged), so the loop runs on the board's fallback figures.
pub fn open_for_board(board: &Board, root: &Path) -> Telemetry {
    let fallback = Sample::fallback(board);
    let source: anyhow::Result<Box<dyn Source>> = match board.telemetry.source {
        board::TelemetrySource::Simulated => {
            sim::Simulated::open_for_board(board).map(|s| Box::new(s) as Box<dyn Source>)
        }
        board::TelemetrySource::TegraSysfs => {
            tegra::Tegra::open(&board.telemetry, root).map(|s| Box::new(s) as Box<dyn Source>)
        }
        board::TelemetrySource::Nvml => {
            nvml::Nvml::open(board.telemetry.nvml_device.unwrap_or(0)).map(|s| Box::new(s) as Box<dyn Source>)
        }
    };
    let source = source.unwrap_or_else(|e| {
        log::warn!("telemetry for board {}: {e:#}; running on the board's static figures", board.name);
        Box::new(Dead { why: TelemetryError::Unavailable })
    });
    Telemetry::new(source, fallback)
}

/// Parse an unsigned decimal integer from ASCII, trimming whitespace. `Garbage` on anything else
/// (a sign, no digits, overflow).
pub(crate) fn parse_u64(bytes: &[u8]) -> Result<u64, TelemetryError> {
    let s = bytes.trim_ascii();
    if s.is_empty() {
        return Err(TelemetryError::Garbage);
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return Err(TelemetryError::Garbage);
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add((b - b'0') as u64))
            .ok_or(TelemetryError::Garbage)?;
    }
    Ok(v)
}
