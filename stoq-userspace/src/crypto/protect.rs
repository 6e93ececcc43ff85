//! Whole-packet protection: AEAD, then header protection (RFC 9001 §5.3–5.4).

use super::{CryptoError, HeaderKey, PacketKey, SAMPLE_LEN, TAG_LEN};

/// Offset from the packet-number field to the header-protection sample.
const SAMPLE_OFFSET: usize = 4;

/// What header-protection removal reveals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderInfo {
    /// The unprotected first byte.
    pub first: u8,
    /// Packet-number length in bytes (1..=4).
    pub pn_len: usize,
    /// The truncated packet number.
    pub truncated_pn: u64,
}

impl HeaderInfo {
    /// The key-phase bit of a short header.
    pub fn key_phase(&self) -> bool {
        self.first & 0x80 == 0 && self.first & 0x04 != 0
    }
}

fn mask_bits(first: u8) -> u8 {
    if first & 0x80 != 0 { 0x0f } else { 0x1f }
}

/// Protects a packet in place. `packet` holds the header with its first byte (packet-number
/// length bits set) and the packet number unprotected at `pn_offset`, then the plaintext,
/// then [`TAG_LEN`] bytes for the tag. The packet must be long enough for the sample:
/// `pn_offset + 4 + 16` bytes.
///
/// # Errors
/// [`CryptoError::TooShortForSample`], [`CryptoError::BufferTooSmall`],
/// [`CryptoError::ConfidentialityLimit`].
pub fn protect_packet(
    packet: &mut [u8],
    pn_offset: usize,
    pn: u64,
    key: &mut PacketKey,
    hp: &HeaderKey,
) -> Result<(), CryptoError> {
    let first = *packet.first().ok_or(CryptoError::BufferTooSmall)?;
    let pn_len = usize::from(first & 0x03) + 1;
    let sample_at = pn_offset + SAMPLE_OFFSET;
    if packet.len() < sample_at + SAMPLE_LEN || packet.len() < pn_offset + pn_len + TAG_LEN {
        return Err(CryptoError::TooShortForSample);
    }
    key.seal(pn, packet, pn_offset + pn_len)?;
    let mask = hp.mask(&packet[sample_at..sample_at + SAMPLE_LEN])?;
    packet[0] ^= mask[0] & mask_bits(first);
    for (b, m) in packet[pn_offset..pn_offset + pn_len]
        .iter_mut()
        .zip(&mask[1..])
    {
        *b ^= m;
    }
    Ok(())
}

/// Removes header protection in place and returns the first byte and truncated packet
/// number. The payload stays sealed: reconstruct the packet number
/// ([`super::pn::decode`]) and call [`PacketKey::open`] with header length
/// `pn_offset + pn_len`.
///
/// # Errors
/// [`CryptoError::TooShortForSample`] when the packet is too short to sample.
pub fn unprotect_header(
    packet: &mut [u8],
    pn_offset: usize,
    hp: &HeaderKey,
) -> Result<HeaderInfo, CryptoError> {
    let sample_at = pn_offset + SAMPLE_OFFSET;
    let sample = packet
        .get(sample_at..sample_at + SAMPLE_LEN)
        .ok_or(CryptoError::TooShortForSample)?;
    let mask = hp.mask(sample)?;
    packet[0] ^= mask[0] & mask_bits(packet[0]);
    let first = packet[0];
    let pn_len = usize::from(first & 0x03) + 1;
    let mut truncated = 0u64;
    for (b, m) in packet[pn_offset..pn_offset + pn_len]
        .iter_mut()
        .zip(&mask[1..])
    {
        *b ^= m;
        truncated = (truncated << 8) | u64::from(*b);
    }
    Ok(HeaderInfo {
        first,
        pn_len,
        truncated_pn: truncated,
    })
}
