//! The learning curve as an SVG chart, in three panels: the mean P&L per training trade against
//! the evaluation's reference levels (the oracle, the learned greedy policy, a random policy),
//! the rolling mean rewards, and the share of greedy decisions that pick a best action. Text is
//! left to the SVG viewer, so no font is needed here.

use plotters::prelude::*;
use std::path::Path;

use super::{CurvePoint, SimulateError, SimulationReport};

/// Size of the chart in pixels.
const SIZE: (u32, u32) = (960, 1080);
/// Height of each panel in pixels.
const PANEL_HEIGHT: u32 = 360;
/// Width of the y-axis label area in pixels: room for the values and the rotated unit.
const Y_LABEL_AREA: u32 = 72;
/// Height of the x-axis label area in pixels: room for the values and the unit.
const X_LABEL_AREA: u32 = 44;
/// Right margin in pixels: room for the last x-axis value, centred on the plot's right edge.
const RIGHT_MARGIN: u32 = 40;
/// Colour of the oracle's reference level.
const ORACLE: RGBColor = RGBColor(44, 160, 44);
/// Colour of the random policy's reference level.
const RANDOM: RGBColor = RGBColor(214, 39, 40);
/// Colour of the learned greedy policy's evaluation level.
const LEARNED: RGBColor = RGBColor(148, 103, 189);
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

/// A horizontal reference line: label, colour, level.
type Level = (String, RGBColor, f64);

/// A padded range around the finite values, always including 0.
fn span(values: impl Iterator<Item = f64>, min_pad: f64) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((0.0_f64, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((hi - lo) * 0.08).max(min_pad);
    (lo - pad)..(hi + pad)
}

fn draw(report: &SimulationReport, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, rest) = root.split_vertically(PANEL_HEIGHT);
    let (middle, bottom) = rest.split_vertically(PANEL_HEIGHT);
    let curve = &report.learning_curve;
    let e = &report.evaluation;

    let pnl: [Series; 1] = [("training trades (with exploration)", SIZING, |p| {
        p.mean_pnl_pct
    })];
    let levels: Vec<Level> = vec![
        (
            format!("oracle (evaluation): {:.1}", e.oracle.mean_pnl_pct),
            ORACLE,
            e.oracle.mean_pnl_pct,
        ),
        (
            format!(
                "learned greedy (evaluation): {:.1} = {:.0}% of oracle",
                e.learned.mean_pnl_pct,
                100.0 * e.learned_share_of_oracle.overall
            ),
            LEARNED,
            e.learned.mean_pnl_pct,
        ),
        (
            format!("random (evaluation): {:.1}", e.random.mean_pnl_pct),
            RANDOM,
            e.random.mean_pnl_pct,
        ),
    ];
    let range = span(
        curve
            .iter()
            .map(|p| p.mean_pnl_pct)
            .chain(levels.iter().map(|l| l.2)),
        1.0,
    );
    panel(
        &top,
        curve,
        "Mean P&L per trade",
        "P&L per trade (% of base margin)",
        range,
        &pnl,
        &levels,
    )?;

    let rewards: [Series; 2] = [
        ("meta-strategy", META, |p| p.mean_meta_reward),
        ("position sizing", SIZING, |p| p.mean_sizing_reward),
    ];
    let range = span(
        curve
            .iter()
            .flat_map(|p| rewards.iter().map(move |(_, _, f)| f(p))),
        0.1,
    );
    panel(
        &middle,
        curve,
        "Rolling mean reward per trade",
        "reward per trade (points)",
        range,
        &rewards,
        &[],
    )?;
    let shares: [Series; 2] = [
        ("meta: best strategy", META, |p| p.meta_greedy_best_share),
        ("sizing: best leverage", SIZING, |p| {
            p.sizing_greedy_best_share
        }),
    ];
    panel(
        &bottom,
        curve,
        "Share of greedy decisions that pick a best action",
        "share of greedy decisions",
        0.0..1.05,
        &shares,
        &[],
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
    levels: &[Level],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let x_max = curve.last().map_or(1.0, |p| p.cycles.max(1) as f64);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, CAPTION_FONT)
        .margin(16)
        .margin_right(RIGHT_MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(0.0..x_max, y_range)?;
    chart
        .configure_mesh()
        .x_desc("training trades (count)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_desc)
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()?;
    for (name, colour, level) in levels {
        let colour = *colour;
        chart
            .draw_series(LineSeries::new(
                [(0.0, *level), (x_max, *level)],
                colour.stroke_width(2),
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
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
