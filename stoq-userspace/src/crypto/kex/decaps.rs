//! The client's ML-KEM-768 key pair, kept unpacked until the server's ciphertext arrives.
//!
//! libcrux's packed API serialises the decapsulation key at key generation and parses it
//! back to decapsulate, and decapsulation re-encrypts (the Fujisaki-Okamoto check) under
//! the public matrix `A`, which it samples again from the key's seed: the SHAKE-128 work
//! that key generation has just done. The unpacked key pair keeps `A` and the secret
//! vector in NTT form, so decapsulation skips both. On this project's VM the client's
//! share of ML-KEM (key generation and decapsulation) fell from 45 to 33 µs (a scratch
//! program, 20,000 rounds, AVX2; docs/benchmarks.md).
//!
//! libcrux picks its AVX2 (x86_64) or NEON (aarch64) code at run time behind the packed
//! API, but its unpacked types differ per implementation, so the choice is made here,
//! with the same checks, and the portable code serves any other CPU.

use libcrux_ml_kem::KEY_GENERATION_SEED_SIZE;
use libcrux_ml_kem::mlkem768::{self, MlKem768Ciphertext, MlKem768PublicKey};
use zeroize::Zeroizing;

/// Implements [`DecapsulationKey`]'s three operations for each of libcrux's unpacked key
/// types, which share their functions' names module by module.
macro_rules! per_implementation {
    ($self:ident, $m:ident, $k:ident => $body:expr) => {
        match $self {
            #[cfg(target_arch = "x86_64")]
            DecapsulationKey::Avx2($k) => {
                use mlkem768::avx2::unpacked as $m;
                $body
            }
            #[cfg(target_arch = "aarch64")]
            DecapsulationKey::Neon($k) => {
                use mlkem768::neon::unpacked as $m;
                $body
            }
            DecapsulationKey::Portable($k) => {
                use mlkem768::portable::unpacked as $m;
                $body
            }
        }
    };
}

/// An ML-KEM-768 key pair in libcrux's unpacked form (boxed: several KiB), wiped on drop.
pub(super) enum DecapsulationKey {
    /// AVX2 code, on an x86_64 CPU that has AVX2.
    #[cfg(target_arch = "x86_64")]
    Avx2(Box<mlkem768::avx2::unpacked::MlKem768KeyPairUnpacked>),
    /// NEON code, on an aarch64 CPU that has it.
    #[cfg(target_arch = "aarch64")]
    Neon(Box<mlkem768::neon::unpacked::MlKem768KeyPairUnpacked>),
    /// Portable code.
    Portable(Box<mlkem768::portable::unpacked::MlKem768KeyPairUnpacked>),
}

impl DecapsulationKey {
    /// A fresh key pair from `seed` (64 bytes from the injected RNG), on the fastest
    /// code this CPU runs.
    pub(super) fn generate(seed: &Zeroizing<[u8; KEY_GENERATION_SEED_SIZE]>) -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Self::Avx2(Box::new(mlkem768::avx2::unpacked::generate_key_pair(
                **seed,
            )));
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            return Self::Neon(Box::new(mlkem768::neon::unpacked::generate_key_pair(
                **seed,
            )));
        }
        Self::Portable(Box::new(mlkem768::portable::unpacked::generate_key_pair(
            **seed,
        )))
    }

    /// The encapsulation key, serialised (what the client's share carries).
    pub(super) fn public_key(&self) -> MlKem768PublicKey {
        per_implementation!(self, m, k => m::key_pair_serialized_public_key(k))
    }

    /// The shared secret for `ct`. Never fails: a tampered ciphertext yields an unrelated
    /// secret (implicit rejection), which the Finished MACs then catch.
    pub(super) fn decapsulate(&self, ct: &MlKem768Ciphertext) -> Zeroizing<[u8; 32]> {
        per_implementation!(self, m, k => Zeroizing::new(m::decapsulate(k, ct)))
    }
}

impl Drop for DecapsulationKey {
    fn drop(&mut self) {
        // libcrux's unpacked types do not implement `Zeroize`. Overwriting each with its
        // all-zero default (`init_key_pair`) clears the secret vector, the
        // implicit-rejection value and the rest; `black_box` keeps the compiler from
        // dropping the stores as dead, as it may for writes just before the memory is
        // freed.
        per_implementation!(self, m, k => {
            **k = m::init_key_pair();
            std::hint::black_box(&**k);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every implementation this CPU runs agrees with libcrux's packed API, which picks
    /// its own, on the public key and on the secret (the right one and a rejected one).
    #[test]
    fn unpacked_keys_agree_with_the_packed_api() {
        let seed = Zeroizing::new([0x5a; KEY_GENERATION_SEED_SIZE]);
        let mut keys = vec![DecapsulationKey::Portable(Box::new(
            mlkem768::portable::unpacked::generate_key_pair(*seed),
        ))];
        let auto = DecapsulationKey::generate(&seed);
        keys.push(auto);
        let packed = mlkem768::generate_key_pair(*seed);
        for k in &keys {
            assert_eq!(k.public_key().as_slice(), packed.public_key().as_slice());
            let (ct, ss) = mlkem768::encapsulate(packed.public_key(), [7; 32]);
            assert_eq!(*k.decapsulate(&ct), ss);
            let mut bad = ct.as_slice().to_vec();
            bad[5] ^= 1;
            let bad = MlKem768Ciphertext::try_from(&bad[..]).expect("right length");
            assert_eq!(
                *k.decapsulate(&bad),
                mlkem768::decapsulate(packed.private_key(), &bad),
                "implicit rejection gives the packed API's secret"
            );
            assert_ne!(*k.decapsulate(&bad), ss);
        }
    }
}
