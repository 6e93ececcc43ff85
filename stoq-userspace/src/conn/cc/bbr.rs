//! STOQ's BBR, after BBRv3 (draft-ietf-ccwg-bbr) and Linux tcp_bbr.c.
//!
//! The model is two numbers: the bottleneck bandwidth (`max_bw`, a windowed maximum of
//! delivery-rate samples over the last two bandwidth-probing cycles) and the round-trip
//! propagation delay (`min_rtt`, a 10 s windowed minimum). BBR paces at `pacing_gain ×
//! bw` and caps what is in flight at `cwnd_gain × BDP` plus an allowance for ACK
//! aggregation, then cycles its gains to probe for more bandwidth (ProbeBW: down, cruise,
//! refill, up) and, every 5 s without a new minimum, drains the queue to re-measure the
//! delay (ProbeRTT). Loss above 2 % per round sets long-term (`inflight_hi`) and
//! short-term (`bw_lo`, `inflight_lo`) bounds, so a lossy or shared path is not flooded.

use std::time::{Duration, Instant};

use super::{AckEvent, Controller, LossEvent, RateSample, initial_window, minimum_window};

const STARTUP_PACING_GAIN: f64 = 2.77;
const STARTUP_CWND_GAIN: f64 = 2.0;
const DRAIN_PACING_GAIN: f64 = 0.35;
const PROBE_DOWN_GAIN: f64 = 0.9;
const PROBE_UP_GAIN: f64 = 1.25;
const CWND_GAIN: f64 = 2.0;
const LOSS_THRESH: f64 = 0.02;
const BETA: f64 = 0.7;
const HEADROOM: f64 = 0.15;
const MIN_RTT_FILTER: Duration = Duration::from_secs(10);
const PROBE_RTT_INTERVAL: Duration = Duration::from_secs(5);
const PROBE_RTT_DURATION: Duration = Duration::from_millis(200);
const PACING_MARGIN: f64 = 0.99;
const FULL_BW_GROWTH: f64 = 1.25;
const FULL_BW_ROUNDS: u32 = 3;
/// Packets the first round of a bandwidth probe adds to `inflight_hi` (the step doubles
/// each further round; BBRv3 starts at one). Flows sharing a buffer converge at the rate
/// these equal additive steps bring the next overflow, and with it the next
/// multiplicative cut: with two packets two flows on a 50 ms path stayed 28–48 % apart
/// for 40 s; with eight every path `tests/sim/cc.rs` tries is within 20 %.
const PROBE_UP_FIRST_STEP_PACKETS: u64 = 8;
/// Rounds the max-bandwidth filter spans (Linux BBR: the gain cycle plus two).
const BW_FILTER_ROUNDS: usize = 10;
/// Loss events in one round that let loss end Startup.
const STARTUP_FULL_LOSS_COUNT: u32 = 6;
/// Rounds the ACK-aggregation estimate is remembered (in two halves).
const EXTRA_ACKED_ROUNDS: u64 = 10;

/// BBR's state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BbrState {
    /// Exponential search for the bottleneck rate.
    Startup,
    /// Drain the queue Startup built.
    Drain,
    /// ProbeBW: pace below the estimate to drain any queue.
    ProbeDown,
    /// ProbeBW: pace at the estimate.
    ProbeCruise,
    /// ProbeBW: refill the pipe for one round before probing.
    ProbeRefill,
    /// ProbeBW: pace above the estimate to find more bandwidth.
    ProbeUp,
    /// Shrink to half a BDP to re-measure the propagation delay.
    ProbeRtt,
}

impl BbrState {
    fn name(self) -> &'static str {
        match self {
            Self::Startup => "bbr_startup",
            Self::Drain => "bbr_drain",
            Self::ProbeDown => "bbr_probe_bw_down",
            Self::ProbeCruise => "bbr_probe_bw_cruise",
            Self::ProbeRefill => "bbr_probe_bw_refill",
            Self::ProbeUp => "bbr_probe_bw_up",
            Self::ProbeRtt => "bbr_probe_rtt",
        }
    }
}

/// The BBR controller.
#[derive(Debug, Clone)]
pub struct Bbr {
    mtu: u64,
    state: BbrState,
    cwnd: u64,
    pacing_rate: u64,
    pacing_gain: f64,
    cwnd_gain: f64,
    /// Live-adaptation factor on the pacing gain.
    gain_scale: f64,
    // Rounds.
    round_count: u64,
    next_round_delivered: u64,
    round_start: bool,
    // Bandwidth model.
    /// Max-bandwidth filter: the largest delivery rate of each of the last
    /// [`BW_FILTER_ROUNDS`] packet-timed rounds.
    bw_rounds: [u64; BW_FILTER_ROUNDS],
    /// Rounds between bandwidth probes in this cycle (6–8, drawn per cycle).
    probe_rounds: u64,
    /// Smoothed per-round loss rate (EWMA, weight 1/4).
    loss_ewma: f64,
    bw_lo: u64,
    bw_latest: u64,
    inflight_hi: u64,
    inflight_lo: u64,
    inflight_latest: u64,
    loss_round_delivered: u64,
    loss_in_round: bool,
    /// Bytes lost and loss events in the current loss round.
    lost_in_round: u64,
    loss_events_in_round: u32,
    /// Delivered count when the current loss round began.
    loss_round_start_delivered: u64,
    probe_rtt_expired: bool,
    /// Packet-timed rounds since the last bandwidth probe (Reno coexistence).
    rounds_since_probe: u64,
    loss_events: u64,
    // Delay model.
    min_rtt: Option<Duration>,
    min_rtt_stamp: Instant,
    probe_rtt_min: Option<Duration>,
    probe_rtt_min_stamp: Instant,
    probe_rtt_done: Option<Instant>,
    probe_rtt_round_done: bool,
    prior_cwnd: u64,
    // Startup exit.
    filled_pipe: bool,
    full_bw: u64,
    full_bw_count: u32,
    // ProbeBW cycle.
    up_rounds: u32,
    up_acks: u64,
    /// Whether this bandwidth probe may still cut `inflight_hi`: set when a probe
    /// starts, cleared by the first cut, so one probe's losses (reported over several
    /// ACKs) cut the bound once (Linux `bw_probe_samples`).
    probe_may_cut: bool,
    /// The round `inflight_hi` was last cut in (one cut per round).
    cut_round: u64,
    /// The most that was in flight when any packet lost in this loss round was sent.
    round_lost_tx_in_flight: u64,
    // ACK aggregation.
    extra_acked: [u64; 2],
    extra_acked_slot_round: u64,
    ack_epoch_start: Instant,
    ack_epoch_acked: u64,
    /// The jitter source for the probe wait: xorshift, seeded per connection through
    /// [`Controller::seed`] (no OS randomness in the core).
    jitter: u64,
}

impl Bbr {
    /// A controller in Startup.
    pub fn new(now: Instant, mtu: u64) -> Self {
        let cwnd = initial_window(mtu);
        Self {
            mtu,
            state: BbrState::Startup,
            cwnd,
            // 2.77 × the initial window per millisecond until the first RTT sample.
            pacing_rate: (STARTUP_PACING_GAIN * cwnd as f64 * 1000.0) as u64,
            pacing_gain: STARTUP_PACING_GAIN,
            cwnd_gain: STARTUP_CWND_GAIN,
            gain_scale: 1.0,
            round_count: 0,
            next_round_delivered: 0,
            round_start: false,
            bw_rounds: [0; BW_FILTER_ROUNDS],
            probe_rounds: 6,
            loss_ewma: 0.0,
            bw_lo: u64::MAX,
            bw_latest: 0,
            inflight_hi: u64::MAX,
            inflight_lo: u64::MAX,
            inflight_latest: 0,
            loss_round_delivered: 0,
            loss_in_round: false,
            lost_in_round: 0,
            loss_events_in_round: 0,
            loss_round_start_delivered: 0,
            probe_rtt_expired: false,
            rounds_since_probe: 0,
            loss_events: 0,
            min_rtt: None,
            min_rtt_stamp: now,
            probe_rtt_min: None,
            probe_rtt_min_stamp: now,
            probe_rtt_done: None,
            probe_rtt_round_done: false,
            prior_cwnd: cwnd,
            filled_pipe: false,
            full_bw: 0,
            full_bw_count: 0,
            up_rounds: 0,
            up_acks: 0,
            probe_may_cut: false,
            cut_round: 0,
            round_lost_tx_in_flight: 0,
            extra_acked: [0; 2],
            extra_acked_slot_round: 0,
            ack_epoch_start: now,
            ack_epoch_acked: 0,
            jitter: 0x2545_F491_4F6C_DD1D,
        }
    }

    /// The state.
    pub fn bbr_state(&self) -> BbrState {
        self.state
    }

    /// The bottleneck bandwidth estimate, bytes/s.
    pub fn max_bw(&self) -> u64 {
        self.bw_rounds.iter().copied().max().unwrap_or(0)
    }

    /// The bandwidth the model uses: `max_bw` bounded by the short-term `bw_lo`.
    pub fn bw(&self) -> u64 {
        self.max_bw().min(self.bw_lo)
    }

    /// The propagation delay estimate.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    fn bdp(&self, gain: f64) -> u64 {
        match self.min_rtt {
            Some(rtt) => (gain * self.bw() as f64 * rtt.as_secs_f64()) as u64,
            None => (gain * initial_window(self.mtu) as f64) as u64,
        }
    }

    fn extra_acked(&self) -> u64 {
        self.extra_acked[0].max(self.extra_acked[1])
    }

    /// What may be in flight at `gain`: BDP plus ACK-aggregation allowance and room for
    /// a few packets in the sender and receiver (quantization budget).
    fn inflight(&self, gain: f64) -> u64 {
        let mut v = self.bdp(gain) + 3 * self.mtu;
        if self.filled_pipe || self.state != BbrState::Startup {
            v += self.extra_acked();
        }
        if self.state == BbrState::ProbeUp {
            v += 2 * self.mtu;
        }
        v.max(4 * self.mtu)
    }

    fn inflight_with_headroom(&self) -> u64 {
        if self.inflight_hi == u64::MAX {
            return u64::MAX;
        }
        let h = (HEADROOM * self.inflight_hi as f64) as u64;
        (self.inflight_hi - h).max(4 * self.mtu)
    }

    fn next_jitter(&mut self) -> u64 {
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        self.jitter
    }

    fn enter(&mut self, s: BbrState, _now: Instant) {
        self.state = s;
        let (p, c) = match s {
            BbrState::Startup => (STARTUP_PACING_GAIN, STARTUP_CWND_GAIN),
            BbrState::Drain => (DRAIN_PACING_GAIN, STARTUP_CWND_GAIN),
            BbrState::ProbeDown => (PROBE_DOWN_GAIN, CWND_GAIN),
            BbrState::ProbeCruise | BbrState::ProbeRefill => (1.0, CWND_GAIN),
            BbrState::ProbeUp => (PROBE_UP_GAIN, 2.25),
            BbrState::ProbeRtt => (1.0, 0.5),
        };
        self.pacing_gain = p;
        self.cwnd_gain = c;
        match s {
            BbrState::ProbeDown => {
                self.probe_rounds = 6 + self.next_jitter() % 3;
                self.up_rounds = 0;
            }
            BbrState::ProbeRefill => {
                // Forget the short-term bounds: probing starts from the long-term model.
                self.bw_lo = u64::MAX;
                self.inflight_lo = u64::MAX;
                self.rounds_since_probe = 0;
                self.probe_may_cut = true;
            }
            BbrState::ProbeUp => {
                // A new cycle: the max-bw filter covers this one and the previous one.
                self.up_rounds = 0;
                self.up_acks = 0;
            }
            _ => {}
        }
    }

    fn update_round(&mut self, s: &RateSample, delivered: u64) {
        self.round_start = false;
        if s.prior_delivered >= self.next_round_delivered {
            self.next_round_delivered = delivered;
            self.round_count += 1;
            self.round_start = true;
        }
    }

    fn update_max_bw(&mut self, s: &RateSample) {
        let slot = (self.round_count % BW_FILTER_ROUNDS as u64) as usize;
        if self.round_start {
            self.bw_rounds[slot] = 0;
        }
        if s.delivery_rate >= self.max_bw() || !s.is_app_limited {
            self.bw_rounds[slot] = self.bw_rounds[slot].max(s.delivery_rate);
        }
    }

    fn update_ack_aggregation(&mut self, now: Instant, acked: u64) {
        if self.round_start
            && self.round_count >= self.extra_acked_slot_round + EXTRA_ACKED_ROUNDS / 2
        {
            self.extra_acked_slot_round = self.round_count;
            self.extra_acked[0] = self.extra_acked[1];
            self.extra_acked[1] = 0;
        }
        let mut expected = self.expected_since_epoch(now);
        if self.ack_epoch_acked <= expected {
            self.ack_epoch_acked = 0;
            self.ack_epoch_start = now;
            expected = 0;
        }
        self.ack_epoch_acked += acked;
        let extra = self.ack_epoch_acked.saturating_sub(expected).min(self.cwnd);
        self.extra_acked[1] = self.extra_acked[1].max(extra);
    }

    fn expected_since_epoch(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.ack_epoch_start);
        (self.bw() as f64 * elapsed.as_secs_f64()) as u64
    }

    fn check_full_bw(&mut self, s: &RateSample) {
        if self.filled_pipe || !self.round_start || s.is_app_limited {
            return;
        }
        let bw = self.max_bw();
        if bw as f64 >= self.full_bw as f64 * FULL_BW_GROWTH {
            self.full_bw = bw;
            self.full_bw_count = 0;
            return;
        }
        self.full_bw_count += 1;
        if self.full_bw_count >= FULL_BW_ROUNDS {
            self.filled_pipe = true;
        }
    }

    fn update_min_rtt(&mut self, now: Instant, rtt: Duration) {
        let expired = now.saturating_duration_since(self.probe_rtt_min_stamp) > PROBE_RTT_INTERVAL;
        // Remembered for check_probe_rtt: the stamp is refreshed below.
        self.probe_rtt_expired = expired;
        if self.probe_rtt_min.is_none_or(|m| rtt <= m) || expired {
            self.probe_rtt_min = Some(rtt);
            self.probe_rtt_min_stamp = now;
        }
        let min_expired = now.saturating_duration_since(self.min_rtt_stamp) > MIN_RTT_FILTER;
        if let Some(p) = self.probe_rtt_min
            && (self.min_rtt.is_none_or(|m| p < m) || min_expired)
        {
            self.min_rtt = Some(p);
            self.min_rtt_stamp = self.probe_rtt_min_stamp;
        }
    }

    fn check_probe_rtt(&mut self, now: Instant, in_flight: u64) {
        if self.state != BbrState::ProbeRtt && self.probe_rtt_expired && self.filled_pipe {
            self.prior_cwnd = self.cwnd;
            self.enter(BbrState::ProbeRtt, now);
            self.probe_rtt_done = None;
        }
        if self.state != BbrState::ProbeRtt {
            return;
        }
        let target = self.probe_rtt_cwnd();
        match self.probe_rtt_done {
            None if in_flight <= target => {
                self.probe_rtt_done = Some(now + PROBE_RTT_DURATION);
                self.probe_rtt_round_done = false;
                self.next_round_delivered = 0; // the next ACK starts a round
            }
            Some(done) => {
                if self.round_start {
                    self.probe_rtt_round_done = true;
                }
                if self.probe_rtt_round_done && now >= done {
                    self.probe_rtt_min_stamp = now;
                    self.cwnd = self.cwnd.max(self.prior_cwnd);
                    self.enter(BbrState::ProbeDown, now);
                    self.enter(BbrState::ProbeCruise, now);
                }
            }
            None => {}
        }
    }

    fn probe_rtt_cwnd(&self) -> u64 {
        self.bdp(0.5).max(4 * self.mtu)
    }

    fn update_probe_bw(&mut self, now: Instant, in_flight: u64) {
        // Probe every 6–8 round trips, as BBRv1's gain cycle does: flows sharing a
        // bottleneck then converge, because a probe raises a small flow's share by more
        // than a large one's, and the 10-round filter forgets old shares quickly.
        let time_to_probe = || self.rounds_since_probe >= self.probe_rounds;
        match self.state {
            BbrState::ProbeDown => {
                if time_to_probe() {
                    self.enter(BbrState::ProbeRefill, now);
                } else if in_flight <= self.inflight_with_headroom().min(self.inflight(1.0)) {
                    self.enter(BbrState::ProbeCruise, now);
                }
            }
            BbrState::ProbeCruise if time_to_probe() => {
                self.enter(BbrState::ProbeRefill, now);
            }
            BbrState::ProbeRefill if self.round_start => {
                self.enter(BbrState::ProbeUp, now);
            }
            BbrState::ProbeUp => {
                if self.round_start {
                    self.up_rounds += 1;
                    // Raise the long-term bound, doubling the step each round.
                    if self.inflight_hi != u64::MAX {
                        let step = (PROBE_UP_FIRST_STEP_PACKETS * self.mtu)
                            << (self.up_rounds - 1).min(10);
                        self.inflight_hi = self.inflight_hi.saturating_add(step);
                    }
                }
                // Probe for at least one round, then until the pipe holds 1.25 BDP.
                if self.up_rounds >= 1 && in_flight >= self.inflight(PROBE_UP_GAIN) {
                    self.enter(BbrState::ProbeDown, now);
                }
            }
            _ => {}
        }
    }

    /// Per-round loss response for the non-probing states (BBRv3 lower bounds).
    /// Taken only when the round lost more than 2 %: the draft reacts to any loss, which
    /// on a path with 1 % random loss ratchets the rate down between probes; random loss
    /// below the threshold is treated as noise, as `inflight_hi` already treats it.
    fn adapt_lower_bounds(&mut self, delivered: u64) {
        let round_delivered = delivered - self.loss_round_start_delivered;
        let rate = self.lost_in_round as f64 / (round_delivered + self.lost_in_round).max(1) as f64;
        self.loss_ewma = 0.75 * self.loss_ewma + 0.25 * rate;
        // Loss above the threshold over a whole round while not probing: a shared
        // buffer overflowed. Every flow whose packets it dropped cuts its long-term
        // bound, not only the one whose probe overflowed it, so flows sharing the
        // buffer decrease together, in proportion to their size (the MD of AIMD, with
        // the equal steps of each probe as the AI): that is what converges their
        // shares. Measured over the round, not per packet: drop-tail spreads an
        // overflow's drops over the flows by their arrival rates, so each flow's round
        // loss rate sees it, where one packet's view is noise.
        if rate > LOSS_THRESH
            && self.round_lost_tx_in_flight > 0
            && matches!(self.state, BbrState::ProbeDown | BbrState::ProbeCruise)
            && self.round_count > self.cut_round
        {
            self.cut_inflight_hi(self.round_lost_tx_in_flight);
            self.loss_events += 1;
        }
        self.round_lost_tx_in_flight = 0;
        let lossy = rate > LOSS_THRESH && self.loss_ewma > 0.75 * LOSS_THRESH;
        if !self.loss_in_round
            || !lossy
            || matches!(
                self.state,
                BbrState::Startup | BbrState::ProbeUp | BbrState::ProbeRefill
            )
        {
            return;
        }
        let bw_lo = if self.bw_lo == u64::MAX {
            self.max_bw()
        } else {
            self.bw_lo
        };
        self.bw_lo = self.bw_latest.max((BETA * bw_lo as f64) as u64);
        let in_lo = if self.inflight_lo == u64::MAX {
            self.cwnd
        } else {
            self.inflight_lo
        };
        self.inflight_lo = self.inflight_latest.max((BETA * in_lo as f64) as u64);
    }

    /// The multiplicative decrease of the long-term bound: `BETA` × what was in flight
    /// when the lost data was sent, and never below `BETA` × the model's BDP target.
    fn cut_inflight_hi(&mut self, tx_in_flight: u64) {
        let target = self.inflight(1.0);
        let cut = (BETA * tx_in_flight as f64) as u64;
        self.inflight_hi = cut.max((BETA * target as f64) as u64);
        self.cut_round = self.round_count;
    }

    fn set_pacing(&mut self) {
        let bw = self.bw();
        if bw == 0 {
            return;
        }
        let mut rate = (self.pacing_gain * self.gain_scale * bw as f64 * PACING_MARGIN) as u64;
        // Never pace slower than the minimum window per round trip: a model built from
        // application-limited samples must not starve the flow once it has data.
        if let Some(rtt) = self.min_rtt {
            let floor = (4 * self.mtu) as f64 / rtt.as_secs_f64().max(1e-6);
            rate = rate.max(floor as u64);
        }
        if self.filled_pipe || rate > self.pacing_rate {
            self.pacing_rate = rate;
        }
    }

    fn set_cwnd(&mut self, acked: u64, delivered: u64) {
        let target = self.inflight(self.cwnd_gain);
        if self.filled_pipe {
            self.cwnd = (self.cwnd + acked).min(target);
        } else if self.cwnd < target || delivered < initial_window(self.mtu) {
            self.cwnd += acked;
        }
        self.cwnd = self.cwnd.max(4 * self.mtu);
        // Bounds.
        let mut cap = u64::MAX;
        if matches!(
            self.state,
            BbrState::ProbeDown | BbrState::ProbeCruise | BbrState::ProbeRtt
        ) {
            cap = self.inflight_with_headroom();
        } else if self.state != BbrState::Startup || self.inflight_hi != u64::MAX {
            cap = self.inflight_hi;
        }
        cap = cap.min(self.inflight_lo);
        if self.state == BbrState::ProbeRtt {
            cap = cap.min(self.probe_rtt_cwnd());
        }
        self.cwnd = self.cwnd.min(cap).max(4 * self.mtu);
    }
}

impl Controller for Bbr {
    fn on_sent(&mut self, _now: Instant, _bytes: u64, _in_flight: u64) {}

    fn on_ack(&mut self, now: Instant, ack: &AckEvent) {
        self.update_min_rtt(now, ack.latest_rtt);
        if let Some(s) = ack.sample {
            self.update_round(&s, ack.delivered);
            // Latest-round signals.
            if self.round_start {
                self.rounds_since_probe += 1;
            }
            if s.prior_delivered >= self.loss_round_delivered {
                self.adapt_lower_bounds(ack.delivered);
                self.loss_round_delivered = ack.delivered;
                self.loss_round_start_delivered = ack.delivered;
                self.loss_in_round = false;
                self.lost_in_round = 0;
                self.loss_events_in_round = 0;
                self.bw_latest = 0;
                self.inflight_latest = 0;
            }
            self.bw_latest = self.bw_latest.max(s.delivery_rate);
            self.inflight_latest = self.inflight_latest.max(s.delivered);
            self.update_max_bw(&s);
            self.check_full_bw(&s);
        }
        self.update_ack_aggregation(now, ack.acked);
        match self.state {
            BbrState::Startup if self.filled_pipe => self.enter(BbrState::Drain, now),
            BbrState::Drain if ack.in_flight <= self.inflight(1.0) => {
                self.enter(BbrState::ProbeDown, now);
            }
            _ => {}
        }
        self.update_probe_bw(now, ack.in_flight);
        self.check_probe_rtt(now, ack.in_flight);
        self.set_pacing();
        self.set_cwnd(ack.acked, ack.delivered);
    }

    fn on_loss(&mut self, now: Instant, loss: &LossEvent) {
        self.loss_in_round = true;
        self.lost_in_round += loss.lost;
        if !loss.is_app_limited {
            self.round_lost_tx_in_flight = self.round_lost_tx_in_flight.max(loss.tx_in_flight);
        }
        self.loss_events_in_round += 1;
        // Too high: a burst of loss well above the threshold (a queue overflowing), or
        // loss above it on a path whose smoothed loss rate is near it too. One round of
        // random loss slightly above 2 % is noise, not a signal.
        let inst = loss.lost_since_sent as f64 / loss.tx_in_flight.max(1) as f64;
        let too_high = loss.tx_in_flight > 0
            && (inst > 4.0 * LOSS_THRESH
                || (inst > LOSS_THRESH && self.loss_ewma > 0.75 * LOSS_THRESH));
        // The long-term bound reacts only while probing for bandwidth (Linux
        // bbr_handle_lost_packet), and Startup ends on loss only after several loss
        // events in one round (BBRv3's full-loss count), not on one unlucky packet.
        let probing = match self.state {
            BbrState::Startup => self.loss_events_in_round >= STARTUP_FULL_LOSS_COUNT,
            BbrState::ProbeRefill | BbrState::ProbeUp => self.probe_may_cut,
            _ => false,
        };
        let too_high = too_high && probing;
        if loss.persistent {
            self.cwnd = minimum_window(self.mtu).max(4 * self.mtu);
            self.loss_events += 1;
            return;
        }
        if !too_high {
            return;
        }
        self.loss_events += 1;
        if !loss.is_app_limited {
            // A multiplicative decrease of the long-term bound, as for the lower bounds:
            // two flows that keep a shared buffer full are both bounded by
            // `inflight_hi`, and only a bound cut in proportion to what was in flight
            // (with the equal additive growth of each probe) converges their shares
            // (AIMD). Keeping it at `tx_in_flight` kept any split.
            self.cut_inflight_hi(loss.tx_in_flight);
            self.probe_may_cut = false;
        }
        match self.state {
            // Leave Startup on loss only when the loss is the path's answer to a full
            // pipe, not to a trickle of application-limited traffic.
            BbrState::Startup if !loss.is_app_limited && self.max_bw() > 0 => {
                self.filled_pipe = true;
                self.enter(BbrState::Drain, now);
            }
            BbrState::ProbeUp => self.enter(BbrState::ProbeDown, now),
            _ => {}
        }
        self.set_cwnd(0, loss.delivered);
    }

    fn on_mtu(&mut self, mtu: u64) {
        self.mtu = mtu;
    }

    fn window(&self) -> u64 {
        self.cwnd
    }

    fn pacing_rate(&self) -> Option<u64> {
        Some(self.pacing_rate.max(1))
    }

    fn state(&self) -> &'static str {
        self.state.name()
    }

    fn congestion_events(&self) -> u64 {
        self.loss_events
    }

    fn seed(&mut self, seed: u64) {
        // xorshift needs a non-zero state.
        self.jitter = seed | 1;
    }

    fn set_pacing_gain(&mut self, gain: f64) {
        self.gain_scale = gain.clamp(0.25, 4.0);
        self.set_pacing();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTU: u64 = 1200;
    const RTT: Duration = Duration::from_millis(20);
    /// 100 Mbit/s.
    const RATE: u64 = 12_500_000;

    /// A steady path for one controller: ACKs of ten packets at `RATE`, each
    /// acknowledging data sent one `RTT` earlier.
    struct Path {
        bbr: Bbr,
        now: Instant,
        delivered: u64,
    }

    impl Path {
        fn new() -> Self {
            let now = Instant::now();
            Self {
                bbr: Bbr::new(now, MTU),
                now,
                delivered: 0,
            }
        }

        fn ack(&mut self) {
            let acked = 10 * MTU;
            self.now += Duration::from_secs_f64(acked as f64 / RATE as f64);
            let bdp = RATE * RTT.as_millis() as u64 / 1000;
            let prior_delivered = self.delivered.saturating_sub(bdp);
            self.delivered += acked;
            let sample = RateSample {
                delivered: self.delivered - prior_delivered,
                interval: RTT,
                delivery_rate: RATE,
                is_app_limited: false,
                tx_in_flight: bdp,
                lost: 0,
                prior_delivered,
            };
            let ack = AckEvent {
                acked,
                in_flight: bdp,
                largest_sent: self.now - RTT,
                latest_rtt: RTT,
                min_rtt: RTT,
                smoothed_rtt: RTT,
                sample: Some(sample),
                delivered: self.delivered,
            };
            self.bbr.on_ack(self.now, &ack);
        }

        /// ACKs until a new packet-timed round starts.
        fn next_round(&mut self) {
            let round = self.bbr.round_count;
            while self.bbr.round_count == round {
                self.ack();
            }
        }

        fn lose(&mut self, packets: u64, tx_in_flight: u64) {
            let loss = LossEvent {
                lost: packets * MTU,
                in_flight: tx_in_flight,
                largest_lost_sent: self.now - RTT,
                tx_in_flight,
                lost_since_sent: packets * MTU,
                is_app_limited: false,
                persistent: false,
                delivered: self.delivered,
            };
            self.bbr.on_loss(self.now, &loss);
        }

        /// A path past Startup, in ProbeBW with a loose long-term bound.
        fn in_probe_bw() -> Self {
            let mut p = Self::new();
            for _ in 0..40 {
                p.next_round();
            }
            assert!(p.bbr.filled_pipe, "{:?}", p.bbr.state);
            p.bbr.enter(BbrState::ProbeCruise, p.now);
            p.bbr.rounds_since_probe = 0;
            p.bbr.inflight_hi = 1_000_000;
            p
        }
    }

    #[test]
    fn a_lossy_round_while_not_probing_cuts_inflight_hi_once() {
        let mut p = Path::in_probe_bw();
        p.next_round();
        // 3 % of a round lost, over three loss events: one cut, to 0.7 × the most that
        // was in flight when the lost packets were sent.
        p.lose(3, 300_000);
        p.lose(2, 350_000);
        p.lose(2, 320_000);
        p.next_round();
        p.next_round();
        assert_eq!(p.bbr.inflight_hi, (BETA * 350_000.0) as u64);
        // A round under the threshold (1 %) leaves it.
        p.lose(2, 300_000);
        p.next_round();
        p.next_round();
        assert_eq!(p.bbr.inflight_hi, (BETA * 350_000.0) as u64);
    }

    #[test]
    fn one_probe_cuts_inflight_hi_once() {
        let mut p = Path::in_probe_bw();
        p.bbr.enter(BbrState::ProbeRefill, p.now);
        // Two too-high losses of one probe, reported by two ACKs.
        p.lose(40, 400_000);
        assert_eq!(p.bbr.inflight_hi, (BETA * 400_000.0) as u64);
        p.lose(40, 280_000);
        assert_eq!(p.bbr.inflight_hi, (BETA * 400_000.0) as u64);
        // The next probe may cut again.
        p.bbr.enter(BbrState::ProbeRefill, p.now);
        p.lose(40, 280_000);
        assert_eq!(p.bbr.inflight_hi, (BETA * 280_000.0) as u64);
    }

    #[test]
    fn a_probe_raises_inflight_hi_by_a_doubling_step() {
        let mut p = Path::in_probe_bw();
        p.bbr.inflight_hi = 100_000;
        p.bbr.enter(BbrState::ProbeUp, p.now);
        // The bound caps the window below 1.25 BDP, so the probe goes on.
        p.next_round();
        assert_eq!(p.bbr.inflight_hi, 100_000 + 8 * MTU);
        p.next_round();
        assert_eq!(p.bbr.inflight_hi, 100_000 + 8 * MTU + 16 * MTU);
    }
}
