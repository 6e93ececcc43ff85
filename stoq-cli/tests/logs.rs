//! The CLI's logs: `-v --log-format json` writes one JSON object per line on standard
//! error, and a connection's handshake and close name the connection (ID, peer, side) and
//! the worker (id, backend) they happened on; the backend choice is logged with its
//! reason; `RUST_LOG` replaces `-v`. Over loopback on the UDP backend: no privileges.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Kill, STOQ, keygen, listening_addr};

/// Runs a server with `log_args`, one client upload against it, stops the server with
/// SIGINT and returns what it wrote on standard error.
fn server_log(tag: &str, log_args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = std::env::temp_dir().join(format!("stoq-logs-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    keygen(&dir.join("server"));
    let mut cmd = Command::new(STOQ);
    cmd.args(log_args)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "udp",
            "--workers",
            "1",
        ])
        .arg("--key")
        .arg(dir.join("server.key"))
        .arg("--public")
        .arg(dir.join("server.pub"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut server = Kill(cmd.spawn().expect("server"));
    let (addr, _out) = listening_addr(&mut server.0);
    let client = Command::new(STOQ)
        .args(["client", &addr, "--backend", "udp", "--load", "1M", "--pin"])
        .arg(dir.join("server.pub"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("client");
    assert!(client.success());
    let pid = libc::pid_t::try_from(server.0.id()).expect("pid");
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let start = Instant::now();
    while server.0.try_wait().expect("wait").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "server still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut err = String::new();
    server
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    let _ = std::fs::remove_dir_all(&dir);
    err
}

#[test]
fn json_logs_name_the_connection_and_the_worker() {
    let log = server_log("json", &["-v", "--log-format", "json"], &[]);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let find = |msg: &str| {
        lines
            .iter()
            .find(|v| v["fields"]["message"] == msg)
            .unwrap_or_else(|| panic!("no {msg:?} line in:\n{log}"))
    };
    let chosen = find("backend chosen");
    assert_eq!(chosen["fields"]["backend"], "udp", "{chosen}");
    for msg in ["handshake completed", "closed"] {
        let v = find(msg);
        assert_eq!(v["target"], "stoq::conn", "{v}");
        let spans = v["spans"].as_array().expect("spans");
        let worker = spans
            .iter()
            .find(|s| s["name"] == "worker")
            .expect("worker span");
        assert_eq!(
            (&worker["id"], &worker["backend"]),
            (&0.into(), &"udp".into()),
            "{v}"
        );
        let conn = spans
            .iter()
            .find(|s| s["name"] == "conn")
            .expect("conn span");
        assert_eq!(conn["side"], "server", "{v}");
        assert!(
            conn["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{v}"
        );
        assert!(conn["cid"].as_str().is_some_and(|c| c.len() == 24), "{v}");
    }
    let closed = find("closed");
    assert!(
        closed["fields"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{closed}"
    );
    assert!(
        closed["fields"]["rx"]
            .as_u64()
            .is_some_and(|rx| rx > 1 << 20),
        "{closed}"
    );
}

#[test]
fn rust_log_replaces_the_verbosity_and_text_is_the_default() {
    let text = server_log("text", &["-v"], &[]);
    assert!(text.contains("handshake completed"), "{text}");
    assert!(
        !text.trim_start().starts_with('{'),
        "text, not JSON: {text}"
    );
    let quiet = server_log("quiet", &["-v"], &[("RUST_LOG", "error")]);
    assert!(
        !quiet.contains("handshake completed"),
        "RUST_LOG=error wins over -v: {quiet}"
    );
    let none = server_log("none", &[], &[]);
    assert!(
        !none.contains("handshake completed"),
        "warnings only by default: {none}"
    );
}
