//! `stoq client --get` survives a server restart: the server is killed mid-download and
//! started again on its port with the same cluster keys; its stateless reset tells the
//! client at once, which reconnects with backoff and goes on from what it holds. The whole
//! file's SHA-256 is checked. Over loopback on the UDP backend: no privileges needed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Kill, STOQ, ext, file_size, keygen, listening_addr, pattern_file, server_command};

/// `stoq server` on `listen`, serving `srv`, with the cluster keys in `keys`.
fn server(listen: &str, key: &Path, keys: &Path, srv: &Path) -> (Kill, String) {
    let mut s = Kill(
        server_command(listen, key)
            .arg("--cluster-keys")
            .arg(keys)
            .arg("--dir")
            .arg(srv)
            .spawn()
            .expect("server"),
    );
    let (addr, _) = listening_addr(&mut s.0);
    (s, addr)
}

#[test]
fn a_download_survives_a_server_restart() {
    let dir = std::env::temp_dir().join(format!("stoq-reconnect-{}", std::process::id()));
    let (srv, cli) = (dir.join("srv"), dir.join("cli"));
    std::fs::create_dir_all(&srv).expect("dirs");
    std::fs::create_dir_all(&cli).expect("dirs");
    // 256 MiB of a pattern that changes everywhere.
    pattern_file(&srv.join("big.bin"), 256, 0x2545_f491_4f6c_dd1du64);
    let key = dir.join("server");
    keygen(&key);
    let keys: PathBuf = dir.join("cluster.keys");
    let made = Command::new(STOQ)
        .args(["cluster-keys", "--out"])
        .arg(&keys)
        .output()
        .expect("cluster-keys");
    assert!(made.status.success(), "{made:?}");

    let (first, addr) = server("127.0.0.1:0", &key, &keys, &srv);
    let out = cli.join("big.bin");
    let part = cli.join("big.part");
    let client = Kill(
        Command::new(STOQ)
            .args(["client", &addr, "--name", "localhost", "--backend", "udp"])
            .args(["--get", "big.bin"])
            .arg("--pin")
            .arg(ext(&key, "pub"))
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("client"),
    );
    // Mid-download: some of it arrived, not all.
    let end = Instant::now() + Duration::from_secs(60);
    while file_size(&part) < (8 << 20) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(first);
    let at_kill = file_size(&part);
    assert!(
        (8 << 20..256 << 20).contains(&at_kill) && !out.exists(),
        "killed mid-download: {at_kill} bytes"
    );
    let (_second, again) = server(&addr, &key, &keys, &srv);
    assert_eq!(again, addr, "the new server took the old one's port");
    let restarted = Instant::now();
    let o = client.wait_with_output_within(Duration::from_secs(60));
    let took = restarted.elapsed();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{text}");
    // The client's keep-alive met the new server's stateless reset: no idle timeout.
    assert!(
        text.contains("connection lost (stateless reset by peer); reconnecting to resume"),
        "{text}"
    );
    // The restarted server holds the same cluster keys: the client's ticket resumes.
    assert!(
        text.contains("reconnected (session resumed from a ticket)"),
        "{text}"
    );
    assert!(text.contains("SHA-256 matches"), "{text}");
    assert_eq!(
        std::fs::read(&out).expect("result"),
        std::fs::read(srv.join("big.bin")).expect("original")
    );
    eprintln!("killed at {at_kill} bytes; done {took:?} after the restart; {text}");
    let _ = std::fs::remove_dir_all(&dir);
}

trait WaitWithin {
    fn wait_with_output_within(self, limit: Duration) -> std::process::Output;
}

impl WaitWithin for Kill {
    /// Waits for the child to exit (killing it past `limit`), with what it wrote.
    fn wait_with_output_within(mut self, limit: Duration) -> std::process::Output {
        let end = Instant::now() + limit;
        while self.0.try_wait().expect("wait").is_none() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let child = std::mem::replace(
            &mut self.0,
            Command::new("true").spawn().expect("a placeholder child"),
        );
        child.wait_with_output().expect("output")
    }
}
