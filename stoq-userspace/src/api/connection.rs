//! [`Connection`]: a connection of the async API, and [`Message`], a partially reliable
//! message sent on it.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::remote::{discard, on_worker};
use super::stream::{RecvStream, SendStream};
use super::{PathEvent, SendError, ServeError};
use crate::conn::{self, ConnectionError, ConnectionStats, Dir, OpenError, StreamId, Urgency};
use crate::engine::app::{ConnShared, Slot};
use crate::engine::home::Worker;

/// A connection. Clones share it; it closes when [`close`](Self::close) is called, the
/// peer closes it, or it times out.
///
/// Every handle can be used from any thread. On the connection's own worker thread (in a
/// task started by [`crate::Endpoint::serve`] or [`spawn_on_worker`](Self::spawn_on_worker))
/// its calls reach the connection directly: no lock, no other thread woken. From another
/// thread they are carried to the worker (see the [`crate::engine`] thread model).
///
/// ```no_run
/// # async fn f(conn: stoq::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// let (mut send, mut recv) = conn.open_bi().await?;
/// send.write_all_data(b"GET /index.html").await?;
/// send.finish()?;
/// let page = recv.read_to_end_limited(1 << 20).await?;
/// conn.send_datagram(b"telemetry")?; // unreliable, no stream
/// println!("{} bytes; rtt {:?}; peer {:?}", page.len(), conn.rtt(), conn.remote_address());
/// conn.close(0, b"done");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Connection {
    pub(crate) shared: Arc<ConnShared>,
}

/// How a message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageOutcome {
    /// Acknowledged in full before its deadline.
    Delivered,
    /// Its deadline passed first: it was abandoned.
    Abandoned,
}

fn dir_index(d: Dir) -> usize {
    match d {
        Dir::Bi => 0,
        Dir::Uni => 1,
    }
}

impl Connection {
    pub(crate) fn from_shared(shared: Arc<ConnShared>) -> Self {
        Self { shared }
    }

    fn worker(&self) -> &Arc<Worker> {
        &self.shared.worker
    }

    /// Runs `f` on the protocol connection and its slot if this thread reaches the
    /// worker's state: `Ok(Some(_))`. `Ok(None)`: another thread (carry the call to the
    /// worker); `Err`: the connection is gone.
    pub(crate) fn with<R>(
        &self,
        f: impl FnOnce(&mut conn::Connection, &mut Slot) -> R,
    ) -> Result<Option<R>, ConnectionError> {
        let s = &self.shared;
        match s
            .worker
            .with(|st| st.api.with_conn(&mut st.endpoint, s.handle, s.serial, f))
        {
            None => Ok(None),
            Some(None) => Err(s.gone()),
            Some(Some(r)) => Ok(Some(r)),
        }
    }

    /// Tells the worker's loop this thread made work for it.
    pub(crate) fn kick(&self) {
        self.shared.worker.kick();
    }

    /// Hands `f` to the worker's loop as a job (counted as a remote call). False if the
    /// worker has stopped.
    pub(crate) fn post_job(&self, f: impl FnOnce(&Arc<Worker>) + Send + 'static) -> bool {
        let w = self.worker();
        w.crossings.count.fetch_add(1, Ordering::Relaxed);
        w.post(Box::new(f))
    }

    /// Runs `f(self)` here if this thread reaches the connection, else on the worker.
    pub(crate) fn run(&self, f: impl FnOnce(&Self) + Send + 'static) {
        if self.is_on_worker() {
            f(self);
        } else {
            let c = self.clone();
            self.post_job(move |_| f(&c));
        }
    }

    /// Runs `f` on the protocol connection on the worker while this thread waits.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut conn::Connection, &mut Slot) -> R + Send + 'static,
    ) -> Result<R, ConnectionError> {
        let s = self.shared.clone();
        self.worker()
            .crossings
            .count
            .fetch_add(1, Ordering::Relaxed);
        self.worker()
            .call(move |st| st.api.with_conn(&mut st.endpoint, s.handle, s.serial, f))
            .flatten()
            .ok_or_else(|| self.shared.gone())
    }

    /// Runs `f` on the protocol connection: here, or on the worker while this thread waits.
    pub(crate) fn here_or_call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut conn::Connection, &mut Slot) -> R + Send + 'static,
    ) -> Result<R, ConnectionError> {
        let mut f = Some(f);
        match self.with(|c, s| f.take().map(|f| f(c, s))) {
            Ok(Some(Some(r))) => Ok(r),
            Ok(_) => self.call(f.take().expect("not run here")),
            Err(e) => Err(e),
        }
    }

    /// The error the connection ended with, once it has.
    pub(crate) fn ended(&self, c: &conn::Connection) -> ConnectionError {
        c.error()
            .cloned()
            .or_else(|| self.shared.error.get().cloned())
            .unwrap_or(ConnectionError::LocallyClosed)
    }

    /// A call that began on the worker's thread went on elsewhere (an executor that moves
    /// a future between threads): it cannot finish there.
    pub(crate) fn moved(&self) -> ConnectionError {
        debug_assert!(
            false,
            "a future began on the worker and was polled elsewhere"
        );
        self.shared.gone()
    }

    /// Whether calls from this thread reach the connection directly (this is its worker's
    /// thread, or the connection's engine runs on the caller's runtime).
    pub fn is_on_worker(&self) -> bool {
        self.shared.worker.is_here()
    }

    /// Runs `f(connection)` as a task on the connection's worker thread, next to the
    /// connection: its calls take no lock and wake no other thread. The future need not be
    /// `Send`. This is how a client, or a server that accepted with
    /// [`crate::Endpoint::accept`], moves work onto the fast path.
    ///
    /// # Errors
    /// [`ServeError::OnCallerRuntime`] for a connection of
    /// [`crate::Endpoint::client_in_runtime`] (spawn on that runtime instead);
    /// [`ServeError::Stopped`] if the worker has stopped.
    pub fn spawn_on_worker<F, Fut>(&self, f: F) -> Result<(), ServeError>
    where
        F: FnOnce(Self) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        if self.worker().is_locked() {
            return Err(ServeError::OnCallerRuntime);
        }
        let c = self.clone();
        let posted = self.worker().post(Box::new(move |_| {
            tokio::task::spawn_local(async move { f(c).await });
        }));
        if posted {
            Ok(())
        } else {
            Err(ServeError::Stopped)
        }
    }

    /// The peer's address (it changes when the peer migrates).
    pub fn remote_address(&self) -> Option<SocketAddr> {
        self.here_or_call(|c, _| c.remote_address()).ok()
    }

    /// The connection ID this side was first reached by (it is on the wire, in clear).
    pub fn local_cid(&self) -> Option<crate::wire::cid::ConnectionId> {
        if self.shared.error.get().is_some() {
            return None;
        }
        self.shared.local_cid
    }

    /// The TURN relay this side reaches the peer through, when it does: the peer's packets
    /// arrive through this endpoint's relay allocation
    /// ([`Endpoint::join_rendezvous_with`](crate::Endpoint::join_rendezvous_with) or
    /// [`Endpoint::gather_candidates`](crate::Endpoint::gather_candidates) with a relay),
    /// and what this side sends goes back through it. `None` when packets go straight to
    /// [`remote_address`](Self::remote_address); for the side that connected to a peer's
    /// relayed candidate that address is the relay's
    /// ([`PeerConnection::path`](crate::api::PeerConnection::path)), and the relay is not
    /// this side's to name.
    pub fn relay(&self) -> Option<SocketAddr> {
        let remote = self.remote_address()?;
        self.worker()
            .call(move |st| st.endpoint.turn_relay_for(remote))
            .flatten()
    }

    /// Sends to the peer at `remote` from now on, another address of the same peer (its
    /// relayed candidate when the direct path has gone silent): the path is validated, and
    /// if the peer does not answer there within about three PTOs the connection returns to
    /// the address it left ([`conn::Connection::switch_remote`]). Returns `false` when the
    /// connection is not established, is gone, or already sends to `remote`.
    pub fn switch_remote(&self, remote: SocketAddr) -> bool {
        let moved = self
            .here_or_call(move |c, _| c.switch_remote(Instant::now(), remote))
            .unwrap_or(false);
        // The challenge and PING leave on the worker's next turn.
        self.kick();
        moved
    }

    /// Statistics: RTT, congestion window, bytes and packets, losses.
    pub fn stats(&self) -> Option<ConnectionStats> {
        self.here_or_call(|c, _| c.stats()).ok()
    }

    /// The smoothed round-trip time; `None` once the connection is gone.
    pub fn rtt(&self) -> Option<Duration> {
        self.here_or_call(|c, _| c.stats().smoothed_rtt).ok()
    }

    /// The key the peer proved it holds in the handshake: a server's (or, with
    /// certificates, its leaf certificate's) key, or a client's when the server requires
    /// client authentication (`ServerConfig::client_auth`). `None` before the handshake
    /// completes, for a client that did not authenticate, and once the connection is
    /// gone.
    pub fn peer_key(&self) -> Option<crate::crypto::sig::VerifyingKey> {
        self.here_or_call(|c, _| c.peer_key().cloned())
            .ok()
            .flatten()
    }

    /// The application protocol and server name the handshake settled (ALPN:
    /// `ClientConfig::alpn`, `ServerConfig::alpn`); `None` once the connection is gone.
    /// Connections from [`Endpoint::connect`](crate::Endpoint::connect) and
    /// [`accept`](crate::Endpoint::accept) are established, so both are known.
    ///
    /// ```no_run
    /// # async fn f(endpoint: stoq::Endpoint) {
    /// while let Some(conn) = endpoint.accept().await {
    ///     let protocol = conn.handshake_data().and_then(|h| h.protocol);
    ///     match protocol.as_deref() {
    ///         Some(b"h3") => { /* HTTP/3 */ }
    ///         Some(b"stoq/1") => { /* the application's own protocol */ }
    ///         _ => conn.close(1, b"no protocol"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn handshake_data(&self) -> Option<super::HandshakeData> {
        self.here_or_call(|c, _| super::HandshakeData {
            protocol: c.alpn().map(<[u8]>::to_vec),
            server_name: c.server_name().map(str::to_string),
            resumption: c.resumption(),
        })
        .ok()
    }

    /// Fills `out` with keying material exported from the handshake for `label` and
    /// `context` (TLS 1.3's exporter, RFC 8446 §7.5, over STOQ's key schedule): both ends of
    /// this connection get the same bytes, no other connection does. For binding an
    /// application's own authentication or keys to this connection, as with quinn's
    /// `export_keying_material`.
    ///
    /// ```no_run
    /// # async fn f(conn: stoq::api::Connection) -> Result<(), stoq::api::ExportKeyingMaterialError> {
    /// let mut binding = [0u8; 32];
    /// conn.export_keying_material(&mut binding, b"EXPORTER-my-app-channel-binding", b"")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Export`](super::ExportKeyingMaterialError::Export) before the connection is
    /// established, or for a label over 250 bytes or an output over 8,160 bytes;
    /// [`Connection`](super::ExportKeyingMaterialError::Connection) once it is gone.
    pub fn export_keying_material(
        &self,
        out: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), super::ExportKeyingMaterialError> {
        let (len, label, context) = (out.len(), label.to_vec(), context.to_vec());
        let v = self.here_or_call(move |c, _| {
            let mut v = zeroize::Zeroizing::new(vec![0u8; len]);
            c.export_keying_material(&mut v, &label, &context)
                .map(|()| v)
        })??;
        out.copy_from_slice(&v[..]);
        Ok(())
    }

    /// Retunes the live connection without a new handshake: flow-control windows,
    /// keep-alive, how many ack-eliciting packets are acknowledged at once, the pacing
    /// gain (each field of [`Adaptation`](conn::Adaptation) that is `Some`). Applied on
    /// the connection's worker; the peer learns new windows from the frames that follow.
    pub fn adapt(&self, a: conn::Adaptation) {
        self.run(move |c| {
            let _ = c.with(|c, _| c.adapt(a));
            c.kick();
        });
    }

    /// Writes a qlog trace of this connection into `writer` from now on ([`crate::qlog`]):
    /// qlog for one connection, where
    /// [`TransportConfig::qlog`](conn::TransportConfig::qlog) turns it on for every
    /// connection of an endpoint. The trace ends when the connection is freed.
    ///
    /// ```no_run
    /// # async fn f(conn: stoq::Connection) -> std::io::Result<()> {
    /// let writer = stoq::qlog::QlogWriter::new("/tmp/qlog")?;
    /// conn.set_qlog(&writer);
    /// # Ok(()) }
    /// ```
    pub fn set_qlog(&self, writer: &crate::qlog::QlogWriter) {
        let w = writer.clone();
        self.run(move |c| {
            let _ = c.with(|c, _| c.set_qlog(Instant::now(), &w));
        });
    }

    /// An identifier of this connection, unique among every connection of this process
    /// and stable for its life (quinn's `stable_id`): for maps and logs.
    pub fn stable_id(&self) -> u64 {
        self.shared.serial
    }

    /// Why the connection ended, once it has: the peer's or the application's close
    /// (code and reason), a timeout, a reset or a protocol error. `None` while it is open.
    /// Answered without reaching the worker.
    pub fn close_reason(&self) -> Option<ConnectionError> {
        self.shared.error.get().cloned()
    }

    /// The protocol connection's handle on its worker and the worker's id (for the
    /// low-level [`crate::engine::Handler`] API).
    pub fn handle(&self) -> (u8, conn::ConnectionHandle) {
        (self.worker().id, self.shared.handle)
    }

    /// Resolves once the handshake completed (or failed).
    pub(crate) async fn connected(&self) -> Result<(), ConnectionError> {
        if !self.is_on_worker() {
            return on_worker(self, |c| async move { c.connected_here().await }, discard).await?;
        }
        self.connected_here().await
    }

    async fn connected_here(&self) -> Result<(), ConnectionError> {
        poll_fn(|cx| {
            match self.with(|c, slot| {
                if slot.connected {
                    return Poll::Ready(Ok(()));
                }
                if c.is_closed() {
                    return Poll::Ready(Err(self.ended(c)));
                }
                slot.wakers.connect = Some(cx.waker().clone());
                Poll::Pending
            }) {
                Ok(Some(p)) => p,
                Ok(None) => Poll::Ready(Err(self.moved())),
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await
    }

    /// How early data (0-RTT) went, once known: `NotOffered` for a connection that sent
    /// none; for one opened with [`Endpoint::connect_early`](super::Endpoint::connect_early),
    /// whether the server accepted it (then it read the first flight's streams and
    /// DATAGRAMs) or refused it (then the streams' bytes were sent again at 1-RTT; the
    /// DATAGRAMs were lost). On a server, whether it accepted the client's.
    ///
    /// # Errors
    /// The connection's error if it ended before the server answered.
    pub async fn early_data(&self) -> Result<crate::handshake::EarlyData, ConnectionError> {
        if !self.is_on_worker() {
            return on_worker(self, |c| async move { c.early_data_here().await }, discard).await?;
        }
        self.early_data_here().await
    }

    async fn early_data_here(&self) -> Result<crate::handshake::EarlyData, ConnectionError> {
        poll_fn(|cx| {
            match self.with(|c, slot| {
                let e = c.early_data();
                if e != crate::handshake::EarlyData::Pending {
                    return Poll::Ready(Ok(e));
                }
                if c.is_closed() {
                    return Poll::Ready(Err(self.ended(c)));
                }
                slot.wakers.early.register(cx.waker());
                Poll::Pending
            }) {
                Ok(Some(p)) => p,
                Ok(None) => Poll::Ready(Err(self.moved())),
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await
    }

    /// Whether stream `id`, opened by the client, came in its early data (server side):
    /// what it carries may be a replay (see [`crate::handshake::early`]).
    pub fn is_early_stream(&self, id: StreamId) -> bool {
        self.here_or_call(move |c, _| c.is_early_stream(id))
            .unwrap_or(false)
    }

    async fn open_here(&self, dir: Dir) -> Result<StreamId, ConnectionError> {
        poll_fn(|cx| {
            let r = self.with(|c, slot| match c.open_stream(dir) {
                Ok(id) => Some(Ok(id)),
                Err(OpenError::Blocked) => {
                    slot.wakers.open[dir_index(dir)].register(cx.waker());
                    None
                }
                Err(_) => Some(Err(self.ended(c))),
            });
            match r {
                Ok(Some(Some(r))) => Poll::Ready(r),
                Ok(Some(None)) => Poll::Pending,
                Ok(None) => Poll::Ready(Err(self.moved())),
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await
    }

    async fn open(&self, dir: Dir) -> Result<StreamId, ConnectionError> {
        if !self.is_on_worker() {
            return on_worker(
                self,
                move |c| async move { c.open_here(dir).await },
                discard,
            )
            .await?;
        }
        self.open_here(dir).await
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

    async fn accept_here(&self, dir: Dir) -> Result<StreamId, ConnectionError> {
        let d = dir_index(dir);
        poll_fn(|cx| {
            match self.with(|c, slot| {
                if let Some(id) = slot.stash.streams[d]
                    .pop_front()
                    .or_else(|| c.accept_stream(dir))
                {
                    return Poll::Ready(Ok(id));
                }
                if c.is_closed() {
                    return Poll::Ready(Err(self.ended(c)));
                }
                slot.wakers.accept[d].register(cx.waker());
                Poll::Pending
            }) {
                Ok(Some(p)) => p,
                Ok(None) => Poll::Ready(Err(self.moved())),
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await
    }

    async fn accept(&self, dir: Dir) -> Result<StreamId, ConnectionError> {
        if !self.is_on_worker() {
            // A stream accepted for a caller that gave up waits for the next call.
            let keep = match dir {
                Dir::Bi => stash_bi,
                Dir::Uni => stash_uni,
            };
            return on_worker(self, move |c| async move { c.accept_here(dir).await }, keep).await?;
        }
        self.accept_here(dir).await
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

    /// The next thing that happens to the connection's path: its DATAGRAM size changing
    /// (path MTU discovery, a black hole, a migration), the peer moving, a key update.
    /// Events wait until read, the latest 64 of them; older ones are dropped unread.
    ///
    /// # Errors
    /// The connection's error once it is gone (events still waiting are read first).
    pub async fn path_event(&self) -> Result<PathEvent, ConnectionError> {
        if !self.is_on_worker() {
            return on_worker(
                self,
                |c| async move { c.path_event_here().await },
                |c, e| {
                    if let Ok(e) = e {
                        let _ = c.with(|_, slot| slot.path_events.push_front(e));
                    }
                },
            )
            .await?;
        }
        self.path_event_here().await
    }

    async fn path_event_here(&self) -> Result<PathEvent, ConnectionError> {
        poll_fn(|cx| {
            match self.with(|c, slot| {
                if let Some(e) = slot.path_events.pop_front() {
                    return Poll::Ready(Ok(e));
                }
                if c.is_closed() {
                    return Poll::Ready(Err(self.ended(c)));
                }
                slot.wakers.path_event = Some(cx.waker().clone());
                Poll::Pending
            }) {
                Ok(Some(p)) => p,
                Ok(None) => Poll::Ready(Err(self.moved())),
                Err(e) => Poll::Ready(Err(e)),
            }
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
        let send = move |c: &mut conn::Connection, slot: &mut Slot, data: &[u8]| {
            let id = c.send_message(Instant::now(), data, deadline, urgency)?;
            slot.messages.insert(id, None);
            Ok::<_, SendError>(id)
        };
        let id = match self.with(|c, slot| send(c, slot, data)) {
            Ok(Some(r)) => r?,
            Ok(None) => {
                let d = data.to_vec();
                self.call(move |c, slot| send(c, slot, &d))??
            }
            Err(e) => return Err(e.into()),
        };
        self.kick();
        Ok(Message {
            conn: self.clone(),
            id,
        })
    }

    /// Closes the connection with an application error code and reason.
    pub fn close(&self, code: u64, reason: &[u8]) {
        let reason = reason.to_vec();
        self.run(move |c| {
            let _ = c.with(|c, _| c.close(Instant::now(), code, &reason));
            c.kick();
        });
    }

    async fn closed_here(&self) -> ConnectionError {
        poll_fn(|cx| {
            match self.with(|c, slot| {
                if c.is_closed() {
                    return Poll::Ready(self.ended(c));
                }
                if !slot.wakers.closed.iter().any(|w| w.will_wake(cx.waker())) {
                    slot.wakers.closed.push(cx.waker().clone());
                }
                Poll::Pending
            }) {
                Ok(Some(p)) => p,
                Ok(None) => Poll::Ready(self.moved()),
                Err(e) => Poll::Ready(e),
            }
        })
        .await
    }

    /// Resolves when the connection has ended, with the reason.
    pub async fn closed(&self) -> ConnectionError {
        if !self.is_on_worker() {
            return match on_worker(self, |c| async move { c.closed_here().await }, discard).await {
                Ok(e) | Err(e) => e,
            };
        }
        self.closed_here().await
    }
}

/// A bidirectional stream accepted for a caller that gave up: the next `accept_bi` gets it.
fn stash_bi(c: &Connection, id: Result<StreamId, ConnectionError>) {
    if let Ok(id) = id {
        let _ = c.with(|_, slot| slot.stash.streams[0].push_front(id));
    }
}

/// As [`stash_bi`], for a unidirectional stream.
fn stash_uni(c: &Connection, id: Result<StreamId, ConnectionError>) {
    if let Ok(id) = id {
        let _ = c.with(|_, slot| slot.stash.streams[1].push_front(id));
    }
}

/// A DATAGRAM read for a caller that gave up: the next `read_datagram` gets it.
/// A message sent with [`Connection::send_message`].
///
/// ```no_run
/// # async fn f(conn: stoq::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use stoq::api::MessageOutcome;
/// // A video frame is worth sending for 100 ms; after that it is abandoned, not resent.
/// let m = conn.send_message(b"frame 42", Duration::from_millis(100), stoq::conn::Urgency::Media)?;
/// if m.outcome().await? == MessageOutcome::Abandoned {
///     println!("frame 42 came too late to matter");
/// }
/// # Ok(()) }
/// ```
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
        if !self.conn.is_on_worker() {
            let id = self.id;
            return on_worker(
                &self.conn,
                move |c| async move { outcome_here(&c, id).await },
                discard,
            )
            .await?;
        }
        outcome_here(&self.conn, self.id).await
    }
}

/// On the worker: how message `id` ended, once it has.
async fn outcome_here(conn: &Connection, id: StreamId) -> Result<MessageOutcome, ConnectionError> {
    poll_fn(|cx| {
        match conn.with(|c, slot| match slot.messages.get(&id) {
            Some(Some(true)) => Poll::Ready(Ok(MessageOutcome::Delivered)),
            Some(Some(false)) => Poll::Ready(Ok(MessageOutcome::Abandoned)),
            _ if c.is_closed() => Poll::Ready(Err(conn.ended(c))),
            _ => {
                slot.wakers.message.insert(id, cx.waker().clone());
                Poll::Pending
            }
        }) {
            Ok(Some(p)) => p,
            Ok(None) => Poll::Ready(Err(conn.moved())),
            Err(e) => Poll::Ready(Err(e)),
        }
    })
    .await
}

impl Drop for Message {
    fn drop(&mut self) {
        let id = self.id;
        self.conn.run(move |c| {
            let _ = c.with(|_, slot| {
                slot.messages.remove(&id);
                slot.wakers.message.remove(&id);
            });
        });
    }
}
