//! The wire format: exact golden bytes for every message type, round trips, resynchronisation after
//! corruption, truncated and oversized frames, the writer's failure handling and the line plan.
//!
//! Golden bytes were worked out by hand from the spec (docs/wire-format.md): postcard writes the
//! enum variant index as a varint, then each field in declaration order; u16/u32 as LEB128 varints
//! (7 bits per byte, low group first, high bit = "more"), u8 as one raw byte, tuples and arrays
//! element by element with no length, strings as a varint length then the UTF-8 bytes. The CRC-16
//! (IBM-3740: poly 0x1021, init 0xFFFF) of the payload follows, little-endian; it was computed with
//! an independent implementation, Python's `binascii.crc_hqx(payload, 0xFFFF)`. COBS then replaces
//! each 0x00 by the distance to the next one: every block starts with a code byte = 1 + the number
//! of non-zero bytes before the next zero (or the end), and the frame ends with 0x00.

use jetlink::model_set::ModelSet;
use jetlink::serial::MemWriter;
use jetlink::wire::{
    self, AGREEMENT_UNKNOWN, DECODE_BUF, Decoder, Event, EventCode, Hello, LinePlan, MAX_FRAME, Message,
    PeriodSummary, TelemetryWriter, Tick, WireError, crc16, encode, flags,
};

fn hello() -> Hello {
    Hello {
        proto_version: wire::PROTO_VERSION,
        firmware: (0, 1, 0),
        board: heapless::String::try_from("host-sim").unwrap(),
        bundle_hash: [0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02, 0x03],
        n_models: 8,
        period_ms: 33,
    }
}

fn summary() -> PeriodSummary {
    PeriodSummary {
        period: 3,
        ticks: 500,
        agreement_milli: 941,
        executions_saved_milli: 667,
        flops_saved_milli: 512,
        peak_mem_kib: 11_700,
        deadline_misses: 0,
        adapt_tasks: 2,
        faults: 1,
    }
}

fn enc(m: &Message) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME];
    encode(m, &mut buf).unwrap().to_vec()
}

#[test]
fn crc16_check_value() {
    // The catalogue check value of CRC-16/IBM-3740.
    assert_eq!(crc16(b"123456789"), 0x29B1);
}

#[test]
fn golden_hello() {
    // Payload (24 bytes):
    //   00                       variant 0 (Hello)
    //   02                       proto_version 2
    //   00 01 00                 firmware (0, 1, 0)
    //   08 68 6f 73 74 2d 73 69 6d   board: length 8, "host-sim"
    //   de ad be ef 00 01 02 03  bundle_hash, 8 raw bytes
    //   08                       n_models 8
    //   21                       period_ms 33
    // CRC 0x14B2 -> b2 14. Zeros at payload offsets 0, 2, 4, 18, so COBS blocks:
    //   01 | 02 02 | 02 01 | 0e + 13 bytes (08 .. ef) | 08 + 7 bytes (01 02 03 08 21 b2 14) | 00
    let golden = [
        0x01, 0x02, 0x02, 0x02, 0x01, 0x0E, 0x08, 0x68, 0x6F, 0x73, 0x74, 0x2D, 0x73, 0x69, 0x6D, 0xDE, 0xAD,
        0xBE, 0xEF, 0x08, 0x01, 0x02, 0x03, 0x08, 0x21, 0xB2, 0x14, 0x00,
    ];
    assert_eq!(enc(&Message::Hello(hello())), golden);
}

#[test]
fn golden_tick() {
    // The typical tick (wire::typical_tick), 22 payload bytes:
    //   01                 variant 1 (Tick)
    //   e0 cb 06           tick 108000 = 0x60 | 0x4b << 7 | 0x06 << 14
    //   e0 cb 06           frame 108000
    //   05                 active 0b101
    //   00                 degraded 0
    //   00                 held 0 (version 2)
    //   ad 07              agreement_milli 941 = 0x2d + 7 * 128
    //   c6 5b              budget_kib 11718 = 0x46 + 0x5b * 128
    //   9c 4a              mem_used_kib 9500 = 0x1c + 0x4a * 128
    //   e8 39              power_mw 7400 = 0x68 + 0x39 * 128
    //   ba 0e              tick_us 1850 = 0x3a + 0x0e * 128
    //   ff                 adapt_task none (u8, raw)
    //   00                 flags 0
    // CRC 0x69D3 -> d3 69. Zeros at 8, 9 and 21: 09 + 8 bytes | 01 | 0c + 11 bytes | 03 + d3 69 | 00.
    let golden = [
        0x09, 0x01, 0xE0, 0xCB, 0x06, 0xE0, 0xCB, 0x06, 0x05, 0x01, 0x0C, 0xAD, 0x07, 0xC6, 0x5B, 0x9C, 0x4A,
        0xE8, 0x39, 0xBA, 0x0E, 0xFF, 0x03, 0xD3, 0x69, 0x00,
    ];
    assert_eq!(enc(&Message::Tick(wire::typical_tick())), golden);
    assert_eq!(wire::frame_len(&Message::Tick(wire::typical_tick())), 26);
}

#[test]
fn golden_period_summary() {
    //   02                 variant 2 (PeriodSummary)
    //   03                 period 3
    //   f4 03              ticks 500 = 0x74 + 3 * 128
    //   ad 07              agreement_milli 941
    //   9b 05              executions_saved_milli 667 = 0x1b + 5 * 128
    //   80 04              flops_saved_milli 512 = 0 + 4 * 128 (continuation bit on a zero group)
    //   b4 5b              peak_mem_kib 11700 = 0x34 + 0x5b * 128
    //   00                 deadline_misses 0
    //   02                 adapt_tasks 2
    //   01                 faults 1
    // CRC 0xF9C3 -> c3 f9. One zero, at 12: 0d + 12 bytes | 05 + 02 01 c3 f9 | 00.
    let golden = [
        0x0D, 0x02, 0x03, 0xF4, 0x03, 0xAD, 0x07, 0x9B, 0x05, 0x80, 0x04, 0xB4, 0x5B, 0x05, 0x02, 0x01, 0xC3,
        0xF9, 0x00,
    ];
    assert_eq!(enc(&Message::PeriodSummary(summary())), golden);
}

#[test]
fn golden_events() {
    // 03 (Event) 01 (tick 1) 01 (code Shed = 1) 02 (a) 03 (b); CRC 0xE85B; no zeros: one block.
    let shed = Message::Event(Event { tick: 1, code: EventCode::Shed, a: 2, b: 3 });
    assert_eq!(enc(&shed), [0x08, 0x03, 0x01, 0x01, 0x02, 0x03, 0x5B, 0xE8, 0x00]);
    // 03 | ac 02 (tick 300) | 00 (BudgetChange) | 80 28 (a 5120 = 40 * 128) | c6 5b (b 11718);
    // CRC 0x405C. Zero at 3: 04 03 ac 02 | 07 80 28 c6 5b 5c 40 | 00.
    let budget = Message::Event(Event { tick: 300, code: EventCode::BudgetChange, a: 5120, b: 11_718 });
    assert_eq!(enc(&budget), [0x04, 0x03, 0xAC, 0x02, 0x07, 0x80, 0x28, 0xC6, 0x5B, 0x5C, 0x40, 0x00]);
    // Event codes are their index on the wire (append-only).
    for (i, c) in EventCode::ALL.iter().enumerate() {
        assert_eq!(*c as usize, i);
        let payload = postcard::to_stdvec(&Message::Event(Event { tick: 1, code: *c, a: 1, b: 1 })).unwrap();
        assert_eq!(payload, [3, 1, i as u8, 1, 1], "{c:?}");
    }
}

fn all_messages() -> Vec<Message> {
    let mut v =
        vec![Message::Hello(hello()), Message::Tick(wire::typical_tick()), Message::PeriodSummary(summary())];
    v.extend(EventCode::ALL.iter().map(|&code| Message::Event(Event { tick: 7, code, a: u32::MAX, b: 0 })));
    v.push(Message::Tick(Tick {
        tick: u32::MAX,
        frame: u32::MAX,
        active: ModelSet::from_bits(u16::MAX),
        degraded: ModelSet::from_bits(u16::MAX),
        held: ModelSet::from_bits(u16::MAX),
        agreement_milli: AGREEMENT_UNKNOWN,
        budget_kib: u32::MAX,
        mem_used_kib: u32::MAX,
        power_mw: u32::MAX,
        tick_us: u32::MAX,
        adapt_task: 3,
        flags: flags::DEADLINE_MISS | flags::MEMORY_SHED,
    }));
    v.push(Message::Tick(Tick::default()));
    v
}

fn decode_all(bytes: &[u8], chunk: usize) -> (Vec<Message>, wire::DecodeStats) {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for c in bytes.chunks(chunk.max(1)) {
        d.feed(c, |m| out.push(m));
    }
    (out, d.stats())
}

#[test]
fn round_trips_in_any_chunking() {
    let msgs = all_messages();
    let stream: Vec<u8> = msgs.iter().flat_map(enc).collect();
    for chunk in [1, 2, 3, 7, 64, stream.len()] {
        let (got, st) = decode_all(&stream, chunk);
        assert_eq!(got, msgs, "chunk {chunk}");
        assert_eq!((st.frames, st.corrupt, st.oversized), (msgs.len() as u64, 0, 0));
        assert_eq!(st.bytes, stream.len() as u64);
    }
}

#[test]
fn longest_frame_fits_max_frame() {
    let mut h = hello();
    h.board = heapless::String::try_from("x".repeat(24).as_str()).unwrap();
    h.proto_version = u16::MAX;
    h.firmware = (u16::MAX, u16::MAX, u16::MAX);
    h.bundle_hash = [0xFF; 8];
    h.period_ms = u32::MAX;
    let n = wire::frame_len(&Message::Hello(h));
    assert!(n > 0 && n <= MAX_FRAME, "{n}");
    let mut small = [0u8; 10];
    assert_eq!(encode(&Message::Hello(hello()), &mut small), Err(WireError::EncodeBufferFull));
}

/// Flip every byte of one frame in turn (to every value that is not 0x00): that frame is lost and
/// counted, its neighbours survive. A 0x00 written into a frame splits it: both parts are counted.
#[test]
fn resynchronises_after_a_corrupt_byte() {
    let msgs = all_messages();
    let frames: Vec<Vec<u8>> = msgs.iter().map(enc).collect();
    let victim = 1; // the Tick
    for pos in 0..frames[victim].len() - 1 {
        for flip in [0x01u8, 0x80, 0xFF] {
            if frames[victim][pos] ^ flip == 0 {
                continue; // a zero splits the frame: covered below
            }
            let mut stream = Vec::new();
            for (i, f) in frames.iter().enumerate() {
                let mut f = f.clone();
                if i == victim {
                    f[pos] ^= flip;
                }
                stream.extend(f);
            }
            let (got, st) = decode_all(&stream, 5);
            let mut want = msgs.clone();
            want.remove(victim);
            assert_eq!(got, want, "byte {pos} ^ {flip:#x}");
            assert_eq!(st.corrupt + st.oversized, 1, "byte {pos} ^ {flip:#x}");
        }
    }
    // A zero in the middle: two broken pieces, counted; the rest decode.
    let mut stream: Vec<u8> = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let mut f = f.clone();
        if i == victim {
            f[10] = 0;
        }
        stream.extend(f);
    }
    let (got, st) = decode_all(&stream, 3);
    assert_eq!(got.len(), msgs.len() - 1);
    assert_eq!(st.corrupt, 2);
}

#[test]
fn truncated_frames_are_counted_and_skipped() {
    let a = enc(&Message::Tick(wire::typical_tick()));
    let b = enc(&Message::PeriodSummary(summary()));
    // The first half of a frame, then its writer restarted: the next frame's bytes join the broken
    // one until its 0x00, so both are lost (one corrupt frame), and the stream resumes after it.
    let mut stream = a[..a.len() / 2].to_vec();
    stream.extend(&b);
    stream.extend(&a);
    let (got, st) = decode_all(&stream, 4);
    assert_eq!(got, [Message::Tick(wire::typical_tick())]);
    assert_eq!(st.corrupt, 1);
    // With a delimiter after the broken part (what TelemetryWriter sends), only it is lost.
    let mut stream = a[..a.len() / 2].to_vec();
    stream.push(0);
    stream.extend(&b);
    let (got, st) = decode_all(&stream, 4);
    assert_eq!(got, [Message::PeriodSummary(summary())]);
    assert_eq!(st.corrupt, 1);
    // A frame cut at the end of the stream stays pending.
    let mut d = Decoder::new();
    d.feed(&a[..5], |_| panic!("no message yet"));
    assert!(d.has_partial());
    // Empty frames (idle 0x00 bytes) are not errors.
    let (got, st) = decode_all(&[0, 0, 0], 1);
    assert!(got.is_empty() && st.corrupt == 0);
}

#[test]
fn oversized_frames_are_dropped_to_the_next_delimiter() {
    let good = enc(&Message::PeriodSummary(summary()));
    let mut stream = vec![0x55u8; DECODE_BUF * 3 + 7];
    stream.push(0);
    stream.extend(&good);
    for chunk in [1, 50, 1000] {
        let (got, st) = decode_all(&stream, chunk);
        assert_eq!(got, [Message::PeriodSummary(summary())], "chunk {chunk}");
        assert_eq!((st.oversized, st.corrupt), (1, 0), "chunk {chunk}");
    }
    // Line noise with no delimiter at all never panics and never yields a message.
    let noise: Vec<u8> = (0..10_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1).collect();
    let (got, _) = decode_all(&noise, 97);
    assert!(got.is_empty());
}

/// A message of a later version (an unknown variant index) is counted as corrupt, not decoded.
#[test]
fn unknown_message_type_is_counted() {
    let payload = [0x09u8, 0x01, 0x02];
    let crc = crc16(&payload).to_le_bytes();
    let mut raw = payload.to_vec();
    raw.extend(crc);
    // No zeros in these 5 bytes: one COBS block.
    let mut frame = vec![raw.len() as u8 + 1];
    frame.extend(&raw);
    frame.push(0);
    frame.extend(enc(&Message::Tick(Tick::default())));
    let (got, st) = decode_all(&frame, 8);
    assert_eq!(got, [Message::Tick(Tick::default())]);
    assert_eq!(st.corrupt, 1);
}

#[test]
fn writer_counts_and_drops_on_failure_and_never_blocks() {
    let t = wire::typical_tick();
    let frame = enc(&Message::Tick(t));
    // Failing writes: the frame is dropped and counted; later frames go through.
    let mut mw = MemWriter::new();
    mw.fail_next = 2;
    let mut w = TelemetryWriter::new(mw);
    assert!(matches!(w.tick(&t), Err(WireError::Write(_))));
    assert!(w.tick(&t).is_err());
    assert_eq!(w.tick(&t), Ok(true));
    let st = w.stats();
    assert_eq!((st.frames, st.dropped, st.write_errors), (1, 2, 2));
    assert_eq!(w.get_ref().data, frame);

    // A full line: a frame cut after 10 bytes; the next frame starts with a delimiter, so the
    // receiver loses only the broken one.
    let mut w = TelemetryWriter::new(MemWriter::with_limit(frame.len() + 10));
    w.tick(&t).unwrap();
    assert_eq!(w.tick(&t), Err(WireError::WriteWouldBlock));
    assert_eq!(w.tick(&t), Err(WireError::WriteWouldBlock), "still full: nothing written, dropped");
    w.get_mut().limit = None;
    w.send(&Message::PeriodSummary(summary())).unwrap();
    let st = w.stats();
    assert_eq!((st.frames, st.dropped), (2, 2));
    let (got, dst) = decode_all(&w.get_ref().data, 7);
    assert_eq!(got, [Message::Tick(t), Message::PeriodSummary(summary())]);
    assert_eq!(dst.corrupt, 1);
}

#[test]
fn writer_decimates_ticks() {
    let mut w = TelemetryWriter::new(MemWriter::new());
    w.set_decimation(3);
    let sent: Vec<bool> = (0..7).map(|i| w.tick(&Tick { tick: i, ..Tick::default() }).unwrap()).collect();
    assert_eq!(sent, [true, false, false, true, false, false, true]);
    assert_eq!(w.stats().decimated, 4);
    w.set_decimation(0);
    assert_eq!(w.decimation(), 1);
    let (got, _) = decode_all(&w.get_ref().data, 64);
    let ticks: Vec<u32> = got.iter().map(|m| if let Message::Tick(t) = m { t.tick } else { 99 }).collect();
    assert_eq!(ticks, [0, 3, 6]);
}

#[test]
fn line_plan() {
    let tick = wire::frame_len(&Message::Tick(wire::typical_tick()));
    // 115200 baud 8N1 = 11520 B/s; 26 B every 33 ms = 787.9 B/s = 6.8% of the line: every tick.
    let p = LinePlan::new(115_200, 33, tick);
    assert_eq!(p.line_bytes_per_s, 11_520.0);
    assert!((p.fraction - 0.06839).abs() < 1e-4, "{}", p.fraction);
    assert_eq!(p.decimation, 1);
    // 9600 baud: 960 B/s; 82.1% undecimated, so one Tick in 2 (41.0%).
    let p = LinePlan::new(9_600, 33, tick);
    assert_eq!(p.decimation, 2);
    assert!(p.fraction_decimated <= LinePlan::MAX_TICK_SHARE);
    // 1 ms ticks at 115200: 26 kB/s against 11.5 kB/s, one Tick in 5 (45%).
    let p = LinePlan::new(115_200, 1, tick);
    assert_eq!(p.decimation, 5);
    assert!(p.fraction_decimated <= 0.5);
    // A dead line never panics.
    assert_eq!(LinePlan::new(0, 33, tick).decimation, u32::MAX);
}

/// Counts heap allocations per thread (tests run on several threads).
#[global_allocator]
static ALLOC: jetlink::alloc_count::CountingAllocator = jetlink::alloc_count::CountingAllocator;

/// Encoding, writing (also when the writer fails) and decoding allocate nothing.
#[test]
fn per_tick_paths_do_not_allocate() {
    let mut w = TelemetryWriter::new(MemWriter::with_limit(4096));
    w.get_mut().data.reserve(4096);
    let mut d = Decoder::new();
    let mut buf = [0u8; MAX_FRAME];
    let mut n = 0;
    let before = jetlink::alloc_count::loop_allocations();
    for i in 0..300 {
        let t = Tick { tick: i, ..wire::typical_tick() };
        let _ = w.tick(&t);
        let _ = w.send(&Message::Event(Event { tick: i, code: EventCode::Shed, a: i, b: 0 }));
        let f = encode(&Message::Tick(t), &mut buf).unwrap();
        d.feed(f, |_| n += 1);
    }
    assert_eq!(jetlink::alloc_count::loop_allocations() - before, 0);
    assert_eq!(n, 300);
    assert!(w.stats().dropped > 0, "the 4 kB writer filled up");
}

/// Issue 19: a damaged delimiter (`00` -> any other byte) merges two frames. The CRC must end the
/// frame, so the merged frame is counted corrupt: nothing is decoded from it, and nothing is lost
/// uncounted (ticks 40, 41, 42 with 41's delimiter damaged: 40 and 42 decode, 1 corrupt).
#[test]
fn merged_frames_from_a_damaged_delimiter_are_corrupt() {
    let ticks: Vec<Message> =
        (40..43).map(|i| Message::Tick(Tick { tick: i, frame: i, ..wire::typical_tick() })).collect();
    for damaged in [0x01u8, 0x02, 0x55, 0xFF] {
        for victim in 0..3 {
            let mut stream = Vec::new();
            for (i, m) in ticks.iter().enumerate() {
                let mut f = enc(m);
                if i == victim {
                    *f.last_mut().unwrap() = damaged;
                }
                stream.extend(f);
            }
            for chunk in [1, 5, stream.len()] {
                let (got, st) = decode_all(&stream, chunk);
                let mut want = ticks.clone();
                // The victim and the frame after it (if any) form one corrupt frame; the victim
                // at the end leaves its bytes without a 0x00.
                if victim < 2 {
                    want.drain(victim..victim + 2);
                    assert_eq!((st.corrupt, st.frames), (1, 1), "{damaged:#x} victim {victim} chunk {chunk}");
                } else {
                    want.remove(victim);
                    assert_eq!((st.corrupt, st.frames), (0, 2), "{damaged:#x} victim {victim} chunk {chunk}");
                }
                assert_eq!(got, want, "{damaged:#x} victim {victim} chunk {chunk}");
            }
        }
    }
}

/// Bytes between a valid message + CRC and the `0x00`, or between the message and its CRC, make
/// the frame corrupt (a valid frame followed by junk before its delimiter was accepted before).
#[test]
fn bytes_after_the_message_make_the_frame_corrupt() {
    let shed = Message::Event(Event { tick: 1, code: EventCode::Shed, a: 2, b: 3 });
    let payload = postcard::to_stdvec(&shed).unwrap();
    let cobs_frame = |raw: &[u8]| {
        assert!(raw.iter().all(|&b| b != 0) && raw.len() < 254);
        let mut f = vec![raw.len() as u8 + 1];
        f.extend(raw);
        f.push(0);
        f
    };
    let crc = crc16(&payload).to_le_bytes();
    let good = cobs_frame(&[&payload[..], &crc[..]].concat());
    assert_eq!(good, enc(&shed));
    // Junk after the CRC.
    let junk_after = cobs_frame(&[&payload[..], &crc[..], &[0x07, 0x07][..]].concat());
    // Junk between the message and a CRC computed over message + junk.
    let with_junk = [&payload[..], &[0x07][..]].concat();
    let crc2 = crc16(&with_junk).to_le_bytes();
    let junk_inside = cobs_frame(&[&with_junk[..], &crc2[..]].concat());
    // A non-canonical varint (tick 1 as 81 00) with a correct CRC.
    let long = [0x03u8, 0x81, 0x00, 0x01, 0x02, 0x03];
    let crc3 = crc16(&long).to_le_bytes();
    let mut long_raw = long.to_vec();
    long_raw.extend(crc3);
    let mut long_frame = vec![3u8, 0x03, 0x81, long_raw.len() as u8 - 2];
    long_frame.extend(&long_raw[3..]);
    long_frame.push(0);
    for bad in [junk_after, junk_inside, long_frame] {
        let stream = [&bad[..], &good[..]].concat();
        let (got, st) = decode_all(&stream, 3);
        assert_eq!(got, [shed.clone()], "{bad:02x?}");
        assert_eq!((st.corrupt, st.frames), (1, 1), "{bad:02x?}");
    }
    // COBS blocks that run past the end, or a frame shorter than a CRC: corrupt.
    for bad in [&[0x09u8, 0x03, 0x01, 0x00][..], &[0x02, 0x03, 0x00][..], &[0x01, 0x01, 0x00][..]] {
        let (got, st) = decode_all(bad, 1);
        assert!(got.is_empty());
        assert_eq!(st.corrupt, 1, "{bad:02x?}");
    }
}

/// The receive buffer is DECODE_BUF bytes with the closing 0x00 included: a frame of 128 bytes on
/// the line (127 encoded + 0x00) is decoded, one of 129 is oversized.
#[test]
fn receive_buffer_includes_the_delimiter() {
    // A frame whose COBS bytes are exactly `n`: an unknown message type (variant 9) padded with
    // non-zero bytes, so it is corrupt (not oversized) when it fits.
    let frame_of = |n: usize| {
        let mut payload = vec![0x09u8];
        payload.resize(n - 3, 0x11);
        let crc = crc16(&payload).to_le_bytes();
        let mut raw = payload;
        raw.extend(crc);
        assert!(raw.iter().all(|&b| b != 0), "pick another fill");
        let mut f = vec![raw.len() as u8 + 1];
        f.extend(raw);
        f.push(0);
        assert_eq!(f.len(), n + 1);
        f
    };
    let tail = enc(&Message::Tick(Tick::default()));
    for chunk in [1, 7, 1000] {
        let (got, st) = decode_all(&[&frame_of(DECODE_BUF - 1)[..], &tail[..]].concat(), chunk);
        assert_eq!((st.corrupt, st.oversized, got.len()), (1, 0, 1), "128 bytes, chunk {chunk}");
        let (got, st) = decode_all(&[&frame_of(DECODE_BUF)[..], &tail[..]].concat(), chunk);
        assert_eq!((st.corrupt, st.oversized, got.len()), (0, 1, 1), "129 bytes, chunk {chunk}");
    }
    // Oversized several times over, and oversized at the end of the stream: counted once each.
    let mut d = Decoder::new();
    d.feed(&[0x55; 1000], |_| panic!());
    d.feed(&[0x55; 10], |_| panic!());
    d.finish();
    assert_eq!((d.stats().oversized, d.stats().truncated), (1, 0));
}

/// Bytes without a closing 0x00 when the stream ends are one truncated frame (`Decoder::finish`).
#[test]
fn trailing_bytes_at_the_end_of_a_stream_are_truncated() {
    let a = enc(&Message::Tick(wire::typical_tick()));
    let mut d = Decoder::new();
    let mut n = 0;
    d.feed(&a, |_| n += 1);
    d.feed(&a[..a.len() - 1], |_| n += 1);
    assert!(d.has_partial());
    d.finish();
    assert!(!d.has_partial());
    let st = d.stats();
    assert_eq!((n, st.frames, st.truncated, st.corrupt), (1, 1, 1, 0));
    assert_eq!(st.lost(), 1);
    // Nothing pending: finish counts nothing.
    let mut d = Decoder::new();
    d.feed(&a, |_| {});
    d.finish();
    assert_eq!(d.stats().truncated, 0);
}

/// A version-1 board's stream (its Hello, then Ticks without `held`) still decodes, golden bytes
/// from the version-1 spec; a later version-2 Hello switches back.
#[test]
fn version_one_streams_still_decode() {
    // Version 1's Hello (proto_version 01, CRC 0xBBAF) and typical Tick (no held byte, CRC 0x82BC).
    let hello1 = [
        0x01, 0x02, 0x01, 0x02, 0x01, 0x0E, 0x08, 0x68, 0x6F, 0x73, 0x74, 0x2D, 0x73, 0x69, 0x6D, 0xDE, 0xAD,
        0xBE, 0xEF, 0x08, 0x01, 0x02, 0x03, 0x08, 0x21, 0xAF, 0xBB, 0x00,
    ];
    let tick1 = [
        0x09, 0x01, 0xE0, 0xCB, 0x06, 0xE0, 0xCB, 0x06, 0x05, 0x0C, 0xAD, 0x07, 0xC6, 0x5B, 0x9C, 0x4A, 0xE8,
        0x39, 0xBA, 0x0E, 0xFF, 0x03, 0xBC, 0x82, 0x00,
    ];
    let tick2 = enc(&Message::Tick(Tick { held: ModelSet::from_bits(0b10), ..wire::typical_tick() }));
    let stream = [&hello1[..], &tick1[..], &enc(&Message::Hello(hello()))[..], &tick2[..]].concat();
    let mut d = Decoder::new();
    let mut got = Vec::new();
    d.feed(&stream, |m| got.push(m));
    let v1 = Hello { proto_version: 1, ..hello() };
    assert_eq!(
        got,
        [
            Message::Hello(v1),
            Message::Tick(wire::typical_tick()),
            Message::Hello(hello()),
            Message::Tick(Tick { held: ModelSet::from_bits(0b10), ..wire::typical_tick() })
        ]
    );
    assert_eq!((d.stats().corrupt, d.stats().unknown_version), (0, 0));
    // Without its Hello, a version-1 Tick is not this version's layout.
    let mut f = tick1[..tick1.len() - 1].to_vec();
    assert_eq!(wire::decode_frame(&mut f), Err(wire::FrameError::Corrupt));
}

/// A Hello of a protocol version this decoder does not know is not decoded: it is counted, and
/// every frame after it is skipped (counted) until a Hello of a version it reads.
#[test]
fn unknown_hello_version_is_not_decoded_and_skips_to_a_known_hello() {
    // Version 3's Hello: variant 0, proto_version 3, then a layout we do not know.
    let payload = [0x00u8, 0x03, 0x05, 0x06, 0x07];
    let crc = crc16(&payload).to_le_bytes();
    let raw = [&payload[1..], &crc[..]].concat();
    assert!(raw.iter().all(|&b| b != 0));
    let mut v3_hello = vec![0x01, raw.len() as u8 + 1];
    v3_hello.extend(&raw);
    v3_hello.push(0);
    // Its Tick would decode as ours, but must not be.
    let tick = enc(&Message::Tick(wire::typical_tick()));
    let stream = [
        &tick[..],
        &v3_hello[..],
        &tick[..],
        &enc(&Message::PeriodSummary(summary()))[..],
        &[0x03, 0x01, 0x01, 0x00][..], // corrupt, still counted as corrupt
        &enc(&Message::Hello(hello()))[..],
        &tick[..],
    ]
    .concat();
    for chunk in [1, 4, stream.len()] {
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for c in stream.chunks(chunk) {
            d.feed(c, |m| got.push(m));
        }
        let st = d.stats();
        assert_eq!(
            got,
            [
                Message::Tick(wire::typical_tick()),
                Message::Hello(hello()),
                Message::Tick(wire::typical_tick())
            ]
        );
        assert_eq!((st.unknown_version, st.skipped, st.corrupt, st.frames), (1, 2, 1, 3), "chunk {chunk}");
        assert!(!d.skipping_unknown_version());
    }
    // decode_frame says which version.
    let mut f = v3_hello[..v3_hello.len() - 1].to_vec();
    assert_eq!(wire::decode_frame(&mut f), Err(wire::FrameError::UnknownVersion(3)));
}
