//! No leak: the heap comes back to its baseline after connections close.
//!
//! A counting global allocator measures the live heap of this test binary. Two in-memory
//! sans-IO endpoints (no sockets, no threads, time moved by hand) run rounds of 200
//! connections, each with a stream each way, DATAGRAMs and a close, then let every
//! connection drain and the idle timeout pass. After a first round (which warms whatever
//! is kept for reuse), every later round must end where the one before ended: a leak of a
//! few bytes per connection would show as hundreds of kilobytes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use rand_core::OsRng;
use stoq::conn::{
    ConnectionHandle, DatagramEvent, DatagramInfo, Dir, EcnCodepoint, Endpoint, EndpointConfig,
};
use stoq::crypto::CipherSuite;
use stoq::crypto::sig::{SigAlg, SigningKey};
use stoq::handshake::params::TransportParams;
use stoq::handshake::{ClientConfig, Credential, ServerConfig, Trust};

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counter is only
// arithmetic on the sizes it was given.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const CONNS: usize = 200;

struct Net {
    client: Endpoint,
    server: Endpoint,
    client_addr: SocketAddr,
    server_addr: SocketAddr,
    now: Instant,
    buf: Vec<u8>,
    accepted: Vec<ConnectionHandle>,
}

fn info() -> DatagramInfo {
    DatagramInfo {
        local_ip: None,
        ecn: EcnCodepoint::NotEct,
    }
}

impl Net {
    /// Moves datagrams both ways until neither side has anything to send.
    fn exchange(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.client.poll_transmit(self.now, &mut self.buf) {
                let mut d = self.buf[..t.size].to_vec();
                if let Some(DatagramEvent::Incoming(i)) =
                    self.server
                        .handle_datagram(self.now, self.client_addr, info(), &mut d)
                    && let Ok(h) = self.server.accept(i, self.now)
                {
                    self.accepted.push(h);
                }
                moved = true;
            }
            while let Some(t) = self.server.poll_transmit(self.now, &mut self.buf) {
                let mut d = self.buf[..t.size].to_vec();
                self.client
                    .handle_datagram(self.now, self.server_addr, info(), &mut d);
                moved = true;
            }
            while self.client.poll_event().is_some() {}
            while self.server.poll_event().is_some() {}
            if !moved {
                break;
            }
        }
    }

    /// Advances time by `by`, in steps, running timers and exchanges.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while self.now < end {
            self.now += Duration::from_millis(50);
            self.client.handle_timeout(self.now);
            self.server.handle_timeout(self.now);
            self.exchange();
        }
    }

    /// One round: connect, use and close `CONNS` connections, then let them all go.
    fn round(&mut self, client_cfg: &Arc<ClientConfig>) {
        let mut conns = Vec::with_capacity(CONNS);
        for _ in 0..CONNS {
            let h = self
                .client
                .connect(self.now, self.server_addr, client_cfg.clone())
                .expect("connect");
            conns.push(h);
        }
        self.exchange();
        self.advance(Duration::from_millis(200));
        let mut out = vec![0u8; 16 << 10];
        for h in &conns {
            let c = self.client.connection_mut(*h).expect("client connection");
            assert!(c.is_established(), "{:?}", c.error());
            let id = c.open_stream(Dir::Bi).expect("stream");
            c.write(id, &[7u8; 10_000]).expect("write");
            c.finish(id).expect("finish");
            c.send_datagram(&[9u8; 500]).expect("datagram");
        }
        self.exchange();
        // The server reads and answers on every stream.
        for h in std::mem::take(&mut self.accepted) {
            let Some(c) = self.server.connection_mut(h) else {
                continue;
            };
            while let Some(id) = c.accept_stream(Dir::Bi) {
                while let Ok(Some(_)) = c.read(id, &mut out) {}
                let _ = c.write(id, &[8u8; 5_000]);
                let _ = c.finish(id);
            }
            while c.recv_datagram().is_some() {}
        }
        self.exchange();
        self.advance(Duration::from_millis(200));
        for h in &conns {
            if let Some(c) = self.client.connection_mut(*h) {
                while let Some(id) = c.accept_stream(Dir::Bi) {
                    while let Ok(Some(_)) = c.read(id, &mut out) {}
                }
                let id = stoq::conn::StreamId(0);
                while let Ok(Some(_)) = c.read(id, &mut out) {}
                c.close(self.now, 0, b"done");
            }
        }
        self.exchange();
        // Closing, draining, and past the idle timeout for anything left over.
        self.advance(Duration::from_secs(40));
        assert_eq!(self.client.connection_count(), 0, "client connections gone");
        assert_eq!(self.server.connection_count(), 0, "server connections gone");
    }
}

#[test]
fn the_heap_returns_to_its_baseline_after_connections_close() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let server_cfg = Arc::new(ServerConfig {
        alpn: Vec::new(),
        credential: Credential::RawKey {
            key,
            public: public.clone(),
        },
        suites: CipherSuite::ALL.to_vec(),
        params: TransportParams::default(),
        client_auth: None,
        tickets: stoq::handshake::TicketSettings::default(),
        batch_signing: true,
        early_data: stoq::handshake::EarlyDataSettings::default(),
    });
    let client_cfg = Arc::new(ClientConfig {
        alpn: Vec::new(),
        server_name: "leak.stoq".into(),
        trust: Trust::PinnedKey(public),
        suites: CipherSuite::local_preference().collect(),
        sig_algs: vec![SigAlg::Falcon512],
        params: TransportParams::default(),
        credential: None,
        resumption: None,
        batch_signatures: true,
        early_data: false,
    });
    let now = Instant::now();
    let mut cfg = EndpointConfig::new();
    cfg.rng_seed = [1; 32];
    let server = Endpoint::new(cfg.clone(), Some(server_cfg)).expect("server");
    cfg.rng_seed = [2; 32];
    let client = Endpoint::new(cfg, None).expect("client");
    let mut net = Net {
        client,
        server,
        client_addr: "[fd00:5710::1]:5000".parse().expect("addr"),
        server_addr: "[fd00:5710::2]:4433".parse().expect("addr"),
        now,
        buf: Vec::new(),
        accepted: Vec::new(),
    };
    // Warm-up: whatever is kept for reuse (buffers, tables grown to their working size).
    net.round(&client_cfg);
    let mut ends = Vec::new();
    for _ in 0..3 {
        net.round(&client_cfg);
        ends.push(LIVE.load(Ordering::Relaxed));
    }
    eprintln!("live heap after each round: {ends:?} bytes");
    let growth = ends[2] - ends[0];
    // 200 connections a round: 64 KiB over two rounds is under 164 bytes a connection.
    assert!(
        growth < 64 << 10,
        "the heap grew by {growth} bytes over two rounds of {CONNS} connections: {ends:?}"
    );
}

/// The tests of this binary measure one global heap: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Through the async API, a connection served on its worker whose handler finishes its
/// streams without awaiting `finished()` keeps nothing per stream: rounds of 10,000
/// streams end where the round before ended.
#[test]
fn the_heap_stays_flat_over_the_streams_of_a_long_lived_connection() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    use stoq::engine::EngineConfig;
    use stoq::io::BackendKind;
    const STREAMS: usize = 10_000;
    const ROUNDS: usize = 4;
    let config = || {
        let mut c = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
        c.backend = Some(BackendKind::Udp);
        c.workers = 1;
        c
    };
    let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let server = stoq::Endpoint::server(
        config(),
        Arc::new(ServerConfig::raw_key(key, public.clone())),
    )
    .expect("server");
    let addr = server.local_addr();
    // On the worker: each request (a unidirectional stream) is answered with 10,000
    // streams of one byte, finished and dropped.
    server
        .serve(|conn| async move {
            while let Ok(mut go) = conn.accept_uni().await {
                if go.read_to_end_limited(16).await.is_err() {
                    return;
                }
                for _ in 0..STREAMS {
                    let Ok(mut s) = conn.open_uni().await else {
                        return;
                    };
                    if s.write_all_data(b"x").await.is_err() || s.finish().is_err() {
                        return;
                    }
                }
            }
        })
        .expect("serve");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = stoq::Endpoint::client(
            config(),
            Arc::new(ClientConfig::pinned("leak.stoq", public)),
        )
        .expect("client");
        let conn = client.connect(addr, "leak.stoq").await.expect("connect");
        let mut ends = Vec::new();
        for _ in 0..ROUNDS {
            let mut go = conn.open_uni().await.expect("open");
            go.write_all_data(b"go").await.expect("write");
            go.finish().expect("finish");
            for _ in 0..STREAMS {
                let mut r = conn.accept_uni().await.expect("a stream");
                assert_eq!(r.read_to_end_limited(16).await.expect("read"), b"x");
            }
            // The last streams' ACKs reach the server within a few round trips.
            tokio::time::sleep(Duration::from_millis(300)).await;
            ends.push(LIVE.load(Ordering::Relaxed));
        }
        eprintln!("live heap after each round of {STREAMS} streams: {ends:?} bytes");
        conn.close(0, b"");
        client.shutdown(Duration::from_secs(2)).await;
        server.shutdown(Duration::from_secs(2)).await;
        // The first round warms what is kept for reuse.
        let growth = ends[ROUNDS - 1] - ends[1];
        assert!(
            growth < 64 << 10,
            "the heap grew by {growth} bytes over two rounds of {STREAMS} streams: {ends:?}"
        );
    });
}
