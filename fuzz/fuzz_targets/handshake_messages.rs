//! Every handshake message and transport-parameter decoder on arbitrary bytes: no panic,
//! and whatever decodes re-encodes to bytes that decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stoq::codec::Writer;
use stoq::handshake::messages::Message;
use stoq::handshake::params::TransportParams;

fuzz_target!(|data: &[u8]| {
    let _ = Message::frame_len(data);
    if let Ok(m) = Message::decode(data) {
        let enc = m.encode();
        assert_eq!(Message::decode(&enc).as_ref(), Ok(&m));
    }
    if let Ok(p) = TransportParams::decode(data) {
        let mut w = Writer::new();
        p.encode(&mut w);
        assert_eq!(TransportParams::decode(&w.buf), Ok(p));
    }
});
