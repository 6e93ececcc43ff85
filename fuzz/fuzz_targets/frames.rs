//! The frame decoder on arbitrary bytes: no panic, bounded work, and every ACK that
//! decodes walks its ranges without underflow, largest first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stoq::frame::{Frame, Iter};

fuzz_target!(|data: &[u8]| {
    let mut frames = 0usize;
    for f in Iter::new(data) {
        frames += 1;
        assert!(
            frames <= data.len(),
            "each frame consumes at least one byte"
        );
        let Ok(f) = f else { break };
        let _ = (
            f.ty(),
            f.is_ack_eliciting(),
            f.allowed_in_handshake_spaces(),
        );
        if let Frame::Ack(a) = f {
            let mut prev: Option<u64> = None;
            for r in a.ranges() {
                assert!(r.start() <= r.end());
                if let Some(p) = prev {
                    assert!(*r.end() + 1 < p, "ranges descend with a gap");
                }
                prev = Some(*r.start());
            }
            assert_eq!(a.smallest(), prev.unwrap_or(a.largest));
        }
    }
});
