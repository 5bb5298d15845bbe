//! What the console plots: every version's counters sampled at a fixed
//! interval (the last [`POINTS`] samples), and the plots themselves, drawn
//! as SVG on the server.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use maud::{Markup, html};

use crate::registry::{PluginStatus, VersionStatus};

/// Samples kept per version (an hour at the default 10 s).
pub const POINTS: usize = 360;

/// One sample of one version.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    /// Calls counted so far, and of those the ones that ended `ok`.
    pub calls: u64,
    pub ok: u64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    /// Agreement with the stable version (a shadow), 0..1.
    pub agreement: Option<f64>,
    /// Agreement with human labels, 0..1.
    pub humans: Option<f64>,
    /// The largest field drift (PSI) of a watched version.
    pub drift: Option<f64>,
}

/// The samples of every version, by plugin then version.
#[derive(Default)]
pub struct Timeline {
    series: Mutex<BTreeMap<String, BTreeMap<String, VecDeque<Point>>>>,
}

fn point(at: u64, v: &VersionStatus, agreement: Option<f64>) -> Point {
    Point {
        at,
        calls: v.calls,
        ok: v.outcomes.get("ok").copied().unwrap_or(0),
        p50_us: v.p50_us,
        p95_us: v.p95_us,
        p99_us: v.p99_us,
        agreement,
        humans: v.humans.as_ref().and_then(|h| h.rate()),
        drift: v
            .drift
            .as_ref()
            .and_then(|d| d.fields.iter().map(|f| f.psi).reduce(f64::max)),
    }
}

impl Timeline {
    /// Take a sample of every version in `status`.
    pub fn sample(&self, status: &[PluginStatus], at: u64) {
        let mut series = evos_core::sync::lock(&self.series);
        for p in status {
            let mut versions = vec![point(at, &p.stable, None)];
            let mut names = vec![p.stable.version.clone()];
            if let Some(c) = &p.canary {
                versions.push(point(at, c, None));
                names.push(c.version.clone());
            }
            if let Some(s) = &p.shadow {
                let rate = s.agreement.first().and_then(|a| a.agreement_rate);
                versions.push(point(at, &s.version, rate));
                names.push(s.version.version.clone());
            }
            let plugin = series.entry(p.plugin.clone()).or_default();
            for (name, pt) in names.into_iter().zip(versions) {
                let points = plugin.entry(name).or_default();
                if points.len() >= POINTS {
                    points.pop_front();
                }
                points.push_back(pt);
            }
        }
    }

    /// The samples of `plugin`'s versions.
    pub fn of(&self, plugin: &str) -> BTreeMap<String, Vec<Point>> {
        evos_core::sync::lock(&self.series)
            .get(plugin)
            .map(|m| {
                m.iter()
                    .map(|(v, pts)| (v.clone(), pts.iter().cloned().collect()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One line of a plot: a version's values over time.
struct Line {
    label: String,
    values: Vec<(u64, f64)>,
}

const COLORS: &[&str] = &["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c"];
const W: f64 = 640.0;
const H: f64 = 180.0;
const PAD: f64 = 40.0;

/// A line plot of `lines` (a version each) with a y axis in `unit`.
fn plot(title: &str, unit: &str, lines: &[Line], y_max_at_least: f64) -> Markup {
    let points: Vec<(u64, f64)> = lines.iter().flat_map(|l| l.values.clone()).collect();
    if points.is_empty() {
        return html! {
            figure.plot {
                figcaption { (title) }
                p.empty { "No samples yet." }
            }
        };
    }
    let t0 = points.iter().map(|p| p.0).min().unwrap_or(0);
    let t1 = points.iter().map(|p| p.0).max().unwrap_or(0).max(t0 + 1);
    let y_max = points
        .iter()
        .map(|p| p.1)
        .fold(y_max_at_least, f64::max)
        .max(f64::MIN_POSITIVE);
    let x = |t: u64| PAD + (t - t0) as f64 / (t1 - t0) as f64 * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD / 2.0 - v / y_max * (H - PAD);
    let span =
        humantime::format_duration(std::time::Duration::from_secs((t1 - t0) / 1000)).to_string();
    html! {
        figure.plot {
            figcaption { (title) }
            svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(title) {
                line x1=(PAD) y1=(y(0.0)) x2=(W - PAD) y2=(y(0.0)) stroke="#888" {}
                line x1=(PAD) y1=(y(0.0)) x2=(PAD) y2=(y(y_max)) stroke="#888" {}
                text x="2" y=(y(y_max) + 4.0) font-size="10" { (format_value(y_max, unit)) }
                text x="2" y=(y(0.0)) font-size="10" { (format_value(0.0, unit)) }
                text x=(W - PAD) y=(H - 4.0) font-size="10" text-anchor="end" { "last " (span) }
                @for (i, l) in lines.iter().enumerate() {
                    @let color = COLORS[i % COLORS.len()];
                    @let pts = l.values.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect::<Vec<_>>().join(" ");
                    polyline points=(pts) fill="none" stroke=(color) stroke-width="2" {}
                    @for (t, v) in &l.values {
                        circle cx=(format!("{:.1}", x(*t))) cy=(format!("{:.1}", y(*v))) r="2" fill=(color) {
                            title { (l.label) ": " (format_value(*v, unit)) }
                        }
                    }
                }
            }
            ul.legend {
                @for (i, l) in lines.iter().enumerate() {
                    li {
                        svg.swatch xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10" width="10" height="10" {
                            rect width="10" height="10" fill=(COLORS[i % COLORS.len()]) {}
                        }
                        " " (l.label)
                    }
                }
            }
        }
    }
}

fn format_value(v: f64, unit: &str) -> String {
    match unit {
        "µs" if v >= 1000.0 => format!("{:.1} ms", v / 1000.0),
        "µs" => format!("{v:.0} µs"),
        "%" => format!("{:.0}%", v * 100.0),
        "" => format!("{v:.2}"),
        _ => format!("{v:.0} {unit}"),
    }
}

/// The plots of one plugin: p95 latency, calls and errors per interval,
/// agreement (with the stable version and with humans) and drift, each
/// with a line per version.
pub fn plots(series: &BTreeMap<String, Vec<Point>>) -> Markup {
    let lines = |f: &dyn Fn(&Point, Option<&Point>) -> Option<f64>| -> Vec<Line> {
        series
            .iter()
            .map(|(version, pts)| Line {
                label: version.clone(),
                values: pts
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| {
                        let before = i.checked_sub(1).and_then(|j| pts.get(j));
                        f(p, before).map(|v| (p.at, v))
                    })
                    .collect(),
            })
            .filter(|l| !l.values.is_empty())
            .collect()
    };
    let p95 = lines(&|p, _| (p.calls > 0).then_some(p.p95_us as f64));
    let calls = lines(&|p, b| b.map(|b| p.calls.saturating_sub(b.calls) as f64));
    let errors = lines(&|p, b| {
        b.map(|b| {
            let calls = p.calls.saturating_sub(b.calls);
            let ok = p.ok.saturating_sub(b.ok);
            calls.saturating_sub(ok) as f64
        })
    });
    let agreement = lines(&|p, _| p.agreement);
    let humans = lines(&|p, _| p.humans);
    let drift = lines(&|p, _| p.drift);
    html! {
        div.plots {
            (plot("p95 latency", "µs", &p95, 1.0))
            (plot("Calls per interval", "calls", &calls, 1.0))
            (plot("Calls not ok per interval", "calls", &errors, 1.0))
            @if !agreement.is_empty() { (plot("Agreement with the stable version", "%", &agreement, 1.0)) }
            @if !humans.is_empty() { (plot("Agreement with human labels", "%", &humans, 1.0)) }
            @if !drift.is_empty() { (plot("Largest field drift (PSI)", "", &drift, 0.25)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(at: u64, calls: u64, ok: u64, p95: u64) -> Point {
        Point {
            at,
            calls,
            ok,
            p50_us: p95 / 2,
            p95_us: p95,
            p99_us: p95 * 2,
            agreement: None,
            humans: None,
            drift: None,
        }
    }

    #[test]
    fn plots_draw_a_line_per_version_with_deltas_per_interval() {
        let mut series = BTreeMap::new();
        series.insert(
            "1.0.0".to_string(),
            vec![
                pt(10, 0, 0, 0),
                pt(20, 100, 98, 900),
                pt(30, 250, 240, 1500),
            ],
        );
        series.insert(
            "1.1.0".to_string(),
            vec![pt(10, 0, 0, 0), pt(20, 10, 10, 800)],
        );
        let html = plots(&series).into_string();
        assert_eq!(html.matches("<figure").count(), 3, "{html}");
        // Three lines per plot at most; the p95 plot skips samples without calls.
        assert!(html.contains("1.0.0: 1.5 ms"), "{html}");
        assert!(
            html.contains("1.0.0: 150 calls"),
            "a delta, not a total: {html}"
        );
        assert!(
            html.contains("1.0.0: 8 calls"),
            "errors per interval: {html}"
        );
        assert!(html.contains("1.1.0: 0 calls"), "{html}");
        assert!(!html.contains("Agreement"), "no shadow, no agreement plot");
    }

    #[test]
    fn labels_are_escaped_and_an_empty_plot_says_so() {
        let mut series = BTreeMap::new();
        series.insert("<script>".to_string(), vec![pt(1, 1, 1, 5)]);
        let html = plots(&series).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
        assert!(
            plots(&BTreeMap::new())
                .into_string()
                .contains("No samples yet.")
        );
    }
}
