//! NAT traversal, the reflexive address: an endpoint behind a NAT learns the public address
//! and port its NAT maps its socket to, from a real STUN server, on the socket and backend
//! its connections use.
//!
//! Topology (namespaces `stoq-nat-<pid>-*`): `inside` (10.200.120.2) routes through `nat`
//! (10.200.120.1 | 100.64.120.1), which masquerades to ports 40000-40999 with nftables (the
//! Debian package); `public` (100.64.120.2) runs coturn's `turnserver` (the Debian package)
//! as a STUN server on 3478 and a STOQ server on 4433.
//!
//! For each backend (UDP, io_uring, AF_XDP with the XDP program classifying the STUN
//! answer): the client connects to the STOQ server through the NAT, asks coturn for its
//! reflexive address over the same socket, and the address must be the NAT's public
//! address with the very port the STOQ server sees the connection come from, which is the
//! port conntrack shows for the mapping. The connection keeps working after the STUN
//! exchange.
//!
//! Then the mapping's behaviour: behind a port-preserving masquerade (endpoint-independent
//! mapping, a "cone") both of coturn's addresses see one public address and port; behind
//! `masquerade random` (a "symmetric" NAT) they see two.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use stoq::Endpoint;
use stoq::api::Mapping;
use stoq::engine::EngineConfig;
use stoq::io::BackendKind;
use stoq_common::classify::PacketKind;
use stoq_netns::NetNs;
use stoq_tests::engine::{self, SERVER_NAME};
use stoq_tests::nat::{Coturn, coturn, nft, sh};
use stoq_tests::privileged;

const INSIDE: Ipv4Addr = Ipv4Addr::new(10, 200, 120, 2);
const NAT_INSIDE: Ipv4Addr = Ipv4Addr::new(10, 200, 120, 1);
const NAT_PUBLIC: Ipv4Addr = Ipv4Addr::new(100, 64, 120, 1);
const PUBLIC: Ipv4Addr = Ipv4Addr::new(100, 64, 120, 2);
/// coturn's second address: a second STUN server, for the mapping's behaviour.
const PUBLIC2: Ipv4Addr = Ipv4Addr::new(100, 64, 120, 3);
const MAPPED_PORTS: std::ops::RangeInclusive<u16> = 40_000..=40_999;

/// The namespaces and coturn. Fields drop in order: coturn first, the namespaces last.
struct Topology {
    _coturn: Coturn,
    inside: NetNs,
    nat: NetNs,
    public: NetNs,
}

/// nftables NAT statements: ports mapped into a range (the reflexive-address test), the
/// source port kept where it is free (endpoint-independent mapping, a "cone"), and a random
/// port per flow (a "symmetric" NAT).
const RANGE: &str = "masquerade to :40000-40999";
const CONE: &str = "masquerade";
const SYMMETRIC: &str = "masquerade random";

fn topology(nat_rule: &str) -> Topology {
    let inside = NetNs::new("nat").expect("netns");
    let nat = NetNs::new("nat").expect("netns");
    let public = NetNs::new("nat").expect("netns");
    stoq_netns::link(
        &inside,
        "i0",
        "10.200.120.2/24",
        &nat,
        "n0",
        "10.200.120.1/24",
    )
    .expect("veth");
    stoq_netns::link(
        &nat,
        "n1",
        "100.64.120.1/24",
        &public,
        "p0",
        "100.64.120.2/24",
    )
    .expect("veth");
    public
        .ip(&["addr", "add", &format!("{PUBLIC2}/24"), "dev", "p0"])
        .expect("coturn's second address");
    inside
        .ip(&["route", "add", "default", "via", &NAT_INSIDE.to_string()])
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
    let rules = format!(
        "table ip stoq_nat {{\n\
           chain post {{\n\
             type nat hook postrouting priority srcnat; policy accept;\n\
             oifname \"n1\" meta l4proto udp {nat_rule}\n\
           }}\n\
         }}\n"
    );
    nft(&nat, &rules);
    let coturn = coturn(&public, &[PUBLIC, PUBLIC2], &["--stun-only"]);
    Topology {
        _coturn: coturn,
        inside,
        nat,
        public,
    }
}

/// The public port conntrack maps the inside address and `port` to, toward the STUN
/// server.
fn conntrack_mapping(nat: &NetNs, port: u16) -> Option<u16> {
    let out = sh(
        "ip",
        &[
            "netns",
            "exec",
            nat.name(),
            "conntrack",
            "-L",
            "-p",
            "udp",
            "--orig-src",
            &INSIDE.to_string(),
            "--orig-port-src",
            &port.to_string(),
            "--orig-dst",
            &PUBLIC.to_string(),
            "--orig-port-dst",
            "3478",
        ],
    );
    // "... src=PUBLIC dst=NAT_PUBLIC sport=3478 dport=<mapped> ...": the reply direction's
    // destination port.
    out.lines().next().and_then(|l| {
        l.split_whitespace()
            .filter_map(|w| w.strip_prefix("dport="))
            .nth(1)
            .and_then(|p| p.parse().ok())
    })
}

fn reflexive_address_through_a_nat(backend: BackendKind) {
    let t = topology(RANGE);
    let (scfg, ccfg) = engine::configs();
    let mut se = EngineConfig::new(SocketAddr::new(PUBLIC.into(), 4433));
    se.backend = Some(BackendKind::Udp);
    se.workers = 1;
    let server = t
        .public
        .run(move || Endpoint::server(se, scfg))
        .expect("server");
    let mut ce = EngineConfig::new(SocketAddr::new(INSIDE.into(), 5000));
    ce.backend = Some(backend);
    ce.workers = 1;
    let client = t
        .inside
        .run(move || Endpoint::client(ce, ccfg))
        .expect("client");
    assert_eq!(client.info().selection.chosen, backend);
    let rt = engine::runtime();
    let stun = SocketAddr::new(PUBLIC.into(), 3478);
    let (seen_by_server, reflexive, echoed) = rt.block_on(async {
        let accept = async {
            let c = server.accept().await.expect("accepted");
            let (mut s, mut r) = c.accept_bi().await.expect("stream");
            let req = r.read_to_end_limited(1 << 16).await.expect("request");
            s.write_all_data(&req).await.expect("answer");
            s.finish().expect("finish");
            let addr = c.remote_address().expect("remote address");
            // Stay open until the client has read the answer.
            let _ = c.closed().await;
            addr
        };
        let client_side = async {
            let conn = client
                .connect(SocketAddr::new(PUBLIC.into(), 4433), SERVER_NAME)
                .await
                .expect("connect through the NAT");
            let reflexive = client
                .reflexive_address(stun, Duration::from_secs(10))
                .await
                .expect("coturn answers");
            // The connection still works on the socket STUN shared.
            let (mut s, mut r) = conn.open_bi().await.expect("open");
            s.write_all_data(b"after stun").await.expect("write");
            s.finish().expect("finish");
            let echoed = r.read_to_end_limited(1 << 16).await.expect("echo");
            conn.close(0, b"done");
            (reflexive, echoed)
        };
        let (addr, (reflexive, echoed)) = tokio::join!(accept, client_side);
        (addr, reflexive, echoed)
    });
    eprintln!("{backend:?}: reflexive {reflexive}, the STOQ server saw {seen_by_server}");
    assert_eq!(echoed, b"after stun");
    assert_eq!(reflexive.ip(), IpAddr::from(NAT_PUBLIC), "{backend:?}");
    assert!(MAPPED_PORTS.contains(&reflexive.port()), "{reflexive}");
    // The same mapping the connection uses (the NAT maps one socket to one port), and the
    // one conntrack holds toward the STUN server.
    assert_eq!(seen_by_server, reflexive, "{backend:?}");
    assert_eq!(conntrack_mapping(&t.nat, 5000), Some(reflexive.port()));
    if backend == BackendKind::AfXdp {
        // The answer came through the XDP program, recognised as STUN and steered to the
        // AF_XDP socket.
        let xdp = client.xdp_stats().expect("XDP statistics");
        assert!(xdp.kind(PacketKind::Stun) >= 1, "{xdp:?}");
    }
    let stats = client.endpoint_stats();
    let s = stats[0].stun;
    assert_eq!((s.succeeded, s.failed, s.malformed), (1, 0, 0), "{s:?}");
    drop(client);
    drop(server);
}

#[test]
fn reflexive_address_udp() {
    if privileged("netns_nat::reflexive_address_udp") {
        reflexive_address_through_a_nat(BackendKind::Udp);
    }
}

#[test]
fn reflexive_address_io_uring() {
    if privileged("netns_nat::reflexive_address_io_uring") {
        reflexive_address_through_a_nat(BackendKind::IoUring);
    }
}

#[test]
fn reflexive_address_af_xdp() {
    if privileged("netns_nat::reflexive_address_af_xdp") {
        reflexive_address_through_a_nat(BackendKind::AfXdp);
    }
}

/// Behind each kind of NAT, a client asks both of coturn's addresses: the report must name
/// the mapping the nftables rule makes.
#[test]
fn nat_mapping_cone_and_symmetric() {
    if !privileged("netns_nat::nat_mapping_cone_and_symmetric") {
        return;
    }
    let servers = [
        SocketAddr::new(PUBLIC.into(), 3478),
        SocketAddr::new(PUBLIC2.into(), 3478),
    ];
    for (rule, want) in [
        (CONE, Mapping::EndpointIndependent),
        (SYMMETRIC, Mapping::Dependent),
    ] {
        let t = topology(rule);
        let (_, ccfg) = engine::configs();
        let mut ce = EngineConfig::new(SocketAddr::new(INSIDE.into(), 5000));
        ce.backend = Some(BackendKind::Udp);
        let client = t
            .inside
            .run(move || Endpoint::client(ce, ccfg))
            .expect("client");
        let report =
            engine::runtime().block_on(client.nat_report(&servers, Duration::from_secs(10)));
        eprintln!("{rule}: {report:?}");
        let stun = client.endpoint_stats()[0].stun;
        assert_eq!(report.mapping, want, "{rule}: {report:?} {stun:?}");
        assert!(
            report
                .answers
                .iter()
                .all(|(_, r)| r.is_ok_and(|a| a.ip() == IpAddr::from(NAT_PUBLIC)))
        );
        match want {
            Mapping::EndpointIndependent => {
                assert_eq!(
                    report.reflexive(),
                    Some(SocketAddr::new(NAT_PUBLIC.into(), 5000))
                );
            }
            _ => assert_eq!(report.reflexive(), None),
        }
    }
}
