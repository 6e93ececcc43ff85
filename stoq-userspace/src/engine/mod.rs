//! The per-core engine: worker threads that each own a backend, an [`Endpoint`] and its
//! connections, timers and pacing.
//!
//! Each worker runs one loop:
//! 1. receive a batch from its backend (no lock held);
//! 2. under its state lock: feed the datagrams to the endpoint, fire due timers, hand
//!    events to the optional [`Handler`] and to the async API's waiting tasks, and fill a
//!    send batch from `poll_transmit_into`, written in place into the batch arena;
//! 3. send the batch (no lock held), as GSO groups where the backend can;
//! 4. sleep in `epoll`/`kqueue` until the socket is readable or writable, a timer (or the
//!    pacer) is due, or the application made work (a write, a read that opened a window).
//!
//! The lock is taken once per batch, never per packet; only the application's own calls on
//! this worker's connections contend for it. A datagram that reaches the wrong worker (an
//! address change under SO_REUSEPORT hashing) is handed to the owner named in its
//! connection ID over a crossbeam channel, and counted.

pub(crate) mod open;
pub(crate) mod worker;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::conn::{ConnectionHandle, Endpoint, EndpointConfig, Event};
use crate::io::BackendKind;

pub use self::worker::{EngineError, WorkerStats};

/// Engine settings.
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
