//! `jetlink stream`: a stream file (`JLSTRM01`) from a folder of images, so that a workload's frames
//! need no tool of their own. Images are read in name order and converted to one size and channel
//! count (`src/source/images.rs`, the `image` crate: PNG, JPEG, PGM/PPM).

use super::*;

#[derive(clap::Args)]
pub(crate) struct StreamArgs {
    /// Folder of images (PNG, JPEG, PGM/PPM), taken in file-name order.
    pub(crate) images: PathBuf,
    /// Stream file to write (`.gz` compresses).
    #[arg(long, short)]
    pub(crate) out: PathBuf,
    /// Replace an existing output that is not of this kind (never a device or a FIFO).
    #[arg(long)]
    pub(crate) force: bool,
    /// Frame height (default: the first image's).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) height: Option<u16>,
    /// Frame width (default: the first image's).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) width: Option<u16>,
    /// Channels: 1 (grey, the default) or 3 (RGB).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub(crate) channels: u8,
    /// Frames [0, N) form the training part (links train on them; `record` records them by default);
    /// the rest is evaluation.
    #[arg(long)]
    pub(crate) train: u32,
    /// First frame of the drift segment (default: none, i.e. the number of frames).
    #[arg(long)]
    pub(crate) drift_start: Option<u32>,
}

pub(crate) fn stream_cmd(a: &StreamArgs) -> Result<()> {
    use jetlink::stream::FrameMeta;
    jetlink::output::check_replace(&a.out, "--out", jetlink::output::Kind::Stream, a.force)?;
    let paths = jetlink::source::images::list_images(&a.images)?;
    if a.channels == 2 {
        bail!("--channels 2: a stream from images has 1 (grey) or 3 (RGB) channels");
    }
    let (h, w) = match (a.height, a.width) {
        (Some(h), Some(w)) => (h as usize, w as usize),
        (h, w) => {
            let (iw, ih) = image::image_dimensions(&paths[0])
                .with_context(|| format!("reading the size of {}", paths[0].display()))?;
            let fit = |v: u32, what: &str| -> Result<usize> {
                if v == 0 || v > u16::MAX as u32 {
                    bail!(
                        "{}: {what} {v} does not fit a stream (1..=65535); give --{what}",
                        paths[0].display()
                    );
                }
                Ok(v as usize)
            };
            (
                h.map_or_else(|| fit(ih, "height"), |h| Ok(h as usize))?,
                w.map_or_else(|| fit(iw, "width"), |w| Ok(w as usize))?,
            )
        }
    };
    let n = paths.len();
    if a.train as usize > n {
        bail!("--train {}: the folder {} has only {n} images", a.train, a.images.display());
    }
    let drift = a.drift_start.map_or(n, |d| d as usize);
    if drift > n {
        bail!("--drift-start {drift}: the folder {} has only {n} images", a.images.display());
    }
    if drift < a.train as usize {
        bail!(
            "--drift-start {drift} is before --train {}: the training part would hold drift frames",
            a.train
        );
    }
    let shape = Shape { h, w, c: a.channels as usize };
    let len = shape.h * shape.w * shape.c;
    // A stream is held in memory whole: its size is checked before its pixels are allocated.
    let total = n as u64 * len as u64;
    if total > jetlink::input::limit::DATA {
        bail!(
            "{n} frames of {h}x{w}x{} are {total} bytes, above the limit of {} bytes for a stream",
            shape.c,
            jetlink::input::limit::DATA
        );
    }
    let mut pixels = vec![0u8; n * len];
    for (i, p) in paths.iter().enumerate() {
        jetlink::source::images::decode_into(p, shape, &mut pixels[i * len..(i + 1) * len])
            .with_context(|| format!("image {i} of {}", a.images.display()))?;
    }
    let meta: Vec<FrameMeta> = (0..n)
        // source: the image's position in name order; no label; severity unknown, so 0 (clean).
        .map(|i| FrameMeta { source: i as u32, label: 255, severity: 0 })
        .collect();
    let stream = Stream::from_parts(h, w, shape.c, a.train as usize, drift, meta, pixels)?;
    let bytes = stream.to_bytes();
    let gz = a.out.extension().is_some_and(|e| e == "gz");
    if let Some(d) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    jetlink::atomic::write_file_with(&a.out, |f| {
        use std::io::Write;
        if gz {
            let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::default());
            enc.write_all(&bytes)?;
            enc.finish()?.flush()
        } else {
            f.write_all(&bytes)?;
            f.flush()
        }
    })
    .with_context(|| format!("writing stream {}", a.out.display()))?;
    println!(
        "wrote {}: {n} frames of {h}x{w}x{} from {} (training part 0..{}, drift segment {})",
        a.out.display(),
        shape.c,
        a.images.display(),
        a.train,
        if drift < n { format!("{drift}..{n}") } else { "none".into() }
    );
    Ok(())
}
