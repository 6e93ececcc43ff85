//! qlog: per-connection event traces in the format every QUIC stack writes and qvis reads
//! (draft-ietf-quic-qlog-main-schema, sequential JSON-SEQ, with the QUIC events of
//! draft-ietf-quic-qlog-quic-events), plus STOQ's own events under `stoq:`.
//!
//! Opt-in, per endpoint ([`TransportConfig::qlog`](crate::conn::TransportConfig::qlog)) or
//! per connection ([`Connection::set_qlog`](crate::Connection::set_qlog)), and off the hot
//! path: a connection records compact event values into a batch of its own (no allocation
//! once warm, no lock, no system call), hands full batches (or batches 100 ms old) to a
//! bounded queue without waiting, and a writer thread turns them into JSON and writes
//! them (woken by the first batch, then draining once a millisecond while batches keep
//! coming). A full queue drops the batch and counts it ([`QlogStats::dropped`]); the worker
//! never blocks on qlog. With qlog off, each event point costs one branch. Tracing every
//! packet at line rate costs the writer about a tenth of a core:
//! [`QlogWriter::on_cpu`] keeps it off the workers' cores.
//!
//! Events: `quic:connection_started`, `quic:packet_sent`, `quic:packet_received`,
//! `quic:packet_dropped`, `quic:packet_lost`,
//! `quic:recovery_metrics_updated` (only the fields that changed),
//! `quic:congestion_state_updated` (BBR's, CUBIC's or NewReno's state names),
//! `quic:timer_updated` (a loss or probe timer expired), `quic:mtu_updated`,
//! `quic:key_updated`, `quic:connection_closed`, and `stoq:handshake_completed` (the
//! hybrid X25519 + ML-KEM-768 exchange, the cipher suite, the peer's FALCON
//! authentication, the handshake's duration). An endpoint's own trace
//! (`endpoint_<port>_<pid>.sqlog`) gets `stoq:xdp_verdicts` once a second while the XDP
//! program handles frames: redirected, passed, and dropped by reason. `docs/operations.md` shows how to read them.

mod event;
mod writer;

use std::time::Instant;

#[cfg(target_os = "linux")]
pub(crate) use event::XdpVerdicts;
pub(crate) use event::{Closed, Ev, Metrics, Started};
pub use writer::{QlogStats, QlogWriter};

use stoq_common::cid::ConnectionId;
use writer::{Header, Msg};

/// Events a connection batches before handing them to the writer.
pub(crate) const BATCH: usize = 128;
/// A batch older than this is handed over with the next event, full or not.
const BATCH_AGE: std::time::Duration = std::time::Duration::from_millis(100);

/// One connection's trace: its batch and what it last recorded.
pub(crate) struct Trace {
    writer: QlogWriter,
    id: u64,
    start: Instant,
    batch: Vec<event::Record>,
    batch_first: Option<Instant>,
    /// The header was queued (else every event is dropped).
    open: bool,
    /// The recovery metrics last recorded.
    pub(crate) last_metrics: Metrics,
    /// The congestion controller's state last recorded.
    pub(crate) last_cc: &'static str,
    /// The path MTU last recorded.
    pub(crate) last_mtu: u16,
    /// The time of the last event recorded.
    last_time: Instant,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace").field("id", &self.id).finish()
    }
}

impl Trace {
    /// Begins a trace named after `odcid` (of the client's connection if `client`), its
    /// times counted from `now` (which is `unix_us` on the wall clock).
    pub(crate) fn new(
        writer: &QlogWriter,
        now: Instant,
        client: bool,
        odcid: ConnectionId,
        unix_us: u64,
    ) -> Self {
        let mut hex = Vec::with_capacity(40);
        event::hex(&mut hex, odcid.as_bytes());
        let mut stem: String = hex.iter().map(|&b| char::from(b)).collect();
        stem.push_str(if client { "_client" } else { "_server" });
        let header = Header {
            stem,
            vantage: if client { "client" } else { "server" },
            what: "connection",
            unix_us,
        };
        Self::open(writer, now, header)
    }

    /// Begins the trace of an endpoint's own events (`endpoint_<port>_<pid>.sqlog`): what
    /// belongs to no connection, such as the XDP program's verdicts.
    #[cfg(target_os = "linux")]
    pub(crate) fn endpoint(writer: &QlogWriter, now: Instant, port: u16, unix_us: u64) -> Self {
        let header = Header {
            stem: format!("endpoint_{port}_{}", std::process::id()),
            vantage: "server",
            what: "endpoint",
            unix_us,
        };
        Self::open(writer, now, header)
    }

    fn open(writer: &QlogWriter, now: Instant, header: Header) -> Self {
        let id = writer
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let open = writer
            .try_send(Msg::Open {
                id,
                header: Box::new(header),
            })
            .is_ok();
        Self {
            batch: writer.batch_vec(),
            writer: writer.clone(),
            id,
            start: now,
            batch_first: None,
            open,
            last_metrics: Metrics::default(),
            last_cc: "",
            last_mtu: 0,
            last_time: now,
        }
    }

    /// When the trace began.
    pub(crate) fn start(&self) -> Instant {
        self.start
    }

    /// The time of the last event recorded (for events whose caller has no clock).
    pub(crate) fn last_time(&self) -> Instant {
        self.last_time
    }

    /// Records `ev` at `now`.
    pub(crate) fn record(&mut self, now: Instant, ev: Ev) {
        self.last_time = now;
        let first = *self.batch_first.get_or_insert(now);
        self.batch.push(event::Record {
            time_us: now.saturating_duration_since(self.start).as_micros() as u64,
            ev,
        });
        if self.batch.len() >= BATCH || now.saturating_duration_since(first) >= BATCH_AGE {
            self.flush();
        }
    }

    /// Hands the batch to the writer if its first event is [`BATCH_AGE`] old.
    pub(crate) fn flush_if_old(&mut self, now: Instant) {
        if self
            .batch_first
            .is_some_and(|f| now.saturating_duration_since(f) >= BATCH_AGE)
        {
            self.flush();
        }
    }

    /// Hands the batch to the writer, without waiting.
    pub(crate) fn flush(&mut self) {
        self.batch_first = None;
        if self.batch.is_empty() {
            return;
        }
        if !self.open {
            self.writer.counters.dropped.fetch_add(
                self.batch.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            self.batch.clear();
            return;
        }
        let next = self.writer.batch_vec();
        let events = std::mem::replace(&mut self.batch, next);
        if let Err(Some(v)) = self.writer.try_send(Msg::Events {
            id: self.id,
            events,
        }) {
            // Dropped (counted); keep the larger vector.
            if v.capacity() > self.batch.capacity() {
                self.batch = v;
            }
        }
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        self.flush();
        if self.open {
            let _ = self.writer.try_send(Msg::Close { id: self.id });
        }
    }
}
