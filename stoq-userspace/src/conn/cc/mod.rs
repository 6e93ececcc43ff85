//! Congestion control: the [`Controller`] trait, the delivery-rate sampler that feeds it,
//! the pacer that enforces its rate, and three controllers: [`Bbr`] (STOQ's own, the
//! default), and [`NewReno`] and [`Cubic`] as references.
//!
//! A connection builds its controller through a [`ControllerFactory`] (one per endpoint,
//! shared), so an application can bring its own.

mod bbr;
mod cubic;
mod newreno;
mod pacer;
mod rate;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use self::bbr::{Bbr, BbrState};
pub use self::cubic::Cubic;
pub use self::newreno::NewReno;
pub(crate) use self::pacer::Pacer;
pub(crate) use self::rate::{DeliveryRate, PacketRateState};

/// The initial window: 10 full packets (RFC 9002 §7.2), at least 14,720 bytes.
pub fn initial_window(mtu: u64) -> u64 {
    (10 * mtu).min((2 * mtu).max(14_720))
}

/// The least window: two full packets.
pub fn minimum_window(mtu: u64) -> u64 {
    2 * mtu
}

/// The state name of a loss-based controller (NewReno, CUBIC).
fn loss_based_state(in_recovery: bool, window: u64, ssthresh: u64) -> &'static str {
    if in_recovery {
        "recovery"
    } else if window < ssthresh {
        "slow_start"
    } else {
        "congestion_avoidance"
    }
}

/// A window in bytes kept at the same number of packets when the MTU changes.
fn rescale_window(window: u64, old_mtu: u64, new_mtu: u64) -> u64 {
    window * new_mtu / old_mtu.max(1)
}

/// What one delivery-rate sample measured (Linux tcp_rate.c semantics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSample {
    /// Bytes delivered over the interval.
    pub delivered: u64,
    /// The interval: the longer of the send and ACK intervals.
    pub interval: Duration,
    /// `delivered / interval`, bytes per second.
    pub delivery_rate: u64,
    /// The sample was taken while the sender had too little data to fill the window, so
    /// it may underestimate the path.
    pub is_app_limited: bool,
    /// Bytes in flight when the newest acknowledged packet was sent.
    pub tx_in_flight: u64,
    /// Bytes declared lost between that packet's send and now.
    pub lost: u64,
    /// Total delivered bytes when that packet was sent (rounds are counted on this).
    pub prior_delivered: u64,
}

/// What an ACK told the controller.
#[derive(Debug, Clone, Copy)]
pub struct AckEvent {
    /// Bytes newly acknowledged (in-flight packets only).
    pub acked: u64,
    /// Bytes in flight after the ACK.
    pub in_flight: u64,
    /// Send time of the newest packet this ACK acknowledged.
    pub largest_sent: Instant,
    /// Latest RTT sample.
    pub latest_rtt: Duration,
    /// Minimum RTT so far.
    pub min_rtt: Duration,
    /// Smoothed RTT.
    pub smoothed_rtt: Duration,
    /// The delivery-rate sample, when the ACK produced a valid one.
    pub sample: Option<RateSample>,
    /// Total bytes delivered so far.
    pub delivered: u64,
}

/// What a loss told the controller.
#[derive(Debug, Clone, Copy)]
pub struct LossEvent {
    /// Bytes newly declared lost.
    pub lost: u64,
    /// Bytes in flight after removing them.
    pub in_flight: u64,
    /// Send time of the newest lost packet (one congestion event per round trip).
    pub largest_lost_sent: Instant,
    /// Bytes in flight when the newest lost packet was sent.
    pub tx_in_flight: u64,
    /// Bytes declared lost since the newest lost packet was sent (this loss included).
    pub lost_since_sent: u64,
    /// The newest lost packet was sent while application-limited.
    pub is_app_limited: bool,
    /// Persistent congestion was established (RFC 9002 §7.6).
    pub persistent: bool,
    /// Total bytes delivered so far.
    pub delivered: u64,
}

/// A congestion controller. The connection calls it on every send, ACK and loss, never
/// sends more than [`window`](Self::window) in flight, and paces at
/// [`pacing_rate`](Self::pacing_rate).
pub trait Controller: Send + Debug {
    /// `bytes` were sent; `in_flight` includes them.
    fn on_sent(&mut self, now: Instant, bytes: u64, in_flight: u64);
    /// An ACK acknowledged in-flight data.
    fn on_ack(&mut self, now: Instant, ack: &AckEvent);
    /// Packets were declared lost.
    fn on_loss(&mut self, now: Instant, loss: &LossEvent);
    /// The peer reported new CE marks (ECN): a router queue is filling. `signal` reads
    /// as a loss of the marked bytes with nothing actually lost. Classic ECN (RFC 3168)
    /// asks for the same response as to a loss, which is the default.
    fn on_ecn_ce(&mut self, now: Instant, signal: &LossEvent) {
        self.on_loss(now, signal);
    }
    /// The sender ran out of data with room left in the window.
    fn on_app_limited(&mut self, _now: Instant) {}
    /// The path MTU changed.
    fn on_mtu(&mut self, mtu: u64);
    /// The congestion window, bytes.
    fn window(&self) -> u64;
    /// The pacing rate in bytes per second; `None` derives it from the window and RTT.
    fn pacing_rate(&self) -> Option<u64>;
    /// A short name of the current state, for statistics and traces.
    fn state(&self) -> &'static str;
    /// Congestion events so far (window reductions, or BBR loss responses).
    fn congestion_events(&self) -> u64;
    /// Scales the pacing gain at run time (live adaptation); 1.0 is the controller's own.
    fn set_pacing_gain(&mut self, _gain: f64) {}
    /// Seeds the controller's randomisation (BBR's time between bandwidth probes), so
    /// flows sharing a bottleneck do not probe in lock-step. The connection calls it
    /// once after building the controller, with a value from its own seeded generator:
    /// the core stays deterministic for a given seed.
    fn seed(&mut self, _seed: u64) {}
}

/// Builds a connection's controller.
pub trait ControllerFactory: Send + Sync + Debug {
    /// A new controller for a path with this MTU.
    fn build(&self, now: Instant, mtu: u64) -> Box<dyn Controller>;
}

/// The built-in controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    /// STOQ's BBR (the default).
    #[default]
    Bbr,
    /// CUBIC (RFC 9438).
    Cubic,
    /// NewReno (RFC 9002 §7).
    NewReno,
}

impl ControllerFactory for Congestion {
    fn build(&self, now: Instant, mtu: u64) -> Box<dyn Controller> {
        match self {
            Self::Bbr => Box::new(Bbr::new(now, mtu)),
            Self::Cubic => Box::new(Cubic::new(mtu)),
            Self::NewReno => Box::new(NewReno::new(mtu)),
        }
    }
}

impl Congestion {
    /// As a shared factory.
    pub fn factory(self) -> Arc<dyn ControllerFactory> {
        Arc::new(self)
    }
}
