//! Known-answer tests, cross-checks against independent AEAD implementations, tampering,
//! key updates.

use super::*;

/// Bytes from hex digits (whitespace ignored): the test vectors' notation.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// RFC 9001 Appendix A.5: a ChaCha20-Poly1305 short-header packet, from the secret through
/// HKDF-Expand-Label ("tls13 quic key/iv/hp"), the AEAD and header protection, and back.
#[test]
fn rfc9001_a5_chacha20_short_header() {
    let secret = hex("9ac312a7f877468ebe69422748ad00a15443f18203a07d6060f688f30f21632b");
    let (mut key, mut iv, mut hp, mut ku) = ([0u8; 32], [0u8; 12], [0u8; 32], [0u8; 32]);
    expand_label_with_prefix(b"tls13 ", &secret, b"quic key", &[], &mut key);
    expand_label_with_prefix(b"tls13 ", &secret, b"quic iv", &[], &mut iv);
    expand_label_with_prefix(b"tls13 ", &secret, b"quic hp", &[], &mut hp);
    expand_label_with_prefix(b"tls13 ", &secret, b"quic ku", &[], &mut ku);
    assert_eq!(
        key.to_vec(),
        hex("c6d98ff3441c3fe1b2182094f69caa2ed4b716b65488960a7a984979fb23e1c8")
    );
    assert_eq!(iv.to_vec(), hex("e0459b3474bdd0e44a41c144"));
    assert_eq!(
        hp.to_vec(),
        hex("25a282b9e82f06f21f488917a4fc8f1b73573685608597d0efcb076b0ab7a7a4")
    );
    assert_eq!(
        ku.to_vec(),
        hex("1223504755036d556342ee9361d253421a826c9ecdf3c7148684b36b714881f9")
    );

    let suite = CipherSuite::ChaCha20Poly1305;
    let mut pk = PacketKey::new(suite, &key, iv).unwrap();
    let hk = HeaderKey::new(suite, &hp).unwrap();
    let pn = 654_360_564;
    let mut packet = hex("4200bff4 01");
    packet.extend_from_slice(&[0; TAG_LEN]);
    protect_packet(&mut packet, 1, pn, &mut pk, &hk).unwrap();
    assert_eq!(packet, hex("4cfe4189655e5cd55c41f69080575d7999c25a5bfb"));

    let info = unprotect_header(&mut packet, 1, &hk).unwrap();
    assert_eq!(
        (info.first, info.pn_len, info.truncated_pn),
        (0x42, 3, 0x00bff4)
    );
    let full = pn::decode(Some(pn - 1), info.truncated_pn, info.pn_len);
    assert_eq!(full, pn);
    let plain = pk.open(full, &mut packet, 1 + info.pn_len).unwrap();
    assert_eq!(plain, &[0x01]);
}

fn keys(suite: CipherSuite) -> (PacketKey, HeaderKey, [u8; 32], [u8; 12]) {
    let key = [0x11u8; 32];
    let iv = [0x22u8; 12];
    (
        PacketKey::new(suite, &key, iv).unwrap(),
        HeaderKey::new(suite, &[0x33; 32]).unwrap(),
        key,
        iv,
    )
}

fn nonce(iv: [u8; 12], pn: u64) -> [u8; 12] {
    let mut n = iv;
    for (b, p) in n[4..].iter_mut().zip(pn.to_be_bytes()) {
        *b ^= p;
    }
    n
}

/// Our sealing equals RustCrypto's (an independent implementation) byte for byte, and each
/// opens the other's output.
#[test]
fn cross_checked_against_rustcrypto() {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    for suite in CipherSuite::ALL {
        let (mut pk, _, key, iv) = keys(suite);
        for (pn, len) in [
            (0u64, 0usize),
            (1, 1),
            (77, 64),
            (1 << 40, 1200),
            (u64::from(u32::MAX), 1400),
        ] {
            let header = [0x41u8, 1, 2, 3, 4, 5];
            let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut ours = [&header[..], &body, &[0; TAG_LEN]].concat();
            pk.seal(pn, &mut ours, header.len()).unwrap();

            let mut theirs = body.clone();
            let n = nonce(iv, pn);
            let tag = match suite {
                CipherSuite::Aes256Gcm => aes_gcm::Aes256Gcm::new(&key.into())
                    .encrypt_in_place_detached(&n.into(), &header, &mut theirs)
                    .unwrap()
                    .to_vec(),
                CipherSuite::ChaCha20Poly1305 => {
                    chacha20poly1305::ChaCha20Poly1305::new(&key.into())
                        .encrypt_in_place_detached(&n.into(), &header, &mut theirs)
                        .unwrap()
                        .to_vec()
                }
            };
            assert_eq!(
                &ours[header.len()..header.len() + len],
                &theirs[..],
                "{suite:?} ciphertext, pn {pn}"
            );
            assert_eq!(
                &ours[header.len() + len..],
                &tag[..],
                "{suite:?} tag, pn {pn}"
            );
            let plain = pk.open(pn, &mut ours, header.len()).unwrap();
            assert_eq!(plain, &body[..]);
        }
    }
}

fn sealed_packet(suite: CipherSuite, pn: u64) -> (Vec<u8>, PacketKey, HeaderKey) {
    let (mut pk, hk, _, _) = keys(suite);
    let mut p = vec![0x41u8]; // short header, 2-byte packet number
    p.extend_from_slice(&[0xaa; 12]); // DCID
    p.extend_from_slice(&(pn as u16).to_be_bytes());
    p.extend_from_slice(b"a STOQ payload long enough to sample");
    p.extend_from_slice(&[0; TAG_LEN]);
    protect_packet(&mut p, 13, pn, &mut pk, &hk).unwrap();
    (p, pk, hk)
}

/// Flipping any single bit of a protected packet makes it fail to open: header protection
/// and the AEAD together leave no malleable byte.
#[test]
fn every_bit_flip_is_rejected() {
    for suite in CipherSuite::ALL {
        let pn = 300;
        let (orig, mut pk, hk) = sealed_packet(suite, pn);
        let mut rejected = 0;
        for i in 0..orig.len() {
            for bit in 0..8 {
                let mut p = orig.clone();
                p[i] ^= 1 << bit;
                let ok = unprotect_header(&mut p, 13, &hk).is_ok_and(|h| {
                    let full = pn::decode(Some(pn - 1), h.truncated_pn, h.pn_len);
                    pk.open(full, &mut p, 13 + h.pn_len).is_ok()
                });
                assert!(
                    !ok,
                    "{suite:?}: flipping bit {bit} of byte {i} went unnoticed"
                );
                rejected += 1;
            }
        }
        assert_eq!(pk.failed(), rejected, "every failure is counted");
        // The original still opens.
        let mut p = orig.clone();
        let h = unprotect_header(&mut p, 13, &hk).unwrap();
        assert!(
            pk.open(
                pn::decode(Some(pn - 1), h.truncated_pn, h.pn_len),
                &mut p,
                13 + h.pn_len
            )
            .is_ok()
        );
    }
}

/// Key update: both sides derive the same next key; the old key cannot open the new phase.
#[test]
fn key_update() {
    for suite in CipherSuite::ALL {
        let s = Secret::new([9; 32]);
        let mut tx = DirectionalKeys::from_secret(suite, s.clone());
        let mut rx = DirectionalKeys::from_secret(suite, s);
        tx.update();
        let mut p = [&[0x45u8, 0, 1][..], &[7; 40], &[0; TAG_LEN]].concat();
        tx.packet.seal(5, &mut p, 3).unwrap();
        let mut old_try = p.clone();
        assert_eq!(
            rx.packet.open(5, &mut old_try, 3),
            Err(CryptoError::Decrypt)
        );
        let (_, mut next) = rx.next_phase_key();
        assert!(next.open(5, &mut p, 3).is_ok());
        // The receiver commits to phase 1; both then move on to phase 2 together.
        rx.update();
        let mut q = [&[0x41u8, 0, 2][..], &[8; 40], &[0; TAG_LEN]].concat();
        tx.packet.seal(6, &mut q, 3).unwrap();
        assert!(rx.packet.open(6, &mut q, 3).is_ok());
        tx.update();
        rx.update();
        let mut r = [&[0x45u8, 0, 3][..], &[9; 40], &[0; TAG_LEN]].concat();
        tx.packet.seal(7, &mut r, 3).unwrap();
        assert!(rx.packet.open(7, &mut r, 3).is_ok());
    }
}

#[test]
fn short_buffers_are_typed_errors() {
    let (mut pk, hk, _, _) = keys(CipherSuite::ChaCha20Poly1305);
    assert_eq!(
        pk.seal(0, &mut [0u8; 10], 0),
        Err(CryptoError::BufferTooSmall)
    );
    assert_eq!(pk.open(0, &mut [0u8; 10], 0), Err(CryptoError::Decrypt));
    assert_eq!(
        unprotect_header(&mut [0x40u8; 20], 1, &hk),
        Err(CryptoError::TooShortForSample)
    );
    assert_eq!(
        protect_packet(&mut [0x40u8; 20], 1, 0, &mut pk, &hk),
        Err(CryptoError::TooShortForSample)
    );
    assert_eq!(hk.mask(&[0; 15]), Err(CryptoError::TooShortForSample));
    assert!(CipherSuite::ChaCha20Poly1305.available());
    assert_eq!(
        CipherSuite::from_id(CipherSuite::Aes256Gcm.id()),
        Some(CipherSuite::Aes256Gcm)
    );
    assert_eq!(CipherSuite::from_id(0x7777), None);
}
