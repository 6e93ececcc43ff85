//! Resumption: session tickets, the PSK binder, and every way a ticket is refused.

use rand_core::OsRng;

use super::messages::NewSessionTicket;
use super::tests::{
    NOW, Side, TICKET_KEY, assert_agree, client_cfg, expect_failure, new_client, new_client_at,
    new_server, new_server_with, no_tamper, raw, run, run_at, server_cfg,
};
use super::*;

/// A server credential, its pinned trust, and a client configuration with a cache (the
/// early-data tests use it too).
pub(super) struct Setup {
    key: Vec<u8>,
    pub(super) public: VerifyingKey,
    pub(super) cache: Arc<SessionCache>,
}

impl Setup {
    pub(super) fn new() -> Self {
        let (cred, public) = raw(SigAlg::Falcon512);
        let Credential::RawKey { key, .. } = cred else {
            unreachable!("raw key")
        };
        Self {
            key: key.as_bytes().to_vec(),
            public,
            cache: Arc::new(SessionCache::new(16)),
        }
    }

    pub(super) fn trust(&self) -> Trust {
        Trust::PinnedKey(self.public.clone())
    }

    pub(super) fn client_cfg(&self) -> ClientConfig {
        ClientConfig {
            resumption: Some(self.cache.clone()),
            ..client_cfg(self.trust(), &CipherSuite::ALL, None)
        }
    }

    fn client(&self) -> Handshake {
        new_client(self.client_cfg(), &mut OsRng)
    }

    pub(super) fn server_cfg(&self) -> ServerConfig {
        let cred = Credential::RawKey {
            key: SigningKey::from_bytes(&self.key).expect("the same key"),
            public: self.public.clone(),
        };
        server_cfg(cred, &CipherSuite::ALL, None)
    }

    fn server(&self) -> Handshake {
        new_server(self.server_cfg())
    }

    fn tickets(&self) -> usize {
        self.cache.tickets_for("stoq.example", &self.trust())
    }

    /// A full handshake that fills the cache.
    fn prime(&self) {
        let (c, s) = run(self.client(), self.server(), &mut no_tamper).expect("full handshake");
        assert_eq!(c.resumption(), Resumption::NotOffered);
        assert_agree(c, s);
        assert_eq!(self.tickets(), 2, "two tickets per connection by default");
    }
}

/// Bytes the server sent in the Handshake epoch.
fn handshake_flight(c: Handshake, s: Handshake) -> (Handshake, Handshake, usize) {
    let mut len = 0;
    let mut count = |to_server: bool, epoch: Epoch, b: &mut Vec<u8>| {
        if !to_server && epoch == Epoch::Handshake {
            len += b.len();
        }
    };
    let (c, s) = run(c, s, &mut count).expect("handshake");
    (c, s, len)
}

#[test]
fn a_ticket_resumes_without_certificate_or_signature_and_with_fresh_keys() {
    let st = Setup::new();
    let (c, s, full_len) = handshake_flight(st.client(), st.server());
    assert_eq!(
        (c.resumption(), s.resumption()),
        (Resumption::NotOffered, Resumption::NotOffered)
    );
    assert_agree(c, s);
    assert_eq!(st.tickets(), 2);

    let (c, s, resumed_len) = handshake_flight(st.client(), st.server());
    assert_eq!(
        (c.resumption(), s.resumption()),
        (Resumption::Accepted, Resumption::Accepted)
    );
    // Nothing signed: the ticket's PSK authenticates the server.
    assert_eq!(s.signature_batch_size(), 0);
    // The server's identity comes from the ticket's full handshake.
    assert_eq!(c.peer_key(), Some(&st.public));
    // No Certificate and no CertificateVerify: EncryptedExtensions and Finished only.
    assert!(
        resumed_len < 200 && full_len > 1_500,
        "server flight {resumed_len} bytes resumed, {full_len} full"
    );
    // One ticket used, two new ones issued by the resumed connection.
    assert_eq!(st.tickets(), 3);
    let (mut c, mut s) = (c, s);
    let (ck, sk) = (c.take_keys(), s.take_keys());
    assert_eq!(ck[1].client.as_bytes(), sk[1].client.as_bytes());

    // Two resumptions from the same PSK (a ticket copied, as a replaying attacker would)
    // still get different keys: the hybrid exchange runs afresh each time.
    let t = st
        .cache
        .take("stoq.example", &st.trust(), NOW)
        .expect("a ticket");
    let mut secrets = Vec::new();
    for _ in 0..2 {
        st.cache.put("stoq.example", &st.trust(), t.clone());
        let (mut c, s) = run(st.client(), st.server(), &mut no_tamper).expect("resumed");
        assert_eq!(s.resumption(), Resumption::Accepted);
        secrets.push(c.take_keys()[1].client.as_bytes().to_vec());
    }
    assert_ne!(secrets[0], secrets[1]);
}

#[test]
fn a_ticket_is_offered_once() {
    let st = Setup::new();
    st.prime();
    let clients: Vec<_> = (0..3).map(|_| st.client()).collect();
    // Two tickets, three connections opened at once: the third offers none.
    assert_eq!(st.tickets(), 0);
    let mut outcomes = Vec::new();
    for c in clients {
        let (c, s) = run(c, st.server(), &mut no_tamper).expect("handshake");
        outcomes.push(s.resumption());
        assert_agree(c, s);
    }
    assert_eq!(
        outcomes,
        [
            Resumption::Accepted,
            Resumption::Accepted,
            Resumption::NotOffered
        ]
    );
}

/// Resumes with `server` after priming, expecting a refusal for `reason` at the server
/// and a completed full handshake.
fn refused_by(st: &Setup, server: Handshake, now: u64, reason: TicketRefusal) {
    let c = new_client_at(st.client_cfg(), now, &mut OsRng);
    let (c, s) = run_at(c, server, now, &mut no_tamper)
        .unwrap_or_else(|e| panic!("{reason:?}: the full handshake fails: {e:?}"));
    assert_eq!(s.resumption(), Resumption::Refused(reason));
    assert_eq!(c.resumption(), Resumption::Refused(TicketRefusal::Declined));
    assert!(c.is_complete() && s.is_complete());
    assert_eq!(c.peer_key(), Some(&st.public));
}

#[test]
fn an_expired_forged_or_other_cluster_ticket_falls_back_to_a_full_handshake() {
    let st = Setup::new();
    // Expired: the server's clock past the ticket's day (the client's is not).
    st.prime();
    let c = new_client(st.client_cfg(), &mut OsRng);
    let (c, s) = run_at(c, st.server(), NOW + 86_400, &mut no_tamper).expect("full");
    assert_eq!(s.resumption(), Resumption::Refused(TicketRefusal::Expired));
    assert_eq!(c.resumption(), Resumption::Refused(TicketRefusal::Declined));

    // Another cluster's key under the same generation: does not authenticate.
    st.cache.clear();
    st.prime();
    refused_by(
        &st,
        new_server_with(st.server_cfg(), &[(0, [0x77; 32])]),
        NOW,
        TicketRefusal::Invalid,
    );
    // A cluster that rotated the ticket's generation away.
    refused_by(
        &st,
        new_server_with(st.server_cfg(), &[(3, [0x5e; 32])]),
        NOW,
        TicketRefusal::UnknownKey,
    );
    // A rotation that keeps generation 0 still resumes it.
    st.cache.clear();
    st.prime();
    let (_, s) = run(
        st.client(),
        new_server_with(st.server_cfg(), &[(3, [0x33; 32]), TICKET_KEY]),
        &mut no_tamper,
    )
    .expect("resumed");
    assert_eq!(s.resumption(), Resumption::Accepted);

    // Forged: random bytes with a known generation byte, and a PSK the client made up.
    st.cache.clear();
    let mut forged = vec![0u8; 90];
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut forged);
    forged[0] = 0;
    st.cache.put(
        "stoq.example",
        &st.trust(),
        StoredTicket {
            ticket: forged,
            psk: Secret::new([1; 32]),
            expires: NOW + 60,
            server_key: st.public.clone(),
            received: NOW,
            age_add: 0,
            early: None,
        },
    );
    refused_by(&st, st.server(), NOW, TicketRefusal::Invalid);

    // A ticket for another server name, offered under this one.
    st.cache.clear();
    let mut cfg = st.client_cfg();
    cfg.server_name = "other.example".into();
    let (c, s) = run(new_client(cfg, &mut OsRng), st.server(), &mut no_tamper).unwrap();
    assert!(c.is_complete() && s.is_complete());
    let t = st
        .cache
        .take("other.example", &st.trust(), NOW)
        .expect("a ticket for other.example");
    st.cache.put("stoq.example", &st.trust(), t);
    refused_by(&st, st.server(), NOW, TicketRefusal::ServerName);
}

#[test]
fn servers_that_do_not_resume_say_why_and_issue_no_tickets() {
    let st = Setup::new();
    st.prime();
    let mut off = st.server_cfg();
    off.tickets = TicketSettings::disabled();
    refused_by(&st, new_server(off), NOW, TicketRefusal::Disabled);
    // That full handshake got no new ticket from the server that does not resume.
    assert_eq!(st.tickets(), 1);

    // A server that authenticates clients: a resumed handshake would skip that.
    let (client_cred, client_pub) = raw(SigAlg::Falcon512);
    let mut auth = st.server_cfg();
    auth.client_auth = Some(Trust::PinnedKey(client_pub));
    let cfg = ClientConfig {
        credential: Some(client_cred),
        ..st.client_cfg()
    };
    let (c, s) = run(
        new_client(cfg, &mut OsRng),
        new_server(auth),
        &mut no_tamper,
    )
    .expect("full handshake with client authentication");
    assert_eq!(
        s.resumption(),
        Resumption::Refused(TicketRefusal::ClientAuth)
    );
    assert!(s.peer_key().is_some());
    assert_agree(c, s);
    assert_eq!(
        st.tickets(),
        0,
        "no ticket from a server that authenticates clients"
    );
}

#[test]
fn a_client_without_the_tickets_psk_fails_the_binder() {
    let st = Setup::new();
    st.prime();
    let mut t = st
        .cache
        .take("stoq.example", &st.trust(), NOW)
        .expect("a ticket");
    t.psk = Secret::new([3; 32]);
    st.cache.clear();
    st.cache.put("stoq.example", &st.trust(), t);
    let (side, e) = expect_failure(st.client(), st.server(), &mut no_tamper);
    assert!(matches!(side, Side::Server), "{side:?}");
    assert_eq!(e, HandshakeError::BadBinder);
}

#[test]
fn a_server_accepting_what_was_not_offered_is_refused() {
    let st = Setup::new();
    // No ticket offered; the ServerHello's last byte (psk_accepted) set in flight.
    let mut set_flag = |to_server: bool, epoch: Epoch, b: &mut Vec<u8>| {
        if !to_server && epoch == Epoch::Initial {
            *b.last_mut().expect("a ServerHello") = 1;
        }
    };
    let (side, e) = expect_failure(st.client(), st.server(), &mut set_flag);
    assert!(matches!(side, Side::Client), "{side:?}");
    assert!(matches!(e, HandshakeError::BadResumption(_)), "{e:?}");
}

#[test]
fn a_resumed_handshake_refuses_tampering_and_a_new_ticket_to_the_server() {
    let st = Setup::new();
    st.prime();
    // Flip one byte of the server's resumed flight: the client refuses it.
    let mut flip = |to_server: bool, epoch: Epoch, b: &mut Vec<u8>| {
        if !to_server && epoch == Epoch::Handshake {
            b[10] ^= 1;
        }
    };
    assert!(run(st.client(), st.server(), &mut flip).is_err());
    // A NewSessionTicket sent to a server is an unexpected message.
    let (c, mut s) = run(st.client(), st.server(), &mut no_tamper).expect("resumed");
    assert!(c.is_complete());
    let nst = Message::NewSessionTicket(NewSessionTicket {
        lifetime_s: 60,
        nonce: vec![0],
        ticket: vec![1; 40],
        age_add: 0,
        early_data: false,
    });
    let e = s
        .read(Epoch::OneRtt, &nst.encode(), NOW, &mut OsRng)
        .unwrap_err();
    assert!(
        matches!(e, HandshakeError::UnexpectedMessage { .. }),
        "{e:?}"
    );
}

#[test]
fn a_ticket_from_before_a_key_change_is_refused() {
    let st = Setup::new();
    st.prime();
    // The server's key replaced (the ticket keys unchanged): the ticket is refused...
    let (new_cred, _) = raw(SigAlg::Falcon512);
    let mut s = new_server(server_cfg(new_cred, &CipherSuite::ALL, None));
    let mut c = st.client();
    let ch = c.take_outgoing(Epoch::Initial);
    s.read(Epoch::Initial, &ch, NOW, &mut OsRng).unwrap();
    assert_eq!(
        s.resumption(),
        Resumption::Refused(TicketRefusal::Credential)
    );
    // ...and the full handshake that follows shows the new key, which this client does
    // not pin.
    let (new_cred, _) = raw(SigAlg::Falcon512);
    let s = new_server(server_cfg(new_cred, &CipherSuite::ALL, None));
    let (side, e) = expect_failure(st.client(), s, &mut no_tamper);
    assert!(matches!(side, Side::Client), "{side:?}");
    assert_eq!(e, HandshakeError::PinMismatch);
}
