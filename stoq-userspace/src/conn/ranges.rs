//! A small, bounded set of disjoint `u64` ranges: received packet numbers (for ACK
//! frames) and CRYPTO-stream bytes pending or acknowledged.
//!
//! Stored as a sorted `Vec` of half-open ranges, at most `cap` of them; when an insertion
//! would exceed that, the lowest range is forgotten (for ACK tracking that is the oldest
//! information, which the peer no longer needs). The `Vec` grows on demand to at most
//! `cap + 1` entries and is then reused, so the set never grows without bound whatever a
//! peer sends, and an idle connection holds only the few ranges it has used.

use std::ops::Range;

/// Disjoint, non-adjacent ranges, lowest first, at most `cap` of them.
#[derive(Debug, Clone)]
pub(crate) struct RangeSet {
    ranges: Vec<Range<u64>>,
    cap: usize,
    /// Everything below it was forgotten with an evicted range: from `floor` up the set is
    /// exact, below it membership is unknown.
    floor: u64,
}

impl RangeSet {
    /// An empty set holding at most `cap` ranges.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            ranges: Vec::new(),
            cap: cap.max(1),
            floor: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.ranges.clear();
    }

    /// Number of ranges.
    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }

    pub(crate) fn contains(&self, x: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.end <= x);
        self.ranges.get(i).is_some_and(|r| r.start <= x)
    }

    /// The end of the highest range ever forgotten to keep the set within its cap (0 when
    /// none was): membership below it is unknown, so for received packet numbers anything
    /// below it must be treated as already received (RFC 9000 §12.3), whatever ranges are
    /// held now. Ranges only ever drop from the bottom, so the floor never moves down.
    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    /// Forgets the lowest range (the set is over its cap).
    fn evict_lowest(&mut self) {
        let gone = self.ranges.remove(0);
        self.floor = self.floor.max(gone.end);
    }

    /// The lowest range.
    pub(crate) fn first(&self) -> Option<Range<u64>> {
        self.ranges.first().cloned()
    }

    /// Ranges from highest to lowest, as inclusive ranges (the ACK frame's order).
    pub(crate) fn iter_desc(
        &self,
    ) -> impl Iterator<Item = std::ops::RangeInclusive<u64>> + Clone + '_ {
        self.ranges.iter().rev().map(|r| r.start..=r.end - 1)
    }

    /// Ranges lowest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.iter().cloned()
    }

    /// Inserts `r`, merging with neighbours. Returns whether anything new was added.
    pub(crate) fn insert(&mut self, r: Range<u64>) -> bool {
        if r.is_empty() {
            return false;
        }
        // First range whose end reaches r.start (touching counts).
        let i = self.ranges.partition_point(|x| x.end < r.start);
        // Ranges i..j overlap or touch r.
        let mut j = i;
        while j < self.ranges.len() && self.ranges[j].start <= r.end {
            j += 1;
        }
        if j > i {
            let covered = self.ranges[i].start <= r.start && self.ranges[i].end >= r.end;
            if covered {
                return false;
            }
            let start = self.ranges[i].start.min(r.start);
            let end = self.ranges[j - 1].end.max(r.end);
            self.ranges[i] = start..end;
            self.ranges.drain(i + 1..j);
        } else {
            self.ranges.insert(i, r);
            if self.ranges.len() > self.cap {
                self.evict_lowest();
            }
        }
        true
    }

    /// Removes `r` from the set.
    pub(crate) fn remove(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let mut i = self.ranges.partition_point(|x| x.end <= r.start);
        while i < self.ranges.len() && self.ranges[i].start < r.end {
            let cur = self.ranges[i].clone();
            if cur.start < r.start && cur.end > r.end {
                // Split in two.
                self.ranges[i] = cur.start..r.start;
                self.ranges.insert(i + 1, r.end..cur.end);
                if self.ranges.len() > self.cap {
                    self.evict_lowest();
                }
                return;
            } else if cur.start < r.start {
                self.ranges[i].end = r.start;
                i += 1;
            } else if cur.end > r.end {
                self.ranges[i].start = r.end;
                return;
            } else {
                self.ranges.remove(i);
            }
        }
    }

    /// Removes everything below `x`.
    pub(crate) fn remove_below(&mut self, x: u64) {
        let i = self.ranges.partition_point(|r| r.end <= x);
        self.ranges.drain(..i);
        if let Some(r) = self.ranges.first_mut() {
            r.start = r.start.max(x);
        }
    }

    /// The ranges overlapping `r`, clipped to it.
    pub(crate) fn overlapping(&self, r: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        let i = self.ranges.partition_point(|x| x.end <= r.start);
        self.ranges[i..]
            .iter()
            .take_while(move |x| x.start < r.end)
            .map(move |x| x.start.max(r.start)..x.end.min(r.end))
    }

    /// Removes every range of `other`.
    pub(crate) fn subtract(&mut self, other: &Self) {
        for r in other.iter() {
            self.remove(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merge_remove() {
        let mut s = RangeSet::new(8);
        assert!(s.insert(5..6));
        assert!(s.insert(7..8));
        assert!(s.insert(6..7));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![5..8]);
        assert!(!s.insert(5..7));
        assert!(s.insert(0..2));
        assert!(s.contains(1) && !s.contains(2) && s.contains(7) && !s.contains(8));
        assert_eq!(s.iter_desc().collect::<Vec<_>>(), vec![5..=7, 0..=1]);
        s.remove(6..7);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..2, 5..6, 7..8]);
        s.remove(0..6);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![7..8]);
        assert!(s.insert(0..100));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..100]);
    }

    #[test]
    fn bounded_forgets_the_lowest() {
        let mut s = RangeSet::new(4);
        assert_eq!(
            s.ranges.capacity(),
            0,
            "nothing allocated before the first range"
        );
        let mut cap = None;
        for i in 0..100 {
            s.insert(i * 2..i * 2 + 1);
            assert!(s.len() <= 4);
            if i == 10 {
                cap = Some(s.ranges.capacity());
            }
        }
        assert_eq!(s.iter().last(), Some(198..199));
        assert_eq!(s.first(), Some(192..193));
        assert_eq!(Some(s.ranges.capacity()), cap, "no reallocation once full");
        assert!(
            s.ranges.capacity() <= 8,
            "bounded by the cap, not the traffic"
        );
    }

    #[test]
    fn what_was_forgotten_stays_below_the_floor_after_a_merge() {
        // 0, 2, 4, ... 18: ten ranges in a set of four; 0..=11 forgotten.
        let mut s = RangeSet::new(4);
        assert_eq!(s.floor(), 0);
        for i in 0..10 {
            s.insert(i * 2..i * 2 + 1);
        }
        assert_eq!(s.first(), Some(12..13));
        assert_eq!(s.floor(), 11);
        // A late 13 merges two ranges: three are left, and the lowest held range starts
        // at 12 as before. The forgotten numbers are still below the floor: a rule that
        // looked at the count of ranges would re-open them here.
        assert!(s.insert(13..14));
        assert_eq!(s.len(), 3);
        assert_eq!(s.floor(), 11);
        for forgotten in 0..11 {
            assert!(forgotten < s.floor() && !s.contains(forgotten));
        }
        // From the floor up the set is exact: 11 never arrived and is not below it.
        assert!(!s.contains(11) && 11 >= s.floor());
    }

    #[test]
    fn matches_a_naive_model() {
        let mut x = 0x1234_5678_u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut s = RangeSet::new(1000);
        let mut model = [false; 200];
        for _ in 0..5000 {
            let a = next() % 200;
            let b = (a + next() % 10).min(200);
            if next() % 3 == 0 {
                s.remove(a..b);
                model[a as usize..b as usize].fill(false);
            } else {
                s.insert(a..b);
                model[a as usize..b as usize].fill(true);
            }
            for (i, m) in model.iter().enumerate() {
                assert_eq!(s.contains(i as u64), *m);
            }
            for w in s.ranges.windows(2) {
                assert!(w[0].end < w[1].start, "disjoint, non-adjacent");
            }
        }
    }
}
