//! Receiving: a datagram split into its packets, each opened (header protection, AEAD,
//! key phase) and its frames handled; Retry and Version Negotiation on the client.

use super::ecn::DatagramInfo;
use super::error::ConnectionError;
use super::event::Event;
use super::streams::{Dir, StreamId};
use super::timers::Timer;
use super::{
    Connection, EXTENSION_WINDOW, INITIAL_SUITE, MAX_ACK_DELAY, MAX_EARLY_PACKETS,
    MAX_EXTENSION_BYTES, MAX_QUEUED_DATAGRAMS, MAX_QUEUED_EXTENSIONS, Side, State, token,
};
use crate::crypto::{CryptoError, DirectionalKeys, TAG_LEN, pn, unprotect_header};
use crate::frame::{self, Frame};
use crate::handshake::schedule::initial_secrets;
use crate::qlog::Ev;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use stoq_common::cid::ConnectionId;
use stoq_common::classify::{HeaderInfo as WireHeader, PacketKind, classify_payload};

/// The window over which ACK thinning counts the packet rate.
pub(super) const RX_RATE_WINDOW: Duration = Duration::from_millis(25);

impl Connection {
    /// Processes one received datagram, all of whose packets carry this connection's CID
    /// (routed here by [`Endpoint::handle_datagram`](super::Endpoint::handle_datagram),
    /// the one entry point), decrypting in place in `data`. `first` is the endpoint's
    /// parse of the first packet's header, reused.
    pub(crate) fn receive(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        rx: DatagramInfo,
        data: &mut [u8],
        mut first: Option<WireHeader>,
    ) {
        if self.state == State::Drained {
            return;
        }
        self.rx_info = rx;
        self.stats.rx_datagrams += 1;
        self.stats.rx_bytes += data.len() as u64;
        let long_header = data.first().is_some_and(|b| b & 0x80 != 0);
        if remote != self.remote && (!self.confirmed || long_header) {
            // No migration before the handshake is confirmed, and only 1-RTT packets move
            // a connection (RFC 9000 §9).
            self.stats.dropped.other_path += 1;
            return;
        }
        if remote == self.remote {
            self.rx_bytes += data.len() as u64;
        }
        let dlen = data.len();
        let mut off = 0;
        // Where the first packet's DCID lies in `data`; every coalesced packet must carry
        // the same one (RFC 9000 §12.2). Compared in place, not copied out.
        let mut first_dcid: Option<(usize, usize)> = None;
        while off < data.len() {
            let rest = &mut data[off..];
            let info = match first.take() {
                Some(i) => i,
                None => match classify_payload(rest, &self.classifier) {
                    Ok(i) => i,
                    Err(_) => {
                        self.stats.dropped.malformed += 1;
                        break;
                    }
                },
            };
            let len = match info.kind {
                PacketKind::Initial | PacketKind::Handshake | PacketKind::ZeroRtt => {
                    (info.pn_off + info.length as usize).min(rest.len())
                }
                _ => rest.len(),
            };
            match first_dcid {
                None => first_dcid = Some((off + info.dcid_off, info.dcid_len)),
                Some((at, n)) => {
                    let this = off + info.dcid_off;
                    if n != info.dcid_len || data[at..at + n] != data[this..this + n] {
                        self.stats.dropped.mismatched_cid += 1;
                        break;
                    }
                }
            }
            let rest = &mut data[off..];
            self.handle_packet(now, &mut rest[..len], &info, remote, dlen);
            off += len;
            if self.state == State::Drained {
                return;
            }
        }
        if self.state == State::Closing {
            // Answer anything with the close again.
            self.close_pending = true;
        }
        self.replay_early(now);
    }

    pub(super) fn epoch_of(kind: PacketKind) -> Option<usize> {
        match kind {
            PacketKind::Initial => Some(0),
            PacketKind::Handshake => Some(1),
            PacketKind::Short | PacketKind::ZeroRtt => Some(2),
            _ => None,
        }
    }

    pub(super) fn handle_packet(
        &mut self,
        now: Instant,
        pkt: &mut [u8],
        info: &WireHeader,
        remote: SocketAddr,
        dlen: usize,
    ) {
        match info.kind {
            PacketKind::Retry => return self.handle_retry(now, pkt, info),
            PacketKind::VersionNegotiation => return self.handle_version_negotiation(pkt, info),
            _ => {}
        }
        let Some(i) = Self::epoch_of(info.kind) else {
            self.stats.dropped.malformed += 1;
            return;
        };
        if self.state == State::Draining {
            return;
        }
        let zero_rtt = info.kind == PacketKind::ZeroRtt;
        if zero_rtt && self.early_rx.is_none() {
            // 0-RTT packets go to servers only. One that overtook the end of its
            // ClientHello (a lost second Initial) is held until the ClientHello is read;
            // after that, no key means the early data were refused (or the handshake is
            // over): the client sends that data again at 1-RTT.
            let keys_coming = self.side == Side::Server
                && self.state == State::Handshaking
                && self.spaces[1].tx.is_none();
            if keys_coming && self.early_packets.len() < MAX_EARLY_PACKETS {
                self.early_packets.push(pkt.to_vec());
            } else {
                self.stats.dropped.no_keys += 1;
            }
            return;
        }
        if !zero_rtt && self.spaces[i].rx.is_none() {
            // Packets that overtook the one carrying their keys (RFC 9001 §4.1.4): the
            // client's 1-RTT packets ahead of its Finished at the server; the server's
            // Handshake or 1-RTT packets ahead of its lost or reordered Initial at the
            // client. Hold a few; they are replayed when the keys arrive.
            let keys_coming = !self.spaces[i].discarded
                && match i {
                    2 => self.pending_rx_1rtt.is_some() || self.state == State::Handshaking,
                    1 => self.state == State::Handshaking,
                    _ => false,
                };
            if keys_coming && self.early_packets.len() < MAX_EARLY_PACKETS {
                self.early_packets.push(pkt.to_vec());
            } else {
                self.stats.dropped.no_keys += 1;
            }
            return;
        }
        let rx = match &self.early_rx {
            Some(k) if zero_rtt => k,
            _ => self.spaces[i].rx.as_ref().expect("checked"),
        };
        let Ok(h) = unprotect_header(pkt, info.pn_off, &rx.header) else {
            self.stats.dropped.malformed += 1;
            return;
        };
        let space = &self.spaces[i];
        let pn = pn::decode(space.largest_rx.map(|l| l.0), h.truncated_pn, h.pn_len);
        let header_len = info.pn_off + h.pn_len;
        let opened = if let Some(k) = self.early_rx.as_mut().filter(|_| zero_rtt) {
            k.packet.open(pn, pkt, header_len).map(|_| ())
        } else if i == 2 {
            self.open_one_rtt(pn, h.key_phase(), pkt, header_len)
        } else {
            let rx = self.spaces[i].rx.as_mut().expect("checked");
            rx.packet.open(pn, pkt, header_len).map(|_| ())
        };
        match opened {
            Ok(()) => {}
            Err(CryptoError::IntegrityLimit) => {
                return self.fail(now, ConnectionError::AeadLimitReached);
            }
            Err(_) => {
                self.stats.dropped.decrypt_failed += 1;
                let len = pkt.len() as u16;
                self.qlog(now, || Ev::PacketDropped {
                    trigger: "decryption_failure",
                    details: "decrypt_failed",
                    len,
                });
                return;
            }
        }
        let reserved = if i == 2 && !zero_rtt { 0x18 } else { 0x0c };
        if h.first & reserved != 0 {
            return self.fail(
                now,
                ConnectionError::ProtocolViolation("reserved header bits set"),
            );
        }
        let space = &mut self.spaces[i];
        // Below the floor the record of received numbers was forgotten (bounded ranges):
        // such a packet may have been processed already, so it is dropped (RFC 9000
        // §12.3), however few ranges are held now.
        let too_old = pn < space.received.floor();
        if too_old || space.received.contains(pn) {
            self.stats.dropped.duplicate += 1;
            let len = pkt.len() as u16;
            self.qlog(now, || Ev::PacketDropped {
                trigger: "duplicate",
                details: "duplicate",
                len,
            });
            return;
        }
        // A packet that skips ahead leaves a gap: acknowledge at once so the peer detects
        // the loss quickly (RFC 9000 §13.2.1).
        let newest = space.largest_rx.is_none_or(|(l, _)| pn > l);
        let gap = space.largest_rx.is_some_and(|(l, _)| pn > l + 1 || pn < l);
        space.received.insert(pn..pn + 1);
        if newest {
            space.largest_rx = Some((pn, now));
        }
        // A CE mark is acknowledged at once, so the sender reacts within a round trip
        // (RFC 9000 §13.2.1).
        let ce = space.ecn.on_received(self.rx_info.ecn);
        if gap || ce {
            space.ack_now = true;
        }
        self.stats.ecn_ce_received += u64::from(ce);
        self.stats.rx_packets += 1;
        let len = pkt.len() as u16;
        self.qlog(now, || Ev::PacketReceived {
            space: i as u8,
            pn,
            len,
        });
        if i == 2 && remote != self.remote {
            if !newest {
                // A late packet from the old path: use its frames, do not move back.
            } else {
                self.on_peer_address_change(now, remote, dlen);
            }
        }
        if let Some(d) = self.idle_timeout {
            self.timers
                .set(Timer::Idle, now + d.max(3 * self.pto_period(2)));
        }
        if self.state == State::Handshaking && self.timers.get(Timer::Handshake).is_some() {
            // The handshake timer is an idle timer too: a handshake that is still hearing
            // from its peer (slowly, over a lossy path) goes on.
            self.timers.set(
                Timer::Handshake,
                now + self
                    .transport
                    .handshake_timeout
                    .max(3 * self.rtt.pto_base()),
            );
        }
        if i == 0 && self.side == Side::Client && self.server_initial_scid.is_none() {
            // The server's first Initial names the CID we address it by from now on.
            let scid = ConnectionId::from_slice(&pkt[info.scid_off..info.scid_off + info.scid_len])
                .unwrap_or(ConnectionId::EMPTY);
            self.server_initial_scid = Some(scid);
            self.remote_cid = scid;
        }
        if i == 1 && self.side == Side::Server && !self.validated {
            // A Handshake packet proves the client holds the keys: the address is valid,
            // and Initial keys are no longer needed (RFC 9001 §4.9.1).
            self.validated = true;
            self.spaces[0].discard();
        }
        let payload_end = pkt.len() - TAG_LEN;
        self.stats.zero_rtt_packets += u64::from(zero_rtt);
        self.rx_zero_rtt = zero_rtt;
        self.handle_payload(now, i, &pkt[header_len..payload_end]);
        self.rx_zero_rtt = false;
    }

    /// Acts on the frames of an authenticated packet of space `i`, then schedules its
    /// acknowledgement.
    pub(super) fn handle_payload(&mut self, now: Instant, i: usize, payload: &[u8]) {
        let mut eliciting = false;
        for f in frame::Iter::new(payload) {
            let f = match f {
                Ok(f) => f,
                Err(e) => return self.fail(now, ConnectionError::FrameEncoding(e)),
            };
            if i != 2 && !f.allowed_in_handshake_spaces() {
                return self.fail(
                    now,
                    ConnectionError::ProtocolViolation(
                        "frame not allowed in Initial or Handshake packets",
                    ),
                );
            }
            if self.rx_zero_rtt && !f.allowed_in_zero_rtt() {
                return self.fail(
                    now,
                    ConnectionError::ProtocolViolation("frame not allowed in 0-RTT packets"),
                );
            }
            eliciting |= f.is_ack_eliciting();
            if let Err(e) = self.handle_frame(now, i, f) {
                return self.fail(now, e);
            }
            if self.is_closed() {
                return;
            }
        }
        if eliciting && i == 2 {
            self.update_ack_thinning(now);
        }
        let threshold = if self.thinning {
            self.ack_threshold.max(self.transport.ack_thinning)
        } else {
            self.ack_threshold
        };
        let space = &mut self.spaces[i];
        if eliciting && !space.discarded {
            space.unacked_eliciting += 1;
            if i != 2 || space.unacked_eliciting >= threshold {
                space.ack_now = true;
                space.ack_deadline = None;
            } else if space.ack_deadline.is_none() {
                space.ack_deadline = Some(now + MAX_ACK_DELAY);
            }
        }
    }

    /// Feeds `payload` to an established connection as if it were the decrypted payload
    /// of a new 1-RTT packet (no packet protection involved): for fuzzing the frame
    /// handling and state machine behind a completed handshake.
    #[cfg(any(test, fuzzing, feature = "sim"))]
    #[doc(hidden)]
    pub fn inject_one_rtt_payload(&mut self, now: Instant, payload: &[u8]) {
        if self.state != State::Established {
            return;
        }
        self.handle_payload(now, 2, payload);
    }

    /// Feeds `payload` to a server that accepted early data, as if it were the decrypted
    /// payload of a new 0-RTT packet: for fuzzing what 0-RTT frames may do before the
    /// handshake completes. Nothing happens on a client or once the early key is gone.
    #[cfg(any(test, fuzzing, feature = "sim"))]
    #[doc(hidden)]
    pub fn inject_zero_rtt_payload(&mut self, now: Instant, payload: &[u8]) {
        if self.side != Side::Server || self.early_rx.is_none() {
            return;
        }
        self.rx_zero_rtt = true;
        self.handle_payload(now, 2, payload);
        self.rx_zero_rtt = false;
    }

    /// Queues raw frame bytes for the next 1-RTT packet, unchecked: lets a test play a
    /// hostile peer over the real packet path.
    #[cfg(any(test, feature = "sim"))]
    #[doc(hidden)]
    pub fn queue_raw_frames(&mut self, frames: &[u8]) {
        self.raw_frames.push_back(frames.to_vec());
    }

    /// ACK thinning: above ~4,000 ack-eliciting packets per second (about 45 Mbit/s of
    /// full packets), acknowledge every `ack_thinning` packets instead of every other one.
    /// Loss recovery is unaffected: gaps are acknowledged at once.
    pub(super) fn update_ack_thinning(&mut self, now: Instant) {
        // The window's end is kept, not its start: a comparison per packet, and the one
        // addition only when a window closes.
        let (end, n) = &mut self.rx_rate_window;
        *n += 1;
        if now >= *end {
            self.thinning = *n >= 100;
            *end = now + RX_RATE_WINDOW;
            *n = 0;
        }
    }

    pub(super) fn open_one_rtt(
        &mut self,
        pn: u64,
        phase: bool,
        pkt: &mut [u8],
        header_len: usize,
    ) -> Result<(), CryptoError> {
        let rx = self.spaces[2].rx.as_mut().expect("checked by caller");
        if phase == self.rx_key_phase {
            return rx.packet.open(pn, pkt, header_len).map(|_| ());
        }
        if pn < self.rx_phase_first_pn {
            // A reordered packet from the previous phase.
            return match self.rx_prev.as_mut() {
                Some(k) => k.open(pn, pkt, header_len).map(|_| ()),
                None => Err(CryptoError::Decrypt),
            };
        }
        // The peer moved to the next phase (or this is garbage).
        if self.rx_next.is_none() {
            self.rx_next = Some(rx.next_phase_key());
        }
        let (_, next) = self.rx_next.as_mut().expect("just set");
        next.open(pn, pkt, header_len)?;
        let (secret, key) = self.rx_next.take().expect("just used");
        let rx = self.spaces[2].rx.as_mut().expect("checked by caller");
        self.rx_prev = Some(rx.install(secret, key));
        self.rx_key_phase = phase;
        self.rx_phase_first_pn = pn;
        if self.key_phase != phase {
            // Answer the peer's update.
            self.update_tx_keys();
        }
        self.events.push_back(Event::KeyUpdated);
        Ok(())
    }

    pub(super) fn handle_frame(
        &mut self,
        now: Instant,
        i: usize,
        f: Frame<'_>,
    ) -> Result<(), ConnectionError> {
        match f {
            Frame::Padding(_) | Frame::Ping => Ok(()),
            Frame::Ack(a) => self.on_ack(now, i, &a),
            Frame::Crypto { offset, data } => self.on_crypto(now, i, offset, data),
            Frame::Close {
                code,
                frame_type,
                reason,
            } => {
                let reason = String::from_utf8_lossy(reason).into_owned();
                let e = if frame_type.is_some() {
                    ConnectionError::PeerClosed { code, reason }
                } else {
                    ConnectionError::ApplicationClosed { code, reason }
                };
                self.enter_draining(now, e);
                Ok(())
            }
            Frame::HandshakeDone => {
                if self.side == Side::Server {
                    return Err(ConnectionError::ProtocolViolation(
                        "HANDSHAKE_DONE sent by a client",
                    ));
                }
                if !self.confirmed {
                    self.confirm(now);
                }
                Ok(())
            }
            Frame::Datagram(d) => {
                if self.local_params.max_datagram_frame_size == 0 {
                    return Err(ConnectionError::ProtocolViolation(
                        "DATAGRAM received but not offered",
                    ));
                }
                if d.len() as u64 > self.local_params.max_datagram_frame_size {
                    return Err(ConnectionError::ProtocolViolation(
                        "DATAGRAM larger than max_datagram_frame_size",
                    ));
                }
                if self.datagrams_in.len() >= MAX_QUEUED_DATAGRAMS {
                    self.datagrams_in.discard_front();
                    self.stats.dropped.datagram_queue_full += 1;
                }
                self.datagrams_in.push(d);
                if self.datagrams_in.len() == 1 {
                    self.events.push_back(Event::DatagramReceived);
                }
                Ok(())
            }
            Frame::NewToken(_) if self.side == Side::Server => Err(
                ConnectionError::ProtocolViolation("NEW_TOKEN sent by a client"),
            ),
            // Kept for the next connection to this server (with the session tickets).
            Frame::NewToken(t) => {
                self.hs.store_address_token(t);
                Ok(())
            }
            Frame::Stream {
                id,
                offset,
                fin,
                data,
            } => self.streams.on_stream(StreamId(id), offset, data, fin),
            Frame::ResetStream {
                id,
                code,
                final_size,
            } => self.streams.on_reset_stream(StreamId(id), code, final_size),
            Frame::StopSending { id, code } => self.streams.on_stop_sending(StreamId(id), code),
            Frame::MaxData(m) => {
                self.streams.on_max_data(m);
                Ok(())
            }
            Frame::MaxStreamData { id, max } => self.streams.on_max_stream_data(StreamId(id), max),
            Frame::MaxStreams { bidi, count } => self
                .streams
                .on_max_streams(if bidi { Dir::Bi } else { Dir::Uni }, count),
            Frame::DataBlocked(_) | Frame::StreamsBlocked { .. } => Ok(()),
            Frame::StreamDataBlocked { id, .. } => {
                self.streams.on_stream_data_blocked(StreamId(id))
            }
            Frame::NewConnectionId {
                seq,
                retire_prior_to,
                cid,
                reset_token,
            } => {
                if self.remote_cid.is_empty() {
                    return Err(ConnectionError::ProtocolViolation(
                        "NEW_CONNECTION_ID to a peer using zero-length CIDs",
                    ));
                }
                let limit = self.local_params.active_connection_id_limit;
                self.path
                    .on_new_cid(seq, retire_prior_to, cid, reset_token, limit)?;
                if self.path.active_cid().is_none() {
                    // The active CID was retired: move to the next one.
                    match self.path.peer_cids.front() {
                        Some(c) => {
                            self.remote_cid = c.cid;
                            self.path.active_seq = c.seq;
                        }
                        None => {
                            return Err(ConnectionError::ProtocolViolation(
                                "every connection ID retired",
                            ));
                        }
                    }
                }
                Ok(())
            }
            Frame::RetireConnectionId(seq) => self.path.on_retire(seq),
            Frame::PathChallenge(d) => self.path.on_challenge(now, d),
            Frame::PathResponse(d) => {
                if let Some(v) = self.path.validation.filter(|v| v.token == d) {
                    self.path.validation = None;
                    self.validated = true;
                    self.events.push_back(Event::PathMigrated(v.remote));
                }
                Ok(())
            }
            Frame::Extension { ty, seq, payload } => {
                if !self.transport.extension_frames.contains(&ty) {
                    return Err(ConnectionError::UnsupportedFrame(ty));
                }
                // Everything a window or more below the highest number seen was delivered
                // (the sender never runs further ahead of its oldest unacknowledged frame).
                let floor = self.ext_seen.floor().max(
                    self.ext_max_seen
                        .map_or(0, |m| (m + 1).saturating_sub(EXTENSION_WINDOW)),
                );
                if seq < floor || self.ext_seen.contains(seq) {
                    self.stats.extension_duplicates += 1;
                    return Ok(());
                }
                if self.ext_in.len() >= MAX_QUEUED_EXTENSIONS
                    || self.ext_in_bytes + payload.len() > MAX_EXTENSION_BYTES
                {
                    return Err(ConnectionError::ExtensionFramesExceeded);
                }
                self.ext_in_bytes += payload.len();
                self.ext_in.push_back((ty, payload.to_vec()));
                self.ext_seen.insert(seq..seq + 1);
                let max = self.ext_max_seen.map_or(seq, |m| m.max(seq));
                self.ext_max_seen = Some(max);
                self.ext_seen
                    .remove_below((max + 1).saturating_sub(EXTENSION_WINDOW));
                if self.ext_in.len() == 1 {
                    self.events.push_back(Event::ExtensionFrameReceived);
                }
                Ok(())
            }
        }
    }

    pub(super) fn handle_retry(&mut self, now: Instant, pkt: &[u8], info: &WireHeader) {
        if self.side != Side::Client
            || self.server_initial_scid.is_some()
            || self.retry_scid.is_some()
            || info.token_len == 0
            || !token::retry_tag_ok(self.orig_dcid.as_bytes(), pkt)
        {
            self.stats.dropped.bad_retry_or_vn += 1;
            return;
        }
        let Ok(scid) = ConnectionId::from_slice(&pkt[info.scid_off..info.scid_off + info.scid_len])
        else {
            self.stats.dropped.bad_retry_or_vn += 1;
            return;
        };
        // The time from the first Initial to the Retry is the client's first RTT estimate
        // (RFC 9002 §6.2.2 allows it): its probe timeout after a Retry follows the path,
        // not the 333 ms assumed before any sample (1 s, then 2 s, 4 s, ... when the
        // Initial that follows the Retry is lost on a busy server's path). Not when
        // anything was sent again: which copy the Retry answered would be unknown.
        if self.pto_count == 0
            && !self.rtt.has_sample()
            && let Some(first) = self.spaces[0].sent.front()
        {
            self.rtt
                .update(now.saturating_duration_since(first.time), Duration::ZERO);
        }
        // Loss recovery starts over (RFC 9002 §6.3), timers and backoff included.
        self.pto_count = 0;
        self.retry_scid = Some(scid);
        self.remote_cid = scid;
        self.token = pkt[info.token_off..info.token_off + info.token_len].to_vec();
        let (c, s) = initial_secrets(scid.as_bytes());
        let space = &mut self.spaces[0];
        space.tx = Some(DirectionalKeys::from_secret(INITIAL_SUITE, c));
        space.rx = Some(DirectionalKeys::from_secret(INITIAL_SUITE, s));
        space.forget_in_flight();
        space.crypto_acked.clear();
        space.requeue_all_crypto();
        if self.early_tx {
            // The stateless Retry discarded the 0-RTT packets too: send them again.
            self.discard_early_in_flight();
        }
    }

    pub(super) fn handle_version_negotiation(&mut self, pkt: &[u8], info: &WireHeader) {
        let dcid = &pkt[info.dcid_off..info.dcid_off + info.dcid_len];
        let scid = &pkt[info.scid_off..info.scid_off + info.scid_len];
        let ours = stoq_common::wire::stoq::VERSION_1.to_be_bytes();
        let lists_ours = pkt[info.pn_off..].chunks(4).any(|v| v == ours);
        if self.side != Side::Client
            || self.server_initial_scid.is_some()
            || self.retry_scid.is_some()
            || dcid != self.local_cid.as_bytes()
            || scid != self.orig_dcid.as_bytes()
            || lists_ours
        {
            self.stats.dropped.bad_retry_or_vn += 1;
            return;
        }
        self.qlog_closed(None, &ConnectionError::VersionMismatch);
        self.error = Some(ConnectionError::VersionMismatch);
        self.events
            .push_back(Event::Lost(ConnectionError::VersionMismatch));
        self.state = State::Drained;
    }
}
