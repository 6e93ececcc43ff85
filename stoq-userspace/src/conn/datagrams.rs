//! A DATAGRAM queue (RFC 9221) that does not allocate per datagram.
//!
//! Each datagram is held in a buffer of its own, so a frame can be written from one slice,
//! and buffers are recycled through a small spare list: once the queue and its spares have
//! grown to the working set (a few buffers of the largest datagram seen), pushing and
//! popping allocate nothing. [`DatagramQueue::pop_into`] swaps the datagram's buffer with
//! the caller's, so a caller that reuses one `Vec` receives without a copy or an
//! allocation.

use std::collections::VecDeque;

/// Spare buffers kept for reuse: enough for a burst between two reads, few enough that an
/// idle connection holds little.
const MAX_SPARE: usize = 32;
/// Largest buffer kept for reuse (a caller's buffer swapped in may be larger).
const MAX_SPARE_CAPACITY: usize = 64 << 10;

/// Datagrams in order, in recycled buffers.
#[derive(Debug, Default)]
pub(crate) struct DatagramQueue {
    queue: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
}

impl DatagramQueue {
    /// Datagrams queued.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The oldest datagram.
    pub(crate) fn front(&self) -> Option<&[u8]> {
        self.queue.front().map(Vec::as_slice)
    }

    /// Queues a copy of `d`, in a spare buffer when there is one.
    pub(crate) fn push(&mut self, d: &[u8]) {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(d);
        self.queue.push_back(b);
    }

    /// Takes the oldest datagram, buffer and all (the queue allocates a new buffer later).
    pub(crate) fn pop(&mut self) -> Option<Vec<u8>> {
        self.queue.pop_front()
    }

    /// Moves the oldest datagram into `out` by swapping buffers: `out`'s old buffer is kept
    /// for reuse. Returns whether there was one (`out` is left as it was if not).
    pub(crate) fn pop_into(&mut self, out: &mut Vec<u8>) -> bool {
        let Some(mut b) = self.queue.pop_front() else {
            return false;
        };
        std::mem::swap(out, &mut b);
        self.recycle(b);
        true
    }

    /// Drops the oldest datagram, keeping its buffer. Returns whether there was one.
    pub(crate) fn discard_front(&mut self) -> bool {
        match self.queue.pop_front() {
            Some(b) => {
                self.recycle(b);
                true
            }
            None => false,
        }
    }

    fn recycle(&mut self, b: Vec<u8>) {
        if self.spare.len() < MAX_SPARE && b.capacity() <= MAX_SPARE_CAPACITY {
            self.spare.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_swap_and_reuse() {
        let mut q = DatagramQueue::default();
        q.push(b"one");
        q.push(b"two");
        q.push(b"three");
        assert_eq!(q.len(), 3);
        assert_eq!(q.front(), Some(&b"one"[..]));
        let mut out = Vec::with_capacity(100);
        assert!(q.pop_into(&mut out));
        assert_eq!(out, b"one");
        assert!(q.discard_front());
        assert_eq!(q.pop().as_deref(), Some(&b"three"[..]));
        assert!(q.is_empty());
        assert!(!q.pop_into(&mut out));
        assert_eq!(out, b"one", "untouched when the queue is empty");
        // The caller's buffer (capacity 100) and the discarded one are reused.
        assert_eq!(q.spare.len(), 2);
        q.push(&[9; 50]);
        assert_eq!(q.spare.len(), 1);
        // Spares are bounded in number and size.
        for _ in 0..100 {
            q.push(b"x");
        }
        while q.discard_front() {}
        assert_eq!(q.spare.len(), MAX_SPARE);
        let mut big = Vec::with_capacity(MAX_SPARE_CAPACITY + 1);
        q.spare.clear();
        q.push(b"y");
        assert!(q.pop_into(&mut big));
        assert!(q.spare.is_empty(), "an oversized buffer is not kept");
    }
}
