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

/// pgvector's on-disk layout (0.8), for the plan's other dimensions: what one row costs an index of
/// `variant`, in 8 KiB pages. An index page holds whole tuples only, so the bytes per row step with
/// the dimension instead of growing smoothly: a 1536-d `vector` element (6,224 bytes) and its
/// neighbour list (200 bytes at m = 16) leave no room for a second one, so each row takes a page of
/// its own; at 1536 `halfvec` two fit, bit(1536) sixteen. Measured: 100K rows of 1536 dims took
/// 781 MiB (hnsw, this model 781), 391 (halfvec, 391), 48 (bq, 49), 782 (ivfflat, 781).
pub mod layout {
    use crate::config::Variant;

    const PAGE: usize = 8192;
    /// A page less its header (24) and pgvector's special space (8).
    const USABLE: usize = PAGE - 24 - 8;
    /// Each tuple's line pointer.
    const ITEM_ID: usize = 4;
    /// HnswElementTupleData up to its value: type, level, deleted, version, 10 heap TIDs, the
    /// neighbour tuple's TID, padding.
    const ELEMENT_HEADER: usize = 72;
    /// IndexTupleData (IVFFlat's list tuples).
    const INDEX_TUPLE_HEADER: usize = 8;

    fn maxalign(n: usize) -> usize {
        (n + 7) & !7
    }

    /// The indexed value's size: varlena header + dims (+ unused) + the elements.
    fn value_bytes(variant: Variant, dims: u32) -> usize {
        let d = dims as usize;
        8 + match variant {
            Variant::Hnsw | Variant::Ivfflat => 4 * d,
            Variant::Halfvec => 2 * d,
            Variant::Bq => d.div_ceil(8),
        }
    }

    /// The table's bytes per row (heap and TOAST) at `to` dims less at `from`: the `vector` column
    /// keeps every float whatever the index, out of line in TOAST chunks (about 1,996 bytes, four
    /// to a page: 2.6 % over the raw bytes).
    pub fn table_bytes_per_row_change(from: u32, to: u32) -> f64 {
        4.0 * (f64::from(to) - f64::from(from)) * PAGE as f64 / (4.0 * 1996.0)
    }

    /// pgvector's largest indexable dimension for the variant's type (`vector` 2,000, `halfvec`
    /// 4,000, `bit` 64,000).
    pub fn max_dims(variant: Variant) -> u32 {
        match variant {
            Variant::Hnsw | Variant::Ivfflat => 2_000,
            Variant::Halfvec => 4_000,
            Variant::Bq => 64_000,
        }
    }

    /// The type the variant's index holds, as pgvector's limits name it.
    pub fn indexed_type(variant: Variant) -> &'static str {
        match variant {
            Variant::Hnsw => "vector in HNSW",
            Variant::Ivfflat => "vector in IVFFlat",
            Variant::Halfvec => "halfvec",
            Variant::Bq => "bit",
        }
    }

    /// Bytes of index per row at `dims` (HNSW with `m` neighbours per layer); None beyond
    /// [`max_dims`].
    pub fn bytes_per_row(variant: Variant, dims: u32, m: u32) -> Option<f64> {
        if dims == 0 || dims > max_dims(variant) {
            return None;
        }
        let value = value_bytes(variant, dims);
        let page = PAGE as f64;
        if variant == Variant::Ivfflat {
            let tuple = maxalign(INDEX_TUPLE_HEADER + value) + ITEM_ID;
            return Some(page / (USABLE / tuple).max(1) as f64);
        }
        let m = m.max(2) as usize;
        // An element of level l keeps (l + 2)·m neighbour TIDs (6 bytes each) after a 4-byte
        // header; a level is reached with probability (1/m)^l, so the mean list is about
        // (2 + 1/(m−1))·m TIDs.
        let neighbours = |tids: f64| maxalign(4 + (tids * 6.0).ceil() as usize);
        let mean_tids = (2.0 + 1.0 / (m as f64 - 1.0)) * m as f64;
        let element = maxalign(ELEMENT_HEADER + value);
        let pair = element + neighbours(mean_tids) + 2 * ITEM_ID;
        Some(if pair <= USABLE {
            // Element and neighbours on one page, as many pairs as fit.
            page / (USABLE / pair) as f64
        } else {
            // Too big together: the element fills a page, its neighbours share others.
            page + (neighbours(mean_tids) + ITEM_ID) as f64 * page / USABLE as f64
        })
    }
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

    #[test]
    fn the_page_layout_model_reproduces_the_measured_index_sizes_and_pgvectors_limits() {
        use super::layout::{bytes_per_row, max_dims};
        use crate::config::Variant;
        const MIB: f64 = (1u64 << 20) as f64;
        // 100K rows × 1536 dims, m = 16, measured on this machine (docs/variants.md).
        for (v, measured_mib) in [
            (Variant::Hnsw, 781.3),
            (Variant::Halfvec, 390.6),
            (Variant::Bq, 47.9),
            (Variant::Ivfflat, 782.0),
        ] {
            let model = bytes_per_row(v, 1536, 16).unwrap() * 1e5 / MIB;
            assert!(
                (model / measured_mib - 1.0).abs() < 0.03,
                "{v}: model {model:.1} MiB, measured {measured_mib}"
            );
        }
        // Whole tuples per page: a page per 1536-d vector row, and the same page up to the size
        // where a second would fit; halfvec halves it; a dimension past the type's limit has no
        // index at all.
        let hnsw = |d| bytes_per_row(Variant::Hnsw, d, 16).unwrap();
        assert_eq!(hnsw(1536), 8192.0);
        assert_eq!(hnsw(1200), 8192.0);
        assert_eq!(hnsw(768), 4096.0);
        assert_eq!(bytes_per_row(Variant::Halfvec, 1536, 16), Some(4096.0));
        assert!(bytes_per_row(Variant::Halfvec, 3072, 16).unwrap() >= 8192.0);
        assert_eq!(bytes_per_row(Variant::Hnsw, 3072, 16), None);
        assert_eq!(bytes_per_row(Variant::Ivfflat, 3072, 16), None);
        assert_eq!(max_dims(Variant::Halfvec), 4000);
        assert!(
            bytes_per_row(Variant::Bq, 3072, 16).unwrap()
                > bytes_per_row(Variant::Bq, 1536, 16).unwrap()
        );
        assert!(
            (super::layout::table_bytes_per_row_change(1536, 3072) / 6144.0 - 1.026).abs() < 0.001
        );
        assert!(super::layout::table_bytes_per_row_change(1536, 768) < 0.0);
        // More neighbours per layer, bigger lists.
        assert!(
            bytes_per_row(Variant::Bq, 1536, 32).unwrap()
                > bytes_per_row(Variant::Bq, 1536, 16).unwrap()
        );
    }
}
