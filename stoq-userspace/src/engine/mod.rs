//! The per-core engine: workers that each own a backend, an [`Endpoint`] and its
//! connections, timers and pacing, and run the application tasks served on them.
//!
//! # The thread model
//!
//! A server engine runs one worker per core, each on a thread of its own, pinned, with its
//! own tokio current-thread runtime. Everything a connection needs lives on the worker that
//! owns it, from the client's first Initial (steered by connection ID) to its close:
//!
//! ```text
//!  worker thread i (pinned)                      any other thread
//! ┌──────────────────────────────────────────┐
//! │ runtime (current-thread) + local tasks    │   Endpoint::accept(), handles used there:
//! │  ├─ the loop: recv batch → endpoint →     │ ─ job ─► the loop runs it on thread i
//! │  │   events → wakers → poll_transmit_into │ ◄─ wake ─ results, pipes for stream data
//! │  │   → send batch; waits in epoll         │
//! │  └─ served tasks (Endpoint::serve):       │   worker j ─ handoff (counted) ─► worker i
//! │      state borrowed, no lock, no hop      │      (a datagram that reached j by mistake)
//! └──────────────────────────────────────────┘
//! ```
//!
//! - **On the worker** (tasks started by [`crate::Endpoint::serve`] or
//!   [`crate::Connection::spawn_on_worker`], and [`Handler`]s): stream and datagram calls
//!   borrow the worker's state directly and wake tasks of the same thread; no lock is taken
//!   and no other thread is woken between a datagram and the task that reads it.
//! - **Off the worker** (a handle used from another thread, such as a task started with
//!   `tokio::spawn` after [`crate::Endpoint::accept`]): calls become jobs the loop runs, and
//!   stream data crosses through bounded pipes. It works the same, at the price of a
//!   wake-up each way.
//! - **A client on the caller's runtime** ([`crate::Endpoint::client_in_runtime`]): one
//!   worker runs as a task of the application's runtime; its state is behind a lock each
//!   call takes, as quinn does. On a current-thread runtime the client's tasks and its
//!   connection share one thread.
//!
//! Workers share nothing on the fast path: each has its own endpoint, connections,
//! statistics (summed when read) and CID worker id. A datagram that reaches the wrong
//! worker (an address change under SO_REUSEPORT hashing) is handed to the owner named in
//! its connection ID over a queue, and counted.

pub(crate) mod app;
mod control;
#[cfg(target_os = "linux")]
mod flood;
pub(crate) mod home;
mod log;
pub(crate) mod open;
pub(crate) mod steer;
pub(crate) mod worker;
#[cfg(target_os = "linux")]
mod xdp_trace;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

pub(crate) use self::control::{Engine, Placement};
use crate::conn::{ConfigError, ConnectionHandle, Endpoint, EndpointConfig, Event};
use crate::io::select::SelectError;
use crate::io::{BackendKind, BackendStats};

/// How often a server's flood watch (Linux) reads its workers' Retry counts to decide
/// whether to attach or detach the XDP handshake filter: five times a second, whatever
/// the traffic. It wakes no worker (each publishes its count as it runs).
pub const FLOOD_WATCH_PERIOD: std::time::Duration = std::time::Duration::from_millis(200);

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No usable backend (a forced one cannot run).
    #[error(transparent)]
    Backend(#[from] SelectError),
    /// The socket could not be bound.
    #[error("cannot bind {addr}: {source} (is the port in use, or the address not local?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The endpoint settings are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// More workers than CID worker ids (255).
    #[error("{0} workers asked for; at most 255 (one CID worker id each)")]
    TooManyWorkers(usize),
    /// The OS refused an event loop resource (epoll, eventfd) or a thread.
    #[error("engine setup: {0}")]
    Os(#[source] io::Error),
    /// An engine on the caller's runtime was asked for outside one.
    #[error(
        "Endpoint::client_in_runtime must be called inside a tokio runtime with I/O and time \
         enabled (Builder::enable_all); use Endpoint::client for a worker thread of its own"
    )]
    NoRuntime,
}

/// Per-worker counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// The worker's id (also inside its CIDs).
    pub worker: u8,
    /// Datagrams this worker received that belonged to another worker, handed over.
    pub handoffs_out: u64,
    /// Datagrams other workers handed to this one.
    pub handoffs_in: u64,
    /// Handoffs dropped because the owner's queue was full.
    pub handoffs_dropped: u64,
    /// Buffers allocated for handoffs because the owner had none spare: grows while
    /// handoffs ramp up, then stays put (each buffer returns to its owner's spares).
    pub handoff_buffers_allocated: u64,
    /// Loop turns.
    pub loops: u64,
    /// Times the loop found nothing to do and waited (its thread sleeps unless other tasks
    /// of the thread run meanwhile).
    pub waits: u64,
    /// Times the idle poll found a datagram before the loop would have waited.
    pub idle_polls_hit: u64,
    /// The backend's counters.
    pub backend: BackendStats,
    /// Live connections.
    pub connections: usize,
    /// Hand-offs between this worker and other threads on behalf of its connections:
    /// calls made through handles used off the worker (each run here as a job) and
    /// chunks of stream data passed through the pipes of such handles. Zero for
    /// connections served on the worker.
    pub crossings: u64,
    /// Acquisitions of the worker's state lock: only a worker on the caller's runtime
    /// ([`crate::Endpoint::client_in_runtime`]) has one; zero on the engine's own threads.
    pub locks: u64,
}

/// The XDP program's Initial rate limit: a token bucket per source prefix and CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitialRateLimit {
    /// Initial packets per second one prefix may send, on each CPU.
    pub per_second: u32,
    /// How many a prefix may send at once (after a quiet spell).
    pub burst: u32,
}

impl InitialRateLimit {
    /// 20,000 Initial packets a second per prefix and CPU, in bursts of 4,096: far above
    /// what one network's real clients send (a handshake takes two to four Initial
    /// packets), far below what a flooding host sends. `per_second == 0` also turns the
    /// limit off.
    pub const DEFAULT: Self = Self {
        per_second: 20_000,
        burst: 4_096,
    };

    /// The XDP map's value for prefixes of `prefix`.
    pub fn to_map(self, prefix: crate::conn::SourcePrefix) -> stoq_common::limit::InitialLimit {
        stoq_common::limit::InitialLimit::new(self.per_second, self.burst, prefix.v4, prefix.v6)
    }
}

/// The XDP program in front of a socket backend's socket, as a filter: nothing is
/// redirected, but Initials beyond [`EngineConfig::initial_rate_limit`] and malformed
/// datagrams are dropped in the kernel. It costs bulk transfers (measured over veth: 3.3-3.4
/// Gbit/s with it, 5.4-5.8 without), so by default it is there only during a flood. Needs a
/// specific bind address (it names the interface), the eBPF object and CAP_BPF; where
/// those are missing, the server runs without it and logs why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpFilter {
    /// Never.
    Off,
    /// Always, from the start.
    On,
    /// While the server is answering a handshake flood (more than 50,000 Retries a second
    /// across its workers, checked five times a second), and until 10 s after it ends.
    #[default]
    UnderFlood,
}

/// Who decides whether a new client may start its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Admission {
    /// The engine admits every client that passes the endpoint's admission policy (Retry
    /// under load, per-prefix limits) while the accept queue and handshakes in progress
    /// leave room; the rest are refused with `CONNECTION_REFUSED`.
    #[default]
    Automatic,
    /// Every new client that passes the endpoint's admission policy is handed to the
    /// application as an [`Incoming`](crate::api::Incoming) from
    /// [`Endpoint::incoming`](crate::Endpoint::incoming), to accept, refuse, retry or
    /// ignore (as quinn's `Incoming`). Set the endpoint's `retry` to
    /// [`RetryPolicy::Never`](crate::conn::RetryPolicy::Never) to see every client.
    Application,
}

/// Engine settings.
///
/// ```
/// use stoq::engine::EngineConfig;
/// let mut c = EngineConfig::new("[::]:4433".parse().unwrap());
/// c.workers = 4; // 0: one per core (a server), one (a client)
/// c.backend = Some(stoq::io::BackendKind::Udp); // None: the best available, with reasons
/// c.endpoint.max_connections = 100_000;
/// c.endpoint.validate().expect("settings that make sense");
/// ```
#[derive(Clone)]
pub struct EngineConfig {
    /// The local address (`0.0.0.0:0` or `[::]:0` for a client).
    pub bind: SocketAddr,
    /// Worker threads; 0 means one per CPU core for a server and one for a client.
    pub workers: usize,
    /// Pin worker `i` to CPU `first_cpu + i` (modulo the cores available).
    pub pin_workers: bool,
    /// The CPU of worker 0 when pinning: lets a client and a server in one process (or
    /// two engines on one host) take different cores.
    pub first_cpu: usize,
    /// Force a backend instead of choosing automatically (see [`crate::io::select`]).
    pub backend: Option<BackendKind>,
    /// The protocol endpoint's settings (each worker gets its own id in its CIDs).
    pub endpoint: EndpointConfig,
    /// How the AF_XDP backend attaches its XDP program.
    pub xdp_mode: XdpMode,
    /// Kernel socket buffer bytes per socket, each way.
    pub socket_buffer: usize,
    /// Datagrams per receive and per send batch.
    pub batch: usize,
    /// Application logic to run on the worker threads themselves (see [`Handler`]).
    pub handler: Option<Arc<dyn HandlerFactory>>,
    /// With several workers, steer datagrams to the worker named in their CID in the
    /// kernel (a classic-BPF program on the SO_REUSEPORT group). Off, the kernel hashes
    /// addresses, and a datagram that lands on the wrong worker is handed over in
    /// userspace (counted in [`WorkerStats::handoffs_out`]).
    pub steering: bool,
    /// How long a busy worker keeps looking for datagrams before it sleeps. A worker that
    /// received or sent in its last turn polls its backend (yielding the core to any other
    /// runnable thread between polls) for up to this long: under load the next datagram
    /// usually comes within it, and neither this worker nor the peer's sender pays a
    /// sleep and a wake-up for it (fewer context switches, lower latency, at the price of
    /// CPU time spent polling). An idle worker sleeps at once, and so does one whose
    /// connections are being used from other threads (which may need its core). Zero:
    /// never poll.
    pub idle_poll: std::time::Duration,
    /// Who admits new clients of a server: the engine (every client that passes the
    /// endpoint's [`RetryPolicy`](crate::conn::RetryPolicy) and has room), or the
    /// application, through [`Endpoint::incoming`](crate::Endpoint::incoming). Ignored
    /// when a [`Handler`] serves the connections.
    pub admission: Admission,
    /// A server's per-source-prefix Initial rate limit in the XDP program (AF_XDP
    /// backend): Initials beyond it are dropped in the kernel before userspace sees them,
    /// counted in [`SteerStats::initial_limited`](crate::xdp::SteerStats::initial_limited).
    /// Prefixes are the endpoint's [`source_prefix`](crate::conn::EndpointConfig::source_prefix).
    /// `None` turns it off. Other backends have no kernel-side limit (userspace's
    /// admission policy still applies).
    pub initial_rate_limit: Option<InitialRateLimit>,
    /// Whether a server on a socket backend (UDP, io_uring) puts the XDP program in front
    /// of its socket as a filter (see [`XdpFilter`]).
    pub xdp_filter: XdpFilter,
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("bind", &self.bind)
            .field("workers", &self.workers)
            .field("pin_workers", &self.pin_workers)
            .field("first_cpu", &self.first_cpu)
            .field("backend", &self.backend)
            .field("xdp_mode", &self.xdp_mode)
            .field("socket_buffer", &self.socket_buffer)
            .field("batch", &self.batch)
            .field("handler", &self.handler.is_some())
            .field("steering", &self.steering)
            .field("idle_poll", &self.idle_poll)
            .field("admission", &self.admission)
            .field("initial_rate_limit", &self.initial_rate_limit)
            .field("xdp_filter", &self.xdp_filter)
            .finish_non_exhaustive()
    }
}

impl EngineConfig {
    /// Defaults for `bind`: automatic backend and worker count, 8 MiB socket buffers,
    /// batches of 64, workers pinned.
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            bind,
            workers: 0,
            pin_workers: true,
            first_cpu: 0,
            backend: None,
            xdp_mode: XdpMode::Auto,
            endpoint: EndpointConfig::new(),
            socket_buffer: 8 << 20,
            batch: 64,
            handler: None,
            steering: true,
            idle_poll: std::time::Duration::from_micros(50),
            admission: Admission::Automatic,
            initial_rate_limit: Some(InitialRateLimit::DEFAULT),
            xdp_filter: XdpFilter::UnderFlood,
        }
    }
}

/// How the AF_XDP backend attaches the XDP program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Driver (native) mode, else skb (generic) mode.
    #[default]
    Auto,
    /// Driver mode only.
    Driver,
    /// Skb (generic) mode only.
    Skb,
}

/// Application logic that runs on a worker thread, next to its connections: events arrive
/// without a channel hop or a task wake-up, and the handler may act on the connection at
/// once (read, write, close) through the [`Endpoint`].
///
/// A handler sees every event before the async API does; connections it serves entirely
/// need no async handle at all.
///
/// ```no_run
/// use stoq::conn::{ConnectionHandle, Endpoint, Event};
/// use stoq::engine::{EngineConfig, Handler};
/// /// Echoes every stream, on the worker, with no task and no await.
/// struct Echo;
/// impl Handler for Echo {
///     fn on_event(&mut self, ep: &mut Endpoint, h: ConnectionHandle, e: &Event) {
///         if let Event::StreamReadable(id) = e
///             && let Some(c) = ep.connection_mut(h)
///         {
///             let mut buf = [0u8; 4096];
///             while let Ok(Some(n)) = c.read(*id, &mut buf) {
///                 let _ = c.write(*id, &buf[..n]);
///             }
///         }
///     }
/// }
/// let mut cfg = EngineConfig::new("[::]:4433".parse().unwrap());
/// cfg.handler = Some(std::sync::Arc::new(|_worker: u8| Box::new(Echo) as Box<dyn Handler>));
/// ```
pub trait Handler: Send {
    /// A connection event on this worker.
    fn on_event(&mut self, endpoint: &mut Endpoint, conn: ConnectionHandle, event: &Event);
}

/// Builds one [`Handler`] per worker.
pub trait HandlerFactory: Send + Sync {
    /// The handler for worker `worker`.
    fn build(&self, worker: u8) -> Box<dyn Handler>;
}

impl<F> HandlerFactory for F
where
    F: Fn(u8) -> Box<dyn Handler> + Send + Sync,
{
    fn build(&self, worker: u8) -> Box<dyn Handler> {
        self(worker)
    }
}

/// What the engine runs on: the backend chosen and why, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// The backend selection, with the reason for each backend skipped.
    pub selection: crate::io::select::Selection,
    /// The local address (of worker 0; all share the port on a server).
    pub local_addr: SocketAddr,
    /// Worker threads.
    pub workers: usize,
    /// Capabilities of worker 0's backend when it started.
    pub capabilities: crate::io::Capabilities,
    /// How the backend runs: XDP mode and copy or zero-copy; GSO and GRO.
    pub detail: String,
}

/// Number of CPU cores this process may run on.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}
