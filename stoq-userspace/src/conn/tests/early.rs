//! Early data (0-RTT): read by the server in the client's first flight and answered a
//! round trip sooner; refused data sent again byte for byte; replays and stale flights
//! refused; frames 0-RTT may not carry closing the connection.

use std::cell::RefCell;
use std::rc::Rc;

use super::*;
use crate::handshake::{EarlyData, EarlyDataRefusal, EarlyDataSettings, SessionCache};

/// A pair whose client keeps tickets and offers early data, connected once so that it
/// holds tickets; the server accepts early data if `accept`.
fn resumed_pair(accept: bool) -> (Pair, ClientConfig) {
    let (mut server, mut client) = configs(Setup::default());
    if accept {
        server.early_data = EarlyDataSettings::accept();
    }
    client.resumption = Some(Arc::new(SessionCache::new(8)));
    client.early_data = true;
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    p.connect(client.clone());
    assert!(p.handshake() && p.both_connected());
    // The tickets follow the handshake in 1-RTT.
    p.drive_until(Duration::from_millis(200), |_| false);
    (p, client)
}

/// The newest server connection.
fn newest(p: &mut Pair) -> &mut Connection {
    let h = *p.server_conns.last().expect("a server connection");
    p.server.connection_mut(h).expect("live")
}

#[test]
fn early_data_is_read_in_the_first_flight_and_answered_one_round_trip_later() {
    let (mut p, client) = resumed_pair(true);
    let t0 = p.now;
    let h = p.connect(client);
    let c = p.client.connection_mut(h).unwrap();
    assert_eq!(c.early_data(), EarlyData::Pending);
    let id = c
        .open_stream(Dir::Bi)
        .expect("streams open before the handshake");
    c.write(id, b"GET /index.html").unwrap();
    c.finish(id).unwrap();
    c.send_datagram(b"early datagram").unwrap();

    // The server reads the request as it arrives, before the client's Finished, and
    // answers at once (0.5-RTT).
    let answered = Rc::new(RefCell::new(None));
    let a = answered.clone();
    let mut request = Vec::new();
    p.server_app = Some(Box::new(
        move |ep: &mut Endpoint, conns: &[ConnectionHandle]| {
            let Some(s) = conns.last().and_then(|h| ep.connection_mut(*h)) else {
                return;
            };
            if a.borrow().is_some() || s.accept_stream(Dir::Bi).is_none() {
                return;
            }
            assert!(read_into(s, id, &mut request), "the whole request arrived");
            assert_eq!(request, b"GET /index.html");
            assert!(!s.is_established(), "answered before the client's Finished");
            assert!(s.is_early_stream(id));
            assert_eq!(s.early_data(), EarlyData::Accepted);
            assert_eq!(s.recv_datagram().as_deref(), Some(&b"early datagram"[..]));
            s.write(id, b"200 OK").unwrap();
            s.finish(id).unwrap();
            *a.borrow_mut() = Some(s.stats().rx_datagrams);
        },
    ));
    let mut response = Vec::new();
    let mut read_at = None;
    assert!(p.drive_until(Duration::from_secs(2), |p| {
        if read_into(p.client.connection_mut(h).unwrap(), id, &mut response) {
            read_at = p.event_time(false, &Event::StreamReadable(id));
        }
        read_at.is_some()
    }));
    assert!(answered.borrow().is_some(), "the server answered");
    assert_eq!(
        p.event_time(true, &Event::StreamOpened(Dir::Bi)),
        Some(t0 - p.start + p.delay),
        "the request came with the first flight"
    );
    assert_eq!(response, b"200 OK");
    assert_eq!(
        read_at,
        Some(t0 - p.start + 2 * p.delay),
        "the answer came one round trip after connect"
    );
    let c = p.client.connection_mut(h).unwrap();
    assert_eq!(c.early_data(), EarlyData::Accepted);
    assert_eq!(c.resumption(), crate::handshake::Resumption::Accepted);
    assert!(c.stats().zero_rtt_packets >= 1);
    assert!(newest(&mut p).stats().zero_rtt_packets >= 1);
    assert!(p.events.iter().any(|(_, server, hh, e)| !server
        && *hh == h
        && *e == Event::EarlyData { accepted: true }));
    // Once complete, the stream is still known as early.
    assert!(p.drive_until(Duration::from_secs(1), |p| newest(p).is_established()));
    assert!(newest(&mut p).is_early_stream(id));
    assert_eq!(p.server.stats().early_data_accepted, 1);
    assert_eq!(p.client.stats().early_data_accepted, 1);
}

/// The server stops accepting early data after issuing the tickets (a reload), or keeps
/// accepting them under smaller limits than the client remembers: either way the client's
/// early data are refused, and every byte of its stream arrives all the same, under the
/// server's real limits.
#[test]
fn refused_early_data_is_sent_again_byte_for_byte() {
    let (plain, _) = configs(Setup::default());
    refused_and_resent(plain, EarlyDataRefusal::Disabled);
    let (mut smaller, _) = configs(Setup::default());
    smaller.early_data = EarlyDataSettings::accept();
    smaller.params.initial_max_data = 6_000;
    smaller.params.initial_max_stream_data_uni = 3_000;
    refused_and_resent(smaller, EarlyDataRefusal::Limits);
}

fn refused_and_resent(reloaded: ServerConfig, reason: EarlyDataRefusal) {
    let (mut p, client) = resumed_pair(true);
    p.server.set_server_config(Arc::new(reloaded)).unwrap();

    let h = p.connect(client);
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let c = p.client.connection_mut(h).unwrap();
    let id = c.open_stream(Dir::Uni).unwrap();
    let mut at = 0;
    while at < body.len() {
        match c.write(id, &body[at..]) {
            Ok(n) => at += n,
            Err(WriteError::Blocked) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    c.send_datagram(b"lost with the 0-RTT flight").unwrap();

    let mut got = Vec::new();
    let mut sid = None;
    assert!(p.drive_until(Duration::from_secs(10), |p| {
        let c = p.client.connection_mut(h).unwrap();
        while at < body.len() {
            match c.write(id, &body[at..]) {
                Ok(n) => at += n,
                Err(_) => break,
            }
        }
        if at == body.len() {
            let _ = c.finish(id);
        }
        let s = newest(p);
        if sid.is_none() {
            sid = s.accept_stream(Dir::Uni);
        }
        sid.is_some_and(|sid| read_into(s, sid, &mut got))
    }));
    assert_eq!(sid, Some(id));
    assert_eq!(got.len(), body.len());
    assert!(got == body, "the stream's bytes differ");
    let c = p.client.connection_mut(h).unwrap();
    assert_eq!(
        c.early_data(),
        EarlyData::Refused(EarlyDataRefusal::Declined)
    );
    assert!(c.stats().zero_rtt_packets >= 1, "something went in 0-RTT");
    let s = newest(&mut p);
    assert_eq!(s.early_data(), EarlyData::Refused(reason));
    assert_eq!(s.error(), None);
    assert!(
        s.stats().dropped.no_keys >= 1,
        "0-RTT packets were discarded"
    );
    assert!(!s.is_early_stream(id));
    assert_eq!(
        s.recv_datagram(),
        None,
        "DATAGRAMs in refused 0-RTT are not resent"
    );
    assert!(p.events.iter().any(|(_, server, hh, e)| !server
        && *hh == h
        && *e == Event::EarlyData { accepted: false }));
    let refused = p.server.stats().early_data_refused;
    assert_eq!(refused[reason as usize], 1);
    assert_eq!(
        p.client.stats().early_data_refused[EarlyDataRefusal::Declined as usize],
        1
    );
}

#[test]
fn a_replayed_first_flight_gets_no_early_data_read() {
    let (mut p, client) = resumed_pair(true);
    let recorded = Rc::new(RefCell::new(Vec::new()));
    let t0 = p.now;
    let rec = recorded.clone();
    p.tamper = Some(Box::new(move |w: &mut Wire| {
        if w.to_server && rec.borrow().len() < 3 {
            rec.borrow_mut().push(w.data.clone());
        }
        Verdict::Deliver
    }));
    let h = p.connect(client);
    let c = p.client.connection_mut(h).unwrap();
    let id = c.open_stream(Dir::Uni).unwrap();
    c.write(id, b"POST /transfer amount=100").unwrap();
    c.finish(id).unwrap();
    p.step(t0);
    p.tamper = None;
    assert!(p.drive_until(Duration::from_secs(2), Pair::both_connected_newest));
    assert_eq!(newest(&mut p).early_data(), EarlyData::Accepted);
    // The original connection ends and is forgotten, so its CIDs route nowhere.
    p.client.connection_mut(h).unwrap().close(p.now, 0, b"done");
    let first = *p.server_conns.last().unwrap();
    assert!(p.drive_until(Duration::from_secs(5), |p| {
        p.server.connection(first).is_none()
    }));

    // A copy of the first flight a second later: the handshake starts (the ticket is
    // still valid) but the early data are refused as a replay and never read.
    let replay = |p: &mut Pair| {
        let before = p.server_conns.len();
        for d in recorded.borrow().iter() {
            p.inject(true, client_addr(), d.clone());
        }
        assert!(p.drive_until(Duration::from_millis(50), |p| p.server_conns.len() > before));
        p.drive_until(Duration::from_millis(50), |_| false);
        let s = newest(p);
        assert_eq!(
            s.accept_stream(Dir::Uni),
            None,
            "nothing of the replay was read"
        );
        s.early_data()
    };
    assert_eq!(replay(&mut p), EarlyData::Refused(EarlyDataRefusal::Replay));
    // Later than the freshness window: refused before the register is consulted.
    p.drive_until(Duration::from_secs(40), |_| false);
    assert_eq!(replay(&mut p), EarlyData::Refused(EarlyDataRefusal::Stale));
}

#[test]
fn a_frame_0_rtt_may_not_carry_closes_the_connection() {
    let (mut p, client) = resumed_pair(true);
    let h = p.connect(client);
    // HANDSHAKE_DONE: a server's frame, never allowed in 0-RTT.
    p.client
        .connection_mut(h)
        .unwrap()
        .queue_raw_frames(&[0x1e]);
    p.drive_until(Duration::from_secs(2), |p| newest(p).is_closed());
    let s = newest(&mut p);
    assert_eq!(
        s.error(),
        Some(&ConnectionError::ProtocolViolation(
            "frame not allowed in 0-RTT packets"
        ))
    );
}

#[test]
fn without_early_data_a_resuming_client_waits_for_the_handshake() {
    let (mut p, mut client) = resumed_pair(true);
    client.early_data = false;
    let h = p.connect(client);
    let c = p.client.connection_mut(h).unwrap();
    assert_eq!(c.early_data(), EarlyData::NotOffered);
    assert_eq!(c.open_stream(Dir::Bi), Err(OpenError::NotConnected));
    assert!(p.drive_until(Duration::from_secs(2), Pair::both_connected_newest));
    let c = p.client.connection_mut(h).unwrap();
    assert_eq!(c.resumption(), crate::handshake::Resumption::Accepted);
    assert_eq!(c.stats().zero_rtt_packets, 0);
}
