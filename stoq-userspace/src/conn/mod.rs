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
pub mod ecn;
mod endpoint;
mod error;
mod event;
pub mod keys;
mod path;
pub mod quic_lb;
mod ranges;
pub mod rtt;
mod sendbuf;
mod space;
mod stats;
pub mod streams;
pub mod token;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use stoq_common::cid::ConnectionId;
use stoq_common::classify::{HeaderInfo as WireHeader, PacketKind, classify_payload};
use stoq_common::maps::ClassifierConfig;
use stoq_common::wire::stoq::{MIN_INITIAL_DATAGRAM, Repr};

pub use self::admission::SourcePrefix;
use self::cc::{AckEvent, Controller, DeliveryRate, LossEvent, Pacer, PacketRateState};
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
use self::space::{MAX_CRYPTO_BUFFER, SentPacket, Space};
pub use self::stats::{ConnectionStats, DropStats};
pub use self::streams::{Dir, OpenError, ReadError, StreamId, Urgency, WriteError};
use self::streams::{Limits, PeerLimits, StreamRecord, Streams};
pub use self::token::TokenError;
use crate::crypto::{
    CipherSuite, CryptoError, DirectionalKeys, PacketKey, Secret, TAG_LEN, pn, protect_packet,
    unprotect_header,
};
use crate::frame::{self, Frame, Out};
use crate::handshake::params::TransportParams;
use crate::handshake::schedule::initial_secrets;
use crate::handshake::{Epoch, Handshake, KeyChange};

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
    idle_deadline: Option<Instant>,
    /// When an unfinished handshake that has heard nothing from its peer ends the
    /// connection (cleared once established).
    handshake_deadline: Option<Instant>,
    close_deadline: Option<Instant>,
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
    /// Data may not leave before this time (pacing).
    pacing_until: Option<Instant>,
    transport: Arc<TransportConfig>,
    ack_threshold: u32,
    keep_alive: Option<Duration>,
    /// Ack-eliciting 1-RTT packets received, and when the current rate window began.
    rx_rate_window: (Instant, u32),
    thinning: bool,
    /// Messages: stream, deadline.
    messages: VecDeque<(StreamId, Instant)>,
    /// When the last ack-eliciting 1-RTT packet was sent (keep-alive).
    last_eliciting_1rtt: Option<Instant>,
    path: path::Paths,
    /// Raw frames a test queued ([`Connection::queue_raw_frames`]).
    raw_frames: VecDeque<Vec<u8>>,
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
            idle_deadline: idle.map(|d| s.now + d),
            // Servers only: a half-open handshake holds a server's slot; a client's
            // application waits on its own connect and has the idle timeout.
            handshake_deadline: (s.side == Side::Server)
                .then(|| s.now + s.transport.handshake_timeout),
            close_deadline: None,
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
            pacing_until: None,
            ack_threshold: s.transport.ack_eliciting_threshold.max(1),
            keep_alive: s.transport.keep_alive,
            rx_rate_window: (s.now, 0),
            thinning: false,
            messages: VecDeque::new(),
            last_eliciting_1rtt: None,
            raw_frames: VecDeque::new(),
            peer_cid_limit: 2,
            ext_in: VecDeque::new(),
            ext_in_bytes: 0,
            ext_out: VecDeque::new(),
            ext_sent: Vec::new(),
            ext_next_seq: 0,
            ext_seen: ranges::RangeSet::new(EXTENSION_WINDOW as usize),
            ext_max_seen: None,
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
        if self.state != State::Established {
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
        if self.state != State::Established {
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
        if self.state != State::Established {
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
        if self.state != State::Established {
            return Err(WriteError::NotConnected);
        }
        self.streams.write_chunk(id, data)
    }

    /// Finishes a stream: a FIN follows the data written so far.
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub fn finish(&mut self, id: StreamId) -> Result<(), WriteError> {
        if self.state != State::Established {
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
        if self.state != State::Established {
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

    fn pacing_rate(&self) -> u64 {
        self.cc.pacing_rate().unwrap_or_else(|| {
            // Window-based controllers: 1.25 × cwnd per smoothed RTT.
            let srtt = self.rtt.smoothed().as_secs_f64().max(1e-4);
            (1.25 * self.cc.window() as f64 / srtt) as u64
        })
    }

    /// Whether congestion control and pacing let a new data packet leave now.
    fn data_allowed(&mut self, now: Instant) -> bool {
        if !self.window_has_room() {
            self.pacing_until = None;
            return false;
        }
        let rate = self.pacing_rate();
        self.pacing_until = self.pacer.delay(now, rate, self.path.mtu() as u64);
        self.pacing_until.is_none()
    }

    /// Whether the congestion window takes another full-size packet.
    fn window_has_room(&self) -> bool {
        self.in_flight + self.path.mtu() as u64 <= self.cc.window()
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
            return self.close_deadline;
        }
        let mut t = self.idle_deadline;
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        // Set only while handshaking.
        min(self.handshake_deadline);
        min(self.loss_timer());
        for s in &self.spaces {
            min(s.ack_deadline);
        }
        if self.state == State::Established {
            if !self.datagrams_out.is_empty() || self.streams.has_stream_data() {
                min(self.pacing_until);
            }
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
                    .map(|p| self.pacing_until.map_or(p, |u| p.max(u))));
            }
        }
        t
    }

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

    /// Handles expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Drained => return,
            State::Closing | State::Draining => {
                if self.close_deadline.is_some_and(|d| now >= d) {
                    self.state = State::Drained;
                }
                return;
            }
            _ => {}
        }
        let handshake_expired =
            self.state == State::Handshaking && self.handshake_deadline.is_some_and(|d| now >= d);
        if handshake_expired || self.idle_deadline.is_some_and(|d| now >= d) {
            // Silent, as an idle timeout is: the peer's own timer ends its side.
            let e = if handshake_expired {
                ConnectionError::HandshakeTimedOut
            } else {
                ConnectionError::TimedOut
            };
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

    /// Processes one received datagram, all of whose packets carry this connection's CID.
    /// Decryption happens in place in `data`.
    pub fn handle_datagram(&mut self, now: Instant, remote: SocketAddr, data: &mut [u8]) {
        self.handle_datagram_classified(now, remote, DatagramInfo::default(), data, None);
    }

    /// As [`handle_datagram`](Self::handle_datagram), with what the I/O backend knows
    /// of the datagram: its ECN codepoint and the local address it arrived at.
    pub fn handle_datagram_info(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        info: DatagramInfo,
        data: &mut [u8],
    ) {
        self.handle_datagram_classified(now, remote, info, data, None);
    }

    /// As [`handle_datagram`](Self::handle_datagram), reusing the endpoint's parse of the
    /// first packet's header.
    pub(crate) fn handle_datagram_classified(
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
                PacketKind::Initial | PacketKind::Handshake => {
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

    /// Writes the next datagram to send into `buf` and returns where it goes and its size:
    /// the datagram is `buf[..size]`. `buf` is grown to the path MTU when shorter and never
    /// shrunk or cleared, so a buffer reused across calls costs no allocation and no
    /// zero-fill.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let mtu = self.path.largest_datagram();
        if buf.len() < mtu {
            buf.resize(mtu, 0);
        }
        self.poll_transmit_into(now, buf)
    }

    /// As [`poll_transmit`](Self::poll_transmit), into a fixed buffer (an I/O backend's
    /// frame): the datagram is `buf[..size]`, and never longer than `buf`. A buffer shorter
    /// than the path MTU only makes datagrams smaller; one shorter than 1,200 bytes may
    /// make the handshake stall.
    pub fn poll_transmit_into(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        match self.state {
            State::Drained | State::Draining => return None,
            State::Closing if !self.close_pending => return None,
            _ => {}
        }
        let data_ok = self.state != State::Established || self.data_allowed(now);
        let mut limit = self.path.mtu();
        // A due MTU probe takes a datagram of its own (1-RTT, PING + PADDING).
        let mut probe = if data_ok && self.validated && self.state == State::Established {
            self.path.probe_due(now)
        } else {
            None
        };
        if let Some(size) = probe {
            limit = size;
        }
        if !self.validated {
            let budget = (3 * self.rx_bytes).saturating_sub(self.tx_bytes) as usize;
            if budget < limit {
                if budget < MIN_PACKET_SPACE && self.wants_send_any(data_ok) {
                    self.stats.amplification_blocked += 1;
                    return None;
                }
                limit = budget;
            }
        }
        if buf.len() < limit {
            if probe.is_some() {
                // The probe does not fit this buffer: try it with a larger one later.
                probe = None;
                limit = self.path.mtu();
            }
            limit = limit.min(buf.len());
        }
        let wants =
            [0, 1, 2].map(|i| probe.is_some() && i == 2 || self.space_wants_send(i, data_ok));
        // Every packet of the datagram shares its IP header, so its ECN mark.
        self.ecn_marking = self.ecn.should_mark();
        let mut len = 0;
        let mut has_initial = false;
        for i in 0..3 {
            if !wants[i] || self.spaces[i].tx.is_none() {
                continue;
            }
            if limit - len < MIN_PACKET_SPACE {
                break;
            }
            let last = !wants[i + 1..].iter().any(|w| *w);
            // Datagrams with an Initial are padded to 1200 bytes: always from the client,
            // and from the server when the Initial is ack-eliciting (RFC 9000 §14.1).
            let pad_to = if probe.is_some() && i == 2 {
                limit - len
            } else if last && (has_initial || i == 0 || (i == 2 && self.path_frames_pending())) {
                MIN_INITIAL_DATAGRAM.min(limit).saturating_sub(len)
            } else {
                0
            };
            let p = if i == 2 { probe } else { None };
            let Some((n, _)) = self.write_packet(now, i, &mut buf[len..limit], pad_to, data_ok, p)
            else {
                continue;
            };
            has_initial |= i == 0;
            len += n;
        }
        if len == 0 {
            if data_ok && self.state == State::Established && self.in_flight < self.cc.window() {
                // Nothing to send with room in the window: application-limited.
                self.rate.on_app_limited(self.in_flight);
                self.cc.on_app_limited(now);
            }
            return None;
        }
        if let Some(p) = probe {
            if len == p {
                self.path.probe_in_flight = true;
            }
        }
        if self.state == State::Closing {
            self.close_pending = false;
        }
        self.tx_bytes += len as u64;
        self.stats.tx_datagrams += 1;
        self.stats.tx_bytes += len as u64;
        let ecn = if self.ecn_marking {
            self.ecn.on_marked_sent();
            EcnCodepoint::Ect0
        } else {
            EcnCodepoint::NotEct
        };
        Some(Transmit {
            destination: self.remote,
            size: len,
            ecn,
            src_ip: self.local_ip,
        })
    }

    // ----- Receiving ----------------------------------------------------------------------

    fn epoch_of(kind: PacketKind) -> Option<usize> {
        match kind {
            PacketKind::Initial => Some(0),
            PacketKind::Handshake => Some(1),
            PacketKind::Short => Some(2),
            _ => None,
        }
    }

    fn handle_packet(
        &mut self,
        now: Instant,
        pkt: &mut [u8],
        info: &WireHeader,
        remote: SocketAddr,
        dlen: usize,
    ) {
        match info.kind {
            PacketKind::Retry => return self.handle_retry(pkt, info),
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
        if self.spaces[i].rx.is_none() {
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
        let space = &mut self.spaces[i];
        let rx = space.rx.as_ref().expect("checked");
        let Ok(h) = unprotect_header(pkt, info.pn_off, &rx.header) else {
            self.stats.dropped.malformed += 1;
            return;
        };
        let pn = pn::decode(space.largest_rx.map(|l| l.0), h.truncated_pn, h.pn_len);
        let header_len = info.pn_off + h.pn_len;
        let opened = if i == 2 {
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
                return;
            }
        }
        let reserved = if i == 2 { 0x18 } else { 0x0c };
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
        if i == 2 && remote != self.remote {
            if !newest {
                // A late packet from the old path: use its frames, do not move back.
            } else {
                self.on_peer_address_change(now, remote, dlen);
            }
        }
        if let Some(d) = self.idle_timeout {
            self.idle_deadline = Some(now + d.max(3 * self.pto_period(2)));
        }
        if self.state == State::Handshaking && self.handshake_deadline.is_some() {
            // The handshake timer is an idle timer too: a handshake that is still hearing
            // from its peer (slowly, over a lossy path) goes on.
            self.handshake_deadline = Some(
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
        self.handle_payload(now, i, &pkt[header_len..payload_end]);
    }

    /// Acts on the frames of an authenticated packet of space `i`, then schedules its
    /// acknowledgement.
    fn handle_payload(&mut self, now: Instant, i: usize, payload: &[u8]) {
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
    fn update_ack_thinning(&mut self, now: Instant) {
        const WINDOW: Duration = Duration::from_millis(25);
        let (start, n) = &mut self.rx_rate_window;
        *n += 1;
        if now.saturating_duration_since(*start) >= WINDOW {
            self.thinning = *n >= 100;
            *start = now;
            *n = 0;
        }
    }

    fn open_one_rtt(
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

    fn update_tx_keys(&mut self) {
        if let Some(tx) = self.spaces[2].tx.as_mut() {
            tx.update();
            self.key_phase = !self.key_phase;
            self.tx_phase_first_pn = self.spaces[2].next_pn;
            self.tx_phase_acked = false;
            self.stats.key_updates += 1;
        }
    }

    fn handle_frame(
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
            // Tokens for future connections are not used (Retry covers validation).
            Frame::NewToken(_) => Ok(()),
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

    /// The peer's packets now come from `remote` (NAT rebinding or migration): switch to
    /// it, validate it, and limit what is sent there until it answers (RFC 9000 §9).
    fn on_peer_address_change(&mut self, now: Instant, remote: SocketAddr, datagram: usize) {
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
    fn path_base_mtu(&self) -> usize {
        self.transport.initial_mtu.min(self.mtu)
    }

    /// The path stopped carrying packets of the current size: drop to the base size
    /// (the congestion controller and pacer follow), tell the application, search again.
    fn on_black_hole(&mut self, now: Instant) {
        let before = self.max_datagram_size();
        let mtu = self.path.on_black_hole(now);
        self.stats.mtu_black_holes += 1;
        tracing::debug!(mtu, "path MTU black hole: back to the base size");
        self.on_mtu_changed(mtu, before);
    }

    /// The path MTU is now `mtu` (the DATAGRAM size was `before`): the congestion
    /// controller and pacer follow, and the application hears of a new DATAGRAM size.
    fn on_mtu_changed(&mut self, mtu: usize, before: Option<usize>) {
        self.cc.on_mtu(mtu as u64);
        self.pacer.set_mtu(mtu as u64);
        if let Some(d) = self.max_datagram_size()
            && Some(d) != before
        {
            self.events.push_back(Event::DatagramSizeChanged(d));
        }
    }

    fn on_crypto(
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

    fn unix_now(&self, now: Instant) -> u64 {
        let (base, secs) = self.unix_base;
        secs + now.saturating_duration_since(base).as_secs()
    }

    fn feed_handshake(
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

    fn collect_handshake_output(&mut self, _now: Instant) {
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
            self.spaces[i].tx = Some(DirectionalKeys::from_secret(suite, tx));
            if i == 2 && self.side == Side::Server {
                self.pending_rx_1rtt = Some(rx);
            } else {
                self.spaces[i].rx = Some(DirectionalKeys::from_secret(suite, rx));
            }
        }
        for (i, epoch) in [Epoch::Initial, Epoch::Handshake].into_iter().enumerate() {
            let out = self.hs.take_outgoing(epoch);
            if out.is_empty() {
                continue;
            }
            let space = &mut self.spaces[i];
            let start = space.crypto_out.len() as u64;
            space.crypto_out.extend_from_slice(&out);
            space.crypto_pending.insert(start..start + out.len() as u64);
        }
    }

    fn on_handshake_complete(&mut self, now: Instant) -> Result<(), ConnectionError> {
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
            }
        }
        self.peer_max_ack_delay = Duration::from_millis(peer.max_ack_delay_ms);
        self.peer_ack_delay_exponent = peer.ack_delay_exponent;
        self.peer_max_datagram = peer.max_datagram_frame_size;
        // The peer says the largest datagram it will take: discovery stops there.
        self.path
            .cap_mtu(usize::try_from(peer.max_udp_payload_size).unwrap_or(usize::MAX));
        self.peer_cid_limit = peer.active_connection_id_limit.min(8) as usize;
        self.streams.set_peer_limits(PeerLimits {
            max_data: peer.initial_max_data,
            bidi_local: peer.initial_max_stream_data_bidi_local,
            bidi_remote: peer.initial_max_stream_data_bidi_remote,
            uni: peer.initial_max_stream_data_uni,
            max_streams_bidi: peer.initial_max_streams_bidi,
            max_streams_uni: peer.initial_max_streams_uni,
        });
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
        self.idle_deadline = self.idle_timeout.map(|d| now + d);
        self.handshake_deadline = None;
        self.state = State::Established;
        self.tx_phase_acked = true;
        self.events.push_back(Event::Connected);
        if self.side == Side::Server {
            // The server confirms at completion (RFC 9001 §4.1.2).
            self.confirm(now);
        }
        Ok(())
    }

    fn confirm(&mut self, now: Instant) {
        self.confirmed = true;
        self.path.start_discovery(now);
        self.spaces[0].discard();
        self.spaces[1].discard();
        self.events.push_back(Event::HandshakeConfirmed);
    }

    fn replay_early(&mut self, now: Instant) {
        if self.early_packets.is_empty() {
            return;
        }
        for mut p in std::mem::take(&mut self.early_packets) {
            let Ok(info) = classify_payload(&p, &self.classifier) else {
                continue;
            };
            match Self::epoch_of(info.kind) {
                Some(i) if self.spaces[i].rx.is_some() => {
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

    fn handle_retry(&mut self, pkt: &[u8], info: &WireHeader) {
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
    }

    fn handle_version_negotiation(&mut self, pkt: &[u8], info: &WireHeader) {
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
        self.error = Some(ConnectionError::VersionMismatch);
        self.events
            .push_back(Event::Lost(ConnectionError::VersionMismatch));
        self.state = State::Drained;
    }

    /// A stateless reset carrying this connection's token arrived. The endpoint detects
    /// resets: their random CIDs never route to a connection.
    pub(crate) fn on_reset(&mut self) {
        if self.is_closed() {
            return;
        }
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

    // ----- ACKs and loss recovery -------------------------------------------------------

    fn on_ack(
        &mut self,
        now: Instant,
        i: usize,
        ack: &frame::Ack<'_>,
    ) -> Result<(), ConnectionError> {
        let space = &mut self.spaces[i];
        if ack.largest >= space.next_pn {
            return Err(ConnectionError::AckOfUnsentPacket { pn: ack.largest });
        }
        let raises_largest = space.largest_acked.is_none_or(|l| ack.largest > l);
        let mut newly_marked = 0u64;
        let mut largest_newly: Option<(Instant, Option<PacketRateState>)> = None;
        space.largest_acked = Some(
            space
                .largest_acked
                .map_or(ack.largest, |l| l.max(ack.largest)),
        );
        let mut newly_eliciting = false;
        let mut rtt_sample = None;
        let mut acked_bytes = 0u64;
        let mut largest_sent: Option<Instant> = None;
        // Consecutive STREAM ranges of one stream are acknowledged as one.
        let mut acked_data: Option<StreamRecord> = None;
        for r in ack.ranges() {
            let space = &mut self.spaces[i];
            let start = space.sent.partition_point(|p| p.pn < *r.start());
            for idx in start..space.sent.len() {
                let space = &mut self.spaces[i];
                let p = &mut space.sent[idx];
                if p.pn > *r.end() {
                    break;
                }
                if p.done {
                    continue;
                }
                p.done = true;
                p.acked = true;
                // Copy out what is needed (the record is a tombstone from here on).
                let (pn, time, size, eliciting, in_flight, rate, rec) = (
                    p.pn,
                    p.time,
                    p.size,
                    p.ack_eliciting,
                    p.in_flight,
                    p.rate,
                    p.rec,
                );
                newly_marked += u64::from(p.ecn);
                if pn == ack.largest {
                    largest_newly = Some((time, rate));
                }
                let crypto = p.crypto.take();
                if eliciting {
                    space.eliciting_in_flight -= 1;
                    newly_eliciting = true;
                }
                if pn == ack.largest && eliciting {
                    rtt_sample = Some(now.saturating_duration_since(time));
                }
                if let Some(c) = crypto {
                    space.crypto_acked.insert(c.clone());
                    space.crypto_pending.remove(c);
                }
                if i == 2 && pn >= self.tx_phase_first_pn {
                    self.tx_phase_acked = true;
                }
                if in_flight {
                    let size = u64::from(size);
                    self.in_flight -= size;
                    acked_bytes += size;
                    largest_sent = Some(largest_sent.map_or(time, |t| t.max(time)));
                    if let Some(rs) = &rate {
                        self.rate.on_acked(now, time, size, rs);
                    }
                }
                if i == 2 && usize::from(size) > path::BASE_PLPMTU {
                    self.path.on_acked(usize::from(size), time);
                }
                if rec.0 < rec.1 {
                    self.on_acked_records(i, rec, &mut acked_data);
                }
            }
        }
        if let Some(d) = acked_data.take() {
            self.streams.on_acked(d);
        }
        if raises_largest {
            self.on_ack_ecn(now, i, ack.ecn, newly_marked, largest_newly);
        }
        if let Some(rtt) = rtt_sample {
            let delay = if i == 2 {
                let d = Duration::from_micros(
                    ack.delay
                        .saturating_mul(1 << self.peer_ack_delay_exponent.min(20)),
                );
                if self.confirmed {
                    d.min(self.peer_max_ack_delay)
                } else {
                    d
                }
            } else {
                Duration::ZERO
            };
            self.rtt.update(rtt, delay);
            self.first_rtt_sample.get_or_insert(now);
        }
        if newly_eliciting {
            self.pto_count = 0;
        }
        if let Some(largest_sent) = largest_sent {
            let sample = self.rate.take_sample(self.rtt.min());
            self.cc.on_ack(
                now,
                &AckEvent {
                    acked: acked_bytes,
                    in_flight: self.in_flight,
                    largest_sent,
                    latest_rtt: self.rtt.latest(),
                    min_rtt: self.rtt.min(),
                    smoothed_rtt: self.rtt.smoothed(),
                    sample,
                    delivered: self.rate.delivered(),
                },
            );
        }
        self.detect_lost(now, i);
        self.spaces[i].compact();
        self.update_messages(now);
        Ok(())
    }

    /// Checks an ACK's ECN counts (RFC 9000 §13.4.2.1) and treats new CE marks as a
    /// congestion signal: one response per round trip, like a loss, with nothing lost.
    fn on_ack_ecn(
        &mut self,
        now: Instant,
        i: usize,
        counts: Option<[u64; 3]>,
        newly_marked: u64,
        largest: Option<(Instant, Option<PacketRateState>)>,
    ) {
        let before = self.ecn.failure;
        let verdict = self
            .ecn
            .on_ack(&mut self.spaces[i].ecn, counts, newly_marked);
        if before.is_none()
            && let Some(why) = self.ecn.failure
        {
            tracing::debug!("ECN validation failed: {why}; sending unmarked");
        }
        let ecn::AckVerdict::Congestion(marks) = verdict else {
            return;
        };
        self.stats.ecn_ce_reported += marks;
        let Some((sent, rate)) = largest else {
            return;
        };
        // Each CE mark stands for a packet the queue would have dropped.
        let bytes = marks.saturating_mul(self.path.mtu() as u64);
        self.cc.on_ecn_ce(
            now,
            &LossEvent {
                lost: bytes,
                in_flight: self.in_flight,
                largest_lost_sent: sent,
                tx_in_flight: rate.map_or(self.in_flight, |r| r.tx_in_flight),
                lost_since_sent: bytes,
                is_app_limited: rate.is_some_and(|r| r.is_app_limited),
                persistent: false,
                delivered: self.rate.delivered(),
            },
        );
    }

    /// Acts on the records of an acknowledged packet, merging STREAM data that continues
    /// the range in `acc` (the common case: an ACK covering a run of packets of one
    /// stream) so the stream is updated once per run, not once per packet.
    fn on_acked_records(&mut self, i: usize, rec: (u64, u64), acc: &mut Option<StreamRecord>) {
        for seq in rec.0..rec.1 {
            let Some(r) = self.spaces[i].record(seq) else {
                continue;
            };
            if let Record::Stream(StreamRecord::Data {
                id,
                offset,
                len,
                fin,
            }) = r
            {
                if let Some(StreamRecord::Data {
                    id: aid,
                    offset: aoff,
                    len: alen,
                    fin: afin,
                }) = acc.as_mut()
                    && *aid == id
                    && !*afin
                    && *aoff + u64::from(*alen) == offset
                    && let Some(n) = alen.checked_add(len)
                {
                    *alen = n;
                    *afin = fin;
                    continue;
                }
                if let Some(d) = acc.replace(StreamRecord::Data {
                    id,
                    offset,
                    len,
                    fin,
                }) {
                    self.streams.on_acked(d);
                }
                continue;
            }
            // Anything else is applied in order, after the data before it.
            if let Some(d) = acc.take() {
                self.streams.on_acked(d);
            }
            self.on_record(r, true);
        }
    }

    /// Acts on the frame records of an acknowledged or lost packet.
    fn on_records(&mut self, i: usize, rec: (u64, u64), acked: bool) {
        for seq in rec.0..rec.1 {
            if let Some(r) = self.spaces[i].record(seq) {
                self.on_record(r, acked);
            }
        }
    }

    /// Acts on one frame record of an acknowledged or lost packet.
    fn on_record(&mut self, r: Record, acked: bool) {
        match (r, acked) {
            (Record::Stream(s), true) => self.streams.on_acked(s),
            (Record::Stream(s), false) => self.streams.on_lost(s),
            (Record::NewCid(seq), false) => self.path.on_new_cid_lost(seq),
            (Record::RetireCid(seq), false) if !self.path.retire_pending.contains(&seq) => {
                self.path.retire_pending.push_back(seq);
            }
            (Record::MtuProbe(size), true) => {
                if let Some(mtu) = self.path.on_probe_acked(usize::from(size)) {
                    self.cc.on_mtu(mtu as u64);
                    self.pacer.set_mtu(mtu as u64);
                    if let Some(d) = self.max_datagram_size() {
                        self.events.push_back(Event::DatagramSizeChanged(d));
                    }
                }
            }
            (Record::MtuProbe(size), false) => self.path.on_probe_lost(usize::from(size)),
            (Record::Extension(seq), acked) => {
                if let Some(k) = self.ext_sent.iter().position(|e| e.0 == seq) {
                    let e = self.ext_sent.swap_remove(k);
                    if !acked {
                        self.ext_out.push_front(e);
                    }
                }
            }
            _ => {}
        }
    }

    fn detect_lost(&mut self, now: Instant, i: usize) {
        let loss_delay = self.rtt.loss_delay();
        let Some(largest) = self.spaces[i].largest_acked else {
            return;
        };
        self.spaces[i].loss_time = None;
        let lost_before = now.checked_sub(loss_delay);
        let (mut lost, mut lost_bytes, mut cc_lost) = (0, 0, 0u64);
        let mut newest_lost: Option<SentPacket> = None;
        // Persistent congestion (RFC 9002 §7.6): the longest run of ack-eliciting packets,
        // newly lost or lost before, with none acknowledged in between, that ends in a
        // newly lost one. `run` is the send time of the current run's first packet.
        let mut run: Option<Instant> = None;
        let mut longest = Duration::ZERO;
        let mut black_hole = false;
        let after_first_sample = self.first_rtt_sample;
        let mut idx = 0;
        while idx < self.spaces[i].sent.len() {
            let space = &mut self.spaces[i];
            let p = &mut space.sent[idx];
            idx += 1;
            if p.pn > largest {
                break;
            }
            if p.done {
                if p.acked {
                    run = None;
                } else if p.ack_eliciting && after_first_sample.is_some_and(|f| p.time > f) {
                    run.get_or_insert(p.time);
                }
                continue;
            }
            if largest - p.pn >= PACKET_THRESHOLD || lost_before.is_some_and(|t| p.time <= t) {
                p.done = true;
                let p = p.clone();
                lost += 1;
                if p.ecn {
                    self.ecn.on_marked_lost();
                }
                lost_bytes += u64::from(p.size);
                if p.ack_eliciting {
                    space.eliciting_in_flight -= 1;
                }
                if let Some(c) = p.crypto.clone() {
                    space.crypto_pending.insert(c);
                }
                if p.handshake_done {
                    self.handshake_done_pending = true;
                }
                let probe = space
                    .records_of(p.rec)
                    .any(|r| matches!(r, Record::MtuProbe(_)));
                if p.in_flight {
                    self.in_flight -= u64::from(p.size);
                    // A lost MTU probe says nothing about congestion (RFC 8899 §4.4).
                    if !probe {
                        cc_lost += u64::from(p.size);
                        self.rate.on_lost(u64::from(p.size));
                        newest_lost = Some(p.clone());
                    }
                }
                if !probe && i == 2 && self.path.on_lost(usize::from(p.size), p.time) {
                    black_hole = true;
                }
                if p.ack_eliciting && after_first_sample.is_some_and(|f| p.time > f) {
                    let start = *run.get_or_insert(p.time);
                    longest = longest.max(p.time.saturating_duration_since(start));
                }
                self.on_records(i, p.rec, false);
            } else {
                // Still in flight, neither acknowledged nor lost: the run goes on past it
                // only if it is lost later, which a later call sees whole.
                run = None;
                let t = p.time + loss_delay;
                space.loss_time = Some(space.loss_time.map_or(t, |l| l.min(t)));
            }
        }
        if black_hole {
            self.on_black_hole(now);
        }
        let space = &mut self.spaces[i];
        space.crypto_pending.subtract(&space.crypto_acked);
        space.compact();
        self.stats.lost_packets += lost;
        self.stats.lost_bytes += lost_bytes;
        if let Some(p) = newest_lost {
            // Persistent congestion: a run of lost packets spanning more than
            // 3 × (PTO without backoff + max_ack_delay), all sent after the first RTT
            // sample, with nothing acknowledged in between (RFC 9002 §7.6).
            let pc = self.rtt.pto_base() + self.peer_max_ack_delay;
            let persistent = self.rtt.has_sample() && longest > 3 * pc;
            let rs = p.rate.expect("in-flight packets carry rate state");
            self.cc.on_loss(
                now,
                &LossEvent {
                    lost: cc_lost,
                    in_flight: self.in_flight,
                    largest_lost_sent: p.time,
                    tx_in_flight: rs.tx_in_flight,
                    lost_since_sent: self.rate_lost_since(&rs),
                    is_app_limited: rs.is_app_limited,
                    persistent,
                    delivered: self.rate.delivered(),
                },
            );
        }
    }

    fn rate_lost_since(&self, rs: &PacketRateState) -> u64 {
        self.rate.lost().saturating_sub(rs.lost)
    }

    fn pto_period(&self, i: usize) -> Duration {
        let mut d = self.rtt.pto_base();
        if i == 2 && self.confirmed {
            d += self.peer_max_ack_delay;
        }
        let backed_off = d * (1u32 << self.pto_count.min(16));
        // Back off exponentially, but probe at least eight times within the idle timeout:
        // after an outage longer than a few RTTs, uncapped doubling would leave a lossy
        // path unprobed until the connection times out.
        match self.idle_timeout {
            Some(idle) => backed_off.min((idle / 8).max(d)),
            None => backed_off,
        }
    }

    /// The loss-detection timer: the earliest loss time, else the earliest PTO.
    fn loss_timer(&self) -> Option<Instant> {
        if matches!(
            self.state,
            State::Closing | State::Draining | State::Drained
        ) {
            return None;
        }
        if let Some(t) = self.spaces.iter().filter_map(|s| s.loss_time).min() {
            return Some(t);
        }
        // A server at the amplification limit arms no PTO (RFC 9002 §6.2.2.1).
        if !self.validated && 3 * self.rx_bytes <= self.tx_bytes + MIN_PACKET_SPACE as u64 {
            return None;
        }
        let mut best: Option<Instant> = None;
        for (i, s) in self.spaces.iter().enumerate() {
            if s.tx.is_none() {
                continue;
            }
            if i == 2 && !self.confirmed && self.side == Side::Client && s.eliciting_in_flight == 0
            {
                continue;
            }
            let base = if s.eliciting_in_flight > 0 {
                s.last_eliciting_sent
            } else if self.side == Side::Client && !self.confirmed && i < 2 {
                // Anti-deadlock: the client keeps probing until the handshake is confirmed,
                // even with nothing in flight (RFC 9002 §6.2.2.1).
                s.last_eliciting_sent.or(self.spaces[0].last_eliciting_sent)
            } else {
                None
            };
            if let Some(b) = base {
                let t = b + self.pto_period(i);
                best = Some(best.map_or(t, |x| x.min(t)));
            }
        }
        best
    }

    fn on_loss_timeout(&mut self, now: Instant) {
        if let Some(i) = (0..3).find(|&i| self.spaces[i].loss_time.is_some_and(|t| now >= t)) {
            self.detect_lost(now, i);
            return;
        }
        // PTO: probe in the space whose timer fired.
        self.pto_count += 1;
        self.stats.pto_count += 1;
        if self.state == State::Established
            && self.spaces[2].eliciting_in_flight > 0
            && self.path.pto_suggests_black_hole(self.pto_count)
            && self.spaces[2]
                .sent
                .iter()
                .filter(|p| !p.done && p.ack_eliciting)
                .all(|p| usize::from(p.size) > path::BASE_PLPMTU)
        {
            // Nothing acknowledged over three probe timeouts, and every packet waiting for
            // an acknowledgment larger than the base: the probes about to go out are
            // sent at the base size instead.
            self.on_black_hole(now);
        }
        for i in 0..3 {
            let s = &mut self.spaces[i];
            if s.tx.is_none() {
                continue;
            }
            if s.eliciting_in_flight > 0 || (i < 2 && self.side == Side::Client && !self.confirmed)
            {
                // Two probes (RFC 9002 §6.2.4 allows up to two) in the application space
                // and in a client's handshake spaces: on a lossy path one lost probe then
                // does not cost a whole PTO, and a client's second Initial doubles the
                // server's anti-amplification budget.
                s.probes = if i == 2 || self.side == Side::Client {
                    2
                } else {
                    1
                };
                if i < 2 {
                    s.requeue_all_crypto();
                }
            }
        }
        // A lost HANDSHAKE_DONE is probed even with nothing else in flight.
        if self.handshake_done_pending {
            self.spaces[2].probes = self.spaces[2].probes.max(1);
        }
    }

    // ----- Sending ----------------------------------------------------------------------

    fn wants_send_any(&self, data_ok: bool) -> bool {
        (0..3).any(|i| self.space_wants_send(i, data_ok))
    }

    fn space_wants_send(&self, i: usize, data_ok: bool) -> bool {
        let s = &self.spaces[i];
        if s.tx.is_none() {
            return false;
        }
        if self.state == State::Closing {
            return self.close_pending && (i != 2 || self.state_allows_1rtt());
        }
        if s.wants_ack() || !s.crypto_pending.is_empty() || s.probes > 0 {
            return i != 2 || self.state_allows_1rtt();
        }
        if i != 2 || !self.state_allows_1rtt() {
            return false;
        }
        if self.handshake_done_pending
            || self.ping_pending
            || self.path.response.is_some()
            || !self.raw_frames.is_empty()
        {
            return true;
        }
        if self.path.validation.is_some_and(|v| v.challenge_pending) {
            return true;
        }
        data_ok
            && self.state == State::Established
            && (!self.datagrams_out.is_empty()
                || !self.ext_out.is_empty()
                || self.streams.wants_send()
                || !self.path.retire_pending.is_empty()
                || self.path.has_unsent_cids())
    }

    /// Whether the next 1-RTT packet carries a path probe: a PATH_CHALLENGE or
    /// PATH_RESPONSE, or the PING that announces a new local address. Their datagrams are
    /// padded to 1,200 bytes where the anti-amplification budget allows (RFC 9000 §8.2.1,
    /// §8.2.2): this proves the path carries full-size datagrams, and a peer that receives
    /// 1,200 bytes from a new address may send 3,600 there before it validates it, which
    /// is room for its challenge and its acknowledgments. Unpadded, a 33-byte PING left a
    /// server 99 bytes: a client waiting for acknowledgments and a server waiting for
    /// bytes then moved only on the client's probe timeouts.
    fn path_frames_pending(&self) -> bool {
        self.path.response.is_some()
            || self.path.validation.is_some_and(|v| v.challenge_pending)
            || (self.ping_pending && self.address_ping)
    }

    fn state_allows_1rtt(&self) -> bool {
        self.hs.is_complete()
    }

    /// Writes one packet of space `i` into `out`; returns its length and whether it is
    /// ack-eliciting. `pad_to` is the least number of bytes the packet must take.
    fn write_packet(
        &mut self,
        now: Instant,
        i: usize,
        out: &mut [u8],
        pad_to: usize,
        data_ok: bool,
        mtu_probe: Option<usize>,
    ) -> Option<(usize, bool)> {
        if i == 2 && self.state == State::Established {
            let tx = self.spaces[2].tx.as_ref()?;
            if tx.packet.should_update() && self.tx_phase_acked {
                self.update_tx_keys();
            }
        }
        let space = &self.spaces[i];
        let pn = space.next_pn;
        let pn_len = pn::encoded_len(pn, space.largest_acked);
        let token: &[u8] = if self.side == Side::Client {
            &self.token
        } else {
            &[]
        };
        let repr = match i {
            0 => Repr::Initial {
                dcid: self.remote_cid,
                scid: self.local_cid,
                token,
                length: 0,
            },
            1 => Repr::Handshake {
                dcid: self.remote_cid,
                scid: self.local_cid,
                length: 0,
            },
            _ => Repr::Short {
                dcid: self.remote_cid,
                spin: false,
            },
        };
        let hdr = repr.emit(out).ok()?;
        if out.len() < hdr + pn_len + 4 + TAG_LEN + 8 {
            return None;
        }
        out[0] |= (pn_len - 1) as u8;
        if i == 2 && self.key_phase {
            out[0] |= 0x04;
        }
        pn::encode(pn, pn_len, &mut out[hdr..])?;
        let payload_start = hdr + pn_len;
        let payload_cap = out.len() - TAG_LEN;
        let mut eliciting = false;
        let mut crypto = None;
        let mut handshake_done = false;
        let mut rec = {
            let e = self.spaces[i].records_end();
            (e, e)
        };
        let payload_len = {
            let mut w = Out::new(&mut out[payload_start..payload_cap]);
            let space = &mut self.spaces[i];
            if space.wants_ack() || (!space.received.is_empty() && space.unacked_eliciting > 0) {
                let delay = space.largest_rx.map_or(0, |(_, t)| {
                    now.saturating_duration_since(t).as_micros() as u64 >> ACK_DELAY_EXPONENT
                });
                if frame::encode_ack_ecn(
                    &mut w,
                    space.received.iter_desc(),
                    if i == 2 { delay } else { 0 },
                    space.ecn.ack_counts(),
                )
                .is_some()
                {
                    space.ack_now = false;
                    space.ack_deadline = None;
                    space.unacked_eliciting = 0;
                }
            }
            if self.state == State::Closing {
                if let Some((code, frame_type, reason)) = &self.close {
                    // Application closes are sent as transport APPLICATION_ERROR outside 1-RTT.
                    let (c, ft) = match (i, frame_type) {
                        (2, ft) => (*code, *ft),
                        (_, Some(ft)) => (*code, Some(*ft)),
                        (_, None) => (code::APPLICATION_ERROR, Some(0)),
                    };
                    // An application's reason stays private outside 1-RTT packets.
                    let reason = if i == 2 || frame_type.is_some() {
                        &reason[..]
                    } else {
                        &[][..]
                    };
                    let _ = frame::encode_close(&mut w, c, ft, reason);
                }
            } else {
                if i == 2
                    && self.handshake_done_pending
                    && self.side == Side::Server
                    && w.varint(frame::ty::HANDSHAKE_DONE).is_some()
                {
                    self.handshake_done_pending = false;
                    handshake_done = true;
                    eliciting = true;
                }
                if let Some(r) = space.crypto_pending.first() {
                    let room = w
                        .remaining()
                        .saturating_sub(frame::crypto_header_len(r.start, w.remaining()));
                    let n = (room as u64).min(r.end - r.start);
                    if n > 0 {
                        let data = &space.crypto_out[r.start as usize..(r.start + n) as usize];
                        if frame::encode_crypto(&mut w, r.start, data).is_some() {
                            space.crypto_pending.remove(r.start..r.start + n);
                            crypto = Some(r.start..r.start + n);
                            eliciting = true;
                        }
                    }
                }
                if i == 2 {
                    let rec_start = self.spaces[2].records_end();
                    eliciting |= self.write_one_rtt_frames(&mut w, data_ok, mtu_probe);
                    if self.spaces[2].records_end() > rec_start {
                        rec = (rec_start, self.spaces[2].records_end());
                    }
                }
                let space = &mut self.spaces[i];
                if space.probes > 0 && !eliciting && w.varint(frame::ty::PING).is_some() {
                    eliciting = true;
                }
            }
            if w.is_empty() {
                return None;
            }
            // Room for the header-protection sample, and any padding asked for.
            let min_payload =
                (4usize.saturating_sub(pn_len)).max(pad_to.saturating_sub(payload_start + TAG_LEN));
            if w.len() < min_payload {
                let pad = (min_payload - w.len()).min(w.remaining());
                w.zeros(pad)?;
            }
            w.len()
        };
        let packet_len = payload_start + payload_len + TAG_LEN;
        if i < 2 {
            let length = (pn_len + payload_len + TAG_LEN) as u16;
            out[hdr - 2..hdr].copy_from_slice(&(0x4000 | length).to_be_bytes());
        }
        let space = &mut self.spaces[i];
        let tx = space.tx.as_mut()?;
        if protect_packet(&mut out[..packet_len], hdr, pn, &mut tx.packet, &tx.header).is_err() {
            // The key is exhausted and an update is not yet allowed: send nothing.
            return None;
        }
        space.next_pn += 1;
        if space.probes > 0 && eliciting {
            space.probes -= 1;
        }
        if eliciting {
            space.eliciting_in_flight += 1;
            space.last_eliciting_sent = Some(now);
            if let Some(d) = self.idle_timeout {
                if self.idle_deadline.is_none() {
                    self.idle_deadline = Some(now + d);
                }
            }
        }
        let in_flight = eliciting && i == 2;
        let rate = in_flight.then(|| self.rate.on_sent(now, self.in_flight, packet_len as u64));
        let space = &mut self.spaces[i];
        space.sent.push_back(SentPacket {
            pn,
            time: now,
            size: packet_len as u16,
            ack_eliciting: eliciting,
            crypto,
            handshake_done,
            done: !eliciting,
            acked: false,
            in_flight,
            ecn: self.ecn_marking,
            rate,
            rec,
        });
        if self.ecn_marking {
            space.ecn.sent_marked += 1;
        }
        space.compact();
        if in_flight {
            self.in_flight += packet_len as u64;
            self.cc.on_sent(now, packet_len as u64, self.in_flight);
            self.pacer.on_sent(packet_len as u64);
            self.last_eliciting_1rtt = Some(now);
        }
        self.stats.tx_packets += 1;
        if i == 1 && self.side == Side::Client && !self.spaces[0].discarded {
            // The client's first Handshake packet retires the Initial keys (RFC 9001 §4.9.1).
            self.spaces[0].discard();
        }
        Some((packet_len, eliciting))
    }

    /// Writes the 1-RTT-only frames (path, CIDs, stream control, DATAGRAMs, PING, STREAM)
    /// into `w`, recording what must be retransmitted; returns whether any is
    /// ack-eliciting.
    fn write_one_rtt_frames(
        &mut self,
        w: &mut Out<'_>,
        data_ok: bool,
        mtu_probe: Option<usize>,
    ) -> bool {
        let mut eliciting = false;
        while let Some(f) = self.raw_frames.front() {
            if w.put(f).is_none() {
                break;
            }
            self.raw_frames.pop_front();
            eliciting = true;
        }
        // Path frames go out regardless of congestion: they are small and time-critical.
        if let Some(d) = self.path.response
            && frame::encode_path(w, true, &d).is_some()
        {
            self.path.response = None;
            eliciting = true;
        }
        if let Some(v) = self
            .path
            .validation
            .as_mut()
            .filter(|v| v.challenge_pending)
            && frame::encode_path(w, false, &v.token).is_some()
        {
            v.challenge_pending = false;
            eliciting = true;
        }
        if self.ping_pending && w.varint(frame::ty::PING).is_some() {
            self.ping_pending = false;
            self.address_ping = false;
            eliciting = true;
        }
        if let Some(size) = mtu_probe {
            // The probe: PING, then the caller pads to the probe size.
            if w.varint(frame::ty::PING).is_some() {
                self.spaces[2]
                    .records
                    .push_back(Record::MtuProbe(size as u16));
            }
            return true;
        }
        let probing = self.spaces[2].probes > 0;
        if self.state != State::Established || !(data_ok || probing) {
            return eliciting;
        }
        let records = &mut self.spaces[2].records;
        while let Some(&seq) = self.path.retire_pending.front() {
            if frame::encode_varints(w, &[frame::ty::RETIRE_CONNECTION_ID, seq]).is_none() {
                break;
            }
            self.path.retire_pending.pop_front();
            records.push_back(Record::RetireCid(seq));
            eliciting = true;
        }
        self.path.write_new_cids(w, |seq| {
            records.push_back(Record::NewCid(seq));
            eliciting = true;
        });
        let before = w.len();
        self.streams
            .write_control(w, &mut |r| records.push_back(Record::Stream(r)));
        while let Some((seq, ty, payload)) = self.ext_out.front() {
            if frame::encode_extension(w, *ty, *seq, payload).is_none() {
                break;
            }
            let e = self.ext_out.pop_front().expect("front exists");
            records.push_back(Record::Extension(e.0));
            self.ext_sent.push(e);
            eliciting = true;
        }
        while let Some(d) = self.datagrams_out.front() {
            let need = 1 + frame::varint_len(d.len() as u64) + d.len();
            if need > w.remaining() {
                if w.is_empty() {
                    // Cannot fit even alone (the path shrank): drop it.
                    self.datagrams_out.discard_front();
                    continue;
                }
                break;
            }
            let _ = frame::encode_datagram(w, d, false);
            self.datagrams_out.discard_front();
            eliciting = true;
        }
        if self.datagrams_blocked && self.datagrams_out.len() < MAX_QUEUED_DATAGRAMS {
            self.datagrams_blocked = false;
            self.events.push_back(Event::DatagramsUnblocked);
        }
        self.streams
            .write_streams(w, &mut |r| records.push_back(Record::Stream(r)));
        eliciting || w.len() > before
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
        self.close_deadline = Some(now + 3 * self.pto_period(2));
        self.events.push_back(Event::Lost(e.clone()));
        self.error = Some(e);
    }

    fn enter_draining(&mut self, now: Instant, e: ConnectionError) {
        self.state = State::Draining;
        self.close_deadline = Some(now + 3 * self.pto_period(2));
        self.events.push_back(Event::Lost(e.clone()));
        self.error = Some(e);
    }
}
