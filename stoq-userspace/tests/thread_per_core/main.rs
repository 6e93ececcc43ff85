//! The serving path crosses no thread: a request served on its connection's worker
//! ([`Endpoint::serve`]) is read, answered and sent on the worker's own thread, with no
//! lock taken by STOQ and no other thread woken, and a client on the caller's runtime
//! ([`Endpoint::client_in_runtime`]) runs its connection on the caller's thread.
//!
//! The test counts what the operating system saw: every thread's context switches in this
//! process, read from `/proc/self/task`. It is alone in its binary so that no other test's
//! threads are counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rand_core::OsRng;
use stoq::Endpoint;
use stoq::crypto::sig::{SigAlg, SigningKey};
use stoq::engine::EngineConfig;
use stoq::handshake::{ClientConfig, ServerConfig};
use stoq::io::BackendKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Round trips counted (after as many to warm up).
const N: u64 = 2_000;

/// Every thread of this process: its name and its voluntary and involuntary context
/// switches so far.
fn threads() -> HashMap<String, (String, u64, u64)> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
    {
        let tid = e.file_name().to_string_lossy().into_owned();
        let name = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        out.insert(
            tid,
            (
                name.trim().to_string(),
                field("voluntary_ctxt_switches:"),
                field("nonvoluntary_ctxt_switches:"),
            ),
        );
    }
    out
}

/// This thread's id.
fn my_tid() -> String {
    std::fs::read_link("/proc/thread-self")
        .expect("/proc/thread-self")
        .file_name()
        .expect("tid")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_served_request_crosses_no_thread() {
    let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let mut scfg = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
    scfg.workers = 1;
    scfg.backend = Some(BackendKind::Udp);
    scfg.pin_workers = false;
    let server = Endpoint::server(scfg, Arc::new(ServerConfig::raw_key(key, public.clone())))
        .expect("server");
    let target = SocketAddr::new("127.0.0.1".parse().expect("ip"), server.local_addr().port());
    let served_on = Arc::new(Mutex::new(None::<String>));
    let seen = served_on.clone();
    server
        .serve(move |conn| {
            let seen = seen.clone();
            async move {
                *seen.lock().expect("lock") = std::thread::current().name().map(String::from);
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::task::spawn_local(async move {
                        let mut b = [0u8; 64];
                        while recv.read_exact(&mut b).await.is_ok() {
                            if send.write_all(&b).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        })
        .expect("serve");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let me = my_tid();
    let (before, after, stats0, stats1, elapsed) = rt.block_on(async {
        let mut ccfg = EngineConfig::new("127.0.0.1:0".parse().expect("addr"));
        ccfg.backend = Some(BackendKind::Udp);
        let client =
            Endpoint::client_in_runtime(ccfg, Arc::new(ClientConfig::pinned("t.stoq", public)))
                .expect("client");
        let conn = client.connect(target, "t.stoq").await.expect("connect");
        assert!(
            conn.is_on_worker(),
            "an in-runtime client's calls are direct"
        );
        let (mut w, mut r) = conn.open_bi().await.expect("open");
        let mut b = [0u8; 64];
        for _ in 0..N {
            w.write_all(&[7; 64]).await.expect("write");
            r.read_exact(&mut b).await.expect("read");
        }
        let stats0 = server.worker_stats();
        let before = threads();
        let t0 = std::time::Instant::now();
        for _ in 0..N {
            w.write_all(&[7; 64]).await.expect("write");
            r.read_exact(&mut b).await.expect("read");
        }
        let elapsed = t0.elapsed();
        let after = threads();
        let stats1 = server.worker_stats();
        conn.close(0, b"");
        (before, after, stats0, stats1, elapsed)
    });

    assert_eq!(
        served_on.lock().expect("lock").as_deref(),
        Some("stoq-worker-0"),
        "the connection is served on its worker's thread"
    );
    // STOQ's own counters: nothing crossed to the server's worker, and it took no lock.
    assert_eq!(stats1[0].crossings, stats0[0].crossings, "{stats1:?}");
    assert_eq!(stats1[0].locks, 0, "{stats1:?}");

    let mut worker = None;
    let mut watch = 0;
    let mut others = Vec::new();
    for (tid, (name, v1, n1)) in &after {
        let (v0, n0) = before.get(tid).map_or((0, 0), |(_, v, n)| (*v, *n));
        let d = (name.as_str(), v1 - v0, n1 - n0);
        if name == "stoq-worker-0" {
            worker = Some(d);
        } else if name == "stoq-flood-watc" {
            // The server's flood watch (comm names are cut at 15 bytes) runs on its own
            // clock (`FLOOD_WATCH_PERIOD`), whatever the traffic: it reads the workers'
            // published Retry counts and wakes no one.
            watch += d.1 + d.2;
        } else if *tid != me {
            others.push(d);
        }
    }
    let ticks = u64::try_from(elapsed.as_millis() / stoq::engine::FLOOD_WATCH_PERIOD.as_millis())
        .unwrap_or(u64::MAX);
    assert!(
        watch <= 2 * (ticks + 2),
        "the flood watch switched {watch} times in {elapsed:?}: more than its ticks"
    );
    let (_, wv, _) = worker.expect("the server's worker thread");
    let (_, mv, _) = after[&me];
    let mv = mv - before[&me].1;
    // Each side sleeps at most once per round trip, waiting for the network: the server's
    // worker for the request, this thread (the client's runtime and its connection) for
    // the response. A cross-thread design sleeps twice per side: once for the network,
    // once for the other thread.
    assert!(
        wv <= N * 3 / 2,
        "server worker: {wv} sleeps in {N} round trips"
    );
    assert!(
        mv <= N * 3 / 2,
        "client thread: {mv} sleeps in {N} round trips"
    );
    // No other thread took part.
    let woken: u64 = others.iter().map(|(_, v, n)| v + n).sum();
    assert!(woken <= 10, "other threads switched: {others:?}");
    eprintln!(
        "{N} round trips in {elapsed:?}: server worker {wv} sleeps, client thread {mv}, \
         flood watch {watch} switches, others {woken} ({} threads)",
        others.len()
    );
}
