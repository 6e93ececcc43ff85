//! STOQ's wire format, shared by the XDP program (`stoq-ebpf`) and userspace (`stoq`).
//!
//! - [`wire`]: typed header views (`Packet<T>` + `Repr`) for Ethernet, IPv4, IPv6, UDP and
//!   the STOQ header.
//! - [`varint`]: QUIC variable-length integers.
//! - [`cid`]: the connection-ID layout (QUIC-LB plaintext: first octet, server id, worker id,
//!   nonce).
//! - [`classify`]: the frame classifier that decides pass, drop or steer. The XDP program
//!   runs exactly this code.
//! - [`limit`]: the XDP program's per-prefix Initial rate limit (GCRA buckets).
//! - [`maps`]: `#[repr(C)]` map values, map names and counter indices.
//! - [`ptr`]: bounds-checked reads, the one module allowed `unsafe`.
//!
//! The crate is `no_std` and never allocates. Nothing here panics on any input: parsers
//! return typed errors, and every read is bounds-checked.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cid;
pub mod classify;
pub mod limit;
pub mod maps;
pub mod ptr;
pub mod varint;
pub mod wire;
