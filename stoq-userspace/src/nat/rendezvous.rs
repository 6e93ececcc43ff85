//! The rendezvous protocol's messages: how two peers behind NATs learn each other's
//! candidate addresses through a STOQ server they both reach (`docs/nat.md`).
//!
//! Messages travel on one bidirectional stream of a peer's connection to the rendezvous
//! server, each as `type (u8) | length (u16) | body`:
//!
//! | type | message | direction | body |
//! |---|---|---|---|
//! | 1 | `Register` | peer → server | id, candidates (the peer's host addresses) |
//! | 2 | `Connect` | peer → server | the id of the peer to reach |
//! | 3 | `Incoming` | server → peer | the id and candidates of a peer that wants to connect |
//! | 4 | `Peer` | server → peer | the candidates of the peer asked for |
//! | 5 | `NotFound` | server → peer | (empty): no peer registered under that id |
//! | 6 | `Ready` | peer → server | the id of the peer it has just punched toward |
//!
//! The server answers a `Connect` with `Peer` once the peer asked for says `Ready` (its
//! punches have left, so the asker's first packet cannot reach its NAT before them), or
//! after [`READY_WAIT`] without it.
//!
//! An id is 1 to [`MAX_ID`] bytes (`u8` length, bytes); candidates are a `u8` count (at
//! most [`MAX_CANDIDATES`]) of `kind (0 host, 1 reflexive, 2 relayed) | family (4 or 6) |
//! address | port (u16)`. The server adds the address it sees a peer's connection come
//! from (its reflexive address) first.
//! Decoding refuses every length that does not add up, and never allocates more than the
//! bounds above.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// How long the server waits for the peer asked for to say `Ready`.
pub const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The longest peer id.
pub const MAX_ID: usize = 64;
/// The most candidates a message carries.
pub const MAX_CANDIDATES: usize = 8;
/// The longest message body: an id and the most candidates, all IPv6.
pub const MAX_BODY: usize = 1 + MAX_ID + 1 + MAX_CANDIDATES * 20;

/// How a candidate address reaches a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandidateKind {
    /// The peer's own address (reachable on its network only, or with no NAT).
    Host = 0,
    /// The public address a NAT maps the peer's socket to, as a server saw it.
    Reflexive = 1,
    /// An address on a TURN relay that forwards to the peer.
    Relayed = 2,
}

/// A way to reach a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// The address.
    pub addr: SocketAddr,
    /// What it is.
    pub kind: CandidateKind,
}

impl Candidate {
    /// A candidate of `kind` at `addr`.
    pub fn new(addr: SocketAddr, kind: CandidateKind) -> Self {
        Self { addr, kind }
    }
}

/// A rendezvous message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A peer announces itself under `id`, reachable at `candidates`.
    Register {
        /// The peer's id.
        id: Vec<u8>,
        /// The peer's own addresses (host candidates).
        candidates: Vec<Candidate>,
    },
    /// A peer asks to reach the peer registered as `id`.
    Connect {
        /// The peer asked for.
        id: Vec<u8>,
    },
    /// Another peer wants to connect: punch toward its candidates.
    Incoming {
        /// The peer that asked.
        id: Vec<u8>,
        /// Its candidates, the reflexive address the server saw first.
        candidates: Vec<Candidate>,
    },
    /// The candidates of the peer asked for, the reflexive address the server saw first.
    Peer {
        /// Its candidates.
        candidates: Vec<Candidate>,
    },
    /// No peer is registered under the id asked for.
    NotFound,
    /// The peer has punched toward the peer `id` that asked for it.
    Ready {
        /// The asking peer.
        id: Vec<u8>,
    },
}

/// Why bytes are not a rendezvous message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RendezvousError {
    /// Shorter than its header or its length field.
    #[error("rendezvous message truncated")]
    Truncated,
    /// An unknown message type.
    #[error("unknown rendezvous message type {0}")]
    UnknownType(u8),
    /// A body longer than [`MAX_BODY`], an id of 0 or more than [`MAX_ID`] bytes, more than
    /// [`MAX_CANDIDATES`] candidates, an unknown address family, or bytes left over.
    #[error("malformed rendezvous message")]
    Malformed,
}

impl Message {
    /// Appends the message's encoding to `out`.
    ///
    /// # Errors
    /// [`RendezvousError::Malformed`] for an id or a candidate list out of bounds.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), RendezvousError> {
        let (ty, id, candidates): (u8, Option<&[u8]>, Option<&[Candidate]>) = match self {
            Self::Register { id, candidates } => (1, Some(id), Some(candidates)),
            Self::Connect { id } => (2, Some(id), None),
            Self::Incoming { id, candidates } => (3, Some(id), Some(candidates)),
            Self::Peer { candidates } => (4, None, Some(candidates)),
            Self::NotFound => (5, None, None),
            Self::Ready { id } => (6, Some(id), None),
        };
        let start = out.len();
        out.extend_from_slice(&[ty, 0, 0]);
        if let Some(id) = id {
            if id.is_empty() || id.len() > MAX_ID {
                return Err(RendezvousError::Malformed);
            }
            out.push(id.len() as u8);
            out.extend_from_slice(id);
        }
        if let Some(c) = candidates {
            encode_candidates(c, out)?;
        }
        let len = u16::try_from(out.len() - start - 3).map_err(|_| RendezvousError::Malformed)?;
        out[start + 1..start + 3].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// The body length a header announces, or why it cannot be read: the caller reads that
    /// many bytes next.
    ///
    /// # Errors
    /// [`RendezvousError::Malformed`] for a length over [`MAX_BODY`];
    /// [`RendezvousError::UnknownType`].
    pub fn body_len(header: [u8; 3]) -> Result<usize, RendezvousError> {
        if !(1..=6).contains(&header[0]) {
            return Err(RendezvousError::UnknownType(header[0]));
        }
        let len = usize::from(u16::from_be_bytes([header[1], header[2]]));
        if len > MAX_BODY {
            return Err(RendezvousError::Malformed);
        }
        Ok(len)
    }

    /// Decodes a message of type `ty` from its whole `body`.
    ///
    /// # Errors
    /// A [`RendezvousError`].
    pub fn decode(ty: u8, body: &[u8]) -> Result<Self, RendezvousError> {
        if body.len() > MAX_BODY {
            return Err(RendezvousError::Malformed);
        }
        let mut r = Reader { b: body };
        let m = match ty {
            1 => Self::Register {
                id: r.id()?,
                candidates: r.candidates()?,
            },
            2 => Self::Connect { id: r.id()? },
            3 => Self::Incoming {
                id: r.id()?,
                candidates: r.candidates()?,
            },
            4 => Self::Peer {
                candidates: r.candidates()?,
            },
            5 => Self::NotFound,
            6 => Self::Ready { id: r.id()? },
            t => return Err(RendezvousError::UnknownType(t)),
        };
        if !r.b.is_empty() {
            return Err(RendezvousError::Malformed);
        }
        Ok(m)
    }
}

/// Appends `candidates` as the messages carry them (a count, then each candidate): the
/// form an application sends over its own signalling channel to a peer that calls
/// [`decode_candidates`] and then `Endpoint::connect_candidates` or
/// `Endpoint::punch_toward`.
///
/// # Errors
/// [`RendezvousError::Malformed`] for more than [`MAX_CANDIDATES`].
pub fn encode_candidates(
    candidates: &[Candidate],
    out: &mut Vec<u8>,
) -> Result<(), RendezvousError> {
    if candidates.len() > MAX_CANDIDATES {
        return Err(RendezvousError::Malformed);
    }
    out.push(candidates.len() as u8);
    for c in candidates {
        out.push(c.kind as u8);
        match c.addr.ip() {
            IpAddr::V4(ip) => {
                out.push(4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&c.addr.port().to_be_bytes());
    }
    Ok(())
}

/// Decodes what [`encode_candidates`] wrote, all of `bytes` (hostile: a peer's, through
/// whatever channel carried them). Allocates at most [`MAX_CANDIDATES`] candidates.
///
/// # Errors
/// [`RendezvousError::Truncated`] or [`RendezvousError::Malformed`] (more than
/// [`MAX_CANDIDATES`], an unknown kind or family, bytes left over).
pub fn decode_candidates(bytes: &[u8]) -> Result<Vec<Candidate>, RendezvousError> {
    let mut r = Reader { b: bytes };
    let c = r.candidates()?;
    if !r.b.is_empty() {
        return Err(RendezvousError::Malformed);
    }
    Ok(c)
}

struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], RendezvousError> {
        if self.b.len() < n {
            return Err(RendezvousError::Truncated);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }

    fn u8(&mut self) -> Result<u8, RendezvousError> {
        Ok(self.take(1)?[0])
    }

    fn id(&mut self) -> Result<Vec<u8>, RendezvousError> {
        let n = usize::from(self.u8()?);
        if n == 0 || n > MAX_ID {
            return Err(RendezvousError::Malformed);
        }
        Ok(self.take(n)?.to_vec())
    }

    fn candidates(&mut self) -> Result<Vec<Candidate>, RendezvousError> {
        let n = usize::from(self.u8()?);
        if n > MAX_CANDIDATES {
            return Err(RendezvousError::Malformed);
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let kind = match self.u8()? {
                0 => CandidateKind::Host,
                1 => CandidateKind::Reflexive,
                2 => CandidateKind::Relayed,
                _ => return Err(RendezvousError::Malformed),
            };
            let ip = match self.u8()? {
                4 => {
                    let o: [u8; 4] = self
                        .take(4)?
                        .try_into()
                        .map_err(|_| RendezvousError::Truncated)?;
                    IpAddr::V4(Ipv4Addr::from(o))
                }
                6 => {
                    let o: [u8; 16] = self
                        .take(16)?
                        .try_into()
                        .map_err(|_| RendezvousError::Truncated)?;
                    IpAddr::V6(Ipv6Addr::from(o))
                }
                _ => return Err(RendezvousError::Malformed),
            };
            let p = self.take(2)?;
            v.push(Candidate::new(
                SocketAddr::new(ip, u16::from_be_bytes([p[0], p[1]])),
                kind,
            ));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: &Message) {
        let mut b = Vec::new();
        m.encode(&mut b).unwrap();
        let len = Message::body_len([b[0], b[1], b[2]]).unwrap();
        assert_eq!(len, b.len() - 3);
        assert_eq!(&Message::decode(b[0], &b[3..]).unwrap(), m);
        // Every truncation fails, never panics.
        for cut in 0..b.len() - 3 {
            assert!(Message::decode(b[0], &b[3..3 + cut]).is_err());
        }
    }

    #[test]
    fn messages_round_trip() {
        let c = vec![
            Candidate::new("100.64.0.1:5000".parse().unwrap(), CandidateKind::Reflexive),
            Candidate::new("[fd00:5710::2]:443".parse().unwrap(), CandidateKind::Host),
            Candidate::new(
                "100.64.130.3:49160".parse().unwrap(),
                CandidateKind::Relayed,
            ),
        ];
        round_trip(&Message::Register {
            id: b"alice".to_vec(),
            candidates: c.clone(),
        });
        round_trip(&Message::Connect {
            id: vec![7; MAX_ID],
        });
        round_trip(&Message::Incoming {
            id: b"bob".to_vec(),
            candidates: vec![c[0]; MAX_CANDIDATES],
        });
        round_trip(&Message::Peer { candidates: vec![] });
        round_trip(&Message::NotFound);
        round_trip(&Message::Ready {
            id: b"alice".to_vec(),
        });
    }

    #[test]
    fn candidate_lists_round_trip_and_refuse_the_rest() {
        let c = vec![
            Candidate::new("100.64.0.1:5000".parse().unwrap(), CandidateKind::Reflexive),
            Candidate::new("[fd00:5710::2]:443".parse().unwrap(), CandidateKind::Host),
        ];
        let mut b = Vec::new();
        encode_candidates(&c, &mut b).unwrap();
        // Count, then kind | family | address | port.
        assert_eq!(b.len(), 1 + (2 + 4 + 2) + (2 + 16 + 2));
        assert_eq!(decode_candidates(&b).unwrap(), c);
        for cut in 0..b.len() {
            assert!(decode_candidates(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = b.clone();
        extra.push(0);
        assert_eq!(decode_candidates(&extra), Err(RendezvousError::Malformed));
        let mut kind = b.clone();
        kind[1] = 3;
        assert_eq!(decode_candidates(&kind), Err(RendezvousError::Malformed));
        assert_eq!(
            encode_candidates(&[c[0]; MAX_CANDIDATES + 1], &mut Vec::new()),
            Err(RendezvousError::Malformed)
        );
        assert_eq!(
            decode_candidates(&[MAX_CANDIDATES as u8 + 1]),
            Err(RendezvousError::Malformed)
        );
    }

    #[test]
    fn out_of_bounds_is_refused() {
        let mut b = Vec::new();
        assert_eq!(
            Message::Connect { id: vec![] }.encode(&mut b),
            Err(RendezvousError::Malformed)
        );
        assert_eq!(
            Message::Connect {
                id: vec![1; MAX_ID + 1]
            }
            .encode(&mut b),
            Err(RendezvousError::Malformed)
        );
        let many = vec![
            Candidate::new("10.200.0.1:1".parse().unwrap(), CandidateKind::Host);
            MAX_CANDIDATES + 1
        ];
        assert_eq!(
            Message::Peer { candidates: many }.encode(&mut b),
            Err(RendezvousError::Malformed)
        );
        assert_eq!(
            Message::body_len([9, 0, 0]),
            Err(RendezvousError::UnknownType(9))
        );
        assert_eq!(
            Message::body_len([1, 0xff, 0xff]),
            Err(RendezvousError::Malformed)
        );
        // A count over the bound, an unknown family, bytes left over.
        assert_eq!(Message::decode(4, &[9]), Err(RendezvousError::Malformed));
        assert_eq!(
            Message::decode(4, &[1, 5, 0, 0, 0, 0, 0, 0]),
            Err(RendezvousError::Malformed)
        );
        assert_eq!(Message::decode(5, &[0]), Err(RendezvousError::Malformed));
        assert_eq!(Message::decode(2, &[0]), Err(RendezvousError::Malformed));
        assert_eq!(Message::decode(2, &[3, 1]), Err(RendezvousError::Truncated));
    }
}
