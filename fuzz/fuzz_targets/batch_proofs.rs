//! Batch-signature proofs on arbitrary bytes: a CertificateVerify body decoded (no panic,
//! bounded work: at most 16 path nodes), and every proof the fuzzer makes, or derives
//! from a real batch by changing any bit, checked against a real batch signature. Only
//! the exact proof of a leaf verifies, and only for that leaf's transcript: a path for
//! one transcript never verifies for another.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rand_core::OsRng;
use stoq::crypto::sig::{SigAlg, SigningKey, VerifyingKey};
use stoq::handshake::Credential;
use stoq::handshake::batch::{self, BatchProof};
use stoq::handshake::messages::Message;

struct Batch {
    public: VerifyingKey,
    transcripts: Vec<[u8; 32]>,
    signature: Vec<u8>,
    proofs: Vec<BatchProof>,
}

fn batch() -> &'static Batch {
    static B: OnceLock<Batch> = OnceLock::new();
    B.get_or_init(|| {
        let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
        let cred = Credential::RawKey {
            key,
            public: public.clone(),
        };
        let transcripts: Vec<[u8; 32]> = (0..5u8).map(|i| [i; 32]).collect();
        let (signature, proofs) = cred.sign_batch(&transcripts, &mut OsRng);
        Batch {
            public,
            transcripts,
            signature,
            proofs,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let b = batch();
    // 1. The bytes as a CertificateVerify body.
    let mut msg = vec![15u8];
    msg.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(data);
    if let Ok(Message::CertificateVerify(cv)) = Message::decode(&msg)
        && let Some(p) = &cv.batch
    {
        assert!(p.path.len() <= batch::MAX_DEPTH);
        for (j, t) in b.transcripts.iter().enumerate() {
            let ok = batch::verify(&b.public, t, p, &b.signature).is_ok();
            assert!(!ok || *p == b.proofs[j], "a forged proof verified");
        }
    }
    // 2. A real proof with fuzzer-chosen changes, for a fuzzer-chosen transcript.
    let [leaf, which, flip, rest @ ..] = data else {
        return;
    };
    let j = usize::from(*leaf) % b.proofs.len();
    let mut p = b.proofs[j].clone();
    match which % 4 {
        0 => p.salt[usize::from(*flip) % 32] ^= 1 << (flip % 8),
        1 => p.index ^= 1 << (flip % 32),
        2 if !p.path.is_empty() => {
            let l = usize::from(*flip) % p.path.len();
            p.path[l][usize::from(*flip) % 32] ^= 1;
        }
        _ => {}
    }
    let t = rest
        .get(..32)
        .map_or(b.transcripts[j], |r| r.try_into().expect("32 bytes"));
    let ok = batch::verify(&b.public, &t, &p, &b.signature).is_ok();
    assert_eq!(ok, p == b.proofs[j] && t == b.transcripts[j]);
});
