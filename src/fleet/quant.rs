//! Compact global updates: what changed since the version a board holds, 4 bits a value. Each block
//! of [`BLOCK`] values has one scale s = max |d| / 7 and each value is stored as round(d / s) in
//! −7..=7, so the error on a value is at most s / 2 (half a step). The aggregator quantises the
//! difference from what boards hold after applying its previous update (closed loop), so errors do
//! not add up over rounds: every board and the retained full update hold exactly the same weights.

use serde::{Deserialize, Serialize};

/// Values per scale.
pub const BLOCK: usize = 256;
/// Largest quantised magnitude (4-bit signed, −7..=7).
const LEVELS: f32 = 7.0;

/// Quantised values: one scale per block and two 4-bit values a byte (low nibble first).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantized {
    pub len: u32,
    pub scales: Vec<f32>,
    pub packed: Vec<u8>,
}

impl Quantized {
    /// Quantise `d`.
    pub fn new(d: &[f32]) -> Quantized {
        let mut scales = Vec::with_capacity(d.len().div_ceil(BLOCK));
        let mut packed = vec![0u8; d.len().div_ceil(2)];
        for (b, block) in d.chunks(BLOCK).enumerate() {
            let max = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let s = if max > 0.0 && max.is_finite() { max / LEVELS } else { 0.0 };
            scales.push(s);
            for (k, v) in block.iter().enumerate() {
                let q = if s > 0.0 { (v / s).round().clamp(-LEVELS, LEVELS) as i8 } else { 0 };
                let at = b * BLOCK + k;
                packed[at / 2] |= ((q as u8) & 0x0f) << (4 * (at % 2));
            }
        }
        Quantized { len: d.len() as u32, scales, packed }
    }

    /// Consistent sizes and finite scales no larger than `max_step`.
    pub fn check(&self, max_step: f32) -> Result<(), String> {
        let n = self.len as usize;
        if self.scales.len() != n.div_ceil(BLOCK) || self.packed.len() != n.div_ceil(2) {
            return Err(format!(
                "{} scales and {} bytes for {n} values, expected {} and {}",
                self.scales.len(),
                self.packed.len(),
                n.div_ceil(BLOCK),
                n.div_ceil(2)
            ));
        }
        if let Some(k) = self.scales.iter().position(|s| !(s.is_finite() && (0.0..=max_step).contains(s))) {
            return Err(format!("scale {k} is {}, not a finite step in [0, {max_step:e}]", self.scales[k]));
        }
        Ok(())
    }

    /// Value `i`, dequantised.
    fn value(&self, i: usize) -> f32 {
        let nib = (self.packed[i / 2] >> (4 * (i % 2))) & 0x0f;
        // Sign-extend the 4-bit value.
        let q = ((nib << 4) as i8) >> 4;
        q as f32 * self.scales[i / BLOCK]
    }

    /// Add the dequantised values to `base` (of `len` values).
    pub fn add_to(&self, base: &mut [f32]) -> Result<(), String> {
        if base.len() != self.len as usize {
            return Err(format!("{} values for {} weights", self.len, base.len()));
        }
        // Sizes checked here too, not only by `check`: an unchecked message cannot index past them.
        self.check(f32::INFINITY)?;
        for (i, b) in base.iter_mut().enumerate() {
            *b += self.value(i);
        }
        Ok(())
    }

    /// The largest error on a value: half the largest step.
    pub fn error_bound(&self) -> f32 {
        self.scales.iter().fold(0.0f32, |m, &s| m.max(s)) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_at_most_half_a_step_and_sizes_are_checked() {
        let d: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let q = Quantized::new(&d);
        assert_eq!((q.scales.len(), q.packed.len()), (4, 500));
        let mut back = vec![0.0; d.len()];
        q.add_to(&mut back).unwrap();
        let worst = d.iter().zip(&back).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= q.error_bound() + 1e-7, "{worst} > {}", q.error_bound());
        assert!(q.error_bound() <= 0.5 / 7.0 / 2.0 + 1e-6);
        // Signs and the extremes survive.
        let e = Quantized::new(&[-1.0, 1.0, 0.0, -0.5]);
        let mut v = vec![0.0; 4];
        e.add_to(&mut v).unwrap();
        assert_eq!(v[..3], [-1.0, 1.0, 0.0]);
        assert!((v[3] + 0.5).abs() <= e.error_bound());
        assert!(e.check(1.0).is_ok());
        let mut bad = e.clone();
        bad.scales[0] = f32::NAN;
        assert!(bad.check(1.0).is_err());
        bad.scales.push(0.0);
        assert!(bad.check(1.0).unwrap_err().contains("scales"));
        assert!(e.add_to(&mut [0.0; 3]).is_err());
        // Sizes that do not match `len` are refused by `add_to` itself, not read past.
        let mut short = e.clone();
        short.packed.pop();
        assert!(short.add_to(&mut [0.0; 4]).is_err());
    }
}
