//! Two endpoints wired together in memory (quinn's `Pair` idea), with simulated time, a
//! fixed one-way delay, a path MTU, and a hook that can drop or rewrite any datagram.

mod batch;
mod cluster;
mod early;
mod ecn;
mod flood;
mod hostile;
mod session;
mod transport;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rand_core::OsRng;

use super::*;
use crate::crypto::sig::{SigAlg, SigningKey, VerifyingKey};
use crate::handshake::cert::{CertParams, Certificate};
use crate::handshake::{ClientConfig, Credential, HandshakeError, ServerConfig, Trust};

pub(super) const UNIX_NOW: u64 = 1_800_000_000;

/// Reads what stream `id` holds now into `out`; whether its end was reached.
pub(super) fn read_into(c: &mut Connection, id: StreamId, out: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match c.read(id, &mut buf) {
            Ok(Some(n)) => out.extend_from_slice(&buf[..n]),
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

pub(super) fn client_addr() -> SocketAddr {
    "[fd00:5710::1]:50000".parse().unwrap()
}

pub(super) fn server_addr() -> SocketAddr {
    "[fd00:5710::2]:4433".parse().unwrap()
}

/// Keys generated once per test binary (FALCON key generation is the slow part).
pub(super) struct Keys {
    pub(super) ca: (SigningKey, VerifyingKey),
    pub(super) server512: (Vec<u8>, VerifyingKey),
    pub(super) server1024: (Vec<u8>, VerifyingKey),
    pub(super) server_composite: (Vec<u8>, VerifyingKey),
    pub(super) client512: (Vec<u8>, VerifyingKey),
}

pub(super) fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        let g = |alg| {
            let (k, p) = SigningKey::generate(alg, &mut OsRng);
            (k.as_bytes().to_vec(), p)
        };
        Keys {
            ca: SigningKey::generate(SigAlg::Falcon512, &mut OsRng),
            server512: g(SigAlg::Falcon512),
            server1024: g(SigAlg::Falcon1024),
            server_composite: g(SigAlg::Falcon512Ed25519),
            client512: g(SigAlg::Falcon512),
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TrustMode {
    Pinned,
    Certificate,
}

/// One handshake configuration.
#[derive(Debug, Clone, Copy)]
pub(super) struct Setup {
    pub(super) suite: CipherSuite,
    pub(super) alg: SigAlg,
    pub(super) trust: TrustMode,
    pub(super) client_auth: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            suite: CipherSuite::ChaCha20Poly1305,
            alg: SigAlg::Falcon512,
            trust: TrustMode::Pinned,
            client_auth: false,
        }
    }
}

pub(super) fn issue(
    key: &VerifyingKey,
    names: &[&str],
    not_after: u64,
    ca: &(SigningKey, VerifyingKey),
) -> Certificate {
    let p = CertParams {
        serial: 7,
        not_before: UNIX_NOW - 3600,
        not_after,
        names: names.iter().map(|s| s.to_string()).collect(),
        is_ca: false,
    };
    Certificate::issue(&p, key, &ca.0, &ca.1, &mut OsRng)
}

pub(super) fn configs(s: Setup) -> (ServerConfig, ClientConfig) {
    let k = keys();
    let (sk, pk) = match s.alg {
        SigAlg::Falcon512 => &k.server512,
        SigAlg::Falcon1024 => &k.server1024,
        SigAlg::Falcon512Ed25519 => &k.server_composite,
    };
    let key = SigningKey::from_bytes(sk).unwrap();
    let (credential, trust) = match s.trust {
        TrustMode::Pinned => (
            Credential::RawKey {
                key,
                public: pk.clone(),
            },
            Trust::PinnedKey(pk.clone()),
        ),
        TrustMode::Certificate => (
            Credential::Certificate {
                key,
                cert: issue(pk, &["stoq.example"], UNIX_NOW + 3600, &k.ca),
                intermediates: Vec::new(),
            },
            Trust::Anchors(vec![k.ca.1.clone()]),
        ),
    };
    let (client_cred, client_trust) = if s.client_auth {
        let (ck, cp) = &k.client512;
        (
            Some(Credential::RawKey {
                key: SigningKey::from_bytes(ck).unwrap(),
                public: cp.clone(),
            }),
            Some(Trust::PinnedKey(cp.clone())),
        )
    } else {
        (None, None)
    };
    let server = ServerConfig {
        alpn: Vec::new(),
        credential,
        suites: CipherSuite::ALL.to_vec(),
        params: TransportParams::default(),
        client_auth: client_trust,
        tickets: crate::handshake::TicketSettings::default(),
        batch_signing: true,
        early_data: crate::handshake::EarlyDataSettings::default(),
    };
    let client = ClientConfig {
        alpn: Vec::new(),
        server_name: "stoq.example".into(),
        trust,
        suites: vec![s.suite],
        sig_algs: SigAlg::ALL.to_vec(),
        params: TransportParams::default(),
        credential: client_cred,
        resumption: None,
        batch_signatures: true,
        early_data: false,
    };
    (server, client)
}

/// What the tamper hook decides for a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Deliver,
    Drop,
}

/// A datagram on the wire.
#[derive(Debug, Clone)]
pub(super) struct Wire {
    pub(super) to_server: bool,
    /// Index among all datagrams sent so far.
    pub(super) seq: usize,
    pub(super) data: Vec<u8>,
    pub(super) from: SocketAddr,
    /// Where the sender addressed it (delivered to the other side whatever it is, unless a
    /// tamper drops it).
    pub(super) to: SocketAddr,
    /// The IP header's ECN bits (a tamper may set CE, or clear them as a bleaching
    /// middlebox does).
    pub(super) ecn: EcnCodepoint,
}

type Tamper = Box<dyn FnMut(&mut Wire) -> Verdict>;

fn info(w: &Wire) -> DatagramInfo {
    DatagramInfo {
        local_ip: None,
        ecn: w.ecn,
    }
}

pub(super) struct Pair {
    pub(super) start: Instant,
    pub(super) now: Instant,
    pub(super) client: Endpoint,
    pub(super) server: Endpoint,
    pub(super) delay: Duration,
    pub(super) mtu: usize,
    queue: VecDeque<(Instant, Wire)>,
    pub(super) tamper: Option<Tamper>,
    pub(super) client_conn: Option<ConnectionHandle>,
    pub(super) server_conns: Vec<ConnectionHandle>,
    /// (time, server side?, handle, event)
    pub(super) events: Vec<(Instant, bool, ConnectionHandle, Event)>,
    /// Every datagram sent: (time, to_server, size).
    pub(super) log: Vec<(Instant, bool, usize)>,
    pub(super) accept: bool,
    /// Queued on the client the moment it is connected, before it sends anything else.
    pub(super) send_on_connect: Option<Vec<u8>>,
    seq: usize,
    buf: Vec<u8>,
    /// Checked after every server transmit: bytes sent ≤ 3 × bytes received until the
    /// client's address is validated.
    pub(super) amplification_checks: usize,
    /// Refusals from `Endpoint::accept`.
    pub(super) accept_errors: Vec<AcceptError>,
    /// Runs on the server right after each delivery, before it sends: an application
    /// that answers what just arrived within the same instant.
    pub(super) server_app: Option<ServerApp>,
}

/// See [`Pair::server_app`]: the server endpoint and its connections.
pub(super) type ServerApp = Box<dyn FnMut(&mut Endpoint, &[ConnectionHandle])>;

pub(super) fn endpoint_config(seed: u8, mtu: usize, start: Instant) -> EndpointConfig {
    EndpointConfig {
        max_udp_payload: mtu,
        rng_seed: [seed; 32],
        unix_time_at: (start, UNIX_NOW),
        ..EndpointConfig::new()
    }
}

/// A pair (not yet connected) whose client runs NewReno, for tests that need a
/// controller's deterministic answer to a congestion signal; and the client config.
pub(super) fn newreno_client_pair() -> (Pair, ClientConfig) {
    client_pair_with(TransportConfig {
        congestion: cc::Congestion::NewReno.factory(),
        ..TransportConfig::default()
    })
}

/// A pair (not yet connected) whose client endpoint has `transport`; and the client
/// config.
pub(super) fn client_pair_with(transport: TransportConfig) -> (Pair, ClientConfig) {
    let (server, client) = configs(Setup::default());
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    p.client = Endpoint::new(
        EndpointConfig {
            transport: Arc::new(transport),
            ..endpoint_config(1, 1452, p.start)
        },
        None,
    )
    .unwrap();
    (p, client)
}

/// Two endpoints with the default setup (ChaCha20, FALCON-512, pinned key), connected.
pub(super) fn connected_pair() -> Pair {
    let (server, client) = configs(Setup::default());
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    p.connect(client);
    assert!(
        p.handshake() && p.both_connected(),
        "{:?} / {:?}",
        p.lost(false),
        p.lost(true)
    );
    p
}

impl Pair {
    pub(super) fn new(server: ServerConfig, mtu: usize, retry: RetryPolicy) -> Self {
        let start = Instant::now();
        let mut scfg = endpoint_config(2, mtu, start);
        scfg.retry = retry;
        Self {
            start,
            now: start,
            client: Endpoint::new(endpoint_config(1, mtu, start), None).unwrap(),
            server: Endpoint::new(scfg, Some(Arc::new(server))).unwrap(),
            delay: Duration::from_millis(10),
            mtu,
            queue: VecDeque::new(),
            tamper: None,
            client_conn: None,
            server_conns: Vec::new(),
            events: Vec::new(),
            log: Vec::new(),
            accept: true,
            send_on_connect: None,
            seq: 0,
            buf: Vec::new(),
            amplification_checks: 0,
            accept_errors: Vec::new(),
            server_app: None,
        }
    }

    pub(super) fn connect(&mut self, client: ClientConfig) -> ConnectionHandle {
        let h = self
            .client
            .connect(self.now, server_addr(), Arc::new(client))
            .unwrap();
        self.client_conn = Some(h);
        h
    }

    pub(super) fn client_conn(&mut self) -> &mut Connection {
        let h = self.client_conn.unwrap();
        self.client.connection_mut(h).unwrap()
    }

    /// The server's connection: the established one if several were started (a tampered
    /// first Initial can start one that never completes).
    pub(super) fn server_conn(&mut self) -> &mut Connection {
        let h = self
            .server_conns
            .iter()
            .copied()
            .find(|h| {
                self.server
                    .connection(*h)
                    .is_some_and(Connection::is_established)
            })
            .unwrap_or(self.server_conns[0]);
        self.server.connection_mut(h).unwrap()
    }

    fn check_amplification(&mut self) {
        for h in &self.server_conns {
            if let Some(c) = self.server.connection(*h)
                && !c.validated
            {
                assert!(
                    c.tx_bytes <= 3 * c.rx_bytes,
                    "anti-amplification: server sent {} bytes for {} received",
                    c.tx_bytes,
                    c.rx_bytes
                );
                self.amplification_checks += 1;
            }
        }
    }

    fn flush(&mut self) {
        loop {
            let mut sent = false;
            while let Some(t) = self.client.poll_transmit(self.now, &mut self.buf) {
                self.emit(true, client_addr(), t);
                sent = true;
            }
            while let Some(t) = self.server.poll_transmit(self.now, &mut self.buf) {
                self.emit(false, server_addr(), t);
                self.check_amplification();
                sent = true;
            }
            if !sent {
                break;
            }
        }
    }

    fn emit(&mut self, to_server: bool, from: SocketAddr, t: Transmit) {
        assert!(
            t.size <= self.mtu,
            "datagram of {} bytes exceeds the path MTU {}",
            t.size,
            self.mtu
        );
        self.log.push((self.now, to_server, t.size));
        let mut w = Wire {
            to_server,
            seq: self.seq,
            data: self.buf[..t.size].to_vec(),
            from,
            to: t.destination,
            ecn: t.ecn,
        };
        self.seq += 1;
        if let Some(f) = self.tamper.as_mut()
            && f(&mut w) == Verdict::Drop
        {
            return;
        }
        self.queue.push_back((self.now + self.delay, w));
    }

    /// Injects a datagram as if `from` had sent it.
    pub(super) fn inject(&mut self, to_server: bool, from: SocketAddr, data: Vec<u8>) {
        let w = Wire {
            to_server,
            seq: usize::MAX,
            data,
            from,
            to: from,
            ecn: EcnCodepoint::NotEct,
        };
        self.queue.push_back((self.now, w));
    }

    fn deliver(&mut self) {
        while self.queue.front().is_some_and(|(t, _)| *t <= self.now) {
            let (_, mut w) = self.queue.pop_front().unwrap();
            if w.to_server {
                if let Some(DatagramEvent::Incoming(i)) =
                    self.server
                        .handle_datagram(self.now, w.from, info(&w), &mut w.data)
                {
                    if self.accept {
                        match self.server.accept(i, self.now) {
                            Ok(h) => self.server_conns.push(h),
                            Err(e) => self.accept_errors.push(e),
                        }
                    } else {
                        self.server.ignore(i);
                    }
                }
            } else {
                let _ = self
                    .client
                    .handle_datagram(self.now, w.from, info(&w), &mut w.data);
                if let Some(h) = self.client_conn
                    && let Some(c) = self.client.connection_mut(h)
                    && c.is_established()
                    && let Some(d) = self.send_on_connect.take()
                {
                    c.send_datagram(&d).unwrap();
                }
            }
        }
    }

    fn collect_events(&mut self) {
        while let Some((h, e)) = self.client.poll_event() {
            self.events.push((self.now, false, h, e));
        }
        while let Some((h, e)) = self.server.poll_event() {
            self.events.push((self.now, true, h, e));
        }
    }

    /// One step: send, deliver, collect events, then advance to the next timer or arrival,
    /// but not past `until`.
    pub(super) fn step(&mut self, until: Instant) {
        self.flush();
        self.deliver();
        if let Some(app) = self.server_app.as_mut() {
            app(&mut self.server, &self.server_conns);
        }
        self.collect_events();
        self.flush();
        let next = [
            self.queue.front().map(|(t, _)| *t),
            self.client.poll_timeout(),
            self.server.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
        .map_or(until, |t| t.min(until));
        if next > self.now {
            self.now = next;
        }
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
    }

    /// Steps until `done` holds or `limit` of simulated time passes; returns whether `done`
    /// held.
    pub(super) fn drive_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> bool {
        let end = self.now + limit;
        for _ in 0..1_000_000 {
            if done(self) {
                return true;
            }
            if self.now >= end {
                // Let whatever is due now happen before the final check.
                self.step(end);
                return done(self);
            }
            self.step(end);
        }
        panic!("simulation did not settle in a million steps");
    }

    pub(super) fn event_time(&self, server: bool, e: &Event) -> Option<Duration> {
        self.events
            .iter()
            .find(|(_, s, _, ev)| *s == server && ev == e)
            .map(|(t, ..)| *t - self.start)
    }

    pub(super) fn lost(&self, server: bool) -> Option<ConnectionError> {
        self.events.iter().find_map(|(_, s, _, e)| match e {
            Event::Lost(err) if *s == server => Some(err.clone()),
            _ => None,
        })
    }

    pub(super) fn both_connected(&mut self) -> bool {
        let c = self
            .client_conn
            .and_then(|h| self.client.connection(h))
            .is_some_and(Connection::is_established);
        let s = self.server_conns.iter().any(|h| {
            self.server
                .connection(*h)
                .is_some_and(Connection::is_established)
        });
        c && s
    }

    /// Whether the client's connection and the newest server connection are established.
    pub(super) fn both_connected_newest(&mut self) -> bool {
        let c = self
            .client_conn
            .and_then(|h| self.client.connection(h))
            .is_some_and(Connection::is_established);
        let s = self
            .server_conns
            .last()
            .and_then(|h| self.server.connection(*h))
            .is_some_and(Connection::is_established);
        c && s
    }

    /// Runs the handshake to completion (or failure) within 30 s of simulated time.
    pub(super) fn handshake(&mut self) -> bool {
        self.drive_until(Duration::from_secs(30), |p| {
            p.both_connected() || p.lost(false).is_some() || p.lost(true).is_some()
        })
    }

    /// Sends a datagram each way and checks both arrive intact.
    pub(super) fn exchange_datagrams(&mut self, tag: &[u8]) {
        let mut up = b"client->server ".to_vec();
        up.extend_from_slice(tag);
        let mut down = b"server->client ".to_vec();
        down.extend_from_slice(tag);
        let (lc, ls) = (self.lost(false), self.lost(true));
        let st = {
            let c = self.client_conn();
            format!("{c:?} {:?}", c.stats())
        };
        self.client_conn()
            .send_datagram(&up)
            .unwrap_or_else(|e| panic!("{e}: client {lc:?} {st}"));
        self.server_conn()
            .send_datagram(&down)
            .unwrap_or_else(|e| panic!("{e}: server {ls:?}"));
        let mut got_up = None;
        let mut got_down = None;
        let ok = self.drive_until(Duration::from_secs(5), |p| {
            if got_up.is_none() {
                got_up = p.server_conn().recv_datagram();
            }
            if got_down.is_none() {
                got_down = p.client_conn().recv_datagram();
            }
            got_up.is_some() && got_down.is_some()
        });
        assert!(ok, "datagrams did not arrive");
        assert_eq!(got_up.unwrap(), up);
        assert_eq!(got_down.unwrap(), down);
    }
}
