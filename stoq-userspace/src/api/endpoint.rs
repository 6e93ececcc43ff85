//! [`Endpoint`]: an engine and what a server or client does with it.

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::{ConnectError, Connection, Incoming, IncomingError, ServeError};
use crate::conn;
use crate::engine::app::{ConnShared, ServeFn};
use crate::engine::home::{State, Worker};
use crate::engine::{Engine, EngineConfig, EngineError, EngineInfo, Placement, WorkerStats};
use crate::handshake::{ClientConfig, ServerConfig};

/// A STOQ endpoint running on the engine: a server that accepts, or a client that
/// connects (or both, with [`Endpoint::server_and_client`]).
///
/// Keep it alive while its connections are in use: dropping it stops the engine.
///
/// ```no_run
/// # async fn f(
/// #     server_cfg: std::sync::Arc<stoq::handshake::ServerConfig>,
/// #     client_cfg: std::sync::Arc<stoq::handshake::ClientConfig>,
/// # ) -> Result<(), Box<dyn std::error::Error>> {
/// use stoq::{Endpoint, engine::EngineConfig};
/// // A server on every core; the backend (AF_XDP, io_uring, UDP) is chosen with reasons.
/// let server = Endpoint::server(EngineConfig::new("[::]:4433".parse()?), server_cfg)?;
/// println!("{}", server.info().selection);
/// server.serve(|conn| async move {
///     // On the connection's worker thread: no lock, no cross-thread wake-up.
///     while let Ok((mut send, mut recv)) = conn.accept_bi().await {
///         if let Ok(request) = recv.read_to_end_limited(64 << 10).await {
///             let _ = send.write_all_data(&request).await;
///             let _ = send.finish();
///         }
///     }
/// })?;
/// // A client whose engine runs on this tokio runtime.
/// let client = Endpoint::client_in_runtime(EngineConfig::new("[::]:0".parse()?), client_cfg)?;
/// let conn = client.connect("[::1]:4433".parse()?, "server.example").await?;
/// # let _ = conn; Ok(()) }
/// ```
#[derive(Debug)]
pub struct Endpoint {
    pub(super) engine: Arc<Engine>,
    client: Option<Arc<ClientConfig>>,
}

/// How [`Endpoint::shutdown`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections open when shutdown began.
    pub connections: usize,
    /// Of those, connections whose sent data was not all acknowledged when the timeout
    /// ran out (their unacknowledged data may be lost).
    pub unacknowledged: usize,
    /// Whether every connection finished closing before the timeout.
    pub drained: bool,
    /// Every connection open when shutdown began and still open when the wait for
    /// acknowledgments ended, with what it had not had acknowledged.
    pub per_connection: Vec<ConnectionShutdown>,
}

/// One connection in a [`ShutdownReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionShutdown {
    /// The peer.
    pub remote: SocketAddr,
    /// Stream bytes written and not acknowledged by the peer when the connection was
    /// closed (sent or still queued): they may not have been delivered. 0: everything
    /// written was delivered.
    pub unacknowledged_bytes: u64,
}

impl Endpoint {
    /// A server on `config.bind`, with one worker per core by default, each on a thread
    /// of its own. Serve its connections on their workers with [`serve`](Self::serve)
    /// (the fast path), or take them with [`accept`](Self::accept).
    ///
    /// # Errors
    /// [`EngineError`]: no usable (or the forced) backend, the bind failed, bad settings.
    pub fn server(config: EngineConfig, server: Arc<ServerConfig>) -> Result<Self, EngineError> {
        Ok(Self {
            engine: Engine::start(config, Some(server), Placement::Threads)?,
            client: None,
        })
    }

    /// A client, bound to `config.bind` (usually `0.0.0.0:0` or `[::]:0`), whose worker
    /// runs on a thread of its own. See also [`client_in_runtime`](Self::client_in_runtime).
    ///
    /// # Errors
    /// As [`server`](Self::server).
    pub fn client(config: EngineConfig, client: Arc<ClientConfig>) -> Result<Self, EngineError> {
        Ok(Self {
            engine: Engine::start(config, None, Placement::Threads)?,
            client: Some(client),
        })
    }

    /// A client whose worker runs as a task on the caller's tokio runtime (current-thread
    /// or multi-thread, with I/O and time enabled), as quinn's endpoints do: on a
    /// current-thread runtime the application's tasks and their connections share one
    /// thread, with no wake-up between them. Its state is behind a lock each call takes
    /// (uncontended on a current-thread runtime); `config.workers` is ignored (one worker).
    ///
    /// # Errors
    /// [`EngineError::NoRuntime`] outside a runtime; as [`server`](Self::server).
    pub fn client_in_runtime(
        config: EngineConfig,
        client: Arc<ClientConfig>,
    ) -> Result<Self, EngineError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| EngineError::NoRuntime)?;
        Ok(Self {
            engine: Engine::start(config, None, Placement::Runtime(handle))?,
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
            engine: Engine::start_with(config, Some(server), Some(backends), Placement::Threads)?,
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
            engine: Engine::start_with(config, None, Some(vec![backend]), Placement::Threads)?,
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
            engine: Engine::start(config, Some(server), Placement::Threads)?,
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

    /// Replaces the cluster keys on every worker (a rotation, or a key file reloaded): new
    /// connection IDs and Retry tokens use the new current generation, and every
    /// generation in `keys` still resets and validates. No connection is dropped; keep the
    /// generations live connections use in the set. Returns once every worker has them.
    pub fn set_cluster_keys(&self, keys: conn::ClusterKeys) {
        let keys = Arc::new(keys);
        for w in &self.engine.workers {
            let k = keys.clone();
            let _ = w.call(move |st| st.endpoint.set_cluster_keys(&k));
        }
    }

    /// Replaces the server's handshake settings on every worker (a new key or
    /// certificate chain, client authentication, suites) without a restart: clients that
    /// connect from now on meet them; established connections carry on as they are.
    /// Returns once every worker has them.
    ///
    /// # Errors
    /// [`conn::ConfigError::NotAServer`] on a client endpoint.
    pub fn set_server_config(&self, config: Arc<ServerConfig>) -> Result<(), conn::ConfigError> {
        for w in &self.engine.workers {
            let c = config.clone();
            if let Some(Err(e)) = w.call(move |st| st.endpoint.set_server_config(c)) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Runs `f` on every live protocol connection, on each connection's worker, and
    /// collects what it returns: for introspection such as per-connection statistics.
    pub fn with_connections<R: Send + 'static>(
        &self,
        f: impl Fn(&conn::Connection) -> R + Send + Sync + 'static,
    ) -> Vec<R> {
        let f = Arc::new(f);
        let mut out = Vec::new();
        for w in &self.engine.workers {
            let f = f.clone();
            let got = w.call(move |st| {
                st.api
                    .handles()
                    .into_iter()
                    .filter_map(|h| st.endpoint.connection(h).map(|c| f(c)))
                    .collect::<Vec<_>>()
            });
            out.extend(got.unwrap_or_default());
        }
        out
    }

    /// The XDP program's counters when the AF_XDP backend runs: packets the kernel
    /// dropped (by reason), redirected to the sockets, and passed.
    #[cfg(target_os = "linux")]
    pub fn xdp_stats(&self) -> Option<crate::xdp::SteerStats> {
        self.engine.xdp_stats()
    }

    /// Each worker's counters (handoffs, loop turns, connections, calls that crossed
    /// threads), read on each worker.
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.engine.stats()
    }

    /// This endpoint's metrics for Prometheus: render them, register them in a
    /// `prometheus::Registry`, or serve them over HTTP (see [`crate::metrics`]).
    pub fn metrics(&self) -> crate::metrics::Metrics {
        crate::metrics::Metrics::new(self.engine.clone())
    }

    /// The protocol endpoint counters of every worker.
    pub fn endpoint_stats(&self) -> Vec<conn::EndpointStats> {
        self.engine
            .workers
            .iter()
            .filter_map(|w| w.call(|st| st.endpoint.stats()))
            .collect()
    }

    /// Connects to `addr`, proving `server_name` (which replaces the client
    /// configuration's), and resolves once the handshake completes. The connection lives
    /// on one of the engine's workers (round robin).
    ///
    /// # Errors
    /// [`ConnectError`].
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Connection, ConnectError> {
        let c = self.start_connect(addr, server_name, false).await?;
        c.connected().await.map_err(ConnectError::Lost)?;
        Ok(c)
    }

    /// Connects to `addr` with early data (0-RTT) when this client holds a ticket from
    /// the server that allows it: resolves at once, before the handshake, and the streams
    /// opened and DATAGRAMs sent from the connection go out with the first flight, so a
    /// request's answer comes one round trip sooner. [`Connection::early_data`] then says
    /// whether the server accepted them; if it refused, every stream byte was sent again
    /// at 1-RTT (DATAGRAMs were not: they are unreliable).
    ///
    /// **Early data can be replayed.** An attacker who records the first flight can send
    /// it to a server of the cluster that has not seen it (a server refuses a flight it
    /// has seen, and one older than its freshness window: see
    /// [`crate::handshake::early`]). Send in it only requests that are safe to process
    /// twice (a `GET`, not a payment), and send the rest after
    /// [`Connection::early_data`] resolves.
    ///
    /// Without such a ticket, or with resumption off, this waits for the handshake as
    /// [`connect`](Self::connect) does, and `early_data` resolves to `NotOffered`.
    ///
    /// # Errors
    /// [`ConnectError`].
    pub async fn connect_early(
        &self,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Connection, ConnectError> {
        let c = self.start_connect(addr, server_name, true).await?;
        let pending = c
            .here_or_call(|c, _| c.early_data() == crate::handshake::EarlyData::Pending)
            .unwrap_or(false);
        if !pending {
            c.connected().await.map_err(ConnectError::Lost)?;
        }
        Ok(c)
    }

    /// Starts a connection to `addr` on a worker (round robin), `early` asking for early
    /// data, and returns its handle without waiting for the handshake.
    pub(super) async fn start_connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
        early: bool,
    ) -> Result<Connection, ConnectError> {
        let base = self.client.as_ref().ok_or(ConnectError::NotAClient)?;
        let cfg = if base.server_name == server_name && base.early_data == early {
            base.clone()
        } else {
            // Clones share the session cache.
            let mut c = ClientConfig::clone(base);
            c.server_name = server_name.to_string();
            c.early_data = early;
            Arc::new(c)
        };
        let worker = self.engine.pick_for_connection().clone();
        let shared = match worker.with(|st| connect_here(st, &worker, addr, cfg.clone())) {
            Some(r) => {
                worker.kick();
                r?
            }
            None => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                worker.crossings.count.fetch_add(1, Ordering::Relaxed);
                let posted = worker.post(Box::new(move |w: &Arc<Worker>| {
                    if let Some(r) = w.with(|st| connect_here(st, w, addr, cfg)) {
                        let _ = tx.send(r);
                    }
                }));
                if !posted {
                    return Err(ConnectError::Lost(conn::ConnectionError::LocallyClosed));
                }
                rx.await
                    .map_err(|_| ConnectError::Lost(conn::ConnectionError::LocallyClosed))??
            }
        };
        Ok(Connection::from_shared(shared))
    }

    /// The next client whose handshake completed; `None` once the endpoint shuts down.
    /// One task should accept at a time.
    ///
    /// The connection is handed to the caller's thread: its calls from there cross to its
    /// worker. To serve connections on their workers instead, use [`serve`](Self::serve).
    pub async fn accept(&self) -> Option<Connection> {
        poll_fn(|cx| {
            let mut open = 0;
            for w in &self.engine.workers {
                match w.api.poll_pop(cx.waker()) {
                    Ok(Some(c)) => return Poll::Ready(Some(Connection::from_shared(c))),
                    Ok(None) => open += 1,
                    Err(()) => {}
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

    /// The next new client, for the application to accept, refuse, retry or ignore
    /// (under [`Admission::Application`](crate::engine::Admission::Application); as
    /// quinn's `Endpoint::accept`). Clients have already passed the endpoint's admission
    /// policy: their Initial authenticated and, under load, they proved their address.
    /// One task should take clients at a time.
    ///
    /// # Errors
    /// [`IncomingError::AutomaticAdmission`] on an endpoint that admits clients itself;
    /// [`IncomingError::Closed`] once it shuts down.
    pub async fn incoming(&self) -> Result<Incoming, IncomingError> {
        if !self
            .engine
            .workers
            .iter()
            .any(|w| w.api.application_admission())
        {
            return Err(IncomingError::AutomaticAdmission);
        }
        poll_fn(|cx| {
            let mut open = 0;
            for w in &self.engine.workers {
                match w.api.poll_pop_incoming(cx.waker()) {
                    Ok(Some(i)) => return Poll::Ready(Ok(Incoming::new(i, w.clone()))),
                    Ok(None) => open += 1,
                    Err(()) => {}
                }
            }
            if open == 0 {
                Poll::Ready(Err(IncomingError::Closed))
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Serves every connection on the worker that owns it: each new connection (and each
    /// already waiting for [`accept`](Self::accept)) runs `f(connection)` as a task on its
    /// worker's thread. The future need not be `Send`; its stream and datagram calls take
    /// no lock and wake no other thread, so a request is answered in the wake-up that
    /// brought it. Tasks it spawns with `tokio::task::spawn_local` (or `tokio::spawn`) run
    /// on the same worker.
    ///
    /// ```no_run
    /// # fn demo(server: stoq::Endpoint) -> Result<(), stoq::api::ServeError> {
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// server.serve(|conn| async move {
    ///     while let Ok((mut send, mut recv)) = conn.accept_bi().await {
    ///         tokio::task::spawn_local(async move {
    ///             let mut buf = Vec::new();
    ///             if recv.read_to_end(&mut buf).await.is_ok() {
    ///                 let _ = send.write_all(&buf).await;
    ///             }
    ///         });
    ///     }
    /// })
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`ServeError::OnCallerRuntime`] on an endpoint of
    /// [`client_in_runtime`](Self::client_in_runtime); [`ServeError::Stopped`] once the
    /// engine has stopped.
    pub fn serve<F, Fut>(&self, f: F) -> Result<(), ServeError>
    where
        F: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        if self.engine.workers.iter().any(|w| w.is_locked()) {
            return Err(ServeError::OnCallerRuntime);
        }
        let f: ServeFn = Arc::new(move |c| Box::pin(f(Connection::from_shared(c))));
        for w in &self.engine.workers {
            let f = f.clone();
            let posted = w.post(Box::new(move |w: &Arc<Worker>| {
                w.with(|st| {
                    st.api.serve = Some(f);
                    st.api.serve_queued(w);
                });
            }));
            if !posted {
                return Err(ServeError::Stopped);
            }
        }
        Ok(())
    }

    /// Shuts down gracefully: stops accepting, waits (up to `timeout`) until every
    /// connection's sent data is acknowledged, closes them all, waits for the closes to
    /// drain, then stops the workers. Data the peer acknowledged is never lost; the report
    /// says whether any was still unacknowledged at the timeout. Each worker drains its own
    /// connections, all at once.
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        let deadline = Instant::now() + timeout;
        let mut waits = Vec::with_capacity(self.engine.workers.len());
        for w in &self.engine.workers {
            w.api.close();
            waits.push(drain_on(w, deadline));
        }
        let mut report = ShutdownReport {
            connections: 0,
            unacknowledged: 0,
            drained: true,
            per_connection: Vec::new(),
        };
        for wait in waits {
            let d = wait.await;
            report.connections += d.connections;
            report.unacknowledged += d.unacknowledged;
            report.drained &= d.drained;
            report.per_connection.extend(d.per_connection);
        }
        self.engine.stop();
        report
    }
}

fn connect_here(
    st: &mut State,
    w: &Arc<Worker>,
    addr: SocketAddr,
    cfg: Arc<ClientConfig>,
) -> Result<Arc<ConnShared>, ConnectError> {
    let h = st.endpoint.connect(Instant::now(), addr, cfg)?;
    Ok(st.api.track(w, &st.endpoint, h, false))
}

/// What one worker's drain found (see [`Endpoint::shutdown`]).
#[derive(Debug, Default)]
struct Drained {
    /// Connections open at the start.
    connections: usize,
    /// Of those, the ones still unacknowledged at the deadline.
    unacknowledged: usize,
    /// Whether all closed in time.
    drained: bool,
    per_connection: Vec<ConnectionShutdown>,
}

/// Drains worker `w` (on it: here, or as a task on its thread): see
/// [`Endpoint::shutdown`].
async fn drain_on(w: &Arc<Worker>, deadline: Instant) -> Drained {
    if w.is_here() {
        return drain_here(w.clone(), deadline).await;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let posted = w.post(Box::new(move |w: &Arc<Worker>| {
        let w = w.clone();
        tokio::task::spawn_local(async move {
            let _ = tx.send(drain_here(w, deadline).await);
        });
    }));
    let gone = || Drained {
        drained: true,
        ..Drained::default()
    };
    if !posted {
        return gone();
    }
    rx.await.unwrap_or_else(|_| gone())
}

async fn drain_here(w: Arc<Worker>, deadline: Instant) -> Drained {
    const STEP: Duration = Duration::from_millis(1);
    let connections = w
        .with(|st| {
            st.api.shutting_down = true;
            st.endpoint.connection_count()
        })
        .unwrap_or(0);
    let unacked = || {
        w.with(|st| {
            st.api
                .handles()
                .into_iter()
                .filter(|h| {
                    st.endpoint
                        .connection(*h)
                        .is_some_and(|c| !c.is_closed() && !c.all_sent_data_acked())
                })
                .count()
        })
        .unwrap_or(0)
    };
    let mut unacknowledged = unacked();
    while unacknowledged > 0 && Instant::now() < deadline {
        tokio::time::sleep(STEP).await;
        unacknowledged = unacked();
    }
    let per_connection = w
        .with(|st| {
            let now = Instant::now();
            let mut report = Vec::new();
            for h in st.api.handles() {
                if let Some(c) = st.endpoint.connection_mut(h) {
                    if !c.is_closed() {
                        report.push(ConnectionShutdown {
                            remote: c.remote_address(),
                            unacknowledged_bytes: c.unacknowledged_bytes(),
                        });
                    }
                    c.close(now, 0, b"shutdown");
                }
            }
            report
        })
        .unwrap_or_default();
    w.kick();
    let drained = loop {
        if w.with(|st| st.endpoint.connection_count()).unwrap_or(0) == 0 {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(STEP).await;
    };
    Drained {
        connections,
        unacknowledged,
        drained,
        per_connection,
    }
}
