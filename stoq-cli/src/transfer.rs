//! `stoq server` and `stoq client`, and the small request protocol they speak.
//!
//! Each request is one bidirectional stream. It starts with one header line (at most
//! 1,024 bytes):
//! - `PUT <name> <size>` then `size` bytes: the server stores them as `<name>` in its
//!   directory (or checks and discards them without one) and answers
//!   `OK <sha256-hex> <bytes>`;
//! - `SINK <size>` then `size` bytes: checked and discarded, same answer;
//! - `GET <name> [<offset>]`: the server answers `OK <bytes> <sha256-hex of the whole
//!   file>` and the file from `offset`, or `ERR <reason>`. The client checks the hash of
//!   the whole file it assembled, resumed parts included.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use stoq::api::{Attempt, Backoff, RecvStream, SendStream};
use stoq::crypto::CipherSuite;
use stoq::crypto::sig::SigAlg;
use stoq::handshake::params::TransportParams;
use stoq::handshake::{ClientConfig, Credential, Resumption, ServerConfig, Trust};
use stoq::{Connection, Endpoint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::{EngineArgs, keys, parse_bytes};

const MAX_HEADER: usize = 1024;
const CHUNK: usize = 256 << 10;

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// A file name the server will store or serve: one path component, no hidden files.
fn safe_name(name: &str) -> Option<&str> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0']);
    ok.then_some(name)
}

/// Reads the header line; returns it and the bytes read past it.
async fn read_header(recv: &mut RecvStream) -> Result<(String, Vec<u8>), String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        if let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let rest = buf.split_off(i + 1);
            buf.pop();
            let line = String::from_utf8(buf).map_err(|_| "header is not UTF-8".to_string())?;
            return Ok((line, rest));
        }
        if buf.len() > MAX_HEADER {
            return Err("header longer than 1024 bytes".into());
        }
        match recv
            .read_data(&mut chunk)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(n) => buf.extend_from_slice(&chunk[..n]),
            None => return Err("stream ended inside the header".into()),
        }
    }
}

/// Reads `size` bytes (after `first`) into `sink`, hashing them; returns the hash and
/// the byte count (which differs from `size` if the stream ended early or ran long).
async fn receive_body(
    recv: &mut RecvStream,
    first: Vec<u8>,
    size: u64,
    mut sink: Option<&mut tokio::fs::File>,
) -> Result<([u8; 32], u64), String> {
    let mut h = Sha256::new();
    let mut n = first.len() as u64;
    h.update(&first);
    if let Some(f) = sink.as_deref_mut() {
        f.write_all(&first).await.map_err(|e| e.to_string())?;
    }
    let mut buf = vec![0u8; CHUNK];
    while let Some(k) = recv.read_data(&mut buf).await.map_err(|e| e.to_string())? {
        h.update(&buf[..k]);
        n += k as u64;
        if n > size {
            return Err(format!("more than the announced {size} bytes"));
        }
        if let Some(f) = sink.as_deref_mut() {
            f.write_all(&buf[..k]).await.map_err(|e| e.to_string())?;
        }
    }
    Ok((h.finalize().into(), n))
}

async fn reply(send: &mut SendStream, line: &str) {
    let _ = send.write_all_data(format!("{line}\n").as_bytes()).await;
    let _ = send.finish();
}

/// Serves one request stream.
pub(crate) async fn serve_request(
    mut send: SendStream,
    mut recv: RecvStream,
    dir: Option<Arc<PathBuf>>,
) {
    let (line, first) = match read_header(&mut recv).await {
        Ok(x) => x,
        Err(e) => return reply(&mut send, &format!("ERR {e}")).await,
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["SINK", size] | ["PUT", _, size] => {
            let Ok(size) = size.parse::<u64>() else {
                return reply(&mut send, "ERR bad size").await;
            };
            let target = match (words[0], &dir) {
                ("PUT", Some(d)) => match safe_name(words[1]) {
                    Some(n) => Some(d.join(n)),
                    None => return reply(&mut send, "ERR bad file name").await,
                },
                _ => None,
            };
            let part = target.as_ref().map(|t| t.with_extension("part"));
            let mut file = match &part {
                Some(p) => match tokio::fs::File::create(p).await {
                    Ok(f) => Some(f),
                    Err(e) => return reply(&mut send, &format!("ERR {e}")).await,
                },
                None => None,
            };
            match receive_body(&mut recv, first, size, file.as_mut()).await {
                Ok((hash, n)) if n == size => {
                    if let (Some(p), Some(t)) = (&part, &target)
                        && let Err(e) = tokio::fs::rename(p, t).await
                    {
                        return reply(&mut send, &format!("ERR {e}")).await;
                    }
                    reply(&mut send, &format!("OK {} {n}", hex(&hash))).await;
                }
                Ok((_, n)) => reply(&mut send, &format!("ERR got {n} of {size} bytes")).await,
                Err(e) => reply(&mut send, &format!("ERR {e}")).await,
            }
        }
        ["GET", name] | ["GET", name, _] => {
            let offset = words
                .get(2)
                .and_then(|o| o.parse::<u64>().ok())
                .unwrap_or(0);
            let (Some(d), Some(n)) = (&dir, safe_name(name)) else {
                return reply(&mut send, "ERR no such file").await;
            };
            let mut f = match tokio::fs::File::open(d.join(n)).await {
                Ok(f) => f,
                Err(e) => return reply(&mut send, &format!("ERR {e}")).await,
            };
            let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
            if offset > len {
                return reply(&mut send, "ERR offset past the end").await;
            }
            let hash = match file_hash(&mut f).await {
                Ok(h) => h,
                Err(e) => return reply(&mut send, &format!("ERR {e}")).await,
            };
            use tokio::io::AsyncSeekExt;
            if f.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
                return reply(&mut send, "ERR seek failed").await;
            }
            if send
                .write_all_data(format!("OK {} {}\n", len - offset, hex(&hash)).as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let mut buf = vec![0u8; CHUNK];
            loop {
                match f.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(k) => {
                        if send.write_all_data(&buf[..k]).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => {
                        let _ = send.reset(1);
                        return;
                    }
                }
            }
            let _ = send.finish();
        }
        _ => reply(&mut send, "ERR unknown request").await,
    }
}

/// SHA-256 of a whole file (from its start).
async fn file_hash(f: &mut tokio::fs::File) -> std::io::Result<[u8; 32]> {
    use tokio::io::AsyncSeekExt;
    f.seek(std::io::SeekFrom::Start(0)).await?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Serves every request stream of one connection.
/// Serves one connection on its worker (`Endpoint::serve`): each request is a task on the
/// same worker, so its stream calls take no lock and wake no other thread.
pub(crate) async fn serve_connection(conn: Connection, dir: Option<Arc<PathBuf>>) {
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::task::spawn_local(serve_request(send, recv, dir.clone()));
    }
}

/// The command's own runtime: one thread. The server's connections are served on the
/// engine's workers; the client's engine runs on this runtime, beside the transfer.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

/// A credential from a private key and either its public key (raw-key mode) or its
/// certificate chain.
pub(crate) fn credential(
    key: &Path,
    public: Option<&Path>,
    cert: Option<&Path>,
) -> Result<Credential, String> {
    let key = keys::private_key(key)?;
    Ok(match (public, cert) {
        (_, Some(c)) => Credential::chain(key, keys::certificate_chain(c)?, &mut rand_core::OsRng)
            .map_err(|e| format!("{}: {e}", c.display()))?,
        (Some(p), None) => Credential::RawKey {
            key,
            public: keys::public_key(p)?,
        },
        (None, None) => return Err("give --public (raw-key mode) or --cert".into()),
    })
}

pub(crate) fn server_config(credential: Credential) -> ServerConfig {
    ServerConfig {
        alpn: Vec::new(),
        credential,
        suites: CipherSuite::ALL.to_vec(),
        params: TransportParams::default(),
        client_auth: None,
        tickets: stoq::handshake::TicketSettings::default(),
        batch_signing: true,
        early_data: stoq::handshake::EarlyDataSettings::default(),
    }
}

pub(crate) fn client_config(name: &str, trust: Trust) -> ClientConfig {
    ClientConfig {
        alpn: Vec::new(),
        server_name: name.to_string(),
        trust,
        suites: CipherSuite::local_preference().collect(),
        sig_algs: SigAlg::ALL.to_vec(),
        params: TransportParams::default(),
        credential: None,
        resumption: Some(Arc::new(stoq::handshake::SessionCache::new(256))),
        batch_signatures: true,
        early_data: false,
    }
}

/// What `stoq server` was asked to do.
pub(crate) struct ServerArgs<'a> {
    pub(crate) listen: SocketAddr,
    pub(crate) key: &'a Path,
    pub(crate) public: Option<&'a Path>,
    pub(crate) cert: Option<&'a Path>,
    pub(crate) dir: Option<PathBuf>,
    pub(crate) cluster_keys: Option<&'a Path>,
    pub(crate) client_ca: &'a [PathBuf],
    pub(crate) client_pin: Option<&'a Path>,
    pub(crate) metrics: Option<SocketAddr>,
    pub(crate) engine: &'a EngineArgs,
}

pub(crate) fn server(a: &ServerArgs<'_>) -> Result<(), String> {
    let ServerArgs {
        listen,
        key,
        public,
        cert,
        cluster_keys,
        metrics,
        engine,
        ..
    } = *a;
    let dir = a.dir.clone();
    // Read at start and again on SIGHUP: a new key, certificate or client CA file takes
    // over without a restart.
    let load = || -> Result<ServerConfig, String> {
        let mut c = server_config(credential(key, public, cert)?);
        c.client_auth = match (a.client_pin, a.client_ca) {
            (Some(p), _) => Some(Trust::PinnedKey(keys::public_key(p)?)),
            (None, []) => None,
            (None, cas) => Some(Trust::Anchors(
                cas.iter()
                    .map(|c| keys::trust_anchor(c))
                    .collect::<Result<_, _>>()?,
            )),
        };
        Ok(c)
    };
    let server_cfg = load()?;
    if let Some(d) = &dir
        && !d.is_dir()
    {
        return Err(format!("--dir {}: not a directory", d.display()));
    }
    let mut cfg = engine.apply(listen)?;
    if let Some(path) = cluster_keys {
        cfg.endpoint.cluster_keys = Some(Arc::new(keys::cluster_keys_file(path)?));
    }
    runtime()?.block_on(async {
        // SIGINT (a terminal) or SIGTERM (systemd, Kubernetes, `kill`): drain, then exit 0.
        // Watched before the banner, so a signal sent as soon as it is read is caught.
        use tokio::signal::unix::{SignalKind, signal};
        let watch = |k: SignalKind, name: &str| {
            signal(k).map_err(|e| format!("cannot watch for {name}: {e}"))
        };
        let mut int = watch(SignalKind::interrupt(), "SIGINT")?;
        let mut term = watch(SignalKind::terminate(), "SIGTERM")?;
        // SIGHUP reloads the cluster key file (a rotation): no connection is dropped.
        let mut hup = watch(SignalKind::hangup(), "SIGHUP")?;
        let ep = Endpoint::server(cfg, Arc::new(server_cfg))
            .map_err(|e| e.to_string())?;
        say!(
            "listening on {} with {} workers: {}",
            ep.local_addr(),
            ep.info().workers,
            ep.info().selection
        );
        // Kept until the server returns: dropping it stops the HTTP thread.
        let _metrics = match metrics {
            Some(addr) => {
                let m = ep
                    .metrics()
                    .serve(addr)
                    .map_err(|e| format!("--metrics {addr}: {e}"))?;
                say!("metrics on http://{}/metrics", m.local_addr());
                Some(m)
            }
            None => None,
        };
        let dir = dir.map(Arc::new);
        // Every connection is served on the worker that owns it.
        ep.serve(move |c| serve_connection(c, dir.clone()))
            .map_err(|e| e.to_string())?;
        let sig = loop {
            tokio::select! {
                _ = int.recv() => break "SIGINT",
                _ = term.recv() => break "SIGTERM",
                _ = hup.recv() => {
                    match cluster_keys.map(keys::cluster_keys_file) {
                        Some(Ok(k)) => {
                            let (current, all) = (k.current(), k.generations().collect::<Vec<_>>());
                            ep.set_cluster_keys(k);
                            say!("SIGHUP: cluster keys reloaded (current generation {current}, generations {all:?})");
                        }
                        Some(Err(e)) => say!("SIGHUP: cluster keys kept: {e}"),
                        None => say!("SIGHUP: no --cluster-keys file to reload"),
                    }
                    // The key, certificate and client trust files: new clients meet them,
                    // established connections carry on. A file that does not load keeps
                    // the settings in force.
                    match load().map(|c| ep.set_server_config(Arc::new(c))) {
                        Ok(Ok(())) => say!("SIGHUP: server key and client trust reloaded"),
                        Ok(Err(e)) => say!("SIGHUP: server settings kept: {e}"),
                        Err(e) => say!("SIGHUP: server settings kept: {e}"),
                    }
                }
            }
        };
        say!("{sig}: draining (up to 5 s)");
        let r = ep.shutdown(Duration::from_secs(5)).await;
        say!(
            "shut down: {} connections, {} with unacknowledged data",
            r.connections,
            r.unacknowledged
        );
        for c in r
            .per_connection
            .iter()
            .filter(|c| c.unacknowledged_bytes > 0)
        {
            say!(
                "  {}: {} bytes unacknowledged",
                c.remote,
                c.unacknowledged_bytes
            );
        }
        Ok(())
    })
}

/// What `stoq client` was given.
#[derive(Debug)]
pub(crate) struct ClientArgs {
    pub(crate) server: SocketAddr,
    pub(crate) name: String,
    pub(crate) pin: Option<PathBuf>,
    pub(crate) ca: Option<PathBuf>,
    pub(crate) send: Option<PathBuf>,
    pub(crate) get: Option<String>,
    pub(crate) out: Option<PathBuf>,
    /// Connection attempts for a download (reconnecting after a loss).
    pub(crate) attempts: u32,
    pub(crate) load: Option<String>,
    pub(crate) key: Option<PathBuf>,
    pub(crate) public: Option<PathBuf>,
    pub(crate) cert: Option<PathBuf>,
    pub(crate) engine: EngineArgs,
}

/// The figures a transfer reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    pub(crate) bytes: u64,
    pub(crate) elapsed: Duration,
    pub(crate) hash_ok: bool,
}

impl Outcome {
    pub(crate) fn gbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }
}

fn progress(total: u64) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

/// Sends a header and `size` bytes from `source` on a new stream; waits for the server's
/// `OK <hash> <bytes>` and checks the hash.
pub(crate) async fn upload(
    conn: &Connection,
    header: &str,
    mut source: impl AsyncRead + Unpin,
    size: u64,
    pb: &ProgressBar,
) -> Result<Outcome, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let start = Instant::now();
    send.write_all_data(format!("{header}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = source
            .read(&mut buf[..want])
            .await
            .map_err(|e| format!("reading the source: {e}"))?;
        if n == 0 {
            return Err("the source ended early".into());
        }
        h.update(&buf[..n]);
        send.write_all_data(&buf[..n])
            .await
            .map_err(|e| e.to_string())?;
        left -= n as u64;
        pb.inc(n as u64);
    }
    send.finish().map_err(|e| e.to_string())?;
    let answer = recv
        .read_to_end_limited(MAX_HEADER)
        .await
        .map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    let words: Vec<&str> = answer.split_whitespace().collect();
    match words.as_slice() {
        ["OK", hash, n] => Ok(Outcome {
            bytes: n.parse().unwrap_or(0),
            elapsed,
            hash_ok: *hash == hex(&h.finalize()),
        }),
        _ => Err(format!("server: {}", answer.trim())),
    }
}

/// A reader of endless generated bytes (a repeating pseudo-random pattern).
pub(crate) struct Pattern {
    block: Vec<u8>,
    pos: usize,
}

impl Pattern {
    pub(crate) fn new() -> Self {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let block = (0..(1 << 20) + 7)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Self { block, pos: 0 }
    }
}

impl AsyncRead for Pattern {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = buf.remaining().min(self.block.len() - self.pos);
        let pos = self.pos;
        buf.put_slice(&self.block[pos..pos + n]);
        self.pos = (pos + n) % self.block.len();
        std::task::Poll::Ready(Ok(()))
    }
}

/// One line of figures about a finished transfer.
pub(crate) fn report(verb: &str, o: &Outcome, conn: &Connection) -> String {
    let mut s = format!(
        "{verb} {:.2} MiB in {:.2} s: {:.2} Gbit/s; SHA-256 {}",
        o.bytes as f64 / (1 << 20) as f64,
        o.elapsed.as_secs_f64(),
        o.gbit_per_s(),
        if o.hash_ok { "matches" } else { "MISMATCH" }
    );
    if let Some(st) = conn.stats() {
        let _ = write!(
            s,
            "; RTT {:.3} ms (min {:.3} ms); {} packets lost, {} retransmitted bytes; CC {}",
            st.smoothed_rtt.as_secs_f64() * 1e3,
            st.min_rtt.as_secs_f64() * 1e3,
            st.lost_packets,
            st.retransmitted_bytes,
            st.cc_state
        );
    }
    s
}

pub(crate) fn client(a: &ClientArgs) -> Result<(), String> {
    let trust = match (&a.pin, &a.ca) {
        (Some(p), _) => Trust::PinnedKey(keys::public_key(p)?),
        (None, Some(c)) => Trust::Anchors(vec![keys::trust_anchor(c)?]),
        (None, None) => return Err("give --pin (the server's public key) or --ca".into()),
    };
    let bind: SocketAddr = if a.server.is_ipv6() {
        "[::]:0".parse().expect("literal")
    } else {
        "0.0.0.0:0".parse().expect("literal")
    };
    let mut cfg = a.engine.apply(bind)?;
    if a.get.is_some() && a.attempts > 1 {
        // A downloading client only answers what arrives: when the server goes, it would
        // hear nothing until its idle timeout. A PING a second reaches a restarted server,
        // whose stateless reset (with the cluster's keys) ends the old connection at once.
        let mut t = (*cfg.endpoint.transport).clone();
        t.keep_alive = Some(Duration::from_secs(1));
        cfg.endpoint.transport = Arc::new(t);
    }
    runtime()?.block_on(async {
        // The client's engine runs on this runtime: the transfer and its connection share
        // one thread.
        let mut client_cfg = client_config(&a.name, trust);
        client_cfg.credential = match &a.key {
            Some(k) => Some(credential(k, a.public.as_deref(), a.cert.as_deref())?),
            None => None,
        };
        let ep =
            Endpoint::client_in_runtime(cfg, Arc::new(client_cfg)).map_err(|e| e.to_string())?;
        eprintln!("{}", ep.info().selection);
        if let Some(name) = &a.get {
            let result = download_reconnecting(&ep, a, name).await;
            ep.shutdown(Duration::from_secs(2)).await;
            return result;
        }
        let conn = ep
            .connect(a.server, &a.name)
            .await
            .map_err(|e| e.to_string())?;
        let result = if let Some(path) = &a.send {
            let f = tokio::fs::File::open(path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let size = f.metadata().await.map_err(|e| e.to_string())?.len();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(safe_name)
                .ok_or("the file name cannot be sent (one path component, not hidden)")?;
            let pb = progress(size);
            let o = upload(&conn, &format!("PUT {name} {size}"), f, size, &pb).await?;
            pb.finish_and_clear();
            say!("{}", report("sent", &o, &conn));
            if o.hash_ok {
                Ok(())
            } else {
                Err("the server's SHA-256 differs from ours".to_string())
            }
        } else {
            let size = parse_bytes(a.load.as_deref().unwrap_or("1G"))?;
            let pb = progress(size);
            let o = upload(&conn, &format!("SINK {size}"), Pattern::new(), size, &pb).await?;
            pb.finish_and_clear();
            say!("{}", report("sent", &o, &conn));
            Ok(())
        };
        conn.close(0, b"done");
        ep.shutdown(Duration::from_secs(2)).await;
        result
    })
}

/// Downloads `name`, connecting with backoff and, when the connection is lost in a way
/// another attempt may cure (a restarted server's reset, a timeout), connecting again and
/// going on from what the partial file holds.
async fn download_reconnecting(ep: &Endpoint, a: &ClientArgs, name: &str) -> Result<(), String> {
    let backoff = Backoff {
        max_attempts: Some(a.attempts),
        ..Backoff::default()
    };
    let report = |t: &Attempt| match t.retry_in {
        Some(d) => eprintln!(
            "connection attempt {} failed: {}; trying again in {:.1} s",
            t.number,
            t.error,
            d.as_secs_f64()
        ),
        None => eprintln!("connection attempt {} failed: {}", t.number, t.error),
    };
    let mut losses = 0u32;
    loop {
        let conn = ep
            .connect_with_backoff(a.server, &a.name, &backoff, report)
            .await
            .map_err(|e| e.to_string())?;
        if losses > 0 {
            let how = match conn.handshake_data().map(|d| d.resumption) {
                Some(Resumption::Accepted) => "session resumed from a ticket".to_string(),
                Some(Resumption::Refused(r)) => format!("full handshake, ticket {}", r.name()),
                _ => "full handshake".to_string(),
            };
            eprintln!("reconnected ({how})");
        }
        match download(&conn, name, a.out.as_deref()).await {
            Ok(()) => {
                conn.close(0, b"done");
                return Ok(());
            }
            Err(e) => {
                let lost = conn
                    .close_reason()
                    .filter(|r| stoq::api::is_transient(&stoq::api::ConnectError::Lost(r.clone())));
                losses += 1;
                match lost {
                    Some(reason) if losses < a.attempts => {
                        eprintln!("connection lost ({reason}); reconnecting to resume");
                    }
                    _ => return Err(e),
                }
            }
        }
    }
}

/// Fetches `name` into `out`, resuming a partial `<out>.part` left by an earlier run.
async fn download(conn: &Connection, name: &str, out: Option<&Path>) -> Result<(), String> {
    let out = out.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    let part = out.with_extension("part");
    let have = tokio::fs::metadata(&part).await.map_or(0, |m| m.len());
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all_data(format!("GET {name} {have}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let (line, first) = read_header(&mut recv).await?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let (size, want): (u64, String) = match words.as_slice() {
        ["OK", n, h] => (
            n.parse().map_err(|_| "bad size from the server")?,
            (*h).to_string(),
        ),
        _ => return Err(format!("server: {line}")),
    };
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&part)
        .await
        .map_err(|e| format!("{}: {e}", part.display()))?;
    let start = Instant::now();
    let pb = progress(have + size);
    pb.set_position(have);
    let mut n = first.len() as u64;
    f.write_all(&first).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let k = match recv.read_data(&mut buf).await {
            Ok(Some(k)) => k,
            Ok(None) => break,
            Err(e) => {
                // What arrived stays in the partial file, for the next attempt.
                let _ = f.flush().await;
                pb.finish_and_clear();
                return Err(format!("after {} bytes: {e}", have + n));
            }
        };
        f.write_all(&buf[..k]).await.map_err(|e| e.to_string())?;
        n += k as u64;
        pb.inc(k as u64);
    }
    f.flush().await.map_err(|e| e.to_string())?;
    pb.finish_and_clear();
    if n != size {
        return Err(format!(
            "got {n} of {size} bytes; run again to resume from {}",
            have + n
        ));
    }
    let mut whole = tokio::fs::File::open(&part)
        .await
        .map_err(|e| e.to_string())?;
    let got = hex(&file_hash(&mut whole).await.map_err(|e| e.to_string())?);
    if got != want {
        // A resumed part that does not match the file as it is now: start over next time.
        let _ = tokio::fs::remove_file(&part).await;
        return Err(format!(
            "SHA-256 mismatch ({got} here, {want} at the server): the partial file was removed; run again"
        ));
    }
    tokio::fs::rename(&part, &out)
        .await
        .map_err(|e| e.to_string())?;
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    say!(
        "received {} ({} bytes, {} resumed) in {secs:.2} s: {:.2} Gbit/s; SHA-256 matches",
        out.display(),
        have + n,
        have,
        n as f64 * 8.0 / secs / 1e9
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_plain_component() {
        assert_eq!(safe_name("a.bin"), Some("a.bin"));
        for bad in ["", ".hidden", "../x", "a/b", "a\\b", "a\0b"] {
            assert_eq!(safe_name(bad), None, "{bad:?}");
        }
        assert_eq!(safe_name(&"x".repeat(256)), None);
    }
}
