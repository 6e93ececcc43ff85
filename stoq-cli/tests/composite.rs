//! The composite signature from the CLI: `stoq keygen --alg falcon512-ed25519` makes a
//! FALCON-512 + Ed25519 key, a server proves itself with it, and a client pinning its
//! public key connects. Over loopback on the UDP backend: no privileges needed.

use std::process::Command;

mod common;
use common::{Kill, STOQ, ext, listening_addr, server_command};

#[test]
fn a_server_with_a_composite_key_serves_a_client_that_pins_it() {
    let dir = std::env::temp_dir().join(format!("stoq-composite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key = dir.join("server");
    let o = Command::new(STOQ)
        .args(["keygen", "--alg", "falcon512-ed25519", "--out"])
        .arg(&key)
        .output()
        .expect("keygen");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // FALCON-512's public key (897 bytes) and Ed25519's (32), in the PEM body.
    let pem = std::fs::read_to_string(ext(&key, "pub")).expect("public key");
    assert!(pem.contains("STOQ FALCON PUBLIC KEY"), "{pem}");
    // An unknown algorithm is refused, naming the choices.
    let bad = Command::new(STOQ)
        .args(["keygen", "--alg", "rsa", "--out"])
        .arg(dir.join("bad"))
        .output()
        .expect("keygen");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("falcon512-ed25519"));

    let mut s = Kill(server_command("127.0.0.1:0", &key).spawn().expect("server"));
    let (addr, _) = listening_addr(&mut s.0);
    let o = Command::new(STOQ)
        .args([
            "client",
            &addr,
            "--backend",
            "udp",
            "--load",
            "256k",
            "--pin",
        ])
        .arg(ext(&key, "pub"))
        .output()
        .expect("client");
    assert!(
        o.status.success(),
        "the client connects: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
