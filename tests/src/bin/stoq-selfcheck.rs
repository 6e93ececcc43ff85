//! `stoq-selfcheck`: builds confidence that this host can run STOQ's XDP path, and says
//! exactly why not where it cannot. Run it with `cargo xtask selfcheck`.
//!
//! 1. The userspace classifier on known frames (runs everywhere).
//! 2. The embedded `stoq_xdp` object, loaded through the kernel verifier, and a batch of
//!    in-kernel test runs (`BPF_PROG_TEST_RUN`) compared with userspace.
//! 3. A real round trip: two network namespaces joined by veth, the program attached to
//!    one end (driver mode, else skb mode), STOQ packets received through AF_XDP and
//!    answered through the TX ring, plain UDP left to the kernel, malformed STOQ dropped.
//!
//! Exit status: 0 when every step that this host can run passed; 1 when a step failed.

use std::process::ExitCode;
use std::time::Duration;

use stoq::classifier::Classifier;
use stoq::xdp::{AttachMode, XdpAction, XdpProgram, program_object};
use stoq_common::cid::CidLayout;
use stoq_common::classify::Verdict;
use stoq_tests::echo::{self, EchoConfig};
use stoq_tests::frames::{self, STOQ_PORT, Wrap};
use stoq_tests::netns::{self, VethPair};

fn sample_frames() -> Vec<(&'static str, Vec<u8>)> {
    let l = CidLayout::DEFAULT;
    let mut bad = frames::short(&l, 1, 200);
    bad[0] &= !0x40;
    vec![
        (
            "1-RTT short header (IPv4)",
            frames::udp_frame(Wrap::V4, &frames::short(&l, 1, 1200)),
        ),
        (
            "Initial (IPv6)",
            frames::udp_frame(Wrap::V6, &frames::initial_full()),
        ),
        (
            "Handshake (IPv4, VLAN)",
            frames::udp_frame(
                Wrap {
                    vlan: Some(5),
                    ..Wrap::V4
                },
                &frames::handshake(&l, 300),
            ),
        ),
        (
            "Initial of 1000 bytes",
            frames::udp_frame(Wrap::V4, &frames::initial(8, 1000)),
        ),
        (
            "short header, fixed bit clear",
            frames::udp_frame(Wrap::V6, &bad),
        ),
        (
            "DNS-like UDP to another port",
            frames::udp_frame(
                Wrap {
                    dst_port: 53,
                    ..Wrap::V4
                },
                b"query",
            ),
        ),
    ]
}

fn describe(v: &Verdict) -> String {
    match v {
        Verdict::Stoq(s) => format!("steer ({})", s.kind.name()),
        Verdict::Pass(r) => format!("pass ({})", r.name()),
        Verdict::Drop(r) => format!("drop ({})", r.name()),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> ExitCode {
    println!(
        "STOQ self-check (stoq {}, kernel {})",
        env!("CARGO_PKG_VERSION"),
        kernel()
    );
    let cls = Classifier::new(&CidLayout::DEFAULT, &[STOQ_PORT]);

    println!("\n[1/3] userspace classifier");
    for (name, f) in sample_frames() {
        println!("  {name:<34} -> {}", describe(&cls.classify(&f)));
    }

    println!("\n[2/3] XDP program in the kernel");
    if let Err(e) = program_object() {
        println!("  SKIPPED: {e}");
        println!("\nresult: the XDP path is unavailable on this build (reason above).");
        return ExitCode::SUCCESS;
    }
    let mut prog = match XdpProgram::load() {
        Ok(p) => p,
        Err(e) => {
            println!("  SKIPPED: {e}");
            println!("\nresult: the XDP path is unavailable on this host (reason above).");
            return ExitCode::SUCCESS;
        }
    };
    println!(
        "  loaded stoq_xdp ({} bytes) through the verifier",
        program_object().map(<[u8]>::len).unwrap_or(0)
    );
    if let Err(e) = prog.configure(&CidLayout::DEFAULT, &[STOQ_PORT]) {
        println!("  FAILED to configure: {e}");
        return ExitCode::FAILURE;
    }
    for (name, f) in sample_frames() {
        let v = cls.classify(&f);
        let want = if matches!(v, Verdict::Drop(_)) {
            XdpAction::Drop
        } else {
            XdpAction::Pass
        };
        match prog.test_run(&f, 1_000) {
            Ok(out) if out.action == want => {
                println!(
                    "  {name:<34} -> {:?}, {:>4} ns/run (agrees with userspace)",
                    out.action,
                    out.duration.as_nanos()
                )
            }
            Ok(out) => {
                println!(
                    "  FAILED: {name}: kernel {:?}, userspace {}",
                    out.action,
                    describe(&v)
                );
                return ExitCode::FAILURE;
            }
            Err(e) => {
                println!("  FAILED: {name}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    drop(prog);

    println!("\n[3/3] round trip over veth between two network namespaces");
    let ip_ok = std::process::Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ip_ok {
        println!("  SKIPPED: the `ip` tool (iproute2) is not installed");
        return ExitCode::SUCCESS;
    }
    let pair = match VethPair::new("selfcheck") {
        Ok(p) => p,
        Err(e) => {
            println!("  SKIPPED: cannot create network namespaces ({e}); run as root");
            return ExitCode::SUCCESS;
        }
    };
    let names = (pair.a.name().to_string(), pair.b.name().to_string());
    println!(
        "  namespaces {} ({}, {}) and {} ({}, {}), veth va <-> vb",
        names.0, pair.a4, pair.a6, names.1, pair.b4, pair.b6
    );
    let cfg = EchoConfig {
        mode: AttachMode::Auto,
        per_family: 500,
        malformed: 50,
        plain: 20,
    };
    let result = echo::run(&pair, cfg);
    drop(pair);
    let cleaned = !netns::exists(&names.0) && !netns::exists(&names.1);
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            println!("  FAILED: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut rtts = r.rtts.clone();
    rtts.sort();
    println!(
        "  attached in {:?} mode (ip link: {}), AF_XDP in {} mode",
        r.mode,
        r.kernel_mode.unwrap_or("?"),
        if r.zero_copy {
            "zero-copy"
        } else {
            "copy (veth offers no zero-copy)"
        }
    );
    println!(
        "  STOQ packets: {} sent, {} received via AF_XDP, {} replies via the TX ring",
        2 * cfg.per_family,
        r.xsk_received,
        r.replies
    );
    println!(
        "  round trip (peer socket -> XDP -> AF_XDP -> TX ring -> peer): p50 {:?}, p99 {:?}",
        percentile(&rtts, 0.5),
        percentile(&rtts, 0.99)
    );
    println!(
        "  plain UDP: {} of {} reached the kernel stack",
        r.plain_received,
        2 * cfg.plain
    );
    println!(
        "  malformed STOQ: {} of {} dropped in XDP",
        r.stats.dropped_total(),
        2 * cfg.malformed
    );
    println!("  counters: {}", r.stats);
    println!(
        "  cleanup: XDP detached: {}, namespaces removed: {}",
        !r.attached_after_drop, cleaned
    );
    let ok = r.replies == 2 * cfg.per_family
        && r.xsk_received == 2 * cfg.per_family
        && r.stats.dropped_total() == u64::from(2 * cfg.malformed)
        && r.stoq_port_socket_received == 0
        && !r.attached_after_drop
        && cleaned;
    if ok {
        println!(
            "\nresult: OK: the XDP path works on this host ({:?} mode).",
            r.mode
        );
        ExitCode::SUCCESS
    } else {
        println!("\nresult: FAILED (see above)");
        ExitCode::FAILURE
    }
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
