//! The engine end to end over a veth pair between two network namespaces, for each
//! backend and for IPv4 and IPv6: a bulk transfer checked by SHA-256, 1,000 concurrent
//! connections each echoing 1 MiB, datagrams and messages with deadlines, a client that
//! changes port mid-transfer (with the kernel's CID steering and without it, through the
//! workers' handoff), and a flood of random and mutated datagrams during a transfer.
//!
//! Sizes can be lowered for a quick run: `STOQ_E2E_BYTES` (bulk, default 1 GiB) and
//! `STOQ_E2E_CONNS` (default 1,000).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stoq::api::{Endpoint, MessageOutcome, PathEvent};
use stoq::conn::Urgency;
use stoq::engine::{EngineConfig, XdpMode};
use stoq::io::BackendKind;
use stoq_netns::VethPair;
use stoq_tests::engine::{self, Pair, SERVER_NAME};
use stoq_tests::{Rng, privileged};

/// A backend and, for AF_XDP, how the program attaches.
#[derive(Debug, Clone, Copy)]
struct Mode(BackendKind, XdpMode);

impl Mode {
    fn tune(self) -> impl Fn(&mut EngineConfig) {
        move |c: &mut EngineConfig| {
            c.backend = Some(self.0);
            c.xdp_mode = self.1;
        }
    }
}

fn env_usize(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bulk(name: &str, mode: Mode, v6: bool) {
    if !privileged(name) {
        return;
    }
    let size = env_usize("STOQ_E2E_BYTES", 1 << 30);
    let p = engine::pair("bulk", v6, mode.0, mode.tune());
    engine::runtime().block_on(async {
        tokio::spawn(engine::serve(p.server.clone()));
        let conn = p
            .client
            .connect(p.target, SERVER_NAME)
            .await
            .expect("connect");
        let t = Instant::now();
        let (theirs, n, ours) = engine::upload(&conn, 7, size).await;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(n as usize, size, "every byte arrived");
        assert_eq!(theirs, ours, "SHA-256 of what arrived");
        eprintln!(
            "{name}: {size} bytes in {secs:.2} s, {:.2} Gbit/s, {:?}",
            size as f64 * 8.0 / secs / 1e9,
            conn.stats().map(|s| (s.lost_packets, s.smoothed_rtt))
        );
        assert_eq!(p.server.info().selection.chosen, mode.0);
        eprintln!("{name}: server {}", p.server.info().detail);
        // ECN crossed the veth both ways: each side's marks were counted by the other's
        // backend and reported back (a backend that lost the bits would fail validation).
        let client_ecn = conn.stats().map(|s| s.ecn_state);
        let server_ecn = p.server.with_connections(|c| c.stats().ecn_state);
        assert_eq!(client_ecn, Some("capable"), "client ECN validation");
        assert_eq!(server_ecn, vec!["capable"], "server ECN validation");
        conn.close(0, b"");
    });
}

/// A server bound to the wildcard address of a host with two addresses, reached at the
/// second one: it must answer from that address (IP_PKTINFO / IPV6_PKTINFO). The OS alone
/// would answer from the first, which the client would drop as another path before the
/// handshake completes.
fn multihomed(name: &str, mode: Mode, v6: bool) {
    if !privileged(name) {
        return;
    }
    let p = engine::pair("multihome", v6, mode.0, move |c| {
        mode.tune()(c);
        if c.bind.port() == 4433 {
            c.bind = if v6 { "[::]:4433" } else { "0.0.0.0:4433" }
                .parse()
                .expect("literal");
        }
    });
    let (second, prefix): (std::net::IpAddr, &str) = if v6 {
        let mut o = p.veth.b6.octets();
        o[15] = 3;
        (std::net::Ipv6Addr::from(o).into(), "64")
    } else {
        let mut o = p.veth.b4.octets();
        o[3] = 3;
        (std::net::Ipv4Addr::from(o).into(), "24")
    };
    let cidr = format!("{second}/{prefix}");
    let mut args = vec!["addr", "add", &cidr, "dev", VethPair::B_IF];
    if v6 {
        // IPv6 source selection prefers the newest address; a deprecated one (still
        // reachable, and usable when asked for) is never the OS's pick.
        args = [&["-6"][..], &args, &["nodad", "preferred_lft", "0"]].concat();
    }
    p.veth.b.ip(&args).expect("second address");
    // The premise: without pktinfo, the OS answers from another address than `second`.
    let client_ip = if v6 {
        std::net::IpAddr::from(p.veth.a6)
    } else {
        p.veth.a4.into()
    };
    let heard = p
        .veth
        .a
        .run(move || UdpSocket::bind((client_ip, 0)).expect("probe socket"));
    heard
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let to = heard.local_addr().expect("addr");
    p.veth.b.run(move || {
        let s = UdpSocket::bind(if v6 { "[::]:0" } else { "0.0.0.0:0" }).expect("socket");
        s.send_to(b"which address?", to).expect("send");
    });
    let mut b = [0u8; 32];
    let (_, os_pick) = heard.recv_from(&mut b).expect("probe reply");
    assert_ne!(
        os_pick.ip(),
        second,
        "the OS's own choice is the first address"
    );
    let target = SocketAddr::new(second, 4433);
    engine::runtime().block_on(async {
        tokio::spawn(engine::serve(p.server.clone()));
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            p.client.connect(target, SERVER_NAME),
        )
        .await
        .expect("the handshake completed in time")
        .expect("connect");
        engine::echo(&conn, &engine::pattern(5, 256 << 10)).await;
        let st = conn.stats().expect("stats");
        assert_eq!(st.dropped.other_path, 0, "every reply came from {second}");
        assert_eq!(conn.remote_address(), Some(target));
        eprintln!(
            "{name}: answered from {second} (the OS would pick {})",
            os_pick.ip()
        );
        conn.close(0, b"");
    });
}

fn echo_many(name: &str, mode: Mode, v6: bool) {
    if !privileged(name) {
        return;
    }
    let conns = env_usize("STOQ_E2E_CONNS", 1000);
    // This test is about many connections at once, not the flood defences (their tests are
    // netns_handshake_flood and conn::tests::flood), so two of those are relaxed here:
    // - Every connection comes from one address. Under load a server gives one source
    //   prefix at most `DEFAULT_MAX_HANDSHAKES_PER_PREFIX` (768) pending handshakes, and a
    //   handshake stays pending until the client's Finished is processed, well after the
    //   client's `connect` returned on a loaded machine; a client over the limit waits for
    //   its Initial's retransmission (1 s, 2 s, 4 s, ...). Here one prefix may take every
    //   handshake slot.
    // - With a thousand connections the receive rings overflow (AF_XDP drops a fifth of the
    //   datagrams here: printed below), and a client whose packets are lost several times
    //   in a row backs off past the server's 10 s handshake timeout, after which nothing
    //   answers it until its 30 s idle timeout. Here the server waits as long as the client.
    let tune = mode.tune();
    let p = engine::pair("echo", v6, mode.0, move |c| {
        tune(c);
        c.endpoint.max_handshakes_per_prefix = c.endpoint.max_incoming;
        let mut t = (*c.endpoint.transport).clone();
        t.handshake_timeout = Duration::from_secs(30);
        c.endpoint.transport = Arc::new(t);
    });
    let data = Arc::new(engine::pattern(3, 1 << 20));
    engine::runtime().block_on(async {
        tokio::spawn(engine::serve(p.server.clone()));
        let t = Instant::now();
        let mut tasks = Vec::with_capacity(conns);
        // Every connection is open and echoing at once, but at most 256 handshakes are in
        // flight at a time, as a load generator would open them.
        let handshakes = Arc::new(tokio::sync::Semaphore::new(256));
        for _ in 0..conns {
            let handshakes = handshakes.clone();
            let client = p.client.clone();
            let data = data.clone();
            let target = p.target;
            tasks.push(tokio::spawn(async move {
                let (conn, handshake) = {
                    let _slot = handshakes.acquire().await.expect("semaphore");
                    let started = Instant::now();
                    let conn = client.connect(target, SERVER_NAME).await.expect("connect");
                    (conn, started.elapsed())
                };
                engine::echo(&conn, &data).await;
                conn.close(0, b"");
                handshake
            }));
        }
        let mut slowest = Duration::ZERO;
        for t in tasks {
            slowest = slowest.max(t.await.expect("connection task"));
        }
        let stats = p.server.endpoint_stats();
        let accepted: u64 = stats.iter().map(|s| s.accepted).sum();
        let completed: u64 = stats.iter().map(|s| s.handshakes_completed).sum();
        // Every client's connection completed its handshake at the server exactly once.
        assert_eq!(completed, conns as u64, "every handshake completed once: {stats:?}");
        // Orphans: connections the server accepted whose client went on with another
        // (4 of 1,000 were seen once on AF_XDP skb mode with its rings dropping a fifth of
        // the datagrams; the cause is not found yet). They hold a slot until their
        // handshake timeout; more than 1 % fails the test.
        let orphans = accepted.saturating_sub(completed);
        println!("{name}: {orphans} orphan connections");
        assert!(
            accepted >= completed && orphans * 100 <= conns as u64,
            "accepted {accepted} for {completed} completed handshakes: {stats:?}"
        );
        let limited: u64 = p.server.endpoint_stats().iter().map(|s| s.prefix_limited).sum();
        assert_eq!(limited, 0, "no handshake waited for the per-prefix limit");
        let per_worker: Vec<usize> = p
            .server
            .worker_stats()
            .iter()
            .map(|w| w.backend.rx_datagrams as usize)
            .collect();
        let retries: u64 = p.server.endpoint_stats().iter().map(|s| s.retries_sent).sum();
        let kernel_drops = |e: &Endpoint| -> u64 {
            e.worker_stats().iter().map(|w| w.backend.rx_dropped).sum()
        };
        let (server_drops, client_drops) = (kernel_drops(&p.server), kernel_drops(&p.client));
        eprintln!(
            "{name}: {conns} connections x 1 MiB echoed in {:.2} s; server datagrams per worker {per_worker:?}; \
             {retries} Retries; slowest handshake {slowest:?}; kernel receive drops: server \
             {server_drops}, client {client_drops}; XDP {:?}",
            t.elapsed().as_secs_f64(),
            p.server.xdp_stats().map(|s| s.to_string()),
        );
        if conns >= 100 && per_worker.len() > 1 {
            // Every connection from one client address and port lives on one worker: GRO
            // coalesces that address pair's datagrams before any steering sees them, so
            // spreading them would hand datagrams between workers. None was handed over.
            let stats = p.server.worker_stats();
            assert_eq!(
                per_worker.iter().filter(|n| **n > 0).count(),
                1,
                "{per_worker:?} {stats:?}"
            );
            assert!(stats.iter().all(|w| w.handoffs_out == 0), "{stats:?}");
        }
    });
}

fn datagrams_and_messages(name: &str, mode: Mode, v6: bool) {
    if !privileged(name) {
        return;
    }
    let p = engine::pair("dgram", v6, mode.0, mode.tune());
    engine::runtime().block_on(async {
        tokio::spawn(engine::serve(p.server.clone()));
        let conn = p
            .client
            .connect(p.target, SERVER_NAME)
            .await
            .expect("connect");
        let max = conn.max_datagram_size().expect("datagrams enabled");
        assert!(max >= 1100, "{max}");
        for i in 0..50u32 {
            let d = engine::pattern(u64::from(i), 1 + (i as usize * 97) % max);
            // Unreliable by design: resend until the echo comes back.
            let mut tries = 0;
            loop {
                conn.send_datagram(&d).expect("send");
                match tokio::time::timeout(Duration::from_millis(300), conn.read_datagram()).await {
                    Ok(back) => {
                        assert_eq!(back.expect("echo"), d);
                        break;
                    }
                    Err(_) => {
                        tries += 1;
                        assert!(tries < 20, "datagram {i} never echoed");
                    }
                }
            }
        }
        // Messages with deadlines: each is read as a unidirectional stream and hashed.
        let mut outcomes = Vec::new();
        for i in 0..20u64 {
            let m = conn
                .send_message(
                    &engine::pattern(i, 4000),
                    Duration::from_secs(5),
                    Urgency::Interactive,
                )
                .expect("message");
            outcomes.push(m);
        }
        for m in &outcomes {
            assert_eq!(
                m.outcome().await.expect("outcome"),
                MessageOutcome::Delivered
            );
        }
        // The server answered each message with its hash on a stream of its own.
        for _ in 0..20 {
            let mut s = conn.accept_uni().await.expect("answer");
            let mut b = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut s, &mut b)
                .await
                .expect("read");
            assert_eq!(b.len(), 40);
            assert_eq!(u64::from_be_bytes(b[32..].try_into().expect("8")), 4000);
        }
        conn.close(0, b"");
    });
}

/// The client moves to a new port during a transfer; the transfer must finish intact.
/// With steering the kernel keeps delivering to the owning worker (no handoffs); without
/// it, the new 4-tuple may hash to the other worker, which hands the datagrams over.
fn rebinding(name: &str, mode: Mode, steering: bool) {
    if !privileged(name) {
        return;
    }
    // The client moves between sockets, which only the socket backends do: it runs on
    // UDP; the server runs the backend under test.
    // AF_XDP runs a worker per receive queue: give it two, so a new port can land on the
    // other queue's worker.
    let p = engine::pair_with_queues("rebind", false, mode.0, 2, move |c| {
        mode.tune()(c);
        c.steering = steering;
        if c.bind.port() == 0 {
            // The client's engine (the server binds 4433).
            c.backend = Some(BackendKind::Udp);
        }
    });
    let size = env_usize("STOQ_E2E_BYTES", 1 << 30).min(512 << 20);
    engine::runtime().block_on(async {
        tokio::spawn(engine::serve(p.server.clone()));
        let conn = p
            .client
            .connect(p.target, SERVER_NAME)
            .await
            .expect("connect");
        let upload = {
            let conn = conn.clone();
            tokio::spawn(async move { engine::upload(&conn, 11, size).await })
        };
        let handoffs =
            |p: &Pair| -> u64 { p.server.worker_stats().iter().map(|w| w.handoffs_out).sum() };
        let mut moves = 0;
        let mut ports = Vec::new();
        // 40 changes 10 ms apart (STOQ_REBIND_MOVES sets another count). Some land while
        // the client has nothing in flight (blocked on the server's flow-control credit):
        // the engine then announces the new port with a PING, or the server would keep
        // sending to the port the client left.
        let max_moves = env_usize("STOQ_REBIND_MOVES", 40);
        while !upload.is_finished() && moves < max_moves {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let c = p.client.clone();
            // The new socket must be opened inside the client's namespace.
            let addr = p
                .veth
                .a
                .run(move || c.rebind("0.0.0.0:0".parse().expect("literal")))
                .expect("rebind");
            ports.push(addr.port());
            moves += 1;
            if !steering && handoffs(&p) > 0 && moves >= 3 {
                break;
            }
        }
        let Ok(done) = tokio::time::timeout(Duration::from_secs(60), upload).await else {
            // A stalled transfer fails with what each side knew, not a hang.
            panic!(
                "{name}: the upload stalled after {moves} port changes {ports:?}\n\
                 client workers {:?}\nserver workers {:?}\nclient connections {:?}\n\
                 server connections {:?}",
                p.client.worker_stats(),
                p.server.worker_stats(),
                p.client.with_connections(|c| c.stats()),
                p.server.with_connections(|c| c.stats()),
            );
        };
        let (theirs, n, ours) = done.expect("upload task");
        assert_eq!(n as usize, size);
        assert_eq!(theirs, ours, "SHA-256 after {moves} port changes");
        let h = handoffs(&p);
        let stats = p.server.worker_stats();
        eprintln!("{name}: {moves} port changes {ports:?}; server workers {stats:?}");
        assert!(
            moves >= 3,
            "the transfer outlived at least three port changes"
        );
        if mode.0 == BackendKind::AfXdp {
            // Frames arrive on the queue the device picks, whatever the CID says; the
            // owner gets them through the handoff.
            assert_eq!(stats.len(), 2, "a worker per queue");
            let dropped: u64 = stats.iter().map(|w| w.handoffs_dropped).sum();
            assert_eq!(dropped, 0);
        } else if steering {
            assert_eq!(h, 0, "the kernel steered every datagram to its owner");
        } else {
            assert!(
                h > 0,
                "after {moves} port changes a datagram reached the wrong worker and was handed over"
            );
            let dropped: u64 = stats.iter().map(|w| w.handoffs_dropped).sum();
            assert_eq!(dropped, 0);
        }
        conn.close(0, b"");
    });
}

/// Builds a hostile datagram: random bytes, or a mutated STOQ header aimed at the live
/// connection's CID (forcing header unprotection and a failed decryption), or a long
/// header with garbage.
fn hostile(rng: &mut Rng, cid: &[u8], buf: &mut [u8]) -> usize {
    let len = 1 + rng.below(buf.len());
    rng.fill(&mut buf[..len]);
    match rng.below(3) {
        0 => {}
        1 if len > 1 + cid.len() + 20 => {
            buf[0] = 0x40 | (buf[0] & 0x3f);
            buf[1..1 + cid.len()].copy_from_slice(cid);
        }
        _ if len > 7 => {
            buf[0] |= 0xc0;
            buf[1..5].copy_from_slice(&1u32.to_be_bytes());
            buf[5] = (buf[5] % 21).min((len - 6) as u8);
        }
        _ => {}
    }
    len
}

fn flood(name: &str, mode: Mode, v6: bool) {
    if !privileged(name) {
        return;
    }
    const DATAGRAMS: u64 = 1_000_000;
    let p = engine::pair("flood", v6, mode.0, mode.tune());
    let size = env_usize("STOQ_E2E_BYTES", 1 << 30).min(256 << 20);
    engine::runtime().block_on(async {
        tokio::spawn(engine::serve(p.server.clone()));
        let conn = p.client.connect(p.target, SERVER_NAME).await.expect("connect");
        // Warm up (buffers, pools), then take the baseline.
        let (a, _, b) = engine::upload(&conn, 1, 8 << 20).await;
        assert_eq!(a, b);
        let rss0 = engine::rss();
        // The CID the client addresses the server by is on the wire: an attacker has it.
        let cid = server_cid(&p).expect("the server's connection");
        let target: SocketAddr = p.target;
        let blaster = p.veth.a.spawn(move || {
            let bind = if target.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
            let s = UdpSocket::bind(bind).expect("blaster socket");
            let mut rng = Rng::new(0x5eed);
            let mut buf = vec![0u8; 1400];
            let t = Instant::now();
            for i in 0..DATAGRAMS {
                let n = hostile(&mut rng, &cid, &mut buf);
                let _ = s.send_to(&buf[..n], target);
                // About 300,000 a second: hostile, but within what the kernel queues,
                // so the counters (not the socket buffer) account for them.
                if i % 64 == 63 {
                    let due = Duration::from_secs_f64(i as f64 / 300_000.0);
                    if let Some(wait) = due.checked_sub(t.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            }
        });
        let mut peak = rss0;
        let up = {
            let conn = conn.clone();
            tokio::spawn(async move { engine::upload(&conn, 2, size).await })
        };
        while !up.is_finished() || !blaster.is_finished() {
            peak = peak.max(engine::rss());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        blaster.join().expect("blaster");
        let (theirs, n, ours) = up.await.expect("upload");
        assert_eq!(n as usize, size);
        assert_eq!(theirs, ours, "the transfer survived the flood intact");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let ep = p.server.endpoint_stats();
        let malformed: u64 = ep.iter().flat_map(|s| s.malformed.iter()).sum();
        let unknown: u64 = ep.iter().map(|s| s.unknown_cid + s.unauthenticated_initial).sum();
        let in_conn = server_drops(&p);
        // On the XDP path the kernel drops malformed datagrams before userspace sees them.
        let in_kernel = p.server.xdp_stats().map_or(0, |s| s.dropped_total());
        let counted = malformed + unknown + in_conn + in_kernel;
        let growth = peak.saturating_sub(rss0);
        eprintln!(
            "{name}: {DATAGRAMS} hostile datagrams; counted {counted} (in the kernel {in_kernel}, malformed {malformed}, unknown CID {unknown}, in the connection {in_conn}); RSS growth {} MiB",
            growth >> 20
        );
        // The stated bound: the flood adds no more than 64 MiB, whatever its size.
        assert!(growth < 64 << 20, "memory grew by {growth} bytes under the flood");
        assert!(
            counted >= DATAGRAMS * 95 / 100,
            "only {counted} of {DATAGRAMS} hostile datagrams were counted as dropped"
        );
        conn.close(0, b"");
    });
}

/// The server's (only) connection's CID.
/// The path's MTU drops mid-transfer (`ip link set mtu 1300` on both ends of the veth, as
/// when a tunnel appears): the transfer finishes intact, the client detected the black
/// hole and searched again below the new limit, and its application heard the new
/// DATAGRAM size through `path_event`.
fn path_shrinks(name: &str, mode: Mode) {
    if !privileged(name) {
        return;
    }
    let size = env_usize("STOQ_E2E_BYTES", 1 << 30).min(512 << 20);
    let p = engine::pair("pmtu", false, mode.0, mode.tune());
    engine::runtime().block_on(async {
        tokio::spawn(engine::serve(p.server.clone()));
        let conn = p
            .client
            .connect(p.target, SERVER_NAME)
            .await
            .expect("connect");
        let sizes = {
            let c = conn.clone();
            tokio::spawn(async move {
                let mut sizes = Vec::new();
                while let Ok(e) = c.path_event().await {
                    if let PathEvent::DatagramSizeChanged(d) = e {
                        sizes.push(d);
                    }
                }
                sizes
            })
        };
        let up = {
            let c = conn.clone();
            tokio::spawn(async move { engine::upload(&c, 5, size).await })
        };
        // Mid-transfer: some data has gone at the old size.
        let moved = engine::eventually(Duration::from_secs(10), || {
            conn.stats().is_some_and(|s| s.tx_bytes > 32 << 20)
        })
        .await;
        assert!(moved, "the transfer started");
        // The path started at 1,200 bytes and discovery has raised it to what the
        // 1,500-byte link carries.
        let before = conn.max_datagram_size().expect("datagrams on");
        assert!(
            conn.stats().is_some_and(|s| s.path_mtu > 1400),
            "discovery raised the path MTU: {:?}",
            conn.stats().map(|s| s.path_mtu)
        );
        for (ns, dev) in [(&p.veth.a, VethPair::A_IF), (&p.veth.b, VethPair::B_IF)] {
            ns.ip(&["link", "set", "dev", dev, "mtu", "1300"])
                .expect("lower the MTU");
        }
        let (theirs, n, ours) = tokio::time::timeout(Duration::from_secs(120), up)
            .await
            .expect("the transfer finished after the MTU dropped")
            .expect("upload");
        assert_eq!(n as usize, size, "every byte arrived");
        assert_eq!(theirs, ours, "SHA-256 of what arrived");
        let st = conn.stats().expect("stats");
        let now = conn.max_datagram_size().expect("datagrams on");
        eprintln!(
            "{name}: DATAGRAM size {before} -> {now}; path MTU {}, black holes {}, lost {}",
            st.path_mtu, st.mtu_black_holes, st.lost_packets
        );
        assert!(st.mtu_black_holes >= 1, "{st:?}");
        // 1,300 bytes of IPv4 packet: 1,272 of UDP payload at most.
        assert!(
            (1200..=1272).contains(&st.path_mtu),
            "path MTU {} after the drop",
            st.path_mtu
        );
        assert!(now < before);
        conn.close(0, b"");
        let sizes = tokio::time::timeout(Duration::from_secs(5), sizes)
            .await
            .expect("the event task ended with the connection")
            .expect("events");
        assert_eq!(
            sizes.last(),
            Some(&now),
            "the application heard the size now: {sizes:?}"
        );
    });
}

fn server_cid(p: &Pair) -> Option<Vec<u8>> {
    p.server
        .with_connections(|c| c.local_cid().as_bytes().to_vec())
        .into_iter()
        .next()
}

/// Packets the server's connections dropped (failed decryption, duplicates, malformed).
fn server_drops(p: &Pair) -> u64 {
    p.server
        .with_connections(|c| {
            let d = c.stats().dropped;
            d.decrypt_failed + d.malformed + d.duplicate + d.no_keys + d.mismatched_cid
        })
        .iter()
        .sum()
}

macro_rules! backend_tests {
    ($m:ident, $kind:expr) => {
        backend_tests!($m, $kind, XdpMode::Auto);
    };
    ($m:ident, $kind:expr, $xdp:expr) => {
        mod $m {
            use super::*;

            const MODE: Mode = Mode($kind, $xdp);

            #[test]
            fn bulk_ipv4() {
                bulk(concat!(stringify!($m), "_bulk_ipv4"), MODE, false);
            }
            #[test]
            fn bulk_ipv6() {
                bulk(concat!(stringify!($m), "_bulk_ipv6"), MODE, true);
            }
            #[test]
            fn echo_1000_connections_ipv4() {
                echo_many(concat!(stringify!($m), "_echo_ipv4"), MODE, false);
            }
            #[test]
            fn echo_1000_connections_ipv6() {
                echo_many(concat!(stringify!($m), "_echo_ipv6"), MODE, true);
            }
            #[test]
            fn datagrams_and_messages_ipv4() {
                datagrams_and_messages(concat!(stringify!($m), "_dgram_ipv4"), MODE, false);
            }
            #[test]
            fn datagrams_and_messages_ipv6() {
                datagrams_and_messages(concat!(stringify!($m), "_dgram_ipv6"), MODE, true);
            }
            #[test]
            fn rebinding_steered() {
                rebinding(concat!(stringify!($m), "_rebind_steered"), MODE, true);
            }
            #[test]
            fn rebinding_handed_off() {
                rebinding(concat!(stringify!($m), "_rebind_handoff"), MODE, false);
            }
            #[test]
            fn hostile_flood_ipv4() {
                flood(concat!(stringify!($m), "_flood_ipv4"), MODE, false);
            }
            #[test]
            fn hostile_flood_ipv6() {
                flood(concat!(stringify!($m), "_flood_ipv6"), MODE, true);
            }
        }
    };
}

backend_tests!(udp, BackendKind::Udp);
backend_tests!(io_uring, BackendKind::IoUring);

/// The socket backends can bind a wildcard address (AF_XDP serves one address).
macro_rules! multihomed_tests {
    ($m:ident, $kind:expr) => {
        mod $m {
            use super::*;

            const MODE: Mode = Mode($kind, XdpMode::Auto);

            #[test]
            fn answers_from_the_address_asked_ipv4() {
                multihomed(concat!(stringify!($m), "_multihome_ipv4"), MODE, false);
            }
            #[test]
            fn answers_from_the_address_asked_ipv6() {
                multihomed(concat!(stringify!($m), "_multihome_ipv6"), MODE, true);
            }
        }
    };
}

/// Path MTU: the socket backends (the kernel refuses a datagram larger than the
/// interface's MTU; AF_XDP's frames bypass that check).
mod pmtu {
    use super::*;

    #[test]
    fn udp_path_shrinks_mid_transfer() {
        path_shrinks("udp_pmtu", Mode(BackendKind::Udp, XdpMode::Auto));
    }
    #[test]
    fn io_uring_path_shrinks_mid_transfer() {
        path_shrinks("io_uring_pmtu", Mode(BackendKind::IoUring, XdpMode::Auto));
    }
}

multihomed_tests!(udp_wildcard, BackendKind::Udp);
multihomed_tests!(io_uring_wildcard, BackendKind::IoUring);
backend_tests!(af_xdp_driver, BackendKind::AfXdp, XdpMode::Driver);
backend_tests!(af_xdp_skb, BackendKind::AfXdp, XdpMode::Skb);
