//! STUN Binding transactions (RFC 8489 §6.2, §6.3): what an endpoint's reflexive address
//! is, as seen by one STUN server, asked on the endpoint's own socket.
//!
//! Sans-IO like the rest of the core: the [`Endpoint`](crate::conn::Endpoint) starts a
//! transaction, sends its requests through `poll_transmit`, hands it the STUN messages
//! the classifier recognises, drives its retransmissions from `handle_timeout` and reports
//! the outcome through `poll_binding`.
//!
//! Every response is hostile until proven otherwise. One is taken only if it comes from
//! the address and port the request went to, carries an outstanding transaction ID, is a
//! Binding success or error, has no comprehension-required attribute a Binding client does
//! not know, and (when it has one) a matching FINGERPRINT. Anything else is dropped and
//! counted, and the transaction goes on. The mapped address a server reports is only
//! reported: nothing is ever sent to it here.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stoq_common::wire::stun::{Class, METHOD_BINDING, Message, Writer, attr};

use super::retransmit::Schedule;
pub use super::retransmit::{INITIAL_RTO, MAX_REQUESTS};

/// Transactions one endpoint runs at once; a further one is refused with
/// [`BindingError::TooManyPending`].
pub const MAX_PENDING: usize = 16;

/// Identifies one Binding transaction of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BindingId(pub(crate) u64);

/// Why a Binding transaction gave no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// No valid response within the timeout.
    #[error("no answer from the STUN server after {requests} request(s)")]
    TimedOut {
        /// Requests sent.
        requests: u8,
    },
    /// The server answered with an error response.
    #[error("the STUN server answered with error {code}")]
    ServerError {
        /// The ERROR-CODE (300 to 699; 0 when the response had none).
        code: u16,
    },
    /// A success response without (XOR-)MAPPED-ADDRESS.
    #[error("the STUN server's answer carries no mapped address")]
    NoAddress,
    /// A success response whose mapped address could not be decoded.
    #[error("the STUN server's mapped address is malformed")]
    BadAddress,
    /// A response with a comprehension-required attribute a Binding client does not know:
    /// the transaction fails (RFC 8489 §6.3.3).
    #[error("the STUN server's answer has an unknown required attribute {0:#06x}")]
    UnknownAttribute(u16),
    /// [`MAX_PENDING`] transactions are already running: wait for one to end.
    #[error("{MAX_PENDING} STUN transactions are already running; wait for one to finish")]
    TooManyPending,
    /// The server's address is unspecified or has port 0: there is nothing to ask.
    #[error("a STUN server address needs an IP and a port (got {0})")]
    BadServer(SocketAddr),
    /// The endpoint stopped (or its worker did) before an answer came.
    #[error("the endpoint stopped before the STUN server answered")]
    Stopped,
}

/// How a Binding transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingOutcome {
    /// The transaction.
    pub id: BindingId,
    /// The STUN server it asked.
    pub server: SocketAddr,
    /// The reflexive address the server saw, or why there is none.
    pub result: Result<SocketAddr, BindingError>,
    /// Requests sent (1 means the first was answered).
    pub requests: u8,
}

/// Counters of an endpoint's STUN traffic.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StunStats {
    /// Binding requests sent, retransmissions included.
    pub requests_sent: u64,
    /// Transactions that gave an address.
    pub succeeded: u64,
    /// Transactions that failed (timed out, error response, bad answer).
    pub failed: u64,
    /// STUN messages dropped: not a response to an outstanding transaction, from another
    /// address than the request went to, or of another method.
    pub unsolicited: u64,
    /// STUN messages dropped as malformed (the codec refused them; a FINGERPRINT that
    /// does not match among them).
    pub malformed: u64,
    /// Binding indications sent to open the NAT toward a peer (hole punching).
    pub punches_sent: u64,
}

#[derive(Debug)]
struct Pending {
    id: BindingId,
    server: SocketAddr,
    txid: [u8; 12],
    when: Schedule,
}

/// Punches waiting to be sent at most (a further one is dropped).
pub const MAX_PUNCHES: usize = 64;

/// An endpoint's Binding transactions, and the punches it sends to open its NAT.
#[derive(Debug, Default)]
pub(crate) struct Bindings {
    pending: Vec<Pending>,
    /// Binding indications to send, each with its transaction ID (hole punching).
    punches: VecDeque<(SocketAddr, [u8; 12])>,
    done: VecDeque<BindingOutcome>,
    next_id: u64,
    pub(crate) stats: StunStats,
}

impl Bindings {
    /// Starts a transaction with `server`, to end by `now + timeout`. `txid` is the
    /// transaction ID: its first byte names the worker that must receive the answer.
    pub(crate) fn start(
        &mut self,
        now: Instant,
        server: SocketAddr,
        timeout: Duration,
        txid: [u8; 12],
    ) -> Result<BindingId, BindingError> {
        if server.ip().is_unspecified() || server.port() == 0 {
            return Err(BindingError::BadServer(server));
        }
        if self.pending.len() >= MAX_PENDING {
            return Err(BindingError::TooManyPending);
        }
        let id = BindingId(self.next_id);
        self.next_id += 1;
        self.pending.push(Pending {
            id,
            server,
            txid,
            when: Schedule::new(now, timeout),
        });
        Ok(id)
    }

    /// Whether nothing runs or waits to be sent.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.punches.is_empty()
    }

    /// Queues a Binding indication to `to`: a datagram whose only purpose is to leave
    /// through this endpoint's NAT toward `to`, so that the NAT lets `to`'s packets in
    /// (hole punching). A STUN indication gets no answer, and a STOQ endpoint counts one
    /// as unsolicited STUN. Returns whether it was queued.
    pub(crate) fn punch(&mut self, to: SocketAddr, txid: [u8; 12]) -> bool {
        if self.punches.len() >= MAX_PUNCHES {
            return false;
        }
        self.punches.push_back((to, txid));
        true
    }

    /// The next request due by `now`, written into `buf`: (server, length).
    pub(crate) fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Option<(SocketAddr, usize)> {
        if let Some((to, txid)) = self.punches.pop_front() {
            let n = Writer::new(buf, Class::Indication, METHOD_BINDING, &txid)
                .and_then(Writer::finish_with_fingerprint)
                .ok()?;
            self.stats.punches_sent += 1;
            return Some((to, n));
        }
        let p = self.pending.iter_mut().find(|p| p.when.due(now))?;
        // A request with FINGERPRINT: STOQ shares its port with STUN (RFC 8489 §7).
        let n = Writer::new(buf, Class::Request, METHOD_BINDING, &p.txid)
            .and_then(Writer::finish_with_fingerprint)
            .ok()?;
        p.when.sent_at(now);
        self.stats.requests_sent += 1;
        Some((p.server, n))
    }

    /// The earliest moment something is due: a request, or a transaction's end.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.when.timeout()).min()
    }

    /// Ends the transactions whose time is up.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].when.deadline <= now {
                let p = self.pending.swap_remove(i);
                let requests = p.when.sent;
                self.finish(&p, Err(BindingError::TimedOut { requests }));
            } else {
                i += 1;
            }
        }
    }

    /// A STUN message from `from` (the classifier said STUN; nothing else is trusted).
    pub(crate) fn handle(&mut self, from: SocketAddr, data: &[u8]) {
        let Ok(m) = Message::parse(data) else {
            self.stats.malformed += 1;
            return;
        };
        let txid = m.transaction_id();
        let Some(i) = self
            .pending
            .iter()
            .position(|p| p.txid == txid && same_address(p.server, from))
        else {
            self.stats.unsolicited += 1;
            return;
        };
        if m.method() != METHOD_BINDING || !matches!(m.class(), Class::Success | Class::Error) {
            self.stats.unsolicited += 1;
            return;
        }
        let result = Self::read_response(&m);
        let p = self.pending.swap_remove(i);
        self.finish(&p, result);
    }

    fn read_response(m: &Message<'_>) -> Result<SocketAddr, BindingError> {
        const KNOWN: [u16; 4] = [
            attr::MAPPED_ADDRESS,
            attr::XOR_MAPPED_ADDRESS,
            attr::ERROR_CODE,
            attr::UNKNOWN_ATTRIBUTES,
        ];
        if let Some(t) = m.unknown_required(&KNOWN) {
            return Err(BindingError::UnknownAttribute(t));
        }
        if m.class() == Class::Error {
            let code = m.error_code().ok().flatten().map_or(0, |(c, _)| c);
            return Err(BindingError::ServerError { code });
        }
        match m.mapped_address() {
            Ok(Some(a)) => Ok(a),
            Ok(None) => Err(BindingError::NoAddress),
            Err(_) => Err(BindingError::BadAddress),
        }
    }

    fn finish(&mut self, p: &Pending, result: Result<SocketAddr, BindingError>) {
        if result.is_ok() {
            self.stats.succeeded += 1;
        } else {
            self.stats.failed += 1;
        }
        self.done.push_back(BindingOutcome {
            id: p.id,
            server: p.server,
            result,
            requests: p.when.sent,
        });
    }

    /// Ends every transaction: the endpoint is going away.
    pub(crate) fn abandon(&mut self) {
        for p in std::mem::take(&mut self.pending) {
            self.finish(&p, Err(BindingError::Stopped));
        }
    }

    /// An ended transaction, once.
    pub(crate) fn poll(&mut self) -> Option<BindingOutcome> {
        self.done.pop_front()
    }
}

/// Whether `from` is `server`, an IPv4 address matching its IPv4-mapped IPv6 form (a
/// dual-stack socket reports IPv4 peers that way).
pub(crate) fn same_address(server: SocketAddr, from: SocketAddr) -> bool {
    server.port() == from.port() && server.ip().to_canonical() == from.ip().to_canonical()
}

#[cfg(test)]
mod tests;
