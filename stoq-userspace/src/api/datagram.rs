//! DATAGRAMs and extension frames on a [`Connection`]: sending (at once, or waiting for
//! room), receiving (as `Vec<u8>`, into a reused buffer, or as [`Bytes`]).

use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::task::Poll;

use bytes::Bytes;

use super::remote::{discard, on_worker};
use super::{Connection, SendError};
use crate::conn::{self, ConnectionError, SendDatagramError};
use crate::engine::app::Slot;

impl Connection {
    /// Sends an unreliable DATAGRAM.
    ///
    /// Off the worker the size is checked here and the DATAGRAM handed to the worker; if
    /// its queue is full there, it is dropped as the network might drop it.
    ///
    /// # Errors
    /// [`SendError`]: too large for [`max_datagram_size`](Self::max_datagram_size), not
    /// supported by the peer, queue full, or the connection is gone.
    pub fn send_datagram(&self, data: &[u8]) -> Result<(), SendError> {
        match self.with(|c, _| c.send_datagram(data)) {
            Ok(Some(r)) => {
                r?;
                self.kick();
                Ok(())
            }
            // Off the worker the data must be owned to cross over: one copy.
            Ok(None) => self.send_datagram_bytes(Bytes::copy_from_slice(data)),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends an unreliable DATAGRAM, waiting while the connection's DATAGRAM queue is full
    /// (the producer is faster than the path) instead of failing with
    /// [`SendDatagramError::Blocked`] as [`send_datagram`](Self::send_datagram) does:
    /// back-pressure for a producer that must be slowed rather than dropped. Once queued,
    /// a DATAGRAM is as unreliable as any other (the network may still lose it).
    ///
    /// # Errors
    /// [`SendError`]: too large for [`max_datagram_size`](Self::max_datagram_size), not
    /// supported by the peer, or the connection is gone.
    pub async fn send_datagram_wait(&self, data: &[u8]) -> Result<(), SendError> {
        if !self.is_on_worker() {
            let d = data.to_vec();
            return on_worker(
                self,
                move |c| async move { c.send_datagram_wait_here(&d).await },
                discard,
            )
            .await?;
        }
        self.send_datagram_wait_here(data).await
    }

    async fn send_datagram_wait_here(&self, data: &[u8]) -> Result<(), SendError> {
        poll_fn(|cx| {
            let r = self.with(|c, slot| match c.send_datagram(data) {
                Err(SendDatagramError::Blocked) => {
                    slot.wakers.datagram_room = Some(cx.waker().clone());
                    None
                }
                r => Some(r),
            });
            match r {
                Ok(Some(Some(r))) => {
                    self.kick();
                    Poll::Ready(r.map_err(SendError::from))
                }
                Ok(Some(None)) => {
                    // The queue drains as the worker sends.
                    self.kick();
                    Poll::Pending
                }
                Ok(None) => Poll::Ready(Err(SendError::Connection(self.moved()))),
                Err(e) => Poll::Ready(Err(e.into())),
            }
        })
        .await
    }

    /// The largest DATAGRAM that can be sent now (`None` if the peer takes none).
    pub fn max_datagram_size(&self) -> Option<usize> {
        match self.with(|c, _| c.max_datagram_size()) {
            Ok(Some(m)) => m,
            Ok(None) => self
                .shared
                .max_datagram
                .load(Ordering::Relaxed)
                .checked_sub(1),
            Err(_) => None,
        }
    }

    async fn read_datagram_here(&self) -> Result<Vec<u8>, ConnectionError> {
        self.datagram_here(|c, slot| {
            slot.stash
                .datagrams
                .pop_front()
                .or_else(|| c.recv_datagram())
        })
        .await
    }

    /// Waits on the worker until `take` finds a datagram (or the connection ends).
    async fn datagram_here<T>(
        &self,
        mut take: impl FnMut(&mut conn::Connection, &mut Slot) -> Option<T>,
    ) -> Result<T, ConnectionError> {
        poll_fn(|cx| {
            match self.with(|c, slot| {
                if let Some(d) = take(c, slot) {
                    return Poll::Ready(Ok(d));
                }
                if c.is_closed() {
                    return Poll::Ready(Err(self.ended(c)));
                }
                slot.wakers.datagram.register(cx.waker());
                Poll::Pending
            }) {
                Ok(Some(p)) => p,
                Ok(None) => Poll::Ready(Err(self.moved())),
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await
    }

    /// The next DATAGRAM received.
    ///
    /// # Errors
    /// The connection's error once it is gone.
    pub async fn read_datagram(&self) -> Result<Vec<u8>, ConnectionError> {
        if !self.is_on_worker() {
            return on_worker(
                self,
                |c| async move { c.read_datagram_here().await },
                stash_datagram,
            )
            .await?;
        }
        self.read_datagram_here().await
    }

    /// The next DATAGRAM received, moved into `buf` (its contents replaced). On the
    /// connection's worker the buffers are swapped, not copied, and `buf`'s old buffer is
    /// kept for a later datagram: a loop that reuses one `Vec` receives without
    /// allocating. Elsewhere it costs what [`read_datagram`](Self::read_datagram) does.
    ///
    /// # Errors
    /// The connection's error once it is gone.
    pub async fn read_datagram_into(&self, buf: &mut Vec<u8>) -> Result<(), ConnectionError> {
        if !self.is_on_worker() {
            let d = self.read_datagram().await?;
            buf.clear();
            buf.extend_from_slice(&d);
            return Ok(());
        }
        self.datagram_here(|c, slot| {
            if let Some(d) = slot.stash.datagrams.pop_front() {
                buf.clear();
                buf.extend_from_slice(&d);
                return Some(());
            }
            c.recv_datagram_into(buf).then_some(())
        })
        .await
    }

    /// As [`send_datagram`](Self::send_datagram), for data already in [`Bytes`] (quinn's
    /// `send_datagram(Bytes)`): from another thread the DATAGRAM is handed to the worker
    /// without a copy.
    ///
    /// # Errors
    /// As [`send_datagram`](Self::send_datagram).
    ///
    /// ```no_run
    /// # fn f(conn: &stoq::Connection) -> Result<(), stoq::api::SendError> {
    /// let frame = bytes::Bytes::from_static(b"position 12,7");
    /// conn.send_datagram_bytes(frame.clone())?; // the clone shares the buffer
    /// # Ok(()) }
    /// ```
    pub fn send_datagram_bytes(&self, data: Bytes) -> Result<(), SendError> {
        match self.with(|c, _| c.send_datagram(&data)) {
            Ok(Some(r)) => {
                r?;
                self.kick();
                Ok(())
            }
            Ok(None) => {
                self.check_datagram_off_worker(data.len())?;
                let c = self.clone();
                self.post_job(move |_| {
                    if let Ok(Some(Ok(()))) = c.with(|c, _| c.send_datagram(&data)) {
                        c.kick();
                    }
                });
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Off the worker: the connection's known end and DATAGRAM size, checked before a
    /// DATAGRAM of `len` bytes is handed over.
    fn check_datagram_off_worker(&self, len: usize) -> Result<(), SendError> {
        if let Some(e) = self.shared.error.get() {
            return Err(SendError::Connection(e.clone()));
        }
        let max = match self.shared.max_datagram.load(Ordering::Relaxed) {
            0 => return Err(SendDatagramError::UnsupportedByPeer.into()),
            m => m - 1,
        };
        if len > max {
            return Err(SendDatagramError::TooLarge { size: len, max }.into());
        }
        Ok(())
    }

    /// The next DATAGRAM received, as [`Bytes`] (quinn's `read_datagram`): the buffer the
    /// connection received it into, taken over, not copied.
    ///
    /// # Errors
    /// The connection's error once it is gone.
    pub async fn read_datagram_bytes(&self) -> Result<Bytes, ConnectionError> {
        self.read_datagram().await.map(Bytes::from)
    }

    /// Sends an extension frame of type `ty` (one of
    /// [`frame::EXTENSION_TYPES`](crate::frame::EXTENSION_TYPES), which the peer must accept:
    /// [`TransportConfig::extension_frames`](conn::TransportConfig::extension_frames)).
    /// Extension frames are delivered reliably, once each, in any order.
    ///
    /// # Errors
    /// [`SendError::Extension`]: a type outside the extension range, a payload over one
    /// packet, too many queued; [`SendError::Connection`] once the connection is gone.
    pub fn send_extension_frame(&self, ty: u64, payload: &[u8]) -> Result<(), SendError> {
        let p = payload.to_vec();
        let r = self.here_or_call(move |c, _| c.send_extension_frame(ty, &p))?;
        r?;
        self.kick();
        Ok(())
    }

    /// The next extension frame received: its type and payload (types this endpoint
    /// accepts, [`TransportConfig::extension_frames`](conn::TransportConfig::extension_frames)).
    ///
    /// # Errors
    /// The connection's error once it is gone (frames still waiting are read first).
    pub async fn read_extension_frame(&self) -> Result<(u64, Vec<u8>), ConnectionError> {
        if !self.is_on_worker() {
            return on_worker(
                self,
                |c| async move { c.read_extension_frame_here().await },
                |c, f| {
                    if let Ok(f) = f {
                        let _ = c.with(|_, slot| slot.stash.extensions.push_front(f));
                    }
                },
            )
            .await?;
        }
        self.read_extension_frame_here().await
    }

    async fn read_extension_frame_here(&self) -> Result<(u64, Vec<u8>), ConnectionError> {
        poll_fn(|cx| {
            match self.with(|c, slot| {
                if let Some(f) = slot
                    .stash
                    .extensions
                    .pop_front()
                    .or_else(|| c.recv_extension_frame())
                {
                    return Poll::Ready(Ok(f));
                }
                if c.is_closed() {
                    return Poll::Ready(Err(self.ended(c)));
                }
                slot.wakers.extension.register(cx.waker());
                Poll::Pending
            }) {
                Ok(Some(p)) => p,
                Ok(None) => Poll::Ready(Err(self.moved())),
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await
    }
}

fn stash_datagram(c: &Connection, d: Result<Vec<u8>, ConnectionError>) {
    if let Ok(d) = d {
        let _ = c.with(|_, slot| slot.stash.datagrams.push_front(d));
    }
}
