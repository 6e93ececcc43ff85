//! A handshake flood through the real engine over veth: spoofed Initials (valid packets
//! that authenticate) from 10,000 source addresses in 100.64.0.0/10, sent by a raw socket
//! as fast as one thread can, while a transfer runs and a real client connects. Each
//! layer's counters are read: the XDP program's per-prefix Initial rate limit (AF_XDP),
//! then the endpoint's (Retry under load; stateless answers dropped when their queue is
//! full).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stoq::conn::{self, EndpointConfig};
use stoq::engine::{EngineConfig, InitialRateLimit, XdpFilter, XdpMode};
use stoq::io::BackendKind;
use stoq_common::wire::{ipv4, udp};
use stoq_tests::engine::{self, SERVER_NAME};
use stoq_tests::privileged;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Spoofed sources: 10,000 addresses, 250 in each of 40 /24s of 100.64.0.0/10.
const SOURCES: usize = 10_000;
/// Distinct first flights (two datagrams each), one per source, sent over and over.
const FLIGHTS: usize = SOURCES;
/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(4);
/// The kernel's limit in this test: 2,000 Initials a second per /24 and CPU, bursts of
/// 256 (the default, 20,000, lets 40 prefixes' worth of one sender's flood through).
const LIMIT: InitialRateLimit = InitialRateLimit {
    per_second: 2_000,
    burst: 256,
};

fn source(i: usize) -> Ipv4Addr {
    let i = i % SOURCES;
    Ipv4Addr::new(
        100,
        64 + (i / 250 / 256) as u8,
        ((i / 250) % 256) as u8,
        1 + (i % 250) as u8,
    )
}

/// Valid first flights of `n` clients to `to`, built by the sans-IO client.
fn flights(to: SocketAddr, n: usize) -> Vec<Vec<Vec<u8>>> {
    let (_, client) = engine::configs();
    let mut ep = conn::Endpoint::new(EndpointConfig::new(), None).expect("endpoint");
    let now = Instant::now();
    let mut buf = Vec::new();
    (0..n)
        .map(|_| {
            ep.connect(now, to, client.clone()).expect("connect");
            let mut f = Vec::new();
            while let Some(t) = ep.poll_transmit(now, &mut buf) {
                f.push(buf[..t.size].to_vec());
            }
            f
        })
        .collect()
}

/// An IPv4 + UDP packet from `src` carrying `payload`.
fn spoofed_packet(src: Ipv4Addr, to: SocketAddrV4, payload: &[u8], out: &mut Vec<u8>) {
    let udp_len = udp::HEADER_LEN + payload.len();
    out.clear();
    out.resize(ipv4::MIN_HEADER_LEN + udp_len, 0);
    ipv4::Repr {
        src,
        dst: *to.ip(),
        protocol: ipv4::PROTO_UDP,
        payload_len: udp_len,
        ttl: 64,
        tos: 0,
    }
    .emit(out)
    .expect("sized");
    let l4 = ipv4::MIN_HEADER_LEN;
    out[l4 + udp::HEADER_LEN..].copy_from_slice(payload);
    udp::Repr {
        src_port: 40_000,
        dst_port: to.port(),
        payload_len: payload.len(),
    }
    .emit(&mut out[l4..], src.into(), (*to.ip()).into())
    .expect("sized");
}

/// Sends the flood for [`FLOOD`] from a raw socket (IP_HDRINCL): returns datagrams sent.
fn blast(to: SocketAddrV4, flights: &[Vec<Vec<u8>>]) -> u64 {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(*to.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut pkt = Vec::with_capacity(1500);
    let mut sent = 0u64;
    let start = Instant::now();
    let mut i = 0usize;
    while start.elapsed() < FLOOD {
        for _ in 0..64 {
            let src = source(i);
            for d in &flights[i % flights.len()] {
                spoofed_packet(src, to, d, &mut pkt);
                // SAFETY: a live buffer of `pkt.len()` bytes and a sockaddr_in of its size.
                let r = unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        pkt.as_ptr().cast(),
                        pkt.len(),
                        0,
                        (&raw const dst).cast(),
                        size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                };
                if r > 0 {
                    sent += 1;
                }
            }
            i += 1;
        }
    }
    sent
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn echo(conn: &stoq::Connection) {
    let (mut s, mut r) = conn.open_bi().await.expect("open");
    s.write_all(b"hello through the flood")
        .await
        .expect("write");
    s.finish().expect("finish");
    let mut got = Vec::new();
    r.read_to_end(&mut got).await.expect("read");
    assert_eq!(got, b"hello through the flood");
}

fn handshake_flood(name: &str, backend: BackendKind, xdp: XdpMode, filter: XdpFilter) {
    if !privileged(name) {
        return;
    }
    let p = engine::pair("hsflood", false, backend, move |c: &mut EngineConfig| {
        c.backend = Some(backend);
        c.xdp_mode = xdp;
        c.initial_rate_limit = Some(LIMIT);
        c.xdp_filter = filter;
    });
    // Replies to the spoofed sources go back over the veth and die in the sender's
    // namespace (it owns none of them and does not forward).
    p.veth
        .b
        .ip(&[
            "route",
            "add",
            "100.64.0.0/10",
            "via",
            &p.veth.a4.to_string(),
        ])
        .expect("route for the spoofed range");
    let SocketAddr::V4(target) = p.target else {
        unreachable!("IPv4 pair")
    };
    let size = 64 << 20;
    engine::runtime().block_on(async {
        tokio::spawn(engine::serve(p.server.clone()));
        let mut times = Vec::new();
        for _ in 0..9 {
            let t = Instant::now();
            let c = p
                .client
                .connect(p.target, SERVER_NAME)
                .await
                .expect("connect");
            times.push(t.elapsed());
            c.close(0, b"");
        }
        eprintln!("{name}: unloaded handshakes {times:?}");
        let unloaded = median(times);
        let conn = p
            .client
            .connect(p.target, SERVER_NAME)
            .await
            .expect("connect");
        let (a, _, b) = engine::upload(&conn, 1, 4 << 20).await;
        assert_eq!(a, b);
        // Built before the baseline: the attacker's packets are not the server's memory.
        let flights = Arc::new(flights(p.target, FLIGHTS));
        let rss0 = engine::rss();
        let xdp0 = p.server.xdp_stats();
        let ep0: u64 = p
            .server
            .endpoint_stats()
            .iter()
            .map(|s| s.rx_datagrams)
            .sum();
        let f = flights.clone();
        let attacker = p.veth.a.spawn(move || blast(target, &f));
        let up = {
            let conn = conn.clone();
            tokio::spawn(async move { engine::upload(&conn, 2, size).await })
        };
        // Real clients arrive in the middle of the flood: three, one after another.
        tokio::time::sleep(FLOOD / 4).await;
        let mut during = Vec::new();
        let mut real = None;
        for _ in 0..3 {
            let t = Instant::now();
            let c = tokio::time::timeout(
                Duration::from_secs(10),
                p.client.connect(p.target, SERVER_NAME),
            )
            .await
            .expect("connected within 10 s")
            .expect("connected");
            during.push(t.elapsed());
            real = Some(c);
        }
        assert!(
            !attacker.is_finished(),
            "the flood outlasted the handshakes"
        );
        let real = real.expect("three clients");
        let loaded = median(during.clone());
        echo(&real).await;
        let mut peak = rss0;
        while !attacker.is_finished() {
            peak = peak.max(engine::rss());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sent = attacker.join().expect("attacker");
        let (theirs, n, ours) = up.await.expect("upload");
        assert_eq!(n as usize, size);
        assert_eq!(theirs, ours, "the running transfer finished intact");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ep = p.server.endpoint_stats();
        let rx: u64 = ep.iter().map(|s| s.rx_datagrams).sum::<u64>() - ep0;
        let retries: u64 = ep.iter().map(|s| s.retries_sent).sum();
        let dropped_responses: u64 = ep.iter().map(|s| s.responses_dropped).sum();
        let accepted: u64 = ep.iter().map(|s| s.accepted).sum();
        // A filter attached during the flood starts its counters at zero.
        let limited = match (p.server.xdp_stats(), xdp0) {
            (Some(now), Some(before)) => now.since(&before).initial_limited(),
            (Some(now), None) => now.initial_limited(),
            _ => 0,
        };
        let growth = peak.saturating_sub(rss0);
        eprintln!(
            "{name}: {sent} spoofed datagrams from {SOURCES} sources in {FLOOD:?} ({:.0}/s); \
             XDP rate limit dropped {limited}; the server's endpoints received {rx} datagrams \
             (all traffic), sent {retries} Retries, dropped {dropped_responses} stateless \
             answers (queue full), accepted {accepted} connections in all; handshake \
             unloaded {unloaded:?}, under the flood {loaded:?} ({:.1}x, medians); RSS growth \
             {} MiB",
            sent as f64 / FLOOD.as_secs_f64(),
            loaded.as_secs_f64() / unloaded.as_secs_f64(),
            growth >> 20
        );
        eprintln!("{name}: handshakes under the flood {during:?}");
        let kernel_layer = backend == BackendKind::AfXdp || filter != XdpFilter::Off;
        if backend == BackendKind::AfXdp {
            // The datagrams go from the XDP program to the worker: the kernel sheds what
            // exceeds each prefix's rate, and nothing else queues ahead of a real client.
            assert!(
                loaded <= unloaded * 10,
                "real clients connected in {loaded:?} (median) under the flood, more than \
                 10x {unloaded:?}"
            );
        } else {
            // On a socket backend what passes (all of the flood, or with the XDP filter
            // what is within the prefixes' rates) still goes through the kernel's UDP
            // receive path and queues in the socket ahead of the real client's datagram:
            // measured 3.7-17.7x here, with or without the filter, on two cores shared
            // with the attacker. No lock-out, but no 10x promise either.
            assert!(loaded < Duration::from_secs(1), "{loaded:?}");
        }
        // The stated bound: the flood adds no more than 64 MiB.
        assert!(growth < 64 << 20, "memory grew by {growth} bytes");
        // Every spoofed datagram is accounted for by a layer: dropped by the kernel's
        // limit, or answered by an endpoint with a Retry (sent, or dropped with a full
        // queue). The rest (under 5 %) went to the few spoofed flights admitted before
        // the server was under load (their repeats reach those connections), or were lost
        // in the kernel's queues between the layers.
        let answered = retries + dropped_responses;
        assert!(
            limited + answered >= sent * 95 / 100,
            "only {} of {sent} spoofed datagrams were counted by a layer",
            limited + answered
        );
        if kernel_layer {
            assert!(limited > 0, "the XDP rate limit shed part of the flood");
        } else {
            assert_eq!(limited, 0, "no XDP program with the filter off");
        }
        // 14 real connections (9 unloaded, the transfer, 3 under the flood, plus one
        // of slack), and per worker at most the Retry threshold of spoofed ones.
        let workers = p.server.worker_stats().len() as u64;
        assert!(
            accepted <= 14 + workers * conn::DEFAULT_RETRY_THRESHOLD as u64,
            "state kept for no more than the Retry threshold per worker of spoofed \
             clients: {accepted} accepted by {workers} workers"
        );
        conn.close(0, b"");
        real.close(0, b"");
    });
}

/// The UDP backend as configured by default: the flood watch attaches the XDP filter once
/// the Retry rate shows a flood (the kernel's drops are counted: it engaged).
#[test]
fn udp_handshake_flood_ipv4() {
    handshake_flood(
        "udp_hsflood",
        BackendKind::Udp,
        XdpMode::Auto,
        XdpFilter::UnderFlood,
    );
}

/// The UDP backend with the XDP filter in front of its socket from the start.
#[test]
fn udp_with_xdp_filter_handshake_flood_ipv4() {
    handshake_flood(
        "udp_filter_hsflood",
        BackendKind::Udp,
        XdpMode::Auto,
        XdpFilter::On,
    );
}

/// The UDP backend with no kernel layer at all (`XdpFilter::Off`): every spoofed datagram
/// queues in the socket ahead of the real client's.
#[test]
fn udp_without_xdp_handshake_flood_ipv4() {
    handshake_flood(
        "udp_nofilter_hsflood",
        BackendKind::Udp,
        XdpMode::Auto,
        XdpFilter::Off,
    );
}

#[test]
fn af_xdp_skb_handshake_flood_ipv4() {
    handshake_flood(
        "af_xdp_skb_hsflood",
        BackendKind::AfXdp,
        XdpMode::Skb,
        XdpFilter::Off,
    );
}

#[test]
fn af_xdp_driver_handshake_flood_ipv4() {
    handshake_flood(
        "af_xdp_drv_hsflood",
        BackendKind::AfXdp,
        XdpMode::Driver,
        XdpFilter::Off,
    );
}
