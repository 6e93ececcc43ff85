//! The AF_XDP socket: a UMEM, its fill and completion rings, and one RX and one TX ring,
//! bound to one queue of one interface.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::ring::Ring;
use super::umem::Umem;
use super::{BindMode, XskConfig, if_xdp, syscall};

/// An AF_XDP socket with its own UMEM.
#[derive(Debug)]
pub struct XskSocket {
    fd: OwnedFd,
    umem: Umem,
    fill: Ring<u64>,
    comp: Ring<u64>,
    rx: Ring<if_xdp::xdp_desc>,
    tx: Ring<if_xdp::xdp_desc>,
    cfg: XskConfig,
    zero_copy: bool,
}

impl XskSocket {
    /// Creates a socket, registers a UMEM, maps the rings and binds to `queue` of the
    /// interface `ifindex`. Half the frames go to the fill ring, half are kept for TX.
    ///
    /// # Errors
    /// Invalid sizes, or the kernel's refusal of a step (`EOPNOTSUPP` for zero-copy on a
    /// driver without it, `EINVAL` for a queue the interface does not have, `EBUSY` for a
    /// queue in use).
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
        let fd = syscall::socket()?;
        let raw = fd.as_raw_fd();
        let umem = Umem::new(cfg.frame_size, cfg.frame_count)?;
        syscall::setopt(raw, if_xdp::XDP_UMEM_REG, &umem.registration())?;
        for opt in [
            if_xdp::XDP_UMEM_FILL_RING,
            if_xdp::XDP_UMEM_COMPLETION_RING,
            if_xdp::XDP_RX_RING,
            if_xdp::XDP_TX_RING,
        ] {
            syscall::setopt(raw, opt, &cfg.ring_size)?;
        }
        let off: if_xdp::xdp_mmap_offsets = syscall::getopt(raw, if_xdp::XDP_MMAP_OFFSETS)?;
        let fill = Ring::map(
            raw,
            &off.fr,
            cfg.ring_size,
            if_xdp::XDP_UMEM_PGOFF_FILL_RING,
            true,
        )?;
        let comp = Ring::map(
            raw,
            &off.cr,
            cfg.ring_size,
            if_xdp::XDP_UMEM_PGOFF_COMPLETION_RING,
            false,
        )?;
        let rx = Ring::map(
            raw,
            &off.rx,
            cfg.ring_size,
            if_xdp::XDP_PGOFF_RX_RING as u64,
            false,
        )?;
        let tx = Ring::map(
            raw,
            &off.tx,
            cfg.ring_size,
            if_xdp::XDP_PGOFF_TX_RING as u64,
            true,
        )?;
        let mut flags = match cfg.mode {
            BindMode::Auto => 0,
            BindMode::Copy => if_xdp::XDP_COPY,
            BindMode::ZeroCopy => if_xdp::XDP_ZEROCOPY,
        };
        if cfg.need_wakeup {
            flags |= if_xdp::XDP_USE_NEED_WAKEUP;
        }
        syscall::bind(
            raw,
            &if_xdp::sockaddr_xdp {
                sxdp_family: libc::AF_XDP as u16,
                sxdp_flags: flags,
                sxdp_ifindex: ifindex,
                sxdp_queue_id: queue,
                sxdp_shared_umem_fd: 0,
            },
        )?;
        let opts: if_xdp::xdp_options = syscall::getopt(raw, if_xdp::XDP_OPTIONS)?;
        let mut me = Self {
            fd,
            umem,
            fill,
            comp,
            rx,
            tx,
            cfg,
            zero_copy: opts.flags & if_xdp::XDP_OPTIONS_ZEROCOPY != 0,
        };
        me.refill();
        Ok(me)
    }

    /// The kernel's counters for this socket (`XDP_STATISTICS`): drops, invalid
    /// descriptors, full or empty rings.
    ///
    /// # Errors
    /// The `getsockopt` error.
    pub fn statistics(&self) -> io::Result<if_xdp::xdp_statistics> {
        syscall::getopt(self.fd.as_raw_fd(), if_xdp::XDP_STATISTICS)
    }

    /// Whether the kernel runs this socket in zero-copy mode.
    pub fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Gives free frames to the kernel for receiving, keeping half for transmission.
    fn refill(&mut self) {
        let keep = (self.cfg.frame_count / 2) as usize;
        if self.umem.free.len() <= keep {
            return;
        }
        let give = (self.umem.free.len() - keep) as u32;
        let n = self.fill.reserve(give);
        for i in 0..n {
            let f = self.umem.free.pop().expect("counted above");
            self.fill.write(i, f);
        }
        self.fill.submit(n);
    }

    /// Waits up to `timeout_ms` for received frames.
    ///
    /// # Errors
    /// The `poll` error.
    pub fn poll_rx(&self, timeout_ms: i32) -> io::Result<bool> {
        syscall::poll_in(self.fd.as_raw_fd(), timeout_ms)
    }

    /// Hands up to `max` received frames to `f`, then recycles them into the fill ring.
    pub fn recv(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> usize {
        let n = self.rx.peek(max.min(u32::MAX as usize) as u32);
        for i in 0..n {
            let d = self.rx.read(i);
            if let Some(frame) = self.umem.bytes(d.addr, d.len) {
                f(frame);
            }
            let chunk = self.umem.chunk(d.addr);
            self.umem.free.push(chunk);
        }
        self.rx.release(n);
        self.refill();
        n as usize
    }

    /// Whether the kernel needs a kick (a `poll`/`recvfrom`) to fill the RX ring.
    pub fn rx_needs_wakeup(&self) -> bool {
        self.cfg.need_wakeup && self.fill.needs_wakeup()
    }

    /// Builds one frame with `build` (which returns its length) and transmits it.
    ///
    /// # Errors
    /// `WouldBlock` without a free frame or with the TX ring full; a kick failure.
    pub fn send(&mut self, build: impl FnOnce(&mut [u8]) -> usize) -> io::Result<()> {
        let (frame, buf) = self
            .tx_frame()
            .ok_or_else(|| io::Error::new(io::ErrorKind::WouldBlock, "no free UMEM frame"))?;
        let len = build(buf).min(self.umem.frame_size() as usize);
        if !self.tx_submit(frame, 0, len) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "TX ring full"));
        }
        self.tx_flush()
    }

    /// The size of each UMEM frame.
    pub fn frame_size(&self) -> usize {
        self.umem.frame_size() as usize
    }

    /// Takes a free frame for transmission: its UMEM address and its bytes. Give it back
    /// with [`tx_submit`](Self::tx_submit) or [`tx_cancel`](Self::tx_cancel).
    pub fn tx_frame(&mut self) -> Option<(u64, &mut [u8])> {
        if self.umem.free.is_empty() {
            self.complete();
        }
        let frame = self.umem.free.pop()?;
        Some((frame, self.umem.frame_mut(frame)))
    }

    /// The bytes of a frame taken with [`tx_frame`](Self::tx_frame) and not yet submitted.
    ///
    /// # Panics
    /// If `frame` lies outside the UMEM (it never does when it came from `tx_frame`).
    pub fn frame_mut(&mut self, frame: u64) -> &mut [u8] {
        self.umem.frame_mut(frame)
    }

    /// Returns an unused frame taken with [`tx_frame`](Self::tx_frame).
    pub fn tx_cancel(&mut self, frame: u64) {
        self.umem.free.push(frame);
    }

    /// Queues `len` bytes at `frame + offset` on the TX ring (not yet kicked: see
    /// [`tx_flush`](Self::tx_flush)). Returns false, taking the frame back, when the
    /// ring is full.
    pub fn tx_submit(&mut self, frame: u64, offset: usize, len: usize) -> bool {
        if self.tx.reserve(1) == 0 {
            self.umem.free.push(frame);
            return false;
        }
        self.tx.write(
            0,
            if_xdp::xdp_desc {
                addr: frame + offset as u64,
                len: len as u32,
                options: 0,
            },
        );
        self.tx.submit(1);
        true
    }

    /// Kicks the kernel to transmit what was queued, and reaps completions.
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
            match syscall::kick(self.fd.as_raw_fd()) {
                Ok(()) => {}
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => {}
                    // The device queue is full: try again at the next flush.
                    Some(libc::EBUSY | libc::ENOBUFS) => break,
                    _ => return Err(e),
                },
            }
            self.complete();
        }
        self.complete();
        Ok(())
    }

    /// Descriptors queued on the TX ring that the kernel has not consumed yet.
    pub fn tx_pending(&self) -> u32 {
        self.tx.in_flight()
    }

    /// Reaps completed transmissions; returns how many frames came back.
    pub fn complete(&mut self) -> usize {
        let n = self.comp.peek(u32::MAX);
        for i in 0..n {
            // A descriptor may point inside its frame (headers start where they fit):
            // the completion returns that address, and the frame is its chunk.
            let addr = self.comp.read(i);
            let chunk = self.umem.chunk(addr);
            self.umem.free.push(chunk);
        }
        self.comp.release(n);
        n as usize
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
