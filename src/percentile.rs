//! The one percentile rule every report uses: nearest rank, `rank = round(p/100 · (n − 1))` on the
//! sorted samples (p = 50 is the median; p = 100 the maximum).
//!
//! Written here rather than taken from a statistics crate: the rule is five lines, the crates that
//! offer it (`statrs`, `hdrhistogram`) bring numeric or histogram machinery this needs none of, and
//! every figure must agree with one convention.

/// Percentile `p` (0..=100) of `samples` by nearest rank (NaN for no samples); sorts a copy.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut v = samples.to_vec();
    percentile_sorting(&mut v, p)
}

/// [`percentile`] on samples it may sort in place.
pub fn percentile_sorting(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    of_sorted(v, p)
}

/// [`percentile`] of samples already sorted ascending.
pub fn of_sorted(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[rank.min(v.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_on_n_minus_one() {
        let v: Vec<f64> = (1..=101).map(f64::from).rev().collect();
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 100.0);
        assert_eq!(percentile(&v, 100.0), 101.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[3.0, 1.0], 50.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
