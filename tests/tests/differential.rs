//! Differential test: random and mutated frames go through the in-kernel `stoq_xdp` and the
//! userspace classifier, which must agree on every verdict: the XDP action and the exact
//! counter that moved. The run is seeded (`STOQ_DIFF_SEED`, default fixed) and prints the
//! seed and the failing frame, so a failure replays exactly.

use stoq::classifier::Classifier;
use stoq::xdp::XdpAction;
use stoq_common::cid::CidLayout;
use stoq_common::classify::Verdict;
use stoq_common::maps::NUM_COUNTERS;
use stoq_tests::Rng;
use stoq_tests::frames::{self, STOQ_PORT, Wrap};

/// Frames per run (the acceptance floor is 100,000).
const FRAMES: usize = 100_000;
/// Largest frame: `BPF_PROG_TEST_RUN` takes one page minus headroom and tailroom.
const MAX_FRAME: usize = 3000;

fn seeds(l: &CidLayout) -> Vec<(Wrap, Vec<u8>)> {
    let wraps = [
        Wrap::V4,
        Wrap::V6,
        Wrap {
            vlan: Some(9),
            ..Wrap::V4
        },
        Wrap {
            vlan: Some(10),
            ..Wrap::V6
        },
    ];
    let payloads = [
        frames::short(l, 3, 100),
        frames::short(l, 200, 1400),
        frames::initial_full(),
        frames::initial(20, 1350),
        frames::handshake(l, 300),
        frames::retry(l, 30),
        frames::version_negotiation(3),
        frames::unknown_version(1250),
        b"not stoq".to_vec(),
    ];
    let mut v = Vec::new();
    for w in wraps {
        for p in &payloads {
            v.push((w, frames::udp_frame(w, p)));
        }
    }
    v
}

/// Offsets worth hitting: header fields whose values steer the classifier.
fn interesting_offset(rng: &mut Rng, w: Wrap, len: usize) -> usize {
    let l4 = frames::l4_offset(w);
    let l3 = if w.vlan.is_some() { 18 } else { 14 };
    let picks = [
        12,
        13,
        16,
        17,
        l3,
        l3 + 2,
        l3 + 3,
        l3 + 4,
        l3 + 5,
        l3 + 6,
        l3 + 7,
        l3 + 9,
        l4 + 2,
        l4 + 3,
        l4 + 4,
        l4 + 5,
        l4 + 8,
        l4 + 9,
        l4 + 13,
        l4 + 14,
        l4 + 22,
        l4 + 23,
        l4 + 24,
    ];
    picks[rng.below(picks.len())].min(len.saturating_sub(1))
}

fn mutate(rng: &mut Rng, w: Wrap, seed: &[u8]) -> Vec<u8> {
    let mut f = seed.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        if f.is_empty() {
            break;
        }
        match rng.below(8) {
            0 => {
                let i = rng.below(f.len());
                f[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(f.len());
                f[i] = rng.byte();
            }
            2 => {
                let i = interesting_offset(rng, w, f.len());
                let vals = [
                    0x00, 0xff, 0x40, 0x80, 0xc0, 0xd0, 0x08, 0x11, 0x2c, 0x06, 0x14, 0x15, 0x0c,
                    0x07,
                ];
                f[i] = vals[rng.below(vals.len())];
            }
            3 => {
                let n = 14 + rng.below(f.len().saturating_sub(14).max(1));
                f.truncate(n);
            }
            4 => {
                let extra = rng.below(64);
                for _ in 0..extra {
                    f.push(rng.byte());
                }
            }
            5 => {
                // A length field (IP total/payload length or UDP length) set at random.
                let l4 = frames::l4_offset(w);
                let l3 = if w.vlan.is_some() { 18 } else { 14 };
                let at = [l3 + 2, l3 + 4, l4 + 4][rng.below(3)];
                if at + 2 <= f.len() {
                    let v = (rng.next_u64() % 3000) as u16;
                    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
            6 => {
                let i = interesting_offset(rng, w, f.len());
                f[i] = rng.byte();
            }
            _ => {
                // Random STOQ payload behind valid headers.
                let n = rng.below(1500);
                let mut p = vec![0u8; n];
                rng.fill(&mut p);
                if n > 0 && rng.below(2) == 0 {
                    p[0] = (p[0] & 0x3f) | [0x40, 0xc0][rng.below(2)];
                }
                f = frames::udp_frame(w, &p);
            }
        }
    }
    f.truncate(MAX_FRAME);
    if f.len() < 14 {
        f.resize(14, 0);
    }
    f
}

#[test]
fn kernel_and_userspace_agree_on_100k_frames() {
    const TEST: &str = "kernel_and_userspace_agree_on_100k_frames";
    if !stoq_tests::privileged(TEST) {
        return;
    }
    let Some(mut prog) = stoq_tests::load_program(TEST) else {
        return;
    };
    let l = CidLayout::DEFAULT;
    prog.configure(&l, &[STOQ_PORT]).expect("configure");
    let cls = Classifier::new(&l, &[STOQ_PORT]);
    let seed: u64 = std::env::var("STOQ_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5354_4f51);
    eprintln!("differential seed {seed} (replay with STOQ_DIFF_SEED={seed})");
    let mut rng = Rng::new(seed);
    let seeds = seeds(&l);
    let mut classes = [0u64; NUM_COUNTERS as usize];
    let mut before = prog.stats().expect("stats");
    for i in 0..FRAMES {
        let (w, s) = &seeds[rng.below(seeds.len())];
        let f = if rng.below(20) == 0 {
            // Now and then a completely random frame.
            let mut f = vec![0u8; 14 + rng.below(200)];
            rng.fill(&mut f);
            f
        } else {
            mutate(&mut rng, *w, s)
        };
        let v = cls.classify(&f);
        let want_action = if matches!(v, Verdict::Drop(_)) {
            XdpAction::Drop
        } else {
            XdpAction::Pass
        };
        let want_counter = v.counter(false);
        let out = prog.test_run(&f, 1).expect("test_run");
        let after = prog.stats().expect("stats");
        let d = after.since(&before);
        before = after;
        let moved: Vec<usize> = (0..NUM_COUNTERS as usize)
            .filter(|&c| d.raw()[c] != 0)
            .collect();
        let mut want: Vec<usize> = vec![want_counter as usize];
        if let Verdict::Stoq(s) = v {
            want.push(s.kind.counter() as usize);
            want.sort_unstable();
        }
        assert!(
            out.action == want_action && moved == want,
            "frame {i} (seed {seed}): userspace {v:?} → {want_action:?} {want:?}; kernel {:?} {moved:?}\nframe: {f:02x?}",
            out.action
        );
        classes[want_counter as usize] += 1;
    }
    let distinct = classes.iter().filter(|&&c| c > 0).count();
    eprintln!("{FRAMES} frames agree; {distinct} distinct verdict counters hit: {classes:?}");
    assert!(
        distinct >= 15,
        "the generator should reach most verdicts, reached {distinct}"
    );
}
