//! Packet protection: cipher suites, the HKDF key schedule, AEAD sealing and opening in
//! place, header protection and packet-number coding.
//!
//! The construction follows RFC 9001 (QUIC-TLS) §5: a per-packet AEAD whose nonce is the
//! IV xor the packet number, then header protection that masks the packet-number length,
//! key phase and packet number with a mask computed from a sample of the ciphertext. STOQ's
//! own labels use the prefix `"stoq "` where TLS uses `"tls13 "`; with the TLS prefix the
//! same code reproduces RFC 9001's test vectors (see the tests).
//!
//! Implementation choice, by measurement (`cargo bench --bench aead_candidates`, one core,
//! 1400-byte packets, `docs/benchmarks.md`): on Linux aws-lc-rs (AWS-LC, the library
//! rustls defaults to) seals AES-256-GCM about 1.3× as fast as ring and 1.5× on jumbo
//! packets (its AVX-512 VAES code), and ring in turn is 4× RustCrypto's aes-gcm. Both suites
//! therefore run on aws-lc-rs on Linux and on ring elsewhere (the portable UDP path: AWS-LC
//! does not cross-compile without the target's SDK); the two crates share one API, so the
//! code names [`provider`] and not either crate. The RustCrypto crates serve as independent
//! oracles in the tests.
#![deny(unsafe_code)]

/// The AEAD, header-protection and HMAC library: aws-lc-rs on Linux, ring elsewhere (the
/// two expose the same `aead` and `hmac` APIs). Packet keys, tickets and address tokens
/// seal with its AEADs; TURN's message integrity (HMAC-SHA1, RFC 8489) uses its HMAC.
#[cfg(target_os = "linux")]
pub(crate) use aws_lc_rs as provider;
#[cfg(not(target_os = "linux"))]
pub(crate) use ring as provider;

mod hkdf;
pub mod kex;
mod keys;
pub mod pn;
mod protect;
pub mod sig;
mod suite;

pub(crate) use hkdf::Expander;
pub use hkdf::{LABEL_PREFIX, expand_label, expand_label_with_prefix, extract};
pub use keys::{DirectionalKeys, HeaderKey, PacketKey, Secret};
pub use protect::{HeaderInfo, protect_packet, unprotect_header};
pub use suite::CipherSuite;

/// Length of every AEAD tag STOQ uses.
pub const TAG_LEN: usize = 16;
/// Length of the header-protection sample.
pub const SAMPLE_LEN: usize = 16;

/// Compares two byte strings in time that depends only on their lengths (for tokens and
/// tags, where an early exit would leak how many leading bytes an attacker guessed).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Why a packet-protection operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Authentication failed: the packet was forged, corrupted or sealed with another key.
    #[error("packet authentication failed")]
    Decrypt,
    /// The buffer cannot hold the header, the payload and the tag.
    #[error("buffer too small for header, payload and the {TAG_LEN}-byte tag")]
    BufferTooSmall,
    /// The packet is too short to take a header-protection sample.
    #[error("packet too short for a header-protection sample")]
    TooShortForSample,
    /// The key has protected as many packets as its suite allows; a key update is due.
    #[error("the key reached its suite's confidentiality limit; a key update is required")]
    ConfidentialityLimit,
    /// Too many packets failed authentication under this key: the connection must close.
    #[error("too many forged packets under one key (integrity limit)")]
    IntegrityLimit,
    /// The suite is not available on this CPU.
    #[error("cipher suite {0:?} is not available on this CPU")]
    SuiteUnavailable(CipherSuite),
}

#[cfg(test)]
pub(crate) mod tests;
