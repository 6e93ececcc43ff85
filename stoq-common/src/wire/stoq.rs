//! The STOQ packet header: QUIC-invariant long and short forms (RFC 8999).
//!
//! Only the parts that are not covered by header protection are represented here: the
//! form, fixed and type bits, the version, the connection IDs, the Initial token and the
//! Length field. The packet-number length bits, the key phase and the packet number are
//! protected and belong to the packet-protection layer. `docs/wire-format.md` is the
//! authoritative description.

use crate::cid::ConnectionId;
use crate::varint::VarInt;
use crate::wire::header::{ClassifierConfig, DropReason, HeaderInfo, PacketKind, classify_payload};

/// STOQ version 1 ("STO" 0x01).
pub const VERSION_1: u32 = 0x5354_4f01;
/// The version field of a Version Negotiation packet.
pub const VERSION_NEGOTIATION: u32 = 0;
/// Smallest UDP payload that may carry an Initial (RFC 9000 §14.1).
pub const MIN_INITIAL_DATAGRAM: usize = 1200;
/// Bytes from the packet-number offset to the end of the header-protection sample
/// (4 bytes of assumed packet number + a 16-byte sample, RFC 9001 §5.4.2).
pub const MIN_PROTECTED_LEN: usize = 20;
/// Length of the Retry integrity tag.
pub const RETRY_TAG_LEN: usize = 16;
/// Long-header type bits of an Initial.
pub const LONG_TYPE_INITIAL: u8 = 0b00;
/// Long-header type bits of a 0-RTT packet.
pub const LONG_TYPE_ZERO_RTT: u8 = 0b01;
/// Long-header type bits of a Handshake packet.
pub const LONG_TYPE_HANDSHAKE: u8 = 0b10;
/// Long-header type bits of a Retry.
pub const LONG_TYPE_RETRY: u8 = 0b11;

/// A view of a datagram's first STOQ packet, validated on construction.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
    info: HeaderInfo,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Validates the header with the classifier's rules; `cfg` gives the configured CID
    /// length that short headers use.
    pub fn new_checked(buffer: T, cfg: &ClassifierConfig) -> Result<Self, DropReason> {
        let info = classify_payload(buffer.as_ref(), cfg)?;
        Ok(Self { buffer, info })
    }

    /// Where the header's parts lie.
    pub fn info(&self) -> &HeaderInfo {
        &self.info
    }

    /// Packet kind.
    pub fn kind(&self) -> PacketKind {
        self.info.kind
    }

    /// Whether this is a long header.
    pub fn is_long(&self) -> bool {
        self.info.kind != PacketKind::Short
    }

    /// Destination connection ID.
    pub fn dcid(&self) -> &[u8] {
        let i = &self.info;
        &self.buffer.as_ref()[i.dcid_off..i.dcid_off + i.dcid_len]
    }

    /// Source connection ID (empty for short headers).
    pub fn scid(&self) -> &[u8] {
        let i = &self.info;
        &self.buffer.as_ref()[i.scid_off..i.scid_off + i.scid_len]
    }

    /// The Initial or Retry token (empty otherwise).
    pub fn token(&self) -> &[u8] {
        let i = &self.info;
        &self.buffer.as_ref()[i.token_off..i.token_off + i.token_len]
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// A STOQ header, as far as it is readable without keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr<'a> {
    /// Initial: carries the client's first flight and the server's reply.
    Initial {
        /// Destination CID.
        dcid: ConnectionId,
        /// Source CID.
        scid: ConnectionId,
        /// Address-validation token (empty unless answering a Retry).
        token: &'a [u8],
        /// Length of packet number + protected payload.
        length: u64,
    },
    /// Handshake: the rest of the handshake flight.
    Handshake {
        /// Destination CID.
        dcid: ConnectionId,
        /// Source CID.
        scid: ConnectionId,
        /// Length of packet number + protected payload.
        length: u64,
    },
    /// 0-RTT: a resuming client's early data, sent with its first flight.
    ZeroRtt {
        /// Destination CID.
        dcid: ConnectionId,
        /// Source CID.
        scid: ConnectionId,
        /// Length of packet number + protected payload.
        length: u64,
    },
    /// Retry: a stateless address-validation challenge.
    Retry {
        /// Destination CID.
        dcid: ConnectionId,
        /// Source CID.
        scid: ConnectionId,
        /// Retry token.
        token: &'a [u8],
        /// Integrity tag.
        tag: [u8; RETRY_TAG_LEN],
    },
    /// Version Negotiation: the versions the server supports, as raw 4-byte entries.
    VersionNegotiation {
        /// Destination CID.
        dcid: ConnectionId,
        /// Source CID.
        scid: ConnectionId,
        /// Supported versions (big-endian `u32`s).
        versions: &'a [u8],
    },
    /// Short header (1-RTT).
    Short {
        /// Destination CID.
        dcid: ConnectionId,
        /// The spin bit.
        spin: bool,
    },
}

/// Writes `b` at `*at` and advances, or fails if `buf` is too short.
fn put(buf: &mut [u8], at: &mut usize, b: &[u8]) -> Result<(), super::Error> {
    let dst = buf
        .get_mut(*at..*at + b.len())
        .ok_or(super::Error::BufferTooSmall)?;
    dst.copy_from_slice(b);
    *at += b.len();
    Ok(())
}

impl<'a> Repr<'a> {
    /// Parses the first header of a datagram. Unknown versions are reported as
    /// [`DropReason::UnsupportedVersion`], since they have no STOQ representation.
    pub fn parse(buf: &'a [u8], cfg: &ClassifierConfig) -> Result<Self, DropReason> {
        let p = Packet::new_checked(buf, cfg)?;
        let cid = |s: &[u8]| ConnectionId::from_slice(s).map_err(|_| DropReason::CidLength);
        let (dcid, scid) = (cid(p.dcid())?, cid(p.scid())?);
        let i = *p.info();
        Ok(match i.kind {
            PacketKind::Initial => Self::Initial {
                dcid,
                scid,
                token: &buf[i.token_off..i.token_off + i.token_len],
                length: i.length,
            },
            PacketKind::Handshake => Self::Handshake {
                dcid,
                scid,
                length: i.length,
            },
            PacketKind::ZeroRtt => Self::ZeroRtt {
                dcid,
                scid,
                length: i.length,
            },
            PacketKind::Retry => {
                let tag_off = i.token_off + i.token_len;
                let mut tag = [0u8; RETRY_TAG_LEN];
                tag.copy_from_slice(&buf[tag_off..tag_off + RETRY_TAG_LEN]);
                Self::Retry {
                    dcid,
                    scid,
                    token: &buf[i.token_off..tag_off],
                    tag,
                }
            }
            PacketKind::VersionNegotiation => Self::VersionNegotiation {
                dcid,
                scid,
                versions: &buf[i.pn_off..],
            },
            PacketKind::Short => Self::Short {
                dcid,
                spin: buf[0] & 0x20 != 0,
            },
            PacketKind::UnknownVersion => return Err(DropReason::UnsupportedVersion),
            // A STUN message has no STOQ header to represent.
            PacketKind::Stun => return Err(DropReason::FixedBit),
        })
    }

    /// Bytes [`emit`](Self::emit) writes. For Initial, 0-RTT and Handshake this is the header up to
    /// the packet number; the Length field is always written as a 2-byte varint so the
    /// protection layer can patch it after sealing.
    pub fn buffer_len(&self) -> usize {
        match self {
            Self::Initial {
                dcid, scid, token, ..
            } => {
                7 + dcid.len()
                    + scid.len()
                    + VarInt::from(token.len() as u32).size()
                    + token.len()
                    + 2
            }
            Self::Handshake { dcid, scid, .. } | Self::ZeroRtt { dcid, scid, .. } => {
                7 + dcid.len() + scid.len() + 2
            }
            Self::Retry {
                dcid, scid, token, ..
            } => 7 + dcid.len() + scid.len() + token.len() + RETRY_TAG_LEN,
            Self::VersionNegotiation {
                dcid,
                scid,
                versions,
            } => 7 + dcid.len() + scid.len() + versions.len(),
            Self::Short { dcid, .. } => 1 + dcid.len(),
        }
    }

    /// Writes the header at the front of `buf`, returning its length (the packet-number
    /// offset for Initial, 0-RTT, Handshake and Short). The protected low bits of the first byte
    /// are left zero for the protection layer to fill in.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, super::Error> {
        let mut at = 0;
        let long = |ty: u8| 0xc0 | (ty << 4);
        let head = |buf: &mut [u8],
                    at: &mut usize,
                    first: u8,
                    version: u32,
                    d: &ConnectionId,
                    s: &ConnectionId| {
            put(buf, at, &[first])?;
            put(buf, at, &version.to_be_bytes())?;
            put(buf, at, &[d.len() as u8])?;
            put(buf, at, d.as_bytes())?;
            put(buf, at, &[s.len() as u8])?;
            put(buf, at, s.as_bytes())
        };
        let length2 = |buf: &mut [u8], at: &mut usize, length: u64| {
            if length > 0x3fff {
                return Err(super::Error::Malformed);
            }
            put(buf, at, &(0x4000 | length as u16).to_be_bytes())
        };
        match self {
            Self::Initial {
                dcid,
                scid,
                token,
                length,
            } => {
                head(buf, &mut at, long(LONG_TYPE_INITIAL), VERSION_1, dcid, scid)?;
                let mut v = [0u8; 8];
                let n = VarInt::from(token.len() as u32)
                    .encode(&mut v)
                    .ok_or(super::Error::Malformed)?;
                put(buf, &mut at, &v[..n])?;
                put(buf, &mut at, token)?;
                length2(buf, &mut at, *length)?;
            }
            Self::Handshake { dcid, scid, length } => {
                head(
                    buf,
                    &mut at,
                    long(LONG_TYPE_HANDSHAKE),
                    VERSION_1,
                    dcid,
                    scid,
                )?;
                length2(buf, &mut at, *length)?;
            }
            Self::ZeroRtt { dcid, scid, length } => {
                head(
                    buf,
                    &mut at,
                    long(LONG_TYPE_ZERO_RTT),
                    VERSION_1,
                    dcid,
                    scid,
                )?;
                length2(buf, &mut at, *length)?;
            }
            Self::Retry {
                dcid,
                scid,
                token,
                tag,
            } => {
                head(buf, &mut at, long(LONG_TYPE_RETRY), VERSION_1, dcid, scid)?;
                put(buf, &mut at, token)?;
                put(buf, &mut at, tag)?;
            }
            Self::VersionNegotiation {
                dcid,
                scid,
                versions,
            } => {
                if versions.is_empty() || !versions.len().is_multiple_of(4) {
                    return Err(super::Error::Malformed);
                }
                head(buf, &mut at, 0x80, VERSION_NEGOTIATION, dcid, scid)?;
                put(buf, &mut at, versions)?;
            }
            Self::Short { dcid, spin } => {
                put(buf, &mut at, &[0x40 | if *spin { 0x20 } else { 0 }])?;
                put(buf, &mut at, dcid.as_bytes())?;
            }
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid::CidLayout;

    fn cfg() -> ClassifierConfig {
        ClassifierConfig::new(&CidLayout::DEFAULT)
    }

    fn cid(layout: &CidLayout, w: u8) -> ConnectionId {
        layout.build(0, 1, w, &[0xaa; 8]).unwrap()
    }

    #[test]
    fn every_form_round_trips() {
        let l = CidLayout::DEFAULT;
        let (d, s) = (cid(&l, 3), cid(&l, 4));
        let token = [7u8; 5];
        let versions = VERSION_1.to_be_bytes();
        let reprs = [
            Repr::Initial {
                dcid: d,
                scid: s,
                token: &token,
                length: 1200,
            },
            Repr::Handshake {
                dcid: d,
                scid: s,
                length: 100,
            },
            Repr::ZeroRtt {
                dcid: d,
                scid: s,
                length: 300,
            },
            Repr::Retry {
                dcid: d,
                scid: s,
                token: &token,
                tag: [9; 16],
            },
            Repr::VersionNegotiation {
                dcid: d,
                scid: s,
                versions: &versions,
            },
            Repr::Short {
                dcid: d,
                spin: true,
            },
        ];
        for r in reprs {
            let mut buf = [0u8; 1400];
            let n = r.emit(&mut buf).unwrap();
            assert_eq!(n, r.buffer_len());
            let datagram = match r {
                Repr::Retry { .. } | Repr::VersionNegotiation { .. } => &buf[..n],
                Repr::Initial { length, .. }
                | Repr::Handshake { length, .. }
                | Repr::ZeroRtt { length, .. } => &buf[..n + length as usize],
                Repr::Short { .. } => &buf[..n + 40],
            };
            assert_eq!(Repr::parse(datagram, &cfg()), Ok(r), "{r:?}");
            assert!(r.emit(&mut buf[..n - 1]).is_err());
        }
    }

    #[test]
    fn rejects_by_reason() {
        let l = CidLayout::DEFAULT;
        let mut buf = [0u8; 64];
        let n = Repr::Short {
            dcid: cid(&l, 1),
            spin: false,
        }
        .emit(&mut buf)
        .unwrap();
        assert_eq!(
            Repr::parse(&buf[..n + 19], &cfg()),
            Err(DropReason::TooShort)
        );
        buf[0] &= !0x40;
        assert_eq!(
            Repr::parse(&buf[..n + 20], &cfg()),
            Err(DropReason::FixedBit)
        );
        buf[0] |= 0x40;
        buf[1] ^= 0x01;
        assert_eq!(
            Repr::parse(&buf[..n + 20], &cfg()),
            Err(DropReason::CidLength)
        );
        assert_eq!(Repr::parse(&[], &cfg()), Err(DropReason::TooShort));
    }

    /// A 0-RTT packet is addressed to a CID the client chose, like its Initial: 8 to 20
    /// bytes, whatever the server's layout.
    #[test]
    fn a_zero_rtt_packet_takes_a_client_chosen_cid_of_eight_bytes_or_more() {
        let mut buf = [0u8; 128];
        for (len, ok) in [(7usize, false), (8, true), (20, true)] {
            let dcid = ConnectionId::from_slice(&[0x5a; 20][..len]).unwrap();
            let r = Repr::ZeroRtt {
                dcid,
                scid: cid(&CidLayout::DEFAULT, 1),
                length: 40,
            };
            let n = r.emit(&mut buf).unwrap();
            let got = Repr::parse(&buf[..n + 40], &cfg());
            if ok {
                assert_eq!(got, Ok(r));
            } else {
                assert_eq!(got, Err(DropReason::CidLength));
            }
        }
    }
}
