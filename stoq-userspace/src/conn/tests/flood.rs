//! Handshake floods: spoofed Initials from many addresses, and one network holding every
//! handshake slot, against the server's default admission policy.

use std::net::{IpAddr, Ipv4Addr};

use super::*;

/// The first flights of `n` clients, each opening its own connection, as a flood of
/// spoofed sources would send them (valid packets: they authenticate under their DCID's
/// Initial keys). A hybrid ClientHello takes two datagrams.
fn flood_flights(p: &Pair, n: usize) -> Vec<Vec<Vec<u8>>> {
    let mut c = Endpoint::new(endpoint_config(9, 1452, p.start), None).unwrap();
    let (_, cfg) = configs(Setup::default());
    let cfg = Arc::new(cfg);
    let mut buf = Vec::new();
    (0..n)
        .map(|_| {
            c.connect(p.now, server_addr(), cfg.clone()).unwrap();
            let mut flight = Vec::new();
            while let Some(t) = c.poll_transmit(p.now, &mut buf) {
                flight.push(buf[..t.size].to_vec());
            }
            flight
        })
        .collect()
}

/// Sends each flight from its own spoofed source.
fn inject_flood(p: &mut Pair, flights: Vec<Vec<Vec<u8>>>) {
    for (i, flight) in flights.into_iter().enumerate() {
        for d in flight {
            p.inject(true, spoofed(i), d);
        }
    }
}

/// Source `i` of a flood: each in its own /24 of the emulated public range.
fn spoofed(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(100, 64 + (i / 256) as u8, (i % 256) as u8, 1);
    SocketAddr::new(IpAddr::V4(ip), 40_000)
}

/// A pair whose server runs the default admission policy.
fn default_pair() -> (Pair, ClientConfig) {
    let (server, client) = configs(Setup::default());
    let p = Pair::new(server, 1452, EndpointConfig::new().retry);
    (p, client)
}

/// Simulated time until a new client of `p` is connected.
fn time_to_connect(p: &mut Pair, client: ClientConfig) -> Duration {
    let start = p.now;
    let h = p.connect(client);
    assert!(p.drive_until(Duration::from_secs(1), |p| {
        p.client
            .connection(h)
            .is_some_and(Connection::is_established)
    }));
    p.now - start
}

/// 2,000 spoofed Initials from 2,000 prefixes: by default the server keeps state (and
/// signs) for the first 64 only and answers the rest with a stateless Retry; a real
/// client arriving in the middle of it proves its address and connects one round trip
/// later than on an idle server. (With the old default, `RetryPolicy::Never`, all 2,000 held a slot.)
#[test]
fn spoofed_initials_hold_at_most_the_retry_threshold() {
    let (mut p, client) = default_pair();
    let flights = flood_flights(&p, 2000);
    let datagrams: usize = flights.iter().map(Vec::len).sum();
    inject_flood(&mut p, flights);
    p.step(p.now);
    let st = p.server.stats();
    assert_eq!(p.server.handshaking, DEFAULT_RETRY_THRESHOLD, "{st:?}");
    assert_eq!(p.server_conns.len(), DEFAULT_RETRY_THRESHOLD);
    assert!(p.server.under_load());
    // Each datagram of a refused flight is answered alone (no state ties them together).
    let to_admitted = datagrams / 2000 * DEFAULT_RETRY_THRESHOLD;
    assert_eq!(
        st.retries_sent + st.responses_dropped,
        (datagrams - to_admitted) as u64,
        "every other Initial got a Retry, or was dropped when the response queue was full: \
         {st:?}"
    );
    let loaded = time_to_connect(&mut p, client);
    let (mut idle, client) = default_pair();
    let unloaded = time_to_connect(&mut idle, client);
    // One Retry round trip (2 × 10 ms) more than on an idle server.
    assert_eq!(loaded, unloaded + 2 * p.delay, "idle: {unloaded:?}");
    let real = *p.server_conns.last().unwrap();
    assert!(p.server.connection(real).unwrap().validated);
    assert_eq!(
        p.server.stats().accepted,
        DEFAULT_RETRY_THRESHOLD as u64 + 1
    );
}

/// Under load, clients from one /24 that all prove their address hold at most
/// `max_handshakes_per_prefix` handshakes at once; the rest are dropped, resend their
/// Initial (token and all: the token is not spent on a dropped attempt) and get in as
/// slots free. Off load, the limit does not apply.
#[test]
fn one_prefix_holds_at_most_its_share_of_handshakes_under_load() {
    let (server, client) = configs(Setup::default());
    let mut p = Pair::new(server, 1452, EndpointConfig::new().retry);
    let (server, _) = configs(Setup::default());
    let limit = 16;
    p.server = Endpoint::new(
        EndpointConfig {
            max_handshakes_per_prefix: limit,
            ..endpoint_config(2, 1452, p.start)
        },
        Some(Arc::new(server)),
    )
    .unwrap();
    let flights = flood_flights(&p, DEFAULT_RETRY_THRESHOLD);
    inject_flood(&mut p, flights);
    p.step(p.now);
    assert!(p.server.under_load());
    let client = Arc::new(client);
    let hs: Vec<ConnectionHandle> = (0..40)
        .map(|_| {
            p.client
                .connect(p.now, server_addr(), client.clone())
                .unwrap()
        })
        .collect();
    let key = SourcePrefix::DEFAULT.key(client_addr().ip());
    let mut most = 0;
    assert!(p.drive_until(Duration::from_secs(9), |p| {
        most = most.max(p.server.prefixes.count(key));
        hs.iter().all(|h| {
            p.client
                .connection(*h)
                .is_some_and(Connection::is_established)
        })
    }));
    let st = p.server.stats();
    assert_eq!(most, limit, "{st:?}");
    assert!(st.prefix_limited > 0, "{st:?}");
    assert_eq!(st.token_reused, 0, "a resent Initial's token is still good");

    // Off load (Never: no Retry, no limit), 40 handshakes from one prefix run at once.
    let (server, client) = configs(Setup::default());
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    assert_eq!(
        EndpointConfig::new().max_handshakes_per_prefix,
        DEFAULT_MAX_HANDSHAKES_PER_PREFIX
    );
    let client = Arc::new(client);
    for _ in 0..40 {
        p.client
            .connect(p.now, server_addr(), client.clone())
            .unwrap();
    }
    let mut most = 0;
    p.drive_until(Duration::from_millis(15), |p| {
        most = most.max(p.server.prefixes.count(key));
        false
    });
    assert_eq!(most, 40);
    assert_eq!(p.server.stats().prefix_limited, 0);
}

#[test]
fn admission_settings_are_checked() {
    let mut cfg = EndpointConfig::new();
    cfg.max_handshakes_per_prefix = 0;
    assert!(matches!(
        Endpoint::new(cfg, None),
        Err(ConfigError::Admission(m)) if m.contains("max_handshakes_per_prefix")
    ));
    let mut cfg = EndpointConfig::new();
    cfg.source_prefix = SourcePrefix { v4: 33, v6: 64 };
    assert!(matches!(
        Endpoint::new(cfg, None),
        Err(ConfigError::Admission(m)) if m.contains("source_prefix")
    ));
}

/// A client whose Retry token has expired by the time its Initial gets through is refused
/// at once (CONNECTION_REFUSED), not sent a second Retry it would ignore while waiting out
/// its idle timeout.
#[test]
fn an_expired_retry_token_is_refused_not_retried() {
    let (server, client) = configs(Setup::default());
    let mut p = Pair::new(server, 1452, RetryPolicy::Always);
    let (server, _) = configs(Setup::default());
    p.server = Endpoint::new(
        EndpointConfig {
            retry: RetryPolicy::Always,
            token_lifetime: Duration::from_secs(2),
            ..endpoint_config(2, 1452, p.start)
        },
        Some(Arc::new(server)),
    )
    .unwrap();
    let held = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let h2 = held.clone();
    // Hold the client's answer to the Retry (its Initials after the first flight).
    let mut seen_retry = false;
    p.tamper = Some(Box::new(move |w: &mut Wire| {
        if !w.to_server && w.data[0] & 0xf0 == 0xf0 {
            seen_retry = true;
        } else if w.to_server && seen_retry {
            h2.borrow_mut().push((w.from, w.data.clone()));
            return Verdict::Drop;
        }
        Verdict::Deliver
    }));
    let h = p.connect(client);
    p.drive_until(Duration::from_millis(100), |p| {
        p.server.stats().retries_sent >= 1
    });
    assert!(p.drive_until(Duration::from_secs(1), |_| !held.borrow().is_empty()));
    // 3 s later (this server's tokens live 2 s) the held Initial arrives.
    assert_eq!(
        EndpointConfig::new().token_lifetime,
        Duration::from_secs(30)
    );
    p.tamper = None;
    p.now += Duration::from_secs(3);
    for (from, d) in held.borrow_mut().drain(..) {
        p.inject(true, from, d);
    }
    let retries = p.server.stats().retries_sent;
    p.drive_until(Duration::from_secs(1), |p| p.lost(false).is_some());
    let st = p.server.stats();
    assert!(st.expired_token >= 1, "{st:?}");
    assert_eq!(st.retries_sent, retries, "no second Retry");
    assert!(st.refused >= 1, "{st:?}");
    match p.lost(false) {
        Some(ConnectionError::PeerClosed { code: c, .. }) => {
            assert_eq!(c, code::CONNECTION_REFUSED)
        }
        other => panic!("expected a refusal, got {other:?} (connection {h:?})"),
    }
}

/// A client whose first datagram got a Retry gets one for the rest of its flight, even if
/// the load ended in between: admitting its second datagram alone made a connection the
/// client never continues (it follows the Retry), holding a handshake slot until the
/// handshake timeout.
#[test]
fn a_flight_split_by_the_end_of_load_makes_no_orphan_connection() {
    let (server, client) = configs(Setup::default());
    // Under load while one handshake is in progress.
    let mut p = Pair::new(server, 1452, RetryPolicy::WhenHandshakingAbove(1));
    let mut flights = flood_flights(&p, 2);
    let other = flights.pop().unwrap();
    let mut flight = flights.pop().unwrap();
    assert_eq!(flight.len(), 2, "a hybrid ClientHello takes two datagrams");
    let second = flight.pop().unwrap();
    p.connect(client);
    assert!(p.drive_until(Duration::from_secs(1), |p| p.server.handshaking == 1));
    assert!(p.server.under_load());
    // Delivered in order behind what is already on the wire.
    let deliver = |p: &mut Pair, from: SocketAddr, d: Vec<u8>| {
        let seen = p.server.stats().rx_datagrams;
        p.inject(true, from, d);
        assert!(p.drive_until(Duration::from_secs(1), |p| {
            p.server.stats().rx_datagrams > seen
        }));
    };
    let from = spoofed(5000);
    deliver(&mut p, from, flight.pop().unwrap());
    let st = p.server.stats();
    assert_eq!(st.retries_sent, 1, "{st:?}");
    // The handshake in progress completes: the load is over.
    assert!(p.drive_until(Duration::from_secs(1), |p| p.server.handshaking == 0));
    assert!(!p.server.under_load());
    let accepted = p.server.stats().accepted;
    deliver(&mut p, from, second);
    let st = p.server.stats();
    assert_eq!(
        st.accepted, accepted,
        "no connection from the second datagram: {st:?}"
    );
    assert_eq!(st.retries_sent, 2, "{st:?}");
    assert_eq!(p.server.handshaking, 0);
    // Another client, off load, is admitted at once.
    for d in other {
        deliver(&mut p, spoofed(5001), d);
    }
    assert_eq!(p.server.stats().accepted, accepted + 1);
}
