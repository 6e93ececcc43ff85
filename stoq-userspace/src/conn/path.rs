//! Path state: the peer's connection IDs (NEW_CONNECTION_ID, retirement), the CIDs this
//! side issued, path validation (PATH_CHALLENGE/RESPONSE) for migration and NAT
//! rebinding, and DPLPMTUD (RFC 8899) probing of the path MTU.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stoq_common::cid::ConnectionId;

use super::ConnectionError;
use crate::frame::{self, Out};

/// Most PATH_CHALLENGE frames answered per second; beyond that a peer is flooding.
pub(crate) const MAX_CHALLENGES_PER_SEC: u32 = 256;
/// Most RETIRE_CONNECTION_ID frames waiting to go out (bounded by the CID limit in
/// practice; a peer that retires prior to a huge number is refused).
const MAX_PENDING_RETIRE: usize = 64;
/// DPLPMTUD: probes lost at one size before that size counts as too big.
const MAX_PROBES: u8 = 3;
/// DPLPMTUD: the search stops when the bounds are this close.
const SEARCH_DONE: usize = 16;
/// The size every QUIC path must carry (RFC 9000 §14.1): where a black hole drops to.
pub(crate) const BASE_PLPMTU: usize = 1200;
/// Packets larger than [`BASE_PLPMTU`] declared lost, none of them followed by a large
/// packet that got through, that make the path a black hole for them (RFC 8899 §4.3).
/// Congestion loses bursts too, but there large packets sent after the lost ones arrive:
/// their acknowledgments are what declares the burst lost.
const BLACK_HOLE_LOSSES: u32 = 8;

/// A connection ID of the peer's, with its reset token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerCid {
    pub(crate) seq: u64,
    pub(crate) cid: ConnectionId,
    pub(crate) reset_token: [u8; 16],
}

/// A validation in progress for the peer's new address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Validation {
    pub(crate) remote: SocketAddr,
    pub(crate) previous: SocketAddr,
    pub(crate) token: [u8; 8],
    pub(crate) deadline: Instant,
    pub(crate) challenge_pending: bool,
    /// When the challenge is sent again if no response came (a lost challenge, or one
    /// sent to an address the peer had already left, must not fail the validation).
    pub(crate) next_challenge: Instant,
}

#[derive(Debug)]
pub(crate) struct Paths {
    /// The peer's CIDs we may use (the active one is first).
    pub(crate) peer_cids: VecDeque<PeerCid>,
    /// Sequence number of the CID in use.
    pub(crate) active_seq: u64,
    /// Every peer CID with a sequence below this is retired.
    retire_prior_to: u64,
    /// Highest sequence number seen from the peer.
    highest_peer_seq: Option<u64>,
    pub(crate) retire_pending: VecDeque<u64>,
    /// CIDs this side issued: (seq, cid, reset token, NEW_CONNECTION_ID pending).
    pub(crate) issued: Vec<(u64, ConnectionId, [u8; 16], bool)>,
    /// How many of `issued` have their NEW_CONNECTION_ID pending: asked for every
    /// packet, so kept as a count instead of a scan (only the methods below change it).
    issued_unsent: usize,
    pub(crate) next_issue_seq: u64,
    /// CIDs the peer retired, for the endpoint to unroute.
    pub(crate) retired_local: Vec<ConnectionId>,
    /// PATH_RESPONSE to send: the latest challenge's data.
    pub(crate) response: Option<[u8; 8]>,
    /// PATH_CHALLENGEs counted in the current one-second window, and when it began.
    challenges: (Option<Instant>, u32),
    pub(crate) validation: Option<Validation>,
    // DPLPMTUD.
    mtu: usize,
    mtu_max: usize,
    search_low: usize,
    search_high: usize,
    probe_size: Option<usize>,
    probes_lost: u8,
    pub(crate) probe_in_flight: bool,
    pub(crate) next_probe: Option<Instant>,
    /// Large packets lost, none sent before the latest large one acknowledged.
    large_lost: u32,
    /// When the latest-sent large packet that was acknowledged was sent.
    large_acked_sent: Option<Instant>,
}

impl Paths {
    /// A path that starts at `mtu` and may probe up to `max` (RFC 8899).
    pub(crate) fn new(mtu: usize, max: usize) -> Self {
        let max = max.max(mtu);
        Self {
            peer_cids: VecDeque::new(),
            active_seq: 0,
            retire_prior_to: 0,
            highest_peer_seq: None,
            retire_pending: VecDeque::new(),
            issued: Vec::new(),
            issued_unsent: 0,
            next_issue_seq: 1,
            retired_local: Vec::new(),
            response: None,
            challenges: (None, 0),
            validation: None,
            mtu,
            mtu_max: max,
            search_low: mtu,
            search_high: max,
            probe_size: None,
            probes_lost: 0,
            probe_in_flight: false,
            next_probe: None,
            large_lost: 0,
            large_acked_sent: None,
        }
    }

    pub(crate) fn mtu(&self) -> usize {
        self.mtu
    }

    /// Lowers the probe ceiling to `max` (the peer's `max_udp_payload_size`), never below
    /// the size already in use, which every QUIC endpoint accepts at 1200 and above.
    pub(crate) fn cap_mtu(&mut self, max: usize) {
        self.mtu_max = self.mtu_max.min(max).max(self.mtu);
        self.search_high = self.search_high.min(self.mtu_max);
    }

    /// Starts DPLPMTUD once the handshake is confirmed.
    pub(crate) fn start_discovery(&mut self, now: Instant) {
        if self.mtu_max > self.mtu && self.next_probe.is_none() {
            self.next_probe = Some(now);
        }
    }

    /// The next probe size, if one should go out now.
    /// The largest datagram this path may ever ask for: the current MTU or the probe
    /// ceiling.
    pub(crate) fn largest_datagram(&self) -> usize {
        self.mtu_max.max(self.mtu())
    }

    pub(crate) fn probe_due(&mut self, now: Instant) -> Option<usize> {
        if self.probe_in_flight || self.next_probe.is_none_or(|t| now < t) {
            return None;
        }
        if self.search_high - self.search_low <= SEARCH_DONE {
            // Converged: search again (upwards only) in ten minutes, per RFC 8899 §5.1.
            self.next_probe = Some(now + Duration::from_secs(600));
            self.search_high = self.mtu_max;
            return None;
        }
        let size = self
            .probe_size
            .unwrap_or(if self.search_high == self.mtu_max {
                // Try the ceiling first: on a jumbo link it is reached in one probe.
                self.search_high
            } else {
                (self.search_low + self.search_high) / 2
            });
        self.probe_size = Some(size);
        Some(size)
    }

    /// The search for the path MTU has ended: the MTU is the largest size worth trying.
    pub(crate) fn search_done(&self) -> bool {
        self.mtu >= self.search_high.min(self.mtu_max)
    }

    /// A probe of `size` was acknowledged: the path carries it. Returns the new MTU.
    pub(crate) fn on_probe_acked(&mut self, size: usize) -> Option<usize> {
        self.probe_in_flight = false;
        self.probe_size = None;
        self.probes_lost = 0;
        self.search_low = self.search_low.max(size);
        if size > self.mtu {
            self.mtu = size;
            return Some(size);
        }
        None
    }

    pub(crate) fn on_probe_lost(&mut self, size: usize) {
        self.probe_in_flight = false;
        self.probes_lost += 1;
        if self.probes_lost >= MAX_PROBES {
            self.search_high = size.saturating_sub(1).max(self.search_low);
            self.probe_size = None;
            self.probes_lost = 0;
        }
    }

    /// A packet of `size` bytes sent at `sent` was acknowledged.
    pub(crate) fn on_acked(&mut self, size: usize, sent: Instant) {
        if size > BASE_PLPMTU {
            self.large_lost = 0;
            self.large_acked_sent = Some(self.large_acked_sent.map_or(sent, |t| t.max(sent)));
        }
    }

    /// A packet of `size` bytes (not a probe) sent at `sent` was declared lost. Returns
    /// whether the path has become a black hole for packets of the current size.
    pub(crate) fn on_lost(&mut self, size: usize, sent: Instant) -> bool {
        if size <= BASE_PLPMTU
            || self.mtu <= BASE_PLPMTU
            || self.large_acked_sent.is_some_and(|t| t > sent)
        {
            // Small, already at the base, or a large packet sent later got through.
            return false;
        }
        self.large_lost += 1;
        self.large_lost >= BLACK_HOLE_LOSSES
    }

    /// Whether repeated probe timeouts (three in a row: two were seen on a lossy path
    /// that still carried large packets), with nothing acknowledged across them, point at a
    /// black hole for the current size (every packet sent was that large).
    pub(crate) fn pto_suggests_black_hole(&self, pto_count: u32) -> bool {
        pto_count >= 3 && self.mtu > BASE_PLPMTU
    }

    /// The path stopped carrying packets of the current size (it shrank: a tunnel, a
    /// route change): drop to the base, which every path carries, and search upward
    /// again, starting now (RFC 8899 §4.3, §5.2). Returns the new MTU.
    pub(crate) fn on_black_hole(&mut self, now: Instant) -> usize {
        self.reset_mtu(BASE_PLPMTU, now);
        self.probes_lost = 0;
        self.mtu
    }

    /// The connection falls back to the base MTU (a black hole on the new path).
    pub(crate) fn reset_mtu(&mut self, base: usize, now: Instant) {
        self.large_lost = 0;
        self.mtu = base;
        self.search_low = base;
        self.search_high = self.mtu_max;
        self.probe_size = None;
        self.probe_in_flight = false;
        self.next_probe = (self.mtu_max > base).then_some(now);
    }

    /// A PATH_CHALLENGE arrived: answer the latest; refuse floods.
    pub(crate) fn on_challenge(
        &mut self,
        now: Instant,
        data: [u8; 8],
    ) -> Result<(), ConnectionError> {
        if self
            .challenges
            .0
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.challenges = (Some(now), 0);
        }
        self.challenges.1 += 1;
        if self.challenges.1 > MAX_CHALLENGES_PER_SEC {
            return Err(ConnectionError::PathChallengeFlood);
        }
        self.response = Some(data);
        Ok(())
    }

    /// A NEW_CONNECTION_ID arrived. `limit` is our active_connection_id_limit.
    pub(crate) fn on_new_cid(
        &mut self,
        seq: u64,
        retire_prior_to: u64,
        cid: ConnectionId,
        reset_token: [u8; 16],
        limit: u64,
    ) -> Result<(), ConnectionError> {
        if retire_prior_to > seq {
            return Err(ConnectionError::ProtocolViolation(
                "NEW_CONNECTION_ID retires beyond its own sequence number",
            ));
        }
        if let Some(c) = self.peer_cids.iter().find(|c| c.seq == seq) {
            if c.cid != cid || c.reset_token != reset_token {
                return Err(ConnectionError::ProtocolViolation(
                    "NEW_CONNECTION_ID reuses a sequence number for another CID",
                ));
            }
            return Ok(());
        }
        if seq < self.retire_prior_to {
            // Already retired: retire it again (RFC 9000 §19.15).
            self.queue_retire(seq)?;
            return Ok(());
        }
        self.highest_peer_seq = Some(self.highest_peer_seq.map_or(seq, |h| h.max(seq)));
        self.peer_cids.push_back(PeerCid {
            seq,
            cid,
            reset_token,
        });
        if retire_prior_to > self.retire_prior_to {
            for s in self.retire_prior_to..retire_prior_to {
                if self.peer_cids.iter().any(|c| c.seq == s) {
                    self.queue_retire(s)?;
                }
            }
            self.retire_prior_to = retire_prior_to;
            self.peer_cids.retain(|c| c.seq >= retire_prior_to);
        }
        if self.peer_cids.len() as u64 > limit {
            return Err(ConnectionError::ConnectionIdLimit);
        }
        Ok(())
    }

    fn queue_retire(&mut self, seq: u64) -> Result<(), ConnectionError> {
        if self.retire_pending.len() >= MAX_PENDING_RETIRE {
            return Err(ConnectionError::ConnectionIdLimit);
        }
        if !self.retire_pending.contains(&seq) {
            self.retire_pending.push_back(seq);
        }
        Ok(())
    }

    /// The active CID was retired by `retire_prior_to`: the next one to use, if any.
    pub(crate) fn active_cid(&self) -> Option<&PeerCid> {
        self.peer_cids.iter().find(|c| c.seq == self.active_seq)
    }

    /// Switches to a fresh peer CID (for migration), retiring the current one.
    pub(crate) fn rotate(&mut self) -> Option<ConnectionId> {
        let next = self.peer_cids.iter().find(|c| c.seq > self.active_seq)?;
        let (seq, cid) = (next.seq, next.cid);
        let old = self.active_seq;
        self.peer_cids.retain(|c| c.seq != old);
        self.retire_pending.push_back(old);
        self.active_seq = seq;
        Some(cid)
    }

    /// Issues `cid`, with its stateless-reset token; its NEW_CONNECTION_ID is pending.
    pub(crate) fn issue(&mut self, cid: ConnectionId, reset_token: [u8; 16]) {
        let seq = self.next_issue_seq;
        self.next_issue_seq += 1;
        self.issued.push((seq, cid, reset_token, true));
        self.issued_unsent += 1;
    }

    /// The NEW_CONNECTION_ID for `seq` was lost: send it again, if the CID is still issued.
    pub(crate) fn on_new_cid_lost(&mut self, seq: u64) {
        if let Some(c) = self.issued.iter_mut().find(|c| c.0 == seq)
            && !c.3
        {
            c.3 = true;
            self.issued_unsent += 1;
        }
    }

    /// Whether a NEW_CONNECTION_ID frame is pending.
    pub(crate) fn has_unsent_cids(&self) -> bool {
        debug_assert_eq!(
            self.issued_unsent,
            self.issued.iter().filter(|c| c.3).count(),
            "the unsent-CID count matches the list"
        );
        self.issued_unsent > 0
    }

    /// Writes the pending NEW_CONNECTION_ID frames that fit in `w`, calling `sent(seq)`
    /// for each.
    pub(crate) fn write_new_cids(&mut self, w: &mut Out<'_>, mut sent: impl FnMut(u64)) {
        if !self.has_unsent_cids() {
            return;
        }
        for c in self.issued.iter_mut().filter(|c| c.3) {
            if frame::encode_new_cid(w, c.0, 0, &c.1, &c.2).is_none() {
                break;
            }
            c.3 = false;
            self.issued_unsent -= 1;
            sent(c.0);
        }
    }

    /// The peer retired our CID `seq`.
    pub(crate) fn on_retire(&mut self, seq: u64) -> Result<(), ConnectionError> {
        if seq >= self.next_issue_seq {
            return Err(ConnectionError::ProtocolViolation(
                "RETIRE_CONNECTION_ID for a sequence number never issued",
            ));
        }
        if let Some(i) = self.issued.iter().position(|c| c.0 == seq) {
            let (_, cid, _, pending) = self.issued.remove(i);
            self.issued_unsent -= usize::from(pending);
            self.retired_local.push(cid);
        }
        Ok(())
    }
}
