//! Fault injection for telemetry: [`Faulty`] wraps a source and, on the samples a plan picks,
//! fails or returns garbage (the soak and the loop's fault tests).

use crate::telemetry::{Sample, Source, TelemetryError, Valid};

/// What a [`Faulty`] source does on a chosen sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Return this error.
    Fail(TelemetryError),
    /// Return Ok with impossible values (available > total, absurd power, load > 1000 ‰).
    Garbage,
}

/// Fault injection: wraps a source and, on the samples `plan(n)` picks (n counts from 0), fails or
/// returns garbage instead.
pub struct Faulty<S, F> {
    inner: S,
    plan: F,
    n: u64,
}

impl<S: Source, F: FnMut(u64) -> Option<Fault> + Send> Faulty<S, F> {
    pub fn new(inner: S, plan: F) -> Self {
        Faulty { inner, plan, n: 0 }
    }
}

impl<S: Source, F: FnMut(u64) -> Option<Fault> + Send> Source for Faulty<S, F> {
    fn sample(&mut self, out: &mut Sample) -> Result<(), TelemetryError> {
        let n = self.n;
        self.n += 1;
        let r = self.inner.sample(out);
        match (self.plan)(n) {
            None => r,
            Some(Fault::Fail(e)) => Err(e),
            Some(Fault::Garbage) => {
                out.mem_available_bytes = out.mem_total_bytes.saturating_add(1 << 40);
                out.power_mw = u32::MAX;
                out.gpu_load_permille = 60_000;
                out.valid = Valid::MEM | Valid::POWER | Valid::LOAD;
                Ok(())
            }
        }
    }
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn set_own_usage(&mut self, bytes: u64) {
        self.inner.set_own_usage(bytes)
    }
}
