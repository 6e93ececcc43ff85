//! `SendStream::stopped`: the sender learns that the peer stopped its stream (with the
//! peer's code) while it is not writing, or that every byte was acknowledged; `finished`
//! after a stop fails with the code. Served on the worker, and on the cross-thread path.

use std::time::Duration;

use stoq::api::StreamError;
use tokio::sync::mpsc;

use super::endpoints;

/// What the sending side saw.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    /// `stopped()` of a stream the peer stopped with 42 after one byte, while idle.
    stopped: Result<Option<u64>, StreamError>,
    /// A write after that.
    write_after: Result<(), StreamError>,
    /// `finished()` after that.
    finished_after: Result<(), StreamError>,
    /// `stopped()` of a finished stream the peer read to the end.
    acknowledged: Result<Option<u64>, StreamError>,
}

async fn send_and_watch(c: stoq::Connection) -> Seen {
    let wait = Duration::from_secs(10);
    let mut s = c.open_uni().await.expect("open");
    s.write_all_data(b"x").await.expect("write");
    let stopped = tokio::time::timeout(wait, s.stopped())
        .await
        .expect("stopped() resolves without a write");
    let write_after = s.write_all_data(b"more").await;
    let finished_after = tokio::time::timeout(wait, s.finished())
        .await
        .expect("finished() resolves after a stop");
    let mut s = c.open_uni().await.expect("open");
    s.write_all_data(b"y").await.expect("write");
    s.finish().expect("finish");
    let acknowledged = tokio::time::timeout(wait, s.stopped())
        .await
        .expect("stopped() resolves once acknowledged");
    Seen {
        stopped,
        write_after,
        finished_after,
        acknowledged,
    }
}

/// The receiving side: stops the first stream after one byte, reads the second.
async fn receive(conn: &stoq::Connection) {
    let mut r = conn.accept_uni().await.expect("first stream");
    let mut b = [0u8; 1];
    assert_eq!(r.read_data(&mut b).await.expect("read"), Some(1));
    r.stop(42);
    let mut r = conn.accept_uni().await.expect("second stream");
    assert_eq!(r.read_to_end_limited(16).await.expect("read"), b"y");
}

fn expected() -> Seen {
    Seen {
        stopped: Ok(Some(42)),
        write_after: Err(StreamError::Stopped(42)),
        finished_after: Err(StreamError::Stopped(42)),
        acknowledged: Ok(None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_on_the_worker() {
    let (server, client, target) = endpoints("127.0.0.1:0", 1);
    let (tx, mut rx) = mpsc::unbounded_channel();
    server
        .serve(move |c| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(send_and_watch(c).await);
            }
        })
        .expect("serve");
    let conn = client.connect(target, "test.stoq").await.expect("connect");
    receive(&conn).await;
    let seen = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the served task ended")
        .expect("a report");
    assert_eq!(seen, expected());
    conn.close(0, b"");
    client.shutdown(Duration::from_secs(1)).await;
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_across_threads() {
    let (server, client, target) = endpoints("127.0.0.1:0", 1);
    let srv = tokio::spawn(async move {
        let c = server.accept().await.expect("a client");
        (send_and_watch(c).await, server)
    });
    let conn = client.connect(target, "test.stoq").await.expect("connect");
    receive(&conn).await;
    let (seen, server) = tokio::time::timeout(Duration::from_secs(20), srv)
        .await
        .expect("the sender ended")
        .expect("sender task");
    assert_eq!(seen, expected());
    conn.close(0, b"");
    client.shutdown(Duration::from_secs(1)).await;
    server.shutdown(Duration::from_secs(1)).await;
}
