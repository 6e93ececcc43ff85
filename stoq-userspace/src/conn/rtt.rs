//! RTT estimation (RFC 9002 §5).

use std::time::Duration;

/// The RTT assumed before the first sample (RFC 9002 §6.2.2).
pub const INITIAL_RTT: Duration = Duration::from_millis(333);
/// Timer granularity (RFC 9002 §6.1.2).
pub const GRANULARITY: Duration = Duration::from_millis(1);

/// Smoothed RTT, variance and minimum, from ACK samples.
#[derive(Debug, Clone, Copy)]
pub struct RttEstimator {
    latest: Duration,
    smoothed: Option<Duration>,
    var: Duration,
    min: Duration,
}

impl Default for RttEstimator {
    fn default() -> Self {
        Self {
            latest: INITIAL_RTT,
            smoothed: None,
            var: INITIAL_RTT / 2,
            min: INITIAL_RTT,
        }
    }
}

impl RttEstimator {
    /// Adds a sample: `rtt` measured, `ack_delay` as reported by the peer (already capped
    /// to its max_ack_delay once the handshake is confirmed).
    pub fn update(&mut self, rtt: Duration, ack_delay: Duration) {
        self.latest = rtt;
        match self.smoothed {
            None => {
                self.min = rtt;
                self.smoothed = Some(rtt);
                self.var = rtt / 2;
            }
            Some(srtt) => {
                self.min = self.min.min(rtt);
                let adjusted = if rtt >= self.min + ack_delay {
                    rtt - ack_delay
                } else {
                    rtt
                };
                let diff = srtt.abs_diff(adjusted);
                self.var = (3 * self.var + diff) / 4;
                self.smoothed = Some((7 * srtt + adjusted) / 8);
            }
        }
    }

    /// Smoothed RTT (the initial RTT before any sample).
    pub fn smoothed(&self) -> Duration {
        self.smoothed.unwrap_or(INITIAL_RTT)
    }

    /// RTT variance.
    pub fn var(&self) -> Duration {
        self.var
    }

    /// Minimum RTT seen.
    pub fn min(&self) -> Duration {
        self.min
    }

    /// Latest sample.
    pub fn latest(&self) -> Duration {
        self.latest
    }

    /// Whether any sample was taken.
    pub fn has_sample(&self) -> bool {
        self.smoothed.is_some()
    }

    /// The PTO base: `srtt + max(4 * rttvar, granularity)` (without max_ack_delay and
    /// backoff).
    pub fn pto_base(&self) -> Duration {
        self.smoothed() + (4 * self.var).max(GRANULARITY)
    }

    /// The time threshold for loss: `9/8 * max(srtt, latest)`, at least the granularity.
    pub fn loss_delay(&self) -> Duration {
        (self.smoothed().max(self.latest) * 9 / 8).max(GRANULARITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9002_smoothing() {
        let mut r = RttEstimator::default();
        assert_eq!(r.smoothed(), INITIAL_RTT);
        r.update(Duration::from_millis(100), Duration::ZERO);
        assert_eq!(
            (r.smoothed(), r.var(), r.min()),
            (
                Duration::from_millis(100),
                Duration::from_millis(50),
                Duration::from_millis(100)
            )
        );
        // An ACK delay is subtracted only when it leaves at least min_rtt.
        r.update(Duration::from_millis(120), Duration::from_millis(10));
        assert_eq!(r.smoothed(), Duration::from_micros(101_250));
        assert_eq!(r.var(), Duration::from_micros(40_000));
        r.update(Duration::from_millis(80), Duration::from_millis(50));
        assert_eq!(r.min(), Duration::from_millis(80));
        assert!(r.pto_base() > r.smoothed());
    }
}
