//! TLS 1.3 over kernel TCP, with rustls (ring): the peer STOQ's users weigh it against.
//! Blocking sockets and a thread per connection (rustls' own `StreamOwned`), the plain
//! way to write it. The same certificate as quinn's; X25519 and ECDSA P-256.
//!
//! Connections start with a tag byte inside TLS: `B` bulk (counted, answered with the
//! count), `R` request/response (echoed 64 bytes at a time), `H` a handshake (the server
//! reads until the client closes). Kernel TLS (kTLS) is not measured where the kernel has
//! no `tls` upper-layer protocol, and the server's detail says so.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection, StreamOwned};

use crate::roles::{Ready, Stop};
use crate::spec::{Outcome, RoleSpec, Scenario, Subject, quantiles, unhex};

const NAME: &str = "bench.stoq";
const CHUNK: usize = 64 * 1024;

type ClientStream = StreamOwned<ClientConnection, TcpStream>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether this kernel offers kernel TLS (the `tls` upper-layer protocol), and if not why.
fn ktls() -> String {
    match std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp") {
        Ok(s) if s.split_whitespace().any(|u| u == "tls") => {
            "kTLS available but not used (rustls does the record layer)".into()
        }
        Ok(s) => format!(
            "no kTLS: the kernel offers no `tls` ULP (tcp_available_ulp: {})",
            s.trim()
        ),
        // Not visible inside a network namespace on some kernels: the module tells.
        Err(_) if std::path::Path::new("/sys/module/tls").exists() => {
            "kTLS module present but not used (rustls does the record layer)".into()
        }
        Err(_) => "no kTLS: this kernel has no `tls` module (/sys/module/tls absent)".into(),
    }
}

fn server_config(spec: &RoleSpec) -> Result<Arc<ServerConfig>, String> {
    let cert = CertificateDer::from(unhex(&spec.keys.quinn_cert)?);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(unhex(&spec.keys.quinn_key)?));
    let mut c = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| e.to_string())?;
    // Stateless tickets, as STOQ's: any server holding the key resumes.
    c.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| e.to_string())?;
    Ok(Arc::new(c))
}

fn client_config(spec: &RoleSpec, resumption: bool) -> Result<Arc<ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(unhex(&spec.keys.quinn_cert)?))
        .map_err(|e| e.to_string())?;
    let mut c = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !resumption {
        c.resumption = rustls::client::Resumption::disabled();
    }
    Ok(Arc::new(c))
}

/// The TLS server until `stop`.
pub(crate) fn server(spec: &RoleSpec, ready: Ready, stop: Stop) -> Result<(), String> {
    let cfg = server_config(spec)?;
    let l = TcpListener::bind(spec.server).map_err(|e| e.to_string())?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let Subject::Tls { cc } = &spec.subject else {
        return Err("not TLS".into());
    };
    ready(format!("kernel TCP, {cc}, rustls TLS 1.3; {}", ktls()));
    while !stop.is_set() {
        match l.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_nodelay(true);
                let cfg = cfg.clone();
                std::thread::spawn(move || {
                    let Ok(conn) = ServerConnection::new(cfg) else {
                        return;
                    };
                    serve(StreamOwned::new(conn, s));
                });
            }
            Err(_) => crate::plain::poll_fd(std::os::fd::AsRawFd::as_raw_fd(&l), 50),
        }
    }
    Ok(())
}

fn serve(mut s: StreamOwned<ServerConnection, TcpStream>) {
    let mut tag = [0u8; 1];
    if s.read_exact(&mut tag).is_err() {
        return;
    }
    match tag[0] {
        b'R' => {
            let mut b = [0u8; 64];
            while s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {}
        }
        b'B' => {
            let mut buf = vec![0u8; CHUNK];
            let mut n = 0u64;
            while let Ok(k) = s.read(&mut buf) {
                if k == 0 {
                    break;
                }
                n += k as u64;
            }
            let _ = s.write_all(&n.to_be_bytes());
            let _ = s.flush();
        }
        _ => {
            let mut b = [0u8; 64];
            while matches!(s.read(&mut b), Ok(k) if k > 0) {}
        }
    }
    s.conn.send_close_notify();
    let _ = s.flush();
}

/// A TLS connection with the handshake done and `tag` sent.
fn connect(spec: &RoleSpec, cfg: &Arc<ClientConfig>, tag: u8) -> Result<ClientStream, String> {
    let sock = crate::plain::tcp_socket(spec)?;
    let name = ServerName::try_from(NAME).map_err(|e| e.to_string())?;
    let conn = ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
    let mut s = StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    s.write_all(&[tag]).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Closes a connection, first taking in whatever the server sent (its session tickets).
fn close(mut s: ClientStream) {
    let _ = s.sock.set_nonblocking(true);
    while matches!(s.conn.read_tls(&mut s.sock), Ok(n) if n > 0) {
        if s.conn.process_new_packets().is_err() {
            break;
        }
    }
    let _ = s.sock.set_nonblocking(false);
    s.conn.send_close_notify();
    let _ = s.flush();
    let _ = s.sock.shutdown(Shutdown::Both);
}

/// The TLS client.
pub(crate) fn client(spec: &RoleSpec) -> Result<Outcome, String> {
    let mut out = Outcome::default();
    match spec.scenario {
        Scenario::Bulk { .. } => {
            let cfg = client_config(spec, false)?;
            let (conns, secs, _) = spec.scenario.bulk_shape();
            let streams = (0..conns)
                .map(|_| connect(spec, &cfg, b'B'))
                .collect::<Result<Vec<_>, _>>()?;
            crate::spec::start_measuring(&mut out);
            (out.bytes, out.secs) = crate::plain::bulk_send(streams, secs, |s| {
                s.conn.send_close_notify();
                s.flush()
            })?;
        }
        Scenario::Rr { secs } => {
            let cfg = client_config(spec, false)?;
            let mut s = connect(spec, &cfg, b'R')?;
            crate::spec::start_measuring(&mut out);
            let (mut lat, n, el) = crate::plain::ping_pong(secs, |b| {
                s.write_all(b)?;
                s.read_exact(b)
            })?;
            out.secs = el;
            out.count = n;
            out.quantiles_us = quantiles(&mut lat);
        }
        Scenario::Handshakes {
            secs,
            parallel,
            resumed,
        } => {
            let cfg = client_config(spec, resumed)?;
            if resumed {
                // Tickets for every thread first.
                for _ in 0..parallel.max(1) {
                    let s = connect(spec, &cfg, b'H')?;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    close(s);
                }
            }
            crate::spec::start_measuring(&mut out);
            let t = Instant::now();
            let joins: Vec<_> = (0..parallel.max(1))
                .map(|_| {
                    let (spec, cfg) = (spec.clone(), cfg.clone());
                    std::thread::spawn(move || {
                        let (mut n, mut r) = (0u64, 0u64);
                        let mut previous: Option<ClientStream> = None;
                        while t.elapsed().as_secs_f64() < secs {
                            let s = connect(&spec, &cfg, b'H')?;
                            n += 1;
                            r += u64::from(
                                s.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
                            );
                            if resumed {
                                // As STOQ's and quinn's: closed once the next is up.
                                if let Some(p) = previous.replace(s) {
                                    close(p);
                                }
                            } else {
                                close(s);
                            }
                        }
                        if let Some(p) = previous {
                            close(p);
                        }
                        Ok::<_, String>((n, r))
                    })
                })
                .collect();
            for j in joins {
                let (n, r) = j.join().map_err(|_| "handshake thread panicked")??;
                out.count += n;
                out.resumed += r;
            }
            out.secs = t.elapsed().as_secs_f64();
        }
        _ => return Err("TLS over TCP runs bulk, request/response and handshakes".into()),
    }
    out.detail = "rustls over kernel TCP".into();
    Ok(out)
}
