//! The STOQ handshake: hybrid post-quantum key exchange, FALCON authentication, a TLS
//! 1.3-shaped key schedule. See `docs/security.md` for the protocol and its argument.
//!
//! [`Handshake`] is sans-IO: the connection feeds it the bytes of each epoch's CRYPTO
//! stream ([`Handshake::read`]), takes the bytes to send ([`Handshake::take_outgoing`]) and
//! the key changes ([`Handshake::take_keys`]). Wall-clock time (for certificate validity)
//! and randomness are passed in; nothing here reads a clock or an OS source itself.
//!
//! ```text
//! Client                                              Server
//! ClientHello (Initial)             -------->
//!   version, random, suites, sig algs,
//!   X25519 pk || ML-KEM-768 ek, server name, params
//!                                                     ServerHello (Initial)
//!                                     random, suite, server suites, X25519 pk || ML-KEM ct
//!                                   <--------         EncryptedExtensions (Handshake)
//!                                                     Certificate / raw key (Handshake)
//!                                                     CertificateVerify (Handshake)
//!                                                     Finished (Handshake)
//! [Certificate, CertificateVerify]  -------->
//! Finished (Handshake)
//! application data (1-RTT)          <------->         application data (1-RTT)
//! ```
#![deny(unsafe_code)]

pub mod batch;
pub mod cert;
pub mod chain;
mod client;
pub mod early;
pub mod messages;
pub mod params;
pub mod schedule;
mod server;
pub mod session_cache;
pub mod ticket;

use std::sync::Arc;

use rand_core::CryptoRngCore;

use self::batch::BatchProof;
use self::cert::{CertError, Certificate};
pub use self::early::{AntiReplay, EarlyData, EarlyDataRefusal, EarlyDataSettings};
use self::messages::{CertificateMsg, CertificateVerify, CredentialKind, Message, MessageType};
use self::params::TransportParams;
use self::schedule::{EarlySecret, HandshakeSecrets, Transcript, verify_finished};
pub use self::session_cache::SessionCache;
use self::session_cache::StoredTicket;
pub use self::ticket::{Resumption, TicketKeys, TicketRefusal, TicketSettings};
use crate::codec::DecodeError;
use crate::crypto::kex::{ClientKex, KexError};
use crate::crypto::sig::{SigAlg, SigningKey, VerifyingKey};
use crate::crypto::{CipherSuite, Secret};

/// Signature context of the server's CertificateVerify.
const SERVER_CV_CONTEXT: &[u8] = b"STOQ server CertificateVerify";
/// Signature context of the client's CertificateVerify.
const CLIENT_CV_CONTEXT: &[u8] = b"STOQ client CertificateVerify";
/// Most bytes buffered for one epoch's incomplete message.
const MAX_BUFFERED: usize = messages::MAX_MESSAGE_LEN + messages::HEADER_LEN;

/// A packet-number space, by the keys that protect it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Epoch {
    /// Initial packets (keys from the client's first DCID).
    Initial = 0,
    /// Handshake packets.
    Handshake = 1,
    /// 1-RTT packets.
    OneRtt = 2,
}

/// How a side proves its identity.
///
/// ```
/// use stoq::crypto::sig::{SigAlg, SigningKey};
/// use stoq::handshake::Credential;
/// let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut rand_core::OsRng);
/// // A bare key its peers pin; `Credential::chain(key, certificates, rng)` for a CA's.
/// let credential = Credential::RawKey { key, public };
/// # let _ = credential;
/// ```
#[derive(Debug, Clone)]
pub enum Credential {
    /// A bare key pair: the peer must have the public key pinned.
    RawKey {
        /// Signing key.
        key: SigningKey,
        /// Its public key.
        public: VerifyingKey,
    },
    /// A key and a certificate for it, with the intermediate CA certificates between it
    /// and the peer's trust anchor ([`Credential::chain`] checks them).
    Certificate {
        /// Signing key.
        key: SigningKey,
        /// The certificate of its public key.
        cert: Certificate,
        /// The certificates above it, the leaf's issuer first; empty when a trust anchor
        /// issued the leaf.
        intermediates: Vec<Certificate>,
    },
}

impl Credential {
    /// A certificate credential from a chain (leaf first, then each issuer up to, not
    /// including, the trust anchor: the order of a PEM chain file), after checking that
    /// each certificate is issued by the next, every issuer is a CA and `key` belongs to
    /// the leaf.
    ///
    /// # Errors
    /// The [`CertError`] from [`chain::check_configured`], naming the fix.
    pub fn chain(
        key: SigningKey,
        mut chain: Vec<Certificate>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, CertError> {
        chain::check_configured(&key, &chain, rng)?;
        let cert = chain.remove(0);
        Ok(Self::Certificate {
            key,
            cert,
            intermediates: chain,
        })
    }

    fn signing_key(&self) -> &SigningKey {
        match self {
            Self::RawKey { key, .. } | Self::Certificate { key, .. } => key,
        }
    }

    /// The public key this credential proves.
    pub fn public_key(&self) -> &VerifyingKey {
        match self {
            Self::RawKey { public, .. } => public,
            Self::Certificate { cert, .. } => &cert.key,
        }
    }

    /// Signs `messages` (1 to [`batch::MAX_BATCH`] transcript hashes) with one signature,
    /// returning it and each message's proof (see [`batch`]).
    pub fn sign_batch(
        &self,
        messages: &[[u8; 32]],
        rng: &mut impl CryptoRngCore,
    ) -> (Vec<u8>, Vec<BatchProof>) {
        batch::sign(self.signing_key(), self.public_key(), messages, rng)
    }

    /// The name tickets carry of the public key this credential proves.
    fn ticket_id(&self) -> [u8; 8] {
        ticket::credential_id(self.public_key())
    }

    fn message(&self) -> CertificateMsg {
        match self {
            Self::RawKey { public, .. } => CertificateMsg {
                kind: CredentialKind::RawPublicKey,
                data: public.as_bytes().to_vec(),
            },
            Self::Certificate {
                cert,
                intermediates,
                ..
            } if intermediates.is_empty() => CertificateMsg {
                kind: CredentialKind::Certificate,
                data: cert.as_bytes().to_vec(),
            },
            Self::Certificate {
                cert,
                intermediates,
                ..
            } => CertificateMsg {
                kind: CredentialKind::CertificateChain,
                data: chain::encode(std::iter::once(cert).chain(intermediates)),
            },
        }
    }
}

/// How a side decides to trust its peer.
///
/// ```
/// use stoq::crypto::sig::{SigAlg, SigningKey};
/// use stoq::handshake::Trust;
/// let (_, server) = SigningKey::generate(SigAlg::Falcon512, &mut rand_core::OsRng);
/// let pinned = Trust::PinnedKey(server.clone()); // SSH or WireGuard style
/// let anchored = Trust::Anchors(vec![server]); // a CA's root key
/// # let _ = (pinned, anchored);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Exactly this public key (SSH/WireGuard style).
    PinnedKey(VerifyingKey),
    /// A certificate issued by one of these keys, directly or through intermediate CA
    /// certificates the peer sends (at most [`chain::MAX_CHAIN_LEN`] certificates).
    Anchors(Vec<VerifyingKey>),
}

/// The client's handshake settings.
///
/// ```
/// use stoq::crypto::sig::{SigAlg, SigningKey};
/// use stoq::handshake::{ClientConfig, Trust};
/// let (_, ca) = SigningKey::generate(SigAlg::Falcon512, &mut rand_core::OsRng);
/// // Trust servers whose certificate chain ends at `ca`, for the name asked for.
/// let client = ClientConfig {
///     trust: Trust::Anchors(vec![ca.clone()]),
///     ..ClientConfig::pinned("files.example", ca)
/// };
/// assert_eq!(client.server_name, "files.example");
/// ```
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The name the server must prove (checked against certificates).
    pub server_name: String,
    /// How to trust the server.
    pub trust: Trust,
    /// Offered suites, in preference order.
    pub suites: Vec<CipherSuite>,
    /// Accepted server signature algorithms.
    pub sig_algs: Vec<SigAlg>,
    /// The client's transport parameters (defaults; each connection adds its CIDs).
    pub params: TransportParams,
    /// The client's credential, for servers that require client authentication.
    pub credential: Option<Credential>,
    /// Application protocols to offer (ALPN, RFC 7301), most preferred first, each 1 to
    /// 255 bytes (at most 32): for example `b"h3".to_vec()`. Empty: none offered. The
    /// server's choice is [`Connection::alpn`](crate::conn::Connection::alpn); a server
    /// that selects one not offered fails the handshake.
    pub alpn: Vec<Vec<u8>>,
    /// Where session tickets are kept for resumption: a connection offers one it holds
    /// for this server name and trust, and stores those the server sends. `None`: every
    /// handshake is a full one. [`ClientConfig::pinned`] gives each configuration a cache
    /// of 256 servers; its clones share it.
    pub resumption: Option<Arc<SessionCache>>,
    /// Accept a batch signature from the server: one signature over the transcripts of
    /// several handshakes, with a Merkle path proving this one is among them (see
    /// [`batch`]; 37 + 32 bytes per tree level more in the server's CertificateVerify).
    /// A loaded server then signs once for many clients. Default: on.
    pub batch_signatures: bool,
    /// Send early data (0-RTT) when resuming from a ticket that allows it: streams opened
    /// and DATAGRAMs sent before the handshake completes go in the first flight, a round
    /// trip sooner. Such data may be *replayed* by an attacker to a server that has not
    /// seen it (see [`early`]): send only what is safe to process twice. If the server
    /// refuses it, it is sent again at 1-RTT, byte for byte
    /// ([`Connection::early_data`](crate::conn::Connection::early_data) says which).
    /// Default: off.
    pub early_data: bool,
}

/// The server's handshake settings.
///
/// ```
/// use stoq::crypto::sig::{SigAlg, SigningKey};
/// use stoq::handshake::{ClientConfig, ServerConfig};
/// let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut rand_core::OsRng);
/// let mut server = ServerConfig::raw_key(key, public.clone()).with_alpn(&[b"stoq/1"]);
/// server.params.max_idle_timeout_ms = 60_000;
/// // Its clients pin `public` (`stoq keygen` writes it to a .pub file).
/// let client = ClientConfig::pinned("server.example", public).with_alpn(&[b"stoq/1"]);
/// # let _ = client;
/// ```
#[derive(Debug)]
pub struct ServerConfig {
    /// The server's credential.
    pub credential: Credential,
    /// Supported suites (the client's preference among them wins).
    pub suites: Vec<CipherSuite>,
    /// The server's transport parameters (defaults; each connection adds its CIDs and
    /// reset token).
    pub params: TransportParams,
    /// Require clients to authenticate, trusted this way.
    pub client_auth: Option<Trust>,
    /// Application protocols this server speaks (ALPN, RFC 7301), most preferred first:
    /// the first of them the client offers is selected. A client that offers protocols,
    /// none of them here, is refused (`no_application_protocol`); a client that offers
    /// none connects with no protocol selected. Empty: no ALPN.
    pub alpn: Vec<Vec<u8>>,
    /// Session tickets: their lifetime and how many each handshake issues (resumption is
    /// on by default; [`TicketSettings::disabled`] turns it off). Tickets are sealed with
    /// the endpoint's cluster keys, so every server of a cluster resumes every other's.
    /// A server that authenticates clients issues none.
    pub tickets: TicketSettings,
    /// Sign for several waiting handshakes at once (see [`batch`]): when more than one
    /// full handshake waits for its signature on a worker, clients that accept batch
    /// signatures share one FALCON signature over a Merkle tree of their transcripts
    /// (at most [`batch::MAX_BATCH`] a signature). One handshake waiting is signed
    /// alone, as with this off. Default: on.
    pub batch_signing: bool,
    /// Early data (0-RTT) from resuming clients: off by default; see [`early`] for what
    /// accepting it means and how replays are refused.
    pub early_data: EarlyDataSettings,
}

impl ServerConfig {
    /// A server that proves itself with a bare key pair (its clients pin `public`),
    /// accepts every suite, uses the default transport parameters and does not
    /// authenticate clients: the shortest way to a running server.
    pub fn raw_key(key: SigningKey, public: VerifyingKey) -> Self {
        Self {
            credential: Credential::RawKey { key, public },
            suites: CipherSuite::ALL.to_vec(),
            params: TransportParams::default(),
            client_auth: None,
            alpn: Vec::new(),
            tickets: TicketSettings::default(),
            batch_signing: true,
            early_data: EarlyDataSettings::default(),
        }
    }

    /// These settings with `protocols` as the server's ALPN list, most preferred first.
    ///
    /// ```
    /// # use stoq::crypto::sig::{SigAlg, SigningKey};
    /// # let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut rand_core::OsRng);
    /// let server = stoq::handshake::ServerConfig::raw_key(key, public).with_alpn(&[b"h3", b"stoq/1"]);
    /// assert_eq!(server.alpn, vec![b"h3".to_vec(), b"stoq/1".to_vec()]);
    /// ```
    pub fn with_alpn(mut self, protocols: &[&[u8]]) -> Self {
        self.alpn = protocols.iter().map(|p| p.to_vec()).collect();
        self
    }
}

impl ClientConfig {
    /// A client that pins the server's `public` key for `server_name`, offers the suites
    /// this CPU runs fastest first, uses the default transport parameters and presents
    /// no credential.
    pub fn pinned(server_name: impl Into<String>, public: VerifyingKey) -> Self {
        Self {
            server_name: server_name.into(),
            sig_algs: vec![public.alg()],
            trust: Trust::PinnedKey(public),
            suites: CipherSuite::local_preference().collect(),
            params: TransportParams::default(),
            credential: None,
            alpn: Vec::new(),
            resumption: Some(Arc::new(SessionCache::new(256))),
            batch_signatures: true,
            early_data: false,
        }
    }

    /// These settings offering `protocols` (ALPN), most preferred first.
    pub fn with_alpn(mut self, protocols: &[&[u8]]) -> Self {
        self.alpn = protocols.iter().map(|p| p.to_vec()).collect();
        self
    }
}

/// Checks an ALPN list: 1 to 255 bytes a name, at most 32 names.
pub(crate) fn check_alpn(list: &[Vec<u8>]) -> Result<(), &'static str> {
    if list.len() > messages::MAX_ALPN_PROTOCOLS {
        return Err("at most 32 ALPN protocols");
    }
    if list.iter().any(|p| p.is_empty() || p.len() > 255) {
        return Err("an ALPN protocol name is 1 to 255 bytes");
    }
    Ok(())
}

/// Why keying material could not be exported (`Connection::export_keying_material`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The handshake has not completed: wait for the connection to be established.
    #[error("the handshake has not completed: export once the connection is established")]
    HandshakeIncomplete,
    /// The label is longer than the key schedule allows.
    #[error("exporter label of {len} bytes: at most {max} bytes")]
    LabelTooLong {
        /// The label's length.
        len: usize,
        /// The longest label allowed.
        max: usize,
    },
    /// More output was asked for than HKDF-SHA256 can give.
    #[error("{len} bytes of keying material asked for: at most {max} bytes")]
    OutputTooLong {
        /// The output's length.
        len: usize,
        /// The most that can be exported at once.
        max: usize,
    },
}

/// Why a handshake failed: one variant per reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A message did not decode.
    #[error("malformed handshake message: {0}")]
    Decode(#[from] DecodeError),
    /// A message arrived out of order or in the wrong epoch.
    #[error("unexpected {got:?} in {epoch:?} (expected {expected})")]
    UnexpectedMessage {
        /// What arrived.
        got: MessageType,
        /// Where.
        epoch: Epoch,
        /// What the state machine waited for.
        expected: &'static str,
    },
    /// The client offered a version the server does not speak.
    #[error("unsupported version {0:#010x}")]
    UnsupportedVersion(u32),
    /// No cipher suite in common.
    #[error("no cipher suite in common")]
    NoCommonSuite,
    /// The server's signature algorithm is not among the client's.
    #[error("the peer signs with {0:?}, which is not accepted")]
    UnacceptedSignatureAlgorithm(SigAlg),
    /// The server chose a suite the client did not offer.
    #[error("server chose {0:?}, which was not offered")]
    SuiteNotOffered(CipherSuite),
    /// The server chose a weaker suite than both sides support: a downgrade.
    #[error("cipher suite downgrade: server chose {chosen:?} though both support {expected:?}")]
    Downgrade {
        /// What the server chose.
        chosen: CipherSuite,
        /// What the client's preference and the server's list call for.
        expected: CipherSuite,
    },
    /// The key exchange failed.
    #[error("key exchange failed: {0}")]
    KeyExchange(#[from] KexError),
    /// The peer's certificate was refused.
    #[error("peer certificate refused: {0}")]
    Certificate(#[from] CertError),
    /// The peer presented a key other than the pinned one.
    #[error("peer key does not match the pinned key")]
    PinMismatch,
    /// The peer's transcript signature does not verify.
    #[error("peer's CertificateVerify signature does not verify")]
    BadSignature,
    /// The peer's Finished MAC does not verify.
    #[error("peer's Finished does not verify (transcript mismatch or tampering)")]
    FinishedMismatch,
    /// The server requires client authentication and the client has no credential.
    #[error("server requires client authentication; configure a client credential")]
    ClientAuthRequired,
    /// The client's credential type does not fit the server's trust mode, or it is missing.
    #[error("client did not authenticate")]
    ClientAuthMissing,
    /// A handshake message exceeded the buffering limit.
    #[error("handshake data exceeds {MAX_BUFFERED} buffered bytes")]
    BufferExceeded,
    /// The client offered application protocols (ALPN), none of which the server speaks.
    #[error("no application protocol in common: the client offered {offered}")]
    NoApplicationProtocol {
        /// The client's offer, for the log (names shown lossily as text).
        offered: String,
    },
    /// The server selected an application protocol the client did not offer.
    #[error("the server selected an application protocol that was not offered")]
    ProtocolNotOffered,
    /// The client's PSK binder does not verify for the ticket it offered: it does not
    /// hold the ticket's key.
    #[error("the resumption binder does not verify (the client does not hold the ticket's key)")]
    BadBinder,
    /// The server broke the resumption protocol: it accepted a ticket that was not
    /// offered, or asked a resumed client to authenticate.
    #[error("resumption protocol violation: {0}")]
    BadResumption(&'static str),
    /// A batch signature came from a client, or to a client that did not accept them.
    #[error("a batch signature that was not asked for")]
    UnsolicitedBatchSignature,
}

/// New traffic secrets for an epoch.
#[derive(Debug)]
pub struct KeyChange {
    /// The epoch these secrets protect.
    pub epoch: Epoch,
    /// The suite.
    pub suite: CipherSuite,
    /// Client-to-server secret.
    pub client: Secret,
    /// Server-to-client secret.
    pub server: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ClientWaitServerHello,
    ClientWaitEncryptedExtensions,
    ClientWaitCertificate,
    ClientWaitCertificateVerify,
    ClientWaitFinished,
    ServerWaitClientHello,
    /// The server flight is written up to the Certificate; its CertificateVerify waits
    /// for a signature ([`Handshake::signature_request`]).
    ServerSigning,
    ServerWaitClientCertificate,
    ServerWaitClientCertificateVerify,
    ServerWaitClientFinished,
    Complete,
    Failed,
}

impl State {
    fn expected(self) -> &'static str {
        match self {
            Self::ClientWaitServerHello => "ServerHello in Initial",
            Self::ClientWaitEncryptedExtensions => "EncryptedExtensions in Handshake",
            Self::ClientWaitCertificate | Self::ServerWaitClientCertificate => {
                "Certificate in Handshake"
            }
            Self::ClientWaitCertificateVerify | Self::ServerWaitClientCertificateVerify => {
                "CertificateVerify in Handshake"
            }
            Self::ClientWaitFinished | Self::ServerWaitClientFinished => "Finished in Handshake",
            Self::ServerWaitClientHello => "ClientHello in Initial",
            Self::ServerSigning => "nothing (the server is signing)",
            Self::Complete => "nothing (handshake complete)",
            Self::Failed => "nothing (handshake failed)",
        }
    }
}

enum Role {
    Client {
        cfg: Arc<ClientConfig>,
        kex: Option<Box<ClientKex>>,
        client_auth: bool,
        /// The ticket offered and the early secret from its PSK, until the ServerHello.
        offered: Option<Box<(StoredTicket, EarlySecret)>>,
        /// The ticket resumed from (its server key stands for the server's credential).
        resumed: Option<Box<StoredTicket>>,
    },
    Server {
        cfg: Arc<ServerConfig>,
        tickets: Arc<TicketKeys>,
    },
}

/// One side of a handshake.
pub struct Handshake {
    role: Role,
    state: State,
    transcript: Transcript,
    buffers: [Vec<u8>; 3],
    outgoing: [Vec<u8>; 3],
    keys: Vec<KeyChange>,
    secrets: Option<HandshakeSecrets>,
    /// The exporter master secret, from the server's Finished on.
    exporter: Option<Secret>,
    /// The resumption master secret (client), from its Finished on: tickets' PSKs.
    resumption_secret: Option<Secret>,
    /// Whether this handshake resumed.
    resumption: Resumption,
    suite: Option<CipherSuite>,
    peer_params: Option<TransportParams>,
    peer_key: Option<VerifyingKey>,
    peer_name: Option<String>,
    /// The application protocol selected (ALPN).
    alpn: Option<Vec<u8>>,
    /// This side's transport parameters for this connection.
    params: TransportParams,
    /// The server's signature still to make, in [`State::ServerSigning`].
    signing: Option<PendingSignature>,
    /// The handshakes that shared this server's signature (1: signed alone).
    batch_size: u32,
    /// How early data went.
    early_data: EarlyData,
    /// The 0-RTT key (client: to send; server: to receive), until the connection takes it.
    early_key: Option<(CipherSuite, Secret)>,
}

/// What the server flight still needs once its CertificateVerify is signed.
#[derive(Debug, Clone, Copy)]
struct PendingSignature {
    alg: SigAlg,
    /// The client accepts a batch signature.
    batch: bool,
    /// The flight asks the client to authenticate.
    client_auth: bool,
}

/// A server handshake waiting for its CertificateVerify signature: the transcript hash to
/// sign, alone ([`Handshake::sign_alone`]) or in a batch with others
/// ([`Handshake::sign_in_batch`]).
#[derive(Debug, Clone)]
pub struct SignatureRequest {
    /// The transcript hash the signature covers.
    pub transcript: [u8; 32],
    /// Whether the client accepts a batch signature and the server signs in batches.
    pub batch: bool,
    /// The server configuration whose credential signs.
    pub config: Arc<ServerConfig>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("state", &self.state)
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// A server, waiting for a ClientHello. `params` are this connection's transport
    /// parameters (the connection fills in its CIDs and reset token); `tickets` seal the
    /// session tickets it issues and open those clients offer.
    pub fn server(
        cfg: Arc<ServerConfig>,
        params: TransportParams,
        tickets: Arc<TicketKeys>,
    ) -> Self {
        Self::new(
            Role::Server { cfg, tickets },
            State::ServerWaitClientHello,
            params,
        )
    }

    fn new(role: Role, state: State, params: TransportParams) -> Self {
        Self {
            role,
            state,
            transcript: Transcript::default(),
            buffers: Default::default(),
            outgoing: Default::default(),
            keys: Vec::new(),
            secrets: None,
            exporter: None,
            resumption_secret: None,
            resumption: Resumption::NotOffered,
            suite: None,
            peer_params: None,
            peer_key: None,
            peer_name: None,
            alpn: None,
            params,
            signing: None,
            batch_size: 0,
            early_data: EarlyData::NotOffered,
            early_key: None,
        }
    }

    /// Whether this is the client side.
    pub fn is_client(&self) -> bool {
        matches!(self.role, Role::Client { .. })
    }

    /// Whether the handshake failed.
    pub fn is_failed(&self) -> bool {
        self.state == State::Failed
    }

    /// Whether the handshake finished successfully.
    pub fn is_complete(&self) -> bool {
        self.state == State::Complete
    }

    /// Whether this handshake resumed from a session ticket, and if one was refused, why
    /// (known from the ServerHello on).
    pub fn resumption(&self) -> Resumption {
        self.resumption
    }

    /// How early data (0-RTT) went: offered, accepted or refused, and why.
    pub fn early_data(&self) -> EarlyData {
        self.early_data
    }

    /// The 0-RTT packet key's suite and secret (the client's early traffic secret): the
    /// client's from its ClientHello on when it offers early data, the server's when it
    /// accepts them. Taken once.
    pub fn take_early_key(&mut self) -> Option<(CipherSuite, Secret)> {
        self.early_key.take()
    }

    /// The server's transport parameters a client remembers from the connection that
    /// earned its ticket, while its early data waits for the server's answer: 0-RTT data
    /// is sent under their limits.
    pub fn remembered_params(&self) -> Option<&TransportParams> {
        match &self.role {
            Role::Client {
                offered: Some(o), ..
            } if self.early_data == EarlyData::Pending => o.0.early.as_ref().map(|e| &e.params),
            _ => None,
        }
    }

    /// The negotiated suite, once known.
    pub fn suite(&self) -> Option<CipherSuite> {
        self.suite
    }

    /// Keying material exported for `label` and `context` into `out` (RFC 8446 §7.5), from
    /// the server's Finished on.
    ///
    /// # Errors
    /// [`ExportError::HandshakeIncomplete`] before that; a label or output over the limits.
    pub fn export_keying_material(
        &self,
        out: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), ExportError> {
        let exporter = self
            .exporter
            .as_ref()
            .ok_or(ExportError::HandshakeIncomplete)?;
        schedule::export(exporter, label, context, out)
    }

    /// The peer's transport parameters, once received.
    pub fn peer_params(&self) -> Option<&TransportParams> {
        self.peer_params.as_ref()
    }

    /// The peer's authenticated public key, once verified.
    pub fn peer_key(&self) -> Option<&VerifyingKey> {
        self.peer_key.as_ref()
    }

    /// The application protocol selected (ALPN), once the server chose one.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// The server name the client asked for (server), or this client's (client).
    pub fn server_name(&self) -> Option<&str> {
        match &self.role {
            Role::Client { cfg, .. } => Some(&cfg.server_name),
            Role::Server { .. } => self.peer_name.as_deref(),
        }
    }

    /// The server name the client asked for (servers only).
    pub fn requested_server_name(&self) -> Option<&str> {
        self.peer_name.as_deref()
    }

    /// Bytes to send in `epoch`'s CRYPTO stream.
    pub fn take_outgoing(&mut self, epoch: Epoch) -> Vec<u8> {
        std::mem::take(&mut self.outgoing[epoch as usize])
    }

    /// Key changes, in the order they became available (Handshake, then 1-RTT).
    pub fn take_keys(&mut self) -> Vec<KeyChange> {
        std::mem::take(&mut self.keys)
    }

    fn send(&mut self, epoch: Epoch, m: &Message) {
        let enc = m.encode();
        self.transcript.add(&enc);
        self.outgoing[epoch as usize].extend_from_slice(&enc);
    }

    /// Feeds the next in-order bytes of `epoch`'s CRYPTO stream. `now_unix` is the wall-clock
    /// time (Unix seconds) for certificate validity.
    ///
    /// # Errors
    /// A [`HandshakeError`]; the handshake is then failed for good.
    pub fn read(
        &mut self,
        epoch: Epoch,
        data: &[u8],
        now_unix: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(), HandshakeError> {
        if self.state == State::Failed {
            return Err(HandshakeError::FinishedMismatch);
        }
        let buf = &mut self.buffers[epoch as usize];
        if buf.len() + data.len() > MAX_BUFFERED {
            self.state = State::Failed;
            return Err(HandshakeError::BufferExceeded);
        }
        buf.extend_from_slice(data);
        loop {
            let buf = &self.buffers[epoch as usize];
            let len = match Message::frame_len(buf) {
                Ok(Some(len)) => len,
                Ok(None) => {
                    // Nothing left of a message: give the buffer's memory back (a
                    // ClientHello's 1.3 KB would stay for the connection's life).
                    let buf = &mut self.buffers[epoch as usize];
                    if buf.is_empty() {
                        *buf = Vec::new();
                    }
                    return Ok(());
                }
                Err(e) => return Err(self.fail(e.into())),
            };
            let raw: Vec<u8> = self.buffers[epoch as usize].drain(..len).collect();
            let msg = match Message::decode(&raw) {
                Ok(m) => m,
                Err(e) => return Err(self.fail(e.into())),
            };
            if let Err(e) = self.handle(epoch, &raw, msg, now_unix, rng) {
                return Err(self.fail(e));
            }
        }
    }

    fn fail(&mut self, e: HandshakeError) -> HandshakeError {
        self.state = State::Failed;
        e
    }

    fn unexpected(&self, epoch: Epoch, got: MessageType) -> HandshakeError {
        HandshakeError::UnexpectedMessage {
            got,
            epoch,
            expected: self.state.expected(),
        }
    }

    fn handle(
        &mut self,
        epoch: Epoch,
        raw: &[u8],
        msg: Message,
        now: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(), HandshakeError> {
        use State as S;
        let want_epoch = match self.state {
            S::ClientWaitServerHello | S::ServerWaitClientHello => Epoch::Initial,
            S::Complete => Epoch::OneRtt,
            _ => Epoch::Handshake,
        };
        if epoch != want_epoch {
            return Err(self.unexpected(epoch, msg.kind()));
        }
        match (self.state, msg) {
            (S::ServerWaitClientHello, Message::ClientHello(ch)) => {
                // With a ticket offered, the binder (the message's last field: the decoder
                // refuses trailing bytes) covers the ClientHello up to itself. The
                // transcript hashes that part once: its hash so far is the binder's input.
                let binder_input = if ch.psk.is_some() {
                    let cut = raw.len().saturating_sub(messages::BINDER_LEN);
                    self.transcript.add(&raw[..cut]);
                    let h = self.transcript.hash();
                    self.transcript.add(&raw[cut..]);
                    Some(h)
                } else {
                    self.transcript.add(raw);
                    None
                };
                self.server_flight(binder_input, ch, now, rng)
            }
            (S::ClientWaitServerHello, Message::ServerHello(sh)) => {
                self.client_on_server_hello(raw, sh)
            }
            (S::ClientWaitEncryptedExtensions, Message::EncryptedExtensions(ee)) => {
                self.transcript.add(raw);
                let mut next = S::ClientWaitCertificate;
                if let Role::Client {
                    client_auth,
                    cfg,
                    resumed,
                    ..
                } = &mut self.role
                {
                    if ee.early_data && (self.early_data != EarlyData::Pending || resumed.is_none())
                    {
                        return Err(HandshakeError::BadResumption(
                            "the server accepted early data that was not offered",
                        ));
                    }
                    if self.early_data == EarlyData::Pending {
                        self.early_data = if ee.early_data {
                            // The server may not grant less than the client remembered
                            // (RFC 9000 §7.4.1).
                            let remembered = resumed
                                .as_ref()
                                .and_then(|t| t.early.as_ref())
                                .map(|e| e.params.early_limits_digest());
                            if remembered != Some(ee.params.early_limits_digest()) {
                                return Err(HandshakeError::BadResumption(
                                    "early data accepted under other transport limits",
                                ));
                            }
                            EarlyData::Accepted
                        } else {
                            EarlyData::Refused(EarlyDataRefusal::Declined)
                        };
                    }
                    if let Some(t) = resumed {
                        // The ticket stands for the server's credential.
                        if ee.client_auth {
                            return Err(HandshakeError::BadResumption(
                                "client authentication asked for on a resumed handshake",
                            ));
                        }
                        self.peer_key = Some(t.server_key.clone());
                        next = S::ClientWaitFinished;
                    }
                    if ee.client_auth && cfg.credential.is_none() {
                        return Err(HandshakeError::ClientAuthRequired);
                    }
                    *client_auth = ee.client_auth;
                }
                if let Role::Client { cfg, .. } = &self.role
                    && let Some(p) = &ee.alpn
                    && !cfg.alpn.contains(p)
                {
                    return Err(HandshakeError::ProtocolNotOffered);
                }
                self.alpn = ee.alpn;
                self.peer_params = Some(ee.params);
                self.state = next;
                Ok(())
            }
            (S::ClientWaitCertificate, Message::Certificate(c)) => {
                let Role::Client { cfg, .. } = &self.role else {
                    unreachable!("client state")
                };
                let key = check_credential(&cfg.trust, &c, Some(&cfg.server_name), now)?;
                if !cfg.sig_algs.contains(&key.alg()) {
                    return Err(HandshakeError::UnacceptedSignatureAlgorithm(key.alg()));
                }
                self.peer_key = Some(key);
                self.transcript.add(raw);
                self.state = S::ClientWaitCertificateVerify;
                Ok(())
            }
            (S::ClientWaitCertificateVerify, Message::CertificateVerify(cv)) => {
                self.check_verify(&cv, SERVER_CV_CONTEXT)?;
                self.transcript.add(raw);
                self.state = S::ClientWaitFinished;
                Ok(())
            }
            (S::ClientWaitFinished, Message::Finished(mac)) => {
                self.client_on_finished(raw, &mac, rng)
            }
            (S::ServerWaitClientCertificate, Message::Certificate(c)) => {
                let Role::Server { cfg, .. } = &self.role else {
                    unreachable!("server state")
                };
                let trust = cfg
                    .client_auth
                    .as_ref()
                    .ok_or(HandshakeError::ClientAuthMissing)?;
                self.peer_key = Some(check_credential(trust, &c, None, now)?);
                self.transcript.add(raw);
                self.state = S::ServerWaitClientCertificateVerify;
                Ok(())
            }
            (S::ServerWaitClientCertificateVerify, Message::CertificateVerify(cv)) => {
                self.check_verify(&cv, CLIENT_CV_CONTEXT)?;
                self.transcript.add(raw);
                self.state = S::ServerWaitClientFinished;
                Ok(())
            }
            (S::ServerWaitClientFinished, Message::Finished(mac)) => {
                let secrets = self.secrets.take().expect("set with the server flight");
                if !verify_finished(&secrets.client, &self.transcript.hash(), &mac) {
                    return Err(HandshakeError::FinishedMismatch);
                }
                self.transcript.add(raw);
                self.state = S::Complete;
                let resumption = secrets.resumption(&self.transcript.hash());
                self.issue_tickets(&resumption, now, rng);
                Ok(())
            }
            (S::Complete, Message::NewSessionTicket(nst)) if self.is_client() => {
                self.store_ticket(&nst, now);
                Ok(())
            }
            (S::ServerWaitClientCertificate, Message::Finished(_)) => {
                Err(HandshakeError::ClientAuthMissing)
            }
            (_, m) => Err(self.unexpected(epoch, m.kind())),
        }
    }

    fn check_verify(&self, cv: &CertificateVerify, context: &[u8]) -> Result<(), HandshakeError> {
        let key = self.peer_key.as_ref().expect("set by the Certificate step");
        if cv.alg != key.alg() {
            return Err(HandshakeError::BadSignature);
        }
        let transcript = self.transcript.hash();
        match &cv.batch {
            None => key
                .verify(context, &transcript, &cv.signature)
                .map_err(|_| HandshakeError::BadSignature),
            // Only a server signs in batches, and only for a client that asked for them.
            Some(proof) => match &self.role {
                Role::Client { cfg, .. } if cfg.batch_signatures => {
                    batch::verify(key, &transcript, proof, &cv.signature)
                        .map_err(|_| HandshakeError::BadSignature)
                }
                _ => Err(HandshakeError::UnsolicitedBatchSignature),
            },
        }
    }
}

/// Checks a peer's Certificate message under `trust`, returning its public key.
fn check_credential(
    trust: &Trust,
    c: &CertificateMsg,
    server_name: Option<&str>,
    now: u64,
) -> Result<VerifyingKey, HandshakeError> {
    match (trust, c.kind) {
        (Trust::PinnedKey(pinned), CredentialKind::RawPublicKey) => {
            if c.data != pinned.as_bytes() {
                return Err(HandshakeError::PinMismatch);
            }
            Ok(pinned.clone())
        }
        (Trust::PinnedKey(pinned), CredentialKind::Certificate) => {
            let cert = Certificate::decode(&c.data)?;
            if cert.key != *pinned {
                return Err(HandshakeError::PinMismatch);
            }
            Ok(cert.key)
        }
        (Trust::PinnedKey(pinned), CredentialKind::CertificateChain) => {
            let chain = chain::decode(&c.data)?;
            if chain[0].key != *pinned {
                return Err(HandshakeError::PinMismatch);
            }
            Ok(chain[0].key.clone())
        }
        (Trust::Anchors(anchors), CredentialKind::Certificate) => {
            let cert = Certificate::decode(&c.data)?;
            Ok(cert.verify(anchors, server_name, now)?.clone())
        }
        (Trust::Anchors(anchors), CredentialKind::CertificateChain) => {
            let chain = chain::decode(&c.data)?;
            Ok(chain::verify(&chain[0], &chain[1..], anchors, server_name, now)?.clone())
        }
        (Trust::Anchors(_), CredentialKind::RawPublicKey) => {
            Err(HandshakeError::Certificate(CertError::Role(
                "a raw public key cannot be checked against trust anchors; pin it instead",
            )))
        }
    }
}

#[cfg(test)]
mod batch_tests;
#[cfg(test)]
mod early_tests;
#[cfg(test)]
mod resume_tests;
#[cfg(test)]
mod tests;
