//! The client's side of the handshake: its ClientHello (with a ticket, its binder and
//! early data when it resumes), the server's ServerHello and Finished, and the tickets and
//! address tokens it keeps for the next connection.

use std::sync::Arc;

use rand_core::CryptoRngCore;

use super::early::EarlyData;
use super::messages::{
    BINDER_LEN, CertificateVerify, ClientHello, Message, NewSessionTicket, PskOffer, ServerHello,
};
use super::params::TransportParams;
use super::schedule::{
    EarlySecret, HandshakeSecrets, Transcript, finished_mac, ticket_psk, verify_finished,
};
use super::session_cache::{RememberedTerms, StoredTicket};
use super::{
    CLIENT_CV_CONTEXT, ClientConfig, Epoch, Handshake, HandshakeError, KeyChange, Resumption, Role,
    State, TicketRefusal, messages, ticket,
};
use crate::crypto::kex::ClientKex;

impl Handshake {
    /// A client; its ClientHello is queued for the Initial epoch at once. `params` are this
    /// connection's transport parameters (the connection fills in its CIDs). `now_unix`
    /// (Unix seconds) picks an unexpired ticket to offer from the configuration's cache.
    pub fn client(
        cfg: Arc<ClientConfig>,
        params: TransportParams,
        now_unix: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Self {
        let (kex, share) = ClientKex::generate(rng);
        let mut random = [0u8; 32];
        rng.fill_bytes(&mut random);
        let ticket = cfg
            .resumption
            .as_ref()
            .and_then(|c| c.take(&cfg.server_name, &cfg.trust, now_unix));
        // Early data under a ticket that allows it, in a suite still offered.
        let early_suite = ticket
            .as_ref()
            .and_then(|t| t.early.as_ref())
            .map(|e| e.suite)
            .filter(|s| cfg.early_data && cfg.suites.contains(s));
        let ch = Message::ClientHello(ClientHello {
            version: stoq_common::wire::stoq::VERSION_1,
            random,
            suites: cfg.suites.clone(),
            sig_algs: cfg.sig_algs.clone(),
            batch_signatures: cfg.batch_signatures,
            key_share: share,
            server_name: cfg.server_name.clone(),
            params: params.clone(),
            alpn: cfg.alpn.clone(),
            psk: ticket.as_ref().map(|t| PskOffer {
                ticket: t.ticket.clone(),
                // Milliseconds, from a clock of whole seconds (RFC 8446 §4.2.11.1).
                obfuscated_age: (now_unix.saturating_sub(t.received).saturating_mul(1000) as u32)
                    .wrapping_add(t.age_add),
                early_data: early_suite.is_some(),
                binder: [0; BINDER_LEN],
            }),
        });
        let mut enc = ch.encode();
        let mut transcript = Transcript::default();
        // The binder covers the ClientHello up to itself, header included (RFC 8446
        // §4.2.11.2); it is the message's last field. The transcript hashes that part
        // once: its hash so far is the binder's input, and the binder follows.
        let offered = ticket.map(|t| {
            let early = EarlySecret::resumption(&t.psk);
            let cut = enc.len() - BINDER_LEN;
            transcript.add(&enc[..cut]);
            let binder = early.binder(&transcript.hash());
            enc[cut..].copy_from_slice(&binder);
            transcript.add(&enc[cut..]);
            Box::new((t, early))
        });
        if offered.is_none() {
            transcript.add(&enc);
        }
        let mut me = Self::new(
            Role::Client {
                cfg,
                kex: Some(Box::new(kex)),
                client_auth: false,
                offered,
                resumed: None,
            },
            State::ClientWaitServerHello,
            params,
        );
        me.transcript = transcript;
        me.outgoing[Epoch::Initial as usize].extend_from_slice(&enc);
        if let (
            Some(suite),
            Role::Client {
                offered: Some(o), ..
            },
        ) = (early_suite, &me.role)
        {
            let key = o.1.client_early_traffic(&me.transcript.hash());
            me.early_key = Some((suite, key));
            me.early_data = EarlyData::Pending;
        }
        me
    }

    pub(super) fn client_on_server_hello(
        &mut self,
        raw: &[u8],
        sh: ServerHello,
    ) -> Result<(), HandshakeError> {
        let Role::Client {
            cfg,
            kex,
            offered,
            resumed,
            ..
        } = &mut self.role
        else {
            unreachable!("client state")
        };
        if !cfg.suites.contains(&sh.suite) {
            return Err(HandshakeError::SuiteNotOffered(sh.suite));
        }
        let expected = *cfg
            .suites
            .iter()
            .find(|s| sh.server_suites.contains(s))
            .ok_or(HandshakeError::NoCommonSuite)?;
        if expected != sh.suite {
            return Err(HandshakeError::Downgrade {
                chosen: sh.suite,
                expected,
            });
        }
        let early = match (offered.take(), sh.psk_accepted) {
            (Some(o), true) => {
                let (ticket, early) = *o;
                *resumed = Some(Box::new(ticket));
                self.resumption = Resumption::Accepted;
                early
            }
            (None, true) => {
                return Err(HandshakeError::BadResumption(
                    "the server accepted a ticket that was not offered",
                ));
            }
            (Some(_), false) => {
                self.resumption = Resumption::Refused(TicketRefusal::Declined);
                EarlySecret::full()
            }
            (None, false) => EarlySecret::full(),
        };
        let hybrid = kex.take().expect("one ServerHello").finish(&sh.key_share)?;
        self.transcript.add(raw);
        let secrets = HandshakeSecrets::new(&early, &hybrid, &self.transcript.hash());
        self.keys.push(KeyChange {
            epoch: Epoch::Handshake,
            suite: sh.suite,
            client: secrets.client.clone(),
            server: secrets.server.clone(),
        });
        self.secrets = Some(secrets);
        self.suite = Some(sh.suite);
        self.state = State::ClientWaitEncryptedExtensions;
        Ok(())
    }

    pub(super) fn client_on_finished(
        &mut self,
        raw: &[u8],
        mac: &[u8; 32],
        rng: &mut impl CryptoRngCore,
    ) -> Result<(), HandshakeError> {
        let secrets = self.secrets.take().expect("set at ServerHello");
        if !verify_finished(&secrets.server, &self.transcript.hash(), mac) {
            return Err(HandshakeError::FinishedMismatch);
        }
        self.transcript.add(raw);
        let (c_ap, s_ap) = secrets.application(&self.transcript.hash());
        self.exporter = Some(secrets.exporter(&self.transcript.hash()));
        let Role::Client {
            cfg, client_auth, ..
        } = &self.role
        else {
            unreachable!("client state")
        };
        if *client_auth {
            let cred = cfg
                .credential
                .as_ref()
                .ok_or(HandshakeError::ClientAuthRequired)?;
            let cert = Message::Certificate(cred.message());
            let alg = cred.signing_key().alg();
            self.send(Epoch::Handshake, &cert);
            let Role::Client { cfg, .. } = &self.role else {
                unreachable!("client state")
            };
            let key = cfg
                .credential
                .as_ref()
                .expect("checked above")
                .signing_key();
            let sig = key.sign(CLIENT_CV_CONTEXT, &self.transcript.hash(), rng);
            self.send(
                Epoch::Handshake,
                &Message::CertificateVerify(CertificateVerify {
                    alg,
                    batch: None,
                    signature: sig,
                }),
            );
        }
        let fin = finished_mac(&secrets.client, &self.transcript.hash());
        self.send(Epoch::Handshake, &Message::Finished(fin));
        self.resumption_secret = Some(secrets.resumption(&self.transcript.hash()));
        let suite = self.suite.expect("set at ServerHello");
        self.keys.push(KeyChange {
            epoch: Epoch::OneRtt,
            suite,
            client: c_ap,
            server: s_ap,
        });
        self.state = State::Complete;
        Ok(())
    }

    /// Stores an address token the server sent in NEW_TOKEN (clients with a cache only),
    /// for the next connection to this server name.
    pub fn store_address_token(&self, token: &[u8]) {
        if let Role::Client { cfg, .. } = &self.role
            && let Some(cache) = &cfg.resumption
            && token.len() <= messages::MAX_TICKET_LEN
        {
            cache.put_address_token(&cfg.server_name, &cfg.trust, token);
        }
    }

    /// Stores a ticket the server sent (clients with a cache only).
    pub(super) fn store_ticket(&mut self, nst: &NewSessionTicket, now: u64) {
        let (Role::Client { cfg, .. }, Some(res), Some(key)) =
            (&self.role, &self.resumption_secret, &self.peer_key)
        else {
            return;
        };
        let Some(cache) = &cfg.resumption else {
            return;
        };
        let lifetime = u64::from(nst.lifetime_s).min(ticket::MAX_TICKET_LIFETIME.as_secs());
        if lifetime == 0 {
            return;
        }
        cache.put(
            &cfg.server_name,
            &cfg.trust,
            StoredTicket {
                ticket: nst.ticket.clone(),
                psk: ticket_psk(res, &nst.nonce),
                expires: now.saturating_add(lifetime),
                server_key: key.clone(),
                received: now,
                age_add: nst.age_add,
                early: match (nst.early_data, self.suite, &self.peer_params) {
                    (true, Some(suite), Some(params)) => Some(Box::new(RememberedTerms {
                        suite,
                        params: params.clone(),
                    })),
                    _ => None,
                },
            },
        );
    }
}
