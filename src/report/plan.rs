//! Growth and the capacity plan: a power law `y = a · rows^b` fitted by least squares on
//! (ln rows, ln y) to measurements at several dataset sizes (`cargo bench scale`), and its
//! predictions for larger row counts — extrapolations, labelled as such wherever they are shown.

/// A fitted power law.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerLaw {
    /// ln a.
    pub intercept: f64,
    /// b: the log–log slope (1 = linear growth).
    pub slope: f64,
    /// R² of the fit in log space.
    pub r2: f64,
    /// The measured sizes it is fitted to: how many, smallest, largest.
    pub points: usize,
    pub min_x: f64,
    pub max_x: f64,
}

impl PowerLaw {
    /// The fit of `points` (x, y) with x, y > 0; None with fewer than two distinct x.
    pub fn fit(points: &[(f64, f64)]) -> Option<Self> {
        let logs: Vec<(f64, f64)> = points
            .iter()
            .filter(|(x, y)| *x > 0.0 && *y > 0.0 && x.is_finite() && y.is_finite())
            .map(|(x, y)| (x.ln(), y.ln()))
            .collect();
        let n = logs.len() as f64;
        if logs.len() < 2 {
            return None;
        }
        let mx = logs.iter().map(|p| p.0).sum::<f64>() / n;
        let my = logs.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = logs.iter().map(|p| (p.0 - mx).powi(2)).sum();
        if sxx <= 1e-12 {
            return None;
        }
        let sxy: f64 = logs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let slope = sxy / sxx;
        let intercept = my - slope * mx;
        let ss_res: f64 = logs
            .iter()
            .map(|p| (p.1 - (intercept + slope * p.0)).powi(2))
            .sum();
        let ss_tot: f64 = logs.iter().map(|p| (p.1 - my).powi(2)).sum();
        let xs = points.iter().map(|p| p.0).filter(|x| *x > 0.0);
        Some(Self {
            intercept,
            slope,
            r2: if ss_tot <= 1e-24 {
                1.0
            } else {
                1.0 - ss_res / ss_tot
            },
            points: logs.len(),
            min_x: xs.clone().fold(f64::INFINITY, f64::min),
            max_x: xs.fold(0.0, f64::max),
        })
    }

    /// The predicted y at `x`.
    pub fn at(&self, x: f64) -> f64 {
        (self.intercept + self.slope * x.ln()).exp()
    }

    /// How far beyond the largest measured size `x` is (×).
    pub fn reach(&self, x: f64) -> f64 {
        x / self.max_x
    }
}

/// `10M`, `300K`, `1.5M`, `2000`: a row count as people write it.
pub fn rows_label(n: u64) -> String {
    let f = n as f64;
    let (v, unit) = if n >= 1_000_000 && n.is_multiple_of(100_000) {
        (f / 1e6, "M")
    } else if n >= 1000 && n.is_multiple_of(100) {
        (f / 1e3, "K")
    } else {
        return n.to_string();
    };
    let s = format!("{v:.1}");
    format!("{}{unit}", s.trim_end_matches(".0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_power_law_is_recovered_from_its_own_points() {
        let pts: Vec<(f64, f64)> = [1e4, 3e4, 1e5, 3e5]
            .iter()
            .map(|&x: &f64| (x, 2.0 * x.powf(1.2)))
            .collect();
        let f = PowerLaw::fit(&pts).unwrap();
        assert!((f.slope - 1.2).abs() < 1e-9, "{f:?}");
        assert!((f.at(1e7) / (2.0 * 1e7f64.powf(1.2)) - 1.0).abs() < 1e-9);
        assert!((f.r2 - 1.0).abs() < 1e-9);
        assert_eq!((f.points, f.min_x, f.max_x), (4, 1e4, 3e5));
        assert!((f.reach(3e6) - 10.0).abs() < 1e-9);
        // Noise lowers R² below 1; a single size cannot be fitted.
        let noisy = [(1e4, 1.0), (3e4, 5.0), (1e5, 2.0)];
        assert!(PowerLaw::fit(&noisy).unwrap().r2 < 0.9);
        assert!(PowerLaw::fit(&[(1e4, 1.0), (1e4, 2.0)]).is_none());
        assert!(PowerLaw::fit(&[(1e4, 1.0)]).is_none());
    }

    #[test]
    fn row_counts_read_and_print_as_people_write_them() {
        use crate::config::parse_row_count as parse_rows;
        assert_eq!(parse_rows("10M"), Ok(10_000_000));
        assert_eq!(parse_rows("300k"), Ok(300_000));
        assert_eq!(parse_rows("1.5M"), Ok(1_500_000));
        assert_eq!(parse_rows("2_000"), Ok(2000));
        assert!(parse_rows("ten").unwrap_err().contains("not a row count"));
        assert!(parse_rows("0").is_err());
        assert_eq!(rows_label(10_000_000), "10M");
        assert_eq!(rows_label(1_500_000), "1.5M");
        assert_eq!(rows_label(300_000), "300K");
        assert_eq!(rows_label(2_500), "2.5K");
        assert_eq!(rows_label(1234), "1234");
    }
}
