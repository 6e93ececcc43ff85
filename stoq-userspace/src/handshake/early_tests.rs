//! Early data in the handshake: the 0-RTT key both sides derive, the terms a ticket
//! carries, and a server that claims to accept what was not offered.

use rand_core::OsRng;

use super::resume_tests::Setup;
use super::tests::{Side, expect_failure, new_client, new_server, no_tamper, run};
use super::*;

/// Resumption's setup, with early data on the client (`early`) or the server.
struct Early(Setup);

impl Early {
    fn client(&self, early: bool) -> Handshake {
        let cfg = ClientConfig {
            early_data: early,
            ..self.0.client_cfg()
        };
        new_client(cfg, &mut OsRng)
    }

    fn server_cfg(&self, early: bool) -> ServerConfig {
        let mut cfg = self.0.server_cfg();
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
    let st = Early(Setup::new());
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
    let st = Early(Setup::new());
    // Issued while the server did not accept early data: the client offers none.
    st.prime(false);
    assert_eq!(st.client(true).early_data(), EarlyData::NotOffered);

    // Issued with no ALPN, offered to a server that now selects one: refused.
    st.0.cache.clear();
    st.prime(true);
    let c_cfg = ClientConfig {
        early_data: true,
        ..st.0.client_cfg().with_alpn(&[b"h3"])
    };
    let c = new_client(c_cfg, &mut OsRng);
    assert_eq!(c.early_data(), EarlyData::Pending);
    let s = new_server(st.server_cfg(true).with_alpn(&[b"h3"]));
    let (_, s) = run(c, s, &mut no_tamper).expect("1-RTT");
    assert_eq!(s.early_data(), EarlyData::Refused(EarlyDataRefusal::Terms));
}

#[test]
fn a_server_accepting_early_data_that_was_not_offered_fails_the_handshake() {
    let st = Early(Setup::new());
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
