//! `stoq server` drains and exits 0 on SIGTERM (systemd, Kubernetes, `kill`) as it does on
//! SIGINT. Over loopback on the UDP backend: no privileges needed.

use std::io::{BufRead, BufReader, Read};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{Kill, STOQ, server_command};

fn drains_and_exits_zero_on(signal: libc::c_int, name: &str) {
    let dir = std::env::temp_dir().join(format!("stoq-signal-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key = dir.join("server");
    let ok = Command::new(STOQ)
        .args(["keygen", "--out"])
        .arg(&key)
        .status()
        .expect("keygen");
    assert!(ok.success());
    let mut server = Kill(server_command("127.0.0.1:0", &key).spawn().expect("server"));
    let mut out = BufReader::new(server.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("server banner");
    assert!(line.contains("listening on"), "{line}");
    let pid = libc::pid_t::try_from(server.0.id()).expect("pid");
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = server.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still running 10 s after {name}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("output");
    assert!(status.success(), "{name}: {status:?}\n{rest}");
    assert!(rest.contains(&format!("{name}: draining")), "{rest}");
    assert!(rest.contains("shut down: 0 connections"), "{rest}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_server_drains_and_exits_zero_on_sigterm() {
    drains_and_exits_zero_on(libc::SIGTERM, "SIGTERM");
}

#[test]
fn the_server_drains_and_exits_zero_on_sigint() {
    drains_and_exits_zero_on(libc::SIGINT, "SIGINT");
}
