//! Fuzzer-chosen datagrams fed to a server endpoint, then to a client mid-handshake: the
//! endpoint and its connections never panic, and whatever the input, they stay within
//! their bounds (no connection without an authenticated Initial).
#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use stoq::conn::{DatagramEvent, DatagramInfo, EcnCodepoint, Endpoint, EndpointConfig};
use stoq::crypto::CipherSuite;

fuzz_target!(|data: &[u8]| {
    let server_cfg = Arc::new(common::server_config());
    let mut cfg = EndpointConfig::new();
    cfg.rng_seed = [1; 32];
    let now = Instant::now();
    let peer: SocketAddr = "[fd00:5710::1]:5000".parse().expect("addr");
    let mut server = Endpoint::new(cfg.clone(), Some(server_cfg)).expect("endpoint");
    let mut client = Endpoint::new(cfg, None).expect("endpoint");
    let client_cfg = Arc::new(common::client_config(
        "fuzz.stoq",
        vec![CipherSuite::ChaCha20Poly1305],
    ));
    client.connect(now, peer, client_cfg).expect("connect");
    let mut buf = Vec::new();
    // Split the input into at most 64 datagrams at 0xfe bytes.
    for (i, chunk) in data.split(|b| *b == 0xfe).take(64).enumerate() {
        let mut d = chunk.to_vec();
        let t = now + Duration::from_millis(i as u64);
        // Every ECN codepoint, with and without a known local address, as a backend
        // would report them.
        let info = DatagramInfo {
            local_ip: (i % 2 == 0).then(|| "fd00:5710::2".parse().expect("addr")),
            ecn: EcnCodepoint::from_bits(chunk.len() as u8),
        };
        if let Some(DatagramEvent::Incoming(inc)) =
            server.handle_datagram(t, peer, info, &mut d)
        {
            let _ = server.accept(inc, t);
        }
        let mut d = chunk.to_vec();
        client.handle_datagram(t, peer, info, &mut d);
        while server.poll_transmit(t, &mut buf).is_some() {}
        while client.poll_transmit(t, &mut buf).is_some() {}
        server.handle_timeout(t);
        client.handle_timeout(t);
        while server.poll_event().is_some() {}
        while client.poll_event().is_some() {}
    }
    assert!(server.connection_count() <= 64);
});
