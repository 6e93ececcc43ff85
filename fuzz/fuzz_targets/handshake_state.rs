//! Hostile CRYPTO-stream bytes fed to a server and to a client mid-handshake: the state
//! machines never panic and never complete on garbage.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rand_core::OsRng;
use stoq::crypto::CipherSuite;
use stoq::crypto::sig::{SigAlg, SigningKey, VerifyingKey};
use stoq::handshake::params::TransportParams;
use stoq::handshake::{ClientConfig, Credential, Epoch, Handshake, ServerConfig, Trust};

fn keys() -> &'static (Vec<u8>, VerifyingKey) {
    static K: OnceLock<(Vec<u8>, VerifyingKey)> = OnceLock::new();
    K.get_or_init(|| {
        let (sk, pk) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
        (sk.as_bytes().to_vec(), pk)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let (sk, pk) = keys();
    let epoch = if sel & 1 == 0 {
        Epoch::Initial
    } else {
        Epoch::Handshake
    };
    // Split the input into chunks, as CRYPTO frames would deliver it.
    let cut = usize::from(sel >> 1).min(rest.len());
    let (a, b) = rest.split_at(cut);
    if sel & 0x80 == 0 {
        let cfg = ServerConfig {
            credential: Credential::RawKey {
                key: SigningKey::from_bytes(sk).expect("valid"),
                public: pk.clone(),
            },
            suites: CipherSuite::ALL.to_vec(),
            params: TransportParams::default(),
            client_auth: None,
        };
        let mut s = Handshake::server(std::sync::Arc::new(cfg), TransportParams::default());
        if s.read(epoch, a, 0, &mut OsRng).is_ok() {
            let _ = s.read(epoch, b, 0, &mut OsRng);
        }
        assert!(!s.is_complete());
    } else {
        let cfg = ClientConfig {
            server_name: "stoq.example".into(),
            trust: Trust::PinnedKey(pk.clone()),
            suites: CipherSuite::ALL.to_vec(),
            sig_algs: vec![SigAlg::Falcon512],
            params: TransportParams::default(),
            credential: None,
        };
        let mut c = Handshake::client(
            std::sync::Arc::new(cfg),
            TransportParams::default(),
            &mut OsRng,
        );
        if c.read(epoch, a, 0, &mut OsRng).is_ok() {
            let _ = c.read(epoch, b, 0, &mut OsRng);
        }
        assert!(!c.is_complete());
    }
});
