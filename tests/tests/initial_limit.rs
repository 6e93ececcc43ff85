//! The XDP program's per-prefix Initial rate limit, in the kernel through
//! `BPF_PROG_TEST_RUN`: a prefix gets its burst and then its rate; another prefix has its
//! own bucket; packets other than Initials are never limited; off means off.

use std::time::Duration;

use stoq::xdp::{InitialLimit, SteerStats, XdpProgram};
use stoq_common::cid::CidLayout;
use stoq_common::classify::PacketKind;
use stoq_tests::frames::{self, STOQ_PORT, Wrap};

/// Buckets are per CPU: every test run must come from the same one.
fn pin_to_first_allowed_cpu() {
    // SAFETY: plain-data `cpu_set_t` on the stack, filled by the kernel, then handed back to
    // it for this thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set),
            0
        );
        let cpu = (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &set))
            .expect("a CPU");
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set),
            0
        );
    }
}

/// `frame` with its IP source address replaced (IPv4: 4 bytes, IPv6: 16).
fn from(mut frame: Vec<u8>, v6: bool, src: &[u8]) -> Vec<u8> {
    let at = if v6 { 14 + 8 } else { 14 + 12 };
    frame[at..at + src.len()].copy_from_slice(src);
    frame
}

/// Runs `frame` `n` times; returns how many were let through and how many were limited.
fn run(prog: &mut XdpProgram, frame: &[u8], n: u32) -> (u64, u64) {
    let before = prog.stats().expect("stats");
    prog.test_run(frame, n).expect("test_run");
    let d: SteerStats = prog.stats().expect("stats").since(&before);
    assert_eq!(d.total(), u64::from(n), "one verdict per run: {d}");
    (d.no_socket(), d.initial_limited())
}

#[test]
fn initials_are_limited_per_source_prefix_in_kernel() {
    let test = "initials_are_limited_per_source_prefix_in_kernel";
    if !stoq_tests::privileged(test) {
        return;
    }
    let Some(mut prog) = stoq_tests::load_program(test) else {
        return;
    };
    pin_to_first_allowed_cpu();
    let layout = CidLayout::DEFAULT;
    prog.configure(&layout, &[STOQ_PORT]).expect("configure");
    let initial = frames::initial_full();
    let v4 = frames::udp_frame(Wrap::V4, &initial);
    let v6 = frames::udp_frame(Wrap::V6, &initial);

    // A fresh program limits nothing.
    assert_eq!(run(&mut prog, &v4, 100), (100, 0));

    // One Initial a second per /24 (/64), in bursts of 10.
    prog.set_initial_limit(&InitialLimit::new(1, 10, 24, 64))
        .expect("limit");
    let before = prog.stats().expect("stats");
    assert_eq!(
        run(&mut prog, &v4, 100),
        (10, 90),
        "the burst, then nothing"
    );
    let host_b = from(v4.clone(), false, &[10, 200, 0, 77]);
    assert_eq!(run(&mut prog, &host_b, 5), (0, 5), "same /24, same bucket");
    let other = from(v4.clone(), false, &[10, 200, 1, 1]);
    assert_eq!(
        run(&mut prog, &other, 20),
        (10, 10),
        "another /24, its own bucket"
    );
    // Everything else from the limited prefix goes through.
    for (name, payload) in [
        ("short", frames::short(&layout, 0, 1200)),
        ("handshake", frames::handshake(&layout, 100)),
    ] {
        let f = frames::udp_frame(Wrap::V4, &payload);
        assert_eq!(run(&mut prog, &f, 50), (50, 0), "{name}");
    }
    // IPv6: /64 buckets.
    assert_eq!(run(&mut prog, &v6, 30), (10, 20));
    let same64 = from(
        v6.clone(),
        true,
        &"fd00:5710::ffff:1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    assert_eq!(run(&mut prog, &same64, 3), (0, 3));
    let next64 = from(
        v6.clone(),
        true,
        &"fd00:5710:0:1::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    assert_eq!(run(&mut prog, &next64, 12), (10, 2));

    // The rate: a little over a second later, exactly one more (the refused ones did
    // not push the schedule back).
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(run(&mut prog, &v4, 10), (1, 9));

    let d = prog.stats().expect("stats").since(&before);
    assert_eq!(d.initial_limited(), 90 + 5 + 10 + 20 + 3 + 2 + 9);
    assert_eq!(d.dropped_total(), 0, "not counted as malformed: {d}");
    assert!(d.kind(PacketKind::Initial) >= 100 + 5 + 20 + 30 + 3 + 12 + 10);
    assert!(format!("{d}").contains("drop.initial_rate_limited="));

    // Off means off.
    prog.set_initial_limit(&InitialLimit::OFF).expect("off");
    assert_eq!(run(&mut prog, &v4, 100), (100, 0));
    eprintln!(
        "initial rate limit in kernel: {}",
        prog.stats().expect("stats")
    );
}
