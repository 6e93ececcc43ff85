//! Session tickets: what a server seals after a handshake so that the client can resume.
//!
//! A ticket is `generation (1) || nonce (12) || ChaCha20-Poly1305(plaintext) || tag (16)`
//! under the ticket key of that generation of the cluster keys
//! ([`ClusterKeys`](crate::conn::ClusterKeys), which build these keys with
//! [`ClusterKeys::ticket_keys`](crate::conn::ClusterKeys::ticket_keys): every server of a cluster opens every
//! other's tickets, and a key rotation keeps the tickets of the generations still held),
//! with the associated data `"stoq ticket v1"`. The plaintext is
//!
//! ```text
//! issued (u64, Unix seconds) || lifetime (u32, seconds) || psk (32)
//!   || credential (8: SHA-256 of the server's public key, truncated) || server name (u8 len)
//!   || age_add (u32) || early (u8: 0, or 1 followed by)
//!      suite (u16) || limits digest (8) || ALPN (u8 len)
//! ```
//!
//! `age_add` obfuscates the ticket age the client reports (RFC 8446 §4.2.11.1). A ticket
//! issued while the server accepts early data carries what 0-RTT must match: the cipher
//! suite and ALPN of the connection it came from and a digest of the server's transport
//! limits ([`TransportParams::early_limits_digest`](super::params::TransportParams)).
//!
//! The server keeps nothing per ticket: the ticket alone carries the PSK
//! (`Expand-Label(resumption master, "resumption", nonce)`) to whichever server of the
//! cluster opens it. A ticket that does not open, has expired, or names another server
//! name is *refused*: the handshake goes on as a full one, and the reason is counted
//! ([`TicketRefusal`]). A ticket that opens but whose binder does not verify fails the
//! handshake: the client does not hold the PSK.

use std::time::Duration;

use crate::crypto::provider::aead::{
    Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey,
};
use rand_core::RngCore;
use zeroize::Zeroizing;

use crate::codec::{Reader, Writer};
use crate::crypto::sig::VerifyingKey;
use crate::crypto::{Secret, TAG_LEN};

/// Cluster-key generations (0..=6, as `conn::keys` numbers them).
const GENERATIONS: usize = 7;

/// The associated data of every ticket.
const AAD: &[u8] = b"stoq ticket v2";
/// The longest ticket lifetime allowed (RFC 8446 §4.6.1: seven days).
pub const MAX_TICKET_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// How far ahead of this server's clock another server's may run for its tickets to be
/// accepted here.
const CLOCK_SKEW_S: u64 = 2;
/// The most tickets a server issues after one handshake.
pub const MAX_TICKETS_PER_CONNECTION: u8 = 8;

/// How a server issues session tickets.
///
/// ```
/// use std::time::Duration;
/// use stoq::handshake::TicketSettings;
/// let t = TicketSettings { lifetime: Duration::from_secs(3600), per_connection: 1 };
/// assert!(t.check().is_ok());
/// assert!(TicketSettings::disabled().check().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketSettings {
    /// How long a ticket may be used, at most [`MAX_TICKET_LIFETIME`]. Default: one day.
    pub lifetime: Duration,
    /// Tickets sent after each handshake (full or resumed), so that a client can open that
    /// many connections at once by resumption; each is single-use at the client. `0`
    /// turns resumption off: no ticket is issued and every offer is refused. Default: 2.
    pub per_connection: u8,
}

impl Default for TicketSettings {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(24 * 3600),
            per_connection: 2,
        }
    }
}

impl TicketSettings {
    /// No tickets: every handshake is a full one.
    pub fn disabled() -> Self {
        Self {
            per_connection: 0,
            ..Self::default()
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// A lifetime of zero or over seven days, more than eight tickets per connection.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.lifetime.is_zero() || self.lifetime > MAX_TICKET_LIFETIME {
            return Err("ticket lifetime must be between 1 s and 7 days (RFC 8446 §4.6.1)");
        }
        if self.per_connection > MAX_TICKETS_PER_CONNECTION {
            return Err("at most 8 tickets per connection");
        }
        Ok(())
    }
}

/// Why a server refused a client's ticket (the handshake went on as a full one), or, at
/// the client, that the server did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TicketRefusal {
    /// The server does not resume (`TicketSettings::per_connection` is 0).
    Disabled,
    /// The ticket's key generation is not among the server's cluster keys (rotated away,
    /// or a ticket from another cluster).
    UnknownKey,
    /// The ticket does not authenticate: forged, corrupted, or sealed by another cluster.
    Invalid,
    /// The ticket's lifetime is over.
    Expired,
    /// The ticket was issued for another server name.
    ServerName,
    /// The server's key changed since the ticket was issued (a key replaced, perhaps
    /// because it leaked): clients must see the new one in a full handshake.
    Credential,
    /// The server authenticates its clients; a resumed handshake would skip that.
    ClientAuth,
    /// Seen at the client: the server did not accept the ticket (its reason stays there).
    Declined,
}

impl TicketRefusal {
    /// Every reason, in index order.
    pub const ALL: [Self; 8] = [
        Self::Disabled,
        Self::UnknownKey,
        Self::Invalid,
        Self::Expired,
        Self::ServerName,
        Self::Credential,
        Self::ClientAuth,
        Self::Declined,
    ];

    /// A short name, for metrics labels and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::UnknownKey => "unknown_key",
            Self::Invalid => "invalid",
            Self::Expired => "expired",
            Self::ServerName => "server_name",
            Self::Credential => "credential",
            Self::ClientAuth => "client_auth",
            Self::Declined => "declined",
        }
    }
}

/// How a connection's handshake went with respect to resumption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Resumption {
    /// No ticket was offered: a full handshake.
    #[default]
    NotOffered,
    /// The handshake resumed from a ticket: authenticated by its PSK, with a fresh hybrid
    /// key exchange and no signature.
    Accepted,
    /// A ticket was offered and refused, for this reason: a full handshake instead.
    Refused(TicketRefusal),
}

/// What a ticket carries.
pub(crate) struct TicketContents {
    /// When it was issued, Unix seconds.
    pub issued: u64,
    /// Its lifetime, seconds.
    pub lifetime_s: u32,
    /// The resumption PSK.
    pub psk: Secret,
    /// Which server key issued it (see [`credential_id`]).
    pub credential: [u8; 8],
    /// The server name of the connection that issued it.
    pub server_name: String,
    /// Added to the ticket age the client reports, modulo 2^32 (RFC 8446 §4.6.1).
    pub age_add: u32,
    /// Whether, and under what, the ticket allows early data.
    pub early: Option<EarlyTerms>,
}

/// What a 0-RTT handshake resuming a ticket must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EarlyTerms {
    /// The cipher suite of the connection that issued the ticket.
    pub suite: u16,
    /// [`TransportParams::early_limits_digest`](super::params::TransportParams) of the
    /// server's parameters then.
    pub limits: [u8; 8],
    /// The application protocol selected then (empty: none).
    pub alpn: Vec<u8>,
}

/// The keys that seal and open tickets, by cluster-key generation, and the settings.
pub struct TicketKeys {
    keys: [Option<LessSafeKey>; GENERATIONS],
    current: u8,
    settings: TicketSettings,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKeys")
            .field("current", &self.current)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TicketKeys {
    /// Ticket keys by generation (0..=6; others are ignored); new tickets use `current`'s,
    /// which must be among them. Servers get theirs from their cluster keys
    /// ([`ClusterKeys::ticket_keys`](crate::conn::ClusterKeys::ticket_keys)).
    ///
    /// # Panics
    /// If `current` has no key.
    pub fn new(
        current: u8,
        generations: impl IntoIterator<Item = (u8, Zeroizing<[u8; 32]>)>,
        settings: TicketSettings,
    ) -> Self {
        let mut keys: [Option<LessSafeKey>; GENERATIONS] = Default::default();
        for (g, k) in generations {
            if let Some(slot) = keys.get_mut(usize::from(g)) {
                *slot = Some(key(&k));
            }
        }
        assert!(
            keys.get(usize::from(current)).is_some_and(Option::is_some),
            "the current generation has a ticket key"
        );
        Self {
            keys,
            current,
            settings,
        }
    }

    /// The settings these keys issue tickets under.
    pub fn settings(&self) -> TicketSettings {
        self.settings
    }

    /// Seals a ticket.
    pub(crate) fn seal(&self, t: &TicketContents, rng: &mut impl RngCore) -> Vec<u8> {
        let key = self.keys[usize::from(self.current)]
            .as_ref()
            .expect("the current generation is held");
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let mut w = Writer::new();
        w.u8(self.current).bytes(&nonce);
        let body = w.buf.len();
        w.u64(t.issued).u32(t.lifetime_s).bytes(t.psk.as_bytes());
        w.bytes(&t.credential);
        w.vec8(t.server_name.as_bytes());
        w.u32(t.age_add);
        match &t.early {
            None => {
                w.u8(0);
            }
            Some(e) => {
                w.u8(1).u16(e.suite).bytes(&e.limits).vec8(&e.alpn);
            }
        }
        let mut out = w.buf;
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut out[body..],
            )
            .expect("a ticket fits the AEAD's limits");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Opens a ticket presented at `now` (Unix seconds).
    ///
    /// # Errors
    /// The [`TicketRefusal`]: unknown generation, not authentic or malformed, expired.
    pub(crate) fn open(&self, ticket: &[u8], now: u64) -> Result<TicketContents, TicketRefusal> {
        let (&generation, rest) = ticket.split_first().ok_or(TicketRefusal::Invalid)?;
        let key = self
            .keys
            .get(usize::from(generation))
            .and_then(Option::as_ref)
            .ok_or(TicketRefusal::UnknownKey)?;
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(TicketRefusal::Invalid);
        }
        let nonce: [u8; NONCE_LEN] = rest[..NONCE_LEN].try_into().expect("length checked");
        // Bounded by the ClientHello's ticket cap (`MAX_TICKET_LEN`).
        let mut body = Zeroizing::new(rest[NONCE_LEN..].to_vec());
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut body,
            )
            .map_err(|_| TicketRefusal::Invalid)?;
        let mut r = Reader::new(plain);
        let parse = |r: &mut Reader<'_>| -> Result<TicketContents, crate::codec::DecodeError> {
            let issued = r.u64()?;
            let lifetime_s = r.u32()?;
            let psk = Secret::new(r.array()?);
            let credential = r.array()?;
            let name = r.vec8()?;
            let age_add = r.u32()?;
            let early = match r.u8()? {
                0 => None,
                1 => Some(EarlyTerms {
                    suite: r.u16()?,
                    limits: r.array()?,
                    alpn: r.vec8()?.to_vec(),
                }),
                _ => return Err(crate::codec::DecodeError::Invalid("early flag")),
            };
            r.finish()?;
            Ok(TicketContents {
                issued,
                lifetime_s,
                psk,
                credential,
                server_name: String::from_utf8_lossy(name).into_owned(),
                age_add,
                early,
            })
        };
        // Authentic but malformed can only be a server bug or a key shared with another
        // format: refused all the same.
        let t = parse(&mut r).map_err(|_| TicketRefusal::Invalid)?;
        if t.issued > now.saturating_add(CLOCK_SKEW_S)
            || now.saturating_sub(t.issued) >= u64::from(t.lifetime_s)
        {
            return Err(TicketRefusal::Expired);
        }
        Ok(t)
    }
}

/// A short, stable name for a server's public key: the first 8 bytes of its SHA-256. A
/// ticket carries the name of the key that was proven in its full handshake, and a server
/// resumes only tickets of the key it holds now.
pub(crate) fn credential_id(public: &VerifyingKey) -> [u8; 8] {
    public.key_id()[..8].try_into().expect("8 of 32 bytes")
}

fn key(k: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, k).expect("32-byte key"))
}

impl TicketKeys {
    /// Opens `ticket` at `now` (Unix seconds), for the fuzzer: never panics, whatever the
    /// bytes. Returns the ticket's server name when it opens.
    pub fn fuzz_open(&self, ticket: &[u8], now: u64) -> Option<String> {
        self.open(ticket, now).ok().map(|t| t.server_name)
    }
}

/// Ticket keys for `(generation, secret)` pairs, the first current (tests).
#[cfg(test)]
pub(crate) fn test_keys(gens: &[(u8, [u8; 32])], settings: TicketSettings) -> TicketKeys {
    TicketKeys::new(
        gens[0].0,
        gens.iter().map(|&(g, k)| (g, Zeroizing::new(k))),
        settings,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn contents(issued: u64) -> TicketContents {
        TicketContents {
            issued,
            lifetime_s: 3600,
            psk: Secret::new([9; 32]),
            credential: [4; 8],
            server_name: "files.example".into(),
            age_add: 0x8000_0001,
            early: None,
        }
    }

    #[test]
    fn early_terms_round_trip() {
        let keys = test_keys(&[(1, [1; 32])], TicketSettings::default());
        let terms = EarlyTerms {
            suite: 0x1303,
            limits: [5; 8],
            alpn: b"h3".to_vec(),
        };
        let t = keys.seal(
            &TicketContents {
                early: Some(terms.clone()),
                ..contents(1_000)
            },
            &mut OsRng,
        );
        let opened = keys.open(&t, 1_000).unwrap();
        assert_eq!(opened.early, Some(terms));
        assert_eq!(opened.age_add, 0x8000_0001);
        assert_eq!(
            keys.open(&keys.seal(&contents(1_000), &mut OsRng), 1_000)
                .unwrap()
                .early,
            None
        );
    }

    #[test]
    fn a_ticket_opens_only_under_its_own_cluster_and_within_its_lifetime() {
        let keys = test_keys(&[(1, [1; 32])], TicketSettings::default());
        let t = keys.seal(&contents(1_000), &mut OsRng);
        assert!(t.len() < 110, "{} bytes", t.len());
        let opened = keys.open(&t, 1_000).unwrap();
        assert_eq!(opened.psk.as_bytes(), &[9; 32]);
        assert_eq!(opened.server_name, "files.example");
        assert_eq!(opened.credential, [4; 8]);
        assert_eq!(opened.lifetime_s, 3600);
        assert!(keys.open(&t, 4_599).is_ok());
        assert_eq!(keys.open(&t, 4_600).err(), Some(TicketRefusal::Expired));
        // Issued in the future beyond the allowed skew: refused too.
        assert_eq!(keys.open(&t, 997).err(), Some(TicketRefusal::Expired));

        // Another cluster's secret under the same generation never opens it.
        let other = test_keys(&[(1, [2; 32])], TicketSettings::default());
        assert_eq!(other.open(&t, 1_000).err(), Some(TicketRefusal::Invalid));
        // A generation the server does not hold.
        let rotated = test_keys(&[(2, [1; 32])], TicketSettings::default());
        assert_eq!(
            rotated.open(&t, 1_000).err(),
            Some(TicketRefusal::UnknownKey)
        );
        // A rotation that keeps generation 1 still opens it.
        let kept = test_keys(&[(2, [3; 32]), (1, [1; 32])], TicketSettings::default());
        assert!(kept.open(&t, 1_000).is_ok());
        assert_eq!(kept.seal(&contents(1_000), &mut OsRng)[0], 2);

        // Every flipped bit and every truncation is refused, never accepted.
        for i in 0..t.len() {
            let mut bad = t.clone();
            bad[i] ^= 0x10;
            assert!(keys.open(&bad, 1_000).is_err(), "bit flip at {i}");
            assert!(keys.open(&t[..i], 1_000).is_err(), "cut to {i}");
        }
    }

    #[test]
    fn settings_are_checked() {
        assert!(TicketSettings::default().check().is_ok());
        let long = TicketSettings {
            lifetime: MAX_TICKET_LIFETIME + Duration::from_secs(1),
            ..TicketSettings::default()
        };
        assert!(long.check().is_err());
        let zero = TicketSettings {
            lifetime: Duration::ZERO,
            ..TicketSettings::default()
        };
        assert!(zero.check().is_err());
        let many = TicketSettings {
            per_connection: 9,
            ..TicketSettings::default()
        };
        assert!(many.check().is_err());
    }
}
