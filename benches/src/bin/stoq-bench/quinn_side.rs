//! quinn 0.11 (rustls with its ring provider): the same scenarios through quinn's API, the
//! way its users write them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::{IdleTimeout, MtuDiscoveryConfig, TransportConfig, VarInt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::roles::{Hold, Ready, Stop, runtime};
use crate::spec::{Outcome, RoleSpec, Scenario, Subject, unhex};

const NAME: &str = "bench.stoq";

fn transport(spec: &RoleSpec) -> Result<Arc<TransportConfig>, String> {
    let mut t = TransportConfig::default();
    t.max_idle_timeout(Some(
        IdleTimeout::try_from(Duration::from_secs(300)).map_err(|e| e.to_string())?,
    ));
    if spec.udp_payload > 1452 {
        let mut m = MtuDiscoveryConfig::default();
        m.upper_bound(spec.udp_payload.min(65_527) as u16);
        t.mtu_discovery_config(Some(m));
    }
    if matches!(spec.subject, Subject::Quinn { tuned: true, .. }) {
        // Windows sized for a 10 Gbit/s path with a few milliseconds of queue: what a user
        // chasing throughput would set.
        t.stream_receive_window(VarInt::from_u32(32 << 20));
        t.receive_window(VarInt::from_u32(64 << 20));
        t.send_window(64 << 20);
    }
    Ok(Arc::new(t))
}

/// rustls' crypto provider for this subject: ring (quinn's default) or aws-lc-rs.
fn provider(spec: &RoleSpec) -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(match spec.subject {
        Subject::Quinn { aws_lc: true, .. } => rustls::crypto::aws_lc_rs::default_provider(),
        _ => rustls::crypto::ring::default_provider(),
    })
}

fn cert(spec: &RoleSpec) -> Result<CertificateDer<'static>, String> {
    Ok(CertificateDer::from(unhex(&spec.keys.quinn_cert)?))
}

/// Runs quinn's server until `stop`.
pub(crate) fn server(spec: &RoleSpec, ready: Ready, stop: Stop) -> Result<(), String> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(unhex(&spec.keys.quinn_key)?));
    // quinn's `with_single_cert`, spelled out so that the provider can be chosen.
    let mut tls = rustls::ServerConfig::builder_with_provider(provider(spec))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert(spec)?], key)
        .map_err(|e| e.to_string())?;
    tls.max_early_data_size = u32::MAX;
    let qs = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(qs));
    sc.transport_config(transport(spec)?);
    let addr = spec.server;
    // Returning clients' early data is answered at 0.5-RTT, as STOQ's server does.
    let half_rtt = matches!(spec.scenario, Scenario::Reconnect { .. });
    runtime()?.block_on(async move {
        let ep = quinn::Endpoint::server(sc, addr).map_err(|e| e.to_string())?;
        ready("quinn-udp (GSO/GRO where the kernel has them)".into());
        let ep2 = ep.clone();
        tokio::spawn(async move {
            while let Some(inc) = ep2.accept().await {
                tokio::spawn(async move {
                    let c = if half_rtt {
                        let Ok(cn) = inc.accept() else { return };
                        match cn.into_0rtt() {
                            Ok((c, _)) => c,
                            Err(cn) => match cn.await {
                                Ok(c) => c,
                                Err(_) => return,
                            },
                        }
                    } else {
                        let Ok(c) = inc.await else { return };
                        c
                    };
                    let c2 = c.clone();
                    tokio::spawn(async move {
                        while let Ok((w, r)) = c2.accept_bi().await {
                            tokio::spawn(crate::streams::echo_64(r, w));
                        }
                    });
                    while let Ok(r) = c.accept_uni().await {
                        let c = c.clone();
                        tokio::spawn(async move {
                            let n = crate::streams::count(r).await;
                            if let Ok(mut s) = c.open_uni().await {
                                let _ = s.write_all(&n.to_be_bytes()).await;
                                let _ = s.finish();
                                let _ = s.stopped().await;
                            }
                        });
                    }
                });
            }
        });
        stop.notified().await;
        ep.close(0u32.into(), b"");
        let _ = tokio::time::timeout(Duration::from_secs(1), ep.wait_idle()).await;
        Ok::<_, String>(())
    })
}

/// Runs the client's scenario on quinn.
pub(crate) fn client(spec: &RoleSpec, hold: Hold) -> Result<Outcome, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert(spec)?).map_err(|e| e.to_string())?;
    // quinn's `with_root_certificates`, spelled out so that full handshakes can be measured
    // with rustls' session resumption off and resumed ones with it on.
    let mut rc = rustls::ClientConfig::builder_with_provider(provider(spec))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let resumed = matches!(spec.scenario, Scenario::Handshakes { resumed: true, .. });
    if matches!(spec.scenario, Scenario::Handshakes { resumed: false, .. }) {
        rc.resumption = rustls::client::Resumption::disabled();
    }
    if matches!(spec.scenario, Scenario::Reconnect { early: true, .. }) {
        rc.enable_early_data = true;
    }
    let qc = quinn::crypto::rustls::QuicClientConfig::try_from(rc).map_err(|e| e.to_string())?;
    let mut cc = quinn::ClientConfig::new(Arc::new(qc));
    cc.transport_config(transport(spec)?);
    let (bind, to, scenario) = (spec.client_bind, spec.server, spec.scenario);
    runtime()?.block_on(async move {
        let mut ep = quinn::Endpoint::client(bind).map_err(|e| e.to_string())?;
        ep.set_default_client_config(cc);
        let connect = move |ep: quinn::Endpoint| async move {
            ep.connect(to, NAME)
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        let mut out = Outcome {
            detail: "quinn-udp".into(),
            ..Outcome::default()
        };
        match scenario {
            Scenario::Bulk { .. } | Scenario::Shaped { .. } => {
                let (conns, secs, shaped) = scenario.bulk_shape();
                let probe = if shaped {
                    let p = crate::plain::Probe::start(bind, to)?;
                    out.base_rtt_us = p.baseline();
                    p.run();
                    Some(p)
                } else {
                    None
                };
                let mut cs = Vec::new();
                for _ in 0..conns {
                    cs.push(connect(ep.clone()).await?);
                }
                crate::spec::start_measuring(&mut out);
                let t = Instant::now();
                let mut joins = Vec::new();
                for c in cs {
                    joins.push(tokio::spawn(async move {
                        let mut s = c.open_uni().await.map_err(|e| e.to_string())?;
                        let sent = crate::streams::send_for(&mut s, t, secs).await?;
                        s.finish().map_err(|e| e.to_string())?;
                        let back = c.accept_uni().await.map_err(|e| e.to_string())?;
                        let r = crate::streams::check_count(back, sent).await;
                        c.close(0u32.into(), b"");
                        r
                    }));
                }
                for j in joins {
                    out.bytes += j.await.map_err(|e| e.to_string())??;
                }
                out.secs = t.elapsed().as_secs_f64();
                if let Some(p) = probe {
                    out.quantiles_us = p.finish();
                }
            }
            Scenario::Rr { secs } => {
                let c = connect(ep.clone()).await?;
                let (w, r) = c.open_bi().await.map_err(|e| e.to_string())?;
                crate::spec::start_measuring(&mut out);
                crate::streams::ping_pong(w, r, secs, &mut out).await?;
                c.close(0u32.into(), b"");
            }
            Scenario::Handshakes { secs, parallel, .. } => {
                if resumed {
                    // Tickets for every task first: full handshakes, each held until its
                    // tickets have had time to arrive (quinn does not say when they do).
                    for _ in 0..parallel.max(1) {
                        let c = connect(ep.clone()).await?;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        c.close(0u32.into(), b"");
                    }
                }
                crate::spec::start_measuring(&mut out);
                let t = Instant::now();
                let mut joins = Vec::new();
                for _ in 0..parallel.max(1) {
                    let ep = ep.clone();
                    joins.push(tokio::spawn(async move {
                        let mut n = 0u64;
                        let mut previous = None;
                        while t.elapsed().as_secs_f64() < secs {
                            let c = connect(ep.clone()).await?;
                            n += 1;
                            if resumed {
                                // As STOQ's: closed once the next is up, its tickets in.
                                if let Some(p) = previous.replace(c) {
                                    quinn::Connection::close(&p, 0u32.into(), b"");
                                }
                            } else {
                                c.close(0u32.into(), b"");
                            }
                        }
                        if let Some(p) = previous {
                            quinn::Connection::close(&p, 0u32.into(), b"");
                        }
                        Ok::<_, String>(n)
                    }));
                }
                for j in joins {
                    out.count += j.await.map_err(|e| e.to_string())??;
                }
                out.secs = t.elapsed().as_secs_f64();
            }
            Scenario::Reconnect { secs, early } => {
                // A ticket first (quinn does not say when it arrives).
                let c = connect(ep.clone()).await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
                c.close(0u32.into(), b"");
                crate::spec::start_measuring(&mut out);
                let t = Instant::now();
                let mut lat = Vec::new();
                let mut handshakes = Vec::new();
                let mut previous: Option<quinn::Connection> = None;
                while t.elapsed().as_secs_f64() < secs {
                    let t0 = Instant::now();
                    let connecting = ep.connect(to, NAME).map_err(|e| e.to_string())?;
                    let (c, accepted) = if early {
                        match connecting.into_0rtt() {
                            Ok((c, accepted)) => (c, Some(accepted)),
                            Err(cn) => (cn.await.map_err(|e| e.to_string())?, None),
                        }
                    } else {
                        let c = connecting.await.map_err(|e| e.to_string())?;
                        handshakes.push(t0.elapsed().as_secs_f64() * 1e6);
                        (c, None)
                    };
                    let (mut w, mut r) = c.open_bi().await.map_err(|e| e.to_string())?;
                    w.write_all(&[7u8; 64]).await.map_err(|e| e.to_string())?;
                    let mut answer = [0u8; 64];
                    r.read_exact(&mut answer).await.map_err(|e| e.to_string())?;
                    lat.push(t0.elapsed().as_nanos() as u64);
                    if let Some(a) = accepted {
                        out.resumed += u64::from(a.await);
                    }
                    if let Some(p) = previous.replace(c) {
                        quinn::Connection::close(&p, 0u32.into(), b"");
                    }
                }
                if let Some(p) = previous {
                    quinn::Connection::close(&p, 0u32.into(), b"");
                }
                out.secs = t.elapsed().as_secs_f64();
                out.count = lat.len() as u64;
                out.quantiles_us = crate::spec::quantiles(&mut lat);
                out.handshake_us = crate::spec::median(&mut handshakes);
            }
            Scenario::Idle { conns } => {
                let tasks = 32.min(conns.max(1));
                let t = Instant::now();
                let mut joins = Vec::new();
                for i in 0..tasks {
                    let ep = ep.clone();
                    let n = conns / tasks + usize::from(i < conns % tasks);
                    joins.push(tokio::spawn(async move {
                        let mut v = Vec::with_capacity(n);
                        for _ in 0..n {
                            v.push(connect(ep.clone()).await?);
                        }
                        Ok::<_, String>(v)
                    }));
                }
                let mut held = Vec::with_capacity(conns);
                for j in joins {
                    held.extend(j.await.map_err(|e| e.to_string())??);
                }
                out.secs = t.elapsed().as_secs_f64();
                out.count = held.len() as u64;
                out.rss_kib = crate::spec::rss_kib();
                hold(held.len());
                for c in &held {
                    c.close(0u32.into(), b"");
                }
            }
        }
        ep.close(0u32.into(), b"");
        let _ = tokio::time::timeout(Duration::from_secs(1), ep.wait_idle()).await;
        Ok(out)
    })
}
