//! What one spoofed Initial costs a server under load (its Retry policy in force):
//! classification, whatever checks precede the answer, the stateless Retry and its
//! transmission out of the endpoint. This is the per-packet price of a handshake flood
//! that reaches userspace (the XDP rate limit sheds the rest before it), and what the
//! queue in front of a real client drains at.
//!
//! - `flood/spoofed_initial_under_load`: one valid client Initial (it authenticates under
//!   its DCID's keys) from a new source, handled and answered.
//! - `flood/garbage_initial_under_load`: 1,200 random bytes behind a well-formed Initial
//!   header (it passes the classifier; only decryption fails).

mod common;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use criterion::{Criterion, criterion_group};
use stoq::conn::{DatagramEvent, DatagramInfo, Endpoint, EndpointConfig};

/// A server endpoint already under load: 64 half-open handshakes (its default Retry
/// threshold).
fn loaded_server(now: Instant) -> (Endpoint, Vec<Vec<u8>>) {
    let (s, c) = common::configs();
    let mut server = Endpoint::new(EndpointConfig::new(), Some(s)).expect("server");
    let mut client = Endpoint::new(EndpointConfig::new(), None).expect("client");
    let to: SocketAddr = "10.200.0.1:4433".parse().expect("addr");
    let mut buf = Vec::new();
    let mut flights = Vec::new();
    for _ in 0..(64 + 256) {
        client.connect(now, to, c.clone()).expect("connect");
        let t = client.poll_transmit(now, &mut buf).expect("an Initial");
        flights.push(buf[..t.size].to_vec());
        while client.poll_transmit(now, &mut buf).is_some() {}
    }
    for (i, d) in flights.drain(..64).enumerate() {
        let mut d = d;
        if let Some(DatagramEvent::Incoming(inc)) =
            server.handle_datagram(now, src(i), DatagramInfo::default(), &mut d)
        {
            server.accept(inc, now).expect("accept");
        }
    }
    while server.poll_transmit(now, &mut buf).is_some() {}
    assert!(server.under_load());
    (server, flights)
}

fn src(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(100, 64 + (i >> 16) as u8, (i >> 8) as u8, i as u8);
    SocketAddr::new(IpAddr::V4(ip), 40_000)
}

fn bench(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("flood");
    let (mut server, flights) = loaded_server(now);
    let mut buf = Vec::new();
    let mut d = vec![0u8; 1500];
    let mut i = 0usize;
    g.bench_function("spoofed_initial_under_load", |b| {
        b.iter(|| {
            let f = &flights[i % flights.len()];
            i += 1;
            d[..f.len()].copy_from_slice(f);
            let ev = server.handle_datagram(
                now,
                src(1000 + i),
                DatagramInfo::default(),
                &mut d[..f.len()],
            );
            black_box(ev.is_none());
            while let Some(t) = server.poll_transmit(now, &mut buf) {
                black_box(t.size);
            }
        });
    });
    let retries = server.stats().retries_sent;
    assert!(
        retries > 0,
        "the spoofed Initials were answered with Retries"
    );
    let mut garbage = vec![0u8; 1200];
    let mut x = 0x9e37_79b9u32;
    for b in &mut garbage {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    // A long-header Initial of STOQ's version with an 8-octet DCID, no SCID, no token and a
    // Length that fills the datagram: it passes the classifier, and only decryption under
    // its DCID's Initial keys (which fails) tells it from a client's.
    garbage[0] = 0xc0;
    garbage[1..5].copy_from_slice(&stoq::wire::wire::stoq::VERSION_1.to_be_bytes());
    garbage[5] = 8;
    garbage[14] = 0;
    garbage[15] = 0;
    let len = 0x4000 | (1200 - 18) as u16;
    garbage[16..18].copy_from_slice(&len.to_be_bytes());
    g.bench_function("garbage_initial_under_load", |b| {
        b.iter(|| {
            d[..1200].copy_from_slice(&garbage);
            black_box(
                server
                    .handle_datagram(now, src(7), DatagramInfo::default(), &mut d[..1200])
                    .is_none(),
            );
            while let Some(t) = server.poll_transmit(now, &mut buf) {
                black_box(t.size);
            }
        });
    });
    g.finish();
    let st = server.stats();
    eprintln!(
        "flood bench: {} Retries sent, {} unauthenticated Initials dropped, {} responses \
         dropped",
        st.retries_sent, st.unauthenticated_initial, st.responses_dropped
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
