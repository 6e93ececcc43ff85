//! Shared by the benchmarks that need a handshake.

use std::sync::Arc;

use rand_core::OsRng;
use stoq::crypto::sig::{SigAlg, SigningKey};
use stoq::handshake::{ClientConfig, ServerConfig};

/// A server with a fresh FALCON-512 raw key and every suite, and a client that pins it and
/// offers the suites this CPU runs fastest.
pub(crate) fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let server = ServerConfig::raw_key(key, public.clone());
    let client = ClientConfig::pinned("bench.stoq", public);
    (Arc::new(server), Arc::new(client))
}
