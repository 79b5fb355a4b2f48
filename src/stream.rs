//! Recorded frame streams: the file format, its loader, and the replay frame source.
//!
//! Layout (little-endian; the whole file may be gzip-compressed):
//! ```text
//! magic        8 bytes "JLSTRM01"
//! n_frames u32, height u16, width u16, channels u8, reserved 3 bytes (zero)
//! train_end u32     frames [0, train_end) may be used to train links; the rest is evaluation
//! drift_start u32   frames [drift_start, n_frames) form the drift segment (n_frames if none)
//! per frame: source u32 (index in the original dataset), label u8 (255 = none),
//!            severity u8 (0 = clean … 255 = most degraded), then height·width·channels u8 pixels
//! ```
//! `JLSTRM02` (compact, for camera video) has the same header; each frame's pixels are instead
//! `jpeg_len u32` then a baseline JPEG of exactly height×width (grey or RGB as `channels`), decoded
//! once at load, strictly ([`crate::jpeg`]): a truncated or corrupt JPEG, or a grey one in an RGB
//! stream, is refused with its frame number.
//!
//! Checked at load: the reserved bytes are zero, `train_end <= drift_start <= n_frames`, and the
//! decoded frames fit [`crate::input::limit::DATA`] (a stream is held in memory whole).

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

use crate::binfile::Cursor;
use crate::binfile::read_maybe_gz;

pub const MAGIC: &[u8; 8] = b"JLSTRM01";
/// The compact variant: frames stored as JPEG.
pub const MAGIC_JPEG: &[u8; 8] = b"JLSTRM02";
const HEADER: usize = 8 + 4 + 2 + 2 + 1 + 3 + 4 + 4;
const FRAME_META: usize = 4 + 1 + 1;

/// Per-frame metadata.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameMeta {
    pub source: u32,
    pub label: u8,
    pub severity: u8,
}

/// A whole stream in memory.
#[derive(Clone, Debug)]
pub struct Stream {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub train_end: usize,
    pub drift_start: usize,
    pub meta: Vec<FrameMeta>,
    pixels: Vec<u8>,
}

/// Which part of the stream a frame is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    Train,
    Clean,
    Drift,
}

impl Stream {
    pub fn load(path: &Path) -> Result<Stream> {
        let b = read_maybe_gz(path, "stream", crate::input::limit::DATA, Stream::declared_len)?;
        Stream::parse(&b).with_context(|| format!("reading stream {}", path.display()))
    }

    /// The most bytes a stream whose file starts with `prefix` can have (`None` while the header is
    /// incomplete); an error for a wrong magic number. Bounds inflation of a gzip stream.
    pub fn declared_len(prefix: &[u8]) -> Result<Option<u64>> {
        if prefix.len() < HEADER {
            return Ok(None);
        }
        let mut c = Cursor { b: prefix, at: 0 };
        let jpeg = Self::magic(&mut c)?;
        let n = c.u32("n_frames")? as u64;
        let px = c.u16("height")? as u64 * c.u16("width")? as u64 * c.take(1, "channels")?[0] as u64;
        if jpeg {
            // JPEG frames have no fixed size: a baseline JPEG of a frame is far smaller than twice
            // its pixels plus its tables, and the whole is bounded by the limit for a stream (its
            // decoded size is checked when it is parsed), never refused for its estimate alone.
            let per = FRAME_META as u64 + 4 + 2 * px + 65536;
            let est = n.checked_mul(per).and_then(|b| b.checked_add(HEADER as u64));
            return Ok(Some(est.unwrap_or(u64::MAX).min(crate::input::limit::DATA)));
        }
        // Raw frames: the exact size (a header past u64 is refused as past the limit).
        Ok(Some(
            n.checked_mul(FRAME_META as u64 + px)
                .and_then(|b| b.checked_add(HEADER as u64))
                .unwrap_or(u64::MAX),
        ))
    }

    fn magic(c: &mut Cursor) -> Result<bool> {
        let magic = c.take(8, "magic")?;
        let jpeg = magic == MAGIC_JPEG;
        if magic != MAGIC && !jpeg {
            bail!(
                "not a jetlink stream: magic {:?}, expected \"JLSTRM01\" or \"JLSTRM02\"",
                String::from_utf8_lossy(magic)
            );
        }
        Ok(jpeg)
    }

    pub fn parse(b: &[u8]) -> Result<Stream> {
        let mut c = Cursor { b, at: 0 };
        let jpeg = Self::magic(&mut c)?;
        let n = c.u32("n_frames")? as usize;
        let height = c.u16("height")? as usize;
        let width = c.u16("width")? as usize;
        let channels = c.take(1, "channels")?[0] as usize;
        let reserved = c.take(3, "reserved")?;
        ensure!(reserved == [0, 0, 0], "reserved bytes are {reserved:?}, not zero");
        let train_end = c.u32("train_end")? as usize;
        let drift_start = c.u32("drift_start")? as usize;
        ensure!(height > 0 && width > 0 && channels > 0, "frame size {height}x{width}x{channels} is empty");
        ensure!(train_end <= n, "train_end {train_end} is past n_frames {n}");
        ensure!(drift_start <= n, "drift_start {drift_start} is past n_frames {n}");
        ensure!(
            train_end <= drift_start,
            "drift_start {drift_start} is before train_end {train_end}: the training part would hold drift frames"
        );
        ensure!(channels == 1 || channels == 3, "frames have 1 (grey) or 3 (RGB) channels, not {channels}");
        let px = height * width * channels;
        // Checked: n and the frame size come from the file (a product past u64 is past the limit).
        let decoded = (n as u64).checked_mul(px as u64).unwrap_or(u64::MAX);
        ensure!(
            decoded <= crate::input::limit::DATA,
            "{n} frames of {height}x{width}x{channels} are {decoded} bytes decoded, above the limit of {} bytes \
             for a stream held in memory",
            crate::input::limit::DATA
        );
        if jpeg {
            let mut meta = Vec::with_capacity(n.min(1 << 20));
            let mut pixels = Vec::new();
            for k in 0..n {
                let source = c.u32("source")?;
                let label = c.take(1, "label")?[0];
                let severity = c.take(1, "severity")?[0];
                meta.push(FrameMeta { source, label, severity });
                let len = c.u32("jpeg_len")? as usize;
                let img = crate::jpeg::decode(c.take(len, "jpeg")?, width, height)
                    .with_context(|| format!("frame {k}: decoding its JPEG"))?;
                ensure!(
                    img.width == width && img.height == height && img.channels == channels,
                    "frame {k}: JPEG is {}x{}x{}, the stream's frames are {width}x{height}x{channels}",
                    img.width,
                    img.height,
                    img.channels
                );
                pixels.extend_from_slice(&img.pixels);
            }
            ensure!(c.at == b.len(), "{} bytes after the last frame", b.len() - c.at);
            return Ok(Stream { height, width, channels, train_end, drift_start, meta, pixels });
        }
        let need = n.checked_mul(FRAME_META + px).context("n_frames too large")?;
        ensure!(
            b.len() - HEADER == need,
            "body is {} bytes, expected {need} for {n} frames of {height}x{width}x{channels}",
            b.len() - HEADER
        );
        let mut meta = Vec::with_capacity(n);
        let mut pixels = Vec::with_capacity(n * px);
        for _ in 0..n {
            let source = c.u32("source")?;
            let label = c.take(1, "label")?[0];
            let severity = c.take(1, "severity")?[0];
            meta.push(FrameMeta { source, label, severity });
            pixels.extend_from_slice(c.take(px, "pixels")?);
        }
        Ok(Stream { height, width, channels, train_end, drift_start, meta, pixels })
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// Height, width and channels of every frame.
    pub fn shape(&self) -> crate::view::Shape {
        crate::view::Shape { h: self.height, w: self.width, c: self.channels }
    }

    pub fn frame_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    pub fn frame(&self, i: usize) -> &[u8] {
        let px = self.frame_len();
        &self.pixels[i * px..(i + 1) * px]
    }

    pub fn segment(&self, i: usize) -> Segment {
        if i < self.train_end {
            Segment::Train
        } else if i >= self.drift_start {
            Segment::Drift
        } else {
            Segment::Clean
        }
    }

    /// Serialise (uncompressed); used by tests and tools.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER + self.len() * (FRAME_META + self.frame_len()));
        self.write_to(&mut b).expect("writing to memory");
        b
    }

    /// The `JLSTRM01` file's bytes ([`to_bytes`](Self::to_bytes)) into `w`, frame by frame: a
    /// large stream is written without a second copy of its pixels in memory.
    pub fn write_to(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        w.write_all(&header(MAGIC, self.len(), self.shape(), self.train_end, self.drift_start))?;
        for i in 0..self.len() {
            let m = self.meta[i];
            w.write_all(&m.source.to_le_bytes())?;
            w.write_all(&[m.label, m.severity])?;
            w.write_all(self.frame(i))?;
        }
        Ok(())
    }

    /// Build a stream from parts (tests, tools).
    pub fn from_parts(
        height: usize,
        width: usize,
        channels: usize,
        train_end: usize,
        drift_start: usize,
        meta: Vec<FrameMeta>,
        pixels: Vec<u8>,
    ) -> Result<Stream> {
        ensure!(pixels.len() == meta.len() * height * width * channels, "pixel count does not match frames");
        ensure!(train_end <= meta.len() && drift_start <= meta.len(), "segment bounds past the end");
        ensure!(train_end <= drift_start, "drift_start {drift_start} is before train_end {train_end}");
        Ok(Stream { height, width, channels, train_end, drift_start, meta, pixels })
    }
}

/// The header both formats share.
fn header(
    magic: &[u8; 8],
    n: usize,
    shape: crate::view::Shape,
    train_end: usize,
    drift_start: usize,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER);
    b.extend_from_slice(magic);
    b.extend_from_slice(&(n as u32).to_le_bytes());
    b.extend_from_slice(&(shape.h as u16).to_le_bytes());
    b.extend_from_slice(&(shape.w as u16).to_le_bytes());
    b.push(shape.c as u8);
    b.extend_from_slice(&[0; 3]);
    b.extend_from_slice(&(train_end as u32).to_le_bytes());
    b.extend_from_slice(&(drift_start as u32).to_le_bytes());
    b
}

/// A `JLSTRM02` file from frames already encoded as JPEG (`jetlink stream` encodes as it reads, so
/// that a long video never sits in memory as raw pixels).
pub fn jpeg_file(
    shape: crate::view::Shape,
    train_end: usize,
    drift_start: usize,
    frames: &[(FrameMeta, Vec<u8>)],
) -> Vec<u8> {
    let mut b = header(MAGIC_JPEG, frames.len(), shape, train_end, drift_start);
    for (m, j) in frames {
        b.extend_from_slice(&m.source.to_le_bytes());
        b.push(m.label);
        b.push(m.severity);
        b.extend_from_slice(&(j.len() as u32).to_le_bytes());
        b.extend_from_slice(j);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_truncation() {
        let meta = vec![
            FrameMeta { source: 3, label: 7, severity: 0 },
            FrameMeta { source: 4, label: 1, severity: 9 },
        ];
        let s = Stream::from_parts(2, 2, 1, 1, 1, meta, vec![1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let b = s.to_bytes();
        let back = Stream::parse(&b).unwrap();
        assert_eq!(back.frame(1), &[5, 6, 7, 8]);
        assert_eq!(back.meta[1].severity, 9);
        assert_eq!(back.segment(0), Segment::Train);
        assert_eq!(back.segment(1), Segment::Drift);
        let e = Stream::parse(&b[..b.len() - 2]).unwrap_err().to_string();
        assert!(e.contains("expected"), "{e}");
        // Raw frames too have 1 or 3 channels, as the writer writes them.
        let mut two = b.clone();
        two[16] = 2;
        let e = Stream::parse(&two).unwrap_err().to_string();
        assert!(e.contains("1 (grey) or 3 (RGB) channels, not 2"), "{e}");
    }

    /// A JLSTRM02 file of `frames` (RGB, height×width) encoded as JPEG at `quality`.
    fn jpeg_stream(frames: &[Vec<u8>], height: u32, width: u32, quality: u8) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC_JPEG);
        b.extend_from_slice(&(frames.len() as u32).to_le_bytes());
        b.extend_from_slice(&(height as u16).to_le_bytes());
        b.extend_from_slice(&(width as u16).to_le_bytes());
        b.extend_from_slice(&[3, 0, 0, 0]);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&(frames.len() as u32).to_le_bytes());
        for (k, f) in frames.iter().enumerate() {
            let mut j = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut j, quality)
                .encode(f, width, height, image::ExtendedColorType::Rgb8)
                .unwrap();
            b.extend_from_slice(&(k as u32 + 10).to_le_bytes());
            b.extend_from_slice(&[255, 0]);
            b.extend_from_slice(&(j.len() as u32).to_le_bytes());
            b.extend_from_slice(&j);
        }
        b
    }

    #[test]
    fn jpeg_frames_decode_to_the_stream_shape() {
        // Two smooth 16x24 RGB frames: JPEG at q95 keeps them within a few levels.
        let (h, w) = (16u32, 24u32);
        let frames: Vec<Vec<u8>> = (0..2)
            .map(|k| {
                (0..h * w * 3)
                    .map(|i| ((i / 3 % w) * 4 + (i / 3 / w) * 4 + k * 40 + (i % 3) * 10) as u8)
                    .collect()
            })
            .collect();
        let b = jpeg_stream(&frames, h, w, 95);
        let s = Stream::parse(&b).unwrap();
        assert_eq!((s.len(), s.height, s.width, s.channels, s.train_end), (2, 16, 24, 3, 1));
        assert_eq!(s.meta[1].source, 11);
        for k in 0..2 {
            let diff: Vec<u8> = s.frame(k).iter().zip(&frames[k]).map(|(a, b)| a.abs_diff(*b)).collect();
            let mean = diff.iter().map(|&d| d as f32).sum::<f32>() / diff.len() as f32;
            assert!(mean <= 3.0 && *diff.iter().max().unwrap() <= 16, "frame {k}: off by {mean} on average");
        }
        // Truncated, trailing bytes, or a JPEG of another size: refused.
        assert!(Stream::parse(&b[..b.len() - 5]).is_err());
        let mut extra = b.clone();
        extra.push(0);
        assert!(Stream::parse(&extra).unwrap_err().to_string().contains("after the last frame"));
        let mut wrong = b.clone();
        wrong[14..16].copy_from_slice(&25u16.to_le_bytes());
        let e = format!("{:#}", Stream::parse(&wrong).unwrap_err());
        assert!(e.contains("JPEG is 24x16"), "{e}");
    }

    /// What the header says is checked (reserved bytes, segment order), a damaged JPEG inside a
    /// consistent container is refused by frame, and a grey JPEG does not pass for an RGB frame.
    #[test]
    fn damaged_frames_and_headers_are_refused() {
        let (h, w) = (16u32, 24u32);
        let frame: Vec<u8> = (0..h * w * 3).map(|i| (i % 97) as u8).collect();
        let b = jpeg_stream(&[frame.clone(), frame.clone()], h, w, 90);
        Stream::parse(&b).unwrap();
        let mut reserved = b.clone();
        reserved[17] = 1;
        let e = format!("{:#}", Stream::parse(&reserved).unwrap_err());
        assert!(e.contains("reserved bytes"), "{e}");
        let mut order = b.clone();
        order[20..24].copy_from_slice(&2u32.to_le_bytes()); // train_end 2 > drift_start... 2 frames
        order[24..28].copy_from_slice(&1u32.to_le_bytes());
        let e = format!("{:#}", Stream::parse(&order).unwrap_err());
        assert!(e.contains("drift_start 1 is before train_end 2"), "{e}");
        // The second frame's JPEG cut in half, its length field saying so: the container is
        // consistent, the JPEG is not.
        let first_len = u32::from_le_bytes(b[HEADER + 6..HEADER + 10].try_into().unwrap()) as usize;
        let second = HEADER + 10 + first_len;
        let len2 = u32::from_le_bytes(b[second + 6..second + 10].try_into().unwrap()) as usize;
        let mut cut = b[..second + 10 + len2 / 2].to_vec();
        cut[second + 6..second + 10].copy_from_slice(&((len2 / 2) as u32).to_le_bytes());
        let e = format!("{:#}", Stream::parse(&cut).unwrap_err());
        assert!(e.contains("frame 1: decoding its JPEG"), "{e}");
        // A grey JPEG in an RGB stream.
        let mut g = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut g, 90)
            .encode(&frame[..(h * w) as usize], w, h, image::ExtendedColorType::L8)
            .unwrap();
        let mut grey = b[..second + 6].to_vec();
        grey.extend_from_slice(&(g.len() as u32).to_le_bytes());
        grey.extend_from_slice(&g);
        let e = format!("{:#}", Stream::parse(&grey).unwrap_err());
        assert!(e.contains("frame 1: JPEG is 24x16x1, the stream's frames are 24x16x3"), "{e}");
    }

    /// Sizes from a hostile header: products that overflow are past the limit (no wrap, no panic);
    /// a JPEG whose own header claims more than the stream's frame size is refused before its
    /// pixels are allocated; a long JPEG stream's size estimate is capped, never refused for itself.
    #[test]
    fn hostile_sizes_are_refused_before_anything_is_allocated() {
        let head = |magic: &[u8; 8], n: u32, h: u16, w: u16, c: u8| {
            let mut b = magic.to_vec();
            b.extend_from_slice(&n.to_le_bytes());
            b.extend_from_slice(&h.to_le_bytes());
            b.extend_from_slice(&w.to_le_bytes());
            b.extend_from_slice(&[c, 0, 0, 0]);
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&n.to_le_bytes());
            b
        };
        let e = format!("{:#}", Stream::parse(&head(MAGIC_JPEG, u32::MAX, 65535, 65535, 3)).unwrap_err());
        assert!(e.contains("above the limit"), "{e}");
        assert_eq!(
            Stream::declared_len(&head(MAGIC, u32::MAX, 65535, 65535, 3)).unwrap(),
            Some(u64::MAX),
            "a raw header past u64 declares more than any limit"
        );
        let long = Stream::declared_len(&head(MAGIC_JPEG, 100_000, 224, 224, 3)).unwrap().unwrap();
        assert_eq!(long, crate::input::limit::DATA);
        // A 16x24 RGB frame slot holding a JPEG whose header says 65535x65535.
        let mut j = crate::jpeg::encode(&[0u8; 16 * 24 * 3], 24, 16, 3, 90).unwrap();
        let sof = j.windows(2).position(|w| w == [0xFF, 0xC0]).expect("a baseline SOF0");
        j[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        let mut b = head(MAGIC_JPEG, 1, 16, 24, 3);
        b.extend_from_slice(&[0, 0, 0, 0, 255, 0]);
        b.extend_from_slice(&(j.len() as u32).to_le_bytes());
        b.extend_from_slice(&j);
        let e = format!("{:#}", Stream::parse(&b).unwrap_err());
        assert!(e.contains("frame 0: decoding its JPEG"), "{e}");
    }

    /// A gzip stream is inflated no further than its header declares: a valid header with an
    /// endless body of zeros stops there, a wrong magic number at the first chunk.
    #[test]
    fn gzip_inflation_stops_at_the_declared_size() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("jetlink-stream-gz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = Stream::from_parts(2, 2, 1, 0, 1, vec![FrameMeta::default(); 1], vec![0; 4]).unwrap();
        let mut body = s.to_bytes();
        body.resize(body.len() + (32 << 20), 0);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&body).unwrap();
        let p = dir.join("bomb.jls.gz");
        std::fs::write(&p, gz.finish().unwrap()).unwrap();
        let e = format!("{:#}", Stream::load(&p).unwrap_err());
        assert!(e.contains("inflates past the 38 bytes its header declares"), "{e}");
        body[..8].copy_from_slice(b"NOTASTRM");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&body).unwrap();
        std::fs::write(&p, gz.finish().unwrap()).unwrap();
        let e = format!("{:#}", Stream::load(&p).unwrap_err());
        assert!(e.contains("not a jetlink stream"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
