//! The endpoint's STUN Binding transactions ([`crate::nat::binding`]): started by the
//! application, answered on the endpoint's own socket.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::RngCore;

use super::Endpoint;
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
        let mut txid = [0u8; 12];
        txid[0] = self.config.worker_id;
        self.rng.fill_bytes(&mut txid[1..]);
        self.stun.start(now, server, timeout, txid)
    }

    /// Sends a Binding indication (28 bytes, no answer expected) to `to` through
    /// [`poll_transmit`](Self::poll_transmit): it opens this endpoint's NAT toward `to`, so
    /// that a peer there can reach it (hole punching, `docs/nat.md`). Returns `false` when
    /// 64 punches already wait to be sent.
    pub fn punch(&mut self, to: SocketAddr) -> bool {
        let mut txid = [0u8; 12];
        txid[0] = self.config.worker_id;
        self.rng.fill_bytes(&mut txid[1..]);
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
}
