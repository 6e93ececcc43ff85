//! The classifier's cost per packet, in userspace and inside the kernel.
//!
//! - `userspace/*`: `Classifier::classify` on one frame, timed by criterion.
//! - `kernel/*`: the real `stoq_xdp` program run by `BPF_PROG_TEST_RUN` with `repeat`; the
//!   time is the kernel's own per-run measurement, which excludes the syscall. It includes
//!   the program's map lookups (config, ports, counters, XSK map) and the test-run loop's
//!   own per-iteration cost. Needs root; skipped with the reason otherwise.
//!
//! - `kernel/baseline`: `stoq_xdp_baseline`, a program that only returns `XDP_PASS`, run the
//!   same way in the same process: the test-run loop's own cost, to subtract.
//!
//! The anchor is the XDP paper's 24 Mpps per core for XDP_DROP (41.6 ns per packet, on a
//! 3.6 GHz Xeon with a 100G NIC, counting the driver).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stoq::classifier::Classifier;
use stoq::xdp::XdpProgram;
use stoq_common::cid::CidLayout;
use stoq_tests::frames::{self, STOQ_PORT, Wrap};

fn cases() -> Vec<(&'static str, Vec<u8>)> {
    let l = CidLayout::DEFAULT;
    let mut bad = frames::short(&l, 1, 200);
    bad[0] &= !0x40;
    vec![
        (
            "short_v4_1200",
            frames::udp_frame(Wrap::V4, &frames::short(&l, 1, 1200)),
        ),
        (
            "short_v6_vlan_1200",
            frames::udp_frame(
                Wrap {
                    vlan: Some(5),
                    ..Wrap::V6
                },
                &frames::short(&l, 1, 1200),
            ),
        ),
        (
            "initial_v4_1200",
            frames::udp_frame(Wrap::V4, &frames::initial_full()),
        ),
        ("drop_fixed_bit_v4", frames::udp_frame(Wrap::V4, &bad)),
        (
            "pass_other_port_v4",
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

fn userspace(c: &mut Criterion) {
    let cls = Classifier::new(&CidLayout::DEFAULT, &[STOQ_PORT]);
    let mut g = c.benchmark_group("classifier/userspace");
    g.throughput(Throughput::Elements(1));
    for (name, f) in cases() {
        g.bench_function(name, |b| b.iter(|| cls.classify(black_box(&f))));
    }
    g.finish();
}

fn kernel(c: &mut Criterion) {
    let eff = stoq::xdp::effective_capabilities().unwrap_or(0);
    if eff & (1 << 21) == 0 && eff & (1 << 39) == 0 {
        eprintln!("SKIPPED classifier/kernel: needs CAP_BPF or CAP_SYS_ADMIN (run as root)");
        return;
    }
    let mut prog = match XdpProgram::load() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("SKIPPED classifier/kernel: {e}");
            return;
        }
    };
    prog.configure(&CidLayout::DEFAULT, &[STOQ_PORT])
        .expect("configure");
    let mut g = c.benchmark_group("classifier/kernel");
    g.throughput(Throughput::Elements(1));
    {
        let obj = stoq::xdp::program_object().expect("loaded above");
        let mut ebpf = aya::Ebpf::load(obj).expect("object loads");
        let p: &mut aya::programs::Xdp = ebpf
            .program_mut(stoq_common::maps::BASELINE_PROGRAM_NAME)
            .expect("baseline program in the object")
            .try_into()
            .expect("an XDP program");
        p.load().expect("baseline verifies");
        let f = cases()[0].1.clone();
        g.bench_function("baseline", |b| {
            b.iter_custom(|iters| {
                use aya::programs::{TestRun, TestRunOptions};
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(1 << 20) as u32;
                    let out = p
                        .test_run(TestRunOptions {
                            data_in: Some(&f),
                            repeat: n,
                            ..TestRunOptions::new()
                        })
                        .expect("test_run");
                    total += out.duration * n;
                    left -= u64::from(n);
                }
                total
            })
        });
    }
    for (name, f) in cases() {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                // The kernel caps one run's repeat count; split large batches.
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(1 << 20) as u32;
                    let out = prog.test_run(&f, n).expect("test_run");
                    total += out.duration * n;
                    left -= u64::from(n);
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = userspace, kernel
}
criterion_main!(benches);
