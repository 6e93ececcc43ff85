//! An endpoint's settings: [`EndpointConfig`], when it asks for a Retry
//! ([`RetryPolicy`]), and why a setting is refused ([`ConfigError`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use stoq_common::cid::{CidError, CidLayout};
use stoq_common::wire::stoq::MIN_INITIAL_DATAGRAM;

use super::super::TransportConfig;
use super::super::admission::SourcePrefix;
use super::super::keys::ClusterKeys;

/// Handshakes in progress at which a server is under load by default: from there on a
/// new client proves its address with a Retry first (see [`RetryPolicy`]).
pub const DEFAULT_RETRY_THRESHOLD: usize = 64;
/// Handshakes one source prefix may hold under load by default: three quarters of the
/// default [`EndpointConfig::max_incoming`], so one network can never take every one of a
/// worker's handshake slots (a quarter stays for everyone else), while one busy host, NAT
/// or proxy opening hundreds of connections at once is not slowed. (A client dropped at
/// the limit waits for its Initial's retransmission, a second or more: a tighter default
/// made 1,000 simultaneous connections from one address miss their 30 s idle timeout.)
pub const DEFAULT_MAX_HANDSHAKES_PER_PREFIX: usize = 768;

/// When the server demands address validation with a Retry before it keeps any state.
///
/// While it does, the server is *under load*: it keeps no state and computes no signature
/// for a client that has not proved its address, and a source prefix may hold at most
/// [`EndpointConfig::max_handshakes_per_prefix`] handshakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Never send Retry on its own (the application can still call [`Endpoint::retry`](super::Endpoint::retry));
    /// the server is never under load, so per-prefix limits are off too.
    Never,
    /// Validate every new client first (always under load).
    Always,
    /// Validate new clients while at least this many connections are still handshaking.
    /// The default is `WhenHandshakingAbove(`[`DEFAULT_RETRY_THRESHOLD`]`)`: spoofed
    /// Initials can hold at most that many half-open handshakes (each for
    /// [`TransportConfig::handshake_timeout`]); past it each costs one stateless Retry.
    WhenHandshakingAbove(usize),
}

/// Endpoint settings.
///
/// ```
/// let mut c = stoq::conn::EndpointConfig::new(); // seeded from the OS
/// c.max_udp_payload = 1452; // a 1500-byte MTU path
/// c.max_connections = 10_000;
/// assert!(c.validate().is_ok());
/// c.max_udp_payload = 900;
/// assert!(c.validate().is_err(), "QUIC paths carry at least 1200 bytes");
/// ```
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Layout of the CIDs this endpoint issues (must match the XDP program's).
    pub cid_layout: CidLayout,
    /// This server's id inside its CIDs.
    pub server_id: u64,
    /// This worker's id inside its CIDs.
    pub worker_id: u8,
    /// Largest UDP payload sent (at least 1200): the ceiling path MTU discovery probes up
    /// to from [`TransportConfig::initial_mtu`]. Set it to the interface MTU minus the IP
    /// and UDP headers (1452 for IPv6 on a 1500-byte link, the default).
    pub max_udp_payload: usize,
    /// Most connections at once.
    pub max_connections: usize,
    /// Most connection attempts waiting for the application's decision.
    pub max_incoming: usize,
    /// When to demand a Retry (the server is then under load).
    pub retry: RetryPolicy,
    /// Most handshakes in progress from one source prefix while under load; a validated
    /// client from a prefix that holds this many is dropped (its Initial is resent, and
    /// admitted once a slot frees) and counted in [`EndpointStats::prefix_limited`](super::EndpointStats::prefix_limited).
    pub max_handshakes_per_prefix: usize,
    /// How source addresses are grouped into prefixes (IPv4 /24 and IPv6 /64 by default).
    pub source_prefix: SourcePrefix,
    /// How long a Retry token stays valid (30 s by default: as long as a client keeps
    /// resending an Initial that a full server drops before its idle timeout; a client
    /// whose token expired is refused, since it cannot follow a second Retry).
    pub token_lifetime: Duration,
    /// How long an address token sent in NEW_TOKEN after a handshake stays valid (one day
    /// by default; zero sends none): a client that comes back from the same IP address
    /// within it is admitted without a Retry even under load.
    pub address_token_lifetime: Duration,
    /// Secrets shared by every server of a cluster (stateless-reset and token keys, by
    /// generation): a server restarted, or another one, can reset this one's connections
    /// and accept its tokens. `None`: random per endpoint, good only until it restarts.
    pub cluster_keys: Option<Arc<ClusterKeys>>,
    /// Seed of the endpoint's CSPRNG. [`EndpointConfig::new`] draws it from the OS; tests
    /// and simulations fix it to replay exactly.
    pub rng_seed: [u8; 32],
    /// A moment and the Unix time then, for certificate validity checks.
    pub unix_time_at: (Instant, u64),
    /// Transport policy for every connection: congestion control, buffers, keep-alive,
    /// ACK frequency, MTU discovery.
    pub transport: Arc<TransportConfig>,
    /// Most bytes of stream data all connections together may hold (send buffers and
    /// receive reassembly). Above it, new clients are refused with
    /// [`AcceptError::MemoryLimit`](super::AcceptError::MemoryLimit); established connections are bounded by their own
    /// windows. [`EndpointConfig::new`] sets half the machine's memory.
    pub max_memory: u64,
}

impl EndpointConfig {
    /// Defaults around the inputs the core never reads itself: the seed of the endpoint's
    /// CSPRNG, a moment with the Unix time then (certificate validity), and the memory
    /// limit. [`EndpointConfig::new`] reads them from the OS; tests and simulations give
    /// fixed ones.
    pub fn with_inputs(rng_seed: [u8; 32], unix_time_at: (Instant, u64), max_memory: u64) -> Self {
        Self {
            cid_layout: CidLayout::DEFAULT,
            server_id: 0,
            worker_id: 0,
            max_udp_payload: 1452,
            max_connections: 100_000,
            max_incoming: 1024,
            retry: RetryPolicy::WhenHandshakingAbove(DEFAULT_RETRY_THRESHOLD),
            max_handshakes_per_prefix: DEFAULT_MAX_HANDSHAKES_PER_PREFIX,
            source_prefix: SourcePrefix::DEFAULT,
            token_lifetime: Duration::from_secs(30),
            address_token_lifetime: Duration::from_secs(24 * 3600),
            cluster_keys: None,
            rng_seed,
            unix_time_at,
            transport: Arc::new(TransportConfig::default()),
            max_memory,
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the setting and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_udp_payload < MIN_INITIAL_DATAGRAM || self.max_udp_payload > 65_527 {
            return Err(ConfigError::MaxUdpPayload(self.max_udp_payload));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::NoConnections);
        }
        if self.max_handshakes_per_prefix == 0 {
            return Err(ConfigError::Admission(
                "max_handshakes_per_prefix is 0: no client could connect under load",
            ));
        }
        if !self.source_prefix.is_valid() {
            return Err(ConfigError::Admission(
                "source_prefix lengths must be 1..=32 (IPv4) and 1..=128 (IPv6)",
            ));
        }
        // Building a CID checks the server id against the layout.
        self.cid_layout
            .build(
                0,
                self.server_id,
                self.worker_id,
                &vec![0; self.cid_layout.nonce_len()],
            )
            .map_err(ConfigError::Cid)?;
        if let Some(t) = self
            .transport
            .extension_frames
            .iter()
            .find(|t| !crate::frame::EXTENSION_TYPES.contains(t))
        {
            return Err(ConfigError::ExtensionFrameType(*t));
        }
        let t = &self.transport;
        if t.send_buffer < 4096 {
            return Err(ConfigError::Transport(
                "send_buffer below 4096 bytes: writes could never make progress",
            ));
        }
        if t.send_backlog < 16_384 {
            return Err(ConfigError::Transport(
                "send_backlog below 16384 bytes: a bulk writer could not keep a packet ready \
                 (raise it; u64::MAX turns the limit off)",
            ));
        }
        if t.handshake_timeout.is_zero() {
            return Err(ConfigError::Transport(
                "handshake_timeout is zero: no handshake could complete (10 s is the default)",
            ));
        }
        if t.ack_eliciting_threshold == 0 || t.ack_thinning == 0 {
            return Err(ConfigError::Transport(
                "ack_eliciting_threshold and ack_thinning must be at least 1",
            ));
        }
        if !(t.pacing_gain > 0.0 && t.pacing_gain <= 4.0) {
            return Err(ConfigError::Transport(
                "pacing_gain must be in (0, 4]: it multiplies the controller's rate",
            ));
        }
        if t.initial_mtu < MIN_INITIAL_DATAGRAM || t.initial_mtu > self.max_udp_payload {
            return Err(ConfigError::Transport(
                "initial_mtu must lie between 1200 and max_udp_payload: paths start at it and \
                 probe up to max_udp_payload",
            ));
        }
        Ok(())
    }
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// A bad [`EndpointConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The server's ALPN list is malformed.
    #[error("ServerConfig::alpn: {0}")]
    Alpn(&'static str),
    /// The server's session-ticket settings are out of range.
    #[error("ServerConfig::tickets: {0}")]
    Tickets(&'static str),
    /// The server's early-data settings are out of range.
    #[error("ServerConfig::early_data: {0}")]
    EarlyData(&'static str),
    /// `max_udp_payload` outside 1200..=65527.
    #[error(
        "max_udp_payload {0} is outside 1200..=65527: QUIC needs paths of at least 1200 bytes; set it to the path MTU minus IP and UDP headers"
    )]
    MaxUdpPayload(usize),
    /// `max_connections` is zero.
    #[error("max_connections is 0: allow at least one connection")]
    NoConnections,
    /// The CID layout or server id is invalid.
    #[error("connection-ID settings: {0}")]
    Cid(CidError),
    /// A registered extension frame type outside STOQ's extension range.
    #[error(
        "extension frame type {0:#x} is outside 0x5f00..=0x5fff: register types from stoq::frame::EXTENSION_TYPES"
    )]
    ExtensionFrameType(u64),
    /// A transport setting out of range.
    #[error("transport setting {0}")]
    Transport(&'static str),
    /// An admission setting (per-prefix handshake limit) out of range.
    #[error("admission setting {0}")]
    Admission(&'static str),
    /// Server settings given to a client endpoint.
    #[error("this endpoint is a client: it has no server configuration to replace")]
    NotAServer,
}
