//! `stoq rendezvous` and `stoq peer` on loopback (no NAT, no root): a peer registers, a
//! second one connects to it through the rendezvous server, sends 8 MiB and checks the
//! SHA-256 the first answers. (Through real NATs and coturn: tests/tests/netns_peer.rs,
//! through the API.)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const STOQ: &str = env!("CARGO_BIN_EXE_stoq");

/// Kills a child when the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `stoq args..` and returns it with a channel of its standard output's lines.
fn spawn(args: &[&str]) -> (Killed, mpsc::Receiver<String>) {
    let mut c = Command::new(STOQ)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run stoq");
    let out = c.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Killed(c), rx)
}

fn wait_for(rx: &mpsc::Receiver<String>, prefix: &str) -> String {
    loop {
        let l = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no line starting {prefix:?}"));
        if l.starts_with(prefix) {
            return l;
        }
    }
}

#[test]
fn two_peers_meet_at_a_rendezvous_server() {
    let dir = std::env::temp_dir().join(format!("stoq-peer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("k");
    let k = key.to_str().unwrap();
    assert!(
        Command::new(STOQ)
            .args(["keygen", "--out", k])
            .output()
            .unwrap()
            .status
            .success()
    );
    let (kk, kp) = (format!("{k}.key"), format!("{k}.pub"));
    let (_rv, rv_out) = spawn(&[
        "rendezvous",
        "--listen",
        "127.0.0.1:0",
        "--key",
        &kk,
        "--public",
        &kp,
        "--backend",
        "udp",
    ]);
    let line = wait_for(&rv_out, "rendezvous on ");
    let addr = line["rendezvous on ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let common = |id: &'static str| -> Vec<String> {
        [
            "peer",
            "--rendezvous",
            &addr,
            "--name",
            "peers.test",
            "--id",
            id,
            "--pin",
            &kp,
            "--key",
            &kk,
            "--public",
            &kp,
            "--bind",
            "127.0.0.1:0",
            "--backend",
            "udp",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let b_args = [common("bob"), vec!["--once".into()]].concat();
    let b_refs: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let (mut b, b_out) = spawn(&b_refs);
    wait_for(&b_out, "registered as bob");
    let a_args = [
        common("alice"),
        vec![
            "--connect".into(),
            "bob".into(),
            "--bytes".into(),
            "8M".into(),
        ],
    ]
    .concat();
    let out = Command::new(STOQ)
        .args(&a_args)
        .output()
        .expect("stoq peer --connect");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("direct to 127.0.0.1:"), "{text}");
    assert!(text.contains("sent 8388608 bytes"), "{text}");
    let sha = text
        .split("SHA-256 match ")
        .nth(1)
        .expect("a match")
        .trim()
        .to_string();
    // The answering peer saw the same bytes, and exits after them (--once).
    let got = wait_for(&b_out, "received 8388608 bytes");
    assert!(got.ends_with(&sha), "{got} / {sha}");
    let status = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            b.0.try_wait().ok().flatten()
        })
        .expect("bob exits after one peer");
    assert!(status.success());
    // A peer nobody registered is named as such.
    let mut args = common("carol");
    args.extend(["--connect".into(), "dave".into()]);
    let out = Command::new(STOQ).args(&args).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no peer is registered under that id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
