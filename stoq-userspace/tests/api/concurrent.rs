//! Several tasks accepting streams on one connection at once: each stream opened by the
//! peer wakes every waiting task (one takes it, the others wait again), so no task sleeps
//! through a stream meant for it. Served on the worker, and on the cross-thread path.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;

use super::endpoints;

const TASKS: usize = 3;

/// Opens `TASKS` streams and waits for every answer: only tasks that all hold a stream
/// at once (the barrier) answer, so one task woken for every stream would hang here.
async fn open_and_collect(conn: &stoq::Connection) {
    let mut recvs = Vec::new();
    for i in 0..TASKS {
        let (mut s, r) = conn.open_bi().await.expect("open");
        s.write_all_data(&[i as u8]).await.expect("write");
        s.finish().expect("finish");
        recvs.push(r);
    }
    for mut r in recvs {
        let got = tokio::time::timeout(Duration::from_secs(10), r.read_to_end_limited(16))
            .await
            .expect("every stream is accepted by a task of its own")
            .expect("answer");
        assert_eq!(got, b"ok");
    }
}

async fn accept_one(c: stoq::Connection, barrier: Arc<Barrier>) {
    let (mut s, mut r) = c.accept_bi().await.expect("accept");
    let _ = r.read_to_end_limited(16).await.expect("read");
    barrier.wait().await;
    s.write_all_data(b"ok").await.expect("write");
    s.finish().expect("finish");
    let _ = s.finished().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_accepts_on_the_worker() {
    let (server, client, target) = endpoints("127.0.0.1:0", 1);
    server
        .serve(|c| async move {
            let barrier = Arc::new(Barrier::new(TASKS));
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| tokio::task::spawn_local(accept_one(c.clone(), barrier.clone())))
                .collect();
            for t in tasks {
                let _ = t.await;
            }
        })
        .expect("serve");
    let conn = client.connect(target, "test.stoq").await.expect("connect");
    open_and_collect(&conn).await;
    conn.close(0, b"");
    client.shutdown(Duration::from_secs(1)).await;
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_accepts_across_threads() {
    let (server, client, target) = endpoints("127.0.0.1:0", 1);
    let srv = tokio::spawn(async move {
        let c = server.accept().await.expect("a client");
        let barrier = Arc::new(Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| tokio::spawn(accept_one(c.clone(), barrier.clone())))
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        server
    });
    let conn = client.connect(target, "test.stoq").await.expect("connect");
    open_and_collect(&conn).await;
    let server = srv.await.expect("server");
    conn.close(0, b"");
    client.shutdown(Duration::from_secs(1)).await;
    server.shutdown(Duration::from_secs(1)).await;
}
