//! A connection's counters: [`ConnectionStats`] and the drops by reason in [`DropStats`].

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
}
