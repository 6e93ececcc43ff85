//! A whole established `Connection` fed fuzzer-chosen frames: after a real handshake, each
//! chunk of the input is handed to the client or the server as the payload of a 1-RTT
//! packet, and the pair then exchanges real packets. Nothing may panic, loop without
//! bound or grow without bound; a bad frame closes the connection with a typed error.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use stoq::conn::{
    ConnectionHandle, DatagramEvent, DatagramInfo, Dir, EcnCodepoint, Endpoint, EndpointConfig,
};
use stoq::crypto::CipherSuite;

struct Pair {
    client: Endpoint,
    server: Endpoint,
    ch: ConnectionHandle,
    sh: Option<ConnectionHandle>,
    client_addr: SocketAddr,
    server_addr: SocketAddr,
    buf: Vec<u8>,
}

fn arrival(ecn: EcnCodepoint) -> DatagramInfo {
    DatagramInfo {
        local_ip: None,
        ecn,
    }
}

impl Pair {
    fn exchange(&mut self, now: Instant) {
        for _ in 0..16 {
            let mut moved = false;
            while let Some(t) = self.client.poll_transmit(now, &mut self.buf) {
                let mut d = self.buf[..t.size].to_vec();
                // The ECN marks cross, so ECN validation succeeds and the fuzzer's ACK_ECN
                // frames meet a path whose marks are being checked.
                if let Some(DatagramEvent::Incoming(i)) =
                    self.server
                        .handle_datagram_info(now, self.client_addr, arrival(t.ecn), &mut d)
                    && let Ok(h) = self.server.accept(i, now)
                {
                    self.sh = Some(h);
                }
                moved = true;
            }
            while let Some(t) = self.server.poll_transmit(now, &mut self.buf) {
                let mut d = self.buf[..t.size].to_vec();
                self.client
                    .handle_datagram_info(now, self.server_addr, arrival(t.ecn), &mut d);
                moved = true;
            }
            while self.client.poll_event().is_some() {}
            while self.server.poll_event().is_some() {}
            if !moved {
                break;
            }
        }
    }
}

fn connected(now: Instant) -> Pair {
    let server_cfg = Arc::new(common::server_config());
    let mut cfg = EndpointConfig::new();
    cfg.rng_seed = [3; 32];
    cfg.unix_time_at = (now, 1_800_000_000);
    let server = Endpoint::new(cfg.clone(), Some(server_cfg)).expect("endpoint");
    cfg.rng_seed = [4; 32];
    let mut client = Endpoint::new(cfg, None).expect("endpoint");
    let client_cfg = Arc::new(common::client_config(
        "fuzz.stoq",
        vec![CipherSuite::ChaCha20Poly1305],
    ));
    let server_addr: SocketAddr = "[fd00:5710::2]:4433".parse().expect("addr");
    let ch = client
        .connect(now, server_addr, client_cfg)
        .expect("connect");
    let mut p = Pair {
        client,
        server,
        ch,
        sh: None,
        client_addr: "[fd00:5710::1]:5000".parse().expect("addr"),
        server_addr,
        buf: Vec::new(),
    };
    p.exchange(now);
    let ecn = p.client.connection(ch).map(|c| c.stats().ecn_state);
    assert_eq!(ecn, Some("capable"), "the handshake validated ECN");
    p
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut p = connected(now);
    let Some(sh) = p.sh else {
        return;
    };
    let mut out = [0u8; 4096];
    for (i, chunk) in data.split(|b| *b == 0xfe).take(32).enumerate() {
        let t = now + Duration::from_millis(5 * i as u64);
        let Some((&sel, payload)) = chunk.split_first() else {
            continue;
        };
        let (ep, h) = if sel & 1 == 0 {
            (&mut p.server, sh)
        } else {
            (&mut p.client, p.ch)
        };
        let Some(c) = ep.connection_mut(h) else {
            continue;
        };
        c.inject_one_rtt_payload(t, payload);
        // Use what the frames opened, as an application would.
        for dir in [Dir::Bi, Dir::Uni] {
            while let Some(id) = c.accept_stream(dir) {
                while let Ok(Some(_)) = c.read(id, &mut out) {}
                if sel & 2 != 0 {
                    // Copied and shared writes both feed the send buffer that the
                    // peer's ACKs, losses and STOP_SENDING then act on.
                    if sel & 4 != 0 {
                        let _ = c.write_chunk(id, &mut bytes::Bytes::copy_from_slice(&out[..64]));
                    } else {
                        let _ = c.write(id, &out[..64]);
                    }
                    let _ = c.finish(id);
                }
            }
        }
        while c.recv_datagram().is_some() {}
        p.client.handle_timeout(t);
        p.server.handle_timeout(t);
        p.exchange(t);
    }
    // Bounded: a connection's buffers never exceed what it granted.
    if let Some(c) = p.server.connection(sh) {
        assert!(c.stats().streams <= 400);
    }
});
