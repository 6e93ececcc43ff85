//! The async API end to end over loopback, on the engine and the UDP backend: a bulk
//! transfer checked by SHA-256, echo on many streams, datagrams, messages with deadlines,
//! and a graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand_core::OsRng;
use sha2::{Digest, Sha256};
use stoq::crypto::sig::{SigAlg, SigningKey};
use stoq::engine::EngineConfig;
use stoq::handshake::{ClientConfig, ServerConfig};
use stoq::io::BackendKind;
use stoq::{Endpoint, api::MessageOutcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod alpn;
mod chunks;
mod concurrent;
mod early_data;
mod extensions;
mod flood;
mod identity;
mod incoming;
mod metrics;
mod qlog;
mod quic_lb;
mod reconnect;
mod resumption;
mod served;
mod stopped;

fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let server = ServerConfig::raw_key(key, public.clone());
    let client = ClientConfig::pinned("test.stoq", public);
    (Arc::new(server), Arc::new(client))
}

fn endpoints(bind: &str, workers: usize) -> (Endpoint, Endpoint, SocketAddr) {
    let (s, c) = configs();
    let mut scfg = EngineConfig::new(bind.parse().expect("addr"));
    scfg.workers = workers;
    scfg.backend = Some(BackendKind::Udp);
    let server = Endpoint::server(scfg, s).expect("server");
    let addr = server.local_addr();
    let ip = if addr.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let mut ccfg = EngineConfig::new(ip.parse().expect("addr"));
    ccfg.backend = Some(BackendKind::Udp);
    let client = Endpoint::client(ccfg, c).expect("client");
    let target = if addr.is_ipv6() {
        SocketAddr::new("::1".parse().expect("ip"), addr.port())
    } else {
        SocketAddr::new("127.0.0.1".parse().expect("ip"), addr.port())
    };
    (server, client, target)
}

/// A deterministic pattern, so any corruption or reordering shows in the hash.
fn pattern(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A bulk transfer checked by SHA-256; `zero_copy` writes shared `Bytes` chunks
/// (`write_chunk`) instead of copying from a slice.
async fn bulk(bind: &str, workers: usize, size: usize, zero_copy: bool) {
    let (server, client, target) = endpoints(bind, workers);
    let srv = tokio::spawn(async move {
        let conn = server.accept().await.expect("a client");
        let mut recv = conn.accept_uni().await.expect("stream");
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0usize;
        loop {
            let n = recv.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n;
        }
        // Answer with the hash on a stream of our own.
        let mut s = conn.open_uni().await.expect("open");
        s.write_all(&hasher.finalize()).await.expect("write");
        s.finished().await.expect("acknowledged");
        (total, server)
    });
    let conn = client.connect(target, "test.stoq").await.expect("connect");
    let data = pattern(size);
    let mut s = conn.open_uni().await.expect("open");
    if zero_copy {
        let shared = bytes::Bytes::from(data.clone());
        for at in (0..size).step_by(1 << 20) {
            let chunk = shared.slice(at..(at + (1 << 20)).min(size));
            s.write_chunk(chunk).await.expect("write_chunk");
        }
    } else {
        s.write_all(&data).await.expect("write");
    }
    s.finish().expect("finish");
    let mut back = conn.accept_uni().await.expect("hash stream");
    let mut hash = Vec::new();
    back.read_to_end(&mut hash).await.expect("hash");
    assert_eq!(
        hash,
        Sha256::digest(&data).to_vec(),
        "SHA-256 of what arrived"
    );
    let (total, server) = srv.await.expect("server task");
    assert_eq!(total, size);
    let stats = conn.stats().expect("stats");
    assert!(stats.tx_bytes as usize > size);
    conn.close(0, b"done");
    let r = client.shutdown(Duration::from_secs(2)).await;
    assert_eq!(r.unacknowledged, 0);
    server.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_64mib_ipv4_sha256() {
    bulk("127.0.0.1:0", 1, 64 << 20, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_16mib_ipv6_two_workers() {
    // Zero-copy writes here, so the async API's write_chunk carries a checked transfer.
    bulk("[::1]:0", 2, 16 << 20, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_on_many_connections_and_streams() {
    let (server, client, target) = endpoints("127.0.0.1:0", 2);
    let server = Arc::new(server);
    let s2 = server.clone();
    tokio::spawn(async move {
        while let Some(conn) = s2.accept().await {
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        recv.read_to_end(&mut buf).await.expect("read");
                        send.write_all(&buf).await.expect("echo");
                        send.finish().expect("finish");
                    });
                }
            });
        }
    });
    let client = Arc::new(client);
    let mut tasks = Vec::new();
    for c in 0..20usize {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let conn = client.connect(target, "test.stoq").await.expect("connect");
            for s in 0..5usize {
                let (mut send, mut recv) = conn.open_bi().await.expect("open");
                let data = pattern(10_000 + 997 * (c * 5 + s));
                send.write_all(&data).await.expect("write");
                send.finish().expect("finish");
                let mut back = Vec::new();
                recv.read_to_end(&mut back).await.expect("read");
                assert_eq!(back, data);
            }
            conn.close(0, b"");
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let accepted: u64 = server.endpoint_stats().iter().map(|s| s.accepted).sum();
    assert_eq!(accepted, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_and_messages() {
    let (server, client, target) = endpoints("127.0.0.1:0", 1);
    let srv = tokio::spawn(async move {
        let conn = server.accept().await.expect("client");
        // Echo ten datagrams.
        for _ in 0..10 {
            let d = conn.read_datagram().await.expect("datagram");
            conn.send_datagram(&d).expect("send");
        }
        // Read three messages.
        let mut got = Vec::new();
        for _ in 0..3 {
            let mut m = conn.accept_uni().await.expect("message");
            let mut b = Vec::new();
            m.read_to_end(&mut b).await.expect("read");
            got.push(b);
        }
        got.sort();
        assert_eq!(got, vec![b"m0".to_vec(), b"m1".to_vec(), b"m2".to_vec()]);
        conn.closed().await;
        server
    });
    let conn = client.connect(target, "test.stoq").await.expect("connect");
    assert!(conn.max_datagram_size().expect("datagrams on") >= 1000);
    for i in 0..10u8 {
        // Loopback loses nothing, but a DATAGRAM is unreliable: resend until echoed.
        loop {
            conn.send_datagram(&[i; 100]).expect("send");
            match tokio::time::timeout(Duration::from_millis(500), conn.read_datagram()).await {
                Ok(d) => {
                    assert_eq!(d.expect("echo"), vec![i; 100]);
                    break;
                }
                Err(_) => continue,
            }
        }
    }
    let mut msgs = Vec::new();
    for i in 0..3 {
        let m = conn
            .send_message(
                format!("m{i}").as_bytes(),
                Duration::from_secs(5),
                stoq::conn::Urgency::Interactive,
            )
            .expect("message");
        msgs.push(m);
    }
    for m in &msgs {
        assert_eq!(
            m.outcome().await.expect("outcome"),
            MessageOutcome::Delivered
        );
    }
    conn.close(0, b"bye");
    let server = srv.await.expect("server");
    server.shutdown(Duration::from_secs(1)).await;
}

/// A graceful shutdown with data in flight on several connections: what the peer
/// acknowledged before the deadline is delivered whole, the rest is reported per
/// connection, and the call returns by its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reports_unacknowledged_data_per_connection_by_its_deadline() {
    const LEN: usize = 2 << 20;
    let (server, client, target) = endpoints("127.0.0.1:0", 1);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let srv = tokio::spawn(async move {
        for _ in 0..4 {
            let conn = server.accept().await.expect("client");
            let done = done_tx.clone();
            tokio::spawn(async move {
                let Ok(mut s) = conn.accept_uni().await else {
                    return;
                };
                let mut tag = [0u8; 1];
                if s.read_exact(&mut tag).await.is_err() {
                    return;
                }
                if tag[0] == b'r' {
                    let mut b = Vec::new();
                    if s.read_to_end(&mut b).await.is_ok() {
                        let _ = done.send((b.len(), Sha256::digest(&b).to_vec()));
                    }
                } else {
                    // Held unread: the client's data stops at the flow-control limit.
                    conn.closed().await;
                    drop(s);
                }
            });
        }
        server
    });
    let data = pattern(LEN);
    let mut conns = Vec::new();
    for i in 0..4 {
        let conn = client.connect(target, "test.stoq").await.expect("connect");
        let mut s = conn.open_uni().await.expect("open");
        if i < 2 {
            s.write_all(b"r").await.expect("tag");
            s.write_all(&data).await.expect("write");
            s.finish().expect("finish");
        } else {
            // Far more than the server's windows: most of it can never be acknowledged.
            tokio::spawn(async move {
                let _ = s.write_all(b"s").await;
                let big = vec![7u8; 1 << 20];
                for _ in 0..64 {
                    if s.write_all(&big).await.is_err() {
                        break;
                    }
                }
            });
        }
        conns.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let timeout = Duration::from_millis(800);
    let start = std::time::Instant::now();
    let r = client.shutdown(timeout).await;
    let took = start.elapsed();
    assert!(
        took < timeout + Duration::from_millis(300),
        "returned {took:?} after a {timeout:?} deadline"
    );
    assert_eq!(r.connections, 4, "{r:?}");
    assert_eq!(r.unacknowledged, 2, "{r:?}");
    assert_eq!(r.per_connection.len(), 4, "{r:?}");
    let stuck = r
        .per_connection
        .iter()
        .filter(|c| c.unacknowledged_bytes > 0)
        .count();
    assert_eq!(stuck, 2, "{r:?}");
    // The two streams the server read arrived whole.
    let want = Sha256::digest(&data).to_vec();
    for _ in 0..2 {
        let (n, h) = tokio::time::timeout(Duration::from_secs(5), done_rx.recv())
            .await
            .expect("delivered")
            .expect("a stream");
        assert_eq!((n, &h), (LEN, &want));
    }
    drop(conns);
    let server = srv.await.expect("server");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_nobody_times_out_with_a_typed_error() {
    let (_, c) = configs();
    let mut c = ClientConfig::clone(&c);
    c.params.max_idle_timeout_ms = 1000;
    let mut ccfg = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
    ccfg.backend = Some(BackendKind::Udp);
    let client = Endpoint::client(ccfg, Arc::new(c)).expect("client");
    // A port nothing listens on: ICMP unreachable is ignored, so the idle timeout ends it.
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        client.connect("127.0.0.1:9".parse().expect("addr"), "test.stoq"),
    )
    .await
    .expect("bounded");
    assert!(matches!(r, Err(stoq::api::ConnectError::Lost(_))), "{r:?}");
}

/// The low-level per-core API: a handler on the worker thread echoes streams straight
/// through the protocol endpoint, with no async task and no channel hop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_handler_echoes_without_tasks() {
    use stoq::conn::{ConnectionHandle, Event, StreamId};
    use stoq::engine::Handler;

    struct Echo {
        buf: Vec<u8>,
        events: Arc<std::sync::atomic::AtomicU64>,
    }
    impl Handler for Echo {
        fn on_event(&mut self, ep: &mut stoq::conn::Endpoint, h: ConnectionHandle, e: &Event) {
            self.events
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Event::StreamReadable(id) = e else { return };
            let Some(c) = ep.connection_mut(h) else {
                return;
            };
            let id: StreamId = *id;
            loop {
                match c.read(id, &mut self.buf) {
                    Ok(Some(n)) => {
                        let mut off = 0;
                        while off < n {
                            match c.write(id, &self.buf[off..n]) {
                                Ok(k) if k > 0 => off += k,
                                _ => break,
                            }
                        }
                    }
                    Ok(None) => {
                        let _ = c.finish(id);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
    }

    let (s, c) = configs();
    let events = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ev = events.clone();
    let mut scfg = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
    scfg.backend = Some(BackendKind::Udp);
    scfg.workers = 1;
    scfg.handler = Some(Arc::new(move |_worker: u8| -> Box<dyn Handler> {
        Box::new(Echo {
            buf: vec![0; 64 << 10],
            events: ev.clone(),
        })
    }));
    let server = Endpoint::server(scfg, s).expect("server");
    let mut ccfg = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
    ccfg.backend = Some(BackendKind::Udp);
    let client = Endpoint::client(ccfg, c).expect("client");
    let conn = client
        .connect(server.local_addr(), "test.stoq")
        .await
        .expect("connect");
    for len in [1usize, 1000, 100_000] {
        let (mut send, mut recv) = conn.open_bi().await.expect("open");
        let data = pattern(len);
        send.write_all(&data).await.expect("write");
        send.finish().expect("finish");
        let mut back = Vec::new();
        recv.read_to_end(&mut back).await.expect("read");
        assert_eq!(back, data, "{len} bytes echoed by the handler");
    }
    assert!(events.load(std::sync::atomic::Ordering::Relaxed) > 3);
    conn.close(0, b"");
}
