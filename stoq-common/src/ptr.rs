//! Bounds-checked reads over a `[start, end)` byte range: the one module of this crate
//! allowed to use `unsafe`.
//!
//! The classifier runs both in userspace and inside the XDP program. The eBPF verifier
//! only accepts packet reads that are preceded by an explicit `pointer + offset + len <=
//! data_end` comparison, so every read here is written exactly that way ("pointer/end
//! style"): the address is computed, compared against `end`, and only then dereferenced.
//! Offsets are clamped to [`MAX_OFFSET`] first so that the verifier can bound every
//! variable offset it sees.
//!
//! One trap: LLVM deletes a bounds check that an earlier, larger check already implies
//! (after `start + 78 <= end`, a check of `start + 21 <= end` is redundant to it), but the
//! verifier only credits a read when the comparison was made on that very pointer. In the
//! XDP program [`Bytes::from_xdp`] therefore re-reads `data_end` from the context with a
//! volatile load for every check: LLVM can no longer prove one check from another, and the
//! verifier sees a fresh `pkt_end` each time. The cost is one context load per read.
//!
//! A second trap: LLVM rewrites `p + 1 > end` as `p >= end`, for which the verifier grants
//! no range at all. In XDP the read width is therefore passed through a volatile stack
//! slot (`Bytes::width`): LLVM cannot fold it, and the verifier, which tracks constants
//! spilled to the stack, still sees `p + N > pkt_end` with a known `N`.
//!
//! In userspace a [`Bytes`] is built from a slice with [`Bytes::new`], which is safe: the
//! range is exactly the slice and the lifetime ties the view to it. The XDP program builds
//! one from `ctx.data()`/`ctx.data_end()` with the `unsafe` [`Bytes::from_raw`].
#![allow(unsafe_code)]

use core::marker::PhantomData;

/// The largest offset the classifier ever reads at. Frames seen by XDP without
/// multi-buffer support are at most one page, so 16 KiB leaves room for jumbo frames while
/// giving the verifier a small, provable bound on every variable offset.
pub const MAX_OFFSET: usize = 0x3fff;

/// Error returned when a read would leave the byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfBounds;

/// A read-only view of `[start, end)` that only hands out bounds-checked reads.
#[derive(Debug, Clone, Copy)]
pub struct Bytes<'a> {
    start: usize,
    end: usize,
    /// In XDP: the context's `data_end` field, re-read for every check. Null in userspace.
    end_src: *const u32,
    _life: PhantomData<&'a [u8]>,
}

impl<'a> Bytes<'a> {
    /// Views a slice.
    #[inline(always)]
    pub fn new(buf: &'a [u8]) -> Self {
        let start = buf.as_ptr() as usize;
        Self {
            start,
            end: start + buf.len(),
            end_src: core::ptr::null(),
            _life: PhantomData,
        }
    }

    /// Views the raw range `[start, end)`.
    ///
    /// # Safety
    /// `start..end` must be readable memory that stays valid and unmodified for `'a`
    /// (in XDP: `ctx.data()..ctx.data_end()` for the duration of the program).
    #[inline(always)]
    pub unsafe fn from_raw(start: usize, end: usize) -> Self {
        Self {
            start,
            end,
            end_src: core::ptr::null(),
            _life: PhantomData,
        }
    }

    /// Views an XDP frame: `data` is `ctx.data()`, `data_end_field` points at the
    /// `data_end` field of the `xdp_md` context, re-read before every bounds check.
    ///
    /// # Safety
    /// `data_end_field` must point at the live context's `data_end`, and `data..data_end`
    /// must be the frame, readable for `'a`.
    #[inline(always)]
    pub unsafe fn from_xdp(data: usize, data_end_field: *const u32) -> Self {
        // SAFETY: the caller guarantees `data_end_field` is the live context field.
        let end = unsafe { core::ptr::read_volatile(data_end_field) } as usize;
        Self {
            start: data,
            end,
            end_src: data_end_field,
            _life: PhantomData,
        }
    }

    /// The end of the range, re-read from the context in XDP.
    #[inline(always)]
    fn end(&self) -> usize {
        if self.end_src.is_null() {
            self.end
        } else {
            // SAFETY: non-null only when built by `from_xdp`, whose caller guarantees the
            // pointer is the live context's `data_end` field.
            unsafe { core::ptr::read_volatile(self.end_src) as usize }
        }
    }

    /// The width `n` of a read, as the bounds check should see it: plain in userspace,
    /// opaque to LLVM (but a known constant to the verifier) in XDP.
    #[inline(always)]
    fn width(&self, n: usize) -> usize {
        if self.end_src.is_null() {
            n
        } else {
            // SAFETY: reading a local through a valid reference.
            unsafe { core::ptr::read_volatile(&n) }
        }
    }

    /// Length of the range in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range is empty.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads one byte at `off`.
    #[inline(always)]
    pub fn u8_at(&self, off: usize) -> Result<u8, OutOfBounds> {
        if off > MAX_OFFSET {
            return Err(OutOfBounds);
        }
        let p = self.start + off;
        if p + self.width(1) > self.end() {
            return Err(OutOfBounds);
        }
        // SAFETY: `p + 1 <= end` was checked just above and `[start, end)` is readable for
        // `'a` (slice constructor, or the caller's contract for `from_raw`).
        Ok(unsafe { *(p as *const u8) })
    }

    /// Reads a big-endian `u16` at `off`.
    #[inline(always)]
    pub fn u16_at(&self, off: usize) -> Result<u16, OutOfBounds> {
        if off > MAX_OFFSET {
            return Err(OutOfBounds);
        }
        let p = self.start + off;
        if p + self.width(2) > self.end() {
            return Err(OutOfBounds);
        }
        // SAFETY: two readable bytes at `p` (checked above); unaligned read of a byte array.
        let b = unsafe { core::ptr::read_unaligned(p as *const [u8; 2]) };
        Ok(u16::from_be_bytes(b))
    }

    /// Reads a big-endian `u32` at `off`.
    #[inline(always)]
    pub fn u32_at(&self, off: usize) -> Result<u32, OutOfBounds> {
        if off > MAX_OFFSET {
            return Err(OutOfBounds);
        }
        let p = self.start + off;
        if p + self.width(4) > self.end() {
            return Err(OutOfBounds);
        }
        // SAFETY: four readable bytes at `p` (checked above); unaligned read of a byte array.
        let b = unsafe { core::ptr::read_unaligned(p as *const [u8; 4]) };
        Ok(u32::from_be_bytes(b))
    }

    /// Reads a big-endian `u64` at `off`.
    #[inline(always)]
    pub fn u64_at(&self, off: usize) -> Result<u64, OutOfBounds> {
        if off > MAX_OFFSET {
            return Err(OutOfBounds);
        }
        let p = self.start + off;
        if p + self.width(8) > self.end() {
            return Err(OutOfBounds);
        }
        // SAFETY: eight readable bytes at `p` (checked above); unaligned read of a byte array.
        let b = unsafe { core::ptr::read_unaligned(p as *const [u8; 8]) };
        Ok(u64::from_be_bytes(b))
    }

    /// Reads a QUIC variable-length integer at `off`, returning `(value, encoded_len)`.
    #[inline(always)]
    pub fn varint_at(&self, off: usize) -> Result<(u64, usize), OutOfBounds> {
        let first = self.u8_at(off)?;
        match first >> 6 {
            0 => Ok((u64::from(first), 1)),
            1 => Ok((u64::from(self.u16_at(off)? & 0x3fff), 2)),
            2 => Ok((u64::from(self.u32_at(off)? & 0x3fff_ffff), 4)),
            _ => Ok((self.u64_at(off)? & 0x3fff_ffff_ffff_ffff, 8)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded() {
        let buf = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let b = Bytes::new(&buf);
        assert_eq!(b.len(), 9);
        assert_eq!(b.u8_at(8), Ok(9));
        assert_eq!(b.u8_at(9), Err(OutOfBounds));
        assert_eq!(b.u16_at(7), Ok(0x0809));
        assert_eq!(b.u16_at(8), Err(OutOfBounds));
        assert_eq!(b.u32_at(5), Ok(0x0607_0809));
        assert_eq!(b.u32_at(6), Err(OutOfBounds));
        assert_eq!(b.u64_at(1), Ok(0x0203_0405_0607_0809));
        assert_eq!(b.u64_at(2), Err(OutOfBounds));
        assert_eq!(b.u8_at(usize::MAX), Err(OutOfBounds));
        assert_eq!(b.u8_at(MAX_OFFSET + 1), Err(OutOfBounds));
    }

    #[test]
    fn empty_range() {
        let b = Bytes::new(&[]);
        assert!(b.is_empty());
        assert_eq!(b.u8_at(0), Err(OutOfBounds));
        assert_eq!(b.varint_at(0), Err(OutOfBounds));
    }
}
