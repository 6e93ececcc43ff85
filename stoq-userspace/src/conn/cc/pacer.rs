//! A token-bucket pacer: the connection may send a packet when the bucket holds its size.
//! The bucket refills at the pacing rate and holds at most a small burst, so a window is
//! spread over the round trip instead of leaving in one line-rate burst.

use std::time::{Duration, Instant};

/// Token bucket, in bytes.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    tokens: u64,
    last: Option<Instant>,
    rate: u64,
    mtu: u64,
}

impl Pacer {
    pub(crate) fn new(mtu: u64) -> Self {
        Self {
            tokens: 10 * mtu,
            last: None,
            rate: 0,
            mtu,
        }
    }

    /// The burst allowed at `rate`: 1 ms of sending, at least 2 and at most 64 packets.
    fn capacity(&self) -> u64 {
        (self.rate / 1000).clamp(2 * self.mtu, 64 * self.mtu)
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last);
            // The same value as the 128-bit product, without the 128-bit division on the
            // per-packet path when the product fits in 64 bits (it does for any rate below
            // 18 EB/s over a second).
            let nanos = dt.as_nanos().min(u128::from(u64::MAX)) as u64;
            let add = match self.rate.checked_mul(nanos) {
                Some(p) => p / 1_000_000_000,
                None => (u128::from(self.rate) * u128::from(nanos) / 1_000_000_000) as u64,
            };
            if add > 0 {
                self.tokens = (self.tokens + add).min(self.capacity());
                self.last = Some(now);
            }
        } else {
            self.last = Some(now);
        }
    }

    /// When a packet of `bytes` may leave at `rate` bytes/s: `None` means now.
    pub(crate) fn delay(&mut self, now: Instant, rate: u64, bytes: u64) -> Option<Instant> {
        self.rate = rate.max(1);
        self.refill(now);
        if self.tokens >= bytes {
            return None;
        }
        let missing = bytes - self.tokens;
        let ns = (u128::from(missing) * 1_000_000_000).div_ceil(u128::from(self.rate));
        Some(now + Duration::from_nanos(ns.min(u128::from(u64::MAX)) as u64))
    }

    pub(crate) fn on_sent(&mut self, bytes: u64) {
        self.tokens = self.tokens.saturating_sub(bytes);
    }

    pub(crate) fn set_mtu(&mut self, mtu: u64) {
        self.mtu = mtu;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_packets_at_the_rate() {
        let mut p = Pacer::new(1000);
        let t0 = Instant::now();
        // 1 MB/s: after the initial burst, one 1000-byte packet per millisecond.
        let mut now = t0;
        let mut sent = 0;
        while now < t0 + Duration::from_millis(100) {
            match p.delay(now, 1_000_000, 1000) {
                None => {
                    p.on_sent(1000);
                    sent += 1;
                }
                Some(t) => now = t,
            }
        }
        assert!((100..=112).contains(&sent), "{sent}");
    }
}
