//! Packet-number truncation and reconstruction (RFC 9000 §17.1 and Appendix A.2–A.3).

/// Bytes needed to send `pn` so that the peer, whose largest acknowledgement from us is
/// `largest_acked`, can reconstruct it: enough to represent twice the unacknowledged range
/// (RFC 9000 A.2), from 1 to 4.
pub fn encoded_len(pn: u64, largest_acked: Option<u64>) -> usize {
    let unacked = match largest_acked {
        Some(l) => pn.saturating_sub(l),
        None => pn.saturating_add(1),
    };
    // Bits for 2 * unacked, i.e. one more than for unacked.
    let bits = 64 - unacked.leading_zeros() + 1;
    (bits.div_ceil(8) as usize).clamp(1, 4)
}

/// Writes the low `len` bytes of `pn` (big-endian) into `out`, returning `len`, or `None` if
/// `len` is not 1..=4 or `out` is shorter.
pub fn encode(pn: u64, len: usize, out: &mut [u8]) -> Option<usize> {
    if !(1..=4).contains(&len) {
        return None;
    }
    let b = pn.to_be_bytes();
    out.get_mut(..len)?.copy_from_slice(&b[8 - len..]);
    Some(len)
}

/// Reconstructs a full packet number from `truncated` (`len` bytes) given the largest
/// packet number received so far in the space (RFC 9000 A.3).
pub fn decode(largest_pn: Option<u64>, truncated: u64, len: usize) -> u64 {
    let expected = largest_pn.map_or(0, |l| l + 1);
    let bits = 8 * len as u32;
    let win = 1u64 << bits;
    let hwin = win / 2;
    let mask = win - 1;
    let candidate = (expected & !mask) | (truncated & mask);
    if candidate + hwin <= expected && candidate < (1u64 << 62) - win {
        candidate + win
    } else if candidate > expected + hwin && candidate >= win {
        candidate - win
    } else {
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9000 Appendix A.2's examples.
    #[test]
    fn rfc9000_a2_encoding_length() {
        assert_eq!(encoded_len(0xac5c02, Some(0xabe8b3)), 2);
        assert_eq!(encoded_len(0xace8fe, Some(0xabe8b3)), 3);
        assert_eq!(encoded_len(0, None), 1);
        assert_eq!(encoded_len(u64::from(u32::MAX) * 4, Some(0)), 4);
    }

    /// RFC 9000 Appendix A.3's example, and round trips around the window edges.
    #[test]
    fn rfc9000_a3_decoding() {
        assert_eq!(decode(Some(0xa82f30ea), 0x9b32, 2), 0xa82f9b32);
        for largest in [0u64, 1, 127, 255, 256, 65_535, 1 << 20, (1 << 32) + 7] {
            for next in largest + 1..largest + 40 {
                let len = encoded_len(next, Some(largest));
                let mut b = [0u8; 4];
                encode(next, len, &mut b).unwrap();
                let t = b[..len].iter().fold(0u64, |a, x| (a << 8) | u64::from(*x));
                assert_eq!(
                    decode(Some(largest), t, len),
                    next,
                    "largest {largest} next {next}"
                );
            }
        }
        assert_eq!(encode(1, 5, &mut [0; 8]), None);
        assert_eq!(encode(1, 2, &mut [0; 1]), None);
    }
}
