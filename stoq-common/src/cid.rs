//! Connection IDs and their QUIC-LB plaintext layout.
//!
//! Every connection ID that a STOQ endpoint issues has the same, configured length, so that
//! short-header packets (which carry no CID length) can be parsed and steered by the XDP
//! program without state. The layout follows the plaintext algorithm of
//! draft-ietf-quic-load-balancers:
//!
//! ```text
//! +--------+----------------------+-----------+--------------------+
//! | first  | server id            | worker id | nonce              |
//! | octet  | (server_id_len B)    | (1 B)     | (>= 4 B)           |
//! +--------+----------------------+-----------+--------------------+
//!  first octet = config rotation (3 bits) | CID length - 1 (5 bits)
//! ```
//!
//! The length self-description in the first octet lets the classifier reject short-header
//! packets whose CID was not issued under the current layout.

use core::fmt;

/// Largest connection-ID length (RFC 9000 §17.2).
pub const MAX_CID_LEN: usize = 20;
/// Smallest length STOQ issues: the client's first DCID must be at least 8 bytes
/// (RFC 9000 §7.2), and the same bound keeps nonces unguessable.
pub const MIN_CID_LEN: usize = 8;
/// Smallest nonce (QUIC-LB requires at least 4 octets).
pub const MIN_NONCE_LEN: usize = 4;
/// Config-rotation value that QUIC-LB reserves for "not routable by the load balancer".
pub const UNROUTABLE_ROTATION: u8 = 0b111;

/// Why a [`CidLayout`] or [`ConnectionId`] was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CidError {
    /// The CID length is outside `MIN_CID_LEN..=MAX_CID_LEN`.
    BadLength(usize),
    /// The server id length leaves less than `MIN_NONCE_LEN` bytes of nonce, or is zero.
    BadServerIdLength(usize),
    /// The server id does not fit in the configured number of bytes.
    ServerIdTooLarge,
    /// The config rotation value does not fit in 3 bits.
    BadRotation(u8),
    /// The nonce has the wrong length for this layout.
    BadNonceLength(usize),
}

impl fmt::Display for CidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadLength(l) => write!(
                f,
                "connection ID length {l} is outside {MIN_CID_LEN}..={MAX_CID_LEN}; pick a length in that range"
            ),
            Self::BadServerIdLength(l) => write!(
                f,
                "server id length {l} must be at least 1 and leave {MIN_NONCE_LEN} bytes of nonce; shorten it or lengthen the CID"
            ),
            Self::ServerIdTooLarge => {
                f.write_str("server id does not fit in the configured server id length")
            }
            Self::BadRotation(r) => write!(f, "config rotation {r} does not fit in 3 bits (0..=6)"),
            Self::BadNonceLength(l) => write!(f, "nonce of {l} bytes does not match the layout"),
        }
    }
}

impl core::error::Error for CidError {}

/// The fixed layout of every CID this endpoint issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidLayout {
    len: u8,
    server_id_len: u8,
}

impl CidLayout {
    /// The default: 12-byte CIDs with a 2-byte server id, 1-byte worker id, 8-byte nonce.
    pub const DEFAULT: Self = Self {
        len: 12,
        server_id_len: 2,
    };

    /// Builds and validates a layout.
    pub const fn new(len: usize, server_id_len: usize) -> Result<Self, CidError> {
        if len < MIN_CID_LEN || len > MAX_CID_LEN {
            return Err(CidError::BadLength(len));
        }
        if server_id_len == 0 || 1 + server_id_len + 1 + MIN_NONCE_LEN > len {
            return Err(CidError::BadServerIdLength(server_id_len));
        }
        Ok(Self {
            len: len as u8,
            server_id_len: server_id_len as u8,
        })
    }

    /// Total CID length.
    pub const fn len(&self) -> usize {
        self.len as usize
    }

    /// Always false: a layout has at least `MIN_CID_LEN` bytes.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Server id length in bytes.
    pub const fn server_id_len(&self) -> usize {
        self.server_id_len as usize
    }

    /// Offset of the worker id byte inside the CID.
    pub const fn worker_offset(&self) -> usize {
        1 + self.server_id_len as usize
    }

    /// Nonce length in bytes.
    pub const fn nonce_len(&self) -> usize {
        self.len as usize - self.worker_offset() - 1
    }

    /// The first octet for a given config rotation: rotation in the top 3 bits, length - 1
    /// in the low 5.
    pub const fn first_octet(&self, rotation: u8) -> u8 {
        (rotation << 5) | (self.len - 1)
    }

    /// Whether `first` self-describes this layout's length.
    pub const fn matches_first_octet(&self, first: u8) -> bool {
        (first & 0x1f) + 1 == self.len
    }

    /// Builds a CID: first octet, big-endian server id, worker id, then `nonce`, which must be
    /// exactly [`nonce_len`](Self::nonce_len) bytes (from a CSPRNG, supplied by the caller).
    pub fn build(
        &self,
        rotation: u8,
        server_id: u64,
        worker_id: u8,
        nonce: &[u8],
    ) -> Result<ConnectionId, CidError> {
        if rotation >= UNROUTABLE_ROTATION {
            return Err(CidError::BadRotation(rotation));
        }
        let sl = self.server_id_len();
        if sl < 8 && server_id >> (8 * sl) != 0 {
            return Err(CidError::ServerIdTooLarge);
        }
        if nonce.len() != self.nonce_len() {
            return Err(CidError::BadNonceLength(nonce.len()));
        }
        let mut b = [0u8; MAX_CID_LEN];
        b[0] = self.first_octet(rotation);
        let sid = server_id.to_be_bytes();
        let sl_eff = sl.min(8);
        b[1 + sl - sl_eff..1 + sl].copy_from_slice(&sid[8 - sl_eff..]);
        b[self.worker_offset()] = worker_id;
        b[self.worker_offset() + 1..self.len()].copy_from_slice(nonce);
        Ok(ConnectionId {
            bytes: b,
            len: self.len,
        })
    }

    /// The worker id inside `cid`, if `cid` follows this layout.
    pub fn worker_id(&self, cid: &ConnectionId) -> Option<u8> {
        let b = cid.as_bytes();
        (b.len() == self.len() && self.matches_first_octet(b[0])).then(|| b[self.worker_offset()])
    }

    /// The server id inside `cid`, if `cid` follows this layout (ids over 8 bytes are
    /// truncated to their low 8 bytes).
    pub fn server_id(&self, cid: &ConnectionId) -> Option<u64> {
        let b = cid.as_bytes();
        if b.len() != self.len() || !self.matches_first_octet(b[0]) {
            return None;
        }
        Some(
            b[1..self.worker_offset()]
                .iter()
                .fold(0u64, |a, x| (a << 8) | u64::from(*x)),
        )
    }
}

impl Default for CidLayout {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A connection ID of 0 to 20 bytes, stored inline.
///
/// Equality, ordering and hashing agree with those of [`as_bytes`](Self::as_bytes) (the
/// bytes past `len` are always zero, so the derived comparisons of the whole array match
/// the slice's), so a map keyed by `ConnectionId` can be searched with the `&[u8]` of a
/// packet's header ([`Borrow<[u8]>`](core::borrow::Borrow)), without copying it out first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnectionId {
    bytes: [u8; MAX_CID_LEN],
    len: u8,
}

impl ConnectionId {
    /// The empty connection ID.
    pub const EMPTY: Self = Self {
        bytes: [0; MAX_CID_LEN],
        len: 0,
    };

    /// Copies a CID from a slice of at most 20 bytes.
    pub fn from_slice(s: &[u8]) -> Result<Self, CidError> {
        if s.len() > MAX_CID_LEN {
            return Err(CidError::BadLength(s.len()));
        }
        let mut bytes = [0; MAX_CID_LEN];
        bytes[..s.len()].copy_from_slice(s);
        Ok(Self {
            bytes,
            len: s.len() as u8,
        })
    }

    /// The CID bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Length in bytes.
    pub const fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the CID is empty.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl core::hash::Hash for ConnectionId {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        // As `[u8]` hashes, which `Borrow<[u8]>` requires.
        self.as_bytes().hash(state);
    }
}

impl core::borrow::Borrow<[u8]> for ConnectionId {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// draft-ietf-quic-load-balancers-21, Appendix B, "Unencrypted CIDs": config rotation
    /// 0, server ID c4605e, nonce 4504cc4f, CID 07c4605e4504cc4f. STOQ's server id and
    /// worker id together are QUIC-LB's server ID. (The draft's second vector, CID
    /// 20a350d28b4203487d970b, is misprinted: its 11 octets cannot hold a first octet, the
    /// 5-octet server ID 350d28b420 and the 9-digit nonce 3487d970b it lists.)
    #[test]
    fn the_drafts_unencrypted_vector() {
        let l = CidLayout::new(8, 2).unwrap();
        let cid = l.build(0, 0xc460, 0x5e, &[0x45, 0x04, 0xcc, 0x4f]).unwrap();
        assert_eq!(
            cid.as_bytes(),
            &[0x07, 0xc4, 0x60, 0x5e, 0x45, 0x04, 0xcc, 0x4f]
        );
        assert_eq!(l.server_id(&cid), Some(0xc460));
        assert_eq!(l.worker_id(&cid), Some(0x5e));
    }

    #[test]
    fn layout_round_trip() {
        let l = CidLayout::new(12, 2).unwrap();
        assert_eq!((l.worker_offset(), l.nonce_len()), (3, 8));
        let cid = l.build(1, 0xbeef, 7, &[9; 8]).unwrap();
        assert_eq!(cid.as_bytes()[..4], [0x20 | 11, 0xbe, 0xef, 7]);
        assert_eq!(l.worker_id(&cid), Some(7));
        assert_eq!(l.server_id(&cid), Some(0xbeef));
        assert_eq!(CidLayout::new(13, 2).unwrap().worker_id(&cid), None);
    }

    #[test]
    fn compares_and_hashes_as_its_bytes() {
        use core::borrow::Borrow;
        use core::hash::{BuildHasher, BuildHasherDefault, Hasher};
        // A tiny FNV so the test needs no std hasher.
        #[derive(Default)]
        struct Fnv(u64);
        impl Hasher for Fnv {
            fn finish(&self) -> u64 {
                self.0
            }
            fn write(&mut self, b: &[u8]) {
                for x in b {
                    self.0 = (self.0 ^ u64::from(*x)).wrapping_mul(0x100_0000_01b3);
                }
            }
        }
        let h = BuildHasherDefault::<Fnv>::default();
        let cases: [&[u8]; 5] = [&[], &[0], &[0, 0], &[1, 2, 3], &[0xff; 20]];
        for a in cases {
            let ca = ConnectionId::from_slice(a).unwrap();
            let borrowed: &[u8] = ca.borrow();
            assert_eq!(borrowed, a);
            assert_eq!(h.hash_one(ca), h.hash_one(a), "{a:?}");
            for b in cases {
                let cb = ConnectionId::from_slice(b).unwrap();
                assert_eq!(ca == cb, a == b, "{a:?} {b:?}");
                assert_eq!(ca.cmp(&cb), a.cmp(b), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn layout_errors() {
        assert_eq!(CidLayout::new(7, 1), Err(CidError::BadLength(7)));
        assert_eq!(CidLayout::new(21, 1), Err(CidError::BadLength(21)));
        assert_eq!(CidLayout::new(8, 3), Err(CidError::BadServerIdLength(3)));
        assert_eq!(CidLayout::new(8, 0), Err(CidError::BadServerIdLength(0)));
        let l = CidLayout::DEFAULT;
        assert_eq!(l.build(7, 1, 0, &[0; 8]), Err(CidError::BadRotation(7)));
        assert_eq!(
            l.build(0, 0x1_0000, 0, &[0; 8]),
            Err(CidError::ServerIdTooLarge)
        );
        assert_eq!(l.build(0, 1, 0, &[0; 7]), Err(CidError::BadNonceLength(7)));
        assert_eq!(
            ConnectionId::from_slice(&[0; 21]),
            Err(CidError::BadLength(21))
        );
        // Every valid layout's first octet describes its own length.
        for len in MIN_CID_LEN..=MAX_CID_LEN {
            let l = CidLayout::new(len, 1).unwrap();
            assert!(l.matches_first_octet(l.first_octet(3)));
        }
    }
}
