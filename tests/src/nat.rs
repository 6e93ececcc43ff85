//! What the NAT-traversal tests build their topologies from: shell commands that must
//! succeed, nftables rule sets loaded into a namespace, and coturn's `turnserver` (the
//! Debian package) run in a namespace for as long as a guard lives.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stoq_netns::NetNs;

/// Runs `cmd args..`, panicking with its error output unless it succeeds; its output.
///
/// # Panics
/// When the command cannot run or fails.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Loads an nftables rule set into `ns` (`nft -f -`).
///
/// # Panics
/// When nft fails (the rules are in the message).
pub fn nft(ns: &NetNs, rules: &str) {
    let mut c = Command::new("ip")
        .args(["netns", "exec", ns.name(), "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft");
    std::io::Write::write_all(c.stdin.as_mut().expect("stdin"), rules.as_bytes())
        .expect("nft rules");
    drop(c.stdin.take());
    assert!(c.wait().expect("nft").success(), "nft -f failed:\n{rules}");
}

/// A running `turnserver`, killed on drop (passed or not).
#[derive(Debug)]
pub struct Coturn(Child);

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts coturn's `turnserver` in `ns` on port 3478 of each address in `listen`, with no
/// configuration file, CLI, TLS or log, and the extra arguments (`--stun-only`, or a TURN
/// account); returns once it listens on every address. coturn says nothing when a
/// listener cannot bind, so a broken topology fails here, by name.
///
/// # Panics
/// When turnserver is missing or does not listen within 10 s.
pub fn coturn(ns: &NetNs, listen: &[Ipv4Addr], extra: &[&str]) -> Coturn {
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        ns.name(),
        "turnserver",
        "-n",
        "--no-cli",
        "-p",
        "3478",
    ]);
    for a in listen {
        c.args(["-L", &a.to_string()]);
    }
    c.args(["--no-tls", "--no-dtls", "--no-software-attribute"])
        .args(["--no-stdout-log", "--log-file", "/dev/null"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let guard = Coturn(c.spawn().expect("turnserver (apt install coturn)"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ss = sh("ip", &["netns", "exec", ns.name(), "ss", "-Hlun"]);
        if listen.iter().all(|a| ss.contains(&format!("{a}:3478"))) {
            return guard;
        }
        assert!(
            Instant::now() < deadline,
            "turnserver does not listen on port 3478 of {listen:?}: {ss}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
