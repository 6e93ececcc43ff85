//! The report: every run with its raw numbers (`report.json`), the tables with medians,
//! spreads and same-run ratios (`report.md`), and the charts (`*.svg`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::spec::{Outcome, Scenario, Subject};
use crate::topo::Topo;

/// The machine and the software measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Machine {
    pub(crate) cpu: String,
    pub(crate) cores: usize,
    pub(crate) mem_gib: f64,
    pub(crate) kernel: String,
    pub(crate) stoq: String,
    pub(crate) quinn: String,
    pub(crate) rustls: String,
    pub(crate) command: String,
    pub(crate) quick: bool,
    pub(crate) queues: u32,
    pub(crate) iface: Option<String>,
}

/// Single-core ceilings measured in the same run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Ceilings {
    /// Plaintext Gbit/s sealing 1,400-byte packets, per suite.
    pub(crate) aead_gbps: Vec<(String, f64)>,
    /// FALCON-512 signatures per second: a server signs once per handshake.
    pub(crate) falcon512_signs_per_s: f64,
    /// The CPU they ran on.
    pub(crate) cpu: usize,
}

/// One subject, one scenario, one repetition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Run {
    pub(crate) group: String,
    pub(crate) title: String,
    pub(crate) path: String,
    pub(crate) mtu: u32,
    pub(crate) subject: Subject,
    pub(crate) label: String,
    pub(crate) scenario: Scenario,
    pub(crate) rep: usize,
    pub(crate) server_cpus: Vec<usize>,
    pub(crate) client_cpus: Vec<usize>,
    pub(crate) udp_payload: usize,
    /// How the server's backend ran.
    pub(crate) backend: String,
    pub(crate) error: Option<String>,
    pub(crate) server: Option<Outcome>,
    pub(crate) client: Option<Outcome>,
    pub(crate) metrics: BTreeMap<String, f64>,
}

fn q(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

impl Run {
    /// Derives the metrics from both sides' outcomes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        group: &str,
        title: &str,
        topo: &Topo,
        subject: &Subject,
        scenario: Scenario,
        rep: usize,
        r: Result<(Outcome, Outcome, [u64; 2]), String>,
        drops: Option<u64>,
    ) -> Self {
        let mut run = Self {
            group: group.into(),
            title: title.into(),
            path: topo.describe(),
            mtu: topo.mtu(),
            subject: subject.clone(),
            label: label_of(subject, scenario),
            scenario,
            rep,
            server_cpus: Vec::new(),
            client_cpus: Vec::new(),
            udp_payload: 0,
            backend: String::new(),
            error: None,
            server: None,
            client: None,
            metrics: BTreeMap::new(),
        };
        let (s, c, rss) = match r {
            Ok(x) => x,
            Err(e) => {
                run.error = Some(e);
                return run;
            }
        };
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: f64| {
            if v.is_finite() {
                m.insert(k.to_string(), v);
            }
        };
        match scenario {
            Scenario::Bulk { .. } | Scenario::Shaped { .. } => {
                let gb = c.bytes as f64 / 1e9;
                put("gbps", gb * 8.0 / c.secs);
                put("server_cpu_s_per_gb", s.cpu_s / gb);
                put("client_cpu_s_per_gb", c.cpu_s / gb);
                put("server_cores_busy", s.cpu_s / c.secs);
                put("server_ctx_switches_per_gb", s.ctx_switches / gb);
                put("client_ctx_switches_per_gb", c.ctx_switches / gb);
                put("client_cores_busy", c.cpu_s / c.secs);
                if c.sent > 0 {
                    put("loss", 1.0 - c.count as f64 / c.sent as f64);
                }
                if let Scenario::Shaped { .. } = scenario {
                    put("base_rtt_ms", c.base_rtt_us / 1e3);
                    put("rtt_p50_ms", q(&c.quantiles_us, 0.5) / 1e3);
                    put("rtt_p99_ms", q(&c.quantiles_us, 0.99) / 1e3);
                    put("rtt_inflation", q(&c.quantiles_us, 0.5) / c.base_rtt_us);
                    if let Some(d) = drops {
                        put("bottleneck_drops", d as f64);
                    }
                }
            }
            Scenario::Rr { .. } => {
                put("p50_us", q(&c.quantiles_us, 0.5));
                put("p99_us", q(&c.quantiles_us, 0.99));
                put("p999_us", q(&c.quantiles_us, 0.999));
                put("rps", c.count as f64 / c.secs);
                let n = c.count.max(1) as f64;
                put("server_ctx_switches_per_req", s.ctx_switches / n);
                put("client_ctx_switches_per_req", c.ctx_switches / n);
                put("server_cpu_us_per_req", s.cpu_s / n * 1e6);
                put("client_cpu_us_per_req", c.cpu_s / n * 1e6);
            }
            Scenario::Handshakes { resumed, .. } => {
                put("hs_per_s", c.count as f64 / c.secs);
                put("server_cpu_us_per_hs", s.cpu_s / c.count as f64 * 1e6);
                put("client_cpu_us_per_hs", c.cpu_s / c.count as f64 * 1e6);
                put("server_busy", s.cpu_s / c.secs);
                put("client_busy", c.cpu_s / c.secs);
                if resumed && c.resumed > 0 {
                    put("resumed_pct", 100.0 * c.resumed as f64 / c.count as f64);
                }
            }
            Scenario::Reconnect { .. } => {
                let n = c.count.max(1) as f64;
                put("ttfb_p50_us", q(&c.quantiles_us, 0.5));
                put("ttfb_p99_us", q(&c.quantiles_us, 0.99));
                put("reconnects_per_s", c.count as f64 / c.secs);
                put("early_pct", 100.0 * c.resumed as f64 / n);
                if c.handshake_us > 0.0 {
                    put("handshake_p50_us", c.handshake_us);
                }
                put("server_cpu_us_per_conn", s.cpu_s / n * 1e6);
                put("client_cpu_us_per_conn", c.cpu_s / n * 1e6);
            }
            Scenario::Idle { conns } => {
                let n = conns.max(1) as f64;
                put(
                    "server_kib_per_conn",
                    rss[1].saturating_sub(rss[0]) as f64 / n,
                );
                put("client_kib_per_conn", c.rss_kib as f64 / n);
                put("opened_per_s", c.count as f64 / c.secs);
            }
        }
        run.backend = s.detail.clone();
        run.metrics = m;
        run.server = Some(s);
        run.client = Some(c);
        run
    }

    /// A run that could not start (its group's path could not be set up).
    pub(crate) fn failed(
        group: &str,
        title: &str,
        subject: &Subject,
        scenario: Scenario,
        rep: usize,
        why: &str,
    ) -> Self {
        Self {
            group: group.into(),
            title: title.into(),
            path: String::new(),
            mtu: 0,
            subject: subject.clone(),
            label: label_of(subject, scenario),
            scenario,
            rep,
            server_cpus: Vec::new(),
            client_cpus: Vec::new(),
            udp_payload: 0,
            backend: String::new(),
            error: Some(format!("not run: {why}")),
            server: None,
            client: None,
            metrics: BTreeMap::new(),
        }
    }

    /// Records the CPUs and datagram size.
    pub(crate) fn with_cpus(mut self, server: &[usize], client: &[usize], payload: usize) -> Self {
        self.server_cpus = server.to_vec();
        self.client_cpus = client.to_vec();
        self.udp_payload = payload;
        self
    }

    /// One line for the progress log.
    pub(crate) fn brief(&self) -> String {
        if let Some(e) = &self.error {
            return format!("FAILED: {e}");
        }
        let g = |k: &str| self.metrics.get(k).copied().unwrap_or(0.0);
        match self.scenario {
            Scenario::Bulk { .. } => format!(
                "{:7.2} Gbit/s  CPU s/GB server {:.2} client {:.2}",
                g("gbps"),
                g("server_cpu_s_per_gb"),
                g("client_cpu_s_per_gb")
            ),
            Scenario::Shaped { .. } => format!(
                "{:7.3} Gbit/s  RTT {:.1} → {:.1} ms",
                g("gbps"),
                g("base_rtt_ms"),
                g("rtt_p50_ms")
            ),
            Scenario::Rr { .. } => format!(
                "p50 {:.1} µs  p99 {:.1} µs  {:.0} req/s",
                g("p50_us"),
                g("p99_us"),
                g("rps")
            ),
            Scenario::Handshakes { .. } => format!("{:.0} handshakes/s", g("hs_per_s")),
            Scenario::Reconnect { .. } => format!(
                "answer p50 {:.1} µs  p99 {:.1} µs  early data accepted {:.0} %",
                g("ttfb_p50_us"),
                g("ttfb_p99_us"),
                g("early_pct")
            ),
            Scenario::Idle { .. } => format!(
                "server {:.2} KiB/conn, client {:.2} KiB/conn",
                g("server_kib_per_conn"),
                g("client_kib_per_conn")
            ),
        }
    }

    fn key_metric(&self) -> &'static str {
        match self.scenario {
            Scenario::Bulk { .. } | Scenario::Shaped { .. } => "gbps",
            Scenario::Rr { .. } => "p50_us",
            Scenario::Handshakes { .. } => "hs_per_s",
            Scenario::Reconnect { .. } => "ttfb_p50_us",
            Scenario::Idle { .. } => "server_kib_per_conn",
        }
    }
}

/// Median and spread of one metric over a subject's repetitions.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) n: usize,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return Self::default();
        }
        Self {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
            n: v.len(),
        }
    }
}

/// One subject's repetitions in one table row.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) title: String,
    pub(crate) label: String,
    pub(crate) subject: Subject,
    pub(crate) backend: String,
    pub(crate) mtu: u32,
    pub(crate) server_cpus: Vec<usize>,
    pub(crate) client_cpus: Vec<usize>,
    pub(crate) runs: usize,
    pub(crate) failed: usize,
    pub(crate) metrics: BTreeMap<String, Spread>,
    /// The repetition whose key metric is the median (for the latency CDF).
    #[serde(skip)]
    pub(crate) median_run: Option<Run>,
}

impl Row {
    /// The first three cells of a row: subject, how it ran, server / client cores.
    fn who(&self) -> String {
        format!(
            "{} | {} | {} / {}",
            self.label,
            self.backend,
            cores(&self.server_cpus),
            cores(&self.client_cpus)
        )
    }

    fn m(&self, k: &str) -> Option<f64> {
        self.metrics.get(k).filter(|s| s.n > 0).map(|s| s.median)
    }
}

/// The whole run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) machine: Machine,
    pub(crate) ceilings: Ceilings,
    pub(crate) runs: Vec<Run>,
    pub(crate) seconds: f64,
    pub(crate) delay_ms: u64,
    pub(crate) rate_mbit: u32,
}

/// A run's label: its subject's, and for a reconnecting client when it sent its request.
fn label_of(subject: &Subject, scenario: Scenario) -> String {
    match scenario {
        Scenario::Reconnect { early: true, .. } => format!("{}, 0-RTT", subject.label()),
        Scenario::Reconnect { early: false, .. } => format!("{}, 1-RTT", subject.label()),
        _ => subject.label(),
    }
}

fn rows(runs: &[Run]) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for r in runs {
        let i = out.iter().position(|x| {
            x.title == r.title
                && x.label == r.label
                && x.server_cpus == r.server_cpus
                && x.client_cpus == r.client_cpus
        });
        let i = i.unwrap_or_else(|| {
            out.push(Row {
                title: r.title.clone(),
                label: r.label.clone(),
                subject: r.subject.clone(),
                backend: String::new(),
                mtu: r.mtu,
                server_cpus: r.server_cpus.clone(),
                client_cpus: r.client_cpus.clone(),
                runs: 0,
                failed: 0,
                metrics: BTreeMap::new(),
                median_run: None,
            });
            out.len() - 1
        });
        let row = &mut out[i];
        row.runs += 1;
        if r.error.is_some() {
            row.failed += 1;
        } else if row.backend.is_empty() {
            row.backend = r.backend.clone();
        }
    }
    for row in &mut out {
        let mine: Vec<&Run> = runs
            .iter()
            .filter(|r| {
                r.error.is_none()
                    && r.title == row.title
                    && r.label == row.label
                    && r.server_cpus == row.server_cpus
                    && r.client_cpus == row.client_cpus
            })
            .collect();
        let keys: Vec<String> = mine
            .iter()
            .flat_map(|r| r.metrics.keys().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for k in keys {
            let v = mine
                .iter()
                .filter_map(|r| r.metrics.get(&k).copied())
                .collect();
            row.metrics.insert(k, Spread::of(v));
        }
        if let Some(first) = mine.first() {
            let key = first.key_metric();
            let mut sorted = mine.clone();
            sorted.sort_by(|a, b| {
                let g = |r: &Run| r.metrics.get(key).copied().unwrap_or(0.0);
                g(a).total_cmp(&g(b))
            });
            row.median_run = sorted.get(sorted.len() / 2).map(|r| (*r).clone());
        }
    }
    out
}

fn cores(v: &[usize]) -> String {
    match v {
        [] => "-".into(),
        [x] => format!("CPU {x}"),
        v => format!(
            "CPUs {}",
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".into(),
    }
}

fn spread(row: &Row, k: &str, prec: usize) -> (String, String) {
    row.metrics.get(k).filter(|s| s.n > 0).map_or_else(
        || ("failed".into(), String::new()),
        |s| {
            (
                format!("{:.*}", prec, s.median),
                format!("{:.*}–{:.*}", prec, s.min, prec, s.max),
            )
        },
    )
}

/// A metric's median, or a dash where the run did not record it (older reports).
fn cell(row: &Row, k: &str, prec: usize) -> String {
    row.metrics
        .get(k)
        .filter(|s| s.n > 0)
        .map_or_else(|| "—".into(), |s| format!("{:.*}", prec, s.median))
}

/// Every table where some peer beats STOQ's best backend, said plainly.
fn trailing(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    let mut titles: Vec<&str> = Vec::new();
    for r in rows {
        if !titles.contains(&r.title.as_str()) {
            titles.push(&r.title);
        }
    }
    for t in titles {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.title == t).collect();
        let Some(kind) = mine
            .iter()
            .find_map(|r| r.median_run.as_ref().map(|m| m.scenario))
        else {
            continue;
        };
        let (key, lower, unit) = match kind {
            Scenario::Bulk { .. } | Scenario::Shaped { .. } => ("gbps", false, "Gbit/s"),
            Scenario::Rr { .. } => ("p50_us", true, "µs p50"),
            Scenario::Handshakes { .. } => ("hs_per_s", false, "handshakes/s"),
            Scenario::Reconnect { .. } => ("ttfb_p50_us", true, "µs to the answer"),
            Scenario::Idle { .. } => ("server_kib_per_conn", true, "KiB per connection"),
        };
        // Scaling rows compare like with like: the same cores.
        let groups: Vec<Vec<usize>> = mine.iter().fold(Vec::new(), |mut v, r| {
            if !v.contains(&r.server_cpus) {
                v.push(r.server_cpus.clone());
            }
            v
        });
        for cpus in groups {
            let same: Vec<&&Row> = mine.iter().filter(|r| r.server_cpus == cpus).collect();
            let better = |a: f64, b: f64| if lower { a < b } else { a > b };
            let Some(best) = same
                .iter()
                .filter(|r| matches!(r.subject, Subject::Stoq { .. }))
                .filter_map(|r| Some((r, r.m(key)?)))
                .reduce(|x, y| if better(y.1, x.1) { y } else { x })
            else {
                continue;
            };
            for p in same
                .iter()
                .filter(|r| !matches!(r.subject, Subject::Stoq { .. }))
            {
                let Some(v) = p.m(key) else { continue };
                if better(v, best.1) {
                    let cores = if groups_len(&mine) > 1 {
                        format!(" ({} server cores)", cpus.len())
                    } else {
                        String::new()
                    };
                    out.push(format!(
                        "**{t}{cores}:** {} {v:.2} {unit} against STOQ's best ({}) {:.2}{}.",
                        p.label,
                        best.0.label,
                        best.1,
                        if p.subject.encrypts() {
                            ""
                        } else {
                            " (a peer without encryption)"
                        }
                    ));
                }
            }
        }
    }
    out
}

fn groups_len(rows: &[&Row]) -> usize {
    let mut v: Vec<&Vec<usize>> = Vec::new();
    for r in rows {
        if !v.contains(&&r.server_cpus) {
            v.push(&r.server_cpus);
        }
    }
    v.len()
}

/// What held each bulk subject back, from each side's CPU use.
fn bottleneck(row: &Row, aead: Option<f64>) -> String {
    let sc = row.server_cpus.len() as f64;
    let cc = row.client_cpus.len() as f64;
    let (Some(s), Some(c)) = (row.m("server_cores_busy"), row.m("client_cores_busy")) else {
        return "—".into();
    };
    let mut why = if c >= 0.85 * cc && c >= s * cc / sc {
        format!("sender CPU ({:.0} % of its cores)", 100.0 * c / cc)
    } else if s >= 0.85 * sc {
        format!("receiver CPU ({:.0} %)", 100.0 * s / sc)
    } else {
        format!(
            "neither side's CPU saturated (sender {:.0} %, receiver {:.0} %): the I/O path or flow control",
            100.0 * c / cc,
            100.0 * s / sc
        )
    };
    if let (Some(a), Some(g)) = (aead, row.m("gbps"))
        && row.subject.encrypts()
        && g >= 0.7 * a
    {
        let _ = write!(why, "; at {:.0} % of the AEAD ceiling", 100.0 * g / a);
    }
    why
}

impl Report {
    /// Reads a `report.json` written by [`Report::write`] back (to render it again).
    pub(crate) fn from_json(text: &str) -> Result<Self, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let field = |k: &str| v.get(k).cloned().ok_or(format!("report.json has no `{k}`"));
        let num = |a: &str, b: &str| {
            v.get(a)
                .and_then(|x| x.get(b))
                .and_then(serde_json::Value::as_u64)
        };
        Ok(Self {
            machine: serde_json::from_value(field("machine")?).map_err(|e| e.to_string())?,
            ceilings: serde_json::from_value(field("ceilings")?).map_err(|e| e.to_string())?,
            runs: serde_json::from_value(field("runs")?).map_err(|e| e.to_string())?,
            seconds: field("seconds")?.as_f64().unwrap_or(0.0),
            delay_ms: num("bottleneck", "one_way_delay_ms").unwrap_or(0),
            rate_mbit: num("bottleneck", "rate_mbit").unwrap_or(0) as u32,
        })
    }

    fn aead(&self, suite: &str) -> Option<f64> {
        self.ceilings
            .aead_gbps
            .iter()
            .find(|(s, _)| s == suite)
            .map(|x| x.1)
    }

    /// Writes report.json, report.md and the charts into `dir`; returns the Markdown.
    pub(crate) fn write(&self, dir: &Path) -> Result<String, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let rows = rows(&self.runs);
        let json = serde_json::json!({
            "machine": self.machine,
            "ceilings": self.ceilings,
            "seconds": self.seconds,
            "bottleneck": { "rate_mbit": self.rate_mbit, "one_way_delay_ms": self.delay_ms },
            "summary": rows,
            "runs": self.runs,
        });
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let charts = charts::draw(dir, &rows);
        let md = self.markdown(&rows, &charts);
        std::fs::write(dir.join("report.md"), &md).map_err(|e| e.to_string())?;
        Ok(md)
    }

    fn find<'a>(rows: &'a [Row], title: &str, label: &str) -> Option<&'a Row> {
        rows.iter()
            .find(|r| r.title.starts_with(title) && r.label == label)
    }

    /// The path's round trip in this run: raw UDP's request/response p50, µs.
    fn raw_udp_rtt(rows: &[Row]) -> Option<f64> {
        rows.iter()
            .find(|r| r.label == "raw UDP" && r.m("p50_us").is_some())
            .and_then(|r| r.m("p50_us"))
    }

    /// STOQ's best subject through the async API on the engine's threads (neither a worker
    /// handler nor the cross-thread path).
    fn best_async<'a>(rows: &'a [Row], title: &str, key: &str, lower: bool) -> Option<&'a Row> {
        rows.iter()
            .filter(|r| {
                r.title.starts_with(title)
                    && matches!(
                        r.subject,
                        Subject::Stoq {
                            served: true,
                            handler: false,
                            metrics: false,
                            qlog: false,
                            ..
                        }
                    )
                    && r.m(key).is_some()
            })
            .max_by(|a, b| {
                let (x, y) = (a.m(key).unwrap_or(0.0), b.m(key).unwrap_or(0.0));
                if lower {
                    y.total_cmp(&x)
                } else {
                    x.total_cmp(&y)
                }
            })
    }

    fn best<'a>(
        rows: &'a [Row],
        title: &str,
        key: &str,
        stoq: bool,
        lower: bool,
    ) -> Option<&'a Row> {
        rows.iter()
            .filter(|r| {
                r.title.starts_with(title)
                    && matches!(r.subject, Subject::Stoq { .. }) == stoq
                    && r.m(key).is_some()
            })
            .max_by(|a, b| {
                let (x, y) = (a.m(key).unwrap_or(0.0), b.m(key).unwrap_or(0.0));
                if lower {
                    y.total_cmp(&x)
                } else {
                    x.total_cmp(&y)
                }
            })
    }

    #[allow(clippy::too_many_lines)]
    fn markdown(&self, rows: &[Row], charts: &[String]) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# stoq-bench report{}\n",
            if m.quick {
                " (--quick: a smoke run, too short to judge speed)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "- Command: `{}`; {:.0} s in all.\n- Machine: {} ({} cores, {:.0} GiB), Linux {}.\n\
             - Software: STOQ {} (AES-GCM and X25519 from aws-lc-rs), quinn {} (rustls {} \
             with ring, quinn's default; the `aws-lc-rs` subject with aws-lc-rs), kernel TCP.\n\
             - Path: two network namespaces joined by a veth pair ({} queue{} per side) unless a \
             table says otherwise. Every server and client is its own process, pinned: the \
             server to the CPUs in the table, the client to the others.\n\
             - Every figure is the median of its runs, with min–max; runs of one table were \
             interleaved (A B C … A B C …), so ratios compare peers measured in the same run.",
            m.command,
            self.seconds,
            m.cpu,
            m.cores,
            m.mem_gib,
            m.kernel,
            m.stoq,
            m.quinn,
            m.rustls,
            m.queues,
            if m.queues == 1 { "" } else { "s" }
        );
        let aes = self.aead("aes256gcm");
        let chacha = self.aead("chacha20poly1305");
        let _ = writeln!(
            s,
            "\n## Ceilings (one core, CPU {})\n\n| Ceiling | Value |\n|---|---|",
            self.ceilings.cpu
        );
        for (suite, g) in &self.ceilings.aead_gbps {
            let _ = writeln!(
                s,
                "| AEAD sealing 1,400-byte packets, {suite} | {g:.2} Gbit/s of plaintext |"
            );
        }
        let _ = writeln!(
            s,
            "| FALCON-512 signing (the server signs once per handshake) | {:.0} /s |",
            self.ceilings.falcon512_signs_per_s
        );

        // Goals.
        let _ = writeln!(s, "\n## Goals\n\n| Goal | Measured | Met |\n|---|---|---|");
        let bulk = "Bulk goodput, 1 connection, 1 stream";
        let best = Self::best(rows, bulk, "gbps", true, false);
        let quinn_d = Self::find(rows, bulk, "quinn (default)").and_then(|r| r.m("gbps"));
        let quinn_t = Self::find(rows, bulk, "quinn (tuned windows)").and_then(|r| r.m("gbps"));
        let raw = Self::find(rows, bulk, "raw UDP").and_then(|r| r.m("gbps"));
        let yes = |b: bool| if b { "yes" } else { "**no**" };
        if let Some(b) = best {
            let g = b.m("gbps").unwrap_or(0.0);
            let q = quinn_d.unwrap_or(0.0).max(quinn_t.unwrap_or(0.0));
            let _ = writeln!(
                s,
                "| Bulk: STOQ's best backend ≥ 2× quinn | {} {:.2} Gbit/s = {} quinn default, {} quinn tuned | {} |",
                b.label,
                g,
                ratio(Some(g), quinn_d),
                ratio(Some(g), quinn_t),
                yes(q > 0.0 && g >= 2.0 * q)
            );
            let floor = match (raw, aes) {
                (Some(r), Some(a)) => Some(r.min(a)),
                (r, a) => r.or(a),
            };
            let _ = writeln!(
                s,
                "| Bulk ≥ 70 % of min(raw UDP, AEAD ceiling) | {:.2} of min({}, {}) = {} | {} |",
                g,
                raw.map_or("—".into(), |r| format!("{r:.2}")),
                aes.map_or("—".into(), |a| format!("{a:.2}")),
                floor.map_or("—".into(), |f| format!("{:.0} %", 100.0 * g / f)),
                yes(floor.is_some_and(|f| g >= 0.7 * f))
            );
        }
        // The async API (served on the workers, the client on its runtime) against quinn.
        for (t, conns) in [
            (bulk, "1 connection"),
            ("Bulk goodput, 8 connections", "8 connections"),
        ] {
            let qd = Self::find(rows, t, "quinn (default)").and_then(|r| r.m("gbps"));
            let qt = Self::find(rows, t, "quinn (tuned windows)").and_then(|r| r.m("gbps"));
            if let Some(b) = Self::best_async(rows, t, "gbps", false) {
                let g = b.m("gbps").unwrap_or(0.0);
                let q = qd.unwrap_or(0.0).max(qt.unwrap_or(0.0));
                let _ = writeln!(
                    s,
                    "| Bulk, {conns}, async API ≥ 2× quinn (default and tuned) | {} {:.2} Gbit/s = {} quinn default, {} quinn tuned | {} |",
                    b.label,
                    g,
                    ratio(Some(g), qd),
                    ratio(Some(g), qt),
                    yes(q > 0.0 && g >= 2.0 * q)
                );
            }
        }
        if let (Some(b), Some(q)) = (
            Self::best_async(rows, bulk, "gbps", false),
            Self::find(rows, bulk, "quinn (default)"),
        ) && let (Some(mine), Some(theirs)) = (
            b.m("server_ctx_switches_per_gb"),
            q.m("server_ctx_switches_per_gb"),
        ) {
            let _ = writeln!(
                s,
                "| Bulk: server context switches per GB ≤ quinn's | {} {mine:.0} vs {theirs:.0} | {} |",
                b.label,
                yes(mine <= theirs)
            );
        }
        let rr = "Request/response";
        let raw_rr = Self::find(rows, rr, "raw UDP").and_then(|r| r.m("p50_us"));
        let quinn_rr = Self::find(rows, rr, "quinn (default)").and_then(|r| r.m("p50_us"));
        if let (Some(b), Some(r)) = (Self::best(rows, rr, "p50_us", true, true), raw_rr) {
            let p = b.m("p50_us").unwrap_or(0.0);
            let _ = writeln!(
                s,
                "| Request p50 ≤ 1.3× raw-UDP ping-pong | {} {p:.1} µs vs {r:.1} µs = {:.2}× | {} |",
                b.label,
                p / r,
                yes(p <= 1.3 * r)
            );
        }
        if let (Some(b), Some(r)) = (Self::best_async(rows, rr, "p50_us", true), raw_rr) {
            let p = b.m("p50_us").unwrap_or(0.0);
            let _ = writeln!(
                s,
                "| Request p50 through the async API ≤ 1.3× raw UDP | {} {p:.1} µs vs {r:.1} µs = {:.2}× | {} |",
                b.label,
                p / r,
                yes(p <= 1.3 * r)
            );
            if let Some(q) = quinn_rr {
                let _ = writeln!(
                    s,
                    "| Request p50 through the async API ≤ 0.8× quinn's | {p:.1} µs vs {q:.1} µs = {:.2}× | {} |",
                    p / q,
                    yes(p <= 0.8 * q)
                );
            }
        }
        // What observability costs: the same subject with the server writing qlog for
        // every connection and its metrics scraped every 100 ms.
        for (title, key, what, lower, unit) in [
            (bulk, "gbps", "bulk goodput", false, "Gbit/s"),
            (rr, "p50_us", "request p50", true, "µs"),
        ] {
            let off = Self::find(rows, title, "STOQ udp").and_then(|r| r.m(key));
            let on = Self::find(rows, title, "STOQ udp, metrics scraped, qlog on")
                .and_then(|r| r.m(key));
            if let (Some(off), Some(on)) = (off, on) {
                let cost = if lower {
                    on / off - 1.0
                } else {
                    1.0 - on / off
                };
                let _ = writeln!(
                    s,
                    "| With qlog and metrics on, {what} within 5 % of them off (STOQ udp) | {on:.2} vs {off:.2} {unit}: {:+.1} % | {} |",
                    100.0 * cost,
                    yes(cost <= 0.05)
                );
            }
        }
        let scaling = "Core scaling";
        let stoq_at = |k: usize| {
            rows.iter()
                .find(|r| {
                    r.title.starts_with(scaling)
                        && matches!(r.subject, Subject::Stoq { .. })
                        && r.server_cpus.len() == k
                })
                .and_then(|r| r.m("gbps"))
        };
        if let (Some(one), Some(two)) = (stoq_at(1), stoq_at(2)) {
            let _ = writeln!(
                s,
                "| 8 connections: a 2-worker server ≥ a 1-worker server | {two:.2} vs {one:.2} Gbit/s = {:.2}× | {} |",
                two / one,
                yes(two >= one)
            );
        }
        if let (Some(b), Some(q)) = (
            Self::best(rows, "Full handshakes, sequential", "hs_per_s", true, false),
            Self::find(rows, "Full handshakes, sequential", "quinn (default)")
                .and_then(|r| r.m("hs_per_s")),
        ) {
            let h = b.m("hs_per_s").unwrap_or(0.0);
            let _ = writeln!(
                s,
                "| Sequential post-quantum handshakes ≥ 2× quinn's classical rate | {h:.0}/s vs {q:.0}/s = {:.2}× | {} |",
                h / q,
                yes(h >= 2.0 * q)
            );
        }
        if let Some(b) = Self::best(rows, "Full handshakes", "hs_per_s", true, false) {
            let h = b.m("hs_per_s").unwrap_or(0.0);
            let lim = self.ceilings.falcon512_signs_per_s;
            let _ = writeln!(
                s,
                "| Handshakes/s within 1.3× of the signature-bound limit | {h:.0}/s ({}) vs {lim:.0} signatures/s: limit is {:.2}× | {} |",
                b.title
                    .trim_start_matches("Full handshakes, ")
                    .trim_end_matches(", one server core"),
                lim / h,
                yes(lim <= 1.3 * h)
            );
        }
        // Issue 19: the server's cost of a post-quantum handshake against quinn's classical
        // one and the rate, at 8 in flight; resumption, one at a time and at 8 in flight.
        const FULL8: &str = "Full handshakes, 8 in flight";
        const RES8: &str = "Resumed handshakes, 8 in flight";
        // STOQ as shipped (batch signing on), not the comparison subject.
        let stoq_full_in = |title| {
            Self::find(rows, title, "STOQ udp")
                .or_else(|| Self::best(rows, title, "hs_per_s", true, false))
        };
        let stoq_full = stoq_full_in(FULL8);
        let quinn_full = Self::find(rows, FULL8, "quinn (default)");
        if let (Some(b), Some(q)) = (stoq_full, quinn_full) {
            if let (Some(c), Some(qc)) = (b.m("server_cpu_us_per_hs"), q.m("server_cpu_us_per_hs"))
            {
                let _ = writeln!(
                    s,
                    "| Server CPU per full post-quantum handshake (8 in flight) ≤ quinn's classical | {c:.0} µs vs {qc:.0} µs = {:.2}× | {} |",
                    c / qc,
                    yes(c <= qc)
                );
            }
            if let (Some(h), Some(qh)) = (b.m("hs_per_s"), q.m("hs_per_s")) {
                let _ = writeln!(
                    s,
                    "| Full handshakes/s (8 in flight) ≥ quinn's | {h:.0}/s vs {qh:.0}/s = {:.2}× | {} |",
                    h / qh,
                    yes(h >= qh)
                );
            }
        }
        // Resumption against full handshakes, one at a time and 8 in flight: at 8 in flight
        // batch signing takes most of the signature out of a full handshake's cost, so the
        // two kinds differ by less there.
        for (full_title, res_title) in [
            (
                "Full handshakes, sequential",
                "Resumed handshakes, sequential",
            ),
            (FULL8, RES8),
        ] {
            let how = res_title.trim_start_matches("Resumed handshakes, ");
            let stoq_res =
                Self::best(rows, res_title, "hs_per_s", true, false).and_then(|r| r.m("hs_per_s"));
            let stoq_full_rate = stoq_full_in(full_title).and_then(|r| r.m("hs_per_s"));
            let quinn_full_rate =
                Self::find(rows, full_title, "quinn (default)").and_then(|r| r.m("hs_per_s"));
            if let (Some(r), Some(f), Some(qf)) = (stoq_res, stoq_full_rate, quinn_full_rate) {
                let _ = writeln!(
                    s,
                    "| Resumed handshakes/s ({how}) ≥ 1.5× STOQ's full and ≥ quinn's full | {r:.0}/s: {:.2}× STOQ full ({f:.0}/s), {:.2}× quinn full ({qf:.0}/s) | {} |",
                    r / f,
                    r / qf,
                    yes(r >= 1.5 * f && r >= qf)
                );
            }
        }
        // A 0-RTT request completes in one round trip: its answer arrives with the server's
        // handshake flight, so it comes less than half a round trip after a 1-RTT handshake
        // alone completes (a request that needed a second round trip would come a whole one
        // later). The round trip: raw UDP's request/response in the same run, or, in a run
        // without it, what a 1-RTT request adds to its handshake.
        let zero = Self::find(rows, "Reconnect", "STOQ udp, 0-RTT");
        let one = Self::find(rows, "Reconnect", "STOQ udp, 1-RTT");
        let early = zero.and_then(|r| r.m("ttfb_p50_us"));
        let hs_alone = one.and_then(|r| r.m("handshake_p50_us"));
        let rtt = Self::raw_udp_rtt(rows)
            .map(|t| (t, "raw UDP's request/response"))
            .or_else(|| {
                let a = one.and_then(|r| r.m("ttfb_p50_us"))?;
                Some((
                    a - hs_alone?,
                    "a 1-RTT request's answer after its handshake",
                ))
            });
        if let (Some(a), Some(h), Some((t, what))) = (early, hs_alone, rtt) {
            let _ = writeln!(
                s,
                "| A 0-RTT request completes in one round trip: its answer comes < ½ round trip after a 1-RTT handshake alone | {a:.0} µs vs {h:.0} µs: {:+.0} µs, {:.2} of a round trip ({t:.0} µs, {what}) | {} |",
                a - h,
                (a - h) / t,
                yes(a - h < 0.5 * t)
            );
        }
        for r in rows.iter().filter(|r| r.title.starts_with("Idle")) {
            if !matches!(r.subject, Subject::Stoq { .. }) {
                continue;
            }
            let quinn = Self::find(rows, &r.title, "quinn (default)")
                .and_then(|x| x.m("server_kib_per_conn"));
            if let (Some(mine), Some(q)) = (r.m("server_kib_per_conn"), quinn) {
                let _ = writeln!(
                    s,
                    "| {}: server memory per connection ≤ quinn's | {mine:.2} vs {q:.2} KiB | {} |",
                    r.title
                        .trim_start_matches("Idle connections: memory per connection at "),
                    yes(mine <= q)
                );
            }
        }

        let _ = writeln!(s, "\n## Where STOQ trails\n");
        let trails = trailing(rows);
        if trails.is_empty() {
            let _ = writeln!(
                s,
                "Nowhere in this run: STOQ's best backend leads every peer in every table."
            );
        }
        for t in trails {
            let _ = writeln!(s, "- {t}");
        }

        // Tables, in plan order.
        let mut titles: Vec<&str> = Vec::new();
        for r in rows {
            if !titles.contains(&r.title.as_str()) {
                titles.push(&r.title);
            }
        }
        for t in titles {
            let mine: Vec<&Row> = rows.iter().filter(|r| r.title == t).collect();
            let Some(first) = mine.first() else { continue };
            let run0 = self.runs.iter().find(|r| r.title == t);
            let _ = writeln!(
                s,
                "\n## {t}\n\nPath: {}; {} runs per subject.\n",
                run0.map_or(String::new(), |r| {
                    if r.path.contains("MTU") {
                        r.path.clone()
                    } else {
                        format!("{}; MTU {}", r.path, first.mtu)
                    }
                }),
                first.runs
            );
            let kind = run0.map(|r| r.scenario);
            match kind {
                Some(Scenario::Bulk { .. }) if t.starts_with("Core scaling") => {
                    let _ = writeln!(
                        s,
                        "| Subject | How it ran | Server | Client | Gbit/s | Min–max | × its 1-core figure |\n|---|---|---|---|---|---|---|"
                    );
                    for r in &mine {
                        let one = mine
                            .iter()
                            .find(|x| x.label == r.label && x.server_cpus.len() == 1)
                            .and_then(|x| x.m("gbps"));
                        let (med, mm) = spread(r, "gbps", 2);
                        let _ = writeln!(
                            s,
                            "| {} | {} | {} | {} | {med} | {mm} | {} |",
                            r.label,
                            r.backend,
                            cores(&r.server_cpus),
                            cores(&r.client_cpus),
                            ratio(r.m("gbps"), one)
                        );
                    }
                    if mine
                        .iter()
                        .any(|r| r.server_cpus.iter().any(|c| r.client_cpus.contains(c)))
                    {
                        let _ = writeln!(
                            s,
                            "\nWhere server and client CPUs overlap, both sides share those cores: on this \
                             machine that is the only way past one core per side."
                        );
                    }
                }
                Some(Scenario::Bulk { .. }) => {
                    let _ = writeln!(
                        s,
                        "| Subject | How it ran | Cores (server / client) | Gbit/s | Min–max | × quinn | × quinn tuned | × TCP CUBIC | × raw UDP | % of AEAD ceiling | CPU s/GB server | CPU s/GB client | Context switches/GB server | client | Bottleneck |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
                    );
                    let peer =
                        |l: &str| mine.iter().find(|r| r.label == l).and_then(|r| r.m("gbps"));
                    for r in &mine {
                        let (med, mm) = spread(r, "gbps", 2);
                        let ceiling = match &r.subject {
                            Subject::Stoq { suite, .. } if suite == "chacha20poly1305" => chacha,
                            Subject::Stoq { .. } | Subject::Quinn { .. } => aes,
                            _ => None,
                        };
                        let g = r.m("gbps");
                        let _ = writeln!(
                            s,
                            "| {} | {med} | {mm} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                            r.who(),
                            ratio(g, peer("quinn (default)")),
                            ratio(g, peer("quinn (tuned windows)")),
                            ratio(g, peer("TCP CUBIC")),
                            ratio(g, peer("raw UDP")),
                            match (g, ceiling) {
                                (Some(g), Some(c)) => format!("{:.0} %", 100.0 * g / c),
                                _ => "—".into(),
                            },
                            spread(r, "server_cpu_s_per_gb", 2).0,
                            spread(r, "client_cpu_s_per_gb", 2).0,
                            cell(r, "server_ctx_switches_per_gb", 0),
                            cell(r, "client_ctx_switches_per_gb", 0),
                            bottleneck(r, ceiling)
                        );
                    }
                    if let Some(l) = mine.iter().find_map(|r| r.m("loss")) {
                        let _ = writeln!(
                            s,
                            "\nRaw UDP has no flow control: its sender blasts, the figure is what arrived \
                             ({:.1} % of datagrams lost).",
                            100.0 * l
                        );
                    }
                }
                Some(Scenario::Shaped { .. }) => {
                    let _ = writeln!(
                        s,
                        "| Subject | How it ran | Cores (server / client) | Gbit/s | Min–max | Base RTT ms | RTT p50 under load ms | p99 ms | RTT inflation | Bottleneck drops |\n|---|---|---|---|---|---|---|---|---|---|"
                    );
                    for r in &mine {
                        let (med, mm) = spread(r, "gbps", 3);
                        let _ = writeln!(
                            s,
                            "| {} | {med} | {mm} | {} | {} | {} | {}× | {} |",
                            r.who(),
                            spread(r, "base_rtt_ms", 2).0,
                            spread(r, "rtt_p50_ms", 2).0,
                            spread(r, "rtt_p99_ms", 2).0,
                            spread(r, "rtt_inflation", 2).0,
                            spread(r, "bottleneck_drops", 0).0
                        );
                    }
                    let _ = writeln!(
                        s,
                        "\nThe RTT is a 10 ms UDP probe through the same queue as the transfer; inflation \
                         is its median under load over its median on the idle path."
                    );
                }
                Some(Scenario::Rr { .. }) => {
                    let raw = mine
                        .iter()
                        .find(|r| r.label == "raw UDP")
                        .and_then(|r| r.m("p50_us"));
                    let _ = writeln!(
                        s,
                        "| Subject | How it ran | Cores (server / client) | p50 µs | Min–max | p99 µs | p99.9 µs | Requests/s | p50 × raw UDP | p50 × quinn | Context switches per request, server | client | CPU µs per request, server | client |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
                    );
                    let quinn = mine
                        .iter()
                        .find(|r| r.label == "quinn (default)")
                        .and_then(|r| r.m("p50_us"));
                    for r in &mine {
                        let (med, mm) = spread(r, "p50_us", 1);
                        let _ = writeln!(
                            s,
                            "| {} | {med} | {mm} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                            r.who(),
                            spread(r, "p99_us", 1).0,
                            spread(r, "p999_us", 1).0,
                            spread(r, "rps", 0).0,
                            ratio(r.m("p50_us"), raw),
                            ratio(r.m("p50_us"), quinn),
                            cell(r, "server_ctx_switches_per_req", 2),
                            cell(r, "client_ctx_switches_per_req", 2),
                            cell(r, "server_cpu_us_per_req", 1),
                            cell(r, "client_cpu_us_per_req", 1)
                        );
                    }
                    let _ = writeln!(
                        s,
                        "\nContext switches and CPU per request count each side's whole process over \
                         the measured round trips (the server's from its start-up on, so its figure \
                         includes the handshake)."
                    );
                }
                Some(Scenario::Handshakes { resumed, .. }) => {
                    let quinn = mine
                        .iter()
                        .find(|r| r.label.starts_with("quinn"))
                        .and_then(|r| r.m("hs_per_s"));
                    let _ = writeln!(
                        s,
                        "| Subject | How it ran | Cores (server / client) | Key exchange / signature | Handshakes/s | Min–max | Server CPU µs per handshake | Client CPU µs per handshake | Bound by | Resumed | × quinn | Signature-bound limit ÷ rate |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
                    );
                    for r in &mine {
                        let (med, mm) = spread(r, "hs_per_s", 0);
                        let stoq = matches!(r.subject, Subject::Stoq { .. });
                        let tls = matches!(r.subject, Subject::Tls { .. });
                        let composite = matches!(
                            r.subject,
                            Subject::Stoq {
                                composite: true,
                                ..
                            }
                        );
                        let kx = match (stoq, resumed) {
                            (true, false) if composite => {
                                "X25519 + ML-KEM-768 / FALCON-512 + Ed25519"
                            }
                            (true, false) => "X25519 + ML-KEM-768 / FALCON-512",
                            (true, true) => "X25519 + ML-KEM-768 / ticket PSK",
                            (false, false) => "X25519 / ECDSA P-256 (rustls default)",
                            (false, true) => "X25519 / ticket PSK (rustls)",
                        };
                        let lim = if stoq && !resumed {
                            ratio(Some(self.ceilings.falcon512_signs_per_s), r.m("hs_per_s"))
                        } else {
                            "—".into()
                        };
                        // The side whose core is busier bounds the rate.
                        let bound = match (r.m("server_busy"), r.m("client_busy")) {
                            (Some(sv), Some(cl)) if sv >= cl => {
                                format!("server ({:.0} % of a core)", sv * 100.0)
                            }
                            (Some(_), Some(cl)) => {
                                format!("client ({:.0} % of a core)", cl * 100.0)
                            }
                            _ => "—".into(),
                        };
                        let share = match (stoq || tls, resumed, r.m("resumed_pct")) {
                            (true, true, Some(p)) => format!("{p:.1} %"),
                            (true, true, None) => "0 %".into(),
                            (false, true, _) => "not reported by quinn".into(),
                            _ => "—".into(),
                        };
                        let _ = writeln!(
                            s,
                            "| {} | {kx} | {med} | {mm} | {} | {} | {bound} | {share} | {} | {lim} |",
                            r.who(),
                            spread(r, "server_cpu_us_per_hs", 0).0,
                            spread(r, "client_cpu_us_per_hs", 0).0,
                            ratio(r.m("hs_per_s"), quinn)
                        );
                    }
                    let _ = writeln!(
                        s,
                        "\nThe client connects, completes the handshake and closes, again and again (in \
                         parallel where the title says so); the server runs on one core. Server CPU per \
                         handshake is its CPU time over the run (start-up excluded) over the handshakes: \
                         crypto, packets, system calls, connection state and closing."
                    );
                    if resumed {
                        let _ = writeln!(
                            s,
                            "\nResumed: each client holds its session tickets (STOQ's cache; rustls' \
                             in-memory store for quinn), primed by full handshakes before the run, and \
                             closes each connection once its next one is up, so that the tickets sent \
                             after every handshake arrive. STOQ's resumed handshakes still run the \
                             hybrid key exchange (forward secrecy) but sign nothing; \"How it ran\" \
                             says what share of STOQ's connections resumed."
                        );
                    }
                }
                Some(Scenario::Reconnect { .. }) => {
                    // The path's round trip, from the same run: raw UDP's request/response.
                    let rtt = Self::raw_udp_rtt(rows);
                    let _ = writeln!(
                        s,
                        "| Subject | How it ran | Cores (server / client) | Answer p50 µs | Min–max | p99 µs | Handshake alone p50 µs | Answer ÷ 1-RTT handshake | Early data accepted | Reconnects/s | Server CPU µs per connection | 0-RTT saves, µs | Saving ÷ raw-UDP round trip |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
                    );
                    for r in &mine {
                        let (med, mm) = spread(r, "ttfb_p50_us", 1);
                        let early = r.label.ends_with("0-RTT");
                        let one_rtt = mine
                            .iter()
                            .find(|x| x.label == r.label.replace("0-RTT", "1-RTT"));
                        let hs = one_rtt.and_then(|x| x.m("handshake_p50_us"));
                        let (hs_cell, per_hs) = if early {
                            ("—".into(), ratio(r.m("ttfb_p50_us"), hs))
                        } else {
                            (
                                cell(r, "handshake_p50_us", 1),
                                ratio(r.m("ttfb_p50_us"), hs),
                            )
                        };
                        let (saves, per_rtt) = if early {
                            let other = one_rtt.and_then(|x| x.m("ttfb_p50_us"));
                            match (other, r.m("ttfb_p50_us")) {
                                (Some(a), Some(b)) => (
                                    format!("{:.1}", a - b),
                                    rtt.map_or("—".into(), |t| format!("{:.2}", (a - b) / t)),
                                ),
                                _ => ("—".into(), "—".into()),
                            }
                        } else {
                            ("—".into(), "—".into())
                        };
                        let accepted = if early {
                            format!("{:.1} %", r.m("early_pct").unwrap_or(0.0))
                        } else {
                            "—".into()
                        };
                        let _ = writeln!(
                            s,
                            "| {} | {med} | {mm} | {} | {hs_cell} | {per_hs} | {accepted} | {} | {} | {saves} | {per_rtt} |",
                            r.who(),
                            spread(r, "ttfb_p99_us", 1).0,
                            spread(r, "reconnects_per_s", 0).0,
                            spread(r, "server_cpu_us_per_conn", 0).0
                        );
                    }
                    let _ = writeln!(
                        s,
                        "\nA returning client reconnects (resuming from a ticket), sends a 64-byte \
                         request on a new stream and reads the 64-byte answer, again and again, one \
                         at a time; the time is from the start of the connect to the answer. 0-RTT: \
                         the request goes with the first flight as early data (STOQ's \
                         `connect_early`, quinn's `into_0rtt`) and the server answers at once \
                         (0.5-RTT); 1-RTT: after the handshake. A 0-RTT request completes in one \
                         round trip when its answer arrives with the server's handshake flight: less \
                         than half a round trip after a 1-RTT handshake alone completes \
                         (\"Handshake alone\": the 1-RTT connect, measured in the same loop; \
                         \"Answer ÷ 1-RTT handshake\" near 1), where a request that needed a \
                         second round trip would come a whole one later. \"0-RTT saves\" is the \
                         1-RTT answer's time less the 0-RTT one's, also shown in raw-UDP \
                         request/response round trips of the same run. \"Early data accepted\" is \
                         the share of 0-RTT connections whose early data the server read."
                    );
                }
                Some(Scenario::Idle { .. }) => {
                    let _ = writeln!(
                        s,
                        "| Subject | How it ran | Cores (server / client) | Server KiB per connection | Min–max | Client KiB per connection | Opened per second |\n|---|---|---|---|---|---|---|"
                    );
                    for r in &mine {
                        let (med, mm) = spread(r, "server_kib_per_conn", 2);
                        let _ = writeln!(
                            s,
                            "| {} | {med} | {mm} | {} | {} |",
                            r.who(),
                            spread(r, "client_kib_per_conn", 2).0,
                            spread(r, "opened_per_s", 0).0
                        );
                    }
                    let _ = writeln!(
                        s,
                        "\nServer: growth of its resident memory from before the first connection to all \
                         of them open, divided by their number. Client: its whole resident memory divided \
                         by the connections (an upper bound)."
                    );
                }
                None => {}
            }
        }
        if !charts.is_empty() {
            let _ = writeln!(s, "\n## Charts\n");
            for c in charts {
                let _ = writeln!(s, "![{c}]({c})");
            }
        }
        let failed: Vec<&Run> = self.runs.iter().filter(|r| r.error.is_some()).collect();
        if !failed.is_empty() {
            let _ = writeln!(s, "\n## Failed runs\n");
            for r in failed {
                let _ = writeln!(
                    s,
                    "- {} / {} rep {}: {}",
                    r.title,
                    r.label,
                    r.rep + 1,
                    r.error.as_deref().unwrap_or("")
                );
            }
        }
        s
    }
}

pub(crate) mod charts {
    //! SVG charts with plotters.

    use std::path::Path;

    use plotters::prelude::*;

    use super::Row;
    use crate::spec::Scenario;

    const COLORS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];

    /// Draws what the rows allow; returns the files written.
    pub(crate) fn draw(dir: &Path, rows: &[Row]) -> Vec<String> {
        let mut out = Vec::new();
        let mut go = |name: &str, r: Result<(), String>| match r {
            Ok(()) => out.push(name.to_string()),
            Err(e) => eprintln!("stoq-bench: chart {name}: {e}"),
        };
        let bulk: Vec<&Row> = rows
            .iter()
            .filter(|r| r.title.starts_with("Bulk goodput, 1 connection, 1 stream"))
            .collect();
        if !bulk.is_empty() {
            go("goodput.svg", goodput(&dir.join("goodput.svg"), &bulk));
        }
        let rr: Vec<&Row> = rows
            .iter()
            .filter(|r| {
                r.median_run
                    .as_ref()
                    .is_some_and(|m| matches!(m.scenario, Scenario::Rr { .. }))
            })
            .collect();
        if !rr.is_empty() {
            go("latency_cdf.svg", cdf(&dir.join("latency_cdf.svg"), &rr));
        }
        let sc: Vec<&Row> = rows
            .iter()
            .filter(|r| r.title.starts_with("Core scaling"))
            .collect();
        if !sc.is_empty() {
            go("scaling.svg", scaling(&dir.join("scaling.svg"), &sc));
        }
        out
    }

    fn e<E: std::fmt::Debug>(e: E) -> String {
        format!("{e:?}")
    }

    fn goodput(path: &Path, rows: &[&Row]) -> Result<(), String> {
        let root = SVGBackend::new(path, (900, 60 + 34 * rows.len() as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let max = rows
            .iter()
            .filter_map(|r| r.metrics.get("gbps").map(|s| s.max))
            .fold(1.0f64, f64::max)
            * 1.1;
        let n = rows.len() as i32;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Bulk goodput, 1 connection (median, min–max), Gbit/s",
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(200)
            .build_cartesian_2d(0.0..max, (0..n).into_segmented())
            .map_err(e)?;
        let labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(rows.len())
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                    labels.get(*i as usize).cloned().unwrap_or_default()
                }
                SegmentValue::Last => String::new(),
            })
            .x_desc("Gbit/s")
            .draw()
            .map_err(e)?;
        for (i, r) in rows.iter().enumerate() {
            let Some(s) = r.metrics.get("gbps") else {
                continue;
            };
            let c = COLORS[i % COLORS.len()];
            let i = i as i32;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(i)),
                        (s.median, SegmentValue::Exact(i + 1)),
                    ],
                    c.mix(0.7).filled(),
                )))
                .map_err(e)?;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![
                        (s.min, SegmentValue::CenterOf(i)),
                        (s.max, SegmentValue::CenterOf(i)),
                    ],
                    BLACK.stroke_width(2),
                )))
                .map_err(e)?;
        }
        root.present().map_err(e)
    }

    fn cdf(path: &Path, rows: &[&Row]) -> Result<(), String> {
        let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let qs: Vec<(&Row, &Vec<f64>)> = rows
            .iter()
            .filter_map(|r| {
                let m = r.median_run.as_ref()?;
                let q = &m.client.as_ref()?.quantiles_us;
                (!q.is_empty()).then_some((*r, q))
            })
            .collect();
        let hi = qs
            .iter()
            .map(|(_, q)| q[(q.len() - 1) * 999 / 1000])
            .fold(10.0f64, f64::max)
            * 1.2;
        let lo = qs
            .iter()
            .map(|(_, q)| q[0])
            .fold(f64::MAX, f64::min)
            .max(1.0)
            * 0.8;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Request/response latency CDF, 64-byte messages (median run)",
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("latency, µs (log scale)")
            .y_desc("fraction of requests")
            .draw()
            .map_err(e)?;
        for (i, (r, q)) in qs.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            let n = (q.len() - 1) as f64;
            chart
                .draw_series(LineSeries::new(
                    q.iter()
                        .enumerate()
                        .map(|(j, &v)| (v.max(lo), j as f64 / n)),
                    c.stroke_width(2),
                ))
                .map_err(e)?
                .label(r.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)
    }

    fn scaling(path: &Path, rows: &[&Row]) -> Result<(), String> {
        let root = SVGBackend::new(path, (700, 450)).into_drawing_area();
        root.fill(&WHITE).map_err(e)?;
        let maxk = rows.iter().map(|r| r.server_cpus.len()).max().unwrap_or(1);
        let maxg = rows
            .iter()
            .filter_map(|r| r.metrics.get("gbps").map(|s| s.max))
            .fold(1.0f64, f64::max)
            * 1.2;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Goodput by cores per side, 8 connections",
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.5..maxk as f64 + 0.5, 0.0..maxg)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_labels(maxk)
            .x_desc("cores per side")
            .y_desc("Gbit/s")
            .draw()
            .map_err(e)?;
        let mut labels: Vec<&str> = Vec::new();
        for r in rows {
            if !labels.contains(&r.label.as_str()) {
                labels.push(&r.label);
            }
        }
        for (i, l) in labels.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.label == *l)
                .filter_map(|r| Some((r.server_cpus.len() as f64, r.metrics.get("gbps")?.median)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(e)?
                .label(l.to_string())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))
                .map_err(e)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)
    }
}
