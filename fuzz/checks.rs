//! What each fuzz target checks, shared by the libFuzzer targets (`fuzz/fuzz_targets/*.rs`) and by
//! `tests/fuzz_regressions.rs`, which runs every committed corpus file and every past finding
//! through the same functions on stable Rust. Each function must return normally for any input; a
//! panic (an index out of bounds, an overflow with debug assertions, a failed assertion below) is
//! a finding.

#![allow(dead_code)]

use jetlink::bundle::{Bundle, FORMAT_VERSION, HEADER_LEN, MAGIC, sha256};
use jetlink::links::Predictor;
use jetlink::wire::{Decoder, MAX_FRAME, Message, encode};

/// The demo public key (`demo/keys/`): fuzz inputs are checked against it as a board would.
const DEMO_KEY: &str = "ddf65dbfb4b7e99f1da38cfcbc3d87587c3be1305693968b92c0a5c36b930526";

/// Bundle decoder. First byte even: the rest is a bundle file (header, payload, optional signature
/// trailer), read as the host reads it and as the firmware does (signature first). Odd: the rest
/// is a payload, wrapped in a valid header with its SHA-256, so that postcard decoding and the
/// structural checks are reached (a fuzzer cannot forge a SHA-256 or a signature).
pub fn bundle(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        let key = jetlink::signing::parse_public_key(DEMO_KEY).expect("demo key");
        let host = Bundle::from_bytes(rest);
        let firmware = jetlink::signing::from_bytes_trusted(rest, &key);
        if let Ok(f) = &firmware {
            // What the firmware accepts, the host reads the same.
            let h = host.as_ref().expect("a bundle the firmware accepts is a valid bundle");
            assert_eq!(f.to_bytes().unwrap(), h.to_bytes().unwrap());
        }
        if let Ok(b) = host {
            exercise(&b);
        }
    } else {
        let mut file = Vec::with_capacity(HEADER_LEN + rest.len());
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        file.extend_from_slice(&(rest.len() as u64).to_le_bytes());
        file.extend_from_slice(&sha256(rest));
        file.extend_from_slice(rest);
        if let Ok(b) = Bundle::from_bytes(&file) {
            exercise(&b);
        }
    }
}

/// A bundle that passed every check: it re-encodes stably, and the predictor built from it cannot
/// index out of bounds ("a bundle that passes cannot make the predictor index out of bounds").
fn exercise(b: &Bundle) {
    let bytes = b.to_bytes().expect("a decoded bundle encodes");
    let again = Bundle::from_bytes(&bytes).expect("a re-encoded bundle decodes");
    assert_eq!(again.to_bytes().unwrap(), bytes);
    let n = b.n_models();
    let stride: usize = b.sizes().iter().sum();
    let mut p = Predictor::new(b);
    let row = vec![0.25f32; stride];
    let mut out = vec![0.0f32; stride];
    let all = jetlink::model_set::ModelSet::all(n);
    let sets = [0, 1, all.bits(), all.bits() >> 1, all.bits() & 0b1010_1010_1010_1010];
    for active in sets.map(jetlink::model_set::ModelSet::from_bits) {
        let _ = p.predict(active, &row, &mut out);
    }
    for j in 0..n {
        let _ = b.ensemble_score(j);
        let _ = b.link_score(j, (j + 1) % n);
    }
}

/// The monitor's frame decoder. First byte: the chunk size the stream is fed in (1–64). The
/// decoder must not panic, must decode the same messages whatever the chunking, and every message it
/// accepts must re-encode to a frame that decodes to itself.
pub fn wire(data: &[u8]) {
    let Some((&c, rest)) = data.split_first() else { return };
    let chunk = c as usize % 64 + 1;
    let mut whole = Decoder::new();
    let mut a: Vec<Message> = Vec::new();
    whole.feed(rest, |m| a.push(m));
    let mut chunked = Decoder::new();
    let mut b: Vec<Message> = Vec::new();
    for ch in rest.chunks(chunk) {
        chunked.feed(ch, |m| b.push(m));
    }
    assert_eq!(a, b, "chunking by {chunk} changed what was decoded");
    assert_eq!(whole.stats(), chunked.stats(), "chunking by {chunk} changed the counts");
    assert_eq!(whole.stats().frames as usize, a.len());
    assert_eq!(whole.stats().bytes as usize, rest.len());
    for m in &a {
        let mut buf = [0u8; MAX_FRAME];
        let f = encode(m, &mut buf).unwrap_or_else(|e| panic!("{m:?} decoded but does not re-encode: {e}"));
        let mut d = Decoder::new();
        let mut got = None;
        d.feed(f, |x| got = Some(x));
        assert_eq!(got.as_ref(), Some(m));
    }
}

/// The board-file parser (shared with `build.rs`). Any UTF-8 text: parse and check; an error names
/// the file; a file that passes generates code whose identifiers are valid Rust.
pub fn board(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match jetlink::board::parse_board_text("boards/fuzz.toml", text) {
        Err(e) => assert!(e.starts_with("boards/fuzz.toml: "), "{e}"),
        Ok(b) => {
            let name = b.name.clone();
            let src = jetlink::board::schema::generate(&[(name.clone(), b)], &name).expect("generates");
            for line in src.lines().filter(|l| l.starts_with("pub static ")) {
                let id = line["pub static ".len()..].split(':').next().unwrap();
                let mut chars = id.chars();
                let first = chars.next().expect("an identifier");
                assert!(
                    (first.is_ascii_alphabetic() || (first == '_' && id.len() > 1))
                        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "board name {name:?} generates the identifier {id:?}, which is not valid Rust"
                );
            }
        }
    }
}

/// The manifest parser (`Manifest::parse`, what `Manifest::load` runs on a file's text). Any UTF-8
/// text: parse and check; an error names the file; a manifest that passes has bounded sizes and
/// costs (their sums over the models cannot wrap), and every model's view is planned against the
/// demo frame (28x28x1) and its input shape without a panic.
pub fn manifest(data: &[u8]) {
    use jetlink::manifest::{MAX_COST, MAX_OUTPUT_SIZE, Manifest};
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Manifest::parse(text, std::path::Path::new("fuzz/manifest.toml")) {
        Err(e) => {
            let e = format!("{e:#}");
            assert!(e.contains("fuzz/manifest.toml"), "an error that names no file: {e}");
        }
        Ok(m) => {
            let mut outputs = 0u64;
            for spec in &m.models {
                assert!(spec.size >= 1 && spec.size <= MAX_OUTPUT_SIZE, "{}: size {}", spec.name, spec.size);
                for v in [spec.cost.weight_bytes, spec.cost.activation_bytes, spec.cost.flops] {
                    assert!(v <= MAX_COST, "{}: a cost of {v} passed", spec.name);
                }
                assert!(spec.cost.memory_bytes() >= spec.cost.weight_bytes, "memory_bytes wrapped");
                outputs += u64::from(spec.size);
                let frame = jetlink::view::Shape { h: 28, w: 28, c: 1 };
                if let Ok(v) = jetlink::view::View::prepare(&spec.view, frame) {
                    let _ = v.check_input(&spec.input_shape);
                }
            }
            assert_eq!(m.total_outputs() as u64, outputs);
        }
    }
}

/// The stream decoder (`Stream::parse`, the `.jlstream` format of `docs/formats.md`). Any bytes:
/// an error or a stream; a stream that parses re-encodes to a stream that parses to the same
/// frames, and every frame has the frame length.
pub fn stream(data: &[u8]) {
    use jetlink::stream::Stream;
    let Ok(s) = Stream::parse(data) else { return };
    let bytes = s.to_bytes();
    // A raw stream re-encodes to its own length; a JPEG one (`JLSTRM02`) to raw frames.
    if data.starts_with(jetlink::stream::MAGIC) {
        assert_eq!(bytes.len(), data.len(), "re-encoding changed the length");
    }
    let again = Stream::parse(&bytes).expect("a re-encoded stream parses");
    assert_eq!(again.to_bytes(), bytes);
    assert_eq!((again.len(), again.frame_len()), (s.len(), s.frame_len()));
    for i in 0..s.len() {
        assert_eq!(s.frame(i).len(), s.frame_len());
        assert_eq!(s.frame(i), again.frame(i));
        let _ = s.segment(i);
    }
}

/// The view planner (`View::prepare`, then `check_input` and `apply`). Bytes 0–2: the frame
/// (height and width 1..=64, 1 or 3 channels); then one op per 5 bytes: the op (byte % 8; 7 is an
/// invalid f32 for `normalize`/`pad` values), and two parameters, each small (< 70) or, with the
/// high bit, near `u32::MAX`, so limits and wrap-around are reached. A plan that passes has an
/// output within `MAX_VIEW_VALUES`, accepts exactly its own length, and applies without a panic.
pub fn view(data: &[u8]) {
    use jetlink::manifest::ViewOp;
    use jetlink::view::{MAX_VIEW_VALUES, Shape, View};
    if data.len() < 3 {
        return;
    }
    let frame = Shape {
        h: data[0] as usize % 64 + 1,
        w: data[1] as usize % 64 + 1,
        c: if data[2] % 2 == 0 { 1 } else { 3 },
    };
    let p = |b: u8| if b & 0x80 != 0 { u32::MAX - u32::from(b & 0x7F) } else { u32::from(b) % 70 };
    let f = |b: u8| match b % 6 {
        0 => 0.0,
        1 => 0.5,
        2 => f32::NAN,
        3 => f32::INFINITY,
        4 => -1e-30,
        _ => 255.0,
    };
    let ops: Vec<ViewOp> = data[3..]
        .chunks_exact(5)
        .take(16)
        .map(|o| match o[0] % 8 {
            0 => ViewOp::Crop { x: p(o[1]), y: p(o[2]), w: p(o[3]), h: p(o[4]) },
            1 => ViewOp::Pool { k: p(o[1]) },
            2 => ViewOp::Upsample { k: p(o[1]) },
            3 => ViewOp::Pad {
                top: p(o[1]),
                bottom: p(o[2]),
                left: p(o[3]),
                right: p(o[4]),
                value: f(o[1] ^ o[4]),
            },
            4 => ViewOp::Invert {},
            5 => ViewOp::Normalize { mean: f(o[1]), std: f(o[2]) },
            6 => ViewOp::Channels { n: p(o[1]) },
            _ => ViewOp::Pad { top: u32::MAX, bottom: u32::MAX, left: p(o[1]), right: p(o[2]), value: 0.0 },
        })
        .collect();
    match View::prepare(&ops, frame) {
        Err(e) => assert!(e.to_string().starts_with("view op "), "{e}"),
        Ok(mut v) => {
            let n = v.output_len();
            let s = v.output_shape();
            assert!(n > 0 && n <= MAX_VIEW_VALUES, "{n} values");
            assert_eq!((s.h as u128) * (s.w as u128) * (s.c as u128), n as u128);
            v.check_input(&[n as u32]).expect("its own length");
            assert!(v.check_input(&[n as u32 + 1]).is_err());
            assert!(v.check_input(&[u32::MAX, u32::MAX, u32::MAX]).is_err());
            // Apply small plans (large ones only cost time here).
            if n <= 1 << 16 {
                let input: Vec<u8> = (0..frame.len()).map(|i| (i * 37) as u8).collect();
                let mut out = vec![0.0f32; n];
                v.apply(&input, &mut out);
            }
        }
    }
}

/// Fleet messages (`src/fleet/msg.rs`, `quant.rs`). Byte 0 picks what the rest is: 0, a board's
/// upload (postcard `LinkUpdate`) checked as the aggregator checks it before averaging; 1, a signed
/// global update verified as a board verifies it (against the demo key, which a fuzzer cannot
/// forge); 2, a `GlobalLinks` payload resolved against a small held update, as a board does after
/// the signature check (the resolved update must pass the checks); 3, quantised values added to a
/// buffer of their length. An error is fine; a panic is a finding.
pub fn fleet(data: &[u8]) {
    use jetlink::fleet::msg::{GlobalLinks, LinkUpdate, TargetLinks, check_targets, verify_global};
    use jetlink::fleet::quant::Quantized;
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 4 {
        0 => {
            if let Ok(u) = postcard::from_bytes::<LinkUpdate>(rest) {
                let _ = check_targets(&u.targets, Some(&[(4, 2), (4, 2), (4, 2)]));
                let _ = check_targets(&u.targets, None);
            }
        }
        1 => {
            let key = jetlink::signing::parse_public_key(DEMO_KEY).expect("demo key");
            let _ = verify_global(rest, &key, "lab", [0; 8], 0);
        }
        2 => {
            if let Ok(g) = postcard::from_bytes::<GlobalLinks>(rest) {
                let t =
                    |target| TargetLinks { target, samples: 1, links: vec![0.5; 4], ensemble: vec![0.1; 2] };
                let held = GlobalLinks {
                    version: g.base_version,
                    base_version: 0,
                    targets: vec![t(0), t(1), t(2)],
                    deltas: Vec::new(),
                    ..g.clone()
                };
                if let Ok(w) = g.resolve(Some(&held)) {
                    check_targets(&w.targets, None).expect("a resolved update passes the checks");
                }
            }
        }
        _ => {
            if let Ok(q) = postcard::from_bytes::<Quantized>(rest) {
                if q.len < 1 << 20 {
                    let mut v = vec![0.0; q.len as usize];
                    if q.check(f32::INFINITY).is_ok() {
                        q.add_to(&mut v).expect("values with consistent sizes add");
                    } else {
                        assert!(q.add_to(&mut v).is_err(), "inconsistent sizes are refused");
                    }
                }
            }
        }
    }
}
