//! I/O backends: how datagrams reach the sans-IO core and leave it.
//!
//! One trait, [`Backend`], covers every way STOQ moves packets: batch receive, batch send,
//! capabilities that can degrade while running (a device that refuses GSO turns it off),
//! and a readiness handle the engine waits on. The engine ([`crate::engine`]) drives one
//! backend per worker.
//!
//! - [`udp::UdpBackend`]: plain UDP sockets. On Linux, `recvmmsg`/`sendmmsg` with UDP GSO
//!   (`UDP_SEGMENT`) and GRO (`UDP_GRO`); elsewhere one datagram per call.
//! - [`select`]: the automatic choice between backends, with the reason for each one
//!   skipped.
//!
//! Buffers are allocated once per worker ([`RxBatch`], [`TxBatch`]) and reused: nothing on
//! the per-packet path allocates.

#[cfg(target_os = "linux")]
pub mod afxdp;
#[cfg(target_os = "linux")]
pub(crate) mod netlink;
pub mod select;
#[cfg(all(target_os = "linux", any(test, feature = "sim")))]
pub mod simnet;
pub mod udp;
#[cfg(target_os = "linux")]
pub mod uring;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

pub use crate::conn::{DatagramInfo, EcnCodepoint, Transmit};

/// Which backend moves the packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// AF_XDP sockets fed by the `stoq_xdp` program.
    AfXdp,
    /// io_uring with multishot receive and GSO sends.
    IoUring,
    /// UDP sockets (`recvmmsg`/`sendmmsg` with GSO/GRO on Linux).
    Udp,
    /// A backend the application supplied (for example the in-memory simulated path).
    Custom,
}

impl BackendKind {
    /// Every backend, in the default order of preference: AF_XDP (taken on its own only
    /// with zero-copy), then UDP sockets, then io_uring, which `cargo xtask bench` measures
    /// slower than UDP sockets on the machines this project is tested on (bulk and
    /// request/response, docs/benchmarks.md); force it to use it.
    pub const ALL: [Self; 3] = [Self::AfXdp, Self::Udp, Self::IoUring];

    /// The name used in configuration, `STOQ_BACKEND` and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::AfXdp => "af_xdp",
            Self::IoUring => "io_uring",
            Self::Udp => "udp",
            Self::Custom => "custom",
        }
    }

    /// Parses [`name`](Self::name) (case-insensitive; `xdp` and `uring` also accepted).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "af_xdp" | "afxdp" | "xdp" => Some(Self::AfXdp),
            "io_uring" | "iouring" | "uring" => Some(Self::IoUring),
            "udp" => Some(Self::Udp),
            _ => None,
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a backend can do right now. Capabilities only ever shrink at run time (a send
/// that the device refuses with GSO turns GSO off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Most datagrams one send may carry as GSO segments (1: no GSO).
    pub gso_segments: u16,
    /// Receives may coalesce datagrams (GRO); [`RxMeta::stride`] splits them.
    pub gro: bool,
    /// ECN marks are read and written.
    pub ecn: bool,
    /// The local address of received datagrams is known, and sends can choose theirs
    /// (`IP_PKTINFO`/`IPV6_PKTINFO`, or the packet headers themselves for AF_XDP).
    pub pktinfo: bool,
    /// Packets move without a copy between kernel and user memory.
    pub zero_copy: bool,
}

/// Counters every backend keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackendStats {
    /// Receive calls that returned data.
    pub rx_batches: u64,
    /// Datagrams received (GRO super-datagrams split).
    pub rx_datagrams: u64,
    /// Send calls.
    pub tx_batches: u64,
    /// Datagrams sent.
    pub tx_datagrams: u64,
    /// Datagrams the OS refused to send (unreachable, no route, ...), dropped.
    pub tx_errors: u64,
    /// Times a send found the socket buffer full.
    pub tx_would_block: u64,
    /// Datagrams the kernel dropped on their way to this backend because it did not read
    /// them fast enough: a full socket receive buffer (UDP, io_uring: the socket's
    /// `SK_MEMINFO_DROPS`), or a full RX ring or an empty fill ring (AF_XDP:
    /// `XDP_STATISTICS`). Read from the kernel when the stats are asked for; 0 where it
    /// cannot be read.
    pub rx_dropped: u64,
}

/// Writes one datagram into the buffer given (a frame's payload area) and returns how to
/// send it (destination, length, ECN mark, source address), or `None` when there is
/// nothing more to send.
pub type Fill<'a> = dyn FnMut(&mut [u8]) -> Option<Transmit> + 'a;

/// One batch I/O backend. Calls never block: [`readiness`](Self::readiness) says what to
/// wait on.
pub trait Backend: Send + std::fmt::Debug {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// What it can do now.
    fn capabilities(&self) -> Capabilities;
    /// The local address packets arrive at.
    fn local_addr(&self) -> SocketAddr;
    /// Receives what is waiting into `batch` (cleared first); returns the number of
    /// slots filled, 0 when nothing waits.
    ///
    /// # Errors
    /// Only errors that leave the backend unusable.
    fn recv(&mut self, batch: &mut RxBatch) -> io::Result<usize>;
    /// Sends from the front of `batch`, removing what left. What remains when the OS
    /// buffer is full stays for the next call (after the readiness handle says writable).
    ///
    /// # Errors
    /// Only errors that leave the backend unusable; a datagram the network refuses is
    /// dropped and counted.
    fn send(&mut self, batch: &mut TxBatch) -> io::Result<()>;
    /// Whether received datagrams wait inside the backend, where its readiness handle
    /// cannot report them: the caller must [`recv`](Self::recv) again before it sleeps.
    ///
    /// io_uring is the case: a send reaps every completion, receive ones included, and
    /// the ring's descriptor is only readable while completions sit in its queue, so
    /// what a send took out of the queue would otherwise wait for the next datagram.
    fn rx_pending(&mut self) -> bool {
        false
    }
    /// The file descriptor to wait on for readability and writability.
    #[cfg(unix)]
    fn readiness(&self) -> std::os::fd::RawFd;
    /// Whether [`send_direct`](Self::send_direct) is how this backend sends.
    fn has_direct_tx(&self) -> bool {
        false
    }
    /// Sends datagrams written straight into the backend's own frames (AF_XDP's UMEM):
    /// `fill` gets a frame's payload area and returns the destination and length, or
    /// `None` when it has nothing more. Returns how many were queued, to go out with
    /// [`flush`](Self::flush); `None` for backends without frames of their own (the engine
    /// then uses [`send`](Self::send) with a [`TxBatch`]).
    fn send_direct(&mut self, fill: &mut Fill<'_>) -> Option<io::Result<usize>> {
        let _ = fill;
        None
    }
    /// Transmits what [`send_direct`](Self::send_direct) queued.
    ///
    /// # Errors
    /// Only errors that leave the backend unusable.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// The UDP socket that holds the port, for options set on the SO_REUSEPORT group
    /// (the engine's steering program).
    #[cfg(unix)]
    fn socket_fd(&self) -> std::os::fd::RawFd;
    /// Counters.
    fn stats(&self) -> BackendStats;
}

/// Where one received slot came from and how to split it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxMeta {
    /// The sender.
    pub from: SocketAddr,
    /// Bytes in the slot.
    pub len: usize,
    /// With GRO, the size of each coalesced datagram (the last may be shorter); equal to
    /// `len` otherwise.
    pub stride: usize,
    /// The ECN codepoint it arrived with (all of a GRO batch share one: the kernel only
    /// coalesces datagrams with the same TOS).
    pub ecn: EcnCodepoint,
    /// The local address it was sent to, when the backend knows it.
    pub dst: Option<IpAddr>,
}

impl RxMeta {
    /// `len` bytes from `from`, one datagram, nothing else known.
    pub fn new(from: SocketAddr, len: usize) -> Self {
        Self {
            from,
            len,
            stride: len,
            ecn: EcnCodepoint::NotEct,
            dst: None,
        }
    }

    /// What the transport is told of each datagram in the slot.
    pub fn info(&self) -> DatagramInfo {
        DatagramInfo {
            local_ip: self.dst,
            ecn: self.ecn,
        }
    }
}

/// Receive buffers: `slots` buffers of `slot_size` bytes, allocated once.
#[derive(Debug)]
pub struct RxBatch {
    buf: Vec<u8>,
    slot_size: usize,
    meta: Vec<RxMeta>,
    filled: usize,
    /// The next datagram to hand out: slot, and byte offset within a GRO slot.
    cursor: (usize, usize),
}

impl RxBatch {
    /// `slots` buffers of `slot_size` bytes each (64 KiB lets GRO coalesce fully).
    pub fn new(slots: usize, slot_size: usize) -> Self {
        let slots = slots.max(1);
        let none = RxMeta::new(
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            0,
        );
        Self {
            buf: vec![0; slots * slot_size],
            slot_size,
            meta: vec![none; slots],
            filled: 0,
            cursor: (0, 0),
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.meta.len()
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// Slots filled by the last receive.
    pub fn filled(&self) -> usize {
        self.filled
    }

    /// Empties the batch.
    pub fn clear(&mut self) {
        self.filled = 0;
        self.cursor = (0, 0);
    }

    /// Slot `i`'s whole buffer, for a backend to receive into.
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        let s = self.slot_size;
        &mut self.buf[i * s..(i + 1) * s]
    }

    /// Records what slot `i` received; slots are filled in order.
    pub fn set(&mut self, i: usize, meta: RxMeta) {
        debug_assert!(meta.len <= self.slot_size);
        self.meta[i] = meta;
        self.filled = self.filled.max(i + 1);
        if i == 0 {
            self.cursor = (0, 0);
        }
    }

    /// Slot `i`'s metadata and received bytes.
    pub fn get_mut(&mut self, i: usize) -> (RxMeta, &mut [u8]) {
        let m = self.meta[i];
        let s = self.slot_size;
        (m, &mut self.buf[i * s..i * s + m.len])
    }

    /// Calls `f` for every datagram received, GRO batches split by their stride, with
    /// its sender and what else the backend knows of it.
    pub fn for_each(&mut self, mut f: impl FnMut(SocketAddr, DatagramInfo, &mut [u8])) {
        self.for_each_until(|from, info, d| {
            f(from, info, d);
            true
        });
    }

    /// As [`for_each`](Self::for_each), from the first datagram not yet handed out, until
    /// `f` returns `false`: the datagrams after that one wait for the next call. Returns
    /// whether every datagram of the batch has been handed out.
    pub fn for_each_until(
        &mut self,
        mut f: impl FnMut(SocketAddr, DatagramInfo, &mut [u8]) -> bool,
    ) -> bool {
        while self.cursor.0 < self.filled {
            let (i, from_off) = self.cursor;
            let m = self.meta[i];
            let s = self.slot_size;
            // Fields borrowed apart: the cursor moves while the slot is handed out.
            let data = &mut self.buf[i * s..i * s + m.len];
            let info = m.info();
            if data.is_empty() {
                // A zero-length datagram is still a datagram: the endpoint drops and
                // counts it (as malformed) like any other that carries no packet.
                self.cursor = (i + 1, 0);
                if !f(m.from, info, data) {
                    return i + 1 >= self.filled;
                }
                continue;
            }
            let stride = if m.stride == 0 { m.len } else { m.stride }.max(1);
            let mut off = from_off;
            while off < data.len() {
                let end = (off + stride).min(data.len());
                let go_on = f(m.from, info, &mut data[off..end]);
                off = end;
                if !go_on {
                    self.cursor = if off >= data.len() {
                        (i + 1, 0)
                    } else {
                        (i, off)
                    };
                    return self.cursor.0 >= self.filled;
                }
            }
            self.cursor = (i + 1, 0);
        }
        true
    }
}

/// One send: `segments` datagrams of `segment_size` bytes (the last may be shorter) to one
/// destination, contiguous in the [`TxBatch`] arena: one GSO send where the backend can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxItem {
    /// The destination.
    pub to: SocketAddr,
    /// Offset in the arena.
    pub offset: usize,
    /// Total bytes.
    pub len: usize,
    /// Bytes per datagram (all but the last are exactly this long).
    pub segment_size: usize,
    /// Datagrams in the item.
    pub segments: u16,
    /// The ECN codepoint all of them carry.
    pub ecn: EcnCodepoint,
    /// The source address all of them are sent from (`None`: the OS chooses).
    pub src: Option<IpAddr>,
    /// No further datagram may join (the last one was shorter).
    closed: bool,
}

/// Send buffers: an arena of `capacity` datagrams of up to `mtu` bytes, grouped into
/// [`TxItem`]s of same-destination, same-size datagrams for GSO.
#[derive(Debug)]
pub struct TxBatch {
    arena: Vec<u8>,
    mtu: usize,
    capacity: usize,
    datagrams: usize,
    items: Vec<TxItem>,
    /// First item not yet sent.
    head: usize,
    /// Most segments per item (1 disables grouping).
    max_segments: u16,
}

/// GSO sends are limited to one 64 KiB UDP payload.
const GSO_MAX_BYTES: usize = 65_000;
/// A GSO group is at least this long, or it is one datagram. Where the receiver runs
/// generic (skb-mode) XDP, as on a veth pair, a super-packet reaches its program unsplit:
/// one that fits an AF_XDP frame would land in the socket as a single datagram, and every
/// packet in it would fail authentication (a pair of probe-timeout probes lost that way,
/// again and again, stalled a transfer). A longer one is passed to the kernel stack,
/// which splits it. Small datagrams gain little from grouping anyway.
const GSO_MIN_GROUP_BYTES: usize = stoq_common::maps::XSK_MAX_FRAME as usize;

impl TxBatch {
    /// Room for `capacity` datagrams of up to `mtu` bytes.
    pub fn new(capacity: usize, mtu: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            arena: vec![0; capacity * mtu],
            mtu,
            capacity,
            datagrams: 0,
            items: Vec::with_capacity(capacity),
            head: 0,
            max_segments: 1,
        }
    }

    /// Lets up to `n` same-size datagrams to one destination share an item (GSO).
    pub fn set_max_segments(&mut self, n: u16) {
        self.max_segments = n.max(1);
    }

    /// Whether another datagram fits.
    pub fn has_room(&self) -> bool {
        self.datagrams < self.capacity
    }

    /// Whether nothing waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.head == self.items.len()
    }

    /// Datagrams queued, sent or not.
    pub fn datagrams(&self) -> usize {
        self.datagrams
    }

    /// Appends one datagram that `write` produces in place: it gets `mtu` bytes and
    /// returns how to send it, or `None` if it had nothing (then nothing is added).
    /// Returns whether a datagram was added.
    pub fn push_with(&mut self, write: impl FnOnce(&mut [u8]) -> Option<Transmit>) -> bool {
        if !self.has_room() {
            return false;
        }
        let offset = self.items.last().map_or(0, |it| it.offset + it.len);
        let Some(t) = write(&mut self.arena[offset..offset + self.mtu]) else {
            return false;
        };
        let (to, ecn, src) = (t.destination, t.ecn, t.src_ip);
        let len = t.size.min(self.mtu);
        self.datagrams += 1;
        let max_segments = self.max_segments;
        let open_item = self.items.len() > self.head;
        if let Some(last) = self.items.last_mut().filter(|it| {
            open_item
                && !it.closed
                && it.to == to
                && it.ecn == ecn
                && it.src == src
                && it.segments < max_segments
                && len <= it.segment_size
                && it.len + len > GSO_MIN_GROUP_BYTES
                && it.len + len <= GSO_MAX_BYTES
        }) {
            last.len += len;
            last.segments += 1;
            last.closed = len < last.segment_size;
            return true;
        }
        self.items.push(TxItem {
            to,
            offset,
            len,
            segment_size: len,
            segments: 1,
            ecn,
            src,
            closed: false,
        });
        true
    }

    /// The items not yet sent.
    pub fn pending(&self) -> &[TxItem] {
        &self.items[self.head..]
    }

    /// An item's bytes.
    pub fn bytes(&self, item: &TxItem) -> &[u8] {
        &self.arena[item.offset..item.offset + item.len]
    }

    /// Marks the first `n` pending items as sent; the arena is reused once all are.
    pub fn advance(&mut self, n: usize) {
        self.head = (self.head + n).min(self.items.len());
        if self.head == self.items.len() {
            self.items.clear();
            self.head = 0;
            self.datagrams = 0;
        }
    }

    /// Splits every pending multi-segment item into single datagrams (after a device
    /// refused GSO), and stops grouping.
    pub fn split_segments(&mut self) {
        self.max_segments = 1;
        let pending: Vec<TxItem> = self.items.drain(self.head..).collect();
        for it in pending {
            let mut off = it.offset;
            let end = it.offset + it.len;
            while off < end {
                let len = it.segment_size.min(end - off);
                self.items.push(TxItem {
                    to: it.to,
                    offset: off,
                    len,
                    segment_size: len,
                    segments: 1,
                    ecn: it.ecn,
                    src: it.src,
                    closed: true,
                });
                off += len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
    }

    #[test]
    fn tx_groups_same_size_same_destination() {
        let mut b = TxBatch::new(16, 1500);
        b.set_max_segments(4);
        for _ in 0..6 {
            assert!(b.push_with(|buf| {
                buf[..1000].fill(7);
                Some(Transmit::new(addr(1), 1000))
            }));
        }
        // A shorter one closes its group; another destination starts a new one.
        assert!(b.push_with(|_| Some(Transmit::new(addr(1), 300))));
        assert!(b.push_with(|_| Some(Transmit::new(addr(1), 1000))));
        assert!(b.push_with(|_| Some(Transmit::new(addr(2), 1000))));
        assert!(!b.push_with(|_| None));
        let p = b.pending();
        let shape: Vec<(u16, usize, usize)> = p
            .iter()
            .map(|i| (i.segments, i.segment_size, i.len))
            .collect();
        assert_eq!(
            shape,
            vec![
                (4, 1000, 4000),
                (3, 1000, 2300),
                (1, 1000, 1000),
                (1, 1000, 1000)
            ]
        );
        // Contiguous in the arena.
        assert_eq!(p[1].offset, 4000);
        assert_eq!(b.datagrams(), 9);
        b.split_segments();
        assert_eq!(b.pending().len(), 9);
        assert_eq!(b.pending()[6].len, 300);
        b.advance(9);
        assert!(b.is_empty());
        assert_eq!(b.datagrams(), 0);
    }

    /// A zero-length datagram reaches the endpoint (which counts it) instead of vanishing
    /// in the split by stride.
    #[test]
    fn rx_hands_over_zero_length_datagrams() {
        let mut b = RxBatch::new(4, 2048);
        b.set(0, RxMeta::new(addr(1), 0));
        b.slot_mut(1)[..3].copy_from_slice(b"abc");
        b.set(1, RxMeta::new(addr(2), 3));
        let mut seen = Vec::new();
        b.for_each(|from, _, d| seen.push((from.port(), d.len())));
        assert_eq!(seen, vec![(1, 0), (2, 3)]);
    }

    /// A turn that stops part-way (its time budget spent) resumes at the next datagram,
    /// inside a GRO slot as well, and hands every datagram out exactly once.
    #[test]
    fn rx_stopped_part_way_resumes_where_it_stopped() {
        let mut b = RxBatch::new(4, 2048);
        b.slot_mut(0)[..3].copy_from_slice(b"abc");
        b.set(0, RxMeta::new(addr(1), 3));
        // A GRO slot: three datagrams of 100 bytes and a last one of 50.
        let mut gro = RxMeta::new(addr(2), 350);
        gro.stride = 100;
        b.set(1, gro);
        b.set(2, RxMeta::new(addr(3), 0));
        let mut seen = Vec::new();
        let stop_after = [1usize, 2, 1, 9];
        let mut round = 0;
        loop {
            let mut n = 0;
            let done = b.for_each_until(|from, _, d| {
                seen.push((from.port(), d.len()));
                n += 1;
                n < stop_after[round]
            });
            round += 1;
            if done {
                break;
            }
        }
        assert_eq!(round, 4, "stopped three times");
        assert_eq!(
            seen,
            vec![(1, 3), (2, 100), (2, 100), (2, 100), (2, 50), (3, 0)]
        );
        // Everything handed out: a new call hands out nothing.
        assert!(b.for_each_until(|_, _, _| panic!("nothing is left")));
        // A new receive starts over.
        b.clear();
        b.set(0, RxMeta::new(addr(4), 3));
        let mut again = Vec::new();
        b.for_each(|from, _, d| again.push((from.port(), d.len())));
        assert_eq!(again, vec![(4, 3)]);
    }

    /// A group that would fit one AF_XDP frame is never formed (see
    /// `GSO_MIN_GROUP_BYTES`): small datagrams, and a full one with a short tail, go alone.
    #[test]
    fn tx_never_groups_what_fits_one_xsk_frame() {
        let mut b = TxBatch::new(16, 1500);
        b.set_max_segments(64);
        for len in [500, 500, 500, 1200, 400, 1200, 700] {
            assert!(b.push_with(|_| Some(Transmit::new(addr(1), len))));
        }
        let shape: Vec<(u16, usize)> = b.pending().iter().map(|i| (i.segments, i.len)).collect();
        assert_eq!(
            shape,
            vec![(1, 500), (1, 500), (1, 500), (1, 1200), (1, 400), (2, 1900)]
        );
        assert!(
            b.pending()
                .iter()
                .all(|i| i.segments == 1 || i.len > stoq_common::maps::XSK_MAX_FRAME as usize)
        );
    }

    #[test]
    fn tx_respects_capacity() {
        let mut b = TxBatch::new(2, 1500);
        assert!(b.push_with(|_| Some(Transmit::new(addr(1), 10))));
        assert!(b.push_with(|_| Some(Transmit::new(addr(1), 10))));
        assert!(!b.has_room());
        assert!(!b.push_with(|_| panic!("no room: must not be called")));
    }

    #[test]
    fn rx_splits_by_stride() {
        let mut b = RxBatch::new(2, 4096);
        b.slot_mut(0)[..2500].fill(1);
        b.set(
            0,
            RxMeta {
                stride: 1000,
                ecn: EcnCodepoint::Ce,
                ..RxMeta::new(addr(9), 2500)
            },
        );
        let mut lens = Vec::new();
        b.for_each(|from, info, d| {
            assert_eq!(from, addr(9));
            assert_eq!(info.ecn, EcnCodepoint::Ce, "every datagram of a GRO batch");
            lens.push(d.len());
        });
        assert_eq!(lens, vec![1000, 1000, 500]);
    }
}
