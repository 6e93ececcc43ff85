//! QUIC-LB connection-ID encryption (draft-ietf-quic-load-balancers-21, "Server ID
//! Encoding in Connection IDs"): what a QUIC-LB load balancer holding the key decrypts to
//! find the server a CID belongs to, and what an observer without it cannot link.
//!
//! A STOQ CID is `first octet || server ID || nonce` with the worker id as the last octet
//! of the server ID ([`stoq_common::cid::CidLayout`]), which is QUIC-LB's plaintext
//! layout. With a key, everything after the first octet is encrypted:
//!
//! - **single pass** when server ID and nonce are exactly 16 octets: one AES-128-ECB
//!   block;
//! - **four passes** otherwise: a four-round Feistel network whose round function is
//!   AES-128-ECB over `expand(length, pass, half)`, halves split mid-octet when the length
//!   is odd.
//!
//! Everything here works on fixed-size stack arrays: no allocation per CID.

use aes::Aes128;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit, generic_array::GenericArray};

/// The shortest server ID + nonce QUIC-LB encrypts (its `length` argument's minimum).
pub const MIN_ENCRYPTED_LEN: usize = 5;
/// The longest (QUIC v1 CIDs are at most 20 octets, one of which is the first octet).
pub const MAX_ENCRYPTED_LEN: usize = 19;

/// A QUIC-LB AES-128-ECB key.
#[derive(Clone)]
pub struct LbKey(Aes128);

impl std::fmt::Debug for LbKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LbKey(..)")
    }
}

impl LbKey {
    /// A key from its 16 octets.
    pub fn new(key: &[u8; 16]) -> Self {
        Self(Aes128::new(GenericArray::from_slice(key)))
    }

    fn aes(&self, block: &mut [u8; 16]) {
        self.0.encrypt_block(GenericArray::from_mut_slice(block));
    }

    /// The round function: the first `half` octets of `AES(expand(len, pass, input))`.
    fn round(&self, len: usize, pass: u8, input: &[u8], out: &mut [u8; 16]) {
        *out = [0; 16];
        out[..input.len()].copy_from_slice(input);
        out[14] = len as u8;
        out[15] = pass;
        self.aes(out);
    }

    /// Encrypts a CID's server ID and nonce (everything after the first octet) in place.
    /// Lengths outside 5..=19 are left as they are (the layout check refuses them).
    pub fn encrypt(&self, body: &mut [u8]) {
        match body.len() {
            16 => self.aes(body.try_into().expect("16 octets")),
            MIN_ENCRYPTED_LEN..=MAX_ENCRYPTED_LEN => self.feistel(body, true),
            _ => {}
        }
    }

    /// Decrypts what [`encrypt`](Self::encrypt) made, in place.
    pub fn decrypt(&self, body: &mut [u8]) {
        match body.len() {
            16 => self
                .0
                .decrypt_block(GenericArray::from_mut_slice(&mut body[..16])),
            MIN_ENCRYPTED_LEN..=MAX_ENCRYPTED_LEN => self.feistel(body, false),
            _ => {}
        }
    }

    fn feistel(&self, body: &mut [u8], encrypt: bool) {
        let len = body.len();
        let half = len.div_ceil(2);
        let odd = len % 2 == 1;
        let mut left = [0u8; 10];
        let mut right = [0u8; 10];
        let (l, r) = (&mut left[..half], &mut right[..half]);
        l.copy_from_slice(&body[..half]);
        r.copy_from_slice(&body[len - half..]);
        // An odd length splits its middle octet: the left half keeps its high nibble,
        // the right half its low one.
        let clear_left = |l: &mut [u8]| {
            if odd {
                l[half - 1] &= 0xf0;
            }
        };
        let clear_right = |r: &mut [u8]| {
            if odd {
                r[0] &= 0x0f;
            }
        };
        clear_left(l);
        clear_right(r);
        let mut block = [0u8; 16];
        let mut xor_into = |dst: &mut [u8], pass: u8, src: &[u8]| {
            self.round(len, pass, src, &mut block);
            for (d, k) in dst.iter_mut().zip(&block[..half]) {
                *d ^= k;
            }
        };
        if encrypt {
            xor_into(r, 1, l);
            clear_right(r);
            xor_into(l, 2, r);
            clear_left(l);
            xor_into(r, 3, l);
            clear_right(r);
            xor_into(l, 4, r);
            clear_left(l);
        } else {
            xor_into(l, 4, r);
            clear_left(l);
            xor_into(r, 3, l);
            clear_right(r);
            xor_into(l, 2, r);
            clear_left(l);
            xor_into(r, 1, l);
            clear_right(r);
        }
        body[..half].copy_from_slice(l);
        if odd {
            body[half - 1] = l[half - 1] | r[0];
            body[half..].copy_from_slice(&r[1..]);
        } else {
            body[half..].copy_from_slice(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::tests::hex;

    /// draft-ietf-quic-load-balancers-21 (and the editor's copy after it), Appendix B
    /// "Load Balancer Test Vectors", "Encrypted CIDs": key
    /// 8f95f09245765f80256934e50c66207f; (config rotation, server ID, nonce, CID). Three
    /// four-pass cases (odd length 7; 15 with the server ID longer than the nonce, the
    /// fourth decryption pass; 18) and the 16-octet single pass. The last vector's first
    /// octet is printed as 0x12 in the draft, which does not carry its config rotation 3
    /// (0x72 would); only the octets after it are checked against the draft.
    const ENCRYPTED: [(u8, &str, &str, &str); 4] = [
        (0, "ed793a", "ee080dbf", "0720b1d07b359d3c"),
        (
            1,
            "ed793a51d49b8f5fab65",
            "ee080dbf48",
            "2fcc381bc74cb4fbad2823a3d1f8fed2",
        ),
        (
            2,
            "ed793a51d49b8f5f",
            "ee080dbf48c0d1e5",
            "504dd2d05a7b0de9b2b9907afb5ecf8cc3",
        ),
        (
            3,
            "ed793a51d49b8f5fab",
            "ee080dbf48c0d1e55d",
            "125779c9cc86beb3a3a4a3ca96fce4bfe0cdbc",
        ),
    ];

    #[test]
    fn the_drafts_encrypted_vectors() {
        let key = LbKey::new(&hex("8f95f09245765f80256934e50c66207f").try_into().unwrap());
        for (cr, sid, nonce, cid) in ENCRYPTED {
            let want = hex(cid);
            let mut body = hex(sid);
            body.extend(hex(nonce));
            let plain = body.clone();
            key.encrypt(&mut body);
            assert_eq!(body, want[1..], "config rotation {cr}: encryption");
            // The first octet: config rotation and length - 1.
            let first = (cr << 5) | (plain.len() as u8);
            if cr != 3 {
                assert_eq!(first, want[0], "config rotation {cr}: first octet");
            }
            key.decrypt(&mut body);
            assert_eq!(body, plain, "config rotation {cr}: decryption");
        }
    }

    /// The draft's worked example of the four-pass algorithm (§ "Encryption Example"):
    /// server ID 31441a, nonce 9c69c275, key fdf726a9893ec05c0632d3956680baf0, CID
    /// 0767947d29be054a.
    #[test]
    fn the_drafts_worked_example() {
        let key = LbKey::new(&hex("fdf726a9893ec05c0632d3956680baf0").try_into().unwrap());
        let mut body = hex("31441a9c69c275");
        key.encrypt(&mut body);
        assert_eq!(body, hex("67947d29be054a"));
    }

    #[test]
    fn every_length_round_trips() {
        let key = LbKey::new(&[7; 16]);
        for len in MIN_ENCRYPTED_LEN..=MAX_ENCRYPTED_LEN {
            let plain: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
            let mut body = plain.clone();
            key.encrypt(&mut body);
            assert_ne!(body, plain, "length {len} encrypted");
            key.decrypt(&mut body);
            assert_eq!(body, plain, "length {len} round trip");
        }
        // Lengths QUIC-LB does not encrypt are left alone.
        let mut short = [1, 2, 3, 4];
        key.encrypt(&mut short);
        assert_eq!(short, [1, 2, 3, 4]);
    }
}
