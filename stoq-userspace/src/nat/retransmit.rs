//! The retransmission schedule of one STUN or TURN request (RFC 8489 §6.2.1): sent at once,
//! again after a timeout that starts at [`INITIAL_RTO`] and doubles, at most
//! [`MAX_REQUESTS`] times, until the transaction's deadline.

use std::time::{Duration, Instant};

/// The first retransmission timeout (500 ms, RFC 8489's recommendation for a path of
/// unknown RTT); it doubles with every retransmission.
pub const INITIAL_RTO: Duration = Duration::from_millis(500);

/// Requests sent in all (RFC 8489's Rc), unless the deadline comes first.
pub const MAX_REQUESTS: u8 = 7;

/// When one request is sent, and when its transaction gives up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    /// Requests sent so far.
    pub(crate) sent: u8,
    /// When the next one is due (the first at once).
    next: Instant,
    rto: Duration,
    /// When the transaction ends unanswered.
    pub(crate) deadline: Instant,
}

impl Schedule {
    /// A request to send at `now`, given up at `now + timeout`.
    pub(crate) fn new(now: Instant, timeout: Duration) -> Self {
        Self {
            sent: 0,
            next: now,
            rto: INITIAL_RTO,
            deadline: now + timeout,
        }
    }

    /// Whether a (re)transmission is due at `now`.
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.next <= now && self.sent < MAX_REQUESTS && now < self.deadline
    }

    /// Records one sent at `now`: the next waits the timeout, which doubles.
    pub(crate) fn sent_at(&mut self, now: Instant) {
        self.sent += 1;
        self.next = now + self.rto;
        self.rto = self.rto.saturating_mul(2);
    }

    /// The next moment something happens: a retransmission, or the deadline.
    pub(crate) fn timeout(&self) -> Instant {
        if self.sent < MAX_REQUESTS {
            self.next.min(self.deadline)
        } else {
            self.deadline
        }
    }
}
