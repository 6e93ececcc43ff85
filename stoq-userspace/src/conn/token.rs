//! Stateless address validation: Retry tokens, the Retry integrity tag, and stateless
//! reset tokens.
//!
//! - A **Retry token** is `generation (1) || nonce (12) || ChaCha20-Poly1305(issued_ms ||
//!   odcid_len || odcid)` under the token key of that generation of the cluster keys (see
//!   [`super::keys`]), with the client's address as associated data;
//!   `issued_ms` is Unix time. The server keeps no state for it: the token alone proves
//!   that the client received the Retry at that address, and when, to any server holding
//!   the key.
//! - An **address token** (sent in NEW_TOKEN after a handshake, RFC 9000 §8.1.3) is
//!   `0x80 | generation (1) || nonce (12) || ChaCha20-Poly1305(issued_ms)` with
//!   `"stoq address token" || the client's IP address` as associated data: the port is
//!   left out, since a returning client comes from a new one. It proves that the client
//!   received packets at that address before; a server under load admits its next
//!   connection without a Retry round trip. A token that does not open, or has expired,
//!   is treated as no token (a Retry under load), never as an error.
//! - The **Retry integrity tag** authenticates a Retry against the client's original DCID
//!   (RFC 9001 §5.8's construction, with a STOQ-specific fixed key), so an off-path attacker
//!   cannot inject one.
//! - A **stateless reset token** is `HMAC-SHA256(reset_key, cid)[..16]`: any server holding
//!   the key can reset a connection whose state it lost, without having stored anything.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use crate::crypto::provider::aead::{
    Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey,
};
use hmac::{Hmac, Mac};
use rand_core::RngCore;
use sha2::Sha256;
use stoq_common::cid::{ConnectionId, MAX_CID_LEN};
use zeroize::Zeroizing;

use crate::crypto::{TAG_LEN, expand_label, extract};
use crate::handshake::schedule::INITIAL_SALT;

/// How far ahead of this server's clock another server's may run for its tokens to be
/// accepted here.
pub(crate) const CLOCK_SKEW_MS: u64 = 2_000;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token did not decrypt: forged, corrupted, from another server, or for another
    /// client address.
    #[error("token does not authenticate (forged, or bound to another address)")]
    Invalid,
    /// The token is older than the configured lifetime.
    #[error("token expired")]
    Expired,
}

/// The key that seals Retry tokens.
pub(crate) struct TokenKey(LessSafeKey);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

fn addr_aad(addr: &SocketAddr, out: &mut [u8; 18]) -> usize {
    match addr {
        SocketAddr::V4(a) => {
            out[..4].copy_from_slice(&a.ip().octets());
            out[4..6].copy_from_slice(&a.port().to_be_bytes());
            6
        }
        SocketAddr::V6(a) => {
            out[..16].copy_from_slice(&a.ip().octets());
            out[16..18].copy_from_slice(&a.port().to_be_bytes());
            18
        }
    }
}

impl TokenKey {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Self(LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, key).expect("32-byte key"),
        ))
    }

    /// Seals a token for `remote`, remembering `odcid` and the issue time (Unix
    /// milliseconds); it starts with `generation`, this key's generation.
    pub(crate) fn seal(
        &self,
        rng: &mut impl RngCore,
        generation: u8,
        remote: &SocketAddr,
        odcid: &ConnectionId,
        issued_ms: u64,
    ) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(1 + NONCE_LEN + 9 + odcid.len() + TAG_LEN);
        out.push(generation);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&issued_ms.to_be_bytes());
        out.push(odcid.len() as u8);
        out.extend_from_slice(odcid.as_bytes());
        let mut aad = [0u8; 18];
        let n = addr_aad(remote, &mut aad);
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..n]),
                &mut out[1 + NONCE_LEN..],
            )
            .expect("token fits the AEAD's limits");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Opens a token presented by `remote` (without its generation byte, which chose this
    /// key): the original DCID and the nonce (a unique id for replay tracking). A token
    /// issued up to [`CLOCK_SKEW_MS`] in the future (another server's clock) is accepted.
    pub(crate) fn open(
        &self,
        token: &[u8],
        remote: &SocketAddr,
        now_ms: u64,
        lifetime_ms: u64,
    ) -> Result<(ConnectionId, [u8; NONCE_LEN]), TokenError> {
        if token.len() < NONCE_LEN + 9 + TAG_LEN
            || token.len() > NONCE_LEN + 9 + MAX_CID_LEN + TAG_LEN
        {
            return Err(TokenError::Invalid);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&token[..NONCE_LEN]);
        let mut body = [0u8; 9 + MAX_CID_LEN + TAG_LEN];
        let body = &mut body[..token.len() - NONCE_LEN];
        body.copy_from_slice(&token[NONCE_LEN..]);
        let mut aad = [0u8; 18];
        let n = addr_aad(remote, &mut aad);
        let plain = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..n]),
                body,
            )
            .map_err(|_| TokenError::Invalid)?;
        let issued = u64::from_be_bytes(plain[..8].try_into().expect("8 bytes"));
        let len = usize::from(plain[8]);
        let odcid = plain
            .get(9..9 + len)
            .filter(|_| plain.len() == 9 + len)
            .and_then(|s| ConnectionId::from_slice(s).ok())
            .ok_or(TokenError::Invalid)?;
        if issued > now_ms.saturating_add(CLOCK_SKEW_MS)
            || now_ms.saturating_sub(issued) > lifetime_ms
        {
            return Err(TokenError::Expired);
        }
        Ok((odcid, nonce))
    }
}

/// The first byte's flag that marks an address token (its low bits are the generation).
pub(crate) const ADDRESS_TOKEN: u8 = 0x80;

fn address_aad(ip: IpAddr, out: &mut [u8; 34]) -> usize {
    const LABEL: &[u8] = b"stoq address token";
    out[..LABEL.len()].copy_from_slice(LABEL);
    let n = LABEL.len();
    match ip {
        IpAddr::V4(a) => {
            out[n..n + 4].copy_from_slice(&a.octets());
            n + 4
        }
        IpAddr::V6(a) => {
            out[n..n + 16].copy_from_slice(&a.octets());
            n + 16
        }
    }
}

impl TokenKey {
    /// Seals an address token for a client at `ip`, issued at `issued_ms` (Unix ms).
    pub(crate) fn seal_address(
        &self,
        rng: &mut impl RngCore,
        generation: u8,
        ip: IpAddr,
        issued_ms: u64,
    ) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(1 + NONCE_LEN + 8 + TAG_LEN);
        out.push(ADDRESS_TOKEN | generation);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&issued_ms.to_be_bytes());
        let mut aad = [0u8; 34];
        let n = address_aad(ip, &mut aad);
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..n]),
                &mut out[1 + NONCE_LEN..],
            )
            .expect("a token fits the AEAD's limits");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Opens an address token presented from `ip` (without its first byte).
    fn open_address(
        &self,
        token: &[u8],
        ip: IpAddr,
        now_ms: u64,
        lifetime_ms: u64,
    ) -> Result<(), TokenError> {
        if token.len() != NONCE_LEN + 8 + TAG_LEN {
            return Err(TokenError::Invalid);
        }
        let nonce: [u8; NONCE_LEN] = token[..NONCE_LEN].try_into().expect("length checked");
        let mut body = [0u8; 8 + TAG_LEN];
        body.copy_from_slice(&token[NONCE_LEN..]);
        let mut aad = [0u8; 34];
        let n = address_aad(ip, &mut aad);
        let plain = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..n]),
                &mut body,
            )
            .map_err(|_| TokenError::Invalid)?;
        let issued = u64::from_be_bytes(plain[..8].try_into().expect("8 bytes"));
        if issued > now_ms.saturating_add(CLOCK_SKEW_MS)
            || now_ms.saturating_sub(issued) > lifetime_ms
        {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

/// Whether `token` is an address token (from NEW_TOKEN) rather than a Retry token.
pub(crate) fn is_address_token(token: &[u8]) -> bool {
    token.first().is_some_and(|b| b & ADDRESS_TOKEN != 0)
}

/// Opens an address token from a client at `ip` with the keys of `keys`, indexed by
/// generation.
pub(crate) fn open_address_token(
    keys: &[Option<TokenKey>],
    token: &[u8],
    ip: IpAddr,
    now_ms: u64,
    lifetime_ms: u64,
) -> Result<(), TokenError> {
    let (&first, body) = token.split_first().ok_or(TokenError::Invalid)?;
    if first & ADDRESS_TOKEN == 0 {
        return Err(TokenError::Invalid);
    }
    match keys.get(usize::from(first & !ADDRESS_TOKEN)) {
        Some(Some(key)) => key.open_address(body, ip, now_ms, lifetime_ms),
        _ => Err(TokenError::Invalid),
    }
}

/// Opens a Retry token (its first byte names the generation whose key opens the rest)
/// with the keys of `keys`, indexed by generation.
pub(crate) fn open_token(
    keys: &[Option<TokenKey>],
    token: &[u8],
    remote: &SocketAddr,
    now_ms: u64,
    lifetime_ms: u64,
) -> Result<(ConnectionId, [u8; NONCE_LEN]), TokenError> {
    let (&g, body) = token.split_first().ok_or(TokenError::Invalid)?;
    match keys.get(usize::from(g)) {
        Some(Some(key)) => key.open(body, remote, now_ms, lifetime_ms),
        _ => Err(TokenError::Invalid),
    }
}

/// Token opening for the fuzz target (`fuzz/fuzz_targets/tokens.rs`): opens `token` as a
/// server holding `keys` would, for `remote` at `now_ms`; whether it was accepted.
#[doc(hidden)]
pub fn fuzz_open_token(
    keys: &super::keys::ClusterKeys,
    token: &[u8],
    remote: &SocketAddr,
    now_ms: u64,
) -> bool {
    let table: Vec<Option<TokenKey>> = (0..super::keys::GENERATIONS as u8)
        .map(|g| keys.token_key(g).map(|k| TokenKey::new(&k)))
        .collect();
    open_token(&table, token, remote, now_ms, 10_000).is_ok()
        || open_address_token(&table, token, remote.ip(), now_ms, 10_000).is_ok()
}

/// Seals a token as a server holding `keys` would (for the fuzz target's seeds).
#[doc(hidden)]
pub fn fuzz_seal_token(
    keys: &super::keys::ClusterKeys,
    rng: &mut impl RngCore,
    remote: &SocketAddr,
    odcid: &ConnectionId,
    issued_ms: u64,
) -> Vec<u8> {
    let g = keys.current();
    let k = TokenKey::new(&keys.token_key(g).expect("the current generation has a key"));
    k.seal(rng, g, remote, odcid, issued_ms)
}

fn retry_key() -> &'static LessSafeKey {
    static KEY: OnceLock<LessSafeKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let prk = extract(&INITIAL_SALT, b"retry integrity");
        let mut k = Zeroizing::new([0u8; 32]);
        expand_label(&prk[..], b"retry key", &[], &mut k[..]);
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &k[..]).expect("32-byte key"))
    })
}

/// The Retry integrity tag over the pseudo-packet `odcid_len || odcid || retry` (the Retry
/// packet without its tag).
pub(crate) fn retry_tag(odcid: &[u8], retry_without_tag: &[u8]) -> [u8; TAG_LEN] {
    let mut aad = Vec::with_capacity(1 + odcid.len() + retry_without_tag.len());
    aad.push(odcid.len() as u8);
    aad.extend_from_slice(odcid);
    aad.extend_from_slice(retry_without_tag);
    let tag = retry_key()
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([0; NONCE_LEN]),
            Aad::from(&aad[..]),
            &mut [],
        )
        .expect("empty plaintext");
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Checks a received Retry packet's tag in constant time.
pub(crate) fn retry_tag_ok(odcid: &[u8], packet: &[u8]) -> bool {
    let Some(split) = packet.len().checked_sub(TAG_LEN) else {
        return false;
    };
    let want = retry_tag(odcid, &packet[..split]);
    crate::crypto::ct_eq(&want, &packet[split..])
}

/// The stateless reset token of `cid` under `key`.
pub(crate) fn reset_token(key: &[u8; 32], cid: &ConnectionId) -> [u8; 16] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(cid.as_bytes());
    let full = mac.finalize().into_bytes();
    let mut t = [0u8; 16];
    t.copy_from_slice(&full[..16]);
    t
}

#[cfg(test)]
mod tests {
    use rand_core::OsRng;

    use super::*;

    #[test]
    fn address_tokens_bind_the_ip_not_the_port_expire_and_never_pass_as_retry_tokens() {
        let keys = [Some(TokenKey::new(&[3; 32])), Some(TokenKey::new(&[4; 32]))];
        let ip: IpAddr = "10.200.0.2".parse().unwrap();
        let t = keys[1]
            .as_ref()
            .unwrap()
            .seal_address(&mut OsRng, 1, ip, 1_000_000);
        assert!(is_address_token(&t));
        assert_eq!(t.len(), 37);
        assert_eq!(open_address_token(&keys, &t, ip, 1_000_000, 60_000), Ok(()));
        // Another IP (v4 or v6), or past its lifetime: refused.
        let other: IpAddr = "10.200.0.3".parse().unwrap();
        let v6: IpAddr = "fd00:5710::2".parse().unwrap();
        assert_eq!(
            open_address_token(&keys, &t, other, 1_000_000, 60_000),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            open_address_token(&keys, &t, v6, 1_000_000, 60_000),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            open_address_token(&keys, &t, ip, 1_060_001, 60_000),
            Err(TokenError::Expired)
        );
        // Under the other generation's key, or read as a Retry token: refused.
        let mut wrong_gen = t.clone();
        wrong_gen[0] = ADDRESS_TOKEN;
        assert!(open_address_token(&keys, &wrong_gen, ip, 1_000_000, 60_000).is_err());
        let remote = SocketAddr::new(ip, 4433);
        assert!(open_token(&keys, &t, &remote, 1_000_000, 60_000).is_err());
        // A Retry token is not an address token.
        let odcid = ConnectionId::from_slice(&[1; 8]).unwrap();
        let r = keys[0]
            .as_ref()
            .unwrap()
            .seal(&mut OsRng, 0, &remote, &odcid, 1_000_000);
        assert!(!is_address_token(&r));
        assert!(open_address_token(&keys, &r, ip, 1_000_000, 60_000).is_err());
        // Every flipped bit is refused.
        for i in 0..t.len() {
            let mut bad = t.clone();
            bad[i] ^= 0x02;
            assert!(
                open_address_token(&keys, &bad, ip, 1_000_000, 60_000).is_err(),
                "flip at {i}"
            );
        }
    }

    #[test]
    fn tokens_bind_address_and_expire() {
        let k = TokenKey::new(&[5; 32]);
        let a: SocketAddr = "[fd00:5710::1]:4433".parse().unwrap();
        let b: SocketAddr = "[fd00:5710::1]:4434".parse().unwrap();
        let odcid = ConnectionId::from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let sealed = k.seal(&mut OsRng, 3, &a, &odcid, 1000);
        assert_eq!(sealed[0], 3, "the generation leads");
        let t = &sealed[1..];
        assert_eq!(k.open(t, &a, 2000, 10_000).unwrap().0, odcid);
        assert_eq!(k.open(t, &b, 2000, 10_000), Err(TokenError::Invalid));
        assert_eq!(k.open(t, &a, 20_000, 10_000), Err(TokenError::Expired));
        // Issued by a server whose clock runs ahead: up to the skew allowance.
        assert!(k.open(t, &a, 999, 10_000).is_ok());
        let ahead = &k.seal(&mut OsRng, 3, &a, &odcid, 10_000)[1..].to_vec();
        assert!(k.open(ahead, &a, 10_000 - CLOCK_SKEW_MS, 10_000).is_ok());
        assert_eq!(
            k.open(ahead, &a, 10_000 - CLOCK_SKEW_MS - 1, 10_000),
            Err(TokenError::Expired)
        );
        for i in 0..t.len() {
            let mut bad = t.to_vec();
            bad[i] ^= 0x40;
            assert_eq!(k.open(&bad, &a, 2000, 10_000), Err(TokenError::Invalid));
        }
        assert_eq!(k.open(&t[..20], &a, 2000, 10_000), Err(TokenError::Invalid));
        assert_eq!(
            TokenKey::new(&[6; 32]).open(t, &a, 2000, 10_000),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn retry_tag_detects_any_change() {
        let pkt_body = b"retry packet header and token".to_vec();
        let mut pkt = pkt_body.clone();
        pkt.extend_from_slice(&retry_tag(b"odcid-08", &pkt_body));
        assert!(retry_tag_ok(b"odcid-08", &pkt));
        assert!(!retry_tag_ok(b"odcid-09", &pkt));
        for i in 0..pkt.len() {
            let mut bad = pkt.clone();
            bad[i] ^= 1;
            assert!(!retry_tag_ok(b"odcid-08", &bad));
        }
        assert!(!retry_tag_ok(b"x", &[0; 5]));
    }

    #[test]
    fn reset_tokens_are_per_cid_and_key() {
        let c1 = ConnectionId::from_slice(&[1; 12]).unwrap();
        let c2 = ConnectionId::from_slice(&[2; 12]).unwrap();
        assert_eq!(reset_token(&[1; 32], &c1), reset_token(&[1; 32], &c1));
        assert_ne!(reset_token(&[1; 32], &c1), reset_token(&[1; 32], &c2));
        assert_ne!(reset_token(&[1; 32], &c1), reset_token(&[2; 32], &c1));
    }
}
