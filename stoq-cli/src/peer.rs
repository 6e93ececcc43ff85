//! `stoq rendezvous` and `stoq peer`: peers behind NATs meet at a rendezvous server and
//! connect directly, or through a TURN relay when no direct path exists (`docs/nat.md`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use stoq::api::{PeerPath, Relay};
use stoq::handshake::Trust;
use stoq::nat::turn::TurnCredentials;
use tokio::io::AsyncReadExt;

use crate::EngineArgs;
use crate::transfer::{self, hex};

/// `stoq rendezvous`: serves the rendezvous role until interrupted.
pub(crate) fn rendezvous(
    listen: SocketAddr,
    key: &std::path::Path,
    public: Option<&std::path::Path>,
    cert: Option<&std::path::Path>,
    engine: &EngineArgs,
) -> Result<(), String> {
    let cred = transfer::credential(key, public, cert)?;
    let cfg = engine.apply(listen)?;
    let rt = transfer::runtime()?;
    let _in = rt.enter();
    let ep = stoq::Endpoint::server(cfg, Arc::new(transfer::server_config(cred)))
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    say!(
        "rendezvous on {} ({})",
        ep.local_addr(),
        ep.info().selection.chosen
    );
    stoq::api::serve_rendezvous(&ep).map_err(|e| e.to_string())?;
    // Served on the endpoint's workers until interrupted.
    rt.block_on(tokio::signal::ctrl_c())
        .map_err(|e| format!("waiting for Ctrl-C: {e}"))?;
    Ok(())
}

/// What `stoq peer` was given.
pub(crate) struct PeerArgs {
    pub(crate) rendezvous: SocketAddr,
    pub(crate) name: String,
    pub(crate) id: String,
    pub(crate) pin: Option<PathBuf>,
    pub(crate) ca: Option<PathBuf>,
    pub(crate) key: PathBuf,
    pub(crate) public: Option<PathBuf>,
    pub(crate) cert: Option<PathBuf>,
    pub(crate) bind: SocketAddr,
    pub(crate) connect: Option<String>,
    pub(crate) bytes: u64,
    pub(crate) once: bool,
    pub(crate) turn: Option<SocketAddr>,
    pub(crate) turn_user: Option<String>,
    pub(crate) turn_password: Option<String>,
    pub(crate) engine: EngineArgs,
}

/// `stoq peer`: registers as `--id`; with `--connect`, reaches that peer, sends
/// `--bytes` and checks the SHA-256 it answers; without, answers every peer that connects.
pub(crate) fn peer(a: &PeerArgs) -> Result<(), String> {
    let trust = match (&a.pin, &a.ca) {
        (Some(p), _) => Trust::PinnedKey(crate::keys::public_key(p)?),
        (None, Some(c)) => Trust::Anchors(vec![crate::keys::trust_anchor(c)?]),
        (None, None) => {
            return Err(
                "give --pin or --ca: how the rendezvous server and peers are trusted".into(),
            );
        }
    };
    let relay = match (a.turn, &a.turn_user, &a.turn_password) {
        (Some(server), Some(u), Some(p)) => Some(Relay {
            server,
            credentials: TurnCredentials {
                username: u.clone(),
                password: p.clone(),
            },
        }),
        (None, None, None) => None,
        _ => return Err("--turn needs --turn-user and --turn-password".into()),
    };
    let cred = transfer::credential(&a.key, a.public.as_deref(), a.cert.as_deref())?;
    let mut cfg = a.engine.apply(a.bind)?;
    if cfg.workers == 0 {
        cfg.workers = 1;
    }
    let rt = transfer::runtime()?;
    let _in = rt.enter();
    let ep = stoq::Endpoint::server_and_client(
        cfg,
        Arc::new(transfer::server_config(cred)),
        Arc::new(transfer::client_config(&a.name, trust)),
    )
    .map_err(|e| format!("cannot open an endpoint on {}: {e}", a.bind))?;
    rt.block_on(async {
        let reg = ep
            .join_rendezvous_with(a.rendezvous, &a.name, a.id.as_bytes(), relay)
            .await
            .map_err(|e| e.to_string())?;
        say!("registered as {} from {}", a.id, ep.local_addr());
        match &a.connect {
            Some(other) => send(&ep, &reg, other, &a.name, a.bytes).await,
            None => answer(&ep, a.once).await,
        }
    })
}

async fn send(
    ep: &stoq::Endpoint,
    reg: &stoq::api::Rendezvous,
    other: &str,
    name: &str,
    bytes: u64,
) -> Result<(), String> {
    let t = Instant::now();
    let pc = ep
        .connect_peer(reg, other.as_bytes(), name)
        .await
        .map_err(|e| e.to_string())?;
    for (c, why) in &pc.failed {
        say!("  {:?} candidate {} not used: {why}", c.kind, c.addr);
    }
    match pc.path {
        PeerPath::Direct(c) => say!("direct to {} ({:?}) in {:?}", c.addr, c.kind, t.elapsed()),
        PeerPath::Relayed(c) => say!("relayed through {} in {:?}", c.addr, t.elapsed()),
    }
    let (mut s, mut r) = pc.connection.open_bi().await.map_err(|e| e.to_string())?;
    let mut h = Sha256::new();
    // A 64 KiB pseudo-random block, sent over and over.
    let mut x = 0x5710_2545_f491_4f6du64;
    let chunk: Vec<u8> = (0..1 << 16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let t = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        h.update(&chunk[..n]);
        s.write_all_data(&chunk[..n])
            .await
            .map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    s.finish().map_err(|e| e.to_string())?;
    let got = r.read_to_end_limited(64).await.map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    let want = h.finalize();
    if got.as_slice() != want.as_slice() {
        return Err(format!(
            "SHA-256 mismatch: sent {}, the peer got {}",
            hex(&want),
            hex(&got)
        ));
    }
    say!(
        "sent {bytes} bytes in {secs:.2} s ({:.2} Gbit/s), SHA-256 match {}",
        bytes as f64 * 8.0 / secs.max(1e-9) / 1e9,
        hex(&want)
    );
    if let (PeerPath::Direct(c), Some(now)) = (pc.path, pc.connection.remote_address())
        && now != c.addr
    {
        say!("the direct path went silent during the transfer: moved to the peer's relay {now}");
    }
    pc.connection.close(0, b"done");
    // Let the close reach the peer before the process ends.
    let _ = ep.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(())
}

async fn answer(ep: &stoq::Endpoint, once: bool) -> Result<(), String> {
    while let Some(conn) = ep.accept().await {
        let from = conn.remote_address();
        while let Ok((mut s, mut r)) = conn.accept_bi().await {
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            let mut n = 0u64;
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => {
                        h.update(&buf[..k]);
                        n += k as u64;
                    }
                }
            }
            let d = h.finalize();
            let _ = s.write_all_data(&d).await;
            let _ = s.finish();
            let via = conn
                .relay()
                .map(|r| format!(" through the relay {r}"))
                .unwrap_or_default();
            say!("received {n} bytes from {from:?}{via}, SHA-256 {}", hex(&d));
            if once {
                // The answer is delivered once the peer closes (or gives up waiting).
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(5), conn.closed()).await;
                return Ok(());
            }
        }
    }
    Ok(())
}
