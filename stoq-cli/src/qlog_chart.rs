//! `stoq qlog-chart`: draws a connection's congestion control from its qlog file as an SVG
//! (congestion window and bytes in flight with the controller's states and the losses,
//! pacing rate, round-trip times), for a look at a slow transfer without qvis.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Chart width and the height of one panel, in pixels.
const WIDTH: f64 = 960.0;
const PANEL: f64 = 170.0;
const LEFT: f64 = 78.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 40.0;
const GAP: f64 = 42.0;
/// Background colours of the controller's states, in order of first appearance.
const PALETTE: [&str; 8] = [
    "#fde2e2", "#e2f0fd", "#e5f7e0", "#fff3d6", "#efe2fd", "#dff6f6", "#f5e6da", "#eeeeee",
];

/// A step series: (time in ms, value).
type Series = Vec<(f64, f64)>;
/// One panel: its unit, and its series with their colours and labels.
type Panel<'a> = (&'a str, Vec<(&'a Series, &'a str, &'a str)>);

/// What the chart shows, read from the file.
#[derive(Default)]
struct Trace {
    vantage: String,
    events: usize,
    cwnd: Series,
    in_flight: Series,
    pacing: Series,
    srtt: Series,
    min_rtt: Series,
    latest_rtt: Series,
    /// (start ms, state)
    states: Vec<(f64, String)>,
    losses: Vec<f64>,
    end: f64,
}

/// Reads `input` (JSON-SEQ qlog) and writes the chart to `out`.
pub(crate) fn run(input: &Path, out: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let t = parse(&text).map_err(|e| format!("{}: {e}", input.display()))?;
    if t.cwnd.is_empty() {
        return Err(format!(
            "{}: no quic:recovery_metrics_updated events with a congestion window (is it the sender's trace?)",
            input.display()
        ));
    }
    let title = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::write(out, svg(&t, &title)).map_err(|e| format!("{}: {e}", out.display()))?;
    say!(
        "{}: {} events ({}), {} losses, {} state changes, {:.1} s",
        out.display(),
        t.events,
        t.vantage,
        t.losses.len(),
        t.states.len(),
        t.end / 1000.0
    );
    Ok(())
}

fn parse(text: &str) -> Result<Trace, String> {
    let mut t = Trace::default();
    let mut records = text
        .split('\u{1e}')
        .map(str::trim)
        .filter(|r| !r.is_empty());
    let header: serde_json::Value = serde_json::from_str(records.next().ok_or("empty file")?)
        .map_err(|e| format!("header: {e}"))?;
    if header["file_schema"] != "urn:ietf:params:qlog:file:sequential" {
        return Err("not a sequential (JSON-SEQ) qlog file".into());
    }
    t.vantage = header["trace"]["vantage_point"]["type"]
        .as_str()
        .unwrap_or("unknown")
        .to_string();
    for (i, r) in records.enumerate() {
        let v: serde_json::Value =
            serde_json::from_str(r).map_err(|e| format!("record {}: {e}", i + 1))?;
        t.events += 1;
        let time = v["time"].as_f64().unwrap_or(0.0);
        t.end = t.end.max(time);
        let d = &v["data"];
        match v["name"].as_str().unwrap_or("") {
            "quic:recovery_metrics_updated" => {
                let push = |s: &mut Series, k: &str, scale: f64| {
                    if let Some(x) = d[k].as_f64() {
                        s.push((time, x * scale));
                    }
                };
                push(&mut t.cwnd, "congestion_window", 1.0 / 1024.0);
                push(&mut t.in_flight, "bytes_in_flight", 1.0 / 1024.0);
                push(&mut t.pacing, "pacing_rate", 8.0 / 1e6);
                push(&mut t.srtt, "smoothed_rtt", 1.0);
                push(&mut t.min_rtt, "min_rtt", 1.0);
                push(&mut t.latest_rtt, "latest_rtt", 1.0);
            }
            "quic:congestion_state_updated" => {
                if let Some(s) = d["new"].as_str() {
                    t.states.push((time, s.to_string()));
                }
            }
            "quic:packet_lost" => t.losses.push(time),
            _ => {}
        }
    }
    Ok(t)
}

/// Largest value of the series, rounded up to a readable scale.
fn scale(series: &[&Series]) -> f64 {
    let max = series
        .iter()
        .flat_map(|s| s.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let mag = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&s| s >= max)
        .unwrap_or(10.0 * mag)
}

/// An SVG path of a step series, one point per pixel column at most (keeping each
/// column's extremes).
fn path(s: &Series, x: impl Fn(f64) -> f64, y: impl Fn(f64) -> f64, end: f64) -> String {
    let mut out = String::new();
    let mut last: Option<(f64, f64)> = None;
    let mut col: Option<(i64, f64, f64)> = None; // (column, min y, max y)
    for &(t, v) in s {
        let (px, py) = (x(t), y(v));
        if let Some((lx, ly)) = last {
            if px.round() as i64 == col.map_or(i64::MIN, |c| c.0) {
                let c = col.as_mut().expect("set");
                c.1 = c.1.min(py);
                c.2 = c.2.max(py);
                last = Some((px, py));
                continue;
            }
            if let Some((_, lo, hi)) = col.take() {
                let _ = write!(out, "L{lx:.1},{lo:.1}L{lx:.1},{hi:.1}L{lx:.1},{ly:.1}");
            }
            let _ = write!(out, "L{px:.1},{ly:.1}L{px:.1},{py:.1}");
        } else {
            let _ = write!(out, "M{px:.1},{py:.1}");
        }
        col = Some((px.round() as i64, py, py));
        last = Some((px, py));
    }
    if let Some((_, ly)) = last {
        let _ = write!(out, "L{:.1},{ly:.1}", x(end));
    }
    out
}

fn svg(t: &Trace, title: &str) -> String {
    let end = t.end.max(1.0);
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |ms: f64| LEFT + ms / end * plot_w;
    let height = TOP + 3.0 * PANEL + 2.0 * GAP + 62.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    s.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="{LEFT}" y="18" font-size="13" font-weight="bold">{} ({}): congestion control from qlog</text>"#,
        xml(title),
        xml(&t.vantage)
    );
    let panels: [Panel<'_>; 3] = [
        (
            "KiB",
            vec![
                (&t.cwnd, "#1f5fbf", "congestion window"),
                (&t.in_flight, "#e08a00", "bytes in flight"),
            ],
        ),
        ("Mbit/s", vec![(&t.pacing, "#2a9d3a", "pacing rate")]),
        (
            "ms",
            vec![
                (&t.latest_rtt, "#bbbbbb", "latest RTT"),
                (&t.srtt, "#8e3fbf", "smoothed RTT"),
                (&t.min_rtt, "#333333", "min RTT"),
            ],
        ),
    ];
    // Colours of the states, by first appearance.
    let mut colours: BTreeMap<&str, &str> = BTreeMap::new();
    for (_, st) in &t.states {
        let n = colours.len();
        colours.entry(st).or_insert(PALETTE[n % PALETTE.len()]);
    }
    for (p, (unit, series)) in panels.iter().enumerate() {
        let top = TOP + p as f64 * (PANEL + GAP);
        let bottom = top + PANEL;
        if p == 0 {
            for (i, (start, st)) in t.states.iter().enumerate() {
                let stop = t.states.get(i + 1).map_or(end, |n| n.0);
                let _ = write!(
                    s,
                    r#"<rect x="{:.1}" y="{top}" width="{:.1}" height="{PANEL}" fill="{}"><title>{}</title></rect>"#,
                    x(*start),
                    (x(stop) - x(*start)).max(0.5),
                    colours[st.as_str()],
                    xml(st)
                );
            }
            for l in &t.losses {
                let _ = write!(
                    s,
                    r##"<line x1="{0:.1}" x2="{0:.1}" y1="{1}" y2="{2}" stroke="#d62728" stroke-width="1"/>"##,
                    x(*l),
                    bottom - 8.0,
                    bottom
                );
            }
        }
        let max = scale(&series.iter().map(|s| s.0).collect::<Vec<_>>());
        let y = |v: f64| bottom - v / max * PANEL;
        for k in 0..=4 {
            let v = max * f64::from(k) / 4.0;
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{1:.1}" y2="{1:.1}" stroke="#dddddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{4}</text>"##,
                WIDTH - RIGHT,
                y(v),
                LEFT - 6.0,
                y(v) + 4.0,
                num(v)
            );
        }
        let _ = write!(
            s,
            r#"<text x="14" y="{:.1}" transform="rotate(-90 14 {0:.1})" text-anchor="middle">{unit}</text>"#,
            top + PANEL / 2.0
        );
        let mut lx = LEFT;
        for (series, colour, label) in series {
            let _ = write!(
                s,
                r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="1.3"/>"#,
                path(series, x, y, end)
            );
            let _ = write!(
                s,
                r#"<rect x="{lx}" y="{:.1}" width="10" height="10" fill="{colour}"/><text x="{:.1}" y="{:.1}">{label}</text>"#,
                top - 16.0,
                lx + 14.0,
                top - 7.0
            );
            lx += 24.0 + 6.5 * label.len() as f64;
        }
        if p == 0 {
            let _ = write!(
                s,
                r##"<rect x="{lx}" y="{:.1}" width="2" height="10" fill="#d62728"/><text x="{:.1}" y="{:.1}">packet lost</text>"##,
                top - 16.0,
                lx + 6.0,
                top - 7.0
            );
        }
        let _ = write!(
            s,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL}" fill="none" stroke="#888888"/>"##
        );
    }
    let axis = TOP + 3.0 * PANEL + 2.0 * GAP;
    for k in 0..=8 {
        let ms = end * f64::from(k) / 8.0;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(ms),
            axis + 14.0,
            num(ms / 1000.0)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time (s)</text>"#,
        LEFT + plot_w / 2.0,
        axis + 30.0
    );
    // The controller's states, under the chart (there can be many).
    let (mut lx, mut ly) = (LEFT, axis + 46.0);
    for (st, colour) in &colours {
        let w = 24.0 + 6.2 * st.len() as f64;
        if lx + w > WIDTH - RIGHT {
            (lx, ly) = (LEFT, ly + 14.0);
        }
        let _ = write!(
            s,
            r##"<rect x="{lx}" y="{:.1}" width="10" height="10" fill="{colour}" stroke="#999999"/><text x="{:.1}" y="{ly:.1}">{}</text>"##,
            ly - 9.0,
            lx + 14.0,
            xml(st)
        );
        lx += w;
    }
    s.push_str("</svg>");
    s.push('\n');
    s
}

/// A short label for an axis value.
fn num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `s` escaped for SVG text.
fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\u{1e}{\"file_schema\":\"urn:ietf:params:qlog:file:sequential\",\"trace\":{\"vantage_point\":{\"type\":\"client\"}}}\n\
        \u{1e}{\"time\":0.000,\"name\":\"quic:congestion_state_updated\",\"data\":{\"new\":\"bbr_startup\"}}\n\
        \u{1e}{\"time\":1.000,\"name\":\"quic:recovery_metrics_updated\",\"data\":{\"congestion_window\":20480,\"bytes_in_flight\":1024,\"pacing_rate\":1250000,\"smoothed_rtt\":20.5}}\n\
        \u{1e}{\"time\":2.500,\"name\":\"quic:packet_lost\",\"data\":{}}\n\
        \u{1e}{\"time\":3.000,\"name\":\"quic:congestion_state_updated\",\"data\":{\"old\":\"bbr_startup\",\"new\":\"bbr_drain\"}}\n\
        \u{1e}{\"time\":4.000,\"name\":\"quic:recovery_metrics_updated\",\"data\":{\"congestion_window\":40960}}\n";

    #[test]
    fn a_trace_is_read_and_drawn() {
        let t = parse(FILE).unwrap();
        assert_eq!(t.events, 5);
        assert_eq!(t.vantage, "client");
        assert_eq!(t.cwnd, vec![(1.0, 20.0), (4.0, 40.0)]);
        assert_eq!(t.pacing, vec![(1.0, 10.0)]);
        assert_eq!(t.losses, vec![2.5]);
        assert_eq!(t.states.len(), 2);
        let svg = svg(&t, "x.sqlog");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("bbr_drain") && svg.contains("congestion window"));
    }

    #[test]
    fn not_qlog_is_an_error() {
        assert!(parse("\u{1e}{\"file_schema\":\"something else\"}").is_err());
        assert!(parse("").is_err());
        assert!(
            parse(
                "\u{1e}{\"file_schema\":\"urn:ietf:params:qlog:file:sequential\"}\n\u{1e}{not json"
            )
            .is_err()
        );
    }

    #[test]
    fn scales_are_round() {
        assert_eq!(scale(&[&vec![(0.0, 73.0)]]), 100.0);
        assert_eq!(scale(&[&vec![(0.0, 0.3)]]), 0.5);
        assert_eq!(scale(&[&vec![(0.0, 1900.0)]]), 2000.0);
    }
}
