//! Peer to peer through NATs: two peers, each behind its own NAT (nftables, the Debian
//! package), reach each other directly after meeting at a rendezvous server.
//!
//! Topology (namespaces `stoq-peer-<pid>-*`): an "internet" namespace routes between
//! 100.64.130.0/24, where a "services" namespace holds the rendezvous server (100.64.130.2)
//! and coturn (100.64.130.3), 100.64.131.0/24 and 100.64.132.0/24; NAT A (public 100.64.131.1) hides peer A (10.200.131.2), NAT B (100.64.132.1) hides
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
//! `connect_peer` says so, or goes through coturn when B registered a relayed address. A
//! NAT that rebinds a peer to a new port and forgets every flow mid-transfer loses no
//! data: the connection migrates. Behind a delay line in the internet (every round trip
//! 20 ms), `connect_peer` reaches its first byte within 3 round trips of a plain connect's.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use stoq::Endpoint;
use stoq::api::{PeerError, PeerPath, Relay, serve_rendezvous};
use stoq::engine::EngineConfig;
use stoq::io::BackendKind;
use stoq::nat::rendezvous::{Candidate, CandidateKind, decode_candidates, encode_candidates};
use stoq::nat::turn::TurnCredentials;
use stoq_netns::NetNs;
use stoq_tests::engine::{self, SERVER_NAME};
use stoq_tests::nat::{coturn, nft, sh};
use stoq_tests::privileged;
use tokio::io::AsyncReadExt;

const RENDEZVOUS: Ipv4Addr = Ipv4Addr::new(100, 64, 130, 2);
/// coturn, the TURN relay (long-term credentials stoq:relay-secret, realm stoq.test).
const TURN: Ipv4Addr = Ipv4Addr::new(100, 64, 130, 3);
const PORT: u16 = 5000;
const BYTES: usize = 256 << 20;

/// One test's topology and how its peers meet.
#[derive(Debug, Clone, Copy)]
struct Case {
    /// Peer A's NAT (A connects).
    a: Nat,
    /// Peer B's NAT.
    b: Nat,
    /// NAT A rebinds A mid-transfer.
    rebind: bool,
    /// B takes a relayed candidate on coturn.
    relay: bool,
    /// A delay line in the internet, this long each way.
    delay: Option<Duration>,
    /// No rendezvous server: the peers trade candidates themselves.
    own_signalling: bool,
}

impl Case {
    fn new(a: Nat, b: Nat) -> Self {
        Self {
            a,
            b,
            rebind: false,
            relay: false,
            delay: None,
            own_signalling: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nat {
    Cone,
    PortRestricted,
    Symmetric,
}

/// One request (a byte) and the first byte of its answer on `conn`.
async fn first_byte(conn: &stoq::Connection) {
    let (mut s, mut r) = conn.open_bi().await.expect("stream");
    s.write_all_data(b"x").await.expect("request");
    s.finish().expect("finish");
    let mut one = [0u8; 1];
    r.read_exact(&mut one).await.expect("answer");
}

/// On the idle topology behind the delay line: the time from `connect_peer` to the first
/// byte of an answer, against a plain `connect` to the same peer address (the handshake
/// and one request) in the same run, in the path's smallest RTT. With milliseconds of
/// delay per crossing the difference counts the rendezvous's round trips (its software
/// costs a fraction of a millisecond, docs/benchmarks.md), so it is checked: at most 3
/// (asking, then the peer's Ready, make 2).
async fn time_to_first_byte(ep: &Endpoint, rv: &stoq::api::Rendezvous, peer: SocketAddr) {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut via_peer, mut direct, mut rtt) = (Vec::new(), Vec::new(), f64::MAX);
    for _ in 0..7 {
        let t = Instant::now();
        let pc = ep
            .connect_peer(rv, b"bob", SERVER_NAME)
            .await
            .expect("peer");
        first_byte(&pc.connection).await;
        via_peer.push(t.elapsed().as_secs_f64() * 1e3);
        if let Some(s) = pc.connection.stats() {
            rtt = rtt.min(s.min_rtt.as_secs_f64() * 1e3);
        }
        pc.connection.close(0, b"");
        let t = Instant::now();
        let c = ep.connect(peer, SERVER_NAME).await.expect("direct");
        first_byte(&c).await;
        direct.push(t.elapsed().as_secs_f64() * 1e3);
        c.close(0, b"");
    }
    let (p, d) = (median(via_peer), median(direct));
    let extra = (p - d) / rtt;
    eprintln!(
        "time to first byte, medians of 7: connect_peer {p:.3} ms, plain connect {d:.3} ms, \
         difference {:.3} ms = {extra:.2} min RTTs ({rtt:.3} ms)",
        p - d,
    );
    assert!(
        extra <= 3.0,
        "connect_peer took {extra:.2} round trips more than a plain connect"
    );
}

/// A peer's namespace behind its NAT's namespace; returns (peer, nat).
fn site(internet: &NetNs, n: u8, kind: Nat) -> (NetNs, NetNs) {
    let peer = NetNs::new("peer").expect("netns");
    let nat = NetNs::new("peer").expect("netns");
    stoq_netns::link(
        &peer,
        "p0",
        &format!("10.200.{n}.2/24"),
        &nat,
        "lan",
        &format!("10.200.{n}.1/24"),
    )
    .expect("veth");
    stoq_netns::link(
        &nat,
        "wan",
        &format!("100.64.{n}.1/24"),
        internet,
        &format!("i{n}"),
        &format!("100.64.{n}.254/24"),
    )
    .expect("veth");
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
fn meet(case: Case) {
    let Case {
        a,
        b,
        rebind,
        relay,
        delay,
        own_signalling,
    } = case;
    let internet = NetNs::new("peer").expect("netns");
    // The rendezvous server and the relay live behind the internet's interface i130.
    let services = NetNs::new("peer").expect("netns");
    stoq_netns::link(
        &services,
        "s0",
        &format!("{RENDEZVOUS}/24"),
        &internet,
        "i130",
        "100.64.130.254/24",
    )
    .expect("veth");
    services
        .ip(&["addr", "add", &format!("{TURN}/24"), "dev", "s0"])
        .expect("relay address");
    services
        .ip(&["route", "add", "default", "via", "100.64.130.254"])
        .expect("route");
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
    // coturn relaying from ports 49152-49407 of its address, to the emulated public
    // addresses only, for the account stoq:relay-secret.
    // It is also the STUN server peers without a rendezvous server gather candidates from.
    let _coturn = (relay || own_signalling).then(|| {
        coturn(
            &services,
            &[TURN],
            &[
                "-E",
                &TURN.to_string(),
                "--min-port",
                "49152",
                "--max-port",
                "49407",
                "-a",
                "-u",
                "stoq:relay-secret",
                "-r",
                "stoq.test",
                "--allowed-peer-ip=100.64.0.0-100.127.255.255",
            ],
        )
    });
    let (peer_a, nat_a) = site(&internet, 131, a);
    let (peer_b, nat_b) = site(&internet, 132, b);
    let (halfway_tx, halfway_rx) = tokio::sync::oneshot::channel::<()>();
    let halfway = Arc::new(std::sync::Mutex::new(Some(halfway_tx)));
    let b_saw = Arc::new(std::sync::Mutex::new(None));
    let (scfg, ccfg) = engine::configs();
    let rt = engine::runtime();
    let rv_addr = SocketAddr::new(RENDEZVOUS.into(), 4433);
    let s = scfg.clone();
    // Every packet that crosses the internet waits `delay` there: each round trip
    // between two of the sites takes at least twice that.
    let _delay = delay.map(|d| {
        stoq_netns::DelayLine::new(&internet, "dly", &["i130", "i131", "i132"], d)
            .expect("delay line")
    });
    let rv = services
        .run(move || {
            let mut e = EngineConfig::new(rv_addr);
            e.backend = Some(BackendKind::Udp);
            e.workers = 1;
            Endpoint::server(e, s)
        })
        .expect("rendezvous server");
    serve_rendezvous(&rv).expect("rendezvous role");
    let peer = |ns: &NetNs, n: u8, workers: usize| {
        let (s, c) = (scfg.clone(), ccfg.clone());
        ns.run(move || {
            let mut e =
                EngineConfig::new(SocketAddr::new(Ipv4Addr::new(10, 200, n, 2).into(), PORT));
            e.backend = Some(BackendKind::Udp);
            e.workers = workers;
            Endpoint::server_and_client(e, s, c)
        })
        .expect("peer endpoint")
    };
    let ep_a = Arc::new(peer(&peer_a, 131, 1));
    // With a relay, B runs two workers: the relay's datagrams, which the kernel's
    // SO_REUSEPORT steering spreads by what it takes for a CID, must reach worker 0, and
    // so must A's connection, even when it arrives directly (it may fall back to the
    // relay, whose allocation lives on worker 0).
    let ep_b = Arc::new(peer(&peer_b, 132, if relay { 2 } else { 1 }));
    let b_public = SocketAddr::new(Ipv4Addr::new(100, 64, 132, 1).into(), PORT);
    let outcome = rt.block_on(async {
        let relay = relay.then(|| Relay {
            server: SocketAddr::new(TURN.into(), 3478),
            credentials: TurnCredentials {
                username: "stoq".into(),
                password: "relay-secret".into(),
            },
        });
        let regs = if own_signalling {
            None
        } else {
            let reg_b = ep_b
                .join_rendezvous_with(rv_addr, SERVER_NAME, b"bob", relay.clone())
                .await
                .expect("B registers");
            let reg_a = ep_a
                .join_rendezvous(rv_addr, SERVER_NAME, b"alice")
                .await
                .expect("A registers");
            Some((reg_a, reg_b))
        };
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
                        *b_saw.lock().unwrap() = Some((conn.remote_address(), conn.relay()));
                        let _ = s.write_all_data(&h.finalize()).await;
                        let _ = s.finish();
                    }
                });
            }
        });
        let pc = if let Some((reg_a, reg_b)) = &regs {
            // A peer that is not registered is named as such.
            assert_eq!(
                ep_a.connect_peer(reg_a, b"carol", SERVER_NAME).await.err(),
                Some(PeerError::NotFound)
            );
            if delay.is_some() {
                time_to_first_byte(&ep_a, reg_a, b_public).await;
            }
            let start = Instant::now();
            let pc = ep_a.connect_peer(reg_a, b"bob", SERVER_NAME).await?;
            assert!(reg_b.punched() >= 1, "B was told to punch");
            (pc, start.elapsed())
        } else {
            // The application's own signalling: each peer gathers (reflexive from coturn
            // as a STUN server, host, B's relayed), the candidates cross as bytes, B
            // punches toward A's, then A connects to B's.
            let stun = [SocketAddr::new(TURN.into(), 3478)];
            let wait = Duration::from_secs(2);
            let b_has = ep_b
                .gather_candidates(&stun, relay.as_ref(), wait)
                .await
                .expect("B gathers");
            let a_has = ep_a
                .gather_candidates(&stun, None, wait)
                .await
                .expect("A gathers");
            let carried = |c: &[Candidate]| {
                let mut bytes = Vec::new();
                encode_candidates(c, &mut bytes).expect("encode");
                decode_candidates(&bytes).expect("decode")
            };
            assert_eq!(
                a_has.first().map(|c| (c.kind, c.addr.ip())),
                Some((
                    CandidateKind::Reflexive,
                    Ipv4Addr::new(100, 64, 131, 1).into()
                )),
                "A's first candidate is its NAT's public address"
            );
            let start = Instant::now();
            ep_b.punch_toward(&carried(&a_has)).await;
            let pc = ep_a
                .connect_candidates(&carried(&b_has), SERVER_NAME)
                .await?;
            (pc, start.elapsed())
        };
        let (pc, connected) = pc;
        let (conn, path) = (pc.connection, pc.path);
        let (rebound_tx, rebound_rx) = tokio::sync::oneshot::channel::<()>();
        // With a relay to fall back on, only A's NAT forgets: B's NAT keeps its mapping
        // toward the relay (which its keep-alives hold open).
        let flush_b = relay.is_none();
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
                        // A's NAT stops letting anyone in on the old port (else a packet
                        // from B arriving first would re-create the old mapping) and maps
                        // A to port 6000 from now on.
                        ex(&na, &["nft", "flush", "chain", "ip", "stoq_peer", "pre"]);
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
                        if flush_b {
                            ex(&nb, &["conntrack", "-F"]);
                        }
                    })
                    .await
                    .expect("rebinding");
                    let _ = rebound_tx.send(());
                }
            });
        }
        // Behind the delay line the transfer only shows that the path works.
        let bytes = if delay.is_some() { 1 << 20 } else { BYTES };
        let data = engine::pattern(0x5710, bytes);
        let want = Sha256::digest(&data);
        let (mut s, mut r) = conn.open_bi().await.expect("stream");
        let t = Instant::now();
        if rebind {
            // The first quarter, then the rest once the NAT has rebound: the change lands
            // mid-transfer however fast the link is.
            s.write_all_data(&data[..bytes / 4]).await.expect("send");
            rebound_rx.await.expect("rebound");
            s.write_all_data(&data[bytes / 4..]).await.expect("send");
        } else {
            s.write_all_data(&data).await.expect("send");
        }
        s.finish().expect("finish");
        let got = r.read_to_end_limited(64).await.expect("digest");
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(
            got.as_slice(),
            want.as_slice(),
            "SHA-256 of what B received"
        );
        eprintln!(
            "{a:?} <-> {b:?}: {path:?} after {connected:?} ({} others not used), {} MiB in \
             {secs:.2} s ({:.2} Gbit/s)",
            pc.failed.len(),
            bytes >> 20,
            bytes as f64 * 8.0 / secs / 1e9
        );
        if relay.is_some() {
            // Through the relay the bulk went as ChannelData (4 bytes of framing), both
            // ways, once B had bound a channel to A's address.
            let t = ep_b.endpoint_stats()[0].turn;
            let ws = ep_b.worker_stats();
            let conns: Vec<usize> = ws.iter().map(|w| w.connections).collect();
            eprintln!(
                "B's connections by worker {conns:?}; worker 1 handed over {} datagrams",
                ws[1].handoffs_out
            );
            // B holds a relay allocation: every connection of its (A's, and the one to the
            // rendezvous server if any) lives on worker 0 with it.
            assert_eq!(conns[1], 0, "{conns:?}");
            assert!(conns[0] >= 1, "{conns:?}");
            eprintln!("B's relay traffic: {t:?}");
            assert!(t.channels_bound >= 1, "{t:?}");
            assert!(
                t.channel_received > t.relayed_received / 2 && t.channel_sent > 0,
                "{t:?}"
            );
        }
        Ok((conn.remote_address(), path))
    });
    match (a, b, relay) {
        (_, Nat::PortRestricted, true) if rebind => {
            // Direct at first; once A's NAT rebound it, B's NAT kept A's new port out and
            // A's connection moved to B's relayed address on coturn.
            let (remote, path) = outcome.expect("a path");
            assert!(matches!(path, PeerPath::Direct(_)), "{path:?}");
            let remote = remote.expect("A's connection is open");
            assert_eq!(remote.ip(), std::net::IpAddr::from(TURN), "{remote}");
        }
        (Nat::Symmetric, Nat::Symmetric, false) => {
            let e = outcome.expect_err("no direct path between two symmetric NATs");
            assert!(matches!(e, PeerError::Unreachable { tried: 2, .. }), "{e}");
        }
        (Nat::Symmetric, Nat::Symmetric, true) => {
            // Through coturn: to B's relayed address there, after both direct candidates
            // failed.
            let (remote, path) = outcome.expect("a relayed path");
            let PeerPath::Relayed(c) = path else {
                panic!("{path:?}")
            };
            assert_eq!(remote, Some(c.addr));
            assert_eq!(c.addr.ip(), std::net::IpAddr::from(TURN));
        }
        _ => {
            // Direct: to B's NAT's public address, not through anything else.
            let (remote, path) = outcome.expect("a direct path");
            assert_eq!(remote, Some(b_public));
            assert!(matches!(path, PeerPath::Direct(_)), "{path:?}");
        }
    }
    let a_public = Ipv4Addr::new(100, 64, 131, 1);
    let want_port = if rebind { 6000 } else { PORT };
    if a == Nat::Symmetric && relay {
        // B hears A through the relay as A's NAT's public address (another port than the
        // one the rendezvous server saw: the NAT is symmetric).
        let saw = b_saw.lock().unwrap().expect("B saw A").0.expect("open");
        assert_eq!(saw.ip(), std::net::IpAddr::from(a_public));
    } else if a != Nat::Symmetric {
        assert_eq!(
            b_saw.lock().unwrap().expect("B saw A").0,
            Some(SocketAddr::new(a_public.into(), want_port)),
            "where B saw A at the end"
        );
    }
    // B's connection says whether it reaches A through B's own relay allocation.
    let through = b_saw.lock().unwrap().and_then(|(_, r)| r);
    let relayed_at_end = relay && (a == Nat::Symmetric || rebind);
    assert_eq!(
        through,
        relayed_at_end.then(|| SocketAddr::new(TURN.into(), 3478)),
        "the relay B's connection names"
    );
    drop(ep_a);
    drop(ep_b);
    drop(rt);
    drop(rv);
}

#[test]
fn cone_to_cone() {
    if privileged("netns_peer::cone_to_cone") {
        meet(Case::new(Nat::Cone, Nat::Cone));
    }
}

#[test]
fn cone_to_port_restricted() {
    if privileged("netns_peer::cone_to_port_restricted") {
        meet(Case::new(Nat::Cone, Nat::PortRestricted));
    }
}

#[test]
fn port_restricted_to_port_restricted() {
    if privileged("netns_peer::port_restricted_to_port_restricted") {
        meet(Case::new(Nat::PortRestricted, Nat::PortRestricted));
    }
}

#[test]
fn symmetric_to_symmetric_has_no_direct_path() {
    if privileged("netns_peer::symmetric_to_symmetric_has_no_direct_path") {
        meet(Case::new(Nat::Symmetric, Nat::Symmetric));
    }
}

/// NAT A rebinds A to a new public port and both NATs forget their flows mid-transfer:
/// B (behind a cone) hears A from the new address, the connection migrates, and the
/// 256 MiB arrive intact.
#[test]
fn a_nat_rebinding_mid_transfer_loses_nothing() {
    if privileged("netns_peer::a_nat_rebinding_mid_transfer_loses_nothing") {
        meet(Case {
            rebind: true,
            ..Case::new(Nat::Cone, Nat::Cone)
        });
    }
}

/// Two symmetric NATs: B registered a relayed address on coturn, and after both direct
/// candidates fail, A connects through it; 256 MiB arrive intact, encrypted end to end.
#[test]
fn symmetric_to_symmetric_through_coturn() {
    if privileged("netns_peer::symmetric_to_symmetric_through_coturn") {
        meet(Case {
            relay: true,
            ..Case::new(Nat::Symmetric, Nat::Symmetric)
        });
    }
}

/// Cone ↔ cone behind 10 ms of delay each way through the internet: `connect_peer`'s
/// time to the first byte is within 3 round trips of a plain connect's (see
/// [`time_to_first_byte`]).
#[test]
fn connect_peer_costs_at_most_three_round_trips() {
    if privileged("netns_peer::connect_peer_costs_at_most_three_round_trips") {
        meet(Case {
            delay: Some(Duration::from_millis(10)),
            ..Case::new(Nat::Cone, Nat::Cone)
        });
    }
}

/// No rendezvous server: the peers gather their candidates (coturn as the STUN server),
/// trade them as bytes over their own channel, B punches toward A's and A connects to
/// B's. Both NATs are port-restricted, so without B's punches nothing gets in.
#[test]
fn port_restricted_to_port_restricted_over_own_signalling() {
    if privileged("netns_peer::port_restricted_to_port_restricted_over_own_signalling") {
        meet(Case {
            own_signalling: true,
            ..Case::new(Nat::PortRestricted, Nat::PortRestricted)
        });
    }
}

/// No rendezvous server, two symmetric NATs: B gathers a relayed candidate too, its
/// punch gives A's address a permission on the relay, and A's connection goes through
/// coturn once the direct attempts have had their head start.
#[test]
fn symmetric_to_symmetric_through_coturn_over_own_signalling() {
    if privileged("netns_peer::symmetric_to_symmetric_through_coturn_over_own_signalling") {
        meet(Case {
            relay: true,
            own_signalling: true,
            ..Case::new(Nat::Symmetric, Nat::Symmetric)
        });
    }
}

/// B behind a port-restricted NAT, with a relayed candidate on coturn: A's NAT rebinds A to
/// a new port mid-transfer and forgets its flows. B's NAT keeps A's new port out, so
/// migration cannot follow; A's connection hears nothing, moves to B's relayed address,
/// and the 256 MiB arrive intact.
#[test]
fn a_rebinding_behind_a_port_restricted_peer_falls_back_to_the_relay() {
    if privileged("netns_peer::a_rebinding_behind_a_port_restricted_peer_falls_back_to_the_relay") {
        meet(Case {
            rebind: true,
            relay: true,
            ..Case::new(Nat::Cone, Nat::PortRestricted)
        });
    }
}
