//! An endpoint's counters for Prometheus: [`Metrics`].
//!
//! Nothing is counted twice and nothing is counted on the packet path for this: a scrape
//! reads the counters STOQ keeps anyway (each worker's endpoint and transport totals,
//! each worker's handoffs and backend counters, the XDP program's per-CPU verdicts) and
//! writes them in the Prometheus text format (version 0.0.4), through the `prometheus`
//! crate's data model and encoder. A scrape costs one call onto each worker (the same as
//! [`Endpoint::worker_stats`](crate::Endpoint::worker_stats)) and a pass over its live
//! connections.
//!
//! Three ways to reach them:
//! - [`Metrics::render`]: the text, for an application's own HTTP server;
//! - [`Metrics`] is a [`prometheus::core::Collector`]: register it in the application's
//!   `prometheus::Registry` beside its own metrics;
//! - [`Metrics::serve`]: a minimal HTTP endpoint (`GET /metrics`) on its own thread, what
//!   `stoq server --metrics ADDR` runs.
//!
//! ```no_run
//! # async fn f(endpoint: stoq::Endpoint) -> std::io::Result<()> {
//! let metrics = endpoint.metrics();
//! let _server = metrics.serve("127.0.0.1:9464".parse().unwrap())?; // until dropped
//! print!("{}", metrics.render());
//! # Ok(()) }
//! ```
//!
//! `docs/operations.md` lists every metric.

mod http;

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};
use stoq_common::classify::DropReason;
#[cfg(target_os = "linux")]
use stoq_common::classify::PassReason;

pub use self::http::MetricsServer;
use crate::conn::{EndpointStats, RTT_BUCKETS_US, TransportTotals};
use crate::engine::{Engine, WorkerStats};

/// The metrics of one endpoint (all its workers, and its XDP program when one runs).
/// Cheap to clone; it keeps the endpoint's engine alive while it lives.
///
/// ```no_run
/// # fn f(endpoint: &stoq::Endpoint) -> std::io::Result<()> {
/// let metrics = endpoint.metrics();
/// let _server = metrics.serve("127.0.0.1:9464".parse().unwrap())?; // GET /metrics
/// print!("{}", metrics.render()); // or the text, for a server of your own
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Metrics {
    engine: Arc<Engine>,
    descs: Arc<Vec<Desc>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("families", &self.descs.len())
            .finish_non_exhaustive()
    }
}

/// What one scrape read, per worker.
struct Snapshot {
    workers: Vec<(WorkerStats, EndpointStats, TransportTotals, usize)>,
    #[cfg(target_os = "linux")]
    xdp: Option<crate::xdp::SteerStats>,
}

impl Metrics {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        let descs = FAMILIES
            .iter()
            .filter_map(|f| {
                Desc::new(
                    f.name.to_string(),
                    f.help.to_string(),
                    f.labels.iter().map(|l| (*l).to_string()).collect(),
                    Default::default(),
                )
                .ok()
            })
            .collect();
        Self {
            engine,
            descs: Arc::new(descs),
        }
    }

    /// Every metric family, in the Prometheus text format (version 0.0.4, the content
    /// type in [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec fails only on a malformed family, which `families` never
        // builds (a unit test renders every one).
        let _ = TextEncoder::new().encode(&self.families(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Serves [`render`](Self::render) over HTTP at `addr` (`GET /metrics`), on a thread
    /// of its own, until the returned server is dropped.
    ///
    /// # Errors
    /// The bind error.
    pub fn serve(&self, addr: std::net::SocketAddr) -> std::io::Result<MetricsServer> {
        MetricsServer::start(addr, self.clone())
    }

    fn snapshot(&self) -> Snapshot {
        let workers = self.engine.stats();
        let per_worker = self
            .engine
            .workers
            .iter()
            .zip(workers)
            .map(|(w, ws)| {
                let (es, tt, hs) = w
                    .call(|st| {
                        (
                            st.endpoint.stats(),
                            st.endpoint.transport_totals(),
                            st.endpoint.handshaking(),
                        )
                    })
                    .unwrap_or_default();
                (ws, es, tt, hs)
            })
            .collect();
        Snapshot {
            workers: per_worker,
            #[cfg(target_os = "linux")]
            xdp: self.engine.xdp_stats(),
        }
    }

    /// Every family with its current values.
    fn families(&self) -> Vec<MetricFamily> {
        let snap = self.snapshot();
        let backend = self.engine.info.selection.chosen.name();
        let mut out: Vec<MetricFamily> = FAMILIES
            .iter()
            .map(|f| {
                let mut m = MetricFamily::default();
                m.set_name(f.name.to_string());
                m.set_help(f.help.to_string());
                m.set_field_type(f.kind);
                m
            })
            .collect();
        let mut put = |name: &str, labels: &[(&str, &str)], value: Sample| {
            if let Some(fam) = out.iter_mut().find(|f| f.name() == name) {
                fam.mut_metric().push(metric(labels, value));
            }
        };
        put(
            "stoq_backend_info",
            &[("backend", backend)],
            Sample::Gauge(1.0),
        );
        for (ws, es, tt, handshaking) in &snap.workers {
            let w = ws.worker.to_string();
            let w = w.as_str();
            let c = |v: u64| Sample::Counter(v as f64);
            put(
                "stoq_connections",
                &[("worker", w)],
                Sample::Gauge(ws.connections as f64),
            );
            put(
                "stoq_handshakes_in_progress",
                &[("worker", w)],
                Sample::Gauge(*handshaking as f64),
            );
            put(
                "stoq_memory_bytes",
                &[("worker", w)],
                Sample::Gauge(es.memory as f64),
            );
            put(
                "stoq_connections_accepted_total",
                &[("worker", w)],
                c(es.accepted),
            );
            for (outcome, v) in [
                ("completed", es.handshakes_completed),
                ("failed", es.handshakes_failed),
                ("timed_out", es.handshakes_timed_out),
                ("refused", es.refused),
            ] {
                put(
                    "stoq_handshakes_total",
                    &[("worker", w), ("outcome", outcome)],
                    c(v),
                );
            }
            put(
                "stoq_handshakes_resumed_total",
                &[("worker", w)],
                c(es.handshakes_resumed),
            );
            put(
                "stoq_handshake_signatures_total",
                &[("worker", w)],
                c(es.signatures),
            );
            put(
                "stoq_handshakes_batch_signed_total",
                &[("worker", w)],
                c(es.batch_signed),
            );
            for (outcome, v) in [
                ("sent", es.address_tokens_sent),
                ("accepted", es.address_tokens_accepted),
                ("refused", es.address_tokens_refused),
            ] {
                put(
                    "stoq_address_tokens_total",
                    &[("worker", w), ("outcome", outcome)],
                    c(v),
                );
            }
            for r in crate::handshake::TicketRefusal::ALL {
                put(
                    "stoq_tickets_refused_total",
                    &[("worker", w), ("reason", r.name())],
                    c(es.tickets_refused[r as usize]),
                );
            }
            put(
                "stoq_early_data_accepted_total",
                &[("worker", w)],
                c(es.early_data_accepted),
            );
            for r in crate::handshake::EarlyDataRefusal::ALL {
                put(
                    "stoq_early_data_refused_total",
                    &[("worker", w), ("reason", r.name())],
                    c(es.early_data_refused[r as usize]),
                );
            }
            put(
                "stoq_stun_requests_total",
                &[("worker", w)],
                c(es.stun.requests_sent),
            );
            for (outcome, v) in [("succeeded", es.stun.succeeded), ("failed", es.stun.failed)] {
                put(
                    "stoq_stun_transactions_total",
                    &[("worker", w), ("outcome", outcome)],
                    c(v),
                );
            }
            let t = es.turn;
            for (dir, framing, v) in [
                ("sent", "channel", t.channel_sent),
                ("sent", "indication", t.relayed_sent - t.channel_sent),
                ("received", "channel", t.channel_received),
                (
                    "received",
                    "indication",
                    t.relayed_received - t.channel_received,
                ),
            ] {
                put(
                    "stoq_turn_relayed_datagrams_total",
                    &[("worker", w), ("direction", dir), ("framing", framing)],
                    c(v),
                );
            }
            for (reason, v) in [
                ("dropped", es.turn.dropped),
                ("too_large", es.turn.too_large),
            ] {
                put(
                    "stoq_turn_dropped_total",
                    &[("worker", w), ("reason", reason)],
                    c(v),
                );
            }
            put(
                "stoq_nat_punches_total",
                &[("worker", w)],
                c(es.stun.punches_sent),
            );
            for (reason, v) in [
                ("unsolicited", es.stun.unsolicited),
                ("malformed", es.stun.malformed),
            ] {
                put(
                    "stoq_stun_dropped_total",
                    &[("worker", w), ("reason", reason)],
                    c(v),
                );
            }
            for (dir, bytes, packets, datagrams) in [
                ("tx", tt.tx_bytes, tt.tx_packets, tt.tx_datagrams),
                ("rx", tt.rx_bytes, tt.rx_packets, tt.rx_datagrams),
            ] {
                let l = [("worker", w), ("direction", dir)];
                put("stoq_bytes_total", &l, c(bytes));
                put("stoq_packets_total", &l, c(packets));
                put("stoq_datagrams_total", &l, c(datagrams));
            }
            put(
                "stoq_packets_lost_total",
                &[("worker", w)],
                c(tt.lost_packets),
            );
            put("stoq_bytes_lost_total", &[("worker", w)], c(tt.lost_bytes));
            put(
                "stoq_bytes_retransmitted_total",
                &[("worker", w)],
                c(tt.retransmitted_bytes),
            );
            put("stoq_pto_total", &[("worker", w)], c(tt.pto_count));
            put(
                "stoq_congestion_events_total",
                &[("worker", w)],
                c(tt.congestion_events),
            );
            put(
                "stoq_key_updates_total",
                &[("worker", w)],
                c(tt.key_updates),
            );
            put(
                "stoq_mtu_black_holes_total",
                &[("worker", w)],
                c(tt.mtu_black_holes),
            );
            put("stoq_rtt_seconds", &[("worker", w)], Sample::Rtt(tt.rtt));
            for (kind, v) in [
                ("retry", es.retries_sent),
                ("version_negotiation", es.version_negotiations_sent),
                ("stateless_reset", es.resets_sent),
            ] {
                put(
                    "stoq_stateless_sent_total",
                    &[("worker", w), ("kind", kind)],
                    c(v),
                );
            }
            put(
                "stoq_stateless_resets_received_total",
                &[("worker", w)],
                c(es.resets_received),
            );
            for (reason, v) in endpoint_drops(es, tt) {
                put(
                    "stoq_datagrams_dropped_total",
                    &[("worker", w), ("reason", reason)],
                    c(v),
                );
            }
            for (dir, v) in [("in", ws.handoffs_in), ("out", ws.handoffs_out)] {
                put(
                    "stoq_handoffs_total",
                    &[("worker", w), ("direction", dir)],
                    c(v),
                );
            }
            put(
                "stoq_handoffs_dropped_total",
                &[("worker", w)],
                c(ws.handoffs_dropped),
            );
            let b = &ws.backend;
            for (dir, batches, datagrams) in [
                ("rx", b.rx_batches, b.rx_datagrams),
                ("tx", b.tx_batches, b.tx_datagrams),
            ] {
                let l = [("worker", w), ("backend", backend), ("direction", dir)];
                put("stoq_backend_batches_total", &l, c(batches));
                put("stoq_backend_datagrams_total", &l, c(datagrams));
            }
            put(
                "stoq_backend_send_errors_total",
                &[("worker", w), ("backend", backend)],
                c(b.tx_errors),
            );
            put(
                "stoq_backend_receive_drops_total",
                &[("worker", w), ("backend", backend)],
                c(b.rx_dropped),
            );
        }
        #[cfg(target_os = "linux")]
        if let Some(x) = &snap.xdp {
            let c = |v: u64| Sample::Counter(v as f64);
            put(
                "stoq_xdp_packets_total",
                &[("verdict", "redirected"), ("reason", "stoq")],
                c(x.redirected()),
            );
            put(
                "stoq_xdp_packets_total",
                &[("verdict", "pass"), ("reason", "no_socket")],
                c(x.no_socket()),
            );
            put(
                "stoq_xdp_packets_total",
                &[("verdict", "aborted"), ("reason", "aborted")],
                c(x.aborted()),
            );
            for r in PassReason::ALL {
                put(
                    "stoq_xdp_packets_total",
                    &[("verdict", "pass"), ("reason", r.name())],
                    c(x.passed(r)),
                );
            }
            for r in DropReason::ALL {
                put(
                    "stoq_xdp_packets_total",
                    &[("verdict", "drop"), ("reason", r.name())],
                    c(x.dropped(r)),
                );
            }
            put(
                "stoq_xdp_packets_total",
                &[("verdict", "drop"), ("reason", "oversize")],
                c(x.oversize()),
            );
            put(
                "stoq_xdp_packets_total",
                &[("verdict", "drop"), ("reason", "initial_rate_limited")],
                c(x.initial_limited()),
            );
        }
        if let Some(q) = &self.engine.qlog {
            let s = q.stats();
            let c = |v: u64| Sample::Counter(v as f64);
            put("stoq_qlog_traces_total", &[], c(s.traces));
            put(
                "stoq_qlog_events_total",
                &[("outcome", "written")],
                c(s.written),
            );
            put(
                "stoq_qlog_events_total",
                &[("outcome", "dropped")],
                c(s.dropped),
            );
            put("stoq_qlog_write_errors_total", &[], c(s.write_errors));
        }
        // A family with no sample (the XDP one without a program, qlog off) is left out.
        out.retain(|f| !f.get_metric().is_empty());
        out
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The datagrams an endpoint dropped, by reason, for `stoq_datagrams_dropped_total`.
fn endpoint_drops(es: &EndpointStats, tt: &TransportTotals) -> Vec<(&'static str, u64)> {
    let mut v: Vec<(&'static str, u64)> = DropReason::ALL
        .iter()
        .map(|r| (r.name(), es.malformed[*r as usize]))
        .collect();
    v.extend([
        ("unknown_cid", es.unknown_cid),
        ("unauthenticated_initial", es.unauthenticated_initial),
        ("invalid_token", es.invalid_token),
        ("expired_token", es.expired_token),
        ("token_reused", es.token_reused),
        ("incoming_full", es.incoming_full),
        ("prefix_limited", es.prefix_limited),
        ("response_queue_full", es.responses_dropped),
        ("connection", tt.dropped_packets),
    ]);
    v
}

enum Sample {
    Counter(f64),
    Gauge(f64),
    Rtt(crate::conn::RttHistogram),
}

fn metric(labels: &[(&str, &str)], value: Sample) -> proto::Metric {
    let mut m = proto::Metric::default();
    m.set_label(
        labels
            .iter()
            .map(|(k, v)| {
                let mut l = LabelPair::default();
                l.set_name((*k).to_string());
                l.set_value((*v).to_string());
                l
            })
            .collect(),
    );
    match value {
        Sample::Counter(v) => {
            let mut c = proto::Counter::default();
            c.set_value(v);
            m.set_counter(c);
        }
        Sample::Gauge(v) => {
            let mut g = proto::Gauge::default();
            g.set_value(v);
            m.set_gauge(g);
        }
        Sample::Rtt(h) => {
            let mut out = proto::Histogram::default();
            let mut cumulative = 0;
            out.set_bucket(
                RTT_BUCKETS_US
                    .iter()
                    .zip(h.counts)
                    .map(|(bound, n)| {
                        cumulative += n;
                        let mut b = proto::Bucket::default();
                        b.set_upper_bound(*bound as f64 / 1e6);
                        b.set_cumulative_count(cumulative);
                        b
                    })
                    .collect(),
            );
            out.set_sample_count(h.count());
            out.set_sample_sum(h.sum_us as f64 / 1e6);
            m.set_histogram(out);
        }
    }
    m
}

impl Collector for Metrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.families()
    }
}

/// One metric family: its name, help, type and label names.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
}

const fn family(
    name: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
    help: &'static str,
) -> Family {
    Family {
        name,
        help,
        kind,
        labels,
    }
}

use MetricType::{COUNTER, GAUGE, HISTOGRAM};

/// Every family STOQ exports (`docs/operations.md` lists them for operators).
const FAMILIES: &[Family] = &[
    family(
        "stoq_backend_info",
        GAUGE,
        &["backend"],
        "The I/O backend the endpoint runs on (always 1).",
    ),
    family("stoq_connections", GAUGE, &["worker"], "Live connections."),
    family(
        "stoq_handshakes_in_progress",
        GAUGE,
        &["worker"],
        "Connections whose handshake has neither completed nor failed.",
    ),
    family(
        "stoq_memory_bytes",
        GAUGE,
        &["worker"],
        "Stream data held by the connections (send buffers and reassembly).",
    ),
    family(
        "stoq_connections_accepted_total",
        COUNTER,
        &["worker"],
        "Connections accepted.",
    ),
    family(
        "stoq_handshakes_total",
        COUNTER,
        &["worker", "outcome"],
        "Handshakes by outcome: completed, failed, timed_out, refused.",
    ),
    family(
        "stoq_handshakes_resumed_total",
        COUNTER,
        &["worker"],
        "Completed handshakes that resumed from a session ticket (no certificate, no signature).",
    ),
    family(
        "stoq_handshake_signatures_total",
        COUNTER,
        &["worker"],
        "Server signatures made for full handshakes: one per handshake signed alone, one per batch.",
    ),
    family(
        "stoq_handshakes_batch_signed_total",
        COUNTER,
        &["worker"],
        "Full handshakes authenticated by a batch signature shared with other handshakes.",
    ),
    family(
        "stoq_address_tokens_total",
        COUNTER,
        &["worker", "outcome"],
        "Address tokens (NEW_TOKEN): sent after handshakes, accepted from returning clients (no Retry), refused (treated as none).",
    ),
    family(
        "stoq_tickets_refused_total",
        COUNTER,
        &["worker", "reason"],
        "Completed full handshakes whose offered session ticket was refused, by reason.",
    ),
    family(
        "stoq_early_data_accepted_total",
        COUNTER,
        &["worker"],
        "Handshakes whose early data (0-RTT) was accepted.",
    ),
    family(
        "stoq_early_data_refused_total",
        COUNTER,
        &["worker", "reason"],
        "Handshakes whose early data (0-RTT) was refused, by reason (declined: seen by a client); the data went again at 1-RTT.",
    ),
    family(
        "stoq_stun_requests_total",
        COUNTER,
        &["worker"],
        "STUN Binding requests sent (reflexive address), retransmissions included.",
    ),
    family(
        "stoq_stun_transactions_total",
        COUNTER,
        &["worker", "outcome"],
        "STUN Binding transactions by outcome: succeeded, failed (timed out, error response, unusable answer).",
    ),
    family(
        "stoq_turn_relayed_datagrams_total",
        COUNTER,
        &["worker", "direction", "framing"],
        "Datagrams to and from peers through the TURN relay, by framing: channel (ChannelData, once a channel is bound to the peer), indication (Send and Data indications).",
    ),
    family(
        "stoq_turn_dropped_total",
        COUNTER,
        &["worker", "reason"],
        "TURN traffic dropped: dropped (from the relay: unanswered, bad integrity, no permission, malformed), too_large (no room to wrap a datagram).",
    ),
    family(
        "stoq_nat_punches_total",
        COUNTER,
        &["worker"],
        "Datagrams sent to open the NAT toward a peer that asked to connect (hole punching).",
    ),
    family(
        "stoq_stun_dropped_total",
        COUNTER,
        &["worker", "reason"],
        "STUN messages dropped: unsolicited (no matching transaction, another source, another method), malformed.",
    ),
    family(
        "stoq_bytes_total",
        COUNTER,
        &["worker", "direction"],
        "UDP payload bytes of the connections, sent (tx) and received (rx).",
    ),
    family(
        "stoq_packets_total",
        COUNTER,
        &["worker", "direction"],
        "Packets of the connections, sent and received (authenticated).",
    ),
    family(
        "stoq_datagrams_total",
        COUNTER,
        &["worker", "direction"],
        "Datagrams of the connections, sent and received.",
    ),
    family(
        "stoq_packets_lost_total",
        COUNTER,
        &["worker"],
        "Packets declared lost.",
    ),
    family(
        "stoq_bytes_lost_total",
        COUNTER,
        &["worker"],
        "Bytes in packets declared lost.",
    ),
    family(
        "stoq_bytes_retransmitted_total",
        COUNTER,
        &["worker"],
        "Stream bytes sent again after a loss.",
    ),
    family("stoq_pto_total", COUNTER, &["worker"], "Probe timeouts."),
    family(
        "stoq_congestion_events_total",
        COUNTER,
        &["worker"],
        "Congestion events (window reductions, BBR loss responses).",
    ),
    family(
        "stoq_key_updates_total",
        COUNTER,
        &["worker"],
        "1-RTT key updates.",
    ),
    family(
        "stoq_mtu_black_holes_total",
        COUNTER,
        &["worker"],
        "Path MTU black holes detected.",
    ),
    family(
        "stoq_rtt_seconds",
        HISTOGRAM,
        &["worker"],
        "RTT samples of the connections.",
    ),
    family(
        "stoq_stateless_sent_total",
        COUNTER,
        &["worker", "kind"],
        "Stateless packets sent: retry, version_negotiation, stateless_reset.",
    ),
    family(
        "stoq_stateless_resets_received_total",
        COUNTER,
        &["worker"],
        "Stateless resets received for a connection of this endpoint.",
    ),
    family(
        "stoq_datagrams_dropped_total",
        COUNTER,
        &["worker", "reason"],
        "Datagrams or packets userspace dropped, by reason (header reasons as the XDP program's; connection: dropped inside a connection).",
    ),
    family(
        "stoq_handoffs_total",
        COUNTER,
        &["worker", "direction"],
        "Datagrams handed between workers (in: to this worker; out: from it).",
    ),
    family(
        "stoq_handoffs_dropped_total",
        COUNTER,
        &["worker"],
        "Handoffs dropped because the owner's queue was full.",
    ),
    family(
        "stoq_backend_batches_total",
        COUNTER,
        &["worker", "backend", "direction"],
        "Receive and send batches of the backend.",
    ),
    family(
        "stoq_backend_datagrams_total",
        COUNTER,
        &["worker", "backend", "direction"],
        "Datagrams the backend received and sent.",
    ),
    family(
        "stoq_backend_send_errors_total",
        COUNTER,
        &["worker", "backend"],
        "Datagrams the backend failed to send.",
    ),
    family(
        "stoq_backend_receive_drops_total",
        COUNTER,
        &["worker", "backend"],
        "Datagrams the kernel dropped because the backend did not read them in time \
         (a full socket receive buffer, or a full AF_XDP RX ring or empty fill ring).",
    ),
    family(
        "stoq_xdp_packets_total",
        COUNTER,
        &["verdict", "reason"],
        "Frames the XDP program saw, by verdict (redirected, pass, drop, aborted) and reason.",
    ),
    family(
        "stoq_qlog_traces_total",
        COUNTER,
        &[],
        "Connection qlog traces begun (present while qlog is on).",
    ),
    family(
        "stoq_qlog_events_total",
        COUNTER,
        &["outcome"],
        "qlog events written, or dropped because the writer's queue was full.",
    ),
    family(
        "stoq_qlog_write_errors_total",
        COUNTER,
        &[],
        "qlog files that could not be opened or written.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_described_once() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
        for f in FAMILIES {
            assert!(f.name.starts_with("stoq_"), "{}", f.name);
            assert_eq!(
                f.kind == COUNTER,
                f.name.ends_with("_total"),
                "{}: counters, and only counters, end in _total",
                f.name
            );
            Desc::new(f.name.into(), f.help.into(), vec![], Default::default()).expect(f.name);
        }
    }
}
