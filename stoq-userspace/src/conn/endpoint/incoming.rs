//! New clients: a first Initial becomes an [`Incoming`] (after address validation by
//! token or Retry, and the per-prefix and load limits), which the application accepts,
//! refuses, answers with a Retry or ignores.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stoq_common::cid::ConnectionId;
use stoq_common::classify::DropReason;

use super::super::token::{
    TokenError, is_address_token, open_address_token, open_token, reset_token,
};
use super::super::{Connection, DatagramInfo, Side};
use super::{AcceptError, ConnectionHandle, DatagramEvent, Endpoint, RetryError, USED_TOKENS};
use crate::handshake::Handshake;

/// A new client's first Initial, waiting for the application to accept, refuse, retry or
/// ignore it.
#[derive(Debug)]
pub struct Incoming {
    pub(super) remote: SocketAddr,
    pub(super) local_ip: Option<IpAddr>,
    pub(super) dcid: ConnectionId,
    pub(super) scid: ConnectionId,
    pub(super) orig_dcid: ConnectionId,
    pub(super) retry_scid: Option<ConnectionId>,
    pub(super) validated: bool,
}

impl Incoming {
    /// The client's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.remote
    }

    /// Whether the client proved its address with a Retry token.
    pub fn remote_address_validated(&self) -> bool {
        self.validated
    }

    /// The local address the client's Initial arrived at, where the backend reports it.
    pub fn local_ip(&self) -> Option<IpAddr> {
        self.local_ip
    }
}

impl Endpoint {
    pub(super) fn new_client(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        data: &[u8],
        info: &stoq_common::classify::HeaderInfo,
        dcid: ConnectionId,
    ) -> Option<DatagramEvent> {
        let scid = ConnectionId::from_slice(&data[info.scid_off..info.scid_off + info.scid_len])
            .unwrap_or(ConnectionId::EMPTY);
        if dcid.len() < stoq_common::cid::MIN_CID_LEN {
            self.stats.malformed[DropReason::CidLength as usize] += 1;
            return None;
        }
        let token = &data[info.token_off..info.token_off + info.token_len];
        let mut incoming = Incoming {
            remote,
            local_ip: self.rx_info.local_ip,
            dcid,
            scid,
            orig_dcid: dcid,
            retry_scid: None,
            validated: false,
        };
        let under_load = self.under_load();
        // An address token from an earlier connection validates the address; one that
        // does not open counts as none (RFC 9000 §8.1.3), so a Retry may follow.
        let mut token = token;
        if is_address_token(token) {
            let lifetime = self.config.address_token_lifetime.as_millis() as u64;
            let now_ms = self.unix_ms(now);
            match open_address_token(&self.token_keys, token, remote.ip(), now_ms, lifetime) {
                Ok(()) => {
                    self.stats.address_tokens_accepted += 1;
                    incoming.validated = true;
                }
                Err(_) => self.stats.address_tokens_refused += 1,
            }
            token = &[];
        }
        if token.is_empty()
            && !incoming.validated
            && (under_load || self.retried.contains(now, remote, dcid))
        {
            // Answered before the Initial is authenticated: a stateless Retry (one token
            // seal, about 0.5 µs) costs a sixth of deriving the DCID's Initial keys and
            // decrypting 1,200 bytes (`cargo bench --bench flood`), so a flood that
            // reaches userspace drains six times faster. Garbage shaped as an Initial gets
            // a Retry too: smaller than what it sent, so nothing is amplified.
            self.send_retry(now, &incoming);
            return None;
        }
        if !super::super::initial_authenticates(data, info, &dcid) {
            self.stats.unauthenticated_initial += 1;
            return None;
        }
        if self.live >= self.config.max_connections {
            self.refuse_raw(now, remote, self.rx_info.local_ip, dcid, scid);
            return None;
        }
        // Marked used only once the attempt is admitted: a client dropped below for a
        // full table resends the same Initial, token and all.
        let mut token_nonce = None;
        if !token.is_empty() {
            let now_ms = self.unix_ms(now);
            let lifetime = self.config.token_lifetime.as_millis() as u64;
            match open_token(&self.token_keys, token, &remote, now_ms, lifetime) {
                Ok((odcid, nonce)) => {
                    if self.used_tokens.contains(&nonce) {
                        self.stats.token_reused += 1;
                        return None;
                    }
                    token_nonce = Some(nonce);
                    incoming.orig_dcid = odcid;
                    incoming.retry_scid = Some(dcid);
                    incoming.validated = true;
                }
                Err(TokenError::Expired) => {
                    self.stats.expired_token += 1;
                    // The token came from a Retry of ours, and a client follows one Retry
                    // per connection (RFC 9000 §17.2.5.2): another would leave it waiting
                    // out its idle timeout. Refused, it learns at once, with a typed error
                    // it can act on (connect again).
                    self.refuse_raw(now, remote, self.rx_info.local_ip, dcid, scid);
                    return None;
                }
                Err(_) => {
                    self.stats.invalid_token += 1;
                    return None;
                }
            }
        }
        if under_load
            && self
                .prefixes
                .count(self.config.source_prefix.key(remote.ip()))
                >= self.config.max_handshakes_per_prefix
        {
            self.stats.prefix_limited += 1;
            return None;
        }
        if self.incoming.len() >= self.config.max_incoming {
            self.stats.incoming_full += 1;
            return None;
        }
        if let Some(nonce) = token_nonce {
            self.used_tokens.insert(nonce);
            self.used_order.push_back(nonce);
            if self.used_order.len() > USED_TOKENS
                && let Some(old) = self.used_order.pop_front()
            {
                self.used_tokens.remove(&old);
            }
        }
        self.incoming
            .insert(dcid, vec![(self.rx_info.ecn, data.to_vec())]);
        Some(DatagramEvent::Incoming(incoming))
    }

    /// Accepts a new client: the connection starts and its first datagrams are processed.
    ///
    /// # Errors
    /// [`AcceptError`] without a server configuration or at the connection limit.
    pub fn accept(
        &mut self,
        incoming: Incoming,
        now: Instant,
    ) -> Result<ConnectionHandle, AcceptError> {
        let datagrams = self.incoming.remove(&incoming.dcid).unwrap_or_default();
        let Some(server) = self.server.clone() else {
            return Err(AcceptError::NotAServer);
        };
        if self.live >= self.config.max_connections {
            self.refuse_incoming(now, &incoming);
            return Err(AcceptError::ConnectionLimit);
        }
        if self.mem_total > self.config.max_memory {
            // Reads through `connection_mut` are seen at the next I/O event: refresh every
            // sample before refusing (at most once a millisecond, so a flood of Initials
            // cannot make each refusal walk every connection).
            if self
                .mem_resampled
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_millis(1))
            {
                self.mem_resampled = Some(now);
                for i in 0..self.conns.len() {
                    self.account(ConnectionHandle(i));
                }
            }
            if self.mem_total > self.config.max_memory {
                self.refuse_incoming(now, &incoming);
                return Err(AcceptError::MemoryLimit);
            }
        }
        let mut s = self.setup(Side::Server, now, incoming.remote);
        s.local_ip = incoming.local_ip;
        s.remote_cid = incoming.scid;
        s.initial_dcid = incoming.dcid;
        s.orig_dcid = incoming.orig_dcid;
        s.retry_scid = incoming.retry_scid;
        s.validated = incoming.validated;
        let token = reset_token(self.reset_key_for(&s.local_cid), &s.local_cid);
        let mut params = server.params.clone();
        params.original_destination_cid = Some(incoming.orig_dcid);
        params.initial_source_cid = Some(s.local_cid);
        params.retry_source_cid = incoming.retry_scid;
        params.stateless_reset_token = Some(token);
        let hs = Handshake::server(server, params.clone(), self.ticket_keys());
        let local = s.local_cid;
        let h = self.insert(Connection::new(s, hs, params));
        self.prefixes
            .add(h.0, self.config.source_prefix.key(incoming.remote.ip()));
        self.route(local, h);
        self.route(incoming.dcid, h);
        self.stats.accepted += 1;
        let conn = self.conns[h.0].as_mut().expect("just inserted");
        for (ecn, mut d) in datagrams {
            let info = DatagramInfo {
                local_ip: incoming.local_ip,
                ecn,
            };
            conn.receive(now, incoming.remote, info, &mut d, None);
        }
        if conn.hs.awaits_signature() {
            self.wait_for_signature(h.0);
        }
        Ok(h)
    }

    /// Refuses a new client with CONNECTION_REFUSED, keeping no state.
    pub fn refuse(&mut self, incoming: Incoming, now: Instant) {
        self.incoming.remove(&incoming.dcid);
        self.refuse_incoming(now, &incoming);
    }

    /// Answers a new client with a Retry, keeping no state.
    ///
    /// # Errors
    /// [`RetryError::AlreadyValidated`] if it already came back with a token.
    pub fn retry(&mut self, incoming: Incoming, now: Instant) -> Result<(), RetryError> {
        self.incoming.remove(&incoming.dcid);
        if incoming.validated {
            return Err(RetryError::AlreadyValidated);
        }
        self.send_retry(now, &incoming);
        Ok(())
    }

    /// Drops a new client's attempt silently.
    pub fn ignore(&mut self, incoming: Incoming) {
        self.incoming.remove(&incoming.dcid);
    }
}
