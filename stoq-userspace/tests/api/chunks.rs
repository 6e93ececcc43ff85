//! `RecvStream::read_chunk` through the async API: ordered and unordered, on the
//! connection's worker (a served handler) and from another thread (the client on the
//! test's runtime). Every byte arrives once, at its offset; mixing the two is refused.

use std::time::Duration;

use stoq::api::StreamError;

use super::{endpoints, pattern};

const LEN: usize = 1 << 20;

/// Reads `recv` to the end with `read_chunk(max, ordered)`, placing each chunk at its
/// offset; checks that no byte comes twice and, in order, that offsets are consecutive.
async fn collect(recv: &mut stoq::RecvStream, max: usize, ordered: bool) -> Vec<u8> {
    let mut out = vec![0u8; LEN];
    let mut seen = vec![false; LEN];
    let mut next = 0u64;
    while let Some(c) = recv.read_chunk(max, ordered).await.expect("chunk") {
        assert!(
            !c.bytes.is_empty() && c.bytes.len() <= max,
            "{} bytes",
            c.bytes.len()
        );
        if ordered {
            assert_eq!(c.offset, next, "ordered chunks follow each other");
        }
        next = c.offset + c.bytes.len() as u64;
        let at = c.offset as usize;
        assert!(
            seen[at..at + c.bytes.len()].iter().all(|s| !s),
            "a byte came twice"
        );
        seen[at..at + c.bytes.len()].fill(true);
        out[at..at + c.bytes.len()].copy_from_slice(&c.bytes);
    }
    assert!(seen.iter().all(|s| *s), "every byte came");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_in_order_and_unordered_on_and_off_the_worker() {
    let (server, client, target) = endpoints("127.0.0.1:0", 1);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    server
        .serve(move |c| {
            let tx = tx.clone();
            async move {
                // On the worker: the client's two streams, one read in order, one not.
                let mut a = c.accept_uni().await.expect("stream a");
                let ordered = collect(&mut a, 1000, true).await;
                let mut b = c.accept_uni().await.expect("stream b");
                let unordered = collect(&mut b, 7000, false).await;
                // Mixing: a stream read unordered refuses ordered reads.
                let mut m = c.accept_uni().await.expect("stream m");
                let first = m.read_chunk(10, false).await.expect("chunk").expect("data");
                let mut buf = [0u8; 10];
                let mixed = m.read_data(&mut buf).await;
                let _ = tx.send((ordered, unordered, first.offset, mixed));
                // Then two streams back to the client.
                for _ in 0..2 {
                    let mut s = c.open_uni().await.expect("open");
                    s.write_all_data(&pattern(LEN)).await.expect("write");
                    s.finish().expect("finish");
                }
                let _ = c.closed().await;
            }
        })
        .expect("serve");
    let conn = client.connect(target, "test.stoq").await.expect("connect");
    for n in [LEN, LEN, 100] {
        let mut s = conn.open_uni().await.expect("open");
        s.write_all_data(&pattern(n)).await.expect("write");
        s.finish().expect("finish");
    }
    let (ordered, unordered, offset, mixed) =
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("served in time")
            .expect("sent");
    assert!(ordered == pattern(LEN) && unordered == pattern(LEN));
    assert_eq!(offset, 0);
    assert_eq!(mixed, Err(StreamError::Unordered));

    // From another thread: ordered chunks come from the pump's buffers, unordered ones
    // through the worker.
    assert!(!conn.is_on_worker());
    let mut a = conn.accept_uni().await.expect("stream back");
    assert_eq!(collect(&mut a, 5000, true).await, pattern(LEN));
    let mut b = conn.accept_uni().await.expect("stream back");
    assert_eq!(collect(&mut b, 3000, false).await, pattern(LEN));
    assert_eq!(
        b.read_chunk(10, false).await,
        Ok(None),
        "the end stays the end"
    );
    conn.close(0, b"");
    client.shutdown(Duration::from_secs(1)).await;
    server.shutdown(Duration::from_secs(1)).await;
}
