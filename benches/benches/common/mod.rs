//! Shared by the benchmarks that need a handshake.

use std::sync::Arc;

use rand_core::OsRng;
use stoq::crypto::CipherSuite;
use stoq::crypto::sig::{SigAlg, SigningKey};
use stoq::handshake::params::TransportParams;
use stoq::handshake::{ClientConfig, Credential, ServerConfig, Trust};

/// A server with a fresh FALCON-512 raw key and every suite, and a client that pins it and
/// offers the suites this CPU runs fastest.
pub(crate) fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let server = ServerConfig {
        credential: Credential::RawKey {
            key,
            public: public.clone(),
        },
        suites: CipherSuite::ALL.to_vec(),
        params: TransportParams::default(),
        client_auth: None,
    };
    let client = ClientConfig {
        server_name: "bench.stoq".into(),
        trust: Trust::PinnedKey(public),
        suites: CipherSuite::local_preference().collect(),
        sig_algs: vec![SigAlg::Falcon512],
        params: TransportParams::default(),
        credential: None,
    };
    (Arc::new(server), Arc::new(client))
}
