//! `cargo xtask`: STOQ's build, test and benchmark orchestration.
//!
//! ```text
//! cargo xtask build-ebpf            provision the eBPF toolchain, build stoq_xdp
//! cargo xtask test                  build-ebpf, then the whole test suite
//! cargo xtask demo [ARGS]           build-ebpf, then `stoq demo`: the README's main job
//! cargo xtask selfcheck             build-ebpf, then the XDP self-check
//! cargo xtask layers              the module graph: no import cycle, no upward import
//! cargo xtask sim [--seeds N]       the transport simulator's property test over N seeds
//! cargo xtask soak [--minutes N]    mixed load on a veth pair for N minutes (root), bounded
//! cargo xtask fuzz [--seconds N] [--jobs J]  every fuzz target for N seconds (default 30),
//!                                  J at a time (default: one per core)
//! cargo xtask bench [ARGS]          the end-to-end harness (root): STOQ vs quinn, TCP, raw UDP
//! cargo xtask bench --micro [ARGS]  the criterion micro-benchmarks
//! ```
//!
//! Only `std` is used, so the tool compiles in seconds on a fresh machine.

mod ebpf;
mod layers;
mod util;

use std::process::ExitCode;

use util::{Fail, cargo, is_root, run};

fn usage() -> ExitCode {
    eprintln!(
        "usage: cargo xtask <command>\n\n\
         commands:\n  \
         build-ebpf          provision nightly rust-src and bpf-linker, build the XDP object\n  \
         test                build-ebpf, then run every test (privileged ones need root)\n  \
         demo [ARGS]         build-ebpf, then an end-to-end encrypted transfer (`stoq demo ARGS`)\n  \
         selfcheck           build-ebpf, then run the XDP path self-check\n  \
         layers              check the module graph: no import cycle, no upward import\n  \
         sim [--seeds N] [--first F] [--seed S]\n                      \
         the simulator property test (default 1,000 seeds; --seed replays one)\n  \
         soak [--minutes N] [--backend B]\n                      \
         build-ebpf, then mixed load on a veth pair for N minutes (default 2, root):\n                      \
         fails on a lost byte or growth of RSS, file descriptors or connection tables\n  \
         fuzz [--seconds N] [--jobs J] [TARGET...]\n                      \
         run fuzz targets (default: all, 30 s each, one per core at a time)\n  \
         bench [ARGS]        build-ebpf, then the end-to-end harness as root (ARGS go to\n                      \
         stoq-bench: --quick, --reps N, --only G, --iface IF --peer ADDR ...)\n  \
         bench --micro [ARGS]  the criterion micro-benchmarks (ARGS go to criterion)"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage();
    };
    let rest = &args[1..];
    let result = match cmd.as_str() {
        "build-ebpf" => ebpf::build().map(|_| ()),
        "test" => test(rest),
        "demo" => demo(rest),
        "selfcheck" => selfcheck(rest),
        "fuzz" => fuzz(rest),
        "sim" => sim(rest),
        "soak" => soak(rest),
        "bench" => bench(rest),
        "layers" => layers::check(&util::root()),
        "-h" | "--help" | "help" => return usage(),
        other => {
            eprintln!("unknown command `{other}`");
            return usage();
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(msg)) => {
            eprintln!("xtask: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the XDP object and says how the rest of the run is affected if that fails.
fn ebpf_or_reason() -> Result<bool, Fail> {
    match ebpf::build() {
        Ok(_) => Ok(true),
        Err(Fail(why)) if std::env::var_os("STOQ_ALLOW_NO_EBPF").is_some() => {
            eprintln!(
                "xtask: eBPF program not built: {why}\nxtask: STOQ_ALLOW_NO_EBPF is set: continuing; XDP tests will skip"
            );
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

fn test(extra: &[String]) -> Result<(), Fail> {
    // As root the privileged tests run, and the fleet test's balancer is nftables: say what
    // is missing before building anything.
    if is_root() && !(util::runs("nft") && util::runs("conntrack")) {
        return Err(Fail(
            "the fleet test needs nft and conntrack: install them (Debian/Ubuntu: apt-get \
             install nftables conntrack)"
                .into(),
        ));
    }
    if is_root() && !util::runs("turnserver") {
        return Err(Fail(
            "the NAT traversal tests start coturn's turnserver as their STUN server: install \
             it (Debian/Ubuntu: apt-get install --no-install-recommends coturn)"
                .into(),
        ));
    }
    if is_root() && !util::runs("promtool") {
        return Err(Fail(
            "the metrics test lints `stoq server --metrics` with promtool: install it \
             (Debian/Ubuntu: apt-get install --no-install-recommends prometheus)"
                .into(),
        ));
    }
    // The module graph first: it takes a second and names a layering mistake plainly.
    layers::check(&util::root())?;
    let built = ebpf_or_reason()?;
    let mut c = cargo();
    c.args(["test", "--workspace"]).args(extra);
    if built {
        c.env("STOQ_REQUIRE_EBPF", "1");
    }
    if is_root() {
        // As root the privileged tests must run: a missing capability is a failure here.
        c.env("STOQ_REQUIRE_PRIVILEGED", "1");
    } else {
        eprintln!("xtask: not root: privileged XDP/netns tests will skip with their reason");
    }
    run(&mut c)?;
    // The simulator tests (the transport property test over 1,000 seeds, congestion
    // control on a simulated bottleneck) run in release mode: they move gigabytes.
    let mut c = cargo();
    c.args(SIM_TESTS);
    run(&mut c)?;
    // The engine end to end over veth pairs (1 GiB transfers, 1,000 connections, a
    // million hostile datagrams, a spoofed handshake flood, a fleet behind an nftables
    // balancer, an endpoint behind an nftables NAT asking coturn, peers meeting through NATs), in release mode, one test at a time (each owns the CPU).
    let mut c = cargo();
    c.args(E2E_TESTS).args(["--", "--test-threads", "1"]);
    if is_root() {
        c.env("STOQ_REQUIRE_PRIVILEGED", "1");
    }
    run(&mut c)
}

/// The engine's end-to-end test binaries (and the handshake flood), in release mode.
const E2E_TESTS: [&str; 16] = [
    "test",
    "--release",
    "-p",
    "stoq-tests",
    "--features",
    "e2e",
    "--test",
    "netns_engine",
    "--test",
    "netns_handshake_flood",
    "--test",
    "netns_fleet",
    "--test",
    "netns_nat",
    "--test",
    "netns_peer",
];

/// The simulator test binary, in release mode (it needs the `sim` feature).
const SIM_TESTS: [&str; 8] = [
    "test",
    "--release",
    "-p",
    "stoq",
    "--features",
    "sim",
    "--test",
    "sim",
];

/// `cargo xtask sim [--seeds N] [--first F] [--seed S]`.
fn sim(args: &[String]) -> Result<(), Fail> {
    let mut c = cargo();
    c.args(SIM_TESTS).args(["--", "--nocapture", "property::"]);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let var = match a.as_str() {
            "--seeds" => "STOQ_SIM_SEEDS",
            "--first" => "STOQ_SIM_FIRST",
            "--seed" => "STOQ_SIM_SEED",
            other => return Err(Fail(format!("sim: unknown argument `{other}`"))),
        };
        let v = it
            .next()
            .filter(|v| v.parse::<u64>().is_ok())
            .ok_or_else(|| Fail(format!("{a} needs a number")))?;
        c.env(var, v);
    }
    run(&mut c)
}

/// `cargo xtask soak [--minutes N] [--backend B]`: the soak (`stoq-soak`), in release
/// mode with the XDP object, so the server runs on the backend a real one would pick.
fn soak(args: &[String]) -> Result<(), Fail> {
    let built = ebpf_or_reason()?;
    let mut c = release_bin("stoq-tests", "stoq-soak");
    c.args(args);
    if built {
        c.env("STOQ_REQUIRE_EBPF", "1");
    }
    if is_root() {
        c.env("STOQ_REQUIRE_PRIVILEGED", "1");
    } else {
        eprintln!("xtask: not root: the soak needs network namespaces and will skip");
    }
    run(&mut c)
}

/// The README's main job: everything built (the XDP object too, so the backend report
/// reflects this host), then `stoq demo`.
fn demo(extra: &[String]) -> Result<(), Fail> {
    if let Err(Fail(why)) = ebpf::build() {
        eprintln!("xtask: eBPF program not built ({why}); the demo reports what that costs");
    }
    let mut c = release_bin("stoq-cli", "stoq");
    c.arg("demo").args(extra);
    run(&mut c)
}

/// `cargo run --release --quiet -p PACKAGE --bin BIN --`, for arguments to follow.
fn release_bin(package: &str, bin: &str) -> std::process::Command {
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        package,
        "--bin",
        bin,
        "--",
    ]);
    c
}

fn selfcheck(extra: &[String]) -> Result<(), Fail> {
    let _ = ebpf_or_reason()?;
    let mut c = release_bin("stoq-tests", "stoq-selfcheck");
    c.args(extra);
    run(&mut c)
}

/// `cargo xtask bench [ARGS]`: the end-to-end harness (`stoq-bench`, root), built in
/// release mode with the XDP object; `--micro [ARGS]`: the criterion micro-benchmarks.
fn bench(extra: &[String]) -> Result<(), Fail> {
    if extra.first().is_some_and(|a| a == "--micro") {
        let mut c = cargo();
        c.args(["bench", "-p", "stoq-benches", "--"])
            .args(&extra[1..]);
        return run(&mut c);
    }
    if !is_root() {
        return Err(Fail(
            "the end-to-end benchmark needs root: it creates network namespaces joined by veth \
             pairs, attaches XDP programs and shapes a link with tc. Run it as root \
             (sudo -E cargo xtask bench), or run `cargo xtask bench --micro` for the \
             micro-benchmarks, which need nothing"
                .into(),
        ));
    }
    let _ = ebpf_or_reason()?;
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "stoq-benches",
        "--bin",
        "stoq-bench",
        "--",
    ])
    .args(extra);
    run(&mut c)
}

fn fuzz(args: &[String]) -> Result<(), Fail> {
    let mut seconds = 30u32;
    let mut jobs = std::thread::available_parallelism().map_or(1, usize::from);
    let mut targets = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut number = |what: &str| {
            it.next()
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| Fail(format!("{what} needs a number")))
        };
        match a.as_str() {
            "--seconds" => seconds = number("--seconds")?,
            "--jobs" => jobs = number("--jobs")?.max(1) as usize,
            _ => targets.push(a.clone()),
        }
    }
    util::ensure_cargo_fuzz()?;
    if targets.is_empty() {
        targets = util::fuzz_targets()?;
    }
    let dir = util::root().join("fuzz");
    // One build of every target first, so the runs below start at once and in parallel
    // without queueing on cargo's build lock.
    let mut build = util::nightly_cargo();
    build.current_dir(&dir).args(["fuzz", "build"]);
    run(&mut build)?;
    let logs = util::root().join("target/fuzz-logs");
    std::fs::create_dir_all(&logs)
        .map_err(|e| Fail(format!("creating {}: {e}", logs.display())))?;
    // Each target gets a core of its own for the whole time; `jobs` run at once, each
    // logging to target/fuzz-logs/<target>.log (shown when it fails).
    let mut queue = targets.iter();
    let mut running: Vec<(String, std::process::Child, std::path::PathBuf)> = Vec::new();
    let mut failed = Vec::new();
    loop {
        while running.len() < jobs {
            let Some(t) = queue.next() else { break };
            eprintln!("xtask: fuzzing {t} for {seconds} s");
            let mut c = util::nightly_cargo();
            c.current_dir(&dir);
            c.args(["fuzz", "run", t]);
            // Committed seed inputs (fuzz/seeds/<target>) start the search from valid
            // input; new finds go to the first directory, the ignored fuzz/corpus/<target>.
            let seeds = dir.join("seeds").join(t);
            if seeds.is_dir() {
                let corpus = dir.join("corpus").join(t);
                std::fs::create_dir_all(&corpus)
                    .map_err(|e| Fail(format!("creating {}: {e}", corpus.display())))?;
                c.arg(&corpus).arg(&seeds);
            }
            c.args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-rss_limit_mb=2048",
            ]);
            let log = logs.join(format!("{t}.log"));
            let file = std::fs::File::create(&log)
                .map_err(|e| Fail(format!("creating {}: {e}", log.display())))?;
            let err = file
                .try_clone()
                .map_err(|e| Fail(format!("{}: {e}", log.display())))?;
            c.stdout(file).stderr(err);
            let child = c
                .spawn()
                .map_err(|e| Fail(format!("could not start cargo fuzz: {e}")))?;
            running.push((t.clone(), child, log));
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut k = 0;
        while k < running.len() {
            let status = running[k]
                .1
                .try_wait()
                .map_err(|e| Fail(format!("waiting for cargo fuzz: {e}")))?;
            let Some(status) = status else {
                k += 1;
                continue;
            };
            let (t, _, log) = running.swap_remove(k);
            if status.success() {
                eprintln!("xtask: {t}: no finding in {seconds} s");
            } else {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!(
                    "xtask: {t} FAILED ({status}); the end of {}:",
                    log.display()
                );
                for l in tail.iter().rev() {
                    eprintln!("  {l}");
                }
                failed.push(t);
            }
        }
    }
    if !failed.is_empty() {
        return Err(Fail(format!(
            "fuzz targets with a finding or an error: {}",
            failed.join(", ")
        )));
    }
    eprintln!(
        "xtask: {} fuzz targets ran {seconds} s each without a finding",
        targets.len()
    );
    Ok(())
}
