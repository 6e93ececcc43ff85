//! A fleet on one machine: three STOQ servers (namespaces) behind a load-balancer namespace
//! that routes by the QUIC-LB server ID with nftables (the Debian package), not a balancer
//! written here. A client's Initials are hashed on their 4-tuple; every other packet
//! follows the server ID in its destination CID (bytes 2-3 of a short header's UDP
//! payload, 7-8 of a long header's). The servers share one cluster key file.
//!
//! - 100 clients (each its own address and port) spread over the three servers;
//! - a client that changes its source port mid-transfer (NAT rebinding) stays on its
//!   server (its new 4-tuple's first packet is a short header, routed by the server ID)
//!   and its data arrives intact;
//! - a server killed and started again with the cluster keys resets its old clients at
//!   once (well under their 30 s idle timeout), and they reconnect;
//! - a Retry token issued by one server is accepted by another: the client's answer to a
//!   Retry is held at the balancer while its flow is forgotten (conntrack) and the
//!   Initials' hash is pointed at another server, which then admits the client on the
//!   first server's token without a Retry of its own.
//!
//! The rules are the ones `docs/operations.md` shows.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stoq::conn::{ClusterKeys, ConnectionError, RetryPolicy};
use stoq::engine::EngineConfig;
use stoq::io::BackendKind;
use stoq::{Connection, Endpoint};
use stoq_netns::NetNs;
use stoq_tests::engine::{self, SERVER_NAME};
use stoq_tests::nat::sh;
use stoq_tests::privileged;

const SERVERS: usize = 3;
const CLIENTS: usize = 100;
/// The service address clients connect to, on the load balancer.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 200, 89, 100);

fn server_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, 91 + i as u8, 1)
}

/// The nftables rules of the load balancer: QUIC-LB server ID `i + 1` is server `i`;
/// Initials are hashed over all servers, or all sent to `initials_to`.
fn lb_rules(initials_to: Option<usize>) -> String {
    let sids: Vec<String> = (0..SERVERS)
        .map(|i| format!("0x{:04x} : {}", i + 1, server_ip(i)))
        .collect();
    let hash: Vec<String> = (0..SERVERS)
        .map(|i| format!("{i} : {}", server_ip(initials_to.unwrap_or(i))))
        .collect();
    let (sids, hash) = (sids.join(", "), hash.join(", "));
    format!(
        "flush ruleset
table ip stoq_lb {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    # Long header, type Initial: the client chose the DCID; hash the 4-tuple.
    ip daddr {VIP} udp dport 4433 @th,64,1 1 @th,66,2 0 dnat to jhash ip saddr . udp sport mod {SERVERS} map {{ {hash} }}
    # Other long headers: the server ID follows the DCID's first octet (payload bytes 7-8).
    ip daddr {VIP} udp dport 4433 @th,64,1 1 dnat to @th,120,16 map {{ {sids} }}
    # Short headers: payload bytes 2-3.
    ip daddr {VIP} udp dport 4433 @th,64,1 0 dnat to @th,80,16 map {{ {sids} }}
  }}
}}
"
    )
}

/// The namespaces: clients, the balancer, three servers. Dropped, they vanish with their
/// links and rules.
struct Fleet {
    servers: Vec<NetNs>,
    clients: NetNs,
    lb: NetNs,
}

impl Fleet {
    fn new() -> Self {
        let clients = NetNs::new("fleet-c").expect("netns");
        let lb = NetNs::new("fleet-lb").expect("netns");
        let servers: Vec<NetNs> = (0..SERVERS)
            .map(|_| NetNs::new("fleet-s").expect("netns"))
            .collect();
        let link = |a: &NetNs, a_if: &str, a_ip: &str, b: &NetNs, b_if: &str, b_ip: &str| {
            stoq_netns::link(a, a_if, a_ip, b, b_if, b_ip).expect("veth");
        };
        // Clients: 10.200.90.0/24, one address per client (so each has its own 4-tuple).
        link(
            &clients,
            "c0",
            "10.200.90.1/24",
            &lb,
            "l0",
            "10.200.90.254/24",
        );
        for k in 2..=CLIENTS + 2 {
            clients
                .ip(&["addr", "add", &format!("10.200.90.{k}/24"), "dev", "c0"])
                .expect("client address");
        }
        lb.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "l0"])
            .expect("vip");
        clients
            .ip(&["route", "add", "default", "via", "10.200.90.254"])
            .expect("route");
        for (i, s) in servers.iter().enumerate() {
            let net = 91 + i;
            link(
                s,
                "s0",
                &format!("10.200.{net}.1/24"),
                &lb,
                &format!("l{}", i + 1),
                &format!("10.200.{net}.254/24"),
            );
            s.ip(&[
                "route",
                "add",
                "default",
                "via",
                &format!("10.200.{net}.254"),
            ])
            .expect("route");
        }
        sh(
            "ip",
            &[
                "netns",
                "exec",
                lb.name(),
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        );
        let fleet = Self {
            servers,
            clients,
            lb,
        };
        fleet.load(&lb_rules(None));
        fleet
    }

    /// Loads an nftables rule set into the balancer.
    fn load(&self, rules: &str) {
        let path = std::env::temp_dir().join(format!("stoq-fleet-{}.nft", std::process::id()));
        std::fs::write(&path, rules).expect("rules file");
        sh(
            "ip",
            &[
                "netns",
                "exec",
                self.lb.name(),
                "nft",
                "-f",
                path.to_str().expect("path"),
            ],
        );
        let _ = std::fs::remove_file(path);
    }
}

/// Server `i` (QUIC-LB server ID `i + 1`), in its namespace, with the cluster keys.
fn start_server(
    fleet: &Fleet,
    i: usize,
    keys: &Arc<ClusterKeys>,
    s: &Arc<stoq::handshake::ServerConfig>,
) -> Arc<Endpoint> {
    let mut cfg = EngineConfig::new(SocketAddr::new(server_ip(i).into(), 4433));
    cfg.backend = Some(BackendKind::Udp);
    cfg.workers = 1;
    cfg.pin_workers = false;
    cfg.endpoint.server_id = i as u64 + 1;
    cfg.endpoint.cluster_keys = Some(keys.clone());
    // Every client proves its address first: Retry goes through the balancer too, and
    // tokens travel between servers.
    cfg.endpoint.retry = RetryPolicy::Always;
    let s = s.clone();
    Arc::new(
        fleet.servers[i]
            .run(move || Endpoint::server(cfg, s))
            .expect("server"),
    )
}

fn accepted(servers: &[Arc<Endpoint>]) -> Vec<u64> {
    servers
        .iter()
        .map(|s| s.endpoint_stats().iter().map(|e| e.accepted).sum())
        .collect()
}

#[test]
fn a_fleet_behind_an_nftables_quic_lb_balancer() {
    let name = "a_fleet_behind_an_nftables_quic_lb_balancer";
    if !privileged(name) {
        return;
    }
    if Command::new("nft").arg("--version").output().is_err() {
        panic!("{name}: needs nft (Debian package nftables; .ci/run installs it)");
    }
    let fleet = Fleet::new();
    let keys = Arc::new(ClusterKeys::new(0, [0x5a; 32]).expect("keys"));
    let (s, c) = engine::configs();
    let rt = engine::runtime();
    let mut servers: Vec<Arc<Endpoint>> = (0..SERVERS)
        .map(|i| start_server(&fleet, i, &keys, &s))
        .collect();
    let mut serving: Vec<_> = servers
        .iter()
        .map(|srv| rt.spawn(engine::serve(srv.clone())))
        .collect();
    let target = SocketAddr::new(VIP.into(), 4433);
    // The clients live on one thread inside their namespace (their sockets are made
    // there), each an engine on that thread's runtime.
    let (to_clients, commands) = std::sync::mpsc::channel::<Command_>();
    let (results, from_clients) = std::sync::mpsc::channel::<Result_>();
    let client_thread = fleet.clients.spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(clients_main(c, target, commands, results));
    });

    // 1. 100 clients connect and echo.
    to_clients.send(Command_::ConnectAll).expect("send");
    let Result_::Connected(took) = from_clients.recv().expect("clients") else {
        panic!("unexpected answer")
    };
    let spread = accepted(&servers);
    eprintln!("{CLIENTS} clients connected and echoed in {took:?}; per server {spread:?}");
    assert_eq!(spread.iter().sum::<u64>(), CLIENTS as u64, "{spread:?}");
    assert!(
        spread.iter().all(|n| *n > 0),
        "spread over all three: {spread:?}"
    );

    // 2. NAT rebinding mid-transfer: the client stays on its server.
    to_clients.send(Command_::RebindDuringUpload).expect("send");
    let Result_::Rebound { intact, ports } = from_clients.recv().expect("clients") else {
        panic!("unexpected answer")
    };
    assert!(intact, "the moved client's upload arrived intact");
    assert_eq!(accepted(&servers), spread, "no new connection anywhere");
    eprintln!("a client moved ports {ports:?} mid-transfer and stayed on its server");

    // 3. Server 2 dies and comes back with the cluster keys: its clients are reset at
    // once and reconnect.
    let victim = 1;
    let had = spread[victim];
    serving.remove(victim).abort();
    let old = servers.remove(victim);
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
    drop(old);
    let again = start_server(&fleet, victim, &keys, &s);
    serving.insert(victim, rt.spawn(engine::serve(again.clone())));
    servers.insert(victim, again);
    to_clients.send(Command_::PingAll).expect("send");
    let Result_::Pinged {
        reset,
        slowest_reset,
        others_ok,
    } = from_clients.recv().expect("clients")
    else {
        panic!("unexpected answer")
    };
    eprintln!(
        "server {} restarted: {reset} clients reset (it had {had}), the slowest in \
         {slowest_reset:?}; {others_ok} others unaffected",
        victim + 1
    );
    assert_eq!(
        reset as u64, had,
        "exactly the restarted server's clients were reset"
    );
    assert_eq!(others_ok as u64, CLIENTS as u64 - had);
    assert!(
        slowest_reset < Duration::from_secs(3),
        "reset fast, not at the 30 s idle timeout: {slowest_reset:?}"
    );
    to_clients.send(Command_::ReconnectReset).expect("send");
    let Result_::Reconnected(n) = from_clients.recv().expect("clients") else {
        panic!("unexpected answer")
    };
    assert_eq!(n as u64, had, "every reset client reconnected and echoed");
    let live: u64 = servers[victim]
        .endpoint_stats()
        .iter()
        .map(|e| e.accepted)
        .sum();
    assert_eq!(
        live, had,
        "they are back on the restarted server (their 4-tuples' route)"
    );

    // 4. A token from one server, accepted by another.
    let stat = |servers: &[Arc<Endpoint>], f: fn(&stoq::conn::EndpointStats) -> u64| -> Vec<u64> {
        servers
            .iter()
            .map(|s| s.endpoint_stats().iter().map(f).sum())
            .collect()
    };
    let retries0 = stat(&servers, |e| e.retries_sent);
    let accepted0 = stat(&servers, |e| e.accepted);
    // Hold the client's answer to a Retry (an Initial whose DCID is the 12-octet CID the
    // Retry gave it, not the 16 octets it chose) after the balancer's NAT.
    let hold = "table ip stoq_hold {
  chain forward {
    type filter hook forward priority filter; policy accept;
    udp dport 4433 @th,64,1 1 @th,66,2 0 @th,104,8 12 counter drop
  }
}
";
    fleet.load(hold);
    to_clients.send(Command_::ConnectNew).expect("send");
    let first = rt.block_on(async {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let now = stat(&servers, |e| e.retries_sent);
            if let Some(i) = (0..SERVERS).find(|&i| now[i] > retries0[i]) {
                return i;
            }
            assert!(
                Instant::now() < end,
                "no server sent the new client a Retry"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let other = (first + 1) % SERVERS;
    // Forget the client's flow and point every Initial at another server; then let the
    // held answer (retransmitted) through.
    sh(
        "ip",
        &[
            "netns",
            "exec",
            fleet.lb.name(),
            "conntrack",
            "-D",
            "-p",
            "udp",
            "-s",
            "10.200.90.102",
        ],
    );
    fleet.load(&lb_rules(Some(other)));
    let Result_::ConnectedNew(ok) = from_clients.recv().expect("clients") else {
        panic!("unexpected answer")
    };
    assert!(ok, "the client connected through the other server");
    let retries = stat(&servers, |e| e.retries_sent);
    let accepted_now = stat(&servers, |e| e.accepted);
    let invalid = stat(&servers, |e| e.invalid_token);
    eprintln!(
        "a Retry token from server {} was accepted by server {}: accepted {accepted0:?} -> \
         {accepted_now:?}, retries {retries0:?} -> {retries:?}",
        first + 1,
        other + 1
    );
    assert_eq!(
        accepted_now[other],
        accepted0[other] + 1,
        "admitted by the other server"
    );
    assert_eq!(
        accepted_now[first], accepted0[first],
        "not by the one that sent the Retry"
    );
    assert_eq!(
        retries[other], retries0[other],
        "the other server needed no Retry of its own"
    );
    assert_eq!(invalid.iter().sum::<u64>(), 0, "no token was refused");

    to_clients.send(Command_::Stop).expect("send");
    client_thread.join().expect("client thread");
    for t in serving {
        t.abort();
    }
    drop(servers);
    drop(rt);
    let _ = &fleet.lb;
}

enum Command_ {
    ConnectAll,
    RebindDuringUpload,
    PingAll,
    ReconnectReset,
    ConnectNew,
    Stop,
}

enum Result_ {
    Connected(Duration),
    Rebound {
        intact: bool,
        ports: Vec<u16>,
    },
    Pinged {
        reset: usize,
        slowest_reset: Duration,
        others_ok: usize,
    },
    Reconnected(usize),
    ConnectedNew(bool),
}

/// The clients' side, on their namespace's thread.
async fn clients_main(
    c: Arc<stoq::handshake::ClientConfig>,
    target: SocketAddr,
    commands: std::sync::mpsc::Receiver<Command_>,
    results: std::sync::mpsc::Sender<Result_>,
) {
    let mut endpoints = Vec::new();
    let mut conns: Vec<Option<Connection>> = Vec::new();
    let mut reset: Vec<usize> = Vec::new();
    let data = engine::pattern(9, 64 << 10);
    loop {
        // Commands come from the test thread; poll without blocking the runtime.
        let cmd = loop {
            match commands.try_recv() {
                Ok(c) => break c,
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(_) => return,
            }
        };
        match cmd {
            Command_::ConnectAll => {
                let t = Instant::now();
                for k in 0..CLIENTS {
                    let ip: Ipv4Addr = Ipv4Addr::new(10, 200, 90, 2 + k as u8);
                    let mut cfg = EngineConfig::new(SocketAddr::new(ip.into(), 0));
                    cfg.backend = Some(BackendKind::Udp);
                    let ep = Endpoint::client_in_runtime(cfg, c.clone()).expect("client");
                    let conn = ep.connect(target, SERVER_NAME).await.expect("connect");
                    engine::echo(&conn, &data).await;
                    endpoints.push(ep);
                    conns.push(Some(conn));
                }
                let _ = results.send(Result_::Connected(t.elapsed()));
            }
            Command_::RebindDuringUpload => {
                let conn = conns[0].clone().expect("connection");
                let up = tokio::spawn(async move { engine::upload(&conn, 4, 16 << 20).await });
                let mut ports = vec![endpoints[0].local_addr().port()];
                for _ in 0..3 {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    let a = endpoints[0]
                        .rebind("10.200.90.2:0".parse().expect("addr"))
                        .expect("rebind");
                    ports.push(a.port());
                }
                let (theirs, n, ours) = up.await.expect("upload");
                let _ = results.send(Result_::Rebound {
                    intact: theirs == ours && n == 16 << 20,
                    ports,
                });
            }
            Command_::PingAll => {
                let mut slowest = Duration::ZERO;
                let mut ok = 0;
                let mut pings = Vec::new();
                for (k, conn) in conns.iter().enumerate() {
                    let conn = conn.clone().expect("connection");
                    pings.push(tokio::spawn(async move {
                        let t = Instant::now();
                        let r = tokio::time::timeout(Duration::from_secs(10), async {
                            let (mut s, mut r) =
                                conn.open_bi().await.map_err(std::io::Error::other)?;
                            tokio::io::AsyncWriteExt::write_all(&mut s, b"ping").await?;
                            s.finish()?;
                            let mut got = Vec::new();
                            tokio::io::AsyncReadExt::read_to_end(&mut r, &mut got).await?;
                            Ok::<_, std::io::Error>(())
                        })
                        .await;
                        let was_reset = matches!(
                            tokio::time::timeout(Duration::from_millis(200), conn.closed()).await,
                            Ok(ConnectionError::Reset)
                        );
                        (k, r.is_ok_and(|r| r.is_ok()), was_reset, t.elapsed())
                    }));
                }
                for p in pings {
                    let (k, fine, was_reset, took) = p.await.expect("ping");
                    if fine {
                        ok += 1;
                    } else if was_reset {
                        reset.push(k);
                        slowest = slowest.max(took);
                    }
                }
                let _ = results.send(Result_::Pinged {
                    reset: reset.len(),
                    slowest_reset: slowest,
                    others_ok: ok,
                });
            }
            Command_::ReconnectReset => {
                let mut n = 0;
                for &k in &reset {
                    let conn = endpoints[k]
                        .connect(target, SERVER_NAME)
                        .await
                        .expect("reconnect");
                    engine::echo(&conn, &data).await;
                    conns[k] = Some(conn);
                    n += 1;
                }
                let _ = results.send(Result_::Reconnected(n));
            }
            Command_::ConnectNew => {
                // Answers once connected (or not, within 10 s).
                let mut cfg =
                    EngineConfig::new(SocketAddr::new(Ipv4Addr::new(10, 200, 90, 102).into(), 0));
                cfg.backend = Some(BackendKind::Udp);
                let ep = Endpoint::client_in_runtime(cfg, c.clone()).expect("client");
                let ok = tokio::time::timeout(Duration::from_secs(10), async {
                    match ep.connect(target, SERVER_NAME).await {
                        Ok(conn) => {
                            engine::echo(&conn, b"hello from the other server").await;
                            true
                        }
                        Err(_) => false,
                    }
                })
                .await
                .unwrap_or(false);
                endpoints.push(ep);
                let _ = results.send(Result_::ConnectedNew(ok));
            }
            Command_::Stop => return,
        }
    }
}
