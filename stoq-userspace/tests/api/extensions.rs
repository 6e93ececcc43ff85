//! DATAGRAMs as `Bytes` and extension frames through the async API: sent from a task on
//! the connection's worker (the server) and from another thread (the client, on the
//! test's runtime), echoed back and compared.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stoq::Endpoint;
use stoq::api::SendError;
use stoq::conn::ExtensionError;
use stoq::engine::EngineConfig;
use stoq::io::BackendKind;

use super::configs;

const TY: u64 = 0x5f2a;

fn endpoints() -> (Endpoint, Endpoint, std::net::SocketAddr) {
    let (s, c) = configs();
    let with_ext = |mut e: EngineConfig| {
        e.backend = Some(BackendKind::Udp);
        let mut t = (*e.endpoint.transport).clone();
        t.extension_frames = vec![TY];
        e.endpoint.transport = Arc::new(t);
        e
    };
    let mut scfg = with_ext(EngineConfig::new("127.0.0.1:0".parse().unwrap()));
    scfg.workers = 1;
    let server = Endpoint::server(scfg, s).expect("server");
    let client = Endpoint::client(
        with_ext(EngineConfig::new("127.0.0.1:0".parse().unwrap())),
        c,
    )
    .expect("client");
    let addr = server.local_addr();
    (server, client, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_datagrams_and_extension_frames_echo() {
    let (server, client, addr) = endpoints();
    // The server echoes three DATAGRAMs (as Bytes) and three extension frames, on its worker.
    server
        .serve(|c| async move {
            for _ in 0..3 {
                let d = c.read_datagram_bytes().await.expect("datagram");
                c.send_datagram_bytes(d).expect("echo datagram");
            }
            for _ in 0..3 {
                let (ty, p) = c.read_extension_frame().await.expect("extension frame");
                assert_eq!(ty, TY);
                c.send_extension_frame(ty, &p).expect("echo frame");
            }
            let _ = c.closed().await;
        })
        .expect("serve");
    let conn = client.connect(addr, "test.stoq").await.expect("connect");
    assert!(!conn.is_on_worker(), "the client is on another thread");
    let wait = Duration::from_secs(5);

    // DATAGRAMs may be lost: resend until each comes back (loopback loses none in practice).
    let mut back = Vec::new();
    for i in 0..3u8 {
        let d = Bytes::from(vec![i; 600]);
        let got = loop {
            conn.send_datagram_bytes(d.clone()).expect("send");
            if let Ok(r) =
                tokio::time::timeout(Duration::from_millis(500), conn.read_datagram_bytes()).await
            {
                break r.expect("datagram back");
            }
        };
        back.push(got);
    }
    assert_eq!(
        back,
        (0..3u8)
            .map(|i| Bytes::from(vec![i; 600]))
            .collect::<Vec<_>>()
    );

    // Extension frames are reliable: each comes back once.
    for i in 0..3u8 {
        conn.send_extension_frame(TY, &[i; 40]).expect("send frame");
    }
    let mut frames = Vec::new();
    for _ in 0..3 {
        let f = tokio::time::timeout(wait, conn.read_extension_frame())
            .await
            .expect("a frame within 5 s")
            .expect("frame");
        frames.push(f);
    }
    frames.sort();
    assert_eq!(
        frames,
        (0..3u8).map(|i| (TY, vec![i; 40])).collect::<Vec<_>>()
    );

    // Misuse is a typed error.
    assert_eq!(
        conn.send_extension_frame(0x40, b"x"),
        Err(SendError::Extension(ExtensionError::OutsideRange(0x40)))
    );
    let too_big = Bytes::from(vec![0u8; 70_000]);
    assert!(matches!(
        conn.send_datagram_bytes(too_big),
        Err(SendError::Datagram(
            stoq::conn::SendDatagramError::TooLarge { .. }
        ))
    ));

    // Once closed, waiting for a frame ends with the connection's error.
    conn.close(7, b"done");
    let e = tokio::time::timeout(wait, conn.read_extension_frame())
        .await
        .expect("no hang after close");
    assert!(e.is_err(), "{e:?}");
    client.shutdown(Duration::from_secs(1)).await;
    server.shutdown(Duration::from_secs(1)).await;
}
