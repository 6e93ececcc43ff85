//! AF_XDP sockets, hand-written over libc in s2n-quic-xdp's split:
//!
//! - [`if_xdp`]: the kernel interface (structures and constants);
//! - `syscall`: the checked system calls (socket, options, bind, kick, poll);
//! - `crate::os::mmap`: the shared mappings;
//! - `umem`: the packet memory and its free frames;
//! - `ring`: the single-producer/single-consumer rings with cached indices
//!   (reserve/submit, peek/release);
//! - `socket`: [`XskSocket`], which ties them to one queue of one interface.
//!
//! In copy mode (the only mode veth offers) the kernel places received frames at
//! `chunk + XDP_PACKET_HEADROOM` (256 bytes); descriptors are masked back to their chunk
//! before they return to the fill ring, and completions likewise.

pub mod if_xdp;
mod ring;
mod socket;
mod syscall;
mod umem;

pub use self::socket::XskSocket;

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
