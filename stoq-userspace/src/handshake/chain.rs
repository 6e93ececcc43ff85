//! Certificate chains: a leaf, up to three intermediate CA certificates, and the key of a
//! trust anchor that issued the top one.
//!
//! A peer sends its chain leaf first. Verification builds the path from the leaf upward
//! by issuer key id: at each step the issuer is a trust anchor (the path is complete) or
//! an unused certificate of the chain, which must be a CA certificate, valid now, whose
//! key verifies the signature below it. The walk is bounded by [`MAX_CHAIN_LEN`] and
//! never uses a certificate twice, so a loop or a chain padded with junk costs at most
//! that many signature checks. Certificates in the chain that the path does not use are
//! ignored, as TLS does. The leaf alone carries names; it must not be a CA.
//!
//! Encoding of a chain (inside a Certificate message of kind 2, see
//! `docs/wire-format.md`): a count (u8, 1..=[`MAX_CHAIN_LEN`]), then each certificate as a
//! u16-length field, leaf first.

use rand_core::CryptoRngCore;

use super::cert::{CertError, Certificate, MAX_CERT_LEN};
use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::sig::{SigningKey, VerifyingKey};

/// Most certificates in a chain, leaf included: a leaf and three intermediates.
pub const MAX_CHAIN_LEN: usize = 4;

/// Context of the signature that proves a configured private key matches its
/// certificate (made and checked locally, never sent).
const KEY_CHECK_CONTEXT: &[u8] = b"STOQ key check";

/// Checks `leaf`, issued through `intermediates` (in any order) by one of `anchors`, at
/// time `now` (Unix seconds), for `server_name` (`None` skips the name check, for client
/// certificates). Returns the leaf's key.
///
/// # Errors
/// [`CertError::ChainTooLong`]; for the leaf, [`CertError::UnknownIssuer`],
/// [`CertError::BadSignature`], [`CertError::Expired`], [`CertError::NotYetValid`],
/// [`CertError::Role`] or [`CertError::NameMismatch`]; for a certificate above it, the
/// same inside [`CertError::Intermediate`] with its depth.
pub fn verify<'a>(
    leaf: &'a Certificate,
    intermediates: &[Certificate],
    anchors: &[VerifyingKey],
    server_name: Option<&str>,
    now: u64,
) -> Result<&'a VerifyingKey, CertError> {
    let len = intermediates.len() + 1;
    if len > MAX_CHAIN_LEN {
        return Err(CertError::ChainTooLong {
            len,
            max: MAX_CHAIN_LEN,
        });
    }
    let mut used = [false; MAX_CHAIN_LEN];
    let mut current = leaf;
    // `depth` is the position of `current`: 0 for the leaf.
    for depth in 0..len {
        if let Some(anchor) = anchors.iter().find(|a| current.issued_by(a)) {
            current.check_signature(anchor).map_err(|e| at(depth, e))?;
            return check_leaf(leaf, server_name, now);
        }
        let Some((i, issuer)) = intermediates
            .iter()
            .enumerate()
            .find(|&(i, c)| !used[i] && current.issued_by(&c.key))
        else {
            return Err(at(depth, CertError::UnknownIssuer(current.issuer_hex())));
        };
        used[i] = true;
        current
            .check_signature(&issuer.key)
            .map_err(|e| at(depth, e))?;
        if !issuer.is_ca {
            return Err(at(
                depth + 1,
                CertError::Role(
                    "it issued a certificate but is not a CA certificate (issue it with `stoq cert --ca`)",
                ),
            ));
        }
        issuer.check_validity(now).map_err(|e| at(depth + 1, e))?;
        current = issuer;
    }
    // Every certificate was used and the top one's issuer is not an anchor.
    Err(at(len - 1, CertError::UnknownIssuer(current.issuer_hex())))
}

/// The leaf's own checks, once its chain holds.
fn check_leaf<'a>(
    leaf: &'a Certificate,
    server_name: Option<&str>,
    now: u64,
) -> Result<&'a VerifyingKey, CertError> {
    leaf.check_validity(now)?;
    if leaf.is_ca {
        return Err(CertError::Role(
            "a CA certificate cannot authenticate a peer",
        ));
    }
    if let Some(name) = server_name
        && !leaf.matches_name(name)
    {
        return Err(CertError::NameMismatch {
            expected: name.to_string(),
            names: leaf.names.clone(),
        });
    }
    Ok(&leaf.key)
}

/// `e`, about the certificate at `depth` (0 is the leaf).
fn at(depth: usize, e: CertError) -> CertError {
    if depth == 0 {
        e
    } else {
        CertError::Intermediate {
            depth,
            reason: Box::new(e),
        }
    }
}

/// Encodes a chain (leaf first) for a Certificate message.
///
/// # Panics
/// If the chain is empty or longer than [`MAX_CHAIN_LEN`]: [`check_configured`] refuses
/// such a chain before it is used.
pub fn encode<'a>(chain: impl IntoIterator<Item = &'a Certificate>) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(0);
    let mut len = 0usize;
    for c in chain {
        w.vec16(c.as_bytes());
        len += 1;
    }
    assert!((1..=MAX_CHAIN_LEN).contains(&len), "chain length");
    w.buf[0] = len as u8;
    w.buf
}

/// Decodes a chain from a Certificate message: 1 to [`MAX_CHAIN_LEN`] certificates, leaf
/// first (no trust decisions).
///
/// # Errors
/// [`CertError::Malformed`], [`CertError::ChainTooLong`], [`CertError::BadKey`].
pub fn decode(buf: &[u8]) -> Result<Vec<Certificate>, CertError> {
    let m = CertError::Malformed;
    let mut r = Reader::new(buf);
    let len = usize::from(r.u8().map_err(m)?);
    if len == 0 {
        return Err(m(DecodeError::Invalid("empty certificate chain")));
    }
    if len > MAX_CHAIN_LEN {
        return Err(CertError::ChainTooLong {
            len,
            max: MAX_CHAIN_LEN,
        });
    }
    let mut chain = Vec::with_capacity(len);
    for _ in 0..len {
        let c = r.vec16().map_err(m)?;
        if c.len() > MAX_CERT_LEN {
            return Err(m(DecodeError::Invalid("certificate too long")));
        }
        chain.push(Certificate::decode(c)?);
    }
    r.finish().map_err(m)?;
    Ok(chain)
}

/// Checks a chain this side will present, with its private key: 1 to [`MAX_CHAIN_LEN`]
/// certificates, leaf first, each issued by the next, every one above the leaf a CA, and
/// `key` the leaf's private key (proved by signing and verifying a local message).
///
/// # Errors
/// [`CertError::ChainTooLong`], [`CertError::ChainOrder`], [`CertError::Intermediate`]
/// (a certificate above the leaf that is not a CA), [`CertError::Role`] (a CA leaf),
/// [`CertError::KeyMismatch`].
pub fn check_configured(
    key: &SigningKey,
    chain: &[Certificate],
    rng: &mut impl CryptoRngCore,
) -> Result<(), CertError> {
    if chain.is_empty() || chain.len() > MAX_CHAIN_LEN {
        return Err(CertError::ChainTooLong {
            len: chain.len(),
            max: MAX_CHAIN_LEN,
        });
    }
    if chain[0].is_ca {
        return Err(CertError::Role(
            "a CA certificate cannot authenticate a peer: issue the leaf without --ca",
        ));
    }
    for (depth, pair) in chain.windows(2).enumerate() {
        if !pair[0].issued_by(&pair[1].key) {
            return Err(CertError::ChainOrder { depth });
        }
        if !pair[1].is_ca {
            return Err(at(
                depth + 1,
                CertError::Role("an issuer in the chain is not a CA certificate"),
            ));
        }
    }
    let sig = key.sign(KEY_CHECK_CONTEXT, b"", rng);
    chain[0]
        .key
        .verify(KEY_CHECK_CONTEXT, b"", &sig)
        .map_err(|_| CertError::KeyMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::sig::SigAlg;
    use crate::handshake::cert::CertParams;

    /// A root key and a chain below it: `intermediates` CA certificates, then a leaf for
    /// `stoq.example`, all valid over 1000..=2000. Returns the root's key, the leaf's
    /// private key and the chain, leaf first.
    fn chain(intermediates: usize) -> (VerifyingKey, SigningKey, Vec<Certificate>) {
        let mut rng = rand_core::OsRng;
        let (root_sk, root_pk) = SigningKey::generate(SigAlg::Falcon512, &mut rng);
        let (mut issuer_sk, mut issuer_pk) = (root_sk, root_pk.clone());
        let mut above = Vec::new();
        for i in 0..intermediates {
            let (sk, pk) = SigningKey::generate(SigAlg::Falcon512, &mut rng);
            let p = params(i as u64, true);
            above.push(Certificate::issue(
                &p, &pk, &issuer_sk, &issuer_pk, &mut rng,
            ));
            (issuer_sk, issuer_pk) = (sk, pk);
        }
        let (leaf_sk, leaf_pk) = SigningKey::generate(SigAlg::Falcon512, &mut rng);
        let leaf = Certificate::issue(
            &params(99, false),
            &leaf_pk,
            &issuer_sk,
            &issuer_pk,
            &mut rng,
        );
        above.reverse();
        let mut chain = vec![leaf];
        chain.extend(above);
        (root_pk, leaf_sk, chain)
    }

    fn params(serial: u64, is_ca: bool) -> CertParams {
        CertParams {
            serial,
            not_before: 1000,
            not_after: 2000,
            names: vec!["stoq.example".into()],
            is_ca,
        }
    }

    fn check(root: &VerifyingKey, chain: &[Certificate], now: u64) -> Result<(), CertError> {
        verify(
            &chain[0],
            &chain[1..],
            std::slice::from_ref(root),
            Some("stoq.example"),
            now,
        )
        .map(|_| ())
    }

    #[test]
    fn chains_of_depth_one_to_three_verify_and_round_trip() {
        for n in 0..3 {
            let (root, key, c) = chain(n);
            assert_eq!(c.len(), n + 1);
            check(&root, &c, 1500).unwrap();
            check_configured(&key, &c, &mut rand_core::OsRng).unwrap();
            let decoded = decode(&encode(&c)).unwrap();
            assert_eq!(decoded, c);
            // The intermediates may come in any order.
            let mut shuffled = c.clone();
            shuffled[1..].reverse();
            check(&root, &shuffled, 1500).unwrap();
        }
    }

    #[test]
    fn every_broken_link_is_refused_with_its_depth() {
        let mut rng = rand_core::OsRng;
        let (root, _, c) = chain(2);
        // A missing intermediate: the leaf's issuer is unknown.
        let missing_first = [c[0].clone(), c[2].clone()];
        assert!(matches!(
            check(&root, &missing_first, 1500),
            Err(CertError::UnknownIssuer(_))
        ));
        // The top intermediate missing: the first one's issuer is unknown.
        assert!(matches!(
            check(&root, &c[..2], 1500),
            Err(CertError::Intermediate { depth: 1, reason }) if matches!(*reason, CertError::UnknownIssuer(_))
        ));
        // Another root.
        let (_, other) = SigningKey::generate(SigAlg::Falcon512, &mut rng);
        assert!(matches!(
            check(&other, &c, 1500),
            Err(CertError::Intermediate { depth: 2, reason }) if matches!(*reason, CertError::UnknownIssuer(_))
        ));
        // Each link's signature: a flipped byte in the signed part of each certificate.
        for depth in 0..3 {
            let mut raw = c[depth].as_bytes().to_vec();
            raw[20] ^= 1; // not_before 1000 -> 1001: still decodes, the signature breaks
            let mut broken = c.clone();
            broken[depth] = Certificate::decode(&raw).unwrap();
            let e = check(&root, &broken, 1500).unwrap_err();
            if depth == 0 {
                assert_eq!(e, CertError::BadSignature);
            } else {
                assert_eq!(
                    e,
                    CertError::Intermediate {
                        depth,
                        reason: Box::new(CertError::BadSignature)
                    }
                );
            }
        }
        // Validity of each link: past every window, the first link checked (the leaf's
        // issuer) is reported; windows that differ per link come next.
        let e = check(&root, &c, 2001).unwrap_err();
        assert!(
            matches!(&e, CertError::Intermediate { depth: 1, reason } if matches!(**reason, CertError::Expired { .. })),
            "{e}"
        );
        let (root, _, c) = expiring_intermediate();
        assert!(matches!(
            check(&root, &c, 1600),
            Err(CertError::Intermediate { depth: 2, reason }) if matches!(*reason, CertError::Expired { not_after: 1500, .. })
        ));
        assert!(matches!(
            check(&root, &c, 999),
            Err(CertError::Intermediate { depth: 1, reason }) if matches!(*reason, CertError::NotYetValid { .. })
        ));
        // An issuer that is not a CA (key usage).
        let (root, _, c) = non_ca_issuer();
        assert!(matches!(
            check(&root, &c, 1500),
            Err(CertError::Intermediate { depth: 1, reason }) if matches!(*reason, CertError::Role(_))
        ));
        // A CA certificate as the leaf.
        let (root, _, c) = chain(1);
        assert!(matches!(
            check(&root, &c[1..], 1500),
            Err(CertError::Role(_))
        ));
    }

    /// A depth-3 chain whose top intermediate ends at 1500 and whose first starts at 1100.
    fn expiring_intermediate() -> (VerifyingKey, SigningKey, Vec<Certificate>) {
        let mut rng = rand_core::OsRng;
        let (root_sk, root_pk) = SigningKey::generate(SigAlg::Falcon512, &mut rng);
        let (top_sk, top_pk) = SigningKey::generate(SigAlg::Falcon512, &mut rng);
        let (mid_sk, mid_pk) = SigningKey::generate(SigAlg::Falcon512, &mut rng);
        let (leaf_sk, leaf_pk) = SigningKey::generate(SigAlg::Falcon512, &mut rng);
        let top = Certificate::issue(
            &CertParams {
                not_after: 1500,
                ..params(1, true)
            },
            &top_pk,
            &root_sk,
            &root_pk,
            &mut rng,
        );
        let mid = Certificate::issue(
            &CertParams {
                not_before: 1100,
                ..params(2, true)
            },
            &mid_pk,
            &top_sk,
            &top_pk,
            &mut rng,
        );
        let leaf = Certificate::issue(
            &CertParams {
                not_before: 900,
                ..params(3, false)
            },
            &leaf_pk,
            &mid_sk,
            &mid_pk,
            &mut rng,
        );
        (root_pk, leaf_sk, vec![leaf, mid, top])
    }

    /// A leaf issued by a certificate that is not a CA's.
    fn non_ca_issuer() -> (VerifyingKey, SigningKey, Vec<Certificate>) {
        let mut rng = rand_core::OsRng;
        let (root_sk, root_pk) = SigningKey::generate(SigAlg::Falcon512, &mut rng);
        let (mid_sk, mid_pk) = SigningKey::generate(SigAlg::Falcon512, &mut rng);
        let (leaf_sk, leaf_pk) = SigningKey::generate(SigAlg::Falcon512, &mut rng);
        let mid = Certificate::issue(&params(1, false), &mid_pk, &root_sk, &root_pk, &mut rng);
        let leaf = Certificate::issue(&params(2, false), &leaf_pk, &mid_sk, &mid_pk, &mut rng);
        (root_pk, leaf_sk, vec![leaf, mid])
    }

    #[test]
    fn bounds_loops_and_junk() {
        let (root, key, c) = chain(3);
        assert_eq!(c.len(), MAX_CHAIN_LEN);
        check(&root, &c, 1500).unwrap();
        // One certificate too many.
        let mut long = c.clone();
        long.push(c[3].clone());
        assert!(matches!(
            check(&root, &long, 1500),
            Err(CertError::ChainTooLong { len: 5, max: 4 })
        ));
        let mut w = Writer::new();
        w.u8(5);
        assert!(matches!(
            decode(&w.buf),
            Err(CertError::ChainTooLong { len: 5, .. })
        ));
        assert!(matches!(decode(&[0]), Err(CertError::Malformed(_))));
        // Every truncation of an encoded chain is refused; a trailing byte too.
        let enc = encode(&c);
        for n in 0..enc.len() {
            assert!(decode(&enc[..n]).is_err(), "truncated at {n}");
        }
        let mut extra = enc.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        // A certificate repeated cannot stand in for itself twice: the walk uses each
        // once, so a chain that needs a loop ends at an unknown issuer.
        let (_, other) = SigningKey::generate(SigAlg::Falcon512, &mut rand_core::OsRng);
        let looped = [c[0].clone(), c[1].clone(), c[1].clone(), c[1].clone()];
        assert!(check(&other, &looped, 1500).is_err());
        // Configured chains: order, roles and the key are checked before use.
        assert!(matches!(
            check_configured(&key, &[c[0].clone(), c[2].clone()], &mut rand_core::OsRng),
            Err(CertError::ChainOrder { depth: 0 })
        ));
        assert!(matches!(
            check_configured(&key, &c[1..], &mut rand_core::OsRng),
            Err(CertError::Role(_))
        ));
        let (_, wrong_key, _) = chain(0);
        assert_eq!(
            check_configured(&wrong_key, &c, &mut rand_core::OsRng),
            Err(CertError::KeyMismatch)
        );
        let (_, key, c) = non_ca_issuer();
        assert!(matches!(
            check_configured(&key, &c, &mut rand_core::OsRng),
            Err(CertError::Intermediate { depth: 1, .. })
        ));
        assert!(matches!(
            check_configured(&key, &[], &mut rand_core::OsRng),
            Err(CertError::ChainTooLong { len: 0, .. })
        ));
    }
}
