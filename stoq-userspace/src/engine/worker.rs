//! A worker's loop: the one place where the worker's datagrams are received, handed to
//! its endpoint, and sent. It is an async task: on the worker's own thread, beside the
//! application tasks served there (pinned), or on the caller's runtime (locked).
//!
//! One turn:
//! 1. run the jobs other threads posted (calls through handles used off the worker);
//! 2. receive a batch from the backend (or take up the rest of the last one);
//! 3. on the state (borrowed, or locked on a locked worker): hand each datagram to the
//!    endpoint (or over to the worker that owns it) until handshake packets have taken
//!    [`HANDSHAKE_TURN_BUDGET`] (the rest waits for the next turn, so that answers leave
//!    while the batch is processed; handshakes waiting for a batch signature wait for the
//!    batch's end), fire due timers, pass events to the
//!    [`Handler`](super::Handler) and to the tasks waiting on them. If that woke tasks,
//!    the loop yields to them first, so what they write (a served request's answer)
//!    leaves in this turn's batch;
//! 4. fill a send batch from `poll_transmit_into`, written in place, and send it, as GSO
//!    groups where the backend can;
//! 5. wait for the socket, a timer (or the pacer), a local task that made work, or
//!    another thread; a worker busy lately polls its backend a little first.

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;

use super::home::{Inbox, State, Worker};
use super::steer::{Placer, Route, route};
use crate::conn::{DatagramEvent, DatagramInfo};
use crate::io::{Backend, RxBatch, TxBatch};
use crate::wire::cid::CidLayout;

/// A datagram on its way to the worker that owns its connection.
#[derive(Debug)]
pub(crate) struct Handoff {
    pub(crate) from: SocketAddr,
    pub(crate) info: DatagramInfo,
    pub(crate) data: Vec<u8>,
}

/// What a worker's loop needs besides its backend and inbox.
#[derive(Debug)]
pub(crate) struct LoopConfig {
    /// Every worker of the engine, by id (handoffs go to the owner).
    pub(crate) peers: Vec<Arc<Worker>>,
    pub(crate) layout: CidLayout,
    pub(crate) batch: usize,
    /// See [`EngineConfig::idle_poll`](super::EngineConfig::idle_poll).
    pub(crate) idle_poll: Duration,
    /// The loop yields by waking itself (see [`yield_now`]).
    pub(crate) queue_yield: bool,
}

/// How long a worker out of transmit frames waits for completions before trying again.
const STARVED_WAIT: Duration = Duration::from_millis(1);
/// How long a turn processes received handshake packets before it sends what it has
/// answered: a receive batch of ClientHellos costs a key exchange each, and a turn that
/// processed a whole batch before sending would hold the first answer back behind the
/// last key exchange (clients and server then alternate instead of overlapping).
const HANDSHAKE_TURN_BUDGET: Duration = Duration::from_micros(250);

/// Runs the worker's loop until it is told to stop or its backend fails; then every
/// connection still open is failed and every waiting task woken.
pub(crate) async fn run(
    worker: Arc<Worker>,
    backend: Box<dyn Backend>,
    inbox: Inbox,
    cfg: LoopConfig,
) {
    let r = drive(&worker, backend, &inbox, &cfg).await;
    worker.set_stopped();
    if let Err(e) = r {
        tracing::error!(worker = worker.id, "worker stopped: {e}");
        worker.with(|st| {
            st.stop = true;
            st.api.fail_all(&worker);
        });
    }
    // Jobs that arrived after the last turn are dropped: their callers see the worker gone.
    while inbox.jobs.try_recv().is_ok() {}
}

/// What a turn's send decided.
struct Turn {
    timeout: Option<Instant>,
    stop: bool,
    rebind: Option<Box<dyn Backend>>,
    /// Tasks were woken by events of what the tasks did: yield before waiting.
    woke: bool,
    /// Datagrams handed to the backend.
    queued: usize,
    /// The send batch (or AF_XDP's frames) filled before the endpoint had nothing more to
    /// send.
    starved: bool,
}

/// Passes the events of what tasks did to their waiters, fills a send batch (or AF_XDP's
/// frames) from the endpoint, and sends it.
fn fill_and_send(
    worker: &Arc<Worker>,
    backend: &mut dyn Backend,
    tx: &mut TxBatch,
    direct: bool,
) -> io::Result<Turn> {
    let turn: io::Result<Turn> = worker
        .with(|st| {
            let now = Instant::now();
            let woke = st.dispatch(worker);
            let mut queued = 0;
            let starved;
            if direct {
                // Datagrams are written straight into the backend's frames.
                let ep = &mut st.endpoint;
                let mut drained = false;
                let r = backend.send_direct(&mut |buf| {
                    let t = ep.poll_transmit_into(now, buf);
                    drained |= t.is_none();
                    t
                });
                if let Some(r) = r {
                    queued = r?;
                }
                starved = !drained;
            } else if tx.is_empty() {
                let ep = &mut st.endpoint;
                let mut drained = false;
                while tx.has_room() {
                    if !tx.push_with(|buf| ep.poll_transmit_into(now, buf)) {
                        drained = true;
                        break;
                    }
                }
                starved = !drained;
            } else {
                // The last batch is still going out: more may be waiting behind it.
                starved = true;
            }
            st.stats.backend = backend.stats();
            worker.set_load(st.endpoint.connection_count());
            worker.set_retries(st.endpoint.retries_sent());
            Ok(Turn {
                timeout: st.endpoint.poll_timeout(),
                stop: st.stop,
                rebind: st.rebind.take(),
                woke,
                queued,
                starved,
            })
        })
        .ok_or_else(|| io::Error::other("a worker's loop runs where its state is"))?;
    let mut turn = turn?;
    if direct {
        backend.flush()?;
    } else {
        turn.queued = tx.datagrams();
        if !tx.is_empty() {
            backend.send(tx)?;
        }
    }
    Ok(turn)
}

#[allow(clippy::too_many_lines)]
async fn drive(
    worker: &Arc<Worker>,
    mut backend: Box<dyn Backend>,
    inbox: &Inbox,
    cfg: &LoopConfig,
) -> io::Result<()> {
    let caps = backend.capabilities();
    let max_dgram = worker
        .with(|st| st.endpoint.max_datagram_size())
        .ok_or_else(|| io::Error::other("a worker's loop runs where its state is"))?;
    let slot_size = if caps.gro { 65_536 } else { max_dgram };
    let batch = cfg.batch.max(1);
    let mut rx = RxBatch::new(batch.min(crate::io::udp::BATCH), slot_size);
    let mut tx = TxBatch::new(batch * 4, max_dgram);
    tx.set_max_segments(caps.gso_segments);
    let mut ready = Readiness::new(&*backend)?;
    let mut timer = Timer::new();
    let n = cfg.peers.len();
    let direct = backend.has_direct_tx();
    let slots = rx.slots();
    let mut may_recv = true;
    // Datagrams the idle poll received, for the next turn.
    let mut carried = 0;
    // The receive batch has datagrams this turn left for the next (its time budget ran
    // out on handshake work).
    let mut rx_left = false;
    // When this worker last received or sent.
    let mut last_io: Option<Instant> = None;
    let mut placer = Placer::default();
    // The worker's crossings count at the last wait (see the idle poll below).
    let mut seen_crossings = 0;
    loop {
        while let Ok(job) = inbox.jobs.try_recv() {
            job(worker);
        }
        // Receive when something may be waiting: readiness was reported, or the last batch
        // came full, or this worker is sending (acknowledgments come back). A turn that
        // only answers a task's write skips the empty receive (a system call on sockets).
        let got = if rx_left {
            rx.filled()
        } else if carried > 0 {
            std::mem::take(&mut carried)
        } else if may_recv {
            backend.recv(&mut rx)?
        } else {
            0
        };
        worker.take_dirty();
        // Receive, timers and events. Tasks woken by an event run before this turn sends
        // (a served request's answer leaves with the ACK, in this turn).
        let woke = worker
            .with(|st| {
                if st.stop {
                    return None;
                }
                st.stats.loops += 1;
                let now = Instant::now();
                if got > 0 {
                    let budget_end = now + HANDSHAKE_TURN_BUDGET;
                    let done = rx.for_each_until(|from, info, d| {
                        // Only long-header packets (handshakes) can cost enough to matter;
                        // the clock is read after them only.
                        let long = d.first().is_some_and(|b| b & 0x80 != 0);
                        if n > 1 {
                            let from_relay = st
                                .relay_server
                                .is_some_and(|r| crate::nat::binding::same_address(r, from));
                            let o = match route(d, &cfg.layout, |cid| {
                                st.endpoint.cid_worker(cid).unwrap_or(worker.id)
                            }) {
                                _ if from_relay => 0,
                                Route::Owner(o) => o,
                                // A new connection where the relay allocation is, if any:
                                // then any connection can fall back to the relay.
                                Route::New(dcid) => placer.place(
                                    from,
                                    dcid,
                                    worker.id,
                                    &cfg.peers,
                                    st.relay_server.map(|_| 0),
                                ),
                                Route::Anyone => worker.id,
                            };
                            if o != worker.id && usize::from(o) < n {
                                hand_over(st, &cfg.peers[usize::from(o)], from, info, d);
                                return true;
                            }
                        }
                        st.on_datagram(worker, now, from, info, d);
                        !long || Instant::now() < budget_end
                    });
                    // What was answered so far goes out before the rest is processed;
                    // handshakes waiting for a signature wait for the batch's end, to
                    // share it (`Endpoint::hold_signatures`).
                    rx_left = !done;
                    st.endpoint.hold_signatures(rx_left);
                }
                while let Ok(mut h) = inbox.handoffs.try_recv() {
                    st.stats.handoffs_in += 1;
                    st.on_datagram(worker, now, h.from, h.info, &mut h.data);
                    recycle(worker, h.data);
                }
                if st.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                    st.endpoint.handle_timeout(now);
                }
                Some(st.dispatch(worker))
            })
            .flatten();
        let Some(woke) = woke else {
            return Ok(());
        };
        // Send what is ready now (handshake flights, ACKs, data), then let the tasks the
        // events woke run and send what they wrote (a served request's answer) in this
        // same turn.
        let mut turn = fill_and_send(worker, &mut *backend, &mut tx, direct)?;
        if woke {
            yield_now(cfg.queue_yield).await;
            if worker.take_dirty() {
                let first = turn;
                turn = fill_and_send(worker, &mut *backend, &mut tx, direct)?;
                turn.queued += first.queued;
                turn.rebind = turn.rebind.or(first.rebind);
            }
        }
        if turn.stop {
            return Ok(());
        }
        if let Some(new) = turn.rebind.take() {
            // Pending sends go out of the new socket: the peer sees the address change.
            drop(ready);
            backend = new;
            ready = Readiness::new(&*backend)?;
            // Every connection announces the new address with a PING, sent on the next
            // round (which must not sleep first).
            worker.with(|st| st.endpoint.handle_local_address_change());
            worker.kick();
        }
        let queued = turn.queued;
        let blocked = !tx.is_empty();
        if got > 0 || queued > 0 {
            last_io = Some(Instant::now());
        }
        let more_in = rx_left || got >= slots || backend.rx_pending();
        let more_out = turn.starved && !blocked && (queued > 0 || !direct);
        may_recv = more_in || more_out || queued > 0;
        if more_in || more_out || turn.woke {
            // More may be waiting either way; woken tasks may answer at once. Let the
            // tasks on this thread run, then go round without sleeping.
            yield_now(cfg.queue_yield).await;
            continue;
        }
        if worker.is_dirty() || !inbox.handoffs.is_empty() || !inbox.jobs.is_empty() {
            continue;
        }
        // Busy lately (a datagram in or out within the poll budget): look for the next one
        // before sleeping, until the budget since the last one runs out. Not while threads
        // other than this one take part in its connections (handles used off the worker):
        // one of them may share this core and need it now to answer.
        let crossings = worker.crossings.count.load(Ordering::Relaxed);
        let crossed = std::mem::replace(&mut seen_crossings, crossings) != crossings;
        if let Some(t) = last_io.filter(|_| !cfg.idle_poll.is_zero() && !crossed)
            && t.elapsed() < cfg.idle_poll
        {
            carried = idle_poll(
                worker,
                &mut *backend,
                &mut rx,
                inbox,
                turn.timeout,
                t + cfg.idle_poll,
            )?;
            if carried > 0 {
                worker.with(|st| st.stats.idle_polls_hit += 1);
            }
            if carried > 0
                || worker.is_dirty()
                || !inbox.jobs.is_empty()
                || !inbox.handoffs.is_empty()
            {
                continue;
            }
        }
        let mut wait = turn.timeout;
        if turn.starved && direct {
            // Out of frames with data to send: completions free them without an event.
            let t = Instant::now() + STARVED_WAIT;
            wait = Some(wait.map_or(t, |w| w.min(t)));
        }
        timer.arm(wait);
        let mut slept = false;
        poll_fn(|cx| {
            if worker.is_dirty() {
                return Poll::Ready(());
            }
            worker.park_waker(cx.waker());
            if worker.poll_notified(cx) {
                return Poll::Ready(());
            }
            if ready.poll(cx, blocked || (turn.starved && direct)) {
                may_recv = true;
                return Poll::Ready(());
            }
            if timer.poll(cx) {
                return Poll::Ready(());
            }
            // A local task may have made work between the check above and registering.
            if worker.is_dirty() {
                return Poll::Ready(());
            }
            slept = true;
            Poll::Pending
        })
        .await;
        if slept {
            worker.with(|st| st.stats.waits += 1);
        }
    }
}

impl State {
    /// One received datagram: to the endpoint; a new client is admitted if the API has
    /// room for it (or a handler serves every connection), else refused; under
    /// application admission it is queued for `Endpoint::incoming` instead.
    fn on_datagram(
        &mut self,
        worker: &Arc<Worker>,
        now: Instant,
        from: SocketAddr,
        info: DatagramInfo,
        d: &mut [u8],
    ) {
        if let Some(DatagramEvent::Incoming(inc)) =
            self.endpoint.handle_datagram(now, from, info, d)
        {
            if self.handler.is_none() && worker.api.application_admission() {
                // The application decides (Endpoint::incoming); a full or closed queue
                // refuses, as the automatic path does.
                if let Some(inc) = worker.api.push_incoming(inc) {
                    self.endpoint.refuse(inc, now);
                }
                return;
            }
            if !self
                .api
                .admits(worker, &self.endpoint, self.handler.is_some())
            {
                self.endpoint.refuse(inc, now);
                return;
            }
            if let Ok(h) = self.endpoint.accept(inc, now) {
                self.api.track(worker, &self.endpoint, h, true);
            }
        }
    }

    /// Hands the endpoint's events to the handler, then to the tasks waiting on them;
    /// forgets removed connections. Returns whether any task was woken.
    fn dispatch(&mut self, worker: &Arc<Worker>) -> bool {
        let mut woke = false;
        let served = self.handler.is_some();
        while let Some((h, e)) = self.endpoint.poll_event() {
            super::log::connection_event(&self.endpoint, h, &e);
            if let Some(handler) = self.handler.as_mut() {
                handler.on_event(&mut self.endpoint, h, &e);
            }
            woke |= self.api.on_event(worker, &mut self.endpoint, h, &e, served);
        }
        while let Some(h) = self.endpoint.poll_removed() {
            woke |= self.api.on_removed(h);
        }
        while let Some(o) = self.endpoint.poll_binding() {
            if let Some(tx) = self.api.bindings.remove(&o.id) {
                woke |= tx.send(o.result).is_ok();
            }
        }
        if self.endpoint.connection_count() == 0 {
            woke |= self.api.on_drained();
        }
        woke
    }
}

/// Polls the backend until `until` (or the endpoint's `deadline`, or other work), yielding
/// the core between polls; returns how many slots it received into `rx`.
fn idle_poll(
    worker: &Worker,
    backend: &mut dyn Backend,
    rx: &mut RxBatch,
    inbox: &Inbox,
    deadline: Option<Instant>,
    until: Instant,
) -> io::Result<usize> {
    let until = deadline.map_or(until, |d| d.min(until));
    loop {
        let got = backend.recv(rx)?;
        if got > 0 {
            return Ok(got);
        }
        if worker.is_dirty() || !inbox.jobs.is_empty() || !inbox.handoffs.is_empty() {
            return Ok(0);
        }
        if Instant::now() >= until {
            return Ok(0);
        }
        // Give the core to any other runnable thread between polls: a thread of the
        // application sharing this core (a handle used off the worker) must not wait for
        // the poll to end (measured: yielding every eighth poll took such a round trip
        // from 97 to 200 us).
        std::thread::yield_now();
    }
}

/// Hands a datagram to the worker that owns its connection, in one of the owner's spare
/// buffers (allocating only when it has none).
fn hand_over(st: &mut State, owner: &Arc<Worker>, from: SocketAddr, info: DatagramInfo, d: &[u8]) {
    let h = Handoff {
        from,
        info,
        data: handoff_buffer(owner, d, &mut st.stats.handoff_buffers_allocated),
    };
    match owner.handoff.try_send(h) {
        Ok(()) => {
            st.stats.handoffs_out += 1;
            owner.notify();
        }
        Err(TrySendError::Full(h) | TrySendError::Disconnected(h)) => {
            st.stats.handoffs_dropped += 1;
            recycle(owner, h.data);
        }
    }
}

/// A copy of `d` in one of `owner`'s spare buffers, or a new one (counted in `allocated`).
fn handoff_buffer(owner: &Worker, d: &[u8], allocated: &mut u64) -> Vec<u8> {
    let mut b = owner.spare.1.try_recv().unwrap_or_else(|_| {
        *allocated += 1;
        // Room for a full-size datagram, so a reused buffer never grows.
        Vec::with_capacity(d.len().max(2048))
    });
    b.clear();
    b.extend_from_slice(d);
    b
}

/// Gives a processed handoff's buffer back to `owner`'s spares (freed if they are full).
fn recycle(owner: &Worker, b: Vec<u8>) {
    let _ = owner.spare.0.try_send(b);
}

/// Lets the other tasks of this thread run once, then resumes. On a pinned worker the loop
/// is a task of the worker's own set of local tasks, which queues a task that wakes itself
/// behind the ones it woke: the loop does that, with no system call. On the caller's
/// runtime, tokio's own yield (which polls the reactor before the loop runs again).
async fn yield_now(queue_yield: bool) {
    if !queue_yield {
        tokio::task::yield_now().await;
        return;
    }
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

/// The loop's timer: armed for the endpoint's next deadline (or the pacer's).
struct Timer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    armed: Option<Instant>,
}

impl Timer {
    fn new() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            armed: None,
        }
    }

    fn arm(&mut self, at: Option<Instant>) {
        if at != self.armed {
            self.armed = at;
            if let Some(t) = at {
                self.sleep.as_mut().reset(tokio::time::Instant::from_std(t));
            }
        }
    }

    /// Whether the armed deadline has passed (registers the waker otherwise).
    fn poll(&mut self, cx: &mut Context<'_>) -> bool {
        self.armed.is_some() && self.sleep.as_mut().poll(cx).is_ready()
    }
}

/// The backend's readiness descriptor, registered with the runtime's reactor.
#[cfg(unix)]
struct Readiness(tokio::io::unix::AsyncFd<Fd>);

#[cfg(unix)]
struct Fd(std::os::fd::RawFd);

#[cfg(unix)]
impl std::os::fd::AsRawFd for Fd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

#[cfg(unix)]
impl Readiness {
    /// Registers the backend's descriptor. The loop drops this before the backend.
    fn new(b: &dyn Backend) -> io::Result<Self> {
        use tokio::io::Interest;
        // SAFETY: the descriptor belongs to the backend, which stays open and unchanged
        // until after this registration is dropped (`drive` drops its `Readiness` before
        // the backend it came from, on a rebind and at the end).
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                Fd(b.readiness()),
                Interest::READABLE | Interest::WRITABLE,
            )
        }
        .map_err(io::Error::from)?;
        Ok(Self(fd))
    }

    /// Whether the descriptor became readable (or writable, when `write` asks for it),
    /// registering the waker otherwise. Readiness is taken as it is reported: the next
    /// receive drains what arrived, and anything later reports again.
    fn poll(&mut self, cx: &mut Context<'_>, write: bool) -> bool {
        if let Poll::Ready(r) = self.0.poll_read_ready(cx) {
            if let Ok(mut g) = r {
                g.clear_ready();
            }
            return true;
        }
        if write && let Poll::Ready(r) = self.0.poll_write_ready(cx) {
            if let Ok(mut g) = r {
                g.clear_ready();
            }
            return true;
        }
        false
    }
}

/// Off Unix there is no descriptor to wait on: the loop looks again every millisecond.
#[cfg(not(unix))]
struct Readiness(Pin<Box<tokio::time::Sleep>>);

#[cfg(not(unix))]
impl Readiness {
    fn new(_: &dyn Backend) -> io::Result<Self> {
        Ok(Self(Box::pin(tokio::time::sleep(Duration::from_millis(1)))))
    }

    fn poll(&mut self, cx: &mut Context<'_>, _write: bool) -> bool {
        if self.0.as_mut().poll(cx).is_ready() {
            self.0
                .as_mut()
                .reset(tokio::time::Instant::now() + Duration::from_millis(1));
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Handoff buffers come back to their owner and are reused: after the first round,
    /// handing over allocates nothing.
    #[test]
    fn handoff_buffers_are_reused() {
        let (owner, _inbox) = Worker::pinned(1, 16);
        let mut allocated = 0;
        for round in 0..3 {
            let bufs: Vec<Vec<u8>> = (0..100u8)
                .map(|i| handoff_buffer(&owner, &[i; 1200], &mut allocated))
                .collect();
            assert!(bufs.iter().enumerate().all(|(i, b)| b == &[i as u8; 1200]));
            for b in bufs {
                recycle(&owner, b);
            }
            assert_eq!(
                allocated, 100,
                "round {round}: only the first round allocates"
            );
        }
    }
}
