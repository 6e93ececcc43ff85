//! Certificate and chain decoding, verification and the PEM loaders on arbitrary input:
//! no panic, and what decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stoq::handshake::cert::{self, Certificate};
use stoq::handshake::chain;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Certificate::decode(data) {
        let _ = c.matches_name("stoq.example");
        let _ = c.verify(&[c.key.clone()], Some("stoq.example"), 1_800_000_000);
        assert_eq!(Certificate::decode(c.as_bytes()).as_ref(), Ok(&c));
    }
    if let Ok(c) = chain::decode(data) {
        // Every certificate's key as an anchor: the walk is bounded whatever they claim.
        let anchors: Vec<_> = c.iter().map(|x| x.key.clone()).collect();
        let _ = chain::verify(&c[0], &c[1..], &anchors, Some("stoq.example"), 1_800_000_000);
        assert_eq!(chain::encode(&c), data);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = cert::load_certificate(text);
        let _ = cert::load_certificate_chain(text);
        let _ = cert::load_private_key(text);
        let _ = cert::load_public_key(text);
    }
    // PEM wrapping of arbitrary bytes round-trips.
    let pem = cert::pem_encode(cert::PEM_CERT, data);
    assert_eq!(
        cert::pem_decode(cert::PEM_CERT, &pem).ok().as_deref(),
        Some(data)
    );
});
