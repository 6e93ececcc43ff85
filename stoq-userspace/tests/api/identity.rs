//! What a connection says about itself through the async API: the key its peer proved
//! (both ways, with client authentication), its RTT, a stable identifier, and why it
//! ended.

use std::sync::Arc;
use std::time::Duration;

use rand_core::OsRng;
use stoq::Endpoint;
use stoq::conn::ConnectionError;
use stoq::crypto::sig::{SigAlg, SigningKey};
use stoq::engine::EngineConfig;
use stoq::handshake::{ClientConfig, Credential, ServerConfig, Trust};
use stoq::io::BackendKind;

fn config(bind: &str) -> EngineConfig {
    let mut c = EngineConfig::new(bind.parse().expect("addr"));
    c.backend = Some(BackendKind::Udp);
    c.workers = 1;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_key_rtt_stable_id_and_close_reason() {
    let (server_key, server_pub) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let (client_key, client_pub) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let mut scfg = ServerConfig::raw_key(server_key, server_pub.clone());
    scfg.client_auth = Some(Trust::PinnedKey(client_pub.clone()));
    let server = Endpoint::server(config("127.0.0.1:0"), Arc::new(scfg)).expect("server");
    let addr = server.local_addr();
    let mut ccfg = ClientConfig::pinned("id.stoq", server_pub.clone());
    ccfg.credential = Some(Credential::RawKey {
        key: client_key,
        public: client_pub.clone(),
    });
    let client = Endpoint::client(config("127.0.0.1:0"), Arc::new(ccfg)).expect("client");

    let accept = tokio::spawn(async move {
        let c = server.accept().await.expect("a client");
        (c, server)
    });
    let conn = client.connect(addr, "id.stoq").await.expect("connect");
    let (srv_conn, server) = accept.await.expect("accept");

    // Each side knows the key the other proved.
    assert_eq!(conn.peer_key().as_ref(), Some(&server_pub));
    assert_eq!(srv_conn.peer_key().as_ref(), Some(&client_pub));
    // A measured RTT, on loopback well under a second.
    let rtt = conn.rtt().expect("rtt");
    assert!(
        rtt > Duration::ZERO && rtt < Duration::from_secs(1),
        "{rtt:?}"
    );
    // Stable ids: the same for clones and over time, different between connections.
    assert_eq!(conn.stable_id(), conn.clone().stable_id());
    assert_ne!(conn.stable_id(), srv_conn.stable_id());
    let second = client.connect(addr, "id.stoq").await.expect("second");
    assert_ne!(second.stable_id(), conn.stable_id());
    // Keying material: the same at both ends of a connection, another for another.
    let export = |c: &stoq::api::Connection| {
        let mut out = [0u8; 32];
        c.export_keying_material(&mut out, b"EXPORTER-identity-test", b"context")
            .expect("export");
        out
    };
    assert_eq!(export(&conn), export(&srv_conn));
    assert_ne!(export(&conn), export(&second));
    // Retuning a live connection: keep-alive every 20 ms makes an idle connection send.
    // (Quiet first: the handshake's last ACKs leave within the ACK delay.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle_before = conn.stats().expect("stats").tx_packets;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle_after = conn.stats().expect("stats").tx_packets;
    assert_eq!(idle_after, idle_before, "idle, no keep-alive: nothing sent");
    conn.adapt(stoq::conn::Adaptation {
        keep_alive: Some(Some(Duration::from_millis(20))),
        ..Default::default()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pinged = conn.stats().expect("stats").tx_packets;
    assert!(
        pinged >= idle_after + 3,
        "keep-alive PINGs after adapt: {idle_after} -> {pinged}"
    );
    // Why it ended: nothing while open, then each side's view of one close.
    assert_eq!(conn.close_reason(), None);
    conn.close(7, b"bye");
    let seen = srv_conn.closed().await;
    assert_eq!(
        seen,
        ConnectionError::ApplicationClosed {
            code: 7,
            reason: "bye".into()
        }
    );
    assert_eq!(srv_conn.close_reason(), Some(seen));
    let start = std::time::Instant::now();
    while conn.close_reason().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the closing side learns it closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(conn.close_reason(), Some(ConnectionError::LocallyClosed));
    second.close(0, b"");
    client.shutdown(Duration::from_secs(2)).await;
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_server_key_takes_over_without_a_restart() {
    let (old_key, old_pub) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let (new_key, new_pub) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let mut cfg = config("127.0.0.1:0");
    cfg.workers = 2;
    let server = Endpoint::server(
        cfg,
        Arc::new(ServerConfig::raw_key(old_key, old_pub.clone())),
    )
    .expect("server");
    let addr = server.local_addr();
    server
        .serve(|c| async move {
            // Echo each bidirectional stream.
            while let Ok((mut s, mut r)) = c.accept_bi().await {
                let Ok(data) = r.read_to_end_limited(1 << 16).await else {
                    break;
                };
                let _ = s.write_all_data(&data).await;
                let _ = s.finish();
            }
        })
        .expect("serve");
    let pinned = |k: &stoq::crypto::sig::VerifyingKey| {
        Endpoint::client(
            config("127.0.0.1:0"),
            Arc::new(ClientConfig::pinned("id.stoq", k.clone())),
        )
        .expect("client")
    };
    let (old_client, new_client) = (pinned(&old_pub), pinned(&new_pub));
    let before = old_client.connect(addr, "id.stoq").await.expect("old key");
    assert!(
        new_client.connect(addr, "id.stoq").await.is_err(),
        "not yet the new key"
    );

    server
        .set_server_config(Arc::new(ServerConfig::raw_key(new_key, new_pub.clone())))
        .expect("a server");
    // Every worker proves the new key now (several connections: both workers).
    for _ in 0..4 {
        let c = new_client
            .connect(addr, "id.stoq")
            .await
            .expect("the new key");
        assert_eq!(c.peer_key().as_ref(), Some(&new_pub));
        c.close(0, b"");
    }
    assert!(
        old_client.connect(addr, "id.stoq").await.is_err(),
        "the old key is gone"
    );
    // The connection made under the old key carries on.
    let (mut s, mut r) = before.open_bi().await.expect("open");
    s.write_all_data(b"still here").await.expect("write");
    s.finish().expect("finish");
    let echoed = r.read_to_end_limited(64).await.expect("echo");
    assert_eq!(echoed, b"still here");
    assert_eq!(before.close_reason(), None);
    assert!(
        old_client
            .set_server_config(Arc::new(ServerConfig::raw_key(
                SigningKey::generate(SigAlg::Falcon512, &mut OsRng).0,
                new_pub
            )))
            .is_err(),
        "a client has no server configuration"
    );
    before.close(0, b"");
    old_client.shutdown(Duration::from_secs(1)).await;
    new_client.shutdown(Duration::from_secs(1)).await;
    server.shutdown(Duration::from_secs(1)).await;
}
