//! `jetlink boards`: the board compiled in, and every board known.

use super::*;

pub(crate) fn boards() -> Result<()> {
    let cur = jetlink::board::current();
    println!("compiled for: {}", cur.name);
    for b in jetlink::board::boards::ALL {
        println!(
            "{} {:<14} {:<5} {:<6} mem {:>6.1} GiB budget {:>7.3} GiB power {:>3} W  telemetry {:?}  serial {} @ {}  units {}",
            if b.name == cur.name { "*" } else { " " },
            b.name,
            b.soc,
            b.cuda_arch,
            b.total_memory_bytes as f64 / (1u64 << 30) as f64,
            b.model_budget_bytes as f64 / (1u64 << 30) as f64,
            b.power_budget_mw / 1000,
            b.telemetry.source,
            b.serial.device,
            b.serial.baud,
            b.resources.iter().map(|r| r.name).collect::<Vec<_>>().join(","),
        );
    }
    Ok(())
}
