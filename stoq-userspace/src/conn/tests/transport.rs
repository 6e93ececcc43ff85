//! Streams, flow control and limits over the in-memory pair, and hostile peers: each
//! violation gets its own typed close, and the server endpoint stays healthy for the next
//! client.

use super::*;
use crate::frame::{self, Out, ty};

fn frames(f: impl FnOnce(&mut Out<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 1200];
    let mut w = Out::new(&mut buf);
    f(&mut w);
    let n = w.len();
    buf.truncate(n);
    buf
}

fn stream_frame(id: u64, offset: u64, data: &[u8], fin: bool) -> Vec<u8> {
    frames(|w| {
        frame::encode_stream_header(w, id, offset, data.len(), fin).unwrap();
        w.put(data).unwrap();
    })
}

/// The client (playing the hostile peer) sends `raw` in a 1-RTT packet; returns the
/// server's error and the client's view of the close.
fn hostile(p: &mut Pair, raw: &[u8]) -> (Option<ConnectionError>, Option<ConnectionError>) {
    p.client_conn().queue_raw_frames(raw);
    p.drive_until(Duration::from_secs(2), |p| p.lost(true).is_some());
    p.drive_until(Duration::from_millis(200), |_| false);
    (p.lost(true), p.lost(false))
}

/// After a hostile close, the same server endpoint accepts a new client and carries data.
fn endpoint_still_healthy(p: &mut Pair) {
    let (_, client) = configs(Setup::default());
    p.connect(client);
    assert!(
        p.drive_until(Duration::from_secs(30), |p| p.both_connected()),
        "a new client could not connect after the hostile one"
    );
    let c = p.client_conn();
    let id = c.open_stream(Dir::Bi).unwrap();
    c.write(id, b"still serving").unwrap();
    c.finish(id).unwrap();
    let mut got = Vec::new();
    let ok = p.drive_until(Duration::from_secs(2), |p| {
        let mut buf = [0u8; 64];
        let s = p.server_conn();
        while let Some(sid) = s.accept_stream(Dir::Bi) {
            assert_eq!(sid, id);
        }
        matches!(s.read(id, &mut buf), Ok(Some(n)) if { got.extend_from_slice(&buf[..n]); true })
            && got == b"still serving"
    });
    assert!(ok, "data on the new connection: {got:?}");
}

fn expect_close(raw: &[u8], want: impl Fn(&ConnectionError) -> bool, wire_code: u64) {
    let mut p = connected_pair();
    let (server, client) = hostile(&mut p, raw);
    let server = server.expect("the server closed the connection");
    assert!(want(&server), "server error {server:?}");
    match client {
        Some(ConnectionError::PeerClosed { code, .. }) => assert_eq!(code, wire_code, "{server}"),
        other => panic!("client saw {other:?}, expected a transport close"),
    }
    assert!(p.server.stats().rx_datagrams > 0);
    endpoint_still_healthy(&mut p);
}

#[test]
fn stream_data_round_trips_both_ways_with_fin() {
    let mut p = connected_pair();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    let c = p.client_conn();
    let id = c.open_stream(Dir::Bi).unwrap();
    assert_eq!(id, StreamId::new(Side::Client, Dir::Bi, 0));
    let mut written = 0;
    let mut got = Vec::new();
    let mut reply = Vec::new();
    let mut replied = false;
    let ok = p.drive_until(Duration::from_secs(30), |p| {
        let c = p.client_conn();
        if written < data.len() {
            written += c.write(id, &data[written..]).unwrap_or(0);
            if written == data.len() {
                c.finish(id).unwrap();
            }
        }
        let mut buf = [0u8; 4096];
        while let Ok(Some(n)) = c.read(id, &mut buf) {
            reply.extend_from_slice(&buf[..n]);
        }
        let s = p.server_conn();
        let _ = s.accept_stream(Dir::Bi);
        loop {
            match s.read(id, &mut buf) {
                Ok(Some(n)) => got.extend_from_slice(&buf[..n]),
                Ok(None) => {
                    if !replied {
                        s.write(id, b"thanks").unwrap();
                        s.finish(id).unwrap();
                        replied = true;
                    }
                    break;
                }
                Err(_) => break,
            }
        }
        reply == b"thanks"
    });
    assert!(ok, "got {} of {} bytes", got.len(), data.len());
    assert_eq!(got, data);
}

#[test]
fn flow_control_blocks_and_credit_unblocks() {
    // A 64 KiB stream window: the sender stops at it until the reader consumes.
    let (mut server, client) = configs(Setup::default());
    server.params.initial_max_stream_data_bidi_remote = 64 * 1024;
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    p.connect(client);
    assert!(p.handshake());
    let c = p.client_conn();
    let id = c.open_stream(Dir::Bi).unwrap();
    c.write(id, &vec![7u8; 200 * 1024]).unwrap();
    p.drive_until(Duration::from_secs(2), |_| false);
    let s = p.server_conn();
    s.accept_stream(Dir::Bi).unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let n = s.read(id, &mut buf).unwrap().unwrap();
    assert_eq!(n, 64 * 1024, "exactly the window arrived before credit");
    // Reading granted credit: the rest follows.
    let mut total = n;
    p.drive_until(Duration::from_secs(5), |p| {
        while let Ok(Some(n)) = p.server_conn().read(id, &mut buf) {
            total += n;
        }
        total == 200 * 1024
    });
    assert_eq!(total, 200 * 1024);
}

#[test]
fn stop_sending_is_answered_with_a_reset_and_reported() {
    let mut p = connected_pair();
    let c = p.client_conn();
    let id = c.open_stream(Dir::Uni).unwrap();
    c.write(id, b"first part").unwrap();
    p.drive_until(Duration::from_millis(100), |_| false);
    let s = p.server_conn();
    assert_eq!(s.accept_stream(Dir::Uni), Some(id));
    s.stop_sending(id, 9).unwrap();
    let ok = p.drive_until(Duration::from_secs(1), |p| {
        p.events
            .iter()
            .any(|e| e.3 == Event::StreamStopped { id, code: 9 })
    });
    assert!(ok, "the client was told");
    assert_eq!(
        p.client_conn().write(id, b"more"),
        Err(WriteError::Stopped(9))
    );
}

#[test]
fn a_peer_reset_reaches_the_reader_and_frees_the_stream() {
    let mut p = connected_pair();
    let c = p.client_conn();
    let id = c.open_stream(Dir::Uni).unwrap();
    c.write(id, b"partial").unwrap();
    c.reset_stream(id, 42).unwrap();
    let mut res = None;
    p.drive_until(Duration::from_secs(1), |p| {
        let s = p.server_conn();
        let _ = s.accept_stream(Dir::Uni);
        res = Some(s.read(id, &mut [0u8; 64]));
        matches!(res, Some(Err(ReadError::Reset(_))))
    });
    assert_eq!(res, Some(Err(ReadError::Reset(42))));
    p.drive_until(Duration::from_millis(200), |_| false);
    assert_eq!(
        p.server_conn().stats().streams,
        0,
        "freed once the reset was read"
    );
    assert_eq!(
        p.client_conn().stats().streams,
        0,
        "freed once the reset was acknowledged"
    );
}

#[test]
fn stream_limit_is_raised_as_streams_close() {
    let (mut server, client) = configs(Setup::default());
    server.params.initial_max_streams_uni = 3;
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    p.connect(client);
    assert!(p.handshake());
    let c = p.client_conn();
    let ids: Vec<_> = (0..3).map(|_| c.open_stream(Dir::Uni).unwrap()).collect();
    assert_eq!(c.open_stream(Dir::Uni), Err(OpenError::Blocked));
    for id in &ids {
        c.write(*id, b"x").unwrap();
        c.finish(*id).unwrap();
    }
    let ok = p.drive_until(Duration::from_secs(2), |p| {
        let s = p.server_conn();
        while s.accept_stream(Dir::Uni).is_some() {}
        for id in &ids {
            let _ = s.read(*id, &mut [0u8; 8]);
            let _ = s.read(*id, &mut [0u8; 8]);
        }
        p.events
            .iter()
            .any(|e| e.3 == Event::StreamsAvailable(Dir::Uni))
    });
    assert!(ok, "MAX_STREAMS arrived");
    assert!(p.client_conn().open_stream(Dir::Uni).is_ok());
}

#[test]
fn messages_past_their_deadline_are_abandoned_and_reported() {
    let mut p = connected_pair();
    // Everything from the client is lost: the message cannot be delivered.
    p.tamper = Some(Box::new(|w: &mut Wire| {
        if w.to_server {
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }));
    let now = p.now;
    let id = p
        .client_conn()
        .send_message(now, b"frame 1", Duration::from_millis(150), Urgency::Media)
        .unwrap();
    let ok = p.drive_until(Duration::from_secs(1), |p| {
        p.events.iter().any(|e| e.3 == Event::MessageAbandoned(id))
    });
    assert!(ok, "abandoned and reported");
    let t = p.event_time(false, &Event::MessageAbandoned(id)).unwrap();
    assert!(t >= now - p.start + Duration::from_millis(150));
    // Delivered when the path works.
    p.tamper = None;
    let now = p.now;
    let id = p
        .client_conn()
        .send_message(now, b"frame 2", Duration::from_millis(500), Urgency::Media)
        .unwrap();
    let ok = p.drive_until(Duration::from_secs(1), |p| {
        p.events.iter().any(|e| e.3 == Event::MessageDelivered(id))
    });
    assert!(ok);
}

#[test]
fn live_adaptation_changes_windows_without_loss() {
    let (mut server, client) = configs(Setup::default());
    server.params.initial_max_stream_data_bidi_remote = 16 * 1024;
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    p.connect(client);
    assert!(p.handshake());
    let c = p.client_conn();
    let id = c.open_stream(Dir::Bi).unwrap();
    let data = vec![1u8; 1 << 20];
    let mut written = c.write(id, &data).unwrap();
    p.drive_until(Duration::from_millis(200), |p| {
        if let Ok(n) = p.client_conn().write(id, &data[written..]) {
            written += n;
        }
        false
    });
    // The receiver widens its window mid-transfer, and the sender's keep-alive and pacing
    // gain change too: nothing is lost or re-sent because of it.
    p.server_conn().adapt(Adaptation {
        stream_window: Some(1 << 20),
        connection_window: Some(8 << 20),
        ..Adaptation::default()
    });
    p.client_conn().adapt(Adaptation {
        keep_alive: Some(Some(Duration::from_secs(1))),
        pacing_gain: Some(1.5),
        ack_eliciting_threshold: Some(4),
        ..Adaptation::default()
    });
    let _ = p.server_conn().accept_stream(Dir::Bi);
    let mut total = 0;
    let mut buf = vec![0u8; 1 << 20];
    let ok = p.drive_until(Duration::from_secs(5), |p| {
        if written < data.len()
            && let Ok(n) = p.client_conn().write(id, &data[written..])
        {
            written += n;
        }
        while let Ok(Some(n)) = p.server_conn().read(id, &mut buf) {
            assert!(buf[..n].iter().all(|b| *b == 1));
            total += n;
        }
        total == 1 << 20
    });
    assert!(ok, "{total}");
    let st = p.client_conn().stats();
    assert_eq!(st.lost_packets, 0);
    assert_eq!(st.retransmitted_bytes, 0);
}

// ----- Hostile peers ----------------------------------------------------------------------

#[test]
fn hostile_stream_data_beyond_the_stream_window() {
    // The server grants 4 MiB per stream: a byte beyond it is a flow-control violation.
    let raw = stream_frame(0, 4 << 20, b"x", false);
    expect_close(
        &raw,
        |e| matches!(e, ConnectionError::FlowControl(_)),
        code::FLOW_CONTROL_ERROR,
    );
}

#[test]
fn hostile_stream_data_beyond_the_connection_window() {
    // Five streams, each within its 4 MiB window, 20 MiB in all against a 16 MiB grant.
    let mut raw = Vec::new();
    for i in 0..5u64 {
        raw.extend(stream_frame(i * 4, (4 << 20) - 1, b"x", false));
    }
    expect_close(
        &raw,
        |e| matches!(e, ConnectionError::FlowControl(_)),
        code::FLOW_CONTROL_ERROR,
    );
}

#[test]
fn hostile_streams_beyond_the_stream_limit() {
    // 100 bidirectional streams are allowed: index 100 is one too many.
    let raw = stream_frame(100 << 2, 0, b"x", false);
    expect_close(
        &raw,
        |e| *e == ConnectionError::StreamLimit,
        code::STREAM_LIMIT_ERROR,
    );
}

#[test]
fn hostile_ack_of_packets_never_sent() {
    let raw = frames(|w| {
        frame::encode_ack(w, [1_000_000..=1_000_000u64].into_iter(), 0).unwrap();
    });
    expect_close(
        &raw,
        |e| matches!(e, ConnectionError::AckOfUnsentPacket { pn: 1_000_000 }),
        code::PROTOCOL_VIOLATION,
    );
}

#[test]
fn hostile_overlapping_stream_data_that_disagrees() {
    let mut raw = stream_frame(0, 0, b"hello world", false);
    raw.extend(stream_frame(0, 6, b"WORLD", false));
    expect_close(
        &raw,
        |e| matches!(e, ConnectionError::StreamDataMismatch { id: 0, offset: 6 }),
        code::PROTOCOL_VIOLATION,
    );
}

#[test]
fn hostile_new_connection_id_flood() {
    // active_connection_id_limit is 4: the fifth CID (with the handshake's) is too many.
    let raw = frames(|w| {
        for seq in 1..=20u64 {
            let cid = ConnectionId::from_slice(&[seq as u8; 8]).unwrap();
            frame::encode_new_cid(w, seq, 0, &cid, &[seq as u8; 16]).unwrap();
        }
    });
    expect_close(
        &raw,
        |e| *e == ConnectionError::ConnectionIdLimit,
        code::CONNECTION_ID_LIMIT_ERROR,
    );
}

#[test]
fn hostile_path_challenge_flood() {
    let mut p = connected_pair();
    let raw = frames(|w| {
        for i in 0..100u8 {
            frame::encode_path(w, false, &[i; 8]).unwrap();
        }
    });
    // 3 packets of 100 challenges: over the 256 per second allowed.
    for _ in 0..3 {
        p.client_conn().queue_raw_frames(&raw);
    }
    p.drive_until(Duration::from_secs(2), |p| p.lost(true).is_some());
    p.drive_until(Duration::from_millis(200), |_| false);
    assert_eq!(p.lost(true), Some(ConnectionError::PathChallengeFlood));
    assert!(
        matches!(
            p.lost(false),
            Some(ConnectionError::PeerClosed {
                code: code::PROTOCOL_VIOLATION,
                ..
            })
        ),
        "{:?}",
        p.lost(false)
    );
    endpoint_still_healthy(&mut p);
}

#[test]
fn hostile_receive_buffering_is_bounded_by_the_window() {
    // Every other byte of a 4 MiB window as 1-byte frames would fragment the receive
    // buffer without bound: the peer is closed long before, and memory stays bounded.
    let mut p = connected_pair();
    let mut sent = 0u64;
    for _ in 0..40 {
        let raw = frames(|w| {
            while w.remaining() > 16 {
                frame::encode_stream_header(w, 0, 1 + 2 * sent, 1, false).unwrap();
                w.put(b"z").unwrap();
                sent += 1;
            }
        });
        p.client_conn().queue_raw_frames(&raw);
    }
    p.drive_until(Duration::from_secs(2), |p| p.lost(true).is_some());
    assert_eq!(
        p.lost(true),
        Some(ConnectionError::StreamFragmented { id: 0 })
    );
    endpoint_still_healthy(&mut p);
}

#[test]
fn frames_for_streams_in_the_wrong_state_are_typed() {
    // STOP_SENDING for a stream the server never opened.
    let raw = frames(|w| {
        frame::encode_varints(w, &[ty::STOP_SENDING, 1, 0]).unwrap();
    });
    expect_close(
        &raw,
        |e| matches!(e, ConnectionError::StreamState(_)),
        code::STREAM_STATE_ERROR,
    );
    // A final size that changes.
    let mut raw = stream_frame(0, 0, b"abc", true);
    raw.extend(stream_frame(0, 0, b"abcd", true));
    expect_close(
        &raw,
        |e| *e == ConnectionError::FinalSize,
        code::FINAL_SIZE_ERROR,
    );
}

#[test]
fn registered_extension_frames_arrive_reliably_and_others_close() {
    let (server, client) = configs(Setup::default());
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    // The server registers 0x5f01; its endpoint config is rebuilt with it.
    let mut cfg = endpoint_config(2, 1452, p.start);
    cfg.transport = Arc::new(TransportConfig {
        extension_frames: vec![0x5f01],
        ..TransportConfig::default()
    });
    let (server, _) = configs(Setup::default());
    p.server = Endpoint::new(cfg, Some(Arc::new(server))).unwrap();
    p.connect(client);
    assert!(p.handshake() && p.both_connected());
    // Lose the first copy: it is retransmitted. (Kept, to arrive late below.)
    let first = std::rc::Rc::new(std::cell::RefCell::new(None));
    let f2 = first.clone();
    p.tamper = Some(Box::new(move |w: &mut Wire| {
        if w.to_server && f2.borrow().is_none() && w.data.len() > 100 {
            *f2.borrow_mut() = Some(w.data.clone());
            return Verdict::Drop;
        }
        Verdict::Deliver
    }));
    let payload = vec![0xab; 300];
    p.client_conn()
        .send_extension_frame(0x5f01, &payload)
        .unwrap();
    let mut got = None;
    let ok = p.drive_until(Duration::from_secs(3), |p| {
        got = got
            .take()
            .or_else(|| p.server_conn().recv_extension_frame());
        got.is_some()
    });
    assert!(ok, "the extension frame arrived");
    assert_eq!(got, Some((0x5f01, payload)));
    assert!(
        p.client_conn().stats().lost_packets >= 1,
        "it was retransmitted"
    );
    // The first copy arrives after all (the loss was spurious): it is not delivered again.
    let late = first.borrow_mut().take().expect("the first copy");
    p.inject(true, client_addr(), late);
    p.drive_until(Duration::from_millis(100), |_| false);
    assert_eq!(
        p.server_conn().recv_extension_frame(),
        None,
        "delivered once"
    );
    assert_eq!(p.server_conn().stats().extension_duplicates, 1);
    assert_eq!(
        p.client_conn().send_extension_frame(0x1234, b"x"),
        Err(ExtensionError::OutsideRange(0x1234))
    );
    // An unregistered type closes the connection with FRAME_ENCODING_ERROR.
    p.tamper = None;
    p.client_conn()
        .send_extension_frame(0x5f02, b"unknown")
        .unwrap();
    p.drive_until(Duration::from_secs(1), |p| p.lost(true).is_some());
    assert_eq!(
        p.lost(true),
        Some(ConnectionError::UnsupportedFrame(0x5f02))
    );
}

#[test]
fn bad_transport_settings_are_typed_config_errors() {
    let start = Instant::now();
    let mut cfg = endpoint_config(1, 1452, start);
    cfg.transport = Arc::new(TransportConfig {
        extension_frames: vec![0x30],
        ..TransportConfig::default()
    });
    assert_eq!(
        Endpoint::new(cfg.clone(), None).unwrap_err(),
        ConfigError::ExtensionFrameType(0x30)
    );
    cfg.transport = Arc::new(TransportConfig {
        pacing_gain: 0.0,
        ..TransportConfig::default()
    });
    assert!(matches!(
        Endpoint::new(cfg.clone(), None),
        Err(ConfigError::Transport(_))
    ));
    cfg.transport = Arc::new(TransportConfig {
        send_backlog: 1000,
        ..TransportConfig::default()
    });
    assert!(matches!(
        Endpoint::new(cfg.clone(), None),
        Err(ConfigError::Transport(m)) if m.contains("send_backlog")
    ));
    cfg.transport = Arc::new(TransportConfig {
        initial_mtu: 1000,
        ..TransportConfig::default()
    });
    assert!(matches!(
        Endpoint::new(cfg.clone(), None),
        Err(ConfigError::Transport(m)) if m.contains("initial_mtu")
    ));
    cfg.transport = Arc::new(TransportConfig {
        initial_mtu: cfg.max_udp_payload + 1,
        ..TransportConfig::default()
    });
    assert!(matches!(
        Endpoint::new(cfg, None),
        Err(ConfigError::Transport(m)) if m.contains("initial_mtu")
    ));
}

#[test]
fn new_clients_are_refused_above_the_memory_limit() {
    let (server, client) = configs(Setup::default());
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    let mut cfg = endpoint_config(2, 1452, p.start);
    cfg.max_memory = 100_000;
    let (server, _) = configs(Setup::default());
    p.server = Endpoint::new(cfg, Some(Arc::new(server))).unwrap();
    p.connect(client);
    assert!(p.handshake() && p.both_connected());
    // 200 kB that the server application does not read.
    let c = p.client_conn();
    let id = c.open_stream(Dir::Uni).unwrap();
    c.write(id, &vec![3u8; 200_000]).unwrap();
    p.drive_until(Duration::from_secs(2), |_| false);
    assert!(
        p.server.stats().memory >= 200_000,
        "{}",
        p.server.stats().memory
    );
    let (_, client) = configs(Setup::default());
    p.connect(client);
    p.drive_until(Duration::from_secs(2), |p| !p.accept_errors.is_empty());
    // (The client's first flight is two Initials: each is refused.)
    assert!(
        p.accept_errors
            .iter()
            .all(|e| *e == AcceptError::MemoryLimit)
    );
    p.drive_until(Duration::from_secs(2), |p| p.lost(false).is_some());
    assert!(matches!(
        p.lost(false),
        Some(ConnectionError::PeerClosed {
            code: code::CONNECTION_REFUSED,
            ..
        })
    ));
    // Reading the data frees the memory, and clients are accepted again.
    let mut buf = vec![0u8; 1 << 18];
    let h = p.server_conns[0];
    let s = p.server.connection_mut(h).unwrap();
    let _ = s.accept_stream(Dir::Uni);
    while let Ok(Some(_)) = s.read(id, &mut buf) {}
    p.drive_until(Duration::from_millis(100), |_| false);
    let (_, client) = configs(Setup::default());
    p.connect(client);
    assert!(p.drive_until(Duration::from_secs(5), |p| p.both_connected()));
    assert!(p.server.stats().memory < 100_000);
}

#[test]
fn keep_alive_keeps_an_idle_connection_open() {
    let (mut server, mut client) = configs(Setup::default());
    server.params.max_idle_timeout_ms = 1_000;
    client.params.max_idle_timeout_ms = 1_000;
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    p.connect(client);
    assert!(p.handshake() && p.both_connected());
    p.client_conn().adapt(Adaptation {
        keep_alive: Some(Some(Duration::from_millis(300))),
        ..Adaptation::default()
    });
    // Five idle timeouts of silence from the application: PINGs keep it alive.
    p.drive_until(Duration::from_secs(5), |_| false);
    assert!(p.client_conn().is_established(), "{:?}", p.lost(false));
    assert!(p.server_conn().is_established());
    // Without keep-alive it times out.
    p.client_conn().adapt(Adaptation {
        keep_alive: Some(None),
        ..Adaptation::default()
    });
    p.drive_until(Duration::from_secs(5), |p| p.lost(false).is_some());
    assert_eq!(p.lost(false), Some(ConnectionError::TimedOut));
}

#[test]
fn a_blocked_writer_is_told_when_it_can_write_again() {
    // The backlog of unsent bytes out of the way: this is about the send buffer.
    let (mut p, client) = client_pair_with(TransportConfig {
        send_backlog: u64::MAX,
        ..TransportConfig::default()
    });
    p.connect(client);
    assert!(p.handshake() && p.both_connected());
    let c = p.client_conn();
    let id = c.open_stream(Dir::Uni).unwrap();
    // Fill the 7/8 of the 16 MiB send buffer a bulk stream may use.
    let chunk = vec![5u8; 1 << 20];
    let mut total = 0;
    loop {
        match c.write(id, &chunk) {
            Ok(n) => total += n,
            Err(WriteError::Blocked) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(total as u64, (16u64 << 20) / 8 * 7);
    assert_eq!(c.send_capacity(id), 0);
    let mut buf = vec![0u8; 1 << 20];
    let ok = p.drive_until(Duration::from_secs(10), |p| {
        let s = p.server_conn();
        let _ = s.accept_stream(Dir::Uni);
        while let Ok(Some(_)) = s.read(id, &mut buf) {}
        p.events.iter().any(|e| e.3 == Event::StreamWritable(id))
    });
    assert!(ok, "StreamWritable after ACKs freed room");
    assert!(p.client_conn().send_capacity(id) > 0);
}

#[test]
fn a_writer_ahead_of_the_wire_waits_for_packets_to_leave() {
    let mut p = connected_pair();
    let c = p.client_conn();
    let id = c.open_stream(Dir::Uni).unwrap();
    let backlog = TransportConfig::default().send_backlog;
    let chunk = vec![5u8; 64 << 10];
    let mut total = 0u64;
    while let Ok(n) = c.write(id, &chunk) {
        total += n as u64;
    }
    // A bulk writer stops at 7/8 of the unsent backlog, long before the send buffer.
    assert_eq!(total, backlog / 8 * 7);
    assert!(c.send_capacity(id) > total);
    // An interactive stream still has the last eighth.
    let chat = c.open_stream(Dir::Uni).unwrap();
    c.set_urgency(chat, Urgency::Interactive);
    assert_eq!(c.write(chat, &[1; 64]), Ok(64));
    // As packets leave, the writer is told it may go on: before the window is acknowledged.
    let ok = p.drive_until(Duration::from_secs(5), |p| {
        p.events.iter().any(|e| e.3 == Event::StreamWritable(id))
    });
    assert!(ok, "StreamWritable once the backlog drained");
    assert!(p.client_conn().write(id, &chunk).is_ok_and(|n| n > 0));
}

/// Every backlog the configuration accepts lets a bulk writer go on: the room a blocked
/// writer waits for must be room the backlog can give (a 128 KiB backlog once waited
/// for 256 KiB of room it could never have, and the writer hung).
#[test]
fn a_small_backlog_still_wakes_its_writer() {
    for backlog in [16_384u64, 64 << 10, 128 << 10, 300 << 10] {
        let (mut p, client) = client_pair_with(TransportConfig {
            send_backlog: backlog,
            ..TransportConfig::default()
        });
        p.connect(client);
        assert!(p.handshake() && p.both_connected());
        let id = p.client_conn().open_stream(Dir::Uni).unwrap();
        let chunk = vec![5u8; 256 << 10];
        let mut written = 0u64;
        let mut read = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let want = 2u64 << 20;
        // As the async API does: after a refused write, write again only when told.
        let mut may_write = true;
        let mut told = 0;
        let done = p.drive_until(Duration::from_secs(10), |p| {
            let now_told = p
                .events
                .iter()
                .filter(|e| e.3 == Event::StreamWritable(id))
                .count();
            may_write |= now_told > told;
            told = now_told;
            let c = p.client_conn();
            while may_write && written < want {
                match c.write(id, &chunk) {
                    Ok(n) if n > 0 => written += n as u64,
                    _ => may_write = false,
                }
            }
            let s = p.server_conn();
            let _ = s.accept_stream(Dir::Uni);
            while let Ok(Some(n)) = s.read(id, &mut buf) {
                read += n as u64;
            }
            read >= want
        });
        assert!(done, "backlog {backlog}: {written} written, {read} read");
    }
}

/// Two connections of one endpoint sending bulk data share its backlog budget: each
/// writer is held to half of it once the endpoint has seen both busy, and the one left
/// alone gets the whole budget back.
#[test]
fn busy_connections_share_their_endpoints_backlog() {
    let budget = TransportConfig::default().send_backlog;
    let mut p = connected_pair();
    let first = p.client_conn.unwrap();
    let (_, client) = configs(Setup::default());
    let second = p.connect(client);
    assert!(p.handshake() && p.both_connected());
    let chunk = vec![5u8; 16 << 10];
    let ids: Vec<_> = [first, second]
        .iter()
        .map(|&h| {
            let c = p.client.connection_mut(h).unwrap();
            (h, c.open_stream(Dir::Uni).unwrap())
        })
        .collect();
    // Writes until refused; returns the most unsent bytes a successful write left.
    let fill = |p: &mut Pair, which: &[(ConnectionHandle, StreamId)]| {
        let mut most = 0;
        for &(h, id) in which {
            let c = p.client.connection_mut(h).unwrap();
            while c.write(id, &chunk).is_ok_and(|n| n > 0) {
                most = most.max(c.unsent());
            }
        }
        most
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut drain = |p: &mut Pair| {
        for &h in &p.server_conns.clone() {
            let s = p.server.connection_mut(h).unwrap();
            while s.accept_stream(Dir::Uni).is_some() {}
            for &(_, id) in &ids {
                while let Ok(Some(_)) = s.read(id, &mut buf) {}
            }
        }
    };
    let mut run = |p: &mut Pair, which: &[(ConnectionHandle, StreamId)]| {
        let mut most = 0;
        for ms in 0..300 {
            p.drive_until(Duration::from_millis(1), |_| false);
            drain(p);
            let m = fill(p, which);
            // After the first epochs: what writers were let hold.
            if ms >= 100 {
                most = most.max(m);
            }
        }
        most
    };
    assert_eq!(
        fill(&mut p, &ids[..1]),
        budget / 8 * 7,
        "alone so far: all of it"
    );
    let both = run(&mut p, &ids);
    assert!(
        both > 0 && both <= budget / 2 / 8 * 7,
        "two busy connections hold at most half the budget each: {both}"
    );
    // The second stops (its stream reset): the first gets the whole budget back.
    let (h2, id2) = ids[1];
    p.client
        .connection_mut(h2)
        .unwrap()
        .reset_stream(id2, 0)
        .unwrap();
    let alone = run(&mut p, &ids[..1]);
    assert!(alone > budget / 2, "alone again: {alone}");
}

#[test]
fn a_path_that_never_answers_is_abandoned_for_the_old_one() {
    let mut p = connected_pair();
    p.exchange_datagrams(b"before");
    // The client's packets now arrive from a new address, and nothing sent there arrives.
    let new_addr: SocketAddr = "[fd00:5710::99]:41000".parse().unwrap();
    p.tamper = Some(Box::new(move |w: &mut Wire| {
        if w.to_server {
            w.from = new_addr;
            Verdict::Deliver
        } else if w.data.len() < 1000 {
            // Everything the server sends to the new path is lost.
            Verdict::Drop
        } else {
            Verdict::Deliver
        }
    }));
    let h = p.server_conns[0];
    p.client_conn().send_datagram(b"from the new path").unwrap();
    let moved = p.drive_until(Duration::from_secs(1), |p| {
        p.server.connection(h).unwrap().remote_address() == new_addr
    });
    assert!(moved, "the server followed the new address");
    // Validation fails: the server returns to the address that worked.
    let back = p.drive_until(Duration::from_secs(10), |p| {
        p.server.connection(h).unwrap().remote_address() == client_addr()
    });
    assert!(
        back,
        "the server went back to the old path: {:?}",
        p.server.connection(h).unwrap().stats()
    );
    assert!(
        !p.events
            .iter()
            .any(|e| matches!(e.3, Event::PathMigrated(_)))
    );
}

/// The direct path dies; the client switches to the server's other address (a TURN
/// relay's, forwarding to the server): the server hears the client from the address the
/// relay gives it and follows, both paths validate, and data flows through the relay.
#[test]
fn a_client_that_switches_to_the_peers_other_address_is_followed() {
    let mut p = connected_pair();
    p.exchange_datagrams(b"before");
    let relayed: SocketAddr = "[fd00:5710::7]:49160".parse().unwrap();
    let via_relay: SocketAddr = "[fd00:5710::1]:41002".parse().unwrap();
    p.tamper = Some(Box::new(move |w: &mut Wire| {
        // Only what goes through the relay arrives: the direct path is dead both ways.
        let (to, seen_from) = if w.to_server {
            (relayed, via_relay)
        } else {
            (via_relay, relayed)
        };
        if w.to != to {
            return Verdict::Drop;
        }
        w.from = seen_from;
        Verdict::Deliver
    }));
    let now = p.now;
    assert!(p.client_conn().switch_remote(now, relayed));
    assert!(
        !p.client_conn().switch_remote(now, relayed),
        "already sending there"
    );
    let h = p.server_conns[0];
    let moved = p.drive_until(Duration::from_secs(2), |p| {
        p.server.connection(h).unwrap().remote_address() == via_relay
    });
    assert!(moved, "the server followed the client through the relay");
    p.exchange_datagrams(b"through the relay");
    // Past every validation deadline: neither side went back.
    p.drive_until(Duration::from_secs(10), |_| false);
    assert_eq!(p.client_conn().remote_address(), relayed);
    assert_eq!(p.server.connection(h).unwrap().remote_address(), via_relay);
    assert!(
        p.events
            .iter()
            .any(|e| e.1 && matches!(e.3, Event::PathMigrated(_))),
        "the server validated the client's new address"
    );
    p.exchange_datagrams(b"still");
}

#[test]
fn a_client_that_moves_with_nothing_to_send_tells_the_server() {
    use std::cell::Cell;
    use std::rc::Rc;
    let mut p = connected_pair();
    p.exchange_datagrams(b"before");
    // Let the ACKs settle: nothing is left to send either way.
    p.drive_until(Duration::from_millis(300), |_| false);
    // The client moves to a new socket while idle. What the server sends to the old
    // address is lost (nobody listens there) until the server has moved.
    let new_addr: SocketAddr = "[fd00:5710::1]:41001".parse().unwrap();
    let server_moved = Rc::new(Cell::new(false));
    let seen = Rc::clone(&server_moved);
    // The size of the first datagram from the new address, and of the first the server
    // sends there: both carry path probes (the PING, then the server's challenge).
    let first_from_new = Rc::new(Cell::new(0));
    let first_to_new = Rc::new(Cell::new(0));
    let (up, down) = (Rc::clone(&first_from_new), Rc::clone(&first_to_new));
    p.tamper = Some(Box::new(move |w: &mut Wire| {
        if w.to_server {
            w.from = new_addr;
            if up.get() == 0 {
                up.set(w.data.len());
            }
            Verdict::Deliver
        } else if seen.get() {
            if down.get() == 0 {
                down.set(w.data.len());
            }
            Verdict::Deliver
        } else {
            Verdict::Drop
        }
    }));
    let h = p.server_conns[0];
    p.client.handle_local_address_change();
    // Well inside any PTO or keep-alive: only the PING announcing the move gets there.
    let moved = p.drive_until(Duration::from_millis(100), |p| {
        let at = p.server.connection(h).unwrap().remote_address();
        server_moved.set(at == new_addr);
        at == new_addr
    });
    assert!(moved, "the server learnt the client's new address");
    let validated = p.drive_until(Duration::from_secs(2), |p| {
        p.events
            .iter()
            .any(|e| e.3 == Event::PathMigrated(new_addr))
    });
    assert!(validated, "the new path was validated");
    // Padded to 1,200 bytes (RFC 9000 §8.2): a 33-byte PING would leave the server an
    // anti-amplification budget of 99 bytes at the new address.
    assert!(
        first_from_new.get() >= 1200,
        "the PING announcing the move was {} bytes",
        first_from_new.get()
    );
    assert!(
        first_to_new.get() >= 1200,
        "the server's first datagram to the new address was {} bytes",
        first_to_new.get()
    );
    p.exchange_datagrams(b"after the move");
}

/// A NewReno client sending a DATAGRAM every 20 ms through an outage of `outage`; with
/// `middle_gets_through`, the one datagram sent half-way reaches the server (and is
/// acknowledged, but that ACK is lost in the outage too). Returns the smallest congestion
/// window seen after the outage.
fn smallest_window_after_outage(outage: Duration, middle_gets_through: bool) -> u64 {
    use std::cell::Cell;
    use std::rc::Rc;
    let (mut p, client) = newreno_client_pair();
    let down = Rc::new(Cell::new(false));
    let pass_one = Rc::new(Cell::new(false));
    let (d, pass) = (Rc::clone(&down), Rc::clone(&pass_one));
    p.tamper = Some(Box::new(move |w: &mut Wire| {
        if !d.get() {
            return Verdict::Deliver;
        }
        if w.to_server && pass.get() {
            pass.set(false);
            return Verdict::Deliver;
        }
        Verdict::Drop
    }));
    p.connect(client);
    assert!(p.handshake() && p.both_connected());
    for i in 0..5u8 {
        p.exchange_datagrams(&[i]);
    }
    let start = p.now;
    let mut middle_sent = false;
    let mut smallest = u64::MAX;
    // 20 ms ticks: a DATAGRAM each during the outage, then two seconds to recover.
    while p.now - start < outage + Duration::from_secs(2) {
        let t = p.now - start;
        down.set(t < outage);
        if t < outage {
            if middle_gets_through && !middle_sent && t >= outage / 2 {
                pass_one.set(true);
                middle_sent = true;
            }
            p.client_conn().send_datagram(b"tick").unwrap();
        } else {
            smallest = smallest.min(p.client_conn().stats().cwnd);
        }
        p.drive_until(Duration::from_millis(20), |_| false);
    }
    assert!(p.lost(false).is_none(), "the connection survived");
    smallest
}

/// Everything sent across more than 3 PTOs lost, with nothing acknowledged in between:
/// persistent congestion collapses the window to the minimum (RFC 9002 §7.6).
#[test]
fn an_outage_of_several_ptos_is_persistent_congestion() {
    assert_eq!(
        smallest_window_after_outage(Duration::from_millis(600), false),
        cc::minimum_window(1452)
    );
}

/// The same losses with one packet in the middle acknowledged (the ACK arriving only
/// with the later ones) are two shorter runs, neither longer than 3 PTOs: a loss, not
/// persistent congestion.
#[test]
fn an_acknowledged_packet_splits_the_run_of_losses() {
    let w = smallest_window_after_outage(Duration::from_millis(240), true);
    assert!(w > cc::minimum_window(1452), "window {w}");
}
