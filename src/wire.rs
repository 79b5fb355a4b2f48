//! The serial telemetry wire format: postcard messages with a CRC-16 trailer, COBS-framed and
//! terminated by `0x00` (spec: `docs/wire-format.md`), an allocation-free encoder, writer and
//! resynchronising decoder, and the line-bandwidth arithmetic that sets the Tick decimation.

use crate::model_set::ModelSet;
use embedded_io::{Error as _, ErrorKind};
use serde::{Deserialize, Serialize};

/// Version of the wire format, sent in [`Hello::proto_version`]. Bumped on any change to a
/// message's fields; new messages and event codes are appended and keep the version. Version 2
/// added [`Tick::held`].
pub const PROTO_VERSION: u16 = 2;

/// The oldest version a [`Decoder`] still reads (after that version's Hello); its messages come
/// back in this version's types (a version-1 Tick with `held` 0).
pub const OLDEST_DECODED: u16 = 1;

/// The longest frame any message of this version encodes to, `0x00` included (a [`Hello`] with a
/// 24-byte board name and maximal varints: 52 payload bytes + 2 CRC + 1 COBS overhead + 1).
pub const MAX_FRAME: usize = 64;

/// Decoder buffer: room for frames of a later, larger version without counting them oversized.
pub const DECODE_BUF: usize = 128;

/// Bits on the line per byte (8N1: start + 8 data + stop).
pub const BITS_PER_BYTE: u32 = 10;

/// Bits of [`Tick::flags`].
pub mod flags {
    pub const DEADLINE_MISS: u8 = 1 << 0;
    pub const TELEMETRY_FAULT: u8 = 1 << 1;
    pub const ENGINE_FAULT: u8 = 1 << 2;
    pub const OVER_POWER: u8 = 1 << 3;
    pub const MEMORY_SHED: u8 = 1 << 4;
}

/// [`Tick::agreement_milli`] when no agreement was measured this tick.
pub const AGREEMENT_UNKNOWN: u16 = 0xFFFF;
/// [`Tick::adapt_task`] when no adaptation task runs.
pub const NO_ADAPT_TASK: u8 = 0xFF;

/// First message after start (and after a bundle reload): who is talking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub proto_version: u16,
    /// Firmware (crate) version: major, minor, patch.
    pub firmware: (u16, u16, u16),
    pub board: heapless::String<24>,
    /// First 8 bytes of the bundle's SHA-256.
    pub bundle_hash: [u8; 8],
    pub n_models: u8,
    pub period_ms: u32,
}

/// One control-loop tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    pub tick: u32,
    /// Input frame index.
    pub frame: u32,
    /// Models that ran (on the wire: the `u16` whose bit i is model i, [`ModelSet`]).
    pub active: ModelSet,
    /// Outputs flagged degraded.
    pub degraded: ModelSet,
    /// Outputs held from their model's last run (temporal reuse, by the policy); the age is the
    /// ticks since that run. Not degraded. (Version 2.)
    pub held: ModelSet,
    /// This tick's agreement × 1000, or [`AGREEMENT_UNKNOWN`].
    pub agreement_milli: u16,
    pub budget_kib: u32,
    pub mem_used_kib: u32,
    pub power_mw: u32,
    pub tick_us: u32,
    /// Adaptation task running this tick, or [`NO_ADAPT_TASK`].
    pub adapt_task: u8,
    /// [`flags`] bits.
    pub flags: u8,
}

/// Totals over one scheduling period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodSummary {
    pub period: u32,
    pub ticks: u32,
    pub agreement_milli: u16,
    pub executions_saved_milli: u16,
    pub flops_saved_milli: u16,
    pub peak_mem_kib: u32,
    pub deadline_misses: u32,
    pub adapt_tasks: u16,
    pub faults: u32,
}

/// What an [`Event`] reports; `a` and `b` are documented per code. Append only: the index is the
/// wire value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum EventCode {
    /// a = new budget KiB, b = old budget KiB.
    BudgetChange = 0,
    /// a = bitmask of models shed, b = memory KiB freed.
    Shed = 1,
    /// a = measured power mW, b = power budget mW.
    PowerThrottle = 2,
    /// a = new active mask, b = old active mask.
    ScheduleChange = 3,
    /// a = telemetry error code ([`crate::telemetry::TelemetryError`] as u8), b = failures so far.
    TelemetryFault = 4,
    /// a = model index, b = error code.
    EngineFault = 5,
    /// a = frame index, b = error code.
    FrameFault = 6,
    /// a = reason code, b = 0.
    BundleRejected = 7,
    /// a = task (target model), b = resource index.
    AdaptStart = 8,
    /// a = task (target model), b = new link score × 1000.
    AdaptDone = 9,
    /// a = tick time µs, b = deadline µs.
    DeadlineMiss = 10,
    /// a = new Tick decimation N (one Tick every N ticks), b = old N.
    Decimation = 11,
    /// At a period's end, from audit frames: a = estimated accuracy kept × 1000, b = half-width of
    /// its 95% interval × 1000.
    AccuracyEstimate = 12,
    /// Fused fleet links applied at a period boundary: a = the low 32 bits of their global
    /// version, b = 0.
    GlobalLinks = 13,
}

impl EventCode {
    /// Every code, in wire order.
    pub const ALL: [EventCode; 14] = [
        EventCode::BudgetChange,
        EventCode::Shed,
        EventCode::PowerThrottle,
        EventCode::ScheduleChange,
        EventCode::TelemetryFault,
        EventCode::EngineFault,
        EventCode::FrameFault,
        EventCode::BundleRejected,
        EventCode::AdaptStart,
        EventCode::AdaptDone,
        EventCode::DeadlineMiss,
        EventCode::Decimation,
        EventCode::AccuracyEstimate,
        EventCode::GlobalLinks,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub fn name(self) -> &'static str {
        match self {
            EventCode::BudgetChange => "budget-change",
            EventCode::Shed => "shed",
            EventCode::PowerThrottle => "power-throttle",
            EventCode::ScheduleChange => "schedule-change",
            EventCode::TelemetryFault => "telemetry-fault",
            EventCode::EngineFault => "engine-fault",
            EventCode::FrameFault => "frame-fault",
            EventCode::BundleRejected => "bundle-rejected",
            EventCode::AdaptStart => "adapt-start",
            EventCode::AdaptDone => "adapt-done",
            EventCode::DeadlineMiss => "deadline-miss",
            EventCode::Decimation => "decimation",
            EventCode::AccuracyEstimate => "accuracy-estimate",
            EventCode::GlobalLinks => "global-links",
        }
    }
}

/// Something that happened, at a tick: the record on the wire (a code and two numbers whose
/// meaning depends on the code). Build one from an [`EventKind`], and read it back with
/// [`Event::kind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub tick: u32,
    pub code: EventCode,
    pub a: u32,
    pub b: u32,
}

/// Defines [`EventKind`] and its two conversions from one table, so that a variant, its code and
/// its numbers' names are written once.
macro_rules! event_kinds {
    ($($(#[$doc:meta])* $name:ident { $a:ident, $b:ident })*) => {
        /// What an event says, typed. Each variant is one [`EventCode`] with its two numbers named;
        /// the wire record is the same (`code`, `a`, `b`), so typing events costs no byte (postcard
        /// writes the code and the two numbers as varints either way).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum EventKind {
            $($(#[$doc])* $name { $a: u32, $b: u32 },)*
        }

        impl EventKind {
            /// The wire code and the two numbers.
            pub fn parts(self) -> (EventCode, u32, u32) {
                match self {
                    $(EventKind::$name { $a, $b } => (EventCode::$name, $a, $b),)*
                }
            }

            /// The typed form of a wire record's code and numbers.
            pub fn from_parts(code: EventCode, a: u32, b: u32) -> EventKind {
                match code {
                    $(EventCode::$name => EventKind::$name { $a: a, $b: b },)*
                }
            }
        }
    };
}

event_kinds! {
    BudgetChange { new_kib, old_kib }
    Shed { models, freed_kib }
    PowerThrottle { power_mw, budget_mw }
    ScheduleChange { active, old_active }
    TelemetryFault { error, failures }
    EngineFault { model, error }
    /// `frame`: the index of the frame expected (the last delivered one's + 1).
    FrameFault { frame, error }
    /// `unused` is always 0.
    BundleRejected { reason, unused }
    AdaptStart { target, unit }
    AdaptDone { target, score_milli }
    DeadlineMiss { tick_us, deadline_us }
    Decimation { every, old_every }
    AccuracyEstimate { accuracy_milli, half_width_milli }
    /// `unused` is always 0.
    GlobalLinks { version, unused }
}

impl Event {
    /// The wire record of `kind` at `tick`.
    pub fn new(tick: u32, kind: EventKind) -> Event {
        let (code, a, b) = kind.parts();
        Event { tick, code, a, b }
    }

    /// What the record says, typed.
    pub fn kind(&self) -> EventKind {
        EventKind::from_parts(self.code, self.a, self.b)
    }
}

/// Every message on the line. The variant index is the first payload byte; append only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Hello(Hello),
    Tick(Tick),
    PeriodSummary(PeriodSummary),
    Event(Event),
}

/// Version 1 of the messages whose fields changed since, for decoding an older board's stream.
mod v1 {
    use serde::{Deserialize, Serialize};

    use crate::model_set::ModelSet;

    /// [`super::Tick`] without `held`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Tick {
        pub tick: u32,
        pub frame: u32,
        pub active: ModelSet,
        pub degraded: ModelSet,
        pub agreement_milli: u16,
        pub budget_kib: u32,
        pub mem_used_kib: u32,
        pub power_mw: u32,
        pub tick_us: u32,
        pub adapt_task: u8,
        pub flags: u8,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub enum Message {
        Hello(super::Hello),
        Tick(Tick),
        PeriodSummary(super::PeriodSummary),
        Event(super::Event),
    }

    impl From<Message> for super::Message {
        fn from(m: Message) -> super::Message {
            match m {
                Message::Hello(h) => super::Message::Hello(h),
                Message::PeriodSummary(s) => super::Message::PeriodSummary(s),
                Message::Event(e) => super::Message::Event(e),
                Message::Tick(t) => super::Message::Tick(super::Tick {
                    tick: t.tick,
                    frame: t.frame,
                    active: t.active,
                    degraded: t.degraded,
                    held: ModelSet::EMPTY,
                    agreement_milli: t.agreement_milli,
                    budget_kib: t.budget_kib,
                    mem_used_kib: t.mem_used_kib,
                    power_mw: t.power_mw,
                    tick_us: t.tick_us,
                    adapt_task: t.adapt_task,
                    flags: t.flags,
                }),
            }
        }
    }
}

/// Wire errors, prefixed by phase. `Copy`, so the per-tick path can count them without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The output buffer is too small for the frame.
    EncodeBufferFull,
    /// postcard refused the message (cannot happen for the types above).
    EncodeFailed,
    /// The writer failed; the frame was dropped (possibly after a partial write).
    Write(ErrorKind),
    /// The writer accepted no bytes (would block); the frame was dropped.
    WriteWouldBlock,
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WireError::EncodeBufferFull => f.write_str("encode: buffer too small for the frame"),
            WireError::EncodeFailed => f.write_str("encode: serialisation failed"),
            WireError::Write(k) => write!(f, "write: {k:?}"),
            WireError::WriteWouldBlock => f.write_str("write: writer would block, frame dropped"),
        }
    }
}

impl std::error::Error for WireError {}

/// CRC-16/IBM-3740 (a.k.a. CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor),
/// by the `crc` crate's catalogue entry; Python's `binascii.crc_hqx(data, 0xFFFF)` computes the same.
pub fn crc16(data: &[u8]) -> u16 {
    const CRC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_3740);
    CRC.checksum(data)
}

/// Encode `msg` as one frame into `buf`: COBS(postcard(msg) ++ crc16_le) ++ `0x00`.
///
/// ```
/// use jetlink::wire::{encode, Event, EventCode, Message};
/// let mut buf = [0u8; jetlink::wire::MAX_FRAME];
/// let msg = Message::Event(Event { tick: 1, code: EventCode::Shed, a: 2, b: 3 });
/// // payload 03 01 01 02 03, CRC-16 0xE85B little-endian, COBS (no zeros: one block of 7), 0x00
/// assert_eq!(encode(&msg, &mut buf).unwrap(), &[0x08, 0x03, 0x01, 0x01, 0x02, 0x03, 0x5B, 0xE8, 0x00]);
/// ```
pub fn encode<'a>(msg: &Message, buf: &'a mut [u8]) -> Result<&'a [u8], WireError> {
    let mut plain = [0u8; MAX_FRAME];
    let n = postcard::to_slice(msg, &mut plain).map_err(encode_err)?.len();
    let crc = crc16(&plain[..n]).to_le_bytes();
    let framed = postcard::to_slice_cobs(&(msg, crc), buf).map_err(encode_err)?;
    Ok(framed)
}

fn encode_err(e: postcard::Error) -> WireError {
    match e {
        postcard::Error::SerializeBufferFull => WireError::EncodeBufferFull,
        _ => WireError::EncodeFailed,
    }
}

/// Length of `msg`'s frame on the line, `0x00` included.
pub fn frame_len(msg: &Message) -> usize {
    let mut buf = [0u8; MAX_FRAME];
    encode(msg, &mut buf).map_or(0, |f| f.len())
}

/// Counts kept by a [`Decoder`]. Every byte fed ends up in exactly one of: a decoded frame, a
/// corrupt, oversized, truncated or skipped frame, an unknown-version Hello, or an empty frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Bytes fed.
    pub bytes: u64,
    /// Messages decoded.
    pub frames: u64,
    /// Frames that failed COBS, the CRC or postcard, or had bytes left between the message and
    /// its CRC (corrupt bytes, frames cut short, two frames merged by a damaged delimiter, and
    /// frames of an unknown later message type).
    pub corrupt: u64,
    /// Frames longer than the buffer, dropped up to the next `0x00`.
    pub oversized: u64,
    /// Bytes left without a closing `0x00` when the stream ended ([`Decoder::finish`]): one frame.
    pub truncated: u64,
    /// Hellos (CRC correct) announcing a protocol version other than [`PROTO_VERSION`].
    pub unknown_version: u64,
    /// Frames (CRC correct) skipped after an unknown-version Hello, until a Hello of a known one.
    pub skipped: u64,
}

impl DecodeStats {
    /// Frames lost or not decoded: corrupt, oversized, truncated, unknown-version Hellos and the
    /// frames skipped after them.
    pub fn lost(&self) -> u64 {
        self.corrupt + self.oversized + self.truncated + self.unknown_version + self.skipped
    }
}

/// Why a complete frame was not decoded (see [`decode_frame`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// COBS, CRC, postcard, a non-canonical encoding, or bytes between the message and the CRC.
    Corrupt,
    /// A Hello (CRC correct) of another protocol version: `proto_version`.
    UnknownVersion(u16),
}

/// The bytes of an unfinished frame the receiver holds: [`DECODE_BUF`] bytes, the closing `0x00`
/// included, so at most `DECODE_BUF - 1` encoded bytes.
const RX_BYTES: usize = DECODE_BUF - 1;

/// COBS-decode `enc` (a frame without its `0x00`) in place; returns the decoded length. Strict: a
/// zero byte or a block running past the end is an error.
fn cobs_decode_in_place(buf: &mut [u8]) -> Option<usize> {
    let n = buf.len();
    let (mut r, mut w) = (0usize, 0usize);
    while r < n {
        let code = buf[r] as usize;
        if code == 0 || r + code > n {
            return None;
        }
        r += 1;
        for _ in 1..code {
            let b = buf[r];
            if b == 0 {
                return None;
            }
            buf[w] = b;
            w += 1;
            r += 1;
        }
        if code < 0xFF && r < n {
            buf[w] = 0;
            w += 1;
        }
    }
    Some(w)
}

/// COBS-decode one frame (without its `0x00`; in place) and check its CRC: returns the payload
/// length (the decoded bytes before the last two, which are the CRC).
fn frame_payload(enc: &mut [u8]) -> Result<usize, FrameError> {
    let n = cobs_decode_in_place(enc).ok_or(FrameError::Corrupt)?;
    if n < 3 {
        return Err(FrameError::Corrupt);
    }
    let (payload, crc) = enc[..n].split_at(n - 2);
    if crc16(payload) != u16::from_le_bytes([crc[0], crc[1]]) {
        return Err(FrameError::Corrupt);
    }
    Ok(n - 2)
}

/// Decode a payload whose CRC was checked, in the layout of protocol `version`: a Hello of a
/// version this build does not read is refused undecoded, and the message must end exactly where
/// the CRC starts and be encoded canonically.
fn decode_payload(payload: &[u8], version: u16) -> Result<Message, FrameError> {
    // Variant 0 is Hello in every version; its first field is the version: read only that, and
    // decode the Hello in its own version's layout.
    let version = if payload[0] == 0 {
        let v = postcard::take_from_bytes::<u16>(&payload[1..]).map_err(|_| FrameError::Corrupt)?.0;
        if !(OLDEST_DECODED..=PROTO_VERSION).contains(&v) {
            return Err(FrameError::UnknownVersion(v));
        }
        v
    } else {
        version
    };
    if version == 1 {
        return canonical::<v1::Message>(payload).map(Message::from);
    }
    canonical::<Message>(payload)
}

/// Decode `payload` as a `T` that ends exactly where the CRC starts and re-encodes to the same
/// bytes (postcard accepts over-long varints; the encoder never writes them).
fn canonical<T: Serialize + serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (msg, rest) = postcard::take_from_bytes::<T>(payload).map_err(|_| FrameError::Corrupt)?;
    if !rest.is_empty() {
        return Err(FrameError::Corrupt);
    }
    let mut plain = [0u8; DECODE_BUF];
    match postcard::to_slice(&msg, &mut plain) {
        Ok(p) if p == payload => Ok(msg),
        _ => Err(FrameError::Corrupt),
    }
}

/// Decode one frame's COBS bytes (without the `0x00`; modified in place), following
/// `docs/wire-format.md`: COBS, then the CRC over everything before the last two bytes, then (a
/// Hello of another version is refused here, undecoded) postcard, which must end exactly where
/// the CRC starts.
pub fn decode_frame(enc: &mut [u8]) -> Result<Message, FrameError> {
    let n = frame_payload(enc)?;
    decode_payload(&enc[..n], PROTO_VERSION)
}

/// Decodes messages from a byte stream in arbitrary chunks, resynchronising at the next `0x00`
/// after a corrupt, truncated or oversized frame. No allocation.
///
/// After a Hello of an unknown protocol version, nothing is decoded until a Hello of this version
/// arrives: the frames in between are counted as skipped.
pub struct Decoder {
    buf: [u8; RX_BYTES],
    len: usize,
    /// Dropping an oversized frame until its `0x00`.
    discarding: bool,
    /// After an unknown-version Hello: skip frames until a known Hello.
    foreign: bool,
    /// The protocol version of the last Hello (this build's until one arrives).
    version: u16,
    stats: DecodeStats,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub const fn new() -> Self {
        Decoder {
            buf: [0; RX_BYTES],
            len: 0,
            discarding: false,
            foreign: false,
            version: PROTO_VERSION,
            stats: DecodeStats {
                bytes: 0,
                frames: 0,
                corrupt: 0,
                oversized: 0,
                truncated: 0,
                unknown_version: 0,
                skipped: 0,
            },
        }
    }

    pub fn stats(&self) -> DecodeStats {
        self.stats
    }

    /// Whether bytes of an unfinished frame are waiting for their `0x00`.
    pub fn has_partial(&self) -> bool {
        self.len > 0 || self.discarding
    }

    /// Whether frames are being skipped after a Hello of an unknown protocol version.
    pub fn skipping_unknown_version(&self) -> bool {
        self.foreign
    }

    /// End of stream: bytes of an unfinished frame are counted as one truncated frame (an
    /// oversized one being dropped was counted already) and forgotten.
    pub fn finish(&mut self) {
        if self.len > 0 {
            self.stats.truncated += 1;
        }
        self.len = 0;
        self.discarding = false;
    }

    /// Feed a chunk; `on_msg` is called for each message completed in it.
    pub fn feed(&mut self, chunk: &[u8], mut on_msg: impl FnMut(Message)) {
        self.stats.bytes += chunk.len() as u64;
        let mut rest = chunk;
        while !rest.is_empty() {
            let zero = rest.iter().position(|&b| b == 0);
            let (part, after) = match zero {
                Some(z) => (&rest[..z], &rest[z + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            rest = after;
            if self.discarding {
                self.discarding = zero.is_none();
                continue;
            }
            if self.len + part.len() > RX_BYTES {
                self.stats.oversized += 1;
                self.len = 0;
                self.discarding = zero.is_none();
                continue;
            }
            self.buf[self.len..self.len + part.len()].copy_from_slice(part);
            self.len += part.len();
            if zero.is_none() {
                continue;
            }
            let n = core::mem::take(&mut self.len);
            if n == 0 {
                // An empty frame: a delimiter written after a dropped partial frame, or idle fill.
                continue;
            }
            let p = match frame_payload(&mut self.buf[..n]) {
                Ok(p) => p,
                Err(_) => {
                    self.stats.corrupt += 1;
                    continue;
                }
            };
            let payload = &self.buf[..p];
            if self.foreign && payload[0] != 0 {
                // A frame of the unknown version: its layout is not ours to decode.
                self.stats.skipped += 1;
                continue;
            }
            match decode_payload(payload, self.version) {
                Ok(msg) => {
                    self.foreign = false;
                    if let Message::Hello(h) = &msg {
                        self.version = h.proto_version;
                    }
                    self.stats.frames += 1;
                    on_msg(msg);
                }
                Err(FrameError::UnknownVersion(_)) => {
                    self.stats.unknown_version += 1;
                    self.foreign = true;
                }
                Err(FrameError::Corrupt) => self.stats.corrupt += 1,
            }
        }
    }
}

/// Counts kept by a [`TelemetryWriter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Frames written whole.
    pub frames: u64,
    pub bytes: u64,
    /// Frames dropped because the writer failed or would block (partial frames included).
    pub dropped: u64,
    /// Writer errors (a subset of `dropped`).
    pub write_errors: u64,
    /// Ticks skipped by decimation (not errors).
    pub decimated: u64,
    pub last_error: Option<WireError>,
}

/// Writes frames to an `embedded_io::Write`. Never panics and never retries: a failing or full
/// writer costs one dropped frame, counted. After a partial write it starts the next frame with a
/// `0x00` so that the receiver drops only the broken frame.
pub struct TelemetryWriter<W: embedded_io::Write> {
    w: W,
    buf: [u8; MAX_FRAME + 1],
    /// One Tick message every `decimation` ticks.
    decimation: u32,
    needs_delimiter: bool,
    stats: WriterStats,
}

impl<W: embedded_io::Write> TelemetryWriter<W> {
    pub fn new(w: W) -> Self {
        TelemetryWriter {
            w,
            buf: [0; MAX_FRAME + 1],
            decimation: 1,
            needs_delimiter: false,
            stats: Default::default(),
        }
    }

    /// Send one Tick every `n` ticks (those with `tick % n == 0`); 0 is taken as 1.
    pub fn set_decimation(&mut self, n: u32) {
        self.decimation = n.max(1);
    }

    pub fn decimation(&self) -> u32 {
        self.decimation
    }

    pub fn stats(&self) -> WriterStats {
        self.stats
    }

    pub fn get_ref(&self) -> &W {
        &self.w
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.w
    }

    pub fn into_inner(self) -> W {
        self.w
    }

    /// Send a Tick, subject to decimation. `Ok(false)` when decimated away.
    pub fn tick(&mut self, t: &Tick) -> Result<bool, WireError> {
        if !t.tick.is_multiple_of(self.decimation) {
            self.stats.decimated += 1;
            return Ok(false);
        }
        self.send(&Message::Tick(*t)).map(|()| true)
    }

    /// Encode and write one message. Errors are counted (see [`WriterStats`]) and returned for
    /// information only; the caller should carry on.
    pub fn send(&mut self, msg: &Message) -> Result<(), WireError> {
        let start = usize::from(self.needs_delimiter);
        self.buf[0] = 0;
        let len = match encode(msg, &mut self.buf[start..]) {
            Ok(f) => start + f.len(),
            Err(e) => {
                self.stats.dropped += 1;
                self.stats.last_error = Some(e);
                return Err(e);
            }
        };
        let mut off = 0;
        while off < len {
            match self.w.write(&self.buf[off..len]) {
                Ok(0) => return Err(self.drop_frame(off, WireError::WriteWouldBlock)),
                Ok(n) => off += n,
                Err(e) => {
                    self.stats.write_errors += 1;
                    let e = match e.kind() {
                        ErrorKind::TimedOut | ErrorKind::Interrupted => WireError::WriteWouldBlock,
                        k => WireError::Write(k),
                    };
                    return Err(self.drop_frame(off, e));
                }
            }
        }
        self.needs_delimiter = false;
        self.stats.frames += 1;
        self.stats.bytes += len as u64;
        Ok(())
    }

    fn drop_frame(&mut self, written: usize, e: WireError) -> WireError {
        self.stats.dropped += 1;
        self.stats.bytes += written as u64;
        self.stats.last_error = Some(e);
        // A frame cut short leaves the receiver mid-frame; a stray delimiter is harmless otherwise.
        if written > 0 {
            self.needs_delimiter = true;
        }
        e
    }

    /// Flush the writer; errors are counted.
    pub fn flush(&mut self) -> Result<(), WireError> {
        self.w.flush().map_err(|e| {
            self.stats.write_errors += 1;
            let e = WireError::Write(e.kind());
            self.stats.last_error = Some(e);
            e
        })
    }
}

/// How much of a serial line the Tick stream uses, and the decimation that keeps it at half.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinePlan {
    /// Bytes per second the line carries (baud / 10).
    pub line_bytes_per_s: f64,
    /// Bytes per second of one Tick every period.
    pub tick_bytes_per_s: f64,
    /// `tick_bytes_per_s / line_bytes_per_s`, undecimated.
    pub fraction: f64,
    /// Send one Tick every `decimation` ticks (1 = every tick).
    pub decimation: u32,
    /// The fraction after decimation (at most [`LinePlan::MAX_TICK_SHARE`]).
    pub fraction_decimated: f64,
}

impl LinePlan {
    /// Share of the line the Tick stream may use; the rest is for summaries, events and slack.
    pub const MAX_TICK_SHARE: f64 = 0.5;

    /// Plan for `baud` (8N1), one tick every `period_ms`, `tick_frame_bytes` per Tick frame.
    pub fn new(baud: u32, period_ms: u32, tick_frame_bytes: usize) -> LinePlan {
        let line = baud as f64 / BITS_PER_BYTE as f64;
        let ticks = tick_frame_bytes as f64 * 1000.0 / period_ms.max(1) as f64;
        let fraction = if line > 0.0 { ticks / line } else { f64::INFINITY };
        let decimation = if fraction.is_finite() {
            (fraction / Self::MAX_TICK_SHARE).ceil().clamp(1.0, u32::MAX as f64) as u32
        } else {
            u32::MAX
        };
        LinePlan {
            line_bytes_per_s: line,
            tick_bytes_per_s: ticks,
            fraction,
            decimation,
            fraction_decimated: fraction / decimation as f64,
        }
    }
}

/// A Tick with typical values for a 30 fps loop an hour in, used to size the line plan.
pub fn typical_tick() -> Tick {
    Tick {
        tick: 108_000,
        frame: 108_000,
        active: ModelSet::from_bits(0b0000_0101),
        degraded: ModelSet::EMPTY,
        held: ModelSet::EMPTY,
        agreement_milli: 941,
        budget_kib: 11_718,
        mem_used_kib: 9_500,
        power_mw: 7_400,
        tick_us: 1_850,
        adapt_task: NO_ADAPT_TASK,
        flags: 0,
    }
}
