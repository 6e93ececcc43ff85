//! NewReno (RFC 9002 §7): slow start, congestion avoidance, one reduction per round trip.

use std::time::Instant;

use super::{
    AckEvent, Controller, LossEvent, initial_window, loss_based_state, minimum_window,
    rescale_window,
};

/// NewReno with RFC 9002's constants (loss reduction factor 1/2).
#[derive(Debug, Clone)]
pub struct NewReno {
    mtu: u64,
    window: u64,
    ssthresh: u64,
    recovery_start: Option<Instant>,
    acked_in_ca: u64,
    events: u64,
}

impl NewReno {
    /// A controller in slow start.
    pub fn new(mtu: u64) -> Self {
        Self {
            mtu,
            window: initial_window(mtu),
            ssthresh: u64::MAX,
            recovery_start: None,
            acked_in_ca: 0,
            events: 0,
        }
    }
}

impl Controller for NewReno {
    fn on_sent(&mut self, _now: Instant, _bytes: u64, _in_flight: u64) {}

    fn on_ack(&mut self, _now: Instant, ack: &AckEvent) {
        if self.recovery_start.is_some_and(|r| ack.largest_sent <= r) {
            return;
        }
        self.recovery_start = None;
        if self.window < self.ssthresh {
            self.window += ack.acked;
        } else {
            self.acked_in_ca += ack.acked;
            if self.acked_in_ca >= self.window {
                self.acked_in_ca -= self.window;
                self.window += self.mtu;
            }
        }
    }

    fn on_loss(&mut self, now: Instant, loss: &LossEvent) {
        if loss.persistent {
            self.window = minimum_window(self.mtu);
            self.recovery_start = Some(now);
            self.events += 1;
            return;
        }
        if self
            .recovery_start
            .is_some_and(|r| loss.largest_lost_sent <= r)
        {
            return;
        }
        self.recovery_start = Some(now);
        self.window = (self.window / 2).max(minimum_window(self.mtu));
        self.ssthresh = self.window;
        self.acked_in_ca = 0;
        self.events += 1;
    }

    fn on_mtu(&mut self, mtu: u64) {
        self.window = rescale_window(self.window, self.mtu, mtu);
        self.mtu = mtu;
    }

    fn window(&self) -> u64 {
        self.window
    }

    fn pacing_rate(&self) -> Option<u64> {
        None
    }

    fn state(&self) -> &'static str {
        loss_based_state(self.recovery_start.is_some(), self.window, self.ssthresh)
    }

    fn congestion_events(&self) -> u64 {
        self.events
    }
}
