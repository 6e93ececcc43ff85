//! `Endpoint::connect_with_backoff`: attempts against nobody are retried with growing
//! waits and reported, then given up; a server that appears while the client is retrying
//! is reached; a handshake that fails (a wrong pinned key) is not retried.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use stoq::Endpoint;
use stoq::api::{Backoff, ReconnectError};
use stoq::crypto::sig::{SigAlg, SigningKey};
use stoq::engine::EngineConfig;
use stoq::handshake::{ClientConfig, ServerConfig};
use stoq::io::BackendKind;

fn engine() -> EngineConfig {
    let mut c = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
    c.backend = Some(BackendKind::Udp);
    c.workers = 1;
    c
}

/// A client pinned to `public` whose attempts end after 300 ms of silence.
fn client(public: stoq::crypto::sig::VerifyingKey) -> Endpoint {
    let mut c = ClientConfig::pinned("test.stoq", public);
    c.params.max_idle_timeout_ms = 300;
    Endpoint::client(engine(), Arc::new(c)).expect("client")
}

fn quick(attempts: u32) -> Backoff {
    Backoff {
        first: Duration::from_millis(50),
        max: Duration::from_millis(200),
        max_attempts: Some(attempts),
        ..Backoff::default()
    }
}

fn free_port() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_against_nobody_are_reported_then_given_up() {
    let (_, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let c = client(public);
    let mut seen = Vec::new();
    let r = c
        .connect_with_backoff(free_port(), "test.stoq", &quick(3), |a| {
            seen.push((a.number, a.retry_in));
        })
        .await;
    match r {
        Err(ReconnectError::GaveUp { attempts: 3, last }) => {
            assert!(stoq::api::is_transient(&last), "{last}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2, 3]);
    // 50 ms then 100 ms, each within ±20 %; none after the last.
    let waits: Vec<_> = seen.iter().map(|s| s.1).collect();
    let within = |w: Option<Duration>, ms: u64| {
        w.is_some_and(|d| {
            d >= Duration::from_millis(ms * 8 / 10) && d <= Duration::from_millis(ms * 12 / 10)
        })
    };
    assert!(
        within(waits[0], 50) && within(waits[1], 100) && waits[2].is_none(),
        "{waits:?}"
    );
    c.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_comes_up_is_reached() {
    let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let c = client(public.clone());
    let addr = free_port();
    let started = Instant::now();
    let up = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut cfg = EngineConfig::new(addr);
        cfg.backend = Some(BackendKind::Udp);
        cfg.workers = 1;
        let s = Endpoint::server(cfg, Arc::new(ServerConfig::raw_key(key, public)))
            .expect("server on the port");
        let conn = s.accept().await.expect("the client");
        (s, conn)
    });
    let mut failed = 0;
    let conn = c
        .connect_with_backoff(addr, "test.stoq", &quick(20), |_| failed += 1)
        .await
        .expect("connected once the server is up");
    assert!(failed >= 1, "the first attempts found nobody");
    assert!(started.elapsed() >= Duration::from_millis(700));
    let (server, srv_conn) = up.await.expect("server task");
    assert!(srv_conn.close_reason().is_none());
    conn.close(0, b"");
    c.shutdown(Duration::from_secs(1)).await;
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_handshake_is_not_retried() {
    let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let server =
        Endpoint::server(engine(), Arc::new(ServerConfig::raw_key(key, public))).expect("server");
    let addr = server.local_addr();
    let (_, other) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let c = client(other);
    let mut seen = Vec::new();
    let r = c
        .connect_with_backoff(addr, "test.stoq", &quick(5), |a| seen.push(a.retry_in))
        .await;
    assert!(matches!(r, Err(ReconnectError::Final(_))), "{r:?}");
    assert_eq!(seen, [None], "one attempt, no retry");
    c.shutdown(Duration::from_secs(1)).await;
    server.shutdown(Duration::from_secs(1)).await;
}
