//! One worker's budget of written-but-unsent stream bytes, shared by the connections
//! sending bulk data on it.
//!
//! [`TransportConfig::send_backlog`](crate::conn::TransportConfig::send_backlog) holds a
//! writer back once it is that far ahead of the wire, so that what it wrote is still in
//! the core's cache when it is copied into a packet and sealed. The cache belongs to the
//! worker's core, not to a connection: eight bulk connections with a 1 MiB backlog each
//! keep 8 MiB in flight between the application's copy and the packet's, and the second
//! copy then reads from memory, not cache (on the 2-core bench machine the sender's
//! `memmove` share rose from 8 % of its core with one connection to 18-20 % with eight).
//! So the configured backlog is the worker's budget: every connection seen sending with
//! bytes still queued during a short epoch counts as busy, and in the next epoch each
//! busy connection may hold `budget / (2 × busy)`, never less than [`FLOOR`] (a few full
//! packets' worth of GSO batch) nor more than the configured backlog. One connection
//! alone keeps the whole budget, as before. The halving when shared: several busy
//! connections also keep more bytes in flight and more application buffers than one, in
//! the same cache. Measured on the bench machine with eight bulk connections (one
//! worker): 64 KiB each beat 128 KiB in 6 of 7 interleaved pairs (median pair +4 %),
//! and 32 KiB lost to both (about -8 %); one connection wants its full 1 MiB (at MTU
//! 9000 a quarter of it cost a third of the goodput).
//!
//! The cost on the per-packet path is a comparison per transmitted datagram; the share
//! is set on a connection at most once per epoch.

use std::time::{Duration, Instant};

/// How long busy connections are counted before the share is recomputed.
const EPOCH: Duration = Duration::from_millis(25);

/// The smallest share a busy connection gets, however many there are: enough for
/// several packets per send call.
pub(crate) const FLOOR: u64 = 64 << 10;

/// The worker's unsent-bytes budget and who shares it.
#[derive(Debug)]
pub(super) struct BacklogShare {
    budget: u64,
    /// The current epoch, when it ends, and the busy connections counted in it so far.
    /// (The end, not the start: a comparison of two instants per datagram costs less
    /// than the subtraction that measures the time since the start, which was 2.7 % of
    /// the sending core with eight bulk connections.)
    epoch: u32,
    ends: Option<Instant>,
    busy: u32,
    /// Busy connections in the last complete epoch.
    busy_last: u32,
    /// Per connection slot: the epoch it was last counted in.
    counted_in: Vec<u32>,
}

impl BacklogShare {
    pub(super) fn new(budget: u64) -> Self {
        Self {
            budget,
            // Epoch 0 is never current, so a new slot (0) is counted the first time.
            epoch: 1,
            ends: None,
            busy: 0,
            busy_last: 1,
            counted_in: Vec::new(),
        }
    }

    /// A connection slot exists (or is reused): it has not been counted yet.
    pub(super) fn reset_slot(&mut self, i: usize) {
        if i >= self.counted_in.len() {
            self.counted_in.resize(i + 1, 0);
        }
        self.counted_in[i] = 0;
    }

    /// Connection `i` just sent, and still has `unsent` bytes queued. Returns the share it
    /// should hold from now on when that is news for it (at most once per epoch).
    pub(super) fn on_transmit(&mut self, now: Instant, i: usize, unsent: u64) -> Option<u64> {
        let ends = *self.ends.get_or_insert_with(|| now + EPOCH);
        if now >= ends {
            self.busy_last = self.busy.max(1);
            self.busy = 0;
            self.epoch = self.epoch.wrapping_add(1).max(1);
            self.ends = Some(now + EPOCH);
        }
        if unsent == 0 {
            return None;
        }
        let slot = self.counted_in.get_mut(i)?;
        if *slot == self.epoch {
            return None;
        }
        *slot = self.epoch;
        self.busy += 1;
        Some(self.share())
    }

    /// What each busy connection may hold: half the budget split among last epoch's busy
    /// connections (or this one's, if more already), or all of it for one alone; between
    /// [`FLOOR`] and the budget.
    pub(super) fn share(&self) -> u64 {
        let n = u64::from(self.busy_last.max(self.busy).max(1));
        let ways = if n > 1 { 2 * n } else { 1 };
        (self.budget / ways).max(FLOOR.min(self.budget))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_busy_connection_keeps_the_whole_budget() {
        let t = Instant::now();
        let mut b = BacklogShare::new(1 << 20);
        b.reset_slot(0);
        assert_eq!(b.on_transmit(t, 0, 5000), Some(1 << 20));
        // Once per epoch.
        assert_eq!(b.on_transmit(t + Duration::from_millis(1), 0, 5000), None);
        assert_eq!(b.on_transmit(t + EPOCH, 0, 5000), Some(1 << 20));
    }

    #[test]
    fn busy_connections_split_it_and_get_it_back_when_the_others_stop() {
        let t = Instant::now();
        let mut b = BacklogShare::new(1 << 20);
        for i in 0..8 {
            b.reset_slot(i);
            b.on_transmit(t, i, 1);
        }
        // The next epoch knows there were eight: half the budget, split eight ways.
        let t1 = t + EPOCH;
        assert_eq!(b.on_transmit(t1, 0, 1), Some(64 << 10));
        for i in 1..8 {
            assert_eq!(b.on_transmit(t1, i, 1), Some(64 << 10));
        }
        // Connections with nothing queued are not busy.
        b.reset_slot(8);
        assert_eq!(b.on_transmit(t1, 8, 0), None);
        // Only connection 0 goes on sending: two epochs later it holds everything again.
        let t2 = t1 + EPOCH;
        assert_eq!(b.on_transmit(t2, 0, 1), Some(64 << 10));
        assert_eq!(b.on_transmit(t2 + EPOCH, 0, 1), Some(1 << 20));
        // Two busy connections: a quarter each.
        b.reset_slot(1);
        b.on_transmit(t2 + EPOCH, 1, 1);
        assert_eq!(b.on_transmit(t2 + 2 * EPOCH, 0, 1), Some(256 << 10));
    }

    #[test]
    fn a_share_never_falls_below_the_floor_nor_above_the_budget() {
        let t = Instant::now();
        let mut b = BacklogShare::new(1 << 20);
        for i in 0..1000 {
            b.reset_slot(i);
            b.on_transmit(t, i, 1);
        }
        assert_eq!(b.on_transmit(t + EPOCH, 0, 1), Some(FLOOR));
        // A budget below the floor is the budget.
        let mut small = BacklogShare::new(16 << 10);
        small.reset_slot(0);
        assert_eq!(small.on_transmit(t, 0, 1), Some(16 << 10));
        // An unknown slot is ignored, not a panic.
        assert_eq!(small.on_transmit(t, 7, 1), None);
    }
}
