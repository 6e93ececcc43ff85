//! STUN messages (RFC 8489), as much of them as STOQ speaks: the Binding transaction that
//! tells an endpoint its reflexive (public) address, on the same port as its connections.
//!
//! - [`is_stun`]: the demultiplexing test (RFC 7983: first byte 0 to 3, the magic cookie,
//!   and a length that is the datagram's), shared by the XDP classifier and userspace. A
//!   STOQ packet never passes it: STOQ's fixed bit (0x40) is set in every STOQ first byte.
//! - [`Message`]: a validated, zero-copy view. [`Message::parse`] walks the attributes once
//!   and refuses every length that runs past the message, more than [`MAX_ATTRIBUTES`]
//!   attributes, and any attribute after FINGERPRINT; after that no accessor can fail on
//!   bounds. Addresses are decoded on demand ([`Message::mapped_address`]).
//! - [`Writer`]: builds a message in a caller's buffer, with FINGERPRINT last.
//!
//! Nothing here allocates or panics, and every loop is bounded by the message's length.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The magic cookie every RFC 5389/8489 message carries at bytes 4 to 8.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// The fixed header: type, length, magic cookie, 96-bit transaction ID.
pub const HEADER_LEN: usize = 20;
/// The most attributes a message may have here; a message with more is refused (a
/// Binding response has a handful).
pub const MAX_ATTRIBUTES: usize = 32;
/// XORed into the CRC-32 of a FINGERPRINT attribute (RFC 8489 §14.7: "STUN").
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// The Binding method.
pub const METHOD_BINDING: u16 = 0x001;
/// TURN's Allocate method (RFC 8656).
pub const METHOD_ALLOCATE: u16 = 0x003;
/// TURN's Refresh method.
pub const METHOD_REFRESH: u16 = 0x004;
/// TURN's Send method (indications to the relay).
pub const METHOD_SEND: u16 = 0x006;
/// TURN's Data method (indications from the relay).
pub const METHOD_DATA: u16 = 0x007;
/// TURN's CreatePermission method.
pub const METHOD_CREATE_PERMISSION: u16 = 0x008;
/// TURN's ChannelBind method.
pub const METHOD_CHANNEL_BIND: u16 = 0x009;

/// Attribute types STOQ reads or writes (RFC 8489 §18.3).
pub mod attr {
    /// MAPPED-ADDRESS: the reflexive address, in the clear (RFC 3489 servers).
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// USERNAME.
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE.
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES.
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// REALM.
    pub const REALM: u16 = 0x0014;
    /// NONCE.
    pub const NONCE: u16 = 0x0015;
    /// MESSAGE-INTEGRITY-SHA256.
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// PASSWORD-ALGORITHM.
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    /// USERHASH.
    pub const USERHASH: u16 = 0x001E;
    /// XOR-MAPPED-ADDRESS: the reflexive address, XORed with the cookie (and ID).
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// SOFTWARE.
    pub const SOFTWARE: u16 = 0x8022;
    /// ALTERNATE-SERVER.
    pub const ALTERNATE_SERVER: u16 = 0x8023;
    /// FINGERPRINT: CRC-32 of the message before it, XOR [`super::FINGERPRINT_XOR`].
    pub const FINGERPRINT: u16 = 0x8028;
    /// TURN (RFC 8656) LIFETIME: seconds an allocation lives.
    pub const LIFETIME: u16 = 0x000D;
    /// TURN CHANNEL-NUMBER: a channel (0x4000-0x4FFF) and two reserved bytes.
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// TURN XOR-PEER-ADDRESS: the peer a Send, Data or CreatePermission is about.
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// TURN DATA: the relayed datagram.
    pub const DATA: u16 = 0x0013;
    /// TURN XOR-RELAYED-ADDRESS: the allocation's address on the relay.
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// TURN REQUESTED-TRANSPORT: 17 (UDP).
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;

    /// Whether an attribute type is comprehension-required (0x0000 to 0x7FFF): a
    /// response with one the reader does not know fails its transaction (RFC 8489 §6.3.3).
    pub const fn comprehension_required(t: u16) -> bool {
        t < 0x8000
    }
}

/// A message's class, from the two class bits of its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A request (0b00).
    Request,
    /// An indication (0b01).
    Indication,
    /// A success response (0b10).
    Success,
    /// An error response (0b11).
    Error,
}

impl Class {
    const fn bits(self) -> u16 {
        match self {
            Self::Request => 0x0000,
            Self::Indication => 0x0010,
            Self::Success => 0x0100,
            Self::Error => 0x0110,
        }
    }
}

/// The message type for `class` and a 12-bit `method` (RFC 8489 §5: the class bits sit at
/// 0x0010 and 0x0100, between the method's bits).
pub const fn message_type(class: Class, method: u16) -> u16 {
    let m = method & 0x0fff;
    ((m & 0x0f80) << 2) | ((m & 0x0070) << 1) | (m & 0x000f) | class.bits()
}

/// Why bytes are not a STUN message this parser accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunError {
    /// Shorter than the 20-byte header.
    TooShort,
    /// The first two bits are set, or the magic cookie is missing: not STUN at all.
    NotStun,
    /// The header's length is not a multiple of 4 or is not the rest of the datagram.
    Length,
    /// An attribute's length runs past the message.
    AttributeOverrun,
    /// More than [`MAX_ATTRIBUTES`] attributes.
    TooManyAttributes,
    /// An attribute after FINGERPRINT, which must be last.
    AfterFingerprint,
    /// An address attribute of an unknown family or the wrong length.
    Address,
    /// An ERROR-CODE attribute shorter than 4 bytes or with a class outside 3 to 6.
    ErrorCode,
    /// A FINGERPRINT of the wrong length or value.
    Fingerprint,
    /// The output buffer is too small, or an attribute value is over 65,531 bytes.
    BufferTooSmall,
}

impl core::fmt::Display for StunError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::TooShort => "shorter than a STUN header",
            Self::NotStun => "not a STUN message (first bits or magic cookie)",
            Self::Length => "STUN length is not the datagram's or not a multiple of 4",
            Self::AttributeOverrun => "a STUN attribute runs past the message",
            Self::TooManyAttributes => "too many STUN attributes",
            Self::AfterFingerprint => "a STUN attribute after FINGERPRINT",
            Self::Address => "a STUN address attribute of unknown family or length",
            Self::ErrorCode => "a malformed STUN ERROR-CODE",
            Self::Fingerprint => "a STUN FINGERPRINT that does not match",
            Self::BufferTooSmall => "STUN output buffer too small",
        })
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[w, x, y, z]) => u32::from_be_bytes([w, x, y, z]),
        _ => 0,
    }
}

/// Whether `d`, a whole UDP payload, is a STUN message by RFC 7983's first-byte range,
/// the magic cookie and a length field that is the rest of the datagram (a multiple of
/// 4). Cheap enough for the classifier; [`Message::parse`] checks the rest.
pub fn is_stun(d: &[u8]) -> bool {
    d.len() >= HEADER_LEN
        && d[0] & 0xc0 == 0
        && be32(d, 4) == MAGIC_COOKIE
        && usize::from(be16(d, 2)) + HEADER_LEN == d.len()
        && d.len().is_multiple_of(4)
}

/// One attribute: its type and value (without padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    /// The attribute type.
    pub kind: u16,
    /// The value.
    pub value: &'a [u8],
    /// Offset of the attribute's header in the message.
    pub offset: usize,
}

/// The attributes of a validated [`Message`], in order.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Attribute<'a>;

    fn next(&mut self) -> Option<Attribute<'a>> {
        let kind = be16(self.buf, self.at);
        let len = usize::from(be16(self.buf, self.at + 2));
        let value = self.buf.get(self.at + 4..self.at + 4 + len)?;
        let a = Attribute {
            kind,
            value,
            offset: self.at,
        };
        self.at += 4 + padded(len);
        Some(a)
    }
}

const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// Whether a message's FINGERPRINT was there and matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fingerprint {
    /// No FINGERPRINT attribute.
    Absent,
    /// Present and correct.
    Valid,
}

/// A validated STUN message over a borrowed buffer (the whole UDP payload).
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    buf: &'a [u8],
    fingerprint: Fingerprint,
}

impl<'a> Message<'a> {
    /// Validates `buf` as one STUN message (see the module doc for what is checked). A
    /// FINGERPRINT, when present, must match: a mismatch is [`StunError::Fingerprint`].
    ///
    /// # Errors
    /// The first [`StunError`] found.
    pub fn parse(buf: &'a [u8]) -> Result<Self, StunError> {
        if buf.len() < HEADER_LEN {
            return Err(StunError::TooShort);
        }
        if buf[0] & 0xc0 != 0 || be32(buf, 4) != MAGIC_COOKIE {
            return Err(StunError::NotStun);
        }
        let len = usize::from(be16(buf, 2));
        if !len.is_multiple_of(4) || HEADER_LEN + len != buf.len() {
            return Err(StunError::Length);
        }
        let mut at = HEADER_LEN;
        let mut count = 0;
        let mut fingerprint = Fingerprint::Absent;
        while at < buf.len() {
            if fingerprint != Fingerprint::Absent {
                return Err(StunError::AfterFingerprint);
            }
            count += 1;
            if count > MAX_ATTRIBUTES {
                return Err(StunError::TooManyAttributes);
            }
            if at + 4 > buf.len() {
                return Err(StunError::AttributeOverrun);
            }
            let kind = be16(buf, at);
            let alen = usize::from(be16(buf, at + 2));
            if at + 4 + padded(alen) > buf.len() {
                return Err(StunError::AttributeOverrun);
            }
            if kind == attr::FINGERPRINT {
                let want = crc32(&header_with_length(buf, at + 8), &buf[4..at]) ^ FINGERPRINT_XOR;
                if alen != 4 || be32(buf, at + 4) != want {
                    return Err(StunError::Fingerprint);
                }
                fingerprint = Fingerprint::Valid;
            }
            at += 4 + padded(alen);
        }
        Ok(Self { buf, fingerprint })
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The message type (class and method).
    pub fn message_type(&self) -> u16 {
        be16(self.buf, 0)
    }

    /// The class.
    pub fn class(&self) -> Class {
        match self.message_type() & 0x0110 {
            0x0000 => Class::Request,
            0x0010 => Class::Indication,
            0x0100 => Class::Success,
            _ => Class::Error,
        }
    }

    /// The 12-bit method.
    pub fn method(&self) -> u16 {
        let t = self.message_type();
        ((t & 0x3e00) >> 2) | ((t & 0x00e0) >> 1) | (t & 0x000f)
    }

    /// The transaction ID.
    pub fn transaction_id(&self) -> [u8; 12] {
        let mut id = [0; 12];
        id.copy_from_slice(&self.buf[8..HEADER_LEN]);
        id
    }

    /// Whether the message carried a (matching) FINGERPRINT.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The attributes in order.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            buf: self.buf,
            at: HEADER_LEN,
        }
    }

    /// The first attribute of type `kind`.
    pub fn get(&self, kind: u16) -> Option<Attribute<'a>> {
        self.attributes().find(|a| a.kind == kind)
    }

    /// The first comprehension-required attribute whose type is not in `known`.
    pub fn unknown_required(&self, known: &[u16]) -> Option<u16> {
        self.attributes()
            .map(|a| a.kind)
            .find(|&k| attr::comprehension_required(k) && !known.contains(&k))
    }

    /// The mapped (reflexive) address: XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS;
    /// `Ok(None)` if there is neither.
    ///
    /// # Errors
    /// [`StunError::Address`] for an attribute of unknown family or the wrong length.
    pub fn mapped_address(&self) -> Result<Option<SocketAddr>, StunError> {
        if let Some(a) = self.get(attr::XOR_MAPPED_ADDRESS) {
            return self.xor_address(a.value).map(Some);
        }
        if let Some(a) = self.get(attr::MAPPED_ADDRESS) {
            return plain_address(a.value).map(Some);
        }
        Ok(None)
    }

    /// Decodes an XOR-encoded address attribute's value (XOR-MAPPED-ADDRESS, and TURN's
    /// XOR-PEER-ADDRESS and XOR-RELAYED-ADDRESS, which share the encoding).
    ///
    /// # Errors
    /// [`StunError::Address`] for an unknown family or the wrong length.
    pub fn xor_address(&self, v: &[u8]) -> Result<SocketAddr, StunError> {
        let mut key = [0u8; 16];
        key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        key[4..].copy_from_slice(&self.buf[8..HEADER_LEN]);
        let port = be16(v, 2) ^ (MAGIC_COOKIE >> 16) as u16;
        match (v.len(), v.get(1)) {
            (8, Some(1)) => {
                let mut ip = [0u8; 4];
                for (i, b) in ip.iter_mut().enumerate() {
                    *b = v[4 + i] ^ key[i];
                }
                Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
            }
            (20, Some(2)) => {
                let mut ip = [0u8; 16];
                for (i, b) in ip.iter_mut().enumerate() {
                    *b = v[4 + i] ^ key[i];
                }
                Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
            }
            _ => Err(StunError::Address),
        }
    }

    /// The ERROR-CODE's number (300 to 699) and reason phrase (empty when it is not
    /// UTF-8); `Ok(None)` without one.
    ///
    /// # Errors
    /// [`StunError::ErrorCode`] for a short attribute or a class outside 3 to 6.
    pub fn error_code(&self) -> Result<Option<(u16, &'a str)>, StunError> {
        let Some(a) = self.get(attr::ERROR_CODE) else {
            return Ok(None);
        };
        let v = a.value;
        if v.len() < 4 {
            return Err(StunError::ErrorCode);
        }
        let class = u16::from(v[2] & 0x07);
        let number = u16::from(v[3]);
        if !(3..=6).contains(&class) || number > 99 {
            return Err(StunError::ErrorCode);
        }
        let reason = core::str::from_utf8(&v[4..]).unwrap_or("");
        Ok(Some((class * 100 + number, reason)))
    }

    /// What a MESSAGE-INTEGRITY is computed over, and the value it carries: the message up
    /// to the attribute, with the length field set to end just after it (the caller
    /// computes the HMAC; the codec carries no cryptography). `None` without one.
    pub fn integrity_input(&self) -> Option<([u8; 4], &'a [u8], &'a [u8])> {
        let a = self.get(attr::MESSAGE_INTEGRITY)?;
        if a.value.len() != 20 {
            return None;
        }
        let head = header_with_length(self.buf, a.offset + 24);
        Some((head, &self.buf[4..a.offset], a.value))
    }

    /// The SOFTWARE description, if present and UTF-8.
    pub fn software(&self) -> Option<&'a str> {
        self.get(attr::SOFTWARE)
            .and_then(|a| core::str::from_utf8(a.value).ok())
    }
}

/// Decodes a MAPPED-ADDRESS value (family, port, address in the clear).
fn plain_address(v: &[u8]) -> Result<SocketAddr, StunError> {
    let port = be16(v, 2);
    match (v.len(), v.get(1)) {
        (8, Some(1)) => {
            let ip = Ipv4Addr::new(v[4], v[5], v[6], v[7]);
            Ok(SocketAddr::new(IpAddr::V4(ip), port))
        }
        (20, Some(2)) => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&v[4..20]);
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => Err(StunError::Address),
    }
}

/// The first four header bytes with the length field set to `len_through - 20`: the
/// length FINGERPRINT and MESSAGE-INTEGRITY are computed under (RFC 8489 §14.5, §14.7).
fn header_with_length(buf: &[u8], len_through: usize) -> [u8; 4] {
    let l = u16::try_from(len_through.saturating_sub(HEADER_LEN)).unwrap_or(u16::MAX);
    let [a, b] = l.to_be_bytes();
    [buf[0], buf[1], a, b]
}

/// CRC-32 (ISO-HDLC, the one FINGERPRINT uses) over `head` then `rest`. Bitwise: STUN
/// messages are few and short, and no table is carried.
pub fn crc32(head: &[u8], rest: &[u8]) -> u32 {
    let mut c = !0u32;
    for &byte in head.iter().chain(rest) {
        c ^= u32::from(byte);
        for _ in 0..8 {
            c = (c >> 1) ^ (0xedb8_8320 & 0u32.wrapping_sub(c & 1));
        }
    }
    !c
}

/// Builds a message in a caller's buffer.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Writer<'a> {
    /// Starts a message of `class` and `method` with transaction ID `id`.
    ///
    /// # Errors
    /// [`StunError::BufferTooSmall`] if `buf` cannot hold the header.
    pub fn new(
        buf: &'a mut [u8],
        class: Class,
        method: u16,
        id: &[u8; 12],
    ) -> Result<Self, StunError> {
        let h = buf.get_mut(..HEADER_LEN).ok_or(StunError::BufferTooSmall)?;
        h[..2].copy_from_slice(&message_type(class, method).to_be_bytes());
        h[2..4].fill(0);
        h[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        h[8..].copy_from_slice(id);
        Ok(Self {
            buf,
            len: HEADER_LEN,
        })
    }

    /// Appends an attribute (padded with zeros to 4 bytes).
    ///
    /// # Errors
    /// [`StunError::BufferTooSmall`] if it does not fit.
    pub fn attribute(&mut self, kind: u16, value: &[u8]) -> Result<(), StunError> {
        let vlen = u16::try_from(value.len()).map_err(|_| StunError::BufferTooSmall)?;
        let end = self.len + 4 + padded(value.len());
        if end > usize::from(u16::MAX) {
            return Err(StunError::BufferTooSmall);
        }
        let out = self
            .buf
            .get_mut(self.len..end)
            .ok_or(StunError::BufferTooSmall)?;
        out[..2].copy_from_slice(&kind.to_be_bytes());
        out[2..4].copy_from_slice(&vlen.to_be_bytes());
        out[4..4 + value.len()].copy_from_slice(value);
        out[4 + value.len()..].fill(0);
        self.len = end;
        self.set_length();
        Ok(())
    }

    /// Appends an address attribute in the XOR encoding (XOR-MAPPED-ADDRESS and TURN's
    /// XOR-PEER-ADDRESS / XOR-RELAYED-ADDRESS).
    ///
    /// # Errors
    /// [`StunError::BufferTooSmall`] if it does not fit.
    pub fn xor_address(&mut self, kind: u16, addr: SocketAddr) -> Result<(), StunError> {
        let mut key = [0u8; 16];
        key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        key[4..].copy_from_slice(&self.buf[8..HEADER_LEN]);
        let mut v = [0u8; 20];
        v[2..4].copy_from_slice(&(addr.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes());
        let n = match addr.ip() {
            IpAddr::V4(ip) => {
                v[1] = 1;
                for (i, b) in ip.octets().iter().enumerate() {
                    v[4 + i] = b ^ key[i];
                }
                8
            }
            IpAddr::V6(ip) => {
                v[1] = 2;
                for (i, b) in ip.octets().iter().enumerate() {
                    v[4 + i] = b ^ key[i];
                }
                20
            }
        };
        self.attribute(kind, &v[..n])
    }

    /// Appends FINGERPRINT and returns the message's length: nothing may follow it.
    ///
    /// # Errors
    /// [`StunError::BufferTooSmall`] if it does not fit.
    pub fn finish_with_fingerprint(mut self) -> Result<usize, StunError> {
        self.attribute(attr::FINGERPRINT, &[0; 4])?;
        let at = self.len - 4;
        let c = crc32(&self.buf[..4], &self.buf[4..at - 4]) ^ FINGERPRINT_XOR;
        self.buf[at..self.len].copy_from_slice(&c.to_be_bytes());
        Ok(self.len)
    }

    /// The message's length, without FINGERPRINT.
    pub fn finish(self) -> usize {
        self.len
    }

    /// Appends MESSAGE-INTEGRITY (RFC 8489 §14.5): `mac` is given the message so far, its
    /// length field already counting the 24-byte attribute, and returns the 20-byte
    /// HMAC-SHA1 under the credentials' key (the codec carries no cryptography).
    ///
    /// # Errors
    /// [`StunError::BufferTooSmall`] if it does not fit.
    pub fn message_integrity(
        &mut self,
        mac: impl FnOnce(&[u8]) -> [u8; 20],
    ) -> Result<(), StunError> {
        let start = self.len;
        self.attribute(attr::MESSAGE_INTEGRITY, &[0; 20])?;
        let m = mac(&self.buf[..start]);
        self.buf[start + 4..start + 24].copy_from_slice(&m);
        Ok(())
    }

    fn set_length(&mut self) {
        let l = u16::try_from(self.len - HEADER_LEN).unwrap_or(u16::MAX);
        self.buf[2..4].copy_from_slice(&l.to_be_bytes());
    }
}

#[cfg(test)]
mod tests;
