//! Paths and connection IDs: a peer that moves (NAT rebinding, migration) or a local
//! address that changes, path MTU changes and black holes, CIDs issued to the peer and
//! retired, and the stateless-reset token in force.

use super::error::ConnectionError;
use super::event::Event;
use super::rtt::RttEstimator;
use super::{Connection, State, path};
use rand_core::RngCore;
use std::net::SocketAddr;
use std::time::Instant;
use stoq_common::cid::ConnectionId;

impl Connection {
    /// This side now sends from a new local address (the application moved to a new
    /// socket). The peer learns the new address only from packets that come from it, and
    /// a side with nothing to send (idle, or blocked on flow control waiting for the
    /// peer's MAX_DATA) would never tell it: the peer would go on sending to the address
    /// this side left, and the connection would idle out. So an ack-eliciting PING is
    /// queued; a lost PING is sent again on PTO like any probe (RFC 9000 §9.2, and what
    /// quinn does on rebind).
    pub fn handle_local_address_change(&mut self) {
        if self.state == State::Established {
            self.ping_pending = true;
            self.address_ping = true;
        }
        // What the OS chooses as the source may differ now; ECN is validated per path.
        self.local_ip = None;
        self.ecn.reset();
    }

    /// Sends to the peer at `remote` from now on: another address of the same peer, such
    /// as its relayed address on a TURN server when the direct path has gone silent
    /// (`docs/nat.md`). The new path is validated (PATH_CHALLENGE; a PING goes at once),
    /// its congestion state starts over when the IP differs, and if the peer does not
    /// answer there within about three PTOs the connection returns to the address it
    /// left. Nothing limits what is sent there meanwhile: this side chose the address, so
    /// there is no amplification to guard against. The peer, seeing the connection's
    /// packets come from where it now hears this side, follows as in any migration.
    /// Returns `false` (and does nothing) before the handshake has completed, once
    /// closing, or when `remote` is already the peer's address.
    pub fn switch_remote(&mut self, now: Instant, remote: SocketAddr) -> bool {
        if self.state != State::Established || remote == self.remote {
            return false;
        }
        self.on_peer_address_change(now, remote, 0);
        self.validated = true;
        self.ping_pending = true;
        self.address_ping = true;
        true
    }

    /// The peer's packets now come from `remote` (NAT rebinding or migration): switch to
    /// it, validate it, and limit what is sent there until it answers (RFC 9000 §9).
    pub(super) fn on_peer_address_change(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        datagram: usize,
    ) {
        let previous = self.remote;
        let port_only = previous.ip() == remote.ip();
        self.remote = remote;
        if self.rx_info.local_ip.is_some() {
            self.local_ip = self.rx_info.local_ip;
        }
        // ECN is validated per path (RFC 9000 §13.4.2).
        self.ecn.reset();
        self.validated = false;
        self.rx_bytes = datagram as u64;
        self.tx_bytes = 0;
        if !port_only {
            // A new network path: its capacity and delay are unknown (RFC 9000 §9.4).
            self.cc = self.transport.congestion.build(now, self.path.mtu() as u64);
            self.cc.seed(self.rng.next_u64());
            self.rtt = RttEstimator::default();
            self.first_rtt_sample = None;
            let before = self.max_datagram_size();
            let base = self.path_base_mtu();
            self.path.reset_mtu(base, now);
            self.on_mtu_changed(base, before);
        }
        let mut token = [0u8; 8];
        self.rng.fill_bytes(&mut token);
        let keep_previous = self.path.validation.map_or(previous, |v| v.previous);
        // RFC 9000 §8.2.4: three times the larger of the current PTO and a new path's PTO
        // from kInitialRtt (about 3 s). A shorter timer made back-to-back rebinds revert to
        // an address the peer had closed, where a peer with nothing to send never learned
        // of it and the connection idled out.
        let fresh_path_pto = RttEstimator::default().pto_base();
        let pto = self.pto_period(2).max(self.rtt.pto_base());
        self.path.validation = Some(path::Validation {
            remote,
            previous: keep_previous,
            token,
            deadline: now + 3 * pto.max(fresh_path_pto),
            challenge_pending: true,
            next_challenge: now + pto,
        });
    }

    /// Where a new network path starts: the configured initial size.
    pub(super) fn path_base_mtu(&self) -> usize {
        self.transport.initial_mtu.min(self.mtu)
    }

    /// The path stopped carrying packets of the current size: drop to the base size
    /// (the congestion controller and pacer follow), tell the application, search again.
    pub(super) fn on_black_hole(&mut self, now: Instant) {
        let before = self.max_datagram_size();
        let mtu = self.path.on_black_hole(now);
        self.stats.mtu_black_holes += 1;
        tracing::debug!(mtu, "path MTU black hole: back to the base size");
        self.on_mtu_changed(mtu, before);
    }

    /// The path MTU is now `mtu` (the DATAGRAM size was `before`): the congestion
    /// controller and pacer follow, and the application hears of a new DATAGRAM size.
    pub(super) fn on_mtu_changed(&mut self, mtu: usize, before: Option<usize>) {
        self.qlog_mtu(mtu);
        self.cc.on_mtu(mtu as u64);
        self.pacer.set_mtu(mtu as u64);
        if let Some(d) = self.max_datagram_size()
            && Some(d) != before
        {
            self.events.push_back(Event::DatagramSizeChanged(d));
        }
    }

    /// Issues this side's connection IDs: the endpoint supplies them (they route to this
    /// connection), the connection announces them with NEW_CONNECTION_ID.
    pub(crate) fn cids_wanted(&self) -> usize {
        if !self.confirmed || self.is_closed() {
            return 0;
        }
        let limit = self.peer_cid_limit;
        // The handshake CID (sequence 0) counts against the limit too.
        limit.saturating_sub(1 + self.path.issued.len())
    }

    /// Cheap check whether [`cids_wanted`](Self::cids_wanted) or
    /// [`take_retired_cids`](Self::take_retired_cids) has anything for the endpoint.
    pub(crate) fn cid_service_due(&self) -> bool {
        !self.path.retired_local.is_empty()
            || (self.confirmed && self.path.issued.len() + 1 < self.peer_cid_limit)
    }

    pub(crate) fn issue_cid(&mut self, cid: ConnectionId, reset_token: [u8; 16]) {
        self.path.issue(cid, reset_token);
    }

    /// CIDs the peer retired, for the endpoint to stop routing.
    pub(crate) fn take_retired_cids(&mut self) -> Vec<ConnectionId> {
        std::mem::take(&mut self.path.retired_local)
    }

    /// Moves to a fresh connection ID of the peer's, as a client does before it migrates
    /// to a new address, so the two paths cannot be linked by an observer. Returns false
    /// when the peer has issued no spare CID.
    pub fn rotate_connection_id(&mut self) -> bool {
        match self.path.rotate() {
            Some(cid) => {
                self.remote_cid = cid;
                true
            }
            None => false,
        }
    }

    /// A stateless reset carrying this connection's token arrived. The endpoint detects
    /// resets: their random CIDs never route to a connection.
    pub(crate) fn on_reset(&mut self) {
        if self.is_closed() {
            return;
        }
        self.qlog_closed(None, &ConnectionError::Reset);
        self.error = Some(ConnectionError::Reset);
        self.events.push_back(Event::Lost(ConnectionError::Reset));
        self.state = State::Drained;
    }

    /// The stateless-reset token of the peer CID this side sends to: the one from the
    /// transport parameters for the handshake CID, then that of each NEW_CONNECTION_ID
    /// moved to. `None` before the handshake confirms it.
    pub(crate) fn active_reset_token(&self) -> Option<[u8; 16]> {
        if !self.is_established() {
            return None;
        }
        if self.path.active_seq == 0 {
            self.peer_reset_token
        } else {
            self.path.active_cid().map(|c| c.reset_token)
        }
    }
}
