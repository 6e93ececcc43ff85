//! A handshake flood against a real engine on loopback: half-open handshakes from 2,000
//! sources (each in its own /24 of 127.0.0.0/8, never answering) do not shut out a real
//! client.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stoq::Endpoint;
use stoq::conn::{self, EndpointConfig};
use stoq::engine::EngineConfig;
use stoq::io::BackendKind;

use super::configs;

const SOURCES: usize = 2000;

/// The first flights of `n` clients, each its own connection (a hybrid ClientHello takes
/// two datagrams), built by the sans-IO client: valid Initials that authenticate.
fn flights(
    to: SocketAddr,
    client: &Arc<stoq::handshake::ClientConfig>,
    n: usize,
) -> Vec<Vec<Vec<u8>>> {
    let mut ep = conn::Endpoint::new(EndpointConfig::new(), None).expect("endpoint");
    let now = Instant::now();
    let mut buf = Vec::new();
    (0..n)
        .map(|_| {
            ep.connect(now, to, client.clone()).expect("connect");
            let mut flight = Vec::new();
            while let Some(t) = ep.poll_transmit(now, &mut buf) {
                flight.push(buf[..t.size].to_vec());
            }
            flight
        })
        .collect()
}

/// Source `i`: 127.(1 + i / 256).(i % 256).1, a /24 of its own.
fn source(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(127, 1 + (i / 256) as u8, (i % 256) as u8, 1);
    SocketAddr::V4(SocketAddrV4::new(ip, 0))
}

/// 2,000 sources each send a client's first flight and never answer (the server's replies
/// go to closed ports, as to spoofed addresses). A real client then connects within 1 s;
/// with the old default (no Retry, every Initial admitted) the worker's 1,024 handshake
/// slots filled and it was refused.
#[test]
fn spoofed_half_open_handshakes_do_not_lock_out_a_real_client() {
    let (s, c) = configs();
    let mut cfg = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
    cfg.workers = 1;
    cfg.backend = Some(BackendKind::Udp);
    cfg.pin_workers = false;
    let server = Endpoint::server(cfg, s).expect("server");
    let addr = server.local_addr();
    let flood = flights(addr, &c, SOURCES);
    let sent = Instant::now();
    let mut datagrams = 0u64;
    for (i, flight) in flood.iter().enumerate() {
        let sock = UdpSocket::bind(source(i)).expect("bind a 127/8 source");
        for d in flight {
            sock.send_to(d, addr).expect("send");
            datagrams += 1;
        }
    }
    // Wait until the worker has seen the flood (the kernel may drop a little of it).
    let seen = |server: &Endpoint| {
        server
            .endpoint_stats()
            .iter()
            .map(|s| s.rx_datagrams)
            .sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = seen(&server);
        if now >= datagrams || (now == last && now > 0) {
            break;
        }
        last = now;
    }
    let st = server.endpoint_stats()[0];
    assert!(
        st.rx_datagrams >= datagrams * 9 / 10,
        "the flood reached the worker: {st:?}"
    );
    assert!(
        st.accepted <= conn::DEFAULT_RETRY_THRESHOLD as u64,
        "state kept for at most the Retry threshold of unvalidated clients: {st:?}"
    );
    assert!(st.retries_sent + st.responses_dropped > 0, "{st:?}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut ccfg = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
    ccfg.backend = Some(BackendKind::Udp);
    ccfg.pin_workers = false;
    let client = Endpoint::client(ccfg, c).expect("client");
    let start = Instant::now();
    let conn = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(5), client.connect(addr, "test.stoq")).await
        })
        .expect("connected before the 5 s guard")
        .expect("connected, not refused");
    let took = start.elapsed();
    // Still inside the half-open handshakes' lifetime (10 s): the flood's state was there.
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "{:?}",
        sent.elapsed()
    );
    assert!(took < Duration::from_secs(1), "connected in {took:?}");
    let st = server.endpoint_stats()[0];
    assert!(
        st.retries_sent >= 1,
        "the real client was validated first: {st:?}"
    );
    println!(
        "flood of {SOURCES} sources ({datagrams} datagrams): real client connected in {took:?}; \
         server: accepted {}, retries {}, responses dropped {}",
        st.accepted, st.retries_sent, st.responses_dropped
    );
    drop(conn);
}
