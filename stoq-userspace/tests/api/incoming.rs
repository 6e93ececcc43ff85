//! Application admission: each new client comes to `Endpoint::incoming` to be accepted,
//! refused, retried or ignored, on one worker and across two.

use std::net::SocketAddr;
use std::time::Duration;

use stoq::Endpoint;
use stoq::api::{AcceptError, ConnectError, IncomingError};
use stoq::conn::{ConnectionError, RetryPolicy, code};
use stoq::engine::{Admission, EngineConfig};
use stoq::io::BackendKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::configs;

fn pair(workers: usize) -> (Endpoint, Endpoint, SocketAddr) {
    let (s, c) = configs();
    let mut cfg = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
    cfg.workers = workers;
    cfg.backend = Some(BackendKind::Udp);
    cfg.pin_workers = false;
    cfg.admission = Admission::Application;
    // Every client comes to the application, loaded or not.
    cfg.endpoint.retry = RetryPolicy::Never;
    let server = Endpoint::server(cfg, s).expect("server");
    let addr = server.local_addr();
    let mut ccfg = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
    ccfg.backend = Some(BackendKind::Udp);
    ccfg.pin_workers = false;
    ccfg.workers = workers;
    let client = Endpoint::client(ccfg, c).expect("client");
    (server, client, addr)
}

async fn echo_once(conn: &stoq::Connection) {
    let (mut send, mut recv) = conn.open_bi().await.expect("open");
    send.write_all(b"ping").await.expect("write");
    send.finish().expect("finish");
    let mut got = Vec::new();
    recv.read_to_end(&mut got).await.expect("read");
    assert_eq!(got, b"ping");
}

/// Retry, then accept (a second retry is refused and gives the client back); refuse;
/// ignore (and drop, which ignores).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_is_accepted_refused_retried_or_ignored_by_the_application() {
    let (server, client, addr) = pair(1);
    let server = std::sync::Arc::new(server);
    let s = server.clone();
    let decisions = tokio::spawn(async move {
        let mut log = Vec::new();
        // 1: retried, comes back validated, accepted, echoes.
        let i = s.incoming().await.expect("first client");
        assert!(!i.remote_address_validated());
        let from = i.remote_address();
        i.retry().expect("not validated yet");
        let i = s.incoming().await.expect("back after the Retry");
        assert!(i.remote_address_validated());
        assert_eq!(i.remote_address(), from);
        let i = i
            .retry()
            .expect_err("a second Retry would loop")
            .into_incoming();
        let conn = i.accept().await.expect("handshake");
        log.push("accepted");
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let mut buf = Vec::new();
                recv.read_to_end(&mut buf).await.expect("read");
                send.write_all(&buf).await.expect("write");
                send.finish().expect("finish");
            }
        });
        // 2: refused.
        s.incoming().await.expect("second client").refuse();
        log.push("refused");
        // 3: ignored, then dropped (its resent Initial comes back as a new Incoming).
        s.incoming().await.expect("third client").ignore();
        drop(s.incoming().await.expect("third client, resent"));
        log.push("ignored");
        log
    });

    let conn = client.connect(addr, "test.stoq").await.expect("accepted");
    echo_once(&conn).await;
    match client.connect(addr, "test.stoq").await {
        Err(ConnectError::Lost(ConnectionError::PeerClosed { code: c, .. })) => {
            assert_eq!(c, code::CONNECTION_REFUSED);
        }
        other => panic!("expected CONNECTION_REFUSED, got {other:?}"),
    }
    let ignored = tokio::time::timeout(
        Duration::from_millis(2500),
        client.connect(addr, "test.stoq"),
    )
    .await;
    assert!(ignored.is_err(), "an ignored client gets no answer");
    assert_eq!(
        decisions.await.expect("decisions"),
        ["accepted", "refused", "ignored"]
    );
    let st = server.endpoint_stats()[0];
    assert!(st.retries_sent >= 1 && st.refused >= 1, "{st:?}");
    assert_eq!(st.accepted, 1, "{st:?}");

    // Shutting down ends the stream of clients.
    server.shutdown(Duration::from_secs(1)).await;
    assert_eq!(server.incoming().await.err(), Some(IncomingError::Closed));
}

/// Across two workers, every client reaches the application and is accepted; an
/// endpoint that admits clients itself says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_clients_of_two_workers_are_accepted() {
    let (server, client, addr) = pair(2);
    let server = std::sync::Arc::new(server);
    let s = server.clone();
    let acceptor = tokio::spawn(async move {
        let mut conns = Vec::new();
        for _ in 0..8 {
            let i = s.incoming().await.expect("client");
            let conn: Result<stoq::Connection, AcceptError> = i.accept().await;
            let conn = conn.expect("handshake");
            tokio::spawn({
                let conn = conn.clone();
                async move {
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let mut buf = Vec::new();
                        recv.read_to_end(&mut buf).await.expect("read");
                        send.write_all(&buf).await.expect("write");
                        send.finish().expect("finish");
                    }
                }
            });
            conns.push(conn);
        }
        conns
    });
    let mut clients = Vec::new();
    for _ in 0..8 {
        let c = client.connect(addr, "test.stoq").await.expect("accepted");
        echo_once(&c).await;
        clients.push(c);
    }
    assert_eq!(acceptor.await.expect("acceptor").len(), 8);
    let accepted: u64 = server.endpoint_stats().iter().map(|s| s.accepted).sum();
    assert_eq!(accepted, 8);

    let (s, _) = configs();
    let mut cfg = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
    cfg.backend = Some(BackendKind::Udp);
    cfg.pin_workers = false;
    cfg.workers = 1;
    let automatic = Endpoint::server(cfg, s).expect("server");
    assert_eq!(
        automatic.incoming().await.err(),
        Some(IncomingError::AutomaticAdmission)
    );
}
