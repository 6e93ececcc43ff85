//! Early data (0-RTT) as the connection drives it.
//!
//! - **Client.** A connection whose handshake offers early data starts with the 0-RTT key
//!   as its application space's sending key: streams opened and DATAGRAMs sent before the
//!   handshake completes go out in 0-RTT packets (long header, type `01`), under the
//!   server limits remembered with the ticket. The 0-RTT and 1-RTT packets share the
//!   application packet-number space (RFC 9000 §12.3), so the server acknowledges 0-RTT
//!   packets in 1-RTT ones and loss recovery treats them alike. When the server's
//!   EncryptedExtensions refuse the early data, every 0-RTT packet is forgotten (not a
//!   congestion signal: they were discarded, not lost), the streams are rewound so their
//!   bytes go again from their first offset under the server's real limits, and 0-RTT
//!   sending stops; the 1-RTT keys then carry it all, byte for byte. DATAGRAMs sent in
//!   refused 0-RTT are not resent: they are unreliable by contract.
//! - **Server.** A server that accepts early data opens 0-RTT packets with the early key
//!   until its handshake completes (they may only carry stream data and its flow control,
//!   DATAGRAMs, PING, PADDING and CONNECTION_CLOSE), and may answer at once (0.5-RTT):
//!   its application sees the connection ([`Event::Connected`]) as soon as its flight is
//!   written, a round trip before the client's Finished. Streams the client opened in
//!   its early data are marked ([`Connection::is_early_stream`]): what they carry may be
//!   a replay to another server of the cluster (see [`crate::handshake::early`]).

use super::error::ConnectionError;
use super::event::Event;
use super::streams::{Dir, PeerLimits, StreamId};
use super::{Connection, Side, State};
use crate::crypto::DirectionalKeys;
use crate::handshake::params::TransportParams;
use crate::handshake::{EarlyData, EarlyDataRefusal};

impl Connection {
    /// How early data (0-RTT) went on this connection: not offered, waiting for the
    /// server's answer (client), accepted, or refused and why (a client sees `Declined`;
    /// it then sent that data again at 1-RTT).
    pub fn early_data(&self) -> EarlyData {
        self.hs.early_data()
    }

    /// Whether stream `id` was opened by the client in early data, so that what it
    /// carries may have been replayed (server side; `false` on a client, whose own early
    /// data it knows). Serve only idempotent requests from such streams, or wait for
    /// [`Event::HandshakeConfirmed`] before acting on them.
    pub fn is_early_stream(&self, id: StreamId) -> bool {
        self.side == Side::Server
            && id.initiator() == Side::Client
            && (self.early_rx.is_some()
                || id.index() < self.early_streams[usize::from(id.dir() == Dir::Uni)])
    }

    /// Whether the application may use streams and DATAGRAMs now: once established, and
    /// before that on a client that started with early data (what it writes goes in
    /// 0-RTT, or at 1-RTT if refused) or on a server that accepted them (it answers at
    /// 0.5-RTT).
    pub(super) fn app_ready(&self) -> bool {
        match self.state {
            State::Established => true,
            State::Handshaking => self.early_app,
            _ => false,
        }
    }

    /// Installs the early key the handshake derived: the client's sending key for the
    /// application space, or the server's receiving key for 0-RTT packets.
    pub(super) fn take_early_key(&mut self) {
        let Some((suite, secret)) = self.hs.take_early_key() else {
            return;
        };
        let keys = DirectionalKeys::from_secret(suite, secret);
        match self.side {
            Side::Client => {
                let Some(p) = self.hs.remembered_params().cloned() else {
                    return;
                };
                self.spaces[2].tx = Some(keys);
                self.early_tx = true;
                self.early_app = true;
                self.apply_peer_limits(&p);
            }
            Side::Server => {
                self.early_rx = Some(Box::new(keys));
                // The client's limits are in its ClientHello: the server may answer in
                // 0.5-RTT under them.
                if let Some(p) = self.hs.peer_params().cloned() {
                    self.apply_peer_limits(&p);
                }
                self.early_app = true;
            }
        }
    }

    /// The peer's limits on streams and DATAGRAMs, from its transport parameters (or, on
    /// a client sending early data, from those remembered with its ticket).
    pub(super) fn apply_peer_limits(&mut self, p: &TransportParams) {
        self.peer_max_datagram = p.max_datagram_frame_size;
        self.streams.set_peer_limits(PeerLimits {
            max_data: p.initial_max_data,
            bidi_local: p.initial_max_stream_data_bidi_local,
            bidi_remote: p.initial_max_stream_data_bidi_remote,
            uni: p.initial_max_stream_data_uni,
            max_streams_bidi: p.initial_max_streams_bidi,
            max_streams_uni: p.initial_max_streams_uni,
        });
        self.peer_limits_set = true;
    }

    /// Client: acts on the server's answer to its early data once the handshake has it
    /// (its EncryptedExtensions), before any newer key is installed.
    pub(super) fn on_early_answer(&mut self) {
        if !self.early_tx || self.early_answered {
            return;
        }
        let answer = self.hs.early_data();
        if answer == EarlyData::Pending {
            return;
        }
        self.early_answered = true;
        match answer {
            EarlyData::Accepted => self.events.push_back(Event::EarlyData { accepted: true }),
            _ => {
                self.early_tx = false;
                self.spaces[2].tx = None;
                self.discard_early_in_flight();
                self.streams.rewind_refused_early();
                self.events.push_back(Event::EarlyData { accepted: false });
            }
        }
    }

    /// Client: the 0-RTT packets in flight were discarded by the server unread (their
    /// early data refused, or a Retry answered the flight they followed): they are
    /// neither acknowledged nor lost, and no congestion signal. What they carried is
    /// queued again, as after a loss.
    pub(super) fn discard_early_in_flight(&mut self) {
        let mut recs = Vec::new();
        for p in &self.spaces[2].sent {
            if p.done {
                continue;
            }
            if p.in_flight {
                self.in_flight = self.in_flight.saturating_sub(u64::from(p.size));
            }
            recs.push(p.rec);
        }
        for rec in recs {
            self.on_records(2, rec, false);
        }
        self.spaces[2].forget_in_flight();
    }

    /// Client, at handshake completion after refused early data: the server's real limits
    /// replace the remembered ones for the streams already open.
    pub(super) fn after_refused_early(&mut self) -> Result<(), ConnectionError> {
        if self.side != Side::Client
            || !matches!(
                self.hs.early_data(),
                EarlyData::Refused(EarlyDataRefusal::Declined)
            )
        {
            return Ok(());
        }
        self.streams.reset_send_windows().map_err(|()| {
            ConnectionError::TransportParameter(
                "the server allows fewer streams than were opened in refused early data",
            )
        })
    }

    /// Server, at handshake completion: 0-RTT keys are dropped (RFC 9001 §4.9.3) and the
    /// streams the client opened until now are the early ones.
    pub(super) fn end_early_rx(&mut self) {
        if self.early_rx.take().is_some() {
            self.early_streams = self.streams.peer_opened();
        }
    }
}
