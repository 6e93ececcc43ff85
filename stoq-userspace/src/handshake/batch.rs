//! Batch signing: one FALCON signature authenticates the transcripts of several
//! handshakes waiting on one worker.
//!
//! The design follows the IETF TLS batch-signing draft (draft-ietf-tls-batch-signing,
//! D. Benjamin): the transcript hashes of the waiting handshakes are the leaves of a
//! Merkle tree, the server signs the tree's root once, and each client receives its
//! leaf's index, its salt and the authentication path (the sibling of each node on the
//! way from its leaf to the root). A client recomputes the root from its own transcript
//! hash and verifies the one signature. Every hash is domain-separated and bound to the
//! signing key, its kind (leaf, node, padding), its level and its index:
//!
//! ```text
//! leaf(i)       = SHA-256(0x00 || "STOQ batch v1" || key_id || i (u32) || salt (32) || transcript hash)
//! node(l, i)    = SHA-256(0x01 || "STOQ batch v1" || key_id || l (u8) || i (u32) || left || right)
//! pad(l, i)     = SHA-256(0x02 || "STOQ batch v1" || key_id || l (u8) || i (u32))
//! signed        = FALCON-sign("STOQ server batch CertificateVerify",
//!                             "STOQ batch root v1" || depth (u8) || node(depth, 0))
//! key_id        = SHA-256(the server's encoded FALCON public key)
//! ```
//!
//! A tree of `n` leaves has depth `ceil(log2 n)`; a node missing at the right edge of a
//! level is `pad(l, i)`. Each leaf has a fresh random 32-byte salt, so the sibling hashes
//! a client receives are uniformly random to it and reveal nothing about the other
//! handshakes of its batch. `docs/security.md` states what this proves and where it
//! differs from the draft.

use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::sig::{SigError, SigningKey, VerifyingKey};

/// The signature context of a batch root (a direct CertificateVerify has its own).
pub(crate) const BATCH_CONTEXT: &[u8] = b"STOQ server batch CertificateVerify";
/// Label of every tree hash.
const LABEL: &[u8] = b"STOQ batch v1";
/// Label of the signed root.
const ROOT_LABEL: &[u8] = b"STOQ batch root v1";
/// The most leaves one signature covers; more waiting handshakes make more batches.
pub const MAX_BATCH: usize = 64;
/// The longest authentication path a client accepts (a tree of 2^16 leaves): it bounds the
/// verifier's work whatever a server sends.
pub const MAX_DEPTH: usize = 16;

/// A leaf's proof of membership in a signed batch: what a client needs, besides its own
/// transcript hash, to recompute the signed root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchProof {
    /// The leaf's random salt.
    pub salt: [u8; 32],
    /// The leaf's position (its bits, lowest first, say on which side each path node sits).
    pub index: u32,
    /// The sibling hashes from the leaf up to the root, at most [`MAX_DEPTH`].
    pub path: Vec<[u8; 32]>,
}

impl BatchProof {
    /// Appends the wire form: `salt (32) || index (u32) || path length (u8) || path`.
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.bytes(&self.salt).u32(self.index);
        // At most MAX_DEPTH nodes: `decode` refuses more, and the signer never makes them.
        w.u8(self.path.len() as u8);
        for n in &self.path {
            w.bytes(n);
        }
    }

    /// Reads the wire form.
    ///
    /// # Errors
    /// A truncated proof, or a path longer than [`MAX_DEPTH`] or with an index that does not
    /// fit in it.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let salt = r.array()?;
        let index = r.u32()?;
        let depth = usize::from(r.u8()?);
        if depth > MAX_DEPTH {
            return Err(DecodeError::Invalid("batch path longer than 16 nodes"));
        }
        if u64::from(index) >> depth != 0 {
            return Err(DecodeError::Invalid("batch index outside its tree"));
        }
        let mut path = Vec::with_capacity(depth);
        for _ in 0..depth {
            path.push(r.array()?);
        }
        Ok(Self { salt, index, path })
    }
}

/// The identifier every tree hash binds: SHA-256 of the signer's encoded public key.
pub fn key_id(public: &VerifyingKey) -> [u8; 32] {
    public.key_id()
}

fn tagged(kind: u8, key_id: &[u8; 32]) -> Sha256 {
    let mut h = Sha256::new();
    h.update([kind]);
    h.update(LABEL);
    h.update(key_id);
    h
}

fn leaf(key_id: &[u8; 32], index: u32, salt: &[u8; 32], msg: &[u8; 32]) -> [u8; 32] {
    let mut h = tagged(0, key_id);
    h.update(index.to_be_bytes());
    h.update(salt);
    h.update(msg);
    h.finalize().into()
}

fn node(key_id: &[u8; 32], level: u8, index: u32, left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = tagged(1, key_id);
    h.update([level]);
    h.update(index.to_be_bytes());
    h.update(left);
    h.update(right);
    h.finalize().into()
}

fn pad(key_id: &[u8; 32], level: u8, index: u32) -> [u8; 32] {
    let mut h = tagged(2, key_id);
    h.update([level]);
    h.update(index.to_be_bytes());
    h.finalize().into()
}

/// The bytes the base signature covers for a tree of `depth` with `root`.
fn root_message(depth: usize, root: &[u8; 32]) -> [u8; ROOT_LABEL.len() + 33] {
    let mut m = [0u8; ROOT_LABEL.len() + 33];
    m[..ROOT_LABEL.len()].copy_from_slice(ROOT_LABEL);
    // depth <= MAX_DEPTH (16).
    m[ROOT_LABEL.len()] = depth as u8;
    m[ROOT_LABEL.len() + 1..].copy_from_slice(root);
    m
}

/// The depth of a tree of `n` leaves (`ceil(log2 n)`).
fn depth_for(n: usize) -> usize {
    n.next_power_of_two().trailing_zeros() as usize
}

/// Signs `messages` (1 to [`MAX_BATCH`] transcript hashes) with one signature: the base
/// signature and each message's proof, in order.
///
/// # Panics
/// If `messages` is empty or holds more than [`MAX_BATCH`]: the caller splits batches.
pub fn sign(
    key: &SigningKey,
    public: &VerifyingKey,
    messages: &[[u8; 32]],
    rng: &mut impl CryptoRngCore,
) -> (Vec<u8>, Vec<BatchProof>) {
    assert!(
        (1..=MAX_BATCH).contains(&messages.len()),
        "a batch holds 1 to {MAX_BATCH} messages"
    );
    let id = key_id(public);
    let depth = depth_for(messages.len());
    let mut salts = Vec::with_capacity(messages.len());
    let mut levels: Vec<Vec<[u8; 32]>> = Vec::with_capacity(depth + 1);
    let mut level = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let mut salt = [0u8; 32];
        rng.fill_bytes(&mut salt);
        // i < MAX_BATCH.
        level.push(leaf(&id, i as u32, &salt, m));
        salts.push(salt);
    }
    levels.push(level);
    for l in 0..depth {
        let below = &levels[l];
        let up = (l + 1) as u8;
        let next: Vec<[u8; 32]> = (0..below.len().div_ceil(2))
            .map(|i| {
                let right = below
                    .get(2 * i + 1)
                    .copied()
                    .unwrap_or_else(|| pad(&id, l as u8, (2 * i + 1) as u32));
                node(&id, up, i as u32, &below[2 * i], &right)
            })
            .collect();
        levels.push(next);
    }
    let root = levels[depth][0];
    let signature = key.sign(BATCH_CONTEXT, &root_message(depth, &root), rng);
    let proofs = salts
        .into_iter()
        .enumerate()
        .map(|(j, salt)| {
            let path = (0..depth)
                .map(|l| {
                    let sib = (j >> l) ^ 1;
                    levels[l]
                        .get(sib)
                        .copied()
                        .unwrap_or_else(|| pad(&id, l as u8, sib as u32))
                })
                .collect();
            BatchProof {
                salt,
                index: j as u32,
                path,
            }
        })
        .collect();
    (signature, proofs)
}

/// The message the base signature must cover for `msg` (this handshake's transcript hash)
/// under `proof`: verify the signature over it with [`BATCH_CONTEXT`].
pub(crate) fn signed_message(
    public: &VerifyingKey,
    msg: &[u8; 32],
    proof: &BatchProof,
) -> [u8; ROOT_LABEL.len() + 33] {
    let id = key_id(public);
    let depth = proof.path.len().min(MAX_DEPTH);
    let mut h = leaf(&id, proof.index, &proof.salt, msg);
    for (l, sib) in proof.path.iter().take(depth).enumerate() {
        let idx = u64::from(proof.index) >> l;
        // idx >> 1 < 2^31: the index is a u32.
        let parent = (idx >> 1) as u32;
        let up = (l + 1) as u8;
        h = if idx & 1 == 0 {
            node(&id, up, parent, &h, sib)
        } else {
            node(&id, up, parent, sib, &h)
        };
    }
    root_message(depth, &h)
}

/// Verifies `signature` with `proof` for `msg`.
///
/// # Errors
/// [`SigError::BadSignature`] when the path does not lead to a root the signature covers.
pub fn verify(
    public: &VerifyingKey,
    msg: &[u8; 32],
    proof: &BatchProof,
    signature: &[u8],
) -> Result<(), SigError> {
    if u64::from(proof.index) >> proof.path.len().min(MAX_DEPTH) != 0 {
        return Err(SigError::BadSignature);
    }
    let m = signed_message(public, msg, proof);
    public
        .verify(BATCH_CONTEXT, &m, signature)
        .map_err(|_| SigError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::sig::SigAlg;
    use rand_core::OsRng;

    fn msgs(n: usize) -> Vec<[u8; 32]> {
        (0..n).map(|i| Sha256::digest([i as u8]).into()).collect()
    }

    #[test]
    fn every_proof_verifies_its_own_transcript_only() {
        let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
        for n in [1, 2, 3, 5, 8, 13] {
            let m = msgs(n);
            let (sig, proofs) = sign(&key, &public, &m, &mut OsRng);
            assert_eq!(proofs.len(), n);
            for (j, p) in proofs.iter().enumerate() {
                assert_eq!(p.path.len(), depth_for(n));
                assert_eq!(
                    verify(&public, &m[j], p, &sig),
                    Ok(()),
                    "{n} leaves, leaf {j}"
                );
                // Another handshake's transcript, with this leaf's proof: refused.
                for (k, other) in m.iter().enumerate() {
                    if k != j {
                        assert_eq!(
                            verify(&public, other, p, &sig),
                            Err(SigError::BadSignature),
                            "{n}: {j} vs {k}"
                        );
                    }
                }
                // A transcript from no batch at all.
                assert_eq!(
                    verify(&public, &[0xee; 32], p, &sig),
                    Err(SigError::BadSignature)
                );
            }
        }
    }

    #[test]
    fn a_proof_altered_in_any_field_is_refused() {
        let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
        let m = msgs(6);
        let (sig, proofs) = sign(&key, &public, &m, &mut OsRng);
        let p = &proofs[3];
        let mut q = p.clone();
        q.salt[0] ^= 1;
        assert_eq!(
            verify(&public, &m[3], &q, &sig),
            Err(SigError::BadSignature)
        );
        for index in [2, 7, 3 | 8, u32::MAX] {
            let mut q = p.clone();
            q.index = index;
            assert_eq!(
                verify(&public, &m[3], &q, &sig),
                Err(SigError::BadSignature),
                "index {index}"
            );
        }
        for l in 0..p.path.len() {
            let mut q = p.clone();
            q.path[l][31] ^= 0x80;
            assert_eq!(
                verify(&public, &m[3], &q, &sig),
                Err(SigError::BadSignature),
                "node {l}"
            );
        }
        // A shorter or longer path: another depth, another root.
        let mut q = p.clone();
        q.path.pop();
        assert_eq!(
            verify(&public, &m[3], &q, &sig),
            Err(SigError::BadSignature)
        );
        let mut q = p.clone();
        q.path.push([0; 32]);
        assert_eq!(
            verify(&public, &m[3], &q, &sig),
            Err(SigError::BadSignature)
        );
        // Another key's signature over the same tree shape.
        let (key2, public2) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
        let (sig2, _) = sign(&key2, &public2, &m, &mut OsRng);
        assert_eq!(
            verify(&public, &m[3], p, &sig2),
            Err(SigError::BadSignature)
        );
        assert_eq!(
            verify(&public2, &m[3], p, &sig),
            Err(SigError::BadSignature)
        );
    }

    #[test]
    fn a_batch_root_is_not_a_direct_signature_and_back() {
        // The two contexts differ: a batch root signature never verifies as a direct
        // CertificateVerify over the same bytes, nor a direct one as a batch root.
        let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
        let m = msgs(1);
        let (sig, proofs) = sign(&key, &public, &m, &mut OsRng);
        let signed = signed_message(&public, &m[0], &proofs[0]);
        assert!(public.verify(BATCH_CONTEXT, &signed, &sig).is_ok());
        assert!(
            public
                .verify(b"STOQ server CertificateVerify", &signed, &sig)
                .is_err()
        );
    }

    #[test]
    fn proofs_round_trip_and_hostile_ones_are_refused() {
        let p = BatchProof {
            salt: [7; 32],
            index: 5,
            path: vec![[1; 32], [2; 32], [3; 32]],
        };
        let mut w = Writer::new();
        p.encode(&mut w);
        let mut r = Reader::new(&w.buf);
        assert_eq!(BatchProof::decode(&mut r), Ok(p));
        r.finish().unwrap();
        // Index 8 in a tree of depth 3.
        let mut bad = w.buf.clone();
        bad[35] = 8;
        assert!(BatchProof::decode(&mut Reader::new(&bad)).is_err());
        // A path of 17 nodes.
        let mut long = vec![0u8; 36];
        long.push(17);
        long.extend(std::iter::repeat_n(0u8, 17 * 32));
        assert!(BatchProof::decode(&mut Reader::new(&long)).is_err());
        // Truncated.
        assert!(BatchProof::decode(&mut Reader::new(&w.buf[..w.buf.len() - 1])).is_err());
    }
}
