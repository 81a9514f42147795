//! The chart in `docs/benchmarks.svg`, written as plain SVG text: three panels (ratios
//! against the baselines, `/readyz` throughput, shutdown time against idle connections).

use std::fmt::Write;

/// One ratio bar: terminus-rs divided by its baseline.
#[derive(Clone, Debug)]
pub struct RatioBar {
    /// What is compared, e.g. `HTTP/1.1 ×64 req/s`.
    pub label: String,
    /// The ratio.
    pub value: f64,
    /// The target, drawn as a tick on the bar.
    pub target: Option<f64>,
    /// Whether the target is a floor (throughput) or a ceiling (latency).
    pub higher_is_better: bool,
}

/// One plain bar with a value in its own unit.
#[derive(Clone, Debug)]
pub struct Bar {
    /// The bar's name.
    pub label: String,
    /// Its value.
    pub value: f64,
}

/// One line of the shutdown panel: a server and its time to exit at each connection count.
#[derive(Clone, Debug)]
pub struct Series {
    /// The server.
    pub label: String,
    /// `(connections, milliseconds)`, in increasing connection order.
    pub points: Vec<(u32, f64)>,
}

const WIDTH: f64 = 920.0;
const LEFT: f64 = 210.0;
const RIGHT: f64 = 60.0;
const ROW: f64 = 24.0;
const PASS: &str = "#2e7d32";
const MISS: &str = "#c62828";
const COLORS: [&str; 3] = ["#1565c0", "#ef6c00", "#6a1b9a"];

/// Renders the whole chart.
///
/// `shutdown_target_ms` is drawn as a dashed line on the shutdown panel.
pub fn render(
    subtitle: &str,
    ratios: &[RatioBar],
    probe: &[Bar],
    shutdown: &[Series],
    shutdown_target_ms: Option<f64>,
) -> String {
    let mut body = String::new();
    let mut y = 60.0;
    y = ratio_panel(&mut body, y, ratios);
    y = bar_panel(
        &mut body,
        y + 30.0,
        "/readyz throughput (requests/s, higher is better)",
        probe,
    );
    y = line_panel(&mut body, y + 30.0, shutdown, shutdown_target_ms);
    let height = y + 20.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="20" y="28" font-size="18" font-weight="bold">terminus-rs benchmarks</text>"#
    );
    let _ = writeln!(
        svg,
        r##"<text x="20" y="46" fill="#555">{}</text>"##,
        escape(subtitle)
    );
    svg.push_str(&body);
    svg.push_str("</svg>\n");
    svg
}

fn ratio_panel(svg: &mut String, top: f64, bars: &[RatioBar]) -> f64 {
    let _ = writeln!(
        svg,
        r#"<text x="20" y="{}" font-size="14" font-weight="bold">Ratio terminus-rs / baseline (1.0 = no difference; tick = target)</text>"#,
        top + 14.0
    );
    let top = top + 28.0;
    let max = bars
        .iter()
        .flat_map(|bar| [bar.value, bar.target.unwrap_or(0.0)])
        .fold(1.2_f64, f64::max)
        .min(3.0);
    let scale = (WIDTH - LEFT - RIGHT) / max;
    for (index, bar) in bars.iter().enumerate() {
        let y = top + index as f64 * ROW;
        let pass = bar.target.map(|target| {
            if bar.higher_is_better {
                bar.value >= target
            } else {
                bar.value <= target
            }
        });
        let color = match pass {
            Some(true) => PASS,
            Some(false) => MISS,
            None => "#78909c",
        };
        let width = (bar.value.min(max) * scale).max(1.0);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + 14.0,
            escape(&bar.label)
        );
        let _ = writeln!(
            svg,
            r#"<rect x="{LEFT}" y="{}" width="{width:.1}" height="{}" fill="{color}"/>"#,
            y + 3.0,
            ROW - 6.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}">{:.3}</text>"#,
            LEFT + width + 4.0,
            y + 15.0,
            bar.value
        );
        if let Some(target) = bar.target {
            let x = LEFT + target.min(max) * scale;
            let _ = writeln!(
                svg,
                r#"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="black" stroke-width="2"/>"#,
                y + 1.0,
                y + ROW - 1.0
            );
        }
    }
    let bottom = top + bars.len() as f64 * ROW;
    let one = LEFT + scale;
    let _ = writeln!(
        svg,
        r##"<line x1="{one:.1}" y1="{top}" x2="{one:.1}" y2="{bottom}" stroke="#999" stroke-dasharray="4 3"/>"##
    );
    let _ = writeln!(
        svg,
        r##"<text x="{one:.1}" y="{}" text-anchor="middle" fill="#555">1.0</text>"##,
        bottom + 14.0
    );
    bottom + 14.0
}

fn bar_panel(svg: &mut String, top: f64, title: &str, bars: &[Bar]) -> f64 {
    let _ = writeln!(
        svg,
        r#"<text x="20" y="{}" font-size="14" font-weight="bold">{}</text>"#,
        top + 14.0,
        escape(title)
    );
    let top = top + 28.0;
    let max = bars.iter().map(|bar| bar.value).fold(1.0_f64, f64::max);
    let scale = (WIDTH - LEFT - RIGHT - 40.0) / max;
    for (index, bar) in bars.iter().enumerate() {
        let y = top + index as f64 * ROW;
        let width = (bar.value * scale).max(1.0);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + 14.0,
            escape(&bar.label)
        );
        let _ = writeln!(
            svg,
            r#"<rect x="{LEFT}" y="{}" width="{width:.1}" height="{}" fill="{}"/>"#,
            y + 3.0,
            ROW - 6.0,
            COLORS[index % COLORS.len()]
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}">{:.0}</text>"#,
            LEFT + width + 4.0,
            y + 15.0,
            bar.value
        );
    }
    top + bars.len() as f64 * ROW
}

fn line_panel(svg: &mut String, top: f64, series: &[Series], target_ms: Option<f64>) -> f64 {
    let _ = writeln!(
        svg,
        r#"<text x="20" y="{}" font-size="14" font-weight="bold">SIGTERM to exit (ms) vs idle keep-alive connections, drain_delay 0 (lower is better)</text>"#,
        top + 14.0
    );
    let top = top + 34.0;
    let height = 200.0;
    let bottom = top + height;
    let counts: Vec<u32> = series
        .first()
        .map(|first| first.points.iter().map(|(count, _)| *count).collect())
        .unwrap_or_default();
    let max = series
        .iter()
        .flat_map(|line| line.points.iter().map(|(_, ms)| *ms))
        .fold(10.0_f64, f64::max)
        * 1.15;
    let plot_width = WIDTH - LEFT - RIGHT;
    // Connection counts are spread evenly (0, 1,000, 10,000 would crowd a linear axis).
    let x_of = |index: usize| LEFT + plot_width * (index as f64 + 0.5) / counts.len().max(1) as f64;
    let y_of = |ms: f64| bottom - ms / max * height;
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="#333"/>"##,
        LEFT + plot_width
    );
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{bottom}" stroke="#333"/>"##
    );
    for step in 0..=4 {
        let ms = max / 1.15 * f64::from(step) / 4.0;
        let y = y_of(ms);
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{:.1}" text-anchor="end" fill="#555">{ms:.1} ms</text>"##,
            LEFT - 6.0,
            y + 4.0
        );
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/>"##,
            LEFT + plot_width
        );
    }
    if let Some(target) = target_ms.filter(|target| *target < max) {
        let y = y_of(target);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="{MISS}" stroke-dasharray="6 4"/>"##,
            LEFT + plot_width
        );
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{:.1}" text-anchor="end" fill="{MISS}">target {target:.0} ms</text>"##,
            LEFT + plot_width,
            y - 4.0
        );
    }
    for (index, count) in counts.iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{} connections</text>"#,
            x_of(index),
            bottom + 16.0,
            thousands(*count)
        );
    }
    for (line_index, line) in series.iter().enumerate() {
        let color = COLORS[line_index % COLORS.len()];
        let points: Vec<String> = line
            .points
            .iter()
            .enumerate()
            .map(|(index, (_, ms))| format!("{:.1},{:.1}", x_of(index), y_of(*ms)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            points.join(" ")
        );
        for (index, (_, ms)) in line.points.iter().enumerate() {
            let (x, y) = (x_of(index), y_of(*ms));
            let _ = writeln!(svg, r#"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="{color}"/>"#);
            // Small values crowd the axis: docs/benchmarks.md has them in a table.
            if *ms >= max * 0.15 {
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" fill="{color}">{ms:.1} ms</text>"#,
                    x + 8.0,
                    y + 4.0
                );
            }
        }
        let legend_y = top + 14.0 + line_index as f64 * 16.0;
        let legend_x = LEFT + 16.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{legend_x}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{legend_y}">{}</text>"#,
            legend_y - 10.0,
            legend_x + 18.0,
            escape(&line.label)
        );
    }
    bottom + 24.0
}

/// `10000` as `10,000`.
fn thousands(n: u32) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_panel_as_one_svg_document() {
        let svg = render(
            "test <machine>",
            &[RatioBar {
                label: "req/s".into(),
                value: 0.98,
                target: Some(0.97),
                higher_is_better: true,
            }],
            &[Bar {
                label: "terminus-rs".into(),
                value: 50_000.0,
            }],
            &[Series {
                label: "bare".into(),
                points: vec![(0, 1.0), (1000, 2.0), (10_000, 20.0)],
            }],
            Some(50.0),
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("test &lt;machine&gt;"));
        assert!(svg.contains(PASS));
        assert!(svg.contains("10,000 connections"));
    }
}
