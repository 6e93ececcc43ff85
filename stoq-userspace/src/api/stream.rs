//! Streams: [`SendStream`] (tokio's `AsyncWrite`) and [`RecvStream`] (`AsyncRead`).
//!
//! On the connection's worker a stream call borrows the worker's state and wakes nothing
//! but the worker's own loop. Used from another thread, a stream switches for good to a
//! [`Pipe`] fed (or drained) by a pump task on the worker (see [`super::remote`]), so data
//! written before and after the move stays in order.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::remote::{End, Pipe, Popped, Pump, open_pipe};
use super::{Connection, StreamError};
use crate::conn::{self, ReadError, StreamId, Urgency, WriteError};
use crate::engine::app::SendOutcome;
use crate::engine::app::Slot;

fn map_write(conn: &Connection, c: &conn::Connection, e: WriteError) -> StreamError {
    match e {
        WriteError::Stopped(code) => StreamError::Stopped(code),
        WriteError::Closed => StreamError::Closed,
        WriteError::NotConnected | WriteError::UnknownStream | WriteError::Blocked => {
            StreamError::Connection(conn.ended(c))
        }
    }
}

/// On the worker: one write; waits while the send buffer is full.
pub(crate) fn poll_write_here(
    conn: &Connection,
    id: StreamId,
    cx: &mut Context<'_>,
    write: impl FnOnce(&mut conn::Connection) -> Result<usize, WriteError>,
) -> Poll<Result<usize, StreamError>> {
    let r = conn.with(|c, slot| match write(c) {
        Ok(n) if n > 0 => Poll::Ready(Ok(n)),
        Ok(_) | Err(WriteError::Blocked) => {
            slot.wakers.write.insert(id, cx.waker().clone());
            Poll::Pending
        }
        Err(e) => Poll::Ready(Err(map_write(conn, c, e))),
    });
    match r {
        Ok(Some(Poll::Ready(Ok(n)))) => {
            conn.kick();
            Poll::Ready(Ok(n))
        }
        Ok(Some(p)) => p,
        Ok(None) => Poll::Ready(Err(StreamError::Connection(conn.moved()))),
        Err(e) => Poll::Ready(Err(e.into())),
    }
}

/// On the worker: finishes stream `id`.
pub(crate) fn finish_here(conn: &Connection, id: StreamId) -> Result<(), StreamError> {
    match conn.with(|c, _| c.finish(id).map_err(|e| map_write(conn, c, e))) {
        Ok(Some(r)) => {
            conn.kick();
            r
        }
        Ok(None) => Err(StreamError::Connection(conn.moved())),
        Err(e) => Err(e.into()),
    }
}

/// On the worker: whether the peer acknowledged all of finished stream `id`.
pub(crate) fn poll_finished_here(
    conn: &Connection,
    id: StreamId,
    cx: &mut Context<'_>,
) -> Poll<Result<(), StreamError>> {
    poll_outcome_here(conn, id, cx).map(|r| match r? {
        SendOutcome::Finished => Ok(()),
        SendOutcome::Stopped(code) => Err(StreamError::Stopped(code)),
    })
}

/// On the worker: how stream `id` ended (every byte acknowledged, or stopped by the peer),
/// once it has.
pub(crate) fn poll_outcome_here(
    conn: &Connection,
    id: StreamId,
    cx: &mut Context<'_>,
) -> Poll<Result<SendOutcome, StreamError>> {
    match conn.with(|c, slot| {
        // Asked about, so kept until the handle is dropped (see `forget_send`).
        if let Some(o) = *slot.send_outcomes.entry(id).or_insert(None) {
            return Poll::Ready(Ok(o));
        }
        if c.is_closed() {
            return Poll::Ready(Err(StreamError::Connection(conn.ended(c))));
        }
        slot.wakers.finish.insert(id, cx.waker().clone());
        Poll::Pending
    }) {
        Ok(Some(p)) => p,
        Ok(None) => Poll::Ready(Err(StreamError::Connection(conn.moved()))),
        Err(e) => Poll::Ready(Err(e.into())),
    }
}

/// On the worker: a handle of stream `id` exists; its outcome is kept for it.
pub(crate) fn remember_send(conn: &Connection, id: StreamId) {
    let _ = conn.with(|_, slot| {
        slot.send_outcomes.entry(id).or_insert(None);
    });
}

/// On the worker: no handle of stream `id` is left; its outcome is not kept.
pub(crate) fn forget_send(conn: &Connection, id: StreamId) {
    let _ = conn.with(|_, slot| {
        slot.send_outcomes.remove(&id);
        slot.wakers.finish.remove(&id);
    });
}

/// On the worker: resets stream `id`.
pub(crate) fn reset_here(conn: &Connection, id: StreamId, code: u64) -> Result<(), StreamError> {
    let r = conn.with(|c, _| c.reset_stream(id, code).map_err(|e| map_write(conn, c, e)));
    conn.kick();
    match r {
        Ok(Some(r)) => r,
        Ok(None) => Err(StreamError::Connection(conn.moved())),
        Err(e) => Err(e.into()),
    }
}

/// On the worker: asks the peer to stop sending on stream `id`.
pub(crate) fn stop_here(conn: &Connection, id: StreamId, code: u64) {
    let _ = conn.with(|c, slot| {
        slot.stash.chunks.remove(&id);
        c.stop_sending(id, code)
    });
    conn.kick();
}

/// On the worker: reads into `buf`: `Some(n)` bytes, or `None` at the end of the stream.
pub(crate) fn poll_read_here(
    conn: &Connection,
    id: StreamId,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<Result<Option<usize>, StreamError>> {
    poll_recv_here(conn, id, cx, |c, _| c.read(id, buf))
}

/// A read of stream `id` on its worker by `read`: `Blocked` registers the task's read
/// waker (or reports the connection's end), the other [`ReadError`]s become
/// [`StreamError`]s, and data kicks the loop (reading may open the flow-control window).
/// The one path every receive call (`read`, `read_chunk`) takes.
pub(crate) fn poll_recv_here<T>(
    conn: &Connection,
    id: StreamId,
    cx: &mut Context<'_>,
    read: impl FnOnce(&mut conn::Connection, &mut Slot) -> Result<T, ReadError>,
) -> Poll<Result<T, StreamError>> {
    let r = conn.with(|c, slot| match read(c, slot) {
        Ok(r) => Poll::Ready(Ok(r)),
        Err(ReadError::Blocked) => {
            if c.is_closed() {
                return Poll::Ready(Err(StreamError::Connection(conn.ended(c))));
            }
            slot.wakers.read.insert(id, cx.waker().clone());
            Poll::Pending
        }
        Err(ReadError::Reset(code)) => Poll::Ready(Err(StreamError::Reset(code))),
        Err(ReadError::Stopped) => Poll::Ready(Err(StreamError::Closed)),
        Err(ReadError::Unordered) => Poll::Ready(Err(StreamError::Unordered)),
        Err(_) => Poll::Ready(Err(StreamError::Connection(conn.ended(c)))),
    });
    match r {
        Ok(Some(Poll::Ready(Ok(r)))) => {
            // Reading may open the flow-control window: the loop announces it.
            conn.kick();
            Poll::Ready(Ok(r))
        }
        Ok(Some(p)) => p,
        Ok(None) => Poll::Ready(Err(StreamError::Connection(conn.moved()))),
        Err(e) => Poll::Ready(Err(e.into())),
    }
}

/// The sending half of a stream: `AsyncWrite`. Dropping it finishes the stream (a FIN
/// after the data written) unless it was finished or reset.
///
/// ```no_run
/// # async fn f(conn: stoq::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// use tokio::io::AsyncWriteExt;
/// let mut send = conn.open_uni().await?;
/// send.write_all(b"through AsyncWrite, ").await?;
/// send.write_chunk(bytes::Bytes::from_static(b"or as Bytes, without a copy")).await?;
/// send.finish()?;
/// send.finished().await?; // the peer acknowledged every byte
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SendStream {
    conn: Connection,
    id: StreamId,
    done: bool,
    /// Set once the stream is used off its worker: data goes through the pump from then on.
    pipe: Option<Arc<Pipe>>,
}

impl SendStream {
    pub(crate) fn new(conn: &Connection, id: StreamId) -> Self {
        if conn.is_on_worker() {
            remember_send(conn, id);
        }
        Self {
            conn: conn.clone(),
            id,
            done: false,
            pipe: None,
        }
    }

    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The pipe to use from this thread, if the stream is (or now goes) off its worker.
    fn pipe(&mut self) -> Option<Arc<Pipe>> {
        if self.pipe.is_none() && !self.conn.is_on_worker() {
            self.pipe = Some(open_pipe(&self.conn, self.id, Pump::Send));
        }
        self.pipe.clone()
    }

    /// Writes what fits of `buf` now; waits while the send buffer is full.
    fn poll_write_inner(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<Result<usize, StreamError>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if let Some(p) = self.pipe() {
            return p.poll_push(cx, buf);
        }
        let id = self.id;
        poll_write_here(&self.conn, id, cx, |c| c.write(id, buf))
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
            if let Some(p) = self.pipe() {
                poll_fn(|cx| p.poll_push_bytes(cx, &mut data)).await?;
                continue;
            }
            poll_fn(|cx| poll_write_here(&self.conn, id, cx, |c| c.write_chunk(id, &mut data)))
                .await?;
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
        let id = self.id;
        match &self.pipe {
            Some(p) => p.end(End::Fin),
            None if self.conn.is_on_worker() => finish_here(&self.conn, id)?,
            // Nothing was written from this thread: the FIN follows what was.
            None => self.conn.run(move |c| {
                let _ = finish_here(c, id);
            }),
        }
        self.done = true;
        Ok(())
    }

    /// Finishes the stream if needed, then resolves once the peer has acknowledged every
    /// byte and the FIN.
    ///
    /// # Errors
    /// [`StreamError`]: stopped by the peer, or the connection is gone.
    pub async fn finished(&mut self) -> Result<(), StreamError> {
        self.finish()?;
        if let Some(p) = self.pipe.clone() {
            return poll_fn(|cx| p.poll_outcome(cx)).await;
        }
        let id = self.id;
        poll_fn(|cx| poll_finished_here(&self.conn, id, cx)).await
    }

    /// Resolves once the stream has ended on the peer's side: `Some(code)` when the peer
    /// asked this side to stop sending (STOP_SENDING; writes fail from then on), `None`
    /// when it acknowledged every byte and the FIN (quinn's `SendStream::stopped`). Does
    /// not finish the stream.
    ///
    /// ```no_run
    /// # async fn f(mut s: stoq::api::SendStream) -> Result<(), stoq::api::StreamError> {
    /// s.write_all_data(b"a long upload").await?;
    /// if let Some(code) = s.stopped().await? {
    ///     eprintln!("the peer does not want the rest (code {code})");
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`StreamError::Closed`] if this side reset the stream, or the connection's error.
    pub async fn stopped(&mut self) -> Result<Option<u64>, StreamError> {
        // From another thread, through the pump, which watches the stream for it.
        if let Some(p) = self.pipe() {
            return match poll_fn(|cx| p.poll_outcome(cx)).await {
                Ok(()) => Ok(None),
                Err(StreamError::Stopped(code)) => Ok(Some(code)),
                Err(e) => Err(e),
            };
        }
        let id = self.id;
        match poll_fn(|cx| poll_outcome_here(&self.conn, id, cx)).await? {
            SendOutcome::Finished => Ok(None),
            SendOutcome::Stopped(code) => Ok(Some(code)),
        }
    }

    /// Abandons the stream with an application error code (RESET_STREAM).
    ///
    /// # Errors
    /// [`StreamError::Closed`] if already reset or fully acknowledged, or the connection
    /// error.
    pub fn reset(&mut self, code: u64) -> Result<(), StreamError> {
        self.done = true;
        let id = self.id;
        match &self.pipe {
            Some(p) => {
                p.end(End::Reset(code));
                Ok(())
            }
            None if self.conn.is_on_worker() => reset_here(&self.conn, id, code),
            None => {
                self.conn.run(move |c| {
                    let _ = reset_here(c, id, code);
                });
                Ok(())
            }
        }
    }

    /// Sets the stream's urgency for the scheduler.
    pub fn set_urgency(&self, urgency: Urgency) {
        let id = self.id;
        self.conn.run(move |c| {
            let _ = c.with(|c, _| c.set_urgency(id, urgency));
        });
    }
}

impl AsyncWrite for SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_inner(cx, buf).map_err(Into::into)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written data is already the transport's (or its pipe's) to send.
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
        // A pump forgets the stream when it ends.
        if self.pipe.is_none() {
            if self.conn.is_on_worker() {
                forget_send(&self.conn, self.id);
            } else {
                let id = self.id;
                self.conn.run(move |c| forget_send(c, id));
            }
        }
    }
}

/// The receiving half of a stream: `AsyncRead`. Dropping it before the end asks the peer
/// to stop sending (STOP_SENDING, code 0).
///
/// ```no_run
/// # async fn f(conn: stoq::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// use tokio::io::AsyncReadExt;
/// let mut recv = conn.accept_uni().await?;
/// let mut header = [0u8; 8];
/// recv.read_exact(&mut header).await?; // AsyncRead
/// let body = recv.read_to_end_limited(16 << 20).await?; // the rest, bounded
/// # let _ = body; Ok(()) }
/// ```
#[derive(Debug)]
pub struct RecvStream {
    pub(super) conn: Connection,
    pub(super) id: StreamId,
    pub(super) eof: bool,
    /// Set once the stream is used off its worker: data comes through the pump.
    pub(super) pipe: Option<Arc<Pipe>>,
    /// Bytes read in order so far (the offset of the next ordered chunk).
    pub(super) offset: u64,
}

impl RecvStream {
    pub(crate) fn new(conn: &Connection, id: StreamId) -> Self {
        Self {
            conn: conn.clone(),
            id,
            eof: false,
            pipe: None,
            offset: 0,
        }
    }

    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The pipe to use from this thread, if the stream is (or now goes) off its worker.
    pub(super) fn pipe(&mut self) -> Option<Arc<Pipe>> {
        if self.pipe.is_none() && !self.conn.is_on_worker() {
            self.pipe = Some(open_pipe(&self.conn, self.id, Pump::Recv));
        }
        self.pipe.clone()
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
        let r = match self.pipe() {
            Some(p) => match p.poll_pop(cx, buf.len()) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Popped::Data(b)) => {
                    buf[..b.len()].copy_from_slice(&b);
                    Ok(Some(b.len()))
                }
                Poll::Ready(Popped::End(End::Fin)) => Ok(None),
                Poll::Ready(Popped::End(End::Failed(e))) => Err(e),
                Poll::Ready(Popped::End(End::Reset(code))) => Err(StreamError::Reset(code)),
            },
            None => match poll_read_here(&self.conn, self.id, cx, buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            },
        };
        match r {
            Ok(None) => self.eof = true,
            Ok(Some(n)) => self.offset += n as u64,
            Err(_) => {}
        }
        Poll::Ready(r)
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
        let id = self.id;
        match &self.pipe {
            Some(p) => p.abandon(code),
            None => self.conn.run(move |c| stop_here(c, id, code)),
        }
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
