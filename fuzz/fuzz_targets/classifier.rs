//! The frame classifier and the STOQ-header classifier on arbitrary bytes: no panic, and
//! every offset a verdict reports lies inside the input; for every steered frame the
//! rate limit's source prefix is readable (the XDP program reads it for Initials).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stoq_common::cid::CidLayout;
use stoq_common::classify::{Verdict, classify_frame, classify_payload};
use stoq_common::limit::{InitialLimit, source_prefix};
use stoq_common::maps::ClassifierConfig;
use stoq_common::ptr::Bytes;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the CID layout and the port set, the rest is the frame.
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let layout =
        CidLayout::new(8 + usize::from(sel % 13), 1 + usize::from(sel >> 6)).unwrap_or_default();
    let cfg = ClassifierConfig::new(&layout);
    let all_ports = sel & 0x20 != 0;
    match classify_frame(Bytes::new(frame), &cfg, |p| all_ports || p == 4433) {
        Verdict::Stoq(s) => {
            assert!(s.payload_off + s.payload_len <= frame.len());
            let payload = &frame[s.payload_off..s.payload_off + s.payload_len];
            // The frame-level and payload-level classifiers agree.
            let h = classify_payload(payload, &cfg).expect("steered payload classifies");
            assert_eq!(h.kind, s.kind);
            let limit = InitialLimit::new(1000, 8, sel % 33, sel.wrapping_mul(7) % 129);
            assert!(s.ip_off < s.payload_off);
            assert!(source_prefix(&Bytes::new(frame), &s, &limit).is_some());
        }
        Verdict::Pass(_) | Verdict::Drop(_) => {}
    }
    if let Ok(h) = classify_payload(frame, &cfg) {
        assert!(h.dcid_off + h.dcid_len <= frame.len());
        assert!(h.scid_off + h.scid_len <= frame.len());
        assert!(h.token_off + h.token_len <= frame.len());
        assert!(h.pn_off <= frame.len());
        assert!(h.dcid_len <= 20 && h.scid_len <= 20);
    }
});
