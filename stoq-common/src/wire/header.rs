//! The STOQ header, parsed in place: what kind of packet a datagram starts with and where
//! its parts lie ([`HeaderInfo`]), or why it cannot be a STOQ packet ([`DropReason`]).
//!
//! This is the wire layer's half of the classifier: the XDP program's
//! [`classify_frame`](crate::classify::classify_frame) steers on top of it, and userspace
//! calls [`classify_payload`] on datagrams it received through a socket. Every read goes
//! through [`Bytes`], so the same code passes the eBPF verifier and never panics. The
//! order of the checks is part of the contract (it decides which counter a malformed
//! packet lands in) and is written down in `docs/wire-format.md`.

use crate::ptr::Bytes;
use crate::wire::stoq::{
    LONG_TYPE_HANDSHAKE, LONG_TYPE_INITIAL, LONG_TYPE_RETRY, MIN_INITIAL_DATAGRAM,
    MIN_PROTECTED_LEN, RETRY_TAG_LEN, VERSION_1, VERSION_NEGOTIATION,
};

/// Why a datagram to a STOQ port was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum DropReason {
    /// Shorter than the smallest packet of its form (header + packet-number sample).
    TooShort = 0,
    /// The fixed bit (0x40) is clear.
    FixedBit = 1,
    /// An Initial in a UDP datagram under 1200 bytes (RFC 9000 §14.1).
    InitialTooSmall = 2,
    /// A connection ID whose length does not match the configured layout or the limits.
    CidLength = 3,
    /// A token or Length field that runs past the datagram.
    LengthField = 4,
    /// An unknown version in a datagram under 1200 bytes (RFC 9000 §5.2.2).
    UnsupportedVersion = 5,
    /// The UDP length field is smaller than 8 or runs past the IP payload.
    UdpLength = 6,
    /// A Version Negotiation packet whose version list is empty or ragged.
    MalformedVersionNegotiation = 7,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [Self; 8] = [
        Self::TooShort,
        Self::FixedBit,
        Self::InitialTooSmall,
        Self::CidLength,
        Self::LengthField,
        Self::UnsupportedVersion,
        Self::UdpLength,
        Self::MalformedVersionNegotiation,
    ];

    /// A short, stable name for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::FixedBit => "fixed_bit",
            Self::InitialTooSmall => "initial_too_small",
            Self::CidLength => "cid_length",
            Self::LengthField => "length_field",
            Self::UnsupportedVersion => "unsupported_version",
            Self::UdpLength => "udp_length",
            Self::MalformedVersionNegotiation => "malformed_version_negotiation",
        }
    }
}

/// What kind of STOQ packet the first packet in the datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum PacketKind {
    /// Long header, type Initial.
    Initial = 0,
    /// Long header, type Handshake.
    Handshake = 1,
    /// Long header, type Retry.
    Retry = 2,
    /// Short header (1-RTT).
    Short = 3,
    /// Version Negotiation (version 0).
    VersionNegotiation = 4,
    /// A long header of another version in a datagram of at least 1200 bytes: userspace
    /// answers it with Version Negotiation.
    UnknownVersion = 5,
    /// Long header, type 0-RTT: a resuming client's early data.
    ZeroRtt = 6,
    /// Not STOQ: a STUN message (RFC 8489) on a STOQ port, the answer to an endpoint's
    /// Binding request for its reflexive address. Told apart by RFC 7983's first-byte
    /// range (0 to 3, where STOQ's fixed bit is clear), the magic cookie and a length
    /// that is the datagram's; steered by the first byte of its transaction ID, which
    /// names the worker that sent the request ([`HeaderInfo::worker`]).
    Stun = 7,
}

impl PacketKind {
    /// Every kind, in counter order.
    pub const ALL: [Self; 8] = [
        Self::Initial,
        Self::Handshake,
        Self::Retry,
        Self::Short,
        Self::VersionNegotiation,
        Self::UnknownVersion,
        Self::ZeroRtt,
        Self::Stun,
    ];

    /// A short, stable name for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Handshake => "handshake",
            Self::Retry => "retry",
            Self::Short => "short",
            Self::VersionNegotiation => "version_negotiation",
            Self::UnknownVersion => "unknown_version",
            Self::ZeroRtt => "zero_rtt",
            Self::Stun => "stun",
        }
    }
}

/// Where the parts of a well-formed STOQ header lie, as offsets into the bytes given to
/// [`classify_payload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderInfo {
    /// Packet kind.
    pub kind: PacketKind,
    /// Version (0 for short headers, which carry none).
    pub version: u32,
    /// Offset of the destination CID.
    pub dcid_off: usize,
    /// Length of the destination CID.
    pub dcid_len: usize,
    /// Offset of the source CID (long headers; 0 otherwise).
    pub scid_off: usize,
    /// Length of the source CID (long headers; 0 otherwise).
    pub scid_len: usize,
    /// Offset of the token (Initial and Retry; 0 otherwise).
    pub token_off: usize,
    /// Length of the token (Initial and Retry; 0 otherwise).
    pub token_len: usize,
    /// Offset of the (protected) packet number for Initial, 0-RTT, Handshake and short packets;
    /// for Version Negotiation the offset of the version list.
    pub pn_off: usize,
    /// The Length field (packet number + payload) of Initial, 0-RTT and Handshake; 0 otherwise.
    pub length: u64,
    /// Worker id from the DCID of a short header, per the configured layout; for a STUN
    /// message, the first byte of its transaction ID.
    pub worker: Option<u8>,
}

/// Classifier settings written by userspace before the program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct ClassifierConfig {
    /// Length of every CID this endpoint issues (the short-header DCID length).
    pub cid_len: u8,
    /// Offset of the worker id inside the CID.
    pub worker_offset: u8,
    /// Reserved, zero. Keeps the struct free of implicit padding.
    pub reserved: [u8; 6],
}

impl ClassifierConfig {
    /// The 8 bytes of the map value, as userspace writes them (a `u64` in native byte
    /// order, so no `unsafe impl Pod` is needed for this type).
    pub const fn to_u64(&self) -> u64 {
        let r = self.reserved;
        u64::from_ne_bytes([
            self.cid_len,
            self.worker_offset,
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
        ])
    }

    /// The inverse of [`to_u64`](Self::to_u64).
    pub const fn from_u64(v: u64) -> Self {
        let b = v.to_ne_bytes();
        Self {
            cid_len: b[0],
            worker_offset: b[1],
            reserved: [b[2], b[3], b[4], b[5], b[6], b[7]],
        }
    }

    /// The configuration for a CID layout.
    pub const fn new(layout: &crate::cid::CidLayout) -> Self {
        Self {
            cid_len: layout.len() as u8,
            worker_offset: layout.worker_offset() as u8,
            reserved: [0; 6],
        }
    }
}

/// Classifies a UDP payload (one datagram) on its own, returning where its first header's
/// parts lie.
#[inline(always)]
pub fn classify_payload(payload: &[u8], cfg: &ClassifierConfig) -> Result<HeaderInfo, DropReason> {
    classify_at(&Bytes::new(payload), 0, payload.len(), cfg)
}

/// Reads a varint at `off`, which must end at or before `end`.
#[inline(always)]
fn varint_within(b: &Bytes<'_>, off: usize, end: usize) -> Result<(u64, usize), DropReason> {
    match b.varint_at(off) {
        Ok((v, n)) if off + n <= end => Ok((v, n)),
        _ => Err(DropReason::LengthField),
    }
}

/// [`stun::is_stun`](super::stun::is_stun) over [`Bytes`]: the magic cookie and a length
/// field that is the rest of the datagram (a multiple of 4). The first byte is checked by
/// the caller.
#[inline(always)]
fn is_stun_at(b: &Bytes<'_>, p: usize, len: usize) -> bool {
    len >= super::stun::HEADER_LEN
        && len.is_multiple_of(4)
        && b.u32_at(p + 4)
            .is_ok_and(|c| c == super::stun::MAGIC_COOKIE)
        && b.u16_at(p + 2)
            .is_ok_and(|l| usize::from(l) + super::stun::HEADER_LEN == len)
}

/// The STOQ half of the classifier: the header at `p`, in a datagram of `len` bytes.
#[inline(always)]
pub(crate) fn classify_at(
    b: &Bytes<'_>,
    p: usize,
    len: usize,
    cfg: &ClassifierConfig,
) -> Result<HeaderInfo, DropReason> {
    let end = p + len;
    if len == 0 {
        return Err(DropReason::TooShort);
    }
    let first = b.u8_at(p).map_err(|_| DropReason::TooShort)?;
    let mut h = HeaderInfo {
        kind: PacketKind::Short,
        version: 0,
        dcid_off: p + 1,
        dcid_len: 0,
        scid_off: 0,
        scid_len: 0,
        token_off: 0,
        token_len: 0,
        pn_off: 0,
        length: 0,
        worker: None,
    };

    if first & 0x80 == 0 {
        // Short header: first byte, DCID of the configured length, packet number.
        if first & 0x40 == 0 {
            if first & 0xc0 == 0 && is_stun_at(b, p, len) {
                h.kind = PacketKind::Stun;
                h.dcid_off = 0;
                h.worker = b.u8_at(p + 8).ok();
                return Ok(h);
            }
            return Err(DropReason::FixedBit);
        }
        let cid_len = usize::from(cfg.cid_len);
        if len < 1 + cid_len + MIN_PROTECTED_LEN {
            return Err(DropReason::TooShort);
        }
        let c0 = b.u8_at(p + 1).map_err(|_| DropReason::TooShort)?;
        if cid_len == 0 || usize::from(c0 & 0x1f) + 1 != cid_len {
            return Err(DropReason::CidLength);
        }
        let w = b
            .u8_at(p + 1 + usize::from(cfg.worker_offset))
            .map_err(|_| DropReason::TooShort)?;
        h.dcid_len = cid_len;
        h.pn_off = p + 1 + cid_len;
        h.worker = Some(w);
        return Ok(h);
    }

    // Long header invariants: first byte, version, DCID length + DCID, SCID length + SCID.
    if len < 7 {
        return Err(DropReason::TooShort);
    }
    let version = b.u32_at(p + 1).map_err(|_| DropReason::TooShort)?;
    h.version = version;
    let dcid_len = usize::from(b.u8_at(p + 5).map_err(|_| DropReason::TooShort)?);
    if dcid_len > crate::cid::MAX_CID_LEN {
        return Err(DropReason::CidLength);
    }
    if p + 6 + dcid_len + 1 > end {
        return Err(DropReason::TooShort);
    }
    let scid_len = usize::from(
        b.u8_at(p + 6 + dcid_len)
            .map_err(|_| DropReason::TooShort)?,
    );
    if scid_len > crate::cid::MAX_CID_LEN {
        return Err(DropReason::CidLength);
    }
    let mut off = p + 7 + dcid_len + scid_len;
    if off > end {
        return Err(DropReason::TooShort);
    }
    h.dcid_len = dcid_len;
    h.dcid_off = p + 6;
    h.scid_off = p + 7 + dcid_len;
    h.scid_len = scid_len;

    if version == VERSION_NEGOTIATION {
        let rest = end - off;
        if rest == 0 || !rest.is_multiple_of(4) {
            return Err(DropReason::MalformedVersionNegotiation);
        }
        h.kind = PacketKind::VersionNegotiation;
        h.pn_off = off;
        return Ok(h);
    }
    if version != VERSION_1 {
        if len < MIN_INITIAL_DATAGRAM {
            return Err(DropReason::UnsupportedVersion);
        }
        h.kind = PacketKind::UnknownVersion;
        return Ok(h);
    }
    if first & 0x40 == 0 {
        return Err(DropReason::FixedBit);
    }
    let ty = (first >> 4) & 0x03;
    if ty == LONG_TYPE_RETRY {
        if dcid_len != usize::from(cfg.cid_len) {
            return Err(DropReason::CidLength);
        }
        // A non-empty token followed by the 16-byte integrity tag.
        if end < off + RETRY_TAG_LEN + 1 {
            return Err(DropReason::TooShort);
        }
        h.kind = PacketKind::Retry;
        h.token_off = off;
        h.token_len = end - off - RETRY_TAG_LEN;
        return Ok(h);
    }
    if ty == LONG_TYPE_INITIAL {
        if len < MIN_INITIAL_DATAGRAM {
            return Err(DropReason::InitialTooSmall);
        }
        if dcid_len < crate::cid::MIN_CID_LEN {
            return Err(DropReason::CidLength);
        }
        let (token_len, n) = varint_within(b, off, end)?;
        off += n;
        if token_len > (end - off) as u64 {
            return Err(DropReason::LengthField);
        }
        h.kind = PacketKind::Initial;
        h.token_off = off;
        h.token_len = token_len as usize;
        off += token_len as usize;
    } else if ty == LONG_TYPE_HANDSHAKE {
        if dcid_len != usize::from(cfg.cid_len) {
            return Err(DropReason::CidLength);
        }
        h.kind = PacketKind::Handshake;
    } else {
        // 0-RTT: addressed, like the Initials it follows, to the CID the client chose
        // (or, once the server's first Initial arrived, to the server's).
        if dcid_len < crate::cid::MIN_CID_LEN {
            return Err(DropReason::CidLength);
        }
        h.kind = PacketKind::ZeroRtt;
    }
    let (length, n) = varint_within(b, off, end)?;
    off += n;
    if length > (end - off) as u64 {
        return Err(DropReason::LengthField);
    }
    if length < MIN_PROTECTED_LEN as u64 {
        return Err(DropReason::TooShort);
    }
    h.length = length;
    h.pn_off = off;
    Ok(h)
}
