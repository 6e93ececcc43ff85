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

/// The namespaces (kept alive by the returned guard), the two endpoints in them, the
/// server's address and a description of the path.
type Placed = (
    Option<Box<dyn std::any::Any>>,
    Endpoint,
    Endpoint,
    SocketAddr,
    String,
);

#[cfg(target_os = "linux")]
fn across_namespaces(
    engine: &EngineArgs,
    scfg: Arc<stoq::handshake::ServerConfig>,
    ccfg: Arc<stoq::handshake::ClientConfig>,
) -> Result<Placed, String> {
    let v =
        stoq_netns::VethPair::new("demo").map_err(|e| format!("creating the veth pair: {e}"))?;
    let bind = SocketAddr::new(v.b4.into(), 4433);
    let s_cfg = engine.apply(bind)?;
    let c_cfg = engine.apply("0.0.0.0:0".parse().expect("literal"))?;
    // Sockets belong to the namespace of the thread that opens them.
    let server =
        v.b.run(move || Endpoint::server(s_cfg, scfg))
            .map_err(|e| e.to_string())?;
    let client =
        v.a.run(move || Endpoint::client(c_cfg, ccfg))
            .map_err(|e| e.to_string())?;
    let path = format!(
        "veth pair {} -> {} between network namespaces {} and {}",
        v.a4,
        v.b4,
        v.a.name(),
        v.b.name()
    );
    Ok((Some(Box::new(v)), server, client, bind, path))
}

#[cfg(not(target_os = "linux"))]
fn across_namespaces(
    _engine: &EngineArgs,
    _scfg: Arc<stoq::handshake::ServerConfig>,
    _ccfg: Arc<stoq::handshake::ClientConfig>,
) -> Result<Placed, String> {
    Err("network namespaces need Linux".into())
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
    // Declared first so it is dropped last: the namespaces outlive the endpoints in them.
    let (topology, server, client, target, path) = match &why_loopback {
        None => across_namespaces(engine, scfg, ccfg)?,
        Some(why) => {
            let s_cfg = engine.apply("127.0.0.1:0".parse().expect("literal"))?;
            let c_cfg = engine.apply("127.0.0.1:0".parse().expect("literal"))?;
            let server = Endpoint::server(s_cfg, scfg).map_err(|e| e.to_string())?;
            let client = Endpoint::client(c_cfg, ccfg).map_err(|e| e.to_string())?;
            let target = server.local_addr();
            (None, server, client, target, format!("loopback ({why})"))
        }
    };
    let info = server.info().clone();
    println!("path:     {path}");
    println!("backend:  {}", info.selection.chosen);
    let caps = info.capabilities;
    println!(
        "          GSO {} segments, GRO {}, {} server workers",
        caps.gso_segments,
        if caps.gro { "on" } else { "off" },
        info.workers
    );
    if info.selection.forced {
        println!("why:      forced");
    } else if info.selection.skipped.is_empty() {
        println!("why:      the first choice");
    } else {
        println!("why:      every better backend was skipped:");
        for (k, reason) in &info.selection.skipped {
            println!("            {k}: {reason}");
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let result = rt.block_on(async {
        let server = Arc::new(server);
        let s = server.clone();
        tokio::spawn(async move {
            while let Some(c) = s.accept().await {
                tokio::spawn(transfer::serve_connection(c, None));
            }
        });
        let conn = client
            .connect(target, "demo.stoq")
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        println!("connected: X25519+ML-KEM-768 key exchange, FALCON-512 server key pinned");
        let pb = indicatif::ProgressBar::hidden();
        let o = transfer::upload(&conn, &format!("SINK {size}"), Pattern::new(), size, &pb).await?;
        println!("{}", transfer::report("moved", &o, &conn));
        conn.close(0, b"demo done");
        client.shutdown(Duration::from_secs(2)).await;
        server.shutdown(Duration::from_secs(2)).await;
        if o.hash_ok && o.bytes == size {
            Ok(())
        } else {
            Err("the data arrived damaged".to_string())
        }
    });
    drop(topology);
    result
}
