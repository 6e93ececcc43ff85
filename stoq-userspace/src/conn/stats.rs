//! A connection's counters: [`ConnectionStats`], the drops by reason in [`DropStats`], its
//! RTT samples in [`RttHistogram`], and an endpoint's sums of them, [`TransportTotals`].

use std::time::Duration;

/// Packets and bytes dropped by a connection, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropStats {
    /// The header did not parse (classifier rejected it).
    pub malformed: u64,
    /// Authentication failed: forged, corrupted, or a key mismatch.
    pub decrypt_failed: u64,
    /// No keys (yet, or any more) for the packet's space.
    pub no_keys: u64,
    /// A packet number received before.
    pub duplicate: u64,
    /// From an address other than the connection's (migration comes with the transport
    /// core).
    pub other_path: u64,
    /// A later packet in a datagram with another destination CID.
    pub mismatched_cid: u64,
    /// A Retry or Version Negotiation packet that came too late or did not verify.
    pub bad_retry_or_vn: u64,
    /// Received DATAGRAMs discarded because the application did not read them.
    pub datagram_queue_full: u64,
}

/// Counters for one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Datagrams sent.
    pub tx_datagrams: u64,
    /// Bytes sent (UDP payload).
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Datagrams received.
    pub rx_datagrams: u64,
    /// Bytes received (UDP payload).
    pub rx_bytes: u64,
    /// Packets received and authenticated.
    pub rx_packets: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// Bytes in packets declared lost.
    pub lost_bytes: u64,
    /// PTO expirations.
    pub pto_count: u64,
    /// Times sending stopped at the anti-amplification limit.
    pub amplification_blocked: u64,
    /// DATAGRAMs refused because the send queue was full ([`SendDatagramError::Blocked`](super::SendDatagramError::Blocked)):
    /// the application produces faster than the path carries.
    pub datagrams_blocked: u64,
    /// Extension frames received again (a retransmission of one already delivered, after
    /// a spurious loss) and not delivered twice.
    pub extension_duplicates: u64,
    /// Times the path stopped carrying packets of the current size (a black hole: a
    /// tunnel appeared, a route changed) and the MTU dropped to 1,200 bytes to search
    /// upward again.
    pub mtu_black_holes: u64,
    /// 1-RTT key phase changes of this side's sending keys (initiated or answered).
    pub key_updates: u64,
    /// 0-RTT packets: sent (client) or opened (server).
    pub zero_rtt_packets: u64,
    /// Dropped packets, by reason.
    pub dropped: DropStats,
    /// Smoothed RTT.
    pub smoothed_rtt: Duration,
    /// Minimum RTT.
    pub min_rtt: Duration,
    /// RTT variance.
    pub rtt_var: Duration,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Pacing rate, bytes per second.
    pub pacing_rate: u64,
    /// Bytes in flight (1-RTT).
    pub bytes_in_flight: u64,
    /// STREAM bytes sent again after a loss.
    pub retransmitted_bytes: u64,
    /// Congestion events (window reductions, or BBR loss responses).
    pub congestion_events: u64,
    /// The congestion controller's state.
    pub cc_state: &'static str,
    /// Current path MTU (largest UDP payload).
    pub path_mtu: usize,
    /// Live streams.
    pub streams: usize,
    /// Where ECN validation of the path stands: `testing`, `unknown`, `capable`,
    /// `failed` or `off`.
    pub ecn_state: &'static str,
    /// CE marks the peer reported on this side's packets (each a congestion signal).
    pub ecn_ce_reported: u64,
    /// Packets received marked CE.
    pub ecn_ce_received: u64,
    /// Every RTT sample taken (one per ACK that acknowledged a new ack-eliciting packet).
    pub rtt_samples: RttHistogram,
}

/// Upper bounds, in microseconds, of the buckets of an [`RttHistogram`] (a last bucket
/// holds the samples above 2.5 s): from a datacentre's 100 µs to a satellite hop.
pub const RTT_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// RTT samples by bucket ([`RTT_BUCKETS_US`]), their count and sum: what a Prometheus
/// histogram exports. Recording one costs a scan of 14 bounds; nothing is allocated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RttHistogram {
    /// Samples per bucket (not cumulative); the last entry counts those above every bound.
    pub counts: [u64; RTT_BUCKETS_US.len() + 1],
    /// The sum of the samples, microseconds.
    pub sum_us: u64,
}

impl RttHistogram {
    /// Counts one sample.
    pub fn record(&mut self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        let i = RTT_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(RTT_BUCKETS_US.len());
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The transport counters of many connections, summed: an endpoint's connections that
/// have ended ([`EndpointStats::closed`](super::EndpointStats::closed)), or those plus the
/// live ones ([`Endpoint::transport_totals`](super::Endpoint::transport_totals)). Every
/// field only grows, so each can be exported as a counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportTotals {
    /// Connections counted.
    pub connections: u64,
    /// Datagrams sent.
    pub tx_datagrams: u64,
    /// Bytes sent (UDP payload).
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Datagrams received.
    pub rx_datagrams: u64,
    /// Bytes received (UDP payload).
    pub rx_bytes: u64,
    /// Packets received and authenticated.
    pub rx_packets: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// Bytes in packets declared lost.
    pub lost_bytes: u64,
    /// STREAM bytes sent again after a loss.
    pub retransmitted_bytes: u64,
    /// PTO expirations.
    pub pto_count: u64,
    /// Congestion events.
    pub congestion_events: u64,
    /// 1-RTT key updates.
    pub key_updates: u64,
    /// Path MTU black holes detected.
    pub mtu_black_holes: u64,
    /// Packets the connections dropped (all reasons of [`DropStats`]).
    pub dropped_packets: u64,
    /// RTT samples.
    pub rtt: RttHistogram,
}

impl TransportTotals {
    /// Adds one connection's counters.
    pub fn add(&mut self, s: &ConnectionStats) {
        self.merge(&Self::of(s));
    }

    /// One connection's counters as a sum of one.
    fn of(s: &ConnectionStats) -> Self {
        let d = &s.dropped;
        Self {
            connections: 1,
            tx_datagrams: s.tx_datagrams,
            tx_bytes: s.tx_bytes,
            tx_packets: s.tx_packets,
            rx_datagrams: s.rx_datagrams,
            rx_bytes: s.rx_bytes,
            rx_packets: s.rx_packets,
            lost_packets: s.lost_packets,
            lost_bytes: s.lost_bytes,
            retransmitted_bytes: s.retransmitted_bytes,
            pto_count: s.pto_count,
            congestion_events: s.congestion_events,
            key_updates: s.key_updates,
            mtu_black_holes: s.mtu_black_holes,
            dropped_packets: d.malformed
                + d.decrypt_failed
                + d.no_keys
                + d.duplicate
                + d.other_path
                + d.mismatched_cid
                + d.bad_retry_or_vn
                + d.datagram_queue_full,
            rtt: s.rtt_samples,
        }
    }

    /// Adds another sum.
    pub fn merge(&mut self, o: &Self) {
        self.connections += o.connections;
        self.tx_datagrams += o.tx_datagrams;
        self.tx_bytes += o.tx_bytes;
        self.tx_packets += o.tx_packets;
        self.rx_datagrams += o.rx_datagrams;
        self.rx_bytes += o.rx_bytes;
        self.rx_packets += o.rx_packets;
        self.lost_packets += o.lost_packets;
        self.lost_bytes += o.lost_bytes;
        self.retransmitted_bytes += o.retransmitted_bytes;
        self.pto_count += o.pto_count;
        self.congestion_events += o.congestion_events;
        self.key_updates += o.key_updates;
        self.mtu_black_holes += o.mtu_black_holes;
        self.dropped_packets += o.dropped_packets;
        self.rtt.merge(&o.rtt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_samples_land_in_their_bucket() {
        let mut h = RttHistogram::default();
        h.record(Duration::from_micros(100));
        h.record(Duration::from_micros(101));
        h.record(Duration::from_millis(20));
        h.record(Duration::from_secs(9));
        assert_eq!(h.counts[0], 1, "<= 100 µs");
        assert_eq!(h.counts[1], 1, "<= 250 µs");
        assert_eq!(h.counts[7], 1, "<= 25 ms");
        assert_eq!(h.counts[14], 1, "above 2.5 s");
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum_us, 100 + 101 + 20_000 + 9_000_000);
        let mut t = TransportTotals::default();
        let s = ConnectionStats {
            tx_bytes: 5,
            rtt_samples: h,
            ..Default::default()
        };
        t.add(&s);
        t.add(&s);
        assert_eq!((t.connections, t.tx_bytes, t.rtt.count()), (2, 10, 8));
    }
}
