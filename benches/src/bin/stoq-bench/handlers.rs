//! The request/response loop on STOQ's per-core API: worker [`Handler`]s on both sides,
//! so a message never crosses between the worker and an application thread. The async
//! subjects measure the API most applications use; these measure what a latency-bound
//! server (and client) gets from running its logic on the worker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use stoq::conn::{ConnectionHandle, Dir, Endpoint, Event, ReadError, StreamId};
use stoq::engine::{Handler, HandlerFactory};
use tokio::sync::mpsc::UnboundedSender;

const MSG: usize = 64;

/// Reads what a stream has; calls `on_bytes` with each chunk. Returns false when the
/// stream ended or failed.
fn drain(
    ep: &mut Endpoint,
    h: ConnectionHandle,
    id: StreamId,
    buf: &mut [u8],
    mut on_bytes: impl FnMut(&[u8]),
) -> bool {
    let Some(c) = ep.connection_mut(h) else {
        return false;
    };
    loop {
        match c.read(id, buf) {
            Ok(Some(n)) => on_bytes(&buf[..n]),
            Ok(None) => return false,
            Err(ReadError::Blocked) => return true,
            Err(_) => return false,
        }
    }
}

/// Writes as much of `pending` as the stream takes, dropping what was written.
fn flush(ep: &mut Endpoint, h: ConnectionHandle, id: StreamId, pending: &mut Vec<u8>) {
    let Some(c) = ep.connection_mut(h) else {
        pending.clear();
        return;
    };
    let mut off = 0;
    while off < pending.len() {
        match c.write(id, &pending[off..]) {
            Ok(k) if k > 0 => off += k,
            Ok(_) | Err(stoq::conn::WriteError::Blocked) => break,
            Err(_) => {
                off = pending.len();
            }
        }
    }
    pending.drain(..off);
}

/// The server: echoes every bidirectional stream, keeping what the stream could not
/// take yet until it is writable again.
struct Echo {
    buf: Vec<u8>,
    pending: HashMap<(ConnectionHandle, StreamId), Vec<u8>>,
}

impl Handler for Echo {
    fn on_event(&mut self, ep: &mut Endpoint, h: ConnectionHandle, e: &Event) {
        match *e {
            Event::StreamReadable(id) if id.dir() == Dir::Bi => {
                let out = self.pending.entry((h, id)).or_default();
                let open = drain(ep, h, id, &mut self.buf, |b| out.extend_from_slice(b));
                flush(ep, h, id, out);
                if !open && out.is_empty() {
                    self.pending.remove(&(h, id));
                }
            }
            Event::StreamWritable(id) => {
                if let Some(out) = self.pending.get_mut(&(h, id)) {
                    flush(ep, h, id, out);
                }
            }
            Event::Lost(_) => self.pending.retain(|(c, _), _| *c != h),
            _ => {}
        }
    }
}

/// The server's handler factory.
pub(crate) fn echo() -> Arc<dyn HandlerFactory> {
    Arc::new(|_worker: u8| -> Box<dyn Handler> {
        Box::new(Echo {
            buf: vec![0; 64 << 10],
            pending: HashMap::new(),
        })
    })
}

/// What the client's handler measured: round-trip times in nanoseconds and the seconds
/// they span.
pub(crate) type Measured = (Vec<u64>, f64);

/// The client: on each full 64-byte response, times the round trip and sends the next
/// request at once, until `secs` after the first response; then reports.
struct PingPong {
    secs: f64,
    buf: Vec<u8>,
    got: usize,
    sent_at: Option<Instant>,
    started: Option<Instant>,
    lat: Vec<u64>,
    /// The next request, or what of it the stream has not taken yet.
    out: Vec<u8>,
    done: Option<UnboundedSender<Measured>>,
}

impl Handler for PingPong {
    fn on_event(&mut self, ep: &mut Endpoint, h: ConnectionHandle, e: &Event) {
        let id = match *e {
            Event::StreamReadable(id) => id,
            Event::StreamWritable(id) => {
                flush(ep, h, id, &mut self.out);
                return;
            }
            Event::Lost(_) => {
                // Dropping the sender ends the waiting client with an error, not a hang.
                self.done = None;
                return;
            }
            _ => return,
        };
        if self.done.is_none() || id.dir() != Dir::Bi {
            return;
        }
        let mut got = self.got;
        drain(ep, h, id, &mut self.buf, |b| got += b.len());
        while got >= MSG {
            got -= MSG;
            let now = Instant::now();
            if let Some(s) = self.sent_at.take() {
                self.lat.push(now.duration_since(s).as_nanos() as u64);
            }
            let started = *self.started.get_or_insert(now);
            if now.duration_since(started).as_secs_f64() >= self.secs {
                if let Some(tx) = self.done.take() {
                    let secs = now.duration_since(started).as_secs_f64();
                    let _ = tx.send((std::mem::take(&mut self.lat), secs));
                }
                break;
            }
            self.sent_at = Some(Instant::now());
            self.out.extend_from_slice(&[7u8; MSG]);
            flush(ep, h, id, &mut self.out);
        }
        self.got = got;
    }
}

/// The client's handler factory; the measurement arrives on `done`.
pub(crate) fn ping_pong(secs: f64, done: UnboundedSender<Measured>) -> Arc<dyn HandlerFactory> {
    Arc::new(move |_worker: u8| -> Box<dyn Handler> {
        Box::new(PingPong {
            secs,
            buf: vec![0; 64 << 10],
            got: 0,
            sent_at: None,
            started: None,
            lat: Vec::with_capacity(1 << 20),
            out: Vec::with_capacity(MSG),
            done: Some(done.clone()),
        })
    })
}
