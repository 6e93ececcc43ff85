//! `stoq`: keys and certificates, a server and a client that move files or generate load,
//! a backend probe, and the end-to-end demo.

/// `say!` that survives a closed standard output (`stoq demo | head`): the first
/// failed write marks it gone and later lines are dropped, so the command runs to its
/// end and its guards (namespaces, XDP programs) clean up, where `say!` would panic
/// mid-run.
macro_rules! say {
    () => {
        $crate::say_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::say_line(format_args!($($arg)*))
    };
}

mod demo;
mod keys;
mod nat;
mod peer;
mod qlog_chart;
mod transfer;

/// jemalloc: it returns freed memory to the OS, so a server's RSS follows its load. Chosen
/// by measurement under `cargo xtask soak` (docs/operations.md): three minutes of churn
/// held about 60 MiB with it, against glibc's 143 MiB growing to 159 and mimalloc's 105 to
/// 179 MiB.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use stoq::io::BackendKind;

/// STOQ: a post-quantum secure UDP transport.
#[derive(Debug, Parser)]
#[command(name = "stoq", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log lines on standard error: -v info (handshakes, closes with their reason,
    /// migrations, backend choices), -vv debug, -vvv trace. RUST_LOG (for example
    /// `RUST_LOG=stoq::conn=debug`) replaces this filter. Without either: warnings.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// How log lines are written: text, or json (one object per line, with the
    /// connection's and the worker's fields).
    #[arg(long, value_name = "FORMAT", default_value = "text", global = true)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs to standard error (standard output carries the commands' own output).
fn install_logging(verbose: u8, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => EnvFilter::new(f),
        _ => EnvFilter::new(match verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }),
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => b.with_ansi(false).try_init(),
        LogFormat::Json => b
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generates a FALCON key pair: <OUT>.key (private) and <OUT>.pub (public).
    Keygen {
        /// Path prefix of the two files.
        #[arg(long)]
        out: PathBuf,
        /// falcon512 (default), falcon1024, or falcon512-ed25519 (composite: FALCON-512
        /// and Ed25519, both signatures required).
        #[arg(long, default_value = "falcon512")]
        alg: String,
    },
    /// Issues a certificate for a public key, signed by an issuer key.
    Cert {
        /// The issuer's private key.
        #[arg(long)]
        issuer_key: PathBuf,
        /// The issuer's public key.
        #[arg(long)]
        issuer_pub: PathBuf,
        /// The subject's public key.
        #[arg(long)]
        subject: PathBuf,
        /// A name the certificate covers (repeat for more; `*.example.com` wildcards).
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        /// Days of validity from now.
        #[arg(long, default_value_t = 365)]
        days: u64,
        /// Let the certificate issue others (an intermediate CA; the root of trust is
        /// a key pair from `stoq keygen`, whose public key clients trust with `--ca`).
        #[arg(long)]
        ca: bool,
        /// The issuer's own certificate (chain), when the issuer is an intermediate CA:
        /// it is written after the new certificate, so the output is the full chain a
        /// server presents.
        #[arg(long)]
        issuer_cert: Option<PathBuf>,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        out: PathBuf,
    },
    /// Writes a new cluster key file (one random generation), or rotates one: adds the
    /// next generation and makes it current. Give the file to every server of a cluster
    /// (`stoq server --cluster-keys`): their stateless resets and Retry tokens then work
    /// on each other and across restarts.
    ClusterKeys {
        /// Where to write a new key file (mode 0600).
        #[arg(long, conflicts_with = "rotate", required_unless_present = "rotate")]
        out: Option<PathBuf>,
        /// A key file to rotate in place.
        #[arg(long)]
        rotate: Option<PathBuf>,
        /// Give the new generation a random QUIC-LB key too: its CIDs are encrypted
        /// (draft-ietf-quic-load-balancers-21), so only a load balancer holding the key
        /// reads the server ID. Put the same key in the balancer's configuration.
        #[arg(long)]
        lb: bool,
    },
    /// Runs a server that receives uploads, serves downloads, and sinks load.
    Server {
        /// Address to listen on.
        #[arg(long, default_value = "[::]:4433")]
        listen: SocketAddr,
        /// The server's private key.
        #[arg(long)]
        key: PathBuf,
        /// The server's public key (raw-key mode: clients pin it).
        #[arg(long, conflicts_with = "cert")]
        public: Option<PathBuf>,
        /// The server's certificate, or its chain (leaf first, then the intermediate CA
        /// certificates; `stoq cert --issuer-cert` writes one): clients trust the key
        /// at the top.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Directory to store uploads in and serve downloads from (none: uploads are
        /// checked and discarded, downloads refused).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The cluster's key file (`stoq cluster-keys`): stateless resets and Retry tokens
        /// shared with the other servers, and good across restarts.
        #[arg(long)]
        cluster_keys: Option<PathBuf>,
        /// Require clients to authenticate with a certificate issued (directly or through
        /// intermediates they send) by this CA: its public key or CA certificate.
        /// Repeat for several CAs.
        #[arg(long, value_name = "PATH", conflicts_with = "client_pin")]
        client_ca: Vec<PathBuf>,
        /// Require clients to authenticate with exactly this public key (raw-key mode).
        #[arg(long, value_name = "PATH")]
        client_pin: Option<PathBuf>,
        /// Serve Prometheus metrics over HTTP at this address (`GET /metrics`): traffic,
        /// losses, RTT, handshakes by outcome, drops by reason, handoffs, the backend and
        /// the XDP program's verdicts. Bind it where only your monitoring reaches.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<SocketAddr>,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Connects to a server and sends a file, fetches one, or generates load.
    Client {
        /// The server's address.
        server: SocketAddr,
        /// The name the server must prove.
        #[arg(long, default_value = "localhost")]
        name: String,
        /// The server's public key, pinned.
        #[arg(long, conflicts_with = "ca")]
        pin: Option<PathBuf>,
        /// A trust anchor: a CA's public key, or a CA certificate (its key is trusted).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Upload this file.
        #[arg(long, group = "job")]
        send: Option<PathBuf>,
        /// Download this file name from the server's directory.
        #[arg(long, group = "job")]
        get: Option<String>,
        /// Where to write a download (default: the name, in the current directory).
        #[arg(long, requires = "get")]
        out: Option<PathBuf>,
        /// Attempts to connect (and to reconnect after losing the connection) before a
        /// download gives up, with exponential backoff (100 ms doubling to 10 s, ±20 %);
        /// a download goes on from where it stopped. 1 turns reconnection off.
        #[arg(long, default_value_t = 10, requires = "get", value_name = "N",
              value_parser = clap::value_parser!(u32).range(1..))]
        attempts: u32,
        /// Send this many bytes of generated data (suffixes k, M, G).
        #[arg(long, group = "job")]
        load: Option<String>,
        /// Authenticate to the server with this private key (for a server that requires
        /// client authentication), with --public (raw-key mode) or --cert.
        #[arg(long, value_name = "PATH")]
        key: Option<PathBuf>,
        /// The client's public key (raw-key mode: the server pins it, --client-pin).
        #[arg(long, value_name = "PATH", requires = "key", conflicts_with = "cert")]
        public: Option<PathBuf>,
        /// The client's certificate or chain (leaf first), for a server that trusts its
        /// CA (--client-ca).
        #[arg(long, value_name = "PATH", requires = "key")]
        cert: Option<PathBuf>,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Prints which I/O backends this host can run, and why not; with `--bind`, which one
    /// an endpoint bound to that address picks (it opens one there, as a server would).
    /// Exits non-zero when no backend can run (or the forced one cannot).
    Probe {
        /// Open an endpoint on this address (port 0: any) and report what it chose.
        #[arg(long)]
        bind: Option<SocketAddr>,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Asks STUN servers (RFC 8489) for this host's reflexive address, from an endpoint's
    /// own socket and backend as a STOQ server's connections would see it, and says how the
    /// NAT maps it: endpoint-independent (a "cone": peers can be told the address) or
    /// dependent (a "symmetric" NAT). Telling them apart takes two servers on different
    /// IP addresses. Exits non-zero when no server answers.
    Nat {
        /// A STUN server (IP:port); repeat for more.
        #[arg(long = "stun", value_name = "ADDR", required = true)]
        stun: Vec<SocketAddr>,
        /// The local address to ask from (default: the servers' wildcard, any port).
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// Seconds to wait for each server.
        #[arg(long, default_value = "5")]
        timeout: u64,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Serves the rendezvous role: peers register under an id and learn each other's
    /// addresses to connect directly through their NATs (`stoq peer`).
    Rendezvous {
        /// Address to listen on.
        #[arg(long, default_value = "[::]:4433")]
        listen: SocketAddr,
        /// The server's private key.
        #[arg(long)]
        key: PathBuf,
        /// The server's public key (raw-key mode: peers pin it).
        #[arg(long, conflicts_with = "cert")]
        public: Option<PathBuf>,
        /// The server's certificate chain.
        #[arg(long)]
        cert: Option<PathBuf>,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// A peer: registers at a rendezvous server as --id from this endpoint's own socket;
    /// with --connect, reaches that peer (directly through both NATs, or through the
    /// --turn relay when no direct path exists), says which path and why, sends --bytes
    /// and checks the SHA-256 the peer answers; without, answers every peer that connects
    /// with the SHA-256 of what it sent.
    Peer {
        /// The rendezvous server.
        #[arg(long)]
        rendezvous: SocketAddr,
        /// The name the rendezvous server and the peers are authenticated as.
        #[arg(long)]
        name: String,
        /// This peer's id (1 to 64 bytes).
        #[arg(long)]
        id: String,
        /// Trust this public key (rendezvous server and peers).
        #[arg(long, conflicts_with = "ca")]
        pin: Option<PathBuf>,
        /// Trust certificates issued by this CA (rendezvous server and peers).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// This peer's private key.
        #[arg(long)]
        key: PathBuf,
        /// This peer's public key (raw-key mode).
        #[arg(long, conflicts_with = "cert")]
        public: Option<PathBuf>,
        /// This peer's certificate chain.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Local address (port 0: any).
        #[arg(long, default_value = "0.0.0.0:0")]
        bind: SocketAddr,
        /// The id of the peer to connect to.
        #[arg(long)]
        connect: Option<String>,
        /// Bytes to send with --connect (suffixes k, M, G).
        #[arg(long, default_value = "1M")]
        bytes: String,
        /// Without --connect: exit after the first peer's transfer.
        #[arg(long)]
        once: bool,
        /// A TURN server to allocate a relayed address on (the fallback).
        #[arg(long, requires_all = ["turn_user", "turn_password"])]
        turn: Option<SocketAddr>,
        /// The TURN account's username.
        #[arg(long)]
        turn_user: Option<String>,
        /// The TURN account's password.
        #[arg(long)]
        turn_password: Option<String>,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Draws a connection's congestion control from its qlog file (`--qlog`) as an SVG:
    /// congestion window and bytes in flight over the controller's states, with the
    /// losses; pacing rate; round-trip times. Read the sender's trace.
    QlogChart {
        /// The `.sqlog` file.
        file: PathBuf,
        /// Where to write the SVG.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// The end-to-end demo: a server and a client in this process move data over the
    /// best backend available (as root across a veth pair between two network
    /// namespaces, otherwise over loopback) and report the backend, why, and the speed.
    Demo {
        /// Bytes to move (suffixes k, M, G).
        #[arg(long, default_value = "1G")]
        bytes: String,
        /// Use loopback even as root.
        #[arg(long)]
        loopback: bool,
        #[command(flatten)]
        engine: EngineArgs,
    },
}

/// The process's qlog writer, once `--qlog` made one.
static QLOG: std::sync::OnceLock<stoq::qlog::QlogWriter> = std::sync::OnceLock::new();

/// Waits for the qlog writer (if any) to write what it was given, and says what it wrote.
fn finish_qlog() {
    if let Some(w) = QLOG.get() {
        w.flush();
        let s = w.stats();
        say!(
            "qlog: {} traces, {} events in {} ({} dropped, {} write errors)",
            s.traces,
            s.written,
            w.dir().display(),
            s.dropped,
            s.write_errors
        );
    }
}

/// Engine options shared by the commands that run one.
#[derive(Debug, Clone, clap::Args)]
struct EngineArgs {
    /// Force a backend (af_xdp, io_uring, udp); also STOQ_BACKEND.
    #[arg(long)]
    backend: Option<String>,
    /// Worker threads (0: one per core for a server, one for a client).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// A server on a socket backend keeps the XDP program in front of its socket as a
    /// filter from the start (by default it is attached only during a handshake flood):
    /// Initials beyond each source prefix's rate and malformed datagrams are dropped in
    /// the kernel (needs a specific listen address, root and the eBPF object).
    #[arg(long, conflicts_with = "no_xdp_filter")]
    xdp_filter: bool,
    /// Never put the XDP program in front of a socket backend, not even during a flood.
    #[arg(long)]
    no_xdp_filter: bool,
    /// Write a qlog trace of every connection into this directory: one JSON-SEQ file per
    /// connection (`<odcid>_<client|server>.sqlog`) for qvis, the `qlog` crate or
    /// `stoq qlog-chart`. Written by a thread of its own; events that find its queue full
    /// are dropped and counted, never waited for.
    #[arg(long, value_name = "DIR")]
    qlog: Option<PathBuf>,
    /// Run the qlog writer's thread on this CPU alone: tracing every packet at line rate
    /// costs it about a tenth of a core, which a worker pays when they share one.
    #[arg(long, value_name = "CPU", requires = "qlog")]
    qlog_cpu: Option<usize>,
}

impl EngineArgs {
    fn apply(&self, bind: SocketAddr) -> Result<stoq::engine::EngineConfig, String> {
        let mut c = stoq::engine::EngineConfig::new(bind);
        c.workers = self.workers;
        c.backend = self.backend_kind()?;
        c.xdp_filter = match (self.xdp_filter, self.no_xdp_filter) {
            (true, _) => stoq::engine::XdpFilter::On,
            (_, true) => stoq::engine::XdpFilter::Off,
            _ => stoq::engine::XdpFilter::UnderFlood,
        };
        if let Some(dir) = &self.qlog {
            // One writer per process (the demo's two endpoints share it), waited for at exit.
            let w = match QLOG.get() {
                Some(w) => w.clone(),
                None => {
                    let w = match self.qlog_cpu {
                        Some(cpu) => stoq::qlog::QlogWriter::on_cpu(dir, cpu)
                            .map_err(|e| format!("--qlog-cpu {cpu}: {e}")),
                        None => stoq::qlog::QlogWriter::new(dir)
                            .map_err(|e| format!("--qlog {}: {e}", dir.display())),
                    }?;
                    QLOG.get_or_init(|| w).clone()
                }
            };
            let mut t = (*c.endpoint.transport).clone();
            t.qlog = Some(w);
            c.endpoint.transport = std::sync::Arc::new(t);
        }
        Ok(c)
    }

    /// The backend `--backend` forces, if any.
    fn backend_kind(&self) -> Result<Option<BackendKind>, String> {
        self.backend
            .as_deref()
            .map(|b| {
                BackendKind::parse(b)
                    .ok_or_else(|| format!("--backend {b}: use af_xdp, io_uring or udp"))
            })
            .transpose()
    }
}

/// Parses a byte count with an optional k/M/G suffix (powers of 1024).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&s[..s.len() - 1], 1 << 20),
        Some('g' | 'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("{s:?} is not a byte count (e.g. 1G, 512M, 4096)"))
}

fn probe(bind: Option<SocketAddr>, engine: &EngineArgs) -> Result<(), String> {
    let sel = stoq::io::select::select(engine.backend_kind()?);
    for p in stoq::io::select::probe_all() {
        match p.result {
            Ok(()) => say!("{:<9} available", p.kind.name()),
            Err(why) => say!("{:<9} unavailable: {why}", p.kind.name()),
        }
    }
    let sel = match sel {
        Ok(s) => s,
        Err(e) => {
            say!("no backend: {e}");
            return Err(format!("no backend can run: {e}"));
        }
    };
    let Some(bind) = bind else {
        say!("chosen: {}", sel.chosen);
        return Ok(());
    };
    // What the host offers is not what an address gets (AF_XDP needs a specific address on
    // an interface with zero-copy, for one): open an endpoint there, as a server would, and
    // report its choice.
    let mut cfg = engine.apply(bind)?;
    cfg.workers = 1;
    let (_, public) = stoq::crypto::sig::SigningKey::generate(
        stoq::crypto::sig::SigAlg::Falcon512,
        &mut rand_core::OsRng,
    );
    let client = transfer::client_config("probe.stoq", stoq::handshake::Trust::PinnedKey(public));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let _in = rt.enter();
    let ep = stoq::Endpoint::client(cfg, std::sync::Arc::new(client))
        .map_err(|e| format!("no endpoint can open on {bind}: {e}"))?;
    let info = ep.info();
    say!(
        "chosen for {bind}: {} ({})",
        info.selection.chosen,
        info.detail
    );
    for (k, why) in &info.selection.skipped {
        say!("  {k} skipped: {why}");
    }
    Ok(())
}

/// Set once standard output has refused a write.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

/// Writes one line to standard output unless it is gone (see [`say!`]).
fn say_line(line: std::fmt::Arguments<'_>) {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    if writeln!(std::io::stdout().lock(), "{line}").is_err() {
        STDOUT_GONE.store(true, Ordering::Relaxed);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_logging(cli.verbose, cli.log_format);
    let r = match cli.command {
        Command::Keygen { out, alg } => keys::keygen(&out, &alg),
        Command::Cert {
            issuer_key,
            issuer_pub,
            subject,
            names,
            days,
            ca,
            issuer_cert,
            out,
        } => keys::cert(&keys::CertArgs {
            issuer_key,
            issuer_pub,
            subject,
            names,
            days,
            ca,
            issuer_cert,
            out,
        }),
        Command::Probe { bind, engine } => probe(bind, &engine),
        Command::Nat {
            stun,
            bind,
            timeout,
            engine,
        } => nat::run(&nat::NatArgs {
            stun: &stun,
            bind,
            timeout: std::time::Duration::from_secs(timeout),
            engine: &engine,
        }),
        Command::ClusterKeys { out, rotate, lb } => {
            keys::cluster_keys(out.as_deref(), rotate.as_deref(), lb)
        }
        Command::Server {
            listen,
            key,
            public,
            cert,
            dir,
            cluster_keys,
            client_ca,
            client_pin,
            metrics,
            engine,
        } => transfer::server(&transfer::ServerArgs {
            listen,
            key: &key,
            public: public.as_deref(),
            cert: cert.as_deref(),
            dir,
            cluster_keys: cluster_keys.as_deref(),
            client_ca: &client_ca,
            client_pin: client_pin.as_deref(),
            metrics,
            engine: &engine,
        }),
        Command::Client {
            server,
            name,
            pin,
            ca,
            send,
            get,
            out,
            attempts,
            load,
            key,
            public,
            cert,
            engine,
        } => transfer::client(&transfer::ClientArgs {
            server,
            name,
            pin,
            ca,
            send,
            get,
            out,
            attempts,
            load,
            key,
            public,
            cert,
            engine,
        }),
        Command::QlogChart { file, out } => qlog_chart::run(&file, &out),
        Command::Rendezvous {
            listen,
            key,
            public,
            cert,
            engine,
        } => peer::rendezvous(listen, &key, public.as_deref(), cert.as_deref(), &engine),
        Command::Peer {
            rendezvous,
            name,
            id,
            pin,
            ca,
            key,
            public,
            cert,
            bind,
            connect,
            bytes,
            once,
            turn,
            turn_user,
            turn_password,
            engine,
        } => parse_bytes(&bytes).and_then(|bytes| {
            peer::peer(&peer::PeerArgs {
                rendezvous,
                name,
                id,
                pin,
                ca,
                key,
                public,
                cert,
                bind,
                connect,
                bytes,
                once,
                turn,
                turn_user,
                turn_password,
                engine,
            })
        }),
        Command::Demo {
            bytes,
            loopback,
            engine,
        } => demo::run(&bytes, loopback, &engine),
    };
    finish_qlog();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stoq: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("3k"), Ok(3072));
        assert!(parse_bytes("12x").is_err());
        assert!(parse_bytes("99999999999999G").is_err());
    }

    #[test]
    fn cli_parses() {
        Cli::command_check();
    }

    impl Cli {
        fn command_check() {
            use clap::CommandFactory;
            Self::command().debug_assert();
        }
    }
}
