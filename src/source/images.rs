//! Frames from a folder of images (PNG, JPEG, PGM/PPM), in name order, converted to the stream's
//! height, width and channels. Decoding runs on a producer thread (it allocates, the loop must not)
//! and hands frames to the loop through a [`FramePool`]. Uses the `image` crate, with only the
//! PNG, JPEG and PNM decoders compiled in.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::pool::FramePool;
use crate::view::Shape;

/// The widest and tallest image decoded (pixels).
pub const MAX_IMAGE_SIDE: u32 = 16384;

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
    // By the input rule (a FIFO or a device in the folder is refused, not waited on), and within
    // decoder limits (a 30000×30000 image is refused, not allocated).
    let bytes = crate::input::read(path, "image", crate::input::limit::IMAGE)?;
    let img = if bytes.starts_with(&[0xff, 0xd8]) {
        // JPEG strictly: the lenient decoder pads a truncated JPEG with grey and calls it a frame.
        let j = crate::jpeg::decode(&bytes, MAX_IMAGE_SIDE as usize, MAX_IMAGE_SIDE as usize)
            .with_context(|| format!("decoding {}", path.display()))?;
        let (w, h) = (j.width as u32, j.height as u32);
        let img = if j.channels == 1 {
            image::GrayImage::from_raw(w, h, j.pixels).map(image::DynamicImage::ImageLuma8)
        } else {
            image::RgbImage::from_raw(w, h, j.pixels).map(image::DynamicImage::ImageRgb8)
        };
        img.with_context(|| format!("decoding {}: pixel count", path.display()))?
    } else {
        decode_other(path, bytes)?
    };
    // A 0-pixel image (a PGM header may say so) is no frame: resized it would be all black.
    if img.width() == 0 || img.height() == 0 {
        bail!("decoding {}: the image is {}x{}, no pixels", path.display(), img.width(), img.height());
    }
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

/// PNG and PNM, through the `image` crate within its limits.
fn decode_other(path: &Path, bytes: Vec<u8>) -> Result<image::DynamicImage> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .with_context(|| format!("reading {}", path.display()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(crate::input::limit::IMAGE);
    reader.limits(limits);
    reader.decode().with_context(|| format!("decoding {}", path.display()))
}

/// Start the producer: decode every image in order into `pool`, numbering frames from `first`.
/// A file that fails to decode (or is gone, or too large) is logged, kept in `fault` (the file and
/// its error) and handed over as a failed frame: the loop counts it as a frame fault and sends
/// `FrameFault`.
pub fn spawn(
    paths: Vec<PathBuf>,
    shape: Shape,
    first: u32,
    pool: FramePool,
    fault: super::gst::Failure,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; shape.len()];
        for (k, p) in paths.iter().enumerate() {
            match decode_into(p, shape, &mut buf) {
                Ok(()) => {
                    if !pool.push(first + k as u32, &buf) {
                        return;
                    }
                }
                Err(e) => {
                    log::warn!("frame {}: {e:#}", first + k as u32);
                    *fault.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(format!("{}: {e:#}", p.display()));
                    if !pool.push_failed(first + k as u32) {
                        return;
                    }
                }
            }
        }
        pool.close();
    })
}
