//! A role process: one server or one client of one subject, pinned to its CPUs, talking
//! to the orchestrator one line at a time on stdin/stdout.
//!
//! Server: prints `READY <how it runs>`; answers `rss` with `RSS <KiB>`; on `stop` or end
//! of input it shuts down cleanly (an AF_XDP server detaches its program) and prints its
//! [`Outcome`] as JSON. Client: runs its scenario (an idle run prints `HELD <n>` and waits
//! for a line before letting go) and prints its [`Outcome`]. A failure prints `ERROR ...`.

use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::spec::{Outcome, RoleSpec, Subject, cpu_seconds, pin, rss_kib};

/// Called once by a server when it listens, with how it runs.
pub(crate) type Ready = Box<dyn FnOnce(String) + Send>;
/// Called by an idle-run client once its connections are open; returns when it may let go.
pub(crate) type Hold = Box<dyn FnOnce(usize) + Send>;

/// The orchestrator's stop, seen by sync and async servers alike.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stop(Arc<(AtomicBool, tokio::sync::Notify)>);

impl Stop {
    fn set(&self) {
        self.0.0.store(true, Ordering::SeqCst);
        self.0.1.notify_one();
    }

    /// Whether stop was asked.
    pub(crate) fn is_set(&self) -> bool {
        self.0.0.load(Ordering::SeqCst)
    }

    /// Waits for stop.
    pub(crate) async fn notified(&self) {
        if !self.is_set() {
            self.0.1.notified().await;
        }
    }
}

/// The single-threaded runtime every async role uses: the role's CPUs are its cores, and
/// STOQ's engine adds its own pinned workers.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// Runs one role to completion; the exit status says whether it succeeded.
pub(crate) fn run(spec: &RoleSpec) -> std::process::ExitCode {
    pin(&spec.cpus);
    let r = if spec.role == "server" {
        server(spec)
    } else {
        client(spec)
    };
    match r {
        Ok(out) => {
            println!("{}", serde_json::to_string(&out).unwrap_or_default());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            println!("ERROR {}", e.replace('\n', " "));
            std::process::ExitCode::FAILURE
        }
    }
}

/// What a server learns only when it stops (the qlog subject's counts), added to its
/// outcome's detail.
static LATE_DETAIL: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Adds `s` to the server's detail (see [`LATE_DETAIL`]).
pub(crate) fn late_detail(s: &str) {
    if let Ok(mut d) = LATE_DETAIL.lock() {
        d.push_str("; ");
        d.push_str(s);
    }
}

fn server(spec: &RoleSpec) -> Result<Outcome, String> {
    let stop = Stop::default();
    let echo = crate::plain::echo(
        SocketAddr::new(spec.server.ip(), spec.server.port() + 1),
        stop.clone(),
    )
    .map_err(|e| format!("probe echo: {e}"))?;
    let (tx, rx) = std::sync::mpsc::channel::<Result<String, String>>();
    let tx2 = tx.clone();
    let (s2, st2) = (spec.clone(), stop.clone());
    let main = std::thread::spawn(move || {
        let ready: Ready = Box::new(move |d| {
            let _ = tx.send(Ok(d));
        });
        let r = match &s2.subject {
            Subject::Stoq { .. } => crate::stoq_side::server(&s2, ready, st2),
            Subject::Quinn { .. } => crate::quinn_side::server(&s2, ready, st2),
            Subject::Tcp { .. } => crate::plain::tcp_server(&s2, ready, st2),
            Subject::Tls { .. } => crate::tls::server(&s2, ready, st2),
            Subject::RawUdp => crate::plain::udp_server(&s2, ready, st2),
        };
        if let Err(e) = r {
            let _ = tx2.send(Err(e));
        }
    });
    let detail = match rx.recv() {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err("the server stopped before listening".into()),
    };
    println!("READY {detail}");
    for line in std::io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("rss") => println!("RSS {}", rss_kib()),
            Ok("cpu") => println!("CPU {} {}", cpu_seconds(), crate::spec::ctx_switches()),
            Ok("stop") | Err(_) => break,
            Ok(_) => {}
        }
    }
    stop.set();
    let _ = main.join();
    let _ = echo.join();
    if let Ok(Err(e)) = rx.try_recv() {
        return Err(e);
    }
    let late = LATE_DETAIL.lock().map(|d| d.clone()).unwrap_or_default();
    Ok(Outcome {
        cpu_s: cpu_seconds(),
        ctx_switches: crate::spec::ctx_switches(),
        rss_kib: rss_kib(),
        detail: detail + &late,
        ..Outcome::default()
    })
}

fn client(spec: &RoleSpec) -> Result<Outcome, String> {
    let hold: Hold = Box::new(|n| {
        println!("HELD {n}");
        let mut l = String::new();
        let _ = std::io::stdin().lock().read_line(&mut l);
    });
    let mut out = match &spec.subject {
        Subject::Stoq { .. } => crate::stoq_side::client(spec, hold)?,
        Subject::Quinn { .. } => crate::quinn_side::client(spec, hold)?,
        Subject::Tcp { .. } => crate::plain::tcp_client(spec)?,
        Subject::Tls { .. } => crate::tls::client(spec)?,
        Subject::RawUdp => crate::plain::udp_client(spec)?,
    };
    out.cpu_s = cpu_seconds() - out.cpu_start_s;
    out.ctx_switches = crate::spec::ctx_switches() - out.ctx_start;
    if out.rss_kib == 0 {
        out.rss_kib = rss_kib();
    }
    Ok(out)
}
