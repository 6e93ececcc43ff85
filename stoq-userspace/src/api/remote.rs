//! The cross-thread path: how a handle used off its connection's worker reaches it.
//!
//! Nothing here runs for a connection served on its worker. For a handle used on another
//! thread (a task started with `tokio::spawn` after [`crate::Endpoint::accept`], or a
//! client's application on a thread of its own):
//!
//! - a call that returns at once (close, a DATAGRAM) becomes a job the worker's loop runs;
//! - a call that waits (accept a stream, read a DATAGRAM, `closed`) runs as a task on the
//!   worker, whose output comes back through a oneshot channel; if the caller gives up
//!   first, the task stops, and an output it had already taken is kept for the next call;
//! - stream data crosses in a [`Pipe`]: a bounded queue of chunks between the caller and a
//!   pump task on the worker, which feeds the stream (or drains it) with the worker's own
//!   calls.
//!
//! The pipe's lock and the wake-ups each way are the price of the crossing; serving the
//! connection on its worker ([`crate::Endpoint::serve`]) avoids both.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::{Connection, StreamError};
use crate::conn::{ConnectionError, StreamId};
use crate::engine::home::Worker;

/// Bytes a pipe holds before the side that fills it waits.
pub(crate) const PIPE_BYTES: usize = 1 << 20;

/// Runs `f(conn)` as a task on `conn`'s worker and resolves with its output. If this
/// future is dropped first, the task is dropped at its next wake-up; an output it produced
/// that nobody took goes to `unclaimed` (on the worker).
pub(crate) async fn on_worker<R, F, Fut>(
    conn: &Connection,
    f: F,
    unclaimed: fn(&Connection, R),
) -> Result<R, ConnectionError>
where
    R: Send + 'static,
    F: FnOnce(Connection) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let c = conn.clone();
    let posted = conn.post_job(move |_| {
        tokio::task::spawn_local(async move {
            let mut tx = tx;
            let keep = c.clone();
            let mut fut = pin!(f(c));
            let out = poll_fn(|cx| {
                if let Poll::Ready(r) = fut.as_mut().poll(cx) {
                    return Poll::Ready(Some(r));
                }
                if tx.poll_closed(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await;
            if let Some(r) = out
                && let Err(r) = tx.send(r)
            {
                unclaimed(&keep, r);
            }
        });
    });
    if !posted {
        return Err(conn.shared.gone());
    }
    rx.await.map_err(|_| conn.shared.gone())
}

/// Drops an output nobody claimed.
pub(crate) fn discard<R>(_: &Connection, _: R) {}

/// How the side that fills a pipe ended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// The data is complete (FIN).
    Fin,
    /// Abandoned with an application code (RESET_STREAM), queued data discarded.
    Reset(u64),
    /// The stream failed.
    Failed(StreamError),
}

/// What the side that drains a pipe gets.
#[derive(Debug)]
pub(crate) enum Popped {
    Data(Bytes),
    End(End),
}

/// A bounded queue of stream data between a handle on another thread and a pump task on
/// the connection's worker: for a send stream the handle fills it and the pump drains it
/// into the stream; for a receive stream the pump fills it from the stream.
#[derive(Debug)]
pub(crate) struct Pipe {
    st: Mutex<PipeState>,
    /// The connection's worker, whose crossings each hand-off counts.
    worker: Arc<Worker>,
}

#[derive(Debug, Default)]
struct PipeState {
    chunks: VecDeque<Bytes>,
    len: usize,
    /// Set by the filling side: nothing follows `chunks`.
    end: Option<End>,
    /// Set by the draining side: it takes no more (with the STOP_SENDING code).
    abandoned: Option<u64>,
    /// A send pipe's last word from the pump: the peer acknowledged everything, or why not.
    outcome: Option<Result<(), StreamError>>,
    filler: Option<Waker>,
    drainer: Option<Waker>,
}

fn wake(w: Option<Waker>) {
    if let Some(w) = w {
        w.wake();
    }
}

impl Pipe {
    /// An empty pipe for a stream of a connection on `worker`.
    pub(crate) fn new(worker: Arc<Worker>) -> Self {
        Self {
            st: Mutex::new(PipeState::default()),
            worker,
        }
    }

    fn crossed(&self) {
        self.worker
            .crossings
            .count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, PipeState> {
        self.st
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Copies what fits of `data` in; waits while the pipe is full.
    pub(crate) fn poll_push(
        &self,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<Result<usize, StreamError>> {
        self.poll_push_with(cx, data.len(), |n| Bytes::copy_from_slice(&data[..n]))
    }

    /// Moves what fits of `data` in without copying it; waits while the pipe is full.
    pub(crate) fn poll_push_bytes(
        &self,
        cx: &mut Context<'_>,
        data: &mut Bytes,
    ) -> Poll<Result<usize, StreamError>> {
        let len = data.len();
        self.poll_push_with(cx, len, |n| data.split_to(n))
    }

    fn poll_push_with(
        &self,
        cx: &mut Context<'_>,
        len: usize,
        take: impl FnOnce(usize) -> Bytes,
    ) -> Poll<Result<usize, StreamError>> {
        let mut st = self.lock();
        if let Some(Err(e)) = &st.outcome {
            return Poll::Ready(Err(e.clone()));
        }
        if let Some(code) = st.abandoned {
            return Poll::Ready(Err(StreamError::Stopped(code)));
        }
        if st.end.is_some() {
            return Poll::Ready(Err(StreamError::Closed));
        }
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        if st.len >= PIPE_BYTES {
            st.filler = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = len.min(PIPE_BYTES - st.len);
        st.chunks.push_back(take(n));
        st.len += n;
        let w = st.drainer.take();
        drop(st);
        wake(w);
        self.crossed();
        Poll::Ready(Ok(n))
    }

    /// Room for more, or the code the draining side stopped with.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<usize, u64>> {
        let mut st = self.lock();
        if let Some(code) = st.abandoned {
            return Poll::Ready(Err(code));
        }
        if st.len < PIPE_BYTES {
            return Poll::Ready(Ok(PIPE_BYTES - st.len));
        }
        st.filler = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The code the draining side stopped with, if it did; registers the filling side's
    /// waker for when it does.
    pub(crate) fn poll_abandoned(&self, cx: &mut Context<'_>) -> Option<u64> {
        let mut st = self.lock();
        if st.abandoned.is_none() {
            st.filler = Some(cx.waker().clone());
        }
        st.abandoned
    }

    /// Ends the data (the first end wins; a reset discards what is queued).
    pub(crate) fn end(&self, end: End) {
        let mut st = self.lock();
        if st.end.is_some() {
            return;
        }
        if matches!(end, End::Reset(_)) {
            st.chunks.clear();
            st.len = 0;
        }
        st.end = Some(end);
        let w = st.drainer.take();
        drop(st);
        wake(w);
    }

    /// The next chunk (at most `max` bytes of it), or how the data ended; waits while the
    /// pipe is empty.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>, max: usize) -> Poll<Popped> {
        let mut st = self.lock();
        if let Some(front) = st.chunks.front_mut() {
            let b = if front.len() <= max {
                st.chunks.pop_front().unwrap_or_default()
            } else {
                front.split_to(max)
            };
            st.len -= b.len();
            let w = st.filler.take();
            drop(st);
            wake(w);
            self.crossed();
            return Poll::Ready(Popped::Data(b));
        }
        if let Some(e) = &st.end {
            return Poll::Ready(Popped::End(e.clone()));
        }
        st.drainer = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The draining side takes no more.
    pub(crate) fn abandon(&self, code: u64) {
        let mut st = self.lock();
        st.abandoned.get_or_insert(code);
        st.chunks.clear();
        st.len = 0;
        let w = st.filler.take();
        drop(st);
        wake(w);
    }

    /// A send pipe's pump reports how the stream ended.
    pub(crate) fn set_outcome(&self, r: Result<(), StreamError>) {
        let mut st = self.lock();
        st.outcome.get_or_insert(r);
        let w = st.filler.take();
        drop(st);
        wake(w);
    }

    /// A send pipe's outcome, once the pump has one.
    pub(crate) fn poll_outcome(&self, cx: &mut Context<'_>) -> Poll<Result<(), StreamError>> {
        let mut st = self.lock();
        if let Some(r) = &st.outcome {
            return Poll::Ready(r.clone());
        }
        st.filler = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Which way a pipe's pump moves data.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pump {
    /// From the pipe into send stream.
    Send,
    /// From a receive stream into the pipe.
    Recv,
}

/// A pipe for stream `id` used off its worker, with its pump started on the worker; if the
/// worker has stopped, the pipe reports the connection's error.
pub(crate) fn open_pipe(conn: &Connection, id: StreamId, pump: Pump) -> Arc<Pipe> {
    let pipe = Arc::new(Pipe::new(conn.shared.worker.clone()));
    let (c, p) = (conn.clone(), pipe.clone());
    let started = conn.post_job(move |_| {
        match pump {
            Pump::Send => tokio::task::spawn_local(pump_send(c, id, p)),
            Pump::Recv => tokio::task::spawn_local(pump_recv(c, id, p)),
        };
    });
    if !started {
        let gone = StreamError::Connection(conn.shared.gone());
        match pump {
            Pump::Send => pipe.set_outcome(Err(gone)),
            Pump::Recv => pipe.end(End::Failed(gone)),
        }
    }
    pipe
}

async fn pump_send(conn: Connection, id: StreamId, pipe: Arc<Pipe>) {
    super::stream::remember_send(&conn, id);
    pump_send_until_done(&conn, id, &pipe).await;
    super::stream::forget_send(&conn, id);
}

/// Moves the pipe's data into stream `id` until the stream ends; a STOP_SENDING from the
/// peer ends it even while the pipe is idle (so `SendStream::stopped` learns of it).
async fn pump_send_until_done(conn: &Connection, id: StreamId, pipe: &Pipe) {
    loop {
        let popped = poll_fn(|cx| {
            if let Poll::Ready(Ok(crate::engine::app::SendOutcome::Stopped(code))) =
                super::stream::poll_outcome_here(conn, id, cx)
            {
                return Poll::Ready(Err(code));
            }
            pipe.poll_pop(cx, usize::MAX).map(Ok)
        })
        .await;
        let popped = match popped {
            Ok(p) => p,
            Err(code) => {
                pipe.abandon(code);
                pipe.set_outcome(Err(StreamError::Stopped(code)));
                return;
            }
        };
        match popped {
            Popped::Data(mut b) => {
                while !b.is_empty() {
                    let r = poll_fn(|cx| {
                        super::stream::poll_write_here(conn, id, cx, |c| c.write_chunk(id, &mut b))
                    })
                    .await;
                    if let Err(e) = r {
                        pipe.abandon(0);
                        pipe.set_outcome(Err(e));
                        return;
                    }
                }
            }
            Popped::End(End::Fin) => {
                let r = match super::stream::finish_here(conn, id) {
                    Ok(()) => poll_fn(|cx| super::stream::poll_finished_here(conn, id, cx)).await,
                    Err(e) => Err(e),
                };
                pipe.set_outcome(r);
                return;
            }
            Popped::End(End::Reset(code)) => {
                let _ = super::stream::reset_here(conn, id, code);
                pipe.set_outcome(Err(StreamError::Closed));
                return;
            }
            Popped::End(End::Failed(e)) => {
                pipe.set_outcome(Err(e));
                return;
            }
        }
    }
}

async fn pump_recv(conn: Connection, id: StreamId, pipe: Arc<Pipe>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let room = match poll_fn(|cx| pipe.poll_room(cx)).await {
            Ok(n) => n,
            Err(code) => {
                super::stream::stop_here(&conn, id, code);
                return;
            }
        };
        let n = room.min(buf.len());
        let r = poll_fn(|cx| {
            if let Some(code) = pipe.poll_abandoned(cx) {
                return Poll::Ready(Err(code));
            }
            super::stream::poll_read_here(&conn, id, cx, &mut buf[..n]).map(Ok)
        })
        .await;
        match r {
            Ok(Ok(Some(k))) => {
                let mut b = Bytes::copy_from_slice(&buf[..k]);
                // Room was checked; the pipe takes it all.
                let _ = poll_fn(|cx| pipe.poll_push_bytes(cx, &mut b)).await;
            }
            Ok(Ok(None)) => {
                pipe.end(End::Fin);
                return;
            }
            Ok(Err(e)) => {
                pipe.end(End::Failed(e));
                return;
            }
            Err(code) => {
                super::stream::stop_here(&conn, id, code);
                return;
            }
        }
    }
}
