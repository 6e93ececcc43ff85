//! qlog through the async API: on for every connection of a server endpoint
//! (`TransportConfig::qlog`), and for one client connection (`Connection::set_qlog`);
//! another connection of the same client is not traced.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use stoq::Endpoint;
use stoq::engine::EngineConfig;
use stoq::io::BackendKind;
use stoq::qlog::QlogWriter;

use super::configs;

/// Files in `dir` whose names end with `suffix`.
fn traces(dir: &Path, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(suffix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_endpoint_and_per_connection() {
    let root = std::env::temp_dir().join(format!("stoq-qlog-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let server_log = QlogWriter::new(root.join("server")).expect("dir");
    let client_log = QlogWriter::new(root.join("client")).expect("dir");

    let (s, c) = configs();
    let mut scfg = EngineConfig::new("127.0.0.1:0".parse().unwrap());
    scfg.workers = 1;
    scfg.backend = Some(BackendKind::Udp);
    let mut t = (*scfg.endpoint.transport).clone();
    t.qlog = Some(server_log.clone());
    scfg.endpoint.transport = Arc::new(t);
    let server = Endpoint::server(scfg, s).expect("server");
    let target = server.local_addr();
    server
        .serve(|c| async move {
            while let Ok((mut tx, mut rx)) = c.accept_bi().await {
                let data = rx.read_to_end_limited(1 << 20).await.expect("read");
                tx.write_all_data(&data).await.expect("echo");
                tx.finish().expect("finish");
            }
        })
        .expect("serve");
    let mut ccfg = EngineConfig::new("127.0.0.1:0".parse().unwrap());
    ccfg.backend = Some(BackendKind::Udp);
    let client = Endpoint::client(ccfg, c).expect("client");

    let traced = client.connect(target, "test.stoq").await.expect("connect");
    traced.set_qlog(&client_log);
    let plain = client.connect(target, "test.stoq").await.expect("connect");
    for conn in [&traced, &plain] {
        let (mut tx, mut rx) = conn.open_bi().await.expect("open");
        tx.write_all_data(&[7u8; 100_000]).await.expect("write");
        tx.finish().expect("finish");
        let back = rx.read_to_end_limited(1 << 20).await.expect("read");
        assert_eq!(back.len(), 100_000);
    }
    traced.close(0, b"bye");
    plain.close(0, b"bye");
    drop((traced, plain));
    client.shutdown(Duration::from_secs(2)).await;
    server.shutdown(Duration::from_secs(2)).await;
    drop((client, server));
    // The workers free the connections as they stop; give the traces a moment to close.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline
        && (server_log.stats().traces < 2 || client_log.stats().traces < 1)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server_log.flush();
    client_log.flush();

    let servers = traces(&root.join("server"), "_server.sqlog");
    let clients = traces(&root.join("client"), "_client.sqlog");
    assert_eq!(
        servers.len(),
        2,
        "both server connections traced: {servers:?}"
    );
    assert_eq!(
        clients.len(),
        1,
        "only the traced client connection: {clients:?}"
    );
    // The client's trace names the same connection (its original DCID) as one of the
    // server's.
    let odcid = clients[0].trim_end_matches("_client.sqlog");
    assert!(
        servers.iter().any(|s| s.starts_with(odcid)),
        "{odcid} among {servers:?}"
    );
    let text = std::fs::read_to_string(root.join("client").join(&clients[0])).unwrap();
    for name in [
        "quic:packet_sent",
        "quic:packet_received",
        "quic:connection_closed",
    ] {
        assert!(text.contains(name), "client trace lacks {name}");
    }
    let st = client_log.stats();
    assert!(st.written > 10 && st.dropped == 0, "{st:?}");
    let _ = std::fs::remove_dir_all(&root);
}
