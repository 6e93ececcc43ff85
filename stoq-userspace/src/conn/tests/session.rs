//! Handshakes and 1-RTT traffic between two endpoints.

use super::*;

/// Every suite, every signature algorithm (both FALCON sizes and the composite), both trust modes, with and without client
/// authentication: the handshake completes, the client is connected after exactly one
/// round trip, its first application data leaves with its Finished, and the server reads
/// it half a round trip later.
#[test]
fn matrix_completes_and_data_flows_after_one_rtt() {
    let suites: Vec<_> = CipherSuite::local_preference().collect();
    assert!(suites.contains(&CipherSuite::ChaCha20Poly1305));
    let mut runs = 0;
    for &suite in &suites {
        for alg in SigAlg::ALL {
            for trust in [TrustMode::Pinned, TrustMode::Certificate] {
                for client_auth in [false, true] {
                    let setup = Setup {
                        suite,
                        alg,
                        trust,
                        client_auth,
                    };
                    let (server, client) = configs(setup);
                    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
                    p.connect(client);
                    assert!(p.handshake(), "{setup:?}");
                    assert!(
                        p.both_connected(),
                        "{setup:?}: {:?} / {:?}",
                        p.lost(false),
                        p.lost(true)
                    );
                    let rtt = 2 * p.delay;
                    assert_eq!(
                        p.event_time(false, &Event::Connected),
                        Some(rtt),
                        "{setup:?}: client connected after exactly 1 RTT"
                    );
                    assert_eq!(p.client_conn().suite(), Some(suite));
                    assert_eq!(p.server_conn().suite(), Some(suite));
                    let expected_key = match alg {
                        SigAlg::Falcon512 => &keys().server512.1,
                        SigAlg::Falcon1024 => &keys().server1024.1,
                        SigAlg::Falcon512Ed25519 => &keys().server_composite.1,
                    };
                    assert_eq!(p.client_conn().peer_key(), Some(expected_key));
                    if client_auth {
                        assert_eq!(p.server_conn().peer_key(), Some(&keys().client512.1));
                    } else {
                        assert_eq!(p.server_conn().peer_key(), None);
                    }
                    p.exchange_datagrams(b"matrix");
                    runs += 1;
                }
            }
        }
    }
    assert_eq!(runs, suites.len() * 12);
}

/// Application data rides with the client's Finished: sent at 1 RTT, read by the server at
/// 1.5 RTT.
#[test]
fn client_data_leaves_with_its_finished() {
    let (server, client) = configs(Setup::default());
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    p.connect(client);
    p.send_on_connect = Some(b"first bytes".to_vec());
    let ok = p.drive_until(Duration::from_secs(5), |p| {
        p.event_time(true, &Event::DatagramReceived).is_some()
    });
    assert!(ok);
    assert_eq!(p.server_conn().recv_datagram().unwrap(), b"first bytes");
    assert_eq!(
        p.event_time(true, &Event::DatagramReceived),
        Some(3 * p.delay),
        "server reads client data at 1.5 RTT"
    );
}

/// A 1280-byte IPv6 path (1232 bytes of UDP payload): the ClientHello (ML-KEM's 1184-byte
/// key alone nearly fills a datagram) and the server's flight span datagrams, every server
/// datagram before address validation stays within 3× what it received, and the
/// handshake completes.
#[test]
fn small_mtu_spans_datagrams_within_the_amplification_limit() {
    for (alg, trust, client_auth) in [
        (SigAlg::Falcon512, TrustMode::Pinned, false),
        (SigAlg::Falcon1024, TrustMode::Certificate, true),
    ] {
        let setup = Setup {
            alg,
            trust,
            client_auth,
            ..Setup::default()
        };
        let (server, client) = configs(setup);
        let mtu = 1232;
        let mut p = Pair::new(server, mtu, RetryPolicy::Never);
        p.connect(client);
        assert!(p.handshake(), "{setup:?}");
        assert!(
            p.both_connected(),
            "{setup:?}: {:?} / {:?}",
            p.lost(false),
            p.lost(true)
        );
        p.exchange_datagrams(b"small mtu");

        let first_client: Vec<_> = p
            .log
            .iter()
            .filter(|(t, up, _)| *up && *t == p.start)
            .collect();
        assert!(
            first_client.len() >= 2,
            "ClientHello spans datagrams: {first_client:?}"
        );
        for (_, _, n) in &first_client {
            assert!(
                *n >= 1200 && *n <= mtu,
                "client Initial datagram of {n} bytes"
            );
        }
        let server_first_flight: Vec<_> = p
            .log
            .iter()
            .filter(|(t, up, _)| !*up && *t == p.start + p.delay)
            .map(|(_, _, n)| *n)
            .collect();
        let rx: usize = first_client.iter().map(|(_, _, n)| n).sum();
        let tx: usize = server_first_flight.iter().sum();
        assert!(
            server_first_flight.len() >= 3,
            "server flight spans datagrams: {server_first_flight:?}"
        );
        assert!(
            tx <= 3 * rx,
            "server's first flight {tx} B for {rx} B received"
        );
        assert!(p.amplification_checks > 0);
        eprintln!(
            "{setup:?}: client first flight {} datagrams / {rx} B; server first flight {} datagrams / {tx} B (limit {}); handshake done at {:?}",
            first_client.len(),
            server_first_flight.len(),
            3 * rx,
            p.event_time(false, &Event::Connected)
        );
    }
}

/// The server's flight is capped by the anti-amplification limit when the client's
/// datagrams are small relative to the flight: it sends exactly up to 3× and resumes when
/// the client's ACKs arrive.
#[test]
fn amplification_limit_blocks_and_resumes() {
    let setup = Setup {
        alg: SigAlg::Falcon1024,
        trust: TrustMode::Certificate,
        client_auth: false,
        ..Setup::default()
    };
    let (mut server, client) = configs(setup);
    // A certificate with many names makes the server's flight (~8 KB) larger than 3x the
    // client's two 1200-byte Initial datagrams.
    let k = keys();
    let names: Vec<String> = (0..80)
        .map(|i| format!("host-{i:02}.region.stoq.example"))
        .collect();
    let mut refs: Vec<&str> = names.iter().map(String::as_str).collect();
    refs.push("stoq.example");
    server.credential = Credential::Certificate {
        key: SigningKey::from_bytes(&k.server1024.0).unwrap(),
        cert: issue(&k.server1024.1, &refs, UNIX_NOW + 3600, &k.ca),
        intermediates: Vec::new(),
    };
    let mut p = Pair::new(server, 1232, RetryPolicy::Never);
    p.connect(client);
    assert!(p.handshake());
    assert!(
        p.both_connected(),
        "{:?} / {:?}",
        p.lost(false),
        p.lost(true)
    );
    let s = p.server_conn().stats();
    assert!(s.amplification_blocked > 0, "the limit was hit: {s:?}");
    assert!(p.amplification_checks > 0);
    // Blocked, the server waited for the client's next datagram: one more round trip.
    assert_eq!(p.event_time(false, &Event::Connected), Some(4 * p.delay));
}

#[test]
fn retry_then_handshake() {
    let (server, client) = configs(Setup::default());
    let mut p = Pair::new(server, 1452, RetryPolicy::Always);
    p.connect(client);
    assert!(p.handshake());
    assert!(
        p.both_connected(),
        "{:?} / {:?}",
        p.lost(false),
        p.lost(true)
    );
    assert!(p.server.stats().retries_sent >= 1);
    assert!(p.server_conn().validated);
    // One extra round trip for the Retry.
    assert_eq!(p.event_time(false, &Event::Connected), Some(4 * p.delay));
    p.exchange_datagrams(b"after retry");
}

/// The Retry's round trip is the client's first RTT sample: when the Initial that follows
/// it is lost, the client sends it again after a probe timeout of a few round trips, not
/// after the 1 s that the assumed 333 ms RTT gives (and 2 s, 4 s after that).
#[test]
fn the_retry_round_trip_sets_the_first_probe_timeout() {
    let (server, client) = configs(Setup::default());
    let mut p = Pair::new(server, 1452, RetryPolicy::Always);
    let mut to_server = 0;
    p.tamper = Some(Box::new(move |w: &mut Wire| {
        if w.to_server {
            to_server += 1;
            // The first flight is two datagrams; the one after the Retry is lost.
            if (3..=4).contains(&to_server) {
                return Verdict::Drop;
            }
        }
        Verdict::Deliver
    }));
    p.connect(client);
    assert!(p.handshake() && p.both_connected());
    let st = p.client_conn().stats();
    assert_eq!(st.pto_count, 1, "{st:?}");
    // Retry round trip (20 ms), lost flight, a probe timeout of 3 × 20 ms, then the
    // handshake's two round trips.
    let connected = p.event_time(false, &Event::Connected).unwrap();
    assert!(connected < Duration::from_millis(200), "{connected:?}");
    assert!(connected >= 4 * p.delay + 3 * 2 * p.delay, "{connected:?}");
}

/// Both ends export the same keying material for a label and context, different for
/// another label, context or connection; nothing before the handshake completes.
#[test]
fn both_ends_export_the_same_keying_material() {
    let (server, client) = configs(Setup::default());
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    p.connect(client.clone());
    let mut early = [0u8; 32];
    assert_eq!(
        p.client_conn()
            .export_keying_material(&mut early, b"EXPORTER-test", b""),
        Err(ExportError::HandshakeIncomplete)
    );
    assert!(p.handshake() && p.both_connected());
    let export = |c: &Connection, label: &[u8], context: &[u8]| {
        let mut out = [0u8; 48];
        c.export_keying_material(&mut out, label, context).unwrap();
        out
    };
    let ours = export(p.client_conn(), b"EXPORTER-test", b"ctx");
    assert_eq!(ours, export(p.server_conn(), b"EXPORTER-test", b"ctx"));
    assert_ne!(ours, export(p.client_conn(), b"EXPORTER-other", b"ctx"));
    assert_ne!(ours, export(p.client_conn(), b"EXPORTER-test", b"ctx2"));
    assert_ne!(ours, [0u8; 48]);
    // Another connection between the same endpoints exports something else.
    let h = p.connect(client);
    assert!(p.drive_until(Duration::from_secs(1), |p| {
        p.client
            .connection(h)
            .is_some_and(Connection::is_established)
    }));
    let other = p.client.connection(h).unwrap();
    assert_ne!(ours, export(other, b"EXPORTER-test", b"ctx"));
}

#[test]
fn key_updates_both_ways_keep_data_flowing() {
    let mut p = connected_pair();
    // Let HANDSHAKE_DONE arrive and the client confirm.
    p.drive_until(Duration::from_secs(1), |p| p.client_conn().is_confirmed());
    assert_eq!(
        p.client_conn().initiate_key_update(),
        Ok(()),
        "confirmed client may update"
    );
    assert_eq!(
        p.client_conn().initiate_key_update(),
        Err(KeyUpdateError::InProgress)
    );
    p.exchange_datagrams(b"phase 1");
    assert!(p.client_conn().key_phase());
    assert!(
        p.server_conn().key_phase(),
        "the server answered the update"
    );
    for round in 0..6 {
        let (who_server, tag) = (round % 2 == 0, format!("phase {}", round + 2));
        // Ack-eliciting packets in the current phase both ways, so both sides see one of
        // theirs acknowledged.
        assert!(p.client_conn().is_established(), "{:?}", p.lost(false));
        assert!(p.server_conn().is_established(), "{:?}", p.lost(true));
        p.exchange_datagrams(b"current phase");
        // The previous phase's packets must be acknowledged before the next update.
        p.drive_until(Duration::from_secs(1), |p| {
            if who_server {
                p.server_conn().tx_phase_acked
            } else {
                p.client_conn().tx_phase_acked
            }
        });
        let r = if who_server {
            p.server_conn().initiate_key_update()
        } else {
            p.client_conn().initiate_key_update()
        };
        assert_eq!(r, Ok(()), "round {round}");
        p.exchange_datagrams(tag.as_bytes());
    }
    let c = p.client_conn().stats();
    let s = p.server_conn().stats();
    assert_eq!(c.key_updates, 7);
    assert_eq!(s.key_updates, 7);
    assert_eq!(c.dropped.decrypt_failed + s.dropped.decrypt_failed, 0);
}

/// A 1-RTT key at its confidentiality limit, with its update not yet acknowledged, seals
/// nothing: the connection sends nothing rather than taking stream data off its queues for
/// packets that never leave. Once the key can seal again every byte arrives (data written
/// into unsealed packets used to be recorded as sent by no packet, and never arrived).
#[test]
fn an_exhausted_key_takes_no_frames_for_packets_it_cannot_seal() {
    let mut p = connected_pair();
    p.drive_until(Duration::from_secs(1), |p| p.client_conn().is_confirmed());
    assert_eq!(p.client_conn().initiate_key_update(), Ok(()));
    fn key(p: &mut Pair) -> &mut PacketKey {
        &mut p.client_conn().spaces[2].tx.as_mut().unwrap().packet
    }
    let limit = key(&mut p).suite().confidentiality_limit();
    key(&mut p).set_sealed(limit);
    let body: Vec<u8> = (0..20_000u32).map(|i| (i * 11 + i / 97) as u8).collect();
    let c = p.client_conn();
    let id = c.open_stream(Dir::Uni).unwrap();
    assert_eq!(c.write(id, &body).unwrap(), body.len());
    c.finish(id).unwrap();
    let sent = p.client_conn().stats().tx_packets;
    let start = p.now;
    p.drive_until(Duration::from_millis(50), |_| false);
    assert_eq!(
        p.client_conn().stats().tx_packets,
        sent,
        "nothing is sent under an exhausted key"
    );
    assert!(p.now > start);
    // The key may seal again (in a real connection, its update acknowledged).
    key(&mut p).set_sealed(0);
    let mut got = Vec::new();
    let mut sid = None;
    assert!(p.drive_until(Duration::from_secs(5), |p| {
        let s = p.server_conn();
        if sid.is_none() {
            sid = s.accept_stream(Dir::Uni);
        }
        sid.is_some_and(|sid| read_into(s, sid, &mut got))
    }));
    assert!(got == body, "every byte arrives");
}

#[test]
fn key_update_before_confirmation_is_refused() {
    let (server, client) = configs(Setup::default());
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    p.connect(client);
    assert_eq!(
        p.client_conn().initiate_key_update(),
        Err(KeyUpdateError::NotConfirmed)
    );
}

#[test]
fn close_reaches_the_peer_and_both_drain() {
    let mut p = connected_pair();
    let now = p.now;
    p.client_conn().close(now, 42, b"done");
    p.drive_until(Duration::from_secs(10), |p| p.lost(true).is_some());
    assert_eq!(
        p.lost(true),
        Some(ConnectionError::ApplicationClosed {
            code: 42,
            reason: "done".into()
        })
    );
    assert_eq!(p.lost(false), Some(ConnectionError::LocallyClosed));
    p.drive_until(Duration::from_secs(30), |p| {
        p.client.connection_count() == 0 && p.server.connection_count() == 0
    });
    assert_eq!(p.client.connection_count(), 0, "client freed its state");
    assert_eq!(p.server.connection_count(), 0, "server freed its state");
}

#[test]
fn idle_timeout_ends_both_sides() {
    let mut p = connected_pair();
    p.exchange_datagrams(b"x");
    // From now on the path is dead.
    p.tamper = Some(Box::new(|_| Verdict::Drop));
    p.drive_until(Duration::from_secs(120), |p| {
        p.lost(false).is_some() && p.lost(true).is_some()
    });
    assert_eq!(p.lost(false), Some(ConnectionError::TimedOut));
    assert_eq!(p.lost(true), Some(ConnectionError::TimedOut));
}

/// Handshake data lost at random is retransmitted (PTO, then packet-threshold loss) until
/// the handshake completes.
#[test]
fn handshake_survives_heavy_loss() {
    for seed in 0..20u64 {
        let (server, client) = configs(Setup::default());
        let mut p = Pair::new(server, 1232, RetryPolicy::Never);
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        p.tamper = Some(Box::new(move |_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 100 < 30 {
                Verdict::Drop
            } else {
                Verdict::Deliver
            }
        }));
        p.connect(client);
        let done = p.drive_until(Duration::from_secs(60), |p| p.both_connected());
        assert!(
            done,
            "seed {seed}: {:?} / {:?}",
            p.lost(false),
            p.lost(true)
        );
        let c = p.client_conn().stats();
        assert!(c.pto_count > 0 || c.lost_packets > 0 || seed > 0);
    }
}

#[test]
fn stats_count_what_happened() {
    let mut p = connected_pair();
    p.exchange_datagrams(b"stats");
    let c = p.client_conn().stats();
    let s = p.server_conn().stats();
    assert!(c.tx_packets > 0 && c.rx_packets > 0);
    assert!(s.min_rtt >= 2 * p.delay, "{s:?}");
    assert!(c.min_rtt >= 2 * p.delay && c.min_rtt <= 2 * p.delay + MAX_ACK_DELAY);
    let sent: u64 = p
        .log
        .iter()
        .filter(|(_, up, _)| *up)
        .map(|(_, _, n)| *n as u64)
        .sum();
    assert_eq!(c.tx_bytes, sent, "{:?} {:?}", p.log, p.client.stats());
    assert!(
        s.rx_bytes <= sent && s.rx_bytes + 200 >= sent,
        "all but a last ACK arrived"
    );
}

/// Under `WhenHandshakingAbove(1)`, a client arriving while another handshake is in progress
/// must prove its address first; once no handshake is in progress, clients go straight in.
#[test]
fn retry_under_load_follows_the_handshaking_count() {
    let (server, c1) = configs(Setup::default());
    let mut p = Pair::new(server, 1452, RetryPolicy::WhenHandshakingAbove(1));
    let h1 = p.connect(c1);
    let (_, c2) = configs(Setup::default());
    let h2 = p
        .client
        .connect(p.now, server_addr(), Arc::new(c2))
        .unwrap();
    let up = |p: &mut Pair, h| {
        p.client
            .connection(h)
            .is_some_and(Connection::is_established)
    };
    let server_up = |p: &mut Pair, n: usize| {
        p.server_conns
            .iter()
            .filter(|h| {
                p.server
                    .connection(**h)
                    .is_some_and(Connection::is_established)
            })
            .count()
            == n
    };
    assert!(p.drive_until(Duration::from_secs(5), |p| {
        up(p, h1) && up(p, h2) && server_up(p, 2)
    }));
    let st = p.server.stats();
    assert!(
        st.retries_sent >= 1,
        "the second client was sent a Retry: {st:?}"
    );
    let validated = p
        .server_conns
        .iter()
        .filter(|h| p.server.connection(**h).is_some_and(|c| c.validated))
        .count();
    assert_eq!(p.server_conns.len(), 2);
    assert!(validated >= 1);
    assert_eq!(p.server.handshaking, 0, "both handshakes done");

    // Nobody is handshaking now: a third client is not retried.
    let (_, c3) = configs(Setup::default());
    let h3 = p
        .client
        .connect(p.now, server_addr(), Arc::new(c3))
        .unwrap();
    assert!(p.drive_until(Duration::from_secs(5), |p| up(p, h3) && server_up(p, 3)));
    assert_eq!(p.server.stats().retries_sent, st.retries_sent);

    // A handshake that fails is no longer counted once its Lost event is polled.
    let (_, mut c4) = configs(Setup::default());
    c4.trust = Trust::PinnedKey(keys().client512.1.clone());
    let h4 = p
        .client
        .connect(p.now, server_addr(), Arc::new(c4))
        .unwrap();
    p.drive_until(Duration::from_secs(30), |p| {
        p.client.connection(h4).is_none() && p.server.connection_count() == 3
    });
    assert_eq!(p.server.handshaking, 0);
}

/// A full DATAGRAM queue refuses with `Blocked` (counted), and tells the application when
/// it has room again.
#[test]
fn a_full_datagram_queue_blocks_then_reports_room() {
    let mut p = connected_pair();
    let c = p.client_conn();
    let mut queued = 0u32;
    let err = loop {
        match c.send_datagram(&[7; 100]) {
            Ok(()) => queued += 1,
            Err(e) => break e,
        }
        assert!(queued <= 100_000, "the queue is bounded");
    };
    assert_eq!(err, SendDatagramError::Blocked);
    assert_eq!(c.stats().datagrams_blocked, 1);
    assert!(p.event_time(false, &Event::DatagramsUnblocked).is_none());
    p.drive_until(Duration::from_secs(2), |p| {
        p.event_time(false, &Event::DatagramsUnblocked).is_some()
    });
    assert!(
        p.event_time(false, &Event::DatagramsUnblocked).is_some(),
        "room reported once the queue drained"
    );
    p.client_conn()
        .send_datagram(&[8; 100])
        .expect("room again");
}
