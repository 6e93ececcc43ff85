//! Types and names shared by the XDP program and the userspace loader.
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of implicit padding, so that the
//! kernel's map values and userspace's view of them agree byte for byte.

use crate::classify::{PassReason, Verdict};
pub use crate::wire::header::ClassifierConfig;
use crate::wire::header::{DropReason, PacketKind};

/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "stoq_xdp";
/// Name of the do-nothing program that benchmarks use as their baseline.
pub const BASELINE_PROGRAM_NAME: &str = "stoq_xdp_baseline";
/// `Array<u32>` of [`PORT_WORDS`] words: the STOQ ports as a bitmap (see [`PortSet`]).
pub const PORTS_MAP: &str = "STOQ_PORTS";
/// `Array<ClassifierConfig>` with one entry.
pub const CONFIG_MAP: &str = "STOQ_CONFIG";
/// `PerCpuArray<u64>` of [`NUM_COUNTERS`] verdict counters.
pub const COUNTERS_MAP: &str = "STOQ_COUNTERS";
/// `XskMap` indexed by rx queue.
pub const XSK_MAP: &str = "XSKMAP";
/// Words in [`PORTS_MAP`]: one bit for each of the 65,536 UDP ports.
pub const PORT_WORDS: u32 = 65_536 / 32;
/// Entries in [`XSK_MAP`]: the largest rx queue index the program can redirect from, + 1.
pub const MAX_QUEUES: u32 = 256;

/// A set of UDP ports as a 65,536-bit bitmap: port `p` is bit `p % 32` of word `p / 32`.
///
/// The XDP program holds the same words in an array map, so a membership test is one array
/// lookup and a mask, whatever the number of ports.
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet {
    words: [u32; PORT_WORDS as usize],
}

impl PortSet {
    /// The empty set.
    pub const fn new() -> Self {
        Self {
            words: [0; PORT_WORDS as usize],
        }
    }

    /// The set of `ports`.
    pub fn from_ports(ports: &[u16]) -> Self {
        let mut s = Self::new();
        for &p in ports {
            s.insert(p);
        }
        s
    }

    /// The word index and bit mask of `port`.
    #[inline(always)]
    pub const fn slot(port: u16) -> (u32, u32) {
        ((port >> 5) as u32, 1 << (port & 31))
    }

    /// Adds `port`.
    pub fn insert(&mut self, port: u16) {
        let (w, m) = Self::slot(port);
        self.words[w as usize] |= m;
    }

    /// Removes `port`.
    pub fn remove(&mut self, port: u16) {
        let (w, m) = Self::slot(port);
        self.words[w as usize] &= !m;
    }

    /// Whether `port` is in the set.
    #[inline(always)]
    pub fn contains(&self, port: u16) -> bool {
        let (w, m) = Self::slot(port);
        self.words[w as usize] & m != 0
    }

    /// The bitmap words, as stored in [`PORTS_MAP`].
    pub fn words(&self) -> &[u32; PORT_WORDS as usize] {
        &self.words
    }

    /// The ports in the set, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=u16::MAX).filter(|&p| self.contains(p))
    }

    /// Number of ports in the set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }
}

impl Default for PortSet {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Counter: STOQ packets redirected into an AF_XDP socket.
pub const COUNTER_REDIRECTED: u32 = 0;
/// Counter: STOQ packets passed to the kernel because no socket is bound on the rx queue.
pub const COUNTER_NO_SOCKET: u32 = 1;
/// Counter: the program aborted (a map could not be read).
pub const COUNTER_ABORTED: u32 = 2;
/// First counter of the [`PassReason`]s.
pub const COUNTER_PASS_BASE: u32 = 3;
/// First counter of the [`DropReason`]s.
pub const COUNTER_DROP_BASE: u32 = COUNTER_PASS_BASE + PassReason::ALL.len() as u32;
/// First counter of the STOQ [`PacketKind`]s (counted in addition to the verdict).
pub const COUNTER_KIND_BASE: u32 = COUNTER_DROP_BASE + DropReason::ALL.len() as u32;
/// Counter: STOQ packets passed to the kernel because they are larger than an AF_XDP
/// frame holds ([`XSK_MAX_FRAME`]): a GSO or GRO super-packet in generic (skb) mode. The
/// kernel stack segments them for the socket that reserves the port.
pub const COUNTER_OVERSIZE: u32 = COUNTER_KIND_BASE + PacketKind::ALL.len() as u32;
/// Counter: Initial packets dropped by the per-prefix rate limit (see [`crate::limit`]).
pub const COUNTER_INITIAL_LIMITED: u32 = COUNTER_OVERSIZE + 1;
/// Entries in [`COUNTERS_MAP`] (room to grow without changing the map size).
pub const NUM_COUNTERS: u32 = 32;

/// The largest frame the program redirects into an AF_XDP socket: STOQ's 2 KiB UMEM
/// frames less the 256 bytes of `XDP_PACKET_HEADROOM` the kernel keeps in copy mode.
pub const XSK_MAX_FRAME: u32 = 2048 - 256;

const _: () = assert!(COUNTER_INITIAL_LIMITED < NUM_COUNTERS);

impl PassReason {
    /// Index of this reason's counter.
    pub const fn counter(self) -> u32 {
        COUNTER_PASS_BASE + self as u32
    }
}

impl DropReason {
    /// Index of this reason's counter.
    pub const fn counter(self) -> u32 {
        COUNTER_DROP_BASE + self as u32
    }
}

impl PacketKind {
    /// Index of this kind's counter.
    pub const fn counter(self) -> u32 {
        COUNTER_KIND_BASE + self as u32
    }
}

impl Verdict {
    /// The counter this verdict lands in, with `socket_bound` saying whether the XSK map
    /// held a socket for the packet's rx queue.
    pub const fn counter(&self, socket_bound: bool) -> u32 {
        match self {
            Self::Stoq(_) if socket_bound => COUNTER_REDIRECTED,
            Self::Stoq(_) => COUNTER_NO_SOCKET,
            Self::Pass(r) => r.counter(),
            Self::Drop(r) => r.counter(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_set() {
        let mut s = PortSet::from_ports(&[0, 31, 32, 4433, 65535]);
        assert_eq!(s.len(), 5);
        for p in [0, 31, 32, 4433, 65535] {
            assert!(s.contains(p));
        }
        for p in [1, 30, 33, 4432, 4434, 65534] {
            assert!(!s.contains(p));
        }
        s.remove(4433);
        assert!(!s.contains(4433));
        assert_eq!(
            s.iter().collect::<alloc_free::Vec5>(),
            alloc_free::Vec5([0, 31, 32, 65535, 0], 4)
        );
        assert!(PortSet::new().is_empty());
    }

    #[test]
    fn config_is_eight_bytes_without_padding() {
        assert_eq!(size_of::<ClassifierConfig>(), 8);
        let c = ClassifierConfig::new(&crate::cid::CidLayout::DEFAULT);
        assert_eq!(ClassifierConfig::from_u64(c.to_u64()), c);
        assert_eq!(c.to_u64().to_ne_bytes()[..2], [12, 3]);
    }

    /// A tiny fixed-capacity collector, since this crate has no `alloc`.
    mod alloc_free {
        #[derive(Debug, PartialEq, Eq)]
        pub(super) struct Vec5(pub(super) [u16; 5], pub(super) usize);
        impl FromIterator<u16> for Vec5 {
            fn from_iter<I: IntoIterator<Item = u16>>(it: I) -> Self {
                let mut v = Self([0; 5], 0);
                for x in it {
                    v.0[v.1] = x;
                    v.1 += 1;
                }
                v
            }
        }
    }
}
