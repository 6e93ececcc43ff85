//! Types and names shared by the XDP program and the userspace loader.
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of implicit padding, so that the
//! kernel's map values and userspace's view of them agree byte for byte.

use crate::classify::{DropReason, PacketKind, PassReason, Verdict};

/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "stoq_xdp";
/// Name of the do-nothing program that benchmarks use as their baseline.
pub const BASELINE_PROGRAM_NAME: &str = "stoq_xdp_baseline";
/// `HashMap<u16, u8>`: UDP destination ports (host byte order) that carry STOQ.
pub const PORTS_MAP: &str = "STOQ_PORTS";
/// `Array<ClassifierConfig>` with one entry.
pub const CONFIG_MAP: &str = "STOQ_CONFIG";
/// `PerCpuArray<u64>` of [`NUM_COUNTERS`] verdict counters.
pub const COUNTERS_MAP: &str = "STOQ_COUNTERS";
/// `XskMap` indexed by rx queue.
pub const XSK_MAP: &str = "XSKMAP";
/// Entries in [`PORTS_MAP`].
pub const MAX_PORTS: u32 = 64;
/// Entries in [`XSK_MAP`]: the largest rx queue index the program can redirect from, + 1.
pub const MAX_QUEUES: u32 = 256;

/// Classifier settings written by userspace before the program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct ClassifierConfig {
    /// Length of every CID this endpoint issues (the short-header DCID length).
    pub cid_len: u8,
    /// Offset of the worker id inside the CID.
    pub worker_offset: u8,
    /// Reserved, zero. Keeps the struct free of implicit padding.
    pub reserved: [u8; 6],
}

impl ClassifierConfig {
    /// The configuration for a CID layout.
    pub const fn new(layout: &crate::cid::CidLayout) -> Self {
        Self {
            cid_len: layout.len() as u8,
            worker_offset: layout.worker_offset() as u8,
            reserved: [0; 6],
        }
    }
}

#[cfg(feature = "user")]
#[allow(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
// SAFETY: `ClassifierConfig` is `repr(C)`, `Copy`, has no padding and every bit pattern is valid.
unsafe impl aya::Pod for ClassifierConfig {}

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
/// Entries in [`COUNTERS_MAP`] (room to grow without changing the map size).
pub const NUM_COUNTERS: u32 = 32;

const _: () = assert!(COUNTER_KIND_BASE + (PacketKind::ALL.len() as u32) <= NUM_COUNTERS);

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
