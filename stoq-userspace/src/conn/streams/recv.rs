//! The receive half of streams: STREAM, RESET_STREAM and STREAM_DATA_BLOCKED frames
//! checked against flow control and final sizes, data reassembled in place (bounded
//! fragments), reads, STOP_SENDING, and credit returned to the peer.

use super::{Ctrl, Half, MAX_RX_FRAGMENTS, ReadError, StreamId, Streams, recv_half};
use crate::conn::ranges::RangeSet;
use crate::conn::{ConnectionError, Event};
use std::collections::VecDeque;

#[derive(Debug)]
pub(super) struct Recv {
    /// Bytes from `base` (the read offset) up to the highest offset received.
    pub(super) buf: VecDeque<u8>,
    pub(super) base: u64,
    pub(super) filled: RangeSet,
    /// The MAX_STREAM_DATA we advertised.
    pub(super) max_data: u64,
    pub(super) window: u64,
    pub(super) highest: u64,
    pub(super) final_size: Option<u64>,
    pub(super) reset: Option<u64>,
    /// The application read the reset (or EOF): the receive side is finished.
    pub(super) done: bool,
    pub(super) stopped: Option<u64>,
    pub(super) stop_pending: bool,
    pub(super) max_pending: bool,
    pub(super) readable_signalled: bool,
    /// Read unordered ([`Streams::read_chunk`] with `ordered` false): the ranges above
    /// `base` already handed out. `None` for a stream read in order.
    pub(super) taken: Option<Box<RangeSet>>,
}

impl Recv {
    pub(super) fn new(window: u64) -> Self {
        Self {
            buf: VecDeque::new(),
            base: 0,
            filled: RangeSet::new(usize::MAX),
            max_data: window,
            window,
            highest: 0,
            final_size: None,
            reset: None,
            done: false,
            stopped: None,
            stop_pending: false,
            max_pending: false,
            readable_signalled: false,
            taken: None,
        }
    }

    pub(super) fn readable(&self) -> bool {
        self.reset.is_some()
            || self.filled.first().is_some_and(|r| r.start <= self.base)
            || self.final_size == Some(self.base)
            || self
                .taken
                .as_ref()
                .is_some_and(|t| first_untaken(&self.filled, t).is_some())
    }
}

/// The first received range (of `filled`) no part of which is in `taken`.
fn first_untaken(filled: &RangeSet, taken: &RangeSet) -> Option<std::ops::Range<u64>> {
    for f in filled.iter() {
        let mut s = f.start;
        for t in taken.overlapping(f.clone()) {
            if t.start > s {
                return Some(s..t.start.min(f.end));
            }
            s = s.max(t.end);
        }
        if s < f.end {
            return Some(s..f.end);
        }
    }
    None
}

/// Writes `data` at position `at` of `buf`, growing it (zero-filled) as needed. In-order
/// data, the common case, is appended with one copy and no zero-fill.
pub(super) fn ring_write(buf: &mut VecDeque<u8>, at: usize, data: &[u8]) {
    if at == buf.len() {
        buf.extend(data);
        return;
    }
    let end = at + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    let (a, b) = buf.as_mut_slices();
    if at < a.len() {
        let k = data.len().min(a.len() - at);
        a[at..at + k].copy_from_slice(&data[..k]);
        b[..data.len() - k].copy_from_slice(&data[k..]);
    } else {
        let at = at - a.len();
        b[at..at + data.len()].copy_from_slice(data);
    }
}

/// Whether `buf[at..at + data.len()]` equals `data`.
pub(super) fn ring_eq(buf: &VecDeque<u8>, at: usize, data: &[u8]) -> bool {
    let (a, b) = buf.as_slices();
    if at < a.len() {
        let k = data.len().min(a.len() - at);
        a[at..at + k] == data[..k] && b[..data.len() - k] == data[k..]
    } else {
        let at = at - a.len();
        b[at..at + data.len()] == *data
    }
}

/// Copies `n` bytes at `at` of the two-part ring `(a, b)` into `w`.
/// Removes the first `n` bytes of a stream buffer. An emptied ring starts again at the
/// front of its allocation: a buffer that grew large once (a burst, a wide window) but is
/// drained after every round trip then keeps using the same few cache lines, instead of
/// walking its whole capacity and missing the cache on every write.
pub(super) fn drain_front(buf: &mut VecDeque<u8>, n: usize) {
    if n >= buf.len() {
        buf.clear();
    } else {
        buf.drain(..n);
    }
}

impl Streams {
    pub(crate) fn stop(&mut self, id: StreamId, code: u64) -> Result<(), ReadError> {
        let Some(r) = recv_half(&mut self.map, id) else {
            return Err(ReadError::UnknownStream);
        };
        if r.stopped.is_some() || r.done {
            return Ok(());
        }
        r.stopped = Some(code);
        r.taken = None;
        // Unread data is discarded: credit it so the connection window does not shrink.
        let unread = r.highest - r.base;
        r.base = r.highest;
        self.rx_buffered -= r.buf.len() as u64;
        r.buf = VecDeque::new();
        r.filled.clear();
        self.rx_consumed += unread;
        if r.final_size.is_none() && r.reset.is_none() {
            r.stop_pending = true;
            self.ctrl.push_back(Ctrl::Stop(id));
        } else {
            r.done = true;
        }
        self.credit_conn();
        self.maybe_free(id);
        Ok(())
    }

    /// Reads in-order data into `out`. `Ok(None)` is the end of the stream.
    pub(crate) fn read(
        &mut self,
        id: StreamId,
        out: &mut [u8],
    ) -> Result<Option<usize>, ReadError> {
        self.check_readable(id, true)?;
        let r = recv_half(&mut self.map, id).expect("checked readable");
        let avail = match r.filled.first() {
            Some(f) if f.start <= r.base => f.end - r.base,
            _ => 0,
        };
        if avail == 0 {
            if r.final_size == Some(r.base) {
                r.done = true;
                self.maybe_free(id);
                return Ok(None);
            }
            r.readable_signalled = false;
            return Err(ReadError::Blocked);
        }
        let n = (avail as usize).min(out.len());
        let (a, b) = r.buf.as_slices();
        let from_a = n.min(a.len());
        out[..from_a].copy_from_slice(&a[..from_a]);
        out[from_a..n].copy_from_slice(&b[..n - from_a]);
        self.consume(id, n as u64);
        Ok(Some(n))
    }

    /// The checks every read starts with: the stream exists, this side did not stop it,
    /// the peer did not reset it (a reset, once read, frees it), and an in-order read of
    /// a stream already read unordered is refused.
    fn check_readable(&mut self, id: StreamId, ordered: bool) -> Result<(), ReadError> {
        let Some(r) = recv_half(&mut self.map, id) else {
            return Err(ReadError::UnknownStream);
        };
        if r.stopped.is_some() {
            return Err(ReadError::Stopped);
        }
        if let Some(code) = r.reset {
            r.done = true;
            self.maybe_free(id);
            return Err(ReadError::Reset(code));
        }
        if ordered && r.taken.is_some() {
            return Err(ReadError::Unordered);
        }
        Ok(())
    }

    /// The application took the next `n` bytes of stream `id` (at its read offset): they
    /// leave the buffer, and the stream's and the connection's credit grow.
    fn consume(&mut self, id: StreamId, n: u64) {
        let Some(r) = recv_half(&mut self.map, id) else {
            return;
        };
        drain_front(&mut r.buf, n as usize);
        self.rx_buffered -= n;
        r.base += n;
        r.filled.remove_below(r.base);
        if let Some(t) = r.taken.as_mut() {
            t.remove_below(r.base);
        }
        if !r.readable() {
            r.readable_signalled = false;
        }
        // Grant more credit once half the window is consumed.
        if r.final_size.is_none() && r.max_data - r.base < r.window / 2 && !r.max_pending {
            r.max_data = r.base + r.window;
            r.max_pending = true;
            self.ctrl.push_back(Ctrl::MaxStreamData(id));
        } else if r.final_size.is_none() && r.max_pending {
            r.max_data = r.base + r.window;
        }
        self.rx_consumed += n;
        self.credit_conn();
    }

    /// Reads up to `max` bytes of stream `id` as one chunk: `(offset, bytes)`, or `None` at
    /// the end. In order (`ordered`): the bytes at the read offset, as
    /// [`read`](Self::read). Unordered: any received bytes not yet read, wherever they lie,
    /// each once (a stream read unordered cannot go back to ordered reads: they fail with
    /// [`ReadError::Unordered`]). The stream's credit grows as the bytes below the first
    /// gap are all read.
    pub(crate) fn read_chunk(
        &mut self,
        id: StreamId,
        max: usize,
        ordered: bool,
    ) -> Result<Option<(u64, Vec<u8>)>, ReadError> {
        self.check_readable(id, ordered)?;
        let r = recv_half(&mut self.map, id).expect("checked readable");
        if !ordered && r.taken.is_none() {
            r.taken = Some(Box::new(RangeSet::new(usize::MAX)));
        }
        let next = match &r.taken {
            Some(t) => first_untaken(&r.filled, t),
            None => r
                .filled
                .first()
                .filter(|f| f.start <= r.base)
                .map(|f| r.base..f.end),
        };
        let Some(g) = next else {
            if r.final_size == Some(r.base) {
                r.done = true;
                self.maybe_free(id);
                return Ok(None);
            }
            r.readable_signalled = false;
            return Err(ReadError::Blocked);
        };
        let n = ((g.end - g.start) as usize).min(max.max(1));
        let at = (g.start - r.base) as usize;
        let mut out = Vec::with_capacity(n);
        let (a, b) = r.buf.as_slices();
        if at < a.len() {
            let k = n.min(a.len() - at);
            out.extend_from_slice(&a[at..at + k]);
            out.extend_from_slice(&b[..n - k]);
        } else {
            out.extend_from_slice(&b[at - a.len()..at - a.len() + n]);
        }
        let consumed = match r.taken.as_mut() {
            None => n as u64,
            Some(t) => {
                t.insert(g.start..g.start + n as u64);
                // Everything from the read offset up to the first gap has been read.
                t.first()
                    .filter(|f| f.start <= r.base)
                    .map_or(0, |f| f.end - r.base)
            }
        };
        if consumed > 0 {
            self.consume(id, consumed);
        } else if let Some(r) = recv_half(&mut self.map, id)
            && !r.readable()
        {
            r.readable_signalled = false;
        }
        Ok(Some((g.start, out)))
    }

    pub(super) fn credit_conn(&mut self) {
        let w = self.limits.conn_window;
        if self.local_max_data - self.rx_consumed.min(self.local_max_data) < w / 2 {
            self.local_max_data = self.rx_consumed + w;
            self.max_data_pending = true;
        }
    }

    pub(crate) fn on_stream(
        &mut self,
        id: StreamId,
        offset: u64,
        data: &[u8],
        fin: bool,
    ) -> Result<(), ConnectionError> {
        self.check_half(
            id,
            Half::Recv,
            "STREAM frame on this side's unidirectional stream",
        )?;
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e < 1 << 62)
            .ok_or(ConnectionError::FlowControl("stream offset beyond 2^62"))?;
        if !self.get_or_open(id)? {
            return Ok(());
        }
        // Past check_half, the stream has this half; gone means finished and freed.
        let Some(r) = recv_half(&mut self.map, id) else {
            return Ok(());
        };
        if let Some(fs) = r.final_size {
            if end > fs || (fin && end != fs) {
                return Err(ConnectionError::FinalSize);
            }
        } else if fin && end < r.highest {
            return Err(ConnectionError::FinalSize);
        }
        if end > r.max_data {
            return Err(ConnectionError::FlowControl(
                "STREAM data beyond the stream's MAX_STREAM_DATA",
            ));
        }
        if end > r.highest {
            self.rx_highest += end - r.highest;
            if self.rx_highest > self.local_max_data {
                return Err(ConnectionError::FlowControl(
                    "STREAM data beyond the connection's MAX_DATA",
                ));
            }
        }
        if fin {
            r.final_size = Some(end);
        }
        if r.reset.is_some() || r.stopped.is_some() {
            if end > r.highest {
                // Discarded data still counts as consumed.
                self.rx_consumed += end - r.highest;
                r.highest = end;
                r.base = end;
            }
            if r.stopped.is_some() && r.final_size.is_some() {
                r.done = true;
                self.maybe_free(id);
                self.credit_conn();
            }
            return Ok(());
        }
        r.highest = r.highest.max(end);
        // Store what lies at or above the read offset.
        let start = offset.max(r.base);
        if start < end {
            let skip = (start - offset) as usize;
            let data = &data[skip..];
            // Parts already received must match what arrives again.
            for have in r.filled.overlapping(start..end) {
                let a = (have.start - start) as usize;
                let b = (have.end - start) as usize;
                let at = (have.start - r.base) as usize;
                if !ring_eq(&r.buf, at, &data[a..b]) {
                    return Err(ConnectionError::StreamDataMismatch {
                        id: id.0,
                        offset: have.start,
                    });
                }
            }
            let before = r.buf.len();
            ring_write(&mut r.buf, (start - r.base) as usize, data);
            self.rx_buffered += (r.buf.len() - before) as u64;
            r.filled.insert(start..end);
            if r.filled.len() > MAX_RX_FRAGMENTS {
                return Err(ConnectionError::StreamFragmented { id: id.0 });
            }
        }
        if r.readable() && !r.readable_signalled {
            r.readable_signalled = true;
            self.events.push_back(Event::StreamReadable(id));
        }
        Ok(())
    }

    pub(crate) fn on_reset_stream(
        &mut self,
        id: StreamId,
        code: u64,
        final_size: u64,
    ) -> Result<(), ConnectionError> {
        self.check_half(
            id,
            Half::Recv,
            "RESET_STREAM on this side's unidirectional stream",
        )?;
        if !self.get_or_open(id)? {
            return Ok(());
        }
        // Past check_half, the stream has this half; gone means finished and freed.
        let Some(r) = recv_half(&mut self.map, id) else {
            return Ok(());
        };
        if r.final_size.is_some_and(|f| f != final_size) || final_size < r.highest {
            return Err(ConnectionError::FinalSize);
        }
        if final_size > r.max_data {
            return Err(ConnectionError::FlowControl(
                "RESET_STREAM final size beyond the window",
            ));
        }
        self.rx_highest += final_size - r.highest;
        if self.rx_highest > self.local_max_data {
            return Err(ConnectionError::FlowControl(
                "RESET_STREAM final size beyond the connection's MAX_DATA",
            ));
        }
        if r.reset.is_some() || r.done {
            return Ok(());
        }
        // Everything up to the final size is consumed: it will never be read.
        self.rx_consumed += final_size - r.base;
        r.highest = final_size;
        r.base = final_size;
        r.final_size = Some(final_size);
        self.rx_buffered -= r.buf.len() as u64;
        r.buf = VecDeque::new();
        r.filled.clear();
        if r.stopped.is_some() {
            r.done = true;
            self.maybe_free(id);
        } else {
            r.reset = Some(code);
            r.readable_signalled = true;
            self.events.push_back(Event::StreamReadable(id));
        }
        self.credit_conn();
        Ok(())
    }

    pub(crate) fn on_stream_data_blocked(&mut self, id: StreamId) -> Result<(), ConnectionError> {
        self.check_half(
            id,
            Half::Recv,
            "STREAM_DATA_BLOCKED on this side's unidirectional stream",
        )?;
        self.get_or_open(id).map(drop)
    }
}
