//! Cluster key files on arbitrary text: the parser never panics, and whatever it accepts
//! it writes back to a file that parses to the same key set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stoq::conn::ClusterKeys;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(k) = ClusterKeys::parse(text) {
        let again = ClusterKeys::parse(&k.to_file()).expect("its own output parses");
        assert_eq!(again.current(), k.current());
        assert!(again.generations().eq(k.generations()));
        assert_eq!(again.to_file(), k.to_file());
    }
});
