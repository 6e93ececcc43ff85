//! One mmapped single-producer, single-consumer ring shared with the kernel.
//!
//! The producer and consumer indices live in the shared mapping and are read and written
//! with acquire/release atomics, as the kernel's `Documentation/networking/af_xdp.rst`
//! prescribes. Each side keeps a cached copy of the other side's index and refreshes it
//! only when the cache says the ring is full (producer) or empty (consumer), so a batch
//! costs one shared read, not one per entry:
//! - producer: [`Ring::reserve`], write the slots, [`Ring::submit`];
//! - consumer: [`Ring::peek`], read the slots, [`Ring::release`].

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use super::if_xdp;
use crate::os::mmap::Mmap;

/// One mmapped ring: producer, consumer, flags and descriptors of type `T`.
#[derive(Debug)]
pub(crate) struct Ring<T> {
    _map: Mmap,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    descs: NonNull<T>,
    mask: u32,
    /// Our side's index (producer or consumer), ahead of the shared one until published.
    local: u32,
    /// The other side's index as last read.
    cached: u32,
}

impl<T: Copy> Ring<T> {
    /// Maps the ring at `pgoff` of the socket `fd`, with the kernel's `off`sets; we are its
    /// producer (fill, TX) or its consumer (completion, RX).
    pub(crate) fn map(
        fd: RawFd,
        off: &if_xdp::xdp_ring_offset,
        size: u32,
        pgoff: u64,
        producer: bool,
    ) -> io::Result<Self> {
        let len = off.desc as usize + size as usize * size_of::<T>();
        let map = Mmap::new(len, Some(fd), pgoff)?;
        let at = |o: u64| -> NonNull<u8> {
            // SAFETY: the kernel's offsets lie inside the `len` bytes just mapped.
            unsafe { map.ptr.add(o as usize) }
        };
        let mut r = Self {
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            descs: at(off.desc).cast(),
            mask: size - 1,
            _map: map,
            local: 0,
            cached: 0,
        };
        let (p, c) = (
            r.producer().load(Ordering::Acquire),
            r.consumer().load(Ordering::Acquire),
        );
        (r.local, r.cached) = if producer { (p, c) } else { (c, p) };
        Ok(r)
    }

    pub(crate) fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live ring mapping; the kernel only accesses it atomically.
        unsafe { self.producer.as_ref() }
    }

    pub(crate) fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    /// Whether the kernel asked to be woken (`XDP_RING_NEED_WAKEUP`).
    pub(crate) fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        unsafe { self.flags.as_ref() }.load(Ordering::Relaxed) & if_xdp::XDP_RING_NEED_WAKEUP != 0
    }

    fn slot(&self, idx: u32) -> *mut T {
        // SAFETY: `idx & mask` is below the ring size the mapping was sized for.
        unsafe { self.descs.as_ptr().add((idx & self.mask) as usize) }
    }

    // ----- Producer side (fill and TX rings) -------------------------------------------

    /// Up to `n` free slots, starting at [`local`](Self::local) (refreshes the cached
    /// consumer index only when the cache shows too few).
    pub(crate) fn reserve(&mut self, n: u32) -> u32 {
        let size = self.mask + 1;
        let mut free = size - self.local.wrapping_sub(self.cached);
        if free < n {
            self.cached = self.consumer().load(Ordering::Acquire);
            free = size - self.local.wrapping_sub(self.cached);
        }
        free.min(n)
    }

    /// Writes `item` into the `i`-th reserved slot.
    pub(crate) fn write(&mut self, i: u32, item: T) {
        // SAFETY: reserved slots (between our index and the consumer's plus the ring size)
        // belong to the producer: the kernel does not read them until `submit`.
        unsafe { self.slot(self.local.wrapping_add(i)).write(item) };
    }

    /// Publishes `n` written slots to the kernel.
    pub(crate) fn submit(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.producer().store(self.local, Ordering::Release);
    }

    /// Entries published and not yet consumed by the kernel.
    pub(crate) fn in_flight(&self) -> u32 {
        self.local
            .wrapping_sub(self.consumer().load(Ordering::Acquire))
    }

    // ----- Consumer side (completion and RX rings) -------------------------------------

    /// Up to `max` entries ready to read (refreshes the cached producer index only when
    /// the cache shows none).
    pub(crate) fn peek(&mut self, max: u32) -> u32 {
        let mut ready = self.cached.wrapping_sub(self.local);
        if ready == 0 {
            self.cached = self.producer().load(Ordering::Acquire);
            ready = self.cached.wrapping_sub(self.local);
        }
        ready.min(max)
    }

    /// The `i`-th entry ready.
    pub(crate) fn read(&self, i: u32) -> T {
        // SAFETY: slots between our index and the producer's were published by the kernel
        // (seen with Acquire in `peek`) and are ours until `release`.
        unsafe { self.slot(self.local.wrapping_add(i)).read() }
    }

    /// Gives `n` read entries back to the kernel.
    pub(crate) fn release(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.consumer().store(self.local, Ordering::Release);
    }
}
