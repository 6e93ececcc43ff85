//! The secure session as the connection drives it: CRYPTO data fed to the handshake,
//! its output queued in the right space, keys installed as they are derived, the
//! handshake completed and confirmed, packets held for keys that had not arrived yet,
//! and 1-RTT key updates.

use super::error::ConnectionError;
use super::event::Event;
use super::space::MAX_CRYPTO_BUFFER;
use super::timers::Timer;
use super::{Connection, Side, State, path};
use crate::crypto::DirectionalKeys;
use crate::handshake::batch::BatchProof;
use crate::handshake::{Epoch, KeyChange, SignatureRequest};
use crate::qlog::Ev;
use std::time::{Duration, Instant};
use stoq_common::classify::classify_payload;

impl Connection {
    pub(super) fn update_tx_keys(&mut self) {
        // The receive side already moved: this update answers the peer's.
        let answering = self.key_phase != self.rx_key_phase;
        if let Some(tx) = self.spaces[2].tx.as_mut() {
            tx.update();
            self.key_phase = !self.key_phase;
            self.tx_phase_first_pn = self.spaces[2].next_pn;
            self.tx_phase_acked = false;
            self.stats.key_updates += 1;
            if let Some(t) = self.qlog.as_deref_mut() {
                let ev = Ev::KeyUpdated {
                    client: self.side == Side::Client,
                    phase: self.stats.key_updates,
                    local: !answering,
                };
                let now = t.last_time();
                t.record(now, ev);
            }
        }
    }

    pub(super) fn on_crypto(
        &mut self,
        now: Instant,
        i: usize,
        offset: u64,
        data: &[u8],
    ) -> Result<(), ConnectionError> {
        let space = &mut self.spaces[i];
        let end = offset + data.len() as u64;
        if end <= space.crypto_in_offset {
            return Ok(()); // A retransmission of what we have.
        }
        if end - space.crypto_in_offset > MAX_CRYPTO_BUFFER {
            return Err(ConnectionError::CryptoBufferExceeded);
        }
        if offset > space.crypto_in_offset {
            if space.crypto_in_bytes + data.len() as u64 > MAX_CRYPTO_BUFFER {
                return Err(ConnectionError::CryptoBufferExceeded);
            }
            let keep = space
                .crypto_in
                .get(&offset)
                .is_none_or(|d| d.len() < data.len());
            if keep {
                if let Some(old) = space.crypto_in.insert(offset, data.to_vec()) {
                    space.crypto_in_bytes -= old.len() as u64;
                }
                space.crypto_in_bytes += data.len() as u64;
            }
            return Ok(());
        }
        let skip = (space.crypto_in_offset - offset) as usize;
        space.crypto_in_offset = end;
        self.feed_handshake(now, i, &data[skip..])?;
        // Deliver buffered chunks that are now in order.
        loop {
            let space = &mut self.spaces[i];
            let Some((&off, _)) = space.crypto_in.first_key_value() else {
                break;
            };
            if off > space.crypto_in_offset {
                break;
            }
            let chunk = space.crypto_in.remove(&off).expect("present");
            space.crypto_in_bytes -= chunk.len() as u64;
            let end = off + chunk.len() as u64;
            if end <= space.crypto_in_offset {
                continue;
            }
            let skip = (space.crypto_in_offset - off) as usize;
            space.crypto_in_offset = end;
            self.feed_handshake(now, i, &chunk[skip..])?;
        }
        Ok(())
    }

    pub(super) fn unix_now(&self, now: Instant) -> u64 {
        let (base, secs) = self.unix_base;
        secs + now.saturating_duration_since(base).as_secs()
    }

    pub(super) fn feed_handshake(
        &mut self,
        now: Instant,
        i: usize,
        data: &[u8],
    ) -> Result<(), ConnectionError> {
        let epoch = [Epoch::Initial, Epoch::Handshake, Epoch::OneRtt][i];
        let unix = self.unix_now(now);
        self.hs.read(epoch, data, unix, &mut self.rng)?;
        self.collect_handshake_output(now);
        if self.hs.is_complete() && self.state == State::Handshaking {
            self.on_handshake_complete(now)?;
        }
        Ok(())
    }

    /// What this server connection's handshake waits to have signed, if it waits.
    pub(crate) fn signature_request(&self) -> Option<SignatureRequest> {
        self.hs.signature_request()
    }

    /// Signs this server's handshake alone and queues the rest of its flight.
    pub(crate) fn sign_alone(&mut self, now: Instant) {
        self.hs.sign_alone(&mut self.rng);
        self.collect_handshake_output(now);
    }

    /// Completes this server's handshake flight with its share of a batch signature.
    pub(crate) fn sign_in_batch(
        &mut self,
        now: Instant,
        proof: BatchProof,
        signature: Vec<u8>,
        batch_size: u32,
    ) {
        self.hs.sign_in_batch(proof, signature, batch_size);
        self.collect_handshake_output(now);
    }

    pub(super) fn collect_handshake_output(&mut self, _now: Instant) {
        // The server's answer to early data comes before the keys that follow it.
        self.on_early_answer();
        self.take_early_key();
        for KeyChange {
            epoch,
            suite,
            client,
            server,
        } in self.hs.take_keys()
        {
            let (tx, rx) = match self.side {
                Side::Client => (client, server),
                Side::Server => (server, client),
            };
            let i = epoch as usize;
            if i == 2 {
                // 1-RTT keys replace a client's 0-RTT ones.
                self.early_tx = false;
            }
            self.spaces[i].tx = Some(DirectionalKeys::from_secret(suite, tx));
            if i == 2 && self.side == Side::Server {
                self.pending_rx_1rtt = Some(rx);
            } else {
                self.spaces[i].rx = Some(DirectionalKeys::from_secret(suite, rx));
            }
        }
        // 1-RTT carries the server's session tickets once the handshake completes.
        for (i, epoch) in [Epoch::Initial, Epoch::Handshake, Epoch::OneRtt]
            .into_iter()
            .enumerate()
        {
            let out = self.hs.take_outgoing(epoch);
            if out.is_empty() {
                continue;
            }
            let space = &mut self.spaces[i];
            let start = space.crypto_out.len() as u64;
            space.crypto_out.extend_from_slice(&out);
            space.crypto_pending.insert(start..start + out.len() as u64);
        }
        if self.side == Side::Server
            && self.early_app
            && self.state == State::Handshaking
            && self.spaces[2].tx.is_some()
            && !self.connected_sent
        {
            // Early data accepted and the flight written: the application may answer
            // now (0.5-RTT), a round trip before the client's Finished.
            self.connected_sent = true;
            self.events.push_back(Event::Connected);
        }
    }

    pub(super) fn on_handshake_complete(&mut self, now: Instant) -> Result<(), ConnectionError> {
        let peer = self
            .hs
            .peer_params()
            .cloned()
            .ok_or(ConnectionError::TransportParameter(
                "peer sent no transport parameters",
            ))?;
        match self.side {
            Side::Client => {
                // The server's parameters must echo the CIDs this client saw on the wire
                // (RFC 9000 §7.3): otherwise an attacker rewrote the Initial exchange.
                if peer.original_destination_cid != Some(self.orig_dcid) {
                    return Err(ConnectionError::TransportParameter(
                        "original_destination_connection_id does not match",
                    ));
                }
                if peer.initial_source_cid != self.server_initial_scid {
                    return Err(ConnectionError::TransportParameter(
                        "initial_source_connection_id does not match",
                    ));
                }
                if peer.retry_source_cid != self.retry_scid {
                    return Err(ConnectionError::TransportParameter(
                        "retry_source_connection_id does not match",
                    ));
                }
                self.peer_reset_token = peer.stateless_reset_token;
            }
            Side::Server => {
                if peer.initial_source_cid != Some(self.client_initial_scid) {
                    return Err(ConnectionError::TransportParameter(
                        "initial_source_connection_id does not match",
                    ));
                }
                if peer.original_destination_cid.is_some()
                    || peer.retry_source_cid.is_some()
                    || peer.stateless_reset_token.is_some()
                {
                    return Err(ConnectionError::TransportParameter(
                        "client sent a server-only parameter",
                    ));
                }
                if let Some(rx) = self.pending_rx_1rtt.take() {
                    let suite = self.hs.suite().expect("complete");
                    self.spaces[2].rx = Some(DirectionalKeys::from_secret(suite, rx));
                }
                self.handshake_done_pending = true;
                self.address_token_wanted = true;
            }
        }
        self.peer_max_ack_delay = Duration::from_millis(peer.max_ack_delay_ms);
        self.peer_ack_delay_exponent = peer.ack_delay_exponent;
        // The peer says the largest datagram it will take: discovery stops there.
        self.path
            .cap_mtu(usize::try_from(peer.max_udp_payload_size).unwrap_or(usize::MAX));
        self.peer_cid_limit = peer.active_connection_id_limit.min(8) as usize;
        // A server answering early data applied the client's limits already (and may
        // have been granted more since); a client that sent early data under remembered
        // limits now has the server's own.
        if self.side == Side::Client || !self.peer_limits_set {
            self.apply_peer_limits(&peer);
        }
        self.after_refused_early()?;
        self.end_early_rx();
        self.path.peer_cids.push_back(path::PeerCid {
            seq: 0,
            cid: self.remote_cid,
            reset_token: peer.stateless_reset_token.unwrap_or_default(),
        });
        let ours = self.local_params.max_idle_timeout_ms;
        let theirs = peer.max_idle_timeout_ms;
        let idle = match (ours, theirs) {
            (0, 0) => None,
            (0, t) | (t, 0) => Some(t),
            (a, b) => Some(a.min(b)),
        };
        self.idle_timeout = idle.map(Duration::from_millis);
        self.timers
            .set_or_clear(Timer::Idle, self.idle_timeout.map(|d| now + d));
        self.timers.clear(Timer::Handshake);
        self.state = State::Established;
        self.tx_phase_acked = true;
        self.qlog_handshake(now);
        if !self.connected_sent {
            self.connected_sent = true;
            self.events.push_back(Event::Connected);
        }
        if self.side == Side::Server {
            // The server confirms at completion (RFC 9001 §4.1.2).
            self.confirm(now);
        }
        Ok(())
    }

    pub(super) fn confirm(&mut self, now: Instant) {
        self.confirmed = true;
        self.path.start_discovery(now);
        self.spaces[0].discard();
        self.spaces[1].discard();
        self.events.push_back(Event::HandshakeConfirmed);
    }

    pub(super) fn replay_early(&mut self, now: Instant) {
        if self.early_packets.is_empty() {
            return;
        }
        for mut p in std::mem::take(&mut self.early_packets) {
            let Ok(info) = classify_payload(&p, &self.classifier) else {
                continue;
            };
            // A 0-RTT packet goes back to `handle_packet`, which holds it again while its
            // ClientHello is incomplete, opens it, or counts it as having no keys.
            let zero_rtt = info.kind == stoq_common::classify::PacketKind::ZeroRtt;
            match Self::epoch_of(info.kind) {
                Some(i) if zero_rtt || self.spaces[i].rx.is_some() => {
                    let (remote, len) = (self.remote, p.len());
                    self.handle_packet(now, &mut p, &info, remote, len);
                }
                // Still waiting for its keys.
                Some(i) if !self.spaces[i].discarded => self.early_packets.push(p),
                _ => {}
            }
            if self.is_closed() {
                return;
            }
        }
    }
}
