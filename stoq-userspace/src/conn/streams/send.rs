//! The send half of streams: writing into stream buffers under flow control and the
//! send buffer's limits, the urgency scheduler that picks which stream's data goes next,
//! STREAM and control frames written into packets, and what an acknowledged or lost
//! packet does to them.

use super::{
    Ctrl, Dir, Half, Stream, StreamId, StreamRecord, Streams, Urgency, WEIGHTS, WriteError,
    recv_half, send_half,
};
use crate::conn::ranges::RangeSet;
use crate::conn::sendbuf::SendBuf;
use crate::conn::{ConnectionError, Event};
use crate::frame::{self, Out, ty};
use bytes::Bytes;
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FinState {
    /// The application has not finished.
    Open,
    /// Finished; the FIN still has to go out (or went out and was lost).
    Pending,
    /// Sent and in flight.
    Sent,
    /// Acknowledged.
    Acked,
}

#[derive(Debug)]
pub(super) struct Reset {
    pub(super) code: u64,
    pub(super) final_size: u64,
    pub(super) pending: bool,
    pub(super) acked: bool,
}

#[derive(Debug)]
pub(super) struct Send {
    /// Bytes from `base` to `written`: everything not yet acknowledged.
    pub(super) buf: SendBuf,
    pub(super) base: u64,
    pub(super) written: u64,
    /// Offset below which every byte was sent at least once.
    pub(super) sent: u64,
    /// Ranges below `sent` to send again.
    pub(super) retransmit: RangeSet,
    /// Acknowledged ranges above `base`.
    pub(super) acked: RangeSet,
    /// The peer's MAX_STREAM_DATA.
    pub(super) max_data: u64,
    pub(super) fin: FinState,
    pub(super) reset: Option<Reset>,
    /// STOP_SENDING code from the peer.
    pub(super) stopped: Option<u64>,
    pub(super) blocked_at: Option<u64>,
    pub(super) blocked_pending: bool,
    /// The application was told Blocked and waits for StreamWritable.
    pub(super) want_writable: bool,
    pub(super) queued: bool,
}

impl Send {
    pub(super) fn new(max_data: u64) -> Self {
        Self {
            buf: SendBuf::default(),
            base: 0,
            written: 0,
            sent: 0,
            retransmit: RangeSet::new(usize::MAX),
            acked: RangeSet::new(usize::MAX),
            max_data,
            fin: FinState::Open,
            reset: None,
            stopped: None,
            blocked_at: None,
            blocked_pending: false,
            want_writable: false,
            queued: false,
        }
    }

    /// Whether there is a STREAM frame to send (data or FIN), flow control aside for
    /// retransmissions.
    pub(super) fn has_data(&self) -> bool {
        if self.reset.is_some() {
            return false;
        }
        !self.retransmit.is_empty()
            || self.sent < self.written
            || (self.fin == FinState::Pending && self.sent == self.written)
    }

    /// Finished for good: the reset acknowledged, or every byte and the FIN acknowledged.
    /// The FIN's packet can be acknowledged before an earlier one that was lost: the
    /// stream is done only once that data is acknowledged too (its retransmission may
    /// still be in flight).
    pub(super) fn is_done(&self) -> bool {
        match &self.reset {
            Some(r) => r.acked,
            None => self.fin == FinState::Acked && self.base == self.written,
        }
    }
}

/// Queues stream `id` (`st`) at the back of its urgency level, unless it is queued already
/// or has nothing to send. A level waking up starts at the least virtual time of the busy
/// levels, so idleness earns it no credit to burst with later.
pub(super) fn schedule_in(
    levels: &mut [VecDeque<u64>; 4],
    vtime: &mut [u64; 4],
    id: u64,
    st: &mut Stream,
) {
    let u = st.urgency as usize;
    let Some(s) = st.send.as_mut() else {
        return;
    };
    if s.queued || !s.has_data() {
        return;
    }
    s.queued = true;
    if levels[u].is_empty() {
        let floor = (0..4)
            .filter(|&l| !levels[l].is_empty())
            .map(|l| vtime[l])
            .min();
        if let Some(f) = floor {
            vtime[u] = vtime[u].max(f);
        }
    }
    levels[u].push_back(id);
}

impl Streams {
    /// Bytes the application may still buffer before writes block.
    /// Bulk streams may fill only 7/8 of the connection's send buffer: the rest is kept
    /// for more urgent streams, so a bulk writer cannot lock them out of the buffer.
    pub(crate) fn send_capacity(&self, u: Urgency) -> u64 {
        let limit = if u == Urgency::Bulk {
            self.limits.send_buffer / 8 * 7
        } else {
            self.limits.send_buffer
        };
        limit.saturating_sub(self.buffered)
    }

    /// Bytes a write may take now: the send buffer's room, and no more than the backlog
    /// of bytes written but not yet sent allows. A writer far ahead of the wire waits for
    /// packets to leave, so what it wrote is still in cache when it is packed (copied
    /// into a packet and sealed) and it gets back-pressure from sending, not only from
    /// acknowledgements a window later. As with the buffer, bulk streams may fill only 7/8
    /// of the backlog, so a bulk writer cannot hold back a more urgent one.
    pub(super) fn write_room(&self, u: Urgency) -> u64 {
        let backlog = if u == Urgency::Bulk {
            self.send_backlog() / 8 * 7
        } else {
            self.send_backlog()
        };
        self.send_capacity(u)
            .min(backlog.saturating_sub(self.unsent))
    }

    pub(crate) fn write(
        &mut self,
        id: StreamId,
        data: &[u8],
        fin: bool,
    ) -> Result<usize, WriteError> {
        self.write_with(id, data.len(), fin, |b, n| b.push_slice(&data[..n]))
    }

    /// Writes the front of `data` without copying it (what fits; `data` keeps the rest).
    pub(crate) fn write_chunk(
        &mut self,
        id: StreamId,
        data: &mut Bytes,
    ) -> Result<usize, WriteError> {
        self.write_with(id, data.len(), false, |b, n| b.push_chunk(data.split_to(n)))
    }

    /// Takes up to `len` bytes into the stream's buffer with `push(buffer, n)`.
    pub(super) fn write_with(
        &mut self,
        id: StreamId,
        len: usize,
        fin: bool,
        push: impl FnOnce(&mut SendBuf, usize),
    ) -> Result<usize, WriteError> {
        let room = self.write_room(self.urgency(id).unwrap_or_default());
        let Some(s) = send_half(&mut self.map, id) else {
            return Err(WriteError::UnknownStream);
        };
        if let Some(code) = s.stopped {
            return Err(WriteError::Stopped(code));
        }
        if s.fin != FinState::Open || s.reset.is_some() {
            return Err(WriteError::Closed);
        }
        let n = (len as u64).min(room) as usize;
        if n == 0 && len > 0 {
            s.want_writable = true;
            self.blocked_writers = true;
            return Err(WriteError::Blocked);
        }
        push(&mut s.buf, n);
        s.written += n as u64;
        if fin && n == len {
            s.fin = FinState::Pending;
        }
        self.buffered += n as u64;
        self.unsent += n as u64;
        self.schedule(id.0);
        Ok(n)
    }

    pub(crate) fn finish(&mut self, id: StreamId) -> Result<(), WriteError> {
        self.write(id, &[], true).map(|_| ())
    }

    /// After the server refused this client's early data: nothing it sent in 0-RTT was
    /// read, so every stream's bytes go again from where the acknowledged prefix ends
    /// (nothing can be acknowledged before the server's answer), as fresh data under
    /// flow control, and connection-level credit starts over. Resets are sent again.
    pub(crate) fn rewind_refused_early(&mut self) {
        let mut tx_data = 0;
        for (&id, st) in &mut self.map {
            let Some(q) = st.send.as_mut() else {
                continue;
            };
            q.blocked_at = None;
            q.blocked_pending = false;
            if let Some(r) = q.reset.as_mut() {
                r.acked = false;
                if !r.pending {
                    r.pending = true;
                    self.ctrl.push_back(Ctrl::Reset(StreamId(id)));
                }
                tx_data += r.final_size;
                continue;
            }
            self.unsent += q.sent - q.base;
            q.sent = q.base;
            q.retransmit.clear();
            q.acked.clear();
            if q.fin == FinState::Sent {
                q.fin = FinState::Pending;
            }
            tx_data += q.base;
            schedule_in(&mut self.levels, &mut self.vtime, id, st);
        }
        self.tx_data = tx_data;
        self.data_blocked_at = None;
        self.data_blocked_pending = false;
    }

    /// Sets the flow-control window of every stream this side opened to the peer's
    /// initial one (after refused early data, the server's real limits replace the
    /// remembered ones).
    ///
    /// # Errors
    /// If more streams are open than the peer now allows.
    pub(crate) fn reset_send_windows(&mut self) -> Result<(), ()> {
        if self.next_local[0] > self.peer_max_streams[0]
            || self.next_local[1] > self.peer_max_streams[1]
        {
            return Err(());
        }
        for (&id, st) in &mut self.map {
            let sid = StreamId(id);
            if sid.initiator() != self.side {
                continue;
            }
            if let Some(q) = st.send.as_mut() {
                q.max_data = match sid.dir() {
                    Dir::Bi => self.peer_stream_window_bidi_remote,
                    Dir::Uni => self.peer_stream_window_uni,
                };
            }
        }
        Ok(())
    }

    pub(crate) fn reset(&mut self, id: StreamId, code: u64) -> Result<(), WriteError> {
        let Some(s) = send_half(&mut self.map, id) else {
            return Err(WriteError::UnknownStream);
        };
        if s.reset.is_some() || s.fin == FinState::Acked {
            return Err(WriteError::Closed);
        }
        self.buffered -= s.buf.len() as u64;
        self.unsent -= s.written - s.sent;
        s.buf.clear();
        s.retransmit.clear();
        s.reset = Some(Reset {
            code,
            // Bytes already sent count towards flow control; unsent ones never will.
            final_size: s.sent,
            pending: true,
            acked: false,
        });
        self.ctrl.push_back(Ctrl::Reset(id));
        Ok(())
    }

    pub(crate) fn on_stop_sending(
        &mut self,
        id: StreamId,
        code: u64,
    ) -> Result<(), ConnectionError> {
        self.check_half(
            id,
            Half::Send,
            "STOP_SENDING on the peer's unidirectional stream",
        )?;
        if !self.get_or_open(id)? {
            return Ok(());
        }
        // Past check_half, the stream has this half; gone means finished and freed.
        let Some(q) = send_half(&mut self.map, id) else {
            return Ok(());
        };
        if q.stopped.is_some() || q.reset.is_some() || q.fin == FinState::Acked {
            return Ok(());
        }
        q.stopped = Some(code);
        self.events.push_back(Event::StreamStopped { id, code });
        // Answer with RESET_STREAM (RFC 9000 §3.5).
        let _ = self.reset(id, code);
        Ok(())
    }

    pub(crate) fn on_max_data(&mut self, max: u64) {
        if max > self.peer_max_data {
            self.peer_max_data = max;
            self.wake_writers();
        }
    }

    pub(crate) fn on_max_stream_data(
        &mut self,
        id: StreamId,
        max: u64,
    ) -> Result<(), ConnectionError> {
        self.check_half(
            id,
            Half::Send,
            "MAX_STREAM_DATA on the peer's unidirectional stream",
        )?;
        if !self.get_or_open(id)? {
            return Ok(());
        }
        // Past check_half, the stream has this half; gone means finished and freed.
        let Some(q) = send_half(&mut self.map, id) else {
            return Ok(());
        };
        if max > q.max_data {
            q.max_data = max;
            self.schedule(id.0);
        }
        Ok(())
    }

    /// Schedules every stream with data to send (connection credit arrived). Walks the
    /// map in place: called per MAX_DATA frame, it allocates nothing.
    pub(super) fn wake_writers(&mut self) {
        let Self {
            map, levels, vtime, ..
        } = self;
        for (id, st) in map.iter_mut() {
            schedule_in(levels, vtime, *id, st);
        }
    }

    /// Whether a control frame or sendable stream data is waiting.
    pub(crate) fn wants_send(&self) -> bool {
        self.max_data_pending
            || self.data_blocked_pending
            || self.max_streams_pending.iter().any(|x| *x)
            || self.streams_blocked_pending.iter().any(|x| *x)
            || !self.ctrl.is_empty()
            || self.has_stream_data()
    }

    /// Whether a STREAM frame may be sendable now: some stream is queued with data.
    ///
    /// Asked for every packet, so it looks at the queues, not at each queued stream: a
    /// queued stream that flow control blocks says "yes" once, and the next
    /// [`write_streams`](Self::write_streams) takes it off its queue (raising its BLOCKED
    /// signal, which it writes in the same packet) until credit arrives and
    /// [`schedule`](Self::schedule) queues it again.
    pub(crate) fn has_stream_data(&self) -> bool {
        self.levels.iter().any(|l| !l.is_empty())
    }

    /// Writes control frames (flow-control credit, resets, stops, blocked signals) into
    /// `w`, recording each.
    pub(crate) fn write_control(&mut self, w: &mut Out<'_>, rec: &mut impl FnMut(StreamRecord)) {
        if self.max_data_pending
            && w.remaining() >= 9
            && frame::encode_varints(w, &[ty::MAX_DATA, self.local_max_data]).is_some()
        {
            self.max_data_pending = false;
            rec(StreamRecord::MaxData);
        }
        for (d, dir) in [Dir::Bi, Dir::Uni].into_iter().enumerate() {
            let t = [ty::MAX_STREAMS_BIDI, ty::MAX_STREAMS_UNI][d];
            if self.max_streams_pending[d]
                && frame::encode_varints(w, &[t, self.local_max_streams[d]]).is_some()
            {
                self.max_streams_pending[d] = false;
                rec(StreamRecord::MaxStreams(dir));
            }
            let t = [ty::STREAMS_BLOCKED_BIDI, ty::STREAMS_BLOCKED_UNI][d];
            if self.streams_blocked_pending[d]
                && frame::encode_varints(w, &[t, self.peer_max_streams[d]]).is_some()
            {
                self.streams_blocked_pending[d] = false;
                rec(StreamRecord::StreamsBlocked(dir));
            }
        }
        if self.data_blocked_pending
            && frame::encode_varints(w, &[ty::DATA_BLOCKED, self.peer_max_data]).is_some()
        {
            self.data_blocked_pending = false;
            rec(StreamRecord::DataBlocked);
        }
        while let Some(&c) = self.ctrl.front() {
            if w.remaining() < 25 {
                return;
            }
            self.ctrl.pop_front();
            match c {
                Ctrl::Reset(id) => {
                    let Some(q) = send_half(&mut self.map, id) else {
                        continue;
                    };
                    let Some(r) = q.reset.as_mut().filter(|r| r.pending) else {
                        continue;
                    };
                    let _ =
                        frame::encode_varints(w, &[ty::RESET_STREAM, id.0, r.code, r.final_size]);
                    r.pending = false;
                    rec(StreamRecord::Reset(id));
                }
                Ctrl::Stop(id) => {
                    let Some(r) = recv_half(&mut self.map, id) else {
                        continue;
                    };
                    if !r.stop_pending {
                        continue;
                    }
                    let code = r.stopped.unwrap_or(0);
                    let _ = frame::encode_varints(w, &[ty::STOP_SENDING, id.0, code]);
                    r.stop_pending = false;
                    rec(StreamRecord::Stop(id));
                }
                Ctrl::MaxStreamData(id) => {
                    let Some(r) = recv_half(&mut self.map, id) else {
                        continue;
                    };
                    if !r.max_pending {
                        continue;
                    }
                    r.max_pending = false;
                    if r.final_size.is_some() || r.reset.is_some() || r.stopped.is_some() {
                        continue;
                    }
                    let _ = frame::encode_varints(w, &[ty::MAX_STREAM_DATA, id.0, r.max_data]);
                    rec(StreamRecord::MaxStreamData(id));
                }
                Ctrl::StreamDataBlocked(id) => {
                    let Some(q) = send_half(&mut self.map, id) else {
                        continue;
                    };
                    if !q.blocked_pending {
                        continue;
                    }
                    q.blocked_pending = false;
                    let _ = frame::encode_varints(w, &[ty::STREAM_DATA_BLOCKED, id.0, q.max_data]);
                    rec(StreamRecord::StreamDataBlocked(id));
                }
            }
        }
    }

    /// The urgency level whose turn it is: the busy level with the least virtual time.
    pub(super) fn next_level(&self) -> Option<usize> {
        (0..4)
            .filter(|&l| !self.levels[l].is_empty())
            .min_by_key(|&l| (self.vtime[l], l))
    }

    /// Writes STREAM frames into `w` as the scheduler orders them, recording each.
    pub(crate) fn write_streams(&mut self, w: &mut Out<'_>, rec: &mut impl FnMut(StreamRecord)) {
        self.write_stream_frames(w, rec);
        if self.data_blocked_pending || !self.ctrl.is_empty() {
            // Flow control stopped a stream just now: say so in this packet.
            self.write_control(w, rec);
        }
        // Writers held back by the backlog may go on once enough of it has left.
        self.wake_writers_with_room();
    }

    pub(super) fn write_stream_frames(
        &mut self,
        w: &mut Out<'_>,
        rec: &mut impl FnMut(StreamRecord),
    ) {
        // Each iteration writes a frame or removes a stream from its level's queue, so this
        // ends; the cap guards the bound regardless.
        for _ in 0..256 {
            if w.remaining() < 16 {
                return;
            }
            let Some(l) = self.next_level() else {
                return;
            };
            let id = *self.levels[l].front().expect("non-empty level");
            let conn_credit = self.peer_max_data.saturating_sub(self.tx_data);
            let Some(q) = self.map.get_mut(&id).and_then(|s| s.send.as_mut()) else {
                self.levels[l].pop_front();
                continue;
            };
            let sid = StreamId(id);
            if q.reset.is_some() {
                // Reset after it was queued: nothing more goes out on it.
                q.queued = false;
                self.levels[l].pop_front();
                continue;
            }
            // Pick the range: retransmissions first, then fresh data within flow control.
            let (offset, avail, fresh) = if let Some(r) = q.retransmit.first() {
                (r.start, r.end - r.start, false)
            } else {
                let limit = q.written.min(q.max_data).min(q.sent + conn_credit);
                (q.sent, limit.saturating_sub(q.sent), true)
            };
            let fin_ready = q.fin == FinState::Pending;
            if avail == 0 && !(fresh && fin_ready && q.sent == q.written) {
                // Blocked by flow control (or nothing left): leave the queue.
                if fresh && q.sent < q.written {
                    if q.sent >= q.max_data && q.blocked_at != Some(q.max_data) {
                        q.blocked_at = Some(q.max_data);
                        q.blocked_pending = true;
                        self.ctrl.push_back(Ctrl::StreamDataBlocked(sid));
                    } else if conn_credit == 0 && self.data_blocked_at != Some(self.peer_max_data) {
                        self.data_blocked_at = Some(self.peer_max_data);
                        self.data_blocked_pending = true;
                    }
                }
                q.queued = false;
                self.levels[l].pop_front();
                continue;
            }
            let hdr = 1
                + frame::varint_len(id)
                + if offset > 0 {
                    frame::varint_len(offset)
                } else {
                    0
                }
                + 2;
            let room = w.remaining().saturating_sub(hdr) as u64;
            let n = avail.min(room).min(16383);
            if n == 0 && avail > 0 {
                return;
            }
            let end = offset + n;
            let fin = fin_ready && end == q.written;
            let at = (offset - q.base) as usize;
            let ok = frame::encode_stream_header(w, id, offset, n as usize, fin).is_some()
                && q.buf.copy_to(w, at, n as usize).is_some();
            if !ok {
                return;
            }
            if fresh {
                q.sent = end;
                self.tx_data += n;
                self.unsent -= n;
            } else {
                q.retransmit.remove(offset..end);
                self.retransmitted += n;
            }
            if fin {
                q.fin = FinState::Sent;
            }
            rec(StreamRecord::Data {
                id: sid,
                offset,
                len: n as u32,
                fin,
            });
            let w_l = WEIGHTS[l];
            self.vtime[l] += (n + hdr as u64).div_ceil(w_l).max(1);
            // Round robin within the level.
            self.levels[l].pop_front();
            if q.has_data() {
                self.levels[l].push_back(id);
            } else {
                q.queued = false;
            }
        }
    }

    pub(super) fn schedule(&mut self, id: u64) {
        if let Some(st) = self.map.get_mut(&id) {
            schedule_in(&mut self.levels, &mut self.vtime, id, st);
        }
    }

    /// Free send buffer a blocked writer waits for before it is woken: an eighth of the
    /// buffer, at most 256 KiB, and at most half of what the backlog lets a bulk writer
    /// hold (room it can actually get: a backlog under ~293 KiB once waited for 256 KiB
    /// it could never have, and its writer hung). Waking it for every acknowledged packet
    /// made writer and worker trade the CPU for a few kilobytes at a time (a context
    /// switch per ACK on a shared core).
    pub(super) fn wake_room(&self) -> u64 {
        (self.limits.send_buffer / 8)
            .min(256 << 10)
            .min(self.send_backlog() / 8 * 7 / 2)
            .max(1)
    }

    /// The backlog of unsent bytes this connection may hold now: the configured one, or
    /// less while its worker shares its budget with other busy senders
    /// ([`set_backlog_share`](Self::set_backlog_share)).
    pub(super) fn send_backlog(&self) -> u64 {
        self.limits.send_backlog.min(self.backlog_share)
    }

    /// Sets this connection's share of its worker's unsent-bytes budget. A larger share
    /// may free room a blocked writer waits for: it is told at once.
    pub(crate) fn set_backlog_share(&mut self, share: u64) {
        self.backlog_share = share;
        self.wake_writers_with_room();
    }

    /// Wakes the blocked writers once a bulk write has [`wake_room`](Self::wake_room) to
    /// go on with (after acknowledgements, packets leaving, or a larger backlog share).
    pub(super) fn wake_writers_with_room(&mut self) {
        if self.blocked_writers && self.write_room(Urgency::Bulk) >= self.wake_room() {
            self.wake_blocked_writers();
        }
    }

    /// Bytes written and not yet sent once.
    pub(crate) fn unsent(&self) -> u64 {
        self.unsent
    }

    pub(super) fn wake_blocked_writers(&mut self) {
        self.blocked_writers = false;
        for (id, s) in &mut self.map {
            if let Some(q) = s.send.as_mut().filter(|q| q.want_writable) {
                q.want_writable = false;
                self.events.push_back(Event::StreamWritable(StreamId(*id)));
            }
        }
    }

    /// Bytes written to send streams and not yet acknowledged.
    pub(crate) fn buffered(&self) -> u64 {
        self.buffered
    }

    /// Whether every stream this side sends on has all its data acknowledged.
    pub(crate) fn all_acked(&self) -> bool {
        self.buffered == 0
            && self.map.values().all(|s| {
                s.send
                    .as_ref()
                    .is_none_or(|q| q.is_done() || (q.fin == FinState::Open && q.base == q.written))
            })
    }

    /// Bytes sent on stream `id` so far and acknowledged so far (for messages).
    pub(crate) fn send_progress(&self, id: StreamId) -> Option<(u64, bool)> {
        let q = self.map.get(&id.0)?.send.as_ref()?;
        Some((q.base, q.is_done()))
    }
}
