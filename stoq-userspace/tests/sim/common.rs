//! Shared set-up for the simulator tests: keys, configurations, endpoints, and a bulk
//! sender/receiver.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rand_core::OsRng;
use stoq::conn::cc::ControllerFactory;
use stoq::conn::{
    ConnectionHandle, Endpoint, EndpointConfig, ReadError, Side, StreamId, TransportConfig,
};
use stoq::crypto::CipherSuite;
use stoq::crypto::sig::{SigAlg, SigningKey, VerifyingKey};
use stoq::handshake::params::TransportParams;
use stoq::handshake::{ClientConfig, Credential, ServerConfig, Trust};
use stoq::sim::{LinkConfig, Sim};

pub(crate) const UNIX_NOW: u64 = 1_800_000_000;

/// The server's FALCON-512 key, generated once per test binary.
pub(crate) fn server_key() -> &'static (Vec<u8>, VerifyingKey) {
    static K: OnceLock<(Vec<u8>, VerifyingKey)> = OnceLock::new();
    K.get_or_init(|| {
        let (k, p) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
        (k.as_bytes().to_vec(), p)
    })
}

pub(crate) fn params() -> TransportParams {
    TransportParams::default()
}

pub(crate) fn configs(params: TransportParams) -> (ServerConfig, ClientConfig) {
    let (sk, pk) = server_key();
    let server = ServerConfig {
        alpn: Vec::new(),
        credential: Credential::RawKey {
            key: SigningKey::from_bytes(sk).expect("valid key"),
            public: pk.clone(),
        },
        suites: CipherSuite::ALL.to_vec(),
        params: params.clone(),
        client_auth: None,
        tickets: stoq::handshake::TicketSettings::default(),
        batch_signing: true,
        early_data: stoq::handshake::EarlyDataSettings::default(),
    };
    let client = ClientConfig {
        alpn: Vec::new(),
        server_name: "stoq.example".into(),
        trust: Trust::PinnedKey(pk.clone()),
        suites: vec![CipherSuite::ChaCha20Poly1305],
        sig_algs: vec![SigAlg::Falcon512],
        params,
        credential: None,
        resumption: None,
        batch_signatures: true,
        early_data: false,
    };
    (server, client)
}

pub(crate) fn endpoint_config(
    seed: u64,
    start: Instant,
    mtu: usize,
    transport: &Arc<TransportConfig>,
) -> EndpointConfig {
    let mut rng_seed = [0u8; 32];
    rng_seed[..8].copy_from_slice(&seed.to_le_bytes());
    EndpointConfig {
        max_udp_payload: mtu,
        rng_seed,
        unix_time_at: (start, UNIX_NOW),
        transport: transport.clone(),
        ..EndpointConfig::new()
    }
}

/// A simulation with one client endpoint and one server endpoint.
pub(crate) fn sim(
    seed: u64,
    up: LinkConfig,
    down: LinkConfig,
    mtu: usize,
    transport: TransportConfig,
    params: TransportParams,
) -> (Sim, Arc<ClientConfig>) {
    let start = Instant::now();
    let transport = Arc::new(transport);
    let (server, client) = configs(params);
    let c = Endpoint::new(endpoint_config(seed * 2 + 1, start, mtu, &transport), None)
        .expect("client config");
    let s = Endpoint::new(
        endpoint_config(seed * 2 + 2, start, mtu, &transport),
        Some(Arc::new(server)),
    )
    .expect("server config");
    (Sim::new(start, c, s, up, down, seed), Arc::new(client))
}

/// Connects a client connection and runs until both sides are established.
pub(crate) fn connect(
    sim: &mut Sim,
    client: &Arc<ClientConfig>,
    limit: Duration,
) -> Option<ConnectionHandle> {
    let to: SocketAddr = sim.server_addr;
    let h = sim
        .client
        .connect(sim.now, to, client.clone())
        .expect("connect");
    let before = sim.server_conns.len();
    let ok = sim.run(
        limit,
        |_| {},
        |s| {
            s.client.connection(h).is_some_and(|c| c.is_established())
                && s.server_conns[before..]
                    .iter()
                    .any(|sh| s.server.connection(*sh).is_some_and(|c| c.is_established()))
        },
    );
    ok.then_some(h)
}

/// A transport configuration with the given controller.
pub(crate) fn transport(cc: Arc<dyn ControllerFactory>) -> TransportConfig {
    TransportConfig {
        congestion: cc,
        ..TransportConfig::default()
    }
}

/// Byte `o` of the stream keyed `key`: a pattern the receiver checks without storing
/// what was sent.
pub(crate) fn pat(key: u64, o: u64) -> u8 {
    let h = ((o / 8) ^ key.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> ((o % 8) * 8)) as u8
}

/// Reads everything available on `id`, checking it against the pattern; returns
/// Ok(true) at the end of the stream, Ok(false) when more may come.
pub(crate) fn drain_and_check(
    sim: &mut Sim,
    side: Side,
    h: ConnectionHandle,
    id: StreamId,
    key: u64,
    offset: &mut u64,
    buf: &mut [u8],
) -> Result<bool, ReadError> {
    let ep = match side {
        Side::Client => &mut sim.client,
        Side::Server => &mut sim.server,
    };
    let Some(c) = ep.connection_mut(h) else {
        return Err(ReadError::UnknownStream);
    };
    loop {
        match c.read(id, buf) {
            Ok(Some(n)) => {
                for (i, b) in buf[..n].iter().enumerate() {
                    let o = *offset + i as u64;
                    assert_eq!(*b, pat(key, o), "{id} byte {o} corrupted");
                }
                *offset += n as u64;
            }
            Ok(None) => return Ok(true),
            Err(ReadError::Blocked) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Keeps a stream full of pattern bytes (a bulk sender): writes as much as the send
/// buffer takes.
pub(crate) fn fill(
    sim: &mut Sim,
    side: Side,
    h: ConnectionHandle,
    id: StreamId,
    key: u64,
    sent: &mut u64,
) {
    let ep = match side {
        Side::Client => &mut sim.client,
        Side::Server => &mut sim.server,
    };
    let Some(c) = ep.connection_mut(h) else {
        return;
    };
    let mut chunk = [0u8; 16384];
    loop {
        let room = c.send_capacity(id).min(chunk.len() as u64) as usize;
        if room == 0 {
            return;
        }
        for (i, b) in chunk[..room].iter_mut().enumerate() {
            *b = pat(key, *sent + i as u64);
        }
        match c.write(id, &chunk[..room]) {
            Ok(n) if n > 0 => *sent += n as u64,
            _ => return,
        }
    }
}
