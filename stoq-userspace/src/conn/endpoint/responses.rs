//! The queue of stateless responses (Retry, Version Negotiation, stateless reset, refusal)
//! waiting for the next `poll_transmit`.
//!
//! It is bounded in bytes, not in entries: the worker drains it once per turn, and one turn
//! may receive thousands of token-less Initials at once (a receive batch of 64 GRO
//! super-datagrams of 64 KiB holds about 3,500 of them from many connections sharing one
//! client socket). A count bound small enough for a flood of 1,200-byte refusals dropped the
//! Retries of such a burst, and each dropped Retry cost its client a probe timeout (1 s,
//! then 2 s, then 4 s). The byte bound holds about 4,000 Retries or 400 refusals, and a
//! flood still cannot grow memory past it. Small buffers are kept for reuse, so a worker
//! answering a flood with Retries allocates only until it has enough of them.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use super::super::{EcnCodepoint, Transmit};

/// Bytes of queued responses at most; past it responses are dropped and counted.
pub(super) const MAX_QUEUED_BYTES: usize = 512 << 10;
/// Buffers no larger than this are kept for reuse (Retry, Version Negotiation, reset).
const REUSED_CAPACITY: usize = 256;
/// Spare buffers kept at most.
const MAX_SPARE: usize = MAX_QUEUED_BYTES / 128;

/// One queued response.
#[derive(Debug)]
struct Response {
    to: SocketAddr,
    /// The local address to send from, when known.
    from_ip: Option<IpAddr>,
    datagram: Vec<u8>,
}

/// The bounded queue of stateless responses, with its spare buffers.
#[derive(Debug, Default)]
pub(super) struct Responses {
    queue: VecDeque<Response>,
    /// Bytes of the datagrams in `queue`.
    bytes: usize,
    spare: Vec<Vec<u8>>,
}

impl Responses {
    /// A zeroed buffer of `len` bytes for a response, reused when one is spare.
    pub(super) fn buffer(&mut self, len: usize) -> Vec<u8> {
        match self.spare.pop() {
            Some(mut b) if len <= REUSED_CAPACITY => {
                b.clear();
                b.resize(len, 0);
                b
            }
            other => {
                if let Some(b) = other {
                    self.spare.push(b);
                }
                vec![0; len]
            }
        }
    }

    /// Queues `datagram` for `to`; `false` (and the buffer dropped) when the queue is full.
    pub(super) fn push(
        &mut self,
        to: SocketAddr,
        from_ip: Option<IpAddr>,
        datagram: Vec<u8>,
    ) -> bool {
        if self.bytes + datagram.len() > MAX_QUEUED_BYTES {
            self.recycle(datagram);
            return false;
        }
        self.bytes += datagram.len();
        self.queue.push_back(Response {
            to,
            from_ip,
            datagram,
        });
        true
    }

    /// Writes the next response that fits into `buf` and describes it; responses larger
    /// than `buf` are dropped, each counted in `too_large`.
    pub(super) fn pop_into(&mut self, buf: &mut [u8], too_large: &mut u64) -> Option<Transmit> {
        while let Some(r) = self.queue.pop_front() {
            self.bytes -= r.datagram.len();
            let size = r.datagram.len();
            let fits = size <= buf.len();
            if fits {
                buf[..size].copy_from_slice(&r.datagram);
            }
            self.recycle(r.datagram);
            if !fits {
                *too_large += 1;
                continue;
            }
            return Some(Transmit {
                destination: r.to,
                size,
                ecn: EcnCodepoint::NotEct,
                src_ip: r.from_ip,
            });
        }
        None
    }

    fn recycle(&mut self, b: Vec<u8>) {
        if b.capacity() <= REUSED_CAPACITY && self.spare.len() < MAX_SPARE {
            self.spare.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to() -> SocketAddr {
        "10.200.0.1:4433".parse().unwrap()
    }

    #[test]
    fn bounded_in_bytes_and_drained_in_order() {
        let mut r = Responses::default();
        let mut n = 0u32;
        loop {
            let mut b = r.buffer(120);
            b[..4].copy_from_slice(&n.to_be_bytes());
            if !r.push(to(), None, b) {
                break;
            }
            n += 1;
        }
        // 4,000 Retries fit (the burst a GRO receive batch can hold); no more than the bound.
        assert_eq!(n as usize, MAX_QUEUED_BYTES / 120);
        assert!(n >= 4_000);
        let mut buf = [0u8; 1500];
        let mut too_large = 0;
        for i in 0..n {
            let t = r.pop_into(&mut buf, &mut too_large).expect("queued");
            assert_eq!(t.size, 120);
            assert_eq!(buf[..4], i.to_be_bytes());
        }
        assert!(r.pop_into(&mut buf, &mut too_large).is_none());
        assert!(r.queue.is_empty());
        assert_eq!((r.bytes, too_large), (0, 0));
        // The buffers came back (up to the spare bound): a second burst allocates few.
        assert_eq!(r.spare.len(), (n as usize).min(MAX_SPARE));
    }

    #[test]
    fn too_large_is_dropped_and_counted() {
        let mut r = Responses::default();
        let big = r.buffer(1200);
        assert!(r.push(to(), None, big));
        let small = r.buffer(40);
        assert!(r.push(to(), None, small));
        let mut buf = [0u8; 100];
        let mut too_large = 0;
        let t = r.pop_into(&mut buf, &mut too_large).expect("the small one");
        assert_eq!((t.size, too_large), (40, 1));
        // The large buffer is not kept for reuse.
        assert!(r.spare.iter().all(|b| b.capacity() <= REUSED_CAPACITY));
    }
}
