//! `stoq nat` against STUN servers played here on loopback (127.0.0.1 and 127.0.0.2), each
//! answering a Binding request with the address it came from, or, as a NAT with a
//! dependent mapping would make it look, with another port per server. The answers are
//! built by hand from RFC 8489's layout, independently of STOQ's codec. (The same command
//! behind a real NAT and coturn is tests/tests/netns_nat.rs's ground, through the API.)

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::thread;

const STOQ: &str = env!("CARGO_BIN_EXE_stoq");

/// A STUN server on `ip` answering up to `n` requests; it reports the source port plus
/// `shift` (0: the truth).
fn server(ip: &str, shift: u16, n: usize) -> SocketAddr {
    let s = UdpSocket::bind((ip, 0)).expect("bind");
    let addr = s.local_addr().expect("addr");
    thread::spawn(move || {
        let mut b = [0u8; 1500];
        for _ in 0..n {
            let Ok((len, from)) = s.recv_from(&mut b) else {
                return;
            };
            // A Binding request: type 0x0001 and the magic cookie.
            if len < 20 || b[..2] != [0, 1] || b[4..8] != [0x21, 0x12, 0xa4, 0x42] {
                continue;
            }
            let SocketAddr::V4(from) = from else { continue };
            let mut r = vec![0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
            r.extend_from_slice(&b[8..20]);
            r.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01]);
            r.extend_from_slice(&((from.port() + shift) ^ 0x2112).to_be_bytes());
            let ip = u32::from(*from.ip()) ^ 0x2112_a442;
            r.extend_from_slice(&ip.to_be_bytes());
            let _ = s.send_to(&r, from);
        }
    });
    addr
}

fn nat(args: &[String]) -> (bool, String) {
    let out = Command::new(STOQ)
        .arg("nat")
        .args(args)
        .args([
            "--bind",
            "127.0.0.1:0",
            "--backend",
            "udp",
            "--timeout",
            "3",
        ])
        .output()
        .expect("run stoq");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_mapping_is_told_from_two_servers() {
    // Honest servers on two addresses: they see the bound address itself.
    let (a, b) = (server("127.0.0.1", 0, 4), server("127.0.0.2", 0, 4));
    let (ok, out) = nat(&[
        "--stun".into(),
        a.to_string(),
        "--stun".into(),
        b.to_string(),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("mapping: not translated"), "{out}");
    assert!(out.contains(&format!("stun {a}: 127.0.0.1:")), "{out}");
    // One server on two addresses seeing other ports than each other: a dependent mapping.
    let (a, b) = (server("127.0.0.1", 1, 4), server("127.0.0.2", 2, 4));
    let (ok, out) = nat(&[
        "--stun".into(),
        a.to_string(),
        "--stun".into(),
        b.to_string(),
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("mapping: dependent"), "{out}");
    assert!(out.contains("need a relay"), "{out}");
}

#[test]
fn no_answer_fails_with_the_reason() {
    // A bound socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let (ok, out) = nat(&["--stun".into(), silent.local_addr().unwrap().to_string()]);
    assert!(!ok, "{out}");
    assert!(out.contains("no answer from the STUN server"), "{out}");
    assert!(out.contains("no STUN server answered"), "{out}");
    // A server address that names nothing to ask is refused by name.
    let (ok, out) = nat(&["--stun".into(), "0.0.0.0:3478".into()]);
    assert!(!ok, "{out}");
    assert!(out.contains("needs an IP and a port"), "{out}");
}
