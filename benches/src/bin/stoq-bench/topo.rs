//! Where the roles run: two namespaces joined by a veth pair, three joined through the
//! delay emulator and a TBF bottleneck, or this host and a peer host across a real NIC
//! (`--iface`/`--peer`, the peer running `stoq-bench agent`).

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use stoq_netns::{NetNs, VethPair};

use crate::delay::Delay;
use crate::spec::{Outcome, RoleSpec};

/// The TCP port `stoq-bench agent` listens on.
pub(crate) const AGENT_PORT: u16 = 4499;

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A place to run roles.
#[derive(Debug)]
pub(crate) enum Topo {
    /// Server in `pair.b`, client in `pair.a`.
    Veth { pair: VethPair, mtu: u32 },
    /// Client in `a`, server in `b`, frames through `m`'s delay emulator and TBF.
    Chain {
        // Field order is drop order: the emulator stops before its namespace goes.
        delay: Delay,
        a: NetNs,
        /// The middle namespace, kept until the chain is dropped.
        middle: NetNs,
        b: NetNs,
        desc: String,
    },
    /// Client here, server on the peer through its agent.
    Peer { server: IpAddr, client: IpAddr },
}

impl Topo {
    /// A veth pair with `queues` queues per side.
    pub(crate) fn veth(queues: u32) -> Result<Self, String> {
        let pair = VethPair::with_queues("bench", queues).map_err(|e| e.to_string())?;
        Ok(Self::Veth { pair, mtu: 1500 })
    }

    /// Changes the veth pair's MTU on both sides.
    pub(crate) fn set_mtu(&mut self, m: u32) -> Result<(), String> {
        if let Self::Veth { pair, mtu } = self {
            let s = m.to_string();
            pair.a
                .ip(&["link", "set", VethPair::A_IF, "mtu", &s])
                .map_err(|e| e.to_string())?;
            pair.b
                .ip(&["link", "set", VethPair::B_IF, "mtu", &s])
                .map_err(|e| e.to_string())?;
            *mtu = m;
        }
        Ok(())
    }

    /// Client `a` — `m` (delay each way, TBF at `rate_mbit` toward `b`) — server `b`.
    pub(crate) fn chain(rate_mbit: u32, one_way: Duration) -> Result<Self, String> {
        let a = NetNs::new("bna").map_err(|e| e.to_string())?;
        let m = NetNs::new("bnm").map_err(|e| e.to_string())?;
        let b = NetNs::new("bnb").map_err(|e| e.to_string())?;
        sh(&[
            "ip",
            "link",
            "add",
            "va",
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            "mida",
            "netns",
            m.name(),
        ])?;
        sh(&[
            "ip",
            "link",
            "add",
            "vb",
            "netns",
            b.name(),
            "type",
            "veth",
            "peer",
            "name",
            "midb",
            "netns",
            m.name(),
        ])?;
        let ip = |n: &NetNs, args: &[&str]| n.ip(args).map(drop).map_err(|e| e.to_string());
        ip(&a, &["addr", "add", "10.200.251.1/24", "dev", "va"])?;
        ip(&b, &["addr", "add", "10.200.251.2/24", "dev", "vb"])?;
        for (n, dev) in [(&a, "va"), (&b, "vb"), (&m, "mida"), (&m, "midb")] {
            ip(n, &["link", "set", "dev", dev, "up"])?;
            // Frames must cross the emulator whole and with their checksums written: no
            // offloads that leave work for later (segmentation, checksums, GRO merges).
            sh(&[
                "ip",
                "netns",
                "exec",
                n.name(),
                "ethtool",
                "-K",
                dev,
                "tx",
                "off",
                "tso",
                "off",
                "gso",
                "off",
                "gro",
                "off",
                "tx-udp-segmentation",
                "off",
            ])
            .map_err(|e| format!("{e} (the bottleneck run needs ethtool)"))?;
        }
        ip(&m, &["link", "set", "dev", "mida", "promisc", "on"])?;
        ip(&m, &["link", "set", "dev", "midb", "promisc", "on"])?;
        // The queue holds one bandwidth-delay product, as a well-sized router buffer does.
        let bdp = (u64::from(rate_mbit) * 1_000_000 / 8) as f64 * 2.0 * one_way.as_secs_f64();
        let limit = (bdp as u64).max(200_000).to_string();
        let rate = format!("{rate_mbit}mbit");
        sh(&[
            "ip",
            "netns",
            "exec",
            m.name(),
            "tc",
            "qdisc",
            "add",
            "dev",
            "midb",
            "root",
            "tbf",
            "rate",
            &rate,
            "burst",
            "256kb",
            "limit",
            &limit,
        ])?;
        let delay = m
            .run(move || Delay::start("mida", "midb", one_way))
            .map_err(|e| e.to_string())?;
        let desc = format!(
            "TBF {rate_mbit} Mbit/s (queue {} KB, one BDP) + {} ms each way from the delay emulator",
            limit.parse::<u64>().unwrap_or(0) / 1000,
            one_way.as_millis()
        );
        Ok(Self::Chain {
            delay,
            a,
            middle: m,
            b,
            desc,
        })
    }

    /// The server's and client's addresses.
    pub(crate) fn addrs(&self, port: u16) -> (SocketAddr, SocketAddr) {
        match self {
            Self::Veth { pair, .. } => (
                SocketAddr::new(pair.b4.into(), port),
                SocketAddr::new(pair.a4.into(), 0),
            ),
            Self::Chain { .. } => (
                SocketAddr::new(Ipv4Addr::new(10, 200, 251, 2).into(), port),
                SocketAddr::new(Ipv4Addr::new(10, 200, 251, 1).into(), 0),
            ),
            Self::Peer { server, client } => {
                (SocketAddr::new(*server, port), SocketAddr::new(*client, 0))
            }
        }
    }

    /// The link's MTU.
    pub(crate) fn mtu(&self) -> u32 {
        match self {
            Self::Veth { mtu, .. } => *mtu,
            _ => 1500,
        }
    }

    /// What the path is, for the report.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Veth { mtu, .. } => format!("veth pair between two namespaces, MTU {mtu}"),
            Self::Chain { desc, .. } => desc.clone(),
            Self::Peer { server, .. } => format!("real NIC to the peer {server}"),
        }
    }

    /// Packets dropped so far at the bottleneck (the TBF qdisc's count plus the emulator's
    /// own), if this is the chain.
    pub(crate) fn drops(&self) -> Option<u64> {
        let Self::Chain { delay, middle, .. } = self else {
            return None;
        };
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                middle.name(),
                "tc",
                "-s",
                "qdisc",
                "show",
                "dev",
                "midb",
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let tbf = text
            .split_whitespace()
            .skip_while(|w| w.trim_start_matches('(') != "dropped")
            .nth(1)?
            .trim_end_matches(',')
            .parse::<u64>()
            .ok()?;
        Some(
            tbf + delay
                .stats
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Starts a role process where it belongs.
    pub(crate) fn spawn(&self, spec: &RoleSpec) -> Result<Proc, String> {
        let json = serde_json::to_string(spec).map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let server = spec.role == "server";
        let ns = match self {
            Self::Veth { pair, .. } => Some(if server { &pair.b } else { &pair.a }),
            Self::Chain { a, b, .. } => Some(if server { b } else { a }),
            Self::Peer { server: peer, .. } if server => {
                let s = TcpStream::connect((*peer, AGENT_PORT))
                    .map_err(|e| format!("the agent on {peer}:{AGENT_PORT}: {e}"))?;
                let mut w = s.try_clone().map_err(|e| e.to_string())?;
                writeln!(w, "{json}").map_err(|e| e.to_string())?;
                let control = s.try_clone().map_err(|e| e.to_string())?;
                let mut p = Proc::new(None, Box::new(w), Box::new(s));
                p.control = Some(control);
                return Ok(p);
            }
            Self::Peer { .. } => None,
        };
        let mut c = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.name()]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let mut child = c
            .args(["role", &json])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| e.to_string())?;
        let w = child.stdin.take().ok_or("no stdin")?;
        let r = child.stdout.take().ok_or("no stdout")?;
        Ok(Proc::new(Some(child), Box::new(w), Box::new(r)))
    }
}

/// A running role: its lines arrive on a channel so every wait has a deadline.
pub(crate) struct Proc {
    child: Option<Child>,
    /// The agent connection of a remote role: shut down to end it.
    control: Option<TcpStream>,
    w: Option<Box<dyn Write + Send>>,
    lines: mpsc::Receiver<String>,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("child", &self.child)
            .field("open", &self.w.is_some())
            .finish()
    }
}

impl Proc {
    fn new(
        child: Option<Child>,
        w: Box<dyn Write + Send>,
        r: Box<dyn std::io::Read + Send>,
    ) -> Self {
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(r).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            control: None,
            w: Some(w),
            lines,
        }
    }

    /// The next line starting with `prefix` (or an `ERROR`), within `secs`.
    pub(crate) fn expect(&mut self, prefix: &str, secs: u64) -> Result<String, String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with("ERROR") => return Err(l),
                Ok(l) if l.starts_with(prefix) => return Ok(l[prefix.len()..].trim().to_string()),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.kill();
                    return Err(format!("no `{prefix}` within {secs} s"));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("the role exited before `{prefix}`"));
                }
            }
        }
    }

    /// Sends one line.
    pub(crate) fn send(&mut self, line: &str) -> Result<(), String> {
        let w = self.w.as_mut().ok_or("input closed")?;
        writeln!(w, "{line}")
            .and_then(|()| w.flush())
            .map_err(|e| e.to_string())
    }

    /// Closes its input and waits (up to `secs`) for its outcome.
    pub(crate) fn finish(&mut self, secs: u64) -> Result<Outcome, String> {
        let _ = self.send("stop");
        self.w = None;
        let r = self
            .expect("{", secs)
            .and_then(|l| serde_json::from_str(&format!("{{{l}")).map_err(|e| e.to_string()));
        if let Some(c) = &mut self.child {
            let _ = c.wait();
        }
        r
    }

    fn kill(&mut self) {
        if let Some(s) = &self.control {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.w = None;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.w = None;
        if let Some(s) = &self.control {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        if let Some(c) = &mut self.child {
            if matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(200));
                if matches!(c.try_wait(), Ok(None)) {
                    let _ = c.kill();
                }
            }
            let _ = c.wait();
        }
    }
}

/// Copies line traffic as it comes (`std::io::copy` may splice socket to pipe and hold a
/// short line back).
fn pump(r: &mut impl std::io::Read, w: &mut impl Write) {
    let mut b = [0u8; 4096];
    loop {
        match r.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if w.write_all(&b[..n]).and_then(|()| w.flush()).is_err() {
                    return;
                }
            }
        }
    }
}

/// `stoq-bench agent`: on the peer host, runs the server role each orchestrator asks for
/// and relays its lines both ways over the control connection.
pub(crate) fn agent(listen: SocketAddr) -> Result<(), String> {
    let l = TcpListener::bind(listen).map_err(|e| format!("{listen}: {e}"))?;
    eprintln!("stoq-bench agent: listening on {listen}");
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    for s in l.incoming() {
        let Ok(s) = s else { continue };
        let exe = exe.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(match s.try_clone() {
                Ok(c) => c,
                Err(_) => return,
            });
            let mut spec = String::new();
            if r.read_line(&mut spec).is_err() {
                return;
            }
            let Ok(mut child) = Command::new(&exe)
                .args(["role", spec.trim()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
            else {
                return;
            };
            let (Some(mut cin), Some(mut cout)) = (child.stdin.take(), child.stdout.take()) else {
                return;
            };
            let mut back = s;
            let relay = std::thread::spawn(move || pump(&mut cout, &mut back));
            pump(&mut r, &mut cin);
            drop(cin);
            // The role stops on end of input; one that does not within 10 s is killed, so
            // a lost orchestrator never leaves a server holding the port.
            for _ in 0..100 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = relay.join();
        });
    }
    Ok(())
}
