//! The timeline as a hand-written SVG: requests per outcome over time (one line per
//! outcome, counted in 250 ms buckets by the moment each ended), with each restart's
//! signal, listener close and exit marked.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::loadgen::Record;
use crate::report::Report;

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 320.0;
const LEFT: f64 = 50.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;
const BUCKET: f64 = 0.25;

/// The colour of an outcome's line.
fn colour(outcome: &str) -> &'static str {
    match outcome {
        "ok" => "#2a9d8f",
        "no_answer" => "#e76f51",
        "refused" => "#9b2226",
        "timeout" => "#6a4c93",
        "truncated" => "#f4a261",
        _ => "#d62828", // error statuses
    }
}

/// The SVG document.
pub fn render(report: &Report, records: &[Record]) -> String {
    let seconds = report.duration_seconds.max(BUCKET);
    let buckets = (seconds / BUCKET).ceil() as usize + 1;
    let mut series: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for record in records {
        let bucket = ((record.ended.as_secs_f64() / BUCKET) as usize).min(buckets - 1);
        series
            .entry(record.outcome.name())
            .or_insert_with(|| vec![0; buckets])[bucket] += 1;
    }
    let peak = series.values().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let plot_width = WIDTH - LEFT - 20.0;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let x = |at: f64| LEFT + at / seconds * plot_width;
    let y = |count: f64| TOP + plot_height - count / peak * plot_height;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="16" font-size="13">terminus-check roll: {} requests, {} lost, through {} (requests per {BUCKET} s by outcome)</text>"#,
        report.requests, report.lost, report.lb
    );
    // Axes.
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="#333"/>"##,
        TOP + plot_height,
        LEFT + plot_width,
        TOP + plot_height,
        TOP + plot_height
    );
    let _ = writeln!(svg, r#"<text x="4" y="{}">{}</text>"#, TOP + 4.0, peak as u64);
    let step = (seconds / 10.0).ceil().max(1.0);
    let mut tick = 0.0;
    while tick <= seconds {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{tick} s</text>"#,
            x(tick),
            TOP + plot_height + 14.0
        );
        tick += step;
    }
    // Restart markers: signal (red), listener closed (orange), exit (grey).
    for restart in &report.restarts {
        let marks = [
            (Some(restart.signal_at), "#d62828", "4 2"),
            (restart.listener_closed_at, "#f77f00", "2 2"),
            (Some(restart.exited_at), "#555", "1 3"),
        ];
        for (at, stroke, dash) in marks {
            if let Some(at) = at {
                let _ = writeln!(
                    svg,
                    r#"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1}" stroke="{stroke}" stroke-dasharray="{dash}"/>"#,
                    x(at),
                    TOP + plot_height
                );
            }
        }
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{}" fill="#d62828">#{}</text>"##,
            x(restart.signal_at) + 2.0,
            TOP + 10.0,
            restart.restart
        );
    }
    // One line per outcome.
    for (index, (outcome, counts)) in series.iter().enumerate() {
        let points: Vec<String> = counts
            .iter()
            .enumerate()
            .map(|(bucket, count)| format!("{:.1},{:.1}", x(bucket as f64 * BUCKET), y(*count as f64)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            colour(outcome),
            points.join(" ")
        );
        let total: u64 = counts.iter().sum();
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" fill="{}">{outcome}: {total}</text>"#,
            LEFT + 10.0 + index as f64 * 130.0,
            HEIGHT - 6.0,
            colour(outcome)
        );
    }
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{}" fill="#555">signal ┆ listener closed ┆ exit</text>"##,
        WIDTH - 220.0,
        HEIGHT - 6.0
    );
    svg.push_str("</svg>\n");
    svg
}
