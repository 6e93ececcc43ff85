//! Rendezvous messages from arbitrary bytes: a header's length is bounded before any body
//! is read, decoding never panics and allocates at most the bounds (64-byte id, 8
//! candidates), and whatever decodes encodes back to the same bytes; the same for a
//! candidate list as applications trade it over their own signalling.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stoq::nat::rendezvous::{MAX_BODY, MAX_CANDIDATES, Message, decode_candidates, encode_candidates};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = decode_candidates(data) {
        assert!(c.len() <= MAX_CANDIDATES);
        let mut out = Vec::new();
        encode_candidates(&c, &mut out).expect("decoded candidates encode");
        assert_eq!(out, data);
    }
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
