//! Shared by the fuzz targets that need a handshake: one FALCON-512 key per process (key
//! generation is the slow part) and configurations that trust it. Not a target itself:
//! `cargo xtask fuzz` runs the `.rs` files directly under `fuzz_targets/`.
// Each target uses only some of these.
#![allow(dead_code)]

use std::sync::OnceLock;

use rand_core::OsRng;
use stoq::crypto::CipherSuite;
use stoq::crypto::sig::{SigAlg, SigningKey, VerifyingKey};
use stoq::handshake::params::TransportParams;
use stoq::handshake::{ClientConfig, Credential, ServerConfig, Trust};

/// The server's key (bytes) and its public half.
pub fn keys() -> &'static (Vec<u8>, VerifyingKey) {
    static K: OnceLock<(Vec<u8>, VerifyingKey)> = OnceLock::new();
    K.get_or_init(|| {
        let (sk, pk) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
        (sk.as_bytes().to_vec(), pk)
    })
}

/// A server with the raw key, every suite, default parameters, two ALPN protocols (so the
/// fuzzer reaches the selection and its refusal).
pub fn server_config() -> ServerConfig {
    let (sk, pk) = keys();
    ServerConfig {
        credential: Credential::RawKey {
            key: SigningKey::from_bytes(sk).expect("valid key"),
            public: pk.clone(),
        },
        suites: CipherSuite::ALL.to_vec(),
        params: TransportParams::default(),
        client_auth: None,
        tickets: stoq::handshake::TicketSettings::default(),
        batch_signing: true,
        // Early data accepted, so a ticket that opens reaches the 0-RTT checks.
        early_data: stoq::handshake::EarlyDataSettings::accept(),
        alpn: vec![b"h3".to_vec(), b"stoq/1".to_vec()],
    }
}

/// A client that pins the server's key and offers one ALPN protocol.
pub fn client_config(server_name: &str, suites: Vec<CipherSuite>) -> ClientConfig {
    ClientConfig {
        server_name: server_name.into(),
        trust: Trust::PinnedKey(keys().1.clone()),
        suites,
        sig_algs: vec![SigAlg::Falcon512],
        params: TransportParams::default(),
        credential: None,
        resumption: None,
        batch_signatures: true,
        early_data: false,
        alpn: vec![b"stoq/1".to_vec()],
    }
}
