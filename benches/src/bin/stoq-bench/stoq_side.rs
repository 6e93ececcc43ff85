//! STOQ's server and client roles, through the public async API a user would write.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stoq::crypto::CipherSuite;
use stoq::crypto::sig::{SigningKey, VerifyingKey};
use stoq::engine::{EngineConfig, XdpMode};
use stoq::handshake::session_cache::TICKETS_PER_SERVER;
use stoq::handshake::{ClientConfig, Resumption, ServerConfig, SessionCache, Trust};
use stoq::io::BackendKind;
use stoq::{Connection, Endpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::roles::{Hold, Ready, Stop, runtime};
use crate::spec::{Outcome, RoleSpec, Scenario, Subject, unhex};

const NAME: &str = "bench.stoq";
/// Long enough to hold 100,000 idle connections while the last ones are opened.
const IDLE_MS: u64 = 300_000;

fn engine(spec: &RoleSpec, bind: std::net::SocketAddr) -> Result<EngineConfig, String> {
    let Subject::Stoq { backend, xdp, .. } = &spec.subject else {
        return Err("not a STOQ subject".into());
    };
    let mut e = EngineConfig::new(bind);
    e.backend = Some(BackendKind::parse(backend).ok_or_else(|| format!("backend {backend}"))?);
    e.xdp_mode = match xdp.as_str() {
        "driver" => XdpMode::Driver,
        "skb" => XdpMode::Skb,
        _ => XdpMode::Auto,
    };
    e.workers = spec.cpus.len().max(1);
    e.first_cpu = spec.cpus.first().copied().unwrap_or(0);
    e.endpoint.max_udp_payload = spec.udp_payload;
    e.endpoint.max_connections = 250_000;
    if let Some(us) = spec.idle_poll_us {
        e.idle_poll = Duration::from_micros(us);
    }
    Ok(e)
}

fn uses_handler(spec: &RoleSpec) -> bool {
    matches!(spec.subject, Subject::Stoq { handler: true, .. })
}

fn served(spec: &RoleSpec) -> bool {
    matches!(spec.subject, Subject::Stoq { served: true, .. })
}

/// The server's work for one connection: bidirectional streams echoed in 64-byte
/// requests, unidirectional streams counted and answered with their byte count. `spawn`
/// starts each stream's task: on the worker (`spawn_local`) when served there, on the
/// role's runtime (`tokio::spawn`) on the cross-thread path.
async fn serve_conn(c: Connection, spawn: fn(Pin<Box<dyn Future<Output = ()> + Send>>)) {
    let c2 = c.clone();
    spawn(Box::pin(async move {
        while let Ok((w, r)) = c2.accept_bi().await {
            spawn(Box::pin(crate::streams::echo_64(r, w)));
        }
    }));
    while let Ok(r) = c.accept_uni().await {
        let c = c.clone();
        spawn(Box::pin(async move {
            let n = crate::streams::count(r).await;
            if let Ok(mut s) = c.open_uni().await {
                let _ = s.write_all(&n.to_be_bytes()).await;
                let _ = s.finish();
            }
        }));
    }
}

fn spawn_local(f: Pin<Box<dyn Future<Output = ()> + Send>>) {
    tokio::task::spawn_local(f);
}

fn spawn_here(f: Pin<Box<dyn Future<Output = ()> + Send>>) {
    tokio::spawn(f);
}

/// Runs `f(c)` where the client's connection does its work: here when the client runs on
/// this runtime, else as a task on the connection's worker (the result comes back over a
/// channel); on the cross-thread path, as a task of this runtime.
async fn on_conn<F, Fut, R>(c: Connection, served: bool, f: F) -> Result<R, String>
where
    F: FnOnce(Connection) -> Fut + Send + 'static,
    Fut: Future<Output = Result<R, String>> + Send + 'static,
    R: Send + 'static,
{
    if !served || c.is_on_worker() {
        return tokio::spawn(f(c)).await.map_err(|e| e.to_string())?;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    c.spawn_on_worker(move |c| async move {
        let _ = tx.send(f(c).await);
    })
    .map_err(|e| e.to_string())?;
    rx.await.map_err(|_| "the worker stopped".to_string())?
}

fn suite(spec: &RoleSpec) -> CipherSuite {
    match &spec.subject {
        Subject::Stoq { suite, .. } if suite == "chacha20poly1305" => CipherSuite::ChaCha20Poly1305,
        _ => CipherSuite::Aes256Gcm,
    }
}

fn composite(spec: &RoleSpec) -> bool {
    matches!(
        spec.subject,
        Subject::Stoq {
            composite: true,
            ..
        }
    )
}

fn public(spec: &RoleSpec) -> Result<VerifyingKey, String> {
    let k = if composite(spec) {
        &spec.keys.stoq_composite_public
    } else {
        &spec.keys.stoq_public
    };
    VerifyingKey::from_bytes(&unhex(k)?).map_err(|e| e.to_string())
}

/// Runs the server until `stop`: bulk streams are counted and answered with their byte
/// count, request/response streams echoed, every connection held until the peer closes.
pub(crate) fn server(spec: &RoleSpec, ready: Ready, stop: Stop) -> Result<(), String> {
    let secret = if composite(spec) {
        &spec.keys.stoq_composite_secret
    } else {
        &spec.keys.stoq_secret
    };
    let key = SigningKey::from_bytes(&unhex(secret)?).map_err(|e| e.to_string())?;
    let mut cfg = ServerConfig::raw_key(key, public(spec)?);
    cfg.params.max_idle_timeout_ms = IDLE_MS;
    cfg.params.max_udp_payload_size = spec.udp_payload as u64;
    cfg.batch_signing = !matches!(
        spec.subject,
        Subject::Stoq {
            sign_alone: true,
            ..
        }
    );
    let handshakes = matches!(spec.scenario, Scenario::Handshakes { .. });
    if matches!(spec.scenario, Scenario::Reconnect { .. }) {
        // Returning clients may send their request as early data.
        cfg.early_data = stoq::handshake::EarlyDataSettings::accept();
    }
    let mut e = engine(spec, spec.server)?;
    let idle_poll_us = e.idle_poll.as_micros();
    // The observability subject: every connection traced into a directory of its own.
    let qlog = if matches!(spec.subject, Subject::Stoq { qlog: true, .. }) {
        let dir = std::env::temp_dir().join(format!("stoq-bench-qlog-{}", std::process::id()));
        let w = stoq::qlog::QlogWriter::new(&dir).map_err(|e| format!("qlog: {e}"))?;
        let mut t = (*e.endpoint.transport).clone();
        t.qlog = Some(w.clone());
        e.endpoint.transport = Arc::new(t);
        Some(w)
    } else {
        None
    };
    if uses_handler(spec) {
        // Connections served by a handler skip the accept queue: the handler is the
        // whole server (request/response only).
        e.handler = Some(crate::handlers::echo());
    }
    let served = served(spec);
    let rt = runtime()?;
    rt.block_on(async move {
        let server = Arc::new(Endpoint::server(e, Arc::new(cfg)).map_err(|e| e.to_string())?);
        ready(format!(
            "{}; idle poll {} µs",
            server.info().detail,
            idle_poll_us
        ));
        // The metrics subject: a scrape every 100 ms for the whole run.
        let scraping = matches!(spec.subject, Subject::Stoq { metrics: true, .. }).then(|| {
            let m = server.metrics();
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let s = stop.clone();
            let t = std::thread::spawn(move || {
                while !s.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::black_box(m.render());
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            (stop, t)
        });
        if served {
            // Each connection is served on the worker that owns it.
            server
                .serve(|c| serve_conn(c, spawn_local))
                .map_err(|e| e.to_string())?;
        } else {
            let s2 = server.clone();
            tokio::spawn(async move {
                while let Some(c) = s2.accept().await {
                    tokio::spawn(serve_conn(c, spawn_here));
                }
            });
        }
        stop.notified().await;
        if let Some((stop, t)) = scraping {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = t.join();
        }
        if std::env::var_os("STOQ_BENCH_DEBUG").is_some() {
            for w in server.worker_stats() {
                eprintln!(
                    "server worker {}: loops {} waits {} idle-poll hits {} handoffs in {} out {} \
                     crossings {}",
                    w.worker,
                    w.loops,
                    w.waits,
                    w.idle_polls_hit,
                    w.handoffs_in,
                    w.handoffs_out,
                    w.crossings
                );
            }
        }
        if handshakes {
            // How many full handshakes each signature served.
            let (mut sigs, mut batched, mut largest) = (0, 0, 0);
            for s in server.endpoint_stats() {
                sigs += s.signatures;
                batched += s.batch_signed;
                largest = largest.max(s.largest_batch);
            }
            crate::roles::late_detail(&format!(
                "{sigs} signatures, {batched} handshakes batch-signed (largest batch {largest})"
            ));
        }
        server.shutdown(Duration::from_secs(1)).await;
        Ok::<_, String>(())
    })?;
    if let Some(w) = qlog {
        // What the trace cost in events dropped is part of the figure: say it.
        w.flush();
        let s = w.stats();
        let bytes: u64 = std::fs::read_dir(w.dir())
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        crate::roles::late_detail(&format!(
            "qlog: {} traces, {} events ({:.1} MB) written, {} dropped",
            s.traces,
            s.written,
            bytes as f64 / 1e6,
            s.dropped
        ));
        let _ = std::fs::remove_dir_all(w.dir());
    }
    Ok(())
}

/// Runs the client's scenario.
pub(crate) fn client(spec: &RoleSpec, hold: Hold) -> Result<Outcome, String> {
    let mut cfg = ClientConfig::pinned(NAME, public(spec)?);
    cfg.suites = vec![suite(spec)];
    cfg.params.max_idle_timeout_ms = IDLE_MS;
    cfg.params.max_udp_payload_size = spec.udp_payload as u64;
    // Full handshakes are measured with resumption off (quinn's likewise).
    let cache = match spec.scenario {
        Scenario::Handshakes { resumed: true, .. } => cfg.resumption.clone(),
        Scenario::Handshakes { .. } => None,
        _ => cfg.resumption.clone(),
    };
    cfg.resumption = cache.clone();
    let trust = cfg.trust.clone();
    let mut e = engine(spec, spec.client_bind)?;
    let (to, bind) = (spec.server, spec.client_bind);
    let scenario = spec.scenario;
    let mut measured = None;
    if uses_handler(spec) {
        let Scenario::Rr { secs } = scenario else {
            return Err("worker handlers serve only request/response".into());
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        e.handler = Some(crate::handlers::ping_pong(secs, tx));
        measured = Some(rx);
    }
    let served = served(spec);
    let rt = runtime()?;
    rt.block_on(async move {
        let cfg = Arc::new(cfg);
        // Served: one core runs the client on this runtime (its tasks and connections on
        // this thread); several cores run one worker each, with each connection's work
        // spawned on its worker. Otherwise a worker thread of its own, work on this runtime.
        let client = if served && e.workers <= 1 {
            Endpoint::client_in_runtime(e, cfg)
        } else {
            Endpoint::client(e, cfg)
        };
        let client = Arc::new(client.map_err(|e| e.to_string())?);
        let mut out = Outcome {
            detail: client.info().detail.clone(),
            ..Outcome::default()
        };
        match scenario {
            Scenario::Bulk { conns, secs } => {
                bulk(&client, to, conns, secs, served, &mut out).await?;
            }
            Scenario::Shaped { secs } => {
                let probe = crate::plain::Probe::start(bind, to)?;
                out.base_rtt_us = probe.baseline();
                probe.run();
                bulk(&client, to, 1, secs, served, &mut out).await?;
                out.quantiles_us = probe.finish();
            }
            Scenario::Rr { secs } => {
                let c = client.connect(to, NAME).await.map_err(|e| e.to_string())?;
                let (mut w, r) = c.open_bi().await.map_err(|e| e.to_string())?;
                if let Some(mut rx) = measured {
                    // The first request starts the worker handler's loop; the streams
                    // stay open (unread here) until it reports.
                    crate::spec::start_measuring(&mut out);
                    w.write_all(&[7u8; 64]).await.map_err(|e| e.to_string())?;
                    let (mut lat, secs) = rx.recv().await.ok_or("the handler stopped")?;
                    out.secs = secs;
                    out.count = lat.len() as u64;
                    out.quantiles_us = crate::spec::quantiles(&mut lat);
                    drop(r);
                } else {
                    crate::spec::start_measuring(&mut out);
                    crate::streams::ping_pong(w, r, secs, &mut out).await?;
                }
                c.close(0, b"");
            }
            Scenario::Handshakes {
                secs,
                parallel,
                resumed,
            } => {
                if let (true, Some(cache)) = (resumed, &cache) {
                    prime_tickets(&client, to, cache, &trust, parallel).await?;
                }
                crate::spec::start_measuring(&mut out);
                let t = Instant::now();
                let mut joins = Vec::new();
                for _ in 0..parallel.max(1) {
                    let client = client.clone();
                    joins.push(tokio::spawn(async move {
                        let (mut n, mut r) = (0u64, 0u64);
                        let mut previous: Option<Connection> = None;
                        while t.elapsed().as_secs_f64() < secs {
                            let c = client.connect(to, NAME).await.map_err(|e| e.to_string())?;
                            n += 1;
                            if resumed {
                                let how = c.handshake_data().map(|d| d.resumption);
                                r += u64::from(how == Some(Resumption::Accepted));
                                // The previous connection's tickets have arrived by now.
                                if let Some(p) = previous.replace(c) {
                                    p.close(0, b"");
                                }
                            } else {
                                c.close(0, b"");
                            }
                        }
                        if let Some(p) = previous {
                            p.close(0, b"");
                        }
                        Ok::<_, String>((n, r))
                    }));
                }
                let mut resumed_n = 0;
                for j in joins {
                    let (n, r) = j.await.map_err(|e| e.to_string())??;
                    out.count += n;
                    resumed_n += r;
                }
                out.secs = t.elapsed().as_secs_f64();
                out.resumed = resumed_n;
            }
            Scenario::Reconnect { secs, early } => {
                let cache = cache.as_ref().ok_or("resumption is off")?;
                prime_tickets(&client, to, cache, &trust, 1).await?;
                crate::spec::start_measuring(&mut out);
                let t = Instant::now();
                let mut lat = Vec::new();
                let mut handshakes = Vec::new();
                let mut previous: Option<Connection> = None;
                while t.elapsed().as_secs_f64() < secs {
                    let t0 = Instant::now();
                    let c = if early {
                        client.connect_early(to, NAME).await
                    } else {
                        client.connect(to, NAME).await
                    }
                    .map_err(|e| e.to_string())?;
                    if !early {
                        handshakes.push(t0.elapsed().as_secs_f64() * 1e6);
                    }
                    let (mut w, mut r) = c.open_bi().await.map_err(|e| e.to_string())?;
                    w.write_all(&[7u8; 64]).await.map_err(|e| e.to_string())?;
                    let mut answer = [0u8; 64];
                    r.read_exact(&mut answer).await.map_err(|e| e.to_string())?;
                    lat.push(t0.elapsed().as_nanos() as u64);
                    let went = c.early_data().await.map_err(|e| e.to_string())?;
                    out.resumed += u64::from(went == stoq::handshake::EarlyData::Accepted);
                    if let Some(p) = previous.replace(c) {
                        p.close(0, b"");
                    }
                }
                if let Some(p) = previous {
                    p.close(0, b"");
                }
                out.secs = t.elapsed().as_secs_f64();
                out.count = lat.len() as u64;
                out.quantiles_us = crate::spec::quantiles(&mut lat);
                out.handshake_us = crate::spec::median(&mut handshakes);
            }
            Scenario::Idle { conns } => {
                let tasks = 32.min(conns.max(1));
                let mut joins = Vec::new();
                for i in 0..tasks {
                    let client = client.clone();
                    let n = conns / tasks + usize::from(i < conns % tasks);
                    joins.push(tokio::spawn(async move {
                        let mut v = Vec::with_capacity(n);
                        for _ in 0..n {
                            v.push(client.connect(to, NAME).await.map_err(|e| e.to_string())?);
                        }
                        Ok::<_, String>(v)
                    }));
                }
                let t = Instant::now();
                let mut held = Vec::with_capacity(conns);
                for j in joins {
                    held.extend(j.await.map_err(|e| e.to_string())??);
                }
                out.secs = t.elapsed().as_secs_f64();
                out.count = held.len() as u64;
                out.rss_kib = crate::spec::rss_kib();
                hold(held.len());
                for c in &held {
                    c.close(0, b"");
                }
            }
        }
        client.shutdown(Duration::from_secs(1)).await;
        Ok(out)
    })
}

/// Fills the client's ticket cache before a resumed-handshake run: full handshakes, each
/// kept open until its tickets have arrived, until every parallel task has one (or the
/// cache holds as many as it keeps for one server).
async fn prime_tickets(
    client: &Arc<Endpoint>,
    to: std::net::SocketAddr,
    cache: &SessionCache,
    trust: &Trust,
    parallel: usize,
) -> Result<(), String> {
    let tickets_held = || cache.tickets_for(NAME, trust);
    let start = Instant::now();
    // The cache keeps at most TICKETS_PER_SERVER per server: more tasks than that share.
    let want_held = parallel.clamp(1, TICKETS_PER_SERVER);
    while tickets_held() < want_held {
        // A connection uses at most one ticket and brings two.
        let want = tickets_held() + 1;
        let c = client.connect(to, NAME).await.map_err(|e| e.to_string())?;
        while tickets_held() < want {
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "session tickets did not arrive: {} held after 10 s",
                    tickets_held()
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        c.close(0, b"");
    }
    Ok(())
}

async fn bulk(
    client: &Arc<Endpoint>,
    to: std::net::SocketAddr,
    conns: usize,
    secs: f64,
    served: bool,
    out: &mut Outcome,
) -> Result<(), String> {
    let mut cs = Vec::new();
    for _ in 0..conns {
        cs.push(client.connect(to, NAME).await.map_err(|e| e.to_string())?);
    }
    crate::spec::start_measuring(out);
    let t = Instant::now();
    let mut joins = Vec::new();
    for c in cs {
        joins.push(tokio::spawn(on_conn(c, served, move |c| async move {
            let mut s = c.open_uni().await.map_err(|e| e.to_string())?;
            let sent = crate::streams::send_for(&mut s, t, secs).await?;
            s.finish().map_err(|e| e.to_string())?;
            let back = c.accept_uni().await.map_err(|e| e.to_string())?;
            let r = crate::streams::check_count(back, sent).await;
            c.close(0, b"");
            r
        })));
    }
    for j in joins {
        out.bytes += j.await.map_err(|e| e.to_string())??;
    }
    out.secs = t.elapsed().as_secs_f64();
    Ok(())
}
