//! Strict JPEG decoding: a truncated or corrupt JPEG is an error that says what is wrong, never a
//! picture padded with grey (the `image` crate decodes leniently, as browsers do).
//!
//! Uses `zune-jpeg` (the decoder inside `image`) directly, for its strict mode. JPEG carries no
//! checksum, so damage that still decodes to a valid picture cannot be told from a real one.

use anyhow::{Result, anyhow, bail};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

/// A decoded JPEG: 1 channel (grey) for a greyscale JPEG, 3 (RGB) for any other.
pub struct Decoded {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    /// Row-major, channels last.
    pub pixels: Vec<u8>,
}

/// Decode `bytes` strictly; an image wider than `max_width`, taller than `max_height`, or whose
/// pixels would take more than [`crate::input::limit::IMAGE`] bytes is refused from its header,
/// before its pixels are allocated.
pub fn decode(bytes: &[u8], max_width: usize, max_height: usize) -> Result<Decoded> {
    let probe =
        DecoderOptions::default().set_strict_mode(true).set_max_width(max_width).set_max_height(max_height);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), probe);
    d.decode_headers().map_err(|e| anyhow!("not a valid JPEG: {e:?}"))?;
    let (w, h) = d.dimensions().ok_or_else(|| anyhow!("not a valid JPEG: no dimensions"))?;
    if w > max_width || h > max_height {
        bail!("a {w}x{h} JPEG, larger than {max_width}x{max_height}");
    }
    if (w as u64) * (h as u64) * 3 > crate::input::limit::IMAGE {
        bail!("a {w}x{h} JPEG would take more than {} bytes decoded", crate::input::limit::IMAGE);
    }
    let grey = matches!(d.input_colorspace(), Some(ColorSpace::Luma | ColorSpace::LumaA));
    let out = if grey { ColorSpace::Luma } else { ColorSpace::RGB };
    let opts = probe.jpeg_set_out_colorspace(out);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
    let pixels = d.decode().map_err(|e| anyhow!("corrupt JPEG: {e:?}"))?;
    let (width, height) = d.dimensions().ok_or_else(|| anyhow!("corrupt JPEG: no dimensions"))?;
    let channels = if grey { 1 } else { 3 };
    if pixels.len() != width * height * channels {
        bail!("corrupt JPEG: {} bytes decoded for {width}x{height}x{channels}", pixels.len());
    }
    Ok(Decoded { width, height, channels, pixels })
}

/// Encode a frame (`channels` 1 or 3, row-major, channels last) as a baseline JPEG at `quality`
/// (1–100), with the `image` crate's encoder.
pub fn encode(pixels: &[u8], width: usize, height: usize, channels: usize, quality: u8) -> Result<Vec<u8>> {
    let ty = match channels {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        c => bail!("JPEG frames have 1 or 3 channels, not {c}"),
    };
    if pixels.len() != width * height * channels {
        bail!("{} bytes for a {width}x{height}x{channels} frame", pixels.len());
    }
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
        .encode(pixels, width as u32, height as u32, ty)
        .map_err(|e| anyhow!("encoding a JPEG: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(w: u32, h: u32, grey: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
        let px: Vec<u8> = (0..w * h * if grey { 1 } else { 3 }).map(|i| (i * 7 % 251) as u8).collect();
        let ty = if grey { image::ExtendedColorType::L8 } else { image::ExtendedColorType::Rgb8 };
        image::ImageEncoder::write_image(enc, &px, w, h, ty).unwrap();
        out
    }

    #[test]
    fn grey_and_rgb_decode_and_damage_is_refused() {
        let g = decode(&encode(32, 16, true), 64, 64).unwrap();
        assert_eq!((g.width, g.height, g.channels, g.pixels.len()), (32, 16, 1, 512));
        let c = decode(&encode(32, 16, false), 64, 64).unwrap();
        assert_eq!((c.width, c.height, c.channels, c.pixels.len()), (32, 16, 3, 1536));
        // Truncated: the lenient decoder fills the rest with grey; this one refuses.
        let j = encode(64, 64, false);
        assert!(image::load_from_memory(&j[..j.len() / 2]).is_ok(), "the lenient decoder accepts it");
        assert!(decode(&j[..j.len() / 2], 64, 64).is_err());
        // Too large for the caller.
        let e = decode(&j, 32, 64).err().expect("64 wide is above a width of 32");
        assert!(format!("{e:#}").contains("JPEG"), "{e:#}");
        // Not a JPEG at all.
        assert!(decode(b"\x89PNG\r\n\x1a\n", 64, 64).is_err());
    }
}
