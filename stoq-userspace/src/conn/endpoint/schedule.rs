//! The endpoint's schedule: which connections need its attention.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Instant;

/// Which connections need the endpoint's attention, so that polling costs what changed
/// rather than the number of connections: a connection is looked at again when a datagram,
/// a timer or the application touched it. Timers sit in a min-heap with lazy deletion.
#[derive(Debug, Default)]
pub(super) struct Schedule {
    pub(super) touched: Vec<usize>,
    pub(super) is_touched: Vec<bool>,
    pub(super) sendable: VecDeque<usize>,
    pub(super) is_sendable: Vec<bool>,
    pub(super) eventful: VecDeque<usize>,
    pub(super) is_eventful: Vec<bool>,
    pub(super) deadline: Vec<Option<Instant>>,
    pub(super) timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Connections whose timers moved by sending, to recompute once before the timers
    /// are next read.
    pub(super) retimed: Vec<usize>,
    pub(super) is_retimed: Vec<bool>,
}

impl Schedule {
    pub(super) fn grow(&mut self, n: usize) {
        self.is_retimed.resize(n, false);
        self.is_touched.resize(n, false);
        self.is_sendable.resize(n, false);
        self.is_eventful.resize(n, false);
        self.deadline.resize(n, None);
    }

    pub(super) fn touch(&mut self, i: usize) {
        if !self.is_touched[i] {
            self.is_touched[i] = true;
            self.touched.push(i);
        }
    }

    pub(super) fn retime(&mut self, i: usize) {
        if !self.is_retimed[i] {
            self.is_retimed[i] = true;
            self.retimed.push(i);
        }
    }

    pub(super) fn mark_sendable(&mut self, i: usize) {
        if !self.is_sendable[i] {
            self.is_sendable[i] = true;
            self.sendable.push_back(i);
        }
    }

    pub(super) fn mark_eventful(&mut self, i: usize) {
        if !self.is_eventful[i] {
            self.is_eventful[i] = true;
            self.eventful.push_back(i);
        }
    }

    pub(super) fn set_deadline(&mut self, i: usize, d: Option<Instant>) {
        if self.deadline[i] != d {
            self.deadline[i] = d;
            if let Some(t) = d {
                self.timers.push(Reverse((t, i)));
            }
        }
    }

    /// Rebuilds the heap when stale entries outnumber the live ones, keeping it within a
    /// constant factor of the connection count.
    pub(super) fn compact(&mut self, live: usize) {
        if self.timers.len() > 2 * live + 64 {
            // Rebuilt in the heap's own allocation: no allocation on the packet path.
            let mut v = std::mem::take(&mut self.timers).into_vec();
            v.clear();
            v.extend(
                self.deadline
                    .iter()
                    .enumerate()
                    .filter_map(|(i, d)| d.map(|t| Reverse((t, i)))),
            );
            self.timers = BinaryHeap::from(v);
        }
    }
}
