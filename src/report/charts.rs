//! The report's charts: plotters drawing SVG into strings (inlined into index.html; no fonts, no
//! network, no JavaScript). One generic XY chart (lines, points, log axes, dashed reference lines,
//! annotated points, a legend) and one bar chart; the page's builders in `html` say what goes in.

use anyhow::{Result, anyhow};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// Chart size in SVG pixels (the page scales it down to the window's width).
pub const WIDTH: u32 = 760;
pub const HEIGHT: u32 = 380;

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
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Style {
    Line,
    Dashed,
    Points,
    LinePoints,
}

/// One named series of (x, y) points.
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone, Default)]
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
    /// Tick labels of the x axis from a value (default: the number).
    pub x_format: Option<fn(f64) -> String>,
    /// Forces the y axis to start at zero (linear axes only).
    pub y_from_zero: bool,
    /// Fixed y range.
    pub y_range: Option<(f64, f64)>,
    /// Legend in the lower right instead of the upper left.
    pub legend_lower_right: bool,
}

/// Whether a value can be drawn on the axis.
fn usable(v: f64, log: bool) -> bool {
    v.is_finite() && (!log || v > 0.0)
}

fn span(values: impl Iterator<Item = f64>, log: bool, from_zero: bool) -> (f64, f64) {
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

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
}

/// Every chart's legend: the labelled series, on a translucent box at `position`.
fn legend<'a, DB, CT>(
    ctx: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<()>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    ctx.configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font((FONT, 15))
        .draw()
        .map_err(err)
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

/// Renders `chart` to an SVG document.
pub fn render(chart: &Chart) -> Result<String> {
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
            RangedCoordf64::from(x0..x1),
            RangedCoordf64::from(y0..y1),
        ),
        (true, false) => draw(chart, LogAxis::new(x0, x1), RangedCoordf64::from(y0..y1)),
        (false, true) => draw(chart, RangedCoordf64::from(x0..x1), LogAxis::new(y0, y1)),
        (true, true) => draw(chart, LogAxis::new(x0, x1), LogAxis::new(y0, y1)),
    }
}

fn draw<X, Y>(chart: &Chart, x: X, y: Y) -> Result<String>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let x_range = x.range();
        let mut ctx = ChartBuilder::on(&root)
            .caption(&chart.title, (FONT, 22))
            .margin(12)
            .margin_right(24)
            .x_label_area_size(54)
            .y_label_area_size(74)
            .build_cartesian_2d(x, y)
            .map_err(err)?;
        let x_format = chart.x_format.unwrap_or(tick);
        let y_format = |v: &f64| tick(*v);
        let x_fmt = |v: &f64| x_format(*v);
        ctx.configure_mesh()
            .x_desc(&chart.x_label)
            .y_desc(&chart.y_label)
            .x_labels(8)
            .y_labels(7)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_format)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 16))
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
            if !s.label.is_empty() {
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
            ctx.draw_series(std::iter::once(
                EmptyElement::at((*nx, *ny))
                    + Circle::new((0, 0), 6, black.stroke_width(2))
                    + Text::new(text.clone(), (8, -20), (FONT, 15).into_font()),
            ))
            .map_err(err)?;
        }
        if labelled {
            legend(
                &mut ctx,
                if chart.legend_lower_right {
                    SeriesLabelPosition::LowerRight
                } else {
                    SeriesLabelPosition::UpperLeft
                },
            )?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Stacked bars, one per category: e.g. the SQL part and the service's part of a search's p50.
pub fn stacked_bars(
    title: &str,
    y_label: &str,
    categories: &[String],
    stacks: &[(String, Vec<f64>, RGBColor)],
) -> Result<String> {
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
            .caption(title, (FONT, 22))
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
            .y_desc(y_label)
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
                .label(label)
                .legend(move |(lx, ly)| {
                    Rectangle::new([(lx, ly - 5), (lx + 14, ly + 5)], c.filled())
                });
        }
        legend(&mut ctx, SeriesLabelPosition::UpperLeft)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}
