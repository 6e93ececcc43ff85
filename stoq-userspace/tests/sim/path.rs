//! Path management in the simulator: DPLPMTUD up to a jumbo link's MTU (and not past a
//! smaller one), and a client that changes address mid-transfer.

use std::time::Duration;

use stoq::conn::cc::Congestion;
use stoq::conn::{Dir, Event, Side};
use stoq::sim::LinkConfig;

use super::common::*;

fn link(mtu: usize) -> LinkConfig {
    LinkConfig {
        rate_bps: Some(1_000_000_000),
        delay: Duration::from_millis(5),
        mtu,
        queue_bytes: 1 << 20,
        ..LinkConfig::default()
    }
}

/// Connects over links of `link_mtu` with the default start (1200) and discovery up to
/// 8952 bytes; returns the MTU the client settles on and whether it reported the change.
fn discover(link_mtu: usize) -> (usize, bool) {
    let transport = transport(Congestion::Bbr.factory());
    assert_eq!(
        transport.initial_mtu, 1200,
        "paths start at the base PLPMTU"
    );
    let (mut sim, client) = sim(3, link(link_mtu), link(link_mtu), 8952, transport, params());
    let h = connect(&mut sim, &client, Duration::from_secs(5)).expect("handshake");
    // Idle connection: probes are the only traffic, so discovery must not depend on data.
    sim.run(Duration::from_secs(20), |_| {}, |_| false);
    let c = sim.client.connection(h).unwrap();
    assert!(c.is_established(), "{:?}", c.error());
    let changed = sim
        .events
        .iter()
        .any(|e| e.0 == Side::Client && matches!(e.2, Event::DatagramSizeChanged(_)));
    (c.stats().path_mtu, changed)
}

#[test]
fn mtu_discovery_reaches_a_jumbo_link_and_stops_below_a_small_one() {
    let (jumbo, changed) = discover(9000);
    println!("jumbo link: path MTU {jumbo}");
    assert_eq!(jumbo, 8952, "the ceiling is probed first and fits");
    assert!(changed, "DatagramSizeChanged was reported");
    let (normal, _) = discover(1500);
    println!("1500-byte link: path MTU {normal}");
    assert!((1484..=1500).contains(&normal), "settled at {normal}");
}

#[test]
fn a_client_that_changes_address_mid_transfer_keeps_its_data() {
    let (mut sim, client) = sim(
        5,
        link(1500),
        link(1500),
        1452,
        transport(Congestion::Bbr.factory()),
        params(),
    );
    let h = connect(&mut sim, &client, Duration::from_secs(5)).expect("handshake");
    let sh = sim.server_conns[0];
    let id = sim
        .client
        .connection_mut(h)
        .unwrap()
        .open_stream(Dir::Uni)
        .unwrap();
    let total = 20u64 << 20;
    let (mut sent, mut got) = (0u64, 0u64);
    let mut buf = vec![0u8; 65536];
    let mut migrated = None;
    let mut moved = false;
    let got_all = std::cell::Cell::new(false);
    let ok = sim.run(
        Duration::from_secs(30),
        |s| {
            if sent < total {
                fill(s, Side::Client, h, id, 9, &mut sent);
            }
            if sent >= total / 2 && !moved {
                // The client moves to another address and a fresh connection ID.
                moved = true;
                assert!(s.client.connection_mut(h).unwrap().rotate_connection_id());
                s.client_addr = "[fd00:5710::77]:40000".parse().unwrap();
            }
            let c = s.server.connection_mut(sh).unwrap();
            let _ = c.accept_stream(Dir::Uni);
            while let Ok(Some(n)) = c.read(id, &mut buf) {
                for (i, b) in buf[..n].iter().enumerate() {
                    assert_eq!(*b, pat(9, got + i as u64), "byte {}", got + i as u64);
                }
                got += n as u64;
            }
            got_all.set(got >= total);
            for e in s.events.drain(..) {
                if let Event::PathMigrated(a) = e.2 {
                    migrated = Some(a);
                }
                assert!(!matches!(e.2, Event::Lost(_)), "{e:?}");
            }
        },
        |_| got_all.get(),
    );
    assert!(ok, "{got} of {total} bytes");
    assert_eq!(
        migrated,
        Some(sim.client_addr),
        "the server validated the new path"
    );
    let st = sim.server.connection(sh).unwrap();
    assert_eq!(st.remote_address(), sim.client_addr);
}

/// The path shrinks mid-transfer (a tunnel appears: 1,500 → 1,300 bytes, both ways). The
/// sender's full-size packets all vanish; it detects the black hole, drops to the base
/// size (1,200), searches upward again and settles below the new limit, reporting each
/// change; the transfer finishes with every byte intact.
#[test]
fn a_path_that_shrinks_mid_transfer_is_detected_and_searched_again() {
    let (mut sim, client) = sim(
        7,
        link(1500),
        link(1500),
        1452,
        transport(Congestion::Bbr.factory()),
        params(),
    );
    let h = connect(&mut sim, &client, Duration::from_secs(5)).expect("handshake");
    let sh = sim.server_conns[0];
    let id = sim
        .client
        .connection_mut(h)
        .unwrap()
        .open_stream(Dir::Uni)
        .unwrap();
    let total = 20u64 << 20;
    let (mut sent, mut got) = (0u64, 0u64);
    let mut buf = vec![0u8; 65536];
    let mut shrunk = false;
    let mut sizes = Vec::new();
    let got_all = std::cell::Cell::new(false);
    let ok = sim.run(
        Duration::from_secs(60),
        |s| {
            if sent < total {
                fill(s, Side::Client, h, id, 11, &mut sent);
            }
            if sent >= total / 2 && !shrunk {
                shrunk = true;
                s.up.set_mtu(1300);
                s.down.set_mtu(1300);
            }
            let c = s.server.connection_mut(sh).unwrap();
            let _ = c.accept_stream(Dir::Uni);
            while let Ok(Some(n)) = c.read(id, &mut buf) {
                for (i, b) in buf[..n].iter().enumerate() {
                    assert_eq!(*b, pat(11, got + i as u64), "byte {}", got + i as u64);
                }
                got += n as u64;
            }
            got_all.set(got >= total);
            for e in s.events.drain(..) {
                if let (Side::Client, Event::DatagramSizeChanged(d)) = (e.0, &e.2) {
                    sizes.push(*d);
                }
                assert!(!matches!(e.2, Event::Lost(_)), "{e:?}");
            }
        },
        |_| got_all.get(),
    );
    let c = sim.client.connection(h).unwrap();
    let st = c.stats();
    assert!(ok, "{got} of {total} bytes; {st:?}");
    println!("sizes reported: {sizes:?}; path MTU now {}", st.path_mtu);
    assert!(st.mtu_black_holes >= 1, "{st:?}");
    assert!(
        (1200..=1300).contains(&st.path_mtu),
        "settled at {} on a 1,300-byte path",
        st.path_mtu
    );
    let max = c.max_datagram_size().expect("datagrams on");
    assert_eq!(
        sizes.last(),
        Some(&max),
        "the last change reported is the size now"
    );
    assert!(
        sizes.iter().any(|d| *d < 1200),
        "the drop to the base size was reported: {sizes:?}"
    );
}
