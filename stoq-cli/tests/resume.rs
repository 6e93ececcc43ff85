//! The resumable file transfer: `stoq client --get` is killed mid-download, run again, and
//! resumes from what it kept; the whole file's SHA-256 is checked against the server's.
//! Over loopback on the UDP backend: no privileges needed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Kill, STOQ, file_size, pattern_file, server_command};

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn a_killed_download_resumes_and_the_hash_matches() {
    let dir = std::env::temp_dir().join(format!("stoq-resume-{}", std::process::id()));
    let srv = dir.join("srv");
    let cli = dir.join("cli");
    std::fs::create_dir_all(&srv).expect("dirs");
    std::fs::create_dir_all(&cli).expect("dirs");
    // 128 MiB of a pattern that changes everywhere.
    pattern_file(&srv.join("big.bin"), 128, 0x9e37_79b9_7f4a_7c15u64);
    let key = dir.join("server");
    let ok = Command::new(STOQ)
        .args(["keygen", "--out"])
        .arg(&key)
        .status()
        .expect("keygen");
    assert!(ok.success());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Kill(
        server_command(&listen, &dir.join("server"))
            .arg("--dir")
            .arg(&srv)
            .spawn()
            .expect("server"),
    );
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("server banner");
    assert!(line.contains("listening on"), "{line}");
    let out = cli.join("big.bin");
    let part = cli.join("big.part");
    let client = || {
        let mut c = Command::new(STOQ);
        c.args(["client", &listen, "--name", "localhost", "--backend", "udp"])
            .args(["--get", "big.bin"])
            .arg("--pin")
            .arg(dir.join("server.pub"))
            .arg("--out")
            .arg(&out);
        c
    };
    // First attempt: killed once a few MiB arrived.
    let mut first = Kill(
        client()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("client"),
    );
    let end = Instant::now() + Duration::from_secs(60);
    while file_size(&part) < (2 << 20)
        && Instant::now() < end
        && first.0.try_wait().ok().flatten().is_none()
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = first.0.kill();
    let _ = first.0.wait();
    let kept = file_size(&part);
    assert!(
        !out.exists(),
        "the download must not have finished before the kill"
    );
    assert!(kept > 0, "something was kept before the kill");
    // Second attempt: resumes from what was kept, and checks the whole file's hash.
    let o = client().output().expect("client again");
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("SHA-256 matches"), "{text}");
    assert!(
        text.contains(&format!("{kept} resumed")),
        "resumed from {kept}: {text}"
    );
    assert_eq!(
        std::fs::read(&out).expect("result"),
        std::fs::read(srv.join("big.bin")).expect("original")
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
