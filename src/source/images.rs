//! Frames from a folder of images (PNG, JPEG, PGM/PPM), in name order, converted to the stream's
//! height, width and channels. Decoding runs on a producer thread (it allocates, the loop must not)
//! and hands frames to the loop through a [`FramePool`]. Uses the `image` crate, with only the
//! PNG, JPEG and PNM decoders compiled in.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::pool::FramePool;
use crate::view::Shape;

/// Image files of `dir` that the decoders read, sorted by file name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading the image folder {}", dir.display()))? {
        let p = e.with_context(|| format!("reading the image folder {}", dir.display()))?.path();
        let ext = p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
        if matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg" | "pgm" | "ppm" | "pnm")) {
            v.push(p);
        }
    }
    v.sort();
    if v.is_empty() {
        bail!("{}: no PNG, JPEG or PGM/PPM images", dir.display());
    }
    Ok(v)
}

/// Decode one image into `out` (`shape.len()` bytes, row-major, channels last): resized to the
/// shape's width and height when it differs (bilinear) and converted to its channels (1: luma,
/// 3: RGB).
pub fn decode_into(path: &Path, shape: Shape, out: &mut [u8]) -> Result<()> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("reading {}", path.display()))?
        .decode()
        .with_context(|| format!("decoding {}", path.display()))?;
    let (w, h) = (shape.w as u32, shape.h as u32);
    let img = if img.width() != w || img.height() != h {
        img.resize_exact(w, h, image::imageops::FilterType::Triangle)
    } else {
        img
    };
    let bytes = match shape.c {
        1 => img.into_luma8().into_raw(),
        3 => img.into_rgb8().into_raw(),
        c => bail!("{}: streams with {c} channels cannot take images (1 or 3)", path.display()),
    };
    out.copy_from_slice(&bytes);
    Ok(())
}

/// Start the producer: decode every image in order into `pool`, numbering frames from `first`.
/// A file that fails to decode is logged and skipped (its index is skipped too, so the gap shows).
pub fn spawn(paths: Vec<PathBuf>, shape: Shape, first: u32, pool: FramePool) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; shape.len()];
        for (k, p) in paths.iter().enumerate() {
            match decode_into(p, shape, &mut buf) {
                Ok(()) => {
                    if !pool.push(first + k as u32, &buf) {
                        return;
                    }
                }
                Err(e) => log::warn!("skipping frame {}: {e:#}", first + k as u32),
            }
        }
        pool.close();
    })
}
