//! Rendezvous messages from arbitrary bytes: a header's length is bounded before any body
//! is read, decoding never panics and allocates at most the bounds (64-byte id, 8
//! candidates), and whatever decodes encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stoq::nat::rendezvous::{MAX_BODY, Message};

fuzz_target!(|data: &[u8]| {
    let Some((h, body)) = data.split_first_chunk::<3>() else {
        return;
    };
    let Ok(len) = Message::body_len(*h) else {
        return;
    };
    assert!(len <= MAX_BODY);
    let Some(body) = body.get(..len) else {
        return;
    };
    if let Ok(m) = Message::decode(h[0], body) {
        let mut out = Vec::new();
        m.encode(&mut out).expect("a decoded message encodes");
        assert_eq!(&out[..3], &h[..]);
        assert_eq!(&out[3..], body);
    }
});
