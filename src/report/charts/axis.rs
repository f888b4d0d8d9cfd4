//! The charts' axes: the value range of a set of points, tick labels, and a logarithmic axis
//! that labels more than the powers of ten.

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};

/// How the x axis labels its ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ticks {
    /// The number, without a long tail of digits ([`tick`]).
    #[default]
    Number,
    /// Whole numbers only (run 1, 2, 3…); no label between them.
    Integers,
    /// x is "nines" (−log10(1 − q)): labelled 90%, 99%, 99.9%…
    Nines,
}

/// Whether a value can be drawn on the axis.
pub(super) fn usable(v: f64, log: bool) -> bool {
    v.is_finite() && (!log || v > 0.0)
}

/// The range of an axis that shows `values` (padded; from zero when asked, on a linear axis).
pub(super) fn span(values: impl Iterator<Item = f64>, log: bool, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| usable(*v, log)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return if log { (1.0, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        if hi / lo < 1.5 {
            (lo / 1.5, hi * 1.5)
        } else {
            (lo / 1.15, hi * 1.15)
        }
    } else {
        let lo = if from_zero { lo.min(0.0) } else { lo };
        let pad = if hi > lo {
            (hi - lo) * 0.06
        } else {
            hi.abs().max(1.0) * 0.1
        };
        let lo = if from_zero && lo >= 0.0 { lo } else { lo - pad };
        (lo, hi + pad)
    }
}

/// Number formatting for tick labels: no long tails of digits.
pub fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        let s = format!("{v:.1}");
        s.trim_end_matches(".0").to_string()
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_string()
    }
}

/// A tick label of `ticks` at `v`.
pub(super) fn x_tick(ticks: Ticks, v: f64) -> String {
    match ticks {
        Ticks::Number => tick(v),
        Ticks::Integers if (v - v.round()).abs() < 1e-9 => format!("{v:.0}"),
        Ticks::Integers => String::new(),
        Ticks::Nines => nines_label(v),
    }
}

/// x = "nines" (−log10(1 − q)), so 90 %, 99 %, 99.9 % are evenly spaced.
fn nines_label(v: f64) -> String {
    if (v - v.round()).abs() > 1e-9 {
        return String::new();
    }
    let q = (1.0 - 10f64.powf(-v)) * 100.0;
    let s = if q >= 99.0 {
        format!("{q:.2}")
    } else {
        format!("{q:.1}")
    };
    format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
}

/// A logarithmic axis whose ticks follow 1-2-3-5-7 × 10ⁿ (plotters' own log axis labels only the
/// powers of ten, which leaves a range narrower than a decade with one label or none).
#[derive(Debug, Clone, Copy)]
pub struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    pub fn new(lo: f64, hi: f64) -> Self {
        let lo = lo.max(f64::MIN_POSITIVE);
        Self {
            lo,
            hi: hi.max(lo * 1.0001),
        }
    }

    /// Every m × 10ⁿ in range, for m in `mantissas`, every `every`-th decade.
    fn ticks(&self, mantissas: &[f64], every: i32) -> Vec<f64> {
        let (first, last) = (
            self.lo.log10().floor() as i32,
            self.hi.log10().ceil() as i32,
        );
        let mut out = Vec::new();
        for d in (first..=last).filter(|d| d.rem_euclid(every) == 0) {
            for m in mantissas {
                let v = m * 10f64.powi(d);
                if v >= self.lo * (1.0 - 1e-9) && v <= self.hi * (1.0 + 1e-9) {
                    out.push(v);
                }
            }
        }
        out
    }
}

impl Ranged for LogAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let (a, b) = (self.lo.ln(), self.hi.ln());
        let f = (value.max(f64::MIN_POSITIVE).ln() - a) / (b - a);
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        let max = hint.max_num_points().max(1);
        let sets: [&[f64]; 5] = [
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
            &[1.0, 2.0, 3.0, 5.0, 7.0],
            &[1.0, 2.0, 5.0],
            &[1.0, 3.0],
            &[1.0],
        ];
        for set in sets {
            let t = self.ticks(set, 1);
            if t.len() <= max && t.len() >= 2 {
                return t;
            }
        }
        (2..10)
            .map(|every| self.ticks(&[1.0], every))
            .find(|t| t.len() <= max)
            .unwrap_or_default()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_ticks_read_as_percentiles_and_integer_ticks_skip_fractions() {
        assert_eq!(x_tick(Ticks::Nines, 1.0), "90%");
        assert_eq!(x_tick(Ticks::Nines, 2.0), "99%");
        assert_eq!(x_tick(Ticks::Nines, 3.0), "99.9%");
        assert_eq!(x_tick(Ticks::Nines, 2.5), "");
        assert_eq!(x_tick(Ticks::Integers, 3.0), "3");
        assert_eq!(x_tick(Ticks::Integers, 2.5), "");
        assert_eq!(x_tick(Ticks::Number, 2.5), "2.5");
    }
}
