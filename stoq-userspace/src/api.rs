//! The async API, on tokio: what most applications use.
//!
//! It is shaped like quinn's, so users feel at home: an [`Endpoint`] that connects and
//! accepts, a cloneable [`Connection`], and streams that implement tokio's `AsyncRead`
//! ([`RecvStream`]) and `AsyncWrite` ([`SendStream`]).
//!
//! ```no_run
//! # async fn demo(server: std::sync::Arc<stoq::handshake::ServerConfig>) -> Result<(), Box<dyn std::error::Error>> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! let endpoint = stoq::Endpoint::server(
//!     stoq::engine::EngineConfig::new("[::]:4433".parse()?),
//!     server,
//! )?;
//! println!("{}", endpoint.info().selection); // which backend, and why
//! while let Some(conn) = endpoint.accept().await {
//!     tokio::spawn(async move {
//!         while let Ok((mut send, mut recv)) = conn.accept_bi().await {
//!             let mut buf = Vec::new();
//!             recv.read_to_end(&mut buf).await?;
//!             send.write_all(&buf).await?;
//!             send.finish()?;
//!         }
//!         Ok::<_, std::io::Error>(())
//!     });
//! }
//! # Ok(()) }
//! ```
//!
//! Every connection lives on one engine worker ([`crate::engine`]); its async handles lock
//! that worker's state for the duration of one call (never across an `await`), and wake
//! the worker when the call made work for it.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conn::{
    self, ConnectionError, ConnectionStats, Dir, OpenError, ReadError, StreamId, Urgency,
    WriteError,
};
use crate::engine::worker::{ConnShared, Engine, Slot, dir_index};
use crate::engine::{EngineConfig, EngineError, EngineInfo, WorkerStats};
use crate::handshake::{ClientConfig, ServerConfig};

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
}

impl From<StreamError> for io::Error {
    fn from(e: StreamError) -> Self {
        let kind = match e {
            StreamError::Connection(_) => io::ErrorKind::ConnectionAborted,
            StreamError::Stopped(_) | StreamError::Reset(_) => io::ErrorKind::ConnectionReset,
            StreamError::Closed => io::ErrorKind::BrokenPipe,
        };
        Self::new(kind, e)
    }
}

/// A STOQ endpoint running on the engine: a server that accepts, or a client that
/// connects (or both, with [`Endpoint::server_and_client`]).
///
/// Keep it alive while its connections are in use: dropping it stops the engine.
#[derive(Debug)]
pub struct Endpoint {
    engine: Arc<Engine>,
    client: Option<Arc<ClientConfig>>,
}

/// How [`Endpoint::shutdown`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections open when shutdown began.
    pub connections: usize,
    /// Of those, connections whose sent data was not all acknowledged when the timeout
    /// ran out (their unacknowledged data may be lost).
    pub unacknowledged: usize,
    /// Whether every connection finished closing before the timeout.
    pub drained: bool,
}

impl Endpoint {
    /// A server on `config.bind`, with one worker per core by default.
    ///
    /// # Errors
    /// [`EngineError`]: no usable (or the forced) backend, the bind failed, bad settings.
    pub fn server(config: EngineConfig, server: Arc<ServerConfig>) -> Result<Self, EngineError> {
        Ok(Self {
            engine: Engine::start(config, Some(server))?,
            client: None,
        })
    }

    /// A client, bound to `config.bind` (usually `0.0.0.0:0` or `[::]:0`).
    ///
    /// # Errors
    /// As [`server`](Self::server).
    pub fn client(config: EngineConfig, client: Arc<ClientConfig>) -> Result<Self, EngineError> {
        Ok(Self {
            engine: Engine::start(config, None)?,
            client: Some(client),
        })
    }

    /// A server on backends the application built, one per worker (the in-memory
    /// simulated path, or a backend of its own); `config.bind` and `config.backend` are
    /// not used.
    ///
    /// # Errors
    /// As [`server`](Self::server).
    pub fn server_on(
        config: EngineConfig,
        backends: Vec<Box<dyn crate::io::Backend>>,
        server: Arc<ServerConfig>,
    ) -> Result<Self, EngineError> {
        Ok(Self {
            engine: Engine::start_with(config, Some(server), Some(backends))?,
            client: None,
        })
    }

    /// A client on a backend the application built.
    ///
    /// # Errors
    /// As [`server`](Self::server).
    pub fn client_on(
        config: EngineConfig,
        backend: Box<dyn crate::io::Backend>,
        client: Arc<ClientConfig>,
    ) -> Result<Self, EngineError> {
        Ok(Self {
            engine: Engine::start_with(config, None, Some(vec![backend]))?,
            client: Some(client),
        })
    }

    /// An endpoint that accepts and connects through the same sockets.
    ///
    /// # Errors
    /// As [`server`](Self::server).
    pub fn server_and_client(
        config: EngineConfig,
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
    ) -> Result<Self, EngineError> {
        Ok(Self {
            engine: Engine::start(config, Some(server))?,
            client: Some(client),
        })
    }

    /// The backend, why it was chosen, the local address and the worker count.
    pub fn info(&self) -> &EngineInfo {
        &self.engine.info
    }

    /// The local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.engine.info.local_addr
    }

    /// Moves this endpoint's sockets to new ones bound to `bind` (port 0: a fresh port):
    /// what a NAT rebinding or a network change does to a client. Connections carry on;
    /// the server validates the new path. Returns the new local address of worker 0.
    ///
    /// # Errors
    /// The bind error.
    pub fn rebind(&self, bind: SocketAddr) -> io::Result<SocketAddr> {
        let mut first = None;
        for i in 0..self.engine.workers.len() {
            let a = self.engine.rebind(i, bind, self.engine.socket_buffer)?;
            first.get_or_insert(a);
        }
        Ok(first.unwrap_or(bind))
    }

    /// Runs `f` on every live protocol connection of every worker (under each worker's
    /// lock, briefly): for introspection such as per-connection statistics.
    pub fn with_connections<R>(&self, mut f: impl FnMut(&conn::Connection) -> R) -> Vec<R> {
        let mut out = Vec::new();
        for w in &self.engine.workers {
            let st = w.lock();
            for slot in st.slots.iter().flatten() {
                if let Some(c) = st.endpoint.connection(slot.shared.handle) {
                    out.push(f(c));
                }
            }
        }
        out
    }

    /// The XDP program's counters when the AF_XDP backend runs: packets the kernel
    /// dropped (by reason), redirected to the sockets, and passed.
    #[cfg(target_os = "linux")]
    pub fn xdp_stats(&self) -> Option<crate::xdp::SteerStats> {
        self.engine.xdp_stats()
    }

    /// Each worker's counters (handoffs, batches, connections).
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.engine.stats()
    }

    /// The protocol endpoint counters of every worker, summed where they add up.
    pub fn endpoint_stats(&self) -> Vec<conn::EndpointStats> {
        self.engine
            .workers
            .iter()
            .map(|w| w.lock().endpoint.stats())
            .collect()
    }

    /// Connects to `addr`, proving `server_name` (which replaces the client
    /// configuration's), and resolves once the handshake completes.
    ///
    /// # Errors
    /// [`ConnectError`].
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Connection, ConnectError> {
        let base = self.client.as_ref().ok_or(ConnectError::NotAClient)?;
        let cfg = if base.server_name == server_name {
            base.clone()
        } else {
            let mut c = ClientConfig::clone(base);
            c.server_name = server_name.to_string();
            Arc::new(c)
        };
        let worker = self.engine.pick().clone();
        let shared = {
            let mut st = worker.lock();
            let h = st.endpoint.connect(Instant::now(), addr, cfg)?;
            st.track(&worker, h, false)
        };
        worker.notify();
        let conn = Connection { shared };
        poll_fn(|cx| {
            conn.with(|c, slot| {
                if slot.connected {
                    return Poll::Ready(Ok(()));
                }
                if c.is_closed() {
                    return Poll::Ready(Err(c
                        .error()
                        .cloned()
                        .unwrap_or(ConnectionError::LocallyClosed)));
                }
                slot.wakers.connect = Some(cx.waker().clone());
                Poll::Pending
            })
            .unwrap_or_else(|e| Poll::Ready(Err(e)))
        })
        .await
        .map_err(ConnectError::Lost)?;
        Ok(conn)
    }

    /// The next client whose handshake completed; `None` once the endpoint shuts down.
    /// One task should accept at a time.
    pub async fn accept(&self) -> Option<Connection> {
        poll_fn(|cx| {
            let mut open = 0;
            for w in &self.engine.workers {
                let mut st = w.lock();
                if let Some(shared) = st.accept_queue.pop_front() {
                    return Poll::Ready(Some(Connection { shared }));
                }
                if !(st.shutting_down || st.stop) {
                    open += 1;
                    st.accept_waker = Some(cx.waker().clone());
                }
            }
            if open == 0 {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Shuts down gracefully: stops accepting, waits (up to `timeout`) until every
    /// connection's sent data is acknowledged, closes them all, waits for the closes to
    /// drain, then stops the workers. Data the peer acknowledged is never lost; the report
    /// says whether any was still unacknowledged at the timeout.
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let deadline = Instant::now() + timeout;
        let mut connections = 0;
        for w in &self.engine.workers {
            let mut st = w.lock();
            st.shutting_down = true;
            connections += st.endpoint.connection_count();
            if let Some(k) = st.accept_waker.take() {
                k.wake();
            }
        }
        let unacked = || {
            self.engine
                .workers
                .iter()
                .map(|w| {
                    let mut st = w.lock();
                    let ids: Vec<_> = st.slots.iter().flatten().map(|s| s.shared.handle).collect();
                    ids.into_iter()
                        .filter(|h| {
                            st.endpoint
                                .connection_mut(*h)
                                .is_some_and(|c| !c.is_closed() && !c.all_sent_data_acked())
                        })
                        .count()
                })
                .sum::<usize>()
        };
        let mut unacknowledged = unacked();
        while unacknowledged > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
            unacknowledged = unacked();
        }
        for w in &self.engine.workers {
            let mut st = w.lock();
            let now = Instant::now();
            for i in 0..st.slots.len() {
                if let Some(h) = st.slots[i].as_ref().map(|s| s.shared.handle)
                    && let Some(c) = st.endpoint.connection_mut(h)
                {
                    c.close(now, 0, b"shutdown");
                }
            }
            drop(st);
            w.notify();
        }
        let drained = loop {
            let live: usize = self
                .engine
                .workers
                .iter()
                .map(|w| w.lock().endpoint.connection_count())
                .sum();
            if live == 0 {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        self.engine.stop();
        ShutdownReport {
            connections,
            unacknowledged,
            drained,
        }
    }
}

/// A connection. Clones share it; it closes when [`close`](Self::close) is called, the
/// peer closes it, or it times out.
#[derive(Debug, Clone)]
pub struct Connection {
    shared: Arc<ConnShared>,
}

/// How a message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageOutcome {
    /// Acknowledged in full before its deadline.
    Delivered,
    /// Its deadline passed first: it was abandoned.
    Abandoned,
}

impl Connection {
    /// Runs `f` on the protocol connection and its slot, under the worker's lock.
    fn with<R>(
        &self,
        f: impl FnOnce(&mut conn::Connection, &mut Slot) -> R,
    ) -> Result<R, ConnectionError> {
        let mut st = self.shared.worker.lock();
        let st = &mut *st;
        let gone = || {
            self.shared
                .error
                .get()
                .cloned()
                .unwrap_or(ConnectionError::LocallyClosed)
        };
        let h = self.shared.handle;
        let Some(slot) = st
            .slots
            .get_mut(h.0)
            .and_then(Option::as_mut)
            .filter(|s| s.shared.serial == self.shared.serial)
        else {
            return Err(gone());
        };
        let c = st.endpoint.connection_mut(h).ok_or_else(gone)?;
        Ok(f(c, slot))
    }

    /// The error the connection ended with, once it has.
    fn ended(&self, c: &conn::Connection) -> ConnectionError {
        c.error()
            .cloned()
            .or_else(|| self.shared.error.get().cloned())
            .unwrap_or(ConnectionError::LocallyClosed)
    }

    /// The peer's address (it changes when the peer migrates).
    pub fn remote_address(&self) -> Option<SocketAddr> {
        self.with(|c, _| c.remote_address()).ok()
    }

    /// The connection ID this side was first reached by (it is on the wire, in clear).
    pub fn local_cid(&self) -> Option<crate::wire::cid::ConnectionId> {
        self.with(|c, _| c.local_cid()).ok()
    }

    /// Statistics: RTT, congestion window, bytes and packets, losses.
    pub fn stats(&self) -> Option<ConnectionStats> {
        self.with(|c, _| c.stats()).ok()
    }

    /// The protocol connection's handle on its worker and the worker's id (for the
    /// low-level [`crate::engine::Handler`] API).
    pub fn handle(&self) -> (u8, conn::ConnectionHandle) {
        (self.shared.worker.id, self.shared.handle)
    }

    async fn open(&self, dir: Dir) -> Result<StreamId, ConnectionError> {
        poll_fn(|cx| {
            let r = self.with(|c, slot| match c.open_stream(dir) {
                Ok(id) => Some(Ok(id)),
                Err(OpenError::Blocked) => {
                    slot.wakers.open[dir_index(dir)] = Some(cx.waker().clone());
                    None
                }
                Err(_) => Some(Err(self.ended(c))),
            });
            match r {
                Ok(Some(r)) => Poll::Ready(r),
                Ok(None) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await
    }

    /// Opens a bidirectional stream (waiting while the peer's stream limit is reached).
    ///
    /// # Errors
    /// The connection's error once it is gone.
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        let id = self.open(Dir::Bi).await?;
        Ok((SendStream::new(self, id), RecvStream::new(self, id)))
    }

    /// Opens a unidirectional stream.
    ///
    /// # Errors
    /// The connection's error once it is gone.
    pub async fn open_uni(&self) -> Result<SendStream, ConnectionError> {
        let id = self.open(Dir::Uni).await?;
        Ok(SendStream::new(self, id))
    }

    async fn accept(&self, dir: Dir) -> Result<StreamId, ConnectionError> {
        poll_fn(|cx| {
            self.with(|c, slot| {
                if let Some(id) = c.accept_stream(dir) {
                    return Poll::Ready(Ok(id));
                }
                if c.is_closed() {
                    return Poll::Ready(Err(self.ended(c)));
                }
                slot.wakers.accept[dir_index(dir)] = Some(cx.waker().clone());
                Poll::Pending
            })
            .unwrap_or_else(|e| Poll::Ready(Err(e)))
        })
        .await
    }

    /// The next bidirectional stream the peer opened.
    ///
    /// # Errors
    /// The connection's error once it is gone.
    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        let id = self.accept(Dir::Bi).await?;
        Ok((SendStream::new(self, id), RecvStream::new(self, id)))
    }

    /// The next unidirectional stream the peer opened.
    ///
    /// # Errors
    /// The connection's error once it is gone.
    pub async fn accept_uni(&self) -> Result<RecvStream, ConnectionError> {
        let id = self.accept(Dir::Uni).await?;
        Ok(RecvStream::new(self, id))
    }

    /// Sends an unreliable DATAGRAM.
    ///
    /// # Errors
    /// [`SendError`]: too large for [`max_datagram_size`](Self::max_datagram_size), not
    /// supported by the peer, queue full, or the connection is gone.
    pub fn send_datagram(&self, data: &[u8]) -> Result<(), SendError> {
        self.with(|c, _| c.send_datagram(data))??;
        self.shared.worker.notify();
        Ok(())
    }

    /// The largest DATAGRAM that can be sent now (`None` if the peer takes none).
    pub fn max_datagram_size(&self) -> Option<usize> {
        self.with(|c, _| c.max_datagram_size()).ok().flatten()
    }

    /// The next DATAGRAM received.
    ///
    /// # Errors
    /// The connection's error once it is gone.
    pub async fn read_datagram(&self) -> Result<Vec<u8>, ConnectionError> {
        poll_fn(|cx| {
            self.with(|c, slot| {
                if let Some(d) = c.recv_datagram() {
                    return Poll::Ready(Ok(d));
                }
                if c.is_closed() {
                    return Poll::Ready(Err(self.ended(c)));
                }
                slot.wakers.datagram = Some(cx.waker().clone());
                Poll::Pending
            })
            .unwrap_or_else(|e| Poll::Ready(Err(e)))
        })
        .await
    }

    /// Sends a partially reliable message: retransmitted until acknowledged or until
    /// `deadline` from now, then abandoned. The receiver reads it as a unidirectional
    /// stream; [`Message::outcome`] tells the sender how it ended.
    ///
    /// # Errors
    /// [`SendError`]: larger than the free send buffer, at the stream limit, or the
    /// connection is gone.
    pub fn send_message(
        &self,
        data: &[u8],
        deadline: Duration,
        urgency: Urgency,
    ) -> Result<Message, SendError> {
        let id = self.with(|c, slot| {
            let id = c.send_message(Instant::now(), data, deadline, urgency)?;
            slot.messages.insert(id, None);
            Ok::<_, SendError>(id)
        })??;
        self.shared.worker.notify();
        Ok(Message {
            conn: self.clone(),
            id,
        })
    }

    /// Closes the connection with an application error code and reason.
    pub fn close(&self, code: u64, reason: &[u8]) {
        let _ = self.with(|c, _| c.close(Instant::now(), code, reason));
        self.shared.worker.notify();
    }

    /// Resolves when the connection has ended, with the reason.
    pub async fn closed(&self) -> ConnectionError {
        poll_fn(|cx| {
            self.with(|c, slot| {
                if c.is_closed() {
                    return Poll::Ready(self.ended(c));
                }
                if !slot.wakers.closed.iter().any(|w| w.will_wake(cx.waker())) {
                    slot.wakers.closed.push(cx.waker().clone());
                }
                Poll::Pending
            })
            .unwrap_or_else(Poll::Ready)
        })
        .await
    }
}

/// A message sent with [`Connection::send_message`].
#[derive(Debug)]
pub struct Message {
    conn: Connection,
    id: StreamId,
}

impl Message {
    /// The stream that carries it.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Resolves once the message is delivered or abandoned.
    ///
    /// # Errors
    /// The connection's error if it ended first.
    pub async fn outcome(&self) -> Result<MessageOutcome, ConnectionError> {
        poll_fn(|cx| {
            self.conn
                .with(|c, slot| match slot.messages.get(&self.id) {
                    Some(Some(true)) => Poll::Ready(Ok(MessageOutcome::Delivered)),
                    Some(Some(false)) => Poll::Ready(Ok(MessageOutcome::Abandoned)),
                    _ if c.is_closed() => Poll::Ready(Err(self.conn.ended(c))),
                    _ => {
                        slot.wakers.message.insert(self.id, cx.waker().clone());
                        Poll::Pending
                    }
                })
                .unwrap_or_else(|e| Poll::Ready(Err(e)))
        })
        .await
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        let _ = self.conn.with(|_, slot| {
            slot.messages.remove(&self.id);
            slot.wakers.message.remove(&self.id);
        });
    }
}

/// The sending half of a stream: `AsyncWrite`. Dropping it finishes the stream (a FIN
/// after the data written) unless it was finished or reset.
#[derive(Debug)]
pub struct SendStream {
    conn: Connection,
    id: StreamId,
    done: bool,
}

impl SendStream {
    fn new(conn: &Connection, id: StreamId) -> Self {
        Self {
            conn: conn.clone(),
            id,
            done: false,
        }
    }

    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    fn map_write(&self, c: &conn::Connection, e: WriteError) -> StreamError {
        match e {
            WriteError::Stopped(code) => StreamError::Stopped(code),
            WriteError::Closed => StreamError::Closed,
            WriteError::NotConnected | WriteError::UnknownStream | WriteError::Blocked => {
                StreamError::Connection(self.conn.ended(c))
            }
        }
    }

    /// Writes what fits of `buf` now; waits while the send buffer is full.
    fn poll_write_inner(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<Result<usize, StreamError>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.poll_write_with(cx, |c| c.write(self.id, buf))
    }

    /// Runs one write on the connection; waits while the send buffer is full.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        write: impl FnOnce(&mut conn::Connection) -> Result<usize, WriteError>,
    ) -> Poll<Result<usize, StreamError>> {
        let r = self.conn.with(|c, slot| match write(c) {
            Ok(n) if n > 0 => Poll::Ready(Ok(n)),
            Ok(_) | Err(WriteError::Blocked) => {
                slot.wakers.write.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(self.map_write(c, e))),
        });
        match r {
            Ok(Poll::Ready(Ok(n))) => {
                self.conn.shared.worker.notify();
                Poll::Ready(Ok(n))
            }
            Ok(p) => p,
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    /// Writes all of `data` without copying it into the stream: the stream holds the
    /// same allocation until the peer acknowledges it (see
    /// [`Connection::write_chunk`](conn::Connection::write_chunk)). Waits while the send
    /// buffer is full.
    ///
    /// # Errors
    /// [`StreamError`]: stopped by the peer, already finished, or the connection is gone.
    pub async fn write_chunk(&mut self, mut data: bytes::Bytes) -> Result<(), StreamError> {
        let id = self.id;
        while !data.is_empty() {
            poll_fn(|cx| self.poll_write_with(cx, |c| c.write_chunk(id, &mut data))).await?;
        }
        Ok(())
    }

    /// Writes all of `data`.
    ///
    /// # Errors
    /// [`StreamError`]: stopped by the peer, already finished, or the connection is gone.
    pub async fn write_all_data(&mut self, mut data: &[u8]) -> Result<(), StreamError> {
        while !data.is_empty() {
            let n = poll_fn(|cx| self.poll_write_inner(cx, data)).await?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Finishes the stream: a FIN follows the data written. Does not wait for the peer;
    /// see [`finished`](Self::finished).
    ///
    /// # Errors
    /// [`StreamError`]: already reset, or the connection is gone.
    pub fn finish(&mut self) -> Result<(), StreamError> {
        if self.done {
            return Ok(());
        }
        self.conn
            .with(|c, _| c.finish(self.id).map_err(|e| self.map_write(c, e)))??;
        self.done = true;
        self.conn.shared.worker.notify();
        Ok(())
    }

    /// Finishes the stream if needed, then resolves once the peer has acknowledged every
    /// byte and the FIN.
    ///
    /// # Errors
    /// [`StreamError`]: stopped by the peer, or the connection is gone.
    pub async fn finished(&mut self) -> Result<(), StreamError> {
        self.finish()?;
        let id = self.id;
        poll_fn(|cx| {
            self.conn
                .with(|c, slot| {
                    if slot.finished.remove(&id) {
                        return Poll::Ready(Ok(()));
                    }
                    if c.is_closed() {
                        return Poll::Ready(Err(StreamError::Connection(self.conn.ended(c))));
                    }
                    slot.wakers.finish.insert(id, cx.waker().clone());
                    Poll::Pending
                })
                .unwrap_or_else(|e| Poll::Ready(Err(e.into())))
        })
        .await
    }

    /// Abandons the stream with an application error code (RESET_STREAM).
    ///
    /// # Errors
    /// [`StreamError::Closed`] if already reset or fully acknowledged, or the connection
    /// error.
    pub fn reset(&mut self, code: u64) -> Result<(), StreamError> {
        self.done = true;
        self.conn.with(|c, _| {
            c.reset_stream(self.id, code)
                .map_err(|e| self.map_write(c, e))
        })??;
        self.conn.shared.worker.notify();
        Ok(())
    }

    /// Sets the stream's urgency for the scheduler.
    pub fn set_urgency(&self, urgency: Urgency) {
        let _ = self.conn.with(|c, _| c.set_urgency(self.id, urgency));
    }
}

impl AsyncWrite for SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_inner(cx, buf).map_err(Into::into)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written data is already the transport's to send.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().finish().map_err(Into::into))
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.finish();
        }
    }
}

/// The receiving half of a stream: `AsyncRead`. Dropping it before the end asks the peer
/// to stop sending (STOP_SENDING, code 0).
#[derive(Debug)]
pub struct RecvStream {
    conn: Connection,
    id: StreamId,
    eof: bool,
}

impl RecvStream {
    fn new(conn: &Connection, id: StreamId) -> Self {
        Self {
            conn: conn.clone(),
            id,
            eof: false,
        }
    }

    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Reads into `buf`: `Some(n)` bytes, or `None` at the end of the stream.
    fn poll_read_inner(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<Option<usize>, StreamError>> {
        if self.eof {
            return Poll::Ready(Ok(None));
        }
        let id = self.id;
        let r = self.conn.with(|c, slot| match c.read(id, buf) {
            Ok(r) => Poll::Ready(Ok(r)),
            Err(ReadError::Blocked) => {
                if c.is_closed() {
                    return Poll::Ready(Err(StreamError::Connection(self.conn.ended(c))));
                }
                slot.wakers.read.insert(id, cx.waker().clone());
                Poll::Pending
            }
            Err(ReadError::Reset(code)) => Poll::Ready(Err(StreamError::Reset(code))),
            Err(ReadError::Stopped) => Poll::Ready(Err(StreamError::Closed)),
            Err(_) => Poll::Ready(Err(StreamError::Connection(self.conn.ended(c)))),
        });
        match r {
            Ok(Poll::Ready(Ok(r))) => {
                if r.is_none() {
                    self.eof = true;
                }
                // Reading may open the flow-control window: the worker announces it.
                self.conn.shared.worker.notify();
                Poll::Ready(Ok(r))
            }
            Ok(p) => p,
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    /// Reads the next chunk into `buf`: `Some(n)`, or `None` at the end of the stream.
    ///
    /// # Errors
    /// [`StreamError`]: reset by the peer, or the connection is gone.
    pub async fn read_data(&mut self, buf: &mut [u8]) -> Result<Option<usize>, StreamError> {
        poll_fn(|cx| self.poll_read_inner(cx, buf)).await
    }

    /// Reads the rest of the stream, refusing more than `limit` bytes.
    ///
    /// # Errors
    /// [`StreamError`], or [`StreamError::Closed`] past `limit` (the stream is stopped).
    pub async fn read_to_end_limited(&mut self, limit: usize) -> Result<Vec<u8>, StreamError> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        while let Some(n) = self.read_data(&mut buf).await? {
            if out.len() + n > limit {
                self.stop(0);
                return Err(StreamError::Closed);
            }
            out.extend_from_slice(&buf[..n]);
        }
        Ok(out)
    }

    /// Asks the peer to stop sending (STOP_SENDING with `code`); unread data is dropped.
    pub fn stop(&mut self, code: u64) {
        self.eof = true;
        let _ = self.conn.with(|c, _| c.stop_sending(self.id, code));
        self.conn.shared.worker.notify();
    }
}

impl AsyncRead for RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let dst = buf.initialize_unfilled();
        match this.poll_read_inner(cx, dst) {
            Poll::Ready(Ok(Some(n))) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(None)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        if !self.eof {
            self.stop(0);
        }
    }
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
    }
}
