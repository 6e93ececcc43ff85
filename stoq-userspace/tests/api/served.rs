//! The thread-per-core paths: connections served on their workers (`Endpoint::serve`,
//! `Connection::spawn_on_worker`, futures that are not `Send`), a client on the caller's
//! runtime, and handles that move between a worker and other threads.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use stoq::Endpoint;
use stoq::api::ServeError;
use stoq::engine::{EngineConfig, EngineError};
use stoq::io::BackendKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{configs, pattern};

fn server(workers: usize) -> (Endpoint, std::net::SocketAddr) {
    let (s, _) = configs_shared();
    let mut cfg = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
    cfg.workers = workers;
    cfg.backend = Some(BackendKind::Udp);
    cfg.pin_workers = false;
    let ep = Endpoint::server(cfg, s).expect("server");
    let addr = ep.local_addr();
    (ep, addr)
}

/// One key pair for the whole test binary's served tests, so each server and client agree.
fn configs_shared() -> (
    Arc<stoq::handshake::ServerConfig>,
    Arc<stoq::handshake::ClientConfig>,
) {
    static C: std::sync::OnceLock<(
        Arc<stoq::handshake::ServerConfig>,
        Arc<stoq::handshake::ClientConfig>,
    )> = std::sync::OnceLock::new();
    C.get_or_init(configs).clone()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn client_cfg() -> EngineConfig {
    let mut cfg = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
    cfg.backend = Some(BackendKind::Udp);
    cfg.pin_workers = false;
    cfg
}

/// The server's side: bidirectional streams echoed; a unidirectional stream hashed and
/// answered with its SHA-256 on a stream of the server's own. The future holds an `Rc`
/// across its awaits, so it is not `Send`: only a task on the worker can run it.
fn serve_echo_and_hash(ep: &Endpoint) {
    ep.serve(|conn| async move {
        let requests = Rc::new(Cell::new(0u64));
        let c2 = conn.clone();
        let r2 = requests.clone();
        tokio::task::spawn_local(async move {
            while let Ok(mut recv) = c2.accept_uni().await {
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(Some(n)) = recv.read_data(&mut buf).await {
                    h.update(&buf[..n]);
                }
                r2.set(r2.get() + 1);
                if let Ok(mut s) = c2.open_uni().await {
                    let _ = s.write_all(&h.finalize()).await;
                    let _ = s.finish();
                }
            }
        });
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let requests = requests.clone();
            tokio::task::spawn_local(async move {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(Some(n)) = recv.read_data(&mut buf).await {
                    requests.set(requests.get() + 1);
                    if send.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                let _ = send.finish();
            });
        }
    })
    .expect("serve");
}

/// Sends `data` on a unidirectional stream and checks the SHA-256 the server answers with.
async fn send_and_check(conn: &stoq::Connection, data: &[u8]) {
    let mut s = conn.open_uni().await.expect("open");
    s.write_all(data).await.expect("write");
    s.finish().expect("finish");
    let mut back = conn.accept_uni().await.expect("hash stream");
    let mut hash = Vec::new();
    back.read_to_end(&mut hash).await.expect("hash");
    assert_eq!(
        hash,
        Sha256::digest(data).to_vec(),
        "SHA-256 of what arrived"
    );
}

#[test]
fn a_non_send_future_is_served_on_its_worker_for_an_in_runtime_client() {
    let (ep, addr) = server(2);
    serve_echo_and_hash(&ep);
    current_thread().block_on(async {
        let (_, c) = configs_shared();
        let client = Endpoint::client_in_runtime(client_cfg(), c).expect("client");
        for round in 0..3u64 {
            let conn = client.connect(addr, "test.stoq").await.expect("connect");
            assert!(conn.is_on_worker());
            let (mut w, mut r) = conn.open_bi().await.expect("open");
            let mut b = [0u8; 64];
            for i in 0..100u8 {
                w.write_all(&[i; 64]).await.expect("write");
                r.read_exact(&mut b).await.expect("read");
                assert_eq!(b, [i; 64]);
            }
            send_and_check(&conn, &pattern(8 << 20 | round as usize)).await;
            conn.close(0, b"");
        }
        assert_eq!(client.worker_stats()[0].crossings, 0);
        client.shutdown(Duration::from_secs(1)).await;
    });
    // Served connections made no call across threads.
    assert!(
        ep.worker_stats()
            .iter()
            .all(|s| s.crossings == 0 && s.locks == 0)
    );
    let accepted: u64 = ep.endpoint_stats().iter().map(|s| s.accepted).sum();
    assert_eq!(accepted, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_runtime_client_on_a_multi_thread_runtime() {
    let (ep, addr) = server(1);
    serve_echo_and_hash(&ep);
    let (_, c) = configs_shared();
    let client = Arc::new(Endpoint::client_in_runtime(client_cfg(), c).expect("client"));
    let mut tasks = Vec::new();
    for i in 0..4usize {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let conn = client.connect(addr, "test.stoq").await.expect("connect");
            send_and_check(&conn, &pattern((4 << 20) + i)).await;
            conn.close(0, b"");
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    // The lock is the price of a runtime that moves tasks: taken, and counted.
    assert!(client.worker_stats()[0].locks > 0);
    client.shutdown(Duration::from_secs(1)).await;
}

/// A stream written first on its worker and then from another thread (through the pump):
/// the peer reads every byte in order.
#[test]
fn a_stream_moved_off_its_worker_keeps_its_order() {
    let (ep, addr) = server(1);
    serve_echo_and_hash(&ep);
    current_thread().block_on(async {
        let (_, c) = configs_shared();
        // A client whose worker has a thread of its own: this thread is "another thread".
        let client = Endpoint::client(client_cfg(), c).expect("client");
        let conn = client.connect(addr, "test.stoq").await.expect("connect");
        assert!(!conn.is_on_worker());
        let data = Arc::new(pattern(6 << 20));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let d = data.clone();
        conn.spawn_on_worker(move |conn| async move {
            assert_eq!(
                std::thread::current().name(),
                Some("stoq-worker-0"),
                "spawned on the connection's worker"
            );
            let mut s = conn.open_uni().await.expect("open");
            s.write_all(&d[..2 << 20])
                .await
                .expect("first part, on the worker");
            let _ = tx.send(s);
        })
        .expect("spawn on worker");
        let mut s = rx.await.expect("the stream");
        // Another thread writes the rest and finishes.
        let d = data.clone();
        std::thread::spawn(move || {
            current_thread().block_on(async move {
                s.write_all(&d[2 << 20..])
                    .await
                    .expect("second part, off the worker");
                s.finished().await.expect("acknowledged");
            });
        })
        .join()
        .expect("writer thread");
        let mut back = conn.accept_uni().await.expect("hash stream");
        let mut hash = Vec::new();
        back.read_to_end(&mut hash).await.expect("hash");
        assert_eq!(hash, Sha256::digest(&data[..]).to_vec());
        // The second part crossed threads, and the counters say so.
        assert!(client.worker_stats()[0].crossings > 0);
        conn.close(0, b"");
    });
}

/// `accept_bi` from another thread, cancelled again and again by a timeout: a stream
/// accepted for a caller that gave up is kept for the next call, never lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_accept_from_another_thread_loses_no_stream() {
    let (ep, addr) = server(1);
    let ep = Arc::new(ep);
    let (_, c) = configs_shared();
    let client = Endpoint::client_in_runtime(client_cfg(), c).expect("client");
    let srv = {
        let ep = ep.clone();
        tokio::spawn(async move {
            let conn = ep.accept().await.expect("a client");
            let mut got = Vec::new();
            let mut timeouts = 0u32;
            while got.len() < 20 {
                match tokio::time::timeout(Duration::from_micros(300), conn.accept_bi()).await {
                    Ok(r) => {
                        let (_, mut recv) = r.expect("stream");
                        let mut b = Vec::new();
                        recv.read_to_end(&mut b).await.expect("read");
                        got.push(b[0]);
                    }
                    Err(_) => timeouts += 1,
                }
            }
            got.sort_unstable();
            (got, timeouts)
        })
    };
    let conn = client.connect(addr, "test.stoq").await.expect("connect");
    for i in 0..20u8 {
        let (mut s, _r) = conn.open_bi().await.expect("open");
        s.write_all(&[i]).await.expect("write");
        s.finish().expect("finish");
        tokio::time::sleep(Duration::from_micros(700)).await;
    }
    let (got, timeouts) = tokio::time::timeout(Duration::from_secs(20), srv)
        .await
        .expect("every stream accepted (none lost to a cancelled accept)")
        .expect("server task");
    assert_eq!(got, (0..20).collect::<Vec<u8>>());
    assert!(timeouts > 0, "the accepts were cancelled along the way");
    conn.close(0, b"");
}

#[test]
fn the_wrong_mode_is_a_typed_error() {
    let (_, c) = configs_shared();
    // Outside a runtime.
    let r = Endpoint::client_in_runtime(client_cfg(), c.clone());
    assert!(matches!(r, Err(EngineError::NoRuntime)), "{r:?}");
    assert!(r.unwrap_err().to_string().contains("Endpoint::client"));
    // Serving on an engine that runs on the caller's runtime.
    current_thread().block_on(async {
        let ep = Endpoint::client_in_runtime(client_cfg(), c).expect("client");
        let r = ep.serve(|_conn| async {});
        assert_eq!(r, Err(ServeError::OnCallerRuntime));
    });
}

/// A client with two workers (a port each) connecting one connection after another: the
/// server keeps each client port's connections on one worker (their datagrams arrive
/// coalesced) and puts the two ports on its two workers; once connected, no datagram is
/// handed between them. (A new connection's Initials may be: the kernel spreads them by
/// the client's address, and when both ports hash to one worker, the second port's
/// connections are placed on the other and their first Initials handed over.)
#[test]
fn a_two_worker_client_spreads_over_a_two_worker_server() {
    let (ep, addr) = server(2);
    serve_echo_and_hash(&ep);
    current_thread().block_on(async {
        let (_, c) = configs_shared();
        let mut cfg = client_cfg();
        cfg.workers = 2;
        let client = Endpoint::client(cfg, c).expect("client");
        let mut conns = Vec::new();
        for _ in 0..8 {
            conns.push(client.connect(addr, "test.stoq").await.expect("connect"));
        }
        let handshakes: Vec<u64> = ep.worker_stats().iter().map(|w| w.handoffs_out).collect();
        // At most the Initials of the connections placed away from where they arrived.
        assert!(handshakes.iter().sum::<u64>() <= 4 * 3, "{handshakes:?}");
        for (i, c) in conns.iter().enumerate() {
            send_and_check(c, &pattern((256 << 10) + i)).await;
        }
        let stats = ep.worker_stats();
        let per_worker: Vec<usize> = stats.iter().map(|w| w.connections).collect();
        assert_eq!(per_worker, vec![4, 4], "{stats:?}");
        let after: Vec<u64> = stats.iter().map(|w| w.handoffs_out).collect();
        assert_eq!(
            after, handshakes,
            "established traffic handed over: {stats:?}"
        );
        for c in &conns {
            c.close(0, b"");
        }
    });
}

/// A DATAGRAM producer faster than the path is slowed, not dropped: a client task on its
/// connection's worker (the in-runtime client) sends 20,000 DATAGRAMs in a loop that only
/// yields when `send_datagram_wait` waits. Every call returns Ok (none refused), the queue
/// did fill (the producer waited), and the server receives what was queued, once each.
#[test]
fn a_datagram_producer_faster_than_the_path_waits() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    const N: u32 = 20_000;
    let (ep, addr) = server(1);
    // The server reads on its worker (a reader off the worker falls behind and its
    // receive queue drops, counted, which is another matter).
    let got = Arc::new(AtomicU32::new(0));
    let twice = Arc::new(AtomicBool::new(false));
    {
        let (got, twice) = (got.clone(), twice.clone());
        ep.serve(move |conn| {
            let (got, twice) = (got.clone(), twice.clone());
            async move {
                let mut seen = vec![false; N as usize];
                // One buffer for every datagram: on the worker they are swapped in.
                let mut d = Vec::new();
                while conn.read_datagram_into(&mut d).await.is_ok() {
                    let i = u32::from_be_bytes(d[..4].try_into().expect("4 bytes"));
                    if std::mem::replace(&mut seen[i as usize], true) {
                        twice.store(true, Ordering::Relaxed);
                    }
                    got.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .expect("serve");
    }
    current_thread().block_on(async {
        let (_, c) = configs_shared();
        let client = Endpoint::client_in_runtime(client_cfg(), c).expect("client");
        let conn = client.connect(addr, "test.stoq").await.expect("connect");
        let mut d = vec![0u8; 1000];
        for i in 0..N {
            d[..4].copy_from_slice(&i.to_be_bytes());
            conn.send_datagram_wait(&d)
                .await
                .expect("queued, never refused");
        }
        // Until the server has them all, or nothing more arrives for a second.
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = got.load(Ordering::Relaxed);
            if now == N || now == last {
                break;
            }
            last = now;
        }
        let got = got.load(Ordering::Relaxed);
        assert!(!twice.load(Ordering::Relaxed), "a DATAGRAM arrived twice");
        let stats = conn.stats().expect("stats");
        assert!(
            stats.datagrams_blocked > 0,
            "the producer outran the path and waited: {stats:?}"
        );
        // Queued DATAGRAMs go out under congestion control; loopback loses few if any.
        assert!(got >= N * 9 / 10, "{got} of {N} arrived");
        eprintln!(
            "{got} of {N} DATAGRAMs arrived; the producer found the queue full {} times",
            stats.datagrams_blocked
        );
        conn.close(0, b"");
    });
}
