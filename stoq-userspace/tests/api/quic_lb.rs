//! A two-worker server whose CIDs are encrypted for QUIC-LB: the kernel cannot read the
//! worker from them (its steering is off), so datagrams that reach the wrong worker are
//! handed over after userspace decrypts the CID; every connection echoes, and the CIDs
//! on the wire do not show the server ID.

use std::sync::Arc;

use stoq::Endpoint;
use stoq::conn::ClusterKeys;
use stoq::engine::EngineConfig;
use stoq::io::BackendKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::configs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_work_on_encrypted_cids_across_two_workers() {
    let (s, c) = configs();
    let keys = ClusterKeys::new(0, [9; 32])
        .and_then(|k| k.with_lb_key(0, [0x8f; 16]))
        .expect("keys");
    let mut cfg = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
    cfg.workers = 2;
    cfg.backend = Some(BackendKind::Udp);
    cfg.pin_workers = false;
    cfg.endpoint.server_id = 0x0102;
    cfg.endpoint.cluster_keys = Some(Arc::new(keys));
    let server = Arc::new(Endpoint::server(cfg, s).expect("server"));
    let addr = server.local_addr();
    let srv = server.clone();
    tokio::spawn(async move {
        while let Some(conn) = srv.accept().await {
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let mut buf = Vec::new();
                    recv.read_to_end(&mut buf).await.expect("read");
                    send.write_all(&buf).await.expect("write");
                    send.finish().expect("finish");
                }
            });
        }
    });
    let mut ccfg = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
    ccfg.backend = Some(BackendKind::Udp);
    ccfg.pin_workers = false;
    let client = Endpoint::client(ccfg, c).expect("client");
    let mut conns = Vec::new();
    for i in 0..8u8 {
        let conn = client.connect(addr, "test.stoq").await.expect("connect");
        let (mut send, mut recv) = conn.open_bi().await.expect("open");
        let msg = vec![i; 100_000];
        send.write_all(&msg).await.expect("write");
        send.finish().expect("finish");
        let mut got = Vec::new();
        recv.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, msg);
        conns.push(conn);
    }
    // Move one client between ports (NAT rebinding): the kernel hashes each new 4-tuple
    // to either worker, and a datagram that reaches the other one is handed over by the
    // worker the decrypted CID names. Sixteen moves miss the other worker with odds of
    // 1 in 65,536.
    let conn = conns.pop().expect("a connection");
    for i in 0..16u8 {
        client
            .rebind("127.0.0.1:0".parse().expect("addr"))
            .expect("rebind");
        let (mut send, mut recv) = conn.open_bi().await.expect("open");
        send.write_all(&[i; 5000]).await.expect("write");
        send.finish().expect("finish");
        let mut got = Vec::new();
        recv.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, [i; 5000], "echo after move {i}");
    }
    conns.push(conn);
    // The server IDs are not in clear: the octets after the first differ between CIDs.
    let cids = server.with_connections(|c| c.local_cid().as_bytes().to_vec());
    assert_eq!(cids.len(), 8);
    assert!(
        cids.iter().any(|c| c[1..3] != [0x01, 0x02]),
        "at least one CID does not show server id 0102 in clear: {cids:?}"
    );
    let handed: u64 = server.worker_stats().iter().map(|w| w.handoffs_out).sum();
    let per_worker: Vec<usize> = server
        .worker_stats()
        .iter()
        .map(|w| w.connections)
        .collect();
    eprintln!(
        "8 connections on encrypted CIDs over workers {per_worker:?}; {handed} datagrams \
         handed over by decrypted CID"
    );
    assert!(
        handed > 0,
        "a moved client's datagrams reached the other worker"
    );
    for c in conns {
        c.close(0, b"");
    }
}
