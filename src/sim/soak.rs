//! The fault-injection soak (`jetlink soak`, `tests/soak.rs`): the control loop on the simulated
//! board over the demo, the evaluation frames looped so it can run for millions of ticks, while faults
//! are injected at random from a seed:
//!
//! - frames: missing, corrupt, wrong size;
//! - telemetry: reads failing, or returning garbage (impossible values);
//! - memory pressure: free memory dropping below the running set for a while;
//! - power spikes above the board's budget for a while;
//! - engines: failing (runtime error, bad output filled with NaN) or timing out, and rarely stalling
//!   past the tick deadline;
//! - the serial line: writes failing, blocking or accepting only part of a frame (the bytes are
//!   decoded as a monitor would, then discarded, so memory stays bounded).
//!
//! It checks, and reports: no panic; no allocation in the loop after the warm-up; the memory budget
//! never exceeded; a finite output for every task on every tick, flagged degraded where it was not
//! computed this tick; and the loop's fault counters equal to the injected counts, per kind.

use crate::model_set::ModelSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::alloc_count;
use crate::board::Board;
use crate::bundle::Bundle;
use crate::control::{LoopBuilder, LoopStats};
use crate::engine::{Backend, Engine, EngineError, EngineInfo};
use crate::manifest::{Manifest, ModelSpec};
use crate::recording::Recording;
use crate::sim::ReplayBackend;
use crate::sim::{Fault, Faulty};
use crate::source::{FrameError, FrameInfo, FrameSource, ReplaySource};
use crate::stream::Stream;
use crate::telemetry::{self, Sample, Source, TelemetryError};
use crate::wire::{Decoder, Message, TelemetryWriter, WriterStats};

/// Fault probabilities (per tick, per engine call or per serial write).
#[derive(Clone, Copy, Debug)]
pub struct FaultRates {
    /// Per tick: the frame is missing, corrupt or of the wrong size.
    pub frame: f64,
    /// Per tick: the telemetry read fails or returns garbage.
    pub telemetry: f64,
    /// Per tick: a memory-pressure episode starts (free memory below the running set, 1–300 ticks).
    pub pressure: f64,
    /// Per tick: a power spike starts (1.2–3× the power budget, 1–100 ticks).
    pub power_spike: f64,
    /// Per engine call: the engine fails or times out.
    pub engine: f64,
    /// Per engine call: the engine stalls past the tick deadline (then reports a timeout).
    pub stall: f64,
    /// Per serial write: the write fails or would block.
    pub serial: f64,
    /// Per serial write: only part of the bytes is accepted.
    pub partial_write: f64,
}

impl Default for FaultRates {
    fn default() -> Self {
        FaultRates {
            frame: 0.01,
            telemetry: 0.02,
            pressure: 0.002,
            power_spike: 0.002,
            engine: 0.01,
            stall: 2e-6,
            serial: 0.02,
            partial_write: 0.02,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct SoakOptions {
    pub ticks: u64,
    pub seed: u64,
    /// Ticks before allocations are counted (first periods, first adaptation task, first summary).
    pub warmup: u64,
    pub rates: FaultRates,
    /// Test hook for determinism: every this many ticks (0: never) the frame source sleeps past the
    /// tick deadline, as a loaded machine would. Not a fault: the injected faults must not change.
    pub slow_every: u64,
}

impl SoakOptions {
    pub fn new(ticks: u64, seed: u64) -> SoakOptions {
        SoakOptions {
            ticks,
            seed,
            warmup: (ticks / 10).min(2000),
            rates: FaultRates::default(),
            slow_every: 0,
        }
    }
}

/// What was injected, per kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    pub frames_missing: u64,
    pub frames_corrupt: u64,
    pub frames_wrong_size: u64,
    pub telemetry_failed: u64,
    pub telemetry_garbage: u64,
    pub pressure_episodes: u64,
    pub pressure_ticks: u64,
    pub power_spikes: u64,
    pub power_spike_ticks: u64,
    pub engine_runtime: u64,
    pub engine_bad_output: u64,
    pub engine_timeouts: u64,
    pub engine_stalls: u64,
    pub serial_errors: u64,
    pub serial_blocked: u64,
    pub serial_partial: u64,
    /// Failed writes that had only the frame's final `0x00` left to write: the writer counts the
    /// frame dropped, but the next frame's leading `0x00` completes it at the receiver.
    pub serial_failed_at_terminator: u64,
}

impl Injected {
    pub fn frames(&self) -> u64 {
        self.frames_missing + self.frames_corrupt + self.frames_wrong_size
    }
    pub fn telemetry(&self) -> u64 {
        self.telemetry_failed + self.telemetry_garbage
    }
    pub fn engines(&self) -> u64 {
        self.engine_runtime + self.engine_bad_output + self.engine_timeouts + self.engine_stalls
    }
    pub fn serial_dropped(&self) -> u64 {
        self.serial_errors + self.serial_blocked
    }
}

/// Counters shared by the injecting wrappers (atomics: no allocation, and `Send` for the sources).
#[derive(Default)]
struct Counters {
    /// The tick the loop is on (set by [`run`] before each tick): the serial faults are keyed by it.
    tick_now: AtomicU64,
    frames_missing: AtomicU64,
    frames_corrupt: AtomicU64,
    frames_wrong_size: AtomicU64,
    telemetry_failed: AtomicU64,
    telemetry_garbage: AtomicU64,
    pressure_episodes: AtomicU64,
    pressure_ticks: AtomicU64,
    power_spikes: AtomicU64,
    power_spike_ticks: AtomicU64,
    engine_runtime: AtomicU64,
    engine_bad_output: AtomicU64,
    engine_timeouts: AtomicU64,
    engine_stalls: AtomicU64,
    serial_errors: AtomicU64,
    serial_blocked: AtomicU64,
    serial_partial: AtomicU64,
    serial_failed_at_terminator: AtomicU64,
    /// Models whose engine call failed this tick (reset by the driver every tick).
    failed_mask: AtomicU64,
    /// The frame of this tick was a fault (reset every tick).
    frame_fault_now: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Injected {
        let g = |a: &AtomicU64| a.load(Relaxed);
        Injected {
            frames_missing: g(&self.frames_missing),
            frames_corrupt: g(&self.frames_corrupt),
            frames_wrong_size: g(&self.frames_wrong_size),
            telemetry_failed: g(&self.telemetry_failed),
            telemetry_garbage: g(&self.telemetry_garbage),
            pressure_episodes: g(&self.pressure_episodes),
            pressure_ticks: g(&self.pressure_ticks),
            power_spikes: g(&self.power_spikes),
            power_spike_ticks: g(&self.power_spike_ticks),
            engine_runtime: g(&self.engine_runtime),
            engine_bad_output: g(&self.engine_bad_output),
            engine_timeouts: g(&self.engine_timeouts),
            engine_stalls: g(&self.engine_stalls),
            serial_errors: g(&self.serial_errors),
            serial_blocked: g(&self.serial_blocked),
            serial_partial: g(&self.serial_partial),
            serial_failed_at_terminator: g(&self.serial_failed_at_terminator),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Relaxed);
}

/// SplitMix64: seeded, allocation-free, one per injector so that each stream is reproducible.
struct Rng(crate::links::Rng);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut r = crate::links::Rng::from_state(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.next_u64();
        Rng(r)
    }
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [0, 1).
    fn f64(&mut self) -> f64 {
        self.0.f64()
    }
    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
    /// Uniform in lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// The evaluation frames, looped for `ticks` ticks, with frame faults.
struct LoopedFrames {
    stream: Arc<Stream>,
    range: std::ops::Range<usize>,
    inner: ReplaySource,
    left: u64,
    rng: Rng,
    rate: f64,
    c: Arc<Counters>,
    /// Frames asked for so far, and the slow-down hook ([`SoakOptions::slow_every`]).
    n: u64,
    slow_every: u64,
    slow: Duration,
}

impl FrameSource for LoopedFrames {
    fn frame_len(&self) -> usize {
        self.stream.frame_len()
    }

    fn next_frame(&mut self, buf: &mut [u8]) -> Result<Option<FrameInfo>, FrameError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.n += 1;
        if self.slow_every > 0 && self.n.is_multiple_of(self.slow_every) {
            std::thread::sleep(self.slow);
        }
        if self.rng.chance(self.rate) {
            self.c.frame_fault_now.store(1, Relaxed);
            return Err(match self.rng.next() % 3 {
                0 => {
                    bump(&self.c.frames_missing);
                    FrameError::Missing
                }
                1 => {
                    bump(&self.c.frames_corrupt);
                    FrameError::Corrupt
                }
                _ => {
                    bump(&self.c.frames_wrong_size);
                    FrameError::WrongSize { got: buf.len() / 2, expected: buf.len() }
                }
            });
        }
        match self.inner.next_frame(buf)? {
            Some(f) => Ok(Some(f)),
            None => {
                // Wrap around: a new pass over the evaluation frames (the Arc clone does not allocate).
                self.inner = ReplaySource::new(self.stream.clone(), self.range.clone());
                self.inner.next_frame(buf)
            }
        }
    }
}

/// Memory-pressure episodes and power spikes on top of the simulated trace. The values stay
/// plausible (these are not telemetry faults): the loop must shed and throttle, not count faults.
struct Pressure<S> {
    inner: S,
    rng: Rng,
    rates: FaultRates,
    board: &'static Board,
    /// Ticks left in the current episode, and the memory available during it.
    mem_left: u64,
    mem_available: u64,
    power_left: u64,
    power_mw: u32,
    c: Arc<Counters>,
}

impl<S: Source> Source for Pressure<S> {
    fn sample(&mut self, out: &mut Sample) -> Result<(), TelemetryError> {
        let r = self.inner.sample(out);
        if self.mem_left == 0 && self.rng.chance(self.rates.pressure) {
            self.mem_left = self.rng.range(1, 300);
            // Free memory from nothing to the reserve plus half the model budget: below the running
            // set most of the time.
            let span = self.board.reserve_bytes + self.board.model_budget_bytes / 2;
            self.mem_available = self.rng.range(0, span);
            bump(&self.c.pressure_episodes);
        }
        if self.power_left == 0 && self.rng.chance(self.rates.power_spike) {
            self.power_left = self.rng.range(1, 100);
            let f = 1.2 + 1.8 * self.rng.f64();
            self.power_mw = (self.board.power_budget_mw as f64 * f) as u32;
            bump(&self.c.power_spikes);
        }
        if r.is_ok() && self.mem_left > 0 {
            self.mem_left -= 1;
            bump(&self.c.pressure_ticks);
            out.mem_available_bytes = out.mem_available_bytes.min(self.mem_available);
        }
        if r.is_ok() && self.power_left > 0 {
            self.power_left -= 1;
            bump(&self.c.power_spike_ticks);
            out.power_mw = self.power_mw;
            if let Some(r0) = out.rail_mw.first_mut() {
                *r0 = self.power_mw;
            }
        }
        r
    }
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn set_own_usage(&mut self, bytes: u64) {
        self.inner.set_own_usage(bytes)
    }
}

/// Replay engines that fail, time out or stall at random.
struct ChaosBackend {
    inner: ReplayBackend,
    seed: u64,
    rates: FaultRates,
    stall: Duration,
    c: Arc<Counters>,
}

struct ChaosEngine {
    inner: Box<dyn Engine>,
    model: u32,
    rng: Rng,
    rates: FaultRates,
    stall: Duration,
    c: Arc<Counters>,
}

impl Backend for ChaosBackend {
    fn name(&self) -> &'static str {
        "replay+faults"
    }
    fn load(&self, spec: &ModelSpec, path: &Path) -> Result<Box<dyn Engine>> {
        let model = self.inner.recording.model_index(&spec.name).unwrap_or(0) as u32;
        Ok(Box::new(ChaosEngine {
            inner: self.inner.load(spec, path)?,
            model,
            rng: Rng::new(self.seed, 100 + model as u64),
            rates: self.rates,
            stall: self.stall,
            c: self.c.clone(),
        }))
    }
}

impl Engine for ChaosEngine {
    fn info(&self) -> &EngineInfo {
        self.inner.info()
    }
    fn memory_bytes(&self) -> u64 {
        self.inner.memory_bytes()
    }
    fn set_frame(&mut self, index: u32) {
        self.inner.set_frame(index);
    }
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError> {
        let fail = |c: &Counters, m: u32| c.failed_mask.fetch_or(1 << m, Relaxed);
        if self.rng.chance(self.rates.stall) {
            std::thread::sleep(self.stall);
            bump(&self.c.engine_stalls);
            fail(&self.c, self.model);
            return Err(EngineError::Timeout);
        }
        if self.rng.chance(self.rates.engine) {
            fail(&self.c, self.model);
            return Err(match self.rng.next() % 3 {
                0 => {
                    bump(&self.c.engine_runtime);
                    EngineError::Runtime
                }
                1 => {
                    bump(&self.c.engine_bad_output);
                    output.fill(f32::NAN);
                    EngineError::BadOutput
                }
                _ => {
                    bump(&self.c.engine_timeouts);
                    EngineError::Timeout
                }
            });
        }
        self.inner.run(input, output)
    }
}

/// A serial line that fails, blocks and accepts partial writes at random. What it accepts is
/// decoded (as the monitor would) and dropped, so memory stays bounded however long the soak runs.
///
/// Every decision is a function of the seed, the tick, the frame's place among the tick's frames
/// and the write attempt within the frame, never of a call count or a length that timing can
/// change: `DeadlineMiss` events (sent only when a tick ran late) pass untouched and take no place,
/// and a partial write cuts 1 to 8 bytes into a frame (every frame is longer), so the size of a
/// Tick's `tick_us` varint does not matter. Only a frame's first write may be partial.
pub struct ChaosWriter {
    seed: u64,
    rates: FaultRates,
    c: Arc<Counters>,
    decoder: Decoder,
    /// The tick of the frames being counted, and the next frame's place in it.
    tick: u64,
    frame_in_tick: u64,
    /// Bytes of the current frame still to come (after a partial write), and that write's attempt.
    left: usize,
    attempt: u64,
    /// The current frame's key (tick and place), and whether it is exempt (a DeadlineMiss event).
    key: u64,
    exempt: bool,
    /// Messages decoded from the accepted bytes, and the bytes accepted.
    pub decoded: u64,
    pub bytes: u64,
}

impl ChaosWriter {
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// A new frame starts with `buf` (the writer hands over whole frames, a leading `0x00`
    /// included after a broken one): key it, and exempt it if timing produced it.
    fn start_frame(&mut self, buf: &[u8]) {
        let tick = self.c.tick_now.load(Relaxed);
        if tick != self.tick {
            self.tick = tick;
            self.frame_in_tick = 0;
        }
        let body = buf.iter().position(|&b| b != 0).map_or(&buf[..0], |i| &buf[i..]);
        let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
        let mut tmp = [0u8; crate::wire::DECODE_BUF];
        self.exempt = end <= tmp.len() && {
            tmp[..end].copy_from_slice(&body[..end]);
            matches!(
                crate::wire::decode_frame(&mut tmp[..end]),
                Ok(Message::Event(e)) if e.code == crate::wire::EventCode::DeadlineMiss
            )
        };
        self.key = (tick << 16) | self.frame_in_tick.min(0xFFF) << 4;
        self.attempt = 0;
        if !self.exempt {
            self.frame_in_tick += 1;
        }
    }

    fn accept(&mut self, bytes: &[u8]) {
        let mut decoded = 0;
        self.decoder.feed(bytes, |_m: Message| decoded += 1);
        self.decoded += decoded;
        self.bytes += bytes.len() as u64;
    }
}

impl embedded_io::ErrorType for ChaosWriter {
    type Error = crate::serial::SerialError;
}

impl embedded_io::Write for ChaosWriter {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        use embedded_io::ErrorKind;
        if self.left == 0 {
            self.start_frame(buf);
        } else {
            self.attempt += 1;
        }
        if self.exempt {
            self.left = 0;
            self.accept(buf);
            return Ok(buf.len());
        }
        // One generator per (seed, tick, frame, attempt): nothing carries over between writes.
        let mut rng = Rng::new(self.seed, (1 << 63) | self.key | self.attempt.min(0xF));
        if rng.chance(self.rates.serial) {
            self.left = 0;
            if buf == [0] {
                bump(&self.c.serial_failed_at_terminator);
            }
            return Err(crate::serial::SerialError(if rng.next() % 2 == 0 {
                bump(&self.c.serial_errors);
                ErrorKind::Other
            } else {
                // "Would block" (a full tty buffer): the writer drops the frame the same way.
                bump(&self.c.serial_blocked);
                ErrorKind::TimedOut
            }));
        }
        let mut n = buf.len();
        if self.attempt == 0 && n > 1 && rng.chance(self.rates.partial_write) {
            bump(&self.c.serial_partial);
            n = (rng.range(1, 8) as usize).min(n - 1);
        }
        self.left = buf.len() - n;
        self.accept(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// The demo workload, loaded once.
pub struct SoakInputs {
    pub manifest: Manifest,
    pub bundle: Bundle,
    pub stream: Arc<Stream>,
    pub reference: Arc<Recording>,
}

impl SoakInputs {
    /// Load the manifest, its stream and reference, and the bundle as the firmware does (signature by
    /// the board's `bundle-key` first).
    pub fn load(manifest: &Path, bundle: &Path, board: &Board) -> Result<SoakInputs> {
        let m = Manifest::load(manifest)?;
        let b = crate::signing::load_trusted(bundle, &m, board)
            .with_context(|| format!("--bundle {}: refused", bundle.display()))?;
        let stream = Arc::new(
            Stream::load(&m.path_of(&m.stream))
                .with_context(|| format!("stream of {}", manifest.display()))?,
        );
        let r = m.reference.as_ref().with_context(|| {
            format!(
                "{}: the soak replays the reference recording; the manifest names none",
                manifest.display()
            )
        })?;
        let reference = Arc::new(Recording::load(&m.path_of(r))?);
        ensure!(
            stream.train_end < stream.len(),
            "{}: the stream has no evaluation frames",
            manifest.display()
        );
        Ok(SoakInputs { manifest: m, bundle: b, stream, reference })
    }
}

/// The figures of one soak.
#[derive(Clone, Debug)]
pub struct SoakReport {
    pub opts: SoakOptions,
    pub board: &'static str,
    pub wall_s: f64,
    pub stats: LoopStats,
    pub writer: WriterStats,
    pub injected: Injected,
    /// Loop allocations after the warm-up (our code, engines excluded).
    pub allocations_after_warmup: u64,
    pub ticks_measured: u64,
    /// Ticks with a non-finite output, and ticks where a task that was not computed was not flagged.
    pub non_finite_ticks: u64,
    pub unflagged_ticks: u64,
    pub budget_bytes: u64,
    pub telemetry_failures: u64,
    pub decoded_messages: u64,
    pub decoder_corrupt: u64,
    pub serial_bytes: u64,
    /// Frames the writer had dropped before the final flush (what the loop's counter saw).
    pub dropped_before_finish: u64,
}

/// One invariant of the soak: whether it held, its line in the report, and in words what failed.
/// [`SoakReport::checks`] is the one place the checks are written; the report's lines and the
/// pass/fail verdict both come from it, so they cannot disagree.
#[derive(Clone, Debug)]
pub struct Check {
    pub ok: bool,
    pub line: String,
    pub failure: String,
}

impl SoakReport {
    pub fn passed(&self) -> bool {
        self.checks().iter().all(|c| c.ok)
    }

    /// Each check that failed, in words (empty when the soak passed).
    pub fn failures(&self) -> Vec<String> {
        self.checks().into_iter().filter(|c| !c.ok).map(|c| c.failure).collect()
    }

    /// Every invariant the soak checks.
    pub fn checks(&self) -> Vec<Check> {
        let (s, i, w) = (&self.stats, &self.injected, &self.writer);
        let check = |ok: bool, line: String, failure: String| Check { ok, line, failure };
        vec![
            check(
                s.ticks == self.opts.ticks,
                format!("ran {} ticks of {} asked", s.ticks, self.opts.ticks),
                format!("{} ticks ran, {} asked", s.ticks, self.opts.ticks),
            ),
            check(
                self.allocations_after_warmup == 0,
                format!(
                    "allocations in the loop after {} warm-up ticks: {} over {} ticks",
                    self.opts.warmup, self.allocations_after_warmup, self.ticks_measured
                ),
                format!("{} allocations in the loop after the warm-up", self.allocations_after_warmup),
            ),
            check(
                s.budget_violations == 0 && s.peak_mem <= self.budget_bytes,
                format!(
                    "memory: over budget on {} ticks; peak {:.2} MB, board budget {:.2} MB, lowest budget {:.2} MB",
                    s.budget_violations,
                    s.peak_mem as f64 / 1e6,
                    self.budget_bytes as f64 / 1e6,
                    s.min_budget as f64 / 1e6
                ),
                format!(
                    "over the memory budget on {} ticks; peak memory {} against the board budget {}",
                    s.budget_violations, s.peak_mem, self.budget_bytes
                ),
            ),
            check(
                self.non_finite_ticks == 0 && self.unflagged_ticks == 0,
                format!(
                    "outputs: non-finite on {} ticks, not flagged degraded on {} ticks; {} task outputs delivered degraded",
                    self.non_finite_ticks, self.unflagged_ticks, s.degraded_outputs
                ),
                format!(
                    "non-finite outputs on {} ticks; outputs not computed but not flagged degraded on {} ticks",
                    self.non_finite_ticks, self.unflagged_ticks
                ),
            ),
            check(
                i.frames() == s.frame_faults,
                format!(
                    "frame faults: injected {} ({} missing, {} corrupt, {} wrong size), counted {}",
                    i.frames(),
                    i.frames_missing,
                    i.frames_corrupt,
                    i.frames_wrong_size,
                    s.frame_faults
                ),
                format!("frame faults: {} injected, {} counted", i.frames(), s.frame_faults),
            ),
            check(
                i.telemetry() == s.telemetry_faults && s.telemetry_faults == self.telemetry_failures,
                format!(
                    "telemetry faults: injected {} ({} failed, {} garbage), counted {} (source failures {})",
                    i.telemetry(),
                    i.telemetry_failed,
                    i.telemetry_garbage,
                    s.telemetry_faults,
                    self.telemetry_failures
                ),
                format!(
                    "telemetry faults: {} injected, {} counted by the loop, {} by the source",
                    i.telemetry(),
                    s.telemetry_faults,
                    self.telemetry_failures
                ),
            ),
            check(
                i.engines() == s.engine_faults,
                format!(
                    "engine faults: injected {} ({} runtime, {} bad output, {} timeout, {} stalled {} ms), counted {}",
                    i.engines(),
                    i.engine_runtime,
                    i.engine_bad_output,
                    i.engine_timeouts,
                    i.engine_stalls,
                    self.opts_stall_ms(),
                    s.engine_faults
                ),
                format!("engine faults: {} injected, {} counted", i.engines(), s.engine_faults),
            ),
            check(
                i.serial_dropped() == w.dropped && self.dropped_before_finish == s.serial_drops,
                format!(
                    "serial: injected {} failed and {} blocked writes, {} partial; frames dropped {} (loop counter {}), write errors {}",
                    i.serial_errors,
                    i.serial_blocked,
                    i.serial_partial,
                    w.dropped,
                    s.serial_drops,
                    w.write_errors
                ),
                format!(
                    "serial: {} failed writes injected, {} frames dropped by the writer, {} counted by the loop",
                    i.serial_dropped(),
                    w.dropped,
                    s.serial_drops
                ),
            ),
            check(
                self.decoded_messages == w.frames + i.serial_failed_at_terminator,
                format!(
                    "serial stream decodes: {} messages from {} bytes ({} frames written whole, {} dropped short of only their final 0x00 and completed by the next frame), {} broken frames skipped",
                    self.decoded_messages,
                    self.serial_bytes,
                    w.frames,
                    i.serial_failed_at_terminator,
                    self.decoder_corrupt
                ),
                format!(
                    "serial stream: {} messages decoded, {} written whole and {} completed by the next frame's delimiter",
                    self.decoded_messages, w.frames, i.serial_failed_at_terminator
                ),
            ),
            check(
                s.deadline_misses >= i.engine_stalls,
                format!(
                    "deadline misses: {} (engine stalls injected {})",
                    s.deadline_misses, i.engine_stalls
                ),
                format!("{} deadline misses for {} injected stalls", s.deadline_misses, i.engine_stalls),
            ),
        ]
    }

    /// The report as printed by `jetlink soak`.
    pub fn render(&self) -> String {
        let (s, i) = (&self.stats, &self.injected);
        let mut o = String::new();
        let mut line = |t: String| {
            o.push_str(&t);
            o.push('\n');
        };
        line(format!(
            "soak on board {}: {} ticks, seed {}, {:.1} s ({:.2} us per tick)",
            self.board,
            s.ticks,
            self.opts.seed,
            self.wall_s,
            1e6 * self.wall_s / s.ticks.max(1) as f64
        ));
        line("  ok   no panic".into());
        let checks = self.checks();
        for c in &checks {
            line(format!("  {} {}", if c.ok { "ok  " } else { "FAIL" }, c.line));
        }
        line(format!(
            "  pressure: {} memory episodes over {} ticks, {} power spikes over {} ticks -> {} sheds, {} throttles, {} schedule changes",
            i.pressure_episodes,
            i.pressure_ticks,
            i.power_spikes,
            i.power_spike_ticks,
            s.sheds,
            s.throttles,
            s.schedule_changes
        ));
        line(format!(
            "  work: accuracy kept {}, executions saved {:.1}%, {} adaptation tasks, max tick {:.2} ms",
            s.accuracy_all().map_or("-".into(), |a| format!("{:.1}%", 100.0 * a)),
            100.0 * s.executions_saved(s.n_models),
            s.adapt_tasks,
            s.max_tick_us as f64 / 1e3
        ));
        for c in checks.iter().filter(|c| !c.ok) {
            line(format!("FAILED: {}", c.failure));
        }
        line(if checks.iter().all(|c| c.ok) { "soak passed".into() } else { "soak FAILED".into() });
        o
    }

    fn opts_stall_ms(&self) -> u32 {
        stall_for(self.board_period_ms()).as_millis() as u32
    }

    fn board_period_ms(&self) -> u32 {
        crate::board::by_name(self.board).map_or(33, |b| b.period_ms)
    }
}

fn stall_for(period_ms: u32) -> Duration {
    Duration::from_millis(period_ms as u64 + 5)
}

/// Run the soak on `board` (its simulated telemetry trace underneath the injected faults).
pub fn run(inputs: &SoakInputs, board: &'static Board, opts: &SoakOptions) -> Result<SoakReport> {
    ensure!(opts.ticks > 0, "--ticks must be above 0");
    ensure!(
        opts.warmup < opts.ticks,
        "the warm-up ({}) must be shorter than --ticks ({})",
        opts.warmup,
        opts.ticks
    );
    // The allocation check needs the counting allocator installed by the binary or test.
    let before = alloc_count::loop_allocations();
    std::hint::black_box(Vec::<u8>::with_capacity(16));
    ensure!(
        alloc_count::loop_allocations() > before,
        "the counting allocator is not installed (#[global_allocator] static A: jetlink::alloc_count::CountingAllocator)"
    );
    let c = Arc::new(Counters::default());
    let d = inputs;
    let range = d.stream.train_end..d.stream.len();
    let frames = LoopedFrames {
        stream: d.stream.clone(),
        range: range.clone(),
        inner: ReplaySource::new(d.stream.clone(), range),
        left: opts.ticks,
        rng: Rng::new(opts.seed, 1),
        rate: opts.rates.frame,
        c: c.clone(),
        n: 0,
        slow_every: opts.slow_every,
        slow: stall_for(board.period_ms),
    };
    let sim = telemetry::sim::Simulated::open_for_board(board)?;
    let pressure = Pressure {
        inner: sim,
        rng: Rng::new(opts.seed, 2),
        rates: opts.rates,
        board,
        mem_left: 0,
        mem_available: 0,
        power_left: 0,
        power_mw: 0,
        c: c.clone(),
    };
    let mut trng = Rng::new(opts.seed, 3);
    let (tc, trate) = (c.clone(), opts.rates.telemetry);
    let faulty = Faulty::new(pressure, move |_n| {
        if !trng.chance(trate) {
            return None;
        }
        Some(if trng.next() % 2 == 0 {
            bump(&tc.telemetry_failed);
            Fault::Fail(if trng.next() % 2 == 0 {
                TelemetryError::Unreadable
            } else {
                TelemetryError::Injected
            })
        } else {
            bump(&tc.telemetry_garbage);
            Fault::Garbage
        })
    });
    let tel = telemetry::Telemetry::new(Box::new(faulty), Sample::fallback(board));
    let backend = ChaosBackend {
        inner: ReplayBackend { recording: d.reference.clone() },
        seed: opts.seed,
        rates: opts.rates,
        stall: stall_for(board.period_ms),
        c: c.clone(),
    };
    let writer = ChaosWriter {
        seed: opts.seed,
        rates: opts.rates,
        c: c.clone(),
        decoder: Decoder::new(),
        tick: 0,
        frame_in_tick: 0,
        left: 0,
        attempt: 0,
        key: 0,
        exempt: false,
        decoded: 0,
        bytes: 0,
    };
    let mut ctl = LoopBuilder::new(board, d.manifest.clone(), d.bundle.clone(), d.stream.clone())
        .reference(Some(d.reference.clone()))
        .engines(Box::new(backend))
        .telemetry(tel)
        .build(frames, TelemetryWriter::new(writer))?;
    let n = ctl.n_models();
    let all = ModelSet::all(n);
    let (mut non_finite, mut unflagged, mut measured) = (0u64, 0u64, 0u64);
    let mut allocs_at_warmup = None;
    let start = Instant::now();
    loop {
        if ctl.stats().ticks == opts.warmup {
            allocs_at_warmup = Some(alloc_count::loop_allocations());
        }
        c.failed_mask.store(0, Relaxed);
        c.frame_fault_now.store(0, Relaxed);
        c.tick_now.store(ctl.stats().ticks, Relaxed);
        if !ctl.tick() {
            break;
        }
        if allocs_at_warmup.is_some() {
            measured += 1;
        }
        if !ctl.outputs().iter().all(|v| v.is_finite()) {
            non_finite += 1;
        }
        // A task not computed this tick (its engine failed, or no frame) must be flagged degraded.
        let t = ctl.last().tick;
        let must_flag = if c.frame_fault_now.load(Relaxed) != 0 {
            all
        } else {
            ModelSet::try_from_u64(c.failed_mask.load(Relaxed)).unwrap_or(all) & ctl.active() & all
        };
        if !(must_flag - (t.degraded | t.held)).is_empty() {
            unflagged += 1;
        }
    }
    let dropped_before_finish = ctl.writer().stats().dropped;
    ctl.finish();
    let wall_s = start.elapsed().as_secs_f64();
    let allocations_after_warmup = alloc_count::loop_allocations() - allocs_at_warmup.unwrap_or(0);
    let stats = *ctl.stats();
    let wstats = ctl.writer().stats();
    let w = ctl.writer().get_ref();
    let injected = c.snapshot();
    let r = SoakReport {
        opts: *opts,
        board: board.name,
        wall_s,
        stats,
        writer: wstats,
        injected,
        allocations_after_warmup,
        ticks_measured: measured,
        non_finite_ticks: non_finite,
        unflagged_ticks: unflagged,
        budget_bytes: board.model_budget_bytes,
        telemetry_failures: ctl.telemetry().stats().failures,
        decoded_messages: w.decoded,
        decoder_corrupt: w.decoder().stats().corrupt,
        serial_bytes: w.bytes,
        dropped_before_finish,
    };
    Ok(r)
}
