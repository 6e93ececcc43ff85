//! A TURN client (RFC 8656) for one allocation on a relay: the fallback when no direct
//! path between two peers exists (two symmetric NATs).
//!
//! Sans-IO, inside the [`Endpoint`](crate::conn::Endpoint): it allocates a relayed address
//! with the long-term credential mechanism (RFC 8489 §9.2: a 401 with REALM and NONCE,
//! then requests with USERNAME, REALM, NONCE and MESSAGE-INTEGRITY, HMAC-SHA1 under
//! `MD5(username:realm:password)`), refreshes it before it expires, creates permissions
//! for the peers' addresses, and carries STOQ datagrams in Send and Data indications until
//! a channel is bound to the peer, then in ChannelData (4 bytes of overhead instead of
//! 36). The relay sees STOQ's packets, which are encrypted end to end: only ciphertext.
//!
//! ChannelData's first byte (0x40-0x4F) lies in STOQ's short-header range, so the
//! endpoint recognises it by its source, the relay's address, before anything else
//! looks at it. Channel numbers are chosen so that the second byte reads as a short
//! header's CID length byte of the endpoint's layout ([`channel_number`]): the XDP
//! program and the kernel's SO_REUSEPORT steering take ChannelData for a STOQ packet and
//! pass it up like one, and userspace steers it to the worker that holds the allocation.
//!
//! Hostile input: only messages from the relay's address are looked at; a response must
//! answer an outstanding request, and when it carries MESSAGE-INTEGRITY it must verify
//! under the key; a Data indication must name a peer with a permission. Everything else is
//! dropped and counted ([`TurnStats`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::retransmit::Schedule;
use md5::{Digest, Md5};
use stoq_common::wire::stun::{
    Class, METHOD_ALLOCATE, METHOD_BINDING, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION,
    METHOD_DATA, METHOD_REFRESH, METHOD_SEND, Message, Writer, attr,
};

/// A transaction gives up after this long.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Permissions last 300 s (RFC 8656 §9); refreshed after this long.
const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// The most peers with a permission.
pub const MAX_PERMISSIONS: usize = 64;
/// The most peer addresses remembered as reached through the relay.
pub const MAX_RELAYED_PEERS: usize = 1024;
/// Bytes a Send indication adds in front of a datagram to an IPv4 peer (header,
/// XOR-PEER-ADDRESS, DATA's header); 12 more for an IPv6 peer, and up to 3 of padding
/// after it.
pub const SEND_OVERHEAD_V4: usize = 20 + 12 + 4;
/// Bytes ChannelData adds in front of a datagram (channel number, length; no padding over
/// UDP, RFC 8656 §12.5).
pub const CHANNEL_OVERHEAD: usize = 4;
/// The most channels bound (one per peer address reached through the relay).
pub const MAX_CHANNELS: usize = 64;
/// A channel binding lasts 10 minutes (RFC 8656 §12); refreshed after this long.
const CHANNEL_REFRESH: Duration = Duration::from_secs(480);
/// With nothing sent to the relay for this long, a Binding indication goes to it: this
/// endpoint's NAT keeps the mapping the relay forwards to (RFC 8656 §5 asks for a
/// keep-alive below the NAT's timeout; many forget an idle UDP mapping after 30 s).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The channel number of the `index`th channel (below [`MAX_CHANNELS`]) for an endpoint
/// whose connection IDs are `cid_len` bytes (1 to 20): in RFC 8656's range 0x4000-0x4FFF,
/// with the low five bits of its second byte equal to `cid_len - 1`, as a short header's
/// first CID byte of the layout has them, so that ChannelData passes the packet
/// classifier's shape check (`stoq_common::classify`). 128 numbers fit that pattern.
pub fn channel_number(index: usize, cid_len: u8) -> u16 {
    let i = (index % 128) as u16;
    0x4000 | ((i & 0x0f) << 8) | ((i >> 4) << 5) | u16::from(cid_len.saturating_sub(1) & 0x1f)
}

/// The long-term credentials of a TURN server account.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    /// The username (used as given: no SASLprep, so keep it to ASCII).
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why the relay could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    /// The relay refused with an error code (after credentials were offered, for 401).
    #[error("the TURN server refused: error {code}")]
    Refused {
        /// The ERROR-CODE.
        code: u16,
    },
    /// No answer within the transaction's time.
    #[error("no answer from the TURN server")]
    TimedOut,
    /// A success response without the relayed address.
    #[error("the TURN server's answer has no relayed address")]
    NoRelayedAddress,
    /// An allocation exists or is being made already.
    #[error("this endpoint already has a TURN allocation")]
    AlreadyAllocating,
    /// No allocation: allocate first.
    #[error("no TURN allocation: call turn_allocate first")]
    NotAllocated,
    /// [`MAX_PERMISSIONS`] peers have permissions already.
    #[error("{MAX_PERMISSIONS} TURN permissions already")]
    TooManyPermissions,
    /// The relay's address is unspecified or has port 0.
    #[error("a TURN server address needs an IP and a port (got {0})")]
    BadServer(SocketAddr),
}

/// What happened to the allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEvent {
    /// The allocation exists: peers may be told `relayed`.
    Allocated {
        /// The address on the relay that peers send to.
        relayed: SocketAddr,
        /// This endpoint's reflexive address, as the relay saw it.
        mapped: Option<SocketAddr>,
    },
    /// Peers at this IP address may now send through the relay.
    Permitted(IpAddr),
    /// The allocation (or a permission) failed or was lost.
    Failed(TurnError),
}

/// Counters of the TURN client.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TurnStats {
    /// Requests sent (Allocate, Refresh, CreatePermission), retransmissions included.
    pub requests_sent: u64,
    /// Datagrams sent to peers through the relay (Send indications).
    pub relayed_sent: u64,
    /// Datagrams received from peers through the relay (Data indications).
    pub relayed_received: u64,
    /// Messages from the relay dropped: no outstanding request, a MESSAGE-INTEGRITY that
    /// does not verify, a Data indication from a peer without a permission, malformed.
    pub dropped: u64,
    /// Datagrams to relayed peers dropped: no room in the buffer to wrap them.
    pub too_large: u64,
    /// Of `relayed_sent`, those sent as ChannelData (the rest went in Send indications).
    pub channel_sent: u64,
    /// Of `relayed_received`, those that came as ChannelData.
    pub channel_received: u64,
    /// Channels bound (ChannelBind answered with success), refreshes included.
    pub channels_bound: u64,
    /// Keep-alives sent to the relay (Binding indications after [`KEEP_ALIVE`] without
    /// sending).
    pub keepalives: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Allocate,
    Refresh,
    Permission(IpAddr),
    /// A ChannelBind of the channel at this index.
    Channel(usize),
}

/// A channel to one peer address.
#[derive(Debug)]
struct Channel {
    peer: SocketAddr,
    number: u16,
    /// The relay confirmed it; ChannelData may be sent (and is accepted before that too:
    /// the relay may use the channel as soon as it has bound it).
    bound: bool,
    /// When to bind it again (while bound), or `None` once binding failed: the peer stays
    /// on Send indications.
    refresh_at: Option<Instant>,
}

#[derive(Debug)]
struct Txn {
    kind: Kind,
    txid: [u8; 12],
    when: Schedule,
    /// Sent again after a 401/438 already: a second one fails.
    reauthenticated: bool,
}

#[derive(Debug)]
enum State {
    Allocating,
    Allocated {
        relayed: SocketAddr,
        refresh_at: Instant,
    },
    Failed,
}

/// One allocation on one relay.
#[derive(Debug)]
pub(crate) struct Turn {
    server: SocketAddr,
    creds: TurnCredentials,
    realm: Vec<u8>,
    nonce: Vec<u8>,
    key: Option<[u8; 16]>,
    state: State,
    txns: Vec<Txn>,
    /// Peers' IPs with a permission, and when it is refreshed.
    permissions: HashMap<IpAddr, Instant>,
    /// Peer addresses whose datagrams came through the relay: what is sent to them goes
    /// back through it.
    relayed_peers: HashSet<SocketAddr>,
    channels: Vec<Channel>,
    /// The endpoint's CID length, which the channel numbers follow.
    cid_len: u8,
    /// When anything was last sent to the relay.
    last_sent: Instant,
    /// A keep-alive due to be sent (its transaction ID).
    keepalive: Option<[u8; 12]>,
    events: VecDeque<TurnEvent>,
    pub(crate) stats: TurnStats,
}

impl Turn {
    /// Starts allocating on `server`; `txid` makes transaction IDs (its first byte is
    /// the worker's id).
    pub(crate) fn new(
        now: Instant,
        server: SocketAddr,
        creds: TurnCredentials,
        cid_len: u8,
        txid: [u8; 12],
    ) -> Result<Self, TurnError> {
        if server.ip().is_unspecified() || server.port() == 0 {
            return Err(TurnError::BadServer(server));
        }
        let mut t = Self {
            server,
            creds,
            realm: Vec::new(),
            nonce: Vec::new(),
            key: None,
            state: State::Allocating,
            txns: Vec::new(),
            permissions: HashMap::new(),
            relayed_peers: HashSet::new(),
            channels: Vec::new(),
            cid_len,
            last_sent: now,
            keepalive: None,
            events: VecDeque::new(),
            stats: TurnStats::default(),
        };
        t.begin(now, Kind::Allocate, txid);
        Ok(t)
    }

    /// The relay's address.
    pub(crate) fn server(&self) -> SocketAddr {
        self.server
    }

    /// The relayed address, once allocated.
    pub(crate) fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { relayed, .. } => Some(relayed),
            _ => None,
        }
    }

    fn begin(&mut self, now: Instant, kind: Kind, txid: [u8; 12]) {
        self.txns.retain(|t| t.kind != kind);
        self.txns.push(Txn {
            kind,
            txid,
            when: Schedule::new(now, TRANSACTION_TIMEOUT),
            reauthenticated: false,
        });
    }

    /// Asks the relay to let datagrams from `ip` through (refreshed every 4 minutes).
    pub(crate) fn permit(
        &mut self,
        now: Instant,
        ip: IpAddr,
        txid: [u8; 12],
    ) -> Result<(), TurnError> {
        if self.relayed().is_none() {
            return Err(TurnError::NotAllocated);
        }
        let ip = ip.to_canonical();
        if !self.permissions.contains_key(&ip) && self.permissions.len() >= MAX_PERMISSIONS {
            return Err(TurnError::TooManyPermissions);
        }
        self.permissions
            .entry(ip)
            .or_insert(now + PERMISSION_REFRESH);
        self.begin(now, Kind::Permission(ip), txid);
        Ok(())
    }

    /// The next request due, written into `buf`: its length (to [`server`](Self::server)).
    pub(crate) fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if let Some(txid) = self.keepalive.take() {
            let n = Writer::new(buf, Class::Indication, METHOD_BINDING, &txid)
                .and_then(Writer::finish_with_fingerprint)
                .ok()?;
            self.last_sent = now;
            self.stats.keepalives += 1;
            return Some(n);
        }
        let i = self.txns.iter().position(|t| t.when.due(now))?;
        let (kind, txid) = (self.txns[i].kind, self.txns[i].txid);
        let n = self.request(buf, kind, &txid)?;
        self.txns[i].when.sent_at(now);
        self.stats.requests_sent += 1;
        self.last_sent = now;
        Some(n)
    }

    fn request(&self, buf: &mut [u8], kind: Kind, txid: &[u8; 12]) -> Option<usize> {
        let method = match kind {
            Kind::Allocate => METHOD_ALLOCATE,
            Kind::Refresh => METHOD_REFRESH,
            Kind::Permission(_) => METHOD_CREATE_PERMISSION,
            Kind::Channel(_) => METHOD_CHANNEL_BIND,
        };
        let mut w = Writer::new(buf, Class::Request, method, txid).ok()?;
        match kind {
            // UDP (17), and RFC 8656's three reserved bytes.
            Kind::Allocate => w
                .attribute(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                .ok()?,
            Kind::Refresh => w.attribute(attr::LIFETIME, &600u32.to_be_bytes()).ok()?,
            Kind::Permission(ip) => w
                .xor_address(attr::XOR_PEER_ADDRESS, SocketAddr::new(ip, 0))
                .ok()?,
            Kind::Channel(i) => {
                let c = self.channels.get(i)?;
                let n = c.number.to_be_bytes();
                w.attribute(attr::CHANNEL_NUMBER, &[n[0], n[1], 0, 0])
                    .ok()?;
                w.xor_address(attr::XOR_PEER_ADDRESS, c.peer).ok()?
            }
        }
        if let Some(key) = self.key {
            w.attribute(attr::USERNAME, self.creds.username.as_bytes())
                .ok()?;
            w.attribute(attr::REALM, &self.realm).ok()?;
            w.attribute(attr::NONCE, &self.nonce).ok()?;
            w.message_integrity(|m| hmac_sha1(&key, &[m])).ok()?;
        }
        w.finish_with_fingerprint().ok()
    }

    /// The earliest moment something is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let txn = self.txns.iter().map(|t| t.when.timeout()).min();
        let refresh = match self.state {
            State::Allocated { refresh_at, .. } => Some(refresh_at),
            _ => None,
        };
        let permit = self.permissions.values().min().copied();
        let channel = self.channels.iter().filter_map(|c| c.refresh_at).min();
        let keepalive = self.relayed().map(|_| self.last_sent + KEEP_ALIVE);
        [txn, refresh, permit, channel, keepalive]
            .into_iter()
            .flatten()
            .min()
    }

    /// Refreshes what is due; ends transactions whose time is up. `txid` makes IDs.
    pub(crate) fn handle_timeout(&mut self, now: Instant, mut txid: impl FnMut() -> [u8; 12]) {
        let mut i = 0;
        while i < self.txns.len() {
            if self.txns[i].when.deadline <= now {
                let t = self.txns.swap_remove(i);
                self.fail(t.kind, TurnError::TimedOut);
            } else {
                i += 1;
            }
        }
        if let State::Allocated { refresh_at, .. } = &mut self.state
            && *refresh_at <= now
        {
            *refresh_at = now + Duration::from_secs(300);
            self.begin(now, Kind::Refresh, txid());
        }
        let due: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            self.permissions.insert(ip, now + PERMISSION_REFRESH);
            self.begin(now, Kind::Permission(ip), txid());
        }
        for i in 0..self.channels.len() {
            if let Some(at) = &mut self.channels[i].refresh_at
                && *at <= now
            {
                *at = now + CHANNEL_REFRESH;
                self.begin(now, Kind::Channel(i), txid());
            }
        }
        // A request about to go keeps the mapping open as well.
        if self.relayed().is_some()
            && self.last_sent + KEEP_ALIVE <= now
            && !self.txns.iter().any(|t| t.when.due(now))
        {
            // Counted from now, so the timer does not fire again before it is sent.
            self.last_sent = now;
            self.keepalive = Some(txid());
        }
    }

    fn fail(&mut self, kind: Kind, e: TurnError) {
        match kind {
            Kind::Allocate | Kind::Refresh => {
                self.state = State::Failed;
                self.permissions.clear();
                self.relayed_peers.clear();
                self.channels.clear();
            }
            Kind::Permission(ip) => {
                self.permissions.remove(&ip);
            }
            Kind::Channel(i) => {
                // The peer stays on Send indications; the number is not tried again.
                if let Some(c) = self.channels.get_mut(i) {
                    c.bound = false;
                    c.refresh_at = None;
                }
                return;
            }
        }
        self.events.push_back(TurnEvent::Failed(e));
    }

    /// A STUN message from the relay. A Data indication from a permitted peer returns the
    /// peer and where its datagram lies in `data`.
    pub(crate) fn handle(
        &mut self,
        now: Instant,
        data: &[u8],
        mut txid: impl FnMut() -> [u8; 12],
    ) -> Option<(SocketAddr, std::ops::Range<usize>)> {
        let Ok(m) = Message::parse(data) else {
            self.stats.dropped += 1;
            return None;
        };
        if m.class() == Class::Indication {
            let r = self.data_indication(&m);
            if let Some((peer, _)) = &r {
                self.bind_channel(now, *peer, txid);
            }
            return r;
        }
        let id = m.transaction_id();
        let Some(i) = self.txns.iter().position(|t| t.txid == id) else {
            self.stats.dropped += 1;
            return None;
        };
        // A response that carries MESSAGE-INTEGRITY must verify under the key.
        if let (Some(key), Some((head, rest, mac))) = (self.key, m.integrity_input())
            && hmac_sha1(&key, &[&head, rest]) != mac
        {
            self.stats.dropped += 1;
            return None;
        }
        let t = self.txns.swap_remove(i);
        if m.class() == Class::Error {
            let code = m.error_code().ok().flatten().map_or(0, |(c, _)| c);
            // 401 (credentials asked for) and 438 (stale nonce): once more, with them.
            let realm = m.get(attr::REALM).map(|a| a.value);
            let nonce = m.get(attr::NONCE).map(|a| a.value);
            if matches!(code, 401 | 438)
                && !t.reauthenticated
                && let Some(nonce) = nonce
            {
                if let Some(r) = realm {
                    self.realm = r.to_vec();
                }
                self.nonce = nonce.to_vec();
                self.key = Some(long_term_key(&self.creds, &self.realm));
                let kind = t.kind;
                self.begin(now, kind, txid());
                if let Some(n) = self.txns.last_mut() {
                    n.reauthenticated = true;
                }
                return None;
            }
            self.fail(t.kind, TurnError::Refused { code });
            return None;
        }
        match t.kind {
            Kind::Allocate => {
                let relayed = m
                    .get(attr::XOR_RELAYED_ADDRESS)
                    .and_then(|a| m.xor_address(a.value).ok());
                let Some(relayed) = relayed else {
                    self.fail(t.kind, TurnError::NoRelayedAddress);
                    return None;
                };
                let mapped = m
                    .get(attr::XOR_MAPPED_ADDRESS)
                    .and_then(|a| m.xor_address(a.value).ok());
                let lifetime = m
                    .get(attr::LIFETIME)
                    .and_then(|a| <[u8; 4]>::try_from(a.value).ok())
                    .map_or(600, u32::from_be_bytes);
                self.state = State::Allocated {
                    relayed,
                    refresh_at: now + refresh_after(lifetime),
                };
                self.events
                    .push_back(TurnEvent::Allocated { relayed, mapped });
            }
            Kind::Refresh => {
                let lifetime = m
                    .get(attr::LIFETIME)
                    .and_then(|a| <[u8; 4]>::try_from(a.value).ok())
                    .map_or(600, u32::from_be_bytes);
                if let State::Allocated { refresh_at, .. } = &mut self.state {
                    *refresh_at = now + refresh_after(lifetime);
                }
            }
            Kind::Permission(ip) => self.events.push_back(TurnEvent::Permitted(ip)),
            Kind::Channel(i) => {
                if let Some(c) = self.channels.get_mut(i) {
                    c.bound = true;
                    self.stats.channels_bound += 1;
                }
            }
        }
        None
    }

    /// Binds a channel to `peer`, which has just been heard through the relay, unless it
    /// has one (or had: a failed binding is not tried again) or [`MAX_CHANNELS`] exist.
    fn bind_channel(&mut self, now: Instant, peer: SocketAddr, txid: impl FnOnce() -> [u8; 12]) {
        if self.channels.len() >= MAX_CHANNELS || self.channels.iter().any(|c| c.peer == peer) {
            return;
        }
        let txid = txid();
        let i = self.channels.len();
        self.channels.push(Channel {
            peer,
            number: channel_number(i, self.cid_len),
            bound: false,
            refresh_at: Some(now + CHANNEL_REFRESH),
        });
        self.begin(now, Kind::Channel(i), txid);
    }

    /// A ChannelData message from the relay (the caller checked its source): the peer it
    /// comes from and where its datagram lies, or `None` (counted as dropped) for an
    /// unknown channel or a length that does not fit.
    pub(crate) fn channel_data(
        &mut self,
        data: &[u8],
    ) -> Option<(SocketAddr, std::ops::Range<usize>)> {
        let Some(&[a, b, c, d]) = data.first_chunk::<4>() else {
            self.stats.dropped += 1;
            return None;
        };
        let number = u16::from_be_bytes([a, b]);
        let len = usize::from(u16::from_be_bytes([c, d]));
        // Exactly the length, or padded to the next multiple of 4 (allowed over UDP).
        let end = CHANNEL_OVERHEAD + len;
        let fits = data.len() == end || (data.len() > end && data.len() == end.next_multiple_of(4));
        let peer = self
            .channels
            .iter()
            .find(|ch| ch.number == number && ch.refresh_at.is_some())
            .map(|ch| ch.peer);
        let (true, Some(peer)) = (fits, peer) else {
            self.stats.dropped += 1;
            return None;
        };
        self.stats.relayed_received += 1;
        self.stats.channel_received += 1;
        Some((peer, 4..4 + len))
    }

    fn data_indication(&mut self, m: &Message<'_>) -> Option<(SocketAddr, std::ops::Range<usize>)> {
        let peer = m
            .get(attr::XOR_PEER_ADDRESS)
            .and_then(|a| m.xor_address(a.value).ok());
        let data = m.get(attr::DATA);
        let (Some(peer), Some(data), true) = (peer, data, m.method() == METHOD_DATA) else {
            self.stats.dropped += 1;
            return None;
        };
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        if !self.permissions.contains_key(&peer.ip()) {
            self.stats.dropped += 1;
            return None;
        }
        if self.relayed_peers.len() < MAX_RELAYED_PEERS {
            self.relayed_peers.insert(peer);
        }
        self.stats.relayed_received += 1;
        let start = data.offset + 4;
        Some((peer, start..start + data.value.len()))
    }

    /// Whether datagrams to `peer` go through the relay.
    pub(crate) fn relays_to(&self, peer: SocketAddr) -> bool {
        !self.relayed_peers.is_empty()
            && self
                .relayed_peers
                .contains(&SocketAddr::new(peer.ip().to_canonical(), peer.port()))
    }

    /// Wraps the datagram `buf[..n]` to `peer`, in place: in ChannelData once a channel to
    /// it is bound, else in a Send indication. Returns the new length, or `None` (counted)
    /// when `buf` has no room for the header.
    pub(crate) fn wrap(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        n: usize,
        peer: SocketAddr,
        txid: [u8; 12],
    ) -> Option<usize> {
        self.last_sent = now;
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        if let Some(ch) = self.channels.iter().find(|c| c.bound && c.peer == peer) {
            if CHANNEL_OVERHEAD + n > buf.len() || n > usize::from(u16::MAX) {
                self.stats.too_large += 1;
                return None;
            }
            let number = ch.number;
            buf.copy_within(..n, CHANNEL_OVERHEAD);
            buf[..2].copy_from_slice(&number.to_be_bytes());
            buf[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            self.stats.relayed_sent += 1;
            self.stats.channel_sent += 1;
            return Some(CHANNEL_OVERHEAD + n);
        }
        let peer_attr = if peer.ip().to_canonical().is_ipv4() {
            12
        } else {
            24
        };
        let head = 20 + peer_attr + 4;
        let pad = (4 - n % 4) % 4;
        if head + n + pad > buf.len() || n > usize::from(u16::MAX) - 64 {
            self.stats.too_large += 1;
            return None;
        }
        buf.copy_within(..n, head);
        let mut hdr = [0u8; 48];
        let mut w = Writer::new(&mut hdr, Class::Indication, METHOD_SEND, &txid).ok()?;
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        w.xor_address(attr::XOR_PEER_ADDRESS, peer).ok()?;
        let len = w.finish();
        debug_assert_eq!(len, head - 4);
        buf[..len].copy_from_slice(&hdr[..len]);
        buf[len..len + 2].copy_from_slice(&attr::DATA.to_be_bytes());
        buf[len + 2..len + 4].copy_from_slice(&(n as u16).to_be_bytes());
        buf[head + n..head + n + pad].fill(0);
        let total = head + n + pad;
        let body = u16::try_from(total - 20).ok()?;
        buf[2..4].copy_from_slice(&body.to_be_bytes());
        self.stats.relayed_sent += 1;
        Some(total)
    }

    /// What happened, once.
    pub(crate) fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }
}

/// Refresh an allocation a minute before it ends (half way for short ones).
fn refresh_after(lifetime: u32) -> Duration {
    let l = u64::from(lifetime.max(2));
    Duration::from_secs(if l > 120 { l - 60 } else { l / 2 })
}

/// The long-term credential key (RFC 8489 §9.2.2): MD5(username ":" realm ":" password).
pub(crate) fn long_term_key(c: &TurnCredentials, realm: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(c.username.as_bytes());
    h.update(b":");
    h.update(realm);
    h.update(b":");
    h.update(c.password.as_bytes());
    h.finalize().into()
}

/// HMAC-SHA1 (MESSAGE-INTEGRITY's MAC; ring names it legacy, which it is) over the parts.
pub(crate) fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let k = crate::crypto::provider::hmac::Key::new(
        crate::crypto::provider::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        key,
    );
    let mut ctx = crate::crypto::provider::hmac::Context::with_key(&k);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 20];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

#[cfg(test)]
mod tests;
