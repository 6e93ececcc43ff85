//! The events a connection records, as compact values (no allocation when recorded, except
//! the two once-per-connection events), and their JSON form (draft-ietf-quic-qlog-quic-events
//! in the revision with the `quic:` namespace, as the `qlog` crate 0.18 reads it).

use std::fmt::Write as _;
use std::net::SocketAddr;

use stoq_common::cid::ConnectionId;

/// Packet number spaces, as the connection indexes them.
const SPACES: [&str; 3] = ["initial", "handshake", "application_data"];
/// Packet types of the packets sent in each space.
const PACKET_TYPES: [&str; 3] = ["initial", "handshake", "1RTT"];

/// One recorded event; the time is kept beside it ([`Record`]).
#[derive(Debug, Clone)]
pub(crate) enum Ev {
    /// `quic:connection_started`.
    Started(Box<Started>),
    /// `quic:packet_sent`.
    PacketSent {
        /// Packet number space index (0 Initial, 1 Handshake, 2 application data).
        space: u8,
        pn: u64,
        len: u16,
        /// Sent as a probe (a PTO fired).
        probe: bool,
        /// A DPLPMTUD probe.
        mtu_probe: bool,
    },
    /// `quic:packet_received`.
    PacketReceived { space: u8, pn: u64, len: u16 },
    /// `quic:packet_dropped`: a packet of this connection that was not processed.
    PacketDropped {
        /// The qlog trigger (`decryption_failure`, `invalid`, ...).
        trigger: &'static str,
        /// STOQ's own reason (the name of its drop counter).
        details: &'static str,
        len: u16,
    },
    /// `quic:packet_lost`.
    PacketLost {
        space: u8,
        pn: u64,
        /// Declared lost by the time threshold (else by the reordering threshold).
        by_time: bool,
    },
    /// `quic:recovery_metrics_updated`, with only the values that changed.
    Metrics(Metrics),
    /// `quic:congestion_state_updated`.
    CongestionState {
        old: &'static str,
        new: &'static str,
    },
    /// `quic:timer_updated`: a loss-detection timer expired.
    TimerExpired {
        /// `pto` or `loss_timeout`.
        kind: &'static str,
        space: u8,
    },
    /// `quic:mtu_updated`.
    MtuUpdated { old: u16, new: u16, done: bool },
    /// `quic:key_updated` (a 1-RTT key update).
    KeyUpdated {
        /// Whose keys: the client's (else the server's).
        client: bool,
        phase: u64,
        /// This side began the update (else the peer did).
        local: bool,
    },
    /// `stoq:handshake_completed`: the hybrid key exchange and FALCON authentication.
    HandshakeCompleted {
        suite: &'static str,
        /// Signature scheme of the peer's key, if it authenticated.
        peer_signature: Option<&'static str>,
        /// Microseconds from the connection's start.
        took_us: u64,
        /// `not_offered`, `accepted` (resumed from a ticket) or `refused`.
        resumption: &'static str,
        /// Why the ticket was refused, when it was.
        ticket_refused: Option<&'static str>,
        /// Early data (0-RTT): `accepted`, or the refusal's reason; `None` when none was
        /// offered.
        early_data: Option<&'static str>,
        /// Handshakes this server's signature covered (1 alone, more in a batch); 0
        /// when this side signed nothing.
        signature_batch: u32,
    },
    /// `quic:connection_closed`.
    Closed(Box<Closed>),
    /// `stoq:xdp_verdicts`: what the XDP program did since the last record (an
    /// endpoint's trace; Linux only).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Xdp(Box<XdpVerdicts>),
}

/// `stoq:xdp_verdicts` data: frames the XDP program handled over an interval.
#[derive(Debug, Clone, Default)]
pub(crate) struct XdpVerdicts {
    /// Steered to AF_XDP sockets.
    pub(crate) redirected: u64,
    /// Passed to the kernel's stack: not STOQ's, STOQ's for the socket behind the program
    /// (the filter) or for a queue without an AF_XDP socket, or larger than a frame.
    pub(crate) passed: u64,
    /// Dropped, by reason (only reasons with drops).
    pub(crate) dropped: Vec<(&'static str, u64)>,
    /// The interval, microseconds.
    pub(crate) interval_us: u64,
}

/// `quic:connection_started` data.
#[derive(Debug, Clone)]
pub(crate) struct Started {
    pub(crate) local: Option<SocketAddr>,
    pub(crate) remote: SocketAddr,
    pub(crate) scid: ConnectionId,
    pub(crate) dcid: ConnectionId,
}

/// `quic:connection_closed` data.
#[derive(Debug, Clone)]
pub(crate) struct Closed {
    /// This side closed (else the peer, or nobody: a timeout).
    pub(crate) local: Option<bool>,
    pub(crate) code: Option<u64>,
    pub(crate) trigger: &'static str,
    pub(crate) reason: String,
}

/// Recovery metrics; `None` where unchanged since the last record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Metrics {
    pub(crate) min_rtt_us: Option<u32>,
    pub(crate) smoothed_rtt_us: Option<u32>,
    pub(crate) latest_rtt_us: Option<u32>,
    pub(crate) rtt_variance_us: Option<u32>,
    pub(crate) pto_count: Option<u16>,
    pub(crate) congestion_window: Option<u64>,
    pub(crate) bytes_in_flight: Option<u64>,
    pub(crate) pacing_rate: Option<u64>,
}

impl Metrics {
    /// The fields of `self` that differ from `last` (all of them set), and `last` updated.
    pub(crate) fn changed_since(&self, last: &mut Self) -> Option<Self> {
        fn diff<T: PartialEq + Copy>(new: Option<T>, old: &mut Option<T>) -> Option<T> {
            if new == *old {
                return None;
            }
            *old = new;
            new
        }
        let d = Self {
            min_rtt_us: diff(self.min_rtt_us, &mut last.min_rtt_us),
            smoothed_rtt_us: diff(self.smoothed_rtt_us, &mut last.smoothed_rtt_us),
            latest_rtt_us: diff(self.latest_rtt_us, &mut last.latest_rtt_us),
            rtt_variance_us: diff(self.rtt_variance_us, &mut last.rtt_variance_us),
            pto_count: diff(self.pto_count, &mut last.pto_count),
            congestion_window: diff(self.congestion_window, &mut last.congestion_window),
            bytes_in_flight: diff(self.bytes_in_flight, &mut last.bytes_in_flight),
            pacing_rate: diff(self.pacing_rate, &mut last.pacing_rate),
        };
        (d != Self::default()).then_some(d)
    }
}

/// An event with its time, microseconds from the trace's start.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) time_us: u64,
    pub(crate) ev: Ev,
}

/// Writes `r` as one JSON text (no record separator, no newline) into `out`.
pub(crate) fn write_json(out: &mut String, r: &Record) {
    let name = match &r.ev {
        Ev::Started(_) => "quic:connection_started",
        Ev::PacketSent { .. } => "quic:packet_sent",
        Ev::PacketReceived { .. } => "quic:packet_received",
        Ev::PacketDropped { .. } => "quic:packet_dropped",
        Ev::PacketLost { .. } => "quic:packet_lost",
        Ev::Metrics(_) => "quic:recovery_metrics_updated",
        Ev::CongestionState { .. } => "quic:congestion_state_updated",
        Ev::TimerExpired { .. } => "quic:timer_updated",
        Ev::MtuUpdated { .. } => "quic:mtu_updated",
        Ev::KeyUpdated { .. } => "quic:key_updated",
        Ev::HandshakeCompleted { .. } => "stoq:handshake_completed",
        Ev::Closed(_) => "quic:connection_closed",
        Ev::Xdp(_) => "stoq:xdp_verdicts",
    };
    let _ = write!(
        out,
        "{{\"time\":{}.{:03},\"name\":\"{name}\",\"data\":{{",
        r.time_us / 1000,
        r.time_us % 1000
    );
    let _ = match &r.ev {
        Ev::Started(s) => {
            out.push_str("\"local\":");
            tuple(out, s.local, &s.scid);
            out.push_str(",\"remote\":");
            tuple(out, Some(s.remote), &s.dcid);
            Ok(())
        }
        &Ev::PacketSent {
            space,
            pn,
            len,
            probe,
            mtu_probe,
        } => {
            header(out, space, pn);
            let _ = write!(out, ",\"raw\":{{\"length\":{len}}}");
            if mtu_probe {
                out.push_str(",\"is_mtu_probe_packet\":true");
            }
            if probe {
                out.push_str(",\"trigger\":\"pto_probe\"");
            }
            Ok(())
        }
        &Ev::PacketReceived { space, pn, len } => {
            header(out, space, pn);
            write!(out, ",\"raw\":{{\"length\":{len}}}")
        }
        &Ev::PacketDropped {
            trigger,
            details,
            len,
        } => write!(
            out,
            "\"raw\":{{\"length\":{len}}},\"details\":\"{details}\",\"trigger\":\"{trigger}\""
        ),
        &Ev::PacketLost { space, pn, by_time } => {
            header(out, space, pn);
            let t = if by_time {
                "time_threshold"
            } else {
                "reordering_threshold"
            };
            write!(out, ",\"trigger\":\"{t}\"")
        }
        Ev::Metrics(m) => {
            let mut sep = "";
            let mut ms = |out: &mut String, k: &str, v: Option<u32>| {
                if let Some(v) = v {
                    let _ = write!(out, "{sep}\"{k}\":{}.{:03}", v / 1000, v % 1000);
                    sep = ",";
                }
            };
            ms(out, "min_rtt", m.min_rtt_us);
            ms(out, "smoothed_rtt", m.smoothed_rtt_us);
            ms(out, "latest_rtt", m.latest_rtt_us);
            ms(out, "rtt_variance", m.rtt_variance_us);
            let mut sep = if out.ends_with('{') { "" } else { "," };
            let mut int = |out: &mut String, k: &str, v: Option<u64>| {
                if let Some(v) = v {
                    let _ = write!(out, "{sep}\"{k}\":{v}");
                    sep = ",";
                }
            };
            int(out, "pto_count", m.pto_count.map(u64::from));
            int(out, "congestion_window", m.congestion_window);
            int(out, "bytes_in_flight", m.bytes_in_flight);
            int(out, "pacing_rate", m.pacing_rate);
            Ok(())
        }
        Ev::CongestionState { old: "", new } => write!(out, "\"new\":\"{new}\""),
        Ev::CongestionState { old, new } => write!(out, "\"old\":\"{old}\",\"new\":\"{new}\""),
        &Ev::TimerExpired { kind, space } => write!(
            out,
            "\"timer_type\":\"{kind}\",\"packet_number_space\":\"{}\",\"event_type\":\"expired\"",
            SPACES[usize::from(space.min(2))]
        ),
        &Ev::MtuUpdated { old, new, done } => {
            write!(out, "\"old\":{old},\"new\":{new},\"done\":{done}")
        }
        &Ev::KeyUpdated {
            client,
            phase,
            local,
        } => write!(
            out,
            "\"key_type\":\"{}_1rtt_secret\",\"key_phase\":{phase},\"trigger\":\"{}\"",
            if client { "client" } else { "server" },
            if local {
                "local_update"
            } else {
                "remote_update"
            }
        ),
        &Ev::HandshakeCompleted {
            suite,
            peer_signature,
            took_us,
            resumption,
            ticket_refused,
            early_data,
            signature_batch,
        } => {
            let _ = write!(
                out,
                "\"key_exchange\":\"x25519+mlkem768\",\"cipher_suite\":\"{suite}\",\"duration\":{}.{:03}",
                took_us / 1000,
                took_us % 1000
            );
            if let Some(s) = peer_signature {
                let _ = write!(out, ",\"peer_signature\":\"{s}\"");
            }
            let _ = write!(out, ",\"resumption\":\"{resumption}\"");
            if let Some(r) = ticket_refused {
                let _ = write!(out, ",\"ticket_refused\":\"{r}\"");
            }
            if let Some(e) = early_data {
                let _ = write!(out, ",\"early_data\":\"{e}\"");
            }
            if signature_batch > 0 {
                let _ = write!(out, ",\"signature_batch\":{signature_batch}");
            }
            Ok(())
        }
        Ev::Closed(c) => {
            let mut sep = "";
            if let Some(local) = c.local {
                let _ = write!(
                    out,
                    "\"initiator\":\"{}\"",
                    if local { "local" } else { "remote" }
                );
                sep = ",";
            }
            if let Some(code) = c.code {
                let _ = write!(out, "{sep}\"error_code\":{code}");
                sep = ",";
            }
            let _ = write!(out, "{sep}\"reason\":");
            string(out, &c.reason);
            write!(out, ",\"trigger\":\"{}\"", c.trigger)
        }
        Ev::Xdp(x) => {
            let total: u64 = x.dropped.iter().map(|d| d.1).sum();
            let _ = write!(
                out,
                "\"interval\":{}.{:03},\"redirected\":{},\"passed\":{},\"dropped\":{total},\"dropped_by_reason\":{{",
                x.interval_us / 1000,
                x.interval_us % 1000,
                x.redirected,
                x.passed
            );
            for (i, (r, n)) in x.dropped.iter().enumerate() {
                let _ = write!(out, "{}\"{r}\":{n}", if i == 0 { "" } else { "," });
            }
            write!(out, "}}")
        }
    };
    out.push_str("}}");
}

/// `"header":{...}` of a packet in `space` numbered `pn`.
fn header(out: &mut String, space: u8, pn: u64) {
    let _ = write!(
        out,
        "\"header\":{{\"packet_type\":\"{}\",\"packet_number\":{pn}}}",
        PACKET_TYPES[usize::from(space.min(2))]
    );
}

/// A qlog `TupleEndpointInfo`: address, port and connection ID.
fn tuple(out: &mut String, addr: Option<SocketAddr>, cid: &ConnectionId) {
    out.push('{');
    match addr {
        Some(SocketAddr::V4(a)) => {
            let _ = write!(out, "\"ip_v4\":\"{}\",\"port_v4\":{},", a.ip(), a.port());
        }
        Some(SocketAddr::V6(a)) => {
            let _ = write!(out, "\"ip_v6\":\"{}\",\"port_v6\":{},", a.ip(), a.port());
        }
        None => {}
    }
    out.push_str("\"connection_ids\":[\"");
    hex(out, cid.as_bytes());
    out.push_str("\"]}");
}

/// Lower-case hex of `b`.
pub(crate) fn hex(out: &mut String, b: &[u8]) {
    for x in b {
        let _ = write!(out, "{x:02x}");
    }
}

/// A JSON string literal of `s`, escaped.
pub(crate) fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(ev: Ev) -> String {
        let mut s = String::new();
        write_json(
            &mut s,
            &Record {
                time_us: 12_345,
                ev,
            },
        );
        s
    }

    #[test]
    fn events_are_json_with_the_drafts_names() {
        assert_eq!(
            json(Ev::PacketSent {
                space: 2,
                pn: 7,
                len: 1200,
                probe: true,
                mtu_probe: false
            }),
            r#"{"time":12.345,"name":"quic:packet_sent","data":{"header":{"packet_type":"1RTT","packet_number":7},"raw":{"length":1200},"trigger":"pto_probe"}}"#
        );
        assert_eq!(
            json(Ev::Metrics(Metrics {
                pto_count: Some(1),
                congestion_window: Some(14_720),
                ..Metrics::default()
            })),
            r#"{"time":12.345,"name":"quic:recovery_metrics_updated","data":{"pto_count":1,"congestion_window":14720}}"#
        );
        assert_eq!(
            json(Ev::Metrics(Metrics {
                smoothed_rtt_us: Some(1_500),
                bytes_in_flight: Some(0),
                ..Metrics::default()
            })),
            r#"{"time":12.345,"name":"quic:recovery_metrics_updated","data":{"smoothed_rtt":1.500,"bytes_in_flight":0}}"#
        );
    }

    #[test]
    fn xdp_verdicts_list_the_drop_reasons() {
        let s = json(Ev::Xdp(Box::new(XdpVerdicts {
            redirected: 10,
            passed: 2,
            dropped: vec![("too_short", 500), ("fixed_bit", 7)],
            interval_us: 1_000_250,
        })));
        assert_eq!(
            s,
            r#"{"time":12.345,"name":"stoq:xdp_verdicts","data":{"interval":1000.250,"redirected":10,"passed":2,"dropped":507,"dropped_by_reason":{"too_short":500,"fixed_bit":7}}}"#
        );
    }

    #[test]
    fn a_reason_is_escaped() {
        let s = json(Ev::Closed(Box::new(Closed {
            local: Some(false),
            code: Some(3),
            trigger: "application",
            reason: "a \"quoted\"\n\\ reason".into(),
        })));
        assert!(
            s.ends_with(r#""reason":"a \"quoted\"\u000a\\ reason","trigger":"application"}}"#),
            "{s}"
        );
    }

    #[test]
    fn only_changed_metrics_are_kept() {
        let mut last = Metrics::default();
        let m = Metrics {
            smoothed_rtt_us: Some(10),
            congestion_window: Some(100),
            ..Metrics::default()
        };
        assert_eq!(m.changed_since(&mut last), Some(m));
        assert_eq!(m.changed_since(&mut last), None);
        let m2 = Metrics {
            congestion_window: Some(200),
            ..m
        };
        assert_eq!(
            m2.changed_since(&mut last),
            Some(Metrics {
                congestion_window: Some(200),
                ..Metrics::default()
            })
        );
    }
}
