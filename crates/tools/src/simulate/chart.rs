//! The learning curve as an SVG chart: rolling mean rewards above, the share of greedy decisions
//! that pick a best action below. Text is left to the SVG viewer, so no font is needed here.

use plotters::prelude::*;
use std::path::Path;

use super::{CurvePoint, SimulateError, SimulationReport};

/// Size of the chart in pixels.
const SIZE: (u32, u32) = (960, 720);
/// Height of the upper panel in pixels.
const UPPER_PANEL: u32 = 360;
/// Font of the captions.
const CAPTION_FONT: (&str, u32) = ("sans-serif", 20);
/// Colour of the meta-strategy series.
const META: RGBColor = RGBColor(31, 119, 180);
/// Colour of the position-sizing series.
const SIZING: RGBColor = RGBColor(255, 127, 14);

/// Writes the report's learning curve to `path` as an SVG.
pub fn write_chart(report: &SimulationReport, path: &Path) -> Result<(), SimulateError> {
    draw(report, path).map_err(|e| SimulateError::Chart {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

type Series<'a> = (&'a str, RGBColor, fn(&CurvePoint) -> f64);

fn draw(report: &SimulationReport, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(UPPER_PANEL);
    let curve = &report.learning_curve;
    let rewards: [Series; 2] = [
        ("meta-strategy", META, |p| p.mean_meta_reward),
        ("position sizing", SIZING, |p| p.mean_sizing_reward),
    ];
    let (lo, hi) = curve
        .iter()
        .flat_map(|p| rewards.iter().map(move |(_, _, f)| f(p)))
        .filter(|v| v.is_finite())
        .fold((0.0_f64, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((hi - lo) * 0.05).max(0.1);
    panel(
        &upper,
        curve,
        "Rolling mean reward per trade",
        "reward",
        (lo - pad)..(hi + pad),
        &rewards,
    )?;
    let shares: [Series; 2] = [
        ("meta: best strategy", META, |p| p.meta_greedy_best_share),
        ("sizing: best leverage", SIZING, |p| {
            p.sizing_greedy_best_share
        }),
    ];
    panel(
        &lower,
        curve,
        "Share of greedy decisions that pick a best action",
        "share",
        0.0..1.05,
        &shares,
    )?;
    root.present()?;
    Ok(())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    curve: &[CurvePoint],
    caption: &str,
    y_desc: &str,
    y_range: std::ops::Range<f64>,
    series: &[Series],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let x_max = curve.last().map_or(1.0, |p| p.cycles.max(1) as f64);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, CAPTION_FONT)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, y_range)?;
    chart
        .configure_mesh()
        .x_desc("training trades")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_desc)
        .draw()?;
    for (name, colour, value) in series {
        let colour = *colour;
        chart
            .draw_series(LineSeries::new(
                curve.iter().map(|p| (p.cycles as f64, value(p))),
                colour.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
