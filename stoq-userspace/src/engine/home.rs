//! Where a worker's state lives, and how code on other threads reaches it.
//!
//! A worker's [`State`] (its protocol endpoint, the async API's bookkeeping, the optional
//! [`Handler`](super::Handler)) is only ever touched by one thread at a time, in one of two
//! ways:
//!
//! - **Pinned** (the engine's own worker threads). The state lives on the worker's thread,
//!   in a thread-local [`Home`], and is borrowed there without a lock: by the loop, and by
//!   every application task that runs on the worker (served connections). Any other thread
//!   posts a [`Job`] to the worker's mailbox; the loop runs it on its next turn. Nothing is
//!   shared between workers but their mailboxes and handoff queues.
//! - **Locked** (a client engine running as a task on the caller's tokio runtime, which
//!   may move it between threads). The state is behind a mutex that every caller takes,
//!   as quinn's connections are.
//!
//! [`Worker`] is what handles and other threads hold of a worker: its id, its mailbox, the
//! notification that wakes its loop, and its counters.

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use crossbeam_channel::{Receiver, Sender};

use super::Handler;
use super::WorkerStats;
use super::worker::Handoff;
use crate::conn::Endpoint;
use crate::io::Backend;

/// Work another thread hands to a worker: run on the worker's thread, inside its runtime
/// and its set of local tasks, with the state reachable through [`Worker::with`].
pub(crate) type Job = Box<dyn FnOnce(&Arc<Worker>) + Send>;

/// A worker's state: touched by one thread at a time (see the module doc).
pub(crate) struct State {
    /// The protocol endpoint: this worker's connections.
    pub(crate) endpoint: Endpoint,
    /// The async API's bookkeeping: tasks waiting on connections, served connections.
    pub(crate) api: super::app::ApiState,
    /// Application logic run on the worker for every event.
    pub(crate) handler: Option<Box<dyn Handler>>,
    /// Counters.
    pub(crate) stats: WorkerStats,
    /// The loop should exit.
    pub(crate) stop: bool,
    /// A new backend to switch to (a client's rebinding), taken by the loop.
    pub(crate) rebind: Option<Box<dyn Backend>>,
    /// The TURN relay worker 0 allocates on: its datagrams (ChannelData, whose first byte
    /// looks like a short header's) are steered to worker 0 by their source.
    pub(crate) relay_server: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("endpoint", &self.endpoint)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// A pinned worker's home on its thread: the state, borrowed without a lock, and what
/// local code uses to wake the loop.
pub(crate) struct Home {
    uid: u64,
    state: RefCell<State>,
    /// Local code made work for the loop (data to send, a window to open).
    dirty: Cell<bool>,
    /// The loop's waker while it waits.
    driver: Cell<Option<Waker>>,
}

thread_local! {
    /// The pinned worker whose thread this is, if any.
    static HOME: OnceCell<Rc<Home>> = const { OnceCell::new() };
}

/// Counters of the paths that cross threads (see [`WorkerStats`]).
#[derive(Debug, Default)]
pub(crate) struct Crossings {
    /// Calls and stream data that crossed between the worker and other threads.
    pub(crate) count: AtomicU64,
    /// State lock acquisitions (a locked worker only).
    pub(crate) locks: AtomicU64,
}

#[derive(Debug)]
enum Access {
    /// On one thread, through its [`Home`]; others post jobs.
    Pinned,
    /// Behind a lock that every caller takes.
    Locked(Box<Mutex<State>>),
}

/// What handles and other threads hold of a worker.
#[derive(Debug)]
pub(crate) struct Worker {
    /// The worker's id (also inside its CIDs).
    pub(crate) id: u8,
    /// Process-unique: tells this worker's [`Home`] from another engine's.
    uid: u64,
    access: Access,
    jobs: Sender<Job>,
    /// Wakes the loop from any thread (a job posted, a datagram handed over, a locked
    /// worker's application call): a flag and an atomic waker, no lock.
    wake: Wake,
    /// A locked worker's application made work.
    dirty: AtomicBool,
    /// Datagrams other workers received for this one's connections.
    pub(crate) handoff: Sender<Handoff>,
    /// Buffers of handoffs this worker has processed, for the next ones handed to it: a
    /// handoff reuses one instead of allocating (a lock-free bounded queue).
    pub(crate) spare: (Sender<Vec<u8>>, Receiver<Vec<u8>>),
    /// The cross-thread half of the async API: the accept queue.
    pub(crate) api: super::app::SharedApi,
    /// Counters of the cross-thread paths.
    pub(crate) crossings: Crossings,
    /// The loop ended (stopped, or its backend failed).
    stopped: AtomicBool,
    /// Live connections, as of the loop's last turn: where new connections go.
    load: AtomicUsize,
    /// Retries the endpoint has sent, as of the loop's last turn: what the flood watch
    /// reads without waking the loop.
    retries: AtomicU64,
}

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// A wake-up from any thread: a flag, and the loop's waker in an atomic slot.
#[derive(Debug, Default)]
struct Wake {
    flag: AtomicBool,
    waker: atomic_waker::AtomicWaker,
}

impl Wake {
    fn notify(&self) {
        self.flag.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Takes a wake-up that came; else registers `cx`'s waker for the next one.
    fn poll(&self, cx: &mut std::task::Context<'_>) -> bool {
        if self.flag.swap(false, Ordering::AcqRel) {
            return true;
        }
        self.waker.register(cx.waker());
        // A wake-up between the swap and the registration would be lost without this.
        self.flag.swap(false, Ordering::AcqRel)
    }
}

/// The receiving ends a worker's loop takes.
#[derive(Debug)]
pub(crate) struct Inbox {
    pub(crate) jobs: Receiver<Job>,
    pub(crate) handoffs: Receiver<Handoff>,
}

/// How many datagrams may wait for their owner worker.
const HANDOFF_QUEUE: usize = 4096;
/// Handoff buffers a worker keeps for reuse (beyond them, buffers are freed).
pub(crate) const SPARE_BUFFERS: usize = 512;

impl Worker {
    /// A pinned worker (its state goes to its thread with [`Worker::make_home`]).
    pub(crate) fn pinned(id: u8, max_accept: usize) -> (Arc<Self>, Inbox) {
        Self::build(id, Access::Pinned, max_accept)
    }

    /// A locked worker holding `state`.
    pub(crate) fn locked(id: u8, state: State, max_accept: usize) -> (Arc<Self>, Inbox) {
        Self::build(id, Access::Locked(Box::new(Mutex::new(state))), max_accept)
    }

    fn build(id: u8, access: Access, max_accept: usize) -> (Arc<Self>, Inbox) {
        let (jobs, jobs_rx) = crossbeam_channel::unbounded();
        let (handoff, handoffs) = crossbeam_channel::bounded(HANDOFF_QUEUE);
        let w = Arc::new(Self {
            id,
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            access,
            jobs,
            wake: Wake::default(),
            dirty: AtomicBool::new(false),
            handoff,
            spare: crossbeam_channel::bounded(SPARE_BUFFERS),
            api: super::app::SharedApi::new(max_accept),
            crossings: Crossings::default(),
            stopped: AtomicBool::new(false),
            load: AtomicUsize::new(0),
            retries: AtomicU64::new(0),
        });
        (
            w,
            Inbox {
                jobs: jobs_rx,
                handoffs,
            },
        )
    }

    /// Makes this thread the home of pinned worker `self` with `state`. Called once, first
    /// thing on the worker's thread.
    pub(crate) fn make_home(&self, state: State) {
        let home = Rc::new(Home {
            uid: self.uid,
            state: RefCell::new(state),
            dirty: Cell::new(false),
            driver: Cell::new(None),
        });
        HOME.with(|h| {
            assert!(h.set(home).is_ok(), "a thread is home to one worker");
        });
    }

    /// This worker's home, if this is its thread.
    fn home(&self) -> Option<Rc<Home>> {
        HOME.with(|h| h.get().filter(|h| h.uid == self.uid).cloned())
    }

    /// Whether the state is behind a lock (a worker on the caller's runtime).
    pub(crate) fn is_locked(&self) -> bool {
        matches!(self.access, Access::Locked(_))
    }

    /// Whether code on this thread reaches the state directly: the worker's own thread
    /// (pinned), or any thread (locked).
    pub(crate) fn is_here(&self) -> bool {
        match self.access {
            Access::Locked(_) => true,
            Access::Pinned => self.home().is_some(),
        }
    }

    /// Runs `f` on the state if this thread may touch it: without a lock on a pinned
    /// worker's own thread, under the lock on a locked worker. `None` on any other thread:
    /// post a [`Job`] instead.
    ///
    /// # Panics
    /// If called again from inside `f` (a [`Handler`](super::Handler) must not use the
    /// async handles of its own worker's connections: it has the endpoint in hand).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> Option<R> {
        match &self.access {
            Access::Locked(m) => {
                self.crossings.locks.fetch_add(1, Ordering::Relaxed);
                Some(f(&mut lock(m)))
            }
            Access::Pinned => {
                let home = self.home()?;
                let mut st = home
                    .state
                    .try_borrow_mut()
                    .expect("a worker's state is in use: a Handler called an async handle");
                Some(f(&mut st))
            }
        }
    }

    /// Tells the loop that code on this thread made work for it (data to send, a window
    /// to open). On the worker's own thread this wakes the loop's task directly, with no
    /// lock and no system call.
    pub(crate) fn kick(&self) {
        match &self.access {
            Access::Locked(_) => {
                self.dirty.store(true, Ordering::Release);
                self.wake.notify();
            }
            Access::Pinned => match self.home() {
                Some(home) => {
                    home.dirty.set(true);
                    if let Some(w) = home.driver.take() {
                        w.wake();
                    }
                }
                None => self.wake.notify(),
            },
        }
    }

    /// Wakes the loop from another thread (a handoff queued).
    pub(crate) fn notify(&self) {
        self.wake.notify();
    }

    /// Hands `job` to the worker's loop. Returns false if the worker has stopped (the job
    /// is dropped).
    pub(crate) fn post(&self, job: Job) -> bool {
        if self.stopped.load(Ordering::Acquire) || self.jobs.send(job).is_err() {
            return false;
        }
        self.wake.notify();
        true
    }

    /// Runs `f` on the state, here if this thread may, else on the worker's thread while
    /// this one waits. `None` if the worker has stopped.
    ///
    /// A worker thread that waits on another worker keeps running its own jobs meanwhile,
    /// so two workers calling each other cannot deadlock.
    pub(crate) fn call<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut State) -> R + Send + 'static,
    ) -> Option<R> {
        let mut f = Some(f);
        if self.is_here() {
            return self.with(|st| f.take().map(|f| f(st))).flatten();
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let f = f.take()?;
        if !self.post(Box::new(move |w: &Arc<Self>| {
            if let Some(r) = w.with(f) {
                let _ = tx.send(r);
            }
        })) {
            return None;
        }
        loop {
            match rx.recv_timeout(std::time::Duration::from_millis(1)) {
                Ok(r) => return Some(r),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return None,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => run_own_jobs(),
            }
        }
    }

    /// Live connections as of the loop's last turn.
    pub(crate) fn load(&self) -> usize {
        self.load.load(Ordering::Relaxed)
    }

    /// The loop publishes its connection count.
    pub(crate) fn set_load(&self, n: usize) {
        self.load.store(n, Ordering::Relaxed);
    }

    /// Retries sent as of the loop's last turn.
    #[cfg_attr(
        not(target_os = "linux"),
        expect(dead_code, reason = "its one reader, the flood watch, is Linux-only")
    )]
    pub(crate) fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// The loop publishes its endpoint's Retry count.
    pub(crate) fn set_retries(&self, n: u64) {
        self.retries.store(n, Ordering::Relaxed);
    }

    /// Marks the loop ended: later jobs are refused.
    pub(crate) fn set_stopped(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// The loop's view: takes the "made work" flag.
    pub(crate) fn take_dirty(&self) -> bool {
        match &self.access {
            Access::Locked(_) => self.dirty.swap(false, Ordering::AcqRel),
            Access::Pinned => self.home().is_some_and(|h| h.dirty.replace(false)),
        }
    }

    /// The loop's view: whether work is waiting without taking it.
    pub(crate) fn is_dirty(&self) -> bool {
        match &self.access {
            Access::Locked(_) => self.dirty.load(Ordering::Acquire),
            Access::Pinned => self.home().is_some_and(|h| h.dirty.get()),
        }
    }

    /// The loop's view: where local code wakes it while it waits (a pinned worker only;
    /// others wake it through [`Worker::notified`]).
    pub(crate) fn park_waker(&self, w: &Waker) {
        if let Some(h) = self.home() {
            let same = h.driver.take().filter(|old| old.will_wake(w));
            h.driver.set(Some(same.unwrap_or_else(|| w.clone())));
        }
    }

    /// The loop's view: whether another thread (or a locked worker's caller) woke it;
    /// registers the loop's waker otherwise.
    pub(crate) fn poll_notified(&self, cx: &mut std::task::Context<'_>) -> bool {
        self.wake.poll(cx)
    }
}

/// Runs the jobs waiting for the worker whose thread this is, if any, and if its state is
/// not in use (so a worker blocked in [`Worker::call`] on another keeps serving its own).
fn run_own_jobs() {
    let Some(home) = HOME.with(|h| h.get().cloned()) else {
        return;
    };
    if home.state.try_borrow_mut().is_err() {
        return;
    }
    OWN_JOBS.with(|j| {
        if let Some((worker, jobs)) = j.get() {
            debug_assert_eq!(worker.uid, home.uid);
            while let Ok(job) = jobs.try_recv() {
                job(worker);
            }
        }
    });
}

thread_local! {
    /// A pinned worker's own mailbox, for [`run_own_jobs`].
    static OWN_JOBS: OnceCell<(Arc<Worker>, Receiver<Job>)> = const { OnceCell::new() };
}

/// Registers the mailbox of the pinned worker whose thread this is (see [`run_own_jobs`]).
pub(crate) fn register_own_jobs(worker: &Arc<Worker>, jobs: &Receiver<Job>) {
    OWN_JOBS.with(|j| {
        let _ = j.set((worker.clone(), jobs.clone()));
    });
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state machine never panics; a panicking application task must not take the
    // worker down with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
