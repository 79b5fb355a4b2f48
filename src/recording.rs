//! Paired model outputs over a stream (the input of link training, and the reference that accuracy
//! is measured against). One simple binary layout, written by `jetlink record` and by the demo tool.
//!
//! Layout (little-endian; the whole file may be gzip-compressed):
//! ```text
//! magic    8 bytes  "JLREC002"
//! n_frames u32, n_models u32
//! per model: name_len u16, name (UTF-8), kind u8 (OutputKind::code), size u32,
//!            and for a sequence (kind 6) only: steps u32, decode u8 (SeqDecode::code)
//! per frame: frame_index u32, then every model's output as f32, models in header order
//!            (a sequence flattened step-major, steps × size/steps values)
//! ```
//! `JLREC001` (written before sequence outputs existed) is the same without sequence models; it
//! still loads. This build writes `JLREC002` only when a model is a sequence, so recordings of
//! vector workloads stay byte-identical to what older builds write and read.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

use crate::binfile::Cursor;
use crate::manifest::OutputKind;
use crate::row::RowLayout;

pub const MAGIC: &[u8; 8] = b"JLREC001";
/// The format with sequence outputs (see the module docs).
pub const MAGIC_SEQ: &[u8; 8] = b"JLREC002";

#[derive(Clone, Debug, PartialEq)]
pub struct RecordedModel {
    pub name: String,
    pub kind: OutputKind,
    pub size: usize,
}

impl RecordedModel {
    /// The recorded output of a manifest's model.
    pub fn of(spec: &crate::manifest::ModelSpec) -> RecordedModel {
        RecordedModel { name: spec.name.clone(), kind: spec.kind, size: spec.size as usize }
    }
}

/// Every model's output on every recorded frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Recording {
    pub models: Vec<RecordedModel>,
    /// Stream frame index of each recorded row.
    pub frames: Vec<u32>,
    /// Row-major: row r holds all models' outputs for `frames[r]`, `stride()` values.
    pub values: Vec<f32>,
    /// Where each model's output lives inside a row.
    layout: RowLayout,
}

impl Recording {
    pub fn new(models: Vec<RecordedModel>) -> Recording {
        let layout = RowLayout::new(models.iter().map(|m| m.size));
        Recording { models, frames: Vec::new(), values: Vec::new(), layout }
    }

    pub fn stride(&self) -> usize {
        self.layout.stride()
    }

    /// The row layout (every model's output, in the recording's model order).
    pub fn layout(&self) -> &RowLayout {
        &self.layout
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Append one frame's outputs (all models, header order).
    pub fn push(&mut self, frame: u32, row: &[f32]) {
        assert_eq!(row.len(), self.stride(), "recording row length");
        self.frames.push(frame);
        self.values.extend_from_slice(row);
    }

    /// The stream frame of the last row (rows are in frame order), `None` when empty.
    pub fn last_frame(&self) -> Option<u32> {
        self.frames.last().copied()
    }

    pub fn row(&self, r: usize) -> &[f32] {
        let s = self.stride();
        &self.values[r * s..(r + 1) * s]
    }

    /// Model `m`'s output on row `r`.
    pub fn output(&self, r: usize, m: usize) -> &[f32] {
        &self.row(r)[self.layout.range(m)]
    }

    pub fn offset(&self, m: usize) -> usize {
        self.layout.offset(m)
    }

    pub fn model_index(&self, name: &str) -> Option<usize> {
        self.models.iter().position(|m| m.name == name)
    }

    /// Row holding stream frame `frame`, if recorded (rows are in frame order: [`Recording::parse`]
    /// refuses any other).
    pub fn row_of_frame(&self, frame: u32) -> Option<usize> {
        self.frames.binary_search(&frame).ok()
    }

    /// The columns of `models` (name, kind, size), in that order, matched by name: a recording made
    /// with the models in another order, or with more models, gives the same rows as one made for
    /// exactly these. Refused, naming the model, when one is missing or differs in kind or size.
    /// `what` names the recording in errors (its file).
    pub fn select_by_name<'a>(
        &self,
        models: impl IntoIterator<Item = (&'a str, OutputKind, usize)>,
        what: &str,
    ) -> Result<Recording> {
        let mut cols = Vec::new();
        let mut picked = Vec::new();
        for (name, kind, size) in models {
            let Some(j) = self.model_index(name) else {
                bail!(
                    "{what}: has no model {name:?} (it has {}); record it again with this manifest (`jetlink record`)",
                    self.models.iter().map(|m| format!("{:?}", m.name)).collect::<Vec<_>>().join(", ")
                );
            };
            let r = &self.models[j];
            ensure!(
                r.kind == kind && r.size == size,
                "{what}: model {name:?} is {} of size {} in the recording, {} of size {size} in the manifest",
                r.kind.name(),
                r.size,
                kind.name()
            );
            cols.push(self.layout.range(j));
            picked.push(r.clone());
        }
        if picked == self.models {
            return Ok(self.clone());
        }
        Ok(self.gather(picked, &cols))
    }

    /// [`select_by_name`](Self::select_by_name), taking the recording: one made for exactly these
    /// models in this order is returned as it is, not copied (a large reference is held once).
    pub fn into_selected<'a>(
        self,
        models: impl IntoIterator<Item = (&'a str, OutputKind, usize)>,
        what: &str,
    ) -> Result<Recording> {
        let models: Vec<_> = models.into_iter().collect();
        let same = models.len() == self.models.len()
            && models
                .iter()
                .zip(&self.models)
                .all(|(&(n, k, s), m)| m.name == n && m.kind == k && m.size == s);
        if same { Ok(self) } else { self.select_by_name(models, what) }
    }

    /// A recording of columns `cols` (of models `picked`) of every row.
    fn gather(&self, picked: Vec<RecordedModel>, cols: &[std::ops::Range<usize>]) -> Recording {
        let mut out = Recording::new(picked);
        out.frames = self.frames.clone();
        out.values.reserve(self.frames.len() * out.stride());
        for r in 0..self.len() {
            let row = self.row(r);
            for c in cols {
                out.values.extend_from_slice(&row[c.clone()]);
            }
        }
        out
    }

    pub fn write_to(&self, mut w: impl Write) -> Result<()> {
        let seq = self.models.iter().any(|m| m.kind.seq().is_some());
        w.write_all(if seq { MAGIC_SEQ } else { MAGIC })?;
        w.write_all(&(self.frames.len() as u32).to_le_bytes())?;
        w.write_all(&(self.models.len() as u32).to_le_bytes())?;
        for m in &self.models {
            w.write_all(&(m.name.len() as u16).to_le_bytes())?;
            w.write_all(m.name.as_bytes())?;
            w.write_all(&[m.kind.code()])?;
            w.write_all(&(m.size as u32).to_le_bytes())?;
            if let Some(q) = m.kind.seq() {
                w.write_all(&q.steps.to_le_bytes())?;
                w.write_all(&[q.decode.code()])?;
            }
        }
        let s = self.stride();
        for (r, f) in self.frames.iter().enumerate() {
            w.write_all(&f.to_le_bytes())?;
            for v in &self.values[r * s..(r + 1) * s] {
                w.write_all(&v.to_le_bytes())?;
            }
        }
        Ok(())
    }

    /// Write, gzip-compressed when the path ends in `.gz`; atomically (a temporary file renamed over
    /// the target), so a failed write (a full disk) leaves no partial recording.
    pub fn save(&self, path: &Path) -> Result<()> {
        let gz = path.extension().is_some_and(|e| e == "gz");
        crate::atomic::write_file_with(path, |w| {
            if gz {
                let mut enc = flate2::write::GzEncoder::new(w, flate2::Compression::default());
                self.write_to(&mut enc).map_err(std::io::Error::other)?;
                enc.finish()?.flush()
            } else {
                self.write_to(&mut *w).map_err(std::io::Error::other)?;
                w.flush()
            }
        })
        .with_context(|| format!("writing recording {}", path.display()))
    }

    pub fn load(path: &Path) -> Result<Recording> {
        let bytes = crate::binfile::read_maybe_gz(
            path,
            "recording",
            crate::input::limit::RECORDING,
            Recording::declared_len,
        )?;
        Recording::parse(&bytes).with_context(|| format!("reading recording {}", path.display()))
    }

    /// The size of a recording whose file starts with `prefix` (`None` while its model table is
    /// incomplete); an error for a wrong magic number or model count. Bounds inflation of a gzip
    /// recording.
    pub fn declared_len(prefix: &[u8]) -> Result<Option<u64>> {
        let mut c = Cursor { b: prefix, at: 0 };
        let Ok(magic) = c.take(8, "magic") else { return Ok(None) };
        ensure!(
            magic == MAGIC || magic == MAGIC_SEQ,
            "not a jetlink recording: magic {:?}",
            String::from_utf8_lossy(magic)
        );
        let v2 = magic == MAGIC_SEQ;
        let (Ok(n_frames), Ok(n_models)) = (c.u32("n_frames"), c.u32("n_models")) else { return Ok(None) };
        ensure!(n_models > 0 && n_models <= 4096, "n_models {n_models} out of range 1..=4096");
        let mut stride = 0u64;
        for i in 0..n_models {
            let Ok(len) = c.u16("name_len") else { return Ok(None) };
            let (Ok(_), Ok(kind), Ok(size)) =
                (c.take(len as usize, "name"), c.take(1, "kind"), c.u32("size"))
            else {
                return Ok(None);
            };
            if v2 && kind[0] == crate::manifest::SEQUENCE_CODE {
                let (Ok(_), Ok(_)) = (c.u32("steps"), c.take(1, "decode")) else { return Ok(None) };
            }
            ensure!(size > 0 && size <= 1 << 20, "model {i}: size {size} out of range");
            stride += size as u64;
        }
        // At most 4096 models of 2^20 values: 4 + 4·stride fits in a u64; n_frames times it may not.
        let body = (n_frames as u64).checked_mul(4 + 4 * stride).unwrap_or(u64::MAX);
        Ok(Some(body.saturating_add(c.at as u64)))
    }

    pub fn parse(b: &[u8]) -> Result<Recording> {
        let mut c = Cursor { b, at: 0 };
        let magic = c.take(8, "magic")?;
        if magic != MAGIC && magic != MAGIC_SEQ {
            bail!(
                "not a jetlink recording: magic {:?}, expected {:?} or {:?}",
                String::from_utf8_lossy(magic),
                "JLREC002",
                "JLREC001"
            );
        }
        let v2 = magic == MAGIC_SEQ;
        let n_frames = c.u32("n_frames")? as usize;
        let n_models = c.u32("n_models")? as usize;
        ensure!(n_models > 0 && n_models <= 4096, "n_models {n_models} out of range 1..=4096");
        let mut models = Vec::with_capacity(n_models);
        for i in 0..n_models {
            let len = c.u16("name_len")? as usize;
            let name = std::str::from_utf8(c.take(len, "name")?)
                .with_context(|| format!("model {i}: name is not UTF-8"))?
                .to_string();
            let code = c.take(1, "kind")?[0];
            let size = c.u32("size")? as usize;
            ensure!(size > 0 && size <= 1 << 20, "model {i} ({name}): size {size} out of range");
            let kind = if v2 && code == crate::manifest::SEQUENCE_CODE {
                let steps = c.u32("steps")?;
                let d = c.take(1, "decode")?[0];
                let decode = crate::manifest::SeqDecode::from_code(d)
                    .with_context(|| format!("model {i} ({name}): unknown sequence decode code {d}"))?;
                OutputKind::sequence(steps, decode, size as u32)
                    .with_context(|| format!("model {i} ({name}): sequence"))?
            } else {
                OutputKind::from_code(code)
                    .with_context(|| format!("model {i} ({name}): unknown kind code {code}"))?
            };
            models.push(RecordedModel { name, kind, size });
        }
        let mut rec = Recording::new(models);
        let s = rec.stride();
        let need = n_frames.checked_mul(4 + 4 * s).context("n_frames too large")?;
        ensure!(
            c.b.len() - c.at == need,
            "body is {} bytes, expected {need} for {n_frames} frames of {s} values",
            c.b.len() - c.at
        );
        rec.frames.reserve(n_frames);
        rec.values.reserve(n_frames * s);
        for r in 0..n_frames {
            let f = c.u32("frame_index")?;
            // Each frame once, in stream order (as `record` writes them): a duplicate would be
            // scored twice and the frame it stands for not at all.
            if let Some(&prev) = rec.frames.last() {
                ensure!(
                    f > prev,
                    "row {r}: frame {f} after frame {prev}; a recording holds each frame once, in order"
                );
            }
            rec.frames.push(f);
            for (k, v) in c.take(4 * s, "values")?.chunks_exact(4).enumerate() {
                let x = f32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                // Numbers are checked finite where they enter: a NaN would score every prediction
                // of that output as wrong (or right) without a word.
                if !x.is_finite() {
                    let m = rec.layout.model_of(k);
                    bail!(
                        "row {r} (frame {f}): model {m} ({}) value {} is {x}, not a finite number",
                        rec.models[m].name,
                        k - rec.layout.range(m).start
                    );
                }
                rec.values.push(x);
            }
        }
        Ok(rec)
    }

    pub fn read_from(mut r: impl Read) -> Result<Recording> {
        let mut b = Vec::new();
        r.read_to_end(&mut b)?;
        Recording::parse(&b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{SeqDecode, SeqShape};

    /// A recording is held twice while it is read: its limit is half the data limit, refused from
    /// its header before anything is read; one made for the manifest's models is not copied.
    #[test]
    fn a_recording_past_its_limit_is_refused_from_its_header() {
        let dir = std::env::temp_dir().join(format!("jetlink-rec-limit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("big.jlr.gz");
        let mut h = MAGIC.to_vec();
        h.extend_from_slice(&4_000_000u32.to_le_bytes()); // frames of 4 + 4·100 bytes: 1.6 GB
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(b"m");
        h.push(OutputKind::Regression.code());
        h.extend_from_slice(&100u32.to_le_bytes());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &h).unwrap();
        std::fs::write(&p, gz.finish().unwrap()).unwrap();
        let e = format!("{:#}", Recording::load(&p).unwrap_err());
        assert!(e.contains(&format!("above the limit of {} bytes", crate::input::limit::RECORDING)), "{e}");
        let mut r =
            Recording::new(vec![RecordedModel { name: "m".into(), kind: OutputKind::Regression, size: 2 }]);
        r.push(0, &[1.0, 2.0]);
        let at = r.values.as_ptr();
        let same = r.into_selected([("m", OutputKind::Regression, 2)], "r").unwrap();
        assert_eq!(same.values.as_ptr(), at, "copied");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sequences_round_trip_as_jlrec002_and_jlrec001_still_loads() {
        let seq = OutputKind::Sequence(SeqShape { steps: 3, decode: SeqDecode::Ctc });
        let mut r = Recording::new(vec![
            RecordedModel { name: "text".into(), kind: seq, size: 6 },
            RecordedModel { name: "n".into(), kind: OutputKind::Count, size: 1 },
        ]);
        r.push(4, &[0.1, 0.9, 0.8, 0.2, 1.0, 0.0, 3.0]);
        let mut b = Vec::new();
        r.write_to(&mut b).unwrap();
        assert_eq!(&b[..8], MAGIC_SEQ);
        assert_eq!(Recording::declared_len(&b).unwrap(), Some(b.len() as u64));
        let back = Recording::parse(&b).unwrap();
        assert_eq!(back, r);
        // A sequence whose size is not steps x C, or an unknown decode code, is refused by name.
        let at = 8 + 8 + 2 + 4 + 1 + 4; // steps of model 0
        let mut bad = b.clone();
        bad[at..at + 4].copy_from_slice(&4u32.to_le_bytes());
        let e = format!("{:#}", Recording::parse(&bad).unwrap_err());
        assert!(e.contains("model 0 (text)") && e.contains("size 6 is not a multiple of steps 4"), "{e}");
        let mut bad = b.clone();
        bad[at + 4] = 9;
        let e = format!("{:#}", Recording::parse(&bad).unwrap_err());
        assert!(e.contains("unknown sequence decode code 9"), "{e}");
        // Without sequences the writer keeps the old format, byte for byte, and it loads.
        let mut v =
            Recording::new(vec![RecordedModel { name: "n".into(), kind: OutputKind::Count, size: 1 }]);
        v.push(0, &[2.0]);
        let mut b1 = Vec::new();
        v.write_to(&mut b1).unwrap();
        let mut want = b"JLREC001".to_vec();
        for x in [1u32, 1] {
            want.extend_from_slice(&x.to_le_bytes());
        }
        want.extend_from_slice(&[1, 0, b'n', 3, 1, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&2.0f32.to_le_bytes());
        assert_eq!(b1, want);
        assert_eq!(Recording::parse(&b1).unwrap(), v);
    }

    #[test]
    fn a_value_that_is_not_finite_is_refused_naming_row_model_and_value() {
        let mut rec = Recording::new(vec![
            RecordedModel { name: "a".into(), kind: OutputKind::Class, size: 2 },
            RecordedModel { name: "b".into(), kind: OutputKind::Regression, size: 3 },
        ]);
        rec.push(0, &[0.5, 0.5, 1.0, 2.0, 3.0]);
        rec.push(7, &[0.5, 0.5, 1.0, f32::NAN, 3.0]);
        let mut b = Vec::new();
        rec.write_to(&mut b).unwrap();
        let e = Recording::parse(&b).unwrap_err().to_string();
        assert!(e.contains("row 1 (frame 7): model 1 (b) value 1 is NaN"), "{e}");
        rec.values[6] = 2.0;
        rec.values[7] = f32::INFINITY;
        let mut b = Vec::new();
        rec.write_to(&mut b).unwrap();
        assert!(Recording::parse(&b).unwrap_err().to_string().contains("is inf"));
        // Frames once each, in order: a repeated or a going-back frame index is refused.
        rec.values[7] = 2.0;
        for frames in [[7, 7], [7, 0]] {
            rec.frames.copy_from_slice(&frames);
            let mut b = Vec::new();
            rec.write_to(&mut b).unwrap();
            let e = Recording::parse(&b).unwrap_err().to_string();
            assert!(e.contains(&format!("row 1: frame {} after frame 7", frames[1])), "{e}");
        }
    }

    #[test]
    fn round_trip_and_truncation() {
        let mut r = Recording::new(vec![
            RecordedModel { name: "a".into(), kind: OutputKind::Class, size: 3 },
            RecordedModel { name: "b".into(), kind: OutputKind::Count, size: 1 },
        ]);
        r.push(7, &[0.1, 0.2, 0.7, 4.0]);
        r.push(9, &[0.5, 0.4, 0.1, 2.0]);
        let mut b = Vec::new();
        r.write_to(&mut b).unwrap();
        let back = Recording::parse(&b).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.output(1, 1), &[2.0]);
        assert_eq!(back.row_of_frame(9), Some(1));
        let err = Recording::parse(&b[..b.len() - 1]).unwrap_err().to_string();
        assert!(err.contains("expected"), "{err}");
        let mut bad = b.clone();
        bad[0] = b'X';
        assert!(Recording::parse(&bad).unwrap_err().to_string().contains("magic"));
    }

    #[test]
    fn select_by_name_reorders_and_names_the_missing_model() {
        let mut r = Recording::new(vec![
            RecordedModel { name: "a".into(), kind: OutputKind::Class, size: 3 },
            RecordedModel { name: "b".into(), kind: OutputKind::Count, size: 1 },
            RecordedModel { name: "c".into(), kind: OutputKind::Regression, size: 2 },
        ]);
        r.push(7, &[0.1, 0.2, 0.7, 4.0, 5.0, 6.0]);
        r.push(9, &[0.5, 0.4, 0.1, 2.0, 7.0, 8.0]);
        let s = r
            .select_by_name([("c", OutputKind::Regression, 2), ("a", OutputKind::Class, 3)], "ref.jlr")
            .unwrap();
        assert_eq!(s.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["c", "a"]);
        assert_eq!(s.row(1), &[7.0, 8.0, 0.5, 0.4, 0.1]);
        assert_eq!(s.frames, [7, 9]);
        let e = r.select_by_name([("zz", OutputKind::Class, 3)], "ref.jlr").unwrap_err().to_string();
        assert!(e.contains("ref.jlr") && e.contains("\"zz\""), "{e}");
        let e = r.select_by_name([("b", OutputKind::Count, 2)], "ref.jlr").unwrap_err().to_string();
        assert!(e.contains("\"b\"") && e.contains("size 1"), "{e}");
    }
}
