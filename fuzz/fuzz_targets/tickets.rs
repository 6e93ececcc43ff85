//! Session tickets on arbitrary bytes, opened as a server holding two generations of
//! cluster keys would: no panic, no unbounded work, and nothing opens (a fuzzer cannot
//! forge a ticket's AEAD tag), so an attacker's bytes never resume a session.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stoq::conn::ClusterKeys;
use stoq::handshake::TicketSettings;

fuzz_target!(|data: &[u8]| {
    let keys = ClusterKeys::new(0, [0x11; 32])
        .and_then(|k| k.with_generation(1, [0x22; 32]))
        .expect("generations 0 and 1");
    // Any clock: the ticket's time fields are checked after it authenticates.
    let now = data
        .get(..8)
        .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
    let tickets = keys.ticket_keys(TicketSettings::default());
    assert!(tickets.fuzz_open(data, now).is_none());
});
