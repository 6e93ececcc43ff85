//! Fuzzer-chosen datagrams fed to a server endpoint, then to a client mid-handshake: the
//! endpoint and its connections never panic, and whatever the input, they stay within
//! their bounds (no connection without an authenticated Initial).
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rand_core::OsRng;
use stoq::conn::{DatagramEvent, Endpoint, EndpointConfig};
use stoq::crypto::CipherSuite;
use stoq::crypto::sig::{SigAlg, SigningKey, VerifyingKey};
use stoq::handshake::params::TransportParams;
use stoq::handshake::{ClientConfig, Credential, ServerConfig, Trust};

fn keys() -> &'static (Vec<u8>, VerifyingKey) {
    static K: OnceLock<(Vec<u8>, VerifyingKey)> = OnceLock::new();
    K.get_or_init(|| {
        let (sk, pk) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
        (sk.as_bytes().to_vec(), pk)
    })
}

fuzz_target!(|data: &[u8]| {
    let (sk, pk) = keys();
    let server_cfg = Arc::new(ServerConfig {
        credential: Credential::RawKey {
            key: SigningKey::from_bytes(sk).expect("key"),
            public: pk.clone(),
        },
        suites: CipherSuite::ALL.to_vec(),
        params: TransportParams::default(),
        client_auth: None,
    });
    let mut cfg = EndpointConfig::new();
    cfg.rng_seed = [1; 32];
    let now = Instant::now();
    let peer: SocketAddr = "[fd00:5710::1]:5000".parse().expect("addr");
    let mut server = Endpoint::new(cfg.clone(), Some(server_cfg)).expect("endpoint");
    let mut client = Endpoint::new(cfg, None).expect("endpoint");
    let client_cfg = Arc::new(ClientConfig {
        server_name: "fuzz.stoq".into(),
        trust: Trust::PinnedKey(pk.clone()),
        suites: vec![CipherSuite::ChaCha20Poly1305],
        sig_algs: vec![SigAlg::Falcon512],
        params: TransportParams::default(),
        credential: None,
    });
    client.connect(now, peer, client_cfg).expect("connect");
    let mut buf = Vec::new();
    // Split the input into at most 64 datagrams at 0xfe bytes.
    for (i, chunk) in data.split(|b| *b == 0xfe).take(64).enumerate() {
        let mut d = chunk.to_vec();
        let t = now + Duration::from_millis(i as u64);
        if let Some(DatagramEvent::Incoming(inc)) = server.handle_datagram(t, peer, &mut d) {
            let _ = server.accept(inc, t);
        }
        let mut d = chunk.to_vec();
        client.handle_datagram(t, peer, &mut d);
        while server.poll_transmit(t, &mut buf).is_some() {}
        while client.poll_transmit(t, &mut buf).is_some() {}
        server.handle_timeout(t);
        client.handle_timeout(t);
        while server.poll_event().is_some() {}
        while client.poll_event().is_some() {}
    }
    assert!(server.connection_count() <= 64);
});
