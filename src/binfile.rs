//! Helpers shared by jetlink's little-endian binary file formats (streams, recordings): reading a
//! file that may be gzip-compressed, a bounds-checked reader that names the field it failed on,
//! and plain words for why a postcard payload (a bundle, a fleet message) does not decode.

use std::path::Path;

use anyhow::{Result, ensure};

/// Read a stream or recording file (a `what`, for messages) by the input rule ([`crate::input`]),
/// inflating it if it is gzip-compressed, within `limit` (a [`crate::input::limit`]) and within the
/// size its header declares (`declared`, see [`crate::input::read_maybe_gz`]).
pub fn read_maybe_gz(
    path: &Path,
    what: &str,
    limit: u64,
    declared: impl Fn(&[u8]) -> Result<Option<u64>>,
) -> Result<Vec<u8>> {
    crate::input::read_maybe_gz(path, what, limit, declared)
}

/// A bounds-checked little-endian reader that names the field it failed on.
pub(crate) struct Cursor<'a> {
    pub b: &'a [u8],
    pub at: usize,
}

impl<'a> Cursor<'a> {
    pub fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        ensure!(
            self.b.len() - self.at >= n,
            "truncated at byte {} reading {field} ({n} bytes, {} left)",
            self.at,
            self.b.len() - self.at
        );
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    pub fn u16(&mut self, field: &str) -> Result<u16> {
        let s = self.take(2, field)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    pub fn u32(&mut self, field: &str) -> Result<u32> {
        let s = self.take(4, field)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
}

/// Decode a payload that must hold exactly one postcard value: bytes left after its last field are
/// refused (postcard's `from_bytes` ignores them, so a message cut from a longer one, or followed by
/// junk, would pass). The error is in plain words ([`postcard_error`]).
pub fn decode_whole<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> std::result::Result<T, String> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(format!("{} byte(s) follow its last field", rest.len())),
        Err(e) => Err(postcard_error(&e)),
    }
}

/// Why a postcard payload does not decode, in plain words (the library's own texts speak of varints
/// and serde).
pub fn postcard_error(e: &postcard::Error) -> String {
    use postcard::Error as E;
    match e {
        E::DeserializeUnexpectedEnd => "it ends before its last field".into(),
        E::DeserializeBadVarint => "a number or a length in it is malformed".into(),
        E::DeserializeBadBool | E::DeserializeBadChar | E::DeserializeBadUtf8 | E::DeserializeBadOption => {
            "a field holds a value its type cannot have".into()
        }
        E::DeserializeBadEnum => "a field names a variant that does not exist".into(),
        E::SerdeDeCustom => "a field holds a value out of its range".into(),
        other => format!("{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One whole value decodes; the same followed by a byte, or cut short, does not, each said in
    /// plain words.
    #[test]
    fn a_payload_must_hold_exactly_one_value() {
        let bytes = postcard::to_allocvec(&(7u32, String::from("cam-1"))).unwrap();
        assert_eq!(decode_whole::<(u32, String)>(&bytes).unwrap(), (7, "cam-1".to_string()));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_whole::<(u32, String)>(&longer).unwrap_err(), "1 byte(s) follow its last field");
        let e = decode_whole::<(u32, String)>(&bytes[..bytes.len() - 1]).unwrap_err();
        assert_eq!(e, "it ends before its last field");
    }
}
