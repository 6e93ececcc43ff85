//! ALPN through the async API: the server's preference among the client's offer is seen
//! by both ends (`handshake_data`), an offer with nothing in common is refused with
//! `no_application_protocol`, and a malformed list is a typed configuration error.

use std::sync::Arc;
use std::time::Duration;

use rand_core::OsRng;
use stoq::Endpoint;
use stoq::api::{ConnectError, HandshakeData};
use stoq::conn::ConnectionError;
use stoq::crypto::sig::{SigAlg, SigningKey};
use stoq::engine::EngineConfig;
use stoq::handshake::{ClientConfig, ServerConfig};
use stoq::io::BackendKind;

fn engine() -> EngineConfig {
    let mut e = EngineConfig::new("127.0.0.1:0".parse().unwrap());
    e.backend = Some(BackendKind::Udp);
    e.workers = 1;
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocols_are_negotiated_and_a_mismatch_refused() {
    let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let server_cfg = ServerConfig::raw_key(key, public.clone()).with_alpn(&[b"h3", b"stoq/1"]);
    let server = Endpoint::server(engine(), Arc::new(server_cfg)).expect("server");
    let addr = server.local_addr();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    server
        .serve(move |c| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(c.handshake_data());
                let _ = c.closed().await;
            }
        })
        .expect("serve");

    let offer = ClientConfig::pinned("test.stoq", public.clone()).with_alpn(&[b"stoq/1", b"h3"]);
    let client = Endpoint::client(engine(), Arc::new(offer)).expect("client");
    let conn = client.connect(addr, "test.stoq").await.expect("connect");
    let seen = conn.handshake_data().expect("live");
    assert_eq!(
        seen.protocol.as_deref(),
        Some(&b"h3"[..]),
        "the server's preference"
    );
    assert_eq!(seen.server_name.as_deref(), Some("test.stoq"));
    let at_server: HandshakeData = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("served")
        .expect("sent")
        .expect("live");
    assert_eq!(at_server, seen);
    conn.close(0, b"");

    // Nothing in common: the server refuses with no_application_protocol (alert 120).
    let offer = ClientConfig::pinned("test.stoq", public.clone()).with_alpn(&[b"h2"]);
    let client2 = Endpoint::client(engine(), Arc::new(offer)).expect("client");
    match client2.connect(addr, "test.stoq").await {
        Err(ConnectError::Lost(ConnectionError::PeerClosed { code, reason })) => {
            assert_eq!(code, 0x100 + 120, "{reason}");
            assert!(reason.contains("no application protocol"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // A malformed list is refused before anything is sent.
    let bad = ClientConfig::pinned("test.stoq", public).with_alpn(&[b""]);
    let client3 = Endpoint::client(engine(), Arc::new(bad)).expect("client");
    match client3.connect(addr, "test.stoq").await {
        Err(ConnectError::Refused(stoq::conn::ConnectError::BadAlpn(why))) => {
            assert!(why.contains("1 to 255 bytes"), "{why}");
        }
        other => panic!("expected BadAlpn, got {other:?}"),
    }
    client.shutdown(Duration::from_secs(1)).await;
    server.shutdown(Duration::from_secs(1)).await;
}
