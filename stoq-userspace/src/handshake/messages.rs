//! Handshake messages: `type (u8) || length (u24) || body`, as in TLS 1.3.
//!
//! Every decoder is bounded: lengths are checked against the input, lists have caps, and a
//! message may not exceed [`MAX_MESSAGE_LEN`].

use super::batch::BatchProof;
use super::params::TransportParams;
use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::CipherSuite;
use crate::crypto::sig::SigAlg;

/// The largest handshake message accepted (a FALCON-1024 certificate chain fits easily).
pub const MAX_MESSAGE_LEN: usize = 16 * 1024;
/// Message header length.
pub const HEADER_LEN: usize = 4;
/// Most application protocols a client may offer (RFC 7301 sets no cap; 32 is generous).
pub const MAX_ALPN_PROTOCOLS: usize = 32;
/// The longest session ticket accepted (STOQ's own are under 100 bytes).
pub const MAX_TICKET_LEN: usize = 1024;
/// The length of a PSK binder.
pub const BINDER_LEN: usize = 32;

/// Message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    /// ClientHello.
    ClientHello = 1,
    /// ServerHello.
    ServerHello = 2,
    /// NewSessionTicket (after the handshake, in 1-RTT).
    NewSessionTicket = 4,
    /// EncryptedExtensions.
    EncryptedExtensions = 8,
    /// Certificate (or raw public key).
    Certificate = 11,
    /// CertificateVerify.
    CertificateVerify = 15,
    /// Finished.
    Finished = 20,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::ClientHello,
            2 => Self::ServerHello,
            4 => Self::NewSessionTicket,
            8 => Self::EncryptedExtensions,
            11 => Self::Certificate,
            15 => Self::CertificateVerify,
            20 => Self::Finished,
            _ => return None,
        })
    }
}

/// The client's first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// Protocol version.
    pub version: u32,
    /// 32 random bytes.
    pub random: [u8; 32],
    /// Offered suites, in preference order (unknown identifiers dropped).
    pub suites: Vec<CipherSuite>,
    /// Signature algorithms the client accepts.
    pub sig_algs: Vec<SigAlg>,
    /// Whether the client verifies batch signatures ([`super::batch`]) for them.
    pub batch_signatures: bool,
    /// X25519 public key and ML-KEM-768 encapsulation key.
    pub key_share: Vec<u8>,
    /// The server name the client expects (checked against certificates).
    pub server_name: String,
    /// The client's transport parameters.
    pub params: TransportParams,
    /// Application protocols offered (ALPN, RFC 7301), in the client's preference order:
    /// each 1 to 255 bytes, at most [`MAX_ALPN_PROTOCOLS`].
    pub alpn: Vec<Vec<u8>>,
    /// A session ticket offered for resumption, with its binder. Always the last field, so
    /// the binder covers every byte before it.
    pub psk: Option<PskOffer>,
}

/// A resumption offer: the ticket the server issued and the binder proving the client
/// holds its PSK (RFC 8446 §4.2.11, one identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PskOffer {
    /// The ticket, opaque to the client: 1 to [`MAX_TICKET_LEN`] bytes.
    pub ticket: Vec<u8>,
    /// Milliseconds since the client received the ticket, plus the ticket's `age_add`,
    /// modulo 2^32 (RFC 8446 §4.2.11.1): the server checks a 0-RTT flight's freshness.
    pub obfuscated_age: u32,
    /// The client sends early data (0-RTT) under this ticket (RFC 8446 §4.2.10).
    pub early_data: bool,
    /// HMAC over the ClientHello up to this field (see
    /// [`EarlySecret::binder`](super::schedule::EarlySecret::binder)).
    pub binder: [u8; BINDER_LEN],
}

/// A session ticket the server issues after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSessionTicket {
    /// Seconds the ticket may be used for.
    pub lifetime_s: u32,
    /// Makes this ticket's PSK differ from the connection's other tickets' (1 to 255 bytes).
    pub nonce: Vec<u8>,
    /// The ticket: 1 to [`MAX_TICKET_LEN`] bytes.
    pub ticket: Vec<u8>,
    /// Added to the ticket age the client reports (RFC 8446 §4.6.1).
    pub age_add: u32,
    /// Whether the server would accept early data (0-RTT) resuming this ticket.
    pub early_data: bool,
}

/// The server's answer, in the clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello {
    /// 32 random bytes.
    pub random: [u8; 32],
    /// The chosen suite.
    pub suite: CipherSuite,
    /// Every suite the server supports, so the client can detect a downgrade.
    pub server_suites: Vec<CipherSuite>,
    /// X25519 public key and ML-KEM-768 ciphertext.
    pub key_share: Vec<u8>,
    /// Whether the server accepted the client's resumption offer: the handshake then
    /// authenticates by the ticket's PSK, with no certificate and no signature.
    pub psk_accepted: bool,
}

/// The server's encrypted parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedExtensions {
    /// The server's transport parameters.
    pub params: TransportParams,
    /// Whether the client must authenticate.
    pub client_auth: bool,
    /// The application protocol the server selected from the client's offer (ALPN).
    pub alpn: Option<Vec<u8>>,
    /// The server accepted the client's early data (0-RTT).
    pub early_data: bool,
}

/// What a Certificate message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CredentialKind {
    /// A bare FALCON public key (pinned-key trust).
    RawPublicKey = 0,
    /// A STOQ certificate (CA trust) issued directly by a trust anchor.
    Certificate = 1,
    /// A STOQ certificate chain, leaf first, then intermediates
    /// ([`chain`](super::chain) encoding).
    CertificateChain = 2,
}

/// A Certificate message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateMsg {
    /// Raw key or certificate.
    pub kind: CredentialKind,
    /// The encoded key or certificate.
    pub data: Vec<u8>,
}

/// A signature over the transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateVerify {
    /// Signature algorithm.
    pub alg: SigAlg,
    /// `Some`: the signature covers a batch of transcripts ([`super::batch`]) and this is
    /// the proof that this transcript is in it (servers only, to clients that offered
    /// batch signatures). `None`: the signature covers this transcript alone.
    pub batch: Option<BatchProof>,
    /// The signature.
    pub signature: Vec<u8>,
}

/// A handshake message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// ClientHello.
    ClientHello(ClientHello),
    /// ServerHello.
    ServerHello(ServerHello),
    /// NewSessionTicket.
    NewSessionTicket(NewSessionTicket),
    /// EncryptedExtensions.
    EncryptedExtensions(EncryptedExtensions),
    /// Certificate.
    Certificate(CertificateMsg),
    /// CertificateVerify.
    CertificateVerify(CertificateVerify),
    /// Finished: HMAC-SHA256 over the transcript.
    Finished([u8; 32]),
}

/// A list of 2-byte suite ids. Unknown ids are dropped, so a list may decode empty; an
/// empty list is therefore accepted on the wire too (it re-encodes to itself), and the
/// handshake answers it with `NoCommonSuite` rather than a decode error.
/// A one-byte boolean: 0 or 1, anything else refused.
fn flag(r: &mut Reader<'_>, what: &'static str) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Invalid(what)),
    }
}

fn suites(r: &mut Reader<'_>) -> Result<Vec<CipherSuite>, DecodeError> {
    let raw = r.vec8()?;
    if raw.len() % 2 != 0 {
        return Err(DecodeError::Invalid("cipher suite list"));
    }
    Ok(raw
        .chunks_exact(2)
        .filter_map(|c| CipherSuite::from_id(u16::from_be_bytes([c[0], c[1]])))
        .collect())
}

/// An ALPN protocol list: `u16 length || (u8 length || name)*`, every name 1 to 255 bytes.
fn alpn_list(r: &mut Reader<'_>) -> Result<Vec<Vec<u8>>, DecodeError> {
    let mut list = Reader::new(r.vec16()?);
    let mut out = Vec::new();
    while list.remaining() > 0 {
        let name = list.vec8()?;
        if name.is_empty() {
            return Err(DecodeError::Invalid("empty ALPN protocol name"));
        }
        if out.len() == MAX_ALPN_PROTOCOLS {
            return Err(DecodeError::Invalid("too many ALPN protocols"));
        }
        out.push(name.to_vec());
    }
    Ok(out)
}

fn write_alpn_list(w: &mut Writer, list: &[Vec<u8>]) {
    let mut l = Writer::new();
    for p in list {
        l.vec8(p);
    }
    w.vec16(&l.buf);
}

fn write_suites(w: &mut Writer, s: &[CipherSuite]) {
    let raw: Vec<u8> = s.iter().flat_map(|s| s.id().to_be_bytes()).collect();
    w.vec8(&raw);
}

impl Message {
    /// The message type.
    pub fn kind(&self) -> MessageType {
        match self {
            Self::ClientHello(_) => MessageType::ClientHello,
            Self::ServerHello(_) => MessageType::ServerHello,
            Self::NewSessionTicket(_) => MessageType::NewSessionTicket,
            Self::EncryptedExtensions(_) => MessageType::EncryptedExtensions,
            Self::Certificate(_) => MessageType::Certificate,
            Self::CertificateVerify(_) => MessageType::CertificateVerify,
            Self::Finished(_) => MessageType::Finished,
        }
    }

    /// Encodes with the 4-byte header.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Writer::new();
        match self {
            Self::ClientHello(m) => {
                b.u32(m.version).bytes(&m.random);
                write_suites(&mut b, &m.suites);
                let algs: Vec<u8> = m
                    .sig_algs
                    .iter()
                    .flat_map(|a| a.id().to_be_bytes())
                    .collect();
                b.vec8(&algs)
                    .u8(u8::from(m.batch_signatures))
                    .vec16(&m.key_share)
                    .vec8(m.server_name.as_bytes());
                let mut p = Writer::new();
                m.params.encode(&mut p);
                b.vec16(&p.buf);
                write_alpn_list(&mut b, &m.alpn);
                match &m.psk {
                    None => {
                        b.u8(0);
                    }
                    Some(o) => {
                        b.u8(1)
                            .vec16(&o.ticket)
                            .u32(o.obfuscated_age)
                            .u8(u8::from(o.early_data))
                            .bytes(&o.binder);
                    }
                }
            }
            Self::ServerHello(m) => {
                b.bytes(&m.random).u16(m.suite.id());
                write_suites(&mut b, &m.server_suites);
                b.vec16(&m.key_share).u8(u8::from(m.psk_accepted));
            }
            Self::NewSessionTicket(m) => {
                b.u32(m.lifetime_s)
                    .vec8(&m.nonce)
                    .vec16(&m.ticket)
                    .u32(m.age_add)
                    .u8(u8::from(m.early_data));
            }
            Self::EncryptedExtensions(m) => {
                let mut p = Writer::new();
                m.params.encode(&mut p);
                b.vec16(&p.buf).u8(u8::from(m.client_auth));
                b.vec8(m.alpn.as_deref().unwrap_or_default());
                b.u8(u8::from(m.early_data));
            }
            Self::Certificate(m) => {
                b.u8(m.kind as u8).vec24(&m.data);
            }
            Self::CertificateVerify(m) => {
                b.u16(m.alg.id());
                match &m.batch {
                    None => {
                        b.u8(0);
                    }
                    Some(p) => {
                        b.u8(1);
                        p.encode(&mut b);
                    }
                }
                b.vec16(&m.signature);
            }
            Self::Finished(mac) => {
                b.bytes(mac);
            }
        }
        let mut w = Writer::new();
        w.u8(self.kind() as u8).vec24(&b.buf);
        w.buf
    }

    /// The length of the first complete message in `buf`, `Ok(None)` if more bytes are
    /// needed, or an error if its header announces more than [`MAX_MESSAGE_LEN`].
    pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]) as usize;
        if len > MAX_MESSAGE_LEN {
            return Err(DecodeError::Invalid("handshake message too long"));
        }
        Ok((buf.len() >= HEADER_LEN + len).then_some(HEADER_LEN + len))
    }

    /// Decodes one whole message (header included).
    ///
    /// # Errors
    /// [`DecodeError`] on any malformation, unknown type or trailing byte.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut outer = Reader::new(buf);
        let t = MessageType::from_u8(outer.u8()?).ok_or(DecodeError::Invalid("message type"))?;
        let body = outer.vec24()?;
        outer.finish()?;
        if body.len() > MAX_MESSAGE_LEN {
            return Err(DecodeError::Invalid("handshake message too long"));
        }
        let mut r = Reader::new(body);
        let m = match t {
            MessageType::ClientHello => {
                let version = r.u32()?;
                let random = r.array()?;
                let suites = suites(&mut r)?;
                let algs = r.vec8()?;
                // As with suites: unknown ids are dropped, so an empty list is valid.
                if algs.len() % 2 != 0 {
                    return Err(DecodeError::Invalid("signature algorithm list"));
                }
                let sig_algs = algs
                    .chunks_exact(2)
                    .filter_map(|c| SigAlg::from_id(u16::from_be_bytes([c[0], c[1]])))
                    .collect();
                let batch_signatures = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::Invalid("batch signatures flag")),
                };
                let key_share = r.vec16()?.to_vec();
                let name = r.vec8()?;
                let server_name = std::str::from_utf8(name)
                    .ok()
                    .filter(|s| s.bytes().all(|b| b.is_ascii_graphic()))
                    .ok_or(DecodeError::Invalid("server name"))?
                    .to_string();
                let params = TransportParams::decode(r.vec16()?)?;
                let alpn = alpn_list(&mut r)?;
                let psk = match r.u8()? {
                    0 => None,
                    1 => {
                        let ticket = r.vec16()?;
                        if ticket.is_empty() || ticket.len() > MAX_TICKET_LEN {
                            return Err(DecodeError::Invalid("session ticket length"));
                        }
                        let obfuscated_age = r.u32()?;
                        let early_data = flag(&mut r, "early_data flag")?;
                        Some(PskOffer {
                            ticket: ticket.to_vec(),
                            obfuscated_age,
                            early_data,
                            binder: r.array()?,
                        })
                    }
                    _ => return Err(DecodeError::Invalid("psk flag")),
                };
                Self::ClientHello(ClientHello {
                    psk,
                    version,
                    random,
                    suites,
                    sig_algs,
                    batch_signatures,
                    key_share,
                    server_name,
                    params,
                    alpn,
                })
            }
            MessageType::ServerHello => {
                let random = r.array()?;
                let suite =
                    CipherSuite::from_id(r.u16()?).ok_or(DecodeError::Invalid("cipher suite"))?;
                let server_suites = suites(&mut r)?;
                let key_share = r.vec16()?.to_vec();
                let psk_accepted = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::Invalid("psk_accepted flag")),
                };
                Self::ServerHello(ServerHello {
                    random,
                    suite,
                    server_suites,
                    key_share,
                    psk_accepted,
                })
            }
            MessageType::NewSessionTicket => {
                let lifetime_s = r.u32()?;
                let nonce = r.vec8()?;
                let ticket = r.vec16()?;
                if nonce.is_empty() {
                    return Err(DecodeError::Invalid("empty ticket nonce"));
                }
                if ticket.is_empty() || ticket.len() > MAX_TICKET_LEN {
                    return Err(DecodeError::Invalid("session ticket length"));
                }
                let age_add = r.u32()?;
                let early_data = flag(&mut r, "early_data flag")?;
                Self::NewSessionTicket(NewSessionTicket {
                    lifetime_s,
                    nonce: nonce.to_vec(),
                    ticket: ticket.to_vec(),
                    age_add,
                    early_data,
                })
            }
            MessageType::EncryptedExtensions => {
                let params = TransportParams::decode(r.vec16()?)?;
                let client_auth = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::Invalid("client_auth flag")),
                };
                // Empty: no protocol selected (names are never empty).
                let alpn = Some(r.vec8()?)
                    .filter(|a| !a.is_empty())
                    .map(<[u8]>::to_vec);
                let early_data = flag(&mut r, "early_data flag")?;
                Self::EncryptedExtensions(EncryptedExtensions {
                    params,
                    client_auth,
                    alpn,
                    early_data,
                })
            }
            MessageType::Certificate => {
                let kind = match r.u8()? {
                    0 => CredentialKind::RawPublicKey,
                    1 => CredentialKind::Certificate,
                    2 => CredentialKind::CertificateChain,
                    _ => return Err(DecodeError::Invalid("credential kind")),
                };
                Self::Certificate(CertificateMsg {
                    kind,
                    data: r.vec24()?.to_vec(),
                })
            }
            MessageType::CertificateVerify => {
                let alg =
                    SigAlg::from_id(r.u16()?).ok_or(DecodeError::Invalid("signature algorithm"))?;
                let batch = match r.u8()? {
                    0 => None,
                    1 => Some(BatchProof::decode(&mut r)?),
                    _ => return Err(DecodeError::Invalid("signature mode")),
                };
                Self::CertificateVerify(CertificateVerify {
                    alg,
                    batch,
                    signature: r.vec16()?.to_vec(),
                })
            }
            MessageType::Finished => Self::Finished(r.array()?),
        };
        r.finish()?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn samples() -> Vec<Message> {
        vec![
            Message::ClientHello(ClientHello {
                alpn: vec![b"h3".to_vec(), b"stoq/1".to_vec()],
                version: stoq_common::wire::stoq::VERSION_1,
                random: [1; 32],
                suites: vec![CipherSuite::Aes256Gcm, CipherSuite::ChaCha20Poly1305],
                sig_algs: vec![SigAlg::Falcon512, SigAlg::Falcon1024],
                batch_signatures: true,
                key_share: vec![7; 1216],
                server_name: "stoq.example".into(),
                params: TransportParams::default(),
                psk: None,
            }),
            Message::ClientHello(ClientHello {
                alpn: Vec::new(),
                version: stoq_common::wire::stoq::VERSION_1,
                random: [9; 32],
                suites: vec![CipherSuite::Aes256Gcm],
                sig_algs: vec![SigAlg::Falcon512],
                batch_signatures: false,
                key_share: vec![7; 1216],
                server_name: "stoq.example".into(),
                params: TransportParams::default(),
                psk: Some(PskOffer {
                    ticket: vec![6; 93],
                    obfuscated_age: 0xdead_beef,
                    early_data: true,
                    binder: [5; BINDER_LEN],
                }),
            }),
            Message::ServerHello(ServerHello {
                random: [2; 32],
                suite: CipherSuite::ChaCha20Poly1305,
                server_suites: vec![CipherSuite::ChaCha20Poly1305],
                key_share: vec![8; 1120],
                psk_accepted: true,
            }),
            Message::NewSessionTicket(NewSessionTicket {
                lifetime_s: 86_400,
                nonce: vec![1],
                ticket: vec![4; 93],
                age_add: 77,
                early_data: true,
            }),
            Message::EncryptedExtensions(EncryptedExtensions {
                alpn: Some(b"stoq/1".to_vec()),
                params: TransportParams::default(),
                client_auth: true,
                early_data: false,
            }),
            Message::Certificate(CertificateMsg {
                kind: CredentialKind::Certificate,
                data: vec![3; 2000],
            }),
            Message::CertificateVerify(CertificateVerify {
                alg: SigAlg::Falcon512,
                batch: None,
                signature: vec![4; 666],
            }),
            Message::CertificateVerify(CertificateVerify {
                alg: SigAlg::Falcon1024,
                batch: Some(BatchProof {
                    salt: [6; 32],
                    index: 2,
                    path: vec![[1; 32], [2; 32]],
                }),
                signature: vec![4; 1280],
            }),
            Message::Finished([5; 32]),
        ]
    }

    /// Found by the `handshake_messages` fuzzer: a ClientHello offering only unknown suite
    /// and signature ids decoded to empty lists, which then did not re-encode to something
    /// that decodes. Unknown ids are dropped and empty lists are valid, so the round trip
    /// holds, and the handshake answers with `NoCommonSuite`.
    #[test]
    fn lists_of_only_unknown_ids_round_trip() {
        let Some(Message::ClientHello(mut m)) = samples().into_iter().next() else {
            unreachable!("the first sample is a ClientHello")
        };
        m.suites.clear();
        m.sig_algs.clear();
        let enc = Message::ClientHello(m.clone()).encode();
        assert_eq!(Message::decode(&enc), Ok(Message::ClientHello(m)));
        // On the wire: one unknown suite id (0x7777) and one unknown signature id.
        let mut raw = enc.clone();
        let at = 4 + 4 + 32; // header, version, random
        raw.splice(at..at + 1, [2, 0x77, 0x77]);
        raw.splice(at + 3..at + 4, [2, 0x66, 0x66]);
        let len = (raw.len() - 4) as u32;
        raw[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
        let Ok(Message::ClientHello(d)) = Message::decode(&raw) else {
            panic!("decodes");
        };
        assert!(d.suites.is_empty() && d.sig_algs.is_empty());
        let again = Message::ClientHello(d.clone()).encode();
        assert_eq!(Message::decode(&again), Ok(Message::ClientHello(d)));
    }

    #[test]
    fn round_trip_every_message() {
        for m in samples() {
            let enc = m.encode();
            assert_eq!(Message::frame_len(&enc), Ok(Some(enc.len())));
            assert_eq!(Message::frame_len(&enc[..enc.len() - 1]), Ok(None));
            assert_eq!(Message::decode(&enc).as_ref(), Ok(&m));
            // Every truncation and one trailing byte are refused.
            for n in 0..enc.len() {
                assert!(
                    Message::decode(&enc[..n]).is_err(),
                    "{:?} cut to {n}",
                    m.kind()
                );
            }
            let mut long = enc.clone();
            long.push(0);
            assert!(Message::decode(&long).is_err());
        }
        assert!(Message::frame_len(&[1, 0xff, 0xff, 0xff]).is_err());
        assert!(Message::decode(&[99, 0, 0, 0]).is_err());
    }
}
