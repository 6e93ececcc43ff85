//! The endpoint: CID routing, new-connection admission, and stateless answers.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use stoq_common::cid::ConnectionId;
use stoq_common::classify::{PacketKind, classify_payload};
use stoq_common::maps::ClassifierConfig;
use zeroize::Zeroizing;

use super::admission::PrefixTable;
use super::keys::{ClusterKeys, GENERATIONS};
use super::token::{TokenKey, reset_token};
use super::{
    Connection, ConnectionError, DatagramInfo, EcnCodepoint, Event, Setup, Side, Transmit,
    TransportTotals,
};
use crate::handshake::{self, Handshake, TicketKeys};

mod backlog;
mod config;
mod events;
mod incoming;
mod responses;
mod retried;
mod schedule;
mod signing;
mod stateless;
mod stun;

use self::responses::Responses;
use self::retried::Retried;
use self::schedule::Schedule;

/// Token nonces remembered to refuse replays.
const USED_TOKENS: usize = 65_536;
/// Datagrams held for an Incoming until the application decides.
const MAX_INCOMING_DATAGRAMS: usize = 4;
pub use self::config::{
    ConfigError, DEFAULT_MAX_HANDSHAKES_PER_PREFIX, DEFAULT_RETRY_THRESHOLD, EndpointConfig,
    RetryPolicy,
};
pub use self::events::{AcceptError, ConnectError, DatagramEvent, EndpointStats, RetryError};

/// A connection's index in its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionHandle(pub usize);

pub use self::incoming::Incoming;

/// A sans-IO endpoint: many connections behind one socket (or one AF_XDP queue).
///
/// Driven by hand (this is what the engine does with sockets): two endpoints, a
/// handshake through datagrams passed in memory, time passed in.
///
/// ```
/// use std::{sync::Arc, time::Instant};
/// use stoq::conn::{DatagramEvent, DatagramInfo, Endpoint, EndpointConfig};
/// use stoq::crypto::sig::{SigAlg, SigningKey};
/// use stoq::handshake::{ClientConfig, ServerConfig};
/// let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut rand_core::OsRng);
/// let mut server = Endpoint::new(
///     EndpointConfig::new(),
///     Some(Arc::new(ServerConfig::raw_key(key, public.clone()))),
/// )
/// .unwrap();
/// let mut client = Endpoint::new(EndpointConfig::new(), None).unwrap();
/// let (c_addr, s_addr) = ("[::1]:5000".parse().unwrap(), "[::1]:4433".parse().unwrap());
/// let now = Instant::now();
/// let h = client
///     .connect(now, s_addr, Arc::new(ClientConfig::pinned("server.example", public)))
///     .unwrap();
/// let mut buf = Vec::new();
/// for _ in 0..10 {
///     while let Some(t) = client.poll_transmit(now, &mut buf) {
///         let info = DatagramInfo::default();
///         if let Some(DatagramEvent::Incoming(i)) =
///             server.handle_datagram(now, c_addr, info, &mut buf[..t.size])
///         {
///             server.accept(i, now).unwrap();
///         }
///     }
///     while let Some(t) = server.poll_transmit(now, &mut buf) {
///         client.handle_datagram(now, s_addr, DatagramInfo::default(), &mut buf[..t.size]);
///     }
/// }
/// assert!(client.connection(h).unwrap().is_established());
/// ```
pub struct Endpoint {
    config: EndpointConfig,
    classifier: ClassifierConfig,
    server: Option<Arc<handshake::ServerConfig>>,
    rng: ChaCha20Rng,
    /// Token keys by generation; new tokens use `generation`'s.
    token_keys: [Option<TokenKey>; GENERATIONS],
    /// Stateless-reset keys by generation; new CIDs carry `generation`.
    reset_keys: [Option<Zeroizing<[u8; 32]>>; GENERATIONS],
    /// The cluster keys the per-generation keys come from.
    cluster_keys: ClusterKeys,
    /// Session-ticket keys and settings (servers only).
    ticket_keys: Option<Arc<TicketKeys>>,
    /// QUIC-LB keys by generation: CIDs of a generation with one are encrypted.
    lb_keys: [Option<super::quic_lb::LbKey>; GENERATIONS],
    generation: u8,
    conns: Vec<Option<Connection>>,
    free: Vec<usize>,
    live: usize,
    /// Connections whose handshake has neither completed nor failed, as seen through
    /// [`Endpoint::poll_event`]; kept as a count so the Retry policy costs O(1) per
    /// new client.
    pub(super) handshaking: usize,
    /// Server handshakes in progress by source prefix.
    pub(super) prefixes: PrefixTable,
    /// Every packet's DCID is looked up here, so the hash is foldhash's (seeded at random
    /// per map; the keys are CIDs this endpoint chose, so a peer cannot pick colliding
    /// ones): std's SipHash took 3 % of a receiving core in bulk.
    routes: HashMap<ConnectionId, ConnectionHandle, foldhash::fast::RandomState>,
    /// The CIDs routed to each slab entry, so freeing a connection touches only its own.
    conn_routes: Vec<Vec<ConnectionId>>,
    /// Each slab entry's last sampled memory, and the total.
    conn_mem: Vec<u64>,
    mem_total: u64,
    mem_resampled: Option<Instant>,
    /// The worker's budget of unsent stream bytes, split among busy senders.
    backlog: backlog::BacklogShare,
    reset_tokens: HashMap<[u8; 16], ConnectionHandle>,
    /// The token each connection has in `reset_tokens`: that of the peer CID it sends to.
    conn_reset: Vec<Option<[u8; 16]>>,
    incoming: HashMap<ConnectionId, Vec<(EcnCodepoint, Vec<u8>)>>,
    /// What the backend told of the datagram being processed.
    rx_info: DatagramInfo,
    used_tokens: HashSet<[u8; 12]>,
    used_order: VecDeque<[u8; 12]>,
    /// Stateless responses waiting to be sent.
    responses: Responses,
    /// Clients sent a Retry lately, which get one again for the rest of their flight.
    retried: Retried,
    sched: Schedule,
    /// Server connections whose handshake waits for its signature, signed together at the
    /// next poll for datagrams.
    signing: Vec<usize>,
    /// Scratch of the signing batch (kept to spare an allocation per batch).
    batch: Vec<(usize, [u8; 32])>,
    /// Waiting handshakes stay unsigned and unsent ([`Endpoint::hold_signatures`]).
    signatures_held: bool,
    /// Connections freed, for [`Endpoint::poll_removed`].
    removed: VecDeque<ConnectionHandle>,
    /// STUN Binding transactions (the reflexive address).
    stun: crate::nat::binding::Bindings,
    /// The TURN allocation, if any (the relay fallback).
    turn: Option<crate::nat::turn::Turn>,
    stats: EndpointStats,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("connections", &self.live)
            .field("server", &self.server.is_some())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint; with `server` set it accepts connections.
    ///
    /// # Errors
    /// A [`ConfigError`] for bad settings.
    pub fn new(
        config: EndpointConfig,
        server: Option<Arc<handshake::ServerConfig>>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        if let Some(s) = &server {
            handshake::check_alpn(&s.alpn).map_err(ConfigError::Alpn)?;
            s.tickets.check().map_err(ConfigError::Tickets)?;
            s.early_data.check().map_err(ConfigError::EarlyData)?;
        }
        let mut rng = ChaCha20Rng::from_seed(config.rng_seed);
        // Drawn whether or not a key set is given, so the stream after it (CIDs, nonces)
        // is the same for a given seed either way.
        let mut secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut secret[..]);
        let mut unused = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut unused[..]);
        let keys = match &config.cluster_keys {
            Some(k) => ClusterKeys::clone(k),
            None => ClusterKeys::new(0, *secret).expect("generation 0"),
        };
        let budget = config.transport.send_backlog;
        let mut me = Self {
            classifier: ClassifierConfig::new(&config.cid_layout),
            config,
            server,
            rng,
            token_keys: Default::default(),
            reset_keys: Default::default(),
            lb_keys: Default::default(),
            cluster_keys: keys.clone(),
            ticket_keys: None,
            generation: 0,
            conns: Vec::new(),
            free: Vec::new(),
            live: 0,
            handshaking: 0,
            prefixes: PrefixTable::default(),
            routes: HashMap::default(),
            conn_routes: Vec::new(),
            conn_mem: Vec::new(),
            backlog: backlog::BacklogShare::new(budget),
            mem_total: 0,
            mem_resampled: None,
            reset_tokens: HashMap::new(),
            conn_reset: Vec::new(),
            incoming: HashMap::new(),
            rx_info: DatagramInfo::default(),
            used_tokens: HashSet::new(),
            used_order: VecDeque::new(),
            responses: Responses::default(),
            retried: Retried::default(),
            sched: Schedule::default(),
            signing: Vec::new(),
            batch: Vec::new(),
            signatures_held: false,
            removed: VecDeque::new(),
            stun: crate::nat::binding::Bindings::default(),
            turn: None,
            stats: EndpointStats::default(),
        };
        me.set_cluster_keys(&keys);
        Ok(me)
    }

    /// Replaces the cluster keys (a rotation): new CIDs and tokens use the new current
    /// generation; resets and tokens of every generation in `keys` keep working, so a
    /// generation still in use by live connections must stay in the set. No connection is
    /// dropped.
    pub fn set_cluster_keys(&mut self, keys: &ClusterKeys) {
        for g in 0..GENERATIONS as u8 {
            self.token_keys[usize::from(g)] = keys.token_key(g).map(|k| TokenKey::new(&k));
            self.reset_keys[usize::from(g)] = keys.reset_key(g);
            self.lb_keys[usize::from(g)] = keys.lb_key(g);
        }
        self.generation = keys.current();
        self.cluster_keys = keys.clone();
        self.rebuild_ticket_keys();
    }

    /// The session-ticket keys from the cluster keys and the server's ticket settings.
    fn rebuild_ticket_keys(&mut self) {
        self.ticket_keys = self
            .server
            .as_ref()
            .map(|s| Arc::new(self.cluster_keys.ticket_keys(s.tickets)));
    }

    /// Replaces the server's handshake settings (a new key or certificate chain, client
    /// authentication, suites, transport parameters) without a restart: connections
    /// accepted from now on use them; established connections and handshakes already
    /// under way keep the settings they started with.
    ///
    /// # Errors
    /// [`ConfigError::NotAServer`] on a client endpoint (it has no server settings).
    pub fn set_server_config(
        &mut self,
        config: Arc<handshake::ServerConfig>,
    ) -> Result<(), ConfigError> {
        handshake::check_alpn(&config.alpn).map_err(ConfigError::Alpn)?;
        config.tickets.check().map_err(ConfigError::Tickets)?;
        config.early_data.check().map_err(ConfigError::EarlyData)?;
        match &mut self.server {
            Some(s) => {
                *s = config;
                self.rebuild_ticket_keys();
                Ok(())
            }
            None => Err(ConfigError::NotAServer),
        }
    }

    /// The stateless-reset key for a CID: that of the generation in its first octet (the
    /// current one's when the CID names none this endpoint knows).
    fn reset_key_for(&self, cid: &ConnectionId) -> &[u8; 32] {
        let g = cid.as_bytes().first().map_or(self.generation, |b| b >> 5);
        self.reset_keys
            .get(usize::from(g))
            .and_then(Option::as_ref)
            .or(self.reset_keys[usize::from(self.generation)].as_ref())
            .expect("the current generation has a key")
    }

    /// Retry packets sent so far (the one counter [`Endpoint::stats`] has that a worker
    /// publishes every turn, without copying the rest).
    pub fn retries_sent(&self) -> u64 {
        self.stats.retries_sent
    }

    /// Counters.
    pub fn stats(&self) -> EndpointStats {
        let mut s = self.stats;
        s.memory = self.mem_total;
        s.stun = self.stun.stats;
        s.turn = self.turn.as_ref().map(|t| t.stats).unwrap_or_default();
        s
    }

    /// The transport counters of every connection this endpoint has had, live and ended,
    /// summed: bytes, packets and datagrams each way, losses, PTOs, congestion events and
    /// RTT samples. Reads each live connection's counters (linear in the connections).
    pub fn transport_totals(&self) -> TransportTotals {
        let mut t = self.stats.closed;
        for c in self.conns.iter().flatten() {
            t.add(&c.stats());
        }
        t
    }

    /// Connections whose handshake has neither completed nor failed.
    pub fn handshaking(&self) -> usize {
        self.handshaking
    }

    /// Whether the server is under load: its [`RetryPolicy`] demands a Retry of new
    /// clients, and per-prefix limits apply.
    pub fn under_load(&self) -> bool {
        match self.config.retry {
            RetryPolicy::Never => false,
            RetryPolicy::Always => true,
            RetryPolicy::WhenHandshakingAbove(n) => self.handshaking >= n,
        }
    }

    /// Live connections.
    pub fn connection_count(&self) -> usize {
        self.live
    }

    /// The connection behind `h`.
    pub fn connection(&self, h: ConnectionHandle) -> Option<&Connection> {
        self.conns.get(h.0)?.as_ref()
    }

    /// The connection behind `h`, mutably (to send, close, or read).
    pub fn connection_mut(&mut self, h: ConnectionHandle) -> Option<&mut Connection> {
        // The application may make work (data to send, timers): look at it again.
        if self.conns.get(h.0).is_some_and(Option::is_some) {
            self.sched.touch(h.0);
        }
        self.conns.get_mut(h.0)?.as_mut()
    }

    /// This endpoint now sends from a new local address (its socket was replaced): every
    /// established connection tells its peer with a PING from the new address (see
    /// [`Connection::handle_local_address_change`]).
    pub fn handle_local_address_change(&mut self) {
        for (i, c) in self.conns.iter_mut().enumerate() {
            if let Some(c) = c {
                c.handle_local_address_change();
                self.sched.touch(i);
            }
        }
    }

    /// Unix time in milliseconds at `now`: tokens carry it, so any server of a cluster
    /// (with a clock in step) can tell their age.
    fn unix_ms(&self, now: Instant) -> u64 {
        let (at, unix_s) = self.config.unix_time_at;
        let base = unix_s.saturating_mul(1000);
        match now.checked_duration_since(at) {
            Some(d) => base.saturating_add(d.as_millis() as u64),
            None => base.saturating_sub(at.duration_since(now).as_millis() as u64),
        }
    }

    /// The session-ticket keys (servers only).
    pub(super) fn ticket_keys(&self) -> Arc<TicketKeys> {
        self.ticket_keys
            .clone()
            .expect("a server endpoint has ticket keys")
    }

    #[cfg(test)]
    pub(super) fn new_cid_for_test(&mut self) -> ConnectionId {
        self.new_cid()
    }

    fn new_cid(&mut self) -> ConnectionId {
        let l = self.config.cid_layout;
        loop {
            let mut nonce = [0u8; 20];
            self.rng.fill_bytes(&mut nonce[..l.nonce_len()]);
            let mut cid = l
                .build(
                    self.generation,
                    self.config.server_id,
                    self.config.worker_id,
                    &nonce[..l.nonce_len()],
                )
                .expect("validated in Endpoint::new");
            if let Some(key) = &self.lb_keys[usize::from(self.generation)] {
                let mut b = [0u8; 20];
                b[..cid.len()].copy_from_slice(cid.as_bytes());
                key.encrypt(&mut b[1..cid.len()]);
                cid = ConnectionId::from_slice(&b[..cid.len()]).expect("same length");
            }
            if !self.routes.contains_key(&cid) {
                return cid;
            }
        }
    }

    /// The worker a CID of this endpoint's layout names: read at its offset, or, for a
    /// generation with a QUIC-LB key, after decrypting a copy.
    pub fn cid_worker(&self, cid: &[u8]) -> Option<u8> {
        let l = self.config.cid_layout;
        if cid.len() != l.len() {
            return None;
        }
        let g = cid[0] >> 5;
        match self.lb_keys.get(usize::from(g)).and_then(Option::as_ref) {
            Some(key) => {
                let mut b = [0u8; 20];
                b[..cid.len()].copy_from_slice(cid);
                key.decrypt(&mut b[1..cid.len()]);
                Some(b[l.worker_offset()])
            }
            None => Some(cid[l.worker_offset()]),
        }
    }

    /// Whether this endpoint's CIDs (of any generation) are encrypted for QUIC-LB.
    pub fn encrypts_cids(&self) -> bool {
        self.lb_keys.iter().any(Option::is_some)
    }

    fn insert(&mut self, mut conn: Connection) -> ConnectionHandle {
        self.live += 1;
        self.handshaking += 1;
        conn.counted_handshaking = true;
        let h = if let Some(i) = self.free.pop() {
            self.conns[i] = Some(conn);
            ConnectionHandle(i)
        } else {
            self.conns.push(Some(conn));
            self.conn_routes.push(Vec::new());
            self.conn_mem.push(0);
            self.conn_reset.push(None);
            self.sched.grow(self.conns.len());
            ConnectionHandle(self.conns.len() - 1)
        };
        self.backlog.reset_slot(h.0);
        self.sched.touch(h.0);
        h
    }

    /// Routes `cid` to `h`.
    fn route(&mut self, cid: ConnectionId, h: ConnectionHandle) {
        self.routes.insert(cid, h);
        self.conn_routes[h.0].push(cid);
    }

    /// Re-samples connection `h`'s memory into the endpoint's total.
    fn account(&mut self, h: ConnectionHandle) {
        let now = self.conns[h.0].as_ref().map_or(0, Connection::memory);
        self.mem_total = self.mem_total - self.conn_mem[h.0] + now;
        self.conn_mem[h.0] = now;
    }

    fn setup(&mut self, side: Side, now: Instant, remote: SocketAddr) -> Setup {
        let local_cid = self.new_cid();
        let mut rng_seed = [0u8; 32];
        self.rng.fill_bytes(&mut rng_seed);
        Setup {
            side,
            now,
            remote,
            local_ip: None,
            local_cid,
            remote_cid: ConnectionId::EMPTY,
            initial_dcid: ConnectionId::EMPTY,
            orig_dcid: ConnectionId::EMPTY,
            retry_scid: None,
            validated: false,
            mtu: self.config.max_udp_payload,
            classifier: self.classifier,
            rng_seed,
            unix_base: self.config.unix_time_at,
            transport: self.config.transport.clone(),
        }
    }

    /// Opens a connection to `remote`. Its first flight is ready in
    /// [`poll_transmit`](Self::poll_transmit).
    ///
    /// # Errors
    /// [`ConnectError`] for an unusable configuration or at the connection limit.
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        config: Arc<handshake::ClientConfig>,
    ) -> Result<ConnectionHandle, ConnectError> {
        if config.suites.is_empty() {
            return Err(ConnectError::NoSuites);
        }
        if let Some(s) = config.suites.iter().find(|s| !s.available()) {
            return Err(ConnectError::SuiteUnavailable(*s));
        }
        if config.sig_algs.is_empty() {
            return Err(ConnectError::NoSignatureAlgorithms);
        }
        if config.server_name.is_empty() || config.server_name.len() > 255 {
            return Err(ConnectError::BadServerName);
        }
        handshake::check_alpn(&config.alpn).map_err(ConnectError::BadAlpn)?;
        if self.live >= self.config.max_connections {
            return Err(ConnectError::ConnectionLimit);
        }
        let mut s = self.setup(Side::Client, now, remote);
        let mut dcid = [0u8; 16];
        self.rng.fill_bytes(&mut dcid);
        let dcid = ConnectionId::from_slice(&dcid).expect("16 bytes");
        s.remote_cid = dcid;
        s.initial_dcid = dcid;
        s.orig_dcid = dcid;
        let mut params = config.params.clone();
        params.initial_source_cid = Some(s.local_cid);
        params.original_destination_cid = None;
        params.retry_source_cid = None;
        params.stateless_reset_token = None;
        let unix_s = self.unix_ms(now) / 1000;
        // An address token this server sent earlier: no Retry round trip under load.
        let token = config
            .resumption
            .as_ref()
            .and_then(|c| c.take_address_token(&config.server_name, &config.trust));
        let hs = Handshake::client(config, params.clone(), unix_s, &mut self.rng);
        let local = s.local_cid;
        let mut conn = Connection::new(s, hs, params);
        if let Some(t) = token {
            conn.set_initial_token(t);
        }
        let h = self.insert(conn);
        self.route(local, h);
        Ok(h)
    }

    /// Processes one received datagram, decrypting in place in `data`, with what the I/O
    /// backend knows of it: its ECN codepoint (counted and reported to the peer) and the
    /// local address it arrived at (replies go out from it). [`DatagramInfo::default`]
    /// says nothing is known. This is the core's one entry point for datagrams: it
    /// answers what needs no connection state and hands the rest to the connection its
    /// destination CID names.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        info: DatagramInfo,
        data: &mut [u8],
    ) -> Option<DatagramEvent> {
        self.stats.rx_datagrams += 1;
        self.rx_info = info;
        if self.is_channel_data(remote, data) {
            // The peer's datagram, handled as if it came from the peer (dropped and counted
            // by the TURN client when the channel or length is wrong).
            let (peer, range) = self.turn.as_mut()?.channel_data(data)?;
            return self.handle_relayed(now, peer, &mut data[range]);
        }
        let info = match classify_payload(data, &self.classifier) {
            Ok(i) => i,
            Err(r) => {
                if !self.check_reset(data) {
                    self.stats.malformed[r as usize] += 1;
                }
                return None;
            }
        };
        if info.kind == PacketKind::Stun {
            // A peer's datagram relayed by the TURN server: unwrapped, and handled as if
            // it came from the peer (once: a relayed STUN message goes no further).
            let (peer, range) = self.handle_stun(now, remote, data)?;
            return self.handle_relayed(now, peer, &mut data[range]);
        }
        self.handle_stoq(now, remote, data, info)
    }

    /// A peer's datagram that came through the TURN relay: STOQ only (a relayed STUN
    /// message goes no further).
    fn handle_relayed(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        inner: &mut [u8],
    ) -> Option<DatagramEvent> {
        let info = match classify_payload(inner, &self.classifier) {
            Ok(i) if i.kind != PacketKind::Stun => i,
            Ok(_) => return None,
            Err(r) => {
                self.stats.malformed[r as usize] += 1;
                return None;
            }
        };
        self.handle_stoq(now, peer, inner, info)
    }

    /// A datagram the classifier found to be STOQ.
    fn handle_stoq(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        data: &mut [u8],
        info: stoq_common::classify::HeaderInfo,
    ) -> Option<DatagramEvent> {
        if info.kind == PacketKind::UnknownVersion {
            if self.server.is_some() {
                self.version_negotiation(remote, data, &info);
            } else {
                self.stats.unknown_cid += 1;
            }
            return None;
        }
        // Routed by the header's bytes: no copy of the CID on the per-packet path.
        let dcid = &data[info.dcid_off..info.dcid_off + info.dcid_len];
        if let Some(&h) = self.routes.get(dcid) {
            if let Some(c) = self.conns[h.0].as_mut() {
                c.receive(now, remote, self.rx_info, data, Some(info));
                self.sched.touch(h.0);
                if c.hs.awaits_signature() {
                    self.wait_for_signature(h.0);
                }
            }
            self.service_cids(h);
            self.service_address_token(h, now);
            self.account(h);
            return Some(DatagramEvent::Connection(h));
        }
        if let Some(held) = self.incoming.get_mut(dcid) {
            // More of a client's first flight, before the application decided.
            if held.len() < MAX_INCOMING_DATAGRAMS {
                held.push((self.rx_info.ecn, data.to_vec()));
            }
            return None;
        }
        match info.kind {
            PacketKind::Initial if self.server.is_some() => {
                let dcid = ConnectionId::from_slice(dcid).unwrap_or(ConnectionId::EMPTY);
                self.new_client(now, remote, data, &info, dcid)
            }
            PacketKind::Short => {
                if !self.check_reset(data) {
                    self.stateless_reset(remote, data);
                }
                None
            }
            _ => {
                if !self.check_reset(data) {
                    self.stats.unknown_cid += 1;
                }
                None
            }
        }
    }

    fn check_reset(&mut self, data: &[u8]) -> bool {
        if data.len() < 21 {
            return false;
        }
        let mut tail = [0u8; 16];
        tail.copy_from_slice(&data[data.len() - 16..]);
        let Some(&h) = self.reset_tokens.get(&tail) else {
            return false;
        };
        if let Some(c) = self.conns[h.0].as_mut() {
            c.on_reset();
            self.sched.touch(h.0);
        }
        self.stats.resets_received += 1;
        true
    }

    /// The next datagram to send, written into `buf`: it is `buf[..size]` (see
    /// [`Connection::poll_transmit`]). Connections take turns, one datagram each.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.sign_waiting(now);
        let size = self.max_datagram_size();
        if buf.len() < size {
            buf.resize(size, 0);
        }
        if let Some(t) = self.poll_stun(now, buf) {
            return Some(t);
        }
        if let Some(t) = self
            .responses
            .pop_into(buf, &mut self.stats.responses_dropped)
        {
            return Some(t);
        }
        self.poll_connections(now, buf)
    }

    /// As [`poll_transmit`](Self::poll_transmit), into a fixed buffer (an I/O backend's
    /// frame): the datagram is `buf[..size]`. The buffer should hold the largest datagram
    /// the transport may send (`max_udp_payload`, the ceiling of path MTU discovery);
    /// shorter buffers make smaller datagrams, and a stateless response that does not fit
    /// is dropped (counted in `responses_dropped`).
    pub fn poll_transmit_into(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.sign_waiting(now);
        if let Some(t) = self.poll_stun(now, buf) {
            return Some(t);
        }
        if let Some(t) = self
            .responses
            .pop_into(buf, &mut self.stats.responses_dropped)
        {
            return Some(t);
        }
        self.poll_connections(now, buf)
    }

    /// The next datagram of the connections that may have something to send, taking
    /// turns (one datagram each).
    fn poll_connections(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.refresh_touched();
        for _ in 0..self.sched.sendable.len() {
            let Some(i) = self.sched.sendable.pop_front() else {
                break;
            };
            let Some(c) = self.conns[i].as_mut() else {
                self.sched.is_sendable[i] = false;
                continue;
            };
            if self.signatures_held && c.hs.awaits_signature() {
                // Sent once signed (signing touches it).
                self.sched.is_sendable[i] = false;
                continue;
            }
            let t = c.poll_transmit_into(now, buf);
            if t.is_some() {
                if let Some(share) = self.backlog.on_transmit(now, i, c.unsent()) {
                    c.set_backlog_share(share);
                }
            }
            // To a peer reached through the TURN relay: in a Send indication to it. Without
            // room to wrap it, the datagram is lost (counted) and recovered as any loss.
            let t = match t {
                Some(tt)
                    if self
                        .turn
                        .as_ref()
                        .is_some_and(|r| r.relays_to(tt.destination)) =>
                {
                    let w = self.relay(now, tt, buf);
                    if w.is_none() {
                        self.sched.retime(i);
                        self.sched.sendable.push_back(i);
                        continue;
                    }
                    w
                }
                other => other,
            };
            // Sending moves timers (loss detection, pacing) and may raise events: the
            // deadline is recomputed once, when the timers are next asked for.
            self.sched.retime(i);
            self.sched.mark_eventful(i);
            match t {
                Some(t) => {
                    self.sched.sendable.push_back(i);
                    // Writes since the last sample show up here.
                    self.account(ConnectionHandle(i));
                    return Some(t);
                }
                None => self.sched.is_sendable[i] = false,
            }
        }
        None
    }

    /// Takes in the connections touched since the last poll (their timers, and whether
    /// they may send or have events) and recomputes the timers that sending moved.
    fn refresh(&mut self) {
        self.refresh_touched();
        while let Some(i) = self.sched.retimed.pop() {
            self.sched.is_retimed[i] = false;
            if let Some(c) = self.conns[i].as_ref() {
                let d = c.poll_timeout();
                self.sched.set_deadline(i, d);
            }
        }
        self.sched.compact(self.live);
    }

    /// Takes in the connections touched since the last poll.
    fn refresh_touched(&mut self) {
        while let Some(i) = self.sched.touched.pop() {
            self.sched.is_touched[i] = false;
            let Some(c) = self.conns[i].as_ref() else {
                continue;
            };
            let d = c.poll_timeout();
            let token = c.active_reset_token();
            if token != self.conn_reset[i] {
                self.set_reset_token(ConnectionHandle(i), token);
            }
            self.sched.set_deadline(i, d);
            self.sched.mark_sendable(i);
            self.sched.mark_eventful(i);
        }
    }

    /// Makes `token` the one that identifies a stateless reset for `h` (RFC 9000 §10.3:
    /// the token of the CID it now sends to, which changes when it rotates CIDs or the
    /// peer retires the one in use). A token another connection registered first stays
    /// that connection's: a peer cannot take over another's reset detection.
    fn set_reset_token(&mut self, h: ConnectionHandle, token: Option<[u8; 16]>) {
        if let Some(old) = self.conn_reset[h.0].take()
            && self.reset_tokens.get(&old) == Some(&h)
        {
            self.reset_tokens.remove(&old);
        }
        if let Some(t) = token {
            self.reset_tokens.entry(t).or_insert(h);
        }
        self.conn_reset[h.0] = token;
    }

    /// The largest datagram any connection may send: the size an I/O buffer passed to
    /// [`poll_transmit_into`](Self::poll_transmit_into) should have.
    pub fn max_datagram_size(&self) -> usize {
        self.config.max_udp_payload
    }

    /// A connection freed since the last call (it drained and its last event was
    /// returned): its handle may now be reused by a new connection.
    pub fn poll_removed(&mut self) -> Option<ConnectionHandle> {
        self.removed.pop_front()
    }

    /// The earliest timer over all connections.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.refresh();
        let stun = self.stun_timeout();
        while let Some(&Reverse((t, i))) = self.sched.timers.peek() {
            if self.sched.deadline[i] == Some(t) && self.conns[i].is_some() {
                return Some(stun.map_or(t, |s| s.min(t)));
            }
            self.sched.timers.pop();
        }
        stun
    }

    /// Fires every expired timer: the connections', and STUN transactions' ends.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.stun_handle_timeout(now);
        self.refresh();
        while let Some(&Reverse((t, i))) = self.sched.timers.peek() {
            if t > now {
                break;
            }
            self.sched.timers.pop();
            if self.sched.deadline[i] != Some(t) {
                continue;
            }
            self.sched.deadline[i] = None;
            if let Some(c) = self.conns[i].as_mut()
                && c.poll_timeout().is_some_and(|t| t <= now)
            {
                c.handle_timeout(now);
                self.service_cids(ConnectionHandle(i));
                self.account(ConnectionHandle(i));
            }
            self.sched.touch(i);
        }
    }

    /// Gives a connection the CIDs it wants to issue (each routes here and carries this
    /// worker's id) and stops routing the ones its peer retired.
    /// Gives a server connection whose handshake just completed an address token for its
    /// client (sent in NEW_TOKEN).
    fn service_address_token(&mut self, h: ConnectionHandle, now: Instant) {
        let Some(c) = self.conns[h.0].as_mut() else {
            return;
        };
        if !c.wants_address_token() {
            return;
        }
        if self.config.address_token_lifetime.is_zero() {
            c.give_address_token(None);
            return;
        }
        let g = self.generation;
        let ip = c.remote_address().ip();
        let now_ms = self.unix_ms(now);
        let Some(key) = self.token_keys[usize::from(g)].as_ref() else {
            return;
        };
        let token = key.seal_address(&mut self.rng, g, ip, now_ms);
        self.stats.address_tokens_sent += 1;
        if let Some(c) = self.conns[h.0].as_mut() {
            c.give_address_token(Some(token));
        }
    }

    fn service_cids(&mut self, h: ConnectionHandle) {
        let Some(c) = self.conns[h.0].as_mut() else {
            return;
        };
        if !c.cid_service_due() {
            return;
        }
        for cid in c.take_retired_cids() {
            self.routes.remove(&cid);
            self.conn_routes[h.0].retain(|c| *c != cid);
        }
        let want = c.cids_wanted();
        for _ in 0..want {
            let cid = self.new_cid();
            let token = reset_token(self.reset_key_for(&cid), &cid);
            self.route(cid, h);
            if let Some(c) = self.conns[h.0].as_mut() {
                c.issue_cid(cid, token);
            }
        }
    }

    /// The next connection event. Connections that drained are freed after their last
    /// event has been returned.
    pub fn poll_event(&mut self) -> Option<(ConnectionHandle, Event)> {
        self.refresh_touched();
        while let Some(&i) = self.sched.eventful.front() {
            let Some(c) = self.conns[i].as_mut() else {
                self.sched.eventful.pop_front();
                self.sched.is_eventful[i] = false;
                continue;
            };
            if let Some(e) = c.poll_event() {
                let h = ConnectionHandle(i);
                if c.counted_handshaking && matches!(e, Event::Connected | Event::Lost(_)) {
                    c.counted_handshaking = false;
                    self.handshaking -= 1;
                    self.prefixes.release(i);
                    match &e {
                        Event::Connected => {
                            self.stats.handshakes_completed += 1;
                            match c.resumption() {
                                handshake::Resumption::Accepted => {
                                    self.stats.handshakes_resumed += 1;
                                }
                                handshake::Resumption::Refused(r) => {
                                    self.stats.tickets_refused[r as usize] += 1;
                                }
                                handshake::Resumption::NotOffered => {}
                            }
                            match c.early_data() {
                                handshake::EarlyData::Accepted => {
                                    self.stats.early_data_accepted += 1;
                                }
                                handshake::EarlyData::Refused(r) => {
                                    self.stats.early_data_refused[r as usize] += 1;
                                }
                                _ => {}
                            }
                        }
                        Event::Lost(
                            ConnectionError::HandshakeTimedOut | ConnectionError::TimedOut,
                        ) => {
                            self.stats.handshakes_timed_out += 1;
                        }
                        _ => self.stats.handshakes_failed += 1,
                    }
                }
                return Some((h, e));
            }
            self.sched.eventful.pop_front();
            self.sched.is_eventful[i] = false;
            if c.is_drained() {
                self.remove(ConnectionHandle(i));
            }
        }
        None
    }

    fn remove(&mut self, h: ConnectionHandle) {
        if let Some(c) = self.conns[h.0].take() {
            self.live -= 1;
            if c.counted_handshaking {
                // Freed before its outcome was polled: it never completed.
                self.handshaking -= 1;
                self.stats.handshakes_failed += 1;
            }
            self.stats.closed.add(&c.stats());
            self.prefixes.release(h.0);
            self.free.push(h.0);
            for cid in std::mem::take(&mut self.conn_routes[h.0]) {
                self.routes.remove(&cid);
            }
            self.set_reset_token(h, None);
            self.mem_total -= self.conn_mem[h.0];
            self.conn_mem[h.0] = 0;
            self.sched.deadline[h.0] = None;
            // Bounded: an application that never asks keeps the latest only.
            if self.removed.len() >= self.config.max_connections {
                self.removed.pop_front();
            }
            self.removed.push_back(h);
        }
    }
}
