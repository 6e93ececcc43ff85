//! The peers without encryption: kernel TCP and raw UDP (sendmmsg/recvmmsg with GSO/GRO,
//! through the same `stoq::io::udp` backend STOQ's UDP path uses, minus all protocol), and
//! the round-trip probe used by the bottleneck run.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use stoq::io::udp::{UdpBackend, UdpConfig};
use stoq::io::{Backend, RxBatch, TxBatch};

use crate::roles::{Ready, Stop};
use crate::spec::{Outcome, RoleSpec, Scenario, Subject, quantiles};

const CHUNK: usize = 256 << 10;

fn poll(fd: i32, events: i16, ms: i32) {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// The UDP echo beside every server, on its port + 1: what probes and raw-UDP ping-pong
/// bounce off.
pub(crate) fn echo(addr: SocketAddr, stop: Stop) -> std::io::Result<std::thread::JoinHandle<()>> {
    let s = UdpSocket::bind(addr)?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(std::thread::spawn(move || {
        let mut b = [0u8; 2048];
        while !stop.is_set() {
            if let Ok((n, from)) = s.recv_from(&mut b) {
                let _ = s.send_to(&b[..n], from);
            }
        }
    }))
}

/// Kernel TCP server: `B` streams are counted and answered with the count, `R` streams
/// echoed 64 bytes at a time.
pub(crate) fn tcp_server(spec: &RoleSpec, ready: Ready, stop: Stop) -> Result<(), String> {
    let l = TcpListener::bind(spec.server).map_err(|e| e.to_string())?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let Subject::Tcp { cc } = &spec.subject else {
        return Err("not TCP".into());
    };
    ready(format!("kernel TCP, {cc}, no encryption"));
    while !stop.is_set() {
        match l.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_nodelay(true);
                std::thread::spawn(move || {
                    let mut tag = [0u8; 1];
                    if s.read_exact(&mut tag).is_err() {
                        return;
                    }
                    if tag[0] == b'R' {
                        let mut b = [0u8; 64];
                        while s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {}
                        return;
                    }
                    let mut buf = vec![0u8; CHUNK];
                    let mut n = 0u64;
                    while let Ok(k) = s.read(&mut buf) {
                        if k == 0 {
                            break;
                        }
                        n += k as u64;
                    }
                    let _ = s.write_all(&n.to_be_bytes());
                });
            }
            Err(_) => poll(std::os::fd::AsRawFd::as_raw_fd(&l), libc::POLLIN, 50),
        }
    }
    Ok(())
}

/// Waits up to `ms` for `fd` to be readable.
pub(crate) fn poll_fd(fd: i32, ms: i32) {
    poll(fd, libc::POLLIN, ms);
}

fn tcp_connect(spec: &RoleSpec, tag: u8) -> Result<TcpStream, String> {
    let mut s = tcp_socket(spec)?;
    s.write_all(&[tag]).map_err(|e| e.to_string())?;
    Ok(s)
}

/// A TCP connection to the server, with the subject's congestion control and no delay.
pub(crate) fn tcp_socket(spec: &RoleSpec) -> Result<TcpStream, String> {
    let (Subject::Tcp { cc } | Subject::Tls { cc }) = &spec.subject else {
        return Err("not TCP".into());
    };
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(spec.server),
        socket2::Type::STREAM,
        None,
    )
    .map_err(|e| e.to_string())?;
    sock.set_tcp_congestion(cc.as_bytes())
        .map_err(|e| format!("TCP_CONGESTION {cc}: {e} (is tcp_{cc} loaded?)"))?;
    sock.set_tcp_nodelay(true).map_err(|e| e.to_string())?;
    sock.bind(&spec.client_bind.into())
        .map_err(|e| e.to_string())?;
    sock.connect(&spec.server.into())
        .map_err(|e| e.to_string())?;
    Ok(sock.into())
}

/// Kernel TCP client.
pub(crate) fn tcp_client(spec: &RoleSpec) -> Result<Outcome, String> {
    let mut out = Outcome::default();
    match spec.scenario {
        Scenario::Bulk { .. } | Scenario::Shaped { .. } => {
            let (conns, secs, shaped) = spec.scenario.bulk_shape();
            let probe = if shaped {
                let p = Probe::start(spec.client_bind, spec.server)?;
                out.base_rtt_us = p.baseline();
                p.run();
                Some(p)
            } else {
                None
            };
            let streams = (0..conns)
                .map(|_| tcp_connect(spec, b'B'))
                .collect::<Result<Vec<_>, _>>()?;
            crate::spec::start_measuring(&mut out);
            (out.bytes, out.secs) =
                bulk_send(streams, secs, |s| s.shutdown(std::net::Shutdown::Write))?;
            if let Some(p) = probe {
                out.quantiles_us = p.finish();
            }
        }
        Scenario::Rr { secs } => {
            let mut s = tcp_connect(spec, b'R')?;
            crate::spec::start_measuring(&mut out);
            let (mut lat, n, el) = ping_pong(secs, |b| {
                s.write_all(b)?;
                s.read_exact(b)
            })?;
            out.secs = el;
            out.count = n;
            out.quantiles_us = quantiles(&mut lat);
        }
        _ => return Err("kernel TCP runs bulk, shaped and request/response only".into()),
    }
    out.detail = "kernel TCP".into();
    Ok(out)
}

/// Writes on each stream, from a thread of its own, for `secs`; then ends it with `finish`
/// (a TCP shutdown, a TLS close_notify) and checks the server's count of what arrived (8
/// bytes back). Returns the bytes sent and the seconds taken.
pub(crate) fn bulk_send<S: Read + Write + Send + 'static>(
    streams: Vec<S>,
    secs: f64,
    finish: fn(&mut S) -> std::io::Result<()>,
) -> Result<(u64, f64), String> {
    let t = Instant::now();
    let joins: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                let chunk = vec![0x5au8; CHUNK];
                let mut sent = 0u64;
                while t.elapsed().as_secs_f64() < secs {
                    s.write_all(&chunk).map_err(|e| e.to_string())?;
                    sent += CHUNK as u64;
                }
                finish(&mut s).map_err(|e| e.to_string())?;
                let mut b = [0u8; 8];
                s.read_exact(&mut b).map_err(|e| e.to_string())?;
                let got = u64::from_be_bytes(b);
                if got != sent {
                    return Err(format!("the server counted {got} of {sent} bytes"));
                }
                Ok(sent)
            })
        })
        .collect();
    let mut bytes = 0;
    for j in joins {
        bytes += j.join().map_err(|_| "sender panicked")??;
    }
    Ok((bytes, t.elapsed().as_secs_f64()))
}

/// Times 64-byte round trips by `rt` for `secs`: the latencies (ns), their count and the
/// seconds taken.
pub(crate) fn ping_pong(
    secs: f64,
    mut rt: impl FnMut(&mut [u8]) -> std::io::Result<()>,
) -> Result<(Vec<u64>, u64, f64), String> {
    let mut lat = Vec::with_capacity(1 << 20);
    let mut b = [7u8; 64];
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        let s = Instant::now();
        rt(&mut b).map_err(|e| e.to_string())?;
        lat.push(s.elapsed().as_nanos() as u64);
    }
    let n = lat.len() as u64;
    Ok((lat, n, t.elapsed().as_secs_f64()))
}

/// Raw UDP server: counts `D` datagrams (bytes, count, first-to-last span) and answers a
/// `Q` with those three numbers; echoes `E`.
pub(crate) fn udp_server(spec: &RoleSpec, ready: Ready, stop: Stop) -> Result<(), String> {
    let mut b = UdpBackend::bind(&UdpConfig::new(spec.server)).map_err(|e| e.to_string())?;
    let caps = b.capabilities();
    ready(format!(
        "raw UDP, recvmmsg, GRO {}",
        if caps.gro { "on" } else { "off" }
    ));
    let fd = b.readiness();
    let mut rx = RxBatch::new(64, 65_536);
    let (mut bytes, mut dgrams) = (0u64, 0u64);
    let (mut first, mut last) = (None::<Instant>, Instant::now());
    while !stop.is_set() {
        rx.clear();
        let n = b.recv(&mut rx).unwrap_or(0);
        if n == 0 {
            poll(fd, libc::POLLIN, 50);
            continue;
        }
        let now = Instant::now();
        let mut replies = Vec::new();
        rx.for_each(|from, _, d| match d.first() {
            Some(b'D') => {
                bytes += d.len() as u64;
                dgrams += 1;
                first.get_or_insert(now);
                last = now;
            }
            Some(b'Q') => {
                let span = first.map_or(0, |f| (last - f).as_nanos() as u64);
                let mut r = [0u8; 25];
                r[0] = b'A';
                r[1..9].copy_from_slice(&bytes.to_be_bytes());
                r[9..17].copy_from_slice(&dgrams.to_be_bytes());
                r[17..25].copy_from_slice(&span.to_be_bytes());
                replies.push((from, r.to_vec()));
            }
            Some(b'E') => replies.push((from, d.to_vec())),
            _ => {}
        });
        for (to, r) in replies {
            let _ = b.socket().send_to(&r, &to.into());
        }
    }
    Ok(())
}

/// Raw UDP client: a GSO blast for `secs` (bulk), or 64-byte ping-pong.
pub(crate) fn udp_client(spec: &RoleSpec) -> Result<Outcome, String> {
    let mut out = Outcome {
        detail: "raw UDP".into(),
        ..Outcome::default()
    };
    match spec.scenario {
        Scenario::Bulk { secs, .. } => {
            let mut b =
                UdpBackend::bind(&UdpConfig::new(spec.client_bind)).map_err(|e| e.to_string())?;
            let caps = b.capabilities();
            out.detail = format!("raw UDP, sendmmsg, GSO {} segments", caps.gso_segments);
            let fd = b.readiness();
            let size = spec.udp_payload;
            let mut tx = TxBatch::new(256, size);
            tx.set_max_segments(caps.gso_segments.max(1));
            crate::spec::start_measuring(&mut out);
            let t = Instant::now();
            while t.elapsed().as_secs_f64() < secs {
                while tx.has_room() {
                    tx.push_with(|buf| {
                        buf[0] = b'D';
                        Some(stoq::io::Transmit::new(spec.server, size))
                    });
                }
                out.sent += tx.datagrams() as u64;
                while !tx.is_empty() {
                    b.send(&mut tx).map_err(|e| e.to_string())?;
                    if !tx.is_empty() {
                        poll(fd, libc::POLLOUT, 10);
                    }
                }
            }
            // Let the receiver drain, then ask what arrived.
            std::thread::sleep(Duration::from_millis(100));
            let mut got = None;
            for _ in 0..40 {
                let _ = b.socket().send_to(b"Q", &spec.server.into());
                poll(fd, libc::POLLIN, 50);
                let mut rx = RxBatch::new(8, 2048);
                let _ = b.recv(&mut rx);
                rx.for_each(|_, _, d| {
                    if d.len() == 25 && d[0] == b'A' {
                        let u =
                            |i: usize| u64::from_be_bytes(d[i..i + 8].try_into().unwrap_or([0; 8]));
                        got = Some((u(1), u(9), u(17)));
                    }
                });
                if got.is_some() {
                    break;
                }
            }
            let (bytes, dgrams, span_ns) = got.ok_or("the raw UDP server never answered")?;
            out.bytes = bytes;
            out.count = dgrams;
            out.secs = (span_ns as f64 / 1e9).max(1e-6);
        }
        Scenario::Rr { secs } => {
            let s = UdpSocket::bind(spec.client_bind).map_err(|e| e.to_string())?;
            s.connect(spec.server).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(1)))
                .map_err(|e| e.to_string())?;
            crate::spec::start_measuring(&mut out);
            let (mut lat, n, el) = ping_pong(secs, |b| {
                b[0] = b'E';
                s.send(b)?;
                s.recv(b).map(|_| ())
            })?;
            out.secs = el;
            out.count = n;
            out.quantiles_us = quantiles(&mut lat);
        }
        _ => return Err("raw UDP runs bulk and ping-pong only".into()),
    }
    Ok(out)
}

/// Measures the round trip to the server's echo (port + 1) every 10 ms while a transfer
/// runs: the queueing delay that transfer causes at the bottleneck.
#[derive(Debug)]
pub(crate) struct Probe {
    sock: Arc<UdpSocket>,
    stop: Arc<AtomicBool>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<Vec<u64>>>>,
}

impl Probe {
    /// Binds next to `bind` and aims at `server`'s port + 1.
    pub(crate) fn start(bind: SocketAddr, server: SocketAddr) -> Result<Self, String> {
        let s = UdpSocket::bind(SocketAddr::new(bind.ip(), 0)).map_err(|e| e.to_string())?;
        s.connect(SocketAddr::new(server.ip(), server.port() + 1))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            sock: Arc::new(s),
            stop: Arc::new(AtomicBool::new(false)),
            thread: std::sync::Mutex::new(None),
        })
    }

    fn once(s: &UdpSocket, seq: u64) -> Option<u64> {
        let t = Instant::now();
        s.send(&seq.to_be_bytes()).ok()?;
        let mut b = [0u8; 64];
        loop {
            let n = s.recv(&mut b).ok()?;
            if n == 8 && b[..8] == seq.to_be_bytes() {
                return Some(t.elapsed().as_nanos() as u64);
            }
        }
    }

    /// The median of 20 round trips on the idle path, microseconds.
    pub(crate) fn baseline(&self) -> f64 {
        let mut v: Vec<u64> = (0..20)
            .filter_map(|i| Self::once(&self.sock, 1_000_000 + i))
            .collect();
        v.sort_unstable();
        v.get(v.len() / 2).map_or(0.0, |&x| x as f64 / 1e3)
    }

    /// Starts probing every 10 ms.
    pub(crate) fn run(&self) {
        let (s, stop) = (self.sock.clone(), self.stop.clone());
        let h = std::thread::spawn(move || {
            let mut v = Vec::new();
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                if let Some(ns) = Self::once(&s, seq) {
                    v.push(ns);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            v
        });
        if let Ok(mut t) = self.thread.lock() {
            *t = Some(h);
        }
    }

    /// Stops and returns the quantiles of what it measured.
    pub(crate) fn finish(self) -> Vec<f64> {
        self.stop.store(true, Ordering::Relaxed);
        let h = self.thread.lock().ok().and_then(|mut t| t.take());
        let mut v = h.and_then(|h| h.join().ok()).unwrap_or_default();
        quantiles(&mut v)
    }
}
