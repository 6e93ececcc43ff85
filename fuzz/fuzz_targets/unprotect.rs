//! Unprotect-then-parse of a whole datagram: classify the STOQ header, remove header
//! protection, reconstruct the packet number and open the payload, for both suites. No
//! panic on any input, and no forged packet opens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stoq::crypto::{CipherSuite, HeaderKey, PacketKey, pn, unprotect_header};
use stoq_common::cid::CidLayout;
use stoq_common::classify::classify_payload;
use stoq_common::maps::ClassifierConfig;

fuzz_target!(|data: &[u8]| {
    let cfg = ClassifierConfig::new(&CidLayout::DEFAULT);
    let Ok(h) = classify_payload(data, &cfg) else { return };
    for suite in CipherSuite::ALL {
        let mut pkt = data.to_vec();
        let hk = HeaderKey::new(suite, &[7; 32]).expect("32-byte key");
        let mut key = PacketKey::new(suite, &[9; 32], [3; 12]).expect("32-byte key");
        if h.pn_off == 0 || h.pn_off >= pkt.len() {
            continue;
        }
        let end = if h.length > 0 { (h.pn_off + h.length as usize).min(pkt.len()) } else { pkt.len() };
        let Ok(info) = unprotect_header(&mut pkt[..end], h.pn_off, &hk) else { continue };
        let full = pn::decode(Some(1000), info.truncated_pn, info.pn_len);
        // Random bytes never authenticate (a 2^-128 event).
        assert!(key.open(full, &mut pkt[..end], h.pn_off + info.pn_len).is_err());
    }
});
