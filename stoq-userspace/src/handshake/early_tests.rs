//! Early data in the handshake: the 0-RTT key both sides derive, the terms a ticket
//! carries, and a server that claims to accept what was not offered.

use rand_core::OsRng;

use super::tests::{
    Side, client_cfg, expect_failure, new_client, new_server, no_tamper, raw, run, server_cfg,
};
use super::*;

struct Setup {
    key: Vec<u8>,
    public: VerifyingKey,
    cache: Arc<SessionCache>,
}

impl Setup {
    fn new() -> Self {
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

    fn client(&self, early: bool) -> Handshake {
        let cfg = ClientConfig {
            resumption: Some(self.cache.clone()),
            early_data: early,
            ..client_cfg(
                Trust::PinnedKey(self.public.clone()),
                &CipherSuite::ALL,
                None,
            )
        };
        new_client(cfg, &mut OsRng)
    }

    fn server_cfg(&self, early: bool) -> ServerConfig {
        let cred = Credential::RawKey {
            key: SigningKey::from_bytes(&self.key).expect("the same key"),
            public: self.public.clone(),
        };
        let mut cfg = server_cfg(cred, &CipherSuite::ALL, None);
        if early {
            cfg.early_data = EarlyDataSettings::accept();
        }
        cfg
    }

    /// A full handshake whose tickets allow early data if `early`.
    fn prime(&self, early: bool) {
        run(
            self.client(false),
            new_server(self.server_cfg(early)),
            &mut no_tamper,
        )
        .expect("full handshake");
    }
}

#[test]
fn both_sides_derive_the_same_early_key_only_when_accepted() {
    let st = Setup::new();
    st.prime(true);
    let c = st.client(true);
    assert_eq!(c.early_data(), EarlyData::Pending);
    assert!(c.remembered_params().is_some());
    let (mut c, mut s) = run(c, new_server(st.server_cfg(true)), &mut no_tamper).expect("0-RTT");
    assert_eq!(
        (c.early_data(), s.early_data()),
        (EarlyData::Accepted, EarlyData::Accepted)
    );
    let (ck, sk) = (
        c.take_early_key().expect("client"),
        s.take_early_key().expect("server"),
    );
    assert_eq!(ck.0, sk.0);
    assert_eq!(ck.1.as_bytes(), sk.1.as_bytes());
    // Distinct from every other secret of the connection.
    for k in c.take_keys() {
        assert_ne!(k.client.as_bytes(), ck.1.as_bytes());
    }
    assert!(c.take_early_key().is_none(), "taken once");

    // Offered under the next ticket to a server that refuses: the server has no key, and
    // the client learns it was declined.
    let (mut c, mut s) = run(
        st.client(true),
        new_server(st.server_cfg(false)),
        &mut no_tamper,
    )
    .expect("1-RTT");
    assert_eq!(
        c.early_data(),
        EarlyData::Refused(EarlyDataRefusal::Declined)
    );
    assert_eq!(
        s.early_data(),
        EarlyData::Refused(EarlyDataRefusal::Disabled)
    );
    assert!(s.take_early_key().is_none());
    assert!(c.take_early_key().is_some(), "the client had sent under it");
    assert_eq!(
        c.resumption(),
        Resumption::Accepted,
        "resumption itself is unaffected"
    );
}

#[test]
fn a_ticket_carries_the_terms_of_its_connection() {
    let st = Setup::new();
    // Issued while the server did not accept early data: the client offers none.
    st.prime(false);
    assert_eq!(st.client(true).early_data(), EarlyData::NotOffered);

    // Issued with no ALPN, offered to a server that now selects one: refused.
    st.cache.clear();
    st.prime(true);
    let mut c_cfg = ClientConfig {
        resumption: Some(st.cache.clone()),
        early_data: true,
        ..client_cfg(Trust::PinnedKey(st.public.clone()), &CipherSuite::ALL, None)
    };
    c_cfg.alpn = vec![b"h3".to_vec()];
    let c = new_client(c_cfg, &mut OsRng);
    assert_eq!(c.early_data(), EarlyData::Pending);
    let s = new_server(st.server_cfg(true).with_alpn(&[b"h3"]));
    let (_, s) = run(c, s, &mut no_tamper).expect("1-RTT");
    assert_eq!(s.early_data(), EarlyData::Refused(EarlyDataRefusal::Terms));
}

#[test]
fn a_server_accepting_early_data_that_was_not_offered_fails_the_handshake() {
    let st = Setup::new();
    st.prime(true);
    // The server's EncryptedExtensions end with the early-data flag: set it.
    let mut forge = |to_server: bool, epoch: Epoch, b: &mut Vec<u8>| {
        if !to_server && epoch == Epoch::Handshake && b.first() == Some(&8) {
            // Type (1) and length (3), then the body, whose last byte is the flag.
            let len = usize::from(b[1]) << 16 | usize::from(b[2]) << 8 | usize::from(b[3]);
            b[4 + len - 1] = 1;
        }
    };
    let (side, e) = expect_failure(
        st.client(false),
        new_server(st.server_cfg(true)),
        &mut forge,
    );
    assert!(matches!(side, Side::Client));
    assert_eq!(
        e,
        HandshakeError::BadResumption("the server accepted early data that was not offered")
    );
}
