//! The endpoint's STUN traffic: Binding transactions ([`crate::nat::binding`]), punches,
//! and the TURN allocation ([`crate::nat::turn`]), all on the endpoint's own socket.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::RngCore;

use super::{Endpoint, Transmit};
use crate::nat::turn::{Turn, TurnCredentials, TurnError, TurnEvent};
use crate::nat::{BindingError, BindingId, BindingOutcome};

impl Endpoint {
    /// Asks the STUN server at `server` for this endpoint's reflexive address: the address
    /// and port it sees this endpoint's datagrams come from (a NAT's public mapping). The
    /// request goes out through [`poll_transmit`](Self::poll_transmit), is retransmitted
    /// with a doubling timeout from 500 ms (at most 7 requests, RFC 8489 §6.2.1), and the
    /// transaction ends within `timeout`; [`poll_binding`](Self::poll_binding) reports it.
    ///
    /// The transaction ID's first byte is this endpoint's worker id, so a multi-worker
    /// engine steers the answer to this endpoint.
    ///
    /// # Errors
    /// [`BindingError::BadServer`] for an unspecified address or port 0;
    /// [`BindingError::TooManyPending`] when 16 transactions are running.
    pub fn stun_binding(
        &mut self,
        now: Instant,
        server: SocketAddr,
        timeout: Duration,
    ) -> Result<BindingId, BindingError> {
        let txid = self.txid();
        self.stun.start(now, server, timeout, txid)
    }

    /// Sends a Binding indication (28 bytes, no answer expected) to `to` through
    /// [`poll_transmit`](Self::poll_transmit): it opens this endpoint's NAT toward `to`, so
    /// that a peer there can reach it (hole punching, `docs/nat.md`). Returns `false` when
    /// 64 punches already wait to be sent.
    pub fn punch(&mut self, to: SocketAddr) -> bool {
        let txid = self.txid();
        self.stun.punch(to, txid)
    }

    /// A Binding transaction that ended (answered, failed or timed out), once.
    pub fn poll_binding(&mut self) -> Option<BindingOutcome> {
        self.stun.poll()
    }

    /// Ends every running Binding transaction with [`BindingError::Stopped`] (the
    /// endpoint is being shut down).
    pub fn abandon_bindings(&mut self) {
        self.stun.abandon();
    }

    /// Allocates a relayed address on the TURN server `server` with long-term
    /// `credentials` (RFC 8656; one allocation per endpoint): requests go out through
    /// [`poll_transmit`](Self::poll_transmit), and [`poll_turn`](Self::poll_turn) reports
    /// [`TurnEvent::Allocated`] with the address peers can send to. The allocation is
    /// refreshed for as long as the endpoint lives. Datagrams that arrive through it are
    /// handled as coming from the peer, and what is sent to such a peer goes back through
    /// the relay.
    ///
    /// # Errors
    /// [`TurnError::AlreadyAllocating`], [`TurnError::BadServer`].
    pub fn turn_allocate(
        &mut self,
        now: Instant,
        server: SocketAddr,
        credentials: TurnCredentials,
    ) -> Result<(), TurnError> {
        if self
            .turn
            .as_ref()
            .is_some_and(|t| t.relayed().is_some() || t.poll_timeout().is_some())
        {
            return Err(TurnError::AlreadyAllocating);
        }
        let txid = self.txid();
        let cid_len = self.config.cid_layout.len() as u8;
        self.turn = Some(Turn::new(now, server, credentials, cid_len, txid)?);
        Ok(())
    }

    /// Lets datagrams from `peer`'s IP address through the relay (a TURN permission,
    /// refreshed for as long as the allocation lives).
    ///
    /// # Errors
    /// [`TurnError::NotAllocated`], [`TurnError::TooManyPermissions`].
    pub fn turn_permit(&mut self, now: Instant, peer: std::net::IpAddr) -> Result<(), TurnError> {
        let txid = self.txid();
        self.turn
            .as_mut()
            .ok_or(TurnError::NotAllocated)?
            .permit(now, peer, txid)
    }

    /// The TURN server this endpoint reaches `peer` through: its allocation relays for that
    /// peer address (a peer heard through the relay, or given a channel).
    pub fn turn_relay_for(&self, peer: SocketAddr) -> Option<SocketAddr> {
        self.turn
            .as_ref()
            .filter(|t| t.relays_to(peer))
            .map(Turn::server)
    }

    /// The relayed address, once allocated.
    pub fn turn_relayed_address(&self) -> Option<SocketAddr> {
        self.turn.as_ref().and_then(Turn::relayed)
    }

    /// What happened to the TURN allocation, once.
    pub fn poll_turn(&mut self) -> Option<TurnEvent> {
        self.turn.as_mut().and_then(Turn::poll_event)
    }

    /// A transaction ID whose first byte is this worker's id.
    fn txid(&mut self) -> [u8; 12] {
        make_txid(&mut self.rng, self.config.worker_id)
    }

    /// A STUN message: to the TURN client when it comes from the relay (a relayed
    /// datagram comes back, with its peer), else to the Binding transactions.
    pub(super) fn handle_stun(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        data: &[u8],
    ) -> Option<(SocketAddr, std::ops::Range<usize>)> {
        if self.is_relay(remote) {
            let (rng, worker) = (&mut self.rng, self.config.worker_id);
            let turn = self.turn.as_mut()?;
            return turn.handle(now, data, || make_txid(rng, worker));
        }
        self.stun.handle(remote, data);
        None
    }

    /// Whether `remote` is the TURN relay this endpoint allocated on.
    fn is_relay(&self, remote: SocketAddr) -> bool {
        self.turn
            .as_ref()
            .is_some_and(|t| crate::nat::binding::same_address(t.server(), remote))
    }

    /// Whether `data` is ChannelData: its first byte is in 0x40-0x4F (where STOQ's short
    /// headers also start) and it comes from the relay, which no STOQ peer sends from.
    pub(super) fn is_channel_data(&self, remote: SocketAddr, data: &[u8]) -> bool {
        data.first().is_some_and(|b| b & 0xf0 == 0x40) && self.is_relay(remote)
    }

    /// Wraps a connection's datagram to a relayed peer for the relay (ChannelData or a Send
    /// indication).
    pub(super) fn relay(&mut self, now: Instant, t: Transmit, buf: &mut [u8]) -> Option<Transmit> {
        let txid = self.txid();
        let turn = self.turn.as_mut()?;
        let n = turn.wrap(now, buf, t.size, t.destination, txid)?;
        Some(Transmit::new(turn.server(), n))
    }

    /// A STUN or TURN request that is due (rare and tiny: first in line).
    pub(super) fn poll_stun(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if let Some(t) = self.turn.as_mut()
            && let Some(n) = t.poll_transmit(now, buf)
        {
            return Some(Transmit::new(t.server(), n));
        }
        if self.stun.is_empty() {
            return None;
        }
        let (to, n) = self.stun.poll_transmit(now, buf)?;
        Some(Transmit::new(to, n))
    }

    /// The earliest STUN or TURN timer.
    pub(super) fn stun_timeout(&self) -> Option<Instant> {
        let turn = self.turn.as_ref().and_then(Turn::poll_timeout);
        match (self.stun.poll_timeout(), turn) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires the STUN and TURN timers that are due.
    pub(super) fn stun_handle_timeout(&mut self, now: Instant) {
        self.stun.handle_timeout(now);
        let (rng, worker) = (&mut self.rng, self.config.worker_id);
        if let Some(t) = self.turn.as_mut()
            && t.poll_timeout().is_some_and(|at| at <= now)
        {
            t.handle_timeout(now, || make_txid(rng, worker));
        }
    }
}

/// A transaction ID: the worker's id, then 11 random bytes.
fn make_txid(rng: &mut rand_chacha::ChaCha20Rng, worker: u8) -> [u8; 12] {
    let mut txid = [0u8; 12];
    txid[0] = worker;
    rng.fill_bytes(&mut txid[1..]);
    txid
}
