//! Sending: which space has something to send, packets assembled into a datagram
//! (coalesced, padded where the protocol asks, under the amplification limit, the
//! congestion window and the pacer), frames chosen by priority, and each packet protected
//! in place.

use super::ecn::EcnCodepoint;
use super::error::code;
use super::event::Event;
use super::space::SentPacket;
use super::timers::Timer;
use super::{
    ACK_DELAY_EXPONENT, Connection, MAX_QUEUED_DATAGRAMS, MIN_PACKET_SPACE, Record, Side, State,
    Transmit,
};
use crate::crypto::{TAG_LEN, pn, protect_packet};
use crate::frame::{self, Out};
use crate::qlog::Ev;
use std::time::Instant;
use stoq_common::wire::stoq::{MIN_INITIAL_DATAGRAM, Repr};

/// Bytes a short-header packet has past its first byte and DCID at least (RFC 9000 §10.3:
/// 22 more than the DCID), so that a stateless reset can be shorter than it.
const RESET_TRIGGER_EXTRA: usize = 22;

impl Connection {
    /// Writes the next datagram to send into `buf` and returns where it goes and its size:
    /// the datagram is `buf[..size]`. `buf` is grown to the path MTU when shorter and never
    /// shrunk or cleared, so a buffer reused across calls costs no allocation and no
    /// zero-fill.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let mtu = self.path.largest_datagram();
        if buf.len() < mtu {
            buf.resize(mtu, 0);
        }
        self.poll_transmit_into(now, buf)
    }

    /// As [`poll_transmit`](Self::poll_transmit), into a fixed buffer (an I/O backend's
    /// frame): the datagram is `buf[..size]`, and never longer than `buf`. A buffer shorter
    /// than the path MTU only makes datagrams smaller; one shorter than 1,200 bytes may
    /// make the handshake stall.
    pub fn poll_transmit_into(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if self.hs.awaits_signature() {
            // No endpoint signed this handshake with others: it signs alone.
            self.sign_alone(now);
        }
        match self.state {
            State::Drained | State::Draining => return None,
            State::Closing if !self.close_pending => return None,
            _ => {}
        }
        // Application data (also in 0-RTT and 0.5-RTT) is congestion controlled and
        // paced; handshake data is bounded by the handshake and the amplification limit.
        let data_ok = !self.app_ready() || self.data_allowed(now);
        let mut limit = self.path.mtu();
        // A due MTU probe takes a datagram of its own (1-RTT, PING + PADDING).
        let mut probe = if data_ok && self.validated && self.state == State::Established {
            self.path.probe_due(now)
        } else {
            None
        };
        if let Some(size) = probe {
            limit = size;
        }
        if !self.validated {
            let budget = (3 * self.rx_bytes).saturating_sub(self.tx_bytes) as usize;
            if budget < limit {
                if budget < MIN_PACKET_SPACE && self.wants_send_any(data_ok) {
                    self.stats.amplification_blocked += 1;
                    return None;
                }
                limit = budget;
            }
        }
        if buf.len() < limit {
            if probe.is_some() {
                // The probe does not fit this buffer: try it with a larger one later.
                probe = None;
                limit = self.path.mtu();
            }
            limit = limit.min(buf.len());
        }
        let wants =
            [0, 1, 2].map(|i| probe.is_some() && i == 2 || self.space_wants_send(i, data_ok));
        // Every packet of the datagram shares its IP header, so its ECN mark.
        self.ecn_marking = self.ecn.should_mark();
        let mut len = 0;
        let mut has_initial = false;
        for i in 0..3 {
            if !wants[i] || self.spaces[i].tx.is_none() {
                continue;
            }
            if limit - len < MIN_PACKET_SPACE {
                break;
            }
            let last = !wants[i + 1..].iter().any(|w| *w);
            // Datagrams with an Initial are padded to 1200 bytes: always from the client,
            // and from the server when the Initial is ack-eliciting (RFC 9000 §14.1).
            let pad_to = if probe.is_some() && i == 2 {
                limit - len
            } else if last && (has_initial || i == 0 || (i == 2 && self.path_frames_pending())) {
                MIN_INITIAL_DATAGRAM.min(limit).saturating_sub(len)
            } else {
                0
            };
            let p = if i == 2 { probe } else { None };
            let Some((n, _)) = self.write_packet(now, i, &mut buf[len..limit], pad_to, data_ok, p)
            else {
                continue;
            };
            has_initial |= i == 0;
            len += n;
        }
        if len == 0 {
            if data_ok && self.state == State::Established && self.in_flight < self.cc.window() {
                // Nothing to send with room in the window: application-limited.
                self.rate.on_app_limited(self.in_flight);
                self.cc.on_app_limited(now);
            }
            return None;
        }
        if let Some(p) = probe {
            if len == p {
                self.path.probe_in_flight = true;
            }
        }
        if self.state == State::Closing {
            self.close_pending = false;
        }
        self.tx_bytes += len as u64;
        self.stats.tx_datagrams += 1;
        self.stats.tx_bytes += len as u64;
        let ecn = if self.ecn_marking {
            self.ecn.on_marked_sent();
            EcnCodepoint::Ect0
        } else {
            EcnCodepoint::NotEct
        };
        Some(Transmit {
            destination: self.remote,
            size: len,
            ecn,
            src_ip: self.local_ip,
        })
    }

    pub(super) fn pacing_rate(&self) -> u64 {
        self.cc.pacing_rate().unwrap_or_else(|| {
            // Window-based controllers: 1.25 × cwnd per smoothed RTT.
            let srtt = self.rtt.smoothed().as_secs_f64().max(1e-4);
            (1.25 * self.cc.window() as f64 / srtt) as u64
        })
    }

    /// Whether congestion control and pacing let a new data packet leave now.
    pub(super) fn data_allowed(&mut self, now: Instant) -> bool {
        if !self.window_has_room() {
            self.timers.clear(Timer::Pacing);
            return false;
        }
        let rate = self.pacing_rate();
        let until = self.pacer.delay(now, rate, self.path.mtu() as u64);
        self.timers.set_or_clear(Timer::Pacing, until);
        until.is_none()
    }

    /// Whether the congestion window takes another full-size packet.
    pub(super) fn window_has_room(&self) -> bool {
        self.in_flight + self.path.mtu() as u64 <= self.cc.window()
    }

    pub(super) fn wants_send_any(&self, data_ok: bool) -> bool {
        (0..3).any(|i| self.space_wants_send(i, data_ok))
    }

    pub(super) fn space_wants_send(&self, i: usize, data_ok: bool) -> bool {
        let s = &self.spaces[i];
        if s.tx.is_none() {
            return false;
        }
        if self.state == State::Closing {
            return self.close_pending && (i != 2 || self.state_allows_1rtt());
        }
        if s.wants_ack() || !s.crypto_pending.is_empty() || s.probes > 0 {
            return i != 2 || self.state_allows_1rtt();
        }
        if i != 2 || !self.state_allows_1rtt() {
            return false;
        }
        if self.handshake_done_pending
            || self.new_token.is_some()
            || self.ping_pending
            || self.path.response.is_some()
            || !self.raw_frames.is_empty()
        {
            return true;
        }
        if self.path.validation.is_some_and(|v| v.challenge_pending) {
            return true;
        }
        let established = self.state == State::Established;
        data_ok
            && self.app_ready()
            && (!self.datagrams_out.is_empty()
                || self.streams.wants_send()
                || (established
                    && (!self.ext_out.is_empty()
                        || !self.path.retire_pending.is_empty()
                        || self.path.has_unsent_cids())))
    }

    /// Whether the next 1-RTT packet carries a path probe: a PATH_CHALLENGE or
    /// PATH_RESPONSE, or the PING that announces a new local address. Their datagrams are
    /// padded to 1,200 bytes where the anti-amplification budget allows (RFC 9000 §8.2.1,
    /// §8.2.2): this proves the path carries full-size datagrams, and a peer that receives
    /// 1,200 bytes from a new address may send 3,600 there before it validates it, which
    /// is room for its challenge and its acknowledgments. Unpadded, a 33-byte PING left a
    /// server 99 bytes: a client waiting for acknowledgments and a server waiting for
    /// bytes then moved only on the client's probe timeouts.
    pub(super) fn path_frames_pending(&self) -> bool {
        self.path.response.is_some()
            || self.path.validation.is_some_and(|v| v.challenge_pending)
            || (self.ping_pending && self.address_ping)
    }

    /// Whether the application space may send: after the handshake, and before it with
    /// early keys (a client's 0-RTT, a server's 0.5-RTT answer to accepted early data).
    pub(super) fn state_allows_1rtt(&self) -> bool {
        self.hs.is_complete() || (self.early_app && self.spaces[2].tx.is_some())
    }

    /// Writes one packet of space `i` into `out`; returns its length and whether it is
    /// ack-eliciting. `pad_to` is the least number of bytes the packet must take.
    pub(super) fn write_packet(
        &mut self,
        now: Instant,
        i: usize,
        out: &mut [u8],
        pad_to: usize,
        data_ok: bool,
        mtu_probe: Option<usize>,
    ) -> Option<(usize, bool)> {
        if i == 2 && self.state == State::Established {
            let tx = self.spaces[2].tx.as_ref()?;
            if tx.packet.should_update() && self.tx_phase_acked {
                self.update_tx_keys();
            }
        }
        if self.spaces[i].tx.as_ref()?.packet.exhausted() {
            // The key may seal no more and its update is not yet allowed: write nothing.
            // Frames taken off their queues for a packet that is then not sealed would be
            // recorded as sent by no packet, so never acknowledged nor declared lost (a
            // stream's bytes would never arrive).
            return None;
        }
        let space = &self.spaces[i];
        let pn = space.next_pn;
        let pn_len = pn::encoded_len(pn, space.largest_acked);
        let token: &[u8] = if self.side == Side::Client {
            &self.token
        } else {
            &[]
        };
        let repr = match i {
            0 => Repr::Initial {
                dcid: self.remote_cid,
                scid: self.local_cid,
                token,
                length: 0,
            },
            1 => Repr::Handshake {
                dcid: self.remote_cid,
                scid: self.local_cid,
                length: 0,
            },
            _ if self.early_tx => Repr::ZeroRtt {
                dcid: self.remote_cid,
                scid: self.local_cid,
                length: 0,
            },
            _ => Repr::Short {
                dcid: self.remote_cid,
                spin: false,
            },
        };
        let hdr = repr.emit(out).ok()?;
        if out.len() < hdr + pn_len + 4 + TAG_LEN + 8 {
            return None;
        }
        out[0] |= (pn_len - 1) as u8;
        let long = i < 2 || self.early_tx;
        if i == 2 && !long && self.key_phase {
            out[0] |= 0x04;
        }
        pn::encode(pn, pn_len, &mut out[hdr..])?;
        let payload_start = hdr + pn_len;
        // A short-header packet is at least 22 bytes longer than its DCID (RFC 9000
        // §10.3), so that a peer that lost its state can answer any of them with a
        // stateless reset shorter than the packet: a client that only sends keep-alive
        // PINGs and ACKs (a download) learns at once that its server restarted.
        let pad_to = if i == 2 && !long {
            pad_to.max(hdr + RESET_TRIGGER_EXTRA)
        } else {
            pad_to
        };
        let payload_cap = out.len() - TAG_LEN;
        let mut eliciting = false;
        let mut crypto = None;
        let mut handshake_done = false;
        let mut rec = {
            let e = self.spaces[i].records_end();
            (e, e)
        };
        let payload_len = {
            let mut w = Out::new(&mut out[payload_start..payload_cap]);
            let space = &mut self.spaces[i];
            if space.wants_ack() || (!space.received.is_empty() && space.unacked_eliciting > 0) {
                let delay = space.largest_rx.map_or(0, |(_, t)| {
                    now.saturating_duration_since(t).as_micros() as u64 >> ACK_DELAY_EXPONENT
                });
                if frame::encode_ack_ecn(
                    &mut w,
                    space.received.iter_desc(),
                    if i == 2 { delay } else { 0 },
                    space.ecn.ack_counts(),
                )
                .is_some()
                {
                    space.ack_now = false;
                    space.ack_deadline = None;
                    space.unacked_eliciting = 0;
                }
            }
            if self.state == State::Closing {
                if let Some((code, frame_type, reason)) = &self.close {
                    // Application closes are sent as transport APPLICATION_ERROR outside 1-RTT.
                    let (c, ft) = match (i, frame_type) {
                        (2, ft) => (*code, *ft),
                        (_, Some(ft)) => (*code, Some(*ft)),
                        (_, None) => (code::APPLICATION_ERROR, Some(0)),
                    };
                    // An application's reason stays private outside 1-RTT packets.
                    let reason = if i == 2 || frame_type.is_some() {
                        &reason[..]
                    } else {
                        &[][..]
                    };
                    let _ = frame::encode_close(&mut w, c, ft, reason);
                }
            } else {
                if i == 2
                    && self.handshake_done_pending
                    && self.side == Side::Server
                    && w.varint(frame::ty::HANDSHAKE_DONE).is_some()
                {
                    self.handshake_done_pending = false;
                    handshake_done = true;
                    eliciting = true;
                }
                if let Some(r) = space.crypto_pending.first() {
                    let room = w
                        .remaining()
                        .saturating_sub(frame::crypto_header_len(r.start, w.remaining()));
                    let n = (room as u64).min(r.end - r.start);
                    if n > 0 {
                        let data = &space.crypto_out[r.start as usize..(r.start + n) as usize];
                        if frame::encode_crypto(&mut w, r.start, data).is_some() {
                            space.crypto_pending.remove(r.start..r.start + n);
                            crypto = Some(r.start..r.start + n);
                            eliciting = true;
                        }
                    }
                }
                if i == 2 {
                    let rec_start = self.spaces[2].records_end();
                    eliciting |= self.write_one_rtt_frames(&mut w, data_ok, mtu_probe);
                    if self.spaces[2].records_end() > rec_start {
                        rec = (rec_start, self.spaces[2].records_end());
                    }
                }
                let space = &mut self.spaces[i];
                if space.probes > 0 && !eliciting && w.varint(frame::ty::PING).is_some() {
                    eliciting = true;
                }
            }
            if w.is_empty() {
                return None;
            }
            // Room for the header-protection sample, and any padding asked for.
            let min_payload =
                (4usize.saturating_sub(pn_len)).max(pad_to.saturating_sub(payload_start + TAG_LEN));
            if w.len() < min_payload {
                let pad = (min_payload - w.len()).min(w.remaining());
                w.zeros(pad)?;
            }
            w.len()
        };
        let packet_len = payload_start + payload_len + TAG_LEN;
        if long {
            let length = (pn_len + payload_len + TAG_LEN) as u16;
            out[hdr - 2..hdr].copy_from_slice(&(0x4000 | length).to_be_bytes());
        }
        let space = &mut self.spaces[i];
        let tx = space.tx.as_mut()?;
        if protect_packet(&mut out[..packet_len], hdr, pn, &mut tx.packet, &tx.header).is_err() {
            // Not reached: the key's exhaustion is checked before any frame is written,
            // and the packet has room for its tag. Were it reached, nothing is sent.
            return None;
        }
        space.next_pn += 1;
        self.stats.zero_rtt_packets += u64::from(self.early_tx && i == 2);
        let space = &mut self.spaces[i];
        let probe = space.probes > 0 && eliciting;
        if probe {
            space.probes -= 1;
        }
        if eliciting {
            space.eliciting_in_flight += 1;
            space.last_eliciting_sent = Some(now);
            if let Some(d) = self.idle_timeout {
                if self.timers.get(Timer::Idle).is_none() {
                    self.timers.set(Timer::Idle, now + d);
                }
            }
        }
        let in_flight = eliciting && i == 2;
        let rate = in_flight.then(|| self.rate.on_sent(now, self.in_flight, packet_len as u64));
        let space = &mut self.spaces[i];
        space.sent.push_back(SentPacket {
            pn,
            time: now,
            size: packet_len as u16,
            ack_eliciting: eliciting,
            crypto,
            handshake_done,
            done: !eliciting,
            acked: false,
            in_flight,
            ecn: self.ecn_marking,
            rate,
            rec,
        });
        if self.ecn_marking {
            space.ecn.sent_marked += 1;
        }
        space.compact();
        if in_flight {
            self.in_flight += packet_len as u64;
            self.cc.on_sent(now, packet_len as u64, self.in_flight);
            self.pacer.on_sent(packet_len as u64);
            self.last_eliciting_1rtt = Some(now);
        }
        self.stats.tx_packets += 1;
        // A probe timeout's probe (the client's first flight also spends probes).
        let probe = probe && self.pto_count > 0;
        self.qlog(now, || Ev::PacketSent {
            space: i as u8,
            pn,
            len: packet_len as u16,
            probe,
            mtu_probe: mtu_probe.is_some(),
        });
        if i == 1 && self.side == Side::Client && !self.spaces[0].discarded {
            // The client's first Handshake packet retires the Initial keys (RFC 9001 §4.9.1).
            self.spaces[0].discard();
        }
        Some((packet_len, eliciting))
    }

    /// Writes the 1-RTT-only frames (path, CIDs, stream control, DATAGRAMs, PING, STREAM)
    /// into `w`, recording what must be retransmitted; returns whether any is
    /// ack-eliciting.
    pub(super) fn write_one_rtt_frames(
        &mut self,
        w: &mut Out<'_>,
        data_ok: bool,
        mtu_probe: Option<usize>,
    ) -> bool {
        let mut eliciting = false;
        while let Some(f) = self.raw_frames.front() {
            if w.put(f).is_none() {
                break;
            }
            self.raw_frames.pop_front();
            eliciting = true;
        }
        // Path frames go out regardless of congestion: they are small and time-critical.
        if let Some(d) = self.path.response
            && frame::encode_path(w, true, &d).is_some()
        {
            self.path.response = None;
            eliciting = true;
        }
        if let Some(v) = self
            .path
            .validation
            .as_mut()
            .filter(|v| v.challenge_pending)
            && frame::encode_path(w, false, &v.token).is_some()
        {
            v.challenge_pending = false;
            eliciting = true;
        }
        if self.ping_pending && w.varint(frame::ty::PING).is_some() {
            self.ping_pending = false;
            self.address_ping = false;
            eliciting = true;
        }
        if let Some(size) = mtu_probe {
            // The probe: PING, then the caller pads to the probe size.
            if w.varint(frame::ty::PING).is_some() {
                self.spaces[2]
                    .records
                    .push_back(Record::MtuProbe(size as u16));
            }
            return true;
        }
        let probing = self.spaces[2].probes > 0;
        if !self.app_ready() || !(data_ok || probing) {
            return eliciting;
        }
        let established = self.state == State::Established;
        let records = &mut self.spaces[2].records;
        while let Some(&seq) = self.path.retire_pending.front().filter(|_| established) {
            if frame::encode_varints(w, &[frame::ty::RETIRE_CONNECTION_ID, seq]).is_none() {
                break;
            }
            self.path.retire_pending.pop_front();
            records.push_back(Record::RetireCid(seq));
            eliciting = true;
        }
        if established {
            self.path.write_new_cids(w, |seq| {
                records.push_back(Record::NewCid(seq));
                eliciting = true;
            });
        }
        if let Some(t) = self.new_token.as_ref().filter(|_| established)
            && frame::encode_new_token(w, t).is_some()
        {
            self.new_token_in_flight = self.new_token.take();
            records.push_back(Record::NewToken);
            eliciting = true;
        }
        let before = w.len();
        self.streams
            .write_control(w, &mut |r| records.push_back(Record::Stream(r)));
        while let Some((seq, ty, payload)) = self.ext_out.front().filter(|_| established) {
            if frame::encode_extension(w, *ty, *seq, payload).is_none() {
                break;
            }
            let e = self.ext_out.pop_front().expect("front exists");
            records.push_back(Record::Extension(e.0));
            self.ext_sent.push(e);
            eliciting = true;
        }
        while let Some(d) = self.datagrams_out.front() {
            let need = 1 + frame::varint_len(d.len() as u64) + d.len();
            if need > w.remaining() {
                if w.is_empty() {
                    // Cannot fit even alone (the path shrank): drop it.
                    self.datagrams_out.discard_front();
                    continue;
                }
                break;
            }
            let _ = frame::encode_datagram(w, d, false);
            self.datagrams_out.discard_front();
            eliciting = true;
        }
        if self.datagrams_blocked && self.datagrams_out.len() < MAX_QUEUED_DATAGRAMS {
            self.datagrams_blocked = false;
            self.events.push_back(Event::DatagramsUnblocked);
        }
        self.streams
            .write_streams(w, &mut |r| records.push_back(Record::Stream(r)));
        eliciting || w.len() > before
    }
}
