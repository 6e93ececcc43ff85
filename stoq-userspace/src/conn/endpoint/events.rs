//! What a datagram did at an endpoint ([`DatagramEvent`]), why an endpoint call failed
//! ([`AcceptError`], [`RetryError`], [`ConnectError`]), and its counters
//! ([`EndpointStats`]).

use stoq_common::classify::DropReason;

use super::super::TransportTotals;
use super::{ConnectionHandle, Incoming};
use crate::handshake;

/// What a datagram did at the endpoint.
#[derive(Debug)]
pub enum DatagramEvent {
    /// It went to an existing connection.
    Connection(ConnectionHandle),
    /// A new client: decide with [`Endpoint::accept`](super::Endpoint::accept), [`Endpoint::refuse`](super::Endpoint::refuse),
    /// [`Endpoint::retry`](super::Endpoint::retry) or [`Endpoint::ignore`](super::Endpoint::ignore).
    Incoming(Incoming),
}

/// Why [`Endpoint::accept`](super::Endpoint::accept) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// This endpoint has no server configuration.
    #[error(
        "endpoint has no server configuration: create it with Endpoint::new(config, Some(server_config))"
    )]
    NotAServer,
    /// `max_connections` reached; the client was refused.
    #[error("connection limit reached (max_connections); the client was refused")]
    ConnectionLimit,
    /// The connections' buffered data exceeds `max_memory`; the client was refused.
    #[error(
        "memory limit reached: connections hold more than max_memory bytes; the client was refused (raise EndpointConfig::max_memory or lower the windows)"
    )]
    MemoryLimit,
}

/// Why [`Endpoint::retry`](super::Endpoint::retry) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetryError {
    /// The client already answered a Retry; a second one would loop. Accept or refuse it.
    #[error("client already validated its address with a Retry token; accept or refuse it")]
    AlreadyValidated,
}

/// Why [`Endpoint::connect`](super::Endpoint::connect) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The client configuration offers no cipher suite.
    #[error("client config offers no cipher suite: set ClientConfig::suites")]
    NoSuites,
    /// The client configuration accepts no signature algorithm.
    #[error("client config accepts no signature algorithm: set ClientConfig::sig_algs")]
    NoSignatureAlgorithms,
    /// A configured suite is not available on this CPU.
    #[error("cipher suite {0:?} is not available on this CPU: remove it from ClientConfig::suites")]
    SuiteUnavailable(crate::crypto::CipherSuite),
    /// `max_connections` reached.
    #[error("connection limit reached (max_connections)")]
    ConnectionLimit,
    /// The server name is empty or too long.
    #[error("server name must be 1 to 255 bytes")]
    BadServerName,
    /// The ALPN list is malformed.
    #[error("ClientConfig::alpn: {0}")]
    BadAlpn(&'static str),
}

/// Endpoint counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams received.
    pub rx_datagrams: u64,
    /// Datagrams dropped because their header did not parse, by [`DropReason`] index.
    pub malformed: [u64; DropReason::ALL.len()],
    /// Datagrams for an unknown connection that needed no answer.
    pub unknown_cid: u64,
    /// Initial packets from unknown clients that did not authenticate under the Initial
    /// keys of their own DCID (garbage, or tampered in flight).
    pub unauthenticated_initial: u64,
    /// Initial packets whose token did not authenticate.
    pub invalid_token: u64,
    /// Initial packets whose token had expired.
    pub expired_token: u64,
    /// Initial packets replaying a token already used.
    pub token_reused: u64,
    /// Address tokens sent in NEW_TOKEN after handshakes.
    pub address_tokens_sent: u64,
    /// New clients admitted as validated by an address token (no Retry needed).
    pub address_tokens_accepted: u64,
    /// Address tokens that did not open (another address, forged, another cluster's) or
    /// had expired: treated as no token.
    pub address_tokens_refused: u64,
    /// Connection attempts dropped because `max_incoming` were waiting.
    pub incoming_full: u64,
    /// Validated connection attempts dropped under load because their source prefix held
    /// `max_handshakes_per_prefix` handshakes.
    pub prefix_limited: u64,
    /// Retry packets sent.
    pub retries_sent: u64,
    /// Version Negotiation packets sent.
    pub version_negotiations_sent: u64,
    /// Stateless resets sent.
    pub resets_sent: u64,
    /// Stateless resets received for a connection of ours.
    pub resets_received: u64,
    /// Connection attempts refused.
    pub refused: u64,
    /// Stateless responses not sent because the queue was full.
    pub responses_dropped: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Handshakes that completed.
    pub handshakes_completed: u64,
    /// Of those, handshakes resumed from a session ticket.
    pub handshakes_resumed: u64,
    /// Completed handshakes whose ticket was refused (a full handshake instead), by
    /// [`TicketRefusal`](crate::handshake::TicketRefusal) index.
    pub tickets_refused: [u64; handshake::TicketRefusal::ALL.len()],
    /// Handshakes whose early data (0-RTT) was accepted.
    pub early_data_accepted: u64,
    /// Handshakes whose early data was refused, by
    /// [`EarlyDataRefusal`](crate::handshake::EarlyDataRefusal) index (a client counts
    /// the server's refusals as `declined`).
    pub early_data_refused: [u64; handshake::EarlyDataRefusal::ALL.len()],
    /// Signatures this server made for its CertificateVerify (full handshakes): one per
    /// handshake signed alone, one per batch.
    pub signatures: u64,
    /// Handshakes authenticated by a batch signature shared with others (see
    /// [`handshake::batch`]); `signatures` counts each batch once.
    pub batch_signed: u64,
    /// The most handshakes one signature covered.
    pub largest_batch: u64,
    /// Handshakes that failed (a protocol or authentication error, a refusal or reset by
    /// the peer, or a local close before completion).
    pub handshakes_failed: u64,
    /// Handshakes that timed out (the handshake timeout on a server, the idle timeout on
    /// a client).
    pub handshakes_timed_out: u64,
    /// Stream data held by all connections (send buffers and reassembly), bytes.
    pub memory: u64,
    /// The transport counters of the connections that have ended, summed (the live ones
    /// are added by [`Endpoint::transport_totals`](super::Endpoint::transport_totals)).
    pub closed: TransportTotals,
    /// STUN Binding transactions and the STUN messages received.
    pub stun: crate::nat::StunStats,
    /// The TURN relay's traffic (all zero without an allocation).
    pub turn: crate::nat::turn::TurnStats,
}
