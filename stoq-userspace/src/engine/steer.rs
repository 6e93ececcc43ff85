//! Which worker owns a datagram: the rule userspace applies, the classic-BPF program that
//! applies the same rule in the kernel on the SO_REUSEPORT group of a socket backend, and
//! where a new connection goes ([`Placer`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use super::home::Worker;
use crate::wire::cid::{CidLayout, ConnectionId};

/// How a datagram is routed among workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// Its destination CID follows the layout: the worker named inside it (or, for a STUN
    /// answer, the worker its transaction ID names).
    Owner(u8),
    /// A long header under a CID this server did not issue: a client's first Initials,
    /// under the destination CID it chose.
    New(&'a [u8]),
    /// Anything else: whichever worker received it.
    Anyone,
}

/// How `d` is routed (see [`Route`]); `worker_of` names the worker of a CID of the
/// layout (the octet at its offset, or what a QUIC-LB decryption finds there).
pub(crate) fn route<'a>(
    d: &'a [u8],
    layout: &CidLayout,
    worker_of: impl Fn(&[u8]) -> u8,
) -> Route<'a> {
    let Some(first) = d.first() else {
        return Route::Anyone;
    };
    if first & 0xc0 == 0 {
        // Not STOQ (its fixed bit is clear). A STUN answer goes to the worker that asked:
        // the first byte of the transaction ID it chose. Requests and indications (a TURN
        // relay's Data indications, peers' punches) carry a sender's ID: they go to worker
        // 0, which holds the TURN allocation and the connections that use it.
        if !crate::wire::wire::stun::is_stun(d) {
            return Route::Anyone;
        }
        // The class's high bit (0x0100 of the type) is set in responses only; a STUN
        // message is at least 20 bytes, so its ID's first byte (offset 8) is there.
        return if first & 0x01 == 0 {
            Route::Owner(0)
        } else {
            Route::Owner(d[8])
        };
    }
    if first & 0x80 == 0 {
        return match d.get(1..1 + layout.len()) {
            Some(cid) if layout.matches_first_octet(cid[0]) => Route::Owner(worker_of(cid)),
            _ => Route::Anyone,
        };
    }
    let Some(dcid_len) = d.get(5).map(|l| usize::from(*l)) else {
        return Route::Anyone;
    };
    let Some(cid) = d.get(6..6 + dcid_len) else {
        return Route::Anyone;
    };
    if dcid_len == layout.len() && layout.matches_first_octet(cid[0]) {
        return Route::Owner(worker_of(cid));
    }
    Route::New(cid)
}

/// Where new connections go.
///
/// - **With the client's other connections.** GRO coalesces the datagrams of one address
///   pair before any steering sees them, so connections from one client address and port
///   that live on different workers would have their datagrams handed from worker to
///   worker. A new connection from an address that already has one goes to that worker.
/// - **Else, the least loaded.** The kernel spreads a client's first Initials by the first
///   byte of the CID the client chose, which balances only over many connections. The
///   worker that receives a new client's first Initial keeps it unless another worker has
///   fewer connections (their counts, plus datagrams queued for them, read without a lock).
///
/// The choice is remembered by CID, so the connection's later Initials follow it; once the
/// server answers, the client uses the owner's CIDs and the kernel steers by them.
#[derive(Debug, Default)]
pub(crate) struct Placer {
    chosen: HashMap<ConnectionId, u8>,
    order: VecDeque<ConnectionId>,
    by_peer: HashMap<SocketAddr, u8>,
    peers: VecDeque<SocketAddr>,
}

/// New connections whose placement is remembered (oldest forgotten first).
const PLACED: usize = 4096;

impl Placer {
    /// The worker for the new connection from `from` whose client chose `dcid`, received
    /// by worker `me`: the one chosen for `dcid` before, else `prefer` when given (worker
    /// 0 while it holds a TURN allocation), else as above.
    pub(crate) fn place(
        &mut self,
        from: SocketAddr,
        dcid: &[u8],
        me: u8,
        peers: &[Arc<Worker>],
        prefer: Option<u8>,
    ) -> u8 {
        if let Some(o) = self.chosen.get(dcid) {
            return *o;
        }
        let o = match (prefer, self.by_peer.get(&from)) {
            (Some(p), _) => p,
            (None, Some(o)) => *o,
            (None, None) => {
                let load = |w: &Worker| w.load() + w.handoff.len();
                let mine = peers.get(usize::from(me)).map_or(usize::MAX, |w| load(w));
                let (best, least) = peers
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (i, load(w)))
                    .min_by_key(|(i, l)| (*l, *i != usize::from(me)))
                    .unwrap_or((usize::from(me), mine));
                let o = if least < mine { best as u8 } else { me };
                if self.peers.len() >= PLACED
                    && let Some(old) = self.peers.pop_front()
                {
                    self.by_peer.remove(&old);
                }
                self.by_peer.insert(from, o);
                self.peers.push_back(from);
                o
            }
        };
        if let Ok(cid) = ConnectionId::from_slice(dcid) {
            if self.order.len() >= PLACED
                && let Some(old) = self.order.pop_front()
            {
                self.chosen.remove(&old);
            }
            if self.chosen.insert(cid, o).is_none() {
                self.order.push_back(cid);
            }
        }
        o
    }
}

/// The worker that owns a datagram, by the same rule as the kernel's steering program: the
/// worker id inside a destination CID that follows `layout`; with `spread`, any other long
/// header (a client's first Initials, under the CID it chose) belongs to worker
/// `first CID byte % workers`. `None`: whichever worker received it handles it.
///
/// Userspace must agree with the kernel because the kernel does not always ask the
/// program: GRO may merge datagrams of one client address (several new connections
/// from one socket) and deliver them by the first one's verdict.
#[cfg(test)]
mod tests {
    use super::*;

    fn workers(loads: &[usize]) -> Vec<Arc<Worker>> {
        loads
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let (w, _) = Worker::pinned(i as u8, 16);
                w.set_load(*l);
                w
            })
            .collect()
    }

    #[test]
    fn a_new_client_goes_to_the_least_loaded_worker_and_its_next_connections_follow() {
        let peers = workers(&[3, 1, 2]);
        let mut p = Placer::default();
        let a: SocketAddr = "10.200.0.1:5000".parse().expect("addr");
        let b: SocketAddr = "10.200.0.1:5001".parse().expect("addr");
        // Received by worker 0, which has the most: worker 1 has the fewest.
        assert_eq!(p.place(a, &[1; 8], 0, &peers, None), 1);
        // The same connection's later Initials, wherever they arrive, follow.
        assert_eq!(p.place(a, &[1; 8], 0, &peers, None), 1);
        // Another connection from the same address and port joins it, even if worker 1
        // now has more than others (its datagrams arrive coalesced with the first's).
        peers[1].set_load(9);
        assert_eq!(p.place(a, &[2; 8], 0, &peers, None), 1);
        // A new client address: the least loaded again (worker 2 now).
        assert_eq!(p.place(b, &[3; 8], 0, &peers, None), 2);
        // A tie keeps it where it arrived.
        let peers = workers(&[1, 1]);
        assert_eq!(
            p.place(
                "10.200.0.2:1".parse().expect("addr"),
                &[4; 8],
                1,
                &peers,
                None
            ),
            1
        );
    }

    #[test]
    fn a_preferred_worker_takes_new_connections_but_not_ones_already_placed() {
        let peers = workers(&[3, 1, 2]);
        let mut p = Placer::default();
        let a: SocketAddr = "10.200.0.1:5000".parse().expect("addr");
        assert_eq!(p.place(a, &[1; 8], 0, &peers, None), 1);
        // Worker 0 now holds a relay allocation: new connections go there, whatever the
        // load or the client address, but one whose first Initial was placed stays.
        assert_eq!(p.place(a, &[2; 8], 2, &peers, Some(0)), 0);
        assert_eq!(p.place(a, &[1; 8], 2, &peers, Some(0)), 1);
        assert_eq!(p.place(a, &[2; 8], 1, &peers, Some(0)), 0);
    }

    #[test]
    fn placements_are_bounded() {
        let peers = workers(&[0, 0]);
        let mut p = Placer::default();
        for i in 0..(PLACED as u32 * 3) {
            let from =
                SocketAddr::from(([10, 200, (i >> 8) as u8, i as u8], (i % 60_000) as u16 + 1));
            p.place(from, &i.to_be_bytes(), 0, &peers, None);
        }
        assert!(p.chosen.len() <= PLACED && p.order.len() <= PLACED);
        assert!(p.by_peer.len() <= PLACED && p.peers.len() <= PLACED);
    }

    #[test]
    fn a_stun_answer_goes_to_the_worker_its_transaction_id_names() {
        use crate::wire::wire::stun::{Class, METHOD_BINDING, Writer};
        let layout = CidLayout::DEFAULT;
        let mut b = [0u8; 28];
        let mut id = [9u8; 12];
        id[0] = 2;
        let n = Writer::new(&mut b, Class::Success, METHOD_BINDING, &id)
            .unwrap()
            .finish_with_fingerprint()
            .unwrap();
        assert_eq!(route(&b[..n], &layout, |_| 7), Route::Owner(2));
        // An indication (a relay's Data, a peer's punch) goes to worker 0.
        let n = Writer::new(&mut b, Class::Indication, 0x007, &id)
            .unwrap()
            .finish_with_fingerprint()
            .unwrap();
        assert_eq!(route(&b[..n], &layout, |_| 7), Route::Owner(0));
        let n = Writer::new(&mut b, Class::Success, METHOD_BINDING, &id)
            .unwrap()
            .finish_with_fingerprint()
            .unwrap();
        // Bytes that only look like STUN (the length is not the datagram's) are nobody's.
        assert_eq!(route(&b[..n - 4], &layout, |_| 7), Route::Anyone);
        assert_eq!(route(&[0u8; 12], &layout, |_| 7), Route::Anyone);
    }
}
