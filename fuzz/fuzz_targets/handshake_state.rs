//! Hostile CRYPTO-stream bytes fed to a server and to a client mid-handshake: the state
//! machines never panic and never complete on garbage.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use rand_core::OsRng;
use stoq::crypto::CipherSuite;
use stoq::handshake::params::TransportParams;
use stoq::conn::ClusterKeys;
use stoq::handshake::{Epoch, Handshake};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let epoch = if sel & 1 == 0 {
        Epoch::Initial
    } else {
        Epoch::Handshake
    };
    // Split the input into chunks, as CRYPTO frames would deliver it.
    let cut = usize::from(sel >> 1).min(rest.len());
    let (a, b) = rest.split_at(cut);
    if sel & 0x80 == 0 {
        let cfg = common::server_config();
        let keys = ClusterKeys::new(0, [7; 32]).expect("generation 0");
        let tickets = std::sync::Arc::new(keys.ticket_keys(cfg.tickets));
        let mut s = Handshake::server(
            std::sync::Arc::new(cfg),
            TransportParams::default(),
            tickets,
        );
        if s.read(epoch, a, 0, &mut OsRng).is_ok() {
            // A ClientHello that made it this far waits for its signature.
            s.sign_alone(&mut OsRng);
            let _ = s.read(epoch, b, 0, &mut OsRng);
        }
        assert!(!s.is_complete());
    } else {
        let cfg = common::client_config("stoq.example", CipherSuite::ALL.to_vec());
        let mut c = Handshake::client(
            std::sync::Arc::new(cfg),
            TransportParams::default(),
            0,
            &mut OsRng,
        );
        if c.read(epoch, a, 0, &mut OsRng).is_ok() {
            let _ = c.read(epoch, b, 0, &mut OsRng);
        }
        assert!(!c.is_complete());
    }
});
