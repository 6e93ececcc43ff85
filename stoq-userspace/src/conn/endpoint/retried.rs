//! The clients a Retry was sent to lately, so that the endpoint's answer to one client's
//! first flight does not change between its datagrams.
//!
//! A hybrid (X25519 + ML-KEM-768) ClientHello takes two Initial datagrams. Under load the
//! first gets a Retry; if the load ended before the second arrived, the second used to be
//! admitted on its own, making a server connection its client never continues (the client
//! follows the Retry): it held a handshake slot until the handshake timeout. Seen in the
//! 1,000-connection echo tests: 33 such connections in one run. A token-less Initial from
//! a (source, DCID) answered with a Retry lately gets a Retry again (the client ignores
//! all but the first).
//!
//! Bounded in time and size: an entry lasts [`WINDOW`] (the datagrams of one flight are
//! sent back to back; a lost Retry's Initial is sent again within it too), and the oldest
//! goes first when [`CAPACITY`] are held (tens of milliseconds at flood rates). Forgetting
//! only brings back the old behaviour for that client.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stoq_common::cid::ConnectionId;

/// Entries kept at most.
pub(super) const CAPACITY: usize = 4096;
/// How long an entry lasts.
pub(super) const WINDOW: Duration = Duration::from_secs(2);

/// Recently retried (source, original DCID) pairs, oldest first.
#[derive(Debug, Default)]
pub(super) struct Retried {
    set: HashSet<(SocketAddr, ConnectionId)>,
    order: VecDeque<(Instant, SocketAddr, ConnectionId)>,
}

impl Retried {
    /// Whether a Retry went to `remote` for `dcid` within the window before `now`.
    pub(super) fn contains(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        dcid: ConnectionId,
    ) -> bool {
        self.expire(now);
        !self.set.is_empty() && self.set.contains(&(remote, dcid))
    }

    /// Remembers a Retry to `remote` for `dcid` at `now`, forgetting the oldest when full.
    pub(super) fn insert(&mut self, now: Instant, remote: SocketAddr, dcid: ConnectionId) {
        self.expire(now);
        if !self.set.insert((remote, dcid)) {
            return;
        }
        if self.order.len() >= CAPACITY
            && let Some((_, a, c)) = self.order.pop_front()
        {
            self.set.remove(&(a, c));
        }
        self.order.push_back((now, remote, dcid));
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(t, a, c)) = self.order.front()
            && now.saturating_duration_since(t) >= WINDOW
        {
            self.order.pop_front();
            self.set.remove(&(a, c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_latest_within_the_window_and_stays_bounded() {
        let mut r = Retried::default();
        let now = Instant::now();
        let at = |i: usize| -> (SocketAddr, ConnectionId) {
            let ip = std::net::Ipv4Addr::from(0x6440_0000 + i as u32);
            let cid = ConnectionId::from_slice(&(i as u64).to_be_bytes()).unwrap();
            (SocketAddr::new(ip.into(), 4433), cid)
        };
        for i in 0..CAPACITY + 10 {
            let (a, c) = at(i);
            r.insert(now, a, c);
            r.insert(now, a, c);
        }
        assert_eq!((r.set.len(), r.order.len()), (CAPACITY, CAPACITY));
        let (a, c) = at(5);
        assert!(!r.contains(now, a, c), "the oldest were forgotten");
        let (a, c) = at(CAPACITY + 9);
        assert!(r.contains(now + WINDOW / 2, a, c));
        let (other, _) = at(1);
        assert!(
            !r.contains(now, other, c),
            "another source with the same DCID"
        );
        assert!(!r.contains(now + WINDOW, a, c), "past the window");
        assert_eq!(
            (r.set.len(), r.order.len()),
            (0, 0),
            "expired entries are freed"
        );
    }
}
