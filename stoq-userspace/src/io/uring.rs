//! The io_uring backend: multishot receive into a ring of provided buffers, and batches
//! of linked `sendmsg` operations with UDP GSO, one `io_uring_enter` per batch.
//!
//! - **Receive**: one multishot `recvmsg` stays armed on the socket. The kernel picks a
//!   buffer from the provided-buffer ring for each datagram (or GRO batch) and posts a
//!   completion; [`UringBackend::recv`] copies it into the caller's [`RxBatch`] and gives
//!   the buffer straight back to the ring. The operation is re-armed when the kernel ends
//!   it (no buffers left, or an error).
//! - **Send**: each [`TxItem`](super::TxItem) becomes a `sendmsg` (with a `UDP_SEGMENT`
//!   control message for a GSO group). The operations of a batch are linked, so they run
//!   in order and a failure cancels the rest: the sent part is always a prefix, as the
//!   batch API needs. A full socket buffer (`EAGAIN`) arms a one-shot poll for
//!   writability, whose completion wakes the engine through the ring's file descriptor.
//! - **Readiness**: the ring's descriptor, readable whenever completions wait.
//!
//! Queue depth and buffer counts come from [`UringConfig`].

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::udp::sys::{Control, prepare_send};
use super::udp::{BATCH, UdpBackend, UdpConfig};
use super::{Backend, BackendKind, BackendStats, Capabilities, RxBatch, RxMeta, TxBatch};
use crate::os::mmap::Mmap;

/// Settings of the io_uring backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringConfig {
    /// The socket's settings (address, buffers, GSO/GRO).
    pub udp: UdpConfig,
    /// Submission queue entries (a power of two; the completion queue gets twice as many).
    pub queue_depth: u32,
    /// Provided receive buffers (a power of two, at most 32,768).
    pub buffers: u16,
}

impl UringConfig {
    /// Defaults for `bind`: 256 queue entries, 256 receive buffers.
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            udp: UdpConfig::new(bind),
            queue_depth: 256,
            buffers: 256,
        }
    }
}

/// Buffer group id of the receive buffers.
const BGID: u16 = 7;
/// `user_data` of the multishot receive.
const RECV: u64 = u64::MAX;
/// `user_data` of the writability poll.
const POLL_OUT: u64 = u64::MAX - 1;
/// Room for the sender's address in a receive buffer.
const NAME_LEN: usize = size_of::<libc::sockaddr_storage>();
/// Room for control messages (UDP_GRO, TOS, pktinfo) in a receive buffer.
const CONTROL_LEN: usize = super::udp::sys::CONTROL_LEN;
/// `io_uring_recvmsg_out`, before the name in each receive buffer.
const OUT_HEADER: usize = 16;

/// A `msghdr` that only carries sizes (the multishot receive's template).
struct Template(libc::msghdr);

// SAFETY: the template's pointers are all null; it is plain data.
unsafe impl Send for Template {}

/// The provided-buffer ring and its buffers, in one anonymous mapping.
struct BufRing {
    map: Mmap,
    entries: u16,
    buf_size: usize,
    /// Our copy of the ring's tail (the kernel reads the shared one).
    tail: u16,
}

impl BufRing {
    fn new(entries: u16, buf_size: usize) -> io::Result<Self> {
        let ring_bytes = usize::from(entries) * size_of::<types::BufRingEntry>();
        let ring_bytes = ring_bytes.next_multiple_of(4096);
        let map = Mmap::new(ring_bytes + usize::from(entries) * buf_size, None, 0)?;
        let mut r = Self {
            map,
            entries,
            buf_size,
            tail: 0,
        };
        for bid in 0..entries {
            r.push(bid);
        }
        r.publish();
        Ok(r)
    }

    fn ring_base(&self) -> *mut types::BufRingEntry {
        self.map.ptr.as_ptr().cast()
    }

    fn buffers(&self) -> *mut u8 {
        let ring_bytes =
            (usize::from(self.entries) * size_of::<types::BufRingEntry>()).next_multiple_of(4096);
        // SAFETY: the mapping holds the ring, then the buffers.
        unsafe { self.map.ptr.as_ptr().add(ring_bytes) }
    }

    /// Buffer `bid`'s first `len` bytes.
    fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        let len = len.min(self.buf_size);
        // SAFETY: `bid` < entries (checked by the caller), so the buffer lies inside the
        // mapping; the kernel finished writing it (its completion was read).
        unsafe {
            std::slice::from_raw_parts(self.buffers().add(usize::from(bid) * self.buf_size), len)
        }
    }

    /// Queues buffer `bid` at the tail (made visible by `publish`).
    fn push(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.entries - 1));
        // SAFETY: `idx` < entries: the entry lies inside the ring; the kernel does not
        // read entries past the published tail.
        let e = unsafe { &mut *self.ring_base().add(idx) };
        // SAFETY: the buffer lies inside the mapping.
        let addr = unsafe { self.buffers().add(usize::from(bid) * self.buf_size) };
        e.set_addr(addr as u64);
        e.set_len(self.buf_size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the queued buffers visible to the kernel.
    fn publish(&self) {
        // SAFETY: the ring's first entry is initialised; `tail` gives the address of the
        // shared tail field inside it, which is an aligned u16.
        let tail = unsafe { types::BufRingEntry::tail(self.ring_base()) }.cast_mut();
        // SAFETY: as above; the release store orders the entries before the tail.
        let atomic = unsafe { &*(tail.cast::<std::sync::atomic::AtomicU16>()) };
        atomic.store(self.tail, std::sync::atomic::Ordering::Release);
    }
}

/// The io_uring backend.
pub struct UringBackend {
    udp: UdpBackend,
    ring: IoUring,
    bufs: BufRing,
    template: Box<Template>,
    armed: bool,
    /// Receive completions met while waiting for sends: (result, flags).
    early: VecDeque<(i32, u32)>,
    poll_armed: bool,
    caps: Capabilities,
    stats: BackendStats,
}

impl std::fmt::Debug for UringBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringBackend")
            .field("local", &self.udp.local_addr())
            .field("caps", &self.caps)
            .field("buffers", &self.bufs.entries)
            .finish_non_exhaustive()
    }
}

impl UringBackend {
    /// Opens the socket, sets up the ring and its buffers, and arms the receive.
    ///
    /// # Errors
    /// The socket's errors, `io_uring_setup`'s (`EPERM` when `kernel.io_uring_disabled`
    /// forbids it), or the buffer ring registration's (kernels before 5.19).
    pub fn bind(config: &UringConfig) -> io::Result<Self> {
        let udp = UdpBackend::bind(&config.udp)?;
        let caps = udp.capabilities();
        let entries = config.buffers.clamp(2, 32_768).next_power_of_two();
        let payload = if caps.gro { 65_536 } else { 2048 };
        let buf_size = OUT_HEADER + NAME_LEN + CONTROL_LEN + payload;
        let ring = IoUring::builder()
            .setup_cqsize(config.queue_depth.max(8) * 2)
            .build(config.queue_depth.max(8))?;
        let bufs = BufRing::new(entries, buf_size)?;
        // SAFETY: the ring memory stays mapped for the backend's life (it is dropped after
        // the ring: fields drop in declaration order, `ring` before `bufs`).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.ring_base() as u64,
                entries,
                BGID,
                0,
            )?;
        }
        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_namelen = NAME_LEN as libc::socklen_t;
        msg.msg_controllen = CONTROL_LEN;
        let mut b = Self {
            udp,
            ring,
            bufs,
            template: Box::new(Template(msg)),
            armed: false,
            early: VecDeque::new(),
            poll_armed: false,
            caps,
            stats: BackendStats::default(),
        };
        b.arm()?;
        b.ring.submit()?;
        Ok(b)
    }

    /// Arms the multishot receive.
    fn arm(&mut self) -> io::Result<()> {
        let e = opcode::RecvMsgMulti::new(
            types::Fd(self.udp.socket().as_raw_fd()),
            &raw const self.template.0,
            BGID,
        )
        .build()
        .user_data(RECV);
        // SAFETY: the template is boxed and lives as long as the backend; the buffers
        // are registered.
        unsafe { self.ring.submission().push(&e) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        self.armed = true;
        Ok(())
    }

    /// Handles one receive completion into slot `i` of `batch`; returns whether the slot
    /// was filled.
    fn on_recv(&mut self, res: i32, flags: u32, batch: &mut RxBatch, i: usize) -> bool {
        if !cqueue::more(flags) {
            self.armed = false;
        }
        if res < 0 {
            // ENOBUFS: every buffer is with us; re-armed after they return.
            return false;
        }
        let Some(bid) = cqueue::buffer_select(flags).filter(|b| *b < self.bufs.entries) else {
            return false;
        };
        let filled = {
            let buf = self.bufs.buffer(bid, res as usize);
            match types::RecvMsgOut::parse(buf, &self.template.0) {
                Ok(out) if !out.is_payload_truncated() => {
                    let payload = out.payload_data();
                    let from = sockaddr(out.name_data(), out.incoming_name_len());
                    let c = parse_control(out.control_data());
                    match from {
                        Some(from) if payload.len() <= batch.slot_size() => {
                            batch.slot_mut(i)[..payload.len()].copy_from_slice(payload);
                            batch.set(
                                i,
                                RxMeta {
                                    from,
                                    len: payload.len(),
                                    stride: c.gro.unwrap_or(payload.len()),
                                    ecn: c.ecn,
                                    dst: c.dst,
                                },
                            );
                            true
                        }
                        _ => false,
                    }
                }
                _ => false,
            }
        };
        self.bufs.push(bid);
        filled
    }
}

/// The IPv4/IPv6 address in a received name.
fn sockaddr(name: &[u8], len: u32) -> Option<SocketAddr> {
    let len = (len as usize).min(name.len());
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: `len` ≤ the storage's size; plain bytes into plain bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(
            name.as_ptr(),
            (&raw mut ss).cast::<u8>(),
            len.min(size_of::<libc::sockaddr_storage>()),
        );
    }
    super::udp::socket_addr(&ss, len as libc::socklen_t)
}

/// The received control messages (GRO size, ECN, destination), parsed as `recvmmsg`'s
/// are, through a `msghdr` pointing at them.
fn parse_control(control: &[u8]) -> super::udp::sys::Received {
    // SAFETY: all-zero is a valid msghdr.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_control = control.as_ptr().cast_mut().cast();
    h.msg_controllen = control.len();
    super::udp::sys::parse_control(&h)
}

impl Backend for UringBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::IoUring
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn local_addr(&self) -> SocketAddr {
        self.udp.local_addr()
    }

    fn recv(&mut self, batch: &mut RxBatch) -> io::Result<usize> {
        batch.clear();
        let mut n = 0;
        while n < batch.slots() {
            let Some((res, flags)) = self.early.pop_front() else {
                break;
            };
            if self.on_recv(res, flags, batch, n) {
                n += 1;
            }
        }
        while n < batch.slots() {
            let Some(cqe) = self.ring.completion().next() else {
                break;
            };
            match cqe.user_data() {
                RECV if self.on_recv(cqe.result(), cqe.flags(), batch, n) => n += 1,
                POLL_OUT => self.poll_armed = false,
                _ => {}
            }
        }
        self.bufs.publish();
        if !self.armed {
            self.arm()?;
        }
        self.ring.submit()?;
        if n > 0 {
            self.stats.rx_batches += 1;
            for i in 0..n {
                let (m, _) = batch.get_mut(i);
                self.stats.rx_datagrams += m.len.div_ceil(m.stride.max(1)).max(1) as u64;
            }
        }
        Ok(n)
    }

    fn send(&mut self, batch: &mut TxBatch) -> io::Result<()> {
        if self.caps.gso_segments <= 1 {
            batch.set_max_segments(1);
        }
        let fd = self.udp.socket().as_raw_fd();
        let v6 = self.udp.local_addr().is_ipv6();
        let wildcard = self.udp.local_addr().ip().is_unspecified();
        while !batch.is_empty() {
            let pending = batch.pending();
            let n = pending.len().min(BATCH);
            let mut names: [socket2::SockAddr; BATCH] =
                std::array::from_fn(|_| socket2::SockAddr::from(super::udp::UNSPECIFIED));
            let mut control = [Control::ZERO; BATCH];
            // SAFETY: plain C structs; all-zero is valid.
            let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let mut hdrs: [libc::msghdr; BATCH] = unsafe { std::mem::zeroed() };
            for i in 0..n {
                let it = pending[i];
                names[i] = socket2::SockAddr::from(super::udp::mapped(it.to, v6));
                prepare_send(
                    &mut hdrs[i],
                    &mut iov[i],
                    &names[i],
                    batch.bytes(&it),
                    &mut control[i],
                    &it,
                    wildcard,
                );
            }
            {
                let mut sq = self.ring.submission();
                for (i, h) in hdrs.iter().enumerate().take(n) {
                    let mut e = opcode::SendMsg::new(types::Fd(fd), h)
                        .build()
                        .user_data(i as u64);
                    if i + 1 < n {
                        e = e.flags(squeue::Flags::IO_LINK);
                    }
                    // SAFETY: every pointer in `hdrs[i]` (arena, names, control) stays
                    // valid until the completions are reaped below, before this frame ends.
                    if unsafe { sq.push(&e) }.is_err() {
                        return Err(io::Error::other("io_uring submission queue full"));
                    }
                }
            }
            // Wait for every send's completion; keep receive completions for `recv`.
            let mut results = [0i32; BATCH];
            let mut done = 0;
            self.ring.submit_and_wait(n)?;
            while done < n {
                let mut progressed = false;
                while let Some(cqe) = self.ring.completion().next() {
                    match cqe.user_data() {
                        RECV => self.early.push_back((cqe.result(), cqe.flags())),
                        POLL_OUT => self.poll_armed = false,
                        i if (i as usize) < n => {
                            results[i as usize] = cqe.result();
                            done += 1;
                            progressed = true;
                        }
                        _ => {}
                    }
                }
                if done < n && !progressed {
                    self.ring.submit_and_wait(1)?;
                }
            }
            let sent = results[..n].iter().take_while(|r| **r >= 0).count();
            self.stats.tx_batches += 1;
            self.stats.tx_datagrams += batch.pending()[..sent]
                .iter()
                .map(|it| u64::from(it.segments))
                .sum::<u64>();
            batch.advance(sent);
            if sent == n {
                continue;
            }
            let err = -results[sent];
            let first = batch.pending()[0];
            match err {
                libc::EAGAIN => {
                    self.stats.tx_would_block += 1;
                    if !self.poll_armed {
                        let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32)
                            .build()
                            .user_data(POLL_OUT);
                        // SAFETY: a poll holds no pointers.
                        if unsafe { self.ring.submission().push(&e) }.is_ok() {
                            self.poll_armed = true;
                            self.ring.submit()?;
                        }
                    }
                    return Ok(());
                }
                libc::EINTR | libc::ECANCELED => {}
                libc::EIO if first.segments > 1 => {
                    tracing::warn!(
                        "UDP GSO refused by the device (errno {err}); sending without it"
                    );
                    self.caps.gso_segments = 1;
                    batch.split_segments();
                }
                libc::EINVAL if first.segments > 1 => {
                    // Segments larger than the interface's MTU now (the path shrank):
                    // this batch datagram by datagram (see the UDP backend); GSO stays on.
                    batch.split_segments();
                }
                libc::EBADF | libc::ENOTSOCK | libc::EFAULT => {
                    return Err(io::Error::from_raw_os_error(err));
                }
                _ => {
                    self.stats.tx_errors += u64::from(first.segments);
                    batch.advance(1);
                }
            }
        }
        Ok(())
    }

    fn rx_pending(&mut self) -> bool {
        // Completions a send reaped, a receive the kernel ended (re-armed by `recv`), or
        // completions the kernel holds back in its overflow list: none makes the ring's
        // descriptor readable.
        !self.early.is_empty()
            || !self.armed
            || self.ring.submission().cq_overflow()
            || !self.ring.completion().is_empty()
    }

    fn readiness(&self) -> RawFd {
        self.ring.as_raw_fd()
    }

    fn socket_fd(&self) -> RawFd {
        self.udp.socket().as_raw_fd()
    }

    fn stats(&self) -> BackendStats {
        BackendStats {
            rx_dropped: self.udp.kernel_drops(),
            ..self.stats
        }
    }
}

/// Whether io_uring can be set up here: `Ok`, or the OS error (`EPERM` when the sysctl
/// forbids it, `ENOSYS` without kernel support).
pub fn probe() -> io::Result<()> {
    IoUring::new(2).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_arrive_intact_and_in_order() {
        let cfg = UringConfig::new("127.0.0.1:0".parse().expect("addr"));
        let mut a = UringBackend::bind(&cfg).expect("a");
        let mut b = UringBackend::bind(&cfg).expect("b");
        let to = b.local_addr();
        let mut tx = TxBatch::new(200, 1500);
        tx.set_max_segments(a.capabilities().gso_segments);
        for i in 0..200u16 {
            let len = if i % 50 == 49 { 33 } else { 1200 };
            assert!(tx.push_with(|buf| {
                buf[..len].fill(i as u8);
                buf[..2].copy_from_slice(&i.to_be_bytes());
                Some(crate::io::Transmit::new(to, len))
            }));
        }
        a.send(&mut tx).expect("send");
        assert!(tx.is_empty());
        let mut rx = RxBatch::new(8, 65_536);
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 200 && std::time::Instant::now() < deadline {
            if b.recv(&mut rx).expect("recv") == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            rx.for_each(|_, _, d| got.push(d.to_vec()));
        }
        assert_eq!(got.len(), 200);
        for (i, d) in got.iter().enumerate() {
            assert_eq!(u16::from_be_bytes([d[0], d[1]]) as usize, i);
            assert_eq!(d.len(), if i % 50 == 49 { 33 } else { 1200 });
        }
        assert_eq!(a.stats().tx_datagrams, 200);
        assert_eq!(b.stats().rx_datagrams, 200);
    }

    #[test]
    fn receives_a_send_reaped_are_reported_pending() {
        // Datagrams arrive while the backend sends: the send reaps their completions,
        // after which the ring's descriptor is not readable. Unless the backend says
        // they wait, an engine that sleeps on the descriptor never receives them (the
        // stall a flood during an upload showed).
        let mut cfg = UringConfig::new("127.0.0.1:0".parse().expect("addr"));
        cfg.udp.gro = false;
        let mut b = UringBackend::bind(&cfg).expect("b");
        let to = b.local_addr();
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("peer");
        let mut rx = RxBatch::new(16, 2048);
        assert_eq!(b.recv(&mut rx).expect("recv"), 0);
        assert!(!b.rx_pending(), "nothing waits yet");
        for i in 0..10u32 {
            s.send_to(&i.to_be_bytes(), to).expect("send");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut tx = TxBatch::new(4, 1500);
        assert!(tx.push_with(|buf| {
            buf[..4].fill(7);
            Some(crate::io::Transmit::new(s.local_addr().expect("addr"), 4))
        }));
        b.send(&mut tx).expect("send");
        assert!(tx.is_empty());
        let mut pfd = libc::pollfd {
            fd: b.readiness(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let ready = unsafe { libc::poll(&raw mut pfd, 1, 0) };
        assert_eq!(
            ready, 0,
            "the ring's descriptor does not show what the send reaped"
        );
        assert!(b.rx_pending(), "the backend must say that datagrams wait");
        let mut got = 0;
        while b.rx_pending() {
            b.recv(&mut rx).expect("recv");
            rx.for_each(|_, _, _| got += 1);
        }
        assert_eq!(got, 10);
    }

    #[test]
    fn many_more_datagrams_than_buffers() {
        // 4 buffers, 2,000 datagrams: the receive is re-armed after running dry.
        let mut cfg = UringConfig::new("127.0.0.1:0".parse().expect("addr"));
        cfg.buffers = 4;
        cfg.udp.gro = false;
        let mut b = UringBackend::bind(&cfg).expect("b");
        let to = b.local_addr();
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("sender");
        let mut rx = RxBatch::new(16, 2048);
        let mut got = 0;
        for i in 0..2000u32 {
            s.send_to(&i.to_be_bytes(), to).expect("send");
            if i % 100 == 99 {
                std::thread::sleep(std::time::Duration::from_millis(1));
                while b.recv(&mut rx).expect("recv") > 0 {
                    rx.for_each(|_, _, _| got += 1);
                }
            }
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < deadline && got < 2000 {
            if b.recv(&mut rx).expect("recv") == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            rx.for_each(|_, _, _| got += 1);
        }
        // Loopback may drop when the socket buffer fills; most must arrive, and the
        // receive must keep working after ENOBUFS.
        assert!(got > 1000, "{got}");
    }
}
