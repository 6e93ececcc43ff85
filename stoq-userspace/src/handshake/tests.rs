//! Two handshakes wired together in memory, message by message.

use rand_core::OsRng;

use super::cert::{CertParams, Certificate};
use super::*;

pub(super) const NOW: u64 = 1_800_000_000;

pub(super) fn new_client(cfg: ClientConfig, rng: &mut OsRng) -> Handshake {
    new_client_at(cfg, NOW, rng)
}

pub(super) fn new_client_at(cfg: ClientConfig, now: u64, rng: &mut OsRng) -> Handshake {
    let params = cfg.params.clone();
    Handshake::client(Arc::new(cfg), params, now, rng)
}

/// The ticket key (generation 0) the tests' servers seal tickets with.
pub(super) const TICKET_KEY: (u8, [u8; 32]) = (0, [0x5e; 32]);

pub(super) fn new_server(cfg: ServerConfig) -> Handshake {
    new_server_with(cfg, &[TICKET_KEY])
}

/// A server whose ticket keys are `(generation, key)` pairs, the first current.
pub(super) fn new_server_with(cfg: ServerConfig, keys: &[(u8, [u8; 32])]) -> Handshake {
    let params = cfg.params.clone();
    let tickets = Arc::new(ticket::test_keys(keys, cfg.tickets));
    Handshake::server(Arc::new(cfg), params, tickets)
}

struct Pki {
    ca_key: SigningKey,
    ca_pub: VerifyingKey,
}

impl Pki {
    fn new(alg: SigAlg) -> Self {
        let (ca_key, ca_pub) = SigningKey::generate(alg, &mut OsRng);
        Self { ca_key, ca_pub }
    }

    fn credential(&self, alg: SigAlg, names: &[&str], not_after: u64) -> Credential {
        let (key, public) = SigningKey::generate(alg, &mut OsRng);
        let p = CertParams {
            serial: 1,
            not_before: NOW - 100,
            not_after,
            names: names.iter().map(|s| s.to_string()).collect(),
            is_ca: false,
        };
        Credential::Certificate {
            key,
            cert: Certificate::issue(&p, &public, &self.ca_key, &self.ca_pub, &mut OsRng),
            intermediates: Vec::new(),
        }
    }
}

pub(super) fn raw(alg: SigAlg) -> (Credential, VerifyingKey) {
    let (key, public) = SigningKey::generate(alg, &mut OsRng);
    (
        Credential::RawKey {
            key,
            public: public.clone(),
        },
        public,
    )
}

pub(super) fn client_cfg(
    trust: Trust,
    suites: &[CipherSuite],
    credential: Option<Credential>,
) -> ClientConfig {
    ClientConfig {
        alpn: Vec::new(),
        server_name: "stoq.example".into(),
        trust,
        suites: suites.to_vec(),
        sig_algs: SigAlg::ALL.to_vec(),
        params: TransportParams::default(),
        credential,
        resumption: None,
        batch_signatures: true,
        early_data: false,
    }
}

pub(super) fn server_cfg(
    credential: Credential,
    suites: &[CipherSuite],
    client_auth: Option<Trust>,
) -> ServerConfig {
    ServerConfig {
        alpn: Vec::new(),
        credential,
        suites: suites.to_vec(),
        params: TransportParams::default(),
        client_auth,
        tickets: TicketSettings::default(),
        batch_signing: true,
        early_data: EarlyDataSettings::default(),
    }
}

#[derive(Debug)]
pub(super) enum Side {
    Client,
    Server,
}

/// Which (epoch, message index within that direction's epoch stream) to tamper with.
pub(super) type Tamper<'a> = &'a mut dyn FnMut(bool, Epoch, &mut Vec<u8>);

/// Runs both sides to completion, letting `tamper` edit each direction's bytes per epoch
/// of the handshake. The server's session tickets (1-RTT, after the handshake) are passed
/// on untouched: a connection's packet protection authenticates them.
pub(super) fn run(
    c: Handshake,
    s: Handshake,
    tamper: Tamper<'_>,
) -> Result<(Handshake, Handshake), (Side, HandshakeError)> {
    run_at(c, s, NOW, tamper)
}

/// [`run`] with both sides' clocks at `now` (Unix seconds).
pub(super) fn run_at(
    mut c: Handshake,
    mut s: Handshake,
    now: u64,
    tamper: Tamper<'_>,
) -> Result<(Handshake, Handshake), (Side, HandshakeError)> {
    for _ in 0..8 {
        let mut progressed = false;
        for epoch in [Epoch::Initial, Epoch::Handshake] {
            let mut out = c.take_outgoing(epoch);
            if !out.is_empty() {
                progressed = true;
                tamper(true, epoch, &mut out);
                s.read(epoch, &out, now, &mut OsRng)
                    .map_err(|e| (Side::Server, e))?;
                // The server signs alone, as a connection does without an endpoint.
                s.sign_alone(&mut OsRng);
            }
            let mut out = s.take_outgoing(epoch);
            if !out.is_empty() {
                progressed = true;
                tamper(false, epoch, &mut out);
                c.read(epoch, &out, now, &mut OsRng)
                    .map_err(|e| (Side::Client, e))?;
            }
        }
        let tickets = s.take_outgoing(Epoch::OneRtt);
        if !tickets.is_empty() {
            progressed = true;
            c.read(Epoch::OneRtt, &tickets, now, &mut OsRng)
                .map_err(|e| (Side::Client, e))?;
        }
        if !progressed {
            break;
        }
    }
    Ok((c, s))
}

pub(super) fn no_tamper(_: bool, _: Epoch, _: &mut Vec<u8>) {}

/// Both complete, and both derived the same secrets for each epoch.
pub(super) fn assert_agree(mut c: Handshake, mut s: Handshake) -> CipherSuite {
    assert!(
        c.is_complete() && s.is_complete(),
        "client {:?}, server {:?}",
        c.state,
        s.state
    );
    let (ck, sk) = (c.take_keys(), s.take_keys());
    assert_eq!(ck.len(), 2);
    assert_eq!(sk.len(), 2);
    for (a, b) in ck.iter().zip(&sk) {
        assert_eq!((a.epoch, a.suite), (b.epoch, b.suite));
        assert_eq!(a.client.as_bytes(), b.client.as_bytes());
        assert_eq!(a.server.as_bytes(), b.server.as_bytes());
        assert_ne!(a.client.as_bytes(), a.server.as_bytes());
    }
    assert_eq!(c.peer_params(), Some(&TransportParams::default()));
    assert_eq!(s.requested_server_name(), Some("stoq.example"));
    c.suite().expect("negotiated")
}

#[test]
fn matrix_of_suites_algorithms_trust_modes_and_client_auth() {
    for suite in CipherSuite::ALL {
        for alg in SigAlg::ALL {
            let pki = Pki::new(alg);
            // Pinned raw key, certificate chain, and each with client authentication.
            for (mode, client_auth) in [
                ("pinned", false),
                ("anchors", false),
                ("pinned", true),
                ("anchors", true),
            ] {
                let (server_cred, trust) = if mode == "pinned" {
                    let (cred, public) = raw(alg);
                    (cred, Trust::PinnedKey(public))
                } else {
                    (
                        pki.credential(alg, &["stoq.example"], NOW + 100),
                        Trust::Anchors(vec![pki.ca_pub.clone()]),
                    )
                };
                let (client_cred, client_trust) = if client_auth {
                    let (cred, public) = raw(SigAlg::Falcon512);
                    (Some(cred), Some(Trust::PinnedKey(public)))
                } else {
                    (None, None)
                };
                let c = new_client(client_cfg(trust, &[suite], client_cred), &mut OsRng);
                let s = new_server(server_cfg(server_cred, &CipherSuite::ALL, client_trust));
                let (c, s) = run(c, s, &mut no_tamper).unwrap_or_else(|e| {
                    panic!("{suite:?} {alg:?} {mode} auth={client_auth}: {e:?}")
                });
                assert!(!client_auth || s.peer_key().is_some());
                assert_eq!(assert_agree(c, s), suite);
            }
        }
    }
}

#[test]
fn client_preference_wins_among_common_suites() {
    let (cred, public) = raw(SigAlg::Falcon512);
    let c = new_client(
        client_cfg(
            Trust::PinnedKey(public),
            &[CipherSuite::ChaCha20Poly1305, CipherSuite::Aes256Gcm],
            None,
        ),
        &mut OsRng,
    );
    let s = new_server(server_cfg(cred, &CipherSuite::ALL, None));
    let (c, s) = run(c, s, &mut no_tamper).unwrap();
    assert_eq!(assert_agree(c, s), CipherSuite::ChaCha20Poly1305);
}

pub(super) fn expect_failure(
    c: Handshake,
    s: Handshake,
    tamper: Tamper<'_>,
) -> (Side, HandshakeError) {
    match run(c, s, tamper) {
        Ok((c, s)) => panic!(
            "handshake succeeded: client {:?}, server {:?}",
            c.state, s.state
        ),
        Err(e) => e,
    }
}

#[test]
fn each_trust_failure_has_its_own_error() {
    let pki = Pki::new(SigAlg::Falcon512);
    // Wrong pinned key.
    let (cred, _) = raw(SigAlg::Falcon512);
    let (_, other) = raw(SigAlg::Falcon512);
    let (side, e) = expect_failure(
        new_client(
            client_cfg(Trust::PinnedKey(other), &CipherSuite::ALL, None),
            &mut OsRng,
        ),
        new_server(server_cfg(cred, &CipherSuite::ALL, None)),
        &mut no_tamper,
    );
    assert!(matches!(
        (side, e),
        (Side::Client, HandshakeError::PinMismatch)
    ));
    // Expired certificate.
    let cred = pki.credential(SigAlg::Falcon512, &["stoq.example"], NOW - 1);
    let (_, e) = expect_failure(
        new_client(
            client_cfg(
                Trust::Anchors(vec![pki.ca_pub.clone()]),
                &CipherSuite::ALL,
                None,
            ),
            &mut OsRng,
        ),
        new_server(server_cfg(cred, &CipherSuite::ALL, None)),
        &mut no_tamper,
    );
    assert!(
        matches!(e, HandshakeError::Certificate(CertError::Expired { .. })),
        "{e:?}"
    );
    // Unknown issuer.
    let stranger = Pki::new(SigAlg::Falcon512);
    let cred = stranger.credential(SigAlg::Falcon512, &["stoq.example"], NOW + 100);
    let (_, e) = expect_failure(
        new_client(
            client_cfg(
                Trust::Anchors(vec![pki.ca_pub.clone()]),
                &CipherSuite::ALL,
                None,
            ),
            &mut OsRng,
        ),
        new_server(server_cfg(cred, &CipherSuite::ALL, None)),
        &mut no_tamper,
    );
    assert!(
        matches!(e, HandshakeError::Certificate(CertError::UnknownIssuer(_))),
        "{e:?}"
    );
    // Wrong name.
    let cred = pki.credential(SigAlg::Falcon512, &["other.example"], NOW + 100);
    let (_, e) = expect_failure(
        new_client(
            client_cfg(
                Trust::Anchors(vec![pki.ca_pub.clone()]),
                &CipherSuite::ALL,
                None,
            ),
            &mut OsRng,
        ),
        new_server(server_cfg(cred, &CipherSuite::ALL, None)),
        &mut no_tamper,
    );
    assert!(
        matches!(
            e,
            HandshakeError::Certificate(CertError::NameMismatch { .. })
        ),
        "{e:?}"
    );
    // Client authentication required but no client credential.
    let (cred, public) = raw(SigAlg::Falcon512);
    let (_, cpub) = raw(SigAlg::Falcon512);
    let (side, e) = expect_failure(
        new_client(
            client_cfg(Trust::PinnedKey(public), &CipherSuite::ALL, None),
            &mut OsRng,
        ),
        new_server(server_cfg(
            cred,
            &CipherSuite::ALL,
            Some(Trust::PinnedKey(cpub)),
        )),
        &mut no_tamper,
    );
    assert!(matches!(
        (side, e),
        (Side::Client, HandshakeError::ClientAuthRequired)
    ));
    // Client presents a key the server did not pin.
    let (cred, public) = raw(SigAlg::Falcon512);
    let (ccred, _) = raw(SigAlg::Falcon512);
    let (_, cpub) = raw(SigAlg::Falcon512);
    let (side, e) = expect_failure(
        new_client(
            client_cfg(Trust::PinnedKey(public), &CipherSuite::ALL, Some(ccred)),
            &mut OsRng,
        ),
        new_server(server_cfg(
            cred,
            &CipherSuite::ALL,
            Some(Trust::PinnedKey(cpub)),
        )),
        &mut no_tamper,
    );
    assert!(matches!(
        (side, e),
        (Side::Server, HandshakeError::PinMismatch)
    ));
    // No common suite.
    let (cred, public) = raw(SigAlg::Falcon512);
    let (side, e) = expect_failure(
        new_client(
            client_cfg(Trust::PinnedKey(public), &[CipherSuite::Aes256Gcm], None),
            &mut OsRng,
        ),
        new_server(server_cfg(cred, &[CipherSuite::ChaCha20Poly1305], None)),
        &mut no_tamper,
    );
    assert!(matches!(
        (side, e),
        (Side::Server, HandshakeError::NoCommonSuite)
    ));
}

/// Offsets of the suite list inside an encoded ClientHello: header (4), version (4),
/// random (32), then a u8 length.
const CH_SUITES: usize = 4 + 4 + 32;

#[test]
fn downgrade_and_unoffered_suites_are_detected() {
    // An attacker strips AES-256-GCM from the ClientHello: the server picks ChaCha20, and
    // the client, seeing that the server supports AES too, reports a downgrade.
    let (cred, public) = raw(SigAlg::Falcon512);
    let c = new_client(
        client_cfg(Trust::PinnedKey(public.clone()), &CipherSuite::ALL, None),
        &mut OsRng,
    );
    let s = new_server(server_cfg(cred, &CipherSuite::ALL, None));
    let mut strip = |to_server: bool, epoch: Epoch, b: &mut Vec<u8>| {
        if to_server && epoch == Epoch::Initial && b[0] == 1 {
            assert_eq!(b[CH_SUITES], 4, "two suites offered");
            b.drain(CH_SUITES + 1..CH_SUITES + 3);
            b[CH_SUITES] = 2;
            let len = (b.len() - 4) as u32;
            b[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
        }
    };
    let (side, e) = expect_failure(c, s, &mut strip);
    assert!(matches!(side, Side::Client));
    assert_eq!(
        e,
        HandshakeError::Downgrade {
            chosen: CipherSuite::ChaCha20Poly1305,
            expected: CipherSuite::Aes256Gcm
        }
    );

    // A ServerHello naming a suite the client never offered.
    let (cred, _) = raw(SigAlg::Falcon512);
    let c = new_client(
        client_cfg(
            Trust::PinnedKey(public),
            &[CipherSuite::ChaCha20Poly1305],
            None,
        ),
        &mut OsRng,
    );
    let s = new_server(server_cfg(cred, &CipherSuite::ALL, None));
    let mut swap = |to_server: bool, epoch: Epoch, b: &mut Vec<u8>| {
        if !to_server && epoch == Epoch::Initial {
            // ServerHello: header (4) + random (32), then the chosen suite.
            b[36..38].copy_from_slice(&CipherSuite::Aes256Gcm.id().to_be_bytes());
        }
    };
    let (_, e) = expect_failure(c, s, &mut swap);
    assert_eq!(e, HandshakeError::SuiteNotOffered(CipherSuite::Aes256Gcm));
}

#[test]
fn every_byte_flip_of_every_message_fails_the_handshake() {
    let (sk, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let sk_bytes = sk.as_bytes().to_vec();
    let cred = Credential::RawKey {
        key: sk,
        public: public.clone(),
    };
    // Record the honest streams to know their lengths.
    let mut lens: Vec<(bool, Epoch, usize)> = Vec::new();
    let mut record =
        |to_server: bool, epoch: Epoch, b: &mut Vec<u8>| lens.push((to_server, epoch, b.len()));
    let c = new_client(
        client_cfg(Trust::PinnedKey(public.clone()), &CipherSuite::ALL, None),
        &mut OsRng,
    );
    let s = new_server(server_cfg(cred, &CipherSuite::ALL, None));
    let (c, s) = run(c, s, &mut record).unwrap();
    assert_agree(c, s);

    let mut flips = 0;
    for (stream, &(dir, ep, len)) in lens.iter().enumerate() {
        for at in 0..len {
            // The same key pair each time: key generation would dominate the run.
            let key = Credential::RawKey {
                key: SigningKey::from_bytes(&sk_bytes).unwrap(),
                public: public.clone(),
            };
            let c = new_client(
                client_cfg(Trust::PinnedKey(public.clone()), &CipherSuite::ALL, None),
                &mut OsRng,
            );
            let s = new_server(server_cfg(key, &CipherSuite::ALL, None));
            let mut seen = 0usize;
            let mut flip = |to_server: bool, epoch: Epoch, b: &mut Vec<u8>| {
                if seen == stream && to_server == dir && epoch == ep && at < b.len() {
                    b[at] ^= 0x01;
                }
                seen += 1;
            };
            match run(c, s, &mut flip) {
                Err(_) => {}
                Ok((c, s)) => assert!(
                    !(c.is_complete() && s.is_complete()),
                    "flip at byte {at} of stream {stream} was accepted"
                ),
            }
            flips += 1;
        }
    }
    assert!(flips > 3000, "{flips} flips");
    eprintln!("{flips} single-byte flips, every one refused");
}

/// A root key and a credential whose chain holds `depth - 1` intermediate CAs below it
/// (FALCON-`alg` throughout), for `stoq.example`. `broken` replaces the intermediate at
/// that depth (1 is the leaf's issuer) with a certificate that is not a CA's.
fn chain_credential(
    alg: SigAlg,
    depth: usize,
    broken: Option<usize>,
) -> (Credential, VerifyingKey) {
    let (root_sk, root_pk) = SigningKey::generate(alg, &mut OsRng);
    let p = |is_ca| CertParams {
        serial: 1,
        not_before: NOW - 100,
        not_after: NOW + 100,
        names: vec!["stoq.example".into()],
        is_ca,
    };
    let (mut sk, mut pk) = (root_sk, root_pk.clone());
    let mut above = Vec::new();
    for d in (1..depth).rev() {
        let (nsk, npk) = SigningKey::generate(alg, &mut OsRng);
        above.push(Certificate::issue(
            &p(broken != Some(d)),
            &npk,
            &sk,
            &pk,
            &mut OsRng,
        ));
        (sk, pk) = (nsk, npk);
    }
    let (leaf_sk, leaf_pk) = SigningKey::generate(alg, &mut OsRng);
    let leaf = Certificate::issue(&p(false), &leaf_pk, &sk, &pk, &mut OsRng);
    above.reverse();
    let cred = Credential::Certificate {
        key: leaf_sk,
        cert: leaf,
        intermediates: above,
    };
    (cred, root_pk)
}

#[test]
fn certificate_chains_of_depth_one_to_three_authenticate_both_sides() {
    for alg in SigAlg::ALL {
        for depth in 1..=3 {
            let (server_cred, root) = chain_credential(alg, depth, None);
            let (client_cred, client_root) = chain_credential(SigAlg::Falcon512, depth, None);
            let c = new_client(
                client_cfg(
                    Trust::Anchors(vec![root]),
                    &CipherSuite::ALL,
                    Some(client_cred),
                ),
                &mut OsRng,
            );
            let s = new_server(server_cfg(
                server_cred,
                &CipherSuite::ALL,
                Some(Trust::Anchors(vec![client_root])),
            ));
            let (c, s) = run(c, s, &mut no_tamper)
                .unwrap_or_else(|e| panic!("{alg:?} depth {depth}: {e:?}"));
            assert!(s.peer_key().is_some());
            assert_agree(c, s);
        }
    }
}

#[test]
fn a_broken_chain_fails_the_handshake_naming_the_link() {
    // An intermediate that is not a CA, at each depth of a three-certificate chain.
    for broken in 1..=2 {
        let (cred, root) = chain_credential(SigAlg::Falcon512, 3, Some(broken));
        let c = new_client(
            client_cfg(Trust::Anchors(vec![root]), &CipherSuite::ALL, None),
            &mut OsRng,
        );
        let s = new_server(server_cfg(cred, &CipherSuite::ALL, None));
        match run(c, s, &mut no_tamper) {
            Err((
                Side::Client,
                HandshakeError::Certificate(CertError::Intermediate { depth, reason }),
            )) => {
                assert_eq!(depth, broken);
                assert!(matches!(*reason, CertError::Role(_)), "{reason}");
            }
            other => panic!("broken at {broken}: {:?}", other.map(|_| ())),
        }
    }
    // A chain whose top is not issued by the client's anchor.
    let (cred, _) = chain_credential(SigAlg::Falcon512, 3, None);
    let (_, other_root) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let c = new_client(
        client_cfg(Trust::Anchors(vec![other_root]), &CipherSuite::ALL, None),
        &mut OsRng,
    );
    let s = new_server(server_cfg(cred, &CipherSuite::ALL, None));
    assert!(matches!(
        run(c, s, &mut no_tamper),
        Err((
            Side::Client,
            HandshakeError::Certificate(CertError::Intermediate { depth: 2, .. })
        ))
    ));
    // The same chain with its leaf's key pinned: trusted by key alone.
    let (cred, _) = chain_credential(SigAlg::Falcon512, 2, None);
    let Credential::Certificate { cert, .. } = &cred else {
        unreachable!()
    };
    let c = new_client(
        client_cfg(Trust::PinnedKey(cert.key.clone()), &CipherSuite::ALL, None),
        &mut OsRng,
    );
    let s = new_server(server_cfg(cred, &CipherSuite::ALL, None));
    let (c, s) = run(c, s, &mut no_tamper).unwrap_or_else(|e| panic!("{e:?}"));
    assert_agree(c, s);
}

/// A client offering `offer` against a server speaking `speaks` (ALPN).
fn alpn_pair(offer: &[&[u8]], speaks: &[&[u8]]) -> (Handshake, Handshake) {
    let (cred, public) = raw(SigAlg::Falcon512);
    let mut c = client_cfg(Trust::PinnedKey(public), &CipherSuite::ALL, None);
    c.alpn = offer.iter().map(|p| p.to_vec()).collect();
    let mut s = server_cfg(cred, &CipherSuite::ALL, None);
    s.alpn = speaks.iter().map(|p| p.to_vec()).collect();
    (new_client(c, &mut OsRng), new_server(s))
}

#[test]
fn alpn_selects_the_servers_preference_among_the_offer() {
    let (c, s) = alpn_pair(&[b"stoq/1", b"h3"], &[b"h3", b"stoq/1"]);
    let (c, s) = run(c, s, &mut no_tamper).expect("handshake");
    assert_eq!(c.alpn(), Some(&b"h3"[..]));
    assert_eq!(s.alpn(), Some(&b"h3"[..]));
    assert_eq!(s.server_name(), Some("stoq.example"));
    assert_eq!(c.server_name(), Some("stoq.example"));
    // No offer: nothing selected, the handshake goes on (the application decides).
    let (c, s) = alpn_pair(&[], &[b"h3"]);
    let (c, s) = run(c, s, &mut no_tamper).expect("handshake");
    assert_eq!((c.alpn(), s.alpn()), (None, None));
    // A server without ALPN selects nothing, whatever is offered.
    let (c, s) = alpn_pair(&[b"h3"], &[]);
    let (c, s) = run(c, s, &mut no_tamper).expect("handshake");
    assert_eq!((c.alpn(), s.alpn()), (None, None));
}

#[test]
fn alpn_without_a_common_protocol_is_refused() {
    let (c, s) = alpn_pair(&[b"h2", b"spdy/3"], &[b"h3"]);
    let (side, e) = expect_failure(c, s, &mut no_tamper);
    assert!(matches!(side, Side::Server), "{side:?}");
    assert_eq!(
        e,
        HandshakeError::NoApplicationProtocol {
            offered: "h2, spdy/3".into()
        }
    );
    // Sent as no_application_protocol (TLS alert 120).
    assert_eq!(
        crate::conn::ConnectionError::Handshake(e).wire_code(),
        0x100 + 120
    );
}

#[test]
fn a_server_selecting_what_was_not_offered_is_refused() {
    let (c, s) = alpn_pair(&[b"stoq/1"], &[b"stoq/1"]);
    // The server's EncryptedExtensions rewritten to select another protocol (as a
    // tampering or broken server would); the client must refuse before anything else.
    let mut tamper = |from_client: bool, epoch: Epoch, bytes: &mut Vec<u8>| {
        if from_client || epoch != Epoch::Handshake {
            return;
        }
        let n = Message::frame_len(bytes).expect("frame").expect("whole");
        let Ok(Message::EncryptedExtensions(mut ee)) = Message::decode(&bytes[..n]) else {
            panic!("EncryptedExtensions first");
        };
        ee.alpn = Some(b"evil/1".to_vec());
        let mut out = Message::EncryptedExtensions(ee).encode();
        out.extend_from_slice(&bytes[n..]);
        *bytes = out;
    };
    let (side, e) = expect_failure(c, s, &mut tamper);
    assert!(matches!(side, Side::Client), "{side:?}");
    assert_eq!(e, HandshakeError::ProtocolNotOffered);
}

/// A completed handshake keeps no receive buffer: a ClientHello's 1.3 KB stayed with every
/// connection for its life (2.2 KiB per idle server connection in the harness's idle
/// table).
#[test]
fn a_completed_handshake_keeps_no_receive_buffer() {
    let (cred, public) = raw(SigAlg::Falcon512);
    let c = new_client(
        client_cfg(Trust::PinnedKey(public), &CipherSuite::ALL, None),
        &mut OsRng,
    );
    let s = new_server(server_cfg(cred, &CipherSuite::ALL, None));
    let (c, s) = run(c, s, &mut no_tamper).expect("completes");
    for (side, hs) in [("client", &c), ("server", &s)] {
        for (epoch, b) in hs.buffers.iter().enumerate() {
            assert_eq!(b.capacity(), 0, "{side}'s buffer of epoch {epoch}");
        }
    }
    assert_agree(c, s);
}
