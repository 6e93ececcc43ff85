//! The connection's own deadlines, in one table.
//!
//! What the connection arms itself (the idle and handshake timeouts, the end of closing or
//! draining, the pacer's next release) is kept here by [`Timer`], so
//! [`Connection::poll_timeout`](super::Connection::poll_timeout) reads one table and the
//! code that arms a timer names it. Deadlines that belong to other state are derived
//! where that state lives and combined with this table in `poll_timeout`: the loss and
//! PTO timer (from each space's sent packets), each space's ACK delay, keep-alive (from
//! the last ack-eliciting packet), path validation and PMTU probes (the path), and
//! message deadlines (the streams).

use std::time::Instant;

/// A deadline the connection arms itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Nothing heard for the negotiated idle timeout: the connection ends silently.
    Idle = 0,
    /// A server's handshake that has not completed: its slot is freed.
    Handshake = 1,
    /// Closing or draining ends (three PTOs after it began).
    Close = 2,
    /// The pacer lets the next data packet leave.
    Pacing = 3,
}

impl Timer {
    const COUNT: usize = 4;
}

/// One deadline per [`Timer`], each armed or not.
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    at: [Option<Instant>; Timer::COUNT],
}

impl TimerTable {
    /// Arms `t` for `at` (replacing any earlier deadline).
    pub(crate) fn set(&mut self, t: Timer, at: Instant) {
        self.at[t as usize] = Some(at);
    }

    /// Arms `t` for `at`, or disarms it for `None`.
    pub(crate) fn set_or_clear(&mut self, t: Timer, at: Option<Instant>) {
        self.at[t as usize] = at;
    }

    /// Disarms `t`.
    pub(crate) fn clear(&mut self, t: Timer) {
        self.at[t as usize] = None;
    }

    /// When `t` fires, if armed.
    pub(crate) fn get(&self, t: Timer) -> Option<Instant> {
        self.at[t as usize]
    }

    /// Whether `t` is armed and due at `now`.
    pub(crate) fn is_due(&self, t: Timer, now: Instant) -> bool {
        self.get(t).is_some_and(|d| now >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_timer_is_armed_and_disarmed_on_its_own() {
        let now = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.get(Timer::Idle), None);
        t.set(Timer::Idle, now + Duration::from_secs(30));
        t.set(Timer::Pacing, now);
        assert!(t.is_due(Timer::Pacing, now));
        assert!(!t.is_due(Timer::Idle, now));
        assert!(t.is_due(Timer::Idle, now + Duration::from_secs(30)));
        t.clear(Timer::Pacing);
        assert_eq!(t.get(Timer::Pacing), None);
        assert!(t.get(Timer::Idle).is_some());
        t.set_or_clear(Timer::Idle, None);
        assert_eq!(t.get(Timer::Idle), None);
        assert_eq!(t.get(Timer::Handshake), None);
        assert_eq!(t.get(Timer::Close), None);
    }
}
