//! The events a connection records, as compact values (no allocation when recorded, except
//! the two once-per-connection events), and their JSON form (draft-ietf-quic-qlog-quic-events
//! in the revision with the `quic:` namespace, as the `qlog` crate 0.18 reads it).

use std::io::Write as _;
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
///
/// The per-packet events (sent, received, lost, metrics) are written without `core::fmt`:
/// at 15 Gbit/s the writer formats over a million of them a second, on a core it may share
/// with the worker.
pub(crate) fn write_json(out: &mut Vec<u8>, r: &Record) {
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
    push(out, "{\"time\":");
    millis(out, r.time_us);
    push(out, ",\"name\":\"");
    push(out, name);
    push(out, "\",\"data\":{");
    match &r.ev {
        Ev::Started(s) => {
            push(out, "\"local\":");
            tuple(out, s.local, &s.scid);
            push(out, ",\"remote\":");
            tuple(out, Some(s.remote), &s.dcid);
        }
        &Ev::PacketSent {
            space,
            pn,
            len,
            probe,
            mtu_probe,
        } => {
            header(out, space, pn);
            raw(out, len);
            if mtu_probe {
                push(out, ",\"is_mtu_probe_packet\":true");
            }
            if probe {
                push(out, ",\"trigger\":\"pto_probe\"");
            }
        }
        &Ev::PacketReceived { space, pn, len } => {
            header(out, space, pn);
            raw(out, len);
        }
        &Ev::PacketDropped {
            trigger,
            details,
            len,
        } => {
            push(out, "\"raw\":{\"length\":");
            int(out, len);
            push(out, "},\"details\":\"");
            push(out, details);
            push(out, "\",\"trigger\":\"");
            push(out, trigger);
            push(out, "\"");
        }
        &Ev::PacketLost { space, pn, by_time } => {
            header(out, space, pn);
            push(
                out,
                if by_time {
                    ",\"trigger\":\"time_threshold\""
                } else {
                    ",\"trigger\":\"reordering_threshold\""
                },
            );
        }
        Ev::Metrics(m) => {
            let mut sep = "\"";
            let ms = [
                ("min_rtt", m.min_rtt_us),
                ("smoothed_rtt", m.smoothed_rtt_us),
                ("latest_rtt", m.latest_rtt_us),
                ("rtt_variance", m.rtt_variance_us),
            ];
            for (k, v) in ms {
                if let Some(v) = v {
                    push(out, sep);
                    push(out, k);
                    push(out, "\":");
                    millis(out, u64::from(v));
                    sep = ",\"";
                }
            }
            let ints = [
                ("pto_count", m.pto_count.map(u64::from)),
                ("congestion_window", m.congestion_window),
                ("bytes_in_flight", m.bytes_in_flight),
                ("pacing_rate", m.pacing_rate),
            ];
            for (k, v) in ints {
                if let Some(v) = v {
                    push(out, sep);
                    push(out, k);
                    push(out, "\":");
                    int(out, v);
                    sep = ",\"";
                }
            }
        }
        Ev::CongestionState { old, new } => {
            if !old.is_empty() {
                push(out, "\"old\":\"");
                push(out, old);
                push(out, "\",");
            }
            push(out, "\"new\":\"");
            push(out, new);
            push(out, "\"");
        }
        &Ev::TimerExpired { kind, space } => {
            push(out, "\"timer_type\":\"");
            push(out, kind);
            push(out, "\",\"packet_number_space\":\"");
            push(out, SPACES[usize::from(space.min(2))]);
            push(out, "\",\"event_type\":\"expired\"");
        }
        &Ev::MtuUpdated { old, new, done } => {
            push(out, "\"old\":");
            int(out, old);
            push(out, ",\"new\":");
            int(out, new);
            push(
                out,
                if done {
                    ",\"done\":true"
                } else {
                    ",\"done\":false"
                },
            );
        }
        &Ev::KeyUpdated {
            client,
            phase,
            local,
        } => {
            push(out, "\"key_type\":\"");
            push(out, if client { "client" } else { "server" });
            push(out, "_1rtt_secret\",\"key_phase\":");
            int(out, phase);
            push(out, ",\"trigger\":\"");
            push(
                out,
                if local {
                    "local_update"
                } else {
                    "remote_update"
                },
            );
            push(out, "\"");
        }
        &Ev::HandshakeCompleted {
            suite,
            peer_signature,
            took_us,
            resumption,
            ticket_refused,
            early_data,
            signature_batch,
        } => {
            push(
                out,
                "\"key_exchange\":\"x25519+mlkem768\",\"cipher_suite\":\"",
            );
            push(out, suite);
            push(out, "\",\"duration\":");
            millis(out, took_us);
            let strings = [
                ("peer_signature", peer_signature),
                ("resumption", Some(resumption)),
                ("ticket_refused", ticket_refused),
                ("early_data", early_data),
            ];
            for (k, v) in strings {
                if let Some(v) = v {
                    push(out, ",\"");
                    push(out, k);
                    push(out, "\":\"");
                    push(out, v);
                    push(out, "\"");
                }
            }
            if signature_batch > 0 {
                push(out, ",\"signature_batch\":");
                int(out, signature_batch);
            }
        }
        Ev::Closed(c) => {
            if let Some(local) = c.local {
                push(
                    out,
                    if local {
                        "\"initiator\":\"local\","
                    } else {
                        "\"initiator\":\"remote\","
                    },
                );
            }
            if let Some(code) = c.code {
                push(out, "\"error_code\":");
                int(out, code);
                push(out, ",");
            }
            push(out, "\"reason\":");
            string(out, &c.reason);
            push(out, ",\"trigger\":\"");
            push(out, c.trigger);
            push(out, "\"");
        }
        Ev::Xdp(x) => {
            let total: u64 = x.dropped.iter().map(|d| d.1).sum();
            push(out, "\"interval\":");
            millis(out, x.interval_us);
            push(out, ",\"redirected\":");
            int(out, x.redirected);
            push(out, ",\"passed\":");
            int(out, x.passed);
            push(out, ",\"dropped\":");
            int(out, total);
            push(out, ",\"dropped_by_reason\":{");
            for (i, &(r, n)) in x.dropped.iter().enumerate() {
                push(out, if i == 0 { "\"" } else { ",\"" });
                push(out, r);
                push(out, "\":");
                int(out, n);
            }
            push(out, "}");
        }
    }
    push(out, "}}");
}

/// Appends `s`.
fn push(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

/// Appends `v` in decimal.
fn int(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Appends `us` microseconds as milliseconds with three decimals, qlog's unit of time.
fn millis(out: &mut Vec<u8>, us: u64) {
    int(out, us / 1000);
    let f = us % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (f / 100) as u8,
        b'0' + (f / 10 % 10) as u8,
        b'0' + (f % 10) as u8,
    ]);
}

/// `"header":{...}` of a packet in `space` numbered `pn`.
fn header(out: &mut Vec<u8>, space: u8, pn: u64) {
    push(out, "\"header\":{\"packet_type\":\"");
    push(out, PACKET_TYPES[usize::from(space.min(2))]);
    push(out, "\",\"packet_number\":");
    int(out, pn);
    push(out, "}");
}

/// `,"raw":{"length":len}`.
fn raw(out: &mut Vec<u8>, len: u16) {
    push(out, ",\"raw\":{\"length\":");
    int(out, len);
    push(out, "}");
}

/// A qlog `TupleEndpointInfo`: address, port and connection ID.
fn tuple(out: &mut Vec<u8>, addr: Option<SocketAddr>, cid: &ConnectionId) {
    push(out, "{");
    match addr {
        Some(SocketAddr::V4(a)) => {
            let _ = write!(out, "\"ip_v4\":\"{}\",\"port_v4\":{},", a.ip(), a.port());
        }
        Some(SocketAddr::V6(a)) => {
            let _ = write!(out, "\"ip_v6\":\"{}\",\"port_v6\":{},", a.ip(), a.port());
        }
        None => {}
    }
    push(out, "\"connection_ids\":[\"");
    hex(out, cid.as_bytes());
    push(out, "\"]}");
}

/// Lower-case hex of `b`.
pub(crate) fn hex(out: &mut Vec<u8>, b: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &x in b {
        out.extend_from_slice(&[DIGITS[usize::from(x >> 4)], DIGITS[usize::from(x & 15)]]);
    }
}

/// A JSON string literal of `s`, escaped.
pub(crate) fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => push(out, "\\\""),
            '\\' => push(out, "\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut b = [0; 4];
                push(out, c.encode_utf8(&mut b));
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(ev: Ev) -> String {
        let mut s = Vec::new();
        write_json(
            &mut s,
            &Record {
                time_us: 12_345,
                ev,
            },
        );
        String::from_utf8(s).expect("qlog JSON is UTF-8")
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

    /// Every event kind, one of each shape (the expected texts were written by the
    /// `core::fmt` formatter this one replaced, so the files read as before).
    fn every_event() -> Vec<Ev> {
        let cid = ConnectionId::from_slice(&[0xab, 0x01, 0xff, 0x10]).expect("a short CID");
        vec![
            Ev::Started(Box::new(Started {
                local: Some("10.200.0.1:4433".parse().expect("v4")),
                remote: "10.200.0.2:50000".parse().expect("v4"),
                scid: cid,
                dcid: cid,
            })),
            Ev::Started(Box::new(Started {
                local: None,
                remote: "[fd00:5710::2]:443".parse().expect("v6"),
                scid: cid,
                dcid: cid,
            })),
            Ev::PacketSent {
                space: 0,
                pn: 0,
                len: 1200,
                probe: false,
                mtu_probe: true,
            },
            Ev::PacketReceived {
                space: 1,
                pn: 18_446_744_073_709_551_615,
                len: 65_535,
            },
            Ev::PacketDropped {
                trigger: "decryption_failure",
                details: "auth_failed",
                len: 9,
            },
            Ev::PacketLost {
                space: 2,
                pn: 100,
                by_time: true,
            },
            Ev::PacketLost {
                space: 2,
                pn: 101,
                by_time: false,
            },
            Ev::Metrics(Metrics {
                min_rtt_us: Some(7),
                smoothed_rtt_us: Some(1_000),
                latest_rtt_us: Some(4_294_967_295),
                rtt_variance_us: Some(0),
                pto_count: Some(3),
                congestion_window: Some(1),
                bytes_in_flight: Some(0),
                pacing_rate: Some(12_500_000_000),
            }),
            Ev::CongestionState {
                old: "",
                new: "startup",
            },
            Ev::CongestionState {
                old: "startup",
                new: "drain",
            },
            Ev::TimerExpired {
                kind: "pto",
                space: 1,
            },
            Ev::MtuUpdated {
                old: 1200,
                new: 1452,
                done: true,
            },
            Ev::MtuUpdated {
                old: 1452,
                new: 1500,
                done: false,
            },
            Ev::KeyUpdated {
                client: true,
                phase: 3,
                local: false,
            },
            Ev::KeyUpdated {
                client: false,
                phase: 4,
                local: true,
            },
            Ev::HandshakeCompleted {
                suite: "aes256gcm",
                peer_signature: Some("falcon512"),
                took_us: 1_234_567,
                resumption: "refused",
                ticket_refused: Some("expired"),
                early_data: Some("accepted"),
                signature_batch: 5,
            },
            Ev::HandshakeCompleted {
                suite: "chacha20poly1305",
                peer_signature: None,
                took_us: 5,
                resumption: "not_offered",
                ticket_refused: None,
                early_data: None,
                signature_batch: 0,
            },
            Ev::Closed(Box::new(Closed {
                local: None,
                code: None,
                trigger: "idle_timeout",
                reason: "é".into(),
            })),
            Ev::Closed(Box::new(Closed {
                local: Some(true),
                code: None,
                trigger: "application",
                reason: String::new(),
            })),
            Ev::Xdp(Box::default()),
        ]
    }

    #[test]
    fn every_event_reads_as_before() {
        let want = r#"{"time":12.345,"name":"quic:connection_started","data":{"local":{"ip_v4":"10.200.0.1","port_v4":4433,"connection_ids":["ab01ff10"]},"remote":{"ip_v4":"10.200.0.2","port_v4":50000,"connection_ids":["ab01ff10"]}}}
{"time":12.345,"name":"quic:connection_started","data":{"local":{"connection_ids":["ab01ff10"]},"remote":{"ip_v6":"fd00:5710::2","port_v6":443,"connection_ids":["ab01ff10"]}}}
{"time":12.345,"name":"quic:packet_sent","data":{"header":{"packet_type":"initial","packet_number":0},"raw":{"length":1200},"is_mtu_probe_packet":true}}
{"time":12.345,"name":"quic:packet_received","data":{"header":{"packet_type":"handshake","packet_number":18446744073709551615},"raw":{"length":65535}}}
{"time":12.345,"name":"quic:packet_dropped","data":{"raw":{"length":9},"details":"auth_failed","trigger":"decryption_failure"}}
{"time":12.345,"name":"quic:packet_lost","data":{"header":{"packet_type":"1RTT","packet_number":100},"trigger":"time_threshold"}}
{"time":12.345,"name":"quic:packet_lost","data":{"header":{"packet_type":"1RTT","packet_number":101},"trigger":"reordering_threshold"}}
{"time":12.345,"name":"quic:recovery_metrics_updated","data":{"min_rtt":0.007,"smoothed_rtt":1.000,"latest_rtt":4294967.295,"rtt_variance":0.000,"pto_count":3,"congestion_window":1,"bytes_in_flight":0,"pacing_rate":12500000000}}
{"time":12.345,"name":"quic:congestion_state_updated","data":{"new":"startup"}}
{"time":12.345,"name":"quic:congestion_state_updated","data":{"old":"startup","new":"drain"}}
{"time":12.345,"name":"quic:timer_updated","data":{"timer_type":"pto","packet_number_space":"handshake","event_type":"expired"}}
{"time":12.345,"name":"quic:mtu_updated","data":{"old":1200,"new":1452,"done":true}}
{"time":12.345,"name":"quic:mtu_updated","data":{"old":1452,"new":1500,"done":false}}
{"time":12.345,"name":"quic:key_updated","data":{"key_type":"client_1rtt_secret","key_phase":3,"trigger":"remote_update"}}
{"time":12.345,"name":"quic:key_updated","data":{"key_type":"server_1rtt_secret","key_phase":4,"trigger":"local_update"}}
{"time":12.345,"name":"stoq:handshake_completed","data":{"key_exchange":"x25519+mlkem768","cipher_suite":"aes256gcm","duration":1234.567,"peer_signature":"falcon512","resumption":"refused","ticket_refused":"expired","early_data":"accepted","signature_batch":5}}
{"time":12.345,"name":"stoq:handshake_completed","data":{"key_exchange":"x25519+mlkem768","cipher_suite":"chacha20poly1305","duration":0.005,"resumption":"not_offered"}}
{"time":12.345,"name":"quic:connection_closed","data":{"reason":"é","trigger":"idle_timeout"}}
{"time":12.345,"name":"quic:connection_closed","data":{"initiator":"local","reason":"","trigger":"application"}}
{"time":12.345,"name":"stoq:xdp_verdicts","data":{"interval":0.000,"redirected":0,"passed":0,"dropped":0,"dropped_by_reason":{}}}"#;
        let events = every_event();
        assert_eq!(events.len(), want.lines().count());
        for (ev, want) in events.into_iter().zip(want.lines()) {
            assert_eq!(json(ev), want);
        }
    }
}
