//! The few statistics tune needs.

use std::time::Duration;

pub(super) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(super) fn median_f64(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The smallest value of the 1-2-5 series (…, 200, 500, 1000, 2000, …) at
/// least `ms`: round numbers a person would write, and a recommendation
/// that does not move when a measurement moves by a few percent.
pub fn one_two_five(ms: f64) -> u64 {
    let mut decade = 1u64;
    loop {
        for step in [1, 2, 5] {
            let v = step * decade;
            if v as f64 >= ms || v >= 3_600_000 {
                return v.min(3_600_000);
            }
        }
        decade *= 10;
    }
}
