//! Scale and the capacity plan (`scale`): index size, build time, latency and recall of each
//! variant against the dataset's size (log–log), the fitted growth, and the plan for the row
//! counts asked (`CAPBENCH_PLAN_ROWS`) — every predicted figure labelled as an extrapolation from
//! the named measurements.

use maud::{Render, html};

use super::super::charts::{Chart, Series, Style, color};
use super::super::plan::{PowerLaw, layout, rows_label};
use super::super::store::Stored;
use super::helpers::{Figure, Num, Source, Text, section_of, side_by_side};
use crate::config::Variant;
use crate::record::{Kind, Metric, Parameters, ResultEntry, ScaleParameters};

#[derive(Debug, Clone, PartialEq)]
pub struct Scale(pub Option<Shown>);

#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub source: Source,
    pub conditions: Text,
    pub charts: Vec<Figure>,
    /// Per variant: slopes of size, build, p50, p99, QPS (with R²), and recall per size.
    pub growth: Vec<Growth>,
    /// The sizes measured (the recall columns).
    pub sizes: Vec<Text>,
    pub plan: Vec<PlanRow>,
    /// "extrapolated from 4 sizes, 10K to 300K, on <cpu>"
    pub basis: Text,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Growth {
    pub variant: Text,
    pub point: Text,
    /// slope (R²) of index size, build, p50, p99, QPS.
    pub slopes: Vec<Text>,
    pub recall: Vec<Num>,
}

/// One predicted row: rows, dims, variant, how far beyond the measurements, index GiB, index + table
/// GiB (memory to stay before the cliff), build minutes, p99 ms; whether the index fits this
/// machine's shared_buffers and the index + table its RAM.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRow {
    pub rows: Text,
    pub dims: Text,
    pub variant: Text,
    pub reach: Text,
    pub cells: Vec<Num>,
    pub fits: Text,
}

/// `scale/<variant>/rows=<n>`: (variant, rows).
fn point(e: &ResultEntry) -> Option<(&str, f64)> {
    let (v, rows) = e.name.strip_prefix("scale/")?.split_once('/')?;
    Some((v, rows.strip_prefix("rows=")?.parse().ok()?))
}

fn slope_text(f: Option<PowerLaw>) -> Text {
    Text::new(f.map_or("-".into(), |f| format!("{:.2} (R² {:.2})", f.slope, f.r2)))
}

const GIB: f64 = (1u64 << 30) as f64;

/// The plan of variant `v` at `n` rows of `d` dims: the fits of the measured dimension, scaled to
/// `d` — index size by pgvector's page layout ([`layout`]), the table by its column's bytes, build
/// time and p99 in proportion to the dimension (assumed, not measured).
#[allow(clippy::too_many_arguments)]
fn plan_row(
    p: &ScaleParameters,
    v: &str,
    x: f64,
    n: u64,
    d: u32,
    m: u32,
    fit: &dyn Fn(&str, &Metric) -> Option<PowerLaw>,
    table_fit: Option<PowerLaw>,
) -> PlanRow {
    let size = fit(v, &Metric::IndexBytes);
    let variant = v.parse::<Variant>().ok();
    // None: no index of this type at `d` dims.
    let layout_factor = match variant {
        Some(var) => layout::bytes_per_row(var, d, m)
            .zip(layout::bytes_per_row(var, p.dims, m))
            .map(|(to, from)| to / from),
        None => (d == p.dims).then_some(1.0),
    };
    let time_factor = f64::from(d) / f64::from(p.dims.max(1));
    let index = size.zip(layout_factor).map(|(f, k)| f.at(x) * k);
    let table = table_fit.map(|f| f.at(x) + x * layout::table_bytes_per_row_change(p.dims, d));
    let with_table = index.zip(table).map(|(i, t)| i + t);
    let timed = |m: &Metric| {
        fit(v, m)
            .filter(|_| layout_factor.is_some())
            .map(|f| f.at(x) * time_factor)
    };
    let fits = match (index, with_table, variant) {
        (Some(i), Some(t), _) => format!(
            "index {} shared_buffers ({:.1} GiB); index + table {} RAM ({:.0} GiB)",
            if i <= p.shared_buffers_bytes as f64 {
                "fits"
            } else {
                "exceeds"
            },
            p.shared_buffers_bytes as f64 / GIB,
            if t <= p.memory_bytes as f64 {
                "fit"
            } else {
                "exceed"
            },
            p.memory_bytes as f64 / GIB
        ),
        (_, _, Some(var)) if layout_factor.is_none() => format!(
            "no such index: pgvector indexes at most {} dims as {}",
            layout::max_dims(var),
            layout::indexed_type(var)
        ),
        _ => "-".into(),
    };
    PlanRow {
        rows: Text::new(rows_label(n)),
        dims: Text::new(d.to_string()),
        variant: Text::new(v),
        reach: Text::new(size.map_or("-".into(), |f| format!("×{:.0}", f.reach(x)))),
        cells: vec![
            Num::of(index.map(|b| b / GIB)),
            Num::of(with_table.map(|b| b / GIB)),
            Num::of(timed(&Metric::BuildSeconds).map(|s| s / 60.0)),
            Num::of(timed(&Metric::P99_MS)),
        ],
        fits: Text::new(fits),
    }
}

impl Scale {
    pub fn of(latest: Option<&Stored>) -> Self {
        let Some(s) = latest else {
            return Self(None);
        };
        let Parameters::Scale(p) = &s.record.parameters else {
            return Self(None);
        };
        let points: Vec<(&str, f64, &ResultEntry)> = s
            .record
            .results
            .iter()
            .filter_map(|e| point(e).map(|(v, r)| (v, r, e)))
            .collect();
        let mut variants: Vec<&str> = Vec::new();
        for (v, _, _) in &points {
            if !variants.contains(v) {
                variants.push(v);
            }
        }
        let mut sizes: Vec<f64> = points.iter().map(|p| p.1).collect();
        sizes.sort_by(f64::total_cmp);
        sizes.dedup();
        let series = |v: &str, m: &Metric, scale: f64| -> Vec<(f64, f64)> {
            let mut pts: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.0 == v)
                .filter_map(|(_, r, e)| Some((*r, e.metric(m)? * scale)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            pts
        };
        let chart = |title: &str, y: &str, m: &Metric, scale: f64, log_y: bool| {
            let mut c = Chart {
                title: title.into(),
                x_label: "rows (log scale)".into(),
                y_label: y.into(),
                log_x: true,
                log_y,
                ..Chart::default()
            };
            for (i, v) in variants.iter().enumerate() {
                c.series.push(Series::new(
                    *v,
                    series(v, m, scale),
                    Style::LinePoints,
                    color(i),
                ));
            }
            if !log_y {
                c.y_range = Some((0.0, 1.04));
                c.legend_lower_right = true;
            }
            Figure::xy(c)
        };
        let charts = vec![
            chart(
                "Index size vs rows",
                "index size (MiB, log scale)",
                &Metric::IndexBytes,
                1.0 / f64::from(1 << 20),
                true,
            ),
            chart(
                "Build time vs rows (this machine)",
                "CREATE INDEX (s, log scale)",
                &Metric::BuildSeconds,
                1.0,
                true,
            ),
            chart(
                "p99 latency vs rows at each variant's fixed point",
                "p99 (ms, log scale)",
                &Metric::P99_MS,
                1.0,
                true,
            ),
            chart(
                "recall@10 vs rows at each variant's fixed point",
                "mean recall@10 (held-out)",
                &Metric::RecallMean,
                1.0,
                false,
            ),
        ];
        let fit = |v: &str, m: &Metric| PowerLaw::fit(&series(v, m, 1.0));
        let growth: Vec<Growth> = variants
            .iter()
            .map(|v| Growth {
                variant: Text::new(v),
                point: Text::new(
                    p.points
                        .iter()
                        .find(|l| l.starts_with(&format!("{v}:")))
                        .map_or("", |l| l.split_once(": ").map_or("", |x| x.1)),
                ),
                slopes: [
                    Metric::IndexBytes,
                    Metric::BuildSeconds,
                    Metric::P50_MS,
                    Metric::P99_MS,
                    Metric::Qps,
                ]
                .iter()
                .map(|m| slope_text(fit(v, m)))
                .collect(),
                recall: sizes
                    .iter()
                    .map(|r| {
                        Num::of(
                            points
                                .iter()
                                .find(|p| p.0 == *v && p.1 == *r)
                                .and_then(|p| p.2.metric(&Metric::RecallMean)),
                        )
                    })
                    .collect(),
            })
            .collect();
        // The table grows with the rows whatever the index: fitted once, from any variant's points.
        let table_fit = variants.first().and_then(|v| fit(v, &Metric::TableBytes));
        let mut plan = Vec::new();
        let mut dims = vec![p.dims];
        dims.extend(p.plan_dims.iter().filter(|d| **d != p.dims));
        let m = if p.m == 0 { 16 } else { p.m };
        for &n in &p.plan_rows {
            let x = n as f64;
            for &d in &dims {
                for v in &variants {
                    plan.push(plan_row(p, v, x, n, d, m, &fit, table_fit));
                }
            }
        }
        let basis = format!(
            "Extrapolated from {} measured sizes ({}) on {} ({} cores); a power law fitted to each figure \
             (least squares on log rows, log figure). Predictions far beyond the largest size (the × column) \
             assume the growth stays the same — it does not once the index outgrows memory (see the memory \
             section): the p99 figures hold only while the index fits. Rows of another dimension than \
             the measured one scale these fits: the index size by pgvector's page layout (whole tuples \
             per 8 KiB page: docs/scale.md), the table by the vector column's bytes, build time and p99 \
             in proportion to the dimension — an assumption, not a measurement.",
            sizes.len(),
            sizes
                .iter()
                .map(|&r| rows_label(r as u64))
                .collect::<Vec<_>>()
                .join(", "),
            s.record.environment.cpu_model,
            s.record.environment.cores
        );
        let conditions = format!(
            "{} dims, {} rows per cluster at every size (only the size grows); each point: {} held-out queries \
             of that size's dataset, 2 passes, one connection, serial, warm (index and table prewarmed); \
             recall@{} against that size's exact top-{}. Fixed points: {}.",
            p.dims,
            p.rows_per_cluster,
            p.queries,
            p.k,
            p.k,
            p.points.join("; ")
        );
        Self(Some(Shown {
            source: Source::of(s),
            conditions: Text::new(conditions),
            charts,
            growth,
            sizes: sizes
                .iter()
                .map(|&r| Text::new(rows_label(r as u64)))
                .collect(),
            plan,
            basis: Text::new(basis),
        }))
    }
}

impl Render for Scale {
    fn render_to(&self, buffer: &mut String) {
        let content = self.0.as_ref().map(|s| {
            html! {
                (s.source)
                p.note { (s.conditions) }
                (side_by_side(&s.charts))
                h3 { "Growth: log–log slope of each figure against rows (1 = linear)" }
                div.scroll { table {
                    tr {
                        th { "variant" } th { "fixed point" } th { "index size" } th { "build time" }
                        th { "p50" } th { "p99" } th { "QPS" }
                        @for z in &s.sizes { th { "recall " (z) } }
                    }
                    @for g in &s.growth {
                        tr {
                            td { (g.variant) } td { (g.point) }
                            @for t in &g.slopes { td.n { (t) } }
                            @for c in &g.recall { (c) }
                        }
                    }
                } }
                h3 { "Capacity plan (extrapolated)" }
                p.note { (s.basis) }
                div.scroll { table {
                    tr {
                        th { "rows" } th { "dims" } th { "variant" } th { "beyond the largest measured" }
                        th { "index (GiB)" } th { "index + table (GiB): memory before the cliff" }
                        th { "build on this machine (min)" } th { "p99 (ms), while it fits" } th { "this machine" }
                    }
                    @for r in &s.plan {
                        tr {
                            td { (r.rows) } td.n { (r.dims) } td { (r.variant) } td.n { (r.reach) }
                            @for c in &r.cells { (c) }
                            td { (r.fits) }
                        }
                    }
                } }
                p.note { "How to read it and reproduce a point by hand: docs/scale.md." }
            }
        });
        section_of("scale", "Scale and capacity plan", Kind::Scale, content).render_to(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Environment, RunRecord, ScaleParameters};
    use std::path::PathBuf;

    #[test]
    fn the_plan_extrapolates_each_variants_fit_and_says_so() {
        // Index size exactly linear (8 KiB per row), build quadratic-ish, table linear.
        let entry = |v: &str, rows: f64| ResultEntry {
            name: format!("scale/{v}/rows={rows}"),
            metrics: [
                (Metric::IndexBytes, rows * 8192.0),
                (Metric::BuildSeconds, 1e-9 * rows.powf(1.5)),
                (Metric::TableBytes, rows * 8192.0),
                (Metric::P99_MS, 2.0),
                (Metric::RecallMean, 0.9),
                (Metric::Qps, 500.0),
            ]
            .into(),
            ..ResultEntry::default()
        };
        let mut record = RunRecord::new(
            Environment::default(),
            Parameters::Scale(ScaleParameters {
                plan_rows: vec![10_000_000],
                points: vec!["hnsw: ef_search=40".into()],
                shared_buffers_bytes: 2 << 30,
                memory_bytes: 24 << 30,
                ..ScaleParameters::default()
            }),
        );
        record.results = [1e4, 3e4, 1e5].iter().map(|&r| entry("hnsw", r)).collect();
        let mut half: Vec<ResultEntry> = [1e4, 3e4, 1e5]
            .iter()
            .map(|&r| entry("halfvec", r))
            .collect();
        for e in &mut half {
            let b = e.metrics[&Metric::IndexBytes];
            e.metrics.insert(Metric::IndexBytes, b / 2.0);
        }
        record.results.extend(half);
        if let Parameters::Scale(p) = &mut record.parameters {
            p.dims = 1536;
            p.plan_dims = vec![3072, 1536];
        }
        let s = Stored {
            path: PathBuf::from("/r/runs/scale-1.json"),
            record,
        };
        let shown = Scale::of(Some(&s)).0.unwrap();
        assert_eq!(shown.growth[0].slopes[0].as_str(), "1.00 (R² 1.00)");
        assert_eq!(shown.growth[0].slopes[1].as_str(), "1.50 (R² 1.00)");
        assert_eq!(shown.growth[0].point.as_str(), "ef_search=40");
        let row = &shown.plan[0];
        assert_eq!((row.rows.as_str(), row.variant.as_str()), ("10M", "hnsw"));
        assert_eq!(row.reach.as_str(), "×100");
        let gib = 1e7 * 8192.0 / GIB;
        assert_eq!(row.cells[0], Num::of(Some(gib)));
        assert!(
            row.fits.as_str().contains("index exceeds shared_buffers"),
            "{:?}",
            row.fits
        );
        assert!(row.fits.as_str().contains("exceed RAM"), "152 GiB > 24 GiB");
        // Per rows: the measured dimension first, then each other one asked, every variant.
        let at = |d: &str, v: &str| {
            shown
                .plan
                .iter()
                .find(|r| r.dims.as_str() == d && r.variant.as_str() == v)
                .unwrap()
        };
        assert_eq!(shown.plan.len(), 4);
        assert_eq!(shown.plan[0].dims.as_str(), "1536");
        // 3072 dims: no HNSW index on vector; halfvec's rows go from two per page to one, and
        // its table grows by the column's extra 6 KiB per row; its build twice as long (assumed).
        let none = at("3072", "hnsw");
        assert_eq!(none.cells[0], Num::of(None));
        assert!(
            none.fits
                .as_str()
                .contains("at most 2000 dims as vector in HNSW"),
            "{:?}",
            none.fits
        );
        let (h1, h3) = (at("1536", "halfvec"), at("3072", "halfvec"));
        assert_eq!(h3.cells[0], Num::of(Some(gib)));
        assert_eq!(h1.cells[0], Num::of(Some(gib / 2.0)));
        let val = |n: &Num| n.0.as_deref().unwrap().parse::<f64>().unwrap();
        let table = |r: &PlanRow| val(&r.cells[1]) - val(&r.cells[0]);
        let grown = (table(h3) - table(h1)) * GIB / 1e7;
        assert!((grown / 6144.0 - 1.026).abs() < 0.01, "{grown}");
        let ratio = val(&h3.cells[2]) / val(&h1.cells[2]);
        assert!((ratio - 2.0).abs() < 1e-3, "{ratio}");
        let html = Scale(Some(shown)).render().into_string();
        assert!(html.contains("Extrapolated from 3 measured sizes (10K, 30K, 100K)"));
        assert!(
            Scale::of(None)
                .render()
                .into_string()
                .contains("cargo bench scale")
        );
    }
}
