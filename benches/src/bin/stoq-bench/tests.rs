//! The harness's own checks: the arithmetic behind its tables, its option parsing, and (as
//! root) that the delay emulator and TBF bottleneck really delay and shape.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::plan::Options;
use crate::report::{Ceilings, Machine, Report, Run};
use crate::spec::{Outcome, Scenario, Subject, hex, quantiles, unhex};
use crate::topo::Topo;

#[test]
fn quantiles_are_order_statistics() {
    let mut v: Vec<u64> = (1..=1000).rev().map(|x| x * 1000).collect();
    let q = quantiles(&mut v);
    assert_eq!(q.len(), 1001);
    assert!((q[0] - 1.0).abs() < 1e-9, "min is 1 µs");
    assert!((q[1000] - 1000.0).abs() < 1e-9, "max is 1000 µs");
    assert!((q[500] - 500.0).abs() <= 1.0, "median {}", q[500]);
    assert!(q.windows(2).all(|w| w[0] <= w[1]));
    assert!(quantiles(&mut []).is_empty());
}

#[test]
fn hex_round_trips_and_rejects_garbage() {
    let b: Vec<u8> = (0..=255).collect();
    assert_eq!(unhex(&hex(&b)).unwrap(), b);
    assert!(unhex("abc").is_err());
    assert!(unhex("zz").is_err());
}

#[test]
fn options_parse_and_refuse() {
    let o = |v: &[&str]| Options::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert!(o(&[]).is_ok());
    assert!(o(&["--quick", "--reps", "2", "--only", "bulk1,rr"]).is_ok());
    assert!(o(&["--reps"]).unwrap_err().contains("needs a value"));
    assert!(o(&["--reps", "x"]).unwrap_err().contains("takes a number"));
    assert!(o(&["--iface", "eth0"]).unwrap_err().contains("go together"));
    assert!(o(&["--peer", "nonsense", "--iface", "e"]).is_err());
    assert!(o(&["--frobnicate"]).unwrap_err().contains("unknown option"));
}

fn bulk_run(subject: Subject, rep: usize, bytes: u64, secs: f64, cpu: (f64, f64)) -> Run {
    let topo = Topo::Peer {
        server: [10, 200, 0, 2].into(),
        client: [10, 200, 0, 1].into(),
    };
    let server = Outcome {
        cpu_s: cpu.0,
        detail: "test".into(),
        ..Outcome::default()
    };
    let client = Outcome {
        bytes,
        secs,
        cpu_s: cpu.1,
        ..Outcome::default()
    };
    Run::new(
        "bulk1",
        "Bulk goodput, 1 connection, 1 stream",
        &topo,
        &subject,
        Scenario::Bulk { conns: 1, secs },
        rep,
        Ok((server, client, [0, 0])),
        None,
    )
    .with_cpus(&[0], &[1], 1452)
}

#[test]
fn report_medians_ratios_goals_and_bottlenecks() {
    let stoq = Subject::stoq("udp", "auto");
    let quinn = Subject::quinn(false);
    let mut runs = Vec::new();
    // STOQ: 8, 10, 12 Gbit/s; quinn: 4, 5, 6. Medians 10 and 5: exactly 2×.
    for (rep, (s, q)) in [(8.0, 4.0), (12.0, 6.0), (10.0, 5.0)]
        .into_iter()
        .enumerate()
    {
        runs.push(bulk_run(
            stoq.clone(),
            rep,
            (s * 1e9 / 8.0) as u64,
            1.0,
            (0.2, 0.99),
        ));
        runs.push(bulk_run(
            quinn.clone(),
            rep,
            (q * 1e9 / 8.0) as u64,
            1.0,
            (0.95, 0.5),
        ));
    }
    let mut failed = bulk_run(quinn.clone(), 3, 0, 1.0, (0.0, 0.0));
    failed.error = Some("boom".into());
    runs.push(failed);
    let r = Report {
        machine: Machine::default(),
        ceilings: Ceilings {
            aead_gbps: vec![("aes256gcm".into(), 40.0)],
            falcon512_signs_per_s: 1000.0,
            cpu: 1,
        },
        runs,
        seconds: 1.0,
        delay_ms: 10,
        rate_mbit: 1000,
    };
    let dir = std::env::temp_dir().join(format!("stoq-bench-test-{}", std::process::id()));
    let md = r.write(&dir).unwrap();
    assert!(dir.join("report.json").exists());
    assert!(
        dir.join("goodput.svg").exists(),
        "the goodput chart is drawn"
    );
    // What `stoq-bench render` does: the same report from the JSON alone.
    let again = Report::from_json(&std::fs::read_to_string(dir.join("report.json")).unwrap())
        .unwrap()
        .write(&dir)
        .unwrap();
    assert_eq!(
        again, md,
        "report.json holds everything report.md is made from"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let row = md.lines().find(|l| l.starts_with("| STOQ udp")).unwrap();
    assert!(row.contains("| 10.00 | 8.00–12.00 | 2.00× |"), "{row}");
    assert!(row.contains("sender CPU (99 %"), "{row}");
    let q = md
        .lines()
        .find(|l| l.starts_with("| quinn (default)"))
        .unwrap();
    assert!(q.contains("receiver CPU (95 %)"), "{q}");
    assert!(md.contains(
        "| Bulk: STOQ's best backend ≥ 2× quinn | STOQ udp 10.00 Gbit/s = 2.00× quinn default"
    ));
    assert!(md.contains("## Failed runs") && md.contains("boom"));
}

fn reconnect_run(early: bool, answer_us: f64, handshake_us: f64) -> Run {
    let topo = Topo::Peer {
        server: [10, 200, 0, 2].into(),
        client: [10, 200, 0, 1].into(),
    };
    let client = Outcome {
        count: 100,
        secs: 1.0,
        quantiles_us: vec![answer_us; 1001],
        handshake_us: if early { 0.0 } else { handshake_us },
        ..Outcome::default()
    };
    Run::new(
        "reconnect",
        "Reconnect and request: time to the answer, 0-RTT against 1-RTT",
        &topo,
        &Subject::stoq("udp", "auto"),
        Scenario::Reconnect { secs: 1.0, early },
        0,
        Ok((Outcome::default(), client, [0, 0])),
        None,
    )
    .with_cpus(&[0], &[1], 1452)
}

/// The 0-RTT goal holds when the answer rides the server's handshake flight and fails when
/// it needs a second round trip (the round trip here: what a 1-RTT request adds, 160 µs).
#[test]
fn zero_rtt_goal_tells_one_round_trip_from_two() {
    let verdict = |zero_rtt_answer: f64| {
        let r = Report {
            machine: Machine::default(),
            ceilings: Ceilings::default(),
            runs: vec![
                reconnect_run(false, 490.0, 330.0),
                reconnect_run(true, zero_rtt_answer, 0.0),
            ],
            seconds: 1.0,
            delay_ms: 10,
            rate_mbit: 1000,
        };
        let dir = std::env::temp_dir().join(format!(
            "stoq-bench-0rtt-{}-{zero_rtt_answer}",
            std::process::id()
        ));
        let md = r.write(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        md.lines()
            .find(|l| l.starts_with("| A 0-RTT request completes in one round trip"))
            .unwrap_or_else(|| panic!("no 0-RTT goal line in:\n{md}"))
            .to_string()
    };
    let one = verdict(335.0);
    assert!(one.ends_with("| yes |"), "{one}");
    assert!(one.contains("+5 µs, 0.03 of a round trip (160 µs"), "{one}");
    let two = verdict(480.0);
    assert!(two.ends_with("| **no** |"), "{two}");
}

/// Skips (saying why) unless this process can create namespaces and run ethtool and tc.
fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: the delay emulator test needs root (network namespaces, tc)");
        return false;
    }
    for tool in ["ethtool", "tc", "ip"] {
        let found = std::process::Command::new(tool).arg("-V").output().is_ok();
        if !found {
            eprintln!("SKIP: the delay emulator test needs `{tool}`");
            return false;
        }
    }
    true
}

#[test]
fn delay_emulator_delays_and_bridges() {
    if !privileged() {
        return;
    }
    let chain = Topo::chain(1000, Duration::from_millis(15)).expect("the chain");
    let (server, client) = chain.addrs(4500);
    let Topo::Chain { a, b, .. } = &chain else {
        unreachable!()
    };
    let echo = b.spawn(move || {
        let s = UdpSocket::bind(server).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..5 {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                return;
            };
            s.send_to(&buf[..n], from).unwrap();
        }
    });
    let rtts = a.run(move || {
        let s = UdpSocket::bind(client).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut v = Vec::new();
        for i in 0..5u8 {
            let t = Instant::now();
            // The first may wait for ARP, which crosses the emulator too.
            s.send_to(&[i; 32], server).unwrap();
            let mut buf = [0u8; 64];
            let n = s.recv(&mut buf).expect("an echo through the emulator");
            assert_eq!(&buf[..n], &[i; 32]);
            v.push(t.elapsed());
        }
        v
    });
    echo.join().unwrap();
    for r in &rtts[1..] {
        assert!(
            *r >= Duration::from_millis(30) && *r < Duration::from_millis(80),
            "round trip {r:?} with 15 ms each way"
        );
    }
}
