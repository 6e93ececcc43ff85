//! End to end over a real veth pair between two network namespaces: `stoq_xdp` attached in
//! driver and in skb mode, real UDP from the peer namespace, STOQ packets received through
//! an AF_XDP socket (copy mode on veth), replies sent through the TX ring to a normal socket
//! in the peer, non-STOQ traffic still reaching the kernel stack, malformed STOQ dropped and
//! counted. Afterwards the XDP attachment, the veth pair and both namespaces must be gone,
//! on success and on failure.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use stoq::xdp::xsk::{XskConfig, XskSocket};
use stoq::xdp::{AttachMode, AttachedMode};
use stoq_common::cid::CidLayout;
use stoq_common::classify::{DropReason, PacketKind, PassReason};
use stoq_tests::frames::{self, OTHER_PORT, STOQ_PORT};
use stoq_tests::netns::{self, VethPair};

const PER_FAMILY: u32 = 50;
const MALFORMED: u32 = 20;
const PLAIN: u32 = 10;

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).expect("no NUL");
    // SAFETY: `c` is a valid C string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "interface {name} not found");
    i
}

/// The STOQ payload the peer sends: a valid short header carrying `id`.
fn stoq_payload(id: u32) -> Vec<u8> {
    let mut p = frames::short(&CidLayout::DEFAULT, 5, 120);
    p[20..24].copy_from_slice(&id.to_be_bytes());
    p
}

#[derive(Debug)]
struct ServerReport {
    mode: AttachedMode,
    zero_copy: bool,
    xsk_received: u32,
    plain_received: u32,
    stoq_port_socket_received: u32,
    stats: stoq::xdp::SteerStats,
}

fn round_trip(mode: AttachMode, want: AttachedMode, purpose: &str) {
    let test = format!("netns_round_trip_{purpose}");
    if !stoq_tests::privileged(&test) {
        return;
    }
    if stoq_tests::load_program(&test).is_none() {
        return;
    }
    let pair = VethPair::new(purpose).expect("create netns + veth");
    let names = (pair.a.name().to_string(), pair.b.name().to_string());
    let (b4, b6) = (pair.b4, pair.b6);
    let (ready_tx, ready_rx) = mpsc::channel();
    let total_stoq = 2 * PER_FAMILY;

    let server = pair.b.spawn(move || {
        let mut prog = stoq::xdp::XdpProgram::load().expect("load");
        prog.configure(&CidLayout::DEFAULT, &[STOQ_PORT])
            .expect("configure");
        let att = prog.attach(VethPair::B_IF, mode).expect("attach");
        let mut xsk =
            XskSocket::bind(ifindex(VethPair::B_IF), 0, XskConfig::default()).expect("AF_XDP bind");
        prog.register_socket(0, &xsk).expect("register XSK");
        // The kernel stack: a plain socket on another port, and one that reserves the STOQ
        // port and must see nothing that the program redirected or dropped.
        let plain = UdpSocket::bind("[::]:5353").expect("bind plain");
        let reserve = UdpSocket::bind(("::", STOQ_PORT)).expect("bind reserve");
        for s in [&plain, &reserve] {
            s.set_nonblocking(true).expect("nonblocking");
        }
        ready_tx.send(()).expect("ready");

        let (mut got, mut plain_got) = (0u32, 0u32);
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut pending = Vec::new();
        while (got < total_stoq || plain_got < PLAIN) && Instant::now() < deadline {
            let _ = xsk.poll_rx(20);
            xsk.recv(64, |f| pending.push(frames::parse_udp(f)));
            for rx in pending.drain(..) {
                let rx = rx.expect("XSK frames are well-formed Ethernet/IP/UDP");
                assert_eq!(rx.dst_port, STOQ_PORT);
                assert!(
                    rx.dst == IpAddr::from(b4) || rx.dst == IpAddr::from(b6),
                    "to our address: {rx:?}"
                );
                let id = u32::from_be_bytes(rx.payload[20..24].try_into().expect("4 bytes"));
                assert_eq!(rx.payload, stoq_payload(id), "payload intact");
                let reply = format!("pong {id}");
                xsk.send(|buf| frames::reply_into(&rx, reply.as_bytes(), buf).expect("fits"))
                    .expect("TX ring");
                got += 1;
            }
            let mut buf = [0u8; 2048];
            while let Ok(n) = plain.recv(&mut buf) {
                assert!(buf[..n].starts_with(b"plain"));
                plain_got += 1;
            }
        }
        // Let the last transmissions complete.
        let t = Instant::now();
        while xsk.complete() == 0 && t.elapsed() < Duration::from_millis(200) {}
        let mut buf = [0u8; 2048];
        let mut reserved_got = 0;
        while reserve.recv(&mut buf).is_ok() {
            reserved_got += 1;
        }
        let report = ServerReport {
            mode: att.mode(),
            zero_copy: xsk.is_zero_copy(),
            xsk_received: got,
            plain_received: plain_got,
            stoq_port_socket_received: reserved_got,
            stats: prog.stats().expect("stats"),
        };
        prog.unregister_socket(0).expect("unregister");
        drop(att);
        report
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server ready");
    assert!(pair.xdp_attached(), "ip link shows the XDP program on vb");
    let kernel_mode = if want == AttachedMode::Driver {
        "xdp"
    } else {
        "xdpgeneric"
    };
    assert_eq!(
        pair.xdp_mode(),
        Some(kernel_mode),
        "the kernel reports the mode we asked for"
    );

    let (a4, a6) = (pair.a4, pair.a6);
    let replies = pair.a.run(move || {
        let mut replies = 0u32;
        for (local, remote) in [
            (
                SocketAddr::new(a4.into(), 0),
                SocketAddr::new(b4.into(), STOQ_PORT),
            ),
            (
                SocketAddr::new(a6.into(), 0),
                SocketAddr::new(b6.into(), STOQ_PORT),
            ),
        ] {
            let s = UdpSocket::bind(local).expect("bind client");
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .expect("timeout");
            let plain_to = SocketAddr::new(remote.ip(), OTHER_PORT);
            for i in 0..PLAIN / 2 {
                s.send_to(format!("plain {i}").as_bytes(), plain_to)
                    .expect("send plain");
            }
            let mut bad = stoq_payload(0);
            bad[0] &= !0x40; // fixed bit clear
            for _ in 0..MALFORMED / 2 {
                s.send_to(&bad, remote).expect("send malformed");
            }
            for i in 0..PER_FAMILY {
                s.send_to(&stoq_payload(i), remote).expect("send STOQ");
                let mut buf = [0u8; 256];
                // One reply per request, from the STOQ address and port, via the TX ring.
                let t = Instant::now();
                loop {
                    match s.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            assert_eq!(from, remote, "reply source");
                            assert_eq!(&buf[..n], format!("pong {i}").as_bytes());
                            replies += 1;
                            break;
                        }
                        Err(e)
                            if t.elapsed() < Duration::from_secs(3)
                                && e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => panic!("no reply to STOQ packet {i} from {remote}: {e}"),
                    }
                }
            }
        }
        replies
    });
    let r = server
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    eprintln!("{purpose}: {r:?}");
    assert_eq!(r.mode, want, "attached in the requested mode");
    assert!(
        !r.zero_copy,
        "veth has no zero-copy AF_XDP; copy mode must be reported"
    );
    assert_eq!(
        replies, total_stoq,
        "every STOQ packet answered through the TX ring"
    );
    assert_eq!(
        r.xsk_received, total_stoq,
        "every STOQ packet arrived on the XSK"
    );
    assert_eq!(
        r.plain_received, PLAIN,
        "non-STOQ UDP reached the kernel stack"
    );
    assert_eq!(
        r.stoq_port_socket_received, 0,
        "nothing redirected or dropped leaked to the stack"
    );
    assert_eq!(r.stats.redirected(), u64::from(total_stoq));
    assert_eq!(r.stats.kind(PacketKind::Short), u64::from(total_stoq));
    assert_eq!(r.stats.dropped(DropReason::FixedBit), u64::from(MALFORMED));
    assert_eq!(r.stats.dropped_total(), u64::from(MALFORMED));
    assert!(r.stats.passed(PassReason::OtherPort) >= u64::from(PLAIN));
    assert_eq!(r.stats.no_socket(), 0);
    assert_eq!(r.stats.aborted(), 0);
    assert!(
        !pair.xdp_attached(),
        "dropping the attachment detached the program"
    );
    drop(pair);
    assert!(
        !netns::exists(&names.0) && !netns::exists(&names.1),
        "namespaces (and the veth) removed"
    );
}

#[test]
fn round_trip_driver_mode() {
    round_trip(AttachMode::Driver, AttachedMode::Driver, "drv");
}

#[test]
fn round_trip_skb_mode() {
    round_trip(AttachMode::Skb, AttachedMode::Skb, "skb");
}

#[test]
fn cleanup_on_failure() {
    const TEST: &str = "cleanup_on_failure";
    if !stoq_tests::privileged(TEST) || stoq_tests::load_program(TEST).is_none() {
        return;
    }
    let (names_tx, names_rx) = mpsc::channel();
    // A test body that panics while the program is attached and the namespaces exist.
    let result = std::panic::catch_unwind(move || {
        let pair = VethPair::new("fail").expect("create netns + veth");
        names_tx
            .send((pair.a.name().to_string(), pair.b.name().to_string()))
            .expect("send");
        // First: a panic inside the namespace thread detaches the program (bpf_link fd
        // closed on unwind) while the namespaces still exist.
        let inner = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pair.b.run(|| {
                let mut prog = stoq::xdp::XdpProgram::load().expect("load");
                let _att = prog
                    .attach(VethPair::B_IF, AttachMode::Auto)
                    .expect("attach");
                panic!("injected failure while attached");
            })
        }));
        assert!(inner.is_err());
        assert!(!pair.xdp_attached(), "the panic detached XDP");
        // Then: a failure in the test body itself tears the topology down.
        panic!("injected failure with the topology up");
    });
    assert!(result.is_err(), "the injected failure propagated");
    let (a, b) = names_rx.recv().expect("names");
    assert!(
        !netns::exists(&a) && !netns::exists(&b),
        "namespaces removed after a failure"
    );
}
