//! Unprotect-then-parse of a whole datagram, for both suites.
//!
//! 1. The input as a received datagram: classify the header, remove header protection,
//!    reconstruct the packet number and open the payload. No panic on any input, and no
//!    forged packet opens.
//! 2. The input as a plaintext payload: seal it into a valid short-header packet, then
//!    unprotect, open and parse its frames exactly as a receiver does, so the frame decoder
//!    sees authenticated fuzzer-chosen payloads too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stoq::crypto::{
    CipherSuite, HeaderKey, PacketKey, TAG_LEN, pn, protect_packet, unprotect_header,
};
use stoq::frame::Iter;
use stoq_common::cid::CidLayout;
use stoq_common::classify::classify_payload;
use stoq_common::maps::ClassifierConfig;
use stoq_common::wire::stoq::Repr;

fuzz_target!(|data: &[u8]| {
    let layout = CidLayout::DEFAULT;
    let cfg = ClassifierConfig::new(&layout);
    for suite in CipherSuite::ALL {
        let hk = HeaderKey::new(suite, &[7; 32]).expect("32-byte key");
        // 1. Hostile datagram.
        if let Ok(h) = classify_payload(data, &cfg) {
            let mut pkt = data.to_vec();
            let mut key = PacketKey::new(suite, &[9; 32], [3; 12]).expect("32-byte key");
            if h.pn_off > 0 && h.pn_off < pkt.len() {
                let end = if h.length > 0 {
                    (h.pn_off + h.length as usize).min(pkt.len())
                } else {
                    pkt.len()
                };
                if let Ok(info) = unprotect_header(&mut pkt[..end], h.pn_off, &hk) {
                    let full = pn::decode(Some(1000), info.truncated_pn, info.pn_len);
                    // Random bytes never authenticate (a 2^-128 event).
                    assert!(
                        key.open(full, &mut pkt[..end], h.pn_off + info.pn_len)
                            .is_err()
                    );
                }
            }
        }
        // 2. Authenticated, fuzzer-chosen payload.
        if data.len() > 1400 {
            continue;
        }
        let dcid = layout.build(0, 1, 2, &[5; 8]).expect("cid");
        let mut pkt = vec![0u8; 1 + dcid.len() + 2 + data.len().max(2) + TAG_LEN];
        let hdr = Repr::Short { dcid, spin: false }
            .emit(&mut pkt)
            .expect("header");
        pkt[0] |= 0x01; // 2-byte packet number
        let pn_full = 0x1234u64;
        pn::encode(pn_full, 2, &mut pkt[hdr..]).expect("pn");
        pkt[hdr + 2..hdr + 2 + data.len()].copy_from_slice(data);
        let mut tx = PacketKey::new(suite, &[9; 32], [3; 12]).expect("key");
        if protect_packet(&mut pkt, hdr, pn_full, &mut tx, &hk).is_err() {
            continue;
        }
        let h = classify_payload(&pkt, &cfg).expect("a valid short header");
        let info = unprotect_header(&mut pkt, h.pn_off, &hk).expect("unprotect");
        let full = pn::decode(Some(pn_full - 1), info.truncated_pn, info.pn_len);
        assert_eq!(full, pn_full);
        let mut rx = PacketKey::new(suite, &[9; 32], [3; 12]).expect("key");
        let plain = rx
            .open(full, &mut pkt, h.pn_off + info.pn_len)
            .expect("authentic");
        assert_eq!(&plain[..data.len()], data);
        for f in Iter::new(plain) {
            if f.is_err() {
                break;
            }
        }
    }
});
