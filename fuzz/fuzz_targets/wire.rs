//! Every stoq-common parser on arbitrary bytes: Ethernet, IPv4, IPv6, UDP, the STOQ
//! header, varints and connection IDs. No panic; whatever parses re-emits to bytes that
//! parse to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stoq_common::cid::{CidLayout, ConnectionId};
use stoq_common::maps::ClassifierConfig;
use stoq_common::varint::VarInt;
use stoq_common::wire::{ethernet, ipv4, ipv6, stoq, udp};

fuzz_target!(|data: &[u8]| {
    if let Ok((v, n)) = VarInt::decode(data) {
        let mut out = [0u8; 8];
        let m = v.encode(&mut out).expect("8 bytes fit any varint");
        assert!(m <= n);
        assert_eq!(VarInt::decode(&out[..m]).expect("re-decodes").0, v);
    }

    if let Ok(p) = ethernet::Packet::new_checked(data) {
        let r = ethernet::Repr::parse(&p).expect("checked packet parses");
        let _ = p.payload();
        let mut out = [0u8; 18];
        let n = r.emit(&mut out).expect("fits");
        assert_eq!(
            ethernet::Repr::parse(&ethernet::Packet::new_checked(&out[..n]).expect("re-checks")),
            Ok(r)
        );
    }

    if let Ok(p) = ipv4::Packet::new_checked(data) {
        let _ = (p.payload(), p.verify_checksum(), p.is_fragment());
        if let Ok(r) = ipv4::Repr::parse(&p) {
            let mut out = vec![0u8; 20 + r.payload_len];
            r.emit(&mut out).expect("fits");
            assert_eq!(
                ipv4::Repr::parse(&ipv4::Packet::new_checked(&out[..]).expect("re-checks")),
                Ok(r)
            );
        }
    }

    if let Ok(p) = ipv6::Packet::new_checked(data) {
        let r = ipv6::Repr::parse(&p).expect("checked packet parses");
        let _ = p.payload();
        let mut out = vec![0u8; 40 + r.payload_len];
        r.emit(&mut out).expect("fits");
        assert_eq!(
            ipv6::Repr::parse(&ipv6::Packet::new_checked(&out[..]).expect("re-checks")),
            Ok(r)
        );
    }

    if let Ok(p) = udp::Packet::new_checked(data) {
        let r = udp::Repr::parse(&p).expect("checked packet parses");
        let (s, d) = (
            "10.200.0.1".parse().expect("lit"),
            "10.200.0.2".parse().expect("lit"),
        );
        let _ = p.verify_checksum(s, d);
        let mut out = vec![0u8; 8 + r.payload_len];
        out[8..].copy_from_slice(p.payload());
        r.emit(&mut out, s, d).expect("fits");
        let q = udp::Packet::new_checked(&out[..]).expect("re-checks");
        assert!(q.verify_checksum(s, d));
        assert_eq!(udp::Repr::parse(&q), Ok(r));
    }

    let layout = CidLayout::DEFAULT;
    let cfg = ClassifierConfig::new(&layout);
    if let Ok(r) = stoq::Repr::parse(data, &cfg) {
        let mut out = vec![0u8; r.buffer_len()];
        if let Ok(n) = r.emit(&mut out) {
            // Long headers with Length re-parse once the protected bytes are present.
            let body = match r {
                stoq::Repr::Initial { length, .. }
                | stoq::Repr::Handshake { length, .. }
                | stoq::Repr::ZeroRtt { length, .. } => length as usize,
                stoq::Repr::Short { .. } => data.len().saturating_sub(n),
                _ => 0,
            };
            out.resize(n + body, 0);
            if let stoq::Repr::Initial { .. } = r {
                out.resize(out.len().max(1200), 0);
            }
            assert_eq!(stoq::Repr::parse(&out, &cfg), Ok(r));
        }
    }

    if let Ok(cid) = ConnectionId::from_slice(&data[..data.len().min(20)]) {
        let _ = (
            layout.worker_id(&cid),
            layout.server_id(&cid),
            format!("{cid:?}"),
        );
    }
});
