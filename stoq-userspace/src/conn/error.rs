//! Why a connection ended and why an operation on it was refused: QUIC's error codes, one
//! error variant per reason, and the alert a handshake failure is reported with.

use super::space::MAX_CRYPTO_BUFFER;
use super::streams;
use crate::frame::FrameError;
use crate::handshake::HandshakeError;

/// QUIC transport error codes (RFC 9000 §20.1), as STOQ uses them.
#[allow(missing_docs)]
pub mod code {
    pub const NO_ERROR: u64 = 0x0;
    pub const INTERNAL_ERROR: u64 = 0x1;
    pub const CONNECTION_REFUSED: u64 = 0x2;
    pub const FLOW_CONTROL_ERROR: u64 = 0x3;
    pub const STREAM_LIMIT_ERROR: u64 = 0x4;
    pub const STREAM_STATE_ERROR: u64 = 0x5;
    pub const FINAL_SIZE_ERROR: u64 = 0x6;
    pub const FRAME_ENCODING_ERROR: u64 = 0x7;
    pub const TRANSPORT_PARAMETER_ERROR: u64 = 0x8;
    pub const CONNECTION_ID_LIMIT_ERROR: u64 = 0x9;
    pub const PROTOCOL_VIOLATION: u64 = 0xa;
    pub const INVALID_TOKEN: u64 = 0xb;
    pub const APPLICATION_ERROR: u64 = 0xc;
    pub const CRYPTO_BUFFER_EXCEEDED: u64 = 0xd;
    pub const KEY_UPDATE_ERROR: u64 = 0xe;
    pub const AEAD_LIMIT_REACHED: u64 = 0xf;
    /// CRYPTO_ERROR: 0x100 + a TLS-style alert number.
    pub const CRYPTO_ERROR: u64 = 0x100;
}

/// Why a connection ended: one variant per reason, never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// This side's handshake failed (the peer is told with a CRYPTO_ERROR close).
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The peer's transport parameters are missing, inconsistent or do not match the
    /// connection IDs seen on the wire (an injection or downgrade attempt).
    #[error("transport parameter error: {0}")]
    TransportParameter(&'static str),
    /// A frame did not decode.
    #[error("frame encoding error: {0}")]
    FrameEncoding(FrameError),
    /// The peer broke a protocol rule.
    #[error("protocol violation: {0}")]
    ProtocolViolation(&'static str),
    /// The peer acknowledged a packet number this side never sent (optimistic ACK).
    #[error("peer acknowledged packet {pn} which was never sent")]
    AckOfUnsentPacket {
        /// The bogus packet number.
        pn: u64,
    },
    /// The peer sent CRYPTO data too far ahead of what was delivered.
    #[error("peer sent more out-of-order handshake data than {MAX_CRYPTO_BUFFER} bytes")]
    CryptoBufferExceeded,
    /// The peer sent a frame this version of STOQ does not implement yet.
    #[error("frame type {0:#x} is not supported by this endpoint")]
    UnsupportedFrame(u64),
    /// The peer closed the connection with a transport error code.
    #[error("peer closed the connection: code {code:#x} ({reason})")]
    PeerClosed {
        /// Transport error code.
        code: u64,
        /// The peer's reason phrase (lossily decoded).
        reason: String,
    },
    /// The peer's application closed the connection.
    #[error("peer application closed the connection: code {code} ({reason})")]
    ApplicationClosed {
        /// Application error code.
        code: u64,
        /// The peer's reason phrase (lossily decoded).
        reason: String,
    },
    /// This side closed the connection.
    #[error("closed locally")]
    LocallyClosed,
    /// Nothing was heard from the peer for the idle timeout.
    #[error("idle timeout")]
    TimedOut,
    /// The handshake did not complete within
    /// [`TransportConfig::handshake_timeout`](super::TransportConfig::handshake_timeout).
    #[error("handshake timed out: the peer did not complete it in time")]
    HandshakeTimedOut,
    /// The peer reset the connection (a stateless reset).
    #[error("stateless reset by peer")]
    Reset,
    /// The server does not speak any version this client offers.
    #[error("server speaks none of our versions")]
    VersionMismatch,
    /// Too many packets failed authentication under one key.
    #[error("AEAD integrity limit reached")]
    AeadLimitReached,
    /// The peer misused key updates.
    #[error("key update error: {0}")]
    KeyUpdate(&'static str),
    /// The peer sent beyond the flow-control credit this side granted.
    #[error("flow control violated: {0}")]
    FlowControl(&'static str),
    /// The peer opened more streams than this side allowed.
    #[error("peer exceeded the stream limit")]
    StreamLimit,
    /// A frame for a stream in a state that does not allow it.
    #[error("stream state error: {0}")]
    StreamState(&'static str),
    /// The peer changed a stream's final size, or sent data beyond it.
    #[error("final size changed or exceeded")]
    FinalSize,
    /// Retransmitted STREAM data that disagrees with what was received before.
    #[error("stream {id}: data at offset {offset} differs from its earlier copy")]
    StreamDataMismatch {
        /// The stream.
        id: u64,
        /// Where the disagreement starts.
        offset: u64,
    },
    /// A peer fragmented a stream beyond what any honest sender does.
    #[error(
        "stream {id}: more than {} out-of-order fragments",
        streams::MAX_RX_FRAGMENTS
    )]
    StreamFragmented {
        /// The stream.
        id: u64,
    },
    /// The peer issued more connection IDs than this side's active_connection_id_limit.
    #[error("peer exceeded the connection ID limit")]
    ConnectionIdLimit,
    /// The peer sent PATH_CHALLENGE frames faster than any path validation needs.
    #[error("PATH_CHALLENGE flood")]
    PathChallengeFlood,
    /// The peer sent extension frames faster than the application reads them (more than
    /// 1,024 frames or 1 MiB waiting).
    #[error("extension frames arrive faster than the application reads them")]
    ExtensionFramesExceeded,
}

impl ConnectionError {
    /// The transport error code this side sends in its CONNECTION_CLOSE.
    pub(crate) fn wire_code(&self) -> u64 {
        match self {
            Self::Handshake(e) => code::CRYPTO_ERROR + u64::from(alert(e)),
            Self::TransportParameter(_) => code::TRANSPORT_PARAMETER_ERROR,
            Self::FrameEncoding(_) | Self::UnsupportedFrame(_) => code::FRAME_ENCODING_ERROR,
            Self::ProtocolViolation(_) | Self::AckOfUnsentPacket { .. } => code::PROTOCOL_VIOLATION,
            Self::CryptoBufferExceeded => code::CRYPTO_BUFFER_EXCEEDED,
            Self::AeadLimitReached => code::AEAD_LIMIT_REACHED,
            Self::KeyUpdate(_) => code::KEY_UPDATE_ERROR,
            Self::FlowControl(_) => code::FLOW_CONTROL_ERROR,
            Self::StreamLimit => code::STREAM_LIMIT_ERROR,
            Self::StreamState(_) => code::STREAM_STATE_ERROR,
            Self::FinalSize => code::FINAL_SIZE_ERROR,
            Self::StreamDataMismatch { .. }
            | Self::StreamFragmented { .. }
            | Self::PathChallengeFlood
            | Self::ExtensionFramesExceeded => code::PROTOCOL_VIOLATION,
            Self::ConnectionIdLimit => code::CONNECTION_ID_LIMIT_ERROR,
            _ => code::NO_ERROR,
        }
    }
}

/// The TLS-style alert number for a handshake failure (sent as CRYPTO_ERROR 0x100 + n).
pub(crate) fn alert(e: &HandshakeError) -> u8 {
    use crate::handshake::cert::CertError;
    match e {
        HandshakeError::Decode(_) => 50,
        HandshakeError::UnexpectedMessage { .. } => 10,
        HandshakeError::UnsupportedVersion(_) => 70,
        HandshakeError::NoCommonSuite
        | HandshakeError::SuiteNotOffered(_)
        | HandshakeError::UnacceptedSignatureAlgorithm(_) => 40,
        HandshakeError::Downgrade { .. } => 47,
        HandshakeError::KeyExchange(_) => 47,
        HandshakeError::Certificate(CertError::Expired { .. }) => 45,
        HandshakeError::Certificate(CertError::UnknownIssuer(_)) => 48,
        HandshakeError::Certificate(_) => 42,
        HandshakeError::PinMismatch => 42,
        HandshakeError::BadSignature | HandshakeError::FinishedMismatch => 51,
        HandshakeError::ClientAuthRequired | HandshakeError::ClientAuthMissing => 116,
        HandshakeError::BufferExceeded => 50,
        HandshakeError::NoApplicationProtocol { .. } => 120,
        HandshakeError::ProtocolNotOffered => 47,
        // decrypt_error, as TLS 1.3 answers a bad binder (RFC 8446 §4.2.11).
        HandshakeError::BadBinder => 51,
        HandshakeError::BadResumption(_) => 47,
        // illegal_parameter.
        HandshakeError::UnsolicitedBatchSignature => 47,
    }
}

/// Why a DATAGRAM could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendDatagramError {
    /// The peer does not accept DATAGRAM frames.
    #[error("the peer does not accept datagrams")]
    UnsupportedByPeer,
    /// Larger than [`Connection::max_datagram_size`](super::Connection::max_datagram_size).
    #[error("datagram of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The datagram's size.
        size: usize,
        /// The current limit.
        max: usize,
    },
    /// The send queue is full: back-pressure, try again after sending.
    #[error("datagram send queue full")]
    Blocked,
    /// The connection is not established or already closed.
    #[error("connection not established or closed")]
    NotConnected,
}

/// Why an extension frame could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtensionError {
    /// The type is not in `0x5f00..=0x5fff`.
    #[error("frame type {0:#x} is outside the extension range 0x5f00..=0x5fff")]
    OutsideRange(u64),
    /// The payload does not fit one packet on the current path.
    #[error("extension payload of {size} bytes exceeds {max}")]
    TooLarge {
        /// The payload's size.
        size: usize,
        /// The current limit.
        max: usize,
    },
    /// 1,024 extension frames are queued or unacknowledged: back-pressure.
    #[error("extension frame queue full")]
    Blocked,
    /// The connection is not established or is closed.
    #[error("connection not established or closed")]
    NotConnected,
}

/// Why a message could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The message is larger than the free send buffer: back-pressure, retry after
    /// `StreamWritable`/`MessageDelivered` events.
    #[error("message of {size} bytes exceeds the free send buffer ({capacity} bytes)")]
    Blocked {
        /// The message's size.
        size: usize,
        /// Free send buffer.
        capacity: u64,
    },
    /// The peer's unidirectional stream limit is reached.
    #[error("the peer's stream limit is reached (wait for Event::StreamsAvailable)")]
    StreamLimit,
    /// The connection is not established or is closed.
    #[error("connection not established or closed")]
    NotConnected,
}

/// Why a key update could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyUpdateError {
    /// The handshake is not confirmed yet (RFC 9001 §6.1).
    #[error("handshake not confirmed yet")]
    NotConfirmed,
    /// The previous update has not been acknowledged yet.
    #[error("previous key update not yet acknowledged")]
    InProgress,
}
