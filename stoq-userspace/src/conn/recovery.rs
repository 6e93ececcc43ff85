//! ACKs and loss recovery (RFC 9002): acknowledged packets retire what they carried and
//! feed RTT, delivery-rate and congestion-control samples; ECN counts are validated; lost
//! packets are detected by packet and time thresholds and their records requeued; the
//! PTO and its backoff.

use super::cc::{AckEvent, LossEvent, PacketRateState};
use super::error::ConnectionError;
use super::event::Event;
use super::space::SentPacket;
use super::streams::StreamRecord;
use super::{Connection, MIN_PACKET_SPACE, PACKET_THRESHOLD, Record, Side, State, ecn, path};
use crate::frame::{self};
use crate::qlog::Ev;
use std::time::{Duration, Instant};

impl Connection {
    pub(super) fn on_ack(
        &mut self,
        now: Instant,
        i: usize,
        ack: &frame::Ack<'_>,
    ) -> Result<(), ConnectionError> {
        let space = &mut self.spaces[i];
        if ack.largest >= space.next_pn {
            return Err(ConnectionError::AckOfUnsentPacket { pn: ack.largest });
        }
        let raises_largest = space.largest_acked.is_none_or(|l| ack.largest > l);
        let mut newly_marked = 0u64;
        let mut largest_newly: Option<(Instant, Option<PacketRateState>)> = None;
        space.largest_acked = Some(
            space
                .largest_acked
                .map_or(ack.largest, |l| l.max(ack.largest)),
        );
        let mut newly_eliciting = false;
        let mut rtt_sample = None;
        let mut acked_bytes = 0u64;
        let mut largest_sent: Option<Instant> = None;
        // Consecutive STREAM ranges of one stream are acknowledged as one.
        let mut acked_data: Option<StreamRecord> = None;
        for r in ack.ranges() {
            let space = &mut self.spaces[i];
            let start = space.sent.partition_point(|p| p.pn < *r.start());
            for idx in start..space.sent.len() {
                let space = &mut self.spaces[i];
                let p = &mut space.sent[idx];
                if p.pn > *r.end() {
                    break;
                }
                if p.done {
                    continue;
                }
                p.done = true;
                p.acked = true;
                // Copy out what is needed (the record is a tombstone from here on).
                let (pn, time, size, eliciting, in_flight, rate, rec) = (
                    p.pn,
                    p.time,
                    p.size,
                    p.ack_eliciting,
                    p.in_flight,
                    p.rate,
                    p.rec,
                );
                newly_marked += u64::from(p.ecn);
                if pn == ack.largest {
                    largest_newly = Some((time, rate));
                }
                let crypto = p.crypto.take();
                if eliciting {
                    space.eliciting_in_flight -= 1;
                    newly_eliciting = true;
                }
                if pn == ack.largest && eliciting {
                    rtt_sample = Some(now.saturating_duration_since(time));
                }
                if let Some(c) = crypto {
                    space.crypto_acked.insert(c.clone());
                    space.crypto_pending.remove(c);
                }
                if i == 2 && pn >= self.tx_phase_first_pn {
                    self.tx_phase_acked = true;
                }
                if in_flight {
                    let size = u64::from(size);
                    self.in_flight -= size;
                    acked_bytes += size;
                    largest_sent = Some(largest_sent.map_or(time, |t| t.max(time)));
                    if let Some(rs) = &rate {
                        self.rate.on_acked(now, time, size, rs);
                    }
                }
                if i == 2 && usize::from(size) > path::BASE_PLPMTU {
                    self.path.on_acked(usize::from(size), time);
                }
                if rec.0 < rec.1 {
                    self.on_acked_records(i, rec, &mut acked_data);
                }
            }
        }
        if let Some(d) = acked_data.take() {
            self.streams.on_acked(d);
        }
        if raises_largest {
            self.on_ack_ecn(now, i, ack.ecn, newly_marked, largest_newly);
        }
        if let Some(rtt) = rtt_sample {
            let delay = if i == 2 {
                let d = Duration::from_micros(
                    ack.delay
                        .saturating_mul(1 << self.peer_ack_delay_exponent.min(20)),
                );
                if self.confirmed {
                    d.min(self.peer_max_ack_delay)
                } else {
                    d
                }
            } else {
                Duration::ZERO
            };
            self.rtt.update(rtt, delay);
            self.stats.rtt_samples.record(rtt);
            self.first_rtt_sample.get_or_insert(now);
        }
        if newly_eliciting {
            self.pto_count = 0;
        }
        if let Some(largest_sent) = largest_sent {
            let sample = self.rate.take_sample(self.rtt.min());
            self.cc.on_ack(
                now,
                &AckEvent {
                    acked: acked_bytes,
                    in_flight: self.in_flight,
                    largest_sent,
                    latest_rtt: self.rtt.latest(),
                    min_rtt: self.rtt.min(),
                    smoothed_rtt: self.rtt.smoothed(),
                    sample,
                    delivered: self.rate.delivered(),
                },
            );
        }
        self.detect_lost(now, i);
        self.spaces[i].compact();
        self.update_messages(now);
        self.qlog_recovery(now);
        Ok(())
    }

    /// Checks an ACK's ECN counts (RFC 9000 §13.4.2.1) and treats new CE marks as a
    /// congestion signal: one response per round trip, like a loss, with nothing lost.
    pub(super) fn on_ack_ecn(
        &mut self,
        now: Instant,
        i: usize,
        counts: Option<[u64; 3]>,
        newly_marked: u64,
        largest: Option<(Instant, Option<PacketRateState>)>,
    ) {
        let before = self.ecn.failure;
        let verdict = self
            .ecn
            .on_ack(&mut self.spaces[i].ecn, counts, newly_marked);
        if before.is_none()
            && let Some(why) = self.ecn.failure
        {
            tracing::debug!("ECN validation failed: {why}; sending unmarked");
        }
        let ecn::AckVerdict::Congestion(marks) = verdict else {
            return;
        };
        self.stats.ecn_ce_reported += marks;
        let Some((sent, rate)) = largest else {
            return;
        };
        // Each CE mark stands for a packet the queue would have dropped.
        let bytes = marks.saturating_mul(self.path.mtu() as u64);
        self.cc.on_ecn_ce(
            now,
            &LossEvent {
                lost: bytes,
                in_flight: self.in_flight,
                largest_lost_sent: sent,
                tx_in_flight: rate.map_or(self.in_flight, |r| r.tx_in_flight),
                lost_since_sent: bytes,
                is_app_limited: rate.is_some_and(|r| r.is_app_limited),
                persistent: false,
                delivered: self.rate.delivered(),
            },
        );
    }

    /// Acts on the records of an acknowledged packet, merging STREAM data that continues
    /// the range in `acc` (the common case: an ACK covering a run of packets of one
    /// stream) so the stream is updated once per run, not once per packet.
    pub(super) fn on_acked_records(
        &mut self,
        i: usize,
        rec: (u64, u64),
        acc: &mut Option<StreamRecord>,
    ) {
        for seq in rec.0..rec.1 {
            let Some(r) = self.spaces[i].record(seq) else {
                continue;
            };
            if let Record::Stream(StreamRecord::Data {
                id,
                offset,
                len,
                fin,
            }) = r
            {
                if let Some(StreamRecord::Data {
                    id: aid,
                    offset: aoff,
                    len: alen,
                    fin: afin,
                }) = acc.as_mut()
                    && *aid == id
                    && !*afin
                    && *aoff + u64::from(*alen) == offset
                    && let Some(n) = alen.checked_add(len)
                {
                    *alen = n;
                    *afin = fin;
                    continue;
                }
                if let Some(d) = acc.replace(StreamRecord::Data {
                    id,
                    offset,
                    len,
                    fin,
                }) {
                    self.streams.on_acked(d);
                }
                continue;
            }
            // Anything else is applied in order, after the data before it.
            if let Some(d) = acc.take() {
                self.streams.on_acked(d);
            }
            self.on_record(r, true);
        }
    }

    /// Acts on the frame records of an acknowledged or lost packet.
    pub(super) fn on_records(&mut self, i: usize, rec: (u64, u64), acked: bool) {
        for seq in rec.0..rec.1 {
            if let Some(r) = self.spaces[i].record(seq) {
                self.on_record(r, acked);
            }
        }
    }

    /// Acts on one frame record of an acknowledged or lost packet.
    pub(super) fn on_record(&mut self, r: Record, acked: bool) {
        match (r, acked) {
            (Record::Stream(s), true) => self.streams.on_acked(s),
            (Record::Stream(s), false) => self.streams.on_lost(s),
            (Record::NewCid(seq), false) => self.path.on_new_cid_lost(seq),
            (Record::RetireCid(seq), false) if !self.path.retire_pending.contains(&seq) => {
                self.path.retire_pending.push_back(seq);
            }
            (Record::MtuProbe(size), true) => {
                if let Some(mtu) = self.path.on_probe_acked(usize::from(size)) {
                    self.qlog_mtu(mtu);
                    self.cc.on_mtu(mtu as u64);
                    self.pacer.set_mtu(mtu as u64);
                    if let Some(d) = self.max_datagram_size() {
                        self.events.push_back(Event::DatagramSizeChanged(d));
                    }
                }
            }
            (Record::MtuProbe(size), false) => self.path.on_probe_lost(usize::from(size)),
            (Record::NewToken, true) => self.new_token_in_flight = None,
            (Record::NewToken, false) => {
                if let Some(t) = self.new_token_in_flight.take() {
                    self.new_token = Some(t);
                }
            }
            (Record::Extension(seq), acked) => {
                if let Some(k) = self.ext_sent.iter().position(|e| e.0 == seq) {
                    let e = self.ext_sent.swap_remove(k);
                    if !acked {
                        self.ext_out.push_front(e);
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn detect_lost(&mut self, now: Instant, i: usize) {
        let loss_delay = self.rtt.loss_delay();
        let Some(largest) = self.spaces[i].largest_acked else {
            return;
        };
        self.spaces[i].loss_time = None;
        let lost_before = now.checked_sub(loss_delay);
        let (mut lost, mut lost_bytes, mut cc_lost) = (0, 0, 0u64);
        let mut newest_lost: Option<SentPacket> = None;
        // Persistent congestion (RFC 9002 §7.6): the longest run of ack-eliciting packets,
        // newly lost or lost before, with none acknowledged in between, that ends in a
        // newly lost one. `run` is the send time of the current run's first packet.
        let mut run: Option<Instant> = None;
        let mut longest = Duration::ZERO;
        let mut black_hole = false;
        let after_first_sample = self.first_rtt_sample;
        let mut idx = 0;
        while idx < self.spaces[i].sent.len() {
            let space = &mut self.spaces[i];
            let p = &mut space.sent[idx];
            idx += 1;
            if p.pn > largest {
                break;
            }
            if p.done {
                if p.acked {
                    run = None;
                } else if p.ack_eliciting && after_first_sample.is_some_and(|f| p.time > f) {
                    run.get_or_insert(p.time);
                }
                continue;
            }
            let by_order = largest - p.pn >= PACKET_THRESHOLD;
            if by_order || lost_before.is_some_and(|t| p.time <= t) {
                p.done = true;
                let p = p.clone();
                if let Some(t) = self.qlog.as_deref_mut() {
                    t.record(
                        now,
                        Ev::PacketLost {
                            space: i as u8,
                            pn: p.pn,
                            by_time: !by_order,
                        },
                    );
                }
                lost += 1;
                if p.ecn {
                    self.ecn.on_marked_lost();
                }
                lost_bytes += u64::from(p.size);
                if p.ack_eliciting {
                    space.eliciting_in_flight -= 1;
                }
                if let Some(c) = p.crypto.clone() {
                    space.crypto_pending.insert(c);
                }
                if p.handshake_done {
                    self.handshake_done_pending = true;
                }
                let probe = space
                    .records_of(p.rec)
                    .any(|r| matches!(r, Record::MtuProbe(_)));
                if p.in_flight {
                    self.in_flight -= u64::from(p.size);
                    // A lost MTU probe says nothing about congestion (RFC 8899 §4.4).
                    if !probe {
                        cc_lost += u64::from(p.size);
                        self.rate.on_lost(u64::from(p.size));
                        newest_lost = Some(p.clone());
                    }
                }
                if !probe && i == 2 && self.path.on_lost(usize::from(p.size), p.time) {
                    black_hole = true;
                }
                if p.ack_eliciting && after_first_sample.is_some_and(|f| p.time > f) {
                    let start = *run.get_or_insert(p.time);
                    longest = longest.max(p.time.saturating_duration_since(start));
                }
                self.on_records(i, p.rec, false);
            } else {
                // Still in flight, neither acknowledged nor lost: the run goes on past it
                // only if it is lost later, which a later call sees whole.
                run = None;
                let t = p.time + loss_delay;
                space.loss_time = Some(space.loss_time.map_or(t, |l| l.min(t)));
            }
        }
        if black_hole {
            self.on_black_hole(now);
        }
        let space = &mut self.spaces[i];
        space.crypto_pending.subtract(&space.crypto_acked);
        space.compact();
        self.stats.lost_packets += lost;
        self.stats.lost_bytes += lost_bytes;
        if let Some(p) = newest_lost {
            // Persistent congestion: a run of lost packets spanning more than
            // 3 × (PTO without backoff + max_ack_delay), all sent after the first RTT
            // sample, with nothing acknowledged in between (RFC 9002 §7.6).
            let pc = self.rtt.pto_base() + self.peer_max_ack_delay;
            let persistent = self.rtt.has_sample() && longest > 3 * pc;
            let rs = p.rate.expect("in-flight packets carry rate state");
            self.cc.on_loss(
                now,
                &LossEvent {
                    lost: cc_lost,
                    in_flight: self.in_flight,
                    largest_lost_sent: p.time,
                    tx_in_flight: rs.tx_in_flight,
                    lost_since_sent: self.rate_lost_since(&rs),
                    is_app_limited: rs.is_app_limited,
                    persistent,
                    delivered: self.rate.delivered(),
                },
            );
        }
    }

    pub(super) fn rate_lost_since(&self, rs: &PacketRateState) -> u64 {
        self.rate.lost().saturating_sub(rs.lost)
    }

    pub(super) fn pto_period(&self, i: usize) -> Duration {
        let mut d = self.rtt.pto_base();
        if i == 2 && self.confirmed {
            d += self.peer_max_ack_delay;
        }
        let backed_off = d * (1u32 << self.pto_count.min(16));
        // Back off exponentially, but probe at least eight times within the idle timeout:
        // after an outage longer than a few RTTs, uncapped doubling would leave a lossy
        // path unprobed until the connection times out.
        match self.idle_timeout {
            Some(idle) => backed_off.min((idle / 8).max(d)),
            None => backed_off,
        }
    }

    /// The loss-detection timer: the earliest loss time, else the earliest PTO.
    pub(super) fn loss_timer(&self) -> Option<Instant> {
        if matches!(
            self.state,
            State::Closing | State::Draining | State::Drained
        ) {
            return None;
        }
        if let Some(t) = self.spaces.iter().filter_map(|s| s.loss_time).min() {
            return Some(t);
        }
        // A server at the amplification limit arms no PTO (RFC 9002 §6.2.2.1).
        if !self.validated && 3 * self.rx_bytes <= self.tx_bytes + MIN_PACKET_SPACE as u64 {
            return None;
        }
        let mut best: Option<Instant> = None;
        for (i, s) in self.spaces.iter().enumerate() {
            if s.tx.is_none() {
                continue;
            }
            if i == 2 && !self.confirmed && self.side == Side::Client && s.eliciting_in_flight == 0
            {
                continue;
            }
            let base = if s.eliciting_in_flight > 0 {
                s.last_eliciting_sent
            } else if self.side == Side::Client && !self.confirmed && i < 2 {
                // Anti-deadlock: the client keeps probing until the handshake is confirmed,
                // even with nothing in flight (RFC 9002 §6.2.2.1).
                s.last_eliciting_sent.or(self.spaces[0].last_eliciting_sent)
            } else {
                None
            };
            if let Some(b) = base {
                let t = b + self.pto_period(i);
                best = Some(best.map_or(t, |x| x.min(t)));
            }
        }
        best
    }

    pub(super) fn on_loss_timeout(&mut self, now: Instant) {
        if let Some(i) = (0..3).find(|&i| self.spaces[i].loss_time.is_some_and(|t| now >= t)) {
            self.qlog(now, || Ev::TimerExpired {
                kind: "loss_timeout",
                space: i as u8,
            });
            self.detect_lost(now, i);
            self.qlog_recovery(now);
            return;
        }
        // PTO: probe in the space whose timer fired.
        let space = (0..3)
            .find(|&i| self.spaces[i].eliciting_in_flight > 0)
            .unwrap_or(2) as u8;
        self.qlog(now, || Ev::TimerExpired { kind: "pto", space });
        self.pto_count += 1;
        self.stats.pto_count += 1;
        if self.state == State::Established
            && self.spaces[2].eliciting_in_flight > 0
            && self.path.pto_suggests_black_hole(self.pto_count)
            && self.spaces[2]
                .sent
                .iter()
                .filter(|p| !p.done && p.ack_eliciting)
                .all(|p| usize::from(p.size) > path::BASE_PLPMTU)
        {
            // Nothing acknowledged over three probe timeouts, and every packet waiting for
            // an acknowledgment larger than the base: the probes about to go out are
            // sent at the base size instead.
            self.on_black_hole(now);
        }
        for i in 0..3 {
            let s = &mut self.spaces[i];
            if s.tx.is_none() {
                continue;
            }
            if s.eliciting_in_flight > 0 || (i < 2 && self.side == Side::Client && !self.confirmed)
            {
                // Two probes (RFC 9002 §6.2.4 allows up to two) in the application space
                // and in a client's handshake spaces: on a lossy path one lost probe then
                // does not cost a whole PTO, and a client's second Initial doubles the
                // server's anti-amplification budget.
                s.probes = if i == 2 || self.side == Side::Client {
                    2
                } else {
                    1
                };
                if i < 2 {
                    s.requeue_all_crypto();
                }
            }
        }
        // A lost HANDSHAKE_DONE is probed even with nothing else in flight.
        if self.handshake_done_pending {
            self.spaces[2].probes = self.spaces[2].probes.max(1);
        }
        self.qlog_recovery(now);
    }
}
