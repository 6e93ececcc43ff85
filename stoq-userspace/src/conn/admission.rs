//! Admission under load: how many handshakes one source prefix may hold.
//!
//! A server is *under load* while its [`RetryPolicy`](super::RetryPolicy) demands a Retry
//! (by default, while 64 or more handshakes are in progress). Then a client must prove its
//! address before the server keeps state or signs anything, so spoofed Initials cost the
//! server one stateless Retry each; and a client that did prove its address is admitted
//! only while its source prefix holds fewer than
//! [`EndpointConfig::max_handshakes_per_prefix`](super::EndpointConfig::max_handshakes_per_prefix)
//! handshakes, so one network cannot take every handshake slot.

use std::collections::HashMap;
use std::net::IpAddr;

/// How source addresses are grouped for per-prefix accounting: the number of leading bits
/// kept of an IPv4 and of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePrefix {
    /// Bits of an IPv4 address (1..=32; 24 groups a /24, 32 counts each address alone).
    pub v4: u8,
    /// Bits of an IPv6 address (1..=128; 64 groups a /64, the usual size of one site).
    pub v6: u8,
}

impl SourcePrefix {
    /// IPv4 /24 and IPv6 /64.
    pub const DEFAULT: Self = Self { v4: 24, v6: 64 };

    /// Whether both lengths are in range.
    pub(crate) fn is_valid(self) -> bool {
        (1..=32).contains(&self.v4) && (1..=128).contains(&self.v6)
    }

    /// The prefix `ip` belongs to, as a key: IPv4 (and IPv4-mapped IPv6) addresses live in
    /// the `::ffff:0:0/96` range, so they never collide with native IPv6 prefixes.
    pub fn key(self, ip: IpAddr) -> u128 {
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                let bits = u32::from(a) & mask32(self.v4);
                (0xffffu128 << 32) | u128::from(bits)
            }
            IpAddr::V6(a) => u128::from(a) & mask128(self.v6),
        }
    }
}

impl Default for SourcePrefix {
    fn default() -> Self {
        Self::DEFAULT
    }
}

fn mask32(bits: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(bits.min(32)))
        .unwrap_or(0)
}

fn mask128(bits: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(bits.min(128)))
        .unwrap_or(0)
}

/// Handshakes in progress per source prefix (server side only), and the prefix each
/// connection slot counts against. Entries exist only for prefixes with a handshake in
/// progress, so the table is bounded by the handshake count.
#[derive(Debug, Default)]
pub(super) struct PrefixTable {
    counts: HashMap<u128, u32>,
    slots: Vec<Option<u128>>,
}

impl PrefixTable {
    /// Handshakes in progress from `key`.
    pub(super) fn count(&self, key: u128) -> usize {
        self.counts.get(&key).map_or(0, |&n| n as usize)
    }

    /// Slot `slot` (a new server connection) counts against `key` until released.
    pub(super) fn add(&mut self, slot: usize, key: u128) {
        if self.slots.len() <= slot {
            self.slots.resize(slot + 1, None);
        }
        self.release(slot);
        self.slots[slot] = Some(key);
        *self.counts.entry(key).or_insert(0) += 1;
    }

    /// Slot `slot`'s handshake ended (completed, failed or freed).
    pub(super) fn release(&mut self, slot: usize) {
        let Some(key) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        if let Some(n) = self.counts.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&key);
            }
        }
    }

    /// Prefixes with a handshake in progress.
    #[cfg(test)]
    pub(super) fn prefixes(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_group_as_configured() {
        let p = SourcePrefix::DEFAULT;
        let k = |s: &str| p.key(s.parse().unwrap());
        assert_eq!(k("10.200.1.7"), k("10.200.1.250"));
        assert_ne!(k("10.200.1.7"), k("10.200.2.7"));
        assert_eq!(k("fd00:5710::1"), k("fd00:5710::ffff:1"));
        assert_ne!(k("fd00:5710::1"), k("fd00:5710:0:1::1"));
        // An IPv4-mapped IPv6 address is its IPv4 address; neither meets a native prefix.
        assert_eq!(k("::ffff:10.200.1.9"), k("10.200.1.1"));
        assert_ne!(k("10.200.1.1"), k("::a:c801:0"));
        let single = SourcePrefix { v4: 32, v6: 128 };
        assert_ne!(
            single.key("10.200.1.1".parse().unwrap()),
            single.key("10.200.1.2".parse().unwrap())
        );
        let one = SourcePrefix { v4: 1, v6: 1 };
        assert_eq!(
            one.key("1.2.3.4".parse().unwrap()),
            one.key("100.64.0.1".parse().unwrap())
        );
        assert!(!SourcePrefix { v4: 0, v6: 64 }.is_valid());
        assert!(!SourcePrefix { v4: 24, v6: 129 }.is_valid());
    }

    #[test]
    fn the_table_counts_and_forgets() {
        let mut t = PrefixTable::default();
        t.add(3, 7);
        t.add(5, 7);
        t.add(9, 8);
        assert_eq!((t.count(7), t.count(8), t.prefixes()), (2, 1, 2));
        t.release(3);
        t.release(3);
        assert_eq!(t.count(7), 1);
        t.release(5);
        t.release(9);
        t.release(100);
        assert_eq!((t.count(7), t.prefixes()), (0, 0));
    }
}
