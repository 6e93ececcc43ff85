//! End to end over a real veth pair between two network namespaces: `stoq_xdp` attached in
//! driver and in skb mode, real UDP from the peer namespace, STOQ packets received through
//! an AF_XDP socket (copy mode on veth), replies sent through the TX ring to a normal socket
//! in the peer, non-STOQ traffic still reaching the kernel stack, malformed STOQ dropped and
//! counted. Afterwards the XDP attachment, the veth pair and both namespaces must be gone,
//! on success and on failure.

use std::sync::mpsc;

use stoq::xdp::{AttachMode, AttachedMode};
use stoq_common::classify::{DropReason, PacketKind, PassReason};
use stoq_tests::echo::{self, EchoConfig};
use stoq_tests::netns::{self, VethPair};

const PER_FAMILY: u32 = 50;
const MALFORMED: u32 = 10;
const PLAIN: u32 = 5;

fn round_trip(mode: AttachMode, want: AttachedMode, purpose: &str) {
    let test = format!("netns_round_trip_{purpose}");
    if !stoq_tests::privileged(&test) || stoq_tests::load_program(&test).is_none() {
        return;
    }
    let pair = VethPair::new(purpose).expect("create netns + veth");
    let names = (pair.a.name().to_string(), pair.b.name().to_string());
    let cfg = EchoConfig {
        mode,
        per_family: PER_FAMILY,
        malformed: MALFORMED,
        plain: PLAIN,
    };
    let r = echo::run(&pair, cfg).unwrap_or_else(|e| panic!("{purpose}: {e}"));
    eprintln!("{purpose}: {r:?}");
    let total = u64::from(2 * PER_FAMILY);
    assert_eq!(r.mode, want, "attached in the requested mode");
    let kernel_mode = if want == AttachedMode::Driver {
        "xdp"
    } else {
        "xdpgeneric"
    };
    assert_eq!(
        r.kernel_mode,
        Some(kernel_mode),
        "the kernel reports the mode we asked for"
    );
    assert!(
        !r.zero_copy,
        "veth has no zero-copy AF_XDP; copy mode must be reported"
    );
    assert_eq!(
        u64::from(r.replies),
        total,
        "every STOQ packet answered through the TX ring"
    );
    assert_eq!(
        u64::from(r.xsk_received),
        total,
        "every STOQ packet arrived on the XSK"
    );
    assert_eq!(
        r.plain_received,
        2 * PLAIN,
        "non-STOQ UDP reached the kernel stack"
    );
    assert_eq!(
        r.stoq_port_socket_received, 0,
        "nothing redirected or dropped leaked to the stack"
    );
    assert_eq!(r.stats.redirected(), total);
    assert_eq!(r.stats.kind(PacketKind::Short), total);
    assert_eq!(
        r.stats.dropped(DropReason::FixedBit),
        u64::from(2 * MALFORMED)
    );
    assert_eq!(r.stats.dropped_total(), u64::from(2 * MALFORMED));
    assert!(r.stats.passed(PassReason::OtherPort) >= u64::from(2 * PLAIN));
    assert_eq!(r.stats.no_socket(), 0);
    assert_eq!(r.stats.aborted(), 0);
    assert!(
        !r.attached_after_drop,
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
