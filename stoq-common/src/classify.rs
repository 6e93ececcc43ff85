//! The packet classifier shared by the XDP program and userspace.
//!
//! [`classify_frame`] walks Ethernet (one optional 802.1Q tag), IPv4 or IPv6 and UDP, then
//! the STOQ header through the wire layer ([`crate::wire::header`]), and returns a
//! [`Verdict`]:
//!
//! - [`Verdict::Stoq`]: a well-formed STOQ packet, to be steered to an AF_XDP socket;
//! - [`Verdict::Drop`]: UDP to a STOQ port that cannot be a valid STOQ packet;
//! - [`Verdict::Pass`]: anything else, left to the kernel stack.
//!
//! Every read goes through [`Bytes`], so the same code passes the eBPF verifier and never
//! panics in userspace. The order of the checks is part of the contract (it decides which
//! counter a malformed packet lands in) and is written down in `docs/wire-format.md`.
//! The header types and [`classify_payload`] are re-exported here for the code that steers.

use crate::ptr::Bytes;
use crate::wire::header::classify_at;
pub use crate::wire::header::{
    ClassifierConfig, DropReason, HeaderInfo, PacketKind, classify_payload,
};
use crate::wire::{ethernet, ipv6};

/// Why a frame was left to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum PassReason {
    /// Not IPv4 or IPv6 (ARP, a second VLAN tag, ...).
    NotIp = 0,
    /// The Ethernet, IP or UDP header is cut short.
    Truncated = 1,
    /// An IP header with a bad version or header length.
    BadIpHeader = 2,
    /// An IPv4 fragment or an IPv6 packet with a fragment header.
    Fragment = 3,
    /// An IPv6 extension header, which the classifier does not walk.
    Ipv6Extension = 4,
    /// Not UDP.
    NotUdp = 5,
    /// UDP to a port that is not a STOQ port.
    OtherPort = 6,
}

impl PassReason {
    /// Every reason, in counter order.
    pub const ALL: [Self; 7] = [
        Self::NotIp,
        Self::Truncated,
        Self::BadIpHeader,
        Self::Fragment,
        Self::Ipv6Extension,
        Self::NotUdp,
        Self::OtherPort,
    ];

    /// A short, stable name for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::NotIp => "not_ip",
            Self::Truncated => "truncated",
            Self::BadIpHeader => "bad_ip_header",
            Self::Fragment => "fragment",
            Self::Ipv6Extension => "ipv6_extension",
            Self::NotUdp => "not_udp",
            Self::OtherPort => "other_port",
        }
    }
}

/// A steering decision for a well-formed STOQ packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steer {
    /// Packet kind.
    pub kind: PacketKind,
    /// Worker id carried in a short header's DCID.
    pub worker: Option<u8>,
    /// Offset of the IP header in the frame.
    pub ip_off: usize,
    /// Whether the IP header is IPv6 (else IPv4).
    pub ipv6: bool,
    /// Offset of the UDP payload in the frame.
    pub payload_off: usize,
    /// Length of the UDP payload.
    pub payload_len: usize,
}

/// The classifier's decision for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A well-formed STOQ packet.
    Stoq(Steer),
    /// Not for STOQ: hand to the kernel.
    Pass(PassReason),
    /// For a STOQ port but malformed: drop and count.
    Drop(DropReason),
}

/// Whether `b` holds at least `len` bytes, written as a read of the last byte so the check
/// is one the verifier understands.
#[inline(always)]
fn has(b: &Bytes<'_>, len: usize) -> bool {
    len == 0 || b.u8_at(len - 1).is_ok()
}

/// Classifies a whole Ethernet frame.
///
/// `is_stoq_port` says whether a UDP destination port belongs to STOQ (a map lookup in the
/// XDP program, a set lookup in userspace).
#[inline(always)]
pub fn classify_frame(
    b: Bytes<'_>,
    cfg: &ClassifierConfig,
    is_stoq_port: impl Fn(u16) -> bool,
) -> Verdict {
    // Ethernet, with at most one 802.1Q tag.
    let Ok(mut ethertype) = b.u16_at(12) else {
        return Verdict::Pass(PassReason::Truncated);
    };
    let mut l3 = ethernet::HEADER_LEN;
    if ethertype == ethernet::ETHERTYPE_VLAN {
        let Ok(inner) = b.u16_at(16) else {
            return Verdict::Pass(PassReason::Truncated);
        };
        ethertype = inner;
        l3 += ethernet::VLAN_TAG_LEN;
    }

    // IP: find the UDP header and where the IP payload ends.
    let (l4, ip_end) = match ethertype {
        ethernet::ETHERTYPE_IPV4 => {
            let Ok(vihl) = b.u8_at(l3) else {
                return Verdict::Pass(PassReason::Truncated);
            };
            let ihl = usize::from(vihl & 0x0f) * 4;
            if vihl >> 4 != 4 || ihl < 20 {
                return Verdict::Pass(PassReason::BadIpHeader);
            }
            if !has(&b, l3 + ihl) {
                return Verdict::Pass(PassReason::Truncated);
            }
            let Ok(total) = b.u16_at(l3 + 2) else {
                return Verdict::Pass(PassReason::Truncated);
            };
            let Ok(frag) = b.u16_at(l3 + 6) else {
                return Verdict::Pass(PassReason::Truncated);
            };
            let Ok(proto) = b.u8_at(l3 + 9) else {
                return Verdict::Pass(PassReason::Truncated);
            };
            let total = usize::from(total);
            if total < ihl {
                return Verdict::Pass(PassReason::BadIpHeader);
            }
            // MF set or a non-zero offset.
            if frag & 0x3fff != 0 {
                return Verdict::Pass(PassReason::Fragment);
            }
            if proto != 17 {
                return Verdict::Pass(PassReason::NotUdp);
            }
            (l3 + ihl, l3 + total)
        }
        ethernet::ETHERTYPE_IPV6 => {
            let Ok(v) = b.u8_at(l3) else {
                return Verdict::Pass(PassReason::Truncated);
            };
            let Ok(plen) = b.u16_at(l3 + 4) else {
                return Verdict::Pass(PassReason::Truncated);
            };
            let Ok(next) = b.u8_at(l3 + 6) else {
                return Verdict::Pass(PassReason::Truncated);
            };
            if v >> 4 != 6 {
                return Verdict::Pass(PassReason::BadIpHeader);
            }
            if !has(&b, l3 + ipv6::HEADER_LEN) {
                return Verdict::Pass(PassReason::Truncated);
            }
            if next == ipv6::NEXT_FRAGMENT {
                return Verdict::Pass(PassReason::Fragment);
            }
            if ipv6::is_extension_header(next) {
                return Verdict::Pass(PassReason::Ipv6Extension);
            }
            if next != 17 {
                return Verdict::Pass(PassReason::NotUdp);
            }
            (
                l3 + ipv6::HEADER_LEN,
                l3 + ipv6::HEADER_LEN + usize::from(plen),
            )
        }
        _ => return Verdict::Pass(PassReason::NotIp),
    };
    if !has(&b, ip_end) || ip_end < l4 + 8 {
        return Verdict::Pass(PassReason::Truncated);
    }

    // UDP.
    let Ok(dport) = b.u16_at(l4 + 2) else {
        return Verdict::Pass(PassReason::Truncated);
    };
    let Ok(ulen) = b.u16_at(l4 + 4) else {
        return Verdict::Pass(PassReason::Truncated);
    };
    if !is_stoq_port(dport) {
        return Verdict::Pass(PassReason::OtherPort);
    }
    let ulen = usize::from(ulen);
    if ulen < 8 || l4 + ulen > ip_end {
        return Verdict::Drop(DropReason::UdpLength);
    }
    let payload_off = l4 + 8;
    let payload_len = ulen - 8;
    match classify_at(&b, payload_off, payload_len, cfg) {
        Ok(h) => Verdict::Stoq(Steer {
            kind: h.kind,
            worker: h.worker,
            ip_off: l3,
            ipv6: ethertype == ethernet::ETHERTYPE_IPV6,
            payload_off,
            payload_len,
        }),
        Err(r) => Verdict::Drop(r),
    }
}

#[cfg(test)]
mod tests {
    //! Whole frames as bytes, as they arrive at the XDP hook: one IPv4 and one IPv6
    //! datagram to port 4433 holding a short-header packet, and single-byte edits of them.
    use super::*;
    use crate::cid::CidLayout;

    /// Ethernet, IPv4 (DF set), UDP 5000 → 4433, and a 40-byte short-header packet whose
    /// 12-byte DCID carries worker 7.
    #[rustfmt::skip]
    const IPV4: [u8; 82] = [
        // Ethernet: dst, src, IPv4
        0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00,
        // IPv4: version/IHL, TOS, total 68, id, DF, TTL 64, UDP, checksum, 10.200.0.1 → .2
        0x45, 0x00, 0x00, 0x44, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00,
        10, 200, 0, 1, 10, 200, 0, 2,
        // UDP: 5000 → 4433, length 48, checksum
        0x13, 0x88, 0x11, 0x51, 0x00, 0x30, 0x00, 0x00,
        // STOQ short header: first byte, DCID (length 12, server 0x0001, worker 7, nonce)
        0x41, 0x0b, 0x00, 0x01, 0x07, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8,
        // Protected packet number and payload
        0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee,
        0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee, 0xee,
    ];

    /// Offsets into [`IPV4`].
    const ETHERTYPE: usize = 12;
    const IP_FLAGS: usize = 20;
    const IP_PROTO: usize = 23;
    const UDP_LEN: usize = 38;
    const PAYLOAD: usize = 42;

    fn cfg() -> ClassifierConfig {
        ClassifierConfig::new(&CidLayout::DEFAULT)
    }

    fn classify(frame: &[u8]) -> Verdict {
        classify_frame(Bytes::new(frame), &cfg(), |p| p == 4433)
    }

    /// The IPv6 frame: [`IPV4`]'s UDP datagram behind a 40-byte IPv6 header.
    fn ipv6(next_header: u8) -> [u8; 102] {
        let mut f = [0u8; 102];
        f[..14].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x86, 0xdd]);
        #[rustfmt::skip]
        f[14..54].copy_from_slice(&[
            0x60, 0, 0, 0, 0x00, 0x30, next_header, 64,
            0xfd, 0x00, 0x57, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            0xfd, 0x00, 0x57, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
        ]);
        f[54..].copy_from_slice(&IPV4[34..]);
        f
    }

    #[test]
    fn a_short_header_packet_is_steered_to_its_worker() {
        let want = Steer {
            kind: PacketKind::Short,
            worker: Some(7),
            ip_off: 14,
            ipv6: false,
            payload_off: PAYLOAD,
            payload_len: 40,
        };
        assert_eq!(classify(&IPV4), Verdict::Stoq(want));
        let v6 = ipv6(17);
        assert_eq!(
            classify(&v6),
            Verdict::Stoq(Steer {
                ipv6: true,
                payload_off: 14 + 40 + 8,
                ..want
            })
        );
    }

    #[test]
    fn one_vlan_tag_is_skipped() {
        let mut f = [0u8; 86];
        f[..ETHERTYPE].copy_from_slice(&IPV4[..ETHERTYPE]);
        f[ETHERTYPE..ETHERTYPE + 4].copy_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        f[ETHERTYPE + 4..].copy_from_slice(&IPV4[ETHERTYPE..]);
        let Verdict::Stoq(s) = classify(&f) else {
            panic!("{:?}", classify(&f));
        };
        assert_eq!(
            (s.ip_off, s.payload_off, s.worker),
            (18, PAYLOAD + 4, Some(7))
        );
    }

    #[test]
    fn what_is_not_stoq_passes_to_the_kernel_with_its_reason() {
        let edit = |at: usize, v: u8| {
            let mut f = IPV4;
            f[at] = v;
            classify(&f)
        };
        assert_eq!(edit(ETHERTYPE + 1, 0x06), Verdict::Pass(PassReason::NotIp));
        assert_eq!(
            edit(17, 0x10),
            Verdict::Pass(PassReason::BadIpHeader),
            "total < IHL"
        );
        assert_eq!(
            edit(17, 0xff),
            Verdict::Pass(PassReason::Truncated),
            "total > frame"
        );
        assert_eq!(edit(14, 0x55), Verdict::Pass(PassReason::BadIpHeader));
        assert_eq!(
            edit(IP_FLAGS, 0x20),
            Verdict::Pass(PassReason::Fragment),
            "MF"
        );
        assert_eq!(
            edit(IP_FLAGS + 1, 0x01),
            Verdict::Pass(PassReason::Fragment),
            "offset"
        );
        assert_eq!(edit(IP_PROTO, 6), Verdict::Pass(PassReason::NotUdp));
        assert_eq!(edit(37, 0x52), Verdict::Pass(PassReason::OtherPort));
        assert_eq!(classify(&IPV4[..40]), Verdict::Pass(PassReason::Truncated));
        assert_eq!(classify(&ipv6(44)), Verdict::Pass(PassReason::Fragment));
        assert_eq!(classify(&ipv6(0)), Verdict::Pass(PassReason::Ipv6Extension));
        assert_eq!(classify(&ipv6(6)), Verdict::Pass(PassReason::NotUdp));
    }

    #[test]
    fn a_malformed_datagram_to_a_stoq_port_is_dropped_with_its_reason() {
        let mut f = IPV4;
        f[UDP_LEN + 1] = 0x04;
        assert_eq!(
            classify(&f),
            Verdict::Drop(DropReason::UdpLength),
            "UDP length 4"
        );
        let mut f = IPV4;
        f[UDP_LEN + 1] = 0x31;
        assert_eq!(
            classify(&f),
            Verdict::Drop(DropReason::UdpLength),
            "past the IP end"
        );
        let mut f = IPV4;
        f[PAYLOAD] = 0x01;
        assert_eq!(classify(&f), Verdict::Drop(DropReason::FixedBit));
        let mut f = IPV4;
        f[PAYLOAD + 1] = 0x07;
        assert_eq!(classify(&f), Verdict::Drop(DropReason::CidLength));
        // A long-header Initial in a 40-byte datagram.
        let mut f = IPV4;
        f[PAYLOAD..PAYLOAD + 6].copy_from_slice(&[0xc0, 0x53, 0x54, 0x4f, 0x01, 0x08]);
        f[PAYLOAD + 14] = 0;
        assert_eq!(classify(&f), Verdict::Drop(DropReason::InitialTooSmall));
        // The same bytes with an unknown version.
        f[PAYLOAD + 4] = 0x02;
        assert_eq!(classify(&f), Verdict::Drop(DropReason::UnsupportedVersion));
    }
}
