//! One worker: its thread, its state behind one lock, and the loop.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Waker;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::{EngineConfig, EngineInfo, Handler};
use crate::conn::{
    ConfigError, ConnectionError, ConnectionHandle, DatagramEvent, DatagramInfo, Dir, Endpoint,
    Event, StreamId,
};
use crate::handshake::ServerConfig;
use crate::io::select::{self, SelectError};
use crate::io::{Backend, BackendKind, BackendStats, RxBatch, TxBatch};
use crate::wire::cid::CidLayout;

/// Datagrams waiting for their owner worker, per worker.
const HANDOFF_QUEUE: usize = 4096;

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
    /// Loop iterations.
    pub loops: u64,
    /// The backend's counters.
    pub backend: BackendStats,
    /// Live connections.
    pub connections: usize,
}

/// What the async handles of one connection share with its worker.
#[derive(Debug)]
pub(crate) struct ConnShared {
    pub(crate) worker: Arc<Worker>,
    pub(crate) handle: ConnectionHandle,
    pub(crate) serial: u64,
    /// Set once, when the connection ends.
    pub(crate) error: OnceLock<ConnectionError>,
}

/// Tasks waiting on one connection.
#[derive(Debug, Default)]
pub(crate) struct Wakers {
    pub(crate) connect: Option<Waker>,
    pub(crate) read: HashMap<StreamId, Waker>,
    pub(crate) write: HashMap<StreamId, Waker>,
    pub(crate) finish: HashMap<StreamId, Waker>,
    pub(crate) message: HashMap<StreamId, Waker>,
    pub(crate) accept: [Option<Waker>; 2],
    pub(crate) open: [Option<Waker>; 2],
    pub(crate) datagram: Option<Waker>,
    pub(crate) closed: Vec<Waker>,
}

impl Wakers {
    fn wake_all(&mut self) {
        let singles = [
            self.connect.take(),
            self.datagram.take(),
            self.accept[0].take(),
            self.accept[1].take(),
            self.open[0].take(),
            self.open[1].take(),
        ];
        for w in singles.into_iter().flatten() {
            w.wake();
        }
        for (_, w) in self
            .read
            .drain()
            .chain(self.write.drain())
            .chain(self.finish.drain())
            .chain(self.message.drain())
        {
            w.wake();
        }
        for w in self.closed.drain(..) {
            w.wake();
        }
    }
}

/// A connection as its worker tracks it for the async API.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) shared: Arc<ConnShared>,
    pub(crate) connected: bool,
    pub(crate) server_side: bool,
    pub(crate) wakers: Wakers,
    /// Streams whose data was all acknowledged after `finish`.
    pub(crate) finished: HashSet<StreamId>,
    /// Messages whose outcome someone awaits: `Some(true)` delivered, `Some(false)`
    /// abandoned.
    pub(crate) messages: HashMap<StreamId, Option<bool>>,
}

/// A worker's state, behind its lock.
pub(crate) struct State {
    pub(crate) endpoint: Endpoint,
    pub(crate) slots: Vec<Option<Slot>>,
    /// Server connections whose handshake completed, waiting for `accept`.
    pub(crate) accept_queue: VecDeque<Arc<ConnShared>>,
    pub(crate) accept_waker: Option<Waker>,
    pub(crate) max_accept_queue: usize,
    pub(crate) handler: Option<Box<dyn Handler>>,
    /// Stop accepting; close when `close_all` is set.
    pub(crate) shutting_down: bool,
    /// The loop should exit.
    pub(crate) stop: bool,
    pub(crate) stats: WorkerStats,
    /// Wakers of tasks waiting for this worker's connections to drain.
    pub(crate) drained_wakers: Vec<Waker>,
    /// A new backend to switch to (a client's rebinding), taken by the loop.
    pub(crate) rebind: Option<Box<dyn Backend>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("endpoint", &self.endpoint)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

impl State {
    /// Starts tracking connection `h` for the async API.
    pub(crate) fn track(
        &mut self,
        worker: &Arc<Worker>,
        h: ConnectionHandle,
        server_side: bool,
    ) -> Arc<ConnShared> {
        let shared = Arc::new(ConnShared {
            worker: worker.clone(),
            handle: h,
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            error: OnceLock::new(),
        });
        if self.slots.len() <= h.0 {
            self.slots.resize_with(h.0 + 1, || None);
        }
        self.slots[h.0] = Some(Slot {
            shared: shared.clone(),
            connected: false,
            server_side,
            wakers: Wakers::default(),
            finished: HashSet::new(),
            messages: HashMap::new(),
        });
        shared
    }

    fn on_datagram(
        &mut self,
        worker: &Arc<Worker>,
        now: Instant,
        from: SocketAddr,
        info: DatagramInfo,
        d: &mut [u8],
    ) {
        if let Some(DatagramEvent::Incoming(inc)) =
            self.endpoint.handle_datagram_info(now, from, info, d)
        {
            let room = self.handler.is_some()
                || (!self.shutting_down
                    && self.accept_queue.len() + self.endpoint.handshaking()
                        < self.max_accept_queue);
            if !room {
                self.endpoint.refuse(inc, now);
                return;
            }
            if let Ok(h) = self.endpoint.accept(inc, now) {
                self.track(worker, h, true);
            }
        }
    }

    /// Hands events to the handler and to waiting tasks; forgets freed connections.
    fn dispatch(&mut self) {
        while let Some((h, e)) = self.endpoint.poll_event() {
            if let Some(handler) = self.handler.as_mut() {
                handler.on_event(&mut self.endpoint, h, &e);
            }
            let Some(slot) = self.slots.get_mut(h.0).and_then(Option::as_mut) else {
                continue;
            };
            let w = &mut slot.wakers;
            match e {
                Event::Connected => {
                    slot.connected = true;
                    if let Some(k) = w.connect.take() {
                        k.wake();
                    }
                    if slot.server_side && self.handler.is_none() {
                        if self.accept_queue.len() < self.max_accept_queue {
                            self.accept_queue.push_back(slot.shared.clone());
                            if let Some(k) = self.accept_waker.take() {
                                k.wake();
                            }
                        } else if let Some(c) = self.endpoint.connection_mut(h) {
                            c.close(Instant::now(), 0x2, b"accept queue full");
                        }
                    }
                }
                Event::Lost(err) => {
                    let _ = slot.shared.error.set(err);
                    w.wake_all();
                }
                Event::StreamOpened(dir) => {
                    if let Some(k) = w.accept[dir_index(dir)].take() {
                        k.wake();
                    }
                }
                Event::StreamReadable(id) => {
                    if let Some(k) = w.read.remove(&id) {
                        k.wake();
                    }
                }
                Event::StreamWritable(id) | Event::StreamStopped { id, .. } => {
                    if let Some(k) = w.write.remove(&id) {
                        k.wake();
                    }
                    if let Some(k) = w.finish.remove(&id) {
                        k.wake();
                    }
                }
                Event::StreamFinished(id) => {
                    slot.finished.insert(id);
                    if let Some(k) = w.finish.remove(&id) {
                        k.wake();
                    }
                }
                Event::StreamsAvailable(dir) => {
                    if let Some(k) = w.open[dir_index(dir)].take() {
                        k.wake();
                    }
                }
                Event::DatagramReceived => {
                    if let Some(k) = w.datagram.take() {
                        k.wake();
                    }
                }
                Event::MessageDelivered(id) | Event::MessageAbandoned(id) => {
                    let delivered = matches!(e, Event::MessageDelivered(_));
                    if let Some(o) = slot.messages.get_mut(&id) {
                        *o = Some(delivered);
                        if let Some(k) = w.message.remove(&id) {
                            k.wake();
                        }
                    }
                }
                _ => {}
            }
        }
        while let Some(h) = self.endpoint.poll_removed() {
            if let Some(mut slot) = self.slots.get_mut(h.0).and_then(Option::take) {
                let _ = slot.shared.error.set(ConnectionError::LocallyClosed);
                slot.wakers.wake_all();
            }
        }
        if self.endpoint.connection_count() == 0 {
            for w in self.drained_wakers.drain(..) {
                w.wake();
            }
        }
    }
}

pub(crate) fn dir_index(d: Dir) -> usize {
    match d {
        Dir::Bi => 0,
        Dir::Uni => 1,
    }
}

/// A datagram on its way to the worker that owns its connection.
#[derive(Debug)]
struct Handoff {
    from: SocketAddr,
    info: DatagramInfo,
    data: Vec<u8>,
}

/// One worker: shared between its thread and the async handles of its connections.
pub(crate) struct Worker {
    pub(crate) id: u8,
    pub(crate) state: Mutex<State>,
    dirty: AtomicBool,
    sleeping: AtomicBool,
    waker: mio::Waker,
    handoff: Sender<Handoff>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// The state, even if a task panicked while holding the lock (the state machine
    /// itself never panics; a panicking application task must not take the worker down).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells the worker the application made work (data to send, a window to open):
    /// wakes it if it sleeps. Costs a syscall only when it does.
    pub(crate) fn notify(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            let _ = self.waker.wake();
        }
    }
}

/// The running engine: its workers and their threads.
#[derive(Debug)]
pub(crate) struct Engine {
    pub(crate) workers: Vec<Arc<Worker>>,
    pub(crate) info: EngineInfo,
    /// The XDP program and its attachment (AF_XDP), removed when the engine stops.
    #[cfg(target_os = "linux")]
    xdp: Mutex<Option<super::open::XdpGuard>>,
    pub(crate) socket_buffer: usize,
    batch: usize,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next: AtomicUsize,
}

impl Engine {
    /// Chooses the backend, binds one socket per worker and starts the threads.
    pub(crate) fn start(
        config: EngineConfig,
        server: Option<Arc<ServerConfig>>,
    ) -> Result<Arc<Self>, EngineError> {
        Self::start_with(config, server, None)
    }

    /// As [`start`](Self::start), on backends the application built (one per worker).
    pub(crate) fn start_with(
        config: EngineConfig,
        server: Option<Arc<ServerConfig>>,
        given: Option<Vec<Box<dyn Backend>>>,
    ) -> Result<Arc<Self>, EngineError> {
        config.endpoint.validate()?;
        let selection = match &given {
            Some(b) if !b.is_empty() => select::Selection {
                chosen: b[0].kind(),
                forced: true,
                skipped: Vec::new(),
            },
            Some(_) => {
                return Err(EngineError::Os(io::Error::other("no backend given")));
            }
            None => select::select(config.backend)?,
        };
        let n = match config.workers {
            0 if server.is_some() => super::available_cores(),
            0 => 1,
            n => n,
        };
        if n > 255 {
            return Err(EngineError::TooManyWorkers(n));
        }
        // The chosen backend, else (unless forced) the next ones in order, each failure
        // recorded as the reason it was skipped.
        let mut selection = selection;
        let order: Vec<BackendKind> = if selection.forced {
            vec![selection.chosen]
        } else {
            BackendKind::ALL
                .iter()
                .copied()
                .skip_while(|k| *k != selection.chosen)
                .collect()
        };
        let mut opened = given.map(|backends| super::open::Opened {
            kind: BackendKind::Custom,
            detail: "supplied by the application".into(),
            backends,
            #[cfg(target_os = "linux")]
            xdp: None,
        });
        let order = if opened.is_some() { Vec::new() } else { order };
        for kind in order {
            // The chosen one passed its probe; the ones after it have not been asked yet.
            if kind != selection.chosen
                && let Err(reason) = select::probe(kind).result
            {
                selection.skipped.push((kind, reason));
                continue;
            }
            match super::open::open(kind, &config, n, selection.forced) {
                Ok(o) => {
                    opened = Some(o);
                    break;
                }
                Err(reason) if selection.forced => {
                    return Err(EngineError::Backend(SelectError::ForcedUnavailable {
                        kind,
                        reason,
                    }));
                }
                Err(reason) => selection.skipped.push((kind, reason)),
            }
        }
        let opened = opened.ok_or_else(|| {
            EngineError::Os(io::Error::other(format!(
                "no backend could start: {selection}"
            )))
        })?;
        selection.chosen = opened.kind;
        let backends = opened.backends;
        let n = backends.len();
        #[cfg(target_os = "linux")]
        if n > 1 && config.steering {
            steer::attach(&backends, &config.endpoint.cid_layout).map_err(EngineError::Os)?;
        }
        let info = EngineInfo {
            selection,
            local_addr: backends[0].local_addr(),
            workers: n,
            capabilities: backends[0].capabilities(),
            detail: opened.detail,
        };
        let mut workers = Vec::with_capacity(n);
        let mut parts = Vec::with_capacity(n);
        for (i, backend) in backends.into_iter().enumerate() {
            let poll = mio::Poll::new().map_err(EngineError::Os)?;
            let waker = mio::Waker::new(poll.registry(), WAKE).map_err(EngineError::Os)?;
            let mut ecfg = config.endpoint.clone();
            ecfg.worker_id = i as u8;
            // Each worker's endpoint draws its own secrets from its own seed.
            ecfg.rng_seed[31] ^= i as u8;
            let endpoint = Endpoint::new(ecfg, server.clone())?;
            let (tx, rx) = crossbeam_channel::bounded(HANDOFF_QUEUE);
            let worker = Arc::new(Worker {
                id: i as u8,
                state: Mutex::new(State {
                    endpoint,
                    slots: Vec::new(),
                    accept_queue: VecDeque::new(),
                    accept_waker: None,
                    max_accept_queue: config.endpoint.max_incoming,
                    handler: config.handler.as_ref().map(|f| f.build(i as u8)),
                    shutting_down: false,
                    stop: false,
                    stats: WorkerStats {
                        worker: i as u8,
                        ..WorkerStats::default()
                    },
                    drained_wakers: Vec::new(),
                    rebind: None,
                }),
                dirty: AtomicBool::new(false),
                sleeping: AtomicBool::new(false),
                waker,
                handoff: tx,
            });
            workers.push(worker);
            parts.push((backend, poll, rx));
        }
        let engine = Arc::new(Self {
            workers,
            info,
            #[cfg(target_os = "linux")]
            xdp: Mutex::new(opened.xdp),
            socket_buffer: config.socket_buffer,
            batch: config.batch,
            threads: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
        });
        let mut threads = Vec::with_capacity(n);
        for (i, (backend, poll, rx)) in parts.into_iter().enumerate() {
            let peers: Vec<Arc<Worker>> = engine.workers.clone();
            let layout = config.endpoint.cid_layout;
            let batch = config.batch.max(1);
            let pin = config.pin_workers.then_some(config.first_cpu + i);
            let steering = config.steering;
            let t = std::thread::Builder::new()
                .name(format!("stoq-worker-{i}"))
                .spawn(move || {
                    if let Some(cpu) = pin {
                        pin_to_core(cpu);
                    }
                    let w = peers[i].clone();
                    let cfg = LoopConfig {
                        peers,
                        layout,
                        batch,
                        steering,
                    };
                    if let Err(e) = run(&w, backend, poll, &rx, &cfg) {
                        tracing::error!(worker = i, "worker stopped: {e}");
                        let mut st = w.lock();
                        st.stop = true;
                        fail_all(&mut st, &e);
                    }
                })
                .map_err(EngineError::Os)?;
            threads.push(t);
        }
        *engine
            .threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = threads;
        Ok(engine)
    }

    /// Moves worker `i` to a new socket bound to `bind` (a client's rebinding).
    pub(crate) fn rebind(
        &self,
        i: usize,
        bind: SocketAddr,
        buffer: usize,
    ) -> io::Result<SocketAddr> {
        // The same kind of socket backend; AF_XDP and custom backends move to UDP.
        let kind = match self.info.selection.chosen {
            BackendKind::IoUring => BackendKind::IoUring,
            _ => BackendKind::Udp,
        };
        let b = super::open::open_socket_backend(kind, bind, false, buffer, self.batch)?;
        let addr = b.local_addr();
        self.workers[i].lock().rebind = Some(b);
        self.workers[i].notify();
        Ok(addr)
    }

    /// The worker for the next client connection (round robin).
    pub(crate) fn pick(&self) -> &Arc<Worker> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        &self.workers[i]
    }

    /// Stops every worker and joins its thread. Connections still open are dropped
    /// without a close (call the graceful shutdown first).
    pub(crate) fn stop(&self) {
        for w in &self.workers {
            w.lock().stop = true;
            w.notify();
        }
        let threads = std::mem::take(
            &mut *self
                .threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for t in threads {
            let _ = t.join();
        }
        #[cfg(target_os = "linux")]
        drop(
            self.xdp
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
    }

    /// The XDP program's verdict counters (AF_XDP only): what the kernel dropped, by
    /// reason, redirected and passed.
    #[cfg(target_os = "linux")]
    pub(crate) fn xdp_stats(&self) -> Option<crate::xdp::SteerStats> {
        self.xdp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .and_then(super::open::XdpGuard::stats)
    }

    /// Counters of every worker.
    pub(crate) fn stats(&self) -> Vec<WorkerStats> {
        self.workers
            .iter()
            .map(|w| {
                let st = w.lock();
                WorkerStats {
                    connections: st.endpoint.connection_count(),
                    ..st.stats
                }
            })
            .collect()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The loop ended with an I/O error: every connection of this worker is gone.
fn fail_all(st: &mut State, e: &io::Error) {
    tracing::error!("backend failed: {e}");
    for slot in st.slots.iter_mut().flatten() {
        let _ = slot.shared.error.set(ConnectionError::LocallyClosed);
        slot.wakers.wake_all();
    }
    if let Some(w) = st.accept_waker.take() {
        w.wake();
    }
    for w in st.drained_wakers.drain(..) {
        w.wake();
    }
}

const SOCKET: mio::Token = mio::Token(0);
/// How long a worker out of transmit frames waits for completions before trying again.
const STARVED_WAIT: Duration = Duration::from_millis(1);
const WAKE: mio::Token = mio::Token(1);

/// The worker that owns a datagram, by the same rule as the kernel's steering program: the
/// worker id inside a destination CID that follows `layout`; with `spread`, any other long
/// header (a client's first Initials, under the CID it chose) belongs to worker
/// `first CID byte % workers`. `None`: whichever worker received it handles it.
///
/// Userspace must agree with the kernel because the kernel does not always ask the
/// program: GRO may merge datagrams of one client address (several new connections
/// from one socket) and deliver them by the first one's verdict.
fn owner(d: &[u8], layout: &CidLayout, workers: usize, spread: bool) -> Option<u8> {
    let first = *d.first()?;
    if first & 0x80 == 0 {
        let cid = d.get(1..1 + layout.len())?;
        return layout
            .matches_first_octet(cid[0])
            .then(|| cid[layout.worker_offset()]);
    }
    let dcid_len = usize::from(*d.get(5)?);
    let cid = d.get(6..6 + dcid_len)?;
    if dcid_len == layout.len() && layout.matches_first_octet(cid[0]) {
        return Some(cid[layout.worker_offset()]);
    }
    (spread && workers > 0)
        .then(|| cid.first().map(|b| (usize::from(*b) % workers) as u8))
        .flatten()
}

/// The worker loop. Returns only when told to stop, or on a backend failure.
/// What a worker's loop needs besides its backend and poller.
struct LoopConfig {
    peers: Vec<Arc<Worker>>,
    layout: CidLayout,
    batch: usize,
    steering: bool,
}

fn run(
    worker: &Arc<Worker>,
    mut backend: Box<dyn Backend>,
    mut poll: mio::Poll,
    handoffs: &Receiver<Handoff>,
    cfg: &LoopConfig,
) -> io::Result<()> {
    let LoopConfig {
        peers,
        layout,
        batch,
        steering,
    } = cfg;
    let (layout, batch, steering) = (*layout, *batch, *steering);
    #[cfg(unix)]
    {
        let fd = backend.readiness();
        poll.registry().register(
            &mut mio::unix::SourceFd(&fd),
            SOCKET,
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        )?;
    }
    let caps = backend.capabilities();
    let max_dgram = worker.lock().endpoint.max_datagram_size();
    let slot_size = if caps.gro { 65_536 } else { max_dgram };
    let mut rx = RxBatch::new(batch.min(crate::io::udp::BATCH), slot_size);
    let mut tx = TxBatch::new(batch * 4, max_dgram);
    tx.set_max_segments(caps.gso_segments);
    let mut events = mio::Events::with_capacity(16);
    let me = worker.id;
    let n = peers.len();
    let direct = backend.has_direct_tx();
    loop {
        let mut direct_sent = 0;
        let mut starved = false;
        let got = backend.recv(&mut rx)?;
        worker.dirty.store(false, Ordering::SeqCst);
        let (timeout, stop, rebind) = {
            let mut st = worker.lock();
            if st.stop {
                return Ok(());
            }
            st.stats.loops += 1;
            let now = Instant::now();
            if got > 0 {
                let st = &mut *st;
                rx.for_each(|from, info, d| {
                    if n > 1
                        && let Some(o) = owner(d, &layout, n, steering)
                        && o != me
                        && usize::from(o) < n
                    {
                        let h = Handoff {
                            from,
                            info,
                            data: d.to_vec(),
                        };
                        match peers[usize::from(o)].handoff.try_send(h) {
                            Ok(()) => {
                                st.stats.handoffs_out += 1;
                                peers[usize::from(o)].notify();
                            }
                            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                                st.stats.handoffs_dropped += 1;
                            }
                        }
                        return;
                    }
                    st.on_datagram(worker, now, from, info, d);
                });
            }
            while let Ok(mut h) = handoffs.try_recv() {
                st.stats.handoffs_in += 1;
                st.on_datagram(worker, now, h.from, h.info, &mut h.data);
            }
            if st.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                st.endpoint.handle_timeout(now);
            }
            st.dispatch();
            if direct {
                // Datagrams are written straight into the backend's frames.
                let ep = &mut st.endpoint;
                let mut drained = false;
                let r = backend.send_direct(&mut |buf| {
                    let t = ep.poll_transmit_into(now, buf);
                    drained |= t.is_none();
                    t
                });
                direct_sent = match r {
                    Some(r) => r?,
                    None => 0,
                };
                starved = !drained;
            } else if tx.is_empty() {
                let ep = &mut st.endpoint;
                while tx.has_room() && tx.push_with(|buf| ep.poll_transmit_into(now, buf)) {}
            }
            st.stats.backend = backend.stats();
            (st.endpoint.poll_timeout(), st.stop, st.rebind.take())
        };
        if stop {
            return Ok(());
        }
        if let Some(new) = rebind {
            // Pending sends go out of the new socket: the peer sees the address change.
            #[cfg(unix)]
            {
                let old = backend.readiness();
                let _ = poll.registry().deregister(&mut mio::unix::SourceFd(&old));
                let fd = new.readiness();
                poll.registry().register(
                    &mut mio::unix::SourceFd(&fd),
                    SOCKET,
                    mio::Interest::READABLE | mio::Interest::WRITABLE,
                )?;
            }
            backend = new;
            // Every connection announces the new address with a PING, sent on the next
            // round (which must not sleep first).
            worker.lock().endpoint.handle_local_address_change();
            worker.dirty.store(true, Ordering::SeqCst);
        }
        let queued = if direct {
            backend.flush()?;
            direct_sent
        } else {
            let q = tx.datagrams();
            if !tx.is_empty() {
                backend.send(&mut tx)?;
            }
            q
        };
        let blocked = !tx.is_empty();
        if got > 0 || (queued > 0 && !blocked) {
            // More may be waiting either way: go round without sleeping.
            continue;
        }
        worker.sleeping.store(true, Ordering::SeqCst);
        if worker.dirty.load(Ordering::SeqCst) || !handoffs.is_empty() {
            worker.sleeping.store(false, Ordering::SeqCst);
            continue;
        }
        let mut wait = timeout.map(|t| t.saturating_duration_since(Instant::now()));
        if starved {
            // Out of frames with data to send: completions free them without an event.
            wait = Some(wait.map_or(STARVED_WAIT, |w| w.min(STARVED_WAIT)));
        }
        match poll.poll(&mut events, wait.map(|d| d.min(Duration::from_secs(3600)))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        worker.sleeping.store(false, Ordering::SeqCst);
    }
}

/// Pins the calling thread to core `i` modulo the cores it may use (best effort).
fn pin_to_core(i: usize) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: cpu_set_t is a plain bitmask; all-zero is the empty set.
        let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 is this thread; the size matches the set.
        if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut allowed) }
            != 0
        {
            return;
        }
        let cores: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `c` is below CPU_SETSIZE.
            .filter(|c| unsafe { libc::CPU_ISSET(*c, &allowed) })
            .collect();
        if cores.is_empty() {
            return;
        }
        // SAFETY: as above.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the core number comes from the allowed set, below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cores[i % cores.len()], &mut set) };
        // SAFETY: pid 0 is this thread; the size matches the set.
        let _ = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = i;
}

#[cfg(target_os = "linux")]
mod steer {
    //! A classic-BPF program on the SO_REUSEPORT group: datagrams whose destination CID
    //! follows the layout go to the socket of the worker named inside it; the rest (a
    //! client's first Initial, random CIDs) are spread by the kernel's hash.

    use std::io;
    use std::os::fd::RawFd;

    use crate::io::Backend;
    use crate::wire::cid::CidLayout;

    // Classic BPF opcodes (linux/filter.h).
    const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
    const LD_W_LEN: u16 = 0x80; // BPF_LD | BPF_W | BPF_LEN
    const ALU_AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
    const ALU_MOD_K: u16 = 0x94; // BPF_ALU | BPF_MOD | BPF_K
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
    const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
    const RET_A: u16 = 0x16; // BPF_RET | BPF_A
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K

    fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
        libc::sock_filter { code, jt, jf, k }
    }

    /// The program for a group of `workers` sockets. Offsets are into the UDP payload
    /// (the kernel pulls the UDP header before running it); the return value indexes the
    /// group's sockets in bind order, and an index past the group makes the kernel fall
    /// back to its address hash.
    ///
    /// - A CID in the layout (short or long header): the worker byte inside it.
    /// - Any other long header (a client's first Initial, with the random CID it chose):
    ///   its first CID byte modulo the workers, so new connections spread over the workers
    ///   even from one client socket, and an Initial's retransmissions land together.
    /// - Anything else: the kernel's hash.
    pub(super) fn program(layout: &CidLayout, workers: usize) -> Vec<libc::sock_filter> {
        let len = layout.len() as u32;
        let w_short = 1 + layout.worker_offset() as u32;
        let w_long = 6 + layout.worker_offset() as u32;
        vec![
            op(LD_W_LEN, 0, 0, 0),                      // 0: A = payload length
            op(JGT_K, 0, 19, w_short), // 1: long enough for a short header's worker byte?
            op(LD_B_ABS, 0, 0, 0),     // 2: A = first byte
            op(JSET_K, 0, 9, 0x80),    // 3: long header -> 4, short -> 13
            op(LD_W_LEN, 0, 0, 0),     // 4: long:
            op(JGT_K, 0, 12, w_long),  // 5: long enough for the worker byte? else spread
            op(LD_B_ABS, 0, 0, 5),     // 6: DCID length
            op(JEQ_K, 0, 10, len),     // 7: the layout's? else spread
            op(LD_B_ABS, 0, 0, 6),     // 8: the CID's first octet
            op(ALU_AND_K, 0, 0, 0x1f), // 9
            op(JEQ_K, 0, 7, len - 1),  // 10: describes the layout's length? else spread
            op(LD_B_ABS, 0, 0, w_long), // 11: the worker id
            op(RET_A, 0, 0, 0),        // 12
            op(LD_B_ABS, 0, 0, 1),     // 13: short: the CID's first octet
            op(ALU_AND_K, 0, 0, 0x1f), // 14
            op(JEQ_K, 0, 5, len - 1),  // 15: describes the layout's length? else hash
            op(LD_B_ABS, 0, 0, w_short), // 16: the worker id
            op(RET_A, 0, 0, 0),        // 17
            op(LD_B_ABS, 0, 0, 6),     // 18: spread: the first byte of a foreign CID
            op(ALU_MOD_K, 0, 0, workers.max(1) as u32), // 19
            op(RET_A, 0, 0, 0),        // 20
            op(RET_K, 0, 0, u32::MAX), // 21: not ours to steer: the kernel's hash
        ]
    }

    /// Attaches the program to the group (through the first socket).
    pub(super) fn attach(backends: &[Box<dyn Backend>], layout: &CidLayout) -> io::Result<()> {
        let prog = program(layout, backends.len());
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr().cast_mut(),
        };
        let fd: RawFd = backends[0].socket_fd();
        // SAFETY: a valid socket fd and a sock_fprog pointing at `prog`, alive for the call.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ATTACH_REUSEPORT_CBPF,
                (&raw const fprog).cast(),
                size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A tiny interpreter for the instructions the program uses, to check it
        /// without a kernel.
        fn run(prog: &[libc::sock_filter], pkt: &[u8]) -> u32 {
            let (mut a, mut pc) = (0u32, 0usize);
            loop {
                let f = prog[pc];
                pc += 1;
                match f.code {
                    LD_W_LEN => a = pkt.len() as u32,
                    LD_B_ABS => match pkt.get(f.k as usize) {
                        Some(b) => a = u32::from(*b),
                        None => return 0,
                    },
                    ALU_AND_K => a &= f.k,
                    ALU_MOD_K => a %= f.k,
                    JEQ_K => pc += usize::from(if a == f.k { f.jt } else { f.jf }),
                    JGT_K => pc += usize::from(if a > f.k { f.jt } else { f.jf }),
                    JSET_K => pc += usize::from(if a & f.k != 0 { f.jt } else { f.jf }),
                    RET_A => return a,
                    RET_K => return f.k,
                    c => panic!("opcode {c:#x}"),
                }
            }
        }

        /// The program in the kernel: two sockets in a SO_REUSEPORT group on loopback,
        /// and datagrams naming worker 0 or 1 must arrive at that socket.
        #[test]
        fn kernel_steers_to_the_named_socket() {
            use crate::io::udp::{UdpBackend, UdpConfig};
            use crate::io::{Backend, RxBatch};
            let layout = CidLayout::DEFAULT;
            let mut cfg = UdpConfig::new("127.0.0.1:0".parse().expect("addr"));
            cfg.reuse_port = true;
            let a = UdpBackend::bind(&cfg).expect("a");
            cfg.bind = a.local_addr();
            let b = UdpBackend::bind(&cfg).expect("b");
            let mut backends: Vec<Box<dyn Backend>> = vec![Box::new(a), Box::new(b)];
            attach(&backends, &layout).expect("attach");
            let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("sender");
            let mut want = [0usize; 2];
            for i in 0..40u8 {
                let worker = i % 2;
                let cid = layout.build(0, 7, worker, &[i; 8]).expect("cid");
                let mut d = vec![0x40];
                d.extend_from_slice(cid.as_bytes());
                d.extend_from_slice(&[0; 40]);
                tx.send_to(&d, backends[0].local_addr()).expect("send");
                want[usize::from(worker)] += 1;
                // A client's Initial with a random 16-byte CID: spread by its first byte.
                let mut init = vec![0xc0, 0, 0, 0, 1, 16, 0x10 + i];
                init.extend_from_slice(&[worker; 15]);
                init.extend_from_slice(&[0; 1200]);
                tx.send_to(&init, backends[0].local_addr()).expect("send");
                want[usize::from((0x10 + i) % 2)] += 1;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            let mut rx = RxBatch::new(64, 2048);
            for (w, b) in backends.iter_mut().enumerate() {
                let mut got = 0;
                while b.recv(&mut rx).expect("recv") > 0 {
                    rx.for_each(|_, _, d| {
                        if d[0] & 0x80 == 0 {
                            assert_eq!(usize::from(d[1 + layout.worker_offset()]), w);
                        } else {
                            assert_eq!(usize::from(d[6] % 2), w, "Initial {:#x}", d[6]);
                        }
                        got += 1;
                    });
                }
                assert_eq!(got, want[w], "socket {w}");
            }
        }

        #[test]
        fn steers_by_the_worker_byte() {
            let layout = CidLayout::DEFAULT;
            let prog = program(&layout, 4);
            let cid = layout.build(0, 7, 3, &[9; 8]).expect("cid");
            let mut short = vec![0x40];
            short.extend_from_slice(cid.as_bytes());
            short.extend_from_slice(&[0; 30]);
            assert_eq!(run(&prog, &short), 3);
            let mut long = vec![0xc0, 0, 0, 0, 1, cid.len() as u8];
            long.extend_from_slice(cid.as_bytes());
            long.extend_from_slice(&[0; 30]);
            assert_eq!(run(&prog, &long), 3);
            // A client's first Initial with a 16-byte random CID: spread by its first byte.
            let mut initial = vec![0xc0, 0, 0, 0, 1, 16];
            initial.extend_from_slice(&[0xab; 16]);
            initial.extend_from_slice(&[0; 1200]);
            assert_eq!(run(&prog, &initial), 0xab % 4);
            // A short header with a foreign CID: the kernel's hash.
            let mut foreign = vec![0x40, 0xff];
            foreign.extend_from_slice(&[0; 40]);
            assert_eq!(run(&prog, &foreign), u32::MAX);
            // Too short: the kernel's hash.
            assert_eq!(run(&prog, &[0x40, 1]), u32::MAX);
            // Userspace agrees with the program.
            let owner = |d: &[u8], spread| super::super::owner(d, &layout, 4, spread);
            for spread in [true, false] {
                assert_eq!(owner(&short, spread), Some(3));
                assert_eq!(owner(&long, spread), Some(3));
                assert_eq!(owner(&foreign, spread), None);
            }
            assert_eq!(owner(&initial, true), Some(0xab % 4));
            assert_eq!(owner(&initial, false), None);
        }
    }
}
