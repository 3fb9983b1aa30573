//! The chart: shmkit's speed over the fastest Rust alternative's and over
//! Python's, per use, on a log scale.

use crate::markdown::fmt_ratio;
use crate::model::Verdict;
use std::fmt::Write as _;

/// docs/benchmarks.svg, dated `date`.
pub fn svg(verdicts: &[Verdict], date: &str) -> String {
    // Horizontal bars on a log2 axis from 1/64 to 2^12: shmkit's speed
    // over the fastest Rust alternative (dark) and over Python (light).
    let rows: Vec<&Verdict> = verdicts
        .iter()
        .filter(|v| v.best_alt.is_some() || v.vs_python.is_some())
        .collect();
    let (left, width, bar, gap, top) = (420.0, 560.0, 9.0, 8.0, 48.0);
    let (lo, hi) = (-6.0f64, 12.0f64);
    let x = |r: f64| left + (r.log2().clamp(lo, hi) - lo) / (hi - lo) * width;
    let height = top + rows.len() as f64 * (2.0 * bar + gap) + 40.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="11">"##,
        w = left + width + 70.0
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="10" y="18" font-size="14" font-weight="bold">shmkit speed ÷ alternative's speed (log scale; right of 1 = shmkit faster), {date}</text>"##
    );
    let _ = writeln!(
        s,
        r##"<rect x="10" y="28" width="10" height="9" fill="#1f5f99"/><text x="24" y="36">vs the fastest Rust alternative</text><rect x="210" y="28" width="10" height="9" fill="#9cc3e6"/><text x="224" y="36">vs Python multiprocessing</text>"##
    );
    for e in (lo as i32..=hi as i32).step_by(2) {
        let r = 2f64.powi(e);
        let xx = x(r);
        let label = if e < 0 {
            format!("1/{}", 1 << -e)
        } else {
            format!("{}", 1 << e)
        };
        let stroke = if e == 0 { "#333" } else { "#ddd" };
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{y2:.1}" stroke="{stroke}"/><text x="{xx:.1}" y="{ty:.1}" text-anchor="middle" fill="#555">{label}</text>"##,
            y2 = height - 30.0,
            ty = height - 16.0
        );
    }
    for (i, v) in rows.iter().enumerate() {
        let y = top + 4.0 + i as f64 * (2.0 * bar + gap);
        let _ = writeln!(
            s,
            r##"<text x="{tx}" y="{ty:.1}" text-anchor="end">{}</text>"##,
            xml(&v.title),
            tx = left - 6.0,
            ty = y + bar + 3.0
        );
        for (k, (r, color)) in [
            (v.best_alt.as_ref().map(|b| b.1), "#1f5f99"),
            (v.vs_python.as_ref().map(|b| b.1), "#9cc3e6"),
        ]
        .into_iter()
        .enumerate()
        {
            let Some(r) = r else { continue };
            let (x0, x1) = (x(1.0), x(r));
            let yy = y + k as f64 * bar;
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{yy:.1}" width="{:.1}" height="{}" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="9" fill="#333">{}</text>"##,
                x0.min(x1),
                (x1 - x0).abs().max(1.0),
                bar - 1.0,
                x0.max(x1) + 3.0,
                yy + bar - 2.0,
                fmt_ratio(r)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn xml(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
