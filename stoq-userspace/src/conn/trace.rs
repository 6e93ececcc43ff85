//! Where the connection records its qlog events ([`crate::qlog`]): each helper is one
//! branch when the connection has no trace.

use std::time::Instant;

use super::Connection;
use super::error::ConnectionError;
use crate::qlog::{Closed, Ev, Metrics, QlogWriter, Started, Trace};

impl Connection {
    /// Begins a trace of this connection into `writer` (replacing any), from `now` on.
    pub(super) fn start_qlog(&mut self, now: Instant, writer: &QlogWriter) {
        let (base, secs) = self.unix_base;
        let unix_us = secs
            .saturating_mul(1_000_000)
            .saturating_add(now.saturating_duration_since(base).as_micros() as u64);
        let mut t = Trace::new(
            writer,
            now,
            self.side == super::Side::Client,
            self.orig_dcid,
            unix_us,
        );
        t.last_mtu = self.path.mtu() as u16;
        t.record(
            now,
            Ev::Started(Box::new(Started {
                local: self.local_ip.map(|ip| std::net::SocketAddr::new(ip, 0)),
                remote: self.remote,
                scid: self.local_cid,
                dcid: self.remote_cid,
            })),
        );
        self.qlog = Some(Box::new(t));
        self.qlog_recovery(now);
    }

    /// Records `ev` at `now`, if tracing.
    #[inline]
    pub(super) fn qlog(&mut self, now: Instant, ev: impl FnOnce() -> Ev) {
        if let Some(t) = self.qlog.as_deref_mut() {
            t.record(now, ev());
        }
    }

    /// Records the recovery metrics that changed and a new congestion state.
    pub(super) fn qlog_recovery(&mut self, now: Instant) {
        if self.qlog.is_none() {
            return;
        }
        // No RTT figures before the first sample (the estimator's are the defaults).
        let sampled = self.rtt.has_sample();
        let us = |d: std::time::Duration| {
            sampled.then(|| d.as_micros().min(u128::from(u32::MAX)) as u32)
        };
        let m = Metrics {
            min_rtt_us: us(self.rtt.min()),
            smoothed_rtt_us: us(self.rtt.smoothed()),
            latest_rtt_us: us(self.rtt.latest()),
            rtt_variance_us: us(self.rtt.var()),
            pto_count: Some(self.pto_count.min(u32::from(u16::MAX)) as u16),
            congestion_window: Some(self.cc.window()),
            bytes_in_flight: Some(self.in_flight),
            pacing_rate: Some(self.pacing_rate()),
        };
        let state = self.cc.state();
        let Some(t) = self.qlog.as_deref_mut() else {
            return;
        };
        if state != t.last_cc {
            let old = std::mem::replace(&mut t.last_cc, state);
            t.record(now, Ev::CongestionState { old, new: state });
        }
        if let Some(changed) = m.changed_since(&mut t.last_metrics) {
            t.record(now, Ev::Metrics(changed));
        }
    }

    /// Records a new path MTU (at the time of the last event: the packet that told).
    pub(super) fn qlog_mtu(&mut self, mtu: usize) {
        let done = self.path.search_done();
        if let Some(t) = self.qlog.as_deref_mut() {
            let now = t.last_time();
            let new = mtu.min(usize::from(u16::MAX)) as u16;
            let old = std::mem::replace(&mut t.last_mtu, new);
            if old != new {
                t.record(now, Ev::MtuUpdated { old, new, done });
            }
        }
    }

    /// Records the handshake's completion.
    pub(super) fn qlog_handshake(&mut self, now: Instant) {
        let Some(t) = self.qlog.as_deref() else {
            return;
        };
        let took_us = now.saturating_duration_since(t.start()).as_micros() as u64;
        let suite = self.hs.suite().map_or("none", |s| s.name());
        use crate::handshake::Resumption;
        let (resumption, ticket_refused) = match self.hs.resumption() {
            Resumption::NotOffered => ("not_offered", None),
            Resumption::Accepted => ("accepted", None),
            Resumption::Refused(r) => ("refused", Some(r.name())),
        };
        // A resumed peer signed nothing in this handshake.
        let peer_signature = self
            .hs
            .peer_key()
            .filter(|_| resumption != "accepted")
            .map(|k| k.alg().name());
        let signature_batch = self.hs.signature_batch_size();
        use crate::handshake::EarlyData;
        let early_data = match self.hs.early_data() {
            EarlyData::NotOffered => None,
            EarlyData::Pending => Some("pending"),
            EarlyData::Accepted => Some("accepted"),
            EarlyData::Refused(r) => Some(r.name()),
        };
        self.qlog(now, || Ev::HandshakeCompleted {
            suite,
            peer_signature,
            took_us,
            resumption,
            ticket_refused,
            early_data,
            signature_batch,
        });
    }

    /// Records how the connection ended; `now` if known (else the time of the last event).
    pub(super) fn qlog_closed(&mut self, now: Option<Instant>, e: &ConnectionError) {
        let Some(t) = self.qlog.as_deref_mut() else {
            return;
        };
        let now = now.unwrap_or_else(|| t.last_time());
        let (local, code, trigger) = match e {
            ConnectionError::LocallyClosed => {
                (Some(true), self.close.as_ref().map(|c| c.0), "application")
            }
            ConnectionError::TimedOut => (None, None, "idle_timeout"),
            ConnectionError::HandshakeTimedOut => (None, None, "handshake_timeout"),
            ConnectionError::Reset => (Some(false), None, "stateless_reset"),
            ConnectionError::VersionMismatch => (Some(false), None, "version_mismatch"),
            ConnectionError::PeerClosed { code, .. } => (Some(false), Some(*code), "error"),
            ConnectionError::ApplicationClosed { code, .. } => {
                (Some(false), Some(*code), "application")
            }
            other => (Some(true), Some(other.wire_code()), "error"),
        };
        t.record(
            now,
            Ev::Closed(Box::new(Closed {
                local,
                code,
                trigger,
                reason: e.to_string(),
            })),
        );
        t.flush();
    }

    /// Hands a batch 100 ms old to the writer, so a quiet connection's last events do not
    /// wait for its next ones.
    pub(super) fn qlog_tick(&mut self, now: Instant) {
        if let Some(t) = self.qlog.as_deref_mut() {
            t.flush_if_old(now);
        }
    }
}
