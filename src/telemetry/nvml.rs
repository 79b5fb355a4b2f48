//! Telemetry from NVML on a host with a discrete NVIDIA GPU (memory, board power, utilisation).
//! `libnvidia-ml` is loaded at run time; where it is missing, opening fails with an error. NVML
//! does not work on Jetson (no NVML on JetPack 5; memory and power "Not Supported" on JetPack 6).

use std::ffi::OsStr;

use anyhow::{Context, Result};
use nvml_wrapper::error::NvmlError;

use super::{Sample, Source, TelemetryError, Valid};

/// Library names tried in order: the runtime soname (always installed with the driver), then the
/// development symlink.
const LIB_NAMES: [&str; 2] = ["libnvidia-ml.so.1", "libnvidia-ml.so"];

/// The NVML source for one device.
pub struct Nvml {
    nvml: nvml_wrapper::Nvml,
    index: u32,
    device_name: String,
}

impl Nvml {
    /// Load NVML and check that device `index` answers a memory query.
    pub fn open(index: u32) -> Result<Nvml> {
        let mut last = None;
        for name in LIB_NAMES {
            match nvml_wrapper::Nvml::builder().lib_path(OsStr::new(name)).init() {
                Ok(nvml) => {
                    let dev = nvml.device_by_index(index).with_context(|| format!("NVML device {index}"))?;
                    dev.memory_info().with_context(|| format!("NVML device {index}: memory"))?;
                    let device_name = dev.name().unwrap_or_else(|_| "unknown".into());
                    return Ok(Nvml { nvml, index, device_name });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or_else(|| anyhow::anyhow!("NVML not found"), anyhow::Error::from))
            .context("loading NVML (libnvidia-ml)")
    }

    /// The device's name, as NVML reports it.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }
}

fn map_err(e: NvmlError) -> TelemetryError {
    match e {
        NvmlError::NotSupported | NvmlError::FailedToLoadSymbol(_) | NvmlError::LibloadingError(_) => {
            TelemetryError::Unavailable
        }
        _ => TelemetryError::Unreadable,
    }
}

impl Source for Nvml {
    fn sample(&mut self, out: &mut Sample) -> Result<(), TelemetryError> {
        let dev = self.nvml.device_by_index(self.index).map_err(map_err)?;
        let mem = dev.memory_info().map_err(map_err)?;
        out.mem_total_bytes = mem.total;
        out.mem_available_bytes = mem.free;
        out.gpu_mem_used_bytes = mem.used;
        out.valid.insert(Valid::MEM | Valid::GPU_MEM);
        // Power and utilisation are optional: some boards report "Not Supported".
        out.rail_mw.clear();
        if let Ok(mw) = dev.power_usage() {
            out.power_mw = mw;
            let _ = out.rail_mw.push(mw);
            out.valid.insert(Valid::POWER);
        }
        if let Ok(u) = dev.utilization_rates() {
            out.gpu_load_permille =
                u16::try_from(u.gpu.saturating_mul(10)).map_err(|_| TelemetryError::Garbage)?;
            out.valid.insert(Valid::LOAD);
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "nvml"
    }
}
