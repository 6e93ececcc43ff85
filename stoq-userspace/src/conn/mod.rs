//! The sans-IO connection and endpoint.
//!
//! [`Endpoint`] routes datagrams by connection ID, answers what needs no connection state
//! (Retry, Version Negotiation, stateless reset, refusals) and owns its [`Connection`]s.
//! Neither reads a clock, touches a socket or asks the OS for randomness: `now` is passed
//! in, datagrams go in and out as byte buffers, and randomness comes from a ChaCha20 RNG
//! seeded by the caller.
//!
//! # Polling order
//! After feeding input (`handle_datagram`, `handle_timeout`, or an API call such as
//! [`Connection::send_datagram`]), a driver:
//! 1. drains [`Endpoint::poll_transmit`] until it returns `None`, sending each datagram;
//! 2. drains [`Endpoint::poll_event`];
//! 3. arms a timer for [`Endpoint::poll_timeout`] and calls `handle_timeout` when it fires.
//!
//! # What a connection does
//! The handshake over Initial and Handshake packets (CRYPTO frames with offsets, so a
//! message spans datagrams); streams with connection- and stream-level flow control,
//! stream limits and an urgency scheduler ([`streams`]); DATAGRAMs, partially reliable
//! messages and extension frames; RFC 9002 ACKs, loss detection and PTO; congestion
//! control through a [`cc::Controller`] (STOQ's BBR by default) with a pacer; the
//! anti-amplification limit, Retry, version negotiation and stateless reset; CID issuance
//! and retirement, migration with path validation, and DPLPMTUD; idle timeout,
//! keep-alive, closing and draining; 1-RTT key updates. `docs/transport.md` describes the
//! design.
#![deny(unsafe_code)]

mod admission;
pub mod cc;
mod config;
mod datagrams;
mod early;
pub mod ecn;
mod endpoint;
mod error;
mod event;
pub mod keys;
mod migration;
mod path;
pub mod quic_lb;
mod ranges;
mod recovery;
mod recv;
pub mod rtt;
mod send;
mod sendbuf;
mod session;
mod space;
mod stats;
pub mod streams;
mod timers;
pub mod token;
mod trace;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use stoq_common::cid::ConnectionId;
use stoq_common::classify::HeaderInfo as WireHeader;
use stoq_common::maps::ClassifierConfig;

pub use self::admission::SourcePrefix;
use self::cc::{Controller, DeliveryRate, Pacer};
pub use self::config::{Adaptation, TransportConfig};
pub use self::ecn::{DatagramInfo, EcnCodepoint};
pub use self::endpoint::{
    AcceptError, ConfigError, ConnectError, ConnectionHandle, DEFAULT_MAX_HANDSHAKES_PER_PREFIX,
    DEFAULT_RETRY_THRESHOLD, DatagramEvent, Endpoint, EndpointConfig, EndpointStats, Incoming,
    RetryError, RetryPolicy,
};
pub use self::error::{
    ConnectionError, ExtensionError, KeyUpdateError, MessageError, SendDatagramError, code,
};
pub use self::event::Event;
pub use self::keys::{ClusterKeys, KeyFileError};
use self::rtt::RttEstimator;
use self::space::Space;
pub use self::stats::{ConnectionStats, DropStats, RTT_BUCKETS_US, RttHistogram, TransportTotals};
pub use self::streams::{Dir, OpenError, ReadError, StreamId, Urgency, WriteError};
use self::streams::{Limits, StreamRecord, Streams};
use self::timers::{Timer, TimerTable};
pub use self::token::TokenError;
use crate::crypto::{
    CipherSuite, DirectionalKeys, PacketKey, Secret, TAG_LEN, pn, unprotect_header,
};
use crate::frame;
pub use crate::handshake::ExportError;
use crate::handshake::Handshake;
use crate::handshake::params::TransportParams;
use crate::handshake::schedule::initial_secrets;

/// The suite of Initial packets: ChaCha20-Poly1305 runs on every CPU.
pub const INITIAL_SUITE: CipherSuite = CipherSuite::ChaCha20Poly1305;
/// Largest DATAGRAM payloads queued for sending or receiving, each way.
const MAX_QUEUED_DATAGRAMS: usize = 1024;
/// Packets held until the keys to open them arrive (handshake only).
const MAX_EARLY_PACKETS: usize = 8;
/// Loss declared after this many later packets are acknowledged (RFC 9002 §6.1.1).
const PACKET_THRESHOLD: u64 = 3;
/// Our ACK delay exponent (the default).
const ACK_DELAY_EXPONENT: u64 = 3;
/// Our max_ack_delay.
const MAX_ACK_DELAY: Duration = Duration::from_millis(25);
/// Extension frames waiting for the application, at most, by count and bytes.
const MAX_QUEUED_EXTENSIONS: usize = 1024;
/// How far a new extension frame's sequence number may run ahead of the oldest one not
/// yet acknowledged: the receiver then knows that every number more than this far below
/// the highest it saw was delivered, and tracks exactly only the numbers above.
const EXTENSION_WINDOW: u64 = MAX_QUEUED_EXTENSIONS as u64;
const MAX_EXTENSION_BYTES: usize = 1 << 20;
/// Smallest space worth starting a packet in.
const MIN_PACKET_SPACE: usize = 64;

/// A datagram to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// Bytes at the front of the caller's buffer.
    pub size: usize,
    /// The ECN codepoint to send it with (ECT(0) while the path's ECN is being validated
    /// or has been; the backend writes it in the IP header).
    pub ecn: EcnCodepoint,
    /// The local address to send from (`IP_PKTINFO`), when the datagram that opened the
    /// path arrived at a known one; `None` lets the OS choose.
    pub src_ip: Option<IpAddr>,
}

impl Transmit {
    /// `size` bytes to `destination`, unmarked, from whatever address the OS picks.
    pub fn new(destination: SocketAddr, size: usize) -> Self {
        Self {
            destination,
            size,
            ecn: EcnCodepoint::NotEct,
            src_ip: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking,
    Established,
    /// This side closed: send CONNECTION_CLOSE in answer to anything until the deadline.
    Closing,
    /// The peer closed (or reset): send nothing until the deadline.
    Draining,
    Drained,
}

/// What a sent packet carried that must be retransmitted or retired: one entry per frame,
/// kept in the packet's space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    Stream(StreamRecord),
    /// NEW_CONNECTION_ID with this sequence number.
    NewCid(u64),
    /// RETIRE_CONNECTION_ID with this sequence number.
    RetireCid(u64),
    /// A DPLPMTUD probe of this size.
    MtuProbe(u16),
    /// The NEW_TOKEN frame.
    NewToken,
    /// An extension frame, by its sequence number in the connection.
    Extension(u64),
}

/// Which side of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Opened the connection.
    Client,
    /// Accepted it.
    Server,
}

/// Whether the first packet of `data`, an Initial to `dcid`, authenticates under the
/// client's Initial keys. The endpoint checks this before keeping any state for a new
/// client, so packets that merely look like Initials cost one HKDF and one AEAD, no memory.
pub(crate) fn initial_authenticates(data: &[u8], info: &WireHeader, dcid: &ConnectionId) -> bool {
    let end = info.pn_off + info.length as usize;
    let Some(pkt) = data.get(..end) else {
        return false;
    };
    let mut copy = pkt.to_vec();
    let pkt_copy = &mut copy[..];
    let (client, _) = initial_secrets(dcid.as_bytes());
    let mut keys = DirectionalKeys::from_secret(INITIAL_SUITE, client);
    let Ok(h) = unprotect_header(pkt_copy, info.pn_off, &keys.header) else {
        return false;
    };
    let pn = pn::decode(None, h.truncated_pn, h.pn_len);
    keys.packet
        .open(pn, pkt_copy, info.pn_off + h.pn_len)
        .is_ok()
}

/// What the endpoint tells a new connection.
pub(crate) struct Setup {
    pub(crate) side: Side,
    pub(crate) now: Instant,
    pub(crate) remote: SocketAddr,
    /// The local address the first datagram arrived at, if known.
    pub(crate) local_ip: Option<IpAddr>,
    pub(crate) local_cid: ConnectionId,
    pub(crate) remote_cid: ConnectionId,
    /// The DCID of the client's Initial (after any Retry): Initial keys derive from it.
    pub(crate) initial_dcid: ConnectionId,
    /// The client's very first DCID.
    pub(crate) orig_dcid: ConnectionId,
    pub(crate) retry_scid: Option<ConnectionId>,
    pub(crate) validated: bool,
    pub(crate) mtu: usize,
    pub(crate) classifier: ClassifierConfig,
    pub(crate) rng_seed: [u8; 32],
    pub(crate) unix_base: (Instant, u64),
    pub(crate) transport: Arc<TransportConfig>,
}

/// One connection's state machine.
///
/// ```no_run
/// # fn f(ep: &mut stoq::conn::Endpoint, h: stoq::conn::ConnectionHandle) -> Result<(), Box<dyn std::error::Error>> {
/// use stoq::conn::{Dir, Event};
/// let conn = ep.connection_mut(h).expect("live");
/// let id = conn.open_stream(Dir::Bi)?;
/// conn.write(id, b"hello")?;
/// conn.finish(id)?;
/// // Events say what to do next; datagrams go out through `Endpoint::poll_transmit`.
/// while let Some(event) = conn.poll_event() {
///     if let Event::StreamReadable(id) = event {
///         let mut buf = [0u8; 1500];
///         while let Ok(Some(n)) = conn.read(id, &mut buf) {
///             println!("{n} bytes on {id:?}");
///         }
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Connection {
    side: Side,
    state: State,
    hs: Handshake,
    spaces: [Space; 3],
    rng: ChaCha20Rng,
    remote: SocketAddr,
    /// The local address replies go out from (see [`Transmit::src_ip`]).
    local_ip: Option<IpAddr>,
    /// ECN validation of the current path.
    ecn: ecn::Validation,
    /// Whether the datagram being written goes out ECT(0).
    ecn_marking: bool,
    /// When the first RTT sample on this path was taken (persistent congestion only
    /// counts losses of packets sent after it, RFC 9002 §7.6.2).
    first_rtt_sample: Option<Instant>,
    /// What the backend told of the datagram being processed.
    rx_info: DatagramInfo,
    local_cid: ConnectionId,
    remote_cid: ConnectionId,
    orig_dcid: ConnectionId,
    retry_scid: Option<ConnectionId>,
    /// Client: the token to put in Initial packets.
    token: Vec<u8>,
    /// Client: the server's SCID from its first Initial.
    server_initial_scid: Option<ConnectionId>,
    /// Server: the client's SCID from its first Initial.
    client_initial_scid: ConnectionId,
    peer_reset_token: Option<[u8; 16]>,
    /// The peer's address is validated (no amplification limit).
    validated: bool,
    rx_bytes: u64,
    tx_bytes: u64,
    rtt: RttEstimator,
    pto_count: u32,
    peer_max_ack_delay: Duration,
    peer_ack_delay_exponent: u64,
    peer_max_datagram: u64,
    local_params: TransportParams,
    idle_timeout: Option<Duration>,
    /// The idle, handshake, closing and pacing deadlines. The handshake timer ends an
    /// unfinished handshake that has heard nothing from its peer (servers only, cleared
    /// once established).
    timers: TimerTable,
    close_pending: bool,
    close: Option<(u64, Option<u64>, Vec<u8>)>,
    error: Option<ConnectionError>,
    events: VecDeque<Event>,
    datagrams_in: datagrams::DatagramQueue,
    datagrams_out: datagrams::DatagramQueue,
    /// A DATAGRAM was refused for a full queue: [`Event::DatagramsUnblocked`] is owed.
    datagrams_blocked: bool,
    handshake_done_pending: bool,
    confirmed: bool,
    ping_pending: bool,
    /// The pending PING announces a new local address: its datagram is padded like a
    /// path probe, so the peer's anti-amplification budget for the new address lets it
    /// validate the address and keep acknowledging.
    address_ping: bool,
    /// Server: 1-RTT receive keys held until the client's Finished verifies.
    pending_rx_1rtt: Option<Secret>,
    /// Client: the application space sends with the 0-RTT key (packets go out as 0-RTT).
    early_tx: bool,
    /// Client: the server's answer to its early data has been acted on.
    early_answered: bool,
    /// The application may use streams before the handshake completes: a client that
    /// started with early data, a server that accepted them ([`Connection::app_ready`]).
    early_app: bool,
    /// Server: the 0-RTT receive key, until the handshake completes.
    early_rx: Option<Box<DirectionalKeys>>,
    /// Server: streams the client opened in early data, bidirectional and unidirectional.
    early_streams: [u64; 2],
    /// The packet being handled is a 0-RTT one (its frames are checked against 0-RTT's).
    rx_zero_rtt: bool,
    /// The peer's stream and DATAGRAM limits were applied before the handshake completed
    /// (a server answering early data).
    peer_limits_set: bool,
    /// [`Event::Connected`] was queued (a server answering early data queues it before
    /// the handshake completes).
    connected_sent: bool,
    early_packets: Vec<Vec<u8>>,
    key_phase: bool,
    rx_key_phase: bool,
    rx_prev: Option<PacketKey>,
    rx_next: Option<(Secret, PacketKey)>,
    rx_phase_first_pn: u64,
    /// First packet number sent under the current key phase, and whether one such packet
    /// has been acknowledged (which allows the next update).
    tx_phase_first_pn: u64,
    tx_phase_acked: bool,
    mtu: usize,
    classifier: ClassifierConfig,
    unix_base: (Instant, u64),
    stats: ConnectionStats,
    /// Counted in the endpoint's handshaking total until its `Connected` or `Lost` event is
    /// polled (or it is freed).
    counted_handshaking: bool,
    streams: Streams,
    cc: Box<dyn Controller>,
    pacer: Pacer,
    rate: DeliveryRate,
    /// 1-RTT bytes in flight (the handshake spaces are bounded by the amplification limit
    /// and the handshake itself, and are not congestion controlled).
    in_flight: u64,
    transport: Arc<TransportConfig>,
    ack_threshold: u32,
    keep_alive: Option<Duration>,
    /// Ack-eliciting 1-RTT packets received, and when the current rate window ends.
    rx_rate_window: (Instant, u32),
    thinning: bool,
    /// Messages: stream, deadline.
    messages: VecDeque<(StreamId, Instant)>,
    /// When the last ack-eliciting 1-RTT packet was sent (keep-alive).
    last_eliciting_1rtt: Option<Instant>,
    path: path::Paths,
    /// Raw frames a test queued ([`Connection::queue_raw_frames`]).
    raw_frames: VecDeque<Vec<u8>>,
    /// Server: the handshake completed and the endpoint has not yet given the address
    /// token for NEW_TOKEN.
    address_token_wanted: bool,
    /// Server: the address token to send in NEW_TOKEN, and the one in flight (resent if
    /// its packet is lost).
    new_token: Option<Vec<u8>>,
    new_token_in_flight: Option<Vec<u8>>,
    /// The peer's active_connection_id_limit (at most 8 are issued).
    peer_cid_limit: usize,
    /// Extension frames received, waiting for the application.
    ext_in: VecDeque<(u64, Vec<u8>)>,
    ext_in_bytes: usize,
    /// Extension frames to send (seq, type, payload), and those in flight by seq.
    ext_out: VecDeque<(u64, u64, Vec<u8>)>,
    ext_sent: Vec<(u64, u64, Vec<u8>)>,
    ext_next_seq: u64,
    /// Sequence numbers of the peer's extension frames delivered, within the window below
    /// the highest seen (`ext_max_seen`): each is delivered once.
    ext_seen: ranges::RangeSet,
    ext_max_seen: Option<u64>,
    /// The qlog trace, when on ([`crate::qlog`]).
    qlog: Option<Box<crate::qlog::Trace>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("side", &self.side)
            .field("state", &self.state)
            .field("remote", &self.remote)
            .field("local_cid", &self.local_cid)
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub(crate) fn new(s: Setup, hs: Handshake, params: TransportParams) -> Self {
        let mut spaces = [Space::new(), Space::new(), Space::new()];
        let (c, sv) = initial_secrets(s.initial_dcid.as_bytes());
        let (tx, rx) = match s.side {
            Side::Client => (c, sv),
            Side::Server => (sv, c),
        };
        spaces[0].tx = Some(DirectionalKeys::from_secret(INITIAL_SUITE, tx));
        spaces[0].rx = Some(DirectionalKeys::from_secret(INITIAL_SUITE, rx));
        let idle = (params.max_idle_timeout_ms > 0)
            .then(|| Duration::from_millis(params.max_idle_timeout_ms));
        let limits =
            Limits::from_params(&params, s.transport.send_buffer, s.transport.send_backlog);
        let mut me = Self {
            side: s.side,
            state: State::Handshaking,
            hs,
            spaces,
            rng: ChaCha20Rng::from_seed(s.rng_seed),
            remote: s.remote,
            local_ip: s.local_ip,
            ecn: ecn::Validation::new(s.transport.ecn),
            ecn_marking: false,
            first_rtt_sample: None,
            rx_info: DatagramInfo::default(),
            local_cid: s.local_cid,
            remote_cid: s.remote_cid,
            orig_dcid: s.orig_dcid,
            retry_scid: s.retry_scid,
            token: Vec::new(),
            server_initial_scid: None,
            client_initial_scid: s.remote_cid,
            peer_reset_token: None,
            validated: s.validated || s.side == Side::Client,
            rx_bytes: 0,
            tx_bytes: 0,
            rtt: RttEstimator::default(),
            pto_count: 0,
            peer_max_ack_delay: MAX_ACK_DELAY,
            peer_ack_delay_exponent: ACK_DELAY_EXPONENT,
            peer_max_datagram: 0,
            local_params: params,
            idle_timeout: idle,
            timers: TimerTable::default(),
            close_pending: false,
            close: None,
            error: None,
            events: VecDeque::new(),
            datagrams_in: datagrams::DatagramQueue::default(),
            datagrams_out: datagrams::DatagramQueue::default(),
            datagrams_blocked: false,
            handshake_done_pending: false,
            confirmed: false,
            ping_pending: false,
            address_ping: false,
            pending_rx_1rtt: None,
            early_tx: false,
            early_answered: false,
            early_app: false,
            early_rx: None,
            early_streams: [0; 2],
            rx_zero_rtt: false,
            peer_limits_set: false,
            connected_sent: false,
            early_packets: Vec::new(),
            key_phase: false,
            rx_key_phase: false,
            rx_prev: None,
            rx_next: None,
            rx_phase_first_pn: 0,
            tx_phase_first_pn: 0,
            tx_phase_acked: false,
            mtu: s.mtu,
            classifier: s.classifier,
            unix_base: s.unix_base,
            stats: ConnectionStats::default(),
            counted_handshaking: false,
            streams: Streams::new(s.side, limits),
            cc: s.transport.congestion.build(s.now, s.mtu as u64),
            pacer: Pacer::new(s.mtu as u64),
            rate: DeliveryRate::new(s.now),
            in_flight: 0,
            ack_threshold: s.transport.ack_eliciting_threshold.max(1),
            keep_alive: s.transport.keep_alive,
            rx_rate_window: (s.now + recv::RX_RATE_WINDOW, 0),
            thinning: false,
            messages: VecDeque::new(),
            last_eliciting_1rtt: None,
            raw_frames: VecDeque::new(),
            address_token_wanted: false,
            new_token: None,
            new_token_in_flight: None,
            peer_cid_limit: 2,
            ext_in: VecDeque::new(),
            ext_in_bytes: 0,
            ext_out: VecDeque::new(),
            ext_sent: Vec::new(),
            ext_next_seq: 0,
            ext_seen: ranges::RangeSet::new(EXTENSION_WINDOW as usize),
            ext_max_seen: None,
            qlog: None,
            path: path::Paths::new(s.transport.initial_mtu.min(s.mtu), s.mtu),
            transport: s.transport,
        };
        // The controller's randomisation comes from a stream of its own under the
        // connection's seed (ChaCha output, safe to show in probe timing), leaving the
        // main generator's sequence as it was.
        let mut cc_rng = ChaCha20Rng::from_seed(s.rng_seed);
        cc_rng.set_stream(1);
        me.cc.seed(cc_rng.next_u64());
        if me.transport.pacing_gain != 1.0 {
            me.cc.set_pacing_gain(me.transport.pacing_gain);
        }
        me.timers.set_or_clear(Timer::Idle, idle.map(|d| s.now + d));
        if me.side == Side::Server {
            // Servers only: a half-open handshake holds a server's slot; a client's
            // application waits on its own connect and has the idle timeout.
            me.timers
                .set(Timer::Handshake, s.now + me.transport.handshake_timeout);
        }
        if let Some(w) = me.transport.qlog.clone() {
            me.start_qlog(s.now, &w);
        }
        me.collect_handshake_output(s.now);
        if me.side == Side::Client {
            // The client's first flight is at least two full Initial datagrams, so that the
            // server's post-quantum flight (up to ~7 KB with FALCON-1024 certificates) fits
            // under the 3x anti-amplification limit in the first round trip.
            me.spaces[0].probes = 2;
        }
        me
    }

    // ----- Public API -------------------------------------------------------------------

    /// Traces this connection into `writer` from `now` on (replacing any trace it had):
    /// qlog for one connection, where [`TransportConfig::qlog`] turns it on for all of an
    /// endpoint's. The trace ends when the connection is dropped.
    pub fn set_qlog(&mut self, now: Instant, writer: &crate::qlog::QlogWriter) {
        self.start_qlog(now, writer);
    }

    /// Which side this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.remote
    }

    /// Whether the handshake completed and the connection is not closing.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Whether the handshake is confirmed (all handshake keys discarded).
    pub fn is_confirmed(&self) -> bool {
        self.confirmed
    }

    /// Whether the connection is closing, draining or gone.
    pub fn is_closed(&self) -> bool {
        matches!(
            self.state,
            State::Closing | State::Draining | State::Drained
        )
    }

    /// Whether all state can be freed.
    pub fn is_drained(&self) -> bool {
        self.state == State::Drained
    }

    /// Why the connection ended, once it has.
    pub fn error(&self) -> Option<&ConnectionError> {
        self.error.as_ref()
    }

    /// The negotiated cipher suite, once known.
    pub fn suite(&self) -> Option<CipherSuite> {
        self.hs.suite()
    }

    /// The peer's authenticated FALCON key, once verified.
    pub fn peer_key(&self) -> Option<&crate::crypto::sig::VerifyingKey> {
        self.hs.peer_key()
    }

    /// The application protocol the handshake selected (ALPN, `ClientConfig::alpn` and
    /// `ServerConfig::alpn`): known to a server from the ClientHello, to a client from the
    /// server's flight; `None` when no protocol was selected.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.hs.alpn()
    }

    /// Server: whether the handshake completed and the endpoint should give this
    /// connection an address token for its client ([`Connection::give_address_token`]).
    pub fn wants_address_token(&self) -> bool {
        self.address_token_wanted
    }

    /// Server: the address token to send the client in NEW_TOKEN (RFC 9000 §8.1.3), or
    /// `None` to send none.
    pub fn give_address_token(&mut self, token: Option<Vec<u8>>) {
        self.address_token_wanted = false;
        self.new_token = token;
    }

    /// Client, before the first packet: the token to put in Initial packets (an address
    /// token from an earlier connection).
    pub(crate) fn set_initial_token(&mut self, token: Vec<u8>) {
        self.token = token;
    }

    /// Whether the handshake resumed from a session ticket and, when a ticket was
    /// refused, why (from the ServerHello on).
    pub fn resumption(&self) -> crate::handshake::Resumption {
        self.hs.resumption()
    }

    /// The server name of the handshake: the one a client asked this server for, or the
    /// one this client asked for.
    pub fn server_name(&self) -> Option<&str> {
        self.hs.server_name()
    }

    /// Fills `out` with keying material exported from this connection's handshake for
    /// `label` and `context` (the TLS 1.3 exporter, RFC 8446 §7.5, over STOQ's key
    /// schedule; as RFC 5705 and quinn's `export_keying_material`): both ends get the same
    /// bytes, and no other connection does. For binding an application's own
    /// authentication or keys to this connection.
    ///
    /// # Errors
    /// [`ExportError::HandshakeIncomplete`] before the connection is established, and
    /// [`ExportError::LabelTooLong`] / [`ExportError::OutputTooLong`] past the limits of
    /// HKDF-Expand-Label.
    pub fn export_keying_material(
        &self,
        out: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), ExportError> {
        if !self.hs.is_complete() {
            return Err(ExportError::HandshakeIncomplete);
        }
        self.hs.export_keying_material(out, label, context)
    }

    /// The peer's transport parameters, once received.
    pub fn peer_params(&self) -> Option<&TransportParams> {
        self.hs.peer_params()
    }

    /// This side's connection ID.
    pub fn local_cid(&self) -> ConnectionId {
        self.local_cid
    }

    /// Statistics so far.
    pub fn stats(&self) -> ConnectionStats {
        let mut s = self.stats;
        s.smoothed_rtt = self.rtt.smoothed();
        s.min_rtt = self.rtt.min();
        s.rtt_var = self.rtt.var();
        s.cwnd = self.cc.window();
        s.pacing_rate = self.pacing_rate();
        s.bytes_in_flight = self.in_flight;
        s.retransmitted_bytes = self.streams.retransmitted;
        s.congestion_events = self.cc.congestion_events();
        s.cc_state = self.cc.state();
        s.path_mtu = self.path.mtu();
        s.streams = self.streams.len();
        s.ecn_state = self.ecn.name();
        s
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events
            .pop_front()
            .or_else(|| self.streams.events.pop_front())
    }

    /// Largest DATAGRAM payload that fits one packet on the current path and that the peer
    /// accepts; `None` if the peer does not accept datagrams.
    pub fn max_datagram_size(&self) -> Option<usize> {
        if self.peer_max_datagram == 0 {
            return None;
        }
        // Short header (1 + CID) + 4-byte packet number + frame type and length + tag.
        let overhead = 1 + self.remote_cid.len() + 4 + 1 + 2 + TAG_LEN;
        Some(
            self.path
                .mtu()
                .saturating_sub(overhead)
                .min(self.peer_max_datagram as usize),
        )
    }

    /// Queues an unreliable DATAGRAM.
    ///
    /// # Errors
    /// [`SendDatagramError`]: not connected, not supported by the peer, too large, or the
    /// queue is full.
    pub fn send_datagram(&mut self, data: &[u8]) -> Result<(), SendDatagramError> {
        if !self.app_ready() {
            return Err(SendDatagramError::NotConnected);
        }
        let max = self
            .max_datagram_size()
            .ok_or(SendDatagramError::UnsupportedByPeer)?;
        if data.len() > max {
            return Err(SendDatagramError::TooLarge {
                size: data.len(),
                max,
            });
        }
        if self.datagrams_out.len() >= MAX_QUEUED_DATAGRAMS {
            self.datagrams_blocked = true;
            self.stats.datagrams_blocked += 1;
            return Err(SendDatagramError::Blocked);
        }
        self.datagrams_out.push(data);
        Ok(())
    }

    /// The next received DATAGRAM, in a buffer of its own (the connection allocates a new
    /// one for a later datagram; [`recv_datagram_into`](Self::recv_datagram_into) does
    /// not).
    pub fn recv_datagram(&mut self) -> Option<Vec<u8>> {
        self.datagrams_in.pop()
    }

    /// Moves the next received DATAGRAM into `out`, replacing its contents, and returns
    /// whether there was one. The buffers are swapped, not copied: `out`'s old buffer is
    /// kept for a later datagram, so a caller that reuses one `Vec` receives without
    /// allocating.
    pub fn recv_datagram_into(&mut self, out: &mut Vec<u8>) -> bool {
        self.datagrams_in.pop_into(out)
    }

    /// Sends an extension frame of type `ty` (from [`frame::EXTENSION_TYPES`]), reliably:
    /// it is retransmitted until acknowledged. The peer must have registered the type
    /// ([`TransportConfig::extension_frames`]) or it closes the connection.
    ///
    /// # Errors
    /// [`ExtensionError`]: a type outside the range, a payload that does not fit one
    /// packet, a full queue (back-pressure), or no connection.
    pub fn send_extension_frame(&mut self, ty: u64, payload: &[u8]) -> Result<(), ExtensionError> {
        if self.state != State::Established {
            return Err(ExtensionError::NotConnected);
        }
        if !frame::EXTENSION_TYPES.contains(&ty) {
            return Err(ExtensionError::OutsideRange(ty));
        }
        // Short header, packet number, type, length and tag.
        let max = self.path.mtu() - (1 + self.remote_cid.len() + 4 + 4 + 4 + TAG_LEN);
        if payload.len() > max.min(self.mtu) {
            return Err(ExtensionError::TooLarge {
                size: payload.len(),
                max,
            });
        }
        let oldest = self.ext_out.iter().chain(&self.ext_sent).map(|e| e.0).min();
        if self.ext_out.len() + self.ext_sent.len() >= MAX_QUEUED_EXTENSIONS
            || oldest.is_some_and(|o| self.ext_next_seq - o >= EXTENSION_WINDOW)
        {
            return Err(ExtensionError::Blocked);
        }
        let seq = self.ext_next_seq;
        self.ext_next_seq += 1;
        self.ext_out.push_back((seq, ty, payload.to_vec()));
        Ok(())
    }

    /// The next extension frame received: its type and payload.
    pub fn recv_extension_frame(&mut self) -> Option<(u64, Vec<u8>)> {
        let f = self.ext_in.pop_front()?;
        self.ext_in_bytes -= f.1.len();
        Some(f)
    }

    // ----- Streams ----------------------------------------------------------------------

    /// Opens a stream.
    ///
    /// # Errors
    /// [`OpenError::Blocked`] at the peer's stream limit (a `StreamsAvailable` event
    /// follows when it grants more), [`OpenError::NotConnected`] before the handshake or
    /// after close.
    pub fn open_stream(&mut self, dir: Dir) -> Result<StreamId, OpenError> {
        if !self.app_ready() {
            return Err(OpenError::NotConnected);
        }
        self.streams.open(dir)
    }

    /// The next stream the peer opened, if any.
    pub fn accept_stream(&mut self, dir: Dir) -> Option<StreamId> {
        self.streams.accept(dir)
    }

    /// Writes to a stream; returns how much was taken (less than `data` when the send
    /// buffer fills).
    ///
    /// # Errors
    /// [`WriteError`]: blocked (wait for `StreamWritable`), stopped by the peer, finished,
    /// unknown, or not connected.
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, WriteError> {
        if !self.app_ready() {
            return Err(WriteError::NotConnected);
        }
        self.streams.write(id, data, false)
    }

    /// Writes the front of `data` to a stream without copying it: the stream keeps a
    /// reference to the same allocation until the bytes are acknowledged, and the one
    /// copy made is into the packet. Takes what fits in the send buffer, splitting it off
    /// `data` (which keeps the rest), and returns how much.
    ///
    /// For an application that already holds its payload in [`Bytes`](bytes::Bytes) (a
    /// proxy, a file or cache server); [`write`](Self::write) copies from a slice.
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub fn write_chunk(
        &mut self,
        id: StreamId,
        data: &mut bytes::Bytes,
    ) -> Result<usize, WriteError> {
        if !self.app_ready() {
            return Err(WriteError::NotConnected);
        }
        self.streams.write_chunk(id, data)
    }

    /// Finishes a stream: a FIN follows the data written so far.
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub fn finish(&mut self, id: StreamId) -> Result<(), WriteError> {
        if !self.app_ready() {
            return Err(WriteError::NotConnected);
        }
        self.streams.finish(id)
    }

    /// Abandons sending on a stream with an application error code (RESET_STREAM).
    ///
    /// # Errors
    /// [`WriteError::Closed`] if already reset or fully acknowledged,
    /// [`WriteError::UnknownStream`] if there is no such sending stream.
    pub fn reset_stream(&mut self, id: StreamId, code: u64) -> Result<(), WriteError> {
        self.streams.reset(id, code)
    }

    /// Asks the peer to stop sending on a stream (STOP_SENDING); unread data is discarded.
    ///
    /// # Errors
    /// [`ReadError::UnknownStream`] if there is no such receiving stream.
    pub fn stop_sending(&mut self, id: StreamId, code: u64) -> Result<(), ReadError> {
        self.streams.stop(id, code)
    }

    /// Reads in-order data from a stream into `buf`: `Ok(Some(n))` bytes, or `Ok(None)` at
    /// the end of the stream.
    ///
    /// # Errors
    /// [`ReadError`]: nothing yet (wait for `StreamReadable`), reset by the peer, stopped,
    /// or unknown.
    pub fn read(&mut self, id: StreamId, buf: &mut [u8]) -> Result<Option<usize>, ReadError> {
        self.streams.read(id, buf)
    }

    /// Reads up to `max` bytes of stream `id` as one chunk, `(offset, bytes)`, or `None` at
    /// the end of the stream. `ordered`: the bytes at the read offset, as
    /// [`read`](Self::read) gives them. Unordered: any bytes received and not yet read,
    /// wherever they lie in the stream, each exactly once (a stream read unordered stays
    /// unordered: later ordered reads fail with [`ReadError::Unordered`]).
    ///
    /// # Errors
    /// As [`read`](Self::read), and [`ReadError::Unordered`].
    pub fn read_chunk(
        &mut self,
        id: StreamId,
        max: usize,
        ordered: bool,
    ) -> Result<Option<(u64, Vec<u8>)>, ReadError> {
        self.streams.read_chunk(id, max, ordered)
    }

    /// Sets a stream's urgency for the scheduler; returns false for an unknown stream.
    pub fn set_urgency(&mut self, id: StreamId, urgency: Urgency) -> bool {
        self.streams.set_urgency(id, urgency)
    }

    /// Bytes of stream data this connection holds: unacknowledged send data and received
    /// data not yet read. Bounded by `send_buffer` and the receive windows.
    pub fn memory(&self) -> u64 {
        self.streams.memory()
    }

    /// Whether every byte written to every stream has been acknowledged by the peer (or
    /// its stream reset): what a graceful shutdown waits for before closing.
    pub fn all_sent_data_acked(&self) -> bool {
        self.streams.all_acked()
    }

    /// Stream bytes written and not yet acknowledged by the peer (sent or still queued).
    pub fn unacknowledged_bytes(&self) -> u64 {
        self.streams.buffered()
    }

    /// Stream bytes written and not yet sent once.
    pub(crate) fn unsent(&self) -> u64 {
        self.streams.unsent()
    }

    /// Sets this connection's share of its worker's budget of unsent bytes
    /// (`endpoint::backlog`).
    pub(crate) fn set_backlog_share(&mut self, share: u64) {
        self.streams.set_backlog_share(share);
    }

    /// Bytes that can be written to stream `id` before writes block (0 for an unknown
    /// stream). Bulk streams see 7/8 of the send buffer; the rest is kept for more urgent
    /// streams.
    pub fn send_capacity(&self, id: StreamId) -> u64 {
        self.streams
            .urgency(id)
            .map_or(0, |u| self.streams.send_capacity(u))
    }

    /// Sends a partially reliable message: it travels on its own unidirectional stream and
    /// is retransmitted until acknowledged or until `deadline` has passed, when it is
    /// abandoned (the stream is reset with [`streams::MESSAGE_EXPIRED`]) and reported with
    /// [`Event::MessageAbandoned`]; [`Event::MessageDelivered`] reports success.
    ///
    /// # Errors
    /// [`MessageError`]: not connected, at the stream limit, or larger than the free send
    /// buffer (back-pressure: a message is taken whole or not at all).
    pub fn send_message(
        &mut self,
        now: Instant,
        data: &[u8],
        deadline: Duration,
        urgency: Urgency,
    ) -> Result<StreamId, MessageError> {
        if !self.app_ready() {
            return Err(MessageError::NotConnected);
        }
        let cap = self.streams.send_capacity(urgency);
        if data.len() as u64 > cap {
            return Err(MessageError::Blocked {
                size: data.len(),
                capacity: cap,
            });
        }
        let id = self.streams.open(Dir::Uni).map_err(|e| match e {
            OpenError::Blocked => MessageError::StreamLimit,
            OpenError::NotConnected => MessageError::NotConnected,
        })?;
        self.streams.set_urgency(id, urgency);
        let n = self.streams.write(id, data, true).unwrap_or(0);
        debug_assert_eq!(n, data.len());
        self.messages.push_back((id, now + deadline));
        Ok(id)
    }

    /// Changes transport settings on a live connection. Window increases are announced
    /// to the peer at once; nothing in flight is lost.
    pub fn adapt(&mut self, a: Adaptation) {
        if a.stream_window.is_some() || a.connection_window.is_some() {
            let p = &self.local_params;
            let stream = a
                .stream_window
                .unwrap_or(p.initial_max_stream_data_bidi_remote);
            let conn = a.connection_window.unwrap_or(p.initial_max_data);
            self.local_params.initial_max_stream_data_bidi_local = stream;
            self.local_params.initial_max_stream_data_bidi_remote = stream;
            self.local_params.initial_max_stream_data_uni = stream;
            self.local_params.initial_max_data = conn;
            self.streams.set_windows(stream, conn);
        }
        if let Some(k) = a.keep_alive {
            self.keep_alive = k;
        }
        if let Some(t) = a.ack_eliciting_threshold {
            self.ack_threshold = t.max(1);
        }
        if let Some(g) = a.pacing_gain {
            self.cc.set_pacing_gain(g);
        }
    }

    /// Reports messages that completed and abandons those past their deadline.
    fn update_messages(&mut self, now: Instant) {
        if self.messages.is_empty() {
            return;
        }
        let mut i = 0;
        while i < self.messages.len() {
            let (id, deadline) = self.messages[i];
            match self.streams.send_progress(id) {
                None | Some((_, true)) => {
                    self.messages.remove(i);
                    self.events.push_back(Event::MessageDelivered(id));
                    continue;
                }
                Some(_) if now >= deadline => {
                    self.messages.remove(i);
                    let _ = self.streams.reset(id, streams::MESSAGE_EXPIRED);
                    self.events.push_back(Event::MessageAbandoned(id));
                    continue;
                }
                Some(_) => i += 1,
            }
        }
    }

    /// Closes the connection with an application error code. The CONNECTION_CLOSE goes out
    /// with the next [`poll_transmit`](Self::poll_transmit); the connection then drains.
    pub fn close(&mut self, now: Instant, error_code: u64, reason: &[u8]) {
        if self.is_closed() {
            return;
        }
        let reason = reason[..reason.len().min(256)].to_vec();
        self.enter_closing(
            now,
            (error_code, None, reason),
            ConnectionError::LocallyClosed,
        );
    }

    /// Starts a 1-RTT key update (RFC 9001 §6).
    ///
    /// # Errors
    /// [`KeyUpdateError`] before confirmation, or while the previous update is unacknowledged.
    pub fn initiate_key_update(&mut self) -> Result<(), KeyUpdateError> {
        if !self.confirmed {
            return Err(KeyUpdateError::NotConfirmed);
        }
        if !self.tx_phase_acked {
            return Err(KeyUpdateError::InProgress);
        }
        self.update_tx_keys();
        Ok(())
    }

    /// The current 1-RTT key phase bit this side sends.
    pub fn key_phase(&self) -> bool {
        self.key_phase
    }

    /// The next time [`handle_timeout`](Self::handle_timeout) must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Drained {
            return None;
        }
        if matches!(self.state, State::Closing | State::Draining) {
            return self.timers.get(Timer::Close);
        }
        let mut t = self.timers.get(Timer::Idle);
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        // Set only while handshaking.
        min(self.timers.get(Timer::Handshake));
        min(self.loss_timer());
        for s in &self.spaces {
            min(s.ack_deadline);
        }
        if self.app_ready() && (!self.datagrams_out.is_empty() || self.streams.has_stream_data()) {
            min(self.timers.get(Timer::Pacing));
        }
        if self.state == State::Established {
            min(self.messages.iter().map(|m| m.1).min());
            if let (Some(k), Some(last)) = (self.keep_alive, self.last_eliciting_1rtt) {
                min(Some(last + k));
            }
            min(self
                .path
                .validation
                .map(|v| v.deadline.min(v.next_challenge)));
            // A probe goes out only when the window has room, the path is validated and
            // the pacer allows: a due probe that cannot leave is no timer (an ACK, a loss
            // or the pacer wakes the connection first).
            if !self.path.probe_in_flight && self.validated && self.window_has_room() {
                min(self
                    .path
                    .next_probe
                    .map(|p| self.timers.get(Timer::Pacing).map_or(p, |u| p.max(u))));
            }
        }
        t
    }

    /// Handles expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.qlog_tick(now);
        match self.state {
            State::Drained => return,
            State::Closing | State::Draining => {
                if self.timers.is_due(Timer::Close, now) {
                    self.state = State::Drained;
                }
                return;
            }
            _ => {}
        }
        let handshake_expired =
            self.state == State::Handshaking && self.timers.is_due(Timer::Handshake, now);
        if handshake_expired || self.timers.is_due(Timer::Idle, now) {
            // Silent, as an idle timeout is: the peer's own timer ends its side.
            let e = if handshake_expired {
                ConnectionError::HandshakeTimedOut
            } else {
                ConnectionError::TimedOut
            };
            self.qlog_closed(Some(now), &e);
            self.error = Some(e.clone());
            self.events.push_back(Event::Lost(e));
            self.state = State::Drained;
            return;
        }
        for s in &mut self.spaces {
            if s.ack_deadline.is_some_and(|d| now >= d) {
                s.ack_deadline = None;
                s.ack_now = true;
            }
        }
        if self.loss_timer().is_some_and(|t| now >= t) {
            self.on_loss_timeout(now);
        }
        if self.state != State::Established {
            return;
        }
        self.update_messages(now);
        if let (Some(k), Some(last)) = (self.keep_alive, self.last_eliciting_1rtt)
            && now >= last + k
        {
            self.ping_pending = true;
            // Count from now, so the timer does not fire again before the PING is sent.
            self.last_eliciting_1rtt = Some(now);
        }
        if let Some(v) = self.path.validation.filter(|v| now >= v.deadline) {
            // The new address never answered: go back to the one that worked.
            self.path.validation = None;
            self.remote = v.previous;
            self.validated = true;
        }
        let pto = self.pto_period(2);
        if let Some(v) = self
            .path
            .validation
            .as_mut()
            .filter(|v| now >= v.next_challenge)
        {
            // No PATH_RESPONSE within a PTO: challenge again (same token).
            v.challenge_pending = true;
            v.next_challenge = now + pto;
        }
    }

    // ----- Closing ----------------------------------------------------------------------

    fn fail(&mut self, now: Instant, e: ConnectionError) {
        if self.is_closed() {
            return;
        }
        let reason = e.to_string().into_bytes();
        let reason = reason[..reason.len().min(128)].to_vec();
        self.enter_closing(now, (e.wire_code(), Some(0), reason), e);
    }

    fn enter_closing(
        &mut self,
        now: Instant,
        frame: (u64, Option<u64>, Vec<u8>),
        e: ConnectionError,
    ) {
        self.close = Some(frame);
        self.close_pending = true;
        self.state = State::Closing;
        self.timers.set(Timer::Close, now + 3 * self.pto_period(2));
        self.qlog_closed(Some(now), &e);
        self.events.push_back(Event::Lost(e.clone()));
        self.error = Some(e);
    }

    fn enter_draining(&mut self, now: Instant, e: ConnectionError) {
        self.state = State::Draining;
        self.timers.set(Timer::Close, now + 3 * self.pto_period(2));
        self.qlog_closed(Some(now), &e);
        self.events.push_back(Event::Lost(e.clone()));
        self.error = Some(e);
    }
}
