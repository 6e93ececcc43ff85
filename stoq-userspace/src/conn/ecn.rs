//! Explicit Congestion Notification (RFC 9000 §13.4, RFC 3168).
//!
//! A router with an active queue can mark a packet *Congestion Experienced* (CE) instead
//! of dropping it. The receiver counts the marks it sees per packet-number space and
//! reports them in ACK_ECN frames; the sender treats new CE marks as a congestion signal,
//! one round trip before the queue would have overflowed, with no packet lost.
//!
//! The sender must first learn that the path and the peer carry marks faithfully
//! (`Validation`): the first [`TESTING_PACKETS`] packets on a path are sent ECT(0); the
//! peer's counts must then account for every ECT(0) packet it acknowledges. A path that
//! loses every test packet (a middlebox dropping ECT traffic), or that clears the marks
//! (bleaching), or a peer that reports impossible counts, fails validation and packets go
//! out unmarked from then on. A path change starts validation over.

use std::net::IpAddr;

/// The ECN field of an IP packet: the low two bits of the IPv4 TOS or IPv6 traffic-class
/// byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[repr(u8)]
pub enum EcnCodepoint {
    /// Not ECN-capable.
    #[default]
    NotEct = 0b00,
    /// ECN-capable transport, codepoint 1 (L4S); STOQ never sends it.
    Ect1 = 0b01,
    /// ECN-capable transport, codepoint 0: what STOQ sends.
    Ect0 = 0b10,
    /// Congestion experienced: a router marked the packet instead of dropping it.
    Ce = 0b11,
}

impl EcnCodepoint {
    /// The codepoint in the low two bits of a TOS or traffic-class byte.
    pub fn from_bits(tos: u8) -> Self {
        match tos & 0b11 {
            0b01 => Self::Ect1,
            0b10 => Self::Ect0,
            0b11 => Self::Ce,
            _ => Self::NotEct,
        }
    }

    /// The two bits, for a TOS or traffic-class byte.
    pub fn bits(self) -> u8 {
        self as u8
    }
}

/// What an I/O backend knows about a received datagram besides its bytes and sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DatagramInfo {
    /// The local address it was sent to (from `IP_PKTINFO`/`IPV6_PKTINFO` on a socket
    /// bound to a wildcard address). Replies go out from it, so a host with several
    /// addresses answers from the one the peer chose.
    pub local_ip: Option<IpAddr>,
    /// Its ECN codepoint.
    pub ecn: EcnCodepoint,
}

/// ECT(0) packets sent on a new path before the sender waits for the peer's counts.
pub const TESTING_PACKETS: u32 = 10;

/// Where ECN validation of the current path stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Marking the first packets; `sent` so far, `lost` of them declared lost.
    Testing { sent: u32, lost: u32 },
    /// All test packets sent; waiting for an ACK to validate them (not marking).
    Unknown { lost: u32 },
    /// The peer's counts accounted for our marks: every packet is marked.
    Capable,
    /// Validation failed, or ECN is off: nothing is marked.
    Failed,
}

/// ECN validation for one connection's current path (RFC 9000 §13.4.2, Appendix A.4).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Validation {
    state: State,
    enabled: bool,
    /// Why validation last failed.
    pub(crate) failure: Option<&'static str>,
}

/// The peer's ECN counts as last accepted, and ours, for one packet-number space.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SpaceCounts {
    /// ECT(0), ECT(1), CE counts this side received (reported in our ACKs).
    pub(crate) rx: [u64; 3],
    /// The same counts as the peer last reported them for our packets.
    pub(crate) peer: [u64; 3],
    /// Packets this side sent ECT(0)-marked in the space.
    pub(crate) sent_marked: u64,
}

impl SpaceCounts {
    /// Counts a received, authenticated packet's codepoint. Returns whether it was CE
    /// (which is acknowledged at once).
    pub(crate) fn on_received(&mut self, ecn: EcnCodepoint) -> bool {
        match ecn {
            EcnCodepoint::NotEct => return false,
            EcnCodepoint::Ect0 => self.rx[0] += 1,
            EcnCodepoint::Ect1 => self.rx[1] += 1,
            EcnCodepoint::Ce => self.rx[2] += 1,
        }
        ecn == EcnCodepoint::Ce
    }

    /// The counts for an ACK_ECN frame, or `None` while nothing was marked.
    pub(crate) fn ack_counts(&self) -> Option<[u64; 3]> {
        (self.rx != [0; 3]).then_some(self.rx)
    }
}

/// What an ACK's ECN counts said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckVerdict {
    /// Nothing to act on.
    Nothing,
    /// The peer saw this many new CE marks: a congestion signal.
    Congestion(u64),
}

impl Validation {
    /// A new path's validation; `enabled: false` never marks.
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            state: if enabled {
                State::Testing { sent: 0, lost: 0 }
            } else {
                State::Failed
            },
            enabled,
            failure: None,
        }
    }

    /// Starts over on a new path (RFC 9000 §13.4.2: validation is per path).
    pub(crate) fn reset(&mut self) {
        *self = Self::new(self.enabled);
    }

    /// Whether the next datagram goes out ECT(0).
    pub(crate) fn should_mark(&self) -> bool {
        matches!(self.state, State::Testing { .. } | State::Capable)
    }

    /// A marked datagram left.
    pub(crate) fn on_marked_sent(&mut self) {
        if let State::Testing { sent, lost } = &mut self.state {
            *sent += 1;
            if *sent >= TESTING_PACKETS {
                self.state = State::Unknown { lost: *lost };
            }
        }
    }

    /// A marked packet was declared lost. If every test packet is lost and none was ever
    /// acknowledged, the path is taken to drop ECT traffic.
    pub(crate) fn on_marked_lost(&mut self) {
        match &mut self.state {
            State::Testing { lost, .. } => *lost += 1,
            State::Unknown { lost } => {
                *lost += 1;
                if *lost >= TESTING_PACKETS {
                    self.fail("every ECN test packet was lost");
                }
            }
            State::Capable | State::Failed => {}
        }
    }

    fn fail(&mut self, why: &'static str) {
        self.state = State::Failed;
        self.failure = Some(why);
    }

    /// Checks an ACK that raised the largest acknowledged packet number of a space:
    /// `counts` are its ECN counts (`None` for a plain ACK), `newly_marked` the ECT(0)
    /// packets it newly acknowledged.
    pub(crate) fn on_ack(
        &mut self,
        space: &mut SpaceCounts,
        counts: Option<[u64; 3]>,
        newly_marked: u64,
    ) -> AckVerdict {
        if self.state == State::Failed {
            return AckVerdict::Nothing;
        }
        let Some(c) = counts else {
            if newly_marked > 0 {
                self.fail("the peer acknowledged ECT(0) packets without ECN counts");
            }
            return AckVerdict::Nothing;
        };
        let p = space.peer;
        if c[0] < p[0] || c[1] < p[1] || c[2] < p[2] {
            self.fail("the peer's ECN counts went down");
            return AckVerdict::Nothing;
        }
        let (d0, d1, dce) = (c[0] - p[0], c[1] - p[1], c[2] - p[2]);
        space.peer = c;
        if d1 > 0 {
            self.fail("ECT(1) counted though only ECT(0) was sent (re-marking)");
            return AckVerdict::Nothing;
        }
        if d0.saturating_add(dce) < newly_marked {
            self.fail("ECT(0) packets were acknowledged unmarked (bleaching)");
            return AckVerdict::Nothing;
        }
        if c[0].saturating_add(c[2]) > space.sent_marked {
            self.fail("the peer counted more marked packets than were sent");
            return AckVerdict::Nothing;
        }
        if newly_marked > 0 {
            self.state = State::Capable;
        }
        if dce > 0 {
            AckVerdict::Congestion(dce)
        } else {
            AckVerdict::Nothing
        }
    }

    /// A short name of the state, for statistics.
    pub(crate) fn name(&self) -> &'static str {
        match self.state {
            State::Testing { .. } => "testing",
            State::Unknown { .. } => "unknown",
            State::Capable => "capable",
            State::Failed if !self.enabled => "off",
            State::Failed => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tested(n: u32) -> (Validation, SpaceCounts) {
        let mut v = Validation::new(true);
        let mut s = SpaceCounts::default();
        for _ in 0..n {
            assert!(v.should_mark());
            v.on_marked_sent();
            s.sent_marked += 1;
        }
        (v, s)
    }

    #[test]
    fn codepoints_round_trip() {
        for c in [
            EcnCodepoint::NotEct,
            EcnCodepoint::Ect1,
            EcnCodepoint::Ect0,
            EcnCodepoint::Ce,
        ] {
            assert_eq!(EcnCodepoint::from_bits(0xb8 | c.bits()), c);
        }
    }

    #[test]
    fn faithful_counts_validate_and_ce_signals_congestion() {
        let (mut v, mut s) = tested(TESTING_PACKETS);
        assert!(!v.should_mark(), "waiting for the test packets' ACK");
        assert_eq!(
            v.on_ack(&mut s, Some([8, 0, 2]), 10),
            AckVerdict::Congestion(2)
        );
        assert_eq!(v.name(), "capable");
        assert!(v.should_mark());
        s.sent_marked += 3;
        assert_eq!(v.on_ack(&mut s, Some([11, 0, 2]), 3), AckVerdict::Nothing);
        assert_eq!(v.name(), "capable");
    }

    #[test]
    fn bleaching_fails_validation() {
        let (mut v, mut s) = tested(4);
        assert_eq!(v.on_ack(&mut s, Some([1, 0, 0]), 4), AckVerdict::Nothing);
        assert_eq!(v.name(), "failed");
        assert!(!v.should_mark());
        let (mut v, mut s) = tested(4);
        v.on_ack(&mut s, None, 4);
        assert_eq!(v.name(), "failed");
    }

    #[test]
    fn impossible_counts_fail_validation() {
        let (mut v, mut s) = tested(4);
        v.on_ack(&mut s, Some([9, 0, 0]), 4);
        assert_eq!(v.name(), "failed", "more marks counted than sent");
        let (mut v, mut s) = tested(4);
        v.on_ack(&mut s, Some([3, 1, 0]), 3);
        assert_eq!(v.name(), "failed", "ECT(1) never sent");
        let (mut v, mut s) = tested(4);
        v.on_ack(&mut s, Some([3, 0, 0]), 3);
        v.on_ack(&mut s, Some([2, 0, 0]), 0);
        assert_eq!(v.name(), "failed", "counts went down");
    }

    #[test]
    fn a_path_that_drops_marked_packets_fails_then_resets() {
        let (mut v, _) = tested(TESTING_PACKETS);
        for _ in 0..TESTING_PACKETS {
            v.on_marked_lost();
        }
        assert_eq!(v.name(), "failed");
        assert!(v.failure.is_some());
        v.reset();
        assert_eq!(v.name(), "testing");
        assert!(Validation::new(false).name() == "off");
    }

    #[test]
    fn received_marks_are_counted_for_acks() {
        let mut s = SpaceCounts::default();
        assert_eq!(s.ack_counts(), None);
        assert!(!s.on_received(EcnCodepoint::Ect0));
        assert!(s.on_received(EcnCodepoint::Ce));
        assert!(!s.on_received(EcnCodepoint::NotEct));
        assert_eq!(s.ack_counts(), Some([1, 0, 1]));
    }
}
