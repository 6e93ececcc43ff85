//! The per-packet delivery-rate sampler (draft-cheng-iccrg-delivery-rate-estimation, Linux
//! tcp_rate.c): every packet remembers how much had been delivered when it was sent, so an
//! ACK yields "bytes delivered over the interval" without any per-flow timer.

use std::time::{Duration, Instant};

use super::RateSample;

/// What a packet carries for the sampler.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PacketRateState {
    pub(crate) delivered: u64,
    pub(crate) delivered_time: Instant,
    pub(crate) first_sent_time: Instant,
    pub(crate) is_app_limited: bool,
    pub(crate) tx_in_flight: u64,
    pub(crate) lost: u64,
}

/// Connection-wide sampler state.
#[derive(Debug, Clone)]
pub(crate) struct DeliveryRate {
    delivered: u64,
    delivered_time: Instant,
    first_sent_time: Instant,
    /// Delivered count at which the app-limited phase ends (0: not app-limited).
    app_limited_until: u64,
    lost: u64,
    /// The sample being built from this ACK's packets.
    rs: Option<Building>,
}

#[derive(Debug, Clone, Copy)]
struct Building {
    prior_delivered: u64,
    prior_time: Instant,
    send_elapsed: Duration,
    is_app_limited: bool,
    tx_in_flight: u64,
    lost_at_send: u64,
}

impl DeliveryRate {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            delivered: 0,
            delivered_time: now,
            first_sent_time: now,
            app_limited_until: 0,
            lost: 0,
            rs: None,
        }
    }

    /// Total bytes delivered.
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Stamps a packet being sent; `in_flight` excludes it.
    pub(crate) fn on_sent(&mut self, now: Instant, in_flight: u64, size: u64) -> PacketRateState {
        if in_flight == 0 {
            self.first_sent_time = now;
            self.delivered_time = now;
        }
        PacketRateState {
            delivered: self.delivered,
            delivered_time: self.delivered_time,
            first_sent_time: self.first_sent_time,
            is_app_limited: self.app_limited_until != 0,
            tx_in_flight: in_flight + size,
            lost: self.lost,
        }
    }

    /// The sender has nothing to send and room in the window: samples taken until what is
    /// in flight now is delivered may underestimate the path.
    pub(crate) fn on_app_limited(&mut self, in_flight: u64) {
        self.app_limited_until = (self.delivered + in_flight).max(1);
    }

    /// Total bytes declared lost.
    pub(crate) fn lost(&self) -> u64 {
        self.lost
    }

    pub(crate) fn on_lost(&mut self, bytes: u64) {
        self.lost += bytes;
    }

    /// One acknowledged packet, sent at `sent` with state `p` and `size` bytes.
    pub(crate) fn on_acked(&mut self, now: Instant, sent: Instant, size: u64, p: &PacketRateState) {
        self.delivered += size;
        self.delivered_time = now;
        let newer = self.rs.is_none_or(|b| p.delivered >= b.prior_delivered);
        if newer {
            self.rs = Some(Building {
                prior_delivered: p.delivered,
                prior_time: p.delivered_time,
                send_elapsed: sent.saturating_duration_since(p.first_sent_time),
                is_app_limited: p.is_app_limited,
                tx_in_flight: p.tx_in_flight,
                lost_at_send: p.lost,
            });
            self.first_sent_time = sent;
        }
        if self.app_limited_until != 0 && self.delivered > self.app_limited_until {
            self.app_limited_until = 0;
        }
    }

    /// Finishes the sample for this ACK. Samples over an interval shorter than `min_rtt`
    /// are discarded (they measure ACK compression, not the path).
    pub(crate) fn take_sample(&mut self, min_rtt: Duration) -> Option<RateSample> {
        let b = self.rs.take()?;
        let ack_elapsed = self.delivered_time.saturating_duration_since(b.prior_time);
        let interval = b.send_elapsed.max(ack_elapsed);
        let delivered = self.delivered - b.prior_delivered;
        if interval.is_zero() || interval < min_rtt {
            return None;
        }
        let rate = (u128::from(delivered) * 1_000_000_000 / interval.as_nanos()) as u64;
        Some(RateSample {
            delivered,
            interval,
            delivery_rate: rate,
            is_app_limited: b.is_app_limited,
            tx_in_flight: b.tx_in_flight,
            lost: self.lost - b.lost_at_send,
            prior_delivered: b.prior_delivered,
        })
    }
}
