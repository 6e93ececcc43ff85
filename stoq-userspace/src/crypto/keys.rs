//! Secrets, packet keys and header-protection keys.

use crate::crypto::provider::aead::quic::HeaderProtectionKey;
use crate::crypto::provider::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroizing;

use super::hkdf::{Expander, expand_label};
use super::{CipherSuite, CryptoError, SAMPLE_LEN, TAG_LEN};

/// A 32-byte traffic secret, wiped from memory on drop.
#[derive(Clone)]
pub struct Secret(Zeroizing<[u8; 32]>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The secret of the next key phase (`HKDF-Expand-Label(secret, "ku", "", 32)`,
    /// RFC 9001 §6.1).
    pub fn next_phase(&self) -> Self {
        let mut out = Zeroizing::new([0u8; 32]);
        expand_label(&self.0[..], b"ku", &[], &mut out[..]);
        Self(out)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The AEAD key and IV of one direction and key phase, with its usage counters.
///
/// The IV and the secret it came from are zeroized on drop, and so is the library's
/// expanded key schedule on Linux (AWS-LC wipes what it frees); ring, the provider
/// elsewhere, does not wipe its copy. See `docs/security.md`.
pub struct PacketKey {
    suite: CipherSuite,
    key: LessSafeKey,
    iv: Zeroizing<[u8; 12]>,
    sealed: u64,
    failed: u64,
}

impl std::fmt::Debug for PacketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketKey")
            .field("suite", &self.suite)
            .field("sealed", &self.sealed)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl PacketKey {
    /// A key from raw key and IV bytes.
    ///
    /// # Errors
    /// [`CryptoError::SuiteUnavailable`] if the key length does not fit the suite.
    pub fn new(suite: CipherSuite, key: &[u8], iv: [u8; 12]) -> Result<Self, CryptoError> {
        let unbound =
            UnboundKey::new(suite.aead(), key).map_err(|_| CryptoError::SuiteUnavailable(suite))?;
        Ok(Self {
            suite,
            key: LessSafeKey::new(unbound),
            iv: Zeroizing::new(iv),
            sealed: 0,
            failed: 0,
        })
    }

    /// The key for `secret`: `key` and `iv` expanded with STOQ's labels.
    pub fn from_secret(suite: CipherSuite, secret: &Secret) -> Self {
        Self::expanded(suite, &Expander::new(secret.as_bytes()))
    }

    /// The key from its secret's expander (`key` and `iv`).
    fn expanded(suite: CipherSuite, secret: &Expander) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        let mut iv = [0u8; 12];
        secret.label(b"key", &[], &mut key[..suite.key_len()]);
        secret.label(b"iv", &[], &mut iv);
        let me = Self::new(suite, &key[..suite.key_len()], iv).expect("lengths match the suite");
        iv.fill(0);
        me
    }

    /// The suite.
    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// Packets sealed so far.
    pub fn sealed(&self) -> u64 {
        self.sealed
    }

    /// Packets that failed authentication so far.
    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// Whether this key has sealed as many packets as its suite allows: it seals no more.
    pub fn exhausted(&self) -> bool {
        self.sealed >= self.suite.confidentiality_limit()
    }

    /// Sets the count of packets sealed (tests that need a key near its limit).
    #[cfg(test)]
    pub(crate) fn set_sealed(&mut self, n: u64) {
        self.sealed = n;
    }

    /// Whether this key is close enough to its confidentiality limit (within 1/8) that a
    /// key update should start now.
    pub fn should_update(&self) -> bool {
        let limit = self.suite.confidentiality_limit();
        self.sealed >= limit - limit / 8
    }

    fn nonce(&self, pn: u64) -> Nonce {
        let mut n = *self.iv;
        for (b, p) in n[4..].iter_mut().zip(pn.to_be_bytes()) {
            *b ^= p;
        }
        Nonce::assume_unique_for_key(n)
    }

    /// Seals `packet` in place: `packet[..header_len]` is the header (authenticated, not
    /// encrypted), then the plaintext, then [`TAG_LEN`] bytes that receive the tag.
    ///
    /// # Errors
    /// [`CryptoError::BufferTooSmall`], or [`CryptoError::ConfidentialityLimit`] once the key
    /// has sealed as many packets as its suite allows.
    pub fn seal(
        &mut self,
        pn: u64,
        packet: &mut [u8],
        header_len: usize,
    ) -> Result<(), CryptoError> {
        if packet.len() < header_len + TAG_LEN {
            return Err(CryptoError::BufferTooSmall);
        }
        if self.exhausted() {
            return Err(CryptoError::ConfidentialityLimit);
        }
        let body_end = packet.len() - TAG_LEN;
        let (header, rest) = packet.split_at_mut(header_len);
        let (body, tag_out) = rest.split_at_mut(body_end - header_len);
        let tag = self
            .key
            .seal_in_place_separate_tag(self.nonce(pn), Aad::from(&*header), body)
            .map_err(|_| CryptoError::BufferTooSmall)?;
        tag_out.copy_from_slice(tag.as_ref());
        self.sealed += 1;
        Ok(())
    }

    /// Opens `packet` in place (header, ciphertext, tag) and returns the plaintext.
    ///
    /// # Errors
    /// [`CryptoError::Decrypt`] for a forged or corrupted packet (counted), and
    /// [`CryptoError::IntegrityLimit`] once too many have failed under this key.
    pub fn open<'a>(
        &mut self,
        pn: u64,
        packet: &'a mut [u8],
        header_len: usize,
    ) -> Result<&'a mut [u8], CryptoError> {
        if self.failed >= self.suite.integrity_limit() {
            return Err(CryptoError::IntegrityLimit);
        }
        if packet.len() < header_len + TAG_LEN {
            self.failed += 1;
            return Err(CryptoError::Decrypt);
        }
        let nonce = self.nonce(pn);
        let (header, body) = packet.split_at_mut(header_len);
        match self.key.open_in_place(nonce, Aad::from(&*header), body) {
            Ok(plain) => Ok(plain),
            Err(_) => {
                self.failed += 1;
                Err(CryptoError::Decrypt)
            }
        }
    }
}

/// A header-protection key (AES-256-ECB or ChaCha20, RFC 9001 §5.4).
pub struct HeaderKey {
    suite: CipherSuite,
    key: HeaderProtectionKey,
}

impl std::fmt::Debug for HeaderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderKey")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl HeaderKey {
    /// A key from raw bytes.
    ///
    /// # Errors
    /// [`CryptoError::SuiteUnavailable`] if the length does not fit the suite.
    pub fn new(suite: CipherSuite, key: &[u8]) -> Result<Self, CryptoError> {
        let key = HeaderProtectionKey::new(suite.hp(), key)
            .map_err(|_| CryptoError::SuiteUnavailable(suite))?;
        Ok(Self { suite, key })
    }

    /// The key for `secret` (label `hp`). It does not change across key updates.
    pub fn from_secret(suite: CipherSuite, secret: &Secret) -> Self {
        Self::expanded(suite, &Expander::new(secret.as_bytes()))
    }

    /// The key from its secret's expander (`hp`).
    fn expanded(suite: CipherSuite, secret: &Expander) -> Self {
        let mut hp = Zeroizing::new([0u8; 32]);
        secret.label(b"hp", &[], &mut hp[..suite.hp_key_len()]);
        Self::new(suite, &hp[..suite.hp_key_len()]).expect("length matches the suite")
    }

    /// The 5-byte mask for a 16-byte ciphertext sample.
    ///
    /// # Errors
    /// [`CryptoError::TooShortForSample`] if `sample` is not [`SAMPLE_LEN`] bytes.
    pub fn mask(&self, sample: &[u8]) -> Result<[u8; 5], CryptoError> {
        if sample.len() != SAMPLE_LEN {
            return Err(CryptoError::TooShortForSample);
        }
        self.key
            .new_mask(sample)
            .map_err(|_| CryptoError::TooShortForSample)
    }
}

/// Everything one direction of one packet-number space needs: the current packet key, the
/// header key, and the secret from which the next key phase is derived.
#[derive(Debug)]
pub struct DirectionalKeys {
    /// The packet key of the current key phase.
    pub packet: PacketKey,
    /// The header-protection key (constant across key phases).
    pub header: HeaderKey,
    secret: Secret,
}

impl DirectionalKeys {
    /// Keys for `secret`.
    pub fn from_secret(suite: CipherSuite, secret: Secret) -> Self {
        let x = Expander::new(secret.as_bytes());
        Self {
            packet: PacketKey::expanded(suite, &x),
            header: HeaderKey::expanded(suite, &x),
            secret,
        }
    }

    /// The suite.
    pub fn suite(&self) -> CipherSuite {
        self.packet.suite()
    }

    /// The packet key of the next key phase, leaving this one in place (a receiver keeps
    /// the old key until packets of the new phase authenticate).
    pub fn next_phase_key(&self) -> (Secret, PacketKey) {
        let s = self.secret.next_phase();
        let k = PacketKey::from_secret(self.suite(), &s);
        (s, k)
    }

    /// Installs a next-phase key obtained from [`next_phase_key`](Self::next_phase_key) and
    /// returns the key it replaces (a receiver keeps it for reordered packets).
    pub fn install(&mut self, secret: Secret, key: PacketKey) -> PacketKey {
        self.secret = secret;
        std::mem::replace(&mut self.packet, key)
    }

    /// Moves to the next key phase (RFC 9001 §6): new packet key from the `ku` secret; the
    /// header key stays.
    pub fn update(&mut self) {
        let (s, k) = self.next_phase_key();
        self.secret = s;
        self.packet = k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_enforced() {
        let mut k = PacketKey::new(CipherSuite::Aes256Gcm, &[1; 32], [2; 12]).unwrap();
        k.sealed = CipherSuite::Aes256Gcm.confidentiality_limit() - 1;
        assert!(k.should_update());
        let mut p = [0u8; 32];
        assert!(k.seal(1, &mut p, 4).is_ok());
        assert_eq!(k.seal(2, &mut p, 4), Err(CryptoError::ConfidentialityLimit));

        let mut k = PacketKey::new(CipherSuite::ChaCha20Poly1305, &[1; 32], [2; 12]).unwrap();
        assert!(!k.should_update());
        k.failed = CipherSuite::ChaCha20Poly1305.integrity_limit();
        assert_eq!(
            k.open(1, &mut [0u8; 40], 4),
            Err(CryptoError::IntegrityLimit)
        );
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new([7; 32])), "Secret(..)");
        let d = DirectionalKeys::from_secret(CipherSuite::ChaCha20Poly1305, Secret::new([7; 32]));
        assert!(!format!("{d:?}").contains("7, 7"));
    }
}
