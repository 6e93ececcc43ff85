//! One packet-number space: its keys, packet numbers, ACK state, sent-packet record and
//! CRYPTO stream in both directions.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::time::Instant;

use super::Record;
use super::cc::PacketRateState;
use super::ranges::RangeSet;
use crate::crypto::DirectionalKeys;

/// How many received-packet ranges a space remembers (bounds ACK frames and memory).
pub(crate) const RX_RANGES: usize = 32;
/// Most CRYPTO bytes buffered out of order, per space. A handshake flight is at most a few
/// kilobytes; a peer that sends data far ahead is refused with CRYPTO_BUFFER_EXCEEDED.
pub(crate) const MAX_CRYPTO_BUFFER: u64 = 64 * 1024;

/// A packet this side sent and has not yet seen acknowledged or declared lost.
#[derive(Debug, Clone)]
pub(crate) struct SentPacket {
    pub(crate) pn: u64,
    pub(crate) time: Instant,
    pub(crate) size: u16,
    pub(crate) ack_eliciting: bool,
    /// The CRYPTO bytes it carried.
    pub(crate) crypto: Option<Range<u64>>,
    /// Whether it carried HANDSHAKE_DONE.
    pub(crate) handshake_done: bool,
    /// Acknowledged or lost: a tombstone until it reaches the front of the queue.
    pub(crate) done: bool,
    /// Acknowledged (a tombstone that breaks a run of losses: persistent congestion needs
    /// every packet across the period lost).
    pub(crate) acked: bool,
    /// Counted in bytes in flight (ack-eliciting).
    pub(crate) in_flight: bool,
    /// Sent ECT(0)-marked.
    pub(crate) ecn: bool,
    /// Delivery-rate sampler state at send time.
    pub(crate) rate: Option<PacketRateState>,
    /// Its frame records: `records[rec.0 - records_base .. rec.1 - records_base]`.
    pub(crate) rec: (u64, u64),
}

/// What a space has to send next.
#[derive(Debug)]
pub(crate) struct Space {
    pub(crate) tx: Option<DirectionalKeys>,
    pub(crate) rx: Option<DirectionalKeys>,
    pub(crate) next_pn: u64,
    pub(crate) largest_acked: Option<u64>,
    /// Packet numbers received.
    pub(crate) received: RangeSet,
    /// Largest packet number received and when.
    pub(crate) largest_rx: Option<(u64, Instant)>,
    /// An ACK must go out with the next packet of this space.
    pub(crate) ack_now: bool,
    /// When a delayed ACK falls due.
    pub(crate) ack_deadline: Option<Instant>,
    /// Ack-eliciting packets received since the last ACK was sent.
    pub(crate) unacked_eliciting: u32,
    /// Sent packets in packet-number order (tombstones included).
    pub(crate) sent: VecDeque<SentPacket>,
    /// Ack-eliciting packets in flight.
    pub(crate) eliciting_in_flight: u32,
    pub(crate) last_eliciting_sent: Option<Instant>,
    /// When the earliest outstanding packet would be declared lost by time.
    pub(crate) loss_time: Option<Instant>,
    /// PTO probes still to send.
    pub(crate) probes: u8,
    /// Every CRYPTO byte this side sent in this space, from offset 0.
    pub(crate) crypto_out: Vec<u8>,
    pub(crate) crypto_pending: RangeSet,
    pub(crate) crypto_acked: RangeSet,
    /// Next in-order CRYPTO offset expected from the peer.
    pub(crate) crypto_in_offset: u64,
    /// Out-of-order CRYPTO data, by offset.
    pub(crate) crypto_in: BTreeMap<u64, Vec<u8>>,
    pub(crate) crypto_in_bytes: u64,
    /// Keys discarded: the space is closed for good.
    pub(crate) discarded: bool,
    /// ECN counts, ours and as the peer reported them.
    pub(crate) ecn: super::ecn::SpaceCounts,
    /// Frame records of the packets in `sent`, in order (a ring reused across packets, so
    /// recording allocates nothing in steady state).
    pub(crate) records: VecDeque<Record>,
    /// Sequence number of `records[0]`.
    pub(crate) records_base: u64,
}

impl Space {
    pub(crate) fn new() -> Self {
        Self {
            tx: None,
            rx: None,
            next_pn: 0,
            largest_acked: None,
            received: RangeSet::new(RX_RANGES),
            largest_rx: None,
            ack_now: false,
            ack_deadline: None,
            unacked_eliciting: 0,
            // Grown on demand (then reused): an idle connection holds only what it used.
            sent: VecDeque::new(),
            eliciting_in_flight: 0,
            last_eliciting_sent: None,
            loss_time: None,
            probes: 0,
            crypto_out: Vec::new(),
            crypto_pending: RangeSet::new(64),
            crypto_acked: RangeSet::new(64),
            crypto_in_offset: 0,
            crypto_in: BTreeMap::new(),
            crypto_in_bytes: 0,
            discarded: false,
            ecn: super::ecn::SpaceCounts::default(),
            records: VecDeque::new(),
            records_base: 0,
        }
    }

    /// Sequence number the next record gets.
    pub(crate) fn records_end(&self) -> u64 {
        self.records_base + self.records.len() as u64
    }

    /// Record number `seq`, if still kept.
    pub(crate) fn record(&self, seq: u64) -> Option<Record> {
        let k = seq.checked_sub(self.records_base)?;
        self.records.get(k as usize).copied()
    }

    /// The records of a packet.
    pub(crate) fn records_of(&self, rec: (u64, u64)) -> impl Iterator<Item = Record> + '_ {
        (rec.0..rec.1).filter_map(|seq| self.record(seq))
    }

    /// Whether an ACK frame is owed.
    pub(crate) fn wants_ack(&self) -> bool {
        self.ack_now && !self.received.is_empty()
    }

    /// Queues every unacknowledged CRYPTO byte for (re)transmission.
    pub(crate) fn requeue_all_crypto(&mut self) {
        let len = self.crypto_out.len() as u64;
        if len == 0 {
            return;
        }
        self.crypto_pending.insert(0..len);
        self.crypto_pending.subtract(&self.crypto_acked);
    }

    /// Forgets everything in flight (keys discarded, or a Retry restarted the exchange).
    pub(crate) fn forget_in_flight(&mut self) {
        self.sent.clear();
        self.records_base += self.records.len() as u64;
        self.records.clear();
        self.eliciting_in_flight = 0;
        self.loss_time = None;
        self.probes = 0;
    }

    /// Drops keys and state for good (RFC 9001 §4.9), and gives the memory back: the
    /// Initial and Handshake spaces of an established connection hold nothing.
    pub(crate) fn discard(&mut self) {
        self.tx = None;
        self.rx = None;
        self.forget_in_flight();
        self.sent = VecDeque::new();
        self.records = VecDeque::new();
        self.crypto_out = Vec::new();
        self.crypto_pending = RangeSet::new(1);
        self.crypto_acked = RangeSet::new(1);
        self.received = RangeSet::new(1);
        self.crypto_in = BTreeMap::new();
        self.crypto_in_bytes = 0;
        self.ack_now = false;
        self.ack_deadline = None;
        self.discarded = true;
    }

    /// Drops tombstones from the front.
    pub(crate) fn compact(&mut self) {
        while self.sent.front().is_some_and(|p| p.done) {
            self.sent.pop_front();
        }
        // Records of packets no longer tracked.
        let keep_from = self.sent.front().map_or(self.records_end(), |p| p.rec.0);
        while self.records_base < keep_from && !self.records.is_empty() {
            self.records.pop_front();
            self.records_base += 1;
        }
    }
}
