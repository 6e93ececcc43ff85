//! Which AEAD implementation seals fastest on this machine? Each candidate seals a packet in
//! place (detached tag) with a fresh nonce per packet, on one core, for 64, 1200 and
//! 1400-byte payloads. This is the measurement behind STOQ's choice of implementation
//! (aws-lc-rs on Linux, ring elsewhere: `stoq::crypto`).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn nonce_for(pn: u64) -> [u8; 12] {
    let mut n = [7u8; 12];
    for (i, b) in pn.to_be_bytes().iter().enumerate() {
        n[4 + i] ^= b;
    }
    n
}

fn candidates(c: &mut Criterion) {
    let mut g = c.benchmark_group("aead_candidates/seal");
    for len in [64usize, 1200, 1400] {
        g.throughput(Throughput::Bytes(len as u64));
        let aad = [0x40u8; 13];
        let mut buf = vec![0u8; len];

        // ring and aws-lc-rs share one API: the same loop for each library and suite.
        macro_rules! ring_like {
            ($name:literal, $krate:ident, $alg:ident) => {{
                use $krate::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
                let k =
                    LessSafeKey::new(UnboundKey::new(&$krate::aead::$alg, &[1; 32]).expect("key"));
                let mut pn = 0u64;
                g.bench_with_input(BenchmarkId::new($name, len), &len, |b, _| {
                    b.iter(|| {
                        pn += 1;
                        let t = k.seal_in_place_separate_tag(
                            Nonce::assume_unique_for_key(nonce_for(pn)),
                            Aad::from(&aad),
                            &mut buf,
                        );
                        black_box(t.expect("seal"))
                    })
                });
            }};
        }
        ring_like!("ring_aes256gcm", ring, AES_256_GCM);
        ring_like!("ring_chacha20poly1305", ring, CHACHA20_POLY1305);
        ring_like!("awslc_aes256gcm", aws_lc_rs, AES_256_GCM);
        ring_like!("awslc_chacha20poly1305", aws_lc_rs, CHACHA20_POLY1305);
        {
            use chacha20poly1305::aead::{AeadInPlace, KeyInit};
            let k = chacha20poly1305::ChaCha20Poly1305::new(&[1u8; 32].into());
            let mut pn = 0u64;
            g.bench_with_input(
                BenchmarkId::new("rustcrypto_chacha20poly1305", len),
                &len,
                |b, _| {
                    b.iter(|| {
                        pn += 1;
                        black_box(
                            k.encrypt_in_place_detached(&nonce_for(pn).into(), &aad, &mut buf)
                                .expect("seal"),
                        )
                    })
                },
            );
        }
        {
            use aes_gcm::aead::{AeadInPlace, KeyInit};
            let k = aes_gcm::Aes256Gcm::new(&[1u8; 32].into());
            let mut pn = 0u64;
            g.bench_with_input(
                BenchmarkId::new("rustcrypto_aes256gcm", len),
                &len,
                |b, _| {
                    b.iter(|| {
                        pn += 1;
                        black_box(
                            k.encrypt_in_place_detached(&nonce_for(pn).into(), &aad, &mut buf)
                                .expect("seal"),
                        )
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = candidates
}
criterion_main!(benches);
