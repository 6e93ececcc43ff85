//! The smallest HTTP/1.1 server that Prometheus can scrape: `GET /metrics` (or `/`)
//! answers [`Metrics::render`](super::Metrics::render), anything else 404 or 405.
//!
//! One thread, one request per connection (`Connection: close`). The peer is untrusted:
//! a request head is read up to 8 KiB and for at most two seconds, then answered or
//! dropped; nothing it sends is kept.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{CONTENT_TYPE, Metrics};

/// Longest request head read.
const MAX_HEAD: usize = 8 << 10;
/// How long a client has to send its request head, and to take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A running metrics endpoint; dropping it stops the thread and closes the socket.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub(super) fn start(addr: SocketAddr, metrics: Metrics) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("stoq-metrics".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.load(Ordering::Acquire) {
                        break;
                    }
                    if let Ok(c) = conn {
                        let _ = answer(c, &metrics);
                    }
                }
            })?;
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (the port the OS chose, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the blocked accept with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request head and answers it.
fn answer(mut c: TcpStream, metrics: &Metrics) -> io::Result<()> {
    c.set_read_timeout(Some(IO_TIMEOUT))?;
    c.set_write_timeout(Some(IO_TIMEOUT))?;
    let start = Instant::now();
    let mut head = [0u8; MAX_HEAD];
    let mut n = 0;
    while !head[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        if n == head.len() || start.elapsed() > IO_TIMEOUT {
            respond(
                &mut c,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"",
            )?;
            // Closing with unread bytes would reset the connection before the client
            // reads the answer: read (and drop) a bounded amount more first.
            c.shutdown(std::net::Shutdown::Write)?;
            let mut left = 16 * MAX_HEAD;
            while left > 0 && start.elapsed() < 2 * IO_TIMEOUT {
                match c.read(&mut head) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => left = left.saturating_sub(k),
                }
            }
            return Ok(());
        }
        match c.read(&mut head[n..])? {
            0 => return Ok(()),
            k => n += k,
        }
    }
    let line = head[..n].split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = path.split(|b| *b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET", b"/metrics" | b"/") => {
            respond(&mut c, "200 OK", CONTENT_TYPE, metrics.render().as_bytes())
        }
        (b"GET", _) => respond(&mut c, "404 Not Found", "text/plain", b"try /metrics\n"),
        _ => respond(&mut c, "405 Method Not Allowed", "text/plain", b""),
    }
}

fn respond(c: &mut TcpStream, status: &str, kind: &str, body: &[u8]) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes())?;
    c.write_all(body)?;
    c.flush()
}
