//! Known-verdict tests: the real `stoq_xdp` program runs in the kernel through
//! `BPF_PROG_TEST_RUN` on hand-made frames. For each frame the test asserts the XDP action,
//! that exactly the expected counters moved by one, and that the userspace classifier
//! agrees.

use stoq::classifier::Classifier;
use stoq::xdp::{SteerStats, XdpAction, XdpProgram};
use stoq_common::cid::CidLayout;
use stoq_common::classify::{DropReason, PacketKind, PassReason, Verdict};
use stoq_common::maps::{COUNTER_NO_SOCKET, NUM_COUNTERS};
use stoq_common::wire::stoq::MIN_PROTECTED_LEN;
use stoq_tests::frames::{self, OTHER_PORT, STOQ_PORT, Wrap};

/// What a frame must produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Stoq(PacketKind),
    Pass(PassReason),
    Drop(DropReason),
}

impl Expect {
    fn of(v: &Verdict) -> Self {
        match v {
            Verdict::Stoq(s) => Self::Stoq(s.kind),
            Verdict::Pass(r) => Self::Pass(*r),
            Verdict::Drop(r) => Self::Drop(*r),
        }
    }

    /// The action with no AF_XDP socket registered, as in a test run.
    fn action(self) -> XdpAction {
        match self {
            Self::Drop(_) => XdpAction::Drop,
            _ => XdpAction::Pass,
        }
    }

    /// The counters that must move by exactly one.
    fn counters(self) -> Vec<u32> {
        match self {
            Self::Stoq(k) => vec![COUNTER_NO_SOCKET, k.counter()],
            Self::Pass(r) => vec![r.counter()],
            Self::Drop(r) => vec![r.counter()],
        }
    }
}

fn layout() -> CidLayout {
    CidLayout::DEFAULT
}

fn setup(test: &str) -> Option<(XdpProgram, Classifier)> {
    if !stoq_tests::privileged(test) {
        return None;
    }
    let mut prog = stoq_tests::load_program(test)?;
    prog.configure(&layout(), &[STOQ_PORT]).expect("configure");
    Some((prog, Classifier::new(&layout(), &[STOQ_PORT])))
}

/// Runs one frame in the kernel and checks action, counters and the userspace twin.
fn check(prog: &mut XdpProgram, cls: &Classifier, name: &str, frame: &[u8], want: Expect) {
    assert_eq!(
        Expect::of(&cls.classify(frame)),
        want,
        "{name}: userspace classifier"
    );
    let before = prog.stats().expect("stats");
    let out = prog.test_run(frame, 1).expect("test_run");
    let delta = prog.stats().expect("stats").since(&before);
    assert_eq!(out.action, want.action(), "{name}: XDP action");
    assert_counters(name, &delta, &want.counters());
}

fn assert_counters(name: &str, delta: &SteerStats, expected: &[u32]) {
    for i in 0..NUM_COUNTERS {
        let want = u64::from(expected.contains(&i));
        assert_eq!(
            delta.raw()[i as usize],
            want,
            "{name}: counter {i} moved by {}, expected {want}",
            delta.raw()[i as usize]
        );
    }
}

fn with_payload(w: Wrap, p: &[u8]) -> Vec<u8> {
    frames::udp_frame(w, p)
}

/// Sets byte `at` of a frame and returns it.
fn poke(mut f: Vec<u8>, at: usize, v: u8) -> Vec<u8> {
    f[at] = v;
    f
}

fn known_cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    use DropReason as D;
    use Expect::{Drop, Pass, Stoq};
    use PacketKind as K;
    use PassReason as P;
    let l = layout();
    let min_short = 1 + l.len() + MIN_PROTECTED_LEN;
    let v4 = Wrap::V4;
    let v6 = Wrap::V6;
    let v4vlan = Wrap {
        vlan: Some(100),
        ..Wrap::V4
    };
    let v6vlan = Wrap {
        vlan: Some(4095),
        ..Wrap::V6
    };
    let l4 = frames::l4_offset(v4);
    let l4v6 = frames::l4_offset(v6);
    let short = frames::short(&l, 7, 1200);

    let mut ihl6 = with_payload(v4, &short);
    // IPv4 with 4 bytes of options: shift the payload by re-building by hand.
    {
        let mut f = ihl6[..14].to_vec();
        let mut ip = ihl6[14..34].to_vec();
        ip[0] = 0x46;
        let total = u16::from_be_bytes([ip[2], ip[3]]) + 4;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[10] = 0;
        ip[11] = 0;
        ip.extend_from_slice(&[1, 1, 1, 0]);
        let c = stoq_common::wire::checksum::checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&ihl6[34..]);
        ihl6 = f;
    }

    let mut arp = vec![0u8; 42];
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let mut qinq = with_payload(v4vlan, &short);
    qinq[16..18].copy_from_slice(&0x8100u16.to_be_bytes());
    let frag_mf = poke(with_payload(v4, &short), 14 + 6, 0x20);
    let frag_off = poke(with_payload(v4, &short), 14 + 7, 0x10);
    let v6_frag = poke(with_payload(v6, &short), 14 + 6, 44);
    let v6_hbh = poke(with_payload(v6, &short), 14 + 6, 0);
    let tcp = poke(with_payload(v4, &short), 14 + 9, 6);
    let icmp6 = poke(with_payload(v6, &short), 14 + 6, 58);
    let ihl4 = poke(with_payload(v4, &short), 14, 0x44);
    let ver6_in_v4 = poke(with_payload(v4, &short), 14, 0x65);
    let mut long_total = with_payload(v4, &short);
    long_total[16..18].copy_from_slice(&2000u16.to_be_bytes());
    let mut udp_len_small = with_payload(v4, &short);
    udp_len_small[l4 + 4..l4 + 6].copy_from_slice(&7u16.to_be_bytes());
    let mut udp_len_big = with_payload(v6, &short);
    udp_len_big[l4v6 + 4..l4v6 + 6].copy_from_slice(&1300u16.to_be_bytes());

    let mut short_no_fixed = short.clone();
    short_no_fixed[0] &= !0x40;
    let mut short_bad_cid = short.clone();
    short_bad_cid[1] = (short_bad_cid[1] & 0xe0) | 12; // self-describes 13 bytes
    let mut hs_no_fixed = frames::handshake(&l, 100);
    hs_no_fixed[0] &= !0x40;
    let zero_rtt_short_cid = frames::zero_rtt(7, 100);
    // A STUN Binding response (RFC 8489) with FINGERPRINT, the answer to a worker's request
    // for its reflexive address; then the same with a wrong cookie, and with a length
    // field that is not the datagram's: those are not STUN, and not STOQ either.
    let stun = {
        use stoq_common::wire::stun::{Class, METHOD_BINDING, Writer, attr};
        let mut b = [0u8; 64];
        let mut w = Writer::new(&mut b, Class::Success, METHOD_BINDING, &[1; 12]).unwrap();
        w.xor_address(
            attr::XOR_MAPPED_ADDRESS,
            "100.64.0.1:40000".parse().unwrap(),
        )
        .unwrap();
        let n = w.finish_with_fingerprint().unwrap();
        b[..n].to_vec()
    };
    let mut stun_cookie = stun.clone();
    stun_cookie[4] ^= 1;
    let mut stun_length = stun.clone();
    stun_length.extend_from_slice(&[0; 4]);
    let mut hs_bad_dcid = frames::handshake(&l, 100);
    hs_bad_dcid[5] = 13;
    let mut long_dcid21 = frames::initial_full();
    long_dcid21[5] = 21;
    let mut hs_long_length = frames::handshake(&l, 100);
    let at = hs_long_length.len() - 100 - 2;
    hs_long_length[at..at + 2].copy_from_slice(&(0x4000u16 | 101).to_be_bytes());
    let mut init_token_overrun = frames::initial_full();
    // token length is the byte after the SCID (8 + 8 byte CIDs): offset 7 + 8 + 8.
    init_token_overrun[23] = 0x7f; // a two-byte-prefix? no: 0x7f is 0b01.. → 2-byte varint
    init_token_overrun[24] = 0xff; // token of 0x3fff bytes: runs past the datagram
    let mut vn_ragged = frames::version_negotiation(1);
    vn_ragged.pop();

    vec![
        (
            "short header, IPv4",
            with_payload(v4, &short),
            Stoq(K::Short),
        ),
        (
            "short header, IPv6",
            with_payload(v6, &short),
            Stoq(K::Short),
        ),
        (
            "short header, IPv4 + VLAN",
            with_payload(v4vlan, &short),
            Stoq(K::Short),
        ),
        (
            "short header, IPv6 + VLAN 4095",
            with_payload(v6vlan, &short),
            Stoq(K::Short),
        ),
        (
            "short header of minimum size",
            with_payload(v4, &frames::short(&l, 0, min_short)),
            Stoq(K::Short),
        ),
        ("short header, IPv4 with options", ihl6, Stoq(K::Short)),
        (
            "Initial 1200, IPv4",
            with_payload(v4, &frames::initial_full()),
            Stoq(K::Initial),
        ),
        (
            "Initial 1200, IPv6",
            with_payload(v6, &frames::initial_full()),
            Stoq(K::Initial),
        ),
        (
            "STUN Binding response",
            with_payload(v4, &stun),
            Stoq(K::Stun),
        ),
        (
            "STUN Binding response, IPv6 + VLAN",
            with_payload(v6vlan, &stun),
            Stoq(K::Stun),
        ),
        (
            "STUN header, wrong magic cookie",
            with_payload(v4, &stun_cookie),
            Drop(D::FixedBit),
        ),
        (
            "STUN header, length not the datagram's",
            with_payload(v6, &stun_length),
            Drop(D::FixedBit),
        ),
        (
            "0-RTT to a client-chosen 8-byte CID",
            with_payload(v4, &frames::zero_rtt(8, 100)),
            Stoq(K::ZeroRtt),
        ),
        (
            "0-RTT to a 20-byte CID, IPv6",
            with_payload(v6, &frames::zero_rtt(20, 60)),
            Stoq(K::ZeroRtt),
        ),
        (
            "Initial 1200, IPv4 + VLAN",
            with_payload(v4vlan, &frames::initial_full()),
            Stoq(K::Initial),
        ),
        (
            "Initial with 20-byte DCID",
            with_payload(v6, &frames::initial(20, 1300)),
            Stoq(K::Initial),
        ),
        (
            "Handshake, IPv4",
            with_payload(v4, &frames::handshake(&l, 200)),
            Stoq(K::Handshake),
        ),
        (
            "Handshake, IPv6 + VLAN",
            with_payload(v6vlan, &frames::handshake(&l, 200)),
            Stoq(K::Handshake),
        ),
        (
            "Retry, IPv6",
            with_payload(v6, &frames::retry(&l, 40)),
            Stoq(K::Retry),
        ),
        (
            "Version Negotiation",
            with_payload(v4, &frames::version_negotiation(2)),
            Stoq(K::VersionNegotiation),
        ),
        (
            "unknown version, 1200 bytes",
            with_payload(v4, &frames::unknown_version(1200)),
            Stoq(K::UnknownVersion),
        ),
        (
            "empty UDP payload",
            with_payload(v4, &[]),
            Drop(D::TooShort),
        ),
        (
            "short header 1 byte under minimum",
            with_payload(v4, &frames::short(&l, 0, min_short - 1)),
            Drop(D::TooShort),
        ),
        (
            "long header of 6 bytes",
            with_payload(v6, &frames::handshake(&l, 100)[..6]),
            Drop(D::TooShort),
        ),
        (
            "Retry without token",
            with_payload(v4, &frames::retry(&l, 0)),
            Drop(D::TooShort),
        ),
        (
            "short header, fixed bit clear",
            with_payload(v4, &short_no_fixed),
            Drop(D::FixedBit),
        ),
        (
            "Handshake, fixed bit clear",
            with_payload(v6, &hs_no_fixed),
            Drop(D::FixedBit),
        ),
        (
            "0-RTT with a 7-byte DCID",
            with_payload(v4, &zero_rtt_short_cid),
            Drop(D::CidLength),
        ),
        (
            "Initial of 1199 bytes",
            with_payload(v4, &frames::initial(8, 1199)),
            Drop(D::InitialTooSmall),
        ),
        (
            "Initial of 1199 bytes, IPv6 + VLAN",
            with_payload(v6vlan, &frames::initial(8, 1199)),
            Drop(D::InitialTooSmall),
        ),
        (
            "short header, wrong CID length",
            with_payload(v4, &short_bad_cid),
            Drop(D::CidLength),
        ),
        (
            "Handshake, DCID length 13",
            with_payload(v4, &hs_bad_dcid),
            Drop(D::CidLength),
        ),
        (
            "long header, DCID length 21",
            with_payload(v6, &long_dcid21),
            Drop(D::CidLength),
        ),
        (
            "Initial, DCID length 7",
            with_payload(v4, &frames::initial(7, 1200)),
            Drop(D::CidLength),
        ),
        (
            "Handshake, Length past the datagram",
            with_payload(v4, &hs_long_length),
            Drop(D::LengthField),
        ),
        (
            "Initial, token past the datagram",
            with_payload(v6, &init_token_overrun),
            Drop(D::LengthField),
        ),
        (
            "unknown version, 1199 bytes",
            with_payload(v4, &frames::unknown_version(1199)),
            Drop(D::UnsupportedVersion),
        ),
        ("UDP length 7", udp_len_small, Drop(D::UdpLength)),
        (
            "UDP length past the IP payload",
            udp_len_big,
            Drop(D::UdpLength),
        ),
        (
            "Version Negotiation, ragged list",
            with_payload(v4, &vn_ragged),
            Drop(D::MalformedVersionNegotiation),
        ),
        ("ARP", arp, Pass(P::NotIp)),
        ("two VLAN tags", qinq, Pass(P::NotIp)),
        ("IPv4 first fragment (MF)", frag_mf, Pass(P::Fragment)),
        ("IPv4 later fragment (offset)", frag_off, Pass(P::Fragment)),
        ("IPv6 fragment header", v6_frag, Pass(P::Fragment)),
        ("IPv6 hop-by-hop header", v6_hbh, Pass(P::Ipv6Extension)),
        ("TCP over IPv4", tcp, Pass(P::NotUdp)),
        ("ICMPv6", icmp6, Pass(P::NotUdp)),
        (
            "UDP to another port, IPv4",
            with_payload(
                Wrap {
                    dst_port: OTHER_PORT,
                    ..v4
                },
                &short,
            ),
            Pass(P::OtherPort),
        ),
        (
            "UDP to another port, IPv6 + VLAN",
            with_payload(
                Wrap {
                    dst_port: OTHER_PORT,
                    ..v6vlan
                },
                b"dns?",
            ),
            Pass(P::OtherPort),
        ),
        ("IPv4 IHL 4", ihl4, Pass(P::BadIpHeader)),
        (
            "IPv4 ethertype, version 6",
            ver6_in_v4,
            Pass(P::BadIpHeader),
        ),
        (
            "IPv4 total length past the frame",
            long_total,
            Pass(P::Truncated),
        ),
        (
            "Ethernet header only",
            with_payload(v4, &short)[..14].to_vec(),
            Pass(P::Truncated),
        ),
        (
            "VLAN tag cut short",
            with_payload(v4vlan, &short)[..16].to_vec(),
            Pass(P::Truncated),
        ),
    ]
}

#[test]
fn known_verdicts_in_kernel() {
    let Some((mut prog, cls)) = setup("known_verdicts_in_kernel") else {
        return;
    };
    let cases = known_cases();
    assert!(cases.len() >= 30, "at least 30 hand-made frames");
    for (name, frame, want) in &cases {
        check(&mut prog, &cls, name, frame, *want);
    }
    // Every verdict class was exercised.
    for r in DropReason::ALL {
        assert!(
            cases.iter().any(|c| c.2 == Expect::Drop(r)),
            "no case for drop reason {r:?}"
        );
    }
    for r in PassReason::ALL {
        assert!(
            cases.iter().any(|c| c.2 == Expect::Pass(r)),
            "no case for pass reason {r:?}"
        );
    }
    for k in PacketKind::ALL {
        assert!(
            cases.iter().any(|c| c.2 == Expect::Stoq(k)),
            "no case for packet kind {k:?}"
        );
    }
    eprintln!(
        "{} known frames: kernel and userspace agree; final counters: {}",
        cases.len(),
        prog.stats().unwrap()
    );
}

/// Frames the kernel accepts for a test run are at least an Ethernet header long.
const MIN_TEST_RUN: usize = 14;

#[test]
fn truncation_at_every_boundary() {
    let Some((mut prog, cls)) = setup("truncation_at_every_boundary") else {
        return;
    };
    let l = layout();
    let min_short = 1 + l.len() + MIN_PROTECTED_LEN;
    let wraps = [
        Wrap::V4,
        Wrap::V6,
        Wrap {
            vlan: Some(7),
            ..Wrap::V4
        },
        Wrap {
            vlan: Some(8),
            ..Wrap::V6
        },
    ];
    // Each payload with the smallest length at which it is still valid: the minimum-size
    // short header, Handshake and Initial are valid only whole; a Retry has no Length
    // field and stays valid down to a one-byte token.
    let retry = frames::retry(&l, 8);
    let retry_min = retry.len() - 7;
    let payloads = [
        (frames::short(&l, 1, min_short), min_short),
        (frames::handshake(&l, 40), frames::handshake(&l, 40).len()),
        (frames::initial_full(), 1200),
        (retry, retry_min),
    ];
    let mut checked = 0;
    for w in wraps {
        for (p, min_valid) in &payloads {
            let full = frames::udp_frame(w, p);
            // The frame cut short: the IP header claims more than is there.
            for n in 0..full.len() {
                let cut = &full[..n];
                let want = Expect::Pass(PassReason::Truncated);
                if n < MIN_TEST_RUN {
                    assert_eq!(
                        Expect::of(&cls.classify(cut)),
                        want,
                        "{w:?} frame cut to {n}"
                    );
                } else {
                    check(
                        &mut prog,
                        &cls,
                        &format!("{w:?} frame cut to {n}"),
                        cut,
                        want,
                    );
                }
                checked += 1;
            }
            // The datagram cut short, with consistent IP and UDP lengths: dropped below its
            // minimum valid length, and the kernel agrees with userspace on the reason.
            for k in 0..p.len() {
                let f = frames::resize_datagram(w, &full, k);
                let v = cls.classify(&f);
                if k < *min_valid {
                    assert!(
                        matches!(v, Verdict::Drop(_)),
                        "{w:?} datagram cut to {k}: {v:?}"
                    );
                } else {
                    assert!(
                        matches!(v, Verdict::Stoq(_)),
                        "{w:?} datagram cut to {k}: {v:?}"
                    );
                }
                check(
                    &mut prog,
                    &cls,
                    &format!("{w:?} datagram cut to {k}"),
                    &f,
                    Expect::of(&v),
                );
                checked += 1;
            }
        }
    }
    eprintln!("{checked} truncations checked in kernel and userspace");
}

#[test]
fn misuse_gets_typed_errors() {
    use stoq::xdp::{AttachMode, XdpError};
    let Some((mut prog, _)) = setup("misuse_gets_typed_errors") else {
        return;
    };
    // Reconfiguring the port bitmap: 1,000 ports including both edges, STOQ_PORT removed.
    let ports: Vec<u16> = (0..998).chain([65535, 4434]).collect();
    prog.configure(&layout(), &ports).expect("reconfigure");
    assert_eq!(prog.ports().len(), 1000);
    let short = frames::short(&layout(), 1, 200);
    for (port, want) in [
        (0, true),
        (997, true),
        (65535, true),
        (4434, true),
        (998, false),
        (STOQ_PORT, false),
    ] {
        let f = frames::udp_frame(
            Wrap {
                dst_port: port,
                ..Wrap::V4
            },
            &short,
        );
        let before = prog.stats().expect("stats");
        prog.test_run(&f, 1).expect("run");
        let d = prog.stats().expect("stats").since(&before);
        assert_eq!(d.no_socket() == 1, want, "port {port} steered: {d}");
        assert_eq!(
            d.passed(PassReason::OtherPort) == 1,
            !want,
            "port {port} passed: {d}"
        );
    }
    prog.configure(&layout(), &[STOQ_PORT])
        .expect("reconfigure back");
    assert_eq!(prog.ports().iter().collect::<Vec<_>>(), [STOQ_PORT]);
    let f = frames::udp_frame(Wrap::V4, &short);
    assert_eq!(prog.test_run(&f, 1).expect("run").action, XdpAction::Pass);
    let e = prog
        .attach("stoq-nosuch0", AttachMode::Auto)
        .expect_err("no such interface");
    assert!(
        matches!(e, XdpError::InterfaceNotFound { ref ifname } if ifname == "stoq-nosuch0"),
        "{e}"
    );
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let e = prog
        .register_socket(300, &sock)
        .expect_err("queue beyond the map");
    assert!(
        matches!(e, XdpError::QueueOutOfRange { queue: 300, .. }),
        "{e}"
    );
    // A UDP socket is not an AF_XDP socket: the kernel refuses it with a typed map error.
    let e = prog.register_socket(0, &sock).expect_err("not an XSK");
    assert!(matches!(e, XdpError::Map { .. }), "{e}");
    // Removing a socket that was never registered is not an error.
    prog.unregister_socket(5).expect("idempotent");
}
