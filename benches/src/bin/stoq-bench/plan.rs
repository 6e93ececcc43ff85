//! The run plan: which subjects run which scenario on which path, interleaved, and the
//! single-core ceilings measured in-process (AEAD sealing, FALCON signing).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand_core::OsRng;
use stoq::crypto::sig::{SigAlg, SigningKey};
use stoq::crypto::{CipherSuite, PacketKey};

use crate::report::{Ceilings, Machine, Report, Run};
use crate::spec::{Keys, Outcome, RoleSpec, Scenario, Subject, hex, pin};
use crate::topo::Topo;

pub(crate) const USAGE: &str = "\
usage: stoq-bench [OPTIONS]                 (as root; `cargo xtask bench` builds and runs it)
  --quick            about a minute: every scenario once, short, small; asserts nothing
  --reps N           repetitions per subject, interleaved (default 3)
  --queues N         rx/tx queues per veth side (default 1)
  --delay-ms N       one-way delay of the bottleneck run (default 10)
  --rate-mbit N      TBF rate of the bottleneck run (default 500: on a 2-core machine the
                     delay emulator itself tops out near 1 Gbit/s)
  --only G[,G...]    only these groups: bulk1 bulk8 jumbo rr handshakes idle scaling bottleneck
  --idle-poll-us N   STOQ's EngineConfig::idle_poll for every STOQ side (default: the
                     library's default); 0 turns polling off
  --subjects S[;S...]
                     only subjects whose label is one of these (\"STOQ udp\", \"quinn (default)\")
  --iface IF --peer ADDR
                     across a real NIC: this host is the client, ADDR the server, running
                     `stoq-bench agent` (root); the bottleneck run is skipped
  --out DIR          where the report goes (default target/bench/<unix time>)
  (STOQ_BENCH_DEBUG=1 in the environment: STOQ servers print their workers' counters
   to standard error when they stop: loop turns, waits, idle-poll hits, handoffs)
stoq-bench agent [--listen ADDR]            the peer side of --peer (default 0.0.0.0:4499)
stoq-bench render DIR                       report.md and charts again from DIR/report.json";

/// Command-line options.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    quick: bool,
    reps: usize,
    queues: u32,
    delay_ms: u64,
    rate_mbit: u32,
    idle_poll_us: Option<u64>,
    only: Option<Vec<String>>,
    subjects: Option<Vec<String>>,
    iface: Option<String>,
    peer: Option<IpAddr>,
    out: Option<PathBuf>,
}

impl Options {
    /// Parses the orchestrator's arguments.
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut o = Self {
            quick: false,
            reps: 3,
            queues: 1,
            delay_ms: 10,
            rate_mbit: 500,
            idle_poll_us: None,
            only: None,
            subjects: None,
            iface: None,
            peer: None,
            out: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
            };
            let num = |s: String, name: &str| {
                s.parse::<u64>()
                    .map_err(|_| format!("{name} takes a number, not `{s}`"))
            };
            match a.as_str() {
                "--quick" => o.quick = true,
                "--reps" => o.reps = num(val(a)?, a)?.max(1) as usize,
                "--queues" => o.queues = num(val(a)?, a)?.max(1) as u32,
                "--delay-ms" => o.delay_ms = num(val(a)?, a)?,
                "--rate-mbit" => o.rate_mbit = num(val(a)?, a)?.max(1) as u32,
                "--idle-poll-us" => o.idle_poll_us = Some(num(val(a)?, a)?),
                "--only" => o.only = Some(val(a)?.split(',').map(str::to_string).collect()),
                "--subjects" => {
                    o.subjects = Some(val(a)?.split(';').map(str::to_string).collect());
                }
                "--iface" => o.iface = Some(val(a)?),
                "--peer" => {
                    let v = val(a)?;
                    o.peer = Some(
                        v.parse()
                            .map_err(|_| format!("--peer takes an IP, not `{v}`"))?,
                    );
                }
                "--out" => o.out = Some(val(a)?.into()),
                other => return Err(format!("unknown option `{other}`\n{USAGE}")),
            }
        }
        if o.quick && !args.iter().any(|a| a == "--reps") {
            o.reps = 1;
        }
        if o.iface.is_some() != o.peer.is_some() {
            return Err("--iface and --peer go together".into());
        }
        Ok(o)
    }
}

/// One subject in one scenario.
#[derive(Debug, Clone)]
struct Case {
    subject: Subject,
    scenario: Scenario,
    udp_payload: usize,
    server_cpus: Vec<usize>,
    client_cpus: Vec<usize>,
}

/// Where a group runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Veth(u32),
    Chain,
}

/// Scenarios measured together, interleaved.
#[derive(Debug, Clone)]
struct Group {
    id: &'static str,
    title: String,
    path: Path,
    reps: usize,
    cases: Vec<Case>,
}

fn stoq_backends() -> Vec<Subject> {
    vec![
        Subject::stoq("af_xdp", "driver"),
        Subject::stoq("af_xdp", "skb"),
        Subject::stoq("io_uring", "auto"),
        Subject::stoq("udp", "auto"),
    ]
}

fn groups(o: &Options, cores: usize) -> Vec<Group> {
    let q = o.quick;
    let (server, client) = (vec![0], vec![1 % cores]);
    let case = |subject: Subject, scenario: Scenario| Case {
        subject,
        scenario,
        udp_payload: 1452,
        server_cpus: server.clone(),
        client_cpus: client.clone(),
    };
    let secs = if q { 0.3 } else { 2.0 };
    let bulk = |conns| Scenario::Bulk { conns, secs };
    let mut bulk1: Vec<Subject> = stoq_backends();
    bulk1.push(Subject::Stoq {
        backend: "io_uring".into(),
        xdp: "auto".into(),
        suite: "chacha20poly1305".into(),
        handler: false,
        served: true,
        metrics: false,
        qlog: false,
        sign_alone: false,
        composite: false,
    });
    let peers = [
        Subject::quinn(false),
        Subject::quinn(true),
        // quinn with the AEAD library STOQ uses on Linux: how much of the gap is the
        // library's.
        Subject::Quinn {
            tuned: false,
            aws_lc: true,
        },
        Subject::Tcp { cc: "cubic".into() },
        Subject::Tcp { cc: "bbr".into() },
        Subject::Tls { cc: "cubic".into() },
    ];
    bulk1.extend(peers.iter().cloned());
    // The cross-thread path (accept plus tokio::spawn, a client worker thread of its own),
    // for comparison with the async API on the engine's threads.
    bulk1.push(Subject::stoq("udp", "auto").cross_thread());
    // What metrics cost: the same subject with its server scraped every 100 ms; and with
    // qlog written for every connection too.
    bulk1.push(Subject::stoq("udp", "auto").with_metrics());
    bulk1.push(Subject::stoq("udp", "auto").with_qlog());
    let mut bulk8: Vec<Subject> = stoq_backends();
    bulk8.push(Subject::stoq("udp", "auto").cross_thread());
    bulk8.extend(peers.iter().cloned());
    bulk1.push(Subject::RawUdp);
    let mut v = vec![
        Group {
            id: "bulk1",
            title: "Bulk goodput, 1 connection, 1 stream".into(),
            path: Path::Veth(1500),
            reps: o.reps,
            cases: bulk1.into_iter().map(|s| case(s, bulk(1))).collect(),
        },
        Group {
            id: "bulk8",
            title: "Bulk goodput, 8 connections".into(),
            path: Path::Veth(1500),
            reps: o.reps,
            cases: bulk8.into_iter().map(|s| case(s, bulk(8))).collect(),
        },
        Group {
            id: "jumbo",
            title: "Bulk goodput, 1 connection, MTU 9000".into(),
            path: Path::Veth(9000),
            reps: o.reps,
            cases: [
                Subject::stoq("io_uring", "auto"),
                Subject::stoq("udp", "auto"),
                Subject::quinn(true),
                Subject::Tcp { cc: "cubic".into() },
                Subject::RawUdp,
            ]
            .into_iter()
            .map(|s| Case {
                udp_payload: 9000 - 48,
                ..case(s, bulk(1))
            })
            .collect(),
        },
    ];
    let rr = Scenario::Rr {
        secs: if q { 0.3 } else { 1.5 },
    };
    let mut rr_subjects = stoq_backends();
    rr_subjects.extend([
        Subject::stoq("af_xdp", "driver").with_handler(),
        Subject::stoq("udp", "auto").with_handler(),
        Subject::stoq("af_xdp", "driver").cross_thread(),
        Subject::stoq("udp", "auto").with_metrics(),
        Subject::stoq("udp", "auto").with_qlog(),
    ]);
    rr_subjects.extend([
        Subject::quinn(false),
        Subject::Tcp { cc: "cubic".into() },
        Subject::Tls { cc: "cubic".into() },
        Subject::RawUdp,
    ]);
    v.push(Group {
        id: "rr",
        title: "Request/response, 64-byte messages, one outstanding".into(),
        path: Path::Veth(1500),
        reps: o.reps,
        cases: rr_subjects.into_iter().map(|s| case(s, rr)).collect(),
    });
    for (resumed, kind) in [(false, "Full"), (true, "Resumed")] {
        for (parallel, how) in [(1, "sequential"), (8, "8 in flight")] {
            let hs = Scenario::Handshakes {
                secs: if q { 0.5 } else { 3.0 },
                parallel,
                resumed,
            };
            v.push(Group {
                id: "handshakes",
                title: format!("{kind} handshakes, {how}, one server core"),
                path: Path::Veth(1500),
                reps: o.reps,
                cases: {
                    let mut c = vec![case(Subject::stoq("udp", "auto"), hs)];
                    // What batch signing saves where handshakes wait together.
                    if !resumed && parallel > 1 {
                        c.push(case(Subject::stoq("udp", "auto").signing_alone(), hs));
                    }
                    // What the optional composite signature costs.
                    if !resumed {
                        c.push(case(Subject::stoq("udp", "auto").composite(), hs));
                    }
                    c.extend([
                        case(Subject::quinn(false), hs),
                        case(Subject::Tls { cc: "cubic".into() }, hs),
                    ]);
                    c
                },
            });
        }
    }
    // A returning client's request: with the first flight (0-RTT) or after the handshake.
    let reconnect = |early| Scenario::Reconnect {
        secs: if q { 0.5 } else { 3.0 },
        early,
    };
    v.push(Group {
        id: "reconnect",
        title: "Reconnect and request: time to the answer, 0-RTT against 1-RTT".into(),
        path: Path::Veth(1500),
        reps: o.reps,
        cases: [Subject::stoq("udp", "auto"), Subject::quinn(false)]
            .into_iter()
            .flat_map(|s| [true, false].map(|early| case(s.clone(), reconnect(early))))
            .collect(),
    });
    for (n, reps) in if q {
        [(200, 1), (1000, 1)]
    } else {
        [(10_000, o.reps), (100_000, 1)]
    } {
        v.push(Group {
            id: "idle",
            title: format!("Idle connections: memory per connection at {n}"),
            path: Path::Veth(1500),
            reps,
            cases: vec![
                case(Subject::stoq("udp", "auto"), Scenario::Idle { conns: n }),
                case(Subject::quinn(false), Scenario::Idle { conns: n }),
            ],
        });
    }
    let mut scaling = Vec::new();
    for k in 1..=cores {
        let server_cpus: Vec<usize> = (0..k).collect();
        let client_cpus: Vec<usize> = if 2 * k <= cores {
            (k..2 * k).collect()
        } else {
            (cores - k..cores).collect()
        };
        for s in [
            Subject::stoq("udp", "auto"),
            Subject::stoq("udp", "auto").cross_thread(),
            Subject::Tcp { cc: "cubic".into() },
        ] {
            scaling.push(Case {
                server_cpus: server_cpus.clone(),
                client_cpus: client_cpus.clone(),
                ..case(s, bulk(8))
            });
        }
    }
    v.push(Group {
        id: "scaling",
        title: "Core scaling: 8 connections, 1..N cores per side".into(),
        path: Path::Veth(1500),
        reps: o.reps,
        cases: scaling,
    });
    if o.peer.is_none() {
        let shaped = Scenario::Shaped {
            secs: if q { 1.5 } else { 6.0 },
        };
        v.push(Group {
            id: "bottleneck",
            title: format!(
                "Bottleneck: TBF {} Mbit/s, {} ms RTT added by the delay emulator",
                o.rate_mbit,
                2 * o.delay_ms
            ),
            path: Path::Chain,
            reps: o.reps,
            cases: [
                Subject::stoq("udp", "auto"),
                Subject::quinn(false),
                Subject::Tcp { cc: "bbr".into() },
                Subject::Tcp { cc: "cubic".into() },
            ]
            .into_iter()
            .map(|s| case(s, shaped))
            .collect(),
        });
    }
    if let Some(only) = &o.only {
        v.retain(|g| only.iter().any(|x| x == g.id));
    }
    if let Some(subjects) = &o.subjects {
        for g in &mut v {
            g.cases
                .retain(|c| subjects.iter().any(|x| *x == c.subject.label()));
        }
        v.retain(|g| !g.cases.is_empty());
    }
    v
}

fn keys() -> Result<Keys, String> {
    let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let (ckey, cpublic) = SigningKey::generate(SigAlg::Falcon512Ed25519, &mut OsRng);
    let cert =
        rcgen::generate_simple_self_signed(vec!["bench.stoq".into()]).map_err(|e| e.to_string())?;
    Ok(Keys {
        stoq_secret: hex(key.as_bytes()),
        stoq_public: hex(public.as_bytes()),
        stoq_composite_secret: hex(ckey.as_bytes()),
        stoq_composite_public: hex(cpublic.as_bytes()),
        quinn_cert: hex(cert.cert.der()),
        quinn_key: hex(&cert.key_pair.serialize_der()),
    })
}

/// One core sealing 1,400-byte packets (20-byte header, 16-byte tag) with each suite, and
/// FALCON-512 signing: the ceilings STOQ is judged against.
fn ceilings(cpu: usize, quick: bool) -> Ceilings {
    let d = Duration::from_millis(if quick { 200 } else { 1000 });
    std::thread::spawn(move || {
        pin(&[cpu]);
        let mut aead = Vec::new();
        for suite in CipherSuite::ALL {
            let Ok(mut k) = PacketKey::new(suite, &[7; 32], [9; 12]) else {
                continue;
            };
            let mut pkt = vec![0u8; 1400];
            let (mut n, t) = (0u64, Instant::now());
            while t.elapsed() < d {
                for _ in 0..256 {
                    let _ = k.seal(n, &mut pkt, 20);
                    n += 1;
                }
            }
            let gbps = n as f64 * (1400 - 36) as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e9;
            aead.push((suite_id(suite).to_string(), gbps));
        }
        let (key, _) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
        let (mut n, t) = (0u64, Instant::now());
        while t.elapsed() < d {
            let _ = key.sign(b"stoq-bench", &n.to_be_bytes(), &mut OsRng);
            n += 1;
        }
        Ceilings {
            aead_gbps: aead,
            falcon512_signs_per_s: n as f64 / t.elapsed().as_secs_f64(),
            cpu,
        }
    })
    .join()
    .unwrap_or_default()
}

pub(crate) fn suite_id(s: CipherSuite) -> &'static str {
    match s {
        CipherSuite::ChaCha20Poly1305 => "chacha20poly1305",
        _ => "aes256gcm",
    }
}

fn run_case(
    topo: &Topo,
    c: &Case,
    keys: &Keys,
    idle_poll_us: Option<u64>,
) -> Result<(Outcome, Outcome, [u64; 2]), String> {
    let (server, client_bind) = topo.addrs(4433);
    let spec = |role: &str, cpus: &[usize]| RoleSpec {
        role: role.into(),
        subject: c.subject.clone(),
        scenario: c.scenario,
        server,
        client_bind,
        cpus: cpus.to_vec(),
        udp_payload: c.udp_payload,
        keys: keys.clone(),
        idle_poll_us,
    };
    let mut s = topo.spawn(&spec("server", &c.server_cpus))?;
    s.expect("READY", 60).map_err(|e| format!("server: {e}"))?;
    let idle = matches!(c.scenario, Scenario::Idle { .. });
    let mut rss = [0u64; 2];
    let read_rss = |s: &mut crate::topo::Proc| -> Result<u64, String> {
        s.send("rss")?;
        s.expect("RSS", 10)?
            .parse()
            .map_err(|_| "bad RSS".to_string())
    };
    if idle {
        rss[0] = read_rss(&mut s)?;
    }
    // The server's start-up (key decoding, engine start) is not part of what it serves.
    s.send("cpu")?;
    let line = s.expect("CPU", 10)?;
    let mut it = line.split_whitespace().map(str::parse::<f64>);
    let (Some(Ok(cpu0)), Some(Ok(ctx0))) = (it.next(), it.next()) else {
        return Err(format!("bad CPU line `{line}`"));
    };
    let mut cl = topo.spawn(&spec("client", &c.client_cpus))?;
    let limit = match c.scenario {
        Scenario::Idle { conns } => 60 + conns as u64 / 100,
        Scenario::Bulk { secs, .. }
        | Scenario::Rr { secs }
        | Scenario::Handshakes { secs, .. }
        | Scenario::Reconnect { secs, .. }
        | Scenario::Shaped { secs } => 60 + secs as u64,
    };
    if idle {
        cl.expect("HELD", limit)
            .map_err(|e| format!("client: {e}"))?;
        rss[1] = read_rss(&mut s)?;
        cl.send("go")?;
    }
    let co = cl.finish(limit).map_err(|e| format!("client: {e}"));
    let so = s.finish(30).map_err(|e| format!("server: {e}"));
    let mut so = so?;
    so.cpu_s -= cpu0;
    so.ctx_switches -= ctx0;
    Ok((so, co?, rss))
}

fn machine(o: &Options, cores: usize) -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_string();
    let mem_gib = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0.0, |k| k as f64 / (1 << 20) as f64);
    let lock = read(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"));
    let version = |name: &str| {
        let key = format!("name = \"{name}\"\nversion = \"");
        lock.find(&key)
            .map(|i| &lock[i + key.len()..])
            .and_then(|r| r.split('"').next())
            .unwrap_or("?")
            .to_string()
    };
    Machine {
        cpu,
        cores,
        mem_gib,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        stoq: env!("CARGO_PKG_VERSION").into(),
        quinn: version("quinn"),
        rustls: version("rustls"),
        command: format!(
            "cargo xtask bench{}",
            std::env::args()
                .skip(1)
                .map(|a| format!(" {a}"))
                .collect::<String>()
        ),
        quick: o.quick,
        queues: o.queues,
        iface: o.iface.clone(),
    }
}

/// Runs the whole plan and writes the report; `Ok(false)` when some run failed.
pub(crate) fn run(o: &Options) -> Result<bool, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "stoq-bench needs root: it creates network namespaces joined by veth \
             pairs, attaches XDP programs and shapes a link with tc (run: sudo cargo xtask bench)"
                .into(),
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let started = Instant::now();
    let keys = keys()?;
    let plan = groups(o, cores);
    prerequisites(&plan)?;
    let total: usize = plan.iter().map(|g| g.reps * g.cases.len()).sum();
    eprintln!(
        "stoq-bench: {} groups, {total} runs, interleaved; {cores} cores; server on CPU 0, client on CPU {}",
        plan.len(),
        1 % cores
    );
    let ceil = ceilings(1 % cores, o.quick);
    eprintln!(
        "  ceilings: AEAD {} Gbit/s; FALCON-512 {:.0} signatures/s",
        ceil.aead_gbps
            .iter()
            .map(|(s, g)| format!("{s} {g:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        ceil.falcon512_signs_per_s
    );
    let mut veth = match (&o.iface, o.peer) {
        (Some(iface), Some(peer)) => {
            if !std::path::Path::new("/sys/class/net").join(iface).exists() {
                return Err(format!("--iface {iface}: no such interface here"));
            }
            let client = local_ip_for(peer)?;
            Topo::Peer {
                server: peer,
                client,
            }
        }
        _ => Topo::veth(o.queues)?,
    };
    let mut runs = Vec::new();
    let mut done = 0;
    for g in &plan {
        let chain;
        let set_up = match g.path {
            Path::Veth(mtu) => veth.set_mtu(mtu).map(|()| None),
            Path::Chain => Topo::chain(o.rate_mbit, Duration::from_millis(o.delay_ms)).map(Some),
        };
        let topo =
            match set_up {
                Ok(None) => &veth,
                Ok(Some(t)) => {
                    chain = t;
                    &chain
                }
                Err(e) => {
                    // The group cannot run: each of its cases is recorded as failed, with why,
                    // and the rest of the plan goes on.
                    eprintln!("\n{} — cannot be set up: {e}", g.title);
                    for rep in 0..g.reps {
                        for c in &g.cases {
                            done += 1;
                            runs.push(
                                Run::failed(g.id, &g.title, &c.subject, c.scenario, rep, &e)
                                    .with_cpus(&c.server_cpus, &c.client_cpus, c.udp_payload),
                            );
                        }
                    }
                    continue;
                }
            };
        eprintln!("\n{} — {}", g.title, topo.describe());
        for rep in 0..g.reps {
            for c in &g.cases {
                done += 1;
                let drops0 = topo.drops();
                let r = run_case(topo, c, &keys, o.idle_poll_us);
                let drops = topo.drops().zip(drops0).map(|(a, b)| a - b);
                let run = Run::new(g.id, &g.title, topo, &c.subject, c.scenario, rep, r, drops)
                    .with_cpus(&c.server_cpus, &c.client_cpus, c.udp_payload);
                eprintln!(
                    "  [{done}/{total}] rep {} {:<24} {}",
                    rep + 1,
                    c.subject.label(),
                    run.brief()
                );
                runs.push(run);
            }
        }
    }
    veth.set_mtu(1500)?;
    drop(veth);
    let report = Report {
        machine: machine(o, cores),
        ceilings: ceil,
        runs,
        seconds: started.elapsed().as_secs_f64(),
        delay_ms: o.delay_ms,
        rate_mbit: o.rate_mbit,
    };
    let dir = o.out.clone().unwrap_or_else(|| {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench"))
            .join(stamp.to_string())
    });
    let md = report.write(&dir)?;
    println!("{md}");
    eprintln!(
        "stoq-bench: wrote {} in {:.0} s",
        dir.display(),
        report.seconds
    );
    let failed = report.runs.iter().filter(|r| r.error.is_some()).count();
    if failed > 0 {
        eprintln!("stoq-bench: {failed} runs failed (listed in the report)");
    }
    Ok(failed == 0)
}

/// Checks, before the first scenario, that every tool the plan needs is installed: a run
/// must not lose its last group (and its report) to a missing command.
fn prerequisites(plan: &[Group]) -> Result<(), String> {
    let mut need = vec![("ip", "iproute2")];
    if plan.iter().any(|g| g.path == Path::Chain) {
        need.push(("tc", "iproute2"));
        need.push(("ethtool", "ethtool"));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<String> = need
        .iter()
        .filter(|(cmd, _)| !std::env::split_paths(&path).any(|d| d.join(cmd).is_file()))
        .map(|(cmd, pkg)| format!("`{cmd}` (Debian package {pkg})"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing before the first scenario: {}; install it, or leave out the group that needs it (--only)",
            missing.join(", ")
        ))
    }
}

/// The local address the kernel would use to reach `peer`.
fn local_ip_for(peer: IpAddr) -> Result<IpAddr, String> {
    let s = std::net::UdpSocket::bind(if peer.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .map_err(|e| e.to_string())?;
    s.connect((peer, 9)).map_err(|e| e.to_string())?;
    Ok(s.local_addr().map_err(|e| e.to_string())?.ip())
}
