//! The async API's bookkeeping on each worker: which tasks wait on which connection and
//! stream, what a cancelled call left behind, and where a new server connection goes
//! (served on the worker, or queued for [`crate::Endpoint::accept`]).
//!
//! [`ApiState`] is part of the worker's state, touched only where the state may be (see
//! [`crate::engine`]'s thread model). [`SharedApi`] is the one part other threads reach:
//! the accept queue.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Waker;
use std::time::Instant;

use crate::conn::{ConnectionError, ConnectionHandle, Dir, Endpoint, Event, StreamId};
use crate::engine::home::Worker;
use crate::wire::cid::ConnectionId;

/// Something that happened to a connection's path, for [`Connection::path_event`](crate::api::Connection::path_event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathEvent {
    /// The largest DATAGRAM that can be sent changed (the path MTU moved: discovery
    /// found more room, a black hole made it drop to the base, or the peer moved).
    DatagramSizeChanged(usize),
    /// The peer moved to this address, now validated (NAT rebinding or migration).
    Migrated(std::net::SocketAddr),
    /// The 1-RTT keys were updated (by either side).
    KeysUpdated,
}

/// What [`crate::Endpoint::serve`] runs for each connection, on its worker.
pub(crate) type ServeFn =
    Arc<dyn Fn(Arc<ConnShared>) -> Pin<Box<dyn Future<Output = ()>>> + Send + Sync>;

/// What the handles of one connection share (with each other and with its worker).
#[derive(Debug)]
pub(crate) struct ConnShared {
    pub(crate) worker: Arc<Worker>,
    pub(crate) handle: ConnectionHandle,
    /// Tells this connection from a later one in the same slot.
    pub(crate) serial: u64,
    /// Set once, when the connection ends.
    pub(crate) error: OnceLock<ConnectionError>,
    /// The connection ID this side was first reached by.
    pub(crate) local_cid: Option<ConnectionId>,
    /// The largest DATAGRAM the path takes, plus one (0: none), kept by the worker for
    /// handles on other threads.
    pub(crate) max_datagram: AtomicUsize,
}

impl ConnShared {
    /// The error the connection ended with, or "closed locally" if none is known.
    pub(crate) fn gone(&self) -> ConnectionError {
        self.error
            .get()
            .cloned()
            .unwrap_or(ConnectionError::LocallyClosed)
    }
}

/// The tasks waiting for one thing that several may wait for at once. Registering the
/// same task twice keeps one entry; the list keeps its capacity, so waiting allocates only
/// the first time that many tasks wait together.
#[derive(Debug, Default)]
pub(crate) struct WakerSet(Vec<Waker>);

impl WakerSet {
    /// Adds `w` unless the same task is already waiting.
    pub(crate) fn register(&mut self, w: &Waker) {
        if !self.0.iter().any(|x| x.will_wake(w)) {
            self.0.push(w.clone());
        }
    }

    /// Wakes every waiting task; whether there was one.
    pub(crate) fn wake(&mut self) -> bool {
        let any = !self.0.is_empty();
        for w in self.0.drain(..) {
            w.wake();
        }
        any
    }
}

/// Tasks waiting on one connection.
#[derive(Debug, Default)]
pub(crate) struct Wakers {
    pub(crate) connect: Option<Waker>,
    pub(crate) read: HashMap<StreamId, Waker>,
    pub(crate) write: HashMap<StreamId, Waker>,
    pub(crate) finish: HashMap<StreamId, Waker>,
    pub(crate) message: HashMap<StreamId, Waker>,
    /// Every task waiting to accept a stream, per direction: several may wait at once
    /// (each woken to race for the new stream; the others wait again).
    pub(crate) accept: [WakerSet; 2],
    /// Every task waiting for stream credit to open one, per direction.
    pub(crate) open: [WakerSet; 2],
    /// Every task waiting for a DATAGRAM.
    pub(crate) datagram: WakerSet,
    /// Every task waiting for an extension frame.
    pub(crate) extension: WakerSet,
    /// A sender waiting for room in the DATAGRAM queue.
    pub(crate) datagram_room: Option<Waker>,
    /// A task waiting for the next path event.
    pub(crate) path_event: Option<Waker>,
    /// Every task waiting for the server's answer to early data.
    pub(crate) early: WakerSet,
    pub(crate) closed: Vec<Waker>,
}

impl Wakers {
    fn wake_all(&mut self) {
        let singles = [
            self.connect.take(),
            self.datagram_room.take(),
            self.path_event.take(),
        ];
        for w in singles.into_iter().flatten() {
            w.wake();
        }
        for set in self.accept.iter_mut().chain(&mut self.open) {
            set.wake();
        }
        self.datagram.wake();
        self.extension.wake();
        self.early.wake();
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

/// What a call from another thread took but could not hand over, because its caller gave
/// up waiting (a cancelled `accept_bi`, `read_datagram`): the next call gets it first.
#[derive(Debug, Default)]
pub(crate) struct Stash {
    pub(crate) streams: [VecDeque<StreamId>; 2],
    pub(crate) datagrams: VecDeque<Vec<u8>>,
    pub(crate) extensions: VecDeque<(u64, Vec<u8>)>,
    /// Unordered stream chunks, by stream (removed when the stream is stopped or empty).
    pub(crate) chunks: HashMap<StreamId, VecDeque<(u64, bytes::Bytes)>>,
}

/// Path events kept for [`Connection::path_event`](crate::api::Connection::path_event) until
/// read; beyond that the oldest are dropped: the newest say where the path stands.
pub(crate) const MAX_PATH_EVENTS: usize = 64;

/// How a send stream ended, for the handle that asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendOutcome {
    /// The peer acknowledged every byte and the FIN.
    Finished,
    /// The peer sent STOP_SENDING with this code.
    Stopped(u64),
}

/// A connection as its worker tracks it for the async API.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) shared: Arc<ConnShared>,
    pub(crate) connected: bool,
    pub(crate) server_side: bool,
    pub(crate) wakers: Wakers,
    /// The send streams a handle of this worker's may still ask about (`finished`,
    /// `stopped`): present from the handle's creation (or its pump's start) to its drop,
    /// with how the stream ended once it has. Outcomes of streams nobody holds are not
    /// kept, so a long-lived connection keeps nothing per past stream.
    pub(crate) send_outcomes: HashMap<StreamId, Option<SendOutcome>>,
    /// Messages whose outcome someone awaits: `Some(true)` delivered, `Some(false)`
    /// abandoned.
    pub(crate) messages: HashMap<StreamId, Option<bool>>,
    pub(crate) stash: Stash,
    /// Path events not yet read, oldest first.
    pub(crate) path_events: VecDeque<PathEvent>,
}

impl Slot {
    /// Keeps a path event for the application, dropping the oldest beyond the bound.
    fn push_path_event(&mut self, e: PathEvent) -> bool {
        if self.path_events.len() >= MAX_PATH_EVENTS {
            self.path_events.pop_front();
        }
        self.path_events.push_back(e);
        self.wakers.path_event.take().map(Waker::wake).is_some()
    }
}

/// The async API's part of a worker's state.
#[derive(Default)]
pub(crate) struct ApiState {
    slots: Vec<Option<Slot>>,
    /// Runs each new server connection as a task on this worker.
    pub(crate) serve: Option<ServeFn>,
    /// Stop accepting.
    pub(crate) shutting_down: bool,
    /// Tasks waiting for this worker's connections to drain.
    pub(crate) drained: Vec<Waker>,
    /// Tasks waiting for a STUN Binding transaction's outcome.
    pub(crate) bindings: HashMap<
        crate::nat::BindingId,
        tokio::sync::oneshot::Sender<Result<std::net::SocketAddr, crate::nat::BindingError>>,
    >,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("slots", &self.slots.len())
            .field("serving", &self.serve.is_some())
            .field("shutting_down", &self.shutting_down)
            .finish_non_exhaustive()
    }
}

static NEXT_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn dir_index(d: Dir) -> usize {
    match d {
        Dir::Bi => 0,
        Dir::Uni => 1,
    }
}

impl ApiState {
    /// Nothing tracked yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Starts tracking connection `h` for the async API.
    pub(crate) fn track(
        &mut self,
        worker: &Arc<Worker>,
        endpoint: &Endpoint,
        h: ConnectionHandle,
        server_side: bool,
    ) -> Arc<ConnShared> {
        let c = endpoint.connection(h);
        let shared = Arc::new(ConnShared {
            worker: worker.clone(),
            handle: h,
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            error: OnceLock::new(),
            local_cid: c.map(crate::conn::Connection::local_cid),
            max_datagram: AtomicUsize::new(0),
        });
        if self.slots.len() <= h.0 {
            self.slots.resize_with(h.0 + 1, || None);
        }
        self.slots[h.0] = Some(Slot {
            shared: shared.clone(),
            connected: false,
            server_side,
            wakers: Wakers::default(),
            send_outcomes: HashMap::new(),
            messages: HashMap::new(),
            stash: Stash::default(),
            path_events: VecDeque::new(),
        });
        shared
    }

    /// Runs `f` on connection `h` and its slot, if it is still the one `serial` names.
    pub(crate) fn with_conn<R>(
        &mut self,
        endpoint: &mut Endpoint,
        h: ConnectionHandle,
        serial: u64,
        f: impl FnOnce(&mut crate::conn::Connection, &mut Slot) -> R,
    ) -> Option<R> {
        let slot = self
            .slots
            .get_mut(h.0)
            .and_then(Option::as_mut)
            .filter(|s| s.shared.serial == serial)?;
        let c = endpoint.connection_mut(h)?;
        Some(f(c, slot))
    }

    /// The handles of every live connection.
    pub(crate) fn handles(&self) -> Vec<ConnectionHandle> {
        self.slots
            .iter()
            .flatten()
            .map(|s| s.shared.handle)
            .collect()
    }

    /// Whether a new client may start its handshake: a handler serves every connection;
    /// otherwise not while shutting down, and not beyond the accept queue's room (or,
    /// when connections are served on the worker, beyond the handshakes allowed).
    pub(crate) fn admits(&self, worker: &Worker, endpoint: &Endpoint, handler: bool) -> bool {
        if handler {
            return true;
        }
        if self.shutting_down {
            return false;
        }
        let waiting = if self.serve.is_some() {
            0
        } else {
            worker.api.queued()
        };
        waiting + endpoint.handshaking() < worker.api.max
    }

    /// Updates the tasks waiting on connection `h` for event `e`; a new server connection
    /// is served here (a task on this worker) or queued for `accept`. Returns whether a
    /// task was woken.
    pub(crate) fn on_event(
        &mut self,
        worker: &Arc<Worker>,
        endpoint: &mut Endpoint,
        h: ConnectionHandle,
        e: &Event,
        handled: bool,
    ) -> bool {
        let Some(slot) = self.slots.get_mut(h.0).and_then(Option::as_mut) else {
            return false;
        };
        let w = &mut slot.wakers;
        let wake = |k: Option<Waker>| k.map(Waker::wake).is_some();
        match e {
            Event::Connected => {
                slot.connected = true;
                let max = endpoint
                    .connection(h)
                    .and_then(crate::conn::Connection::max_datagram_size);
                slot.shared
                    .max_datagram
                    .store(max.map_or(0, |m| m + 1), Ordering::Relaxed);
                let mut woke = wake(w.connect.take()) | w.early.wake();
                if slot.server_side && !handled {
                    let conn = slot.shared.clone();
                    if let Some(serve) = &self.serve {
                        spawn_served(serve.clone(), conn);
                        woke = true;
                    } else if !worker.api.push(conn)
                        && let Some(c) = endpoint.connection_mut(h)
                    {
                        c.close(Instant::now(), 0x2, b"accept queue full");
                    }
                }
                woke
            }
            Event::Lost(err) => {
                let _ = slot.shared.error.set(err.clone());
                w.wake_all();
                true
            }
            Event::StreamOpened(dir) => w.accept[dir_index(*dir)].wake(),
            Event::StreamReadable(id) => wake(w.read.remove(id)),
            Event::StreamWritable(id) => wake(w.write.remove(id)) | wake(w.finish.remove(id)),
            Event::StreamStopped { id, code } => {
                if let Some(o) = slot.send_outcomes.get_mut(id) {
                    o.get_or_insert(SendOutcome::Stopped(*code));
                }
                wake(w.write.remove(id)) | wake(w.finish.remove(id))
            }
            Event::StreamFinished(id) => {
                if let Some(o) = slot.send_outcomes.get_mut(id) {
                    o.get_or_insert(SendOutcome::Finished);
                }
                wake(w.finish.remove(id))
            }
            Event::StreamsAvailable(dir) => w.open[dir_index(*dir)].wake(),
            Event::DatagramReceived => w.datagram.wake(),
            Event::EarlyData { .. } => w.early.wake(),
            Event::ExtensionFrameReceived => w.extension.wake(),
            Event::DatagramsUnblocked => wake(w.datagram_room.take()),
            Event::DatagramSizeChanged(size) => {
                slot.shared.max_datagram.store(size + 1, Ordering::Relaxed);
                slot.push_path_event(PathEvent::DatagramSizeChanged(*size))
            }
            Event::PathMigrated(to) => slot.push_path_event(PathEvent::Migrated(*to)),
            Event::KeyUpdated => slot.push_path_event(PathEvent::KeysUpdated),
            Event::MessageDelivered(id) | Event::MessageAbandoned(id) => {
                let delivered = matches!(e, Event::MessageDelivered(_));
                match slot.messages.get_mut(id) {
                    Some(o) => {
                        *o = Some(delivered);
                        wake(w.message.remove(id))
                    }
                    None => false,
                }
            }
            _ => false,
        }
    }

    /// Connection `h` was removed: its tasks learn it is gone.
    pub(crate) fn on_removed(&mut self, h: ConnectionHandle) -> bool {
        match self.slots.get_mut(h.0).and_then(Option::take) {
            Some(mut slot) => {
                let _ = slot.shared.error.set(ConnectionError::LocallyClosed);
                slot.wakers.wake_all();
                true
            }
            None => false,
        }
    }

    /// No connection is left: tasks waiting for the drain are woken.
    pub(crate) fn on_drained(&mut self) -> bool {
        let woke = !self.drained.is_empty();
        for w in self.drained.drain(..) {
            w.wake();
        }
        woke
    }

    /// The worker's loop ended with an I/O error: every connection of this worker is gone.
    pub(crate) fn fail_all(&mut self, worker: &Worker) {
        for slot in self.slots.iter_mut().flatten() {
            let _ = slot.shared.error.set(ConnectionError::LocallyClosed);
            slot.wakers.wake_all();
        }
        worker.api.close();
        for w in self.drained.drain(..) {
            w.wake();
        }
    }

    /// Moves the connections waiting in the accept queue to `serve`, as tasks here.
    pub(crate) fn serve_queued(&mut self, worker: &Worker) {
        if let Some(serve) = &self.serve {
            while let Some(c) = worker.api.pop() {
                spawn_served(serve.clone(), c);
            }
        }
    }
}

/// Starts `serve(conn)` as a task on this worker. The function is called inside the task,
/// so anything it does at once runs outside the loop's borrow of the state.
fn spawn_served(serve: ServeFn, conn: Arc<ConnShared>) {
    tokio::task::spawn_local(async move { serve(conn).await });
}

/// The accept queue: the part of the async API other threads reach.
#[derive(Debug)]
pub(crate) struct SharedApi {
    queue: Mutex<AcceptQueue>,
    /// Connections queued (read by the worker without the lock, to admit new clients).
    queued: AtomicUsize,
    /// Connections in the queue plus handshakes in progress, at most.
    pub(crate) max: usize,
    /// New clients go to [`crate::Endpoint::incoming`] (set before the worker starts).
    application_admission: AtomicBool,
}

#[derive(Debug, Default)]
struct AcceptQueue {
    conns: VecDeque<Arc<ConnShared>>,
    waker: Option<Waker>,
    /// New clients waiting for the application's decision (application admission).
    incoming: VecDeque<crate::conn::Incoming>,
    incoming_waker: Option<Waker>,
    closed: bool,
}

impl SharedApi {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            queue: Mutex::new(AcceptQueue::default()),
            queued: AtomicUsize::new(0),
            max,
            application_admission: AtomicBool::new(false),
        }
    }

    /// New clients go to the application (see [`crate::engine::Admission`]).
    pub(crate) fn set_application_admission(&self, on: bool) {
        self.application_admission.store(on, Ordering::Relaxed);
    }

    /// Whether new clients go to the application.
    pub(crate) fn application_admission(&self) -> bool {
        self.application_admission.load(Ordering::Relaxed)
    }

    /// Queues a new client for the application; gives it back if the queue is closed or
    /// holds `max` already.
    pub(crate) fn push_incoming(&self, i: crate::conn::Incoming) -> Option<crate::conn::Incoming> {
        let mut q = self.lock();
        if q.closed || q.incoming.len() >= self.max {
            return Some(i);
        }
        q.incoming.push_back(i);
        let w = q.incoming_waker.take();
        drop(q);
        if let Some(w) = w {
            w.wake();
        }
        None
    }

    /// The next new client waiting; else, unless closed, registers `waker`. `Err(())`
    /// once closed and empty.
    pub(crate) fn poll_pop_incoming(
        &self,
        waker: &Waker,
    ) -> Result<Option<crate::conn::Incoming>, ()> {
        let mut q = self.lock();
        if let Some(i) = q.incoming.pop_front() {
            return Ok(Some(i));
        }
        if q.closed {
            return Err(());
        }
        q.incoming_waker = Some(waker.clone());
        Ok(None)
    }

    fn lock(&self) -> MutexGuard<'_, AcceptQueue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Connections waiting to be accepted.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Queues a connection for `accept`; false if the queue is full.
    fn push(&self, c: Arc<ConnShared>) -> bool {
        let mut q = self.lock();
        if q.conns.len() >= self.max {
            return false;
        }
        q.conns.push_back(c);
        self.queued.store(q.conns.len(), Ordering::Relaxed);
        let w = q.waker.take();
        drop(q);
        if let Some(w) = w {
            w.wake();
        }
        true
    }

    /// The next connection waiting.
    pub(crate) fn pop(&self) -> Option<Arc<ConnShared>> {
        let mut q = self.lock();
        let c = q.conns.pop_front();
        self.queued.store(q.conns.len(), Ordering::Relaxed);
        c
    }

    /// The next connection waiting; else, unless the queue is closed, registers `waker`.
    /// `Err(())` once closed and empty.
    pub(crate) fn poll_pop(&self, waker: &Waker) -> Result<Option<Arc<ConnShared>>, ()> {
        let mut q = self.lock();
        if let Some(c) = q.conns.pop_front() {
            self.queued.store(q.conns.len(), Ordering::Relaxed);
            return Ok(Some(c));
        }
        if q.closed {
            return Err(());
        }
        q.waker = Some(waker.clone());
        Ok(None)
    }

    /// No more connections will come: a waiting `accept` resolves to `None`.
    pub(crate) fn close(&self) {
        let (w, iw) = {
            let mut q = self.lock();
            q.closed = true;
            (q.waker.take(), q.incoming_waker.take())
        };
        for w in [w, iw].into_iter().flatten() {
            w.wake();
        }
    }
}
