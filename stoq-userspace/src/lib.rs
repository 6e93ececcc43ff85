//! STOQ: a post-quantum secure UDP transport for Linux servers, with XDP/AF_XDP
//! acceleration.
//!
//! This crate is the userspace half of STOQ. Today it carries:
//! - [`conn`]: the sans-IO protocol core: [`conn::Endpoint`] and [`conn::Connection`]
//!   (post-quantum handshake, packet protection, streams with flow control and priorities,
//!   datagrams, partially reliable messages, loss recovery, congestion control with STOQ's
//!   BBR, path validation and migration, MTU discovery);
//! - `sim` (feature `sim`): a deterministic network simulator for the core;
//! - [`xdp`]: the loader for the `stoq_xdp` program (load, configure ports and the CID
//!   layout, attach in driver or skb mode through a bpf_link, read [`xdp::SteerStats`],
//!   detach), in-kernel test runs, and a minimal AF_XDP socket ([`xdp::xsk`]);
//! - [`classifier`]: the userspace twin of the XDP classifier;
//! - [`wire`]: the wire format, re-exported from `stoq-common`.
//!
//! The protocol core, the I/O engine and the async API build on these.
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
mod os;
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
