//! Hostile input: tampered handshakes, refused credentials, replays, garbage, resets.

use super::*;
use crate::crypto::protect_packet;
use crate::frame::Frame;
use crate::handshake::cert::CertError;
use stoq_common::classify::{PacketKind, classify_payload};
use stoq_common::wire::stoq::Repr;

/// Runs a reference handshake and returns the sequence numbers and sizes of every datagram
/// sent until both sides were connected.
fn reference_handshake(setup: Setup) -> Vec<(usize, bool, usize)> {
    let (server, client) = configs(setup);
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let s2 = seen.clone();
    p.tamper = Some(Box::new(move |w: &mut Wire| {
        s2.borrow_mut().push((w.seq, w.to_server, w.data.len()));
        Verdict::Deliver
    }));
    p.connect(client);
    assert!(p.handshake() && p.both_connected());
    seen.take()
}

/// Flips one byte of one handshake datagram, every position of every datagram of the
/// handshake: the handshake either completes with both sides agreeing (the tampered packet
/// was dropped and retransmitted) or fails with a typed error; it never hangs, panics, or
/// completes with a tampered message accepted.
#[test]
fn every_byte_flip_of_every_handshake_datagram() {
    let setup = Setup::default();
    let reference = reference_handshake(setup);
    let cases: Vec<(usize, usize)> = reference
        .iter()
        .flat_map(|&(seq, _, len)| (0..len).map(move |pos| (seq, pos)))
        .collect();
    let total = cases.len();
    let outcomes = std::sync::Mutex::new((0usize, 0usize));
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    std::thread::scope(|s| {
        for t in 0..threads {
            let cases = &cases;
            let outcomes = &outcomes;
            s.spawn(move || {
                for &(seq, pos) in cases.iter().skip(t).step_by(threads) {
                    let (server, client) = configs(setup);
                    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
                    p.tamper = Some(Box::new(move |w: &mut Wire| {
                        if w.seq == seq {
                            w.data[pos] ^= 0xff;
                        }
                        Verdict::Deliver
                    }));
                    p.connect(client);
                    let settled = p.drive_until(Duration::from_secs(60), |p| {
                        p.both_connected() || p.lost(false).is_some()
                    });
                    assert!(settled, "datagram {seq} byte {pos}: the handshake hung");
                    if p.both_connected() {
                        assert_eq!(
                            p.client_conn().peer_key(),
                            Some(&keys().server512.1),
                            "datagram {seq} byte {pos}"
                        );
                        p.exchange_datagrams(b"after tampering");
                        outcomes.lock().unwrap().0 += 1;
                    } else {
                        outcomes.lock().unwrap().1 += 1;
                    }
                }
            });
        }
    });
    let (recovered, failed) = *outcomes.lock().unwrap();
    assert_eq!(recovered + failed, total);
    eprintln!(
        "{} handshake datagrams, {total} single-byte flips: {recovered} recovered by retransmission, {failed} failed cleanly",
        reference.len()
    );
}

fn expect_client_failure(
    server: ServerConfig,
    client: ClientConfig,
) -> (ConnectionError, Option<ConnectionError>) {
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    p.connect(client);
    p.handshake();
    let c = p.lost(false).expect("client failed");
    p.drive_until(Duration::from_secs(5), |p| p.lost(true).is_some());
    (c, p.lost(true))
}

#[test]
fn each_trust_failure_has_its_own_typed_error() {
    let k = keys();
    // Wrong pinned key.
    let (server, mut client) = configs(Setup::default());
    client.trust = Trust::PinnedKey(k.client512.1.clone());
    let (c, s) = expect_client_failure(server, client);
    assert_eq!(c, ConnectionError::Handshake(HandshakeError::PinMismatch));
    assert_eq!(
        s,
        Some(ConnectionError::PeerClosed {
            code: code::CRYPTO_ERROR + 42,
            reason: c.to_string()
        }),
        "the server learns why"
    );

    // Expired certificate.
    let cert_setup = Setup {
        trust: TrustMode::Certificate,
        ..Setup::default()
    };
    let (mut server, client) = configs(cert_setup);
    let expired = issue(&k.server512.1, &["stoq.example"], UNIX_NOW - 1, &k.ca);
    server.credential = Credential::Certificate {
        key: SigningKey::from_bytes(&k.server512.0).unwrap(),
        cert: expired,
        intermediates: Vec::new(),
    };
    let (c, s) = expect_client_failure(server, client);
    assert!(
        matches!(
            c,
            ConnectionError::Handshake(HandshakeError::Certificate(CertError::Expired { .. }))
        ),
        "{c:?}"
    );
    assert!(
        matches!(s, Some(ConnectionError::PeerClosed { code, .. }) if code == code::CRYPTO_ERROR + 45)
    );

    // Unknown issuer.
    let (server, mut client) = configs(cert_setup);
    client.trust = Trust::Anchors(vec![k.client512.1.clone()]);
    let (c, _) = expect_client_failure(server, client);
    assert!(
        matches!(
            c,
            ConnectionError::Handshake(HandshakeError::Certificate(CertError::UnknownIssuer(_)))
        ),
        "{c:?}"
    );

    // Wrong name.
    let (server, mut client) = configs(cert_setup);
    client.server_name = "other.example".into();
    let (c, _) = expect_client_failure(server, client);
    assert!(
        matches!(
            c,
            ConnectionError::Handshake(HandshakeError::Certificate(_))
        ),
        "{c:?}"
    );

    // Client authentication required but no credential.
    let (server, mut client) = configs(Setup {
        client_auth: true,
        ..Setup::default()
    });
    client.credential = None;
    let (c, _) = expect_client_failure(server, client);
    assert_eq!(
        c,
        ConnectionError::Handshake(HandshakeError::ClientAuthRequired)
    );

    // A client key the server does not trust.
    let (mut server, client) = configs(Setup {
        client_auth: true,
        ..Setup::default()
    });
    server.client_auth = Some(Trust::PinnedKey(k.server512.1.clone()));
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    p.connect(client);
    p.drive_until(Duration::from_secs(10), |p| p.lost(true).is_some());
    assert_eq!(
        p.lost(true),
        Some(ConnectionError::Handshake(HandshakeError::PinMismatch))
    );
}

/// Initial keys are public (derived from the client's DCID), so an on-path attacker can
/// rewrite the ServerHello. Forcing ChaCha20 when both sides prefer and support AES-GCM is
/// caught as a downgrade: the ServerHello lists the server's suites, the client checks
/// the choice against its own preference, and the transcript binds both.
#[test]
fn suite_downgrade_by_an_on_path_attacker_is_detected() {
    if !CipherSuite::Aes256Gcm.available() {
        eprintln!("skipped: AES-256-GCM is not available on this CPU");
        return;
    }
    // Only the chosen suite rewritten: the client sees the server's real list and names
    // the downgrade.
    let (c, mut p) = downgrade_attempt(false);
    assert!(
        matches!(
            c,
            Some(ConnectionError::Handshake(HandshakeError::Downgrade {
                chosen: CipherSuite::ChaCha20Poly1305,
                expected: CipherSuite::Aes256Gcm
            }))
        ),
        "{c:?}"
    );
    assert!(!p.both_connected());
    // The list rewritten too: the client cannot tell from the ServerHello, but its
    // transcript differs from the server's, so the handshake keys differ and nothing the
    // server sends authenticates. The handshake never completes.
    let (c, mut p) = downgrade_attempt(true);
    assert!(!p.both_connected(), "{c:?}");
    assert!(p.client_conn().stats().dropped.decrypt_failed > 0);
    assert!(!p.client_conn().is_established());
}

fn downgrade_attempt(rewrite_list: bool) -> (Option<ConnectionError>, Pair) {
    let (server, mut client) = configs(Setup::default());
    client.suites = vec![CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305];
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    let client_dcid = std::rc::Rc::new(std::cell::Cell::new(None::<ConnectionId>));
    let seen = client_dcid.clone();
    let classifier = ClassifierConfig::new(&stoq_common::cid::CidLayout::DEFAULT);
    p.tamper = Some(Box::new(move |w: &mut Wire| {
        let Ok(info) = classify_payload(&w.data, &classifier) else {
            return Verdict::Deliver;
        };
        if info.kind != PacketKind::Initial {
            return Verdict::Deliver;
        }
        if w.to_server {
            if seen.get().is_none() {
                seen.set(
                    ConnectionId::from_slice(&w.data[info.dcid_off..info.dcid_off + info.dcid_len])
                        .ok(),
                );
            }
            return Verdict::Deliver;
        }
        // Decrypt the server's Initial with the public Initial keys, swap the chosen suite
        // and the advertised list, and re-encrypt.
        let dcid = seen.get().unwrap();
        let (_, server_secret) = initial_secrets(dcid.as_bytes());
        let mut keys = DirectionalKeys::from_secret(INITIAL_SUITE, server_secret);
        let end = info.pn_off + info.length as usize;
        let pkt = &mut w.data[..end];
        let h = unprotect_header(pkt, info.pn_off, &keys.header).unwrap();
        let pn = pn::decode(None, h.truncated_pn, h.pn_len);
        let hl = info.pn_off + h.pn_len;
        let plain_len = keys.packet.open(pn, pkt, hl).unwrap().len();
        let body = &mut pkt[hl..hl + plain_len];
        // Find the CRYPTO frame at offset 0 and the ServerHello in it: type 2, u24
        // length, random(32), suite u16, server_suites (u8 length, u16 each).
        let base = body.as_ptr() as usize;
        let at = frame::Iter::new(body).find_map(|f| match f {
            Ok(Frame::Crypto { offset: 0, data }) => Some(data.as_ptr() as usize - base),
            _ => None,
        });
        if let Some(at) = at {
            let s = at + 4 + 32;
            assert_eq!(body[at], 2, "ServerHello");
            if body[s..s + 2] == [0x00, 0x01] {
                body[s..s + 2].copy_from_slice(&[0x00, 0x02]);
                if rewrite_list {
                    // Also claim the server supports only ChaCha20 (same length: the list
                    // names it twice).
                    let list = s + 3;
                    body[list..list + 2].copy_from_slice(&[0x00, 0x02]);
                    body[list + 2..list + 4].copy_from_slice(&[0x00, 0x02]);
                }
            }
        }
        // Re-seal with a fresh copy of the server's key (same packet number).
        let (_, server_secret) = initial_secrets(dcid.as_bytes());
        let mut k2 = DirectionalKeys::from_secret(INITIAL_SUITE, server_secret);
        pkt[0] = h.first;
        protect_packet(pkt, info.pn_off, pn, &mut k2.packet, &k2.header).unwrap();
        Verdict::Deliver
    }));
    p.connect(client);
    p.drive_until(Duration::from_secs(5), |p| p.lost(false).is_some());
    (p.lost(false), p)
}

/// With Retry on, replaying a recorded client Initial (the validated one, with its token)
/// creates no second connection, from the same address or another; replaying the first,
/// token-less Initial only earns another stateless Retry.
#[test]
fn replayed_initials_create_no_state_with_retry_on() {
    let (server, client) = configs(Setup::default());
    let mut p = Pair::new(server, 1452, RetryPolicy::Always);
    // Tokens outlive the connection in this test, to show they are single-use.
    let mut cfg = endpoint_config(2, 1452, p.start);
    cfg.retry = RetryPolicy::Always;
    cfg.token_lifetime = Duration::from_secs(600);
    let (server, _) = configs(Setup::default());
    p.server = Endpoint::new(cfg, Some(Arc::new(server))).unwrap();
    let recorded = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let rec = recorded.clone();
    let classifier = ClassifierConfig::new(&stoq_common::cid::CidLayout::DEFAULT);
    p.tamper = Some(Box::new(move |w: &mut Wire| {
        if w.to_server
            && classify_payload(&w.data, &classifier).is_ok_and(|i| i.kind == PacketKind::Initial)
        {
            rec.borrow_mut().push(w.data.clone());
        }
        Verdict::Deliver
    }));
    p.connect(client);
    assert!(p.handshake() && p.both_connected());
    p.exchange_datagrams(b"before replay");
    let initials = recorded.take();
    let cfg = ClassifierConfig::new(&stoq_common::cid::CidLayout::DEFAULT);
    let tokened = initials
        .iter()
        .find(|d| classify_payload(d, &cfg).is_ok_and(|i| i.token_len > 0))
        .expect("a tokened Initial")
        .clone();
    assert!(initials.len() >= 2, "a token-less and a tokened Initial");
    assert_eq!(p.server.connection_count(), 1);
    let retries = p.server.stats().retries_sent;
    let attacker: SocketAddr = "[fd00:5710::66]:6666".parse().unwrap();
    for d in &initials {
        p.inject(true, client_addr(), d.clone());
        p.inject(true, attacker, d.clone());
    }
    p.drive_until(Duration::from_secs(2), |_| false);
    assert_eq!(p.server.connection_count(), 1, "no second connection");
    assert_eq!(p.server_conns.len(), 1, "no Incoming surfaced");
    let st = p.server.stats();
    assert!(
        st.retries_sent > retries,
        "token-less replays get a stateless Retry"
    );
    assert!(
        p.server_conn().stats().dropped.other_path > 0,
        "the attacker's copy reached the existing connection and was dropped there"
    );
    // The tokened Initial from another address, once its CID no longer routes anywhere, is
    // refused because the token is bound to the client's address.
    let mut d = tokened.clone();
    d[6] ^= 0x01; // another DCID: not routed, so the token itself is checked
    let before = p.server.stats();
    p.inject(true, attacker, d);
    p.drive_until(Duration::from_millis(1), |_| false);
    let after = p.server.stats();
    assert_eq!(
        p.server.connection_count(),
        1,
        "{:?} {:?}",
        p.lost(true),
        p.lost(false)
    );
    assert_eq!(
        after.unauthenticated_initial + after.invalid_token,
        before.unauthenticated_initial + before.invalid_token + 1,
        "{before:?} -> {after:?}"
    );
    assert_eq!(
        after.unauthenticated_initial + after.invalid_token,
        before.unauthenticated_initial + before.invalid_token + 1
    );
    p.exchange_datagrams(b"after replay");

    // After the connection is gone, the tokened Initial is still refused: tokens are
    // single-use.
    let now = p.now;
    p.client_conn().close(now, 0, b"");
    p.drive_until(Duration::from_secs(30), |p| {
        p.server.connection_count() == 0
    });
    assert_eq!(p.server.connection_count(), 0);
    p.inject(true, client_addr(), tokened);
    p.drive_until(Duration::from_secs(1), |_| false);
    assert_eq!(p.server.connection_count(), 0, "{:?}", p.server.stats());
    assert!(p.server.stats().token_reused > 0, "{:?}", p.server.stats());
}

/// Random and mutated packets aimed at an established connection's CID are dropped and
/// counted; the connection carries on.
#[test]
fn garbage_on_an_established_connection_is_dropped_and_counted() {
    let mut p = connected_pair();
    p.exchange_datagrams(b"before");
    let cid = p.server_conn().local_cid();
    let mut x = 0x1234_5678_9abc_def0u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let n = 2000;
    for i in 0..n {
        let len = 40 + (rnd() % 1400) as usize;
        let mut d: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        if i % 2 == 0 {
            // A well-formed short header with the right CID and a random body.
            d[0] = 0x40 | (d[0] & 0x3f);
            d[1..1 + cid.len()].copy_from_slice(cid.as_bytes());
        }
        p.inject(true, client_addr(), d);
    }
    p.drive_until(Duration::from_millis(1), |_| false);
    let s = p.server_conn().stats();
    assert!(p.server_conn().is_established(), "still up");
    assert!(s.dropped.decrypt_failed >= n / 2 - 5, "{:?}", s.dropped);
    let ep = p.server.stats();
    let malformed: u64 = ep.malformed.iter().sum();
    assert_eq!(
        s.dropped.decrypt_failed
            + s.dropped.malformed
            + malformed
            + ep.unknown_cid
            + ep.resets_sent
            + ep.responses_dropped
            + ep.version_negotiations_sent
            + ep.unauthenticated_initial,
        n,
        "every garbage datagram is accounted for: conn {:?}, endpoint {ep:?}",
        s.dropped
    );
    p.exchange_datagrams(b"after");
}

/// A flood of random Initial-sized datagrams at a server creates no connection state.
#[test]
fn garbage_initials_create_no_state() {
    let (server, _) = configs(Setup::default());
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    let mut x = 0xdead_beef_u64;
    for _ in 0..500 {
        let mut d = vec![0u8; 1200];
        for b in d.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        // A plausible Initial header: long form, version 1, 8-byte CIDs, then garbage.
        d[0] = 0xc3;
        d[1..5].copy_from_slice(&stoq_common::wire::stoq::VERSION_1.to_be_bytes());
        d[5] = 8;
        d[14] = 8;
        d[23] = 0; // token length
        d[24] = 0x44;
        d[25] = 0x00; // Length 1024
        p.inject(true, client_addr(), d);
    }
    p.drive_until(Duration::from_millis(1), |_| false);
    assert_eq!(p.server.connection_count(), 0);
    assert!(
        p.server_conns.is_empty(),
        "no Incoming for packets that do not authenticate"
    );
    assert_eq!(p.server.stats().unauthenticated_initial, 500);
}

#[test]
fn unknown_versions_get_version_negotiation_and_the_client_gives_up() {
    let (server, client) = configs(Setup::default());
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    // A client of another version: the server answers with Version Negotiation.
    let mut d = vec![0u8; 1200];
    d[0] = 0xc0;
    d[1..5].copy_from_slice(&0x0a0a_0a0au32.to_be_bytes());
    d[5] = 8;
    d[6..14].copy_from_slice(&[1; 8]);
    d[14] = 8;
    d[15..23].copy_from_slice(&[2; 8]);
    let mut buf = Vec::new();
    assert!(
        p.server
            .handle_datagram(p.now, client_addr(), DatagramInfo::default(), &mut d)
            .is_none()
    );
    let t = p
        .server
        .poll_transmit(p.now, &mut buf)
        .expect("a VN packet");
    let vn = Repr::parse(
        &buf[..t.size],
        &ClassifierConfig::new(&stoq_common::cid::CidLayout::DEFAULT),
    );
    match vn {
        Ok(Repr::VersionNegotiation {
            dcid,
            scid,
            versions,
        }) => {
            assert_eq!(dcid.as_bytes(), &[2; 8]);
            assert_eq!(scid.as_bytes(), &[1; 8]);
            assert_eq!(versions, stoq_common::wire::stoq::VERSION_1.to_be_bytes());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.server.stats().version_negotiations_sent, 1);

    // Our client, answered by a server that speaks only other versions.
    let h = p.connect(client);
    let mut out = Vec::new();
    let t = p.client.poll_transmit(p.now, &mut out).unwrap();
    let cfg = ClassifierConfig::new(&stoq_common::cid::CidLayout::DEFAULT);
    let Ok(Repr::Initial { dcid, scid, .. }) = Repr::parse(&out[..t.size], &cfg) else {
        panic!()
    };
    let versions = 0x0b0b_0b0bu32.to_be_bytes();
    let mut vn = vec![0u8; 64];
    let n = Repr::VersionNegotiation {
        dcid: scid,
        scid: dcid,
        versions: &versions,
    }
    .emit(&mut vn)
    .unwrap();
    // A VN that lists our own version is ignored (RFC 9000 §6.2).
    let mut ours = vn[..n].to_vec();
    ours[n - 4..].copy_from_slice(&stoq_common::wire::stoq::VERSION_1.to_be_bytes());
    p.client
        .handle_datagram(p.now, server_addr(), DatagramInfo::default(), &mut ours);
    assert!(!p.client.connection(h).unwrap().is_closed());
    p.client
        .handle_datagram(p.now, server_addr(), DatagramInfo::default(), &mut vn[..n]);
    assert_eq!(
        p.client.connection(h).unwrap().error(),
        Some(&ConnectionError::VersionMismatch)
    );
}

/// A server that lost its state (restarted with the same reset key) answers the client's
/// next packet with a stateless reset, and the client ends the connection with a typed
/// error at once instead of waiting for the idle timeout.
#[test]
fn stateless_reset_after_server_restart() {
    let mut p = connected_pair();
    p.exchange_datagrams(b"before restart");
    restart_server_and_expect_reset(&mut p);
}

/// Replaces the server with a fresh one (same reset key, no connections), has the client
/// send, and checks the reset came back and ended the client's connection.
fn restart_server_and_expect_reset(p: &mut Pair) {
    let (server2, _) = configs(Setup::default());
    let mut cfg = endpoint_config(2, 1452, p.start);
    cfg.retry = RetryPolicy::Never;
    p.server = Endpoint::new(cfg, Some(Arc::new(server2))).unwrap();
    p.server_conns.clear();
    p.client_conn().send_datagram(b"anyone there?").unwrap();
    p.drive_until(Duration::from_secs(2), |p| p.lost(false).is_some());
    assert_eq!(p.lost(false), Some(ConnectionError::Reset));
    assert!(p.server.stats().resets_sent >= 1);
    assert_eq!(p.client.stats().resets_received, 1);
}

/// As above, after the client moved to a CID from NEW_CONNECTION_ID: the reset carries
/// that CID's token, which the client must recognise too (RFC 9000 §10.3).
#[test]
fn stateless_reset_after_a_cid_rotation() {
    let mut p = connected_pair();
    p.exchange_datagrams(b"before rotation");
    assert!(
        p.client_conn().rotate_connection_id(),
        "the server issued spare CIDs"
    );
    p.exchange_datagrams(b"after rotation");
    restart_server_and_expect_reset(&mut p);
}

/// Misuse gets typed errors that say what to fix.
#[test]
fn misuse_is_typed() {
    let start = Instant::now();
    let mut cfg = endpoint_config(1, 1000, start);
    assert_eq!(
        Endpoint::new(cfg.clone(), None).unwrap_err(),
        ConfigError::MaxUdpPayload(1000)
    );
    assert!(
        ConfigError::MaxUdpPayload(1000)
            .to_string()
            .contains("1200")
    );
    cfg.max_udp_payload = 1452;
    cfg.server_id = 1 << 20;
    assert!(matches!(
        Endpoint::new(cfg.clone(), None),
        Err(ConfigError::Cid(_))
    ));
    cfg.server_id = 0;
    let mut client_ep = Endpoint::new(cfg, None).unwrap();
    let (_, mut client) = configs(Setup::default());
    client.suites.clear();
    assert_eq!(
        client_ep
            .connect(start, server_addr(), Arc::new(client))
            .unwrap_err(),
        ConnectError::NoSuites
    );
    let (_, mut client) = configs(Setup::default());
    client.sig_algs.clear();
    assert_eq!(
        client_ep
            .connect(start, server_addr(), Arc::new(client))
            .unwrap_err(),
        ConnectError::NoSignatureAlgorithms
    );
    let (_, client) = configs(Setup::default());
    let h = client_ep
        .connect(start, server_addr(), Arc::new(client))
        .unwrap();
    let c = client_ep.connection_mut(h).unwrap();
    assert_eq!(c.send_datagram(b"x"), Err(SendDatagramError::NotConnected));

    let mut p = connected_pair();
    // A path starts at 1200 bytes and probes upward (DPLPMTUD) once confirmed.
    let first = p.client_conn().max_datagram_size().unwrap();
    assert!(first > 1100 && first < 1200, "{first}");
    p.drive_until(Duration::from_secs(1), |p| {
        p.client_conn().max_datagram_size().unwrap() > first
    });
    let sizes: Vec<usize> = p
        .events
        .iter()
        .filter_map(|(_, server, _, e)| match e {
            Event::DatagramSizeChanged(d) if !server => Some(*d),
            _ => None,
        })
        .collect();
    let max = p.client_conn().max_datagram_size().unwrap();
    assert!(max > 1300 && max < 1452, "{max}");
    assert_eq!(sizes.last(), Some(&max), "the growth was reported");
    assert_eq!(
        p.client_conn().send_datagram(&vec![0; max + 1]),
        Err(SendDatagramError::TooLarge { size: max + 1, max })
    );
    assert!(p.client_conn().send_datagram(&vec![7; max]).is_ok());
    let mut got = None;
    p.drive_until(Duration::from_secs(1), |p| {
        got = p.server_conn().recv_datagram();
        got.is_some()
    });
    assert_eq!(
        got.unwrap().len(),
        max,
        "a maximum-size datagram fits one packet"
    );
}

/// A coalesced packet whose DCID differs from the first packet's is dropped and counted
/// (RFC 9000 §12.2); the first packet is still used, and the handshake completes once the
/// dropped packet is retransmitted.
#[test]
fn coalesced_packet_with_another_dcid_is_dropped() {
    use stoq_common::classify::classify_payload;
    use stoq_common::maps::ClassifierConfig;
    let (server, client) = configs(Setup::default());
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    let classifier = ClassifierConfig::new(&stoq_common::cid::CidLayout::DEFAULT);
    let tampered = std::rc::Rc::new(std::cell::Cell::new(false));
    let t2 = tampered.clone();
    p.tamper = Some(Box::new(move |w: &mut Wire| {
        // The server's first coalesced datagram: an Initial with a Handshake packet after
        // it (the ServerHello fills the first 1200-byte datagram alone).
        if !w.to_server && !t2.get() {
            let first = classify_payload(&w.data, &classifier).expect("server Initial");
            let second = first.pn_off + first.length as usize;
            if second >= w.data.len() {
                return Verdict::Deliver;
            }
            let info = classify_payload(&w.data[second..], &classifier).expect("second");
            w.data[second + info.dcid_off] ^= 0x01;
            t2.set(true);
        }
        Verdict::Deliver
    }));
    p.connect(client);
    assert!(p.handshake() && p.both_connected());
    assert!(tampered.get());
    let d = p.client_conn().stats().dropped;
    assert_eq!(d.mismatched_cid, 1, "{d:?}");
}

/// RFC 9000 §12.3: a packet is processed at most once. Every other client packet is lost,
/// so the server's bounded record of received packet numbers forgets its oldest ranges; a
/// late packet then merges two ranges, and every packet the server had received is
/// replayed. None is processed twice: each DATAGRAM arrives once and every replay is
/// counted as a duplicate (or, too old to decode, fails to decrypt).
#[test]
fn replayed_packets_are_never_processed_twice() {
    let mut p = connected_pair();
    p.exchange_datagrams(b"before");
    while p.server_conn().recv_datagram().is_some() {}
    // (delivered, datagram) for every client datagram from here on.
    let wire = std::rc::Rc::new(std::cell::RefCell::new(Vec::<(bool, Vec<u8>)>::new()));
    let w2 = wire.clone();
    let mut k = 0usize;
    p.tamper = Some(Box::new(move |w: &mut Wire| {
        if !w.to_server {
            return Verdict::Deliver;
        }
        k += 1;
        let pass = k.is_multiple_of(2);
        w2.borrow_mut().push((pass, w.data.clone()));
        if pass {
            Verdict::Deliver
        } else {
            Verdict::Drop
        }
    }));
    let mut got: Vec<Vec<u8>> = Vec::new();
    // 80 datagrams, one per packet, every other one lost: more gaps than the 32 ranges
    // the server keeps.
    for i in 0..80u32 {
        let d = format!("replay-test {i:03}").into_bytes();
        p.client_conn().send_datagram(&d).expect("send");
        p.drive_until(Duration::from_millis(2), |_| false);
        while let Some(d) = p.server_conn().recv_datagram() {
            got.push(d);
        }
    }
    // Let what is in flight land (the harness's queue delivers in order).
    p.drive_until(Duration::from_millis(50), |_| false);
    while let Some(d) = p.server_conn().recv_datagram() {
        got.push(d);
    }
    p.tamper = None;
    let before = p.server_conn().stats().dropped;
    let held = p.server_conn().spaces[2].received.len();
    assert_eq!(held, space::RX_RANGES, "the server forgot ranges");
    assert!(p.server_conn().spaces[2].received.floor() > 0);
    let log = wire.take();
    // A late packet (a lost one between two received ones, well inside what the server
    // still holds) merges two ranges; right behind it, every packet the server received
    // is replayed.
    let late = (0..log.len() - 16)
        .rev()
        .find(|i| !log[*i].0 && log[*i - 1].0 && log[*i + 1].0)
        .expect("a lost packet");
    p.inject(true, client_addr(), log[late].1.clone());
    let replays: Vec<Vec<u8>> = log
        .iter()
        .filter(|(pass, _)| *pass)
        .map(|(_, d)| d.clone())
        .collect();
    for d in &replays {
        p.inject(true, client_addr(), d.clone());
    }
    p.drive_until(Duration::from_millis(50), |_| false);
    while let Some(d) = p.server_conn().recv_datagram() {
        got.push(d);
    }
    let after = p.server_conn().stats().dropped;
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), got.len(), "a DATAGRAM was delivered twice");
    assert!(got.len() >= 20, "half the datagrams arrived: {}", got.len());
    let duplicates = after.duplicate - before.duplicate;
    let undecodable = after.decrypt_failed - before.decrypt_failed;
    assert_eq!(
        duplicates + undecodable,
        replays.len() as u64,
        "every replay dropped and counted: {duplicates} duplicates, {undecodable} undecodable"
    );
    assert!(
        duplicates > replays.len() as u64 / 2,
        "{duplicates} of {}",
        replays.len()
    );
    assert!(p.server_conn().is_established());
    p.exchange_datagrams(b"after");
}

/// A zero-length datagram carries no packet: it is dropped and counted as malformed, like
/// every other datagram dropped.
#[test]
fn zero_length_datagrams_are_counted() {
    let mut p = connected_pair();
    let before: u64 = p.server.stats().malformed.iter().sum();
    p.inject(true, client_addr(), Vec::new());
    p.drive_until(Duration::from_millis(50), |_| false);
    let after: u64 = p.server.stats().malformed.iter().sum();
    assert_eq!(after, before + 1);
    assert!(p.server_conn().is_established());
}

/// A client that vanishes after its first Initial (a spoofed source, or one that gave up)
/// holds the server's connection for the handshake timeout (10 s by default), not the
/// idle timeout (30 s): a flood of half-open handshakes frees its slots three times
/// sooner. (The client is not bound by it: its own connect ends at the idle timeout.)
#[test]
fn a_half_open_handshake_ends_at_the_handshake_timeout() {
    let (server, client) = configs(Setup::default());
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    let mut first = true;
    p.tamper = Some(Box::new(move |w: &mut Wire| {
        if w.to_server && !std::mem::take(&mut first) {
            return Verdict::Drop;
        }
        Verdict::Deliver
    }));
    let start = p.now;
    p.connect(client);
    p.drive_until(Duration::from_secs(60), |p| p.lost(true).is_some());
    let lost: Vec<(bool, Duration, ConnectionError)> = p
        .events
        .iter()
        .filter_map(|(t, server, _, e)| match e {
            Event::Lost(err) => Some((*server, *t - start, err.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        lost.len(),
        1,
        "the server gave up, the client not yet: {lost:?}"
    );
    let (server, after, err) = &lost[0];
    assert!(*server);
    assert_eq!(*err, ConnectionError::HandshakeTimedOut);
    assert!(
        (Duration::from_secs(10)..Duration::from_secs(11)).contains(after),
        "after {after:?}"
    );
    assert_eq!(p.server.connection_count(), 0, "the server's slot is free");
    // A zero timeout is refused with the fix.
    let mut cfg = endpoint_config(9, 1452, p.now);
    cfg.transport = Arc::new(TransportConfig {
        handshake_timeout: Duration::ZERO,
        ..TransportConfig::default()
    });
    assert!(matches!(
        Endpoint::new(cfg, None),
        Err(ConfigError::Transport(m)) if m.contains("handshake_timeout")
    ));
}
