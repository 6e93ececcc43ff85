//! `--qlog DIR` on `stoq server` and `stoq client`, end to end over loopback (UDP backend,
//! no privileges): both ends write a trace of the connection, the server's metrics count
//! the events (and pass `promtool check metrics` where promtool is installed), each side
//! reports what it wrote when it exits, and `stoq qlog-chart` draws the sender's trace.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Kill, STOQ, ext, keygen, listening_addr, server_command};

/// `GET /metrics` from `addr`.
fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The value of the sample whose line starts with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn files(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn server_and_client_write_qlog_and_the_chart_draws_it() {
    let dir = std::env::temp_dir().join(format!("stoq-cli-qlog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let key = dir.join("server");
    keygen(&key);
    let metrics = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").to_string()
    };
    let mut server = Kill(
        server_command("127.0.0.1:0", &key)
            .args(["--metrics", &metrics, "--qlog"])
            .arg(dir.join("server-qlog"))
            .spawn()
            .expect("server"),
    );
    let (addr, mut out) = listening_addr(&mut server.0);
    let client = Command::new(STOQ)
        .args([
            "client",
            &addr,
            "--backend",
            "udp",
            "--load",
            "32M",
            // The writer on a CPU of its own (CPU 0 exists on every machine).
            "--qlog-cpu",
            "0",
            "--qlog",
        ])
        .arg(dir.join("client-qlog"))
        .arg("--pin")
        .arg(ext(&key, "pub"))
        .output()
        .expect("client");
    let said = String::from_utf8_lossy(&client.stdout).into_owned();
    assert!(
        client.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&client.stderr)
    );
    // The client waited for its writer before exiting and said what it wrote.
    assert!(said.contains("qlog: 1 traces"), "{said}");
    assert!(said.contains("(0 dropped, 0 write errors)"), "{said}");

    // The server's metrics count the events its writer wrote.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let t = scrape(&metrics);
        if sample(&t, "stoq_qlog_traces_total").unwrap_or(0.0) >= 1.0
            && sample(&t, "stoq_qlog_events_total{outcome=\"written\"}").unwrap_or(0.0) > 100.0
        {
            break t;
        }
        assert!(Instant::now() < deadline, "no qlog counted:\n{t}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        sample(&text, "stoq_qlog_events_total{outcome=\"dropped\"}"),
        Some(0.0)
    );
    if let Ok(mut p) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        p.stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("promtool input");
        let o = p.wait_with_output().expect("promtool");
        assert!(
            o.status.success(),
            "promtool check metrics:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    } else {
        println!("promtool not installed: the qlog families are not linted here");
    }

    // SIGTERM: the server drains, waits for its writer and says what it wrote.
    let pid = libc::pid_t::try_from(server.0.id()).expect("pid");
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut rest = String::new();
    for line in (&mut out).lines() {
        let line = line.expect("server output");
        rest.push_str(&line);
        rest.push('\n');
    }
    assert!(server.0.wait().expect("exit").success(), "{rest}");
    assert!(rest.contains("qlog: 1 traces"), "{rest}");

    let servers = files(&dir.join("server-qlog"), "_server.sqlog");
    let clients = files(&dir.join("client-qlog"), "_client.sqlog");
    assert_eq!(
        (servers.len(), clients.len()),
        (1, 1),
        "{servers:?} {clients:?}"
    );
    // One connection seen from both ends: the same name (the client's first DCID).
    let name = |p: &std::path::PathBuf| {
        let f = p.file_name().unwrap().to_string_lossy().into_owned();
        f.split('_').next().unwrap().to_string()
    };
    assert_eq!(name(&servers[0]), name(&clients[0]));
    for f in [&servers[0], &clients[0]] {
        let t = std::fs::read_to_string(f).expect("trace");
        for e in [
            "quic:packet_received",
            "stoq:handshake_completed",
            "quic:connection_closed",
        ] {
            assert!(t.contains(e), "{} lacks {e}", f.display());
        }
    }

    // The chart of the sender (the client uploaded).
    let svg = dir.join("chart.svg");
    let o = Command::new(STOQ)
        .arg("qlog-chart")
        .arg(&clients[0])
        .arg("-o")
        .arg(&svg)
        .output()
        .expect("qlog-chart");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let drawn = std::fs::read_to_string(&svg).expect("svg");
    assert!(drawn.starts_with("<svg") && drawn.contains("congestion window"));
    // Not a qlog file: a clear error, no chart.
    let o = Command::new(STOQ)
        .arg("qlog-chart")
        .arg(ext(&key, "pub"))
        .arg("-o")
        .arg(dir.join("bad.svg"))
        .output()
        .expect("qlog-chart");
    assert!(!o.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
