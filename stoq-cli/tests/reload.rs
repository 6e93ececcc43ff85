//! `stoq server` reloads its key on SIGHUP: after the key files are replaced and the
//! signal sent, new clients meet the new key, clients pinning the old one are refused,
//! and a connection made before carries on. Over loopback on the UDP backend: no
//! privileges needed.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Kill, STOQ, ext, keygen, listening_addr};

fn upload(addr: &str, pin: &Path, bytes: &str) -> Output {
    Command::new(STOQ)
        .args(["client", addr, "--backend", "udp", "--load", bytes, "--pin"])
        .arg(pin)
        .output()
        .expect("client")
}

#[test]
fn sighup_reloads_the_server_key() {
    let dir = std::env::temp_dir().join(format!("stoq-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (live, old, new) = (dir.join("live"), dir.join("old"), dir.join("new"));
    keygen(&old);
    keygen(&new);
    for e in ["key", "pub"] {
        std::fs::copy(ext(&old, e), ext(&live, e)).expect("copy");
    }
    let mut server = Kill(
        Command::new(STOQ)
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--backend",
                "udp",
                "--workers",
                "2",
            ])
            .arg("--key")
            .arg(ext(&live, "key"))
            .arg("--public")
            .arg(ext(&live, "pub"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("server"),
    );
    let (addr, mut out) = listening_addr(&mut server.0);
    let mut line = String::new();
    assert!(upload(&addr, &ext(&old, "pub"), "64k").status.success());
    // A transfer that is still running when the key changes.
    let mut long = Kill(
        Command::new(STOQ)
            .args([
                "client",
                &addr,
                "--backend",
                "udp",
                "--load",
                "400M",
                "--pin",
            ])
            .arg(ext(&old, "pub"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("long client"),
    );
    std::thread::sleep(Duration::from_millis(300));

    for e in ["key", "pub"] {
        std::fs::copy(ext(&new, e), ext(&live, e)).expect("replace");
    }
    let pid = libc::pid_t::try_from(server.0.id()).expect("pid");
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let start = Instant::now();
    loop {
        line.clear();
        out.read_line(&mut line).expect("server output");
        if line.contains("SIGHUP: server key and client trust reloaded") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no reload: {line}"
        );
    }
    assert!(
        long.0.try_wait().expect("wait").is_none(),
        "the long transfer is still running across the reload"
    );
    let fresh = upload(&addr, &ext(&new, "pub"), "64k");
    assert!(
        fresh.status.success(),
        "{}",
        String::from_utf8_lossy(&fresh.stderr)
    );
    let stale = upload(&addr, &ext(&old, "pub"), "64k");
    let err = String::from_utf8_lossy(&stale.stderr);
    assert!(
        !stale.status.success() && err.contains("pinned"),
        "old pin refused: {err}"
    );
    let status = long.0.wait().expect("long client");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut long.0.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert!(
        status.success(),
        "the transfer begun under the old key completes: {err}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
