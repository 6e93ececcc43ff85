//! What a connection tells its application: [`Event`].

use std::net::SocketAddr;

use super::error::ConnectionError;
use super::streams::{Dir, StreamId};

/// Something the application should know about a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The handshake completed: 1-RTT data can flow.
    Connected,
    /// The handshake is confirmed (HANDSHAKE_DONE received or sent): all handshake keys
    /// are discarded.
    HandshakeConfirmed,
    /// DATAGRAMs are waiting in [`Connection::recv_datagram`](super::Connection::recv_datagram).
    DatagramReceived,
    /// The 1-RTT keys moved to a new key phase.
    KeyUpdated,
    /// The connection ended; the error says why.
    Lost(ConnectionError),
    /// The peer opened a stream: take it with [`Connection::accept_stream`](super::Connection::accept_stream).
    StreamOpened(Dir),
    /// A stream has data (or its end, or a reset) to read.
    StreamReadable(StreamId),
    /// A stream that reported [`WriteError::Blocked`](super::WriteError::Blocked) can take more data.
    StreamWritable(StreamId),
    /// Everything written to a finished stream is acknowledged.
    StreamFinished(StreamId),
    /// The peer asked this side to stop sending on a stream (it was reset in answer).
    StreamStopped {
        /// The stream.
        id: StreamId,
        /// The peer's application code.
        code: u64,
    },
    /// The peer raised its stream limit after [`OpenError::Blocked`](super::OpenError::Blocked).
    StreamsAvailable(Dir),
    /// A message's deadline passed before it was acknowledged: it was abandoned (its
    /// stream reset with [`streams::MESSAGE_EXPIRED`](super::streams::MESSAGE_EXPIRED)).
    MessageAbandoned(StreamId),
    /// A message was acknowledged in full before its deadline.
    MessageDelivered(StreamId),
    /// [`Connection::max_datagram_size`](super::Connection::max_datagram_size) changed (the path MTU moved).
    DatagramSizeChanged(usize),
    /// The peer moved to a new address, now validated.
    PathMigrated(SocketAddr),
    /// Extension frames are waiting in [`Connection::recv_extension_frame`](super::Connection::recv_extension_frame).
    ExtensionFrameReceived,
    /// The server answered this client's early data (0-RTT): accepted, or refused, in
    /// which case the streams' data goes again at 1-RTT (DATAGRAMs sent in 0-RTT are
    /// lost). See [`Connection::early_data`](super::Connection::early_data).
    EarlyData {
        /// Whether the server accepted it.
        accepted: bool,
    },
    /// The DATAGRAM queue has room again after [`SendDatagramError::Blocked`](super::SendDatagramError::Blocked): a
    /// producer faster than the path may send the next one.
    DatagramsUnblocked,
}
