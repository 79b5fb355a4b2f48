//! `jetlink monitor`: decode a telemetry stream from a tty or a file.

use super::*;

#[derive(clap::Args)]
pub(crate) struct MonitorArgs {
    /// A tty (e.g. /dev/ttyUSB0) or a file written by `jetlink run --serial`.
    pub(crate) path: PathBuf,
    /// Write every Tick as a CSV row here (replaces only a CSV of ticks, unless `--force`).
    #[arg(long)]
    pub(crate) csv: Option<PathBuf>,
    /// Replace an existing output that is not of this kind (never a device or a FIFO).
    #[arg(long, requires = "csv")]
    pub(crate) force: bool,
    /// Keep reading a file as it grows.
    #[arg(long)]
    pub(crate) follow: bool,
    /// Stop after this many seconds without a byte (0 to 1,000,000).
    #[arg(long, value_parser = finite_in(0.0, 1e6))]
    pub(crate) idle_exit: Option<f64>,
    /// A tty's baud rate (default 115200); refused for anything else, where it has no effect.
    #[arg(long, value_parser = clap::value_parser!(u32).range(50..=12_000_000))]
    pub(crate) baud: Option<u32>,
}

pub(crate) fn monitor(a: &MonitorArgs) -> Result<()> {
    // (A path that does not exist is said when it is opened.)
    if a.baud.is_some() && a.path.exists() && !jetlink::serial::is_char_device(&a.path) {
        bail!("--baud sets a tty's line speed; {} is not a tty", a.path.display());
    }
    if a.csv.as_deref().is_some_and(|c| c.as_os_str() == "-") {
        bail!("--csv -: give a file path (the table goes to standard output)");
    }
    if let Some(csv) = &a.csv {
        jetlink::output::check_replace(csv, "--csv", jetlink::output::Kind::TickCsv, a.force)?;
        jetlink::output::make_folder(csv, "--csv")?;
        // The CSV is created before the input is read: the input itself must not be its target.
        if let (Ok(i), Ok(o)) = (std::fs::metadata(&a.path), std::fs::metadata(csv)) {
            use std::os::unix::fs::MetadataExt;
            if (i.dev(), i.ino()) == (o.dev(), o.ino()) {
                bail!(
                    "--csv {} is the input {} itself; refusing to replace what is being read",
                    csv.display(),
                    a.path.display()
                );
            }
        }
    }
    if std::fs::metadata(&a.path).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type())) {
        eprintln!(
            "jetlink monitor: {} is a FIFO: reading what its writer sends (--idle-exit S stops after S seconds without a byte)",
            a.path.display()
        );
    }
    // Ctrl-C or SIGTERM ends the reading, not the process: the table of what was read is printed
    // and the CSV finished (a tty or `--follow` otherwise reads until then).
    let stop = stop_on_signals()?;
    let opts = jetlink::monitor::MonitorOptions {
        csv: a.csv.as_deref(),
        follow: a.follow,
        idle_exit: a.idle_exit.map(std::time::Duration::from_secs_f64),
        baud: a.baud.unwrap_or(115_200),
        live: true,
        stop: Some(&stop),
    };
    let s = jetlink::monitor::monitor(&a.path, &opts)?;
    if s.decode.bytes == 0 {
        eprintln!("jetlink monitor: nothing was read from {}: it holds no telemetry", a.path.display());
    }
    let mut text = String::new();
    jetlink::monitor::render(&a.path.display().to_string(), &s, &mut text);
    println!("{text}");
    if let Some(damage) = s.damage() {
        eprintln!("jetlink monitor: {damage}");
        std::process::exit(super::run::EXIT_TELEMETRY_LOST);
    }
    if s.decode.bytes > 0 && s.decode.frames == 0 {
        bail!(
            "{}: {} bytes read and not one telemetry frame among them; is it a `jetlink run --serial` output?",
            a.path.display(),
            s.decode.bytes
        );
    }
    Ok(())
}
