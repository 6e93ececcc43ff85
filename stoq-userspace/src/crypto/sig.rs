//! FALCON signatures through the `fn-dsa` crate (FN-DSA, by Falcon's designer), and the
//! optional composite FALCON-512 + Ed25519 (`ed25519-dalek`), where both signatures must
//! verify: a hedge while FN-DSA is young (FIPS 206 is not final).
//!
//! A composite signature is `FALCON-512 signature (666) || Ed25519 signature (64)`, both
//! over the same message, `"STOQ composite FALCON-512+Ed25519" || 0x00 || context || 0x00
//! || content`: the label makes each half useless alone (a FALCON half is not a valid
//! FALCON-512 signature over `context || 0x00 || content`, nor an Ed25519 half an Ed25519
//! one), so neither can be stripped off and the rest passed off as a plain signature. Keys
//! are the two keys concatenated, FALCON's first (the private one: FALCON's encoding, then
//! Ed25519's 32-byte seed).

use fn_dsa::{
    DOMAIN_NONE, FN_DSA_LOGN_512, FN_DSA_LOGN_1024, HASH_ID_RAW, KeyPairGenerator,
    KeyPairGeneratorStandard, SigningKey as _, SigningKeyStandard, VerifyingKey as _,
    VerifyingKeyStandard, sign_key_size, signature_size, vrfy_key_size,
};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use ed25519_dalek::Signer as _;
use rand_core::CryptoRngCore;
use sha2::Digest as _;
use zeroize::Zeroizing;

/// The label every composite signature's message starts with.
const COMPOSITE_LABEL: &[u8] = b"STOQ composite FALCON-512+Ed25519";
/// Ed25519 key and signature lengths.
const ED25519_KEY_LEN: usize = 32;
const ED25519_SIG_LEN: usize = 64;

/// Expanded keys kept per signing key: one per thread signing at the same moment (a
/// server's workers); beyond this, extra ones are dropped after use.
const MAX_EXPANDED: usize = 64;

/// A FALCON parameter set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigAlg {
    /// FALCON-512 (NIST level I): the default.
    Falcon512,
    /// FALCON-1024 (NIST level V).
    Falcon1024,
    /// FALCON-512 and Ed25519 together: a signature verifies only if both halves do.
    /// Never chosen unless configured (a key of this kind, and clients accepting it).
    Falcon512Ed25519,
}

impl SigAlg {
    /// The wire identifier.
    pub const fn id(self) -> u16 {
        match self {
            Self::Falcon512 => 0x0009,
            Self::Falcon1024 => 0x000a,
            Self::Falcon512Ed25519 => 0x0109,
        }
    }

    /// The algorithm with wire identifier `id`.
    pub const fn from_id(id: u16) -> Option<Self> {
        match id {
            0x0009 => Some(Self::Falcon512),
            0x000a => Some(Self::Falcon1024),
            0x0109 => Some(Self::Falcon512Ed25519),
            _ => None,
        }
    }

    /// The name used in PEM labels and certificates.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Falcon512 => "FALCON-512",
            Self::Falcon1024 => "FALCON-1024",
            Self::Falcon512Ed25519 => "FALCON-512+Ed25519",
        }
    }

    /// Every algorithm.
    pub const ALL: [Self; 3] = [Self::Falcon512, Self::Falcon1024, Self::Falcon512Ed25519];

    fn logn(self) -> u32 {
        match self {
            Self::Falcon512 | Self::Falcon512Ed25519 => FN_DSA_LOGN_512,
            Self::Falcon1024 => FN_DSA_LOGN_1024,
        }
    }

    /// Whether an Ed25519 half comes with the FALCON one.
    const fn composite(self) -> bool {
        matches!(self, Self::Falcon512Ed25519)
    }

    fn falcon_public_len(self) -> usize {
        vrfy_key_size(self.logn())
    }

    fn falcon_private_len(self) -> usize {
        sign_key_size(self.logn())
    }

    fn falcon_signature_len(self) -> usize {
        signature_size(self.logn())
    }

    fn classical(self, len: usize) -> usize {
        if self.composite() { len } else { 0 }
    }

    /// Length of an encoded verifying (public) key.
    pub fn public_key_len(self) -> usize {
        self.falcon_public_len() + self.classical(ED25519_KEY_LEN)
    }

    /// Length of an encoded signing (private) key.
    pub fn private_key_len(self) -> usize {
        self.falcon_private_len() + self.classical(ED25519_KEY_LEN)
    }

    /// Length of a signature.
    pub fn signature_len(self) -> usize {
        self.falcon_signature_len() + self.classical(ED25519_SIG_LEN)
    }

    /// The algorithm of an encoded public key, from its length.
    pub fn from_public_key_len(len: usize) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.public_key_len() == len)
    }

    /// The message both halves sign: `context || 0x00 || content` for FALCON alone, with
    /// the composite label in front for the composite.
    fn message(self, context: &[u8], content: &[u8]) -> Vec<u8> {
        let label = if self.composite() {
            COMPOSITE_LABEL.len() + 1
        } else {
            0
        };
        let mut m = Vec::with_capacity(label + context.len() + 1 + content.len());
        if self.composite() {
            m.extend_from_slice(COMPOSITE_LABEL);
            m.push(0);
        }
        m.extend_from_slice(context);
        m.push(0);
        m.extend_from_slice(content);
        m
    }
}

/// Why a signature operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// The key bytes do not decode as a FALCON (or FALCON + Ed25519) key.
    #[error("malformed FALCON key")]
    BadKey,
    /// The signature does not verify (for a composite: either half).
    #[error("FALCON signature does not verify")]
    BadSignature,
}

/// A FALCON signing key, wiped on drop (clones too).
///
/// Signing needs the key expanded (the NTRU polynomial `G` recomputed, the public key and
/// its hash, the basis in FFT form): about a fifth of a signature's cost. Each key
/// keeps its expanded forms for the next signature, one per thread signing at once (the
/// workers take one under a lock held for a push or a pop, never while signing); clones
/// share them, and they are wiped with the key's last clone.
///
/// ```
/// use stoq::crypto::sig::{SigAlg, SigningKey, VerifyingKey};
/// let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut rand_core::OsRng);
/// // Keep the bytes secret (`stoq keygen` writes them PEM-encoded, mode 0600).
/// let again = SigningKey::from_bytes(key.as_bytes()).expect("a valid key");
/// assert_eq!(VerifyingKey::from_bytes(public.as_bytes()).unwrap(), public);
/// # let _ = again;
/// ```
#[derive(Clone)]
pub struct SigningKey {
    alg: SigAlg,
    encoded: Zeroizing<Vec<u8>>,
    /// Expanded forms ready to sign with (fn-dsa wipes them on drop).
    expanded: Arc<Mutex<Vec<Box<SigningKeyStandard>>>>,
    /// The Ed25519 half of a composite key (wiped on drop by `ed25519-dalek`).
    ed25519: Option<Arc<ed25519_dalek::SigningKey>>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({}, ..)", self.alg.name())
    }
}

/// A FALCON verifying (public) key.
///
/// ```
/// use stoq::crypto::sig::{SigAlg, SigningKey, VerifyingKey};
/// let (_, public) = SigningKey::generate(SigAlg::Falcon1024, &mut rand_core::OsRng);
/// let shared = public.as_bytes().to_vec(); // what a client pins
/// let pinned = VerifyingKey::from_bytes(&shared).expect("a FALCON public key");
/// assert_eq!(pinned.alg(), SigAlg::Falcon1024);
/// ```
#[derive(Clone)]
pub struct VerifyingKey {
    alg: SigAlg,
    encoded: Vec<u8>,
    /// The Ed25519 half of a composite key, decoded (checked) once; boxed, so that a
    /// FALCON-only key stays small.
    ed25519: Option<Box<ed25519_dalek::VerifyingKey>>,
    /// [`key_id`](Self::key_id), hashed when first asked for: a server names its key in
    /// every ticket it issues or opens and in every batch signature.
    id: OnceLock<[u8; 32]>,
}

impl PartialEq for VerifyingKey {
    fn eq(&self, other: &Self) -> bool {
        // The Ed25519 half and the identifier both follow from the encoding.
        self.alg == other.alg && self.encoded == other.encoded
    }
}

impl Eq for VerifyingKey {}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VerifyingKey({}, {:02x?}..)",
            self.alg.name(),
            &self.encoded[..8.min(self.encoded.len())]
        )
    }
}

impl SigningKey {
    /// Generates a key pair.
    pub fn generate(alg: SigAlg, rng: &mut impl CryptoRngCore) -> (Self, VerifyingKey) {
        let mut sk = Zeroizing::new(vec![0u8; alg.falcon_private_len()]);
        let mut vk = vec![0u8; alg.falcon_public_len()];
        KeyPairGeneratorStandard::default().keygen(alg.logn(), rng, &mut sk, &mut vk);
        let ed = alg
            .composite()
            .then(|| ed25519_dalek::SigningKey::generate(rng));
        let ed_public = ed
            .as_ref()
            .map(|k| Box::new(ed25519_dalek::SigningKey::verifying_key(k)));
        if let (Some(k), Some(p)) = (&ed, &ed_public) {
            sk.extend_from_slice(k.as_bytes());
            vk.extend_from_slice(p.as_bytes());
        }
        (
            Self {
                alg,
                encoded: sk,
                expanded: Arc::default(),
                ed25519: ed.map(Arc::new),
            },
            VerifyingKey {
                alg,
                encoded: vk,
                ed25519: ed_public,
                id: OnceLock::new(),
            },
        )
    }

    /// Decodes a signing key.
    ///
    /// # Errors
    /// [`SigError::BadKey`] if the bytes are not a FALCON-512 or FALCON-1024 signing key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SigError> {
        let alg = SigAlg::ALL
            .into_iter()
            .find(|a| a.private_key_len() == bytes.len())
            .ok_or(SigError::BadKey)?;
        let (falcon, seed) = bytes.split_at(alg.falcon_private_len());
        // The check is the first expansion, kept for the first signature.
        let expanded = SigningKeyStandard::decode(falcon).ok_or(SigError::BadKey)?;
        let ed25519 = alg.composite().then(|| {
            let mut s = Zeroizing::new([0u8; ED25519_KEY_LEN]);
            s.copy_from_slice(seed);
            Arc::new(ed25519_dalek::SigningKey::from_bytes(&s))
        });
        Ok(Self {
            alg,
            encoded: Zeroizing::new(bytes.to_vec()),
            expanded: Arc::new(Mutex::new(vec![Box::new(expanded)])),
            ed25519,
        })
    }

    /// The algorithm.
    pub fn alg(&self) -> SigAlg {
        self.alg
    }

    /// The encoded key (secret).
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// Signs `content` under `context` (see [`VerifyingKey::verify`]).
    pub fn sign(&self, context: &[u8], content: &[u8], rng: &mut impl CryptoRngCore) -> Vec<u8> {
        let kept = self
            .expanded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let falcon = &self.encoded[..self.alg.falcon_private_len()];
        let mut sk = kept.unwrap_or_else(|| {
            Box::new(SigningKeyStandard::decode(falcon).expect("validated at construction"))
        });
        let message = self.alg.message(context, content);
        let mut sig = vec![0u8; self.alg.falcon_signature_len()];
        sk.sign(rng, &DOMAIN_NONE, &HASH_ID_RAW, &message, &mut sig);
        if let Some(ed) = &self.ed25519 {
            sig.extend_from_slice(&ed.sign(&message).to_bytes());
        }
        let mut pool = self.expanded.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < MAX_EXPANDED {
            pool.push(sk);
        }
        sig
    }
}

impl VerifyingKey {
    /// Decodes a public key.
    ///
    /// # Errors
    /// [`SigError::BadKey`] if the bytes are not a FALCON-512 or FALCON-1024 public key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SigError> {
        let alg = SigAlg::from_public_key_len(bytes.len()).ok_or(SigError::BadKey)?;
        let (falcon, ed) = bytes.split_at(alg.falcon_public_len());
        VerifyingKeyStandard::decode(falcon).ok_or(SigError::BadKey)?;
        let ed25519 = if alg.composite() {
            let key: &[u8; ED25519_KEY_LEN] = ed.try_into().map_err(|_| SigError::BadKey)?;
            let k = ed25519_dalek::VerifyingKey::from_bytes(key).map_err(|_| SigError::BadKey)?;
            // A small-order key verifies forged signatures: never a valid public key.
            if k.is_weak() {
                return Err(SigError::BadKey);
            }
            Some(Box::new(k))
        } else {
            None
        };
        Ok(Self {
            alg,
            encoded: bytes.to_vec(),
            ed25519,
            id: OnceLock::new(),
        })
    }

    /// SHA-256 of the encoded key: how certificates name their issuer, what every batch
    /// signature's tree binds, and (its first 8 bytes) how a ticket names the key of the
    /// server that issued it. Hashed once per key.
    pub fn key_id(&self) -> [u8; 32] {
        *self
            .id
            .get_or_init(|| sha2::Sha256::digest(&self.encoded).into())
    }

    /// The algorithm.
    pub fn alg(&self) -> SigAlg {
        self.alg
    }

    /// The encoded key.
    pub fn as_bytes(&self) -> &[u8] {
        &self.encoded
    }

    /// Verifies `sig` over `content` under `context`.
    ///
    /// # Errors
    /// [`SigError::BadSignature`].
    pub fn verify(&self, context: &[u8], content: &[u8], sig: &[u8]) -> Result<(), SigError> {
        let falcon = &self.encoded[..self.alg.falcon_public_len()];
        let vk = VerifyingKeyStandard::decode(falcon).ok_or(SigError::BadKey)?;
        let message = self.alg.message(context, content);
        let (falcon_sig, ed_sig) = match &self.ed25519 {
            None => (sig, None),
            Some(k) => {
                // Both halves, each of its exact length.
                if sig.len() != self.alg.signature_len() {
                    return Err(SigError::BadSignature);
                }
                let (f, e) = sig.split_at(self.alg.falcon_signature_len());
                (f, Some((k, e)))
            }
        };
        if !vk.verify(falcon_sig, &DOMAIN_NONE, &HASH_ID_RAW, &message) {
            return Err(SigError::BadSignature);
        }
        if let Some((k, e)) = ed_sig {
            let e = ed25519_dalek::Signature::from_slice(e).map_err(|_| SigError::BadSignature)?;
            k.verify_strict(&message, &e)
                .map_err(|_| SigError::BadSignature)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_every_algorithm() {
        let mut rng = rand_core::OsRng;
        for alg in SigAlg::ALL {
            let (sk, vk) = SigningKey::generate(alg, &mut rng);
            assert_eq!(vk.as_bytes().len(), alg.public_key_len());
            let sig = sk.sign(b"STOQ test", b"content", &mut rng);
            assert_eq!(sig.len(), alg.signature_len());
            vk.verify(b"STOQ test", b"content", &sig).unwrap();
            assert_eq!(
                vk.verify(b"STOQ other", b"content", &sig),
                Err(SigError::BadSignature)
            );
            assert_eq!(
                vk.verify(b"STOQ test", b"contenT", &sig),
                Err(SigError::BadSignature)
            );
            let mut bad = sig.clone();
            bad[sig.len() / 2] ^= 1;
            assert_eq!(
                vk.verify(b"STOQ test", b"content", &bad),
                Err(SigError::BadSignature)
            );
            assert_eq!(
                vk.verify(b"STOQ test", b"content", &sig[..10]),
                Err(SigError::BadSignature)
            );
            // Round trips through bytes.
            let vk2 = VerifyingKey::from_bytes(vk.as_bytes()).unwrap();
            let sk2 = SigningKey::from_bytes(sk.as_bytes()).unwrap();
            vk2.verify(b"x", b"y", &sk2.sign(b"x", b"y", &mut rng))
                .unwrap();
        }
        assert_eq!(VerifyingKey::from_bytes(&[0u8; 10]), Err(SigError::BadKey));
        assert!(SigningKey::from_bytes(&[0u8; 5]).is_err());
        for alg in SigAlg::ALL {
            assert_eq!(SigAlg::from_id(alg.id()), Some(alg));
            assert_eq!(SigAlg::from_public_key_len(alg.public_key_len()), Some(alg));
        }
    }

    /// Both halves of a composite signature must verify, and neither is a signature of
    /// its own algorithm alone.
    #[test]
    fn a_composite_needs_both_halves_and_neither_stands_alone() {
        let mut rng = rand_core::OsRng;
        let (sk, vk) = SigningKey::generate(SigAlg::Falcon512Ed25519, &mut rng);
        let sig = sk.sign(b"ctx", b"content", &mut rng);
        vk.verify(b"ctx", b"content", &sig).unwrap();
        let falcon_len = SigAlg::Falcon512.signature_len();
        // A bit flipped in either half.
        for at in [10, falcon_len + 10] {
            let mut bad = sig.clone();
            bad[at] ^= 1;
            assert_eq!(
                vk.verify(b"ctx", b"content", &bad),
                Err(SigError::BadSignature)
            );
        }
        // The FALCON half alone, padded with a zero Ed25519 half, or cut short.
        let mut stripped = sig[..falcon_len].to_vec();
        assert_eq!(
            vk.verify(b"ctx", b"content", &stripped),
            Err(SigError::BadSignature)
        );
        stripped.extend_from_slice(&[0; 64]);
        assert_eq!(
            vk.verify(b"ctx", b"content", &stripped),
            Err(SigError::BadSignature)
        );
        // The FALCON half is not a FALCON-512 signature under the FALCON key alone.
        let falcon_vk =
            VerifyingKey::from_bytes(&vk.as_bytes()[..SigAlg::Falcon512.public_key_len()]).unwrap();
        assert_eq!(
            falcon_vk.verify(b"ctx", b"content", &sig[..falcon_len]),
            Err(SigError::BadSignature)
        );
        // Nor the Ed25519 half an Ed25519 signature over the plain message.
        let ed = ed25519_dalek::VerifyingKey::from_bytes(
            vk.as_bytes()[SigAlg::Falcon512.public_key_len()..]
                .try_into()
                .unwrap(),
        )
        .unwrap();
        let e = ed25519_dalek::Signature::from_slice(&sig[falcon_len..]).unwrap();
        assert!(ed.verify_strict(b"ctx\0content", &e).is_err());
        // A plain FALCON-512 signature is not accepted by the composite key.
        let falcon_sk =
            SigningKey::from_bytes(&sk.as_bytes()[..SigAlg::Falcon512.private_key_len()]).unwrap();
        let plain = falcon_sk.sign(b"ctx", b"content", &mut rng);
        assert_eq!(
            vk.verify(b"ctx", b"content", &plain),
            Err(SigError::BadSignature)
        );
        // A small-order Ed25519 half makes the public key invalid.
        let mut weak = vk.as_bytes().to_vec();
        let at = SigAlg::Falcon512.public_key_len();
        weak[at..].copy_from_slice(&[0; 32]);
        weak[at] = 1; // the identity point
        assert_eq!(VerifyingKey::from_bytes(&weak), Err(SigError::BadKey));
    }
}
