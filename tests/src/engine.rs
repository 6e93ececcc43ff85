//! Support for the engine's end-to-end tests: a server and a client on the async API in
//! two network namespaces joined by a veth pair, the services they run, and data patterns.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand_core::OsRng;
use sha2::{Digest, Sha256};
use stoq::crypto::sig::{SigAlg, SigningKey};
use stoq::engine::EngineConfig;
use stoq::handshake::{ClientConfig, ServerConfig};
use stoq::io::BackendKind;
use stoq::{Connection, Endpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::netns::VethPair;

/// The server name the tests' client checks.
pub const SERVER_NAME: &str = "e2e.stoq";

/// A server with a fresh FALCON-512 key and a client that pins it.
pub fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let server = ServerConfig::raw_key(key, public.clone());
    let client = ClientConfig::pinned(SERVER_NAME, public);
    (Arc::new(server), Arc::new(client))
}

/// A server in namespace `b` and a client in namespace `a` of a fresh veth pair. Fields
/// drop in order: the endpoints first, the namespaces last.
#[derive(Debug)]
pub struct Pair {
    /// The server (port 4433 on `b`).
    pub server: Arc<Endpoint>,
    /// The client.
    pub client: Arc<Endpoint>,
    /// The server's address as the client reaches it.
    pub target: SocketAddr,
    /// The namespaces and the veth pair.
    pub veth: VethPair,
}

/// Builds a [`Pair`]; `tune` adjusts both engines' settings (the client keeps one worker).
///
/// # Panics
/// If the namespaces or endpoints cannot be created (the caller checked privileges).
pub fn pair(
    purpose: &str,
    v6: bool,
    backend: BackendKind,
    tune: impl Fn(&mut EngineConfig),
) -> Pair {
    pair_with_queues(purpose, v6, backend, 1, tune)
}

/// As [`pair`], over a veth pair with `queues` queues each way.
///
/// # Panics
/// As [`pair`].
pub fn pair_with_queues(
    purpose: &str,
    v6: bool,
    backend: BackendKind,
    queues: u32,
    tune: impl Fn(&mut EngineConfig),
) -> Pair {
    let veth = VethPair::with_queues(purpose, queues).expect("create netns + veth");
    let (s, c) = configs();
    let server_ip: IpAddr = if v6 { veth.b6.into() } else { veth.b4.into() };
    let target = SocketAddr::new(server_ip, 4433);
    let mut scfg = EngineConfig::new(target);
    scfg.backend = Some(backend);
    scfg.workers = 2;
    tune(&mut scfg);
    // A specific address, so that AF_XDP can name the client's interface too.
    let client_ip: IpAddr = if v6 { veth.a6.into() } else { veth.a4.into() };
    let mut ccfg = EngineConfig::new(SocketAddr::new(client_ip, 0));
    ccfg.backend = Some(backend);
    tune(&mut ccfg);
    ccfg.workers = 1;
    // Sockets belong to the namespace of the thread that opens them.
    let server = veth
        .b
        .run(move || Endpoint::server(scfg, s))
        .expect("server endpoint");
    let client = veth
        .a
        .run(move || Endpoint::client(ccfg, c))
        .expect("client endpoint");
    Pair {
        server: Arc::new(server),
        client: Arc::new(client),
        target,
        veth,
    }
}

/// A deterministic pseudo-random pattern: any corruption, loss or reordering changes the
/// hash.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The server's side of every test: bidirectional streams are echoed; a unidirectional
/// stream is hashed and its SHA-256 and length sent back on a unidirectional stream of the
/// server's own; DATAGRAMs are echoed.
pub async fn serve(server: Arc<Endpoint>) {
    while let Some(conn) = server.accept().await {
        let c2 = conn.clone();
        tokio::spawn(async move {
            while let Ok(d) = c2.read_datagram().await {
                let _ = c2.send_datagram(&d);
            }
        });
        let c3 = conn.clone();
        tokio::spawn(async move {
            while let Ok(mut recv) = c3.accept_uni().await {
                let c4 = c3.clone();
                tokio::spawn(async move {
                    let mut h = Sha256::new();
                    let mut buf = vec![0u8; 256 << 10];
                    let mut n = 0u64;
                    while let Ok(Some(k)) = recv.read_data(&mut buf).await {
                        h.update(&buf[..k]);
                        n += k as u64;
                    }
                    if let Ok(mut s) = c4.open_uni().await {
                        let mut out = h.finalize().to_vec();
                        out.extend_from_slice(&n.to_be_bytes());
                        let _ = s.write_all(&out).await;
                        let _ = s.finish();
                    }
                });
            }
        });
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(Some(k)) = recv.read_data(&mut buf).await {
                        if send.write_all(&buf[..k]).await.is_err() {
                            return;
                        }
                    }
                    let _ = send.finish();
                });
            }
        });
    }
}

/// Sends `len` bytes of pattern `seed` on a unidirectional stream; returns what the server
/// reports (SHA-256, length) and the local SHA-256.
///
/// # Panics
/// On any stream or connection error.
pub async fn upload(conn: &Connection, seed: u64, len: usize) -> (Vec<u8>, u64, Vec<u8>) {
    let mut s = conn.open_uni().await.expect("open");
    let mut h = Sha256::new();
    let mut left = len;
    let mut i = 0u64;
    while left > 0 {
        let chunk = pattern(seed ^ i, left.min(1 << 20));
        h.update(&chunk);
        s.write_all(&chunk).await.expect("write");
        left -= chunk.len();
        i += 1;
    }
    s.finish().expect("finish");
    let mut back = conn.accept_uni().await.expect("answer stream");
    let mut ans = Vec::new();
    back.read_to_end(&mut ans).await.expect("answer");
    assert_eq!(ans.len(), 40, "hash and length");
    let n = u64::from_be_bytes(ans[32..40].try_into().expect("8 bytes"));
    (ans[..32].to_vec(), n, h.finalize().to_vec())
}

/// Echoes `data` on a new bidirectional stream and checks it comes back intact.
///
/// # Panics
/// On any error or a mismatch.
pub async fn echo(conn: &Connection, data: &[u8]) {
    let (mut send, mut recv) = conn.open_bi().await.expect("open");
    let writer = async {
        send.write_all(data).await.expect("write");
        send.finish().expect("finish");
    };
    // Compared as it arrives: a thousand echoes in flight hold no copies.
    let reader = async {
        let mut buf = vec![0u8; 64 << 10];
        let mut pos = 0;
        while let Some(k) = recv.read_data(&mut buf).await.expect("read") {
            assert!(
                pos + k <= data.len() && buf[..k] == data[pos..pos + k],
                "echo differs at byte {pos}"
            );
            pos += k;
        }
        pos
    };
    let ((), n) = tokio::join!(writer, reader);
    assert_eq!(n, data.len(), "echo length");
}

/// A multi-threaded runtime for a test.
///
/// # Panics
/// If tokio cannot start.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Resident memory of this process, bytes (Linux).
pub fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Waits up to `limit` for `f` to hold.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f()
}
