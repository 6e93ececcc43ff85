//! Binding transactions through a sans-IO endpoint, against a STUN server played here: the
//! answer, retransmission and timeout, and every kind of hostile answer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stoq_common::wire::stun::{Class, METHOD_BINDING, Message, Writer, attr};

use super::*;
use crate::conn::{DatagramInfo, Endpoint, EndpointConfig};

const SERVER: &str = "192.0.2.10:3478";

fn server() -> SocketAddr {
    SERVER.parse().unwrap()
}

struct Rig {
    ep: Endpoint,
    now: Instant,
    /// Every destination the endpoint sent to.
    sent_to: Vec<SocketAddr>,
}

impl Rig {
    fn new(worker: u8) -> Self {
        let mut cfg = EndpointConfig::new();
        cfg.worker_id = worker;
        Self {
            ep: Endpoint::new(cfg, None).unwrap(),
            now: Instant::now(),
            sent_to: Vec::new(),
        }
    }

    /// The requests the endpoint sends now: (destination, transaction ID).
    fn requests(&mut self) -> Vec<(SocketAddr, [u8; 12])> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while let Some(t) = self.ep.poll_transmit(self.now, &mut buf) {
            self.sent_to.push(t.destination);
            let m = Message::parse(&buf[..t.size]).expect("a STUN request");
            assert_eq!((m.class(), m.method()), (Class::Request, METHOD_BINDING));
            assert_eq!(m.fingerprint(), stoq_common::wire::stun::Fingerprint::Valid);
            out.push((t.destination, m.transaction_id()));
        }
        out
    }

    fn feed(&mut self, from: SocketAddr, msg: &[u8]) {
        let mut d = msg.to_vec();
        assert!(
            self.ep
                .handle_datagram(self.now, from, DatagramInfo::default(), &mut d)
                .is_none()
        );
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.ep.poll_timeout().is_some_and(|t| t <= self.now) {
            self.ep.handle_timeout(self.now);
        }
    }
}

/// A Binding response: `class`, with the XOR-MAPPED-ADDRESS `mapped` and the extra
/// attributes, FINGERPRINT last when `fingerprint`.
fn response(
    txid: &[u8; 12],
    class: Class,
    mapped: Option<SocketAddr>,
    extra: &[(u16, &[u8])],
    fingerprint: bool,
) -> Vec<u8> {
    let mut b = vec![0u8; 256];
    let mut w = Writer::new(&mut b, class, METHOD_BINDING, txid).unwrap();
    if let Some(a) = mapped {
        w.xor_address(attr::XOR_MAPPED_ADDRESS, a).unwrap();
    }
    for (k, v) in extra {
        w.attribute(*k, v).unwrap();
    }
    let n = if fingerprint {
        w.finish_with_fingerprint().unwrap()
    } else {
        w.finish()
    };
    b.truncate(n);
    b
}

#[test]
fn a_binding_learns_the_reflexive_address_and_names_its_worker() {
    let mut r = Rig::new(3);
    let id =
        r.ep.stun_binding(r.now, server(), Duration::from_secs(5))
            .unwrap();
    let reqs = r.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].0, server());
    // The first byte of the transaction ID steers the answer to this worker.
    assert_eq!(reqs[0].1[0], 3);
    let public: SocketAddr = "198.51.100.7:40001".parse().unwrap();
    r.feed(
        server(),
        &response(&reqs[0].1, Class::Success, Some(public), &[], true),
    );
    let o = r.ep.poll_binding().unwrap();
    assert_eq!(
        (o.id, o.server, o.result, o.requests),
        (id, server(), Ok(public), 1)
    );
    assert!(r.ep.poll_binding().is_none());
    let s = r.ep.stats().stun;
    assert_eq!((s.requests_sent, s.succeeded, s.failed), (1, 1, 0));
    // Done: nothing more is sent, no timer is left.
    r.advance(Duration::from_secs(10));
    assert!(r.requests().is_empty());
    assert!(r.ep.poll_timeout().is_none());
}

#[test]
fn requests_are_retransmitted_with_a_doubling_timeout_until_the_deadline() {
    let mut r = Rig::new(0);
    r.ep.stun_binding(r.now, server(), Duration::from_millis(3_200))
        .unwrap();
    let start = r.now;
    let mut times = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..400 {
        for (_, id) in r.requests() {
            times.push(r.now - start);
            ids.push(id);
        }
        if r.ep.poll_binding().is_some_and(|o| {
            assert_eq!(o.result, Err(BindingError::TimedOut { requests: 3 }));
            true
        }) {
            break;
        }
        r.advance(Duration::from_millis(10));
    }
    // Sent at 0, 500 and 1,500 ms (the next would be at 3,500, past the deadline); the
    // transaction ended at 3,200 ms. Retransmissions keep their transaction ID.
    let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [0, 500, 1_500]);
    assert!(ids.iter().all(|i| *i == ids[0]));
    assert_eq!(r.now - start, Duration::from_millis(3_200));
    assert_eq!(r.ep.stats().stun.failed, 1);
    assert!(r.ep.poll_timeout().is_none());
}

#[test]
fn hostile_answers_are_dropped_and_the_transaction_goes_on() {
    let mut r = Rig::new(0);
    r.ep.stun_binding(r.now, server(), Duration::from_secs(5))
        .unwrap();
    let txid = r.requests()[0].1;
    let forged: SocketAddr = "203.0.113.66:9".parse().unwrap();
    let ok = response(&txid, Class::Success, Some(forged), &[], true);
    // The right answer from another port, and from another host.
    r.feed("192.0.2.10:3479".parse().unwrap(), &ok);
    r.feed("192.0.2.11:3478".parse().unwrap(), &ok);
    // Another transaction ID.
    let mut other = txid;
    other[5] ^= 1;
    r.feed(
        server(),
        &response(&other, Class::Success, Some(forged), &[], true),
    );
    // A request, not a response, and an indication.
    r.feed(server(), &response(&txid, Class::Request, None, &[], true));
    r.feed(
        server(),
        &response(&txid, Class::Indication, None, &[], true),
    );
    // Another method (TURN Allocate) with the right ID.
    let mut alloc = ok.clone();
    alloc[1] = 0x03;
    let n = alloc.len();
    alloc.truncate(n - 8);
    alloc[3] -= 8;
    r.feed(server(), &alloc);
    assert_eq!(r.ep.stats().stun.unsolicited, 6);
    // A FINGERPRINT that does not match; an attribute running past the message.
    let mut bad = ok.clone();
    bad[30] ^= 0x80;
    r.feed(server(), &bad);
    let mut over = ok.clone();
    over[23] = 0xff;
    r.feed(server(), &over);
    assert_eq!(r.ep.stats().stun.malformed, 2);
    assert!(r.ep.poll_binding().is_none(), "the transaction still runs");
    // The real answer ends it. A hostile server may report any address: it is reported,
    // and nothing is ever sent to it.
    r.feed(server(), &ok);
    assert_eq!(r.ep.poll_binding().unwrap().result, Ok(forged));
    // A second answer to an ended transaction is unsolicited.
    r.feed(server(), &ok);
    assert_eq!(r.ep.stats().stun.unsolicited, 7);
    r.advance(Duration::from_secs(30));
    r.requests();
    assert!(r.sent_to.iter().all(|a| *a == server()), "{:?}", r.sent_to);
}

#[test]
fn failing_answers_end_the_transaction_with_their_reason() {
    type Case = (Vec<(u16, &'static [u8])>, Class, bool, BindingError);
    let cases: [Case; 4] = [
        (
            vec![(attr::ERROR_CODE, b"\0\0\x04\x01Unauthorized")],
            Class::Error,
            false,
            BindingError::ServerError { code: 401 },
        ),
        (vec![], Class::Success, false, BindingError::NoAddress),
        (
            vec![(0x0024, b"\0\0\0\x01")],
            Class::Success,
            true,
            BindingError::UnknownAttribute(0x0024),
        ),
        (
            vec![(attr::MAPPED_ADDRESS, b"\0\x07\0\x01\x01\x02\x03\x04")],
            Class::Success,
            false,
            BindingError::BadAddress,
        ),
    ];
    for (extra, class, mapped, want) in cases {
        let mut r = Rig::new(0);
        r.ep.stun_binding(r.now, server(), Duration::from_secs(5))
            .unwrap();
        let txid = r.requests()[0].1;
        let m = mapped.then(|| "198.51.100.1:1".parse().unwrap());
        r.feed(server(), &response(&txid, class, m, &extra, false));
        assert_eq!(r.ep.poll_binding().unwrap().result, Err(want));
        assert_eq!(r.ep.stats().stun.failed, 1);
    }
}

#[test]
fn plain_mapped_address_and_ipv4_mapped_sources_are_understood() {
    let mut r = Rig::new(0);
    r.ep.stun_binding(r.now, server(), Duration::from_secs(5))
        .unwrap();
    let txid = r.requests()[0].1;
    // An RFC 3489 server's MAPPED-ADDRESS, from the server as a dual-stack socket reports
    // it (IPv4-mapped IPv6).
    let v = [0u8, 1, 0x1f, 0x90, 198, 51, 100, 9];
    let msg = response(
        &txid,
        Class::Success,
        None,
        &[(attr::MAPPED_ADDRESS, &v)],
        false,
    );
    r.feed("[::ffff:192.0.2.10]:3478".parse().unwrap(), &msg);
    assert_eq!(
        r.ep.poll_binding().unwrap().result,
        Ok("198.51.100.9:8080".parse().unwrap())
    );
}

#[test]
fn misuse_is_refused_with_the_fix() {
    let mut r = Rig::new(0);
    let t = Duration::from_secs(1);
    assert_eq!(
        r.ep.stun_binding(r.now, "0.0.0.0:3478".parse().unwrap(), t),
        Err(BindingError::BadServer("0.0.0.0:3478".parse().unwrap()))
    );
    assert!(matches!(
        r.ep.stun_binding(r.now, "192.0.2.1:0".parse().unwrap(), t),
        Err(BindingError::BadServer(_))
    ));
    for _ in 0..MAX_PENDING {
        r.ep.stun_binding(r.now, server(), t).unwrap();
    }
    assert_eq!(
        r.ep.stun_binding(r.now, server(), t),
        Err(BindingError::TooManyPending)
    );
    // Each gets its own transaction ID.
    let ids: std::collections::HashSet<_> = r.requests().into_iter().map(|(_, i)| i).collect();
    assert_eq!(ids.len(), MAX_PENDING);
    r.ep.abandon_bindings();
    let mut ended = 0;
    while let Some(o) = r.ep.poll_binding() {
        assert_eq!(o.result, Err(BindingError::Stopped));
        ended += 1;
    }
    assert_eq!(ended, MAX_PENDING);
}

#[test]
fn punches_are_28_byte_indications_that_a_stoq_endpoint_ignores() {
    let mut r = Rig::new(4);
    let peer: SocketAddr = "100.64.131.1:5000".parse().unwrap();
    assert!(r.ep.punch(peer));
    let mut buf = Vec::new();
    let t = r.ep.poll_transmit(r.now, &mut buf).unwrap();
    assert_eq!((t.destination, t.size), (peer, 28));
    let m = Message::parse(&buf[..t.size]).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Indication, METHOD_BINDING));
    assert_eq!(m.transaction_id()[0], 4);
    assert!(r.ep.poll_transmit(r.now, &mut buf).is_none());
    assert_eq!(r.ep.stats().stun.punches_sent, 1);
    // The peer's endpoint receives it as unsolicited STUN, and answers nothing.
    let mut other = Rig::new(0);
    other.feed(server(), &buf[..t.size]);
    assert_eq!(other.ep.stats().stun.unsolicited, 1);
    assert!(other.requests().is_empty());
    // Bounded: 64 wait at most.
    for _ in 0..MAX_PUNCHES {
        assert!(r.ep.punch(peer));
    }
    assert!(!r.ep.punch(peer));
}
