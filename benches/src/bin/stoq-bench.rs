//! `stoq-bench`: STOQ end to end over a veth pair between two network namespaces, on each
//! backend, interleaved (A B C D A B C D …) so that the machine's drift hits every subject
//! alike. Run by `cargo xtask bench [--quick]`, as root.
//!
//! It prints a table (median and min–max per backend, and each backend's ratio to the
//! automatic choice) and writes `target/bench/<unix time>/report.md` and `report.json`.
//! `--quick` moves 256 MiB per run, 3 runs each; the default 1 GiB, 5 runs.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand_core::OsRng;
use stoq::Endpoint;
use stoq::crypto::sig::{SigAlg, SigningKey};
use stoq::engine::{EngineConfig, XdpMode};
use stoq::handshake::{ClientConfig, ServerConfig};
use stoq::io::BackendKind;
use stoq_netns::VethPair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One subject: a backend, and for AF_XDP its attach mode.
#[derive(Debug, Clone, Copy)]
struct Subject {
    name: &'static str,
    backend: BackendKind,
    xdp: XdpMode,
}

const SUBJECTS: [Subject; 4] = [
    Subject {
        name: "af_xdp (driver mode, copy)",
        backend: BackendKind::AfXdp,
        xdp: XdpMode::Driver,
    },
    Subject {
        name: "af_xdp (skb mode, copy)",
        backend: BackendKind::AfXdp,
        xdp: XdpMode::Skb,
    },
    Subject {
        name: "io_uring (GSO/GRO)",
        backend: BackendKind::IoUring,
        xdp: XdpMode::Auto,
    },
    Subject {
        name: "udp (sendmmsg/recvmmsg, GSO/GRO)",
        backend: BackendKind::Udp,
        xdp: XdpMode::Auto,
    },
];

fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    (
        Arc::new(ServerConfig::raw_key(key, public.clone())),
        Arc::new(ClientConfig::pinned("bench.stoq", public)),
    )
}

/// One run: a fresh server (in `b`, one worker on CPU 0) and client (in `a`, CPU 1), one
/// connection, `bytes` on one stream; the time is from the first write to the server's
/// count of every byte. Returns Gbit/s and the backend detail.
fn run_once(v: &VethPair, s: Subject, bytes: u64) -> Result<(f64, String), String> {
    let (scfg, ccfg) = configs();
    let bind = SocketAddr::new(v.b4.into(), 4433);
    let mut se = EngineConfig::new(bind);
    se.backend = Some(s.backend);
    se.xdp_mode = s.xdp;
    se.workers = 1;
    se.first_cpu = 0;
    let mut ce = EngineConfig::new(SocketAddr::new(v.a4.into(), 0));
    ce.backend = Some(s.backend);
    ce.xdp_mode = s.xdp;
    ce.workers = 1;
    ce.first_cpu = 1;
    let server =
        v.b.run(move || Endpoint::server(se, scfg))
            .map_err(|e| e.to_string())?;
    let client =
        v.a.run(move || Endpoint::client(ce, ccfg))
            .map_err(|e| e.to_string())?;
    let detail = server.info().detail.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let gbps = rt.block_on(async move {
        let server = Arc::new(server);
        let s2 = server.clone();
        tokio::spawn(async move {
            while let Some(c) = s2.accept().await {
                tokio::spawn(async move {
                    while let Ok(mut r) = c.accept_uni().await {
                        let c = c.clone();
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 256 << 10];
                            let mut n = 0u64;
                            while let Ok(k) = r.read(&mut buf).await {
                                if k == 0 {
                                    break;
                                }
                                n += k as u64;
                            }
                            if let Ok(mut s) = c.open_uni().await {
                                let _ = s.write_all(&n.to_be_bytes()).await;
                                let _ = s.finish();
                            }
                        });
                    }
                });
            }
        });
        let conn = client
            .connect(bind, "bench.stoq")
            .await
            .map_err(|e| e.to_string())?;
        let chunk = vec![0x5au8; 1 << 20];
        let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
        let t = Instant::now();
        let mut left = bytes;
        while left > 0 {
            let k = left.min(chunk.len() as u64) as usize;
            s.write_all(&chunk[..k]).await.map_err(|e| e.to_string())?;
            left -= k as u64;
        }
        s.finish().map_err(|e| e.to_string())?;
        let mut back = conn.accept_uni().await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 8];
        back.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        let secs = t.elapsed().as_secs_f64();
        if u64::from_be_bytes(b) != bytes {
            return Err(format!(
                "the server counted {} of {bytes} bytes",
                u64::from_be_bytes(b)
            ));
        }
        conn.close(0, b"");
        client.shutdown(Duration::from_secs(1)).await;
        server.shutdown(Duration::from_secs(1)).await;
        Ok::<_, String>(bytes as f64 * 8.0 / secs / 1e9)
    })?;
    Ok((gbps, detail))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> std::process::ExitCode {
    let quick = std::env::args().any(|a| a == "--quick");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "stoq-bench needs root: it creates two network namespaces joined by a veth pair \
             and attaches XDP programs (run: sudo cargo xtask bench)"
        );
        return std::process::ExitCode::FAILURE;
    }
    let (bytes, reps) = if quick {
        (256u64 << 20, 3)
    } else {
        (1u64 << 30, 5)
    };
    let v = match VethPair::new("bench") {
        Ok(v) => v,
        Err(e) => {
            eprintln!("stoq-bench: creating the veth pair: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    eprintln!(
        "stoq-bench: {} MiB per run, {reps} runs per backend, interleaved; veth MTU 1500, \
         1 queue; server 1 worker on CPU 0, client 1 worker on CPU 1; {cores} cores; Linux {kernel}",
        bytes >> 20
    );
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); SUBJECTS.len()];
    let mut details = vec![String::new(); SUBJECTS.len()];
    let mut failures = Vec::new();
    for rep in 0..reps {
        for (i, s) in SUBJECTS.iter().enumerate() {
            match run_once(&v, *s, bytes) {
                Ok((g, d)) => {
                    eprintln!("  run {}: {:<34} {g:6.2} Gbit/s", rep + 1, s.name);
                    results[i].push(g);
                    details[i] = d;
                }
                Err(e) => {
                    eprintln!("  run {}: {:<34} failed: {e}", rep + 1, s.name);
                    failures.push(format!("{}: {e}", s.name));
                }
            }
        }
    }
    // The automatic choice on this path (what `stoq demo` picks) is the reference.
    let auto = SUBJECTS
        .iter()
        .position(|s| s.backend == BackendKind::IoUring)
        .unwrap_or(0);
    let auto_med = median(&mut results[auto].clone());
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| Backend | How it ran | Median Gbit/s | Min–max | Runs | × automatic choice |\n|---|---|---|---|---|---|"
    );
    let mut json = String::from("{\"runs\":[");
    for (i, s) in SUBJECTS.iter().enumerate() {
        let r = &results[i];
        if r.is_empty() {
            let _ = writeln!(md, "| {} | — | failed | | 0 | |", s.name);
            continue;
        }
        let mut v = r.clone();
        let med = median(&mut v);
        let (lo, hi) = (v[0], v[v.len() - 1]);
        let _ = writeln!(
            md,
            "| {} | {} | {med:.2} | {lo:.2}–{hi:.2} | {} | {:.2} |",
            s.name,
            details[i],
            r.len(),
            med / auto_med
        );
        let _ = write!(
            json,
            "{}{{\"subject\":\"{}\",\"detail\":\"{}\",\"gbit_per_s\":{:?},\"median\":{med:.3}}}",
            if i == 0 { "" } else { "," },
            s.name,
            details[i],
            r
        );
    }
    let _ = write!(
        json,
        "],\"bytes_per_run\":{bytes},\"reps\":{reps},\"cores\":{cores},\"kernel\":\"{kernel}\",\"mtu\":1500,\"queues\":1}}"
    );
    println!("\n{md}");
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench")
        .join(stamp.to_string());
    if std::fs::create_dir_all(&dir).is_ok() {
        let header = format!(
            "# stoq-bench {}\n\n{} MiB per run, {reps} runs per backend, interleaved; veth MTU 1500, 1 queue; \
             server 1 worker on CPU 0, client 1 worker on CPU 1; {cores} cores; Linux {kernel}.\n\n",
            if quick { "--quick" } else { "" },
            bytes >> 20
        );
        let _ = std::fs::write(dir.join("report.md"), format!("{header}{md}"));
        let _ = std::fs::write(dir.join("report.json"), json);
        eprintln!("stoq-bench: wrote {}", dir.display());
    }
    drop(v);
    if failures.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("stoq-bench: {} runs failed", failures.len());
        std::process::ExitCode::FAILURE
    }
}
