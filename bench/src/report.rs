//! The results table, bench.json and a hand-written SVG bar chart.

use std::fmt::Write as _;

use serde::Serialize;

use crate::drive::Metrics;

/// One row: a metric's name, unit, whether lower is better, and its values.
#[derive(Debug, Serialize)]
pub struct Row {
    pub metric: String,
    pub unit: String,
    pub lower_is_better: bool,
    pub crisp: Option<f64>,
    pub containerd: Option<f64>,
    /// crisp / containerd.
    pub ratio: Option<f64>,
}

pub fn rows(crisp: Option<&Metrics>, containerd: Option<&Metrics>) -> Vec<Row> {
    type Get = fn(&Metrics) -> Option<f64>;
    let defs: [(&str, &str, bool, Get); 15] = [
        ("pod+container start p50", "ms", true, |m| {
            Some(m.pods.as_ref()?.start_p50_ms)
        }),
        ("pod+container start p99", "ms", true, |m| {
            Some(m.pods.as_ref()?.start_p99_ms)
        }),
        ("start throughput (10 clients)", "pods/s", false, |m| {
            Some(m.pods.as_ref()?.pods_per_s)
        }),
        ("ExecSync true p50", "ms", true, |m| {
            Some(m.pods.as_ref()?.exec_p50_ms)
        }),
        ("ExecSync true p99", "ms", true, |m| {
            Some(m.pods.as_ref()?.exec_p99_ms)
        }),
        ("stop+remove pod p50", "ms", true, |m| {
            Some(m.pods.as_ref()?.stop_remove_p50_ms)
        }),
        ("daemon RSS (N pods up)", "MiB", true, |m| {
            Some(m.pods.as_ref()?.daemon_rss_mib)
        }),
        ("shim processes, + fork servers", "count", true, |m| {
            Some(m.pods.as_ref()?.shim_count as f64)
        }),
        ("shim RSS total", "MiB", true, |m| {
            Some(m.pods.as_ref()?.shim_rss_mib)
        }),
        ("shim RSS per pod", "MiB", true, |m| {
            Some(m.pods.as_ref()?.shim_rss_per_pod_mib)
        }),
        ("shim PSS per pod", "MiB", true, |m| {
            Some(m.pods.as_ref()?.shim_pss_per_pod_mib)
        }),
        ("image pull+unpack p50", "ms", true, |m| {
            Some(m.pull.as_ref()?.pull_p50_ms)
        }),
        ("image pull+unpack max", "ms", true, |m| {
            Some(m.pull.as_ref()?.pull_max_ms)
        }),
        ("2nd image, shared base, pull p50", "ms", true, |m| {
            Some(m.pull.as_ref()?.shared_base_pull_p50_ms)
        }),
        ("pull throughput at p50", "MiB/s", false, |m| {
            Some(m.pull.as_ref()?.pull_mib_per_s)
        }),
    ];
    defs.iter()
        .map(|(metric, unit, lower, get)| {
            let a = crisp.and_then(get);
            let b = containerd.and_then(get);
            Row {
                metric: metric.to_string(),
                unit: unit.to_string(),
                lower_is_better: *lower,
                crisp: a,
                containerd: b,
                ratio: match (a, b) {
                    (Some(a), Some(b)) if b != 0.0 => Some(a / b),
                    _ => None,
                },
            }
        })
        // A phase that did not run (or a runtime that failed it) has no row.
        .filter(|r| r.crisp.is_some() || r.containerd.is_some())
        .collect()
}

fn cell(v: Option<f64>) -> String {
    match v {
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
        None => "-".to_string(),
    }
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:>7} {:>10} {:>11} {:>8}",
        "metric", "unit", "crisp", "containerd", "ratio"
    );
    let _ = writeln!(out, "{}", "-".repeat(72));
    for r in rows {
        let _ = writeln!(
            out,
            "{:<32} {:>7} {:>10} {:>11} {:>8}",
            r.metric,
            r.unit,
            cell(r.crisp),
            cell(r.containerd),
            r.ratio.map(|x| format!("{x:.2}x")).unwrap_or("-".into())
        );
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Horizontal bar pairs, one group per metric, each scaled to the larger of
/// the two values so the comparison reads at a glance.
pub fn svg(rows: &[Row], title: &str) -> String {
    const W: f64 = 900.0;
    const LABEL: f64 = 290.0;
    const BAR_MAX: f64 = 480.0;
    const BAR_H: f64 = 14.0;
    const GROUP_H: f64 = 44.0;
    const TOP: f64 = 70.0;
    const CRISP: &str = "#2b7bb9";
    const CTRD: &str = "#e08a2b";
    let h = TOP + GROUP_H * rows.len() as f64 + 20.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="16" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let _ = writeln!(
        s,
        r#"<rect x="10" y="36" width="12" height="12" fill="{CRISP}"/><text x="27" y="46">crisp</text><rect x="80" y="36" width="12" height="12" fill="{CTRD}"/><text x="97" y="46">containerd</text><text x="200" y="46" fill="dimgray">bars scaled per metric to the larger value</text>"#
    );
    for (i, r) in rows.iter().enumerate() {
        let y = TOP + GROUP_H * i as f64;
        let better = if r.lower_is_better {
            "lower is better"
        } else {
            "higher is better"
        };
        let _ = writeln!(
            s,
            r#"<text x="10" y="{}">{} ({})</text><text x="10" y="{}" fill="gray" font-size="10">{better}</text>"#,
            y + 14.0,
            escape(&r.metric),
            escape(&r.unit),
            y + 28.0
        );
        let max = r
            .crisp
            .unwrap_or(0.0)
            .max(r.containerd.unwrap_or(0.0))
            .max(f64::MIN_POSITIVE);
        for (j, (v, color)) in [(r.crisp, CRISP), (r.containerd, CTRD)].iter().enumerate() {
            let by = y + 2.0 + j as f64 * (BAR_H + 2.0);
            let width = v.map(|v| (v / max * BAR_MAX).max(1.0)).unwrap_or(0.0);
            let _ = writeln!(
                s,
                r#"<rect x="{LABEL}" y="{by}" width="{width:.1}" height="{BAR_H}" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                LABEL + width + 5.0,
                by + BAR_H - 3.0,
                cell(*v)
            );
        }
    }
    let _ = writeln!(s, "</svg>");
    s
}
