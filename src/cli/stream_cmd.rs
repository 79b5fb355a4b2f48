//! `jetlink stream`: a stream file from a folder of images or a video file, so that a workload's
//! frames need no tool of their own. Images are read in name order (`src/source/images.rs`, the
//! `image` crate: PNG, JPEG, PGM/PPM); a video is decoded through GStreamer as `--source` decodes
//! it (`src/source/gst.rs`). Frames are converted to one size and channel count, taken from the
//! flags, from the manifest the stream is for (`--manifest`, checked against every model's view),
//! or from the first image.

use super::*;
use jetlink::source::{FrameSource, LiveSource, SourceSpec};

/// JPEG quality of a stream without `--quality`.
const DEFAULT_QUALITY: u8 = 90;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StreamFormat {
    /// `JLSTRM01`: raw pixels, lossless.
    Raw,
    /// `JLSTRM02`: each frame a JPEG (`--quality`), about a tenth of the size.
    Jpeg,
}

#[derive(clap::Args)]
pub(crate) struct StreamArgs {
    /// A folder of images (PNG, JPEG, PGM/PPM, taken in file-name order) or a video file (decoded
    /// through GStreamer's `decodebin`).
    pub(crate) input: PathBuf,
    /// Stream file to write (`.gz` compresses).
    #[arg(long, short)]
    pub(crate) out: PathBuf,
    /// Replace an existing output that is not of this kind (never a device or a FIFO).
    #[arg(long)]
    pub(crate) force: bool,
    /// The manifest the stream is for: frame size and channels are taken from its models' input
    /// (a model without a view takes frames of its input's size), and every model's view is
    /// checked against them here rather than at `record`.
    #[arg(long)]
    pub(crate) manifest: Option<PathBuf>,
    /// Frame height (default: from --manifest, else the first image's).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) height: Option<u16>,
    /// Frame width (default: from --manifest, else the first image's).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) width: Option<u16>,
    /// Channels: 1 (grey) or 3 (RGB) (default: from --manifest, else the first image's).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub(crate) channels: Option<u8>,
    /// At most this many frames (the first ones).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) frames: Option<u32>,
    /// File format (default: `jpeg` for a video, `raw` for images).
    #[arg(long, value_enum)]
    pub(crate) format: Option<StreamFormat>,
    /// JPEG quality (1–100) for `--format jpeg` (default: 90).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub(crate) quality: Option<u8>,
    /// Frames [0, N) form the training part (links train on them; `record` records them by default);
    /// the rest is evaluation.
    #[arg(long)]
    pub(crate) train: u32,
    /// First frame of the drift segment (default: none, i.e. the number of frames).
    #[arg(long)]
    pub(crate) drift_start: Option<u32>,
}

/// The frame shape the manifest's models take, from those without a view (their input is the
/// frame, NCHW); `None` when every model has a view.
fn manifest_shape(m: &Manifest) -> Result<Option<Shape>> {
    let mut found: Option<(Shape, &str)> = None;
    for spec in m.models.iter().filter(|s| s.view.is_empty()) {
        let d = &spec.input_shape;
        if d.len() != 4 || !(d[1] == 1 || d[1] == 3) {
            continue;
        }
        if d[2] > u16::MAX as u32 || d[3] > u16::MAX as u32 {
            bail!(
                "--manifest: model {:?} takes {}x{} frames, larger than a stream holds (65535)",
                spec.name,
                d[2],
                d[3]
            );
        }
        let s = Shape { h: d[2] as usize, w: d[3] as usize, c: d[1] as usize };
        match found {
            Some((f, other)) if f != s => bail!(
                "--manifest: model {:?} takes {}x{}x{} frames and model {other:?} {}x{}x{}",
                spec.name,
                s.h,
                s.w,
                s.c,
                f.h,
                f.w,
                f.c
            ),
            _ => found = Some((s, &spec.name)),
        }
    }
    Ok(found.map(|(s, _)| s))
}

/// Whether the regular file `p` is a stream file (its magic, or a gzip file named `.jls.gz`).
fn is_stream_file(p: &std::path::Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 8];
    let Ok(n) = std::fs::File::open(p).and_then(|f| f.take(8).read(&mut head)) else { return false };
    let name = p.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let gz = n >= 2 && head[..2] == [0x1f, 0x8b];
    (n == 8 && (&head == jetlink::stream::MAGIC || &head == jetlink::stream::MAGIC_JPEG))
        || (gz && name.ends_with(".jls.gz"))
}

pub(crate) fn stream_cmd(a: &StreamArgs) -> Result<()> {
    use jetlink::stream::FrameMeta;
    jetlink::output::prepare(&a.out, "--out", jetlink::output::Kind::Stream, a.force)?;
    let md = std::fs::metadata(&a.input).with_context(|| format!("{}", a.input.display()))?;
    let (spec, first_image) = if md.is_dir() {
        let paths = jetlink::source::images::list_images(&a.input)?;
        let first = paths[0].clone();
        (SourceSpec::Images(a.input.clone()), Some((first, paths.len())))
    } else if md.is_file() {
        if is_stream_file(&a.input) {
            bail!(
                "{} is a jetlink stream already: `stream` makes one from a folder of images or a \
                 video file (a manifest's `stream` takes this file as it is)",
                a.input.display()
            );
        }
        (SourceSpec::Video(a.input.clone()), None)
    } else {
        bail!(
            "{} is {}: give a folder of images or a video file",
            a.input.display(),
            jetlink::input::kind(md.file_type())
        );
    };
    let manifest = match &a.manifest {
        Some(p) => Some(Manifest::load(p)?),
        None => None,
    };
    let from_manifest = manifest.as_ref().map(manifest_shape).transpose()?.flatten();
    let from_image = match &first_image {
        Some((p, _)) if a.height.is_none() || a.width.is_none() || a.channels.is_none() => {
            // Opened by the input rule (a FIFO or a device is refused, not waited on), then decoded
            // from memory.
            let bytes = jetlink::input::read(p, "image", jetlink::input::limit::IMAGE)?;
            let reader = || {
                let mut r = image::ImageReader::new(std::io::Cursor::new(&bytes[..]))
                    .with_guessed_format()
                    .with_context(|| format!("reading {}", p.display()))?;
                let mut limits = image::Limits::default();
                limits.max_alloc = Some(jetlink::input::limit::IMAGE);
                r.limits(limits);
                anyhow::Ok(r)
            };
            let (w, h) = reader()?
                .into_dimensions()
                .with_context(|| format!("reading the size of {}", p.display()))?;
            // The colour type from the header (decoding the pixels could exceed the limits).
            let grey = reader()
                .ok()
                .and_then(|r| r.into_decoder().ok())
                .is_some_and(|d| image::ImageDecoder::color_type(&d).channel_count() <= 2);
            let fit = |v: u32, what: &str| -> Result<usize> {
                if v == 0 || v > u16::MAX as u32 {
                    bail!("{}: {what} {v} does not fit a stream (1..=65535); give --{what}", p.display());
                }
                Ok(v as usize)
            };
            Some(Shape { h: fit(h, "height")?, w: fit(w, "width")?, c: if grey { 1 } else { 3 } })
        }
        _ => None,
    };
    let pick = |flag: Option<usize>, m: Option<usize>, i: Option<usize>, name: &str| -> Result<usize> {
        flag.or(m).or(i).with_context(|| match &a.manifest {
            Some(p) => format!(
                "--{name}: every model of --manifest {} reads its frames through a view, so the manifest \
                 does not fix a video's frame size and channels; give --height, --width and --channels",
                p.display()
            ),
            None => format!(
                "--{name}: a video's frame size and channels come from --height, --width and --channels, or from \
                 --manifest (a model without a view); give --{name} or --manifest"
            ),
        })
    };
    let shape = Shape {
        h: pick(a.height.map(usize::from), from_manifest.map(|s| s.h), from_image.map(|s| s.h), "height")?,
        w: pick(a.width.map(usize::from), from_manifest.map(|s| s.w), from_image.map(|s| s.w), "width")?,
        c: pick(
            a.channels.map(usize::from),
            from_manifest.map(|s| s.c),
            from_image.map(|s| s.c),
            "channels",
        )?,
    };
    if shape.c == 2 {
        bail!("--channels 2: a stream has 1 (grey) or 3 (RGB) channels");
    }

    // Every model must take these frames: said here, not later at `record`.
    if let Some(m) = &manifest {
        for spec in &m.models {
            jetlink::view::View::prepare(&spec.view, shape)
                .and_then(|v| v.check_input(&spec.input_shape))
                .map_err(|e| {
                    anyhow::anyhow!(
                        "model {:?} of {} does not take {}x{}x{} frames: {e}",
                        spec.name,
                        a.manifest.as_ref().map_or(String::new(), |p| p.display().to_string()),
                        shape.h,
                        shape.w,
                        shape.c
                    )
                })?;
        }
    }
    let format =
        a.format.unwrap_or(if first_image.is_some() { StreamFormat::Raw } else { StreamFormat::Jpeg });
    if let (StreamFormat::Raw, Some(q)) = (format, a.quality) {
        bail!("--quality {q} applies to JPEG frames; this stream is raw (--format jpeg compresses it)");
    }
    let quality = a.quality.unwrap_or(DEFAULT_QUALITY);
    if format == StreamFormat::Jpeg && shape.c != 1 && shape.c != 3 {
        bail!("--format jpeg takes 1 or 3 channels");
    }
    let len = shape.len();
    // Held in memory whole (and decoded whole when loaded): bounded before it grows. One frame is
    // held decoded, in several copies while it is converted: bounded as an image is.
    let limit = jetlink::input::limit::DATA;
    if len as u64 > jetlink::input::limit::IMAGE {
        bail!(
            "a {}x{}x{} frame{} is {len} bytes, above the limit of {} bytes for a frame",
            shape.h,
            shape.w,
            shape.c,
            match &first_image {
                Some((p, _)) if from_image.is_some() => format!(" (the size of {})", p.display()),
                _ => String::new(),
            },
            jetlink::input::limit::IMAGE
        );
    }
    let cap = a.frames.map(|f| f as usize).unwrap_or(usize::MAX);
    if let Some((_, n)) = &first_image {
        let n = (*n).min(cap);
        let total = n as u64 * len as u64;
        if total > limit {
            bail!(
                "{n} frames of {}x{}x{} are {total} bytes, above the limit of {limit} bytes for a stream",
                shape.h,
                shape.w,
                shape.c
            );
        }
    }
    jetlink::output::make_folder(&a.out, "--out")?;
    let mut source = LiveSource::open(&spec, shape, 0)?;
    let total = first_image.as_ref().map_or(a.frames.unwrap_or(0) as u64, |(_, n)| (*n).min(cap) as u64);
    let mut bar = jetlink::progress::Progress::new("stream", "frames", total, true);
    let mut buf = vec![0u8; len];
    let (mut pixels, mut jpegs) = (Vec::<u8>::new(), Vec::new());
    // Raw pixels are held whole: room is taken up front where the frame count is known (no
    // doubling growth), and a failed reservation is an error naming the size, not an abort.
    let oom = |bytes: u64| {
        anyhow::anyhow!("{bytes} bytes of frames do not fit in memory; give --frames or --format jpeg")
    };
    if format == StreamFormat::Raw && first_image.is_some() {
        pixels.try_reserve_exact((total * len as u64) as usize).map_err(|_| oom(total * len as u64))?;
    }
    let mut stored = 0u64;
    let mut n = 0usize;
    while n < cap {
        match source.next_frame(&mut buf) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => bail!(
                "frame {n} of {}: {e}{}",
                a.input.display(),
                source
                    .last_fault()
                    .or_else(|| source.failure())
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        }
        if (n as u64 + 1) * len as u64 > limit {
            bail!(
                "{} frames of {}x{}x{} are above the limit of {limit} bytes for a stream; give --frames",
                n + 1,
                shape.h,
                shape.w,
                shape.c
            );
        }
        // source: the frame's position in the input; no label; severity unknown, so 0 (clean).
        let meta = FrameMeta { source: n as u32, label: 255, severity: 0 };
        match format {
            StreamFormat::Raw => {
                pixels.try_reserve(len).map_err(|_| oom((n as u64 + 1) * len as u64))?;
                pixels.extend_from_slice(&buf)
            }
            StreamFormat::Jpeg => {
                let j = jetlink::jpeg::encode(&buf, shape.w, shape.h, shape.c, quality)
                    .with_context(|| format!("frame {n}"))?;
                stored += j.len() as u64;
                jpegs.push((meta, j));
            }
        }
        n += 1;
        bar.inc(1);
    }
    bar.finish();
    if let Some(reason) = source.failure() {
        bail!("{}: {reason}", a.input.display());
    }
    drop(source);
    if n == 0 {
        bail!("{}: no frame", a.input.display());
    }
    if a.train as usize > n {
        bail!("--train {}: {} has only {n} frames", a.train, a.input.display());
    }
    let drift = a.drift_start.map_or(n, |d| d as usize);
    if drift > n {
        bail!("--drift-start {drift}: {} has only {n} frames", a.input.display());
    }
    if drift < a.train as usize {
        bail!(
            "--drift-start {drift} is before --train {}: the training part would hold drift frames",
            a.train
        );
    }
    // Raw frames are written from the pixels held (no second copy); JPEG frames are small.
    let (raw, bytes) = match format {
        StreamFormat::Raw => {
            let meta = (0..n).map(|i| FrameMeta { source: i as u32, label: 255, severity: 0 }).collect();
            (
                Some(Stream::from_parts(shape.h, shape.w, shape.c, a.train as usize, drift, meta, pixels)?),
                Vec::new(),
            )
        }
        StreamFormat::Jpeg => (None, jetlink::stream::jpeg_file(shape, a.train as usize, drift, &jpegs)),
    };
    let write = |w: &mut dyn std::io::Write| match &raw {
        Some(s) => s.write_to(w),
        None => w.write_all(&bytes),
    };
    let gz = a.out.extension().is_some_and(|e| e == "gz");
    // Again now that the inputs are read: none of them is replaced.
    jetlink::output::check_replace(&a.out, "--out", jetlink::output::Kind::Stream, a.force)?;
    jetlink::atomic::write_file_with(&a.out, |f| {
        if gz {
            let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::default());
            write(&mut enc)?;
            enc.finish()?.flush()
        } else {
            write(f)?;
            f.flush()
        }
    })
    .with_context(|| format!("writing stream {}", a.out.display()))?;
    println!(
        "wrote {}: {n} frames of {}x{}x{} from {} as {} (training part 0..{}, drift segment {})",
        a.out.display(),
        shape.h,
        shape.w,
        shape.c,
        a.input.display(),
        match format {
            StreamFormat::Raw => "raw pixels (JLSTRM01)".to_string(),
            StreamFormat::Jpeg => format!("JPEG q{} (JLSTRM02, {} bytes of frames)", quality, stored),
        },
        a.train,
        if drift < n { format!("{drift}..{n}") } else { "none".into() }
    );
    Ok(())
}
