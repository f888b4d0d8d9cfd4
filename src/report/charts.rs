//! The report's charts: plotters drawing SVG into strings (inlined into index.html; no fonts, no
//! network, no JavaScript). One function per kind of chart, each drawing a plain description the
//! page's sections build (`html`): [`xy`] (lines, points, log axes, dashed reference lines,
//! annotated points, a legend), [`small`] (one of a row of small multiples: the same, smaller, no
//! legend), [`spectrum`] (latency by percentile, one line per histogram) and [`stacked_bars`].

mod axis;

use anyhow::{Result, anyhow};
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

pub use axis::{LogAxis, Ticks, tick};
use axis::{span, usable, x_tick};

/// Chart size in SVG pixels (the page scales it down to the window's width).
pub const WIDTH: u32 = 760;
pub const HEIGHT: u32 = 380;

/// A chart's size, fonts and margins.
#[derive(Debug, Clone, Copy)]
struct Frame {
    width: u32,
    height: u32,
    title: u32,
    label: u32,
    desc: u32,
    x_area: u32,
    y_area: u32,
    x_labels: usize,
    y_labels: usize,
}

/// A chart on its own.
const FULL: Frame = Frame {
    width: WIDTH,
    height: HEIGHT,
    title: 22,
    label: 15,
    desc: 16,
    x_area: 54,
    y_area: 74,
    x_labels: 8,
    y_labels: 7,
};

/// One of a row of small multiples.
const SMALL: Frame = Frame {
    width: 380,
    height: 230,
    title: 16,
    label: 13,
    desc: 13,
    x_area: 40,
    y_area: 58,
    x_labels: 5,
    y_labels: 5,
};

const FONT: &str = "sans-serif";

/// Okabe–Ito: distinguishable with every common colour-vision deficiency.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(230, 159, 0),
    RGBColor(0, 0, 0),
    RGBColor(120, 120, 120),
];

pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Line,
    Dashed,
    Points,
    LinePoints,
}

/// One named series of (x, y) points (an empty label keeps it out of the legend).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub style: Style,
    pub color: RGBColor,
}

impl Series {
    pub fn new(
        label: impl Into<String>,
        points: Vec<(f64, f64)>,
        style: Style,
        color: RGBColor,
    ) -> Self {
        Self {
            label: label.into(),
            points,
            style,
            color,
        }
    }
}

/// An XY chart: title, labelled axes with units, series, optional log axes and reference lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
    /// Horizontal reference lines (value, label), e.g. the SLO.
    pub hlines: Vec<(f64, String)>,
    /// Annotated points ((x, y), text), e.g. the knee.
    pub notes: Vec<((f64, f64), String)>,
    /// How the x axis labels its ticks.
    pub x_ticks: Ticks,
    /// Forces the y axis to start at zero (linear axes only).
    pub y_from_zero: bool,
    /// Fixed y range.
    pub y_range: Option<(f64, f64)>,
    /// Legend in the lower right instead of the upper left.
    pub legend_lower_right: bool,
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
}

/// Every chart's legend: the labelled series, on a translucent box at `position`.
fn legend<'a, DB, CT>(
    ctx: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
    font: u32,
) -> Result<()>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    ctx.configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font((FONT, font))
        .draw()
        .map_err(err)
}

/// An XY chart on its own, as an SVG document.
pub fn xy(chart: &Chart) -> Result<String> {
    plot(chart, &FULL, true)
}

/// One of a row of small multiples (one line each, the same scale in every chart of the row):
/// `chart` smaller, without a legend — its title says what it shows.
pub fn small(chart: &Chart) -> Result<String> {
    plot(chart, &SMALL, false)
}

fn plot(chart: &Chart, frame: &Frame, with_legend: bool) -> Result<String> {
    let xs = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(chart.hlines.iter().map(|h| h.0))
        .chain(chart.notes.iter().map(|n| n.0.1));
    let (x0, x1) = span(xs, chart.log_x, false);
    let (y0, y1) = chart
        .y_range
        .unwrap_or_else(|| span(ys, chart.log_y, chart.y_from_zero && !chart.log_y));
    match (chart.log_x, chart.log_y) {
        (false, false) => draw(
            chart,
            frame,
            with_legend,
            RangedCoordf64::from(x0..x1),
            RangedCoordf64::from(y0..y1),
        ),
        (true, false) => draw(
            chart,
            frame,
            with_legend,
            LogAxis::new(x0, x1),
            RangedCoordf64::from(y0..y1),
        ),
        (false, true) => draw(
            chart,
            frame,
            with_legend,
            RangedCoordf64::from(x0..x1),
            LogAxis::new(y0, y1),
        ),
        (true, true) => draw(
            chart,
            frame,
            with_legend,
            LogAxis::new(x0, x1),
            LogAxis::new(y0, y1),
        ),
    }
}

fn draw<X, Y>(chart: &Chart, frame: &Frame, with_legend: bool, x: X, y: Y) -> Result<String>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (frame.width, frame.height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let x_range = x.range();
        let mut ctx = ChartBuilder::on(&root)
            .caption(&chart.title, (FONT, frame.title))
            .margin(frame.title / 2 + 1)
            .margin_right(24)
            .x_label_area_size(frame.x_area)
            .y_label_area_size(frame.y_area)
            .build_cartesian_2d(x, y)
            .map_err(err)?;
        let y_format = |v: &f64| tick(*v);
        let x_fmt = |v: &f64| x_tick(chart.x_ticks, *v);
        ctx.configure_mesh()
            .x_desc(&chart.x_label)
            .y_desc(&chart.y_label)
            .x_labels(frame.x_labels)
            .y_labels(frame.y_labels)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_format)
            .label_style((FONT, frame.label))
            .axis_desc_style((FONT, frame.desc))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(210, 210, 210))
            .draw()
            .map_err(err)?;
        let mut labelled = false;
        for s in &chart.series {
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|p| usable(p.0, chart.log_x) && usable(p.1, chart.log_y))
                .collect();
            if pts.is_empty() {
                continue;
            }
            let c = s.color;
            let anno = match s.style {
                Style::Line | Style::LinePoints => ctx
                    .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                    .map_err(err)?,
                Style::Dashed => ctx
                    .draw_series(DashedLineSeries::new(pts.clone(), 6, 4, c.stroke_width(2)))
                    .map_err(err)?,
                Style::Points => ctx
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(err)?,
            };
            if with_legend && !s.label.is_empty() {
                labelled = true;
                let style = s.style;
                anno.label(&s.label).legend(move |(lx, ly)| {
                    let line: DynElement<'static, SVGBackend, (i32, i32)> = match style {
                        Style::Points => Circle::new((lx + 10, ly), 4, c.filled()).into_dyn(),
                        _ => PathElement::new(vec![(lx, ly), (lx + 20, ly)], c.stroke_width(2))
                            .into_dyn(),
                    };
                    line
                });
            }
            if s.style == Style::LinePoints {
                ctx.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(err)?;
            }
        }
        for (i, (v, label)) in chart.hlines.iter().enumerate() {
            if !usable(*v, chart.log_y) {
                continue;
            }
            let c = if i == 0 {
                RGBColor(200, 0, 0)
            } else {
                color(7)
            };
            ctx.draw_series(DashedLineSeries::new(
                vec![(x_range.start, *v), (x_range.end, *v)],
                8,
                5,
                c.stroke_width(1),
            ))
            .map_err(err)?
            .label(label)
            .legend(move |(lx, ly)| {
                PathElement::new(vec![(lx, ly), (lx + 20, ly)], c.stroke_width(1))
            });
            labelled = true;
        }
        for ((nx, ny), text) in &chart.notes {
            if !usable(*nx, chart.log_x) || !usable(*ny, chart.log_y) {
                continue;
            }
            let black = RGBColor(0, 0, 0);
            // A note on a point in the right part of the plot is written to its left, so that it
            // stays inside the chart (a sweep's last level is at the right edge).
            let at = |v: f64| if chart.log_x { v.ln() } else { v };
            let right = (at(*nx) - at(x_range.start)) / (at(x_range.end) - at(x_range.start)) > 0.6;
            let width = (text.chars().count() as f64 * f64::from(frame.label) * 0.55) as i32;
            let dx = if right { -8 - width } else { 8 };
            ctx.draw_series(std::iter::once(
                EmptyElement::at((*nx, *ny))
                    + Circle::new((0, 0), 6, black.stroke_width(2))
                    + Text::new(text.clone(), (dx, -20), (FONT, frame.label).into_font()),
            ))
            .map_err(err)?;
        }
        if labelled && with_legend {
            legend(
                &mut ctx,
                if chart.legend_lower_right {
                    SeriesLabelPosition::LowerRight
                } else {
                    SeriesLabelPosition::UpperLeft
                },
                frame.label,
            )?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Latency by percentile: one line per histogram, x in "nines" so that 90 %, 99 %, 99.9 % are
/// evenly spaced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spectrum {
    pub title: String,
    /// (name, points from [`Spectrum::line`]).
    pub lines: Vec<(String, Vec<(f64, f64)>)>,
}

impl Spectrum {
    /// The (nines, ms) points of a histogram of nanoseconds, from x = 0 (q = 0) to as many nines
    /// as its count supports (at most five); none for an empty histogram.
    pub fn line(hist: &hdrhistogram::Histogram<u64>) -> Vec<(f64, f64)> {
        if hist.is_empty() {
            return Vec::new();
        }
        let top = (hist.len() as f64).log10().clamp(1.0, 5.0);
        (0..=(top * 20.0) as usize)
            .map(|k| {
                let v = k as f64 / 20.0;
                let q = 1.0 - 10f64.powf(-v);
                (v, hist.value_at_quantile(q) as f64 / 1e6)
            })
            .collect()
    }
}

/// A [`Spectrum`] as an SVG document.
pub fn spectrum(s: &Spectrum) -> Result<String> {
    xy(&Chart {
        title: s.title.clone(),
        x_label: "percentile (log scale of 1 − q)".into(),
        y_label: "latency (ms, log scale)".into(),
        log_y: true,
        x_ticks: Ticks::Nines,
        legend_lower_right: true,
        series: s
            .lines
            .iter()
            .enumerate()
            .filter(|(_, (_, pts))| !pts.is_empty())
            .map(|(i, (name, pts))| Series::new(name, pts.clone(), Style::Line, color(i)))
            .collect(),
        ..Chart::default()
    })
}

/// Stacked bars, one per category: e.g. the SQL part and the service's part of a search's p50.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bars {
    pub title: String,
    pub y_label: String,
    pub categories: Vec<String>,
    /// (label, one value per category, colour), bottom first.
    pub stacks: Vec<(String, Vec<f64>, RGBColor)>,
}

/// [`Bars`] as an SVG document.
pub fn stacked_bars(bars: &Bars) -> Result<String> {
    let Bars {
        title,
        y_label,
        categories,
        stacks,
    } = bars;
    let n = categories.len().max(1);
    let top = (0..n)
        .map(|i| {
            stacks
                .iter()
                .map(|s| s.1.get(i).copied().unwrap_or(0.0).max(0.0))
                .sum::<f64>()
        })
        .fold(0.0f64, f64::max);
    let top = if top > 0.0 { top * 1.4 } else { 1.0 };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut ctx = ChartBuilder::on(&root)
            .caption(title.as_str(), (FONT, 22))
            .margin(12)
            .margin_right(24)
            .x_label_area_size(54)
            .y_label_area_size(74)
            .build_cartesian_2d((0..n as i32 - 1).into_segmented(), 0.0..top)
            .map_err(err)?;
        let cat = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) => categories.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        let y_fmt = |v: &f64| tick(*v);
        ctx.configure_mesh()
            .disable_x_mesh()
            .x_desc("benchmark")
            .y_desc(y_label.as_str())
            .x_labels(n)
            .x_label_formatter(&cat)
            .y_label_formatter(&y_fmt)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 16))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(err)?;
        let mut base = vec![0.0; n];
        for (label, values, c) in stacks {
            let c = *c;
            let bars: Vec<Rectangle<(SegmentValue<i32>, f64)>> = (0..n)
                .map(|i| {
                    let v = values.get(i).copied().unwrap_or(0.0).max(0.0);
                    let (lo, hi) = (base[i], base[i] + v);
                    base[i] = hi;
                    let mut r = Rectangle::new(
                        [
                            (SegmentValue::Exact(i as i32), lo),
                            (SegmentValue::Exact(i as i32 + 1), hi),
                        ],
                        c.filled(),
                    );
                    r.set_margin(0, 0, 18, 18);
                    r
                })
                .collect();
            ctx.draw_series(bars)
                .map_err(err)?
                .label(label.as_str())
                .legend(move |(lx, ly)| {
                    Rectangle::new([(lx, ly - 5), (lx + 14, ly + 5)], c.filled())
                });
        }
        legend(&mut ctx, SeriesLabelPosition::UpperLeft, FULL.label)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_chart(series: usize) -> Chart {
        Chart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: (0..series)
                .map(|i| {
                    let pts = (0..10).map(|x| (x as f64, (x * i) as f64)).collect();
                    Series::new(format!("series {i}"), pts, Style::Line, color(i))
                })
                .collect(),
            ..Chart::default()
        }
    }

    #[test]
    fn a_small_multiple_is_smaller_and_has_no_legend() {
        let full = xy(&line_chart(2)).unwrap();
        let small = small(&line_chart(2)).unwrap();
        assert!(full.contains("series 1"), "the full chart has its legend");
        assert!(!small.contains("series 1"), "a small multiple has none");
        assert!(small.contains("width=\"380\""), "{}", &small[..200]);
    }

    #[test]
    fn a_spectrum_line_runs_from_q0_to_the_nines_its_count_supports() {
        let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 1_000_000).unwrap();
        }
        let pts = Spectrum::line(&h);
        assert_eq!(pts.first().map(|p| p.0), Some(0.0));
        assert!(
            (pts.last().unwrap().0 - 3.0).abs() < 1e-9,
            "1000 values: 3 nines"
        );
        assert!(
            pts.windows(2).all(|w| w[0].1 <= w[1].1),
            "latency grows with q"
        );
        assert!(Spectrum::line(&hdrhistogram::Histogram::<u64>::new(3).unwrap()).is_empty());
    }
}
