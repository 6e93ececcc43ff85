//! QUIC variable-length integers (RFC 9000 §16).
//!
//! The two most significant bits of the first byte give the encoded length (1, 2, 4 or 8
//! bytes); the remaining bits hold the value in network byte order.

use core::fmt;

/// The largest value a varint can carry: 2^62 - 1.
pub const MAX: u64 = (1 << 62) - 1;

/// A value in `0..=2^62-1`, the range a QUIC varint can encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VarInt(u64);

/// The value does not fit in 62 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VarIntBoundsExceeded;

impl fmt::Display for VarIntBoundsExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("value exceeds 2^62 - 1, the varint maximum")
    }
}

/// Decoding failed: the buffer ended inside the integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnexpectedEnd;

impl fmt::Display for UnexpectedEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("buffer ended inside a varint")
    }
}

impl VarInt {
    /// The largest encodable value.
    pub const MAX: Self = Self(MAX);

    /// Builds a varint from a `u32`, which always fits.
    pub const fn from_u32(v: u32) -> Self {
        Self(v as u64)
    }

    /// Builds a varint, failing if `v` exceeds 2^62 - 1.
    pub const fn new(v: u64) -> Result<Self, VarIntBoundsExceeded> {
        if v > MAX {
            Err(VarIntBoundsExceeded)
        } else {
            Ok(Self(v))
        }
    }

    /// The value.
    pub const fn into_inner(self) -> u64 {
        self.0
    }

    /// Bytes needed to encode this value (1, 2, 4 or 8).
    pub const fn size(self) -> usize {
        if self.0 < (1 << 6) {
            1
        } else if self.0 < (1 << 14) {
            2
        } else if self.0 < (1 << 30) {
            4
        } else {
            8
        }
    }

    /// Decodes a varint from the front of `buf`, returning it and the bytes consumed.
    pub fn decode(buf: &[u8]) -> Result<(Self, usize), UnexpectedEnd> {
        // Fixed-width loads per length class: no loop and no variable-length copy on
        // the per-frame path.
        let first = *buf.first().ok_or(UnexpectedEnd)?;
        let (v, len) = match first >> 6 {
            0 => (u64::from(first), 1),
            1 => {
                let b = buf.first_chunk::<2>().ok_or(UnexpectedEnd)?;
                (u64::from(u16::from_be_bytes(*b) & 0x3fff), 2)
            }
            2 => {
                let b = buf.first_chunk::<4>().ok_or(UnexpectedEnd)?;
                (u64::from(u32::from_be_bytes(*b) & 0x3fff_ffff), 4)
            }
            _ => {
                let b = buf.first_chunk::<8>().ok_or(UnexpectedEnd)?;
                (u64::from_be_bytes(*b) & 0x3fff_ffff_ffff_ffff, 8)
            }
        };
        Ok((Self(v), len))
    }

    /// Encodes into the front of `buf`, returning the bytes written, or `None` if `buf` is
    /// shorter than [`size`](Self::size).
    pub fn encode(self, buf: &mut [u8]) -> Option<usize> {
        // One fixed-width store per length class (a variable-length copy would be a
        // `memcpy` call per varint).
        let v = self.0;
        match self.size() {
            1 => *buf.first_mut()? = v as u8,
            2 => *buf.first_chunk_mut()? = (v as u16 | 0x4000).to_be_bytes(),
            4 => *buf.first_chunk_mut()? = (v as u32 | 0x8000_0000).to_be_bytes(),
            _ => *buf.first_chunk_mut()? = (v | 0xc000_0000_0000_0000).to_be_bytes(),
        }
        Some(self.size())
    }
}

impl From<u8> for VarInt {
    fn from(v: u8) -> Self {
        Self(v.into())
    }
}

impl From<u16> for VarInt {
    fn from(v: u16) -> Self {
        Self(v.into())
    }
}

impl From<u32> for VarInt {
    fn from(v: u32) -> Self {
        Self(v.into())
    }
}

impl TryFrom<u64> for VarInt {
    type Error = VarIntBoundsExceeded;
    fn try_from(v: u64) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl fmt::Display for VarInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9000 Appendix A.1 sample encodings.
    #[test]
    fn rfc9000_appendix_a1() {
        let cases: [(&[u8], u64); 4] = [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (bytes, value) in cases {
            let (v, n) = VarInt::decode(bytes).unwrap();
            assert_eq!((v.into_inner(), n), (value, bytes.len()));
            let mut out = [0u8; 8];
            let w = v.encode(&mut out).unwrap();
            assert_eq!(&out[..w], bytes);
            // The same value through the bounds-checked pointer reader.
            assert_eq!(
                crate::ptr::Bytes::new(bytes).varint_at(0),
                Ok((value, bytes.len()))
            );
        }
        // A non-minimal two-byte encoding of 37 decodes too (RFC 9000 A.1).
        assert_eq!(VarInt::decode(&[0x40, 0x25]).unwrap(), (VarInt(37), 2));
    }

    #[test]
    fn bounds() {
        assert_eq!(VarInt::new(MAX), Ok(VarInt::MAX));
        assert_eq!(VarInt::new(MAX + 1), Err(VarIntBoundsExceeded));
        assert_eq!(VarInt::decode(&[]), Err(UnexpectedEnd));
        assert_eq!(VarInt::decode(&[0x40]), Err(UnexpectedEnd));
        assert_eq!(
            VarInt::decode(&[0xc0, 0, 0, 0, 0, 0, 0]),
            Err(UnexpectedEnd)
        );
        assert_eq!(VarInt(1 << 14).encode(&mut [0u8; 3]), None);
    }

    #[test]
    fn round_trip_edges() {
        for v in [0, 63, 64, 16_383, 16_384, (1 << 30) - 1, 1 << 30, MAX] {
            let mut out = [0u8; 8];
            let n = VarInt(v).encode(&mut out).unwrap();
            assert_eq!(n, VarInt(v).size());
            assert_eq!(VarInt::decode(&out[..n]).unwrap(), (VarInt(v), n));
        }
    }
}
