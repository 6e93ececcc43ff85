//! The engine and the async API on the in-memory backend (`stoq::io::simnet`): real
//! worker threads and tokio tasks, over a simulated path that is slow, lossy, reorders and
//! goes black for a while, in real time.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use stoq::Endpoint;
use stoq::engine::EngineConfig;
use stoq::io::simnet;
use stoq::sim::LinkConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common;

#[test]
fn a_transfer_survives_a_lossy_path_and_a_blackhole() {
    let (server_cfg, client_cfg) = common::configs(common::params());
    let (server_cfg, client_cfg) = (Arc::new(server_cfg), Arc::new(client_cfg));
    let a = "[fd00:5710::1]:50000".parse().expect("addr");
    let b = "[fd00:5710::2]:4433".parse().expect("addr");
    let link = LinkConfig {
        rate_bps: Some(200_000_000),
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(1),
        loss: 0.02,
        reorder: 0.01,
        reorder_delay: Duration::from_millis(3),
        duplicate: 0.005,
        // Half a second of nothing, a little after the start.
        blackholes: vec![(Duration::from_millis(300), Duration::from_millis(500))],
        ..LinkConfig::default()
    };
    let (ca, sb) = simnet::pair(a, b, link.clone(), link, 7).expect("simulated path");
    let mut cfg = EngineConfig::new(a);
    cfg.workers = 1;
    cfg.pin_workers = false;
    let server = Endpoint::server_on(cfg.clone(), vec![Box::new(sb)], server_cfg).expect("server");
    let client = Endpoint::client_on(cfg, Box::new(ca), client_cfg).expect("client");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let srv = tokio::spawn(async move {
            let conn = server.accept().await.expect("client");
            let mut r = conn.accept_uni().await.expect("stream");
            let mut data = Vec::new();
            r.read_to_end(&mut data).await.expect("read");
            let mut s = conn.open_uni().await.expect("answer");
            s.write_all(&Sha256::digest(&data)).await.expect("write");
            s.finished().await.expect("acknowledged");
            (data.len(), server)
        });
        let conn = client.connect(b, "stoq.example").await.expect("connect");
        let data: Vec<u8> = (0..(4u32 << 20))
            .map(|i| i.wrapping_mul(2_654_435_761) as u8)
            .collect();
        let mut s = conn.open_uni().await.expect("open");
        s.write_all(&data).await.expect("write");
        s.finish().expect("finish");
        let mut back = conn.accept_uni().await.expect("hash");
        let mut hash = Vec::new();
        back.read_to_end(&mut hash).await.expect("read hash");
        assert_eq!(hash, Sha256::digest(&data).to_vec());
        let (n, server) = srv.await.expect("server task");
        assert_eq!(n, data.len());
        let st = conn.stats().expect("stats");
        assert!(st.lost_packets > 0, "the path lost packets: {st:?}");
        assert_eq!(
            client.info().selection.chosen,
            stoq::io::BackendKind::Custom
        );
        conn.close(0, b"");
        client.shutdown(Duration::from_secs(1)).await;
        server.shutdown(Duration::from_secs(1)).await;
    });
}
