//! What the orchestrator tells a role process, and what the role answers: both JSON, one
//! line each, so the same exchange works through a pipe (local namespaces) and through the
//! agent's TCP connection (`--peer`).

use serde::{Deserialize, Serialize};

/// A thing measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Subject {
    /// STOQ on one backend (`af_xdp`, `io_uring`, `udp`), XDP attach mode (`driver`,
    /// `skb`, `auto`) and cipher suite (`aes256gcm`, `chacha20poly1305`).
    ///
    /// How the application runs: with `served`, the async API on the engine's threads (the
    /// server serves each connection on its worker, `Endpoint::serve`; the client runs on
    /// its own runtime, `Endpoint::client_in_runtime`, or with several cores one worker per
    /// core and each connection's work spawned on its worker). Without it, the
    /// cross-thread path: `accept` plus `tokio::spawn` on the role's runtime, and a client
    /// worker on a thread of its own (how STOQ's async API ran before the thread-per-core
    /// engine; older reports' subjects are all this). With `handler` the request/response
    /// loop runs in a worker [`stoq::engine::Handler`] on each side (no async task).
    Stoq {
        backend: String,
        xdp: String,
        suite: String,
        #[serde(default)]
        handler: bool,
        #[serde(default)]
        served: bool,
        /// The server's metrics are rendered every 100 ms while it runs (a scrape far more
        /// often than Prometheus's 15 s: an upper bound of what metrics cost).
        #[serde(default)]
        metrics: bool,
        /// The server writes a qlog trace of every connection (with its metrics scraped
        /// too: the observability overhead subject).
        #[serde(default)]
        qlog: bool,
        /// The server signs each full handshake alone (`ServerConfig::batch_signing`
        /// off): what batch signing saves.
        #[serde(default)]
        sign_alone: bool,
        /// The server proves itself with a FALCON-512 + Ed25519 composite key.
        #[serde(default)]
        composite: bool,
    },
    /// quinn 0.11 on rustls with ring (quinn's default provider); `tuned` raises its
    /// flow-control windows; `aws_lc` runs rustls' aws-lc-rs provider instead of ring (the
    /// library STOQ protects packets with on Linux).
    Quinn {
        tuned: bool,
        #[serde(default)]
        aws_lc: bool,
    },
    /// Kernel TCP with this congestion control, no encryption.
    Tcp { cc: String },
    /// TLS 1.3 (rustls, ring) over kernel TCP with this congestion control.
    Tls { cc: String },
    /// Raw UDP datagrams, no crypto and no protocol (sendmmsg/recvmmsg with GSO/GRO).
    RawUdp,
}

impl Subject {
    /// A short label for tables and charts.
    pub(crate) fn label(&self) -> String {
        match self {
            Self::Stoq {
                backend,
                xdp,
                suite,
                handler,
                served,
                metrics,
                qlog,
                sign_alone,
                composite,
            } => {
                let b = match (backend.as_str(), xdp.as_str()) {
                    ("af_xdp", "driver") => "af_xdp drv".to_string(),
                    ("af_xdp", "skb") => "af_xdp skb".to_string(),
                    (b, _) => b.to_string(),
                };
                let s = if suite == "chacha20poly1305" {
                    ", ChaCha20"
                } else {
                    ""
                };
                let h = match (handler, served) {
                    (true, _) => ", worker handler",
                    (false, false) => ", cross-thread",
                    (false, true) => "",
                };
                let m = match (metrics, qlog) {
                    (_, true) => ", metrics scraped, qlog on",
                    (true, false) => ", metrics scraped",
                    _ => "",
                };
                let a = if *sign_alone {
                    ", batch signing off"
                } else {
                    ""
                };
                let c = if *composite {
                    ", FALCON-512+Ed25519"
                } else {
                    ""
                };
                format!("STOQ {b}{s}{h}{m}{a}{c}")
            }
            Self::Quinn { tuned, aws_lc } => match (tuned, aws_lc) {
                (false, false) => "quinn (default)",
                (true, false) => "quinn (tuned windows)",
                (false, true) => "quinn (aws-lc-rs)",
                (true, true) => "quinn (tuned windows, aws-lc-rs)",
            }
            .into(),
            Self::Tcp { cc } => format!("TCP {}", cc.to_uppercase()),
            Self::Tls { cc } => format!("TLS 1.3 over TCP {} (rustls)", cc.to_uppercase()),
            Self::RawUdp => "raw UDP".into(),
        }
    }

    /// quinn on its default provider (ring), with its default windows or tuned ones.
    pub(crate) fn quinn(tuned: bool) -> Self {
        Self::Quinn {
            tuned,
            aws_lc: false,
        }
    }

    /// The STOQ subject on `backend` with the default suite, through the async API on
    /// the engine's threads.
    pub(crate) fn stoq(backend: &str, xdp: &str) -> Self {
        Self::Stoq {
            backend: backend.into(),
            xdp: xdp.into(),
            suite: "aes256gcm".into(),
            handler: false,
            served: true,
            metrics: false,
            qlog: false,
            sign_alone: false,
            composite: false,
        }
    }

    /// Sets a STOQ subject's flags (handler, served, metrics, qlog); other subjects are
    /// returned as they are.
    fn set(mut self, f: impl FnOnce(&mut bool, &mut bool, &mut bool, &mut bool)) -> Self {
        if let Self::Stoq {
            handler,
            served,
            metrics,
            qlog,
            ..
        } = &mut self
        {
            f(handler, served, metrics, qlog);
        }
        self
    }

    /// The same STOQ subject with its server's metrics scraped every 100 ms.
    pub(crate) fn with_metrics(self) -> Self {
        self.set(|_, _, m, q| (*m, *q) = (true, false))
    }

    /// The same STOQ subject with its server writing qlog for every connection and its
    /// metrics scraped every 100 ms: what observability costs.
    pub(crate) fn with_qlog(self) -> Self {
        self.set(|_, _, m, q| (*m, *q) = (true, true))
    }

    /// The same STOQ subject with its server signing every full handshake alone.
    pub(crate) fn signing_alone(mut self) -> Self {
        if let Self::Stoq { sign_alone, .. } = &mut self {
            *sign_alone = true;
        }
        self
    }

    /// The same STOQ subject with its server's key a FALCON-512 + Ed25519 composite.
    pub(crate) fn composite(mut self) -> Self {
        if let Self::Stoq { composite, .. } = &mut self {
            *composite = true;
        }
        self
    }

    /// The same STOQ subject with the request/response loop in worker handlers.
    pub(crate) fn with_handler(self) -> Self {
        self.set(|h, s, m, q| (*h, *s, *m, *q) = (true, false, false, false))
    }

    /// The same STOQ subject on the cross-thread path (`accept` plus `tokio::spawn`, a
    /// client worker thread of its own).
    pub(crate) fn cross_thread(self) -> Self {
        self.set(|h, s, m, q| (*h, *s, *m, *q) = (false, false, false, false))
    }

    /// Whether this subject encrypts.
    pub(crate) fn encrypts(&self) -> bool {
        matches!(
            self,
            Self::Stoq { .. } | Self::Quinn { .. } | Self::Tls { .. }
        )
    }
}

/// What a client does.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) enum Scenario {
    /// `conns` connections, one stream each, sending for `secs`.
    Bulk { conns: usize, secs: f64 },
    /// 64-byte request, 64-byte response, one outstanding, for `secs`.
    Rr { secs: f64 },
    /// Handshakes for `secs`, `parallel` at a time (each connects, completes the
    /// handshake, closes and starts over). Full handshakes with the client's resumption
    /// off; or resumed ones (`resumed`): the client keeps its session tickets and closes
    /// each connection once the next one is up, so that the tickets that follow every
    /// handshake arrive.
    Handshakes {
        secs: f64,
        parallel: usize,
        #[serde(default)]
        resumed: bool,
    },
    /// Open `conns` connections and hold them until told to let go.
    Idle { conns: usize },
    /// A returning client, again and again for `secs`: it reconnects (resuming from a
    /// session ticket), sends a 64-byte request on a new stream and reads the 64-byte
    /// answer; the time from the start of the connect to the answer is measured. With
    /// `early`, the request goes with the first flight as early data (0-RTT: STOQ's
    /// `connect_early`, quinn's `into_0rtt`); without, after the handshake (1-RTT).
    /// Each connection is closed once the next one is up, so its tickets arrive.
    Reconnect {
        secs: f64,
        #[serde(default)]
        early: bool,
    },
    /// One connection sending for `secs` while a UDP probe measures the round trip every
    /// 10 ms (the bottleneck run).
    Shaped { secs: f64 },
}

impl Scenario {
    /// For a transfer (bulk or shaped): connections, seconds and whether to probe the
    /// round trip; `(0, 0.0, false)` for the rest.
    pub(crate) fn bulk_shape(self) -> (usize, f64, bool) {
        match self {
            Self::Bulk { conns, secs } => (conns, secs, false),
            Self::Shaped { secs } => (1, secs, true),
            _ => (0, 0.0, false),
        }
    }
}

/// Everything a role process needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RoleSpec {
    /// `server` or `client`.
    pub(crate) role: String,
    pub(crate) subject: Subject,
    pub(crate) scenario: Scenario,
    /// The server's address (the client connects to it; the server binds it).
    pub(crate) server: std::net::SocketAddr,
    /// The client's bind address (port 0).
    pub(crate) client_bind: std::net::SocketAddr,
    /// The CPUs this process runs on.
    pub(crate) cpus: Vec<usize>,
    /// Largest UDP payload (STOQ's datagram size, raw UDP's datagram size).
    pub(crate) udp_payload: usize,
    /// Key material for both sides, hex: STOQ's FALCON key pair, quinn's certificate and key.
    pub(crate) keys: Keys,
    /// STOQ's idle poll, microseconds (`None`: the library's default).
    #[serde(default)]
    pub(crate) idle_poll_us: Option<u64>,
}

/// Key material generated once by the orchestrator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Keys {
    pub(crate) stoq_secret: String,
    pub(crate) stoq_public: String,
    /// A FALCON-512 + Ed25519 composite key pair (the `composite` subjects).
    #[serde(default)]
    pub(crate) stoq_composite_secret: String,
    #[serde(default)]
    pub(crate) stoq_composite_public: String,
    pub(crate) quinn_cert: String,
    pub(crate) quinn_key: String,
}

/// A role's last line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Outcome {
    /// Bytes delivered (counted by the receiver).
    pub(crate) bytes: u64,
    /// Seconds the measured part took.
    pub(crate) secs: f64,
    /// Round trips or handshakes completed.
    pub(crate) count: u64,
    /// Latency quantiles in microseconds, 0.0..=1.0 in 1,000 steps (request/response and
    /// probe runs).
    pub(crate) quantiles_us: Vec<f64>,
    /// Probe round trips before the transfer (bottleneck run), microseconds, median.
    pub(crate) base_rtt_us: f64,
    /// CPU seconds (user + system) of the process over the measured part: a client counts
    /// from [`Outcome::cpu_start_s`], the orchestrator subtracts a server's start-up.
    pub(crate) cpu_s: f64,
    /// The process's CPU seconds when the measured part began.
    pub(crate) cpu_start_s: f64,
    /// Context switches (voluntary and not) over the measured part, like `cpu_s`.
    #[serde(default)]
    pub(crate) ctx_switches: f64,
    /// Context switches when the measured part began.
    #[serde(default)]
    pub(crate) ctx_start: f64,
    /// Resident memory at the end, KiB.
    pub(crate) rss_kib: u64,
    /// How the backend ran (STOQ), or the socket options used.
    pub(crate) detail: String,
    /// Datagrams sent and received (raw UDP), to show loss.
    pub(crate) sent: u64,
    /// Connections that resumed from a session ticket (STOQ's resumed handshakes), or
    /// whose early data the server accepted (reconnects with 0-RTT).
    #[serde(default)]
    pub(crate) resumed: u64,
    /// Reconnects after the handshake (1-RTT): the median time from the start of the
    /// connect to its completion, microseconds.
    #[serde(default)]
    pub(crate) handshake_us: f64,
}

/// The median of `v` (0 when empty), which it sorts.
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Encodes bytes as lower-case hex.
pub(crate) fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// Decodes lower-case hex.
pub(crate) fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("odd hex length".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

fn rusage() -> libc::rusage {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u
}

/// CPU seconds this process has used.
pub(crate) fn cpu_seconds() -> f64 {
    let u = rusage();
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Context switches this process's threads have made (voluntary and involuntary).
pub(crate) fn ctx_switches() -> f64 {
    let u = rusage();
    (u.ru_nvcsw + u.ru_nivcsw) as f64
}

/// Marks the start of the measured part of a client's run.
pub(crate) fn start_measuring(out: &mut Outcome) {
    out.cpu_start_s = cpu_seconds();
    out.ctx_start = ctx_switches();
}

/// This process's resident memory, KiB.
pub(crate) fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Pins the calling process's threads (present and future) to `cpus`.
pub(crate) fn pin(cpus: &[usize]) {
    if cpus.is_empty() {
        return;
    }
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: c is below CPU_SETSIZE for any machine this runs on.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: pid 0 is this thread; the set is valid for its size.
    unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
}

/// Latency quantiles (1,001 points, microseconds) of `ns`, which it sorts.
pub(crate) fn quantiles(ns: &mut [u64]) -> Vec<f64> {
    if ns.is_empty() {
        return Vec::new();
    }
    ns.sort_unstable();
    (0..=1000)
        .map(|i| {
            let idx = ((ns.len() - 1) * i) / 1000;
            ns[idx] as f64 / 1e3
        })
        .collect()
}
