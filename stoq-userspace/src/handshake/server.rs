//! The server's side of the handshake: its flight (resumption and early data decided,
//! the CertificateVerify signed alone or in a batch), the session tickets it issues, and
//! its answers to a ClientHello's ticket and early data.

use rand_core::CryptoRngCore;

use super::batch::BatchProof;
use super::early::{self, EarlyData, EarlyDataRefusal};
use super::messages::{
    CertificateVerify, ClientHello, EncryptedExtensions, Message, NewSessionTicket, PskOffer,
    ServerHello,
};
use super::params::TransportParams;
use super::schedule::{EarlySecret, HandshakeSecrets, finished_mac, ticket_psk};
use super::ticket::{EarlyTerms, TicketContents};
use super::{
    Epoch, Handshake, HandshakeError, KeyChange, PendingSignature, Resumption, Role,
    SERVER_CV_CONTEXT, ServerConfig, SignatureRequest, State, TicketKeys, TicketRefusal,
};
use crate::crypto::kex::server_respond;
use crate::crypto::{CipherSuite, Secret};

impl Handshake {
    /// The server's answer to `ch`; `binder_input` is `H(ClientHello up to the binder)`
    /// where the client offered a ticket.
    pub(super) fn server_flight(
        &mut self,
        binder_input: Option<[u8; 32]>,
        ch: ClientHello,
        now: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(), HandshakeError> {
        let Role::Server { cfg, tickets } = &self.role else {
            unreachable!("server state")
        };
        let (early, resumption, opened) = server_psk(cfg, tickets, &ch, binder_input, now)?;
        let resumed = resumption == Resumption::Accepted;
        if ch.version != stoq_common::wire::stoq::VERSION_1 {
            return Err(HandshakeError::UnsupportedVersion(ch.version));
        }
        // The client's preference among the suites the server supports.
        let suite = *ch
            .suites
            .iter()
            .find(|s| cfg.suites.contains(s))
            .ok_or(HandshakeError::NoCommonSuite)?;
        let alg = cfg.credential.signing_key().alg();
        if !ch.sig_algs.contains(&alg) {
            return Err(HandshakeError::UnacceptedSignatureAlgorithm(alg));
        }
        let (share, hybrid) = server_respond(&ch.key_share, rng)?;
        let mut random = [0u8; 32];
        rng.fill_bytes(&mut random);
        // ALPN (RFC 7301 §3.2): the server's preference among what the client offers; an
        // offer with nothing in common is refused, no offer selects nothing.
        let alpn = cfg.alpn.iter().find(|p| ch.alpn.contains(p)).cloned();
        if alpn.is_none() && !ch.alpn.is_empty() && !cfg.alpn.is_empty() {
            let offered = ch
                .alpn
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(HandshakeError::NoApplicationProtocol { offered });
        }
        let early_data = match (&ch.psk, &opened) {
            (Some(offer), _) if !offer.early_data => EarlyData::NotOffered,
            (None, _) => EarlyData::NotOffered,
            (Some(_), None) => EarlyData::Refused(EarlyDataRefusal::NotResumed),
            (Some(offer), Some(t)) => {
                server_early_data(cfg, t, offer, suite, alpn.as_deref(), &self.params, now)
            }
        };
        if early_data == EarlyData::Accepted {
            // `H(ClientHello)`: the transcript holds the ClientHello alone here.
            self.early_key = Some((suite, early.client_early_traffic(&self.transcript.hash())));
        }
        self.early_data = early_data;
        let server_suites = cfg.suites.clone();
        let cfg_batch = cfg.batch_signing;
        // A resumed handshake never has client authentication: a server that
        // authenticates clients refuses every ticket (`server_psk`).
        let client_auth = cfg.client_auth.is_some() && !resumed;
        let ee = Message::EncryptedExtensions(EncryptedExtensions {
            params: self.params.clone(),
            client_auth,
            alpn: alpn.clone(),
            early_data: early_data == EarlyData::Accepted,
        });
        let cert = (!resumed).then(|| Message::Certificate(cfg.credential.message()));
        self.peer_params = Some(ch.params);
        self.peer_name = Some(ch.server_name);
        self.alpn = alpn;
        self.suite = Some(suite);
        self.resumption = resumption;

        self.send(
            Epoch::Initial,
            &Message::ServerHello(ServerHello {
                random,
                suite,
                server_suites,
                key_share: share,
                psk_accepted: resumed,
            }),
        );
        let secrets = HandshakeSecrets::new(&early, &hybrid, &self.transcript.hash());
        self.keys.push(KeyChange {
            epoch: Epoch::Handshake,
            suite,
            client: secrets.client.clone(),
            server: secrets.server.clone(),
        });
        self.send(Epoch::Handshake, &ee);
        self.secrets = Some(secrets);
        let pending = PendingSignature {
            alg,
            batch: ch.batch_signatures && cfg_batch,
            client_auth,
        };
        match cert {
            Some(cert) => {
                // The CertificateVerify waits for a signature: alone, or shared with
                // other handshakes waiting on this worker (`signature_request`).
                self.send(Epoch::Handshake, &cert);
                self.signing = Some(pending);
                self.state = State::ServerSigning;
            }
            None => self.finish_server_flight(pending),
        }
        Ok(())
    }

    /// What this server handshake waits to have signed, if it waits (a full handshake
    /// between its ClientHello and its signature).
    pub fn signature_request(&self) -> Option<SignatureRequest> {
        let (Some(p), Role::Server { cfg, .. }) = (self.signing, &self.role) else {
            return None;
        };
        Some(SignatureRequest {
            transcript: self.transcript.hash(),
            batch: p.batch,
            config: cfg.clone(),
        })
    }

    /// Whether this server handshake waits for its signature.
    pub fn awaits_signature(&self) -> bool {
        self.signing.is_some()
    }

    /// Signs this handshake's transcript alone and completes the server flight (nothing
    /// happens unless it [`awaits_signature`](Self::awaits_signature)).
    pub fn sign_alone(&mut self, rng: &mut impl CryptoRngCore) {
        let (Some(p), Role::Server { cfg, .. }) = (self.signing.take(), &self.role) else {
            return;
        };
        let signature =
            cfg.credential
                .signing_key()
                .sign(SERVER_CV_CONTEXT, &self.transcript.hash(), rng);
        self.batch_size = 1;
        self.send_certificate_verify(p, None, signature);
    }

    /// Completes the server flight with a batch signature: `signature` over the root of
    /// a tree of `batch_size` transcripts, this one's membership proved by `proof` (from
    /// [`Credential::sign_batch`](super::Credential::sign_batch) over the [`SignatureRequest::transcript`]s).
    pub fn sign_in_batch(&mut self, proof: BatchProof, signature: Vec<u8>, batch_size: u32) {
        let Some(p) = self.signing.take() else {
            return;
        };
        debug_assert!(p.batch, "only clients that accept batch signatures get one");
        self.batch_size = batch_size;
        self.send_certificate_verify(p, Some(proof), signature);
    }

    /// The handshakes that shared this server's signature: 1 when it signed alone, 0
    /// before it signed or when nothing was signed (a resumed handshake, a client).
    pub fn signature_batch_size(&self) -> u32 {
        self.batch_size
    }

    pub(super) fn send_certificate_verify(
        &mut self,
        p: PendingSignature,
        batch: Option<BatchProof>,
        signature: Vec<u8>,
    ) {
        self.send(
            Epoch::Handshake,
            &Message::CertificateVerify(CertificateVerify {
                alg: p.alg,
                batch,
                signature,
            }),
        );
        self.finish_server_flight(p);
    }

    /// The server flight from its Finished on: 1-RTT keys, then wait for the client.
    pub(super) fn finish_server_flight(&mut self, p: PendingSignature) {
        let secrets = self.secrets.as_ref().expect("set with the ServerHello");
        let suite = self.suite.expect("chosen with the ServerHello");
        let fin = finished_mac(&secrets.server, &self.transcript.hash());
        self.send(Epoch::Handshake, &Message::Finished(fin));
        let secrets = self.secrets.as_ref().expect("set with the ServerHello");
        let (c_ap, s_ap) = secrets.application(&self.transcript.hash());
        self.exporter = Some(secrets.exporter(&self.transcript.hash()));
        self.keys.push(KeyChange {
            epoch: Epoch::OneRtt,
            suite,
            client: c_ap,
            server: s_ap,
        });
        self.state = if p.client_auth {
            State::ServerWaitClientCertificate
        } else {
            State::ServerWaitClientFinished
        };
    }

    /// Queues the server's session tickets (1-RTT, outside the transcript), once the
    /// client's Finished has been verified.
    pub(super) fn issue_tickets(
        &mut self,
        resumption: &Secret,
        now: u64,
        rng: &mut impl CryptoRngCore,
    ) {
        let Role::Server { cfg, tickets } = &self.role else {
            return;
        };
        let settings = tickets.settings();
        if cfg.client_auth.is_some() || settings.per_connection == 0 {
            return;
        }
        let lifetime_s = u32::try_from(settings.lifetime.as_secs()).unwrap_or(u32::MAX);
        let name = self.peer_name.clone().unwrap_or_default();
        let credential = cfg.credential.ticket_id();
        let early = cfg.early_data.enabled.then(|| EarlyTerms {
            suite: self.suite.map_or(0, CipherSuite::id),
            limits: self.params.early_limits_digest(),
            alpn: self.alpn.clone().unwrap_or_default(),
        });
        for i in 0..settings.per_connection {
            let nonce = [i];
            let age_add = rng.next_u32();
            let ticket = tickets.seal(
                &TicketContents {
                    issued: now,
                    lifetime_s,
                    psk: ticket_psk(resumption, &nonce),
                    credential,
                    server_name: name.clone(),
                    age_add,
                    early: early.clone(),
                },
                rng,
            );
            let m = Message::NewSessionTicket(NewSessionTicket {
                lifetime_s,
                nonce: nonce.to_vec(),
                ticket,
                age_add,
                early_data: early.is_some(),
            });
            self.outgoing[Epoch::OneRtt as usize].extend_from_slice(&m.encode());
        }
    }
}

/// The server's answer to a ClientHello's resumption offer: the early secret and how
/// resumption went. A ticket that does not open, or does not fit this server, is refused
/// (a full handshake follows); one that opens but whose binder is wrong fails the
/// handshake.
fn server_psk(
    cfg: &ServerConfig,
    tickets: &TicketKeys,
    ch: &ClientHello,
    binder_input: Option<[u8; 32]>,
    now: u64,
) -> Result<(EarlySecret, Resumption, Option<TicketContents>), HandshakeError> {
    let Some(offer) = &ch.psk else {
        return Ok((EarlySecret::full(), Resumption::NotOffered, None));
    };
    let refused = |r| Ok((EarlySecret::full(), Resumption::Refused(r), None));
    if tickets.settings().per_connection == 0 {
        return refused(TicketRefusal::Disabled);
    }
    if cfg.client_auth.is_some() {
        return refused(TicketRefusal::ClientAuth);
    }
    let t = match tickets.open(&offer.ticket, now) {
        Ok(t) => t,
        Err(r) => return refused(r),
    };
    if t.server_name != ch.server_name {
        return refused(TicketRefusal::ServerName);
    }
    if t.credential != cfg.credential.ticket_id() {
        return refused(TicketRefusal::Credential);
    }
    let early = EarlySecret::resumption(&t.psk);
    if !binder_input.is_some_and(|h| early.verify_binder(&h, &offer.binder)) {
        return Err(HandshakeError::BadBinder);
    }
    Ok((early, Resumption::Accepted, Some(t)))
}

/// The server's answer to a resumed ClientHello's early data: accepted only under the
/// terms the ticket was issued with, when fresh, and never twice (see [`early`]).
fn server_early_data(
    cfg: &ServerConfig,
    t: &TicketContents,
    offer: &PskOffer,
    suite: CipherSuite,
    alpn: Option<&[u8]>,
    params: &TransportParams,
    now: u64,
) -> EarlyData {
    let policy = &cfg.early_data;
    let refused = EarlyData::Refused;
    if !policy.enabled {
        return refused(EarlyDataRefusal::Disabled);
    }
    let Some(terms) = &t.early else {
        return refused(EarlyDataRefusal::NotInTicket);
    };
    if terms.suite != suite.id() || terms.alpn != alpn.unwrap_or_default() {
        return refused(EarlyDataRefusal::Terms);
    }
    if terms.limits != params.early_limits_digest() {
        return refused(EarlyDataRefusal::Limits);
    }
    let reported = offer.obfuscated_age.wrapping_sub(t.age_add);
    if !early::is_fresh(t.issued, now, reported, policy.window) {
        return refused(EarlyDataRefusal::Stale);
    }
    // Remembered as long as a copy could pass the freshness check: the window either
    // side of its expected arrival, and the second the server's clock rounds away.
    let keep = 2 * (policy.window.as_secs() + 1);
    match policy.replay.check_and_record(&offer.binder, now, keep) {
        Ok(()) => EarlyData::Accepted,
        Err(r) => refused(r),
    }
}
