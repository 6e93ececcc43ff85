//! No allocation on the per-packet path: steady-state bulk transfer and request/response
//! (on a stream and with DATAGRAMs) between two sans-IO endpoints over a simulated path
//! allocate nothing per packet.
//!
//! A counting global allocator counts the allocations made by this test's thread while a
//! measurement is on. The path is an in-memory link with a fixed delay and rate whose
//! datagram slots are allocated up front, so everything counted is the endpoints' own:
//! packet assembly and parsing, encryption, ACKs, loss recovery, congestion control, the
//! stream and DATAGRAM queues. After a warm-up (tables and queues grow to their working
//! size once), a measured run of thousands of packets must make no allocation at all.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use stoq::conn::{
    ConnectionHandle, DatagramEvent, DatagramInfo, Dir, EcnCodepoint, Endpoint, EndpointConfig,
    StreamId,
};
use stoq::crypto::CipherSuite;
use stoq::crypto::sig::{SigAlg, SigningKey};
use stoq::handshake::params::TransportParams;
use stoq::handshake::{ClientConfig, Credential, ServerConfig, Trust};

/// The system allocator, counting this thread's allocations while `COUNTING` is on.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: during thread teardown the slots may be gone; nothing is measured then.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are
// const-initialised thread-locals without destructors, so touching them never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations_in(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

/// One direction of the path: datagram slots allocated up front, each with its arrival
/// time; a fixed one-way delay and a serialisation rate.
struct Link {
    slots: Vec<(Instant, usize, [u8; 1500])>,
    head: usize,
    len: usize,
    free_at: Instant,
    delay: Duration,
    ns_per_byte: f64,
    /// Datagrams dropped because every slot was taken (a full router queue).
    dropped: u64,
}

impl Link {
    fn new(now: Instant, slots: usize, delay: Duration, gbit: f64) -> Self {
        Self {
            slots: vec![(now, 0, [0; 1500]); slots],
            head: 0,
            len: 0,
            free_at: now,
            delay,
            ns_per_byte: 8.0 / gbit,
            dropped: 0,
        }
    }

    /// The next free slot's buffer, or `None` when the queue is full.
    fn tail(&mut self) -> Option<&mut [u8; 1500]> {
        if self.len == self.slots.len() {
            return None;
        }
        let i = (self.head + self.len) % self.slots.len();
        Some(&mut self.slots[i].2)
    }

    /// Commits the datagram written into the tail slot.
    fn push(&mut self, now: Instant, size: usize) {
        let start = self.free_at.max(now);
        self.free_at = start + Duration::from_nanos((size as f64 * self.ns_per_byte) as u64);
        let i = (self.head + self.len) % self.slots.len();
        self.slots[i].0 = self.free_at + self.delay;
        self.slots[i].1 = size;
        self.len += 1;
    }

    fn next_arrival(&self) -> Option<Instant> {
        (self.len > 0).then(|| self.slots[self.head].0)
    }

    /// Hands every datagram that has arrived by `now` to `to`.
    fn deliver(&mut self, now: Instant, from: SocketAddr, to: &mut Endpoint) -> u64 {
        let mut n = 0;
        while self.len > 0 && self.slots[self.head].0 <= now {
            let (_, size, ref mut buf) = self.slots[self.head];
            let info = DatagramInfo {
                local_ip: None,
                ecn: EcnCodepoint::Ect0,
            };
            if let Some(DatagramEvent::Incoming(_)) =
                to.handle_datagram(now, from, info, &mut buf[..size])
            {
                unreachable!("no new connections during the measurement");
            }
            self.head = (self.head + 1) % self.slots.len();
            self.len -= 1;
            n += 1;
        }
        n
    }
}

/// Two endpoints, one connection, and the path between them.
struct Net {
    client: Endpoint,
    server: Endpoint,
    c: ConnectionHandle,
    s: ConnectionHandle,
    client_addr: SocketAddr,
    server_addr: SocketAddr,
    now: Instant,
    up: Link,
    down: Link,
    /// Datagrams delivered, both ways.
    packets: u64,
}

impl Net {
    fn new() -> Self {
        let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
        let params = TransportParams {
            max_datagram_frame_size: 1200,
            ..TransportParams::default()
        };
        let server_cfg = Arc::new(ServerConfig {
            alpn: Vec::new(),
            credential: Credential::RawKey {
                key,
                public: public.clone(),
            },
            suites: CipherSuite::ALL.to_vec(),
            params: params.clone(),
            client_auth: None,
            tickets: stoq::handshake::TicketSettings::default(),
            batch_signing: true,
            early_data: stoq::handshake::EarlyDataSettings::default(),
        });
        let client_cfg = Arc::new(ClientConfig {
            alpn: Vec::new(),
            server_name: "alloc.stoq".into(),
            trust: Trust::PinnedKey(public),
            suites: CipherSuite::local_preference().collect(),
            sig_algs: vec![SigAlg::Falcon512],
            params,
            credential: None,
            resumption: None,
            batch_signatures: true,
            early_data: false,
        });
        let now = Instant::now();
        let mut cfg = EndpointConfig::new();
        cfg.rng_seed = [1; 32];
        let mut server = Endpoint::new(cfg.clone(), Some(server_cfg)).expect("server");
        cfg.rng_seed = [2; 32];
        let mut client = Endpoint::new(cfg, None).expect("client");
        let client_addr: SocketAddr = "[fd00:5710::1]:5000".parse().expect("addr");
        let server_addr: SocketAddr = "[fd00:5710::2]:4433".parse().expect("addr");
        // The handshake, over a plain exchange (allocations here are not measured).
        let c = client
            .connect(now, server_addr, client_cfg)
            .expect("connect");
        let mut s = None;
        let mut buf = Vec::new();
        for _ in 0..20 {
            while let Some(t) = client.poll_transmit(now, &mut buf) {
                let mut d = buf[..t.size].to_vec();
                let info = DatagramInfo {
                    local_ip: None,
                    ecn: EcnCodepoint::NotEct,
                };
                if let Some(DatagramEvent::Incoming(i)) =
                    server.handle_datagram(now, client_addr, info, &mut d)
                {
                    s = Some(server.accept(i, now).expect("accept"));
                }
            }
            while let Some(t) = server.poll_transmit(now, &mut buf) {
                let mut d = buf[..t.size].to_vec();
                let info = DatagramInfo {
                    local_ip: None,
                    ecn: EcnCodepoint::NotEct,
                };
                client.handle_datagram(now, server_addr, info, &mut d);
            }
        }
        let s = s.expect("the server accepted");
        assert!(client.connection(c).expect("client").is_established());
        Self {
            client,
            server,
            c,
            s,
            client_addr,
            server_addr,
            now,
            // 1 Gbit/s, 1 ms each way, 2,048 datagrams of queue: far above the window.
            up: Link::new(now, 2048, Duration::from_millis(1), 1.0),
            down: Link::new(now, 2048, Duration::from_millis(1), 1.0),
            packets: 0,
        }
    }

    /// Moves datagrams, runs timers and advances the clock to the next event.
    fn step(&mut self) {
        while let Some(buf) = self.up.tail() {
            match self.client.poll_transmit_into(self.now, buf) {
                Some(t) => self.up.push(self.now, t.size),
                None => break,
            }
        }
        while let Some(buf) = self.down.tail() {
            match self.server.poll_transmit_into(self.now, buf) {
                Some(t) => self.down.push(self.now, t.size),
                None => break,
            }
        }
        while self.client.poll_event().is_some() {}
        while self.server.poll_event().is_some() {}
        let next = [
            self.up.next_arrival(),
            self.down.next_arrival(),
            self.client.poll_timeout(),
            self.server.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.now + Duration::from_millis(1));
        self.now = self.now.max(next);
        self.packets += self
            .up
            .deliver(self.now, self.client_addr, &mut self.server);
        self.packets += self
            .down
            .deliver(self.now, self.server_addr, &mut self.client);
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
    }
}

/// Runs `work` (one step of the application) with the network until `packets` more
/// datagrams have been delivered; returns the allocations made per datagram over the
/// second half (the first half is the warm-up) and the datagrams measured.
fn measure(net: &mut Net, packets: u64, mut work: impl FnMut(&mut Net)) -> (u64, u64) {
    let warm = net.packets + packets / 2;
    while net.packets < warm {
        work(net);
        net.step();
    }
    let start = net.packets;
    let end = start + packets / 2;
    let allocs = allocations_in(|| {
        while net.packets < end {
            work(net);
            net.step();
        }
    });
    assert_eq!(net.up.dropped + net.down.dropped, 0);
    (allocs, net.packets - start)
}

#[test]
fn steady_state_bulk_allocates_nothing_per_packet() {
    let mut net = Net::new();
    let id = net
        .client
        .connection_mut(net.c)
        .expect("client")
        .open_stream(Dir::Uni)
        .expect("stream");
    let data = vec![0x5au8; 64 << 10];
    let mut out = vec![0u8; 64 << 10];
    let mut received = 0u64;
    let mut accepted = None;
    let (allocs, packets) = measure(&mut net, 40_000, |net| {
        let c = net.client.connection_mut(net.c).expect("client");
        while let Ok(n) = c.write(id, &data) {
            if n == 0 {
                break;
            }
        }
        let s = net.server.connection_mut(net.s).expect("server");
        if accepted.is_none() {
            accepted = s.accept_stream(Dir::Uni);
        }
        if let Some(sid) = accepted {
            while let Ok(Some(n)) = s.read(sid, &mut out) {
                received += n as u64;
            }
        }
    });
    println!(
        "bulk: {allocs} allocations over {packets} datagrams; {} MB delivered",
        received / 1_000_000
    );
    assert!(received > 20_000_000, "the transfer ran: {received} bytes");
    assert_eq!(allocs, 0, "allocations in steady-state bulk");
}

#[test]
fn steady_state_request_response_allocates_nothing_per_packet() {
    let mut net = Net::new();
    let id = net
        .client
        .connection_mut(net.c)
        .expect("client")
        .open_stream(Dir::Bi)
        .expect("stream");
    let mut buf = [0u8; 4096];
    let mut server_stream: Option<StreamId> = None;
    let mut outstanding = false;
    let mut answered = 0u64;
    let (allocs, packets) = measure(&mut net, 20_000, |net| {
        let c = net.client.connection_mut(net.c).expect("client");
        if !outstanding {
            assert_eq!(c.write(id, &[7u8; 64]), Ok(64));
            outstanding = true;
        }
        let mut got = 0;
        while let Ok(Some(n)) = c.read(id, &mut buf) {
            got += n;
        }
        if got > 0 {
            assert_eq!(got, 64, "one answer per request");
            outstanding = false;
            answered += 1;
        }
        let s = net.server.connection_mut(net.s).expect("server");
        if server_stream.is_none() {
            server_stream = s.accept_stream(Dir::Bi);
        }
        if let Some(sid) = server_stream {
            while let Ok(Some(n)) = s.read(sid, &mut buf) {
                let answer = buf;
                assert_eq!(s.write(sid, &answer[..n]), Ok(n));
            }
        }
    });
    println!("request/response: {allocs} allocations over {packets} datagrams, {answered} answers");
    assert!(answered > 2_000, "requests were answered: {answered}");
    assert_eq!(allocs, 0, "allocations in steady-state request/response");
}

#[test]
fn steady_state_datagram_echo_allocates_nothing_per_packet() {
    let mut net = Net::new();
    let mut inbox = Vec::with_capacity(2048);
    let mut outstanding = false;
    let mut answered = 0u64;
    let (allocs, packets) = measure(&mut net, 20_000, |net| {
        let c = net.client.connection_mut(net.c).expect("client");
        if !outstanding {
            c.send_datagram(&[7u8; 64]).expect("datagram");
            outstanding = true;
        }
        if c.recv_datagram_into(&mut inbox) {
            assert_eq!(inbox.len(), 64);
            outstanding = false;
            answered += 1;
        }
        let s = net.server.connection_mut(net.s).expect("server");
        while s.recv_datagram_into(&mut inbox) {
            s.send_datagram(&inbox).expect("echo");
        }
    });
    println!("DATAGRAM echo: {allocs} allocations over {packets} datagrams, {answered} answers");
    assert!(answered > 2_000, "datagrams were echoed: {answered}");
    assert_eq!(allocs, 0, "allocations in steady-state DATAGRAM echo");
}
