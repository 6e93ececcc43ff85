//! Credentials: FALCON keys, STOQ certificates, PEM files, and the two trust modes.
//!
//! A STOQ certificate binds subject names and a validity window to a FALCON public key,
//! signed by an issuer's FALCON key. Trust is either a **pinned key** (SSH/WireGuard style:
//! the peer's public key is configured) or a set of **trust anchors** (issuer public keys):
//! the peer's certificate must be signed by one of them, be valid now, and name the server.
//!
//! Encoding (all integers big-endian):
//!
//! ```text
//! "STQC" | version=1 (u8) | serial (u64) | not_before, not_after (u64, Unix seconds)
//! | names: count (u8), each a u8-length ASCII string | is_ca (u8)
//! | subject key: alg (u16), u16-length key
//! | issuer key id: SHA-256 of the issuer's encoded public key (32 bytes)
//! | signature: alg (u16), u16-length FALCON signature over everything before it
//! ```

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand_core::CryptoRngCore;

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::sig::{SigAlg, SigError, SigningKey, VerifyingKey};

const MAGIC: &[u8; 4] = b"STQC";
const SIGN_CONTEXT: &[u8] = b"STOQ certificate v1";
/// Largest encoded certificate accepted.
pub const MAX_CERT_LEN: usize = 8 * 1024;
/// PEM label of a certificate.
pub const PEM_CERT: &str = "STOQ CERTIFICATE";
/// PEM label of a FALCON private key.
pub const PEM_PRIVATE: &str = "STOQ FALCON PRIVATE KEY";
/// PEM label of a FALCON public key.
pub const PEM_PUBLIC: &str = "STOQ FALCON PUBLIC KEY";

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The file is not PEM with the expected label.
    #[error("not a PEM block labelled `{expected}`: {detail}")]
    Pem {
        /// The label that was expected.
        expected: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The certificate bytes are malformed.
    #[error("malformed certificate: {0}")]
    Malformed(DecodeError),
    /// A key inside is not a FALCON key.
    #[error("malformed FALCON key: {0}")]
    BadKey(SigError),
    /// The certificate's validity has ended.
    #[error(
        "certificate expired at {not_after} (now {now}, Unix seconds); renew it with `stoq cert`"
    )]
    Expired {
        /// End of validity.
        not_after: u64,
        /// The time of the check.
        now: u64,
    },
    /// The certificate is not valid yet.
    #[error("certificate not valid before {not_before} (now {now}); check the clocks")]
    NotYetValid {
        /// Start of validity.
        not_before: u64,
        /// The time of the check.
        now: u64,
    },
    /// No configured trust anchor issued this certificate.
    #[error("certificate issued by an unknown key (id {0}); add its CA to the trust anchors")]
    UnknownIssuer(String),
    /// The issuer's signature does not verify.
    #[error("certificate signature does not verify")]
    BadSignature,
    /// The certificate does not name the server.
    #[error("certificate names {names:?}, not `{expected}`")]
    NameMismatch {
        /// The server name asked for.
        expected: String,
        /// The names in the certificate.
        names: Vec<String>,
    },
    /// The peer's key is not the pinned one.
    #[error("peer key does not match the pinned key")]
    PinMismatch,
    /// A CA certificate was presented as an end-entity one, or the reverse.
    #[error("certificate role mismatch: {0}")]
    Role(&'static str),
    /// A chain holds more certificates than [`MAX_CHAIN_LEN`](super::chain::MAX_CHAIN_LEN).
    #[error(
        "certificate chain of {len} certificates; at most {max} (a leaf and {} intermediates) are accepted",
        max - 1
    )]
    ChainTooLong {
        /// Certificates in the chain, leaf included.
        len: usize,
        /// The most accepted.
        max: usize,
    },
    /// A certificate above the leaf failed its check.
    #[error("intermediate certificate {depth} (1 is the leaf's issuer): {reason}")]
    Intermediate {
        /// Its position: 1 for the leaf's issuer, 2 for that one's, and so on.
        depth: usize,
        /// What is wrong with it.
        reason: Box<Self>,
    },
    /// A configured chain is out of order: certificate `depth` was not issued by the
    /// one after it.
    #[error(
        "certificate {depth} of the chain (0 is the leaf) was not issued by the one after it: list the leaf first, then each issuer in turn"
    )]
    ChainOrder {
        /// The certificate whose issuer does not follow it (0 is the leaf).
        depth: usize,
    },
    /// A configured private key does not belong to the certificate.
    #[error(
        "the private key does not match the certificate's public key: give the key the certificate was issued for"
    )]
    KeyMismatch,
}

/// A STOQ certificate.
///
/// ```
/// use stoq::crypto::sig::{SigAlg, SigningKey};
/// use stoq::handshake::cert::{CertParams, Certificate};
/// let mut rng = rand_core::OsRng;
/// let (ca_key, ca_pub) = SigningKey::generate(SigAlg::Falcon512, &mut rng);
/// let (_, server_pub) = SigningKey::generate(SigAlg::Falcon512, &mut rng);
/// let p = CertParams {
///     serial: 1,
///     not_before: 1_800_000_000,
///     not_after: 1_800_000_000 + 90 * 86_400,
///     names: vec!["files.example".into()],
///     is_ca: false,
/// };
/// let cert = Certificate::issue(&p, &server_pub, &ca_key, &ca_pub, &mut rng);
/// assert!(cert.issued_by(&ca_pub) && cert.matches_name("files.example"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// Serial number.
    pub serial: u64,
    /// Validity start (Unix seconds).
    pub not_before: u64,
    /// Validity end (Unix seconds).
    pub not_after: u64,
    /// Subject names (DNS-style; `*.` wildcards match one label).
    pub names: Vec<String>,
    /// Whether this certificate may issue others.
    pub is_ca: bool,
    /// The subject's key.
    pub key: VerifyingKey,
    /// SHA-256 of the issuer's encoded public key.
    pub issuer_key_id: [u8; 32],
    /// The issuer's signature algorithm.
    pub sig_alg: SigAlg,
    /// The issuer's signature.
    pub signature: Vec<u8>,
    encoded: Vec<u8>,
}

/// SHA-256 of an encoded public key: how certificates name their issuer.
pub fn key_id(key: &VerifyingKey) -> [u8; 32] {
    key.key_id()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What a certificate says, before it is signed.
#[derive(Debug, Clone)]
pub struct CertParams {
    /// Serial number.
    pub serial: u64,
    /// Validity start (Unix seconds).
    pub not_before: u64,
    /// Validity end (Unix seconds).
    pub not_after: u64,
    /// Subject names.
    pub names: Vec<String>,
    /// Whether the certificate may issue others.
    pub is_ca: bool,
}

impl Certificate {
    /// Issues a certificate for `subject`, signed by `issuer`.
    pub fn issue(
        p: &CertParams,
        subject: &VerifyingKey,
        issuer: &SigningKey,
        issuer_pub: &VerifyingKey,
        rng: &mut impl CryptoRngCore,
    ) -> Self {
        let mut w = Writer::new();
        w.bytes(MAGIC)
            .u8(1)
            .u64(p.serial)
            .u64(p.not_before)
            .u64(p.not_after);
        w.u8(u8::try_from(p.names.len()).expect("at most 255 names"));
        for n in &p.names {
            w.vec8(n.as_bytes());
        }
        w.u8(u8::from(p.is_ca))
            .u16(subject.alg().id())
            .vec16(subject.as_bytes())
            .bytes(&key_id(issuer_pub));
        let sig = issuer.sign(SIGN_CONTEXT, &w.buf, rng);
        w.u16(issuer.alg().id()).vec16(&sig);
        Self::decode(&w.buf).expect("a freshly issued certificate decodes")
    }

    /// The encoded certificate.
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// Decodes a certificate (no trust decisions).
    ///
    /// # Errors
    /// [`CertError::Malformed`], [`CertError::BadKey`].
    pub fn decode(buf: &[u8]) -> Result<Self, CertError> {
        if buf.len() > MAX_CERT_LEN {
            return Err(CertError::Malformed(DecodeError::Invalid(
                "certificate too long",
            )));
        }
        let m = CertError::Malformed;
        let mut r = Reader::new(buf);
        if r.bytes(4).map_err(m)? != MAGIC {
            return Err(m(DecodeError::Invalid("magic")));
        }
        if r.u8().map_err(m)? != 1 {
            return Err(m(DecodeError::Invalid("certificate version")));
        }
        let serial = r.u64().map_err(m)?;
        let not_before = r.u64().map_err(m)?;
        let not_after = r.u64().map_err(m)?;
        let count = r.u8().map_err(m)?;
        let mut names = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let n = r.vec8().map_err(m)?;
            let s = std::str::from_utf8(n)
                .ok()
                .filter(|s| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-.*_".contains(&b))
                })
                .ok_or(m(DecodeError::Invalid("subject name")))?;
            names.push(s.to_ascii_lowercase());
        }
        let is_ca = match r.u8().map_err(m)? {
            0 => false,
            1 => true,
            _ => return Err(m(DecodeError::Invalid("is_ca"))),
        };
        let alg =
            SigAlg::from_id(r.u16().map_err(m)?).ok_or(m(DecodeError::Invalid("key algorithm")))?;
        let key = VerifyingKey::from_bytes(r.vec16().map_err(m)?).map_err(CertError::BadKey)?;
        if key.alg() != alg {
            return Err(m(DecodeError::Invalid(
                "key algorithm does not match the key",
            )));
        }
        let issuer_key_id = r.array().map_err(m)?;
        let sig_alg = SigAlg::from_id(r.u16().map_err(m)?)
            .ok_or(m(DecodeError::Invalid("signature algorithm")))?;
        let signature = r.vec16().map_err(m)?.to_vec();
        r.finish().map_err(m)?;
        Ok(Self {
            serial,
            not_before,
            not_after,
            names,
            is_ca,
            key,
            issuer_key_id,
            sig_alg,
            signature,
            encoded: buf.to_vec(),
        })
    }

    fn signed_part(&self) -> &[u8] {
        &self.encoded[..self.encoded.len() - 2 - 2 - self.signature.len()]
    }

    /// Whether `name` matches one of the subject names (exactly, or `*.` for one label).
    pub fn matches_name(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.names.iter().any(|n| match n.strip_prefix("*.") {
            Some(suffix) => name
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => *n == name,
        })
    }

    /// Checks the certificate against `anchors` at time `now` (Unix seconds) for
    /// `server_name` (`None` skips the name check, for client certificates), returning the
    /// subject's key: a chain of one, the leaf signed by an anchor. Chains with
    /// intermediates: [`chain::verify`](super::chain::verify).
    ///
    /// # Errors
    /// [`CertError::UnknownIssuer`], [`CertError::BadSignature`], [`CertError::Expired`],
    /// [`CertError::NotYetValid`], [`CertError::NameMismatch`], [`CertError::Role`].
    pub fn verify(
        &self,
        anchors: &[VerifyingKey],
        server_name: Option<&str>,
        now: u64,
    ) -> Result<&VerifyingKey, CertError> {
        super::chain::verify(self, &[], anchors, server_name, now)
    }

    /// Whether `issuer` is the key this certificate names as its issuer.
    pub fn issued_by(&self, issuer: &VerifyingKey) -> bool {
        key_id(issuer) == self.issuer_key_id
    }

    /// Checks the issuer's signature with `issuer`, the key this certificate names.
    ///
    /// # Errors
    /// [`CertError::BadSignature`].
    pub fn check_signature(&self, issuer: &VerifyingKey) -> Result<(), CertError> {
        if issuer.alg() != self.sig_alg {
            return Err(CertError::BadSignature);
        }
        issuer
            .verify(SIGN_CONTEXT, self.signed_part(), &self.signature)
            .map_err(|_| CertError::BadSignature)
    }

    /// Checks the validity window at `now` (Unix seconds).
    pub(crate) fn check_validity(&self, now: u64) -> Result<(), CertError> {
        if now < self.not_before {
            return Err(CertError::NotYetValid {
                not_before: self.not_before,
                now,
            });
        }
        if now > self.not_after {
            return Err(CertError::Expired {
                not_after: self.not_after,
                now,
            });
        }
        Ok(())
    }

    /// The first 8 bytes of the issuer's key id, in hex: how errors name an issuer.
    pub(crate) fn issuer_hex(&self) -> String {
        hex(&self.issuer_key_id[..8])
    }
}

/// Encodes `der` as a PEM block with `label`.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// Decodes the first PEM block labelled `label` in `text`.
///
/// # Errors
/// [`CertError::Pem`] naming what is wrong.
pub fn pem_decode(label: &'static str, text: &str) -> Result<Vec<u8>, CertError> {
    pem_decode_next(label, text).map(|(der, _)| der)
}

/// Decodes the first PEM block labelled `label` in `text`, returning it and the offset
/// just after it.
fn pem_decode_next(label: &'static str, text: &str) -> Result<(Vec<u8>, usize), CertError> {
    let err = |d: &str| CertError::Pem {
        expected: label,
        detail: d.to_string(),
    };
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| match text.find("-----BEGIN ") {
            Some(i) => err(&format!(
                "found `{}` instead",
                text[i..].lines().next().unwrap_or("")
            )),
            None => err("no PEM block"),
        })?;
    let body_start = start + begin.len();
    let stop = text[body_start..]
        .find(&end)
        .ok_or_else(|| err("no END line"))?
        + body_start;
    let body: String = text[body_start..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if body.len() > 4 * MAX_CERT_LEN {
        return Err(err("block too large"));
    }
    let der = STANDARD
        .decode(body)
        .map_err(|e| err(&format!("bad base64: {e}")))?;
    Ok((der, stop + end.len()))
}

/// Loads a FALCON private key from PEM text.
///
/// # Errors
/// [`CertError::Pem`], [`CertError::BadKey`].
pub fn load_private_key(pem: &str) -> Result<SigningKey, CertError> {
    SigningKey::from_bytes(&pem_decode(PEM_PRIVATE, pem)?).map_err(CertError::BadKey)
}

/// Loads a FALCON public key from PEM text.
///
/// # Errors
/// [`CertError::Pem`], [`CertError::BadKey`].
pub fn load_public_key(pem: &str) -> Result<VerifyingKey, CertError> {
    VerifyingKey::from_bytes(&pem_decode(PEM_PUBLIC, pem)?).map_err(CertError::BadKey)
}

/// Loads a certificate chain from PEM text: every `STOQ CERTIFICATE` block in order, the
/// leaf first, then each issuer (the layout of a TLS `fullchain.pem`; `stoq cert
/// --issuer-cert` writes it).
///
/// # Errors
/// [`CertError::Pem`], [`CertError::Malformed`], [`CertError::BadKey`],
/// [`CertError::ChainTooLong`].
pub fn load_certificate_chain(pem: &str) -> Result<Vec<Certificate>, CertError> {
    let max = super::chain::MAX_CHAIN_LEN;
    let mut chain = Vec::new();
    let mut rest = pem;
    loop {
        let (der, end) = pem_decode_next(PEM_CERT, rest)?;
        if chain.len() == max {
            return Err(CertError::ChainTooLong { len: max + 1, max });
        }
        chain.push(Certificate::decode(&der)?);
        rest = &rest[end..];
        if !rest.contains("-----BEGIN ") {
            return Ok(chain);
        }
    }
}

/// Loads a certificate from PEM text.
///
/// # Errors
/// [`CertError::Pem`], [`CertError::Malformed`], [`CertError::BadKey`].
pub fn load_certificate(pem: &str) -> Result<Certificate, CertError> {
    Certificate::decode(&pem_decode(PEM_CERT, pem)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(alg: SigAlg) -> (SigningKey, VerifyingKey, Certificate) {
        let mut rng = rand_core::OsRng;
        let (ca_sk, ca_pk) = SigningKey::generate(alg, &mut rng);
        let (_, leaf_pk) = SigningKey::generate(SigAlg::Falcon512, &mut rng);
        let p = CertParams {
            serial: 7,
            not_before: 1000,
            not_after: 2000,
            names: vec!["stoq.example".into(), "*.svc.example".into()],
            is_ca: false,
        };
        let cert = Certificate::issue(&p, &leaf_pk, &ca_sk, &ca_pk, &mut rng);
        (ca_sk, ca_pk, cert)
    }

    #[test]
    fn verify_and_each_failure() {
        for alg in SigAlg::ALL {
            let (_, ca_pk, cert) = setup(alg);
            assert!(
                cert.verify(std::slice::from_ref(&ca_pk), Some("stoq.example"), 1500)
                    .is_ok()
            );
            assert!(
                cert.verify(std::slice::from_ref(&ca_pk), Some("a.svc.example"), 1500)
                    .is_ok()
            );
            assert!(matches!(
                cert.verify(std::slice::from_ref(&ca_pk), Some("a.b.svc.example"), 1500),
                Err(CertError::NameMismatch { .. })
            ));
            assert!(matches!(
                cert.verify(std::slice::from_ref(&ca_pk), Some("stoq.example"), 2001),
                Err(CertError::Expired {
                    not_after: 2000,
                    now: 2001
                })
            ));
            assert!(matches!(
                cert.verify(std::slice::from_ref(&ca_pk), Some("stoq.example"), 999),
                Err(CertError::NotYetValid { .. })
            ));
            let (_, other) = SigningKey::generate(SigAlg::Falcon512, &mut rand_core::OsRng);
            assert!(matches!(
                cert.verify(&[other], Some("stoq.example"), 1500),
                Err(CertError::UnknownIssuer(_))
            ));
            // A flipped byte in the signed part breaks the signature (or the decoding).
            let mut raw = cert.as_bytes().to_vec();
            raw[30] ^= 1;
            if let Ok(c) = Certificate::decode(&raw) {
                assert_eq!(
                    c.verify(std::slice::from_ref(&ca_pk), Some("stoq.example"), 1500),
                    Err(CertError::BadSignature)
                );
            }
        }
    }

    #[test]
    fn pem_round_trips_and_errors() {
        let (ca_sk, ca_pk, cert) = setup(SigAlg::Falcon512);
        let c2 = load_certificate(&pem_encode(PEM_CERT, cert.as_bytes())).unwrap();
        assert_eq!(c2, cert);
        let k = load_private_key(&pem_encode(PEM_PRIVATE, ca_sk.as_bytes())).unwrap();
        assert_eq!(k.as_bytes(), ca_sk.as_bytes());
        assert_eq!(
            load_public_key(&pem_encode(PEM_PUBLIC, ca_pk.as_bytes())).unwrap(),
            ca_pk
        );
        let wrong = load_private_key(&pem_encode(PEM_CERT, cert.as_bytes())).unwrap_err();
        assert!(wrong.to_string().contains("STOQ CERTIFICATE"), "{wrong}");
        assert!(matches!(
            load_certificate("junk"),
            Err(CertError::Pem { .. })
        ));
        assert!(matches!(
            load_certificate(
                "-----BEGIN STOQ CERTIFICATE-----\n!!!\n-----END STOQ CERTIFICATE-----"
            ),
            Err(CertError::Pem { .. })
        ));
        assert!(matches!(
            load_certificate("-----BEGIN STOQ CERTIFICATE-----\nAAAA\n"),
            Err(CertError::Pem { .. })
        ));
        assert!(matches!(
            load_certificate(&pem_encode(PEM_CERT, b"STQC")),
            Err(CertError::Malformed(_))
        ));
        assert!(matches!(
            load_public_key(&pem_encode(PEM_PUBLIC, &[1, 2, 3])),
            Err(CertError::BadKey(_))
        ));
        // Every truncation of a certificate is refused.
        for n in 0..cert.as_bytes().len() {
            assert!(Certificate::decode(&cert.as_bytes()[..n]).is_err());
        }
    }

    #[test]
    fn pem_chains_load_in_order_and_bounded() {
        let (_, _, a) = setup(SigAlg::Falcon512);
        let (_, _, b) = setup(SigAlg::Falcon512);
        let pem = |certs: &[&Certificate]| {
            certs
                .iter()
                .map(|c| pem_encode(PEM_CERT, c.as_bytes()))
                .collect::<String>()
        };
        assert_eq!(
            load_certificate_chain(&pem(&[&a])).unwrap(),
            vec![a.clone()]
        );
        assert_eq!(
            load_certificate_chain(&pem(&[&a, &b])).unwrap(),
            vec![a.clone(), b.clone()]
        );
        assert!(matches!(
            load_certificate_chain(&pem(&[&a, &b, &a, &b, &a])),
            Err(CertError::ChainTooLong { len: 5, max: 4 })
        ));
        // A second block that is not a certificate is an error, not silently skipped.
        let mixed = pem(&[&a]) + &pem_encode(PEM_PUBLIC, a.key.as_bytes());
        assert!(matches!(
            load_certificate_chain(&mixed),
            Err(CertError::Pem { .. })
        ));
        assert!(matches!(
            load_certificate_chain(""),
            Err(CertError::Pem { .. })
        ));
    }
}
