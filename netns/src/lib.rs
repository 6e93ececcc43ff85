//! Network namespaces and veth pairs for STOQ's tests, demo and benchmarks, removed on drop
//! even when a test fails.
//!
//! Names follow `stoq-<purpose>-<pid>-<n>`; addresses come from 10.200.0.0/16 and
//! fd00:5710::/64. Only these namespaces and the loopback device are ever sent to.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

mod delay;

pub use delay::DelayLine;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> io::Result<String> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Joins namespaces `a` and `b` with a veth pair: interface `a_if` in `a` with address
/// `a_ip` (with its prefix, `10.200.1.1/24`), `b_if` in `b` with `b_ip`, both up. The
/// pair goes away with either namespace.
///
/// # Errors
/// The failing `ip` command and its message.
pub fn link(
    a: &NetNs,
    a_if: &str,
    a_ip: &str,
    b: &NetNs,
    b_if: &str,
    b_ip: &str,
) -> io::Result<()> {
    ip(&[
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ])?;
    a.ip(&["addr", "add", a_ip, "dev", a_if])?;
    b.ip(&["addr", "add", b_ip, "dev", b_if])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `stoq-<purpose>-<pid>-<n>` with loopback up.
    pub fn new(purpose: &str) -> io::Result<Self> {
        let name = format!(
            "stoq-{purpose}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> args...`.
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        let mut v = vec!["-n", &self.name];
        v.extend_from_slice(args);
        ip(&v)
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its result.
    /// Network namespaces are per thread, so the caller's namespace is untouched.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path).unwrap_or_else(|e| panic!("entering {path}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Spawns `f` on a thread inside this namespace without waiting for it.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path).unwrap_or_else(|e| panic!("entering {path}: {e}"));
            f()
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: could not delete netns {}: {e}", self.name);
        }
    }
}

/// Moves the calling thread into the namespace at `path`.
pub fn enter(path: &str) -> io::Result<()> {
    let f = File::open(path)?;
    // SAFETY: setns on a valid namespace descriptor; it only changes this thread's network
    // namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a namespace of this name still exists.
pub fn exists(name: &str) -> bool {
    ip(&["netns", "list"])
        .is_ok_and(|l| l.lines().any(|x| x.split_whitespace().next() == Some(name)))
}

/// Two namespaces joined by a veth pair: `a` (10.200.<n>.1, fd00:5710::<n>:1) on `va`, `b`
/// (10.200.<n>.2, fd00:5710::<n>:2) on `vb`. Dropping it deletes both namespaces, which
/// removes the veth pair and any XDP program attached to it.
#[derive(Debug)]
pub struct VethPair {
    /// The sender side.
    pub a: NetNs,
    /// The side under test.
    pub b: NetNs,
    /// IPv4 address of `a`.
    pub a4: std::net::Ipv4Addr,
    /// IPv4 address of `b`.
    pub b4: std::net::Ipv4Addr,
    /// IPv6 address of `a`.
    pub a6: std::net::Ipv6Addr,
    /// IPv6 address of `b`.
    pub b6: std::net::Ipv6Addr,
}

impl VethPair {
    /// Interface name in `a`.
    pub const A_IF: &'static str = "va";
    /// Interface name in `b`.
    pub const B_IF: &'static str = "vb";

    /// Creates the pair (one rx/tx queue each, so every frame arrives on queue 0).
    pub fn new(purpose: &str) -> io::Result<Self> {
        Self::with_queues(purpose, 1)
    }

    /// Creates the pair with `queues` rx and tx queues on each side: the sender's flows
    /// spread over the receiver's queues, as RSS spreads them on a real NIC.
    pub fn with_queues(purpose: &str, queues: u32) -> io::Result<Self> {
        let q = queues.max(1).to_string();
        let a = NetNs::new(&format!("{purpose}a"))?;
        let b = NetNs::new(&format!("{purpose}b"))?;
        let n = (std::process::id() % 200 + NEXT.fetch_add(1, Ordering::Relaxed)) % 250 + 1;
        let a4 = std::net::Ipv4Addr::new(10, 200, n as u8, 1);
        let b4 = std::net::Ipv4Addr::new(10, 200, n as u8, 2);
        let a6: std::net::Ipv6Addr = format!("fd00:5710::{n:x}:1")
            .parse()
            .map_err(io::Error::other)?;
        let b6: std::net::Ipv6Addr = format!("fd00:5710::{n:x}:2")
            .parse()
            .map_err(io::Error::other)?;
        ip(&[
            "link",
            "add",
            Self::A_IF,
            "netns",
            a.name(),
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            Self::B_IF,
            "netns",
            b.name(),
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ])?;
        a.ip(&["addr", "add", &format!("{a4}/24"), "dev", Self::A_IF])?;
        b.ip(&["addr", "add", &format!("{b4}/24"), "dev", Self::B_IF])?;
        a.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{a6}/64"),
            "dev",
            Self::A_IF,
            "nodad",
        ])?;
        b.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{b6}/64"),
            "dev",
            Self::B_IF,
            "nodad",
        ])?;
        a.ip(&["link", "set", Self::A_IF, "up"])?;
        b.ip(&["link", "set", Self::B_IF, "up"])?;
        Ok(Self {
            a,
            b,
            a4,
            b4,
            a6,
            b6,
        })
    }

    /// The XDP mode `ip link` reports on `vb`: `"xdp"` (driver), `"xdpgeneric"` (skb) or
    /// `None`.
    pub fn xdp_mode(&self) -> Option<&'static str> {
        let s = self.b.ip(&["link", "show", Self::B_IF]).ok()?;
        if s.contains(" xdpgeneric") {
            Some("xdpgeneric")
        } else if s.contains(" xdp") {
            Some("xdp")
        } else {
            None
        }
    }

    /// Whether an XDP program is attached to `vb` right now.
    pub fn xdp_attached(&self) -> bool {
        self.b
            .ip(&["-d", "link", "show", Self::B_IF])
            .is_ok_and(|s| s.contains("prog/xdp"))
    }
}
