//! STOQ: a post-quantum secure UDP transport for Linux servers, with XDP/AF_XDP
//! acceleration.
//!
//! A connection is QUIC-shaped (streams, DATAGRAMs, partially reliable messages, loss
//! recovery with STOQ's BBR, path validation and migration, MTU discovery), secured by a
//! TLS 1.3-shaped handshake whose key exchange is hybrid X25519 + ML-KEM-768 and whose
//! authentication is FALCON (pinned keys or STOQ certificate chains). Packets move through
//! the best I/O backend the host has (AF_XDP with zero-copy, io_uring, or UDP sockets with
//! GSO/GRO), chosen automatically, with the reason for each backend skipped.
//!
//! # Start here
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use stoq::crypto::sig::{SigAlg, SigningKey};
//! use stoq::handshake::{ClientConfig, ServerConfig};
//! use stoq::{Endpoint, engine::EngineConfig};
//!
//! let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut rand_core::OsRng);
//! let server = Endpoint::server(
//!     EngineConfig::new("[::]:4433".parse()?),
//!     Arc::new(ServerConfig::raw_key(key, public.clone())),
//! )?;
//! println!("{}", server.info().selection); // the backend, and why
//! server.serve(|conn| async move {
//!     while let Ok((mut send, mut recv)) = conn.accept_bi().await {
//!         if let Ok(data) = recv.read_to_end_limited(1 << 20).await {
//!             let _ = send.write_all_data(&data).await; // echo
//!             let _ = send.finish();
//!         }
//!     }
//! })?;
//!
//! let client = Endpoint::client_in_runtime(
//!     EngineConfig::new("[::]:0".parse()?),
//!     Arc::new(ClientConfig::pinned("server.example", public)),
//! )?;
//! let conn = client.connect("[::1]:4433".parse()?, "server.example").await?;
//! let (mut send, mut recv) = conn.open_bi().await?;
//! send.write_all_data(b"hello").await?;
//! send.finish()?;
//! assert_eq!(recv.read_to_end_limited(1024).await?, b"hello");
//! # Ok(()) }
//! ```
//!
//! # Layers
//!
//! Every import points down (`cargo xtask layers` checks it):
//!
//! ```text
//! api ─► engine ─► io ─► xdp ─► os          the async API, the per-core engine, backends
//!          │        │
//!          ▼        ▼
//! conn (sans-IO Endpoint, Connection) ─► handshake ─► crypto ─► frame ─► codec ─► wire
//!   └─► qlog                                    (wire: stoq-common, shared with the kernel)
//! ```
//!
//! - [`api`] ([`Endpoint`], [`Connection`], [`SendStream`], [`RecvStream`]): what an
//!   application uses, shaped like quinn's (`docs/coming-from-quinn.md` maps the calls).
//! - [`engine`]: one worker per core, each a thread with its own tokio current-thread
//!   runtime that owns a backend, the connections whose connection IDs name it, and the
//!   tasks that serve them. [`Endpoint::serve`] and [`Connection::spawn_on_worker`] run
//!   application code on the connection's own worker: no lock, no cross-thread wake-up (the
//!   fast path). A handle used on any other thread works the same, each call carried to the
//!   worker as a job. [`engine::Handler`] runs logic inside the worker's loop, with no task.
//! - [`io`]: the backends behind one trait, and [`io::select`], the automatic choice.
//! - [`conn`]: the sans-IO protocol core. It reads no clock, socket or OS randomness: `now`
//!   and datagrams go in ([`conn::Endpoint::handle_datagram`]), datagrams to send, timers
//!   and events come out; a caller with its own I/O can drive it directly.
//! - [`handshake`], [`crypto`]: the session (hybrid key exchange, FALCON, certificates, the
//!   key schedule) and packet protection.
//! - [`xdp`]: the loader for the `stoq_xdp` program (steering to AF_XDP, dropping malformed
//!   datagrams and Initial floods in the kernel, counted by reason) and the AF_XDP socket.
//! - [`metrics`] (Prometheus) and [`qlog`] (per-connection traces) for operators.
//! - `sim` (feature `sim`): a deterministic network simulator for the core.
//!
//! `docs/architecture.md` draws the thread model and maps every file; `docs/security.md`
//! states the protocol and what it defends; `docs/operations.md` covers deployment,
//! tuning, metrics, logs and qlog.
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
pub mod nat;
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
