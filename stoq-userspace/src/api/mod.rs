//! The async API, on tokio: what most applications use.
//!
//! It is shaped like quinn's, so users feel at home: an [`Endpoint`] that connects and
//! accepts, a cloneable [`Connection`], and streams that implement tokio's `AsyncRead`
//! ([`RecvStream`]) and `AsyncWrite` ([`SendStream`]).
//!
//! # Which way is fast
//!
//! Every connection lives on one engine worker (see [`crate::engine`] for the thread
//! model). How fast a call is depends on the thread it is made from:
//!
//! - **Served on the worker** ([`Endpoint::serve`], [`Connection::spawn_on_worker`]): the
//!   task runs on the worker's thread; its calls borrow the worker's state with no lock
//!   and wake nothing on another thread. A request is read, answered and sent in the
//!   wake-up that brought it. This is the fast path for servers.
//! - **A client on the caller's runtime** ([`Endpoint::client_in_runtime`]): the worker is
//!   a task of the application's runtime; each call takes the worker's (uncontended) lock,
//!   as quinn does, and on a current-thread runtime nothing crosses threads.
//! - **Anywhere else** ([`Endpoint::accept`] then `tokio::spawn`, or a client whose worker
//!   has a thread of its own): calls are carried to the worker as jobs and stream data
//!   through bounded pipes. Everything works, at the cost of a wake-up each way.
//!
//! ```no_run
//! # async fn demo(server: std::sync::Arc<stoq::handshake::ServerConfig>) -> Result<(), Box<dyn std::error::Error>> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! let endpoint = stoq::Endpoint::server(
//!     stoq::engine::EngineConfig::new("[::]:4433".parse()?),
//!     server,
//! )?;
//! println!("{}", endpoint.info().selection); // which backend, and why
//! endpoint.serve(|conn| async move {
//!     // On the connection's worker: no lock, no cross-thread wake-up.
//!     while let Ok((mut send, mut recv)) = conn.accept_bi().await {
//!         tokio::task::spawn_local(async move {
//!             let mut buf = Vec::new();
//!             recv.read_to_end(&mut buf).await?;
//!             send.write_all(&buf).await?;
//!             send.finish()?;
//!             Ok::<_, std::io::Error>(())
//!         });
//!     }
//! })?;
//! # Ok(()) }
//! ```

mod chunk;
mod connection;
mod datagram;
mod endpoint;
mod incoming;
mod nat;
mod peer;
mod reconnect;
pub(crate) mod remote;
mod rendezvous;
mod stream;

use std::io;

pub use self::chunk::Chunk;
pub use self::connection::{Connection, Message, MessageOutcome};
pub use self::endpoint::{ConnectionShutdown, Endpoint, ShutdownReport};
pub use self::incoming::{AcceptError, Incoming, RetryError};
pub use self::nat::{Mapping, NatReport};
pub use self::peer::{
    ATTEMPT_SPACING, ATTEMPT_TIMEOUT, NAT_KEEP_ALIVE, PUNCH_SPACING, PUNCHES, PeerConnection,
    PeerError, PeerPath, RELAY_FALLBACK_SILENCE, RELAY_GRACE, Relay,
};
pub use self::reconnect::{Attempt, Backoff, BackoffError, ReconnectError, is_transient};
pub use self::rendezvous::{Rendezvous, serve_rendezvous};
pub use self::stream::{RecvStream, SendStream};
use crate::conn::{self, ConnectionError};
pub use crate::engine::app::PathEvent;

/// What the handshake settled besides keys ([`Connection::handshake_data`]; quinn's
/// `handshake_data()`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeData {
    /// The application protocol selected (ALPN), if any.
    pub protocol: Option<Vec<u8>>,
    /// The server name: the one the client asked for (on either side).
    pub server_name: Option<String>,
    /// Whether the handshake resumed from a session ticket (no certificate, no signature)
    /// and, when a ticket was refused, why.
    pub resumption: crate::handshake::Resumption,
}

/// Why a connection attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// This endpoint was built with [`Endpoint::server`]: it has no client settings.
    #[error("this endpoint has no client configuration (build it with Endpoint::client)")]
    NotAClient,
    /// The protocol refused the attempt (bad settings, connection limit).
    #[error(transparent)]
    Refused(#[from] conn::ConnectError),
    /// The handshake failed or the connection ended before it completed.
    #[error("connection failed: {0}")]
    Lost(ConnectionError),
}

/// Why a DATAGRAM or message could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is gone.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The DATAGRAM was refused (too large, not supported by the peer, queue full).
    #[error(transparent)]
    Datagram(#[from] conn::SendDatagramError),
    /// The message was refused (too large for the send buffer, stream limit).
    #[error(transparent)]
    Message(#[from] conn::MessageError),
    /// The extension frame was refused (a type outside the extension range, too large,
    /// too many queued).
    #[error(transparent)]
    Extension(#[from] conn::ExtensionError),
}

/// Why [`Connection::export_keying_material`] gave nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExportKeyingMaterialError {
    /// The connection is gone.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The handshake has not completed, or the label or output is too long.
    #[error(transparent)]
    Export(#[from] conn::ExportError),
}

/// Why a stream operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The connection is gone.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The peer stopped this (sending) stream with its application code.
    #[error("the peer stopped the stream with code {0}")]
    Stopped(u64),
    /// The peer reset this (receiving) stream with its application code.
    #[error("the peer reset the stream with code {0}")]
    Reset(u64),
    /// The stream was already finished or reset by this side.
    #[error("stream already finished or reset")]
    Closed,
    /// The stream is read unordered (`read_chunk(max, false)`), so an ordered read would
    /// repeat data; or it was read in order from another thread, whose pump cannot switch
    /// to unordered reads.
    #[error("ordered and unordered reads of one stream cannot be mixed")]
    Unordered,
}

impl From<StreamError> for io::Error {
    fn from(e: StreamError) -> Self {
        let kind = match e {
            StreamError::Connection(_) => io::ErrorKind::ConnectionAborted,
            StreamError::Stopped(_) | StreamError::Reset(_) => io::ErrorKind::ConnectionReset,
            StreamError::Closed => io::ErrorKind::BrokenPipe,
            StreamError::Unordered => io::ErrorKind::InvalidInput,
        };
        Self::new(kind, e)
    }
}

/// Why [`Endpoint::incoming`] has no client to give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IncomingError {
    /// The engine admits clients itself: build it with `EngineConfig::admission =
    /// Admission::Application` to decide each one, or take connections with
    /// [`Endpoint::accept`] or [`Endpoint::serve`].
    #[error(
        "this endpoint admits clients itself: set EngineConfig::admission = \
         Admission::Application to decide each one, or use Endpoint::accept or serve"
    )]
    AutomaticAdmission,
    /// The endpoint is shutting down (or has stopped): no more clients will come.
    #[error("the endpoint is shutting down")]
    Closed,
}

/// Why connections cannot be served on their workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The engine runs on the caller's runtime ([`Endpoint::client_in_runtime`]), which
    /// may move tasks between threads: spawn on that runtime instead.
    #[error(
        "this endpoint runs on the caller's runtime: spawn tasks there (tokio::spawn), or build \
         it with Endpoint::client for a worker thread of its own"
    )]
    OnCallerRuntime,
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Stopped,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_move_between_threads() {
        fn is_send_sync<T: Send + Sync>() {}
        is_send_sync::<Endpoint>();
        is_send_sync::<Connection>();
        is_send_sync::<SendStream>();
        is_send_sync::<RecvStream>();
        is_send_sync::<Message>();
        is_send_sync::<Incoming>();
    }
}
