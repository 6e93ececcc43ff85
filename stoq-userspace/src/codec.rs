//! Bounded readers and writers for handshake encodings. Every read checks the remaining
//! length first and fails with [`DecodeError`]; nothing allocates more than the input holds.
#![deny(unsafe_code)]

use stoq_common::varint::VarInt;

/// Decoding failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended early.
    #[error("input ended early")]
    UnexpectedEnd,
    /// A field holds a value outside its allowed range.
    #[error("invalid value in {0}")]
    Invalid(&'static str),
    /// Bytes were left over after the last field.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// A cursor over borrowed bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Fails unless everything was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.buf.len()))
        }
    }

    /// Takes `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::UnexpectedEnd);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    /// A `u8`.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A big-endian 24-bit integer.
    pub fn u24(&mut self) -> Result<u32, DecodeError> {
        let b: [u8; 3] = self.array()?;
        Ok(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A QUIC varint.
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let (v, n) = VarInt::decode(self.buf).map_err(|_| DecodeError::UnexpectedEnd)?;
        self.buf = &self.buf[n..];
        Ok(v.into_inner())
    }

    /// A byte string with a `u8` length prefix.
    pub fn vec8(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u8()?;
        self.bytes(usize::from(n))
    }

    /// A byte string with a `u16` length prefix.
    pub fn vec16(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()?;
        self.bytes(usize::from(n))
    }

    /// A byte string with a 24-bit length prefix.
    pub fn vec24(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u24()?;
        self.bytes(n as usize)
    }
}

/// Appends encodings to a `Vec<u8>`.
#[derive(Debug, Default)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    /// A `u8`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// A big-endian 24-bit integer (values above 2^24 - 1 are a programming error).
    pub fn u24(&mut self, v: u32) -> &mut Self {
        assert!(v < 1 << 24, "24-bit field overflow");
        self.bytes(&v.to_be_bytes()[1..])
    }

    /// A big-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// A big-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// A QUIC varint (values above 2^62 - 1 are a programming error).
    pub fn varint(&mut self, v: u64) -> &mut Self {
        let v = VarInt::new(v).expect("varint range");
        let mut b = [0u8; 8];
        let n = v.encode(&mut b).expect("8 bytes fit");
        self.bytes(&b[..n])
    }

    /// A byte string with a `u8` length prefix.
    pub fn vec8(&mut self, b: &[u8]) -> &mut Self {
        self.u8(u8::try_from(b.len()).expect("u8 length")).bytes(b)
    }

    /// A byte string with a `u16` length prefix.
    pub fn vec16(&mut self, b: &[u8]) -> &mut Self {
        self.u16(u16::try_from(b.len()).expect("u16 length"))
            .bytes(b)
    }

    /// A byte string with a 24-bit length prefix.
    pub fn vec24(&mut self, b: &[u8]) -> &mut Self {
        self.u24(u32::try_from(b.len()).expect("u24 length"))
            .bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let mut w = Writer::new();
        w.u8(1)
            .u16(2)
            .u24(3)
            .u32(4)
            .u64(5)
            .varint(16_384)
            .vec8(b"ab")
            .vec16(b"cd")
            .vec24(b"ef");
        let mut r = Reader::new(&w.buf);
        assert_eq!(
            (r.u8(), r.u16(), r.u24(), r.u32(), r.u64()),
            (Ok(1), Ok(2), Ok(3), Ok(4), Ok(5))
        );
        assert_eq!(r.varint(), Ok(16_384));
        assert_eq!(
            (r.vec8(), r.vec16(), r.vec24()),
            (Ok(&b"ab"[..]), Ok(&b"cd"[..]), Ok(&b"ef"[..]))
        );
        assert_eq!(r.finish(), Ok(()));
        assert_eq!(Reader::new(&[5, 1]).vec8(), Err(DecodeError::UnexpectedEnd));
        assert_eq!(
            Reader::new(&[0xff, 0xff, 0xff]).vec24(),
            Err(DecodeError::UnexpectedEnd)
        );
        assert_eq!(Reader::new(&[1]).finish(), Err(DecodeError::Trailing(1)));
    }
}
