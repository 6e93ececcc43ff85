//! Builders for Ethernet frames and STOQ payloads, on top of `stoq_common`'s `Repr::emit`.

use std::net::IpAddr;

use stoq_common::cid::{CidLayout, ConnectionId};
use stoq_common::wire::ethernet::{self, Address};
use stoq_common::wire::stoq::{MIN_INITIAL_DATAGRAM, Repr, VERSION_1};
use stoq_common::wire::{ipv4, ipv6, udp};

/// The STOQ port the tests configure.
pub const STOQ_PORT: u16 = 4433;
/// A UDP port that is not STOQ's.
pub const OTHER_PORT: u16 = 5353;
/// MAC of the test sender.
pub const SRC_MAC: Address = Address([0x02, 0, 0, 0, 0, 0x01]);
/// MAC of the test receiver.
pub const DST_MAC: Address = Address([0x02, 0, 0, 0, 0, 0x02]);

/// Addresses used in hand-made frames (inside the 10.200.0.0/16 and fd00:5710::/64 ranges
/// reserved for STOQ's tests).
pub fn addrs(v6: bool) -> (IpAddr, IpAddr) {
    if v6 {
        (
            "fd00:5710::1".parse().expect("literal"),
            "fd00:5710::2".parse().expect("literal"),
        )
    } else {
        (
            "10.200.0.1".parse().expect("literal"),
            "10.200.0.2".parse().expect("literal"),
        )
    }
}

/// How to wrap a UDP payload in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wrap {
    /// IPv6 instead of IPv4.
    pub v6: bool,
    /// An 802.1Q tag with this VLAN id.
    pub vlan: Option<u16>,
    /// UDP destination port.
    pub dst_port: u16,
}

impl Wrap {
    /// IPv4, untagged, to the STOQ port.
    pub const V4: Self = Self {
        v6: false,
        vlan: None,
        dst_port: STOQ_PORT,
    };
    /// IPv6, untagged, to the STOQ port.
    pub const V6: Self = Self {
        v6: true,
        vlan: None,
        dst_port: STOQ_PORT,
    };
}

/// Builds Ethernet + IP + UDP around `payload`, with valid lengths and checksums.
pub fn udp_frame(w: Wrap, payload: &[u8]) -> Vec<u8> {
    let (src, dst) = addrs(w.v6);
    let eth = ethernet::Repr {
        src: SRC_MAC,
        dst: DST_MAC,
        vlan: w.vlan,
        ethertype: if w.v6 {
            ethernet::ETHERTYPE_IPV6
        } else {
            ethernet::ETHERTYPE_IPV4
        },
    };
    let udp_len = udp::HEADER_LEN + payload.len();
    let ip_len = if w.v6 {
        ipv6::HEADER_LEN
    } else {
        ipv4::MIN_HEADER_LEN
    };
    let mut f = vec![0u8; eth.buffer_len() + ip_len + udp_len];
    let l3 = eth.emit(&mut f).expect("sized");
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ipv4::Repr {
                src: s,
                dst: d,
                protocol: ipv4::PROTO_UDP,
                payload_len: udp_len,
                ttl: 64,
                tos: 0,
            }
            .emit(&mut f[l3..])
            .expect("sized");
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            ipv6::Repr {
                src: s,
                dst: d,
                next_header: 17,
                payload_len: udp_len,
                hop_limit: 64,
                traffic_class: 0,
            }
            .emit(&mut f[l3..])
            .expect("sized");
        }
        _ => unreachable!("addrs returns one family"),
    }
    let l4 = l3 + ip_len;
    f[l4 + udp::HEADER_LEN..].copy_from_slice(payload);
    udp::Repr {
        src_port: 40000,
        dst_port: w.dst_port,
        payload_len: payload.len(),
    }
    .emit(&mut f[l4..], src, dst)
    .expect("sized");
    f
}

/// Offset of the UDP header in a frame built by [`udp_frame`].
pub fn l4_offset(w: Wrap) -> usize {
    let l2 = if w.vlan.is_some() { 18 } else { 14 };
    l2 + if w.v6 {
        ipv6::HEADER_LEN
    } else {
        ipv4::MIN_HEADER_LEN
    }
}

/// A CID in `layout` for `worker`.
pub fn cid(layout: &CidLayout, worker: u8) -> ConnectionId {
    let nonce = vec![0x5a; layout.nonce_len()];
    layout
        .build(1, 0x0102, worker, &nonce)
        .expect("valid layout")
}

/// A client-chosen CID of `len` bytes (Initial DCIDs need not follow the layout).
pub fn random_cid(len: usize) -> ConnectionId {
    ConnectionId::from_slice(&vec![0xc1; len]).expect("len <= 20")
}

/// A short-header packet of `len` bytes (header + protected bytes).
pub fn short(layout: &CidLayout, worker: u8, len: usize) -> Vec<u8> {
    let mut b = vec![0x77u8; len.max(1 + layout.len())];
    Repr::Short {
        dcid: cid(layout, worker),
        spin: false,
    }
    .emit(&mut b)
    .expect("sized");
    b.truncate(len);
    b
}

/// An Initial filling a datagram of `datagram_len` bytes (Length covers the rest).
pub fn initial(dcid_len: usize, datagram_len: usize) -> Vec<u8> {
    let mut b = vec![0u8; datagram_len.max(64)];
    let probe = Repr::Initial {
        dcid: random_cid(dcid_len),
        scid: random_cid(8),
        token: &[],
        length: 0,
    };
    let hl = probe.buffer_len();
    let length = datagram_len.saturating_sub(hl) as u64;
    Repr::Initial {
        dcid: random_cid(dcid_len),
        scid: random_cid(8),
        token: &[],
        length,
    }
    .emit(&mut b)
    .expect("sized");
    b.truncate(datagram_len);
    b
}

/// A full-size client Initial (1200 bytes).
pub fn initial_full() -> Vec<u8> {
    initial(8, MIN_INITIAL_DATAGRAM)
}

/// A Handshake packet with `body` bytes after the header.
pub fn handshake(layout: &CidLayout, body: usize) -> Vec<u8> {
    let r = Repr::Handshake {
        dcid: cid(layout, 3),
        scid: random_cid(8),
        length: body as u64,
    };
    let mut b = vec![0x33u8; r.buffer_len() + body];
    r.emit(&mut b).expect("sized");
    b
}

/// A 0-RTT packet to a `dcid_len`-byte CID the client chose, with `body` bytes after the
/// header.
pub fn zero_rtt(dcid_len: usize, body: usize) -> Vec<u8> {
    let r = Repr::ZeroRtt {
        dcid: random_cid(dcid_len),
        scid: random_cid(8),
        length: body as u64,
    };
    let mut b = vec![0x55u8; r.buffer_len() + body];
    r.emit(&mut b).expect("sized");
    b
}

/// A Retry with a token of `token_len` bytes.
pub fn retry(layout: &CidLayout, token_len: usize) -> Vec<u8> {
    let token = vec![0x44u8; token_len];
    let r = Repr::Retry {
        dcid: cid(layout, 2),
        scid: random_cid(8),
        token: &token,
        tag: [0x99; 16],
    };
    let mut b = vec![0u8; r.buffer_len()];
    r.emit(&mut b).expect("sized");
    b
}

/// A Version Negotiation packet listing `n` versions.
pub fn version_negotiation(n: usize) -> Vec<u8> {
    let versions: Vec<u8> = (0..n).flat_map(|_| VERSION_1.to_be_bytes()).collect();
    let mut b = vec![0u8; 7 + 16 + versions.len()];
    let r = Repr::VersionNegotiation {
        dcid: random_cid(8),
        scid: random_cid(8),
        versions: &versions,
    };
    let n = r.emit(&mut b).expect("sized");
    b.truncate(n);
    b
}

/// A long header of an unknown version, `len` bytes long.
pub fn unknown_version(len: usize) -> Vec<u8> {
    let mut b = initial(8, len.max(64));
    b[1..5].copy_from_slice(&0x1a2a_3a4au32.to_be_bytes());
    b.truncate(len);
    b
}

/// Rewrites the IP and UDP length fields (and checksums) of a frame built by [`udp_frame`]
/// after its UDP payload was cut to `payload_len` bytes.
pub fn resize_datagram(w: Wrap, frame: &[u8], payload_len: usize) -> Vec<u8> {
    let l4 = l4_offset(w);
    let payload = &frame[l4 + udp::HEADER_LEN..l4 + udp::HEADER_LEN + payload_len];
    udp_frame(w, payload)
}

/// The addressing of a received UDP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Ethernet header.
    pub eth: ethernet::Repr,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// UDP payload.
    pub payload: Vec<u8>,
    /// Whether the UDP checksum verified. Over veth the sender's kernel leaves it
    /// unfinished (checksum offload, CHECKSUM_PARTIAL), so XDP sees a partial sum.
    pub checksum_ok: bool,
}

/// Parses an Ethernet/IP/UDP frame with the typed views (IPv4 header checksum verified;
/// the UDP checksum is reported, see [`Received::checksum_ok`]).
pub fn parse_udp(frame: &[u8]) -> Option<Received> {
    let e = ethernet::Packet::new_checked(frame).ok()?;
    let eth = ethernet::Repr::parse(&e).ok()?;
    let (src, dst, l4): (IpAddr, IpAddr, &[u8]) = match eth.ethertype {
        ethernet::ETHERTYPE_IPV4 => {
            let p = ipv4::Packet::new_checked(e.payload()).ok()?;
            let r = ipv4::Repr::parse(&p).ok()?;
            let hl = p.header_len();
            (
                r.src.into(),
                r.dst.into(),
                &e.payload()[hl..hl + r.payload_len],
            )
        }
        ethernet::ETHERTYPE_IPV6 => {
            let p = ipv6::Packet::new_checked(e.payload()).ok()?;
            let r = ipv6::Repr::parse(&p).ok()?;
            if r.next_header != 17 {
                return None;
            }
            (
                r.src.into(),
                r.dst.into(),
                &e.payload()[ipv6::HEADER_LEN..ipv6::HEADER_LEN + r.payload_len],
            )
        }
        _ => return None,
    };
    let u = udp::Packet::new_checked(l4).ok()?;
    Some(Received {
        eth,
        src,
        dst,
        src_port: u.src_port(),
        dst_port: u.dst_port(),
        payload: u.payload().to_vec(),
        checksum_ok: u.verify_checksum(src, dst),
    })
}

/// Writes, into `out`, a frame answering `rx` with `payload` (MACs, addresses and ports
/// swapped; fresh lengths and checksums). Returns its length, or `None` if `out` is small.
pub fn reply_into(rx: &Received, payload: &[u8], out: &mut [u8]) -> Option<usize> {
    let eth = ethernet::Repr {
        src: rx.eth.dst,
        dst: rx.eth.src,
        vlan: rx.eth.vlan,
        ethertype: rx.eth.ethertype,
    };
    let udp_len = udp::HEADER_LEN + payload.len();
    let l3 = eth.emit(out).ok()?;
    let l4 = match (rx.dst, rx.src) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let r = ipv4::Repr {
                src: s,
                dst: d,
                protocol: ipv4::PROTO_UDP,
                payload_len: udp_len,
                ttl: 64,
                tos: 0,
            };
            l3 + r.emit(out.get_mut(l3..)?).ok()?
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let r = ipv6::Repr {
                src: s,
                dst: d,
                next_header: 17,
                payload_len: udp_len,
                hop_limit: 64,
                traffic_class: 0,
            };
            l3 + r.emit(out.get_mut(l3..)?).ok()?
        }
        _ => return None,
    };
    out.get_mut(l4 + udp::HEADER_LEN..l4 + udp_len)?
        .copy_from_slice(payload);
    udp::Repr {
        src_port: rx.dst_port,
        dst_port: rx.src_port,
        payload_len: payload.len(),
    }
    .emit(out.get_mut(l4..)?, rx.dst, rx.src)
    .ok()?;
    Some(l4 + udp_len)
}
