//! A stream's send buffer: every byte written and not yet acknowledged, addressed by its
//! position from the oldest one.
//!
//! Writes come in two kinds:
//! - copied ([`push_slice`](SendBuf::push_slice)): appended to a growable tail, so small
//!   writes coalesce and cost no allocation once the tail has room;
//! - shared ([`push_chunk`](SendBuf::push_chunk)): a [`Bytes`] kept as it is, so an
//!   application that already holds its data in `Bytes` hands it over without a copy.
//!   The only copy left is the one into the packet, which the in-place AEAD needs.
//!
//! Reading a range ([`copy_to`](SendBuf::copy_to)) finds its first chunk by binary
//! search: a retransmission deep in a wide window costs `O(log chunks)`, not a walk.
//! Acknowledged bytes leave from the front ([`drain_front`](SendBuf::drain_front)) in
//! `O(1)` per chunk released.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use crate::frame::Out;

/// Unacknowledged stream bytes; position 0 is the oldest.
#[derive(Debug, Default)]
pub(crate) struct SendBuf {
    /// Shared chunks, oldest first, each with its position when it was appended
    /// (positions only grow; `front_pos` is subtracted to address them).
    chunks: VecDeque<(u64, Bytes)>,
    /// Copied bytes after the last chunk, starting at position `tail_pos`.
    tail: BytesMut,
    tail_pos: u64,
    /// Position (in the same running count as the chunks) of the oldest buffered byte.
    front_pos: u64,
}

impl SendBuf {
    /// Bytes buffered.
    pub(crate) fn len(&self) -> usize {
        (self.tail_pos + self.tail.len() as u64 - self.front_pos) as usize
    }

    /// Appends a copy of `data`.
    pub(crate) fn push_slice(&mut self, data: &[u8]) {
        self.tail.extend_from_slice(data);
    }

    /// Appends `data` without copying it.
    pub(crate) fn push_chunk(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.seal_tail();
        let pos = self.tail_pos;
        self.tail_pos += data.len() as u64;
        self.chunks.push_back((pos, data));
    }

    /// Turns the copied tail into a chunk, so a shared chunk can follow it in order.
    fn seal_tail(&mut self) {
        if self.tail.is_empty() {
            return;
        }
        let t = self.tail.split().freeze();
        let pos = self.tail_pos;
        self.tail_pos += t.len() as u64;
        self.chunks.push_back((pos, t));
    }

    /// Writes bytes `at..at + n` into `w`; `None` if `w` lacks room or the range is not
    /// buffered.
    pub(crate) fn copy_to(&self, w: &mut Out<'_>, at: usize, n: usize) -> Option<()> {
        if at.checked_add(n)? > self.len() {
            return None;
        }
        let mut pos = self.front_pos + at as u64;
        let end = pos + n as u64;
        if pos < self.tail_pos {
            // The chunk holding `pos`: the last one starting at or before it.
            let i = self.chunks.partition_point(|(p, _)| *p <= pos) - 1;
            for (p, c) in self.chunks.range(i..) {
                if pos >= end {
                    break;
                }
                let from = (pos - p) as usize;
                let to = ((end - p) as usize).min(c.len());
                w.put(&c[from..to])?;
                pos = p + to as u64;
            }
        }
        if pos < end {
            let from = (pos - self.tail_pos) as usize;
            w.put(&self.tail[from..from + (end - pos) as usize])?;
        }
        Some(())
    }

    /// Releases the oldest `n` bytes (acknowledged).
    pub(crate) fn drain_front(&mut self, n: usize) {
        let n = n.min(self.len());
        let target = self.front_pos + n as u64;
        while let Some((p, c)) = self.chunks.front_mut() {
            let end = *p + c.len() as u64;
            if end <= target {
                self.chunks.pop_front();
                continue;
            }
            if *p < target {
                // Partly acknowledged: keep its rest. The chunk's position moves with it.
                c.advance((target - *p) as usize);
                *p = target;
            }
            break;
        }
        if target > self.tail_pos {
            self.tail.advance((target - self.tail_pos) as usize);
            self.tail_pos = target;
        }
        self.front_pos = target;
        if self.tail.is_empty() {
            // Emptied: the next write goes to the start of the tail's allocation again
            // (when no chunk still shares it), so a buffer drained every round trip keeps
            // using the same few cache lines instead of walking its whole capacity. This
            // never allocates.
            let _ = self.tail.try_reclaim(self.tail.capacity() + 1);
        }
    }

    /// Drops everything (a reset stream).
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(b: &SendBuf, at: usize, n: usize) -> Option<Vec<u8>> {
        let mut out = vec![0u8; n];
        let mut w = Out::new(&mut out);
        b.copy_to(&mut w, at, n)?;
        assert_eq!(w.len(), n);
        Some(out)
    }

    /// Random pushes (copied and shared), reads and drains against a plain `Vec` model.
    #[test]
    fn matches_a_vec_model() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for _ in 0..200 {
            let mut b = SendBuf::default();
            let mut model: VecDeque<u8> = VecDeque::new();
            let mut next = 0u8;
            for _ in 0..300 {
                match rnd(5) {
                    0 | 1 => {
                        let n = rnd(3000) as usize;
                        let d: Vec<u8> = (0..n)
                            .map(|_| {
                                next = next.wrapping_add(1);
                                next
                            })
                            .collect();
                        if rnd(2) == 0 {
                            b.push_slice(&d);
                        } else {
                            b.push_chunk(Bytes::from(d.clone()));
                        }
                        model.extend(&d);
                    }
                    2 | 3 if !model.is_empty() => {
                        let at = rnd(model.len() as u64) as usize;
                        let n = rnd((model.len() - at) as u64 + 1) as usize;
                        let want: Vec<u8> = model.range(at..at + n).copied().collect();
                        assert_eq!(read(&b, at, n).as_deref(), Some(&want[..]));
                    }
                    _ => {
                        let n = rnd(model.len() as u64 + 1) as usize;
                        b.drain_front(n);
                        model.drain(..n);
                    }
                }
                assert_eq!(b.len(), model.len());
            }
            // Out of range and out of room are refused, not panics.
            assert_eq!(read(&b, b.len(), 1), None);
            let mut small = [0u8; 1];
            if b.len() >= 2 {
                assert_eq!(b.copy_to(&mut Out::new(&mut small), 0, 2), None);
            }
        }
    }

    #[test]
    fn a_shared_chunk_is_not_copied_into_the_buffer() {
        let data = Bytes::from(vec![7u8; 1 << 16]);
        let mut b = SendBuf::default();
        b.push_chunk(data.clone());
        let (_, c) = b.chunks.front().unwrap();
        assert_eq!(c.as_ptr(), data.as_ptr(), "the same allocation");
        b.drain_front(1000);
        assert_eq!(b.len(), (1 << 16) - 1000);
        assert_eq!(read(&b, 0, 3), Some(vec![7; 3]));
    }
}
