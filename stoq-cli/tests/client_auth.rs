//! Client authentication from the CLI, end to end: a server that pins a client's key
//! (`--client-pin`) or trusts a client CA (`--client-ca`) serves a client that proves
//! itself (`--key` with `--public` or `--cert`) and refuses one that does not. Over
//! loopback on the UDP backend: no privileges needed.

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{Kill, STOQ, ext, keygen, listening_addr, server_command};

/// A server with `auth` arguments; returns it and its address.
fn server(dir: &Path, auth: &[&str]) -> (Kill, String) {
    let mut s = Kill(
        server_command("127.0.0.1:0", &dir.join("server"))
            .args(auth)
            .spawn()
            .expect("server"),
    );
    let (addr, _) = listening_addr(&mut s.0);
    (s, addr)
}

fn client(dir: &Path, addr: &str, auth: &[&str]) -> Output {
    Command::new(STOQ)
        .args([
            "client",
            addr,
            "--backend",
            "udp",
            "--load",
            "256k",
            "--pin",
        ])
        .arg(ext(&dir.join("server"), "pub"))
        .args(auth)
        .output()
        .expect("client")
}

/// Asserts that `o` failed and said `why` on standard error.
fn refused(o: &Output, why: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains(why),
        "want a failure naming {why:?}: {err}"
    );
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn a_pinned_client_key_is_served_and_any_other_refused() {
    let dir = std::env::temp_dir().join(format!("stoq-client-pin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for k in ["server", "alice", "mallory"] {
        keygen(&dir.join(k));
    }
    let (alice, mallory) = (dir.join("alice"), dir.join("mallory"));
    let (_s, addr) = server(&dir, &["--client-pin", p(&ext(&alice, "pub"))]);
    let ok = client(
        &dir,
        &addr,
        &[
            "--key",
            p(&ext(&alice, "key")),
            "--public",
            p(&ext(&alice, "pub")),
        ],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let anonymous = client(&dir, &addr, &[]);
    refused(&anonymous, "server requires client authentication");
    let other = client(
        &dir,
        &addr,
        &[
            "--key",
            p(&ext(&mallory, "key")),
            "--public",
            p(&ext(&mallory, "pub")),
        ],
    );
    refused(&other, "does not match the pinned key");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_client_certificate_from_the_trusted_ca_is_served() {
    let dir = std::env::temp_dir().join(format!("stoq-client-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for k in ["server", "ca", "bob", "rogue"] {
        keygen(&dir.join(k));
    }
    let (ca, bob, rogue) = (dir.join("ca"), dir.join("bob"), dir.join("rogue"));
    // Bob's certificate from the CA; a second one signed by a key nobody trusts.
    for (issuer, out) in [(&ca, "bob.pem"), (&rogue, "bob-rogue.pem")] {
        let o = Command::new(STOQ)
            .args([
                "cert",
                "--name",
                "bob",
                "--days",
                "1",
                "--out",
                p(&dir.join(out)),
            ])
            .args(["--issuer-key", p(&ext(issuer, "key")), "--issuer-pub"])
            .arg(ext(issuer, "pub"))
            .args(["--subject", p(&ext(&bob, "pub"))])
            .output()
            .expect("stoq cert");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (_s, addr) = server(&dir, &["--client-ca", p(&ext(&ca, "pub"))]);
    let ok = client(
        &dir,
        &addr,
        &[
            "--key",
            p(&ext(&bob, "key")),
            "--cert",
            p(&dir.join("bob.pem")),
        ],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let wrong = client(
        &dir,
        &addr,
        &[
            "--key",
            p(&ext(&bob, "key")),
            "--cert",
            p(&dir.join("bob-rogue.pem")),
        ],
    );
    refused(&wrong, "certificate refused");
    // A key that is not the certificate's is refused before anything is sent.
    let mismatch = client(
        &dir,
        &addr,
        &[
            "--key",
            p(&ext(&rogue, "key")),
            "--cert",
            p(&dir.join("bob.pem")),
        ],
    );
    refused(&mismatch, "does not match the certificate");
    let _ = std::fs::remove_dir_all(&dir);
}
