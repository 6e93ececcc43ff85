//! A whole established `Connection` fed fuzzer-chosen frames: after a real handshake, each
//! chunk of the input is handed to the client or the server as the payload of a 1-RTT
//! packet, and the pair then exchanges real packets. Nothing may panic, loop without
//! bound or grow without bound; a bad frame closes the connection with a typed error.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::collections::{HashSet, VecDeque};
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
    /// The client's latest datagrams to the server, replayed on the fuzzer's command.
    sent: VecDeque<Vec<u8>>,
    /// Marks the client's own DATAGRAMs (random per process: the fuzzer cannot forge it).
    tag: [u8; 16],
    next_id: u64,
    /// The ids of the client's DATAGRAMs the server delivered: each at most once.
    seen: HashSet<u64>,
}

/// Replays kept per pair.
const KEPT: usize = 64;

fn arrival(ecn: EcnCodepoint) -> DatagramInfo {
    DatagramInfo {
        local_ip: None,
        ecn,
    }
}

impl Pair {
    /// The server delivers each of the client's DATAGRAMs at most once, replays or not
    /// (RFC 9000 §12.3); other DATAGRAMs (the fuzzer's own frames) are read and dropped.
    fn check_server_datagrams(&mut self) {
        let Some(c) = self.sh.and_then(|h| self.server.connection_mut(h)) else {
            return;
        };
        while let Some(d) = c.recv_datagram() {
            if d.len() == 24 && d[..16] == self.tag {
                let id = u64::from_be_bytes(d[16..].try_into().expect("8 bytes"));
                assert!(self.seen.insert(id), "DATAGRAM {id} delivered twice");
            }
        }
    }

    /// Hands every kept client datagram to the server again.
    fn replay(&mut self, now: Instant) {
        for d in self.sent.clone() {
            let mut d = d;
            self.server
                .handle_datagram(now, self.client_addr, arrival(EcnCodepoint::NotEct), &mut d);
        }
        self.check_server_datagrams();
    }

    fn exchange(&mut self, now: Instant) {
        for _ in 0..16 {
            let mut moved = false;
            while let Some(t) = self.client.poll_transmit(now, &mut self.buf) {
                let mut d = self.buf[..t.size].to_vec();
                if self.sent.len() == KEPT {
                    self.sent.pop_front();
                }
                self.sent.push_back(d.clone());
                // The ECN marks cross, so ECN validation succeeds and the fuzzer's ACK_ECN
                // frames meet a path whose marks are being checked.
                if let Some(DatagramEvent::Incoming(i)) =
                    self.server
                        .handle_datagram(now, self.client_addr, arrival(t.ecn), &mut d)
                    && let Ok(h) = self.server.accept(i, now)
                {
                    self.sh = Some(h);
                }
                moved = true;
            }
            while let Some(t) = self.server.poll_transmit(now, &mut self.buf) {
                let mut d = self.buf[..t.size].to_vec();
                self.client
                    .handle_datagram(now, self.server_addr, arrival(t.ecn), &mut d);
                moved = true;
            }
            self.check_server_datagrams();
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
        sent: VecDeque::new(),
        tag: {
            use std::hash::{BuildHasher, Hasher};
            let mut tag = [0u8; 16];
            for half in tag.chunks_mut(8) {
                let h = std::collections::hash_map::RandomState::new().build_hasher().finish();
                half.copy_from_slice(&h.to_be_bytes());
            }
            tag
        },
        next_id: 0,
        seen: HashSet::new(),
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
        // The client sends one of its marked DATAGRAMs per chunk; on the fuzzer's command
        // the server is handed the client's latest datagrams again.
        let mut d = p.tag.to_vec();
        d.extend_from_slice(&p.next_id.to_be_bytes());
        p.next_id += 1;
        if let Some(c) = p.client.connection_mut(p.ch) {
            let _ = c.send_datagram(&d);
        }
        if sel & 8 != 0 {
            p.replay(t);
        }
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
        if sel & 1 != 0 {
            while c.recv_datagram().is_some() {}
        }
        p.check_server_datagrams();
        p.client.handle_timeout(t);
        p.server.handle_timeout(t);
        p.exchange(t);
    }
    // Bounded: a connection's buffers never exceed what it granted.
    if let Some(c) = p.server.connection(sh) {
        assert!(c.stats().streams <= 400);
    }
});
