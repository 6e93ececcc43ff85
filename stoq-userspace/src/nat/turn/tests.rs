//! The TURN client against RFC 5769's integrity vectors and a relay played here.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stoq_common::classify::{ClassifierConfig, PacketKind, classify_payload};
use stoq_common::wire::stun::{
    Class, METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, Message,
    Writer, attr,
};

use super::*;

/// RFC 5769 §2.1's request (short-term credential: the key is the password).
const SAMPLE_REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
    0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09,
    0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14,
    0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
    0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
];

/// RFC 5769 §2.4's request with long-term authentication: username "マトリックス" (its
/// SASLprep form is itself), password "TheMatrIX", realm "example.org".
const SAMPLE_LONG_TERM_REQUEST: [u8; 116] = [
    0x00, 0x01, 0x00, 0x60, 0x21, 0x12, 0xa4, 0x42, 0x78, 0xad, 0x34, 0x33, 0xc6, 0xad, 0x72, 0xc0,
    0x29, 0xda, 0x41, 0x2e, 0x00, 0x06, 0x00, 0x12, 0xe3, 0x83, 0x9e, 0xe3, 0x83, 0x88, 0xe3, 0x83,
    0xaa, 0xe3, 0x83, 0x83, 0xe3, 0x82, 0xaf, 0xe3, 0x82, 0xb9, 0x00, 0x00, 0x00, 0x15, 0x00, 0x1c,
    0x66, 0x2f, 0x2f, 0x34, 0x39, 0x39, 0x6b, 0x39, 0x35, 0x34, 0x64, 0x36, 0x4f, 0x4c, 0x33, 0x34,
    0x6f, 0x4c, 0x39, 0x46, 0x53, 0x54, 0x76, 0x79, 0x36, 0x34, 0x73, 0x41, 0x00, 0x14, 0x00, 0x0b,
    0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x2e, 0x6f, 0x72, 0x67, 0x00, 0x00, 0x08, 0x00, 0x14,
    0xf6, 0x70, 0x24, 0x65, 0x6d, 0xd6, 0x4a, 0x3e, 0x02, 0xb8, 0xe0, 0x71, 0x2e, 0x85, 0xc9, 0xa2,
    0x8c, 0xa8, 0x96, 0x66,
];

fn verifies(msg: &[u8], key: &[u8]) -> bool {
    let m = Message::parse(msg).unwrap();
    let (head, rest, mac) = m.integrity_input().unwrap();
    hmac_sha1(key, &[&head, rest]) == mac
}

#[test]
fn rfc5769_message_integrity() {
    assert!(verifies(&SAMPLE_REQUEST, b"VOkJxbRl1RmTxUk/WvJxBt"));
    assert!(!verifies(&SAMPLE_REQUEST, b"VOkJxbRl1RmTxUk/WvJxBu"));
    let creds = TurnCredentials {
        username: "マトリックス".into(),
        password: "TheMatrIX".into(),
    };
    let key = long_term_key(&creds, b"example.org");
    assert!(verifies(&SAMPLE_LONG_TERM_REQUEST, &key));
    // The writer computes the same MESSAGE-INTEGRITY over the same attributes.
    let m = Message::parse(&SAMPLE_LONG_TERM_REQUEST).unwrap();
    let mut out = [0u8; 128];
    let mut w = Writer::new(&mut out, Class::Request, 0x001, &m.transaction_id()).unwrap();
    for a in m.attributes().filter(|a| a.kind != attr::MESSAGE_INTEGRITY) {
        w.attribute(a.kind, a.value).unwrap();
    }
    w.message_integrity(|b| hmac_sha1(&key, &[b])).unwrap();
    let n = w.finish();
    assert_eq!(out[..n], SAMPLE_LONG_TERM_REQUEST[..]);
}

const RELAY: &str = "100.64.130.3:3478";
const RELAYED: &str = "100.64.130.3:49160";
const PEER: &str = "100.64.131.1:40123";

fn creds() -> TurnCredentials {
    TurnCredentials {
        username: "stoq".into(),
        password: "secret".into(),
    }
}

struct Relay {
    t: Turn,
    now: Instant,
    n: u8,
}

impl Relay {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            t: Turn::new(now, RELAY.parse().unwrap(), creds(), 12, [0; 12]).unwrap(),
            now,
            n: 1,
        }
    }

    fn txid(&mut self) -> [u8; 12] {
        self.n += 1;
        [self.n; 12]
    }

    /// The request the client sends now.
    fn request(&mut self) -> Vec<u8> {
        let mut b = vec![0u8; 1500];
        let n = self.t.poll_transmit(self.now, &mut b).expect("a request");
        b.truncate(n);
        b
    }

    fn answer(&mut self, msg: &[u8]) -> Option<(SocketAddr, std::ops::Range<usize>)> {
        let mut n = self.n;
        let r = self.t.handle(self.now, msg, || {
            n += 1;
            [n; 12]
        });
        self.n = n;
        r
    }
}

/// A relay's response to `req`: `class`, the attributes, MESSAGE-INTEGRITY under `key`.
fn respond(req: &[u8], class: Class, attrs: &[(u16, Vec<u8>)], key: Option<[u8; 16]>) -> Vec<u8> {
    let m = Message::parse(req).unwrap();
    let mut b = vec![0u8; 512];
    let mut w = Writer::new(&mut b, class, m.method(), &m.transaction_id()).unwrap();
    for (k, v) in attrs {
        w.attribute(*k, v).unwrap();
    }
    if let Some(key) = key {
        w.message_integrity(|x| hmac_sha1(&key, &[x])).unwrap();
    }
    let n = w.finish_with_fingerprint().unwrap();
    b.truncate(n);
    b
}

fn xor(req: &[u8], kind: u16, a: &str) -> (u16, Vec<u8>) {
    // Encode through a scratch message with the request's ID (XOR uses it for IPv6).
    let m = Message::parse(req).unwrap();
    let mut b = [0u8; 64];
    let mut w = Writer::new(&mut b, Class::Success, 1, &m.transaction_id()).unwrap();
    w.xor_address(kind, a.parse().unwrap()).unwrap();
    let n = w.finish();
    (kind, b[24..n].to_vec())
}

fn allocated(r: &mut Relay) -> [u8; 16] {
    let first = r.request();
    let m = Message::parse(&first).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Request, METHOD_ALLOCATE));
    assert!(
        m.get(attr::MESSAGE_INTEGRITY).is_none(),
        "no credentials before asked"
    );
    let challenge = respond(
        &first,
        Class::Error,
        &[
            (attr::ERROR_CODE, b"\0\0\x04\x01Unauthorized".to_vec()),
            (attr::REALM, b"stoq.test".to_vec()),
            (attr::NONCE, b"n0nce".to_vec()),
        ],
        None,
    );
    assert!(r.answer(&challenge).is_none());
    let second = r.request();
    let m = Message::parse(&second).unwrap();
    assert_ne!(
        m.transaction_id(),
        Message::parse(&first).unwrap().transaction_id()
    );
    assert_eq!(m.get(attr::USERNAME).unwrap().value, b"stoq");
    assert_eq!(m.get(attr::NONCE).unwrap().value, b"n0nce");
    let key = long_term_key(&creds(), b"stoq.test");
    assert!(verifies(&second, &key), "the relay can check the request");
    let ok = respond(
        &second,
        Class::Success,
        &[
            xor(&second, attr::XOR_RELAYED_ADDRESS, RELAYED),
            xor(&second, attr::XOR_MAPPED_ADDRESS, "100.64.132.1:7000"),
            (attr::LIFETIME, 600u32.to_be_bytes().to_vec()),
        ],
        Some(key),
    );
    assert!(r.answer(&ok).is_none());
    assert_eq!(
        r.t.poll_event(),
        Some(TurnEvent::Allocated {
            relayed: RELAYED.parse().unwrap(),
            mapped: Some("100.64.132.1:7000".parse().unwrap()),
        })
    );
    key
}

#[test]
fn allocate_with_long_term_credentials_then_permit_and_relay() {
    let mut r = Relay::new();
    let key = allocated(&mut r);
    let peer: SocketAddr = PEER.parse().unwrap();
    // Not yet permitted: a Data indication from the peer is dropped.
    let data_ind = |payload: &[u8]| data_indication(peer, payload);
    assert!(r.answer(&data_ind(b"hello")).is_none());
    assert_eq!(r.t.stats.dropped, 1);
    let id = r.txid();
    r.t.permit(r.now, peer.ip(), id).unwrap();
    let req = r.request();
    let m = Message::parse(&req).unwrap();
    assert_eq!(m.method(), METHOD_CREATE_PERMISSION);
    assert!(verifies(&req, &key));
    // A forged answer (integrity under another key) is dropped; the real one permits.
    let forged = respond(&req, Class::Success, &[], Some([9; 16]));
    assert!(r.answer(&forged).is_none());
    assert_eq!(r.t.stats.dropped, 2);
    assert_eq!(r.t.poll_event(), None);
    assert!(
        r.answer(&respond(&req, Class::Success, &[], Some(key)))
            .is_none()
    );
    assert_eq!(r.t.poll_event(), Some(TurnEvent::Permitted(peer.ip())));
    // Now the peer's datagram comes through, and what goes back to it is wrapped.
    let ind = data_ind(b"stoq packet");
    let (from, range) = r.answer(&ind).expect("relayed datagram");
    assert_eq!((from, &ind[range]), (peer, &b"stoq packet"[..]));
    assert!(r.t.relays_to(peer));
    assert!(!r.t.relays_to("100.64.131.1:1".parse().unwrap()));
    let mut buf = vec![0u8; 100];
    buf[..13].copy_from_slice(b"answer packet");
    let n = r.t.wrap(r.now, &mut buf, 13, peer, [3; 12]).unwrap();
    let m = Message::parse(&buf[..n]).unwrap();
    assert_eq!((m.class(), m.method()), (Class::Indication, METHOD_SEND));
    assert_eq!(
        m.xor_address(m.get(attr::XOR_PEER_ADDRESS).unwrap().value),
        Ok(peer)
    );
    assert_eq!(m.get(attr::DATA).unwrap().value, b"answer packet");
    // No room: dropped and counted, the buffer's datagram left alone.
    let mut small = vec![0u8; 40];
    assert!(r.t.wrap(r.now, &mut small, 13, peer, [3; 12]).is_none());
    assert_eq!(r.t.stats.too_large, 1);
}

#[test]
fn refusals_timeouts_and_refreshes() {
    // Wrong credentials: the second 401 fails the allocation.
    let mut r = Relay::new();
    let first = r.request();
    let challenge = |req: &[u8]| {
        respond(
            req,
            Class::Error,
            &[
                (attr::ERROR_CODE, b"\0\0\x04\x01Unauthorized".to_vec()),
                (attr::REALM, b"stoq.test".to_vec()),
                (attr::NONCE, b"n".to_vec()),
            ],
            None,
        )
    };
    r.answer(&challenge(&first));
    let second = r.request();
    r.answer(&challenge(&second));
    assert_eq!(
        r.t.poll_event(),
        Some(TurnEvent::Failed(TurnError::Refused { code: 401 }))
    );
    assert!(r.t.relayed().is_none());
    // Silence: retransmitted, then timed out.
    let mut r = Relay::new();
    let mut sent = 0;
    for _ in 0..200 {
        let mut b = vec![0u8; 1500];
        while r.t.poll_transmit(r.now, &mut b).is_some() {
            sent += 1;
        }
        r.now += Duration::from_millis(100);
        if r.t.poll_timeout().is_some_and(|t| t <= r.now) {
            let mut n = 0;
            r.t.handle_timeout(r.now, || {
                n += 1;
                [n; 12]
            });
        }
    }
    assert_eq!(sent, 5, "0, 0.5, 1.5, 3.5, 7.5 s within 10 s");
    assert_eq!(
        r.t.poll_event(),
        Some(TurnEvent::Failed(TurnError::TimedOut))
    );
    // An idle allocation sends a keep-alive every 15 s (the NAT's mapping toward the
    // relay stays open), and is refreshed a minute before its lifetime ends.
    let mut r = Relay::new();
    let key = allocated(&mut r);
    let start = r.now;
    assert_eq!(r.t.poll_timeout(), Some(r.now + KEEP_ALIVE));
    let mut keepalives = 0;
    while r.now < start + Duration::from_secs(540) {
        r.now = r.t.poll_timeout().unwrap();
        r.t.handle_timeout(r.now, || [42; 12]);
        let m_bytes = r.request();
        let m = Message::parse(&m_bytes).unwrap();
        if m.method() == METHOD_REFRESH {
            assert_eq!(m.transaction_id(), [42; 12]);
            let ok = respond(
                &m_bytes,
                Class::Success,
                &[(attr::LIFETIME, 600u32.to_be_bytes().to_vec())],
                Some(key),
            );
            assert!(r.answer(&ok).is_none());
            break;
        }
        assert_eq!((m.class(), m.method()), (Class::Indication, METHOD_BINDING));
        keepalives += 1;
        assert!(
            r.t.poll_transmit(r.now, &mut [0u8; 512]).is_none(),
            "one at a time"
        );
    }
    assert_eq!(r.now, start + Duration::from_secs(540), "refreshed on time");
    assert_eq!(
        (keepalives, r.t.stats.keepalives),
        (35, 35),
        "every 15 s until then"
    );
    // Traffic through the relay counts as a keep-alive.
    let peer: SocketAddr = PEER.parse().unwrap();
    assert_eq!(r.t.poll_timeout(), Some(r.now + KEEP_ALIVE));
    r.now += Duration::from_secs(10);
    r.t.wrap(r.now, &mut [0u8; 100], 13, peer, [3; 12]);
    assert_eq!(r.t.poll_timeout(), Some(r.now + KEEP_ALIVE));
    // Misuse.
    let now = Instant::now();
    assert_eq!(
        Turn::new(now, "0.0.0.0:3478".parse().unwrap(), creds(), 12, [0; 12]).err(),
        Some(TurnError::BadServer("0.0.0.0:3478".parse().unwrap()))
    );
    let mut fresh = Relay::new();
    assert_eq!(
        fresh.t.permit(now, "10.0.0.1".parse().unwrap(), [1; 12]),
        Err(TurnError::NotAllocated)
    );
}

/// A Data indication from `peer` carrying `payload`.
fn data_indication(peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 256];
    let mut w = Writer::new(&mut b, Class::Indication, METHOD_DATA, &[7; 12]).unwrap();
    w.xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
    w.attribute(attr::DATA, payload).unwrap();
    let n = w.finish();
    b.truncate(n);
    b
}

#[test]
fn channel_numbers_read_as_short_headers_of_the_layout() {
    for cid_len in 1..=20u8 {
        let cfg = ClassifierConfig {
            cid_len,
            worker_offset: 0,
            reserved: [0; 6],
        };
        let mut seen = HashSet::new();
        for i in 0..MAX_CHANNELS {
            let n = channel_number(i, cid_len);
            assert!((0x4000..=0x4fff).contains(&n), "{n:#x}");
            assert!(seen.insert(n), "channel {n:#x} twice");
            // ChannelData of a 40-byte datagram passes the classifier as a short header.
            let mut d = vec![0u8; 44];
            d[..2].copy_from_slice(&n.to_be_bytes());
            d[2..4].copy_from_slice(&40u16.to_be_bytes());
            let h = classify_payload(&d, &cfg).expect("classified");
            assert_eq!(h.kind, PacketKind::Short);
        }
    }
}

/// An allocation with a permission for [`PEER`]: the relay, its key and the peer.
fn permitted() -> (Relay, [u8; 16], SocketAddr) {
    let mut r = Relay::new();
    let key = allocated(&mut r);
    let peer: SocketAddr = PEER.parse().unwrap();
    let id = r.txid();
    r.t.permit(r.now, peer.ip(), id).unwrap();
    let req = r.request();
    assert!(
        r.answer(&respond(&req, Class::Success, &[], Some(key)))
            .is_none()
    );
    (r, key, peer)
}

#[test]
fn a_peer_heard_through_the_relay_gets_a_channel() {
    let (mut r, key, peer) = permitted();
    // ChannelData before any channel: dropped.
    let number = channel_number(0, 12);
    let mut early = vec![0u8; 8];
    early[..2].copy_from_slice(&number.to_be_bytes());
    early[2..4].copy_from_slice(&4u16.to_be_bytes());
    assert!(r.t.channel_data(&early).is_none());
    assert_eq!(r.t.stats.dropped, 1);
    // The peer's first datagram through the relay starts a ChannelBind for it.
    assert!(r.answer(&data_indication(peer, b"first")).is_some());
    let bind = r.request();
    let m = Message::parse(&bind).unwrap();
    assert_eq!(
        (m.class(), m.method()),
        (Class::Request, METHOD_CHANNEL_BIND)
    );
    let nb = number.to_be_bytes();
    assert_eq!(
        m.get(attr::CHANNEL_NUMBER).unwrap().value,
        &[nb[0], nb[1], 0, 0]
    );
    assert_eq!(
        m.xor_address(m.get(attr::XOR_PEER_ADDRESS).unwrap().value),
        Ok(peer)
    );
    assert!(verifies(&bind, &key));
    // A second datagram does not bind again.
    assert!(r.answer(&data_indication(peer, b"second")).is_some());
    assert!(r.t.poll_transmit(r.now, &mut [0u8; 512]).is_none());
    // Until the relay confirms: Send indications.
    let mut buf = vec![0u8; 100];
    buf[..13].copy_from_slice(b"answer packet");
    let n = r.t.wrap(r.now, &mut buf, 13, peer, [3; 12]).unwrap();
    assert_eq!(Message::parse(&buf[..n]).unwrap().method(), METHOD_SEND);
    // Bound: ChannelData, 4 bytes in front.
    assert!(
        r.answer(&respond(&bind, Class::Success, &[], Some(key)))
            .is_none()
    );
    assert_eq!(r.t.stats.channels_bound, 1);
    buf[..13].copy_from_slice(b"answer packet");
    let n = r.t.wrap(r.now, &mut buf, 13, peer, [3; 12]).unwrap();
    assert_eq!(n, 17);
    assert_eq!(buf[..4], [nb[0], nb[1], 0, 13]);
    assert_eq!(&buf[4..17], b"answer packet");
    assert_eq!(r.t.stats.channel_sent, 1);
    // From the relay: exactly the length, or padded to 4; anything else is dropped.
    let (from, range) = r.t.channel_data(&buf[..17]).expect("ChannelData");
    assert_eq!((from, &buf[range]), (peer, &b"answer packet"[..]));
    assert!(r.t.channel_data(&buf[..20]).is_some(), "padded");
    let dropped = r.t.stats.dropped;
    assert!(r.t.channel_data(&buf[..16]).is_none(), "truncated");
    assert!(r.t.channel_data(&buf[..21]).is_none(), "over-padded");
    assert!(r.t.channel_data(&buf[..3]).is_none(), "no header");
    let mut other = buf[..17].to_vec();
    other[..2].copy_from_slice(&channel_number(1, 12).to_be_bytes());
    assert!(r.t.channel_data(&other).is_none(), "unbound channel");
    assert_eq!(r.t.stats.dropped, dropped + 4);
    assert_eq!(r.t.stats.channel_received, 2);
    // The binding is refreshed before its 10 minutes end.
    r.now += CHANNEL_REFRESH;
    let mut n = r.n;
    r.t.handle_timeout(r.now, || {
        n += 1;
        [n; 12]
    });
    r.n = n;
    let mut again = Vec::new();
    while let Some(req) = {
        let mut b = vec![0u8; 512];
        r.t.poll_transmit(r.now, &mut b).map(|n| b[..n].to_vec())
    } {
        again.push(Message::parse(&req).unwrap().method());
    }
    assert!(again.contains(&METHOD_CHANNEL_BIND), "{again:?}");
}

#[test]
fn a_refused_channel_leaves_the_peer_on_send_indications() {
    let (mut r, key, peer) = permitted();
    assert!(r.answer(&data_indication(peer, b"first")).is_some());
    let bind = r.request();
    let refused = respond(
        &bind,
        Class::Error,
        &[(attr::ERROR_CODE, b"\0\0\x04\x00Bad Request".to_vec())],
        Some(key),
    );
    assert!(r.answer(&refused).is_none());
    let mut buf = vec![0u8; 100];
    let n = r.t.wrap(r.now, &mut buf, 13, peer, [3; 12]).unwrap();
    assert_eq!(Message::parse(&buf[..n]).unwrap().method(), METHOD_SEND);
    // Not tried again, and the allocation is not reported failed.
    assert!(r.answer(&data_indication(peer, b"again")).is_some());
    assert!(r.t.poll_transmit(r.now, &mut [0u8; 512]).is_none());
    assert_eq!(r.t.poll_event(), Some(TurnEvent::Permitted(peer.ip())));
    assert_eq!(r.t.poll_event(), None);
}
