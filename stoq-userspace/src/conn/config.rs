//! Transport policy: [`TransportConfig`] for every connection of an endpoint, and the
//! [`Adaptation`] a live connection accepts.

use std::sync::Arc;
use std::time::Duration;

use super::cc::{self, ControllerFactory};
use super::path::BASE_PLPMTU;

/// Ack-eliciting 1-RTT packets received before an ACK is sent at once.
pub(crate) const ACK_ELICITING_THRESHOLD: u32 = 2;

/// Transport behaviour that is local policy (not negotiated), shared by an endpoint's
/// connections. Several settings can be changed on a live connection (see
/// [`Connection::adapt`](super::Connection::adapt)).
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// let mut t = stoq::conn::TransportConfig::default();
/// t.keep_alive = Some(Duration::from_secs(5)); // NAT bindings stay open
/// t.congestion = stoq::conn::cc::Congestion::Cubic.factory(); // BBR by default
/// let mut engine = stoq::engine::EngineConfig::new("[::]:0".parse().unwrap());
/// engine.endpoint.transport = Arc::new(t);
/// ```
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Builds each connection's congestion controller ([`cc::Congestion::Bbr`] by default).
    pub congestion: Arc<dyn ControllerFactory>,
    /// Most bytes buffered for sending per connection, over all streams (back-pressure
    /// beyond it).
    pub send_buffer: u64,
    /// Most bytes written and not yet sent once, per connection (a not-sent low
    /// watermark, like TCP_NOTSENT_LOWAT): a writer ahead of the wire by this much waits
    /// until packets leave, so what it wrote is still in cache when it is packed, without
    /// shrinking the window of unacknowledged data `send_buffer` allows. Whole messages
    /// (`send_message`) are not held back by it. The cache is the worker's core's, so this
    /// is also the budget of the worker's endpoint: connections of one worker busy sending
    /// bulk data split half of it (each at least 64 KiB), and one alone has all of it.
    pub send_backlog: u64,
    /// Send a PING after this long without sending anything ack-eliciting, so NAT bindings
    /// and the idle timer stay alive.
    pub keep_alive: Option<Duration>,
    /// A server's connection still handshaking that hears nothing from its client for this
    /// long (or
    /// three probe timeouts, if longer) ends with
    /// [`ConnectionError::HandshakeTimedOut`](super::ConnectionError::HandshakeTimedOut),
    /// silently, whatever the idle timeout: a half-open handshake (a spoofed or vanished
    /// client) holds a server's slot this long, not the 30 s idle timeout. A slow
    /// handshake that keeps hearing from its peer goes on. Clients are not bound by it:
    /// their application waits on its own connect, within the idle timeout. 10 s by
    /// default.
    pub handshake_timeout: Duration,
    /// Ack-eliciting packets received before an ACK goes out at once (2 per RFC 9000);
    /// [`ack_thinning`](Self::ack_thinning) raises it at high packet rates.
    pub ack_eliciting_threshold: u32,
    /// At high packet rates, acknowledge only every this many packets (ACK thinning; the
    /// delayed-ACK timer still bounds the delay).
    pub ack_thinning: u32,
    /// Multiplies the congestion controller's pacing gain.
    pub pacing_gain: f64,
    /// Send ECT(0)-marked packets and react to CE marks (RFC 9000 §13.4), after validating
    /// that the path and the peer carry them. On by default; received marks are counted
    /// and reported either way.
    pub ecn: bool,
    /// The UDP payload size a new path starts at. From here DPLPMTUD (RFC 8899) probes
    /// upward, once the handshake is confirmed, to the endpoint's
    /// [`max_udp_payload`](super::EndpointConfig::max_udp_payload) (capped by the peer's
    /// `max_udp_payload_size`), and drops back here when the path stops carrying large
    /// packets (a black hole) or the connection moves to a new network path. The default
    /// is the size every QUIC path carries, 1200; set it to `max_udp_payload` to start at
    /// full size and not probe (only where every path is known to carry it).
    pub initial_mtu: usize,
    /// Extension frame types (from [`frame::EXTENSION_TYPES`](crate::frame::EXTENSION_TYPES)) this endpoint accepts and
    /// hands to the application ([`Connection::recv_extension_frame`](super::Connection::recv_extension_frame)). Any other
    /// extension type closes the connection with FRAME_ENCODING_ERROR. Both sides agree
    /// on their extensions out of band, as STOQ's predecessor did.
    pub extension_frames: Vec<u64>,
    /// Write a qlog trace of every connection into this writer ([`crate::qlog`]); off
    /// (`None`) by default. [`Connection::set_qlog`](super::Connection::set_qlog) turns it
    /// on for one connection.
    pub qlog: Option<crate::qlog::QlogWriter>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            congestion: cc::Congestion::Bbr.factory(),
            send_buffer: 16 << 20,
            send_backlog: 1 << 20,
            keep_alive: None,
            handshake_timeout: Duration::from_secs(10),
            ack_eliciting_threshold: ACK_ELICITING_THRESHOLD,
            ack_thinning: 10,
            pacing_gain: 1.0,
            ecn: true,
            initial_mtu: BASE_PLPMTU,
            extension_frames: Vec::new(),
            qlog: None,
        }
    }
}

/// Settings that can change on a live connection, without losing a packet. `None` fields
/// stay as they are.
///
/// ```no_run
/// # fn f(conn: &stoq::Connection) {
/// // A live connection gets wider windows and a more eager pacer.
/// conn.adapt(stoq::conn::Adaptation {
///     stream_window: Some(8 << 20),
///     pacing_gain: Some(1.25),
///     ..Default::default()
/// });
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Adaptation {
    /// New per-stream receive window.
    pub stream_window: Option<u64>,
    /// New connection receive window.
    pub connection_window: Option<u64>,
    /// New keep-alive interval (`Some(None)` turns it off).
    pub keep_alive: Option<Option<Duration>>,
    /// New ACK frequency: ack-eliciting packets per immediate ACK.
    pub ack_eliciting_threshold: Option<u32>,
    /// New pacing-gain multiplier.
    pub pacing_gain: Option<f64>,
}
