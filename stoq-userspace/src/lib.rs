//! STOQ: a post-quantum secure UDP transport for Linux servers, with XDP/AF_XDP
//! acceleration.
//!
//! Two layers, told apart by module:
//! - the async API at the crate root, [`Endpoint`], [`Connection`], [`SendStream`],
//!   [`RecvStream`] (module [`api`]), on the per-core [`engine`] and its I/O backends
//!   ([`io`]: AF_XDP, io_uring, UDP, chosen automatically with reasons). This is what an
//!   application uses.
//! - [`conn`]: the sans-IO protocol core, [`conn::Endpoint`] and [`conn::Connection`]
//!   (post-quantum handshake, packet protection, streams with flow control and priorities,
//!   datagrams, partially reliable messages, loss recovery, congestion control with STOQ's
//!   BBR, path validation and migration, MTU discovery). It reads no clock, socket or OS
//!   randomness: `now` and datagrams are passed in
//!   ([`conn::Endpoint::handle_datagram`], the one entry point for datagrams), and
//!   datagrams to send and timers come out. The async API is built on it; a caller with
//!   its own I/O can drive it directly.
//!
//! Beside them: [`xdp`], the loader for the `stoq_xdp` program (load, configure ports and
//! the CID layout, attach in driver or skb mode through a bpf_link, read
//! [`xdp::SteerStats`], detach), in-kernel test runs, and the AF_XDP socket
//! ([`xdp::xsk`]); [`classifier`], the userspace twin of the XDP classifier; [`wire`], the
//! wire format, re-exported from `stoq-common`; `sim` (feature `sim`), a deterministic
//! network simulator for the core. `docs/architecture.md` maps the modules and their
//! layers.
#![warn(missing_docs)]

pub mod api;
pub mod classifier;
pub mod codec;
pub mod conn;
pub mod crypto;
pub mod engine;
pub mod frame;
pub mod handshake;
mod host;
pub mod io;
pub mod metrics;
mod os;
pub mod qlog;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
#[cfg(target_os = "linux")]
pub mod xdp;

/// The wire format: header views, varints, connection-ID layout and the classifier,
/// re-exported from `stoq-common`.
pub use stoq_common as wire;

pub use api::{Connection, Endpoint, RecvStream, SendStream};

/// The README's Rust examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;
