//! `stoq server --metrics ADDR` scraped during a transfer, across a veth pair between two
//! network namespaces: the text passes `promtool check metrics` (Debian's `prometheus`),
//! the traffic counters rise while the transfer runs, and the XDP program's drop counters
//! appear when hostile datagrams reach the server. Needs root, promtool and the XDP object
//! (`cargo xtask test` provides both); without them it skips with the reason, or fails
//! when `STOQ_REQUIRE_PRIVILEGED` is set.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Kill, STOQ};

fn can_run(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let promtool = Command::new("promtool").arg("--version").output().is_ok();
    let object = stoq::xdp::program_object().is_ok();
    let why = if !root {
        Some("needs root (network namespaces, XDP)")
    } else if !promtool {
        Some("needs promtool (Debian: apt-get install prometheus)")
    } else if !object {
        Some("needs the XDP object (cargo xtask build-ebpf)")
    } else {
        None
    };
    match why {
        None => true,
        Some(w) if std::env::var_os("STOQ_REQUIRE_PRIVILEGED").is_some_and(|v| v != "0") => {
            panic!("{test}: cannot run: {w}")
        }
        Some(w) => {
            eprintln!("SKIPPED {test}: {w}");
            false
        }
    }
}

/// `GET /metrics` at `addr`, from inside `ns`: the body.
fn scrape(ns: &stoq_netns::NetNs, addr: SocketAddr) -> String {
    ns.run(move || {
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: stoq\r\n\r\n")
            .expect("request");
        let mut out = String::new();
        c.read_to_string(&mut out).expect("answer");
        let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        body.to_string()
    })
}

/// The sum of every sample of `family` whose labels include each of `labels`.
fn sum(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn promtool_ok(text: &str) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    p.stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let o = p.wait_with_output().expect("promtool");
    assert!(
        o.status.success(),
        "promtool check metrics:\n{}{}\n--- the text ---\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn metrics_rise_during_a_transfer_and_count_xdp_drops() {
    if !can_run("metrics_rise_during_a_transfer_and_count_xdp_drops") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("stoq-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key = dir.join("server");
    let ok = Command::new(STOQ)
        .args(["keygen", "--out"])
        .arg(&key)
        .status();
    assert!(ok.expect("keygen").success());
    let pair = stoq_netns::VethPair::new("metrics").expect("veth pair");
    let listen = SocketAddr::new(pair.b4.into(), 4433);
    let metrics = SocketAddr::new(pair.b4.into(), 9464);
    // The UDP backend with the XDP program in front of its socket: the program's drop
    // counters are the endpoint's XDP metrics.
    let mut server = Kill(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                pair.b.name(),
                STOQ,
                "server",
                "--backend",
                "udp",
            ])
            .args(["--xdp-filter", "--workers", "1"])
            .args([
                "--listen",
                &listen.to_string(),
                "--metrics",
                &metrics.to_string(),
            ])
            .arg("--qlog")
            .arg(dir.join("qlog"))
            .arg("--key")
            .arg(dir.join("server.key"))
            .arg("--public")
            .arg(dir.join("server.pub"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("server"),
    );
    let mut out = BufReader::new(server.0.stdout.take().expect("stdout"));
    let mut banner = String::new();
    for _ in 0..2 {
        out.read_line(&mut banner).expect("banner");
    }
    assert!(banner.contains("metrics on http://"), "{banner}");
    let idle = scrape(&pair.a, metrics);
    promtool_ok(&idle);
    assert_eq!(
        sum(&idle, "stoq_bytes_total", &["direction=\"rx\""]),
        0.0,
        "{idle}"
    );

    // A transfer that outlasts the scrapes; it is killed afterwards.
    let _client = Kill(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                pair.a.name(),
                STOQ,
                "client",
                &listen.to_string(),
            ])
            .args(["--backend", "udp", "--load", "1000G", "--pin"])
            .arg(dir.join("server.pub"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("client"),
    );
    let start = Instant::now();
    let first = loop {
        let t = scrape(&pair.a, metrics);
        if sum(&t, "stoq_bytes_total", &["direction=\"rx\""]) > 1e6 {
            break t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no traffic counted:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(500));
    let second = scrape(&pair.a, metrics);
    promtool_ok(&second);
    for (family, labels) in [
        ("stoq_bytes_total", &["direction=\"rx\""][..]),
        ("stoq_packets_total", &["direction=\"rx\""][..]),
        ("stoq_bytes_total", &["direction=\"tx\""][..]),
        ("stoq_rtt_seconds_count", &[][..]),
    ] {
        let (a, b) = (sum(&first, family, labels), sum(&second, family, labels));
        assert!(
            b > a,
            "{family}{labels:?} rose during the transfer: {a} then {b}"
        );
    }
    assert_eq!(
        sum(&second, "stoq_handshakes_total", &["outcome=\"completed\""]),
        1.0
    );
    assert_eq!(sum(&second, "stoq_backend_info", &["backend=\"udp\""]), 1.0);

    // Hostile datagrams to the STOQ port: 4 bytes (too short) and a short header with
    // the fixed bit clear. The XDP program drops them before the socket sees them.
    let drops_before = sum(&second, "stoq_xdp_packets_total", &["verdict=\"drop\""]);
    let (from, to) = (SocketAddr::new(pair.a4.into(), 0), listen);
    pair.a.run(move || {
        let s = UdpSocket::bind(from).expect("bind");
        for _ in 0..500 {
            s.send_to(&[0x40, 1, 2, 3], to).expect("send");
            s.send_to(&[0x01; 64], to).expect("send");
        }
    });
    let start = Instant::now();
    let hostile = loop {
        let t = scrape(&pair.a, metrics);
        let short = sum(
            &t,
            "stoq_xdp_packets_total",
            &["verdict=\"drop\"", "reason=\"too_short\""],
        );
        let fixed = sum(
            &t,
            "stoq_xdp_packets_total",
            &["verdict=\"drop\"", "reason=\"fixed_bit\""],
        );
        if short >= 500.0 && fixed >= 500.0 {
            break t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "XDP drops not counted ({short} too short, {fixed} fixed bit):\n{t}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        sum(&hostile, "stoq_xdp_packets_total", &["verdict=\"drop\""]) >= drops_before + 1000.0
    );
    promtool_ok(&hostile);
    // With --qlog, the kernel's verdicts are in the endpoint's own trace too (recorded
    // once a second): the same drops, by reason.
    let start = Instant::now();
    loop {
        let text = std::fs::read_dir(dir.join("qlog"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("endpoint_"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect::<String>();
        let counted = |reason: &str| -> u64 {
            text.split('\u{1e}')
                .filter(|r| r.contains("\"stoq:xdp_verdicts\""))
                .filter_map(|r| {
                    let v: serde_json::Value = serde_json::from_str(r.trim()).ok()?;
                    v["data"]["dropped_by_reason"][reason].as_u64()
                })
                .sum()
        };
        if counted("too_short") >= 500 && counted("fixed_bit") >= 500 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no stoq:xdp_verdicts with the drops in the endpoint trace:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
