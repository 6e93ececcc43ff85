//! The endpoint's stateless answers: Retry, Version Negotiation, stateless reset and a
//! refusal, each queued (in the bounded [`Responses`](super::responses::Responses))
//! without keeping any state for the peer.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rand_core::RngCore;
use stoq_common::cid::ConnectionId;
use stoq_common::wire::stoq::{RETRY_TAG_LEN, Repr, VERSION_1};

use super::super::token::{reset_token, retry_tag};
use super::super::{Connection, Side};
use super::{Endpoint, Incoming};
use crate::handshake::Handshake;

impl Endpoint {
    /// Queues a stateless response to `to`, sent from `from_ip` when known.
    pub(super) fn respond(
        &mut self,
        to: SocketAddr,
        from_ip: Option<IpAddr>,
        datagram: Vec<u8>,
    ) -> bool {
        let queued = self.responses.push(to, from_ip, datagram);
        if !queued {
            self.stats.responses_dropped += 1;
        }
        queued
    }

    pub(super) fn send_retry(&mut self, now: Instant, incoming: &Incoming) {
        let retry_scid = self.new_cid();
        let now_ms = self.unix_ms(now);
        let g = self.generation;
        let Some(key) = self.token_keys[usize::from(g)].as_ref() else {
            return;
        };
        let token = key.seal(&mut self.rng, g, &incoming.remote, &incoming.dcid, now_ms);
        let repr = Repr::Retry {
            dcid: incoming.scid,
            scid: retry_scid,
            token: &token,
            tag: [0; RETRY_TAG_LEN],
        };
        let mut buf = self.responses.buffer(repr.buffer_len());
        let Ok(n) = repr.emit(&mut buf) else {
            return;
        };
        buf[0] |= (self.rng.next_u32() & 0x0f) as u8;
        let tag = retry_tag(incoming.dcid.as_bytes(), &buf[..n - RETRY_TAG_LEN]);
        buf[n - RETRY_TAG_LEN..n].copy_from_slice(&tag);
        if self.respond(incoming.remote, incoming.local_ip, buf) {
            self.stats.retries_sent += 1;
            self.retried.insert(now, incoming.remote, incoming.dcid);
        }
    }

    pub(super) fn version_negotiation(
        &mut self,
        remote: SocketAddr,
        data: &[u8],
        info: &stoq_common::classify::HeaderInfo,
    ) {
        let (Ok(dcid), Ok(scid)) = (
            ConnectionId::from_slice(&data[info.dcid_off..info.dcid_off + info.dcid_len]),
            ConnectionId::from_slice(&data[info.scid_off..info.scid_off + info.scid_len]),
        ) else {
            return;
        };
        let versions = VERSION_1.to_be_bytes();
        let repr = Repr::VersionNegotiation {
            dcid: scid,
            scid: dcid,
            versions: &versions,
        };
        let mut buf = self.responses.buffer(repr.buffer_len());
        if repr.emit(&mut buf).is_ok() {
            buf[0] |= (self.rng.next_u32() & 0x7f) as u8;
            if self.respond(remote, self.rx_info.local_ip, buf) {
                self.stats.version_negotiations_sent += 1;
            }
        }
    }

    pub(super) fn stateless_reset(&mut self, remote: SocketAddr, data: &[u8]) {
        // Smaller than the trigger (so two endpoints cannot loop), yet long enough to pass
        // a STOQ classifier using the same CID length.
        let l = self.config.cid_layout.len();
        let min = 1 + l + stoq_common::wire::stoq::MIN_PROTECTED_LEN;
        let len = (data.len() - 1).min(min + 8);
        if len < min {
            self.stats.unknown_cid += 1;
            return;
        }
        let Ok(dcid) = ConnectionId::from_slice(&data[1..1 + l]) else {
            return;
        };
        let mut buf = self.responses.buffer(len);
        self.rng.fill_bytes(&mut buf[..len - 16]);
        buf[0] = 0x40 | (buf[0] & 0x3f);
        // Looks like a CID of this layout to the peer's classifier; random otherwise.
        buf[1] = self.config.cid_layout.first_octet(buf[1] % 7);
        buf[len - 16..].copy_from_slice(&reset_token(self.reset_key_for(&dcid), &dcid));
        if self.respond(remote, self.rx_info.local_ip, buf) {
            self.stats.resets_sent += 1;
        }
    }

    /// [`refuse_raw`](Self::refuse_raw) for a client the endpoint already described.
    pub(super) fn refuse_incoming(&mut self, now: Instant, incoming: &Incoming) {
        self.refuse_raw(
            now,
            incoming.remote,
            incoming.local_ip,
            incoming.dcid,
            incoming.scid,
        );
    }

    pub(super) fn refuse_raw(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        dcid: ConnectionId,
        scid: ConnectionId,
    ) {
        let Some(server) = self.server.clone() else {
            return;
        };
        // A throwaway connection with the Initial keys writes the close.
        let mut s = self.setup(Side::Server, now, remote);
        s.remote_cid = scid;
        s.initial_dcid = dcid;
        s.orig_dcid = dcid;
        s.validated = true;
        let params = server.params.clone();
        let mut c = Connection::new(
            s,
            Handshake::server(server, params.clone(), self.ticket_keys()),
            params,
        );
        c.enter_closing(
            now,
            (super::super::code::CONNECTION_REFUSED, Some(0), Vec::new()),
            super::super::ConnectionError::LocallyClosed,
        );
        let mut buf = Vec::new();
        if let Some(t) = c.poll_transmit(now, &mut buf)
            && {
                buf.truncate(t.size);
                self.respond(remote, local_ip, buf)
            }
        {
            self.stats.refused += 1;
        }
    }
}
