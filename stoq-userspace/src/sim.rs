//! A deterministic network simulator for the sans-IO core (feature `sim`).
//!
//! Two [`Endpoint`]s exchange datagrams over two one-way [`Link`]s in simulated time. A
//! link has a bandwidth with a bounded bottleneck queue (tail drop), a propagation delay
//! with jitter, random and bursty (Gilbert–Elliott) loss, reordering, duplication, bit
//! corruption, an MTU, and blackhole periods. Everything random is drawn from a seeded
//! generator, and time only moves when the simulator moves it, so a seed replays exactly:
//! a failing run is a one-line reproduction.
//!
//! The simulator is test support, but public: the dataplane's in-memory backend and the
//! property tests build on it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::conn::{
    ConnectionHandle, DatagramEvent, DatagramInfo, EcnCodepoint, Endpoint, Event, Side,
};

/// One direction of a simulated path.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Bottleneck rate in bits per second (`None`: unlimited).
    pub rate_bps: Option<u64>,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..jitter` per datagram (reorders when large).
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Bursty loss: the probability, per datagram, that a loss burst starts, and the
    /// burst's length (drawn uniformly up to this). During a burst every datagram is
    /// lost. Bursts are timed, not counted in datagrams, so sparse traffic does not stretch
    /// one burst into an outage.
    pub burst: Option<(f64, Duration)>,
    /// Probability that a datagram is held back by `reorder_delay`.
    pub reorder: f64,
    /// How long a reordered datagram is held back.
    pub reorder_delay: Duration,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that one bit of a datagram is flipped.
    pub corrupt: f64,
    /// Largest datagram carried; larger ones are dropped.
    pub mtu: usize,
    /// Bottleneck queue capacity in bytes (only with a rate).
    pub queue_bytes: usize,
    /// ECN marking at the bottleneck (an AQM's step threshold, as DCTCP's K): an
    /// ECN-capable datagram that finds more than this many bytes queued is marked CE.
    /// `None`: the queue only drops when full.
    pub ecn_mark_above: Option<usize>,
    /// Periods, from the simulation start, during which everything is dropped.
    pub blackholes: Vec<(Duration, Duration)>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            rate_bps: None,
            delay: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            burst: None,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(5),
            duplicate: 0.0,
            corrupt: 0.0,
            mtu: 1500,
            queue_bytes: usize::MAX,
            ecn_mark_above: None,
            blackholes: Vec::new(),
        }
    }
}

/// What a link did, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams offered.
    pub sent: u64,
    /// Bytes offered.
    pub sent_bytes: u64,
    /// Datagrams delivered (duplicates included).
    pub delivered: u64,
    /// Bytes delivered.
    pub delivered_bytes: u64,
    /// Dropped at random or in a burst.
    pub lost: u64,
    /// Dropped by the full bottleneck queue.
    pub queue_drops: u64,
    /// Dropped in a blackhole period.
    pub blackholed: u64,
    /// Dropped for exceeding the MTU.
    pub too_big: u64,
    /// Corrupted.
    pub corrupted: u64,
    /// Duplicated.
    pub duplicated: u64,
    /// Held back (reordered).
    pub reordered: u64,
    /// Marked CE by the bottleneck.
    pub ce_marked: u64,
}

/// A datagram in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InFlight {
    from: SocketAddr,
    to: SocketAddr,
    ecn: EcnCodepoint,
    data: Vec<u8>,
}

/// A datagram a link delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The sender.
    pub from: SocketAddr,
    /// The addressee.
    pub to: SocketAddr,
    /// The IP header's ECN bits on arrival (CE if the bottleneck marked it).
    pub ecn: EcnCodepoint,
    /// The bytes (corrupted if the link flipped a bit).
    pub data: Vec<u8>,
}

/// One direction of a path.
#[derive(Debug)]
pub struct Link {
    cfg: LinkConfig,
    rng: ChaCha8Rng,
    start: Instant,
    /// When the bottleneck finishes serializing what it holds.
    busy_until: Instant,
    bad_until: Option<Instant>,
    seq: u64,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    slots: std::collections::HashMap<u64, InFlight>,
    /// Statistics so far.
    pub stats: LinkStats,
    /// Queueing delay seen by the last datagram that entered the bottleneck.
    pub last_queue_delay: Duration,
    /// Largest queueing delay seen.
    pub max_queue_delay: Duration,
}

impl Link {
    /// Changes the largest datagram the link carries from now on (a tunnel appears, a
    /// route changes): larger ones are dropped, as a path that does not fragment does.
    pub fn set_mtu(&mut self, mtu: usize) {
        self.cfg.mtu = mtu;
    }

    /// A link starting at `start`, drawing randomness from `seed`.
    pub fn new(cfg: LinkConfig, start: Instant, seed: u64) -> Self {
        Self {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
            start,
            busy_until: start,
            bad_until: None,
            seq: 0,
            heap: BinaryHeap::new(),
            slots: std::collections::HashMap::new(),
            stats: LinkStats::default(),
            last_queue_delay: Duration::ZERO,
            max_queue_delay: Duration::ZERO,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LinkConfig {
        &self.cfg
    }

    /// Changes the configuration from now on.
    pub fn set_config(&mut self, cfg: LinkConfig) {
        self.cfg = cfg;
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < p
    }

    /// Bytes waiting in the bottleneck queue at `now`.
    pub fn backlog(&self, now: Instant) -> u64 {
        match self.cfg.rate_bps {
            Some(r) => {
                let t = self.busy_until.saturating_duration_since(now);
                (u128::from(r) * t.as_nanos() / 8_000_000_000) as u64
            }
            None => 0,
        }
    }

    /// Offers a datagram at `now`, sent with the ECN codepoint `ecn`.
    pub fn send(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        mut ecn: EcnCodepoint,
        data: &[u8],
    ) {
        self.stats.sent += 1;
        self.stats.sent_bytes += data.len() as u64;
        if data.len() > self.cfg.mtu {
            self.stats.too_big += 1;
            return;
        }
        let t = now.saturating_duration_since(self.start);
        if self
            .cfg
            .blackholes
            .iter()
            .any(|(s, l)| t >= *s && t < *s + *l)
        {
            self.stats.blackholed += 1;
            return;
        }
        if let Some((enter, len)) = self.cfg.burst {
            if self.bad_until.is_some_and(|t| now >= t) {
                self.bad_until = None;
            }
            if self.bad_until.is_none() && self.chance(enter) {
                let l = self.rng.next_u64() % len.as_nanos().max(1) as u64;
                self.bad_until = Some(now + Duration::from_nanos(l));
            }
            if self.bad_until.is_some() {
                self.stats.lost += 1;
                return;
            }
        }
        let loss = self.cfg.loss;
        if self.chance(loss) {
            self.stats.lost += 1;
            return;
        }
        // The bottleneck: serialize after what is queued, or drop when the queue is full.
        let mut depart = now;
        if let Some(rate) = self.cfg.rate_bps {
            let backlog = self.backlog(now);
            if backlog + data.len() as u64 > self.cfg.queue_bytes as u64 {
                self.stats.queue_drops += 1;
                return;
            }
            if self.cfg.ecn_mark_above.is_some_and(|k| backlog > k as u64)
                && matches!(ecn, EcnCodepoint::Ect0 | EcnCodepoint::Ect1)
            {
                ecn = EcnCodepoint::Ce;
                self.stats.ce_marked += 1;
            }
            let start = self.busy_until.max(now);
            self.last_queue_delay = start - now;
            self.max_queue_delay = self.max_queue_delay.max(self.last_queue_delay);
            let tx =
                Duration::from_nanos((data.len() as u64 * 8 * 1_000_000_000).div_ceil(rate.max(1)));
            self.busy_until = start + tx;
            depart = self.busy_until;
        }
        let mut arrive = depart + self.cfg.delay;
        if !self.cfg.jitter.is_zero() {
            let j = self.rng.next_u64() % self.cfg.jitter.as_nanos().max(1) as u64;
            arrive += Duration::from_nanos(j);
        }
        let reorder = self.cfg.reorder;
        if self.chance(reorder) {
            arrive += self.cfg.reorder_delay;
            self.stats.reordered += 1;
        }
        let mut data = data.to_vec();
        let corrupt = self.cfg.corrupt;
        if self.chance(corrupt) && !data.is_empty() {
            let bit = self.rng.next_u64() as usize % (data.len() * 8);
            data[bit / 8] ^= 1 << (bit % 8);
            self.stats.corrupted += 1;
        }
        let dup = self.cfg.duplicate;
        if self.chance(dup) {
            self.stats.duplicated += 1;
            let copy = InFlight {
                from,
                to,
                ecn,
                data: data.clone(),
            };
            self.push(arrive + Duration::from_micros(50), copy);
        }
        self.push(
            arrive,
            InFlight {
                from,
                to,
                ecn,
                data,
            },
        );
    }

    fn push(&mut self, at: Instant, d: InFlight) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq)));
        self.slots.insert(self.seq, d);
    }

    /// When the next datagram arrives.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// The next datagram due by `now`.
    pub fn pop(&mut self, now: Instant) -> Option<Delivered> {
        let Reverse((t, seq)) = *self.heap.peek()?;
        if t > now {
            return None;
        }
        self.heap.pop();
        let d = self.slots.remove(&seq)?;
        self.stats.delivered += 1;
        self.stats.delivered_bytes += d.data.len() as u64;
        Some(Delivered {
            from: d.from,
            to: d.to,
            ecn: d.ecn,
            data: d.data,
        })
    }
}

/// What the receiving endpoint is told of a delivered datagram.
fn arrival(d: &Delivered) -> DatagramInfo {
    DatagramInfo {
        local_ip: Some(d.to.ip()),
        ecn: d.ecn,
    }
}

/// Two endpoints joined by two links, in simulated time.
#[derive(Debug)]
pub struct Sim {
    /// Simulated now.
    pub now: Instant,
    /// When the simulation started.
    pub start: Instant,
    /// The client endpoint.
    pub client: Endpoint,
    /// The server endpoint.
    pub server: Endpoint,
    /// The client's current address (change it to simulate migration or NAT rebinding).
    pub client_addr: SocketAddr,
    /// The server's address.
    pub server_addr: SocketAddr,
    /// Client to server.
    pub up: Link,
    /// Server to client.
    pub down: Link,
    /// Events from both endpoints, in order: (side, connection, event).
    pub events: VecDeque<(Side, ConnectionHandle, Event)>,
    /// Connections the server accepted.
    pub server_conns: Vec<ConnectionHandle>,
    /// Steps taken.
    pub steps: u64,
    /// Steps taken without time moving (a guard against livelock).
    stalled: u64,
    buf: Vec<u8>,
}

impl Sim {
    /// A simulation starting at `start`.
    pub fn new(
        start: Instant,
        client: Endpoint,
        server: Endpoint,
        up: LinkConfig,
        down: LinkConfig,
        seed: u64,
    ) -> Self {
        Self {
            now: start,
            start,
            client,
            server,
            client_addr: "[fd00:5710::1]:50000".parse().expect("literal"),
            server_addr: "[fd00:5710::2]:4433".parse().expect("literal"),
            up: Link::new(up, start, seed ^ 0x5550),
            down: Link::new(down, start, seed ^ 0xd0d0),
            events: VecDeque::new(),
            server_conns: Vec::new(),
            steps: 0,
            stalled: 0,
            buf: Vec::new(),
        }
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn flush(&mut self) {
        while let Some(t) = self.client.poll_transmit(self.now, &mut self.buf) {
            let (from, to) = (self.client_addr, t.destination);
            self.up.send(self.now, from, to, t.ecn, &self.buf[..t.size]);
        }
        while let Some(t) = self.server.poll_transmit(self.now, &mut self.buf) {
            let (from, to) = (self.server_addr, t.destination);
            self.down
                .send(self.now, from, to, t.ecn, &self.buf[..t.size]);
        }
    }

    fn deliver(&mut self) {
        while let Some(mut d) = self.up.pop(self.now) {
            if let Some(DatagramEvent::Incoming(i)) =
                self.server
                    .handle_datagram(self.now, d.from, arrival(&d), &mut d.data)
            {
                if let Ok(h) = self.server.accept(i, self.now) {
                    self.server_conns.push(h);
                }
            }
        }
        // The client receives whatever reaches any of its addresses (an old NAT binding
        // keeps working for a while).
        while let Some(mut d) = self.down.pop(self.now) {
            let _ = self
                .client
                .handle_datagram(self.now, d.from, arrival(&d), &mut d.data);
        }
        while let Some((h, e)) = self.client.poll_event() {
            self.events.push_back((Side::Client, h, e));
        }
        while let Some((h, e)) = self.server.poll_event() {
            self.events.push_back((Side::Server, h, e));
        }
    }

    /// One step: send, deliver, let `app` act, send again, then move time to the next
    /// arrival or timer (at most `until`) and fire timers.
    pub fn step(&mut self, until: Instant, app: &mut impl FnMut(&mut Self)) {
        self.steps += 1;
        self.flush();
        self.deliver();
        app(self);
        self.flush();
        let next = [
            self.up.next_arrival(),
            self.down.next_arrival(),
            self.client.poll_timeout(),
            self.server.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
        .map_or(until, |t| t.min(until));
        if next > self.now {
            self.now = next;
            self.stalled = 0;
        } else {
            self.stalled += 1;
            assert!(
                self.stalled < 100_000,
                "simulation livelocked at {:?}: timers never move time forward",
                self.elapsed()
            );
        }
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
    }

    /// Steps until `done` holds (checked after each step) or `limit` of simulated time
    /// passes; returns whether `done` held. `app` runs on every step.
    pub fn run(
        &mut self,
        limit: Duration,
        mut app: impl FnMut(&mut Self),
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> bool {
        let end = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            if self.now >= end {
                self.step(end, &mut app);
                return done(self);
            }
            self.step(end, &mut app);
        }
    }
}
