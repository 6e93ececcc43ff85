//! Chunked reads of a [`RecvStream`] (quinn's `read_chunk`): the next piece of the stream
//! as [`Bytes`] with its offset, in order or, for applications that place data themselves
//! (a file written at offsets, a media buffer), as it arrives.

use std::future::poll_fn;
use std::task::{Context, Poll};

use bytes::Bytes;

use super::remote::{End, Popped, on_worker};
use super::stream::poll_recv_here;
use super::{Connection, RecvStream, StreamError};
use crate::conn::StreamId;

/// A piece of a stream: where it lies in the stream and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The offset of its first byte in the stream.
    pub offset: u64,
    /// The bytes.
    pub bytes: Bytes,
}

impl RecvStream {
    /// The next chunk of at most `max` bytes, or `None` at the end of the stream.
    ///
    /// `ordered`: the bytes at the read offset, as [`read_data`](Self::read_data) gives
    /// them; from another thread the chunk is the buffer the worker's pump filled, handed
    /// over without another copy. Unordered (`false`): any bytes received and not yet
    /// read, wherever they lie, each exactly once, so a gap left by a lost packet holds
    /// nothing up; `offset` says where each chunk goes. A stream read unordered stays
    /// unordered (ordered reads then fail with [`StreamError::Unordered`]), and a stream
    /// already read in order from another thread cannot switch to unordered reads.
    /// Flow-control credit returns as the bytes below the first gap are all read.
    ///
    /// # Errors
    /// [`StreamError`]: reset by the peer, stopped here, [`StreamError::Unordered`], or the
    /// connection is gone.
    ///
    /// ```no_run
    /// # async fn f(mut recv: stoq::RecvStream, file: std::fs::File) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::os::unix::fs::FileExt;
    /// // Write a download at its offsets as packets arrive, losses or not.
    /// while let Some(chunk) = recv.read_chunk(64 << 10, false).await? {
    ///     file.write_all_at(&chunk.bytes, chunk.offset)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn read_chunk(
        &mut self,
        max: usize,
        ordered: bool,
    ) -> Result<Option<Chunk>, StreamError> {
        if self.eof {
            return Ok(None);
        }
        let (id, max) = (self.id, max.max(1));
        let r = if self.conn.is_on_worker() {
            poll_fn(|cx| poll_chunk_here(&self.conn, id, cx, max, ordered)).await
        } else if ordered {
            let p = self.pipe().expect("off the worker: a pipe");
            match poll_fn(|cx| p.poll_pop(cx, max)).await {
                Popped::Data(bytes) => Ok(Some((self.offset, bytes))),
                Popped::End(End::Fin) => Ok(None),
                Popped::End(End::Failed(e)) => Err(e),
                Popped::End(End::Reset(code)) => Err(StreamError::Reset(code)),
            }
        } else if self.pipe.is_some() {
            Err(StreamError::Unordered)
        } else {
            on_worker(
                &self.conn,
                move |c| async move {
                    (
                        id,
                        poll_fn(|cx| poll_chunk_here(&c, id, cx, max, false)).await,
                    )
                },
                stash_chunk,
            )
            .await?
            .1
        };
        match r {
            Ok(Some((offset, bytes))) => {
                if ordered {
                    self.offset = offset + bytes.len() as u64;
                }
                Ok(Some(Chunk { offset, bytes }))
            }
            Ok(None) => {
                self.eof = true;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// On the worker: the next chunk of stream `id` (an unordered one a cancelled call left
/// first), or a wait for more.
fn poll_chunk_here(
    conn: &Connection,
    id: StreamId,
    cx: &mut Context<'_>,
    max: usize,
    ordered: bool,
) -> Poll<Result<Option<(u64, Bytes)>, StreamError>> {
    poll_recv_here(conn, id, cx, |c, slot| {
        // Chunks an unordered read on the worker claimed for this stream come first.
        if !ordered && let Some(q) = slot.stash.chunks.get_mut(&id) {
            let first = q.pop_front();
            if q.is_empty() {
                slot.stash.chunks.remove(&id);
            }
            if let Some(ch) = first {
                return Ok(Some(ch));
            }
        }
        c.read_chunk(id, max, ordered)
            .map(|r| r.map(|(o, v)| (o, Bytes::from(v))))
    })
}

/// What an unordered read on the worker hands back: the stream and its chunk.
type Claimed = (StreamId, Result<Option<(u64, Bytes)>, StreamError>);

/// An unordered chunk whose caller gave up waiting: kept for the stream's next call.
fn stash_chunk(conn: &Connection, (id, r): Claimed) {
    if let Ok(Some(ch)) = r {
        let _ = conn.with(|_, slot| slot.stash.chunks.entry(id).or_default().push_front(ch));
    }
}
