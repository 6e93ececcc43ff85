//! Early data (0-RTT) through the async API: a client that holds a ticket allowing it
//! writes its request before the handshake with `connect_early`, the server reads it on
//! a stream it knows came in early data and answers, and both ends learn the early data
//! were accepted; with a server that does not accept early data, `connect_early` waits
//! for the handshake and the same request still gets its answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use stoq::Endpoint;
use stoq::conn::ClusterKeys;
use stoq::crypto::sig::{SigAlg, SigningKey};
use stoq::engine::EngineConfig;
use stoq::handshake::{ClientConfig, EarlyData, EarlyDataSettings, ServerConfig};
use stoq::io::BackendKind;

fn engine() -> EngineConfig {
    let mut e = EngineConfig::new("127.0.0.1:0".parse().unwrap());
    e.backend = Some(BackendKind::Udp);
    e.workers = 1;
    e.endpoint.cluster_keys = Some(Arc::new(ClusterKeys::random(&mut OsRng)));
    e
}

/// A server answering each bidirectional stream's request with `ok <request>`, and
/// `early` when the stream came in early data.
fn server(early: bool) -> (Endpoint, ClientConfig) {
    let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let mut cfg = ServerConfig::raw_key(key, public.clone());
    if early {
        cfg.early_data = EarlyDataSettings::accept();
    }
    let ep = Endpoint::server(engine(), Arc::new(cfg)).expect("server");
    ep.serve(|c| async move {
        while let Ok((mut tx, mut rx)) = c.accept_bi().await {
            let req = rx.read_to_end_limited(1024).await.unwrap_or_default();
            let mut answer = b"ok ".to_vec();
            answer.extend_from_slice(&req);
            if c.is_early_stream(tx.id()) {
                answer.extend_from_slice(b" early");
            }
            let _ = tx.write_all_data(&answer).await;
            let _ = tx.finish();
        }
    })
    .expect("serve");
    (ep, ClientConfig::pinned("test.stoq", public))
}

async fn request(c: &stoq::api::Connection, what: &[u8]) -> Vec<u8> {
    let (mut tx, mut rx) = c.open_bi().await.expect("stream");
    tx.write_all_data(what).await.expect("write");
    tx.finish().expect("finish");
    rx.read_to_end_limited(1024).await.expect("answer")
}

/// Waits until the client holds a ticket for the server.
async fn wait_ticket(cfg: &ClientConfig) {
    let cache = cfg.resumption.as_ref().expect("on by default");
    let start = Instant::now();
    while cache.tickets_for("test.stoq", &cfg.trust) == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "no ticket");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The client's worker runs on this test's thread (a current-thread runtime), so the
/// request is written before the worker first sends: on loopback a resumed handshake
/// completes in well under a millisecond, and a request written from another thread
/// could lose that race and go at 1-RTT.
#[tokio::test]
async fn an_early_request_is_answered_and_both_ends_know_it_was_early() {
    let (s, cfg) = server(true);
    let addr = s.local_addr();
    let client = Endpoint::client_in_runtime(engine(), Arc::new(cfg.clone())).expect("client");

    // No ticket yet: connect_early waits for a full handshake.
    let c = client
        .connect_early(addr, "test.stoq")
        .await
        .expect("connect");
    assert_eq!(c.early_data().await, Ok(EarlyData::NotOffered));
    assert_eq!(request(&c, b"first").await, b"ok first");
    wait_ticket(&cfg).await;
    c.close(0, b"");

    // With a ticket: the request leaves with the first flight.
    let c = client
        .connect_early(addr, "test.stoq")
        .await
        .expect("connect");
    let answer = request(&c, b"second").await;
    assert_eq!(answer, b"ok second early");
    assert_eq!(c.early_data().await, Ok(EarlyData::Accepted));
    let stats = c.stats().expect("live");
    assert!(stats.zero_rtt_packets >= 1);
    // A request after the answer is not early.
    assert_eq!(request(&c, b"third").await, b"ok third");
    c.close(0, b"");

    let start = Instant::now();
    while s.endpoint_stats()[0].early_data_accepted == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "not counted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        s.metrics()
            .render()
            .contains("stoq_early_data_accepted_total{worker=\"0\"} 1"),
        "exported"
    );
    client.shutdown(Duration::from_secs(1)).await;
    s.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ticket_allowing_it_connect_early_waits_for_the_handshake() {
    let (s, cfg) = server(false);
    let addr = s.local_addr();
    let client = Endpoint::client(engine(), Arc::new(cfg.clone())).expect("client");
    let c = client.connect(addr, "test.stoq").await.expect("connect");
    wait_ticket(&cfg).await;
    c.close(0, b"");
    // The ticket resumes, but allows no early data: nothing goes before the handshake.
    let c = client
        .connect_early(addr, "test.stoq")
        .await
        .expect("connect");
    assert_eq!(c.early_data().await, Ok(EarlyData::NotOffered));
    assert_eq!(request(&c, b"late").await, b"ok late");
    assert_eq!(c.stats().expect("live").zero_rtt_packets, 0);
    client.shutdown(Duration::from_secs(1)).await;
    s.shutdown(Duration::from_secs(1)).await;
}
