//! Jetson telemetry from sysfs and procfs: INA3221 power rails through hwmon, shared memory from
//! `/proc/meminfo`, GPU load from the GPU's `load` node; and a parser for `tegrastats` lines, kept
//! as a cross-check in tests.
//!
//! Everything is resolved at open time (the hwmon glob, each rail's channel, the files); a sample
//! re-reads the open files at offset 0 into a fixed buffer (`pread`), which sysfs and procfs
//! regenerate on every read.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{MAX_RAILS, Sample, Source, TelemetryError, Valid, parse_u64, resolve};
use crate::board::TelemetryConfig;

/// Label of rails that are not connected (AGX Orin's second INA3221).
pub const LABEL_NOT_CONNECTED: &str = "NC";
/// The INA3221 driver's summation channel: `in7_label` reads "sum of shunt voltages". It is not a
/// rail (adding it would count the shunts twice).
pub const SUM_CHANNEL: u32 = 7;
pub const SUM_LABEL_PREFIX: &str = "sum of shunt";

/// `/proc/meminfo` keys, values in kB.
const MEM_TOTAL: &[u8] = b"MemTotal:";
const MEM_AVAILABLE: &[u8] = b"MemAvailable:";
const NVMAP_USED: &[u8] = b"NvMapMemUsed:";

/// One INA3221 channel found under hwmon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    pub label: String,
    /// The hwmon directory.
    pub dir: PathBuf,
    /// N of `in{N}_label`.
    pub index: u32,
}

struct RailFiles {
    millivolts: File,
    milliamps: File,
    in_total: bool,
}

/// The Tegra sysfs source.
pub struct Tegra {
    rails: Vec<RailFiles>,
    meminfo: Option<File>,
    gpu_load: Option<File>,
    buf: Box<[u8; 4096]>,
}

impl Tegra {
    /// Resolve the board's hwmon glob, rails, meminfo and GPU load node under `root`. Every rail of
    /// the board file must be found; the meminfo file must open; a missing GPU load node is only
    /// logged (its path moves between JetPack releases).
    pub fn open(cfg: &TelemetryConfig, root: &Path) -> Result<Tegra> {
        let mut rails = Vec::with_capacity(cfg.rails.len());
        if !cfg.rails.is_empty() {
            let glob = cfg.hwmon_glob.context("board lists rails but no telemetry.hwmon-glob")?;
            let channels = discover_rails(root, glob)?;
            if cfg.rails.len() > MAX_RAILS {
                bail!("{} rails, at most {MAX_RAILS}", cfg.rails.len());
            }
            for rail in cfg.rails {
                let ch = channels.iter().find(|c| c.label == rail.label).with_context(|| {
                    let found: Vec<&str> = channels.iter().map(|c| c.label.as_str()).collect();
                    format!("rail {} not found under {glob} (found: {})", rail.label, found.join(", "))
                })?;
                let open = |name: String| {
                    let p = ch.dir.join(&name);
                    File::open(&p).with_context(|| format!("rail {}: opening {}", rail.label, p.display()))
                };
                rails.push(RailFiles {
                    millivolts: open(format!("in{}_input", ch.index))?,
                    milliamps: open(format!("curr{}_input", ch.index))?,
                    in_total: rail.in_total,
                });
            }
        }
        let meminfo = match cfg.meminfo {
            Some(p) => {
                let p = resolve(root, p);
                Some(File::open(&p).with_context(|| format!("opening {}", p.display()))?)
            }
            None => None,
        };
        let gpu_load = cfg.gpu_load.and_then(|p| {
            let p = resolve(root, p);
            File::open(&p).map_err(|e| log::warn!("GPU load node {}: {e}; load not read", p.display())).ok()
        });
        Ok(Tegra { rails, meminfo, gpu_load, buf: Box::new([0; 4096]) })
    }
}

/// Read a whole small file from offset 0 into `buf`; the filled part.
fn read_at0<'a>(f: &File, buf: &'a mut [u8]) -> Result<&'a [u8], TelemetryError> {
    let mut n = 0;
    loop {
        match f.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                if n == buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(TelemetryError::Unreadable),
        }
    }
    Ok(&buf[..n])
}

fn read_u64(f: &File, buf: &mut [u8]) -> Result<u64, TelemetryError> {
    parse_u64(read_at0(f, buf)?)
}

/// The kB value of `key` in meminfo text, in bytes.
fn meminfo_field(text: &[u8], key: &[u8]) -> Option<Result<u64, TelemetryError>> {
    let line = text.split(|&b| b == b'\n').find(|l| l.starts_with(key))?;
    let v = line[key.len()..].trim_ascii();
    let v = v.strip_suffix(b"kB").unwrap_or(v);
    Some(parse_u64(v).and_then(|kb| kb.checked_mul(1024).ok_or(TelemetryError::Garbage)))
}

impl Source for Tegra {
    fn sample(&mut self, out: &mut Sample) -> Result<(), TelemetryError> {
        let buf = &mut self.buf[..];
        out.rail_mw.clear();
        if !self.rails.is_empty() {
            let mut total: u64 = 0;
            for r in &self.rails {
                let mv = read_u64(&r.millivolts, buf)?;
                let ma = read_u64(&r.milliamps, buf)?;
                let mw = mv.checked_mul(ma).ok_or(TelemetryError::Garbage)? / 1000;
                let mw = u32::try_from(mw).map_err(|_| TelemetryError::Garbage)?;
                if r.in_total {
                    total += mw as u64;
                }
                out.rail_mw.push(mw).map_err(|_| TelemetryError::Garbage)?;
            }
            out.power_mw = u32::try_from(total).map_err(|_| TelemetryError::Garbage)?;
            out.valid.insert(Valid::POWER);
        }
        if let Some(f) = &self.meminfo {
            let text = read_at0(f, buf)?;
            let total = meminfo_field(text, MEM_TOTAL).ok_or(TelemetryError::Garbage)??;
            let avail = meminfo_field(text, MEM_AVAILABLE).ok_or(TelemetryError::Garbage)??;
            out.mem_total_bytes = total;
            out.mem_available_bytes = avail;
            out.valid.insert(Valid::MEM);
            if let Some(nvmap) = meminfo_field(text, NVMAP_USED) {
                out.gpu_mem_used_bytes = nvmap?;
                out.valid.insert(Valid::GPU_MEM);
            }
        }
        if let Some(f) = &self.gpu_load {
            let load = read_u64(f, buf)?;
            out.gpu_load_permille = u16::try_from(load).map_err(|_| TelemetryError::Garbage)?;
            out.valid.insert(Valid::LOAD);
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "tegra-sysfs"
    }
}

/// Every rail channel under the hwmon directories `glob` matches below `root`, in path then
/// channel order, skipping `NC` rails and the summation channel.
pub fn discover_rails(root: &Path, glob: &str) -> Result<Vec<Channel>> {
    let dirs = glob_dirs(root, glob)?;
    if dirs.is_empty() {
        bail!("no hwmon directory matches {glob} under {}", root.display());
    }
    let mut out = Vec::new();
    for dir in dirs {
        let mut labels: Vec<(u32, String)> = Vec::new();
        for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let name = e?.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(n) = name.strip_prefix("in").and_then(|s| s.strip_suffix("_label")) else { continue };
            let Ok(index) = n.parse::<u32>() else { continue };
            let label = std::fs::read_to_string(dir.join(name))
                .with_context(|| format!("reading {}", dir.join(name).display()))?
                .trim()
                .to_string();
            if label == LABEL_NOT_CONNECTED || index == SUM_CHANNEL || label.starts_with(SUM_LABEL_PREFIX) {
                continue;
            }
            labels.push((index, label));
        }
        labels.sort();
        out.extend(labels.into_iter().map(|(index, label)| Channel { label, dir: dir.clone(), index }));
    }
    Ok(out)
}

/// Expand `pattern` (an absolute path whose components may contain `*` and `?`) below `root`;
/// directories only, sorted.
pub fn glob_dirs(root: &Path, pattern: &str) -> Result<Vec<PathBuf>> {
    let mut current = vec![root.to_path_buf()];
    for part in pattern.split('/').filter(|p| !p.is_empty()) {
        let mut next = Vec::new();
        for base in &current {
            if !part.contains(['*', '?']) {
                let p = base.join(part);
                if p.is_dir() {
                    next.push(p);
                }
                continue;
            }
            let Ok(rd) = std::fs::read_dir(base) else { continue };
            for e in rd.flatten() {
                if e.file_name().to_str().is_some_and(|n| wildcard(part.as_bytes(), n.as_bytes()))
                    && e.path().is_dir()
                {
                    next.push(e.path());
                }
            }
        }
        next.sort();
        current = next;
    }
    Ok(current)
}

/// `*` (any run) and `?` (any one byte) matching.
fn wildcard(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => wildcard(&p[1..], s) || (!s.is_empty() && wildcard(p, &s[1..])),
        (Some(b'?'), Some(_)) => wildcard(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => wildcard(&p[1..], &s[1..]),
        _ => false,
    }
}

/// What a `tegrastats` line says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TegraStats {
    pub ram_used_mb: u64,
    pub ram_total_mb: u64,
    /// `GR3D_FREQ` in percent, if present.
    pub gpu_load_percent: Option<u16>,
    /// (label, current mW, average mW), in line order.
    pub rails: Vec<(String, u32, u32)>,
}

impl TegraStats {
    pub fn rail(&self, label: &str) -> Option<(u32, u32)> {
        self.rails.iter().find(|r| r.0 == label).map(|r| (r.1, r.2))
    }
}

/// Parse one `tegrastats` line: `RAM used/totalMB`, `GR3D_FREQ n%` (also `n%@[freq]`), and rails as
/// `LABEL cur/avg` with or without `mW` (JetPack 5/6 print `4321mW/4000mW`, JetPack 4 `4321/4000`).
pub fn parse_tegrastats(line: &str) -> Result<TegraStats, TelemetryError> {
    let toks: Vec<&str> = line.split_whitespace().collect();
    let mut st = TegraStats::default();
    let mut have_ram = false;
    for w in toks.windows(2) {
        let (key, val) = (w[0], w[1]);
        match key {
            "RAM" => {
                let (u, t) =
                    val.strip_suffix("MB").and_then(|v| v.split_once('/')).ok_or(TelemetryError::Garbage)?;
                st.ram_used_mb = parse_u64(u.as_bytes())?;
                st.ram_total_mb = parse_u64(t.as_bytes())?;
                have_ram = true;
            }
            "GR3D_FREQ" => {
                let pct = val.split('%').next().unwrap_or("");
                st.gpu_load_percent =
                    Some(u16::try_from(parse_u64(pct.as_bytes())?).map_err(|_| TelemetryError::Garbage)?);
            }
            "SWAP" | "IRAM" | "EMC_FREQ" | "CPU" => {}
            _ if is_rail_label(key) => {
                if let Some((cur, avg)) = val.split_once('/') {
                    let mw = |s: &str| -> Result<u32, TelemetryError> {
                        let s = s.strip_suffix("mW").unwrap_or(s);
                        u32::try_from(parse_u64(s.as_bytes())?).map_err(|_| TelemetryError::Garbage)
                    };
                    if let (Ok(c), Ok(a)) = (mw(cur), mw(avg)) {
                        st.rails.push((key.to_string(), c, a));
                    }
                }
            }
            _ => {}
        }
    }
    if !have_ram || st.ram_used_mb > st.ram_total_mb {
        return Err(TelemetryError::Garbage);
    }
    Ok(st)
}

/// Rail labels are upper case, digits and underscores (`VDD_IN`, `VDDQ_VDD2_1V8AO`).
fn is_rail_label(s: &str) -> bool {
    s.len() >= 2
        && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && s.as_bytes()[0].is_ascii_uppercase()
}
