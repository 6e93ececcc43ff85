//! STUN on arbitrary bytes, two ways.
//!
//! - The codec: `Message::parse` never panics and does bounded work (at most 32
//!   attributes); a message it accepts yields attributes that lie inside it, and decoding
//!   its addresses and error code never panics. Re-emitting the attributes with the
//!   writer gives a message that parses to the same attributes.
//! - The Binding client: an endpoint with a transaction running is fed the input, split
//!   into datagrams, as if from the STUN server it asked and from another address. It
//!   never sends a STUN request to any address but the server's, sends at most 7, reports at
//!   most one outcome, and a datagram that does not end the transaction leaves it running.
//! - The TURN client: an endpoint allocating on a relay is fed the input as the relay's
//!   datagrams (with the last request's ID patched in when asked): it sends TURN requests
//!   to the relay only and never panics on a response, a 401, a Data indication or
//!   ChannelData (input whose first byte is 0x40-0x4F, from the relay's address).
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use stoq::conn::{DatagramInfo, Endpoint, EndpointConfig};
use stoq_common::wire::stun::{Message, Writer};

fn codec(data: &[u8]) {
    let Ok(m) = Message::parse(data) else {
        return;
    };
    let _ = (m.class(), m.method(), m.transaction_id(), m.software());
    let _ = (m.mapped_address(), m.error_code(), m.unknown_required(&[1, 32]));
    let mut out = vec![0u8; data.len() + 8];
    let class = m.class();
    let mut w = Writer::new(&mut out, class, m.method(), &m.transaction_id()).unwrap();
    let mut n = 0;
    for a in m.attributes() {
        assert!(a.offset + 4 + a.value.len() <= data.len());
        if a.kind != stoq_common::wire::stun::attr::FINGERPRINT {
            w.attribute(a.kind, a.value).unwrap();
            n += 1;
        }
    }
    assert!(n <= stoq_common::wire::stun::MAX_ATTRIBUTES);
    let len = w.finish();
    let again = Message::parse(&out[..len]).expect("re-emitted message parses");
    assert!(
        again
            .attributes()
            .map(|a| (a.kind, a.value))
            .eq(m.attributes().filter(|a| a.kind != 0x8028).map(|a| (a.kind, a.value)))
    );
    assert_eq!(again.class(), class);
}

/// Whether a datagram the endpoint sent is a STUN request, which must go to the server.
/// (Anything else is STOQ's own answer to a datagram, such as a stateless reset, which
/// goes back to its source.)
fn stun_request(d: &[u8], to: SocketAddr, server: SocketAddr) -> bool {
    let stun = Message::parse(d).is_ok();
    if stun {
        assert_eq!(to, server, "a STUN request to another address");
    }
    stun
}

fn client(data: &[u8]) {
    let server: SocketAddr = "192.0.2.10:3478".parse().unwrap();
    let other: SocketAddr = "192.0.2.10:3479".parse().unwrap();
    let mut ep = Endpoint::new(EndpointConfig::new(), None).unwrap();
    let mut now = Instant::now();
    ep.stun_binding(now, server, Duration::from_secs(5)).unwrap();
    let mut buf = Vec::new();
    let mut sent = 0;
    let mut txid = [0u8; 12];
    let mut outcomes = 0;
    // Datagrams: a length byte, then that many bytes; the high bit of the length byte
    // picks the other source. Each is also tried with the real transaction ID patched in.
    let mut rest = data;
    while let Some((&l, tail)) = rest.split_first() {
        while let Some(t) = ep.poll_transmit(now, &mut buf) {
            if stun_request(&buf[..t.size], t.destination, server) {
                txid.copy_from_slice(&buf[8..20]);
                sent += 1;
            }
        }
        let n = usize::from(l & 0x7f).min(tail.len());
        let from = if l & 0x80 != 0 { other } else { server };
        let mut d = tail[..n].to_vec();
        if d.len() >= 20 && d[0] & 1 == 1 {
            d[8..20].copy_from_slice(&txid);
            // And a correct header, so the fuzzer reaches the attributes.
            if d[1] & 1 == 1 {
                let len = u16::try_from((d.len() - 20) & !3).unwrap_or(0);
                d.truncate(20 + usize::from(len));
                d[2..4].copy_from_slice(&len.to_be_bytes());
                d[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
                d[0] &= 0x3f;
            }
        }
        let _ = ep.handle_datagram(now, from, DatagramInfo::default(), &mut d);
        while ep.poll_binding().is_some() {
            outcomes += 1;
        }
        now += Duration::from_millis(u64::from(l) * 4);
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        rest = &tail[n..];
    }
    while let Some(t) = ep.poll_transmit(now, &mut buf) {
        if stun_request(&buf[..t.size], t.destination, server) {
            sent += 1;
        }
    }
    while ep.poll_binding().is_some() {
        outcomes += 1;
    }
    assert!(sent <= 7, "{sent} requests");
    assert!(outcomes <= 1, "{outcomes} outcomes");
}

/// A TURN client fed hostile datagrams from its relay: TURN requests go to the relay only,
/// nothing is relayed to a peer without a permission, and a relayed datagram's range lies
/// inside what was received.
fn turn(data: &[u8]) {
    let relay: SocketAddr = "192.0.2.20:3478".parse().unwrap();
    let mut ep = Endpoint::new(EndpointConfig::new(), None).unwrap();
    let mut now = Instant::now();
    let creds = stoq::nat::turn::TurnCredentials {
        username: "u".into(),
        password: "p".into(),
    };
    ep.turn_allocate(now, relay, creds).unwrap();
    let mut buf = Vec::new();
    let mut txid = [0u8; 12];
    let mut rest = data;
    while let Some((&l, tail)) = rest.split_first() {
        while let Some(t) = ep.poll_transmit(now, &mut buf) {
            if Message::parse(&buf[..t.size]).is_ok() {
                assert_eq!(t.destination, relay, "a TURN request to another address");
                txid.copy_from_slice(&buf[8..20]);
            }
        }
        let n = usize::from(l & 0x7f).min(tail.len());
        let mut d = tail[..n].to_vec();
        if d.len() >= 20 && l & 0x80 != 0 {
            // Answer the last request: its ID and a well-formed header.
            d[8..20].copy_from_slice(&txid);
            let len = u16::try_from((d.len() - 20) & !3).unwrap_or(0);
            d.truncate(20 + usize::from(len));
            d[2..4].copy_from_slice(&len.to_be_bytes());
            d[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
            d[0] &= 0x3f;
        }
        let _ = ep.handle_datagram(now, relay, DatagramInfo::default(), &mut d);
        while ep.poll_turn().is_some() {}
        now += Duration::from_millis(u64::from(l) * 40);
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        rest = &tail[n..];
    }
    let s = ep.stats().turn;
    // Nothing was sent through the relay: no connection exists to send anything.
    assert_eq!(s.relayed_sent, 0);
}

fuzz_target!(|data: &[u8]| {
    codec(data);
    client(data);
    turn(data);
});
