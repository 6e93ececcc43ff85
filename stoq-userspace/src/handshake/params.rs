//! Transport parameters, negotiated inside the handshake (and so authenticated by it).
//!
//! Encoded as QUIC does (RFC 9000 §18): a sequence of (varint id, varint length, value),
//! with QUIC's identifiers. Unknown identifiers are skipped; duplicates and out-of-range
//! values are errors.

use stoq_common::cid::ConnectionId;

use crate::codec::{DecodeError, Reader, Writer};

/// The parameters one side announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportParams {
    /// Idle timeout in milliseconds (0 = none).
    pub max_idle_timeout_ms: u64,
    /// Largest UDP payload this side accepts (at least 1200).
    pub max_udp_payload_size: u64,
    /// Connection-level flow-control window.
    pub initial_max_data: u64,
    /// Window for bidirectional streams this side opens.
    pub initial_max_stream_data_bidi_local: u64,
    /// Window for bidirectional streams the peer opens.
    pub initial_max_stream_data_bidi_remote: u64,
    /// Window for unidirectional streams.
    pub initial_max_stream_data_uni: u64,
    /// Bidirectional streams the peer may open.
    pub initial_max_streams_bidi: u64,
    /// Unidirectional streams the peer may open.
    pub initial_max_streams_uni: u64,
    /// ACK delay exponent (at most 20).
    pub ack_delay_exponent: u64,
    /// Largest ACK delay in milliseconds (below 2^14).
    pub max_ack_delay_ms: u64,
    /// How many CIDs this side keeps for the peer (at least 2).
    pub active_connection_id_limit: u64,
    /// Largest DATAGRAM frame accepted (0 = DATAGRAM not supported).
    pub max_datagram_frame_size: u64,
    /// Server only: the DCID of the client's first Initial.
    pub original_destination_cid: Option<ConnectionId>,
    /// The SCID of this side's first Initial.
    pub initial_source_cid: Option<ConnectionId>,
    /// Server only, after a Retry: the Retry's SCID.
    pub retry_source_cid: Option<ConnectionId>,
    /// Server only: the stateless reset token of its handshake CID.
    pub stateless_reset_token: Option<[u8; 16]>,
}

impl TransportParams {
    /// A digest of the limits a client uses for 0-RTT (RFC 9000 §7.4.1: the flow-control,
    /// stream and DATAGRAM limits): a server's ticket carries the digest of the limits it
    /// had when it issued it, and it accepts early data only while its limits are the
    /// same, so a client's remembered limits are never more than it grants.
    pub(crate) fn early_limits_digest(&self) -> [u8; 8] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"stoq 0-rtt limits v1");
        for v in [
            self.initial_max_data,
            self.initial_max_stream_data_bidi_local,
            self.initial_max_stream_data_bidi_remote,
            self.initial_max_stream_data_uni,
            self.initial_max_streams_bidi,
            self.initial_max_streams_uni,
            self.max_datagram_frame_size,
        ] {
            h.update(v.to_be_bytes());
        }
        h.finalize()[..8].try_into().expect("8 of 32 bytes")
    }
}

impl Default for TransportParams {
    fn default() -> Self {
        Self {
            max_idle_timeout_ms: 30_000,
            max_udp_payload_size: 65_527,
            initial_max_data: 16 << 20,
            initial_max_stream_data_bidi_local: 4 << 20,
            initial_max_stream_data_bidi_remote: 4 << 20,
            initial_max_stream_data_uni: 4 << 20,
            initial_max_streams_bidi: 100,
            initial_max_streams_uni: 100,
            ack_delay_exponent: 3,
            max_ack_delay_ms: 25,
            active_connection_id_limit: 4,
            max_datagram_frame_size: 65_535,
            original_destination_cid: None,
            initial_source_cid: None,
            retry_source_cid: None,
            stateless_reset_token: None,
        }
    }
}

const IDLE: u64 = 0x01;
const RESET_TOKEN: u64 = 0x02;
const MAX_UDP: u64 = 0x03;
const MAX_DATA: u64 = 0x04;
const BIDI_LOCAL: u64 = 0x05;
const BIDI_REMOTE: u64 = 0x06;
const UNI: u64 = 0x07;
const STREAMS_BIDI: u64 = 0x08;
const STREAMS_UNI: u64 = 0x09;
const ACK_EXP: u64 = 0x0a;
const ACK_DELAY: u64 = 0x0b;
const CID_LIMIT: u64 = 0x0e;
const ODCID: u64 = 0x00;
const ISCID: u64 = 0x0f;
const RSCID: u64 = 0x10;
const DATAGRAM: u64 = 0x20;

impl TransportParams {
    /// Encodes the parameters.
    pub fn encode(&self, w: &mut Writer) {
        let mut int = |id: u64, v: u64| {
            let mut t = Writer::new();
            t.varint(v);
            w.varint(id).varint(t.buf.len() as u64).bytes(&t.buf);
        };
        int(IDLE, self.max_idle_timeout_ms);
        int(MAX_UDP, self.max_udp_payload_size);
        int(MAX_DATA, self.initial_max_data);
        int(BIDI_LOCAL, self.initial_max_stream_data_bidi_local);
        int(BIDI_REMOTE, self.initial_max_stream_data_bidi_remote);
        int(UNI, self.initial_max_stream_data_uni);
        int(STREAMS_BIDI, self.initial_max_streams_bidi);
        int(STREAMS_UNI, self.initial_max_streams_uni);
        int(ACK_EXP, self.ack_delay_exponent);
        int(ACK_DELAY, self.max_ack_delay_ms);
        int(CID_LIMIT, self.active_connection_id_limit);
        int(DATAGRAM, self.max_datagram_frame_size);
        for (id, cid) in [
            (ODCID, &self.original_destination_cid),
            (ISCID, &self.initial_source_cid),
            (RSCID, &self.retry_source_cid),
        ] {
            if let Some(c) = cid {
                w.varint(id).varint(c.len() as u64).bytes(c.as_bytes());
            }
        }
        if let Some(t) = &self.stateless_reset_token {
            w.varint(RESET_TOKEN).varint(16).bytes(t);
        }
    }

    /// Decodes and validates parameters.
    ///
    /// # Errors
    /// [`DecodeError`] for truncation, duplicates and out-of-range values.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut p = Self {
            original_destination_cid: None,
            initial_source_cid: None,
            ..Self::default()
        };
        let mut seen = 0u64;
        let mut r = Reader::new(buf);
        while r.remaining() > 0 {
            let id = r.varint()?;
            let len = r.varint()?;
            let len = usize::try_from(len).map_err(|_| DecodeError::UnexpectedEnd)?;
            let val = r.bytes(len)?;
            if id < 64 {
                if seen & (1 << id) != 0 {
                    return Err(DecodeError::Invalid("duplicate transport parameter"));
                }
                seen |= 1 << id;
            }
            let int = || -> Result<u64, DecodeError> {
                let mut vr = Reader::new(val);
                let v = vr.varint()?;
                vr.finish()?;
                Ok(v)
            };
            let cid = || {
                ConnectionId::from_slice(val)
                    .map_err(|_| DecodeError::Invalid("connection ID over 20 bytes"))
            };
            match id {
                IDLE => p.max_idle_timeout_ms = int()?,
                MAX_UDP => p.max_udp_payload_size = int()?,
                MAX_DATA => p.initial_max_data = int()?,
                BIDI_LOCAL => p.initial_max_stream_data_bidi_local = int()?,
                BIDI_REMOTE => p.initial_max_stream_data_bidi_remote = int()?,
                UNI => p.initial_max_stream_data_uni = int()?,
                STREAMS_BIDI => p.initial_max_streams_bidi = int()?,
                STREAMS_UNI => p.initial_max_streams_uni = int()?,
                ACK_EXP => p.ack_delay_exponent = int()?,
                ACK_DELAY => p.max_ack_delay_ms = int()?,
                CID_LIMIT => p.active_connection_id_limit = int()?,
                DATAGRAM => p.max_datagram_frame_size = int()?,
                ODCID => p.original_destination_cid = Some(cid()?),
                ISCID => p.initial_source_cid = Some(cid()?),
                RSCID => p.retry_source_cid = Some(cid()?),
                RESET_TOKEN => {
                    p.stateless_reset_token = Some(
                        val.try_into()
                            .map_err(|_| DecodeError::Invalid("stateless reset token length"))?,
                    )
                }
                _ => {}
            }
        }
        if p.max_udp_payload_size < 1200 {
            return Err(DecodeError::Invalid("max_udp_payload_size below 1200"));
        }
        if p.ack_delay_exponent > 20 {
            return Err(DecodeError::Invalid("ack_delay_exponent above 20"));
        }
        if p.max_ack_delay_ms >= 1 << 14 {
            return Err(DecodeError::Invalid("max_ack_delay of 2^14 ms or more"));
        }
        if p.active_connection_id_limit < 2 {
            return Err(DecodeError::Invalid("active_connection_id_limit below 2"));
        }
        if p.initial_max_streams_bidi > 1 << 60 || p.initial_max_streams_uni > 1 << 60 {
            return Err(DecodeError::Invalid("stream limit above 2^60"));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_validation() {
        let p = TransportParams {
            original_destination_cid: Some(ConnectionId::from_slice(&[1; 8]).unwrap()),
            initial_source_cid: Some(ConnectionId::from_slice(&[2; 12]).unwrap()),
            stateless_reset_token: Some([3; 16]),
            ..TransportParams::default()
        };
        let mut w = Writer::new();
        p.encode(&mut w);
        assert_eq!(TransportParams::decode(&w.buf), Ok(p.clone()));
        // Unknown parameters are skipped.
        let mut w2 = Writer::new();
        w2.varint(0x7777).varint(2).bytes(&[9, 9]);
        p.encode(&mut w2);
        assert_eq!(TransportParams::decode(&w2.buf), Ok(p));
        // Duplicates and bad values are refused.
        let mut dup = Writer::new();
        dup.varint(IDLE)
            .varint(1)
            .varint(5)
            .varint(IDLE)
            .varint(1)
            .varint(6);
        assert!(TransportParams::decode(&dup.buf).is_err());
        let mut small = Writer::new();
        small.varint(MAX_UDP).varint(2).varint(1000);
        assert!(TransportParams::decode(&small.buf).is_err());
        assert!(TransportParams::decode(&[0x01, 0x05, 0x01]).is_err());
    }
}
