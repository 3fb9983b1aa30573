//! The chart: shmkit's speed over the fastest Rust alternative's (dark bar)
//! and over Python's (light bar), per use, as horizontal bars on a log2
//! axis from 1/64 to 4096, drawn with plotters' SVG backend.
//!
//! Text is written as SVG `<text>` and laid out by whatever displays the
//! file: plotters is built without its font crates, so nothing here reads
//! a font file.

use crate::markdown::fmt_ratio;
use crate::model::Verdict;
use plotters::coord::Shift;
use plotters::coord::combinators::{BindKeyPoints, LogCoord, WithKeyPoints};
use plotters::coord::ranged1d::SegmentValue::{self, CenterOf, Exact};
use plotters::coord::ranged1d::SegmentedCoord;
use plotters::coord::types::RangedCoordusize;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// x: the ratio, on a log2 scale with a grid line and a label every power
/// of 4; y: one segment per use, the first use in the top one.
type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<WithKeyPoints<LogCoord<f64>>, SegmentedCoord<RangedCoordusize>>,
>;
type Drawn = Result<(), Box<dyn std::error::Error>>;

const DARK: RGBColor = RGBColor(0x1f, 0x5f, 0x99);
const LIGHT: RGBColor = RGBColor(0x9c, 0xc3, 0xe6);
const GRID: RGBColor = RGBColor(0xdd, 0xdd, 0xdd);
const ONE: RGBColor = RGBColor(0x33, 0x33, 0x33);
const GREY: RGBColor = RGBColor(0x55, 0x55, 0x55);

/// The x axis: 2^LO to 2^HI.
const LO: i32 = -6;
const HI: i32 = 12;
/// Pixels: the title and legend above the plot, the uses' titles left of
/// it, room for a ratio right of it, the x labels below it.
const TOP: u32 = 48;
const LEFT: u32 = 420;
const PLOT: u32 = 560;
const RIGHT: u32 = 70;
const BOTTOM: u32 = 40;
/// Pixels per use: a margin, the dark bar, a pixel, the light bar, a margin.
const ROW: u32 = 26;
const BAR: u32 = 8;
const MARGIN: u32 = (ROW - 2 * BAR - 1) / 2;

/// docs/benchmarks.svg, dated `date`: one row per use that has an
/// alternative to compare with.
pub fn svg(verdicts: &[Verdict], date: &str) -> String {
    let rows: Vec<&Verdict> = verdicts
        .iter()
        .filter(|v| v.best_alt.is_some() || v.vs_python.is_some())
        .collect();
    let size = (LEFT + PLOT + RIGHT, TOP + rows.len() as u32 * ROW + BOTTOM);
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, size).into_drawing_area();
        draw(&root, &rows, date).expect("draw the chart");
        root.present().expect("write the chart");
    }
    s.push('\n');
    s
}

/// A sans-serif font of `px` pixels (the SVG backend writes `font-size` as
/// plotters' size / 1.24).
fn font(px: f64, style: FontStyle) -> TextStyle<'static> {
    FontDesc::new(FontFamily::SansSerif, px * 1.24, style).into()
}

/// The whole chart: the head, then the plot, its bars, and the line at 1.
fn draw(root: &Area, rows: &[&Verdict], date: &str) -> Drawn {
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(TOP);
    head_and_legend(&head, date)?;
    let mut chart = axes(&body, rows)?;
    for (i, v) in rows.iter().enumerate() {
        let segment = rows.len() - 1 - i;
        let bars = [(&v.best_alt, DARK, 0), (&v.vs_python, LIGHT, 1)];
        for (ratio, color, k) in bars {
            if let Some((_, r)) = ratio {
                bar(&mut chart, segment, k, *r, color)?;
            }
        }
    }
    // The line at 1, over the bars that start there.
    let (bottom, top) = (Exact(0), Exact(rows.len()));
    chart.draw_series([PathElement::new([(1.0, bottom), (1.0, top)], ONE)])?;
    Ok(())
}

/// The title line with the date, and the legend under it.
fn head_and_legend(head: &Area, date: &str) -> Drawn {
    let title = format!(
        "shmkit speed ÷ alternative's speed (log scale; right of 1 = shmkit faster), {date}"
    );
    head.draw(&Text::new(title, (10, 6), font(14.0, FontStyle::Bold)))?;
    for (x, color, label) in [
        (10, DARK, "vs the fastest Rust alternative"),
        (210, LIGHT, "vs Python multiprocessing"),
    ] {
        head.draw(&Rectangle::new([(x, 28), (x + 10, 37)], color.filled()))?;
        head.draw(&Text::new(
            label,
            (x + 14, 27),
            font(11.0, FontStyle::Normal),
        ))?;
    }
    Ok(())
}

/// The plot's axes: "1/64" to "4096" under the grid lines, the uses'
/// titles left of their rows.
fn axes<'a, 'b>(
    body: &'a Area<'b>,
    rows: &[&Verdict],
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    let powers = (LO..=HI).step_by(2).map(|e| 2f64.powi(e)).collect();
    let x = (2f64.powi(LO)..2f64.powi(HI))
        .log_scale()
        .base(2.0)
        .with_key_points(powers);
    // One segment per value: 0..=n-1 is n segments.
    let y = (0..rows.len().max(1) - 1).into_segmented();
    let mut chart = ChartBuilder::on(body)
        .margin_right(RIGHT)
        .x_label_area_size(BOTTOM)
        .y_label_area_size(LEFT)
        .build_cartesian_2d(x, y)?;
    let title = |y: &SegmentValue<usize>| match y {
        CenterOf(s) if *s < rows.len() => rows[rows.len() - 1 - s].title.clone(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .bold_line_style(GRID)
        .axis_style(TRANSPARENT)
        .set_tick_mark_size(LabelAreaPosition::Left, 3)
        .set_tick_mark_size(LabelAreaPosition::Bottom, 4)
        // Enough labels that every segment gets its title.
        .y_labels(rows.len() + 1)
        .x_label_formatter(&|r| ratio_label(*r))
        .y_label_formatter(&title)
        .x_label_style(font(11.0, FontStyle::Normal).color(&GREY))
        .y_label_style(font(11.0, FontStyle::Normal))
        .draw()?;
    Ok(chart)
}

/// "1/64" for 2^-6, "4096" for 2^12.
fn ratio_label(r: f64) -> String {
    if r < 1.0 {
        format!("1/{}", (1.0 / r).round())
    } else {
        format!("{}", r.round())
    }
}

/// Bar `k` (0: the upper, 1: the lower) of `segment`: from 1 to `r` (at
/// least a pixel wide), with `r` printed right of its right end.
fn bar(chart: &mut Chart, segment: usize, k: u32, r: f64, color: RGBColor) -> Drawn {
    let pixel = f64::from(HI - LO) / f64::from(PLOT);
    let e = r.log2().clamp(f64::from(LO), f64::from(HI));
    let end = 2f64.powf(if e.abs() < pixel {
        pixel.copysign(e)
    } else {
        e
    });
    let (from, to) = (Exact(segment), Exact(segment + 1));
    // Rectangle margins are in pixels: top, bottom, left, right.
    let top = MARGIN + k * (BAR + 1);
    let mut rect = Rectangle::new([(1.0, to), (end, from)], color.filled());
    rect.set_margin(top, ROW - top - BAR, 0, 0);
    chart.draw_series([rect])?;
    let at = (end.max(1.0), Exact(segment + 1));
    let style = font(9.0, FontStyle::Normal).color(&ONE);
    let text = Text::new(
        fmt_ratio(r),
        (3, (top + BAR / 2) as i32),
        style.pos(Pos::new(HPos::Left, VPos::Center)),
    );
    chart.draw_series([EmptyElement::at(at) + text])?;
    Ok(())
}
