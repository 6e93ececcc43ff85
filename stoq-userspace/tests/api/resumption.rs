//! Session resumption through the async API: the tickets a server sends after the
//! handshake (1-RTT packets) reach the client's cache, the next connection resumes (seen
//! by both ends and counted), a server restarted with the same cluster keys resumes its
//! predecessor's tickets, and one with other keys refuses them and completes a full
//! handshake instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use stoq::Endpoint;
use stoq::conn::{ClusterKeys, RetryPolicy};
use stoq::crypto::sig::{SigAlg, SigningKey, VerifyingKey};
use stoq::engine::EngineConfig;
use stoq::handshake::{ClientConfig, Resumption, ServerConfig, SessionCache, TicketRefusal, Trust};
use stoq::io::BackendKind;

fn engine(bind: &str, keys: &ClusterKeys) -> EngineConfig {
    let mut e = EngineConfig::new(bind.parse().unwrap());
    e.backend = Some(BackendKind::Udp);
    e.workers = 1;
    e.endpoint.cluster_keys = Some(Arc::new(keys.clone()));
    e
}

fn server(bind: &str, keys: &ClusterKeys, key: &[u8], public: &VerifyingKey) -> Endpoint {
    let cfg = ServerConfig::raw_key(SigningKey::from_bytes(key).unwrap(), public.clone());
    let ep = Endpoint::server(engine(bind, keys), Arc::new(cfg)).expect("server");
    ep.serve(|c| async move {
        let _ = c.closed().await;
    })
    .expect("serve");
    ep
}

/// Waits until the cache holds `n` tickets for the server (they follow the handshake).
async fn wait_tickets(cache: &SessionCache, trust: &Trust, n: usize) {
    let start = Instant::now();
    while cache.tickets_for("test.stoq", trust) < n {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{} tickets after 5 s, expected {n}",
            cache.tickets_for("test.stoq", trust)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_resume_across_a_restart_with_the_cluster_keys_and_fall_back_without() {
    let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let key = key.as_bytes().to_vec();
    let keys = ClusterKeys::new(1, [0x42; 32]).unwrap();
    let s1 = server("127.0.0.1:0", &keys, &key, &public);
    let addr = s1.local_addr();

    let client_cfg = ClientConfig::pinned("test.stoq", public.clone());
    let cache = client_cfg.resumption.clone().expect("on by default");
    let trust = client_cfg.trust.clone();
    let client = Endpoint::client(
        engine("127.0.0.1:0", &ClusterKeys::random(&mut OsRng)),
        Arc::new(client_cfg),
    )
    .expect("client");

    // A full handshake; its two tickets arrive after it.
    let c = client.connect(addr, "test.stoq").await.expect("connect");
    assert_eq!(
        c.handshake_data().unwrap().resumption,
        Resumption::NotOffered
    );
    wait_tickets(&cache, &trust, 2).await;
    c.close(0, b"");

    // Resumed: both ends say so, the server counts it, and the connection carries data.
    let c = client.connect(addr, "test.stoq").await.expect("resume");
    assert_eq!(c.handshake_data().unwrap().resumption, Resumption::Accepted);
    let mut tx = c.open_uni().await.expect("stream");
    tx.write_all_data(b"after resumption").await.unwrap();
    tx.finish().unwrap();
    tx.finished()
        .await
        .expect("acknowledged under the resumed keys");
    wait_tickets(&cache, &trust, 3).await;
    let st = s1.endpoint_stats()[0];
    assert_eq!((st.handshakes_completed, st.handshakes_resumed), (2, 1));
    assert!(
        s1.metrics()
            .render()
            .contains("stoq_handshakes_resumed_total{worker=\"0\"} 1"),
        "resumptions exported"
    );
    c.close(0, b"");
    s1.shutdown(Duration::from_secs(1)).await;

    // Restarted on the same port with the same cluster keys: its predecessor's tickets
    // resume.
    let s2 = server(&addr.to_string(), &keys, &key, &public);
    let c = client.connect(addr, "test.stoq").await.expect("resume");
    assert_eq!(c.handshake_data().unwrap().resumption, Resumption::Accepted);
    c.close(0, b"");
    s2.shutdown(Duration::from_secs(1)).await;

    // Restarted with other keys: the ticket is refused, the handshake is a full one, and
    // the server counts why.
    let other = ClusterKeys::new(1, [0x43; 32]).unwrap();
    let s3 = server(&addr.to_string(), &other, &key, &public);
    let c = client
        .connect(addr, "test.stoq")
        .await
        .expect("full handshake");
    assert_eq!(
        c.handshake_data().unwrap().resumption,
        Resumption::Refused(TicketRefusal::Declined)
    );
    // The client is connected once it sent its Finished; the server counts the handshake
    // when that arrives.
    let start = Instant::now();
    while s3.endpoint_stats()[0].handshakes_completed == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "server never completed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let st = s3.endpoint_stats()[0];
    assert_eq!(st.handshakes_resumed, 0);
    assert_eq!(st.tickets_refused[TicketRefusal::Invalid as usize], 1);
    c.close(0, b"");
    client.shutdown(Duration::from_secs(1)).await;
    s3.shutdown(Duration::from_secs(1)).await;
}

/// NEW_TOKEN: a server that sends every new client a Retry admits a returning one at once
/// with the address token it sent after the last handshake; the token is bound to the
/// client's IP address, so from another address it is refused and a Retry follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_token_skips_the_retry_from_the_same_address_only() {
    let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let keys = ClusterKeys::new(0, [0x51; 32]).unwrap();
    let mut cfg = engine("127.0.0.1:0", &keys);
    cfg.endpoint.retry = RetryPolicy::Always;
    let server = Endpoint::server(cfg, Arc::new(ServerConfig::raw_key(key, public.clone())))
        .expect("server");
    server
        .serve(|c| async move {
            let _ = c.closed().await;
        })
        .expect("serve");
    let addr = server.local_addr();
    let client_cfg = Arc::new(ClientConfig::pinned("test.stoq", public));
    let cache = client_cfg.resumption.clone().expect("on by default");
    let trust = client_cfg.trust.clone();
    let client = |bind: &str| {
        Endpoint::client(
            engine(bind, &ClusterKeys::random(&mut OsRng)),
            client_cfg.clone(),
        )
        .expect("client")
    };

    let first = client("127.0.0.1:0");
    let c = first.connect(addr, "test.stoq").await.expect("connect");
    let start = Instant::now();
    while cache.address_tokens_for("test.stoq", &trust) == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "no NEW_TOKEN");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.close(0, b"");
    let st = server.endpoint_stats()[0];
    // A Retry for each datagram of the two-datagram ClientHello.
    let retries = st.retries_sent;
    assert!(retries >= 1, "every new client gets a Retry");
    assert_eq!(st.address_tokens_sent, 1);

    // Back from the same address (another port): no Retry.
    let c = first.connect(addr, "test.stoq").await.expect("again");
    let st = server.endpoint_stats()[0];
    assert_eq!(st.retries_sent, retries, "admitted by its address token");
    assert_eq!(st.address_tokens_accepted, 1);
    let start = Instant::now();
    while cache.address_tokens_for("test.stoq", &trust) == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "no NEW_TOKEN");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.close(0, b"");

    // The same token from another address: refused, and the Retry comes.
    let other = client("127.0.0.2:0");
    let c = other
        .connect(addr, "test.stoq")
        .await
        .expect("with a Retry");
    let st = server.endpoint_stats()[0];
    assert!(
        st.address_tokens_refused >= 1,
        "refused (counted per datagram of the flight)"
    );
    assert!(st.retries_sent > retries, "a Retry again");
    c.close(0, b"");
    for ep in [first, other, server] {
        ep.shutdown(Duration::from_secs(1)).await;
    }
}
