//! A stream's send buffer: every byte written and not yet acknowledged, addressed by its
//! position from the oldest one.
//!
//! Writes come in two kinds:
//! - copied ([`push_slice`](SendBuf::push_slice)): appended to the tail block, so small
//!   writes coalesce. A full block becomes a chunk and the next one starts; blocks grow
//!   from 4 KiB to 64 KiB as a stream keeps writing, and acknowledged ones are kept for
//!   reuse, so a bulk stream allocates nothing once its window is full and never moves
//!   buffered bytes (a single growable tail would be moved or reallocated each time it
//!   filled, copying the whole unacknowledged window);
//! - shared ([`push_chunk`](SendBuf::push_chunk)): a [`Bytes`] kept as it is, so an
//!   application that already holds its data in `Bytes` hands it over without a copy.
//!   The only copy left is the one into the packet, which the in-place AEAD needs.
//!
//! Reading a range ([`copy_to`](SendBuf::copy_to)) finds its first chunk by binary
//! search: a retransmission deep in a wide window costs `O(log chunks)`, not a walk.
//! Acknowledged bytes leave from the front ([`drain_front`](SendBuf::drain_front)) in
//! `O(1)` per chunk released.

use std::cell::Cell;
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
    /// Acknowledged full-size blocks, kept to be filled again.
    spare: Vec<BytesMut>,
    /// The size of the next block (doubling up to [`BLOCK_MAX`]).
    next_block: usize,
    /// The chunk the last read started in: packets are read in order, so the next read
    /// usually starts there or in the next one (no search).
    hint: Cell<usize>,
}

/// The first copied block of a stream.
const BLOCK_MIN: usize = 4 << 10;
/// The largest copied block.
const BLOCK_MAX: usize = 64 << 10;
/// Acknowledged blocks kept per stream for reuse.
const SPARE: usize = 2;

impl SendBuf {
    /// Bytes buffered.
    pub(crate) fn len(&self) -> usize {
        (self.tail_pos + self.tail.len() as u64 - self.front_pos) as usize
    }

    /// Appends a copy of `data`.
    pub(crate) fn push_slice(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = self.tail.capacity() - self.tail.len();
            if room == 0 {
                if !self.tail.is_empty() {
                    // Full: it becomes a chunk, and its place is empty with no room.
                    self.seal_tail();
                }
                self.tail = self.new_block();
                continue;
            }
            let n = room.min(data.len());
            self.tail.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
    }

    /// An empty block for the tail: a spare one, else a new one the next size up.
    fn new_block(&mut self) -> BytesMut {
        if let Some(b) = self.spare.pop() {
            return b;
        }
        let size = self.next_block.clamp(BLOCK_MIN, BLOCK_MAX);
        self.next_block = (size * 2).min(BLOCK_MAX);
        BytesMut::with_capacity(size)
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
            let i = self.chunk_at(pos);
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

    /// The index of the chunk holding `pos` (which is below `tail_pos`): the hinted one or
    /// the next, else the last one starting at or before it, by binary search.
    fn chunk_at(&self, pos: u64) -> usize {
        let h = self.hint.get();
        for i in [h, h + 1] {
            if let Some((p, c)) = self.chunks.get(i)
                && *p <= pos
                && pos < *p + c.len() as u64
            {
                self.hint.set(i);
                return i;
            }
        }
        let i = self.chunks.partition_point(|(p, _)| *p <= pos) - 1;
        self.hint.set(i);
        i
    }

    /// Releases the oldest `n` bytes (acknowledged).
    pub(crate) fn drain_front(&mut self, n: usize) {
        let n = n.min(self.len());
        let target = self.front_pos + n as u64;
        while let Some((p, c)) = self.chunks.front_mut() {
            let end = *p + c.len() as u64;
            if end <= target {
                if let Some((_, c)) = self.chunks.pop_front() {
                    self.keep_block(c);
                    self.hint.set(self.hint.get().saturating_sub(1));
                }
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

    /// Keeps an acknowledged chunk's allocation for reuse if it is a full-size block this
    /// buffer alone holds (not the application's shared `Bytes`).
    fn keep_block(&mut self, c: Bytes) {
        if self.spare.len() >= SPARE {
            return;
        }
        if let Ok(mut b) = c.try_into_mut() {
            b.clear();
            // An acknowledged chunk was advanced past its start: take the whole block back.
            if b.try_reclaim(BLOCK_MAX) {
                self.spare.push(b);
            }
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

    /// Where the byte `at` from the front lives now.
    fn addr(b: &SendBuf, at: usize) -> usize {
        let pos = b.front_pos + at as u64;
        if pos >= b.tail_pos {
            return b.tail.as_ptr() as usize + (pos - b.tail_pos) as usize;
        }
        let i = b.chunks.partition_point(|(p, _)| *p <= pos) - 1;
        let (p, c) = &b.chunks[i];
        c.as_ptr() as usize + (pos - p) as usize
    }

    /// A bulk stream written in large copies and acknowledged packet by packet: a
    /// buffered byte never moves (a growable tail would be moved or reallocated when it
    /// fills, copying the whole window), and acknowledged blocks are filled again.
    #[test]
    fn copied_blocks_are_reused_and_never_moved() {
        let mut b = SendBuf::default();
        let chunk: Vec<u8> = (0..(256 << 10)).map(|i| (i % 251) as u8).collect();
        let mut reused = 0;
        for _ in 0..40 {
            let before = b.spare.len();
            b.push_slice(&chunk);
            if b.spare.len() < before {
                reused += 1;
            }
            // The newest byte's address, checked again after the next write.
            let last = b.len() - 1;
            let at = addr(&b, last);
            b.push_slice(&chunk[..1000]);
            assert_eq!(addr(&b, last), at, "a buffered byte moved");
            // Acknowledge in packet-sized steps, leaving a window of 512 KiB.
            while b.len() > 512 << 10 {
                b.drain_front(1_400);
            }
        }
        let want = chunk[..1000].to_vec();
        assert_eq!(read(&b, b.len() - 1000, 1000), Some(want));
        assert!(
            reused > 30,
            "acknowledged blocks are filled again ({reused} of 40 writes)"
        );
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
