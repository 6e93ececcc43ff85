//! A server that accepted a resuming client's early data, fed fuzzer-chosen frames as the
//! payloads of 0-RTT packets before its handshake completes (the client's real 0-RTT
//! packets go first), then the handshake finished and the pair exchanging real packets.
//! Nothing may panic or grow without bound; a frame 0-RTT may not carry closes the
//! connection with a typed error; whatever the early frames did, the handshake either
//! completes or fails cleanly.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use stoq::conn::{ConnectionHandle, DatagramEvent, DatagramInfo, Dir, Endpoint, EndpointConfig};
use stoq::crypto::CipherSuite;
use stoq::handshake::{EarlyData, EarlyDataSettings, SessionCache};

const SERVER: &str = "[fd00:5710::2]:4433";
const CLIENT: &str = "[fd00:5710::1]:5000";

/// Moves datagrams both ways until neither side has any; the server's new connection is
/// accepted. `to_client` false holds back what the server sends.
fn exchange(
    now: Instant,
    client: &mut Endpoint,
    server: &mut Endpoint,
    sh: &mut Option<ConnectionHandle>,
    to_client: bool,
) {
    let (c_addr, s_addr): (SocketAddr, SocketAddr) =
        (CLIENT.parse().expect("addr"), SERVER.parse().expect("addr"));
    let mut buf = Vec::new();
    for _ in 0..32 {
        let mut moved = false;
        while let Some(t) = client.poll_transmit(now, &mut buf) {
            let mut d = buf[..t.size].to_vec();
            if let Some(DatagramEvent::Incoming(i)) =
                server.handle_datagram(now, c_addr, DatagramInfo::default(), &mut d)
                && let Ok(h) = server.accept(i, now)
            {
                *sh = Some(h);
            }
            moved = true;
        }
        if to_client {
            while let Some(t) = server.poll_transmit(now, &mut buf) {
                let mut d = buf[..t.size].to_vec();
                client.handle_datagram(now, s_addr, DatagramInfo::default(), &mut d);
                moved = true;
            }
        }
        while client.poll_event().is_some() {}
        while server.poll_event().is_some() {}
        if !moved {
            break;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut scfg = common::server_config();
    scfg.early_data = EarlyDataSettings::accept();
    let mut ecfg = EndpointConfig::new();
    ecfg.rng_seed = [5; 32];
    ecfg.unix_time_at = (now, 1_800_000_000);
    let mut server = Endpoint::new(ecfg.clone(), Some(Arc::new(scfg))).expect("endpoint");
    ecfg.rng_seed = [6; 32];
    let mut client = Endpoint::new(ecfg, None).expect("endpoint");
    let mut ccfg = common::client_config("fuzz.stoq", vec![CipherSuite::ChaCha20Poly1305]);
    ccfg.resumption = Some(Arc::new(SessionCache::new(4)));
    ccfg.early_data = true;
    let ccfg = Arc::new(ccfg);
    let s_addr: SocketAddr = SERVER.parse().expect("addr");

    // A full handshake, then its tickets.
    let mut sh = None;
    client.connect(now, s_addr, ccfg.clone()).expect("connect");
    exchange(now, &mut client, &mut server, &mut sh, true);
    let t = now + Duration::from_millis(5);
    exchange(t, &mut client, &mut server, &mut sh, true);

    // The resuming connection: the client's first flight (with a stream in 0-RTT) reaches
    // the server; the server's answer is held back while the fuzzer's frames arrive.
    let ch = client.connect(t, s_addr, ccfg).expect("connect");
    if let Some(c) = client.connection_mut(ch)
        && let Ok(id) = c.open_stream(Dir::Bi)
    {
        let _ = c.write(id, b"early request");
        let _ = c.finish(id);
    }
    sh = None;
    exchange(t, &mut client, &mut server, &mut sh, false);
    let Some(h) = sh else {
        return;
    };
    let accepted = server
        .connection(h)
        .is_some_and(|c| c.early_data() == EarlyData::Accepted);
    assert!(accepted, "the resuming client's early data were accepted");
    let mut out = [0u8; 2048];
    for (i, chunk) in data.split(|b| *b == 0xfe).take(16).enumerate() {
        let at = t + Duration::from_micros(100 * i as u64);
        let Some(c) = server.connection_mut(h) else {
            break;
        };
        c.inject_zero_rtt_payload(at, chunk);
        for dir in [Dir::Bi, Dir::Uni] {
            while let Some(id) = c.accept_stream(dir) {
                assert!(c.is_early_stream(id), "a stream opened in 0-RTT is early");
                while let Ok(Some(_)) = c.read(id, &mut out) {}
                let _ = c.write(id, b"0.5-RTT answer");
            }
        }
    }
    // The handshake goes on, whatever the early frames did.
    let end = t + Duration::from_millis(10);
    exchange(end, &mut client, &mut server, &mut sh, true);
    if let Some(c) = server.connection(h) {
        assert!(c.stats().streams <= 400);
        if c.is_established() {
            assert_eq!(c.early_data(), EarlyData::Accepted);
        }
    }
});
