//! The secure session's costs, each set against its bare parts measured in the same run.
//!
//! - `handshake/{client,server}`: CPU time one side spends in a complete packet-level
//!   handshake (two in-memory endpoints, no network): key exchange, FALCON, the key
//!   schedule, packet protection, framing and recovery state, all included.
//! - `primitives/*`: the bare crates' cost of what a handshake must do: FALCON-512 sign and
//!   verify (fn-dsa), ML-KEM-768 key generation, encapsulation and decapsulation
//!   (libcrux-ml-kem, what the handshake runs; RustCrypto's ml-kem beside it, what it ran
//!   before), X25519 key generation and agreement (AWS-LC, as STOQ on Linux, and
//!   x25519-dalek).
//! - `protect/*`: STOQ's `PacketKey::seal`/`open` and whole-packet protection (AEAD plus
//!   header protection) for 64, 1200 and 1400-byte payloads, against the bare AEAD (aws-lc-rs)
//!   that implements them and the RustCrypto crates.
//!
//! After criterion, a summary prints the handshake/primitives ratio per side from medians
//! taken in this same process.

mod common;

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::configs;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use fn_dsa::{
    DOMAIN_NONE, FN_DSA_LOGN_512, HASH_ID_RAW, KeyPairGenerator, KeyPairGeneratorStandard,
    SigningKey as _, SigningKeyStandard, VerifyingKey as _, VerifyingKeyStandard, sign_key_size,
    signature_size, vrfy_key_size,
};
use libcrux_ml_kem::mlkem768;
use ml_kem::kem::{Decapsulate, Encapsulate};
use ml_kem::{KemCore, MlKem768};
use rand_core::OsRng;
use rand_core::RngCore;
use stoq::conn::{DatagramEvent, DatagramInfo, Endpoint, EndpointConfig, Event};
use stoq::crypto::{CipherSuite, HeaderKey, PacketKey, TAG_LEN, protect_packet};
use stoq::handshake::{ClientConfig, ServerConfig};

/// One complete handshake between two fresh endpoints; returns the time spent inside the
/// client's and the server's calls.
fn handshake_split(
    server_cfg: &Arc<ServerConfig>,
    client_cfg: &Arc<ClientConfig>,
) -> (Duration, Duration) {
    let c_addr: SocketAddr = "[fd00:5710::1]:50000".parse().expect("addr");
    let s_addr: SocketAddr = "[fd00:5710::2]:4433".parse().expect("addr");
    let mut client = Endpoint::new(EndpointConfig::new(), None).expect("client");
    let mut server =
        Endpoint::new(EndpointConfig::new(), Some(server_cfg.clone())).expect("server");
    let now = Instant::now();
    let (mut tc, mut ts) = (Duration::ZERO, Duration::ZERO);
    let t = Instant::now();
    let h = client
        .connect(now, s_addr, client_cfg.clone())
        .expect("connect");
    tc += t.elapsed();
    let mut buf = Vec::with_capacity(1500);
    let mut to_server: Vec<Vec<u8>> = Vec::new();
    let mut to_client: Vec<Vec<u8>> = Vec::new();
    let (mut c_done, mut s_done) = (false, false);
    for _ in 0..100 {
        let t = Instant::now();
        while let Some(x) = client.poll_transmit(now, &mut buf) {
            to_server.push(buf[..x.size].to_vec());
        }
        tc += t.elapsed();
        let t = Instant::now();
        for mut d in to_server.drain(..) {
            if let Some(DatagramEvent::Incoming(i)) =
                server.handle_datagram(now, c_addr, DatagramInfo::default(), &mut d)
            {
                server.accept(i, now).expect("accept");
            }
        }
        while let Some(x) = server.poll_transmit(now, &mut buf) {
            to_client.push(buf[..x.size].to_vec());
        }
        while let Some((_, e)) = server.poll_event() {
            s_done |= e == Event::Connected;
        }
        ts += t.elapsed();
        let t = Instant::now();
        for mut d in to_client.drain(..) {
            client.handle_datagram(now, s_addr, DatagramInfo::default(), &mut d);
        }
        while let Some((_, e)) = client.poll_event() {
            c_done |= e == Event::Connected;
        }
        tc += t.elapsed();
        if c_done && s_done {
            break;
        }
    }
    assert!(c_done && s_done, "handshake completed");
    assert!(client.connection(h).is_some_and(|c| c.is_established()));
    (tc, ts)
}

struct Prims {
    sk: Vec<u8>,
    vk: Vec<u8>,
    sig: Vec<u8>,
    msg: [u8; 64],
}

impl Prims {
    fn new() -> Self {
        let mut sk = vec![0u8; sign_key_size(FN_DSA_LOGN_512)];
        let mut vk = vec![0u8; vrfy_key_size(FN_DSA_LOGN_512)];
        KeyPairGeneratorStandard::default().keygen(FN_DSA_LOGN_512, &mut OsRng, &mut sk, &mut vk);
        let msg = [7u8; 64];
        let mut sig = vec![0u8; signature_size(FN_DSA_LOGN_512)];
        let mut k = SigningKeyStandard::decode(&sk).expect("key");
        k.sign(&mut OsRng, &DOMAIN_NONE, &HASH_ID_RAW, &msg, &mut sig);
        Self { sk, vk, sig, msg }
    }

    /// FALCON-512 sign, from the encoded key (as a server holding its key must).
    fn falcon_sign(&self) {
        let mut k = SigningKeyStandard::decode(&self.sk).expect("key");
        self.falcon_sign_expanded(&mut k);
    }

    /// FALCON-512 sign with a key decoded once (what STOQ's `SigningKey` keeps).
    fn falcon_sign_expanded(&self, k: &mut SigningKeyStandard) {
        let mut sig = [0u8; 666];
        k.sign(
            &mut OsRng,
            &DOMAIN_NONE,
            &HASH_ID_RAW,
            &self.msg,
            &mut sig[..self.sig.len()],
        );
        black_box(sig);
    }

    fn falcon_verify(&self) {
        let k = VerifyingKeyStandard::decode(&self.vk).expect("key");
        assert!(k.verify(&self.sig, &DOMAIN_NONE, &HASH_ID_RAW, &self.msg));
    }

    fn mlkem_keygen() -> mlkem768::MlKem768KeyPair {
        let mut seed = [0u8; libcrux_ml_kem::KEY_GENERATION_SEED_SIZE];
        OsRng.fill_bytes(&mut seed);
        mlkem768::generate_key_pair(seed)
    }

    fn mlkem_encaps(ek: &mlkem768::MlKem768PublicKey) -> (mlkem768::MlKem768Ciphertext, [u8; 32]) {
        let mut seed = [0u8; libcrux_ml_kem::ENCAPS_SEED_SIZE];
        OsRng.fill_bytes(&mut seed);
        mlkem768::encapsulate(ek, seed)
    }

    /// One side's X25519 work as STOQ does it on Linux (AWS-LC): a key pair from 32 random
    /// bytes and one agreement with the peer's key.
    fn x25519_keygen_and_agree(peer: &x25519_dalek::PublicKey) {
        use aws_lc_rs::agreement::{PrivateKey, UnparsedPublicKey, X25519, agree};
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        let a = PrivateKey::from_private_key(&X25519, &bytes).expect("key");
        black_box(a.compute_public_key().expect("public key"));
        let peer = UnparsedPublicKey::new(&X25519, peer.as_bytes());
        black_box(agree(&a, peer, (), |s| Ok(s[0])).expect("agree"));
    }

    /// The same with x25519-dalek (STOQ's X25519 off Linux, and on Linux before AWS-LC).
    fn x25519_keygen_and_agree_dalek(peer: &x25519_dalek::PublicKey) {
        let a = x25519_dalek::StaticSecret::random_from_rng(OsRng);
        black_box(x25519_dalek::PublicKey::from(&a));
        black_box(a.diffie_hellman(peer));
    }

    fn x25519_peer() -> x25519_dalek::PublicKey {
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::random_from_rng(OsRng))
    }
}

fn handshake(c: &mut Criterion) {
    let (s, cl) = configs();
    let mut g = c.benchmark_group("handshake");
    g.sample_size(30);
    g.bench_function("client", |b| {
        b.iter_custom(|n| (0..n).map(|_| handshake_split(&s, &cl).0).sum())
    });
    g.bench_function("server", |b| {
        b.iter_custom(|n| (0..n).map(|_| handshake_split(&s, &cl).1).sum())
    });
    g.finish();

    let p = Prims::new();
    let mut g = c.benchmark_group("primitives");
    g.bench_function("falcon512_sign", |b| b.iter(|| p.falcon_sign()));
    let mut expanded = SigningKeyStandard::decode(&p.sk).expect("key");
    g.bench_function("falcon512_sign_expanded", |b| {
        b.iter(|| p.falcon_sign_expanded(&mut expanded))
    });
    let stoq_key = stoq::crypto::sig::SigningKey::from_bytes(&p.sk).expect("key");
    g.bench_function("stoq_signing_key_sign", |b| {
        b.iter(|| black_box(stoq_key.sign(b"context", &p.msg, &mut OsRng)))
    });
    g.bench_function("falcon512_verify", |b| b.iter(|| p.falcon_verify()));
    g.bench_function("mlkem768_keygen", |b| {
        b.iter(|| black_box(Prims::mlkem_keygen()))
    });
    let pair = Prims::mlkem_keygen();
    g.bench_function("mlkem768_encaps", |b| {
        b.iter(|| black_box(Prims::mlkem_encaps(pair.public_key())))
    });
    let (ct, _) = Prims::mlkem_encaps(pair.public_key());
    g.bench_function("mlkem768_decaps", |b| {
        b.iter(|| black_box(mlkem768::decapsulate(pair.private_key(), &ct)))
    });
    // RustCrypto's ml-kem, which the handshake ran before.
    g.bench_function("mlkem768_keygen_rustcrypto", |b| {
        b.iter(|| black_box(MlKem768::generate(&mut OsRng)))
    });
    let (dk, ek) = MlKem768::generate(&mut OsRng);
    g.bench_function("mlkem768_encaps_rustcrypto", |b| {
        b.iter(|| black_box(ek.encapsulate(&mut OsRng).expect("encaps")))
    });
    let (ct, _) = ek.encapsulate(&mut OsRng).expect("encaps");
    g.bench_function("mlkem768_decaps_rustcrypto", |b| {
        b.iter(|| black_box(dk.decapsulate(&ct).expect("decaps")))
    });
    let peer = Prims::x25519_peer();
    g.bench_function("x25519_keygen_agree", |b| {
        b.iter(|| Prims::x25519_keygen_and_agree(&peer))
    });
    g.bench_function("x25519_keygen_agree_dalek", |b| {
        b.iter(|| Prims::x25519_keygen_and_agree_dalek(&peer))
    });
    g.finish();
}

fn protect(c: &mut Criterion) {
    let mut g = c.benchmark_group("protect");
    for suite in CipherSuite::local_preference() {
        let name = format!("{suite:?}");
        for len in [64usize, 1200, 1400] {
            g.throughput(Throughput::Bytes(len as u64));
            let hdr = 17; // short header: 1 + 12-byte CID + 4-byte packet number
            let mut pkt = vec![0x41u8; hdr + len + TAG_LEN];
            let mut key = PacketKey::new(suite, &[1; 32], [2; 12]).expect("key");
            let hp = HeaderKey::new(suite, &[3; 32]).expect("hp");
            let mut pn = 0u64;
            g.bench_with_input(
                BenchmarkId::new(format!("stoq_seal/{name}"), len),
                &len,
                |b, _| {
                    b.iter(|| {
                        pn += 1;
                        if key.should_update() {
                            // AES-GCM allows 2^23 packets per key; a real sender updates.
                            key = PacketKey::new(suite, &[1; 32], [2; 12]).expect("key");
                        }
                        key.seal(pn, &mut pkt, hdr).expect("seal");
                    })
                },
            );
            g.bench_with_input(
                BenchmarkId::new(format!("stoq_seal_and_hp/{name}"), len),
                &len,
                |b, _| {
                    b.iter(|| {
                        pn += 1;
                        if key.should_update() {
                            key = PacketKey::new(suite, &[1; 32], [2; 12]).expect("key");
                        }
                        pkt[0] = 0x43;
                        protect_packet(&mut pkt, hdr - 4, pn, &mut key, &hp).expect("protect");
                    })
                },
            );
            // Open: a fresh copy of a sealed packet each time (the copy is measured too, and
            // in the bare case below).
            let mut sealed = vec![0x41u8; hdr + len + TAG_LEN];
            let mut okey = PacketKey::new(suite, &[1; 32], [2; 12]).expect("key");
            okey.seal(9, &mut sealed, hdr).expect("seal");
            let mut work = sealed.clone();
            g.bench_with_input(
                BenchmarkId::new(format!("stoq_open/{name}"), len),
                &len,
                |b, _| {
                    b.iter(|| {
                        work.copy_from_slice(&sealed);
                        black_box(okey.open(9, &mut work, hdr).expect("open").len());
                    })
                },
            );
            // The bare AEAD that PacketKey wraps on Linux (aws-lc-rs).
            let alg = match suite {
                CipherSuite::Aes256Gcm => &aws_lc_rs::aead::AES_256_GCM,
                _ => &aws_lc_rs::aead::CHACHA20_POLY1305,
            };
            let rk = aws_lc_rs::aead::LessSafeKey::new(
                aws_lc_rs::aead::UnboundKey::new(alg, &[1; 32]).expect("key"),
            );
            let mut body = vec![0u8; len];
            let aad = [0x41u8; 17];
            g.bench_with_input(
                BenchmarkId::new(format!("bare_seal/{name}"), len),
                &len,
                |b, _| {
                    b.iter(|| {
                        pn += 1;
                        let mut n = [2u8; 12];
                        n[4..]
                            .iter_mut()
                            .zip(pn.to_be_bytes())
                            .for_each(|(a, b)| *a ^= b);
                        let _ = black_box(
                            rk.seal_in_place_separate_tag(
                                aws_lc_rs::aead::Nonce::assume_unique_for_key(n),
                                aws_lc_rs::aead::Aad::from(&aad),
                                &mut body,
                            )
                            .expect("seal"),
                        );
                    })
                },
            );
            let mut rsealed = vec![0u8; len];
            let tag = rk
                .seal_in_place_separate_tag(
                    aws_lc_rs::aead::Nonce::assume_unique_for_key([5; 12]),
                    aws_lc_rs::aead::Aad::from(&aad),
                    &mut rsealed,
                )
                .expect("seal");
            rsealed.extend_from_slice(tag.as_ref());
            let mut rwork = rsealed.clone();
            g.bench_with_input(
                BenchmarkId::new(format!("bare_open/{name}"), len),
                &len,
                |b, _| {
                    b.iter(|| {
                        rwork.copy_from_slice(&rsealed);
                        black_box(
                            rk.open_in_place(
                                aws_lc_rs::aead::Nonce::assume_unique_for_key([5; 12]),
                                aws_lc_rs::aead::Aad::from(&aad),
                                &mut rwork,
                            )
                            .expect("open")
                            .len(),
                        );
                    })
                },
            );
        }
        // The RustCrypto crate for the same suite, at 1400 bytes.
        let len = 1400;
        let mut body = vec![0u8; len];
        let aad = [0x41u8; 17];
        match suite {
            CipherSuite::Aes256Gcm => {
                use aes_gcm::aead::{AeadInPlace, KeyInit};
                let k = aes_gcm::Aes256Gcm::new(&[1u8; 32].into());
                g.bench_with_input(
                    BenchmarkId::new(format!("rustcrypto_seal/{name}"), len),
                    &len,
                    |b, _| {
                        b.iter(|| {
                            black_box(
                                k.encrypt_in_place_detached(&[3u8; 12].into(), &aad, &mut body)
                                    .expect("seal"),
                            )
                        })
                    },
                );
            }
            _ => {
                use chacha20poly1305::aead::{AeadInPlace, KeyInit};
                let k = chacha20poly1305::ChaCha20Poly1305::new(&[1u8; 32].into());
                g.bench_with_input(
                    BenchmarkId::new(format!("rustcrypto_seal/{name}"), len),
                    &len,
                    |b, _| {
                        b.iter(|| {
                            black_box(
                                k.encrypt_in_place_detached(&[3u8; 12].into(), &aad, &mut body)
                                    .expect("seal"),
                            )
                        })
                    },
                );
            }
        }
    }
    g.finish();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn timed(n: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

/// Medians over `n` runs of each side's handshake and of each primitive, in this process,
/// and the ratio the issue asks about.
fn summary(n: usize) {
    let (s, c) = configs();
    let runs: Vec<(Duration, Duration)> = (0..n).map(|_| handshake_split(&s, &c)).collect();
    let client = median(runs.iter().map(|r| r.0).collect());
    let server = median(runs.iter().map(|r| r.1).collect());
    let p = Prims::new();
    let sign = timed(n, || p.falcon_sign());
    let verify = timed(n, || p.falcon_verify());
    let keygen = timed(n, || {
        black_box(Prims::mlkem_keygen());
    });
    let pair = Prims::mlkem_keygen();
    let encaps = timed(n, || {
        black_box(Prims::mlkem_encaps(pair.public_key()));
    });
    let (ct, _) = Prims::mlkem_encaps(pair.public_key());
    let decaps = timed(n, || {
        black_box(mlkem768::decapsulate(pair.private_key(), &ct));
    });
    let peer = Prims::x25519_peer();
    let x = timed(n, || Prims::x25519_keygen_and_agree(&peer));
    let client_prims = verify + keygen + decaps + x;
    let server_prims = sign + encaps + x;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("\nsummary (medians of {n} runs, this process):");
    println!(
        "  primitives: falcon512 sign {:.1} us, verify {:.1} us; ml-kem-768 keygen {:.1} us, encaps {:.1} us, decaps {:.1} us; x25519 keygen+agree {:.1} us",
        us(sign),
        us(verify),
        us(keygen),
        us(encaps),
        us(decaps),
        us(x)
    );
    println!(
        "  client handshake {:.1} us vs primitives (verify + keygen + decaps + x25519) {:.1} us: ratio {:.2}",
        us(client),
        us(client_prims),
        client.as_secs_f64() / client_prims.as_secs_f64()
    );
    println!(
        "  server handshake {:.1} us vs primitives (sign + encaps + x25519) {:.1} us: ratio {:.2}",
        us(server),
        us(server_prims),
        server.as_secs_f64() / server_prims.as_secs_f64()
    );
    println!(
        "  sequential handshakes/s on one core, both sides' CPU: {:.0}; server side only: {:.0}",
        1.0 / (client + server).as_secs_f64(),
        1.0 / server.as_secs_f64()
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = handshake, protect
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let n = std::env::var("STOQ_SUMMARY_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    summary(n);
}
