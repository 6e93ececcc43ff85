//! [`SteerStats`]: a snapshot of the XDP program's verdict counters.

use std::fmt;

use stoq_common::classify::{DropReason, PacketKind, PassReason};
use stoq_common::maps::{
    COUNTER_ABORTED, COUNTER_INITIAL_LIMITED, COUNTER_NO_SOCKET, COUNTER_OVERSIZE,
    COUNTER_REDIRECTED, NUM_COUNTERS,
};

/// Counters summed over CPUs. Every frame the program sees lands in exactly one of
/// `redirected`, `no_socket`, `oversize`, `aborted`, `initial_limited`, a pass reason or a
/// drop reason; STOQ packets are also counted by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SteerStats {
    raw: [u64; NUM_COUNTERS as usize],
}

impl SteerStats {
    /// Wraps raw counter values indexed as in `stoq_common::maps`.
    pub fn from_raw(raw: [u64; NUM_COUNTERS as usize]) -> Self {
        Self { raw }
    }

    /// Raw counter values.
    pub fn raw(&self) -> &[u64; NUM_COUNTERS as usize] {
        &self.raw
    }

    /// STOQ packets redirected into an AF_XDP socket.
    pub fn redirected(&self) -> u64 {
        self.raw[COUNTER_REDIRECTED as usize]
    }

    /// STOQ packets passed because no socket was bound on their rx queue.
    pub fn no_socket(&self) -> u64 {
        self.raw[COUNTER_NO_SOCKET as usize]
    }

    /// Program aborts.
    pub fn aborted(&self) -> u64 {
        self.raw[COUNTER_ABORTED as usize]
    }

    /// Frames passed for `reason`.
    pub fn passed(&self, reason: PassReason) -> u64 {
        self.raw[reason.counter() as usize]
    }

    /// Datagrams dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.raw[reason.counter() as usize]
    }

    /// STOQ packets of `kind` (redirected or not).
    pub fn kind(&self, kind: PacketKind) -> u64 {
        self.raw[kind.counter() as usize]
    }

    /// STOQ packets passed to the kernel because they exceed an AF_XDP frame (GSO/GRO
    /// super-packets in generic mode).
    pub fn oversize(&self) -> u64 {
        self.raw[COUNTER_OVERSIZE as usize]
    }

    /// Initial packets dropped by the per-prefix rate limit (not malformed: shed load).
    pub fn initial_limited(&self) -> u64 {
        self.raw[COUNTER_INITIAL_LIMITED as usize]
    }

    /// All drops of malformed datagrams (by [`DropReason`]; the rate limit's drops are
    /// [`initial_limited`](Self::initial_limited)).
    pub fn dropped_total(&self) -> u64 {
        DropReason::ALL.iter().map(|r| self.dropped(*r)).sum()
    }

    /// All passes (not counting STOQ packets passed for lack of a socket).
    pub fn passed_total(&self) -> u64 {
        PassReason::ALL.iter().map(|r| self.passed(*r)).sum()
    }

    /// Every frame the program has seen.
    pub fn total(&self) -> u64 {
        self.redirected()
            + self.no_socket()
            + self.oversize()
            + self.aborted()
            + self.initial_limited()
            + self.passed_total()
            + self.dropped_total()
    }

    /// Counter-wise difference `self - earlier` (saturating), for measuring an interval.
    pub fn since(&self, earlier: &Self) -> Self {
        let mut raw = self.raw;
        for (a, b) in raw.iter_mut().zip(earlier.raw.iter()) {
            *a = a.saturating_sub(*b);
        }
        Self { raw }
    }
}

impl fmt::Display for SteerStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "redirected={} no_socket={} aborted={}",
            self.redirected(),
            self.no_socket(),
            self.aborted()
        )?;
        if self.oversize() != 0 {
            write!(f, " oversize={}", self.oversize())?;
        }
        if self.initial_limited() != 0 {
            write!(f, " drop.initial_rate_limited={}", self.initial_limited())?;
        }
        for r in PassReason::ALL {
            if self.passed(r) != 0 {
                write!(f, " pass.{}={}", r.name(), self.passed(r))?;
            }
        }
        for r in DropReason::ALL {
            if self.dropped(r) != 0 {
                write!(f, " drop.{}={}", r.name(), self.dropped(r))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stoq_common::maps::NUM_COUNTERS;

    #[test]
    fn accessors_and_since() {
        let mut raw = [0u64; NUM_COUNTERS as usize];
        raw[COUNTER_REDIRECTED as usize] = 10;
        raw[DropReason::FixedBit.counter() as usize] = 3;
        raw[PassReason::OtherPort.counter() as usize] = 4;
        raw[PacketKind::Short.counter() as usize] = 10;
        let s = SteerStats::from_raw(raw);
        assert_eq!(
            (
                s.redirected(),
                s.dropped_total(),
                s.passed_total(),
                s.total()
            ),
            (10, 3, 4, 17)
        );
        assert_eq!(s.kind(PacketKind::Short), 10);
        let d = s.since(&SteerStats::default());
        assert_eq!(d, s);
        assert_eq!(SteerStats::default().since(&s), SteerStats::default());
        assert_eq!(
            s.to_string(),
            "redirected=10 no_socket=0 aborted=0 pass.other_port=4 drop.fixed_bit=3"
        );
    }
}
