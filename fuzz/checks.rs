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
    let all = (1u64 << n) - 1;
    for active in [0, 1, all, all >> 1, all & 0b1010_1010_1010_1010] {
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
