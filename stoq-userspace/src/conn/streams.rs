//! Streams: ordered, reliable byte streams with connection- and stream-level flow control,
//! stream limits, FIN, RESET_STREAM and STOP_SENDING, and a weighted-fair scheduler over
//! four urgency levels.
//!
//! Memory is bounded by what this side granted: a receive buffer never holds more than the
//! stream's advertised window, and a send buffer never more than the connection's send
//! budget. Out-of-order data is stored in place in a per-stream ring (no per-frame
//! allocation); the set of filled ranges is bounded, and a peer that fragments a stream
//! beyond it is closed with a typed error.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use bytes::Bytes;

use super::ranges::RangeSet;
use super::sendbuf::SendBuf;
use super::{ConnectionError, Event, Side};
use crate::frame::{self, Out, ty};
use crate::handshake::params::TransportParams;

/// Most disjoint out-of-order ranges a receive stream holds. An honest sender fragments a
/// stream only by losses within one window; a peer that sends every other byte of a window
/// is closed with [`ConnectionError::StreamFragmented`] instead of costing us memory.
pub(crate) const MAX_RX_FRAGMENTS: usize = 4096;
/// Error code of the RESET_STREAM sent when a message's deadline passes.
pub const MESSAGE_EXPIRED: u64 = 0x5354_4f51; // "STOQ"

/// A stream identifier (RFC 9000 §2.1): bit 0 is the initiator, bit 1 the direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl StreamId {
    /// The `index`-th stream of this initiator and direction.
    pub fn new(initiator: Side, dir: Dir, index: u64) -> Self {
        let s = u64::from(initiator == Side::Server);
        let d = if dir == Dir::Uni { 2 } else { 0 };
        Self(index << 2 | d | s)
    }

    /// Who opened the stream.
    pub fn initiator(self) -> Side {
        if self.0 & 1 == 0 {
            Side::Client
        } else {
            Side::Server
        }
    }

    /// Bidirectional or unidirectional.
    pub fn dir(self) -> Dir {
        if self.0 & 2 == 0 { Dir::Bi } else { Dir::Uni }
    }

    /// The stream's index among those of its initiator and direction.
    pub fn index(self) -> u64 {
        self.0 >> 2
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stream {}", self.0)
    }
}

/// A stream's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Both sides send.
    Bi,
    /// Only the initiator sends.
    Uni,
}

impl Dir {
    fn idx(self) -> usize {
        self as usize
    }
}

/// How urgently a stream's data should go out. The scheduler shares the path between
/// levels in proportion to their weights (64 : 16 : 4 : 1), so a lower level is slowed but
/// never starved; within a level, streams take turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Urgency {
    /// Signalling that everything else waits on.
    Control = 0,
    /// Real-time media.
    Media = 1,
    /// Small interactive messages.
    Interactive = 2,
    /// Bulk transfer (the default).
    #[default]
    Bulk = 3,
}

const WEIGHTS: [u64; 4] = [64, 16, 4, 1];

/// Why a stream could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The peer's stream limit is reached; a `StreamsAvailable` event follows when it
    /// grants more.
    #[error("the peer's stream limit is reached (wait for Event::StreamsAvailable)")]
    Blocked,
    /// The connection is not established or is closed.
    #[error("connection not established or closed")]
    NotConnected,
}

/// Why a write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The send buffer is full: wait for `Event::StreamWritable`.
    #[error("send buffer full (wait for Event::StreamWritable)")]
    Blocked,
    /// The peer asked us to stop sending, with this application code.
    #[error("peer stopped the stream with code {0}")]
    Stopped(u64),
    /// The stream was finished or reset by this side.
    #[error("stream already finished or reset")]
    Closed,
    /// No such stream, or it cannot send (the peer's unidirectional stream).
    #[error("unknown stream, or one this side cannot send on")]
    UnknownStream,
    /// The connection is not established or is closed.
    #[error("connection not established or closed")]
    NotConnected,
}

/// Why a read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// No data available yet: wait for `Event::StreamReadable`.
    #[error("no data yet (wait for Event::StreamReadable)")]
    Blocked,
    /// The peer reset the stream with this application code.
    #[error("peer reset the stream with code {0}")]
    Reset(u64),
    /// No such stream, or it cannot receive (this side's unidirectional stream).
    #[error("unknown stream, or one this side cannot receive on")]
    UnknownStream,
    /// This side called `stop` on the stream.
    #[error("stream stopped by this side")]
    Stopped,
}

/// Which frame a sent packet carried for streams: kept per packet so that a loss
/// retransmits exactly it and an ACK retires exactly it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamRecord {
    Data {
        id: StreamId,
        offset: u64,
        len: u32,
        fin: bool,
    },
    Reset(StreamId),
    Stop(StreamId),
    MaxStreamData(StreamId),
    MaxData,
    MaxStreams(Dir),
    DataBlocked,
    StreamDataBlocked(StreamId),
    StreamsBlocked(Dir),
}

/// Flow-control and limit settings for streams.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Receive window of bidirectional streams this side opens.
    pub(crate) local_bidi_window: u64,
    /// Receive window of bidirectional streams the peer opens.
    pub(crate) remote_bidi_window: u64,
    /// Window for the peer's unidirectional streams.
    pub(crate) uni_window: u64,
    /// Connection receive window.
    pub(crate) conn_window: u64,
    /// Streams the peer may have open, per direction.
    pub(crate) max_streams: [u64; 2],
    /// Most unacknowledged bytes buffered for sending, over all streams.
    pub(crate) send_buffer: u64,
    /// Most bytes written and not yet sent once, over all streams (see
    /// [`TransportConfig::send_backlog`](super::TransportConfig::send_backlog)).
    pub(crate) send_backlog: u64,
}

impl Limits {
    pub(crate) fn from_params(p: &TransportParams, send_buffer: u64, send_backlog: u64) -> Self {
        Self {
            local_bidi_window: p.initial_max_stream_data_bidi_local,
            remote_bidi_window: p.initial_max_stream_data_bidi_remote,
            uni_window: p.initial_max_stream_data_uni,
            conn_window: p.initial_max_data,
            max_streams: [p.initial_max_streams_bidi, p.initial_max_streams_uni],
            send_buffer,
            send_backlog,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FinState {
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
struct Reset {
    code: u64,
    final_size: u64,
    pending: bool,
    acked: bool,
}

#[derive(Debug)]
struct Send {
    /// Bytes from `base` to `written`: everything not yet acknowledged.
    buf: SendBuf,
    base: u64,
    written: u64,
    /// Offset below which every byte was sent at least once.
    sent: u64,
    /// Ranges below `sent` to send again.
    retransmit: RangeSet,
    /// Acknowledged ranges above `base`.
    acked: RangeSet,
    /// The peer's MAX_STREAM_DATA.
    max_data: u64,
    fin: FinState,
    reset: Option<Reset>,
    /// STOP_SENDING code from the peer.
    stopped: Option<u64>,
    blocked_at: Option<u64>,
    blocked_pending: bool,
    /// The application was told Blocked and waits for StreamWritable.
    want_writable: bool,
    queued: bool,
}

impl Send {
    fn new(max_data: u64) -> Self {
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
    fn has_data(&self) -> bool {
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
    fn is_done(&self) -> bool {
        match &self.reset {
            Some(r) => r.acked,
            None => self.fin == FinState::Acked && self.base == self.written,
        }
    }
}

#[derive(Debug)]
struct Recv {
    /// Bytes from `base` (the read offset) up to the highest offset received.
    buf: VecDeque<u8>,
    base: u64,
    filled: RangeSet,
    /// The MAX_STREAM_DATA we advertised.
    max_data: u64,
    window: u64,
    highest: u64,
    final_size: Option<u64>,
    reset: Option<u64>,
    /// The application read the reset (or EOF): the receive side is finished.
    done: bool,
    stopped: Option<u64>,
    stop_pending: bool,
    max_pending: bool,
    readable_signalled: bool,
}

impl Recv {
    fn new(window: u64) -> Self {
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
        }
    }

    fn readable(&self) -> bool {
        self.reset.is_some()
            || self.filled.first().is_some_and(|r| r.start <= self.base)
            || self.final_size == Some(self.base)
    }
}

#[derive(Debug)]
struct Stream {
    send: Option<Send>,
    recv: Option<Recv>,
    urgency: Urgency,
}

/// A multiplicative hasher for stream IDs (small integers, chosen by us or bounded by our
/// limits), cheaper than SipHash on the per-packet path.
#[derive(Debug, Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    }
}

type Map = HashMap<u64, Stream, BuildHasherDefault<IdHasher>>;

/// Which half of a stream a frame acts on, from this side's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Half {
    Send,
    Recv,
}

/// Control frames waiting to go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctrl {
    Reset(StreamId),
    Stop(StreamId),
    MaxStreamData(StreamId),
    StreamDataBlocked(StreamId),
}

/// All of a connection's streams.
#[derive(Debug)]
pub(crate) struct Streams {
    side: Side,
    map: Map,
    limits: Limits,
    /// Next index this side opens, per direction.
    next_local: [u64; 2],
    /// The peer's limit on streams we open.
    peer_max_streams: [u64; 2],
    streams_blocked_pending: [bool; 2],
    /// Streams the peer opened (highest index + 1), closed, and the limit we advertised.
    remote_opened: [u64; 2],
    remote_closed: [u64; 2],
    local_max_streams: [u64; 2],
    max_streams_pending: [bool; 2],
    /// Opened by the peer, not yet accepted by the application.
    incoming: [VecDeque<StreamId>; 2],
    /// Peer windows for streams we open (bidi) and for uni streams.
    peer_stream_window_bidi_local: u64,
    peer_stream_window_bidi_remote: u64,
    peer_stream_window_uni: u64,
    /// Connection flow control, sending.
    peer_max_data: u64,
    tx_data: u64,
    data_blocked_at: Option<u64>,
    data_blocked_pending: bool,
    /// Connection flow control, receiving.
    local_max_data: u64,
    rx_highest: u64,
    rx_consumed: u64,
    max_data_pending: bool,
    /// Bytes buffered for sending over all streams (not yet acknowledged).
    buffered: u64,
    /// Of those, bytes not yet sent once.
    unsent: u64,
    /// STREAM bytes sent again after a loss.
    pub(crate) retransmitted: u64,
    /// Some write returned Blocked since the last wake-up.
    blocked_writers: bool,
    /// Bytes held in receive buffers (filled or not, up to the highest offset received).
    rx_buffered: u64,
    ctrl: VecDeque<Ctrl>,
    /// Weighted-fair scheduler: per level, streams with data and the level's virtual time.
    levels: [VecDeque<u64>; 4],
    vtime: [u64; 4],
    pub(crate) events: VecDeque<Event>,
}

/// The peer's transport parameters that concern streams.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerLimits {
    pub(crate) max_data: u64,
    pub(crate) bidi_local: u64,
    pub(crate) bidi_remote: u64,
    pub(crate) uni: u64,
    pub(crate) max_streams_bidi: u64,
    pub(crate) max_streams_uni: u64,
}

impl Streams {
    pub(crate) fn new(side: Side, limits: Limits) -> Self {
        Self {
            side,
            map: Map::default(),
            limits,
            next_local: [0; 2],
            peer_max_streams: [0; 2],
            streams_blocked_pending: [false; 2],
            remote_opened: [0; 2],
            remote_closed: [0; 2],
            local_max_streams: limits.max_streams,
            max_streams_pending: [false; 2],
            incoming: [VecDeque::new(), VecDeque::new()],
            peer_stream_window_bidi_local: 0,
            peer_stream_window_bidi_remote: 0,
            peer_stream_window_uni: 0,
            peer_max_data: 0,
            tx_data: 0,
            data_blocked_at: None,
            data_blocked_pending: false,
            local_max_data: limits.conn_window,
            rx_highest: 0,
            rx_consumed: 0,
            max_data_pending: false,
            buffered: 0,
            unsent: 0,
            retransmitted: 0,
            blocked_writers: false,
            rx_buffered: 0,
            ctrl: VecDeque::new(),
            levels: Default::default(),
            vtime: [0; 4],
            events: VecDeque::new(),
        }
    }

    /// Takes the peer's limits once its transport parameters are authenticated.
    pub(crate) fn set_peer_limits(&mut self, p: PeerLimits) {
        self.peer_max_data = p.max_data;
        self.peer_stream_window_bidi_local = p.bidi_local;
        self.peer_stream_window_bidi_remote = p.bidi_remote;
        self.peer_stream_window_uni = p.uni;
        self.peer_max_streams = [p.max_streams_bidi, p.max_streams_uni];
    }

    /// Changes the receive windows on a live connection. Larger windows are announced at
    /// once; smaller ones take effect as credit is consumed (granted credit is never
    /// withdrawn).
    pub(crate) fn set_windows(&mut self, stream: u64, conn: u64) {
        self.limits.local_bidi_window = stream;
        self.limits.remote_bidi_window = stream;
        self.limits.uni_window = stream;
        self.limits.conn_window = conn;
        let ids: Vec<u64> = self.map.keys().copied().collect();
        for id in ids {
            if let Some(r) = self.map.get_mut(&id).and_then(|s| s.recv.as_mut()) {
                r.window = stream;
                if r.final_size.is_none() && r.base + stream > r.max_data && !r.max_pending {
                    r.max_data = r.base + stream;
                    r.max_pending = true;
                    self.ctrl.push_back(Ctrl::MaxStreamData(StreamId(id)));
                }
            }
        }
        if self.rx_consumed + conn > self.local_max_data {
            self.local_max_data = self.rx_consumed + conn;
            self.max_data_pending = true;
        }
    }

    /// Number of open streams.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Bytes held: unacknowledged send data plus received data not yet read.
    pub(crate) fn memory(&self) -> u64 {
        self.buffered + self.rx_buffered
    }

    // ----- Application side ---------------------------------------------------------------

    pub(crate) fn open(&mut self, dir: Dir) -> Result<StreamId, OpenError> {
        let d = dir.idx();
        if self.next_local[d] >= self.peer_max_streams[d] {
            self.streams_blocked_pending[d] = true;
            return Err(OpenError::Blocked);
        }
        let id = StreamId::new(self.side, dir, self.next_local[d]);
        self.next_local[d] += 1;
        let window = match dir {
            Dir::Bi => self.peer_stream_window_bidi_remote,
            Dir::Uni => self.peer_stream_window_uni,
        };
        let recv = (dir == Dir::Bi).then(|| Recv::new(self.limits.local_bidi_window));
        self.map.insert(
            id.0,
            Stream {
                send: Some(Send::new(window)),
                recv,
                urgency: Urgency::default(),
            },
        );
        Ok(id)
    }

    pub(crate) fn accept(&mut self, dir: Dir) -> Option<StreamId> {
        self.incoming[dir.idx()].pop_front()
    }

    pub(crate) fn set_urgency(&mut self, id: StreamId, u: Urgency) -> bool {
        let Some(s) = self.map.get_mut(&id.0) else {
            return false;
        };
        if s.urgency != u {
            let old = s.urgency;
            s.urgency = u;
            if let Some(q) = s.send.as_mut().filter(|q| q.queued) {
                q.queued = false;
                self.levels[old as usize].retain(|x| *x != id.0);
                self.schedule(id.0);
            }
        }
        true
    }

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
    fn write_room(&self, u: Urgency) -> u64 {
        let backlog = if u == Urgency::Bulk {
            self.limits.send_backlog / 8 * 7
        } else {
            self.limits.send_backlog
        };
        self.send_capacity(u)
            .min(backlog.saturating_sub(self.unsent))
    }

    /// The urgency of stream `id`.
    pub(crate) fn urgency(&self, id: StreamId) -> Option<Urgency> {
        self.map.get(&id.0).map(|s| s.urgency)
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
    fn write_with(
        &mut self,
        id: StreamId,
        len: usize,
        fin: bool,
        push: impl FnOnce(&mut SendBuf, usize),
    ) -> Result<usize, WriteError> {
        let room = self.write_room(self.urgency(id).unwrap_or_default());
        let Some(s) = self.map.get_mut(&id.0).and_then(|s| s.send.as_mut()) else {
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

    pub(crate) fn reset(&mut self, id: StreamId, code: u64) -> Result<(), WriteError> {
        let Some(s) = self.map.get_mut(&id.0).and_then(|s| s.send.as_mut()) else {
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

    pub(crate) fn stop(&mut self, id: StreamId, code: u64) -> Result<(), ReadError> {
        let Some(r) = self.map.get_mut(&id.0).and_then(|s| s.recv.as_mut()) else {
            return Err(ReadError::UnknownStream);
        };
        if r.stopped.is_some() || r.done {
            return Ok(());
        }
        r.stopped = Some(code);
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
        let Some(r) = self.map.get_mut(&id.0).and_then(|s| s.recv.as_mut()) else {
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
        drain_front(&mut r.buf, n);
        self.rx_buffered -= n as u64;
        r.base += n as u64;
        r.filled.remove_below(r.base);
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
        self.rx_consumed += n as u64;
        self.credit_conn();
        Ok(Some(n))
    }

    fn credit_conn(&mut self) {
        let w = self.limits.conn_window;
        if self.local_max_data - self.rx_consumed.min(self.local_max_data) < w / 2 {
            self.local_max_data = self.rx_consumed + w;
            self.max_data_pending = true;
        }
    }

    fn schedule(&mut self, id: u64) {
        if let Some(st) = self.map.get_mut(&id) {
            schedule_in(&mut self.levels, &mut self.vtime, id, st);
        }
    }

    fn maybe_free(&mut self, id: StreamId) {
        let Some(s) = self.map.get(&id.0) else {
            return;
        };
        let send_done = s.send.as_ref().is_none_or(Send::is_done);
        let recv_done = s.recv.as_ref().is_none_or(|r| r.done);
        if !(send_done && recv_done) {
            return;
        }
        self.map.remove(&id.0);
        if id.initiator() != self.side {
            let d = id.dir().idx();
            self.remote_closed[d] += 1;
            let limit = self.remote_closed[d] + self.limits.max_streams[d];
            if limit > self.local_max_streams[d] {
                self.local_max_streams[d] = limit;
                self.max_streams_pending[d] = true;
            }
        }
    }

    // ----- Receiving frames -------------------------------------------------------------

    /// Finds (or, for the peer's streams, opens) the stream `id`. `Ok(false)`: a stream
    /// that existed and is finished, so the frame is a late duplicate.
    fn get_or_open(&mut self, id: StreamId) -> Result<bool, ConnectionError> {
        let d = id.dir().idx();
        if id.initiator() == self.side {
            if id.index() >= self.next_local[d] {
                return Err(ConnectionError::StreamState(
                    "frame for a stream this side never opened",
                ));
            }
            return Ok(self.map.contains_key(&id.0));
        }
        if id.index() >= self.local_max_streams[d] {
            return Err(ConnectionError::StreamLimit);
        }
        while self.remote_opened[d] <= id.index() {
            let new = StreamId::new(id.initiator(), id.dir(), self.remote_opened[d]);
            self.remote_opened[d] += 1;
            let (send, window) = match id.dir() {
                Dir::Bi => (
                    Some(Send::new(self.peer_stream_window_bidi_local)),
                    self.limits.remote_bidi_window,
                ),
                Dir::Uni => (None, self.limits.uni_window),
            };
            self.map.insert(
                new.0,
                Stream {
                    send,
                    recv: Some(Recv::new(window)),
                    urgency: Urgency::default(),
                },
            );
            self.incoming[d].push_back(new);
            self.events.push_back(Event::StreamOpened(id.dir()));
        }
        Ok(self.map.contains_key(&id.0))
    }

    /// A unidirectional stream has only its initiator's sending half and the other
    /// side's receiving half: a frame acting on the `half` this side lacks is a
    /// STREAM_STATE_ERROR (`what` names it). Bidirectional streams have both.
    fn check_half(
        &self,
        id: StreamId,
        half: Half,
        what: &'static str,
    ) -> Result<(), ConnectionError> {
        let ours = id.initiator() == self.side;
        if id.dir() == Dir::Uni && ours != (half == Half::Send) {
            return Err(ConnectionError::StreamState(what));
        }
        Ok(())
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
        let Some(r) = self.map.get_mut(&id.0).and_then(|s| s.recv.as_mut()) else {
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
        let Some(r) = self.map.get_mut(&id.0).and_then(|s| s.recv.as_mut()) else {
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
        let Some(q) = self.map.get_mut(&id.0).and_then(|s| s.send.as_mut()) else {
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
        let Some(q) = self.map.get_mut(&id.0).and_then(|s| s.send.as_mut()) else {
            return Ok(());
        };
        if max > q.max_data {
            q.max_data = max;
            self.schedule(id.0);
        }
        Ok(())
    }

    pub(crate) fn on_max_streams(&mut self, dir: Dir, count: u64) -> Result<(), ConnectionError> {
        if count > 1 << 60 {
            return Err(ConnectionError::FrameEncoding(frame::FrameError {
                ty: ty::MAX_STREAMS_BIDI,
                reason: "MAX_STREAMS above 2^60",
            }));
        }
        let d = dir.idx();
        if count > self.peer_max_streams[d] {
            let was_blocked = self.next_local[d] >= self.peer_max_streams[d];
            self.peer_max_streams[d] = count;
            if was_blocked {
                self.events.push_back(Event::StreamsAvailable(dir));
            }
        }
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

    /// Schedules every stream with data to send (connection credit arrived). Walks the
    /// map in place: called per MAX_DATA frame, it allocates nothing.
    fn wake_writers(&mut self) {
        let Self {
            map, levels, vtime, ..
        } = self;
        for (id, st) in map.iter_mut() {
            schedule_in(levels, vtime, *id, st);
        }
    }

    // ----- Sending frames ----------------------------------------------------------------

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
                    let Some(q) = self.map.get_mut(&id.0).and_then(|s| s.send.as_mut()) else {
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
                    let Some(r) = self.map.get_mut(&id.0).and_then(|s| s.recv.as_mut()) else {
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
                    let Some(r) = self.map.get_mut(&id.0).and_then(|s| s.recv.as_mut()) else {
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
                    let Some(q) = self.map.get_mut(&id.0).and_then(|s| s.send.as_mut()) else {
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
    fn next_level(&self) -> Option<usize> {
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
        if self.blocked_writers && self.write_room(Urgency::Bulk) >= self.wake_room() {
            self.wake_blocked_writers();
        }
    }

    fn write_stream_frames(&mut self, w: &mut Out<'_>, rec: &mut impl FnMut(StreamRecord)) {
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

    // ----- ACKs and losses -----------------------------------------------------------------

    pub(crate) fn on_acked(&mut self, r: StreamRecord) {
        match r {
            StreamRecord::Data {
                id,
                offset,
                len,
                fin,
            } => {
                let Some(q) = self.map.get_mut(&id.0).and_then(|s| s.send.as_mut()) else {
                    return;
                };
                if q.reset.is_some() {
                    return;
                }
                // Only what is still buffered: a range below `base` was released already.
                let start = offset.max(q.base);
                let end = offset + u64::from(len);
                if start < end {
                    q.acked.insert(start..end);
                }
                if fin {
                    q.fin = FinState::Acked;
                }
                // Release the acknowledged prefix.
                if let Some(first) = q
                    .acked
                    .first()
                    .filter(|f| f.start <= q.base && f.end > q.base)
                {
                    let n = (first.end - q.base) as usize;
                    q.buf.drain_front(n);
                    q.base = first.end;
                    q.acked.remove_below(q.base);
                    q.retransmit.remove_below(q.base);
                    self.buffered -= n as u64;
                }
                let done = q.is_done() && q.base == q.written;
                if done {
                    self.events.push_back(Event::StreamFinished(id));
                    self.maybe_free(id);
                }
                if self.blocked_writers && self.write_room(Urgency::Bulk) >= self.wake_room() {
                    self.wake_blocked_writers();
                }
            }
            StreamRecord::Reset(id) => {
                if let Some(r) = self
                    .map
                    .get_mut(&id.0)
                    .and_then(|s| s.send.as_mut())
                    .and_then(|q| q.reset.as_mut())
                {
                    r.acked = true;
                }
                self.maybe_free(id);
            }
            _ => {}
        }
    }

    /// Free send buffer a blocked writer waits for before it is woken: an eighth of the
    /// buffer, at most 256 KiB. Waking it for every acknowledged packet made writer and
    /// worker trade the CPU for a few kilobytes at a time (a context switch per ACK on
    /// a shared core).
    fn wake_room(&self) -> u64 {
        (self.limits.send_buffer / 8).clamp(1, 256 << 10)
    }

    fn wake_blocked_writers(&mut self) {
        self.blocked_writers = false;
        for (id, s) in &mut self.map {
            if let Some(q) = s.send.as_mut().filter(|q| q.want_writable) {
                q.want_writable = false;
                self.events.push_back(Event::StreamWritable(StreamId(*id)));
            }
        }
    }

    pub(crate) fn on_lost(&mut self, r: StreamRecord) {
        match r {
            StreamRecord::Data {
                id,
                offset,
                len,
                fin,
            } => {
                let Some(q) = self.map.get_mut(&id.0).and_then(|s| s.send.as_mut()) else {
                    return;
                };
                if q.reset.is_some() {
                    return;
                }
                let end = offset + u64::from(len);
                let start = offset.max(q.base);
                if start < end {
                    q.retransmit.insert(start..end);
                    q.retransmit.subtract(&q.acked);
                }
                if fin && q.fin == FinState::Sent {
                    q.fin = FinState::Pending;
                }
                self.schedule(id.0);
            }
            StreamRecord::Reset(id) => {
                if let Some(r) = self
                    .map
                    .get_mut(&id.0)
                    .and_then(|s| s.send.as_mut())
                    .and_then(|q| q.reset.as_mut())
                    .filter(|r| !r.acked)
                {
                    r.pending = true;
                    self.ctrl.push_back(Ctrl::Reset(id));
                }
            }
            StreamRecord::Stop(id) => {
                if let Some(r) = self
                    .map
                    .get_mut(&id.0)
                    .and_then(|s| s.recv.as_mut())
                    .filter(|r| r.final_size.is_none() && r.stopped.is_some())
                {
                    r.stop_pending = true;
                    self.ctrl.push_back(Ctrl::Stop(id));
                }
            }
            StreamRecord::MaxStreamData(id) => {
                if let Some(r) = self.map.get_mut(&id.0).and_then(|s| s.recv.as_mut())
                    && !r.max_pending
                    && r.final_size.is_none()
                {
                    r.max_pending = true;
                    self.ctrl.push_back(Ctrl::MaxStreamData(id));
                }
            }
            StreamRecord::MaxData => self.max_data_pending = true,
            StreamRecord::MaxStreams(d) => self.max_streams_pending[d.idx()] = true,
            // Blocked signals are advisory: a newer one is sent if still blocked.
            StreamRecord::DataBlocked
            | StreamRecord::StreamDataBlocked(_)
            | StreamRecord::StreamsBlocked(_) => {}
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

/// Writes `data` at position `at` of `buf`, growing it (zero-filled) as needed. In-order
/// data, the common case, is appended with one copy and no zero-fill.
fn ring_write(buf: &mut VecDeque<u8>, at: usize, data: &[u8]) {
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
fn ring_eq(buf: &VecDeque<u8>, at: usize, data: &[u8]) -> bool {
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
fn drain_front(buf: &mut VecDeque<u8>, n: usize) {
    if n >= buf.len() {
        buf.clear();
    } else {
        buf.drain(..n);
    }
}

/// Queues stream `id` (`st`) at the back of its urgency level, unless it is queued already
/// or has nothing to send. A level waking up starts at the least virtual time of the busy
/// levels, so idleness earns it no credit to burst with later.
fn schedule_in(levels: &mut [VecDeque<u64>; 4], vtime: &mut [u64; 4], id: u64, st: &mut Stream) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, Iter};

    /// A megabyte of everything: windows, send buffer and backlog.
    fn limits() -> Limits {
        Limits {
            local_bidi_window: 1 << 20,
            remote_bidi_window: 1 << 20,
            uni_window: 1 << 20,
            conn_window: 1 << 20,
            max_streams: [16, 16],
            send_buffer: 1 << 20,
            send_backlog: 1 << 20,
        }
    }

    /// One packet's worth of frames from `write_control` then `write_streams`, as the
    /// connection writes them.
    fn packet(s: &mut Streams) -> Vec<u8> {
        let mut buf = vec![0u8; 1200];
        let mut w = Out::new(&mut buf);
        s.write_control(&mut w, &mut |_| {});
        s.write_streams(&mut w, &mut |_| {});
        let n = w.len();
        buf.truncate(n);
        buf
    }

    /// The FIN's packet acknowledged before an earlier packet that was lost, and the
    /// receive side finished: the stream must live until the lost data is retransmitted
    /// and acknowledged. It used to be freed at once: the lost bytes were never sent again
    /// and their buffer space never returned (a simulator seed idled out with 252 KB
    /// counted as buffered by no stream, every later Bulk write refused).
    #[test]
    fn a_stream_whose_fin_is_acknowledged_first_waits_for_its_lost_data() {
        let mut s = Streams::new(Side::Client, limits());
        s.set_peer_limits(PeerLimits {
            max_data: 1 << 20,
            bidi_local: 0,
            bidi_remote: 1 << 20,
            uni: 1 << 20,
            max_streams_bidi: 4,
            max_streams_uni: 4,
        });
        let id = s.open(Dir::Bi).unwrap();
        assert_eq!(s.write(id, &[7u8; 2000], false).unwrap(), 2000);
        s.finish(id).unwrap();
        // Two packets: the first 1,200-byte one, then the rest with the FIN.
        let mut recs = Vec::new();
        while s.has_stream_data() {
            let mut buf = vec![0u8; 1200];
            let mut w = Out::new(&mut buf);
            s.write_streams(&mut w, &mut |r| recs.push(r));
        }
        assert!(recs.len() >= 2, "{recs:?}");
        let (first, rest) = recs.split_first().unwrap();
        for r in rest {
            s.on_acked(*r);
        }
        s.on_lost(*first);
        // The peer's answer arrives whole and is read: the receive side is done.
        s.on_stream(id, 0, b"answer", true).unwrap();
        let mut out = [0u8; 64];
        while let Ok(Some(_)) = s.read(id, &mut out) {}
        assert_eq!(
            s.len(),
            1,
            "the stream lives until its lost data is acknowledged"
        );
        assert!(!s.all_acked());
        assert!(s.has_stream_data(), "the lost data is sent again");
        let mut again = Vec::new();
        while s.has_stream_data() {
            let mut buf = vec![0u8; 1200];
            let mut w = Out::new(&mut buf);
            s.write_streams(&mut w, &mut |r| again.push(r));
        }
        for r in again {
            s.on_acked(r);
        }
        assert_eq!(s.buffered(), 0, "every buffered byte returned");
        assert_eq!(s.len(), 0, "freed once everything was acknowledged");
    }

    #[test]
    fn a_flow_blocked_stream_says_so_once_and_resumes_with_credit() {
        let mut s = Streams::new(Side::Client, limits());
        s.set_peer_limits(PeerLimits {
            max_data: 1 << 20,
            bidi_local: 0,
            bidi_remote: 0,
            uni: 1000,
            max_streams_bidi: 0,
            max_streams_uni: 4,
        });
        let id = s.open(Dir::Uni).unwrap();
        assert_eq!(s.write(id, &[7u8; 3000], false).unwrap(), 3000);
        assert!(s.has_stream_data());
        // The first packet carries the 1,000 bytes the window allows, and says the stream
        // is blocked at 1,000 in the same packet.
        let p = packet(&mut s);
        let frames: Vec<Frame<'_>> = Iter::new(&p).map(Result::unwrap).collect();
        assert!(
            matches!(frames[0], Frame::Stream { offset: 0, data, .. } if data.len() == 1000),
            "{frames:?}"
        );
        assert!(
            frames.iter().any(|f| matches!(
                f,
                Frame::StreamDataBlocked { id: i, limit: 1000 } if *i == id.0
            )),
            "{frames:?}"
        );
        // Blocked: nothing more is sendable, and the signal is not repeated.
        assert!(!s.has_stream_data());
        assert!(packet(&mut s).is_empty());
        // Credit requeues the stream.
        s.on_max_stream_data(id, 5000).unwrap();
        assert!(s.has_stream_data());
        let p = packet(&mut s);
        let frames: Vec<Frame<'_>> = Iter::new(&p).map(Result::unwrap).collect();
        assert!(
            matches!(frames[0], Frame::Stream { offset: 1000, data, .. } if data.len() > 1000),
            "{frames:?}"
        );
    }
}
