//! Retry tokens on arbitrary bytes, opened as a server holding two generations of cluster
//! keys would: no panic, and nothing but the one token the server sealed is accepted (a
//! fuzzer cannot forge one).
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use rand_core::{CryptoRng, RngCore};
use stoq::conn::ClusterKeys;
use stoq::conn::token::{fuzz_open_token, fuzz_seal_token};
use stoq::wire::cid::ConnectionId;

/// A fixed "random" stream, so the sealed token is the same in every run.
struct Fixed(u8);

impl RngCore for Fixed {
    fn next_u32(&mut self) -> u32 {
        u32::from(self.next_u8())
    }
    fn next_u64(&mut self) -> u64 {
        u64::from(self.next_u8())
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            *b = self.next_u8();
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Fixed {}

impl Fixed {
    fn next_u8(&mut self) -> u8 {
        self.0 = self.0.wrapping_mul(31).wrapping_add(7);
        self.0
    }
}

fuzz_target!(|data: &[u8]| {
    let keys = ClusterKeys::new(0, [3; 32])
        .and_then(|k| k.with_generation(1, [7; 32]))
        .and_then(|k| k.with_current(1))
        .expect("keys");
    let remote: SocketAddr = "[fd00:5710::1]:5000".parse().expect("addr");
    let odcid = ConnectionId::from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]).expect("cid");
    let now = 1_800_000_000_000;
    let valid = fuzz_seal_token(&keys, &mut Fixed(1), &remote, &odcid, now - 500);
    assert!(fuzz_open_token(&keys, &valid, &remote, now));
    if fuzz_open_token(&keys, data, &remote, now) {
        assert_eq!(data, &valid[..], "a token the server never sealed was accepted");
    }
});
