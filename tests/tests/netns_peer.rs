//! Peer to peer through NATs: two peers, each behind its own NAT (nftables, the Debian
//! package), reach each other directly after meeting at a rendezvous server.
//!
//! Topology (namespaces `stoq-peer-<pid>-*`): an "internet" namespace routes between
//! 100.64.131.0/24 and 100.64.132.0/24 and holds the rendezvous server (100.64.130.2);
//! NAT A (public 100.64.131.1) hides peer A (10.200.131.2), NAT B (100.64.132.1) hides
//! peer B (10.200.132.2). Every NAT maps a socket to one public port for every
//! destination (a port-preserving masquerade) and drops what arrives unasked; a "cone"
//! NAT also lets anyone reach the mapped port (endpoint-independent filtering), a
//! "port-restricted" one only the address and port the peer sent to. A "symmetric" NAT
//! maps each destination to its own random port.
//!
//! Each peer registers at the rendezvous server from its own socket; A asks for B, B
//! punches toward A's candidates, A connects to B's. Cone ↔ cone and cone ↔
//! port-restricted: the connection is direct (to B's NAT's public address) and a 256 MiB
//! transfer's SHA-256 matches. Symmetric ↔ symmetric: no direct path exists, and
//! `connect_peer` says so (a relay is still to come). A NAT that rebinds a peer to a new
//! port and forgets every flow mid-transfer loses no data: the connection migrates.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use stoq::Endpoint;
use stoq::api::{PeerError, serve_rendezvous};
use stoq::engine::EngineConfig;
use stoq::io::BackendKind;
use stoq_netns::NetNs;
use stoq_tests::engine::{self, SERVER_NAME};
use stoq_tests::privileged;
use tokio::io::AsyncReadExt;

const RENDEZVOUS: Ipv4Addr = Ipv4Addr::new(100, 64, 130, 2);
const PORT: u16 = 5000;
const BYTES: usize = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nat {
    Cone,
    PortRestricted,
    Symmetric,
}

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn link(a: &NetNs, a_if: &str, a_ip: &str, b: &NetNs, b_if: &str, b_ip: &str) {
    sh(
        "ip",
        &[
            "link",
            "add",
            a_if,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b.name(),
        ],
    );
    a.ip(&["addr", "add", a_ip, "dev", a_if]).expect("addr");
    b.ip(&["addr", "add", b_ip, "dev", b_if]).expect("addr");
    a.ip(&["link", "set", a_if, "up"]).expect("up");
    b.ip(&["link", "set", b_if, "up"]).expect("up");
}

fn nft(ns: &NetNs, rules: &str) {
    let mut c = Command::new("ip")
        .args(["netns", "exec", ns.name(), "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft");
    std::io::Write::write_all(c.stdin.as_mut().expect("stdin"), rules.as_bytes())
        .expect("nft rules");
    drop(c.stdin.take());
    assert!(c.wait().expect("nft").success(), "nft -f failed:\n{rules}");
}

/// A peer's namespace behind its NAT's namespace; returns (peer, nat).
fn site(internet: &NetNs, n: u8, kind: Nat) -> (NetNs, NetNs) {
    let peer = NetNs::new("peer").expect("netns");
    let nat = NetNs::new("peer").expect("netns");
    link(
        &peer,
        "p0",
        &format!("10.200.{n}.2/24"),
        &nat,
        "lan",
        &format!("10.200.{n}.1/24"),
    );
    link(
        &nat,
        "wan",
        &format!("100.64.{n}.1/24"),
        internet,
        &format!("i{n}"),
        &format!("100.64.{n}.254/24"),
    );
    peer.ip(&["route", "add", "default", "via", &format!("10.200.{n}.1")])
        .expect("route");
    nat.ip(&["route", "add", "default", "via", &format!("100.64.{n}.254")])
        .expect("route");
    sh(
        "ip",
        &[
            "netns",
            "exec",
            nat.name(),
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ],
    );
    let map = if kind == Nat::Symmetric {
        "masquerade random"
    } else {
        "masquerade"
    };
    // Endpoint-independent filtering: the mapped port is open to anyone.
    let open = if kind == Nat::Cone {
        format!("iifname \"wan\" udp dport {PORT} dnat to 10.200.{n}.2:{PORT}")
    } else {
        String::new()
    };
    nft(
        &nat,
        &format!(
            "table ip stoq_peer {{\n\
               chain pre {{\n\
                 type nat hook prerouting priority dstnat; policy accept;\n\
                 {open}\n\
               }}\n\
               chain post {{\n\
                 type nat hook postrouting priority srcnat; policy accept;\n\
                 oifname \"wan\" meta l4proto udp {map}\n\
               }}\n\
               chain in {{\n\
                 type filter hook input priority filter; policy accept;\n\
                 iifname \"wan\" ct state new drop\n\
               }}\n\
             }}\n"
        ),
    );
    (peer, nat)
}

/// Peer A behind `a`, peer B behind `b`: A asks the rendezvous server for B, connects and
/// sends 256 MiB, whose SHA-256 B returns. With `rebind`, once B has 32 MiB, NAT A starts
/// mapping A to port 6000 and both NATs forget their flows (`conntrack -F`): A's packets
/// reach B from a new address mid-transfer.
fn meet(a: Nat, b: Nat, rebind: bool) {
    let internet = NetNs::new("peer").expect("netns");
    internet
        .ip(&["addr", "add", &format!("{RENDEZVOUS}/32"), "dev", "lo"])
        .expect("rendezvous address");
    sh(
        "ip",
        &[
            "netns",
            "exec",
            internet.name(),
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ],
    );
    let (peer_a, nat_a) = site(&internet, 131, a);
    let (peer_b, nat_b) = site(&internet, 132, b);
    let (halfway_tx, halfway_rx) = tokio::sync::oneshot::channel::<()>();
    let halfway = Arc::new(std::sync::Mutex::new(Some(halfway_tx)));
    let b_saw = Arc::new(std::sync::Mutex::new(None));
    let (scfg, ccfg) = engine::configs();
    let rt = engine::runtime();
    let rv_addr = SocketAddr::new(RENDEZVOUS.into(), 4433);
    let s = scfg.clone();
    let rv = internet
        .run(move || {
            let mut e = EngineConfig::new(rv_addr);
            e.backend = Some(BackendKind::Udp);
            e.workers = 1;
            Endpoint::server(e, s)
        })
        .expect("rendezvous server");
    let rv = Arc::new(rv);
    let rv2 = rv.clone();
    rt.spawn(async move { serve_rendezvous(&rv2).await });
    let peer = |ns: &NetNs, n: u8| {
        let (s, c) = (scfg.clone(), ccfg.clone());
        ns.run(move || {
            let mut e =
                EngineConfig::new(SocketAddr::new(Ipv4Addr::new(10, 200, n, 2).into(), PORT));
            e.backend = Some(BackendKind::Udp);
            e.workers = 1;
            Endpoint::server_and_client(e, s, c)
        })
        .expect("peer endpoint")
    };
    let ep_a = Arc::new(peer(&peer_a, 131));
    let ep_b = Arc::new(peer(&peer_b, 132));
    let b_public = SocketAddr::new(Ipv4Addr::new(100, 64, 132, 1).into(), PORT);
    let outcome = rt.block_on(async {
        let reg_b = ep_b
            .join_rendezvous(rv_addr, SERVER_NAME, b"bob")
            .await
            .expect("B registers");
        let reg_a = ep_a
            .join_rendezvous(rv_addr, SERVER_NAME, b"alice")
            .await
            .expect("A registers");
        // B serves: whatever arrives on a stream is hashed, and the digest is the answer.
        let eb = ep_b.clone();
        let (halfway, b_saw2) = (halfway.clone(), b_saw.clone());
        tokio::spawn(async move {
            while let Some(conn) = eb.accept().await {
                let (halfway, b_saw) = (halfway.clone(), b_saw2.clone());
                tokio::spawn(async move {
                    while let Ok((mut s, mut r)) = conn.accept_bi().await {
                        let mut h = Sha256::new();
                        let mut buf = vec![0u8; 1 << 16];
                        let mut total = 0;
                        loop {
                            match r.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    h.update(&buf[..n]);
                                    total += n;
                                    if total >= 32 << 20
                                        && let Some(t) = halfway.lock().unwrap().take()
                                    {
                                        let _ = t.send(());
                                    }
                                }
                            }
                        }
                        *b_saw.lock().unwrap() = conn.remote_address();
                        let _ = s.write_all_data(&h.finalize()).await;
                        let _ = s.finish();
                    }
                });
            }
        });
        // A peer that is not registered is named as such.
        assert_eq!(
            ep_a.connect_peer(&reg_a, b"carol", SERVER_NAME).await.err(),
            Some(PeerError::NotFound)
        );
        let start = Instant::now();
        let conn = match ep_a.connect_peer(&reg_a, b"bob", SERVER_NAME).await {
            Ok(c) => c,
            Err(e) => return Err(e),
        };
        let connected = start.elapsed();
        assert!(reg_b.punched() >= 1, "B was told to punch");
        if rebind {
            let (na, nb) = (nat_a.name().to_string(), nat_b.name().to_string());
            tokio::spawn(async move {
                if halfway_rx.await.is_ok() {
                    tokio::task::spawn_blocking(move || {
                        let ex = |ns: &str, args: &[&str]| {
                            let mut v = vec!["netns", "exec", ns];
                            v.extend_from_slice(args);
                            sh("ip", &v);
                        };
                        ex(&na, &["nft", "flush", "chain", "ip", "stoq_peer", "post"]);
                        ex(
                            &na,
                            &[
                                "nft",
                                "add",
                                "rule",
                                "ip",
                                "stoq_peer",
                                "post",
                                "oifname",
                                "wan",
                                "meta",
                                "l4proto",
                                "udp",
                                "masquerade",
                                "to",
                                ":6000",
                            ],
                        );
                        ex(&na, &["conntrack", "-F"]);
                        ex(&nb, &["conntrack", "-F"]);
                    })
                    .await
                    .expect("rebinding");
                }
            });
        }
        let data = engine::pattern(0x5710, BYTES);
        let want = Sha256::digest(&data);
        let (mut s, mut r) = conn.open_bi().await.expect("stream");
        let t = Instant::now();
        s.write_all_data(&data).await.expect("send");
        s.finish().expect("finish");
        let got = r.read_to_end_limited(64).await.expect("digest");
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(
            got.as_slice(),
            want.as_slice(),
            "SHA-256 of what B received"
        );
        eprintln!(
            "{a:?} <-> {b:?}: direct to {:?} after {connected:?}, 256 MiB in {secs:.2} s \
             ({:.2} Gbit/s)",
            conn.remote_address(),
            BYTES as f64 * 8.0 / secs / 1e9
        );
        Ok(conn.remote_address())
    });
    match (a, b) {
        (Nat::Symmetric, Nat::Symmetric) => {
            let e = outcome.expect_err("no direct path between two symmetric NATs");
            assert!(matches!(e, PeerError::Unreachable { tried: 2, .. }), "{e}");
        }
        _ => {
            // Direct: to B's NAT's public address, not through anything else.
            assert_eq!(outcome.expect("a direct path"), Some(b_public));
        }
    }
    let a_public = Ipv4Addr::new(100, 64, 131, 1);
    let want_port = if rebind { 6000 } else { PORT };
    if a != Nat::Symmetric {
        assert_eq!(
            *b_saw.lock().unwrap(),
            Some(SocketAddr::new(a_public.into(), want_port)),
            "where B saw A at the end"
        );
    }
    drop(ep_a);
    drop(ep_b);
    drop(rt);
    drop(rv);
}

#[test]
fn cone_to_cone() {
    if privileged("netns_peer::cone_to_cone") {
        meet(Nat::Cone, Nat::Cone, false);
    }
}

#[test]
fn cone_to_port_restricted() {
    if privileged("netns_peer::cone_to_port_restricted") {
        meet(Nat::Cone, Nat::PortRestricted, false);
    }
}

#[test]
fn port_restricted_to_port_restricted() {
    if privileged("netns_peer::port_restricted_to_port_restricted") {
        meet(Nat::PortRestricted, Nat::PortRestricted, false);
    }
}

#[test]
fn symmetric_to_symmetric_has_no_direct_path() {
    if privileged("netns_peer::symmetric_to_symmetric_has_no_direct_path") {
        meet(Nat::Symmetric, Nat::Symmetric, false);
    }
}

/// NAT A rebinds A to a new public port and both NATs forget their flows mid-transfer:
/// B (behind a cone) hears A from the new address, the connection migrates, and the
/// 256 MiB arrive intact.
#[test]
fn a_nat_rebinding_mid_transfer_loses_nothing() {
    if privileged("netns_peer::a_nat_rebinding_mid_transfer_loses_nothing") {
        meet(Nat::Cone, Nat::Cone, true);
    }
}
