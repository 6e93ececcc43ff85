//! What an operator reads in the logs about each connection: its handshake's outcome,
//! migrations, path MTU and key changes, and how it closed and why.
//!
//! Each event is emitted in a `conn` span carrying the connection's ID, peer and side,
//! inside the `worker` span of the thread that owns it (worker id and backend), so a log
//! line names all of them. Nothing here runs unless a `tracing` subscriber wants the
//! level: without one, each call is a check of a static.

use crate::conn::{ConnectionError, ConnectionHandle, Endpoint, Event, Side};

/// Logs `e` of connection `h` at the level an operator needs it.
pub(crate) fn connection_event(endpoint: &Endpoint, h: ConnectionHandle, e: &Event) {
    // Failures are warnings, so a `warn` filter still shows a lost connection's reason.
    let wanted = match e {
        Event::Connected | Event::PathMigrated(_) => {
            tracing::enabled!(target: "stoq::conn", tracing::Level::INFO)
        }
        Event::Lost(_) => tracing::enabled!(target: "stoq::conn", tracing::Level::WARN),
        Event::DatagramSizeChanged(_) | Event::KeyUpdated => {
            tracing::enabled!(target: "stoq::conn", tracing::Level::DEBUG)
        }
        _ => false,
    };
    if !wanted {
        return;
    }
    let Some(c) = endpoint.connection(h) else {
        return;
    };
    let side = match c.side() {
        Side::Client => "client",
        Side::Server => "server",
    };
    let span = tracing::info_span!(
        target: "stoq::conn",
        "conn",
        cid = ?c.local_cid(),
        peer = %c.remote_address(),
        side,
    );
    let _g = span.enter();
    let s = c.stats();
    match e {
        Event::Connected => tracing::info!(
            target: "stoq::conn",
            rtt_ms = s.smoothed_rtt.as_secs_f64() * 1e3,
            suite = %c.suite().map_or_else(|| "none".to_string(), |s| format!("{s:?}")),
            "handshake completed"
        ),
        Event::Lost(err) => {
            let (tx, rx) = (s.tx_bytes, s.rx_bytes);
            match err {
                ConnectionError::LocallyClosed
                | ConnectionError::ApplicationClosed { .. }
                | ConnectionError::PeerClosed { .. }
                | ConnectionError::TimedOut => {
                    tracing::info!(target: "stoq::conn", tx, rx, reason = %err, "closed");
                }
                ConnectionError::HandshakeTimedOut => {
                    tracing::info!(target: "stoq::conn", reason = %err, "handshake timed out");
                }
                _ => tracing::warn!(target: "stoq::conn", tx, rx, reason = %err, "failed"),
            }
        }
        Event::PathMigrated(to) => tracing::info!(target: "stoq::conn", to = %to, "peer migrated"),
        Event::DatagramSizeChanged(n) => {
            tracing::debug!(target: "stoq::conn", mtu = s.path_mtu, max_datagram = n, "path MTU changed");
        }
        Event::KeyUpdated => tracing::debug!(target: "stoq::conn", "1-RTT keys updated"),
        _ => {}
    }
}
