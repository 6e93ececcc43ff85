//! `stoq demo`: STOQ's main job end to end, in one process.
//!
//! As root, a server and a client run in two network namespaces joined by a veth pair
//! (created here, removed on exit whatever happens); otherwise both run on loopback. A
//! fresh FALCON key is pinned by the client; the client sends generated data that the
//! server hashes, and the hashes must match. The report names the backend, why it was
//! chosen (each better backend skipped, with its reason), and the throughput.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand_core::OsRng;
use stoq::Endpoint;
use stoq::crypto::sig::{SigAlg, SigningKey};
use stoq::handshake::{Credential, Trust};

use crate::transfer::{self, Pattern};
use stoq::io::BackendKind;

use crate::{EngineArgs, parse_bytes};

/// Why the demo cannot use namespaces here, if it cannot.
#[cfg(not(target_os = "linux"))]
fn namespaces_unavailable() -> Option<String> {
    Some("network namespaces need Linux".into())
}

/// Why the demo cannot use namespaces here, if it cannot.
#[cfg(target_os = "linux")]
fn namespaces_unavailable() -> Option<String> {
    let eff = stoq::xdp::effective_capabilities().unwrap_or(0);
    let missing: Vec<&str> = [(12, "CAP_NET_ADMIN"), (21, "CAP_SYS_ADMIN")]
        .iter()
        .filter(|(b, _)| eff & (1u64 << b) == 0)
        .map(|(_, n)| *n)
        .collect();
    if !missing.is_empty() {
        return Some(format!("{} missing (run as root)", missing.join(", ")));
    }
    let ip = std::process::Command::new("ip").arg("-V").output();
    if !ip.is_ok_and(|o| o.status.success()) {
        return Some("the `ip` tool (iproute2) is not installed".into());
    }
    None
}

/// Where the two endpoints run.
enum Place {
    /// Both on loopback, with the reason.
    Loopback(String),
    /// In two namespaces joined by a veth pair (kept alive here).
    #[cfg(target_os = "linux")]
    Veth(stoq_netns::VethPair),
}

impl Place {
    fn describe(&self) -> String {
        match self {
            Self::Loopback(why) => format!("loopback ({why})"),
            #[cfg(target_os = "linux")]
            Self::Veth(v) => format!(
                "veth pair {} -> {} between network namespaces {} and {}",
                v.a4,
                v.b4,
                v.a.name(),
                v.b.name()
            ),
        }
    }

    /// A server and a client placed here; returns them and the server's address.
    fn endpoints(
        &self,
        engine: &EngineArgs,
        scfg: Arc<stoq::handshake::ServerConfig>,
        ccfg: Arc<stoq::handshake::ClientConfig>,
    ) -> Result<(Endpoint, Endpoint, SocketAddr), String> {
        match self {
            Self::Loopback(_) => {
                let mut s_cfg = engine.apply("127.0.0.1:0".parse().expect("literal"))?;
                let forced = s_cfg
                    .backend
                    .or_else(|| stoq::io::select::forced_by_env().ok().flatten());
                if forced == Some(BackendKind::AfXdp) {
                    // Both sides would need the one XDP program the loopback interface
                    // holds (the second attach fails with EBUSY), and with the client on
                    // UDP instead the server's AF_XDP socket on lo never hears it (tried:
                    // the handshake times out).
                    return Err(
                        "AF_XDP cannot run the demo over loopback: lo holds one XDP \
                                program, for one side only, and does not bring the other \
                                side's packets to it; run `stoq demo` as root without \
                                --loopback (a veth pair between namespaces) to see AF_XDP, \
                                or pick --backend udp or io_uring"
                            .into(),
                    );
                }
                one_core_each(&mut s_cfg);
                let mut c_cfg = engine.apply("127.0.0.1:0".parse().expect("literal"))?;
                c_cfg.first_cpu = s_cfg.first_cpu + s_cfg.workers.max(1);
                let server = Endpoint::server(s_cfg, scfg).map_err(|e| e.to_string())?;
                let client = Endpoint::client(c_cfg, ccfg).map_err(|e| e.to_string())?;
                let target = server.local_addr();
                Ok((server, client, target))
            }
            #[cfg(target_os = "linux")]
            Self::Veth(v) => {
                let bind = SocketAddr::new(v.b4.into(), 4433);
                let mut s_cfg = engine.apply(bind)?;
                one_core_each(&mut s_cfg);
                // A specific address, so that AF_XDP can name the interface on this side too.
                let mut c_cfg = engine.apply(SocketAddr::new(v.a4.into(), 0))?;
                // The client's worker on the core after the server's workers.
                c_cfg.first_cpu = s_cfg.first_cpu + s_cfg.workers.max(1);
                // Sockets belong to the namespace of the thread that opens them.
                let server =
                    v.b.run(move || Endpoint::server(s_cfg, scfg))
                        .map_err(|e| e.to_string())?;
                let client =
                    v.a.run(move || Endpoint::client(c_cfg, ccfg))
                        .map_err(|e| e.to_string())?;
                Ok((server, client, bind))
            }
        }
    }
}

/// One connection needs one server worker: unless `--workers` says otherwise, the server
/// gets one (on the first core) and the client the next core, so the two sides of the demo
/// do not share a core.
fn one_core_each(server: &mut stoq::engine::EngineConfig) {
    if server.workers == 0 {
        server.workers = 1;
    }
}

/// Prints which backend runs and why.
fn print_backend(server: &Endpoint, client: &Endpoint) {
    let info = server.info();
    say!("backend:  {}", info.selection.chosen);
    say!("          {}; {} server workers", info.detail, info.workers);
    let cinfo = client.info();
    if cinfo.selection.chosen != info.selection.chosen {
        say!(
            "          (the client runs on {}: {})",
            cinfo.selection.chosen,
            cinfo.detail
        );
    }
    if info.selection.forced {
        say!("why:      forced");
    } else if info.selection.skipped.is_empty() {
        say!("why:      the first choice");
    } else {
        say!("why:      every better backend was skipped:");
        for (k, reason) in &info.selection.skipped {
            say!("            {k}: {reason}");
        }
    }
}

/// One transfer of `size` bytes from the client to the server.
fn transfer_once(
    server: Endpoint,
    client: Endpoint,
    target: SocketAddr,
    size: u64,
) -> Result<f64, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async {
        // Both sides on their engines' workers: the server serves each connection on the
        // worker that owns it, the client uploads from a task on its connection's worker.
        server
            .serve(|c| transfer::serve_connection(c, None))
            .map_err(|e| e.to_string())?;
        let conn = client
            .connect(target, "demo.stoq")
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        say!("connected: X25519+ML-KEM-768 key exchange, FALCON-512 server key pinned");
        let (tx, rx) = tokio::sync::oneshot::channel();
        conn.spawn_on_worker(move |conn| async move {
            let pb = indicatif::ProgressBar::hidden();
            let o =
                transfer::upload(&conn, &format!("SINK {size}"), Pattern::new(), size, &pb).await;
            let _ = tx.send(o);
        })
        .map_err(|e| e.to_string())?;
        let o = rx
            .await
            .map_err(|_| "the client's worker stopped".to_string())??;
        say!("{}", transfer::report("moved", &o, &conn));
        conn.close(0, b"demo done");
        client.shutdown(Duration::from_secs(2)).await;
        server.shutdown(Duration::from_secs(2)).await;
        if o.hash_ok && o.bytes == size {
            Ok(o.gbit_per_s())
        } else {
            Err("the data arrived damaged".to_string())
        }
    })
}

pub(crate) fn run(bytes: &str, loopback: bool, engine: &EngineArgs) -> Result<(), String> {
    let size = parse_bytes(bytes)?;
    let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let scfg = Arc::new(transfer::server_config(Credential::RawKey {
        key,
        public: public.clone(),
    }));
    let ccfg = Arc::new(transfer::client_config(
        "demo.stoq",
        Trust::PinnedKey(public),
    ));
    let why_loopback = if loopback {
        Some("--loopback given".to_string())
    } else {
        namespaces_unavailable()
    };
    let place = match why_loopback {
        Some(why) => Place::Loopback(why),
        #[cfg(target_os = "linux")]
        None => Place::Veth(
            stoq_netns::VethPair::new("demo")
                .map_err(|e| format!("creating the veth pair: {e}"))?,
        ),
        #[cfg(not(target_os = "linux"))]
        None => unreachable!("namespaces need Linux"),
    };
    say!("path:     {}", place.describe());
    // The best backend (automatic, unless --backend forces one); across namespaces, the
    // XDP path too, forced, so the main job always shows it and how it compares.
    let (server, client, target) = place.endpoints(engine, scfg.clone(), ccfg.clone())?;
    print_backend(&server, &client);
    let best_kind = server.info().selection.chosen;
    let best = transfer_once(server, client, target, size)?;
    let in_namespaces = !matches!(place, Place::Loopback(_));
    if in_namespaces && engine.backend.is_none() && best_kind != BackendKind::AfXdp {
        say!();
        say!("The XDP path, forced (AF_XDP):");
        let xdp = EngineArgs {
            backend: Some("af_xdp".into()),
            ..engine.clone()
        };
        match place.endpoints(&xdp, scfg, ccfg) {
            Ok((server, client, target)) => {
                print_backend(&server, &client);
                let x = transfer_once(server, client, target, size)?;
                say!(
                    "af_xdp moved {x:.2} Gbit/s = {:.2}x the automatic choice ({best_kind}, {best:.2} Gbit/s)",
                    x / best
                );
            }
            Err(e) => say!("af_xdp could not run here: {e}"),
        }
    }
    drop(place);
    Ok(())
}
