//! UDP headers (RFC 768) and their pseudo-header checksum.

use core::net::IpAddr;

use super::{Error, Result, be16, checksum, put16};

/// Length of the header.
pub const HEADER_LEN: usize = 8;

/// A view of a UDP datagram.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checks; accessors may then panic.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer, checking the length field against it.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Validates the length field.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(self.len());
        if len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if b.len() < len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }

    /// Length field (header plus payload).
    #[allow(clippy::len_without_is_empty, reason = "mirrors the header field name")]
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), 4)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 6)
    }

    /// The payload, bounded by the length field.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// Whether the checksum verifies for the given addresses. A zero checksum is accepted
    /// for IPv4 (RFC 768) and rejected for IPv6 (RFC 8200 §8.1).
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        if self.checksum() == 0 {
            return src.is_ipv4();
        }
        let seg = &self.buffer.as_ref()[..usize::from(self.len())];
        checksum::finish(checksum::accumulate(
            pseudo_header_sum(src, dst, seg.len()),
            seg,
        )) == 0
    }
}

/// The one's-complement sum of the IPv4 or IPv6 pseudo-header for a UDP segment.
pub fn pseudo_header_sum(src: IpAddr, dst: IpAddr, udp_len: usize) -> u32 {
    let mut sum = 0;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum = checksum::accumulate(sum, &s.octets());
            sum = checksum::accumulate(sum, &d.octets());
        }
        (s, d) => {
            sum = checksum::accumulate(sum, &to_v6(s));
            sum = checksum::accumulate(sum, &to_v6(d));
        }
    }
    sum = checksum::accumulate(sum, &[0, 17]);
    checksum::accumulate(sum, &(udp_len as u32).to_be_bytes())
}

fn to_v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

/// A parsed UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl Repr {
    /// Parses a checked datagram (the checksum is verified separately, with addresses).
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self> {
        p.check_len()?;
        Ok(Self {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: usize::from(p.len()) - HEADER_LEN,
        })
    }

    /// Bytes the header takes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header at the front of `buf`, whose following `payload_len` bytes must
    /// already hold the payload, and fills in the checksum over them.
    pub fn emit(&self, buf: &mut [u8], src: IpAddr, dst: IpAddr) -> Result<usize> {
        let total = HEADER_LEN + self.payload_len;
        if buf.len() < total {
            return Err(Error::BufferTooSmall);
        }
        let len = u16::try_from(total).map_err(|_| Error::Malformed)?;
        put16(buf, 0, self.src_port);
        put16(buf, 2, self.dst_port);
        put16(buf, 4, len);
        put16(buf, 6, 0);
        let c = checksum::finish(checksum::accumulate(
            pseudo_header_sum(src, dst, total),
            &buf[..total],
        ));
        // A computed zero is sent as all ones (RFC 768).
        put16(buf, 6, if c == 0 { 0xffff } else { c });
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_round_trip_v4_v6() {
        for (s, d) in [
            ("10.200.0.1".parse().unwrap(), "10.200.0.2".parse().unwrap()),
            (
                "fd00:5710::1".parse().unwrap(),
                "fd00:5710::2".parse().unwrap(),
            ),
        ] {
            let mut buf = [0u8; 13];
            buf[8..].copy_from_slice(b"hello");
            let r = Repr {
                src_port: 4433,
                dst_port: 5555,
                payload_len: 5,
            };
            r.emit(&mut buf, s, d).unwrap();
            let p = Packet::new_checked(&buf[..]).unwrap();
            assert!(p.verify_checksum(s, d));
            assert_eq!(Repr::parse(&p), Ok(r));
            assert_eq!(p.payload(), b"hello");
            buf[9] ^= 1;
            assert!(!Packet::new_checked(&buf[..]).unwrap().verify_checksum(s, d));
        }
        assert_eq!(
            Packet::new_checked(&[0u8, 0, 0, 0, 0, 7, 0, 0][..]).unwrap_err(),
            Error::Malformed
        );
    }
}
