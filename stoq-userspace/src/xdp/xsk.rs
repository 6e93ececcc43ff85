//! A minimal AF_XDP socket: one UMEM, its fill and completion rings, and one RX and one TX
//! ring, bound to one queue of one interface.
//!
//! This is the foundation the dataplane builds on: enough to receive what `stoq_xdp`
//! redirects and to transmit frames built in UMEM. Every ring is single-producer,
//! single-consumer; producer and consumer indices are shared with the kernel through
//! `mmap`ed memory and accessed with acquire/release atomics, as the kernel's
//! `Documentation/networking/af_xdp.rst` prescribes.
//!
//! In copy mode (the only mode veth offers) the kernel places received frames at
//! `chunk + XDP_PACKET_HEADROOM` (256 bytes); descriptors are masked back to their chunk
//! before they return to the fill ring.

use std::io;

use crate::io::mmap::Mmap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Socket settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskConfig {
    /// Bytes per UMEM frame (2048 or 4096).
    pub frame_size: u32,
    /// Number of UMEM frames.
    pub frame_count: u32,
    /// Entries in each ring (a power of two).
    pub ring_size: u32,
    /// Bind with `XDP_USE_NEED_WAKEUP`, so the kernel is only kicked when it asks.
    pub need_wakeup: bool,
    /// Which copy mode to ask for.
    pub mode: BindMode,
}

impl Default for XskConfig {
    fn default() -> Self {
        Self {
            frame_size: 2048,
            frame_count: 4096,
            ring_size: 2048,
            need_wakeup: true,
            mode: BindMode::Auto,
        }
    }
}

/// How the socket moves data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// Zero-copy where the driver supports it, copy otherwise.
    Auto,
    /// Force copy mode.
    Copy,
    /// Require zero-copy (fails with `EOPNOTSUPP` on drivers without it, such as veth).
    ZeroCopy,
}

/// One mmapped ring: producer, consumer, flags and descriptors of type `T`.
#[derive(Debug)]
struct Ring<T> {
    _map: Mmap,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    descs: NonNull<T>,
    mask: u32,
}

impl<T: Copy> Ring<T> {
    fn map(fd: RawFd, off: &libc::xdp_ring_offset, size: u32, pgoff: u64) -> io::Result<Self> {
        let len = off.desc as usize + size as usize * size_of::<T>();
        let map = Mmap::new(len, Some(fd), pgoff)?;
        let at = |o: u64| -> NonNull<u8> {
            // SAFETY: the kernel's offsets lie inside the `len` bytes just mapped.
            unsafe { map.ptr.add(o as usize) }
        };
        Ok(Self {
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            descs: at(off.desc).cast(),
            mask: size - 1,
            _map: map,
        })
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live ring mapping; the kernel only accesses it atomically.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        unsafe { self.flags.as_ref() }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    fn slot(&self, idx: u32) -> *mut T {
        // SAFETY: `idx & mask` is below the ring size the mapping was sized for.
        unsafe { self.descs.as_ptr().add((idx & self.mask) as usize) }
    }

    /// Producer side: writes `items` if they all fit; returns how many were written.
    fn produce(&mut self, items: &[T]) -> usize {
        let prod = self.producer().load(Ordering::Relaxed);
        let cons = self.consumer().load(Ordering::Acquire);
        let free = (self.mask + 1) - prod.wrapping_sub(cons);
        let n = items.len().min(free as usize);
        for (i, item) in items[..n].iter().enumerate() {
            // SAFETY: slots between prod and cons + size belong to the producer (us).
            unsafe { self.slot(prod.wrapping_add(i as u32)).write(*item) };
        }
        self.producer()
            .store(prod.wrapping_add(n as u32), Ordering::Release);
        n
    }

    /// Consumer side: reads up to `max` entries into `f`.
    fn consume(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let cons = self.consumer().load(Ordering::Relaxed);
        let prod = self.producer().load(Ordering::Acquire);
        let n = (prod.wrapping_sub(cons) as usize).min(max);
        for i in 0..n {
            // SAFETY: slots between cons and prod were published by the kernel (Acquire).
            f(unsafe { self.slot(cons.wrapping_add(i as u32)).read() });
        }
        self.consumer()
            .store(cons.wrapping_add(n as u32), Ordering::Release);
        n
    }
}

/// An AF_XDP socket with its own UMEM.
#[derive(Debug)]
pub struct XskSocket {
    fd: OwnedFd,
    umem: Mmap,
    fill: Ring<u64>,
    comp: Ring<u64>,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    free: Vec<u64>,
    cfg: XskConfig,
    zero_copy: bool,
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn setopt<T>(fd: RawFd, opt: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` points at a live `T` of the size passed.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Reads a socket option into a plain C struct of integers.
fn getopt<T: Copy>(fd: RawFd, opt: libc::c_int) -> io::Result<T> {
    // SAFETY: only used with libc's plain-integer structs, for which all-zero is valid.
    let mut v: T = unsafe { std::mem::zeroed() };
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is a live, writable `T` and `len` is its size.
    check(unsafe { libc::getsockopt(fd, libc::SOL_XDP, opt, (&raw mut v).cast(), &mut len) })?;
    Ok(v)
}

impl XskSocket {
    /// Creates a socket, registers a UMEM, maps the rings and binds to `queue` of the
    /// interface `ifindex`. Half the frames go to the fill ring, half are kept for TX.
    pub fn bind(ifindex: u32, queue: u32, cfg: XskConfig) -> io::Result<Self> {
        if !cfg.ring_size.is_power_of_two()
            || !cfg.frame_size.is_power_of_two()
            || cfg.frame_count < 2
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ring_size and frame_size must be powers of two",
            ));
        }
        // SAFETY: plain socket(2) call; the result is checked.
        let raw =
            check(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem = Mmap::new(cfg.frame_size as usize * cfg.frame_count as usize, None, 0)?;
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr.as_ptr() as u64,
            len: umem.len as u64,
            chunk_size: cfg.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setopt(raw, libc::XDP_UMEM_REG, &reg)?;
        for opt in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            setopt(raw, opt, &cfg.ring_size)?;
        }
        let off: libc::xdp_mmap_offsets = getopt(raw, libc::XDP_MMAP_OFFSETS)?;
        let fill = Ring::map(raw, &off.fr, cfg.ring_size, libc::XDP_UMEM_PGOFF_FILL_RING)?;
        let comp = Ring::map(
            raw,
            &off.cr,
            cfg.ring_size,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
        )?;
        let rx = Ring::map(raw, &off.rx, cfg.ring_size, libc::XDP_PGOFF_RX_RING as u64)?;
        let tx = Ring::map(raw, &off.tx, cfg.ring_size, libc::XDP_PGOFF_TX_RING as u64)?;

        let mut flags = match cfg.mode {
            BindMode::Auto => 0,
            BindMode::Copy => libc::XDP_COPY,
            BindMode::ZeroCopy => libc::XDP_ZEROCOPY,
        };
        if cfg.need_wakeup {
            flags |= libc::XDP_USE_NEED_WAKEUP;
        }
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `sa` is a valid sockaddr_xdp of the size passed.
        check(unsafe {
            libc::bind(
                raw,
                (&raw const sa).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        })?;
        let opts: libc::xdp_options = getopt(raw, libc::XDP_OPTIONS)?;

        let mut me = Self {
            fd,
            umem,
            fill,
            comp,
            rx,
            tx,
            free: (0..u64::from(cfg.frame_count))
                .map(|i| i * u64::from(cfg.frame_size))
                .collect(),
            cfg,
            zero_copy: opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0,
        };
        me.refill();
        Ok(me)
    }

    /// The kernel's counters for this socket (`XDP_STATISTICS`): drops, invalid
    /// descriptors, full or empty rings.
    ///
    /// # Errors
    /// The `getsockopt` error.
    pub fn statistics(&self) -> io::Result<libc::xdp_statistics> {
        getopt(self.fd.as_raw_fd(), libc::XDP_STATISTICS)
    }

    /// Whether the kernel runs this socket in zero-copy mode.
    pub fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Gives free frames to the kernel for receiving, keeping half for transmission.
    fn refill(&mut self) {
        let keep = (self.cfg.frame_count / 2) as usize;
        if self.free.len() <= keep {
            return;
        }
        let give = self.free.len() - keep;
        let start = self.free.len() - give;
        let n = self.fill.produce(&self.free[start..]);
        self.free.truncate(start + (give - n));
    }

    /// Waits up to `timeout_ms` for received frames.
    pub fn poll_rx(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = check(unsafe { libc::poll(&mut p, 1, timeout_ms) })?;
        Ok(n > 0)
    }

    fn frame(&self, addr: u64, len: u32) -> Option<&[u8]> {
        let end = addr.checked_add(u64::from(len))?;
        if end > self.umem.len as u64 {
            return None;
        }
        // SAFETY: the range is inside the UMEM mapping (checked above), and the kernel
        // handed this frame to us through the RX ring, so it does not write it meanwhile.
        Some(unsafe {
            std::slice::from_raw_parts(self.umem.ptr.as_ptr().add(addr as usize), len as usize)
        })
    }

    /// Hands up to `max` received frames to `f`, then recycles them into the fill ring.
    pub fn recv(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let mut descs = [libc::xdp_desc {
            addr: 0,
            len: 0,
            options: 0,
        }; 64];
        let mut total = 0;
        let mask = !(u64::from(self.cfg.frame_size) - 1);
        while total < max {
            let mut k = 0;
            let n = self.rx.consume((max - total).min(descs.len()), |d| {
                descs[k] = d;
                k += 1;
            });
            if n == 0 {
                break;
            }
            for d in &descs[..n] {
                if let Some(frame) = self.frame(d.addr, d.len) {
                    f(frame);
                }
                self.free.push(d.addr & mask);
            }
            total += n;
        }
        self.refill();
        total
    }

    /// Whether the kernel needs a kick (a `poll`/`recvfrom`) to fill the RX ring.
    pub fn rx_needs_wakeup(&self) -> bool {
        self.cfg.need_wakeup && self.fill.needs_wakeup()
    }

    /// Builds one frame with `build` (which returns its length) and queues it on the TX
    /// ring, kicking the kernel when it asks for it.
    pub fn send(&mut self, build: impl FnOnce(&mut [u8]) -> usize) -> io::Result<()> {
        self.complete();
        let addr = self
            .free
            .pop()
            .ok_or_else(|| io::Error::new(io::ErrorKind::WouldBlock, "no free UMEM frame"))?;
        let fs = self.cfg.frame_size as usize;
        // SAFETY: `addr` is a free frame (not in any ring), inside the UMEM mapping.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(self.umem.ptr.as_ptr().add(addr as usize), fs)
        };
        let len = build(buf).min(fs);
        let desc = libc::xdp_desc {
            addr,
            len: len as u32,
            options: 0,
        };
        if self.tx.produce(&[desc]) != 1 {
            self.free.push(addr);
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "TX ring full"));
        }
        if !self.cfg.need_wakeup || self.tx.needs_wakeup() {
            // SAFETY: sendto with no buffer only kicks the kernel's TX processing.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS)
                ) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The size of each UMEM frame.
    pub fn frame_size(&self) -> usize {
        self.cfg.frame_size as usize
    }

    /// Takes a free frame for transmission: its UMEM address and its bytes. Give it back
    /// with [`tx_submit`](Self::tx_submit) or [`tx_cancel`](Self::tx_cancel).
    pub fn tx_frame(&mut self) -> Option<(u64, &mut [u8])> {
        if self.free.is_empty() {
            self.complete();
        }
        let addr = self.free.pop()?;
        let fs = self.cfg.frame_size as usize;
        // SAFETY: `addr` is a free frame (in no ring, so the kernel does not touch it),
        // inside the UMEM mapping; the borrow of `self` keeps it exclusive.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(self.umem.ptr.as_ptr().add(addr as usize), fs)
        };
        Some((addr, buf))
    }

    /// The bytes of a frame taken with [`tx_frame`](Self::tx_frame) and not yet submitted.
    ///
    /// # Panics
    /// If `frame` lies outside the UMEM (it never does when it came from `tx_frame`).
    pub fn frame_mut(&mut self, frame: u64) -> &mut [u8] {
        let fs = self.cfg.frame_size as usize;
        assert!(
            frame as usize + fs <= self.umem.len,
            "frame {frame} outside the UMEM"
        );
        // SAFETY: inside the mapping (checked); a frame taken with `tx_frame` is in no
        // ring, so the kernel does not touch it, and `&mut self` keeps it exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.umem.ptr.as_ptr().add(frame as usize), fs) }
    }

    /// Returns an unused frame taken with [`tx_frame`](Self::tx_frame).
    pub fn tx_cancel(&mut self, frame: u64) {
        self.free.push(frame);
    }

    /// Queues `len` bytes at `frame + offset` on the TX ring (not yet kicked: see
    /// [`tx_flush`](Self::tx_flush)). Returns false, taking the frame back, when the
    /// ring is full.
    pub fn tx_submit(&mut self, frame: u64, offset: usize, len: usize) -> bool {
        let desc = libc::xdp_desc {
            addr: frame + offset as u64,
            len: len as u32,
            options: 0,
        };
        if self.tx.produce(&[desc]) == 1 {
            true
        } else {
            self.free.push(frame);
            false
        }
    }

    /// Kicks the kernel to transmit what was queued (when it asks for a kick), and reaps
    /// completions.
    ///
    /// # Errors
    /// A `sendto` failure other than a busy or full device.
    pub fn tx_flush(&mut self) -> io::Result<()> {
        // In copy mode each kick transmits at most 32 frames (the kernel's TX batch) and
        // answers EAGAIN while more wait: kick until the ring is drained (bounded).
        let rounds = (self.cfg.ring_size / 32 + 2) as usize;
        for _ in 0..rounds {
            if self.tx_pending() == 0 {
                break;
            }
            // Copy mode transmits only inside the kick; zero-copy drivers say when they
            // need one.
            if self.zero_copy && self.cfg.need_wakeup && !self.tx.needs_wakeup() {
                break;
            }
            // SAFETY: sendto with no buffer only kicks the kernel's TX processing.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => {}
                    // The device queue is full: try again at the next flush.
                    Some(libc::EBUSY | libc::ENOBUFS) => break,
                    _ => return Err(e),
                }
            }
            self.complete();
        }
        self.complete();
        Ok(())
    }

    /// Descriptors queued on the TX ring that the kernel has not consumed yet.
    pub fn tx_pending(&self) -> u32 {
        let prod = self.tx.producer().load(Ordering::Relaxed);
        let cons = self.tx.consumer().load(Ordering::Acquire);
        prod.wrapping_sub(cons)
    }

    /// Reaps completed transmissions; returns how many frames came back.
    pub fn complete(&mut self) -> usize {
        // A descriptor may point inside its frame (headers start where they fit): the
        // completion returns that address, and the frame is its chunk.
        let mask = !(u64::from(self.cfg.frame_size) - 1);
        let free = &mut self.free;
        self.comp.consume(usize::MAX, |addr| free.push(addr & mask))
    }
}

impl AsRawFd for XskSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

// SAFETY: the socket exclusively owns its mappings; the raw pointers are only dereferenced
// through `&mut self` (or `&self` for reads of kernel-shared atomics), so moving it to
// another thread is sound.
unsafe impl Send for XskSocket {}
