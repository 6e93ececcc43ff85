//! CUBIC (RFC 9438): a cubic window growth in time since the last reduction, with the
//! Reno-friendly region, fast convergence and β = 0.7.

use std::time::{Duration, Instant};

use super::{
    AckEvent, Controller, LossEvent, initial_window, loss_based_state, minimum_window,
    rescale_window,
};

const BETA: f64 = 0.7;
const C: f64 = 0.4;

/// CUBIC.
#[derive(Debug, Clone)]
pub struct Cubic {
    mtu: u64,
    window: u64,
    ssthresh: u64,
    recovery_start: Option<Instant>,
    /// Start of the current congestion-avoidance epoch.
    epoch: Option<Instant>,
    w_max: f64,
    k: f64,
    /// The Reno-friendly estimate, in bytes.
    w_est: f64,
    events: u64,
}

impl Cubic {
    /// A controller in slow start.
    pub fn new(mtu: u64) -> Self {
        Self {
            mtu,
            window: initial_window(mtu),
            ssthresh: u64::MAX,
            recovery_start: None,
            epoch: None,
            w_max: 0.0,
            k: 0.0,
            w_est: 0.0,
            events: 0,
        }
    }

    /// W_cubic(t), in bytes.
    fn w_cubic(&self, t: Duration) -> f64 {
        let m = self.mtu as f64;
        let d = t.as_secs_f64() - self.k;
        (C * d * d * d) * m + self.w_max
    }
}

impl Controller for Cubic {
    fn on_sent(&mut self, _now: Instant, _bytes: u64, _in_flight: u64) {}

    fn on_ack(&mut self, now: Instant, ack: &AckEvent) {
        if self.recovery_start.is_some_and(|r| ack.largest_sent <= r) {
            return;
        }
        self.recovery_start = None;
        if self.window < self.ssthresh {
            self.window += ack.acked;
            return;
        }
        let m = self.mtu as f64;
        let epoch = *self.epoch.get_or_insert_with(|| {
            self.k = 0.0;
            self.w_est = self.window as f64;
            now
        });
        if self.w_max < self.window as f64 && self.k == 0.0 {
            self.w_max = self.window as f64;
        }
        let t = now.saturating_duration_since(epoch);
        let target = self
            .w_cubic(t + ack.smoothed_rtt)
            .clamp(self.window as f64, 1.5 * self.window as f64);
        // Reno-friendly region: grow like Reno with α = 3(1-β)/(1+β).
        let alpha = 3.0 * (1.0 - BETA) / (1.0 + BETA);
        self.w_est += alpha * m * ack.acked as f64 / self.window as f64;
        let cwnd = self.window as f64;
        let next = if self.w_cubic(t) < self.w_est {
            self.w_est
        } else {
            cwnd + (target - cwnd) * ack.acked as f64 / cwnd
        };
        self.window = (next as u64).max(self.window);
    }

    fn on_loss(&mut self, now: Instant, loss: &LossEvent) {
        if loss.persistent {
            self.window = minimum_window(self.mtu);
            self.recovery_start = Some(now);
            self.epoch = None;
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
        self.events += 1;
        let cwnd = self.window as f64;
        // Fast convergence: release bandwidth when the window stopped short of w_max.
        self.w_max = if cwnd < self.w_max {
            cwnd * (1.0 + BETA) / 2.0
        } else {
            cwnd
        };
        self.window = ((cwnd * BETA) as u64).max(minimum_window(self.mtu));
        self.ssthresh = self.window;
        let m = self.mtu as f64;
        self.k = ((self.w_max - self.window as f64) / (C * m))
            .max(0.0)
            .cbrt();
        self.w_est = self.window as f64;
        self.epoch = Some(now);
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
