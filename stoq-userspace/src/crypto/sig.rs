//! FALCON signatures through the `fn-dsa` crate (FN-DSA, by Falcon's designer).

use fn_dsa::{
    DOMAIN_NONE, FN_DSA_LOGN_512, FN_DSA_LOGN_1024, HASH_ID_RAW, KeyPairGenerator,
    KeyPairGeneratorStandard, SigningKey as _, SigningKeyStandard, VerifyingKey as _,
    VerifyingKeyStandard, sign_key_size, signature_size, vrfy_key_size,
};
use std::sync::{Arc, Mutex, PoisonError};

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

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
}

impl SigAlg {
    /// The wire identifier.
    pub const fn id(self) -> u16 {
        match self {
            Self::Falcon512 => 0x0009,
            Self::Falcon1024 => 0x000a,
        }
    }

    /// The algorithm with wire identifier `id`.
    pub const fn from_id(id: u16) -> Option<Self> {
        match id {
            0x0009 => Some(Self::Falcon512),
            0x000a => Some(Self::Falcon1024),
            _ => None,
        }
    }

    /// The name used in PEM labels and certificates.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Falcon512 => "FALCON-512",
            Self::Falcon1024 => "FALCON-1024",
        }
    }

    fn logn(self) -> u32 {
        match self {
            Self::Falcon512 => FN_DSA_LOGN_512,
            Self::Falcon1024 => FN_DSA_LOGN_1024,
        }
    }

    /// Length of an encoded verifying (public) key.
    pub fn public_key_len(self) -> usize {
        vrfy_key_size(self.logn())
    }

    /// Length of an encoded signing (private) key.
    pub fn private_key_len(self) -> usize {
        sign_key_size(self.logn())
    }

    /// Length of a signature.
    pub fn signature_len(self) -> usize {
        signature_size(self.logn())
    }

    /// The algorithm of an encoded public key, from its length.
    pub fn from_public_key_len(len: usize) -> Option<Self> {
        [Self::Falcon512, Self::Falcon1024]
            .into_iter()
            .find(|a| a.public_key_len() == len)
    }
}

/// Why a signature operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// The key bytes do not decode as a FALCON key.
    #[error("malformed FALCON key")]
    BadKey,
    /// The signature does not verify.
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
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    alg: SigAlg,
    encoded: Vec<u8>,
}

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

/// Builds the signed message: a context label, a zero byte, then the content (a transcript
/// hash), as TLS 1.3 does for CertificateVerify.
fn framed(context: &[u8], content: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + 1 + content.len());
    m.extend_from_slice(context);
    m.push(0);
    m.extend_from_slice(content);
    m
}

impl SigningKey {
    /// Generates a key pair.
    pub fn generate(alg: SigAlg, rng: &mut impl CryptoRngCore) -> (Self, VerifyingKey) {
        let mut sk = Zeroizing::new(vec![0u8; alg.private_key_len()]);
        let mut vk = vec![0u8; alg.public_key_len()];
        KeyPairGeneratorStandard::default().keygen(alg.logn(), rng, &mut sk, &mut vk);
        (
            Self {
                alg,
                encoded: sk,
                expanded: Arc::default(),
            },
            VerifyingKey { alg, encoded: vk },
        )
    }

    /// Decodes a signing key.
    ///
    /// # Errors
    /// [`SigError::BadKey`] if the bytes are not a FALCON-512 or FALCON-1024 signing key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SigError> {
        let alg = [SigAlg::Falcon512, SigAlg::Falcon1024]
            .into_iter()
            .find(|a| a.private_key_len() == bytes.len())
            .ok_or(SigError::BadKey)?;
        // The check is the first expansion, kept for the first signature.
        let expanded = SigningKeyStandard::decode(bytes).ok_or(SigError::BadKey)?;
        Ok(Self {
            alg,
            encoded: Zeroizing::new(bytes.to_vec()),
            expanded: Arc::new(Mutex::new(vec![Box::new(expanded)])),
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
        let mut sk = kept.unwrap_or_else(|| {
            Box::new(SigningKeyStandard::decode(&self.encoded).expect("validated at construction"))
        });
        let mut sig = vec![0u8; self.alg.signature_len()];
        sk.sign(
            rng,
            &DOMAIN_NONE,
            &HASH_ID_RAW,
            &framed(context, content),
            &mut sig,
        );
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
        VerifyingKeyStandard::decode(bytes).ok_or(SigError::BadKey)?;
        Ok(Self {
            alg,
            encoded: bytes.to_vec(),
        })
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
        let vk = VerifyingKeyStandard::decode(&self.encoded).ok_or(SigError::BadKey)?;
        if vk.verify(sig, &DOMAIN_NONE, &HASH_ID_RAW, &framed(context, content)) {
            Ok(())
        } else {
            Err(SigError::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_both_sizes() {
        let mut rng = rand_core::OsRng;
        for alg in [SigAlg::Falcon512, SigAlg::Falcon1024] {
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
        assert_eq!(
            SigAlg::from_id(SigAlg::Falcon1024.id()),
            Some(SigAlg::Falcon1024)
        );
    }
}
