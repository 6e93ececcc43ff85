//! The XDP program's Initial rate limit: a per-CPU token bucket for each source prefix.
//!
//! Each bucket is one `u64`, its *theoretical arrival time* (the generic cell rate
//! algorithm, GCRA, which is a token bucket written as a schedule): a prefix may send one
//! Initial every `interval_ns` on average and run up to `tolerance_ns` ahead of that
//! schedule (a burst of `tolerance_ns / interval_ns + 1` packets). A packet that would run
//! further ahead is dropped and counted, and does not move the schedule, so a flood
//! cannot push a prefix's next allowed packet into the future. No division, no loop: what
//! the verifier and a per-packet budget want.
//!
//! Only long-header Initial packets are limited: packets of established connections
//! (short headers) and the rest of a handshake (Handshake packets) are never touched.

use crate::classify::Steer;
use crate::ptr::Bytes;

/// Initial rate limit settings: the value of [`INITIAL_LIMIT_MAP`]'s one entry. The
/// prefix masks are computed here, so the XDP program only ANDs (no variable shifts on
/// packet data for the verifier to doubt).
///
/// `#[repr(C)]`, 40 bytes, no implicit padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct InitialLimit {
    /// Nanoseconds between two Initials of one prefix at the sustained rate, on one CPU;
    /// 0 turns the limit off.
    pub interval_ns: u64,
    /// How far (ns) a prefix may run ahead of its schedule: `(burst - 1) * interval_ns`.
    pub tolerance_ns: u64,
    /// Mask of an IPv6 source's prefix, most significant word first.
    pub v6_mask: [u32; 4],
    /// Mask of an IPv4 source's prefix.
    pub v4_mask: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// Name of the `Array<InitialLimit>` with one entry.
pub const INITIAL_LIMIT_MAP: &str = "STOQ_INITIAL_LIMIT";
/// Name of the `LruPerCpuHashMap<PrefixKey, u64>` of buckets.
pub const INITIAL_BUCKETS_MAP: &str = "STOQ_INITIAL_BUCKETS";
/// Buckets kept per CPU; the least recently used prefix is forgotten beyond it (and starts
/// again with a full bucket).
pub const INITIAL_BUCKETS: u32 = 65_536;

impl InitialLimit {
    /// No limit.
    pub const OFF: Self = Self {
        interval_ns: 0,
        tolerance_ns: 0,
        v6_mask: [u32::MAX; 4],
        v4_mask: u32::MAX,
        reserved: 0,
    };

    /// `per_second` Initials per prefix and CPU, in bursts of up to `burst`, with prefixes
    /// of `v4_bits` and `v6_bits`. `per_second == 0` is [`OFF`](Self::OFF); the bit counts
    /// are clamped to 1..=32 and 1..=128, and `burst` to at least 1.
    pub const fn new(per_second: u32, burst: u32, v4_bits: u8, v6_bits: u8) -> Self {
        if per_second == 0 {
            return Self::OFF;
        }
        let interval_ns = 1_000_000_000 / per_second as u64;
        let interval_ns = if interval_ns == 0 { 1 } else { interval_ns };
        let burst = if burst == 0 { 1 } else { burst };
        let v4 = clamp(v4_bits, 32);
        let v6 = clamp(v6_bits, 128);
        Self {
            interval_ns,
            tolerance_ns: (burst as u64 - 1) * interval_ns,
            v6_mask: [
                word_mask(v6, 0),
                word_mask(v6, 1),
                word_mask(v6, 2),
                word_mask(v6, 3),
            ],
            v4_mask: word_mask(v4, 0),
            reserved: 0,
        }
    }

    /// Whether the limit is on.
    pub const fn is_on(&self) -> bool {
        self.interval_ns != 0
    }

    /// The value's 40 bytes as five `u64`s in native byte order, as userspace writes
    /// them into the map (no `unsafe impl Pod` needed for this type).
    pub const fn to_words(&self) -> [u64; 5] {
        let m = self.v6_mask;
        [
            self.interval_ns,
            self.tolerance_ns,
            pair(m[0], m[1]),
            pair(m[2], m[3]),
            pair(self.v4_mask, self.reserved),
        ]
    }

    /// The inverse of [`to_words`](Self::to_words).
    pub const fn from_words(w: [u64; 5]) -> Self {
        let (a, b) = unpair(w[2]);
        let (c, d) = unpair(w[3]);
        let (v4_mask, reserved) = unpair(w[4]);
        Self {
            interval_ns: w[0],
            tolerance_ns: w[1],
            v6_mask: [a, b, c, d],
            v4_mask,
            reserved,
        }
    }

    /// Whether an Initial from the bucket whose schedule is `tat`, arriving at `now` (ns,
    /// any monotonic clock), conforms. A conforming packet moves the schedule on by one
    /// interval; a refused one leaves it.
    #[inline(always)]
    pub fn admit(&self, tat: &mut u64, now: u64) -> bool {
        let start = if *tat > now { *tat } else { now };
        if start - now > self.tolerance_ns {
            return false;
        }
        *tat = start + self.interval_ns;
        true
    }
}

/// Two `u32` fields, in memory order, as one native-endian `u64`.
const fn pair(a: u32, b: u32) -> u64 {
    let (x, y) = (a.to_ne_bytes(), b.to_ne_bytes());
    u64::from_ne_bytes([x[0], x[1], x[2], x[3], y[0], y[1], y[2], y[3]])
}

const fn unpair(w: u64) -> (u32, u32) {
    let b = w.to_ne_bytes();
    (
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
    )
}

const fn clamp(bits: u8, max: u8) -> u8 {
    if bits == 0 {
        1
    } else if bits > max {
        max
    } else {
        bits
    }
}

/// A bucket's key: the source prefix as four big-endian-valued words. IPv4 prefixes live
/// in `::ffff:0:0/96`, so they never meet a native IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct PrefixKey {
    /// The masked address, most significant word first.
    pub words: [u32; 4],
}

/// The mask of the `i`-th 32-bit word of a `bits`-bit prefix.
#[inline(always)]
const fn word_mask(bits: u8, i: u32) -> u32 {
    let b = bits as u32;
    let lo = i * 32;
    if b <= lo {
        0
    } else if b >= lo + 32 {
        u32::MAX
    } else {
        u32::MAX << (32 - (b - lo))
    }
}

impl PrefixKey {
    /// The prefix of IPv4 source `addr` (its value as read in network order) under
    /// `mask`.
    #[inline(always)]
    pub const fn v4(addr: u32, mask: u32) -> Self {
        Self {
            words: [0, 0, 0xffff, addr & mask],
        }
    }

    /// The prefix of IPv6 source `addr` (four words as read in network order) under
    /// `mask`.
    #[inline(always)]
    pub const fn v6(addr: [u32; 4], mask: [u32; 4]) -> Self {
        Self {
            words: [
                addr[0] & mask[0],
                addr[1] & mask[1],
                addr[2] & mask[2],
                addr[3] & mask[3],
            ],
        }
    }
}

/// The source prefix of the frame `b`, whose classification is `s`, under `limit`'s
/// prefix lengths; `None` if the source address cannot be read (never for a frame the
/// classifier accepted).
#[inline(always)]
pub fn source_prefix(b: &Bytes<'_>, s: &Steer, limit: &InitialLimit) -> Option<PrefixKey> {
    // One bounds check, then reads that cannot fail: a failed read's value is then never
    // garbage the compiler could combine before the check (the verifier rejects
    // arithmetic on a register that held a packet pointer, even on a path that discards
    // it).
    if s.ipv6 {
        let src = s.ip_off + 8;
        b.u8_at(src + 15).ok()?;
        let w = |o| b.u32_at(src + o).unwrap_or(0);
        Some(PrefixKey::v6([w(0), w(4), w(8), w(12)], limit.v6_mask))
    } else {
        let src = s.ip_off + 12;
        b.u8_at(src + 3).ok()?;
        Some(PrefixKey::v4(b.u32_at(src).unwrap_or(0), limit.v4_mask))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_is_24_bytes_and_round_trips() {
        assert_eq!(size_of::<InitialLimit>(), 40);
        assert_eq!(size_of::<PrefixKey>(), 16);
        let l = InitialLimit::new(1000, 8, 24, 64);
        assert_eq!(InitialLimit::from_words(l.to_words()), l);
        assert_eq!((l.interval_ns, l.tolerance_ns), (1_000_000, 7_000_000));
        assert!(!InitialLimit::new(0, 8, 24, 64).is_on());
        assert_eq!(l.v4_mask, 0xffff_ff00);
        assert_eq!(l.v6_mask, [u32::MAX, u32::MAX, 0, 0]);
        let c = InitialLimit::new(2_000_000_000, 0, 0, 200);
        assert_eq!((c.interval_ns, c.tolerance_ns), (1, 0));
        assert_eq!((c.v4_mask, c.v6_mask), (0x8000_0000, [u32::MAX; 4]));
    }

    /// A burst of `burst` passes at once, then one per interval; refused packets do not
    /// move the schedule.
    #[test]
    fn gcra_allows_the_burst_then_the_rate() {
        let l = InitialLimit::new(1000, 4, 24, 64); // 1 ms apart, 4 at once
        let mut tat = 0u64;
        let t0 = 5_000_000_000;
        let passed = (0..10).filter(|_| l.admit(&mut tat, t0)).count();
        assert_eq!(passed, 4);
        // Half an interval later: still nothing; a full one: one more.
        assert!(!l.admit(&mut tat, t0 + 500_000));
        assert!(l.admit(&mut tat, t0 + 1_000_000));
        assert!(!l.admit(&mut tat, t0 + 1_000_000));
        // A million refused packets later the schedule is where it was.
        for _ in 0..1_000_000 {
            assert!(!l.admit(&mut tat, t0 + 1_500_000));
        }
        assert!(l.admit(&mut tat, t0 + 2_000_000));
        // After a long quiet spell the whole burst is back, no more.
        let later = t0 + 10_000_000_000;
        assert_eq!((0..10).filter(|_| l.admit(&mut tat, later)).count(), 4);
        // Over one second at the sustained rate: about 1,000 (+ the burst).
        let mut tat = 0u64;
        let n = (0..1_000_000u64)
            .filter(|i| l.admit(&mut tat, t0 + i * 1_000))
            .count();
        assert!((1000..=1004).contains(&n), "{n}");
    }

    /// The prefix is read from the frame's IPv4 or IPv6 source address.
    #[test]
    fn the_source_prefix_comes_from_the_frame() {
        use crate::classify::{PacketKind, Steer};
        let mut f4 = [0u8; 14 + 20];
        f4[14 + 12..14 + 16].copy_from_slice(&[10, 200, 1, 7]);
        let s4 = Steer {
            kind: PacketKind::Initial,
            worker: None,
            ip_off: 14,
            ipv6: false,
            payload_off: 0,
            payload_len: 0,
        };
        let l = InitialLimit::new(1, 1, 24, 64);
        assert_eq!(
            source_prefix(&Bytes::new(&f4), &s4, &l),
            Some(PrefixKey::v4(u32::from_be_bytes([10, 200, 1, 0]), u32::MAX))
        );
        let mut f6 = [0u8; 14 + 40];
        f6[14 + 8..14 + 24]
            .copy_from_slice(&[0xfd, 0, 0x57, 0x10, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let s6 = Steer { ipv6: true, ..s4 };
        assert_eq!(
            source_prefix(&Bytes::new(&f6), &s6, &l),
            Some(PrefixKey {
                words: [0xfd00_5710, 0, 0, 0]
            })
        );
        // A frame cut short has no prefix (the classifier never accepts one).
        assert_eq!(source_prefix(&Bytes::new(&f6[..30]), &s6, &l), None);
    }

    #[test]
    fn prefixes_mask_as_configured() {
        let m = |v4: u8, v6: u8| InitialLimit::new(1, 1, v4, v6);
        let a = u32::from_be_bytes([10, 200, 1, 7]);
        let b = u32::from_be_bytes([10, 200, 1, 250]);
        let c = u32::from_be_bytes([10, 200, 2, 7]);
        let k4 = |x, bits| PrefixKey::v4(x, m(bits, 64).v4_mask);
        assert_eq!(k4(a, 24), k4(b, 24));
        assert_ne!(k4(a, 24), k4(c, 24));
        assert_ne!(k4(a, 32), k4(b, 32));
        assert_eq!(k4(a, 1), k4(0x7fff_ffff, 1));
        let k6 = |x, bits| PrefixKey::v6(x, m(24, bits).v6_mask);
        let x = [0xfd00_5710, 0, 0, 1];
        let y = [0xfd00_5710, 0, 0xffff_0000, 9];
        let z = [0xfd00_5710, 1, 0, 1];
        assert_eq!(k6(x, 64), k6(y, 64));
        assert_ne!(k6(x, 64), k6(z, 64));
        assert_ne!(k6(x, 65), k6(y, 65));
        assert_eq!(k6(x, 48).words, [0xfd00_5710, 0, 0, 0]);
        assert_eq!(k6(z, 24).words, [0xfd00_5700, 0, 0, 0]);
        assert_eq!(k6([1, u32::MAX, 0, 0], 40).words, [1, 0xff00_0000, 0, 0]);
        // IPv4 keys sit in ::ffff:0:0/96, apart from native IPv6 keys.
        assert_ne!(k4(a, 24), k6([0, 0, 0, a], 128));
        assert_eq!(k4(a, 24).words[2], 0xffff);
    }
}
