//! Certificate chains from the command line: a root key pair (`stoq keygen`), intermediate
//! CAs (`stoq cert --ca`), a leaf whose file holds the whole chain (`--issuer-cert`), a
//! server presenting it and a client trusting only the root, over chains of one to three
//! certificates; and the broken ones refused with the reason. Over loopback on the UDP
//! backend: no privileges needed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::{Kill, STOQ};

fn stoq(args: &[&str], paths: &[&Path]) -> Output {
    let mut c = Command::new(STOQ);
    c.args(args);
    c.args(paths);
    c.output().expect("run stoq")
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A key pair at `dir/name.{key,pub}`.
fn keygen(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    ok(&stoq(&["keygen", "--out"], &[&p]));
    p
}

fn ext(p: &Path, e: &str) -> PathBuf {
    p.with_extension(e)
}

/// `stoq cert` for `subject`, issued by `issuer` (with its chain file, if an intermediate),
/// written to `out`.
fn cert(issuer: &Path, issuer_chain: Option<&Path>, subject: &Path, ca: bool, out: &Path) {
    let mut c = Command::new(STOQ);
    c.args(["cert", "--name", "localhost", "--days", "1"])
        .arg("--issuer-key")
        .arg(ext(issuer, "key"))
        .arg("--issuer-pub")
        .arg(ext(issuer, "pub"))
        .arg("--subject")
        .arg(ext(subject, "pub"))
        .arg("--out")
        .arg(out);
    if ca {
        c.arg("--ca");
    }
    if let Some(p) = issuer_chain {
        c.arg("--issuer-cert").arg(p);
    }
    ok(&c.output().expect("stoq cert"));
}

/// Starts a server with `key` and the chain file `chain`; returns it and its address, or
/// the server's failure output.
fn server(key: &Path, chain: &Path) -> Result<(Kill, String), String> {
    let mut s = Kill(
        Command::new(STOQ)
            .args(["server", "--listen", "127.0.0.1:0", "--backend", "udp"])
            .args(["--workers", "1", "--key"])
            .arg(ext(key, "key"))
            .arg("--cert")
            .arg(chain)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("server"),
    );
    let mut out = BufReader::new(s.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("server banner");
    if !line.contains("listening on") {
        let o = std::mem::replace(&mut s.0, Command::new("true").spawn().expect("true"))
            .wait_with_output()
            .expect("server output");
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    let addr = line
        .split_whitespace()
        .nth(2)
        .expect("listening on ADDR")
        .to_string();
    // Keep reading the server's output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in out.lines() {});
    Ok((s, addr))
}

/// Uploads a small file to `addr`, trusting `anchor`.
fn upload(dir: &Path, addr: &str, anchor: &Path) -> Output {
    let f = dir.join("payload.bin");
    std::fs::write(&f, vec![7u8; 100_000]).expect("payload");
    let mut c = Command::new(STOQ);
    c.args(["client", addr, "--name", "localhost", "--backend", "udp"])
        .arg("--ca")
        .arg(anchor)
        .arg("--send")
        .arg(&f);
    c.output().expect("client")
}

#[test]
fn chains_of_one_to_three_certificates_authenticate_the_server() {
    let dir = std::env::temp_dir().join(format!("stoq-chain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let root = keygen(&dir, "root");
    let ca1 = keygen(&dir, "ca1");
    let ca2 = keygen(&dir, "ca2");
    let leaf = keygen(&dir, "leaf");
    // root -> ca1 -> ca2, each intermediate's file holding its chain.
    let ca1_pem = dir.join("ca1.pem");
    cert(&root, None, &ca1, true, &ca1_pem);
    let ca2_pem = dir.join("ca2.pem");
    cert(&ca1, Some(&ca1_pem), &ca2, true, &ca2_pem);
    // Leaves at depth 1 (issued by the root), 2 and 3.
    let depths = [
        (1, dir.join("leaf1.pem"), &root, None),
        (2, dir.join("leaf2.pem"), &ca1, Some(ca1_pem.as_path())),
        (3, dir.join("leaf3.pem"), &ca2, Some(ca2_pem.as_path())),
    ];
    for (depth, out, issuer, chain) in &depths {
        cert(issuer, *chain, &leaf, false, out);
        let text = std::fs::read_to_string(out).expect("chain file");
        assert_eq!(
            text.matches("BEGIN STOQ CERTIFICATE").count(),
            *depth,
            "the leaf's file holds its chain"
        );
        let (_server, addr) = server(&leaf, out).expect("server starts");
        let o = upload(&dir, &addr, &ext(&root, "pub"));
        ok(&o);
        println!(
            "depth {depth}: {}",
            String::from_utf8_lossy(&o.stdout).trim()
        );
    }
    // An intermediate's certificate is an anchor too: its subtree is trusted.
    let (_server, addr) = server(&leaf, &dir.join("leaf3.pem")).expect("server starts");
    ok(&upload(&dir, &addr, &ca2_pem));

    // Broken links. A chain file without its intermediate: the client cannot reach the
    // root, and says which issuer it does not know.
    let leaf_only = dir.join("leaf-only.pem");
    let text = std::fs::read_to_string(dir.join("leaf3.pem")).expect("chain");
    let end = "-----END STOQ CERTIFICATE-----\n";
    let first = &text[..text.find(end).expect("a block") + end.len()];
    std::fs::write(&leaf_only, first).expect("write");
    let (_server, addr) = server(&leaf, &leaf_only).expect("server starts");
    let o = upload(&dir, &addr, &ext(&root, "pub"));
    assert!(
        !o.status.success(),
        "a chain without its intermediates fails"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown"), "{err}");
    // Another root.
    let other = keygen(&dir, "other");
    let (_server, addr) = server(&leaf, &dir.join("leaf2.pem")).expect("server starts");
    let o = upload(&dir, &addr, &ext(&other, "pub"));
    assert!(!o.status.success(), "a chain to another root fails");
    // Intermediates out of order: the server refuses to start, naming the fix.
    let blocks: Vec<&str> = text.split_inclusive(end).collect();
    assert_eq!(blocks.len(), 3);
    let swapped = dir.join("swapped.pem");
    std::fs::write(&swapped, [blocks[0], blocks[2], blocks[1]].concat()).expect("write");
    let e = server(&leaf, &swapped).map(|_| ()).unwrap_err();
    assert!(e.contains("list the leaf first"), "{e}");
    // The wrong private key for the leaf.
    let e = server(&other, &dir.join("leaf2.pem"))
        .map(|_| ())
        .unwrap_err();
    assert!(e.contains("does not match"), "{e}");
    // A leaf (not a CA) cannot issue: `stoq cert --issuer-cert` refuses it.
    let o = Command::new(STOQ)
        .args(["cert", "--name", "x", "--out"])
        .arg(dir.join("x.pem"))
        .arg("--issuer-key")
        .arg(ext(&leaf, "key"))
        .arg("--issuer-pub")
        .arg(ext(&leaf, "pub"))
        .arg("--subject")
        .arg(ext(&other, "pub"))
        .arg("--issuer-cert")
        .arg(dir.join("leaf1.pem"))
        .output()
        .expect("stoq cert");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a CA"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
