//! The transcript hash and the key schedule (TLS 1.3's, with STOQ's labels).
//!
//! ```text
//! initial      = HKDF-Extract(INITIAL_SALT, client's first DCID)
//! client_in    = Expand-Label(initial, "client in", "", 32)      server_in likewise
//!
//! early        = HKDF-Extract(0^32, psk)        (0^32 in place of psk for a full handshake)
//! binder       = HMAC(Expand-Label(Expand-Label(early, "res binder", H(""), 32),
//!                                  "finished", "", 32), H(ClientHello up to the binder))
//! handshake    = HKDF-Extract(Expand-Label(early, "derived", H(""), 32),
//!                             ML-KEM secret || X25519 secret)
//! c_hs / s_hs  = Expand-Label(handshake, "c hs traffic" / "s hs traffic", H(CH..SH), 32)
//! master       = HKDF-Extract(Expand-Label(handshake, "derived", H(""), 32), 0^32)
//! c_ap / s_ap  = Expand-Label(master, "c ap traffic" / "s ap traffic",
//!                             H(CH..server Finished), 32)
//! exporter     = Expand-Label(master, "exp master", H(CH..server Finished), 32)
//! resumption   = Expand-Label(master, "res master", H(CH..client Finished), 32)
//! ticket psk   = Expand-Label(resumption, "resumption", ticket nonce, 32)
//! export(L, C) = Expand-Label(Expand-Label(exporter, L, H(""), 32), "exporter", H(C), n)
//! finished     = HMAC(Expand-Label(c_hs or s_hs, "finished", "", 32), H(transcript))
//! ```
//!
//! Every traffic secret then yields `key`, `iv` and `hp` (and `ku` for key updates) through
//! [`crate::crypto::PacketKey::from_secret`] and friends. Test vectors, computed with an
//! independent implementation, are in `docs/security.md` and checked below.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::crypto::kex::HybridSecret;
use crate::crypto::{Expander, Secret, expand_label, extract};

/// The salt of the Initial secrets: the ASCII bytes of `STOQ-v1-initial-salt`.
pub const INITIAL_SALT: [u8; 20] = *b"STOQ-v1-initial-salt";

/// SHA-256 over every handshake message so far.
#[derive(Clone, Default)]
pub struct Transcript {
    hasher: Sha256,
    /// The hash of the messages so far, once asked for (several secrets and MACs use the
    /// same one); cleared by [`add`](Self::add).
    hashed: std::cell::Cell<Option<[u8; 32]>>,
}

impl std::fmt::Debug for Transcript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transcript")
    }
}

impl Transcript {
    /// Adds an encoded message (header included).
    pub fn add(&mut self, msg: &[u8]) {
        self.hasher.update(msg);
        self.hashed.set(None);
    }

    /// The hash of the messages so far.
    pub fn hash(&self) -> [u8; 32] {
        if let Some(h) = self.hashed.get() {
            return h;
        }
        let h: [u8; 32] = self.hasher.clone().finalize().into();
        self.hashed.set(Some(h));
        h
    }
}

fn derive(secret: &[u8], label: &[u8], context: &[u8]) -> Secret {
    derive_with(&Expander::new(secret), label, context)
}

fn derive_with(secret: &Expander, label: &[u8], context: &[u8]) -> Secret {
    let mut out = [0u8; 32];
    secret.label(label, context, &mut out);
    let s = Secret::new(out);
    out.fill(0);
    s
}

/// `SHA-256("")`, the context of the `"derived"` and `"res binder"` labels.
const EMPTY_HASH: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// `HKDF-Extract(0^32, 0^32)`: the early secret of every full handshake (RFC 8448 §3's
/// "early secret"), a constant.
const FULL_EARLY_SECRET: [u8; 32] = [
    0x33, 0xad, 0x0a, 0x1c, 0x60, 0x7e, 0xc0, 0x3b, 0x09, 0xe6, 0xcd, 0x98, 0x93, 0x68, 0x0c, 0xe2,
    0x10, 0xad, 0xf3, 0x00, 0xaa, 0x1f, 0x26, 0x60, 0xe1, 0xb2, 0x2e, 0x10, 0xf1, 0x70, 0xf9, 0x2a,
];

/// The Initial secrets (client, server) for the client's first DCID.
pub fn initial_secrets(dcid: &[u8]) -> (Secret, Secret) {
    let initial = Expander::new(&extract(&INITIAL_SALT, dcid)[..]);
    (
        derive_with(&initial, b"client in", &[]),
        derive_with(&initial, b"server in", &[]),
    )
}

/// The early secret: from a resumption ticket's PSK, or from zeros for a full handshake.
pub struct EarlySecret(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for EarlySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EarlySecret(..)")
    }
}

impl EarlySecret {
    /// A full handshake's: `HKDF-Extract(0^32, 0^32)`.
    pub fn full() -> Self {
        Self(Zeroizing::new(FULL_EARLY_SECRET))
    }

    /// A resumed handshake's: `HKDF-Extract(0^32, psk)`.
    pub fn resumption(psk: &Secret) -> Self {
        Self(extract(&[0u8; 32], psk.as_bytes()))
    }

    /// The PSK binder over `H(ClientHello up to the binder)` (RFC 8446 §4.2.11.2): proves
    /// that the client holds the ticket's PSK and binds it to this ClientHello.
    pub fn binder(&self, partial_hello_hash: &[u8; 32]) -> [u8; 32] {
        let key = derive(&self.0[..], b"res binder", &EMPTY_HASH);
        finished_mac(&key, partial_hello_hash)
    }

    /// The client's early traffic secret (0-RTT), from `H(ClientHello)` (RFC 8446 §7.1,
    /// `"c e traffic"`).
    pub fn client_early_traffic(&self, th_client_hello: &[u8; 32]) -> Secret {
        derive(&self.0[..], b"c e traffic", th_client_hello)
    }

    /// Checks a received binder in constant time.
    pub fn verify_binder(&self, partial_hello_hash: &[u8; 32], received: &[u8; 32]) -> bool {
        let key = derive(&self.0[..], b"res binder", &EMPTY_HASH);
        verify_finished(&key, partial_hello_hash, received)
    }
}

/// A ticket's PSK from the resumption master secret and the ticket's nonce.
pub fn ticket_psk(resumption: &Secret, nonce: &[u8]) -> Secret {
    derive(resumption.as_bytes(), b"resumption", nonce)
}

/// The handshake-phase secrets and the master secret they lead to.
pub struct HandshakeSecrets {
    /// Client handshake traffic secret.
    pub client: Secret,
    /// Server handshake traffic secret.
    pub server: Secret,
    master: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for HandshakeSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandshakeSecrets(..)")
    }
}

impl HandshakeSecrets {
    /// Derives them from the early secret, the hybrid secret and
    /// `H(ClientHello..ServerHello)`.
    pub fn new(early: &EarlySecret, hybrid: &HybridSecret, th_server_hello: &[u8; 32]) -> Self {
        let derived = derive(&early.0[..], b"derived", &EMPTY_HASH);
        let hs = Expander::new(&extract(derived.as_bytes(), &hybrid.ikm()[..])[..]);
        let client = derive_with(&hs, b"c hs traffic", th_server_hello);
        let server = derive_with(&hs, b"s hs traffic", th_server_hello);
        let derived2 = derive_with(&hs, b"derived", &EMPTY_HASH);
        let master = extract(derived2.as_bytes(), &[0u8; 32]);
        Self {
            client,
            server,
            master,
        }
    }

    /// The exporter master secret, from `H(ClientHello..server Finished)` (RFC 8446 §7.5).
    pub fn exporter(&self, th_server_finished: &[u8; 32]) -> Secret {
        derive(&self.master[..], b"exp master", th_server_finished)
    }

    /// The resumption master secret, from `H(ClientHello..client Finished)`: each session
    /// ticket's PSK is derived from it ([`ticket_psk`]).
    pub fn resumption(&self, th_client_finished: &[u8; 32]) -> Secret {
        derive(&self.master[..], b"res master", th_client_finished)
    }

    /// The application secrets (client, server) from `H(ClientHello..server Finished)`.
    pub fn application(&self, th_server_finished: &[u8; 32]) -> (Secret, Secret) {
        let master = Expander::new(&self.master[..]);
        (
            derive_with(&master, b"c ap traffic", th_server_finished),
            derive_with(&master, b"s ap traffic", th_server_finished),
        )
    }
}

/// The longest exporter label: Expand-Label's label field holds 255 bytes with the prefix.
pub const MAX_EXPORT_LABEL: usize = 255 - crate::crypto::LABEL_PREFIX.len();
/// The most keying material one export gives (HKDF-SHA256's 255 blocks).
pub const MAX_EXPORT_LEN: usize = 255 * 32;

/// Exported keying material for `label` and `context` into `out` (RFC 8446 §7.5).
///
/// # Errors
/// A label over [`MAX_EXPORT_LABEL`] or an output over [`MAX_EXPORT_LEN`] bytes.
pub fn export(
    exporter: &Secret,
    label: &[u8],
    context: &[u8],
    out: &mut [u8],
) -> Result<(), super::ExportError> {
    use super::ExportError;
    if label.len() > MAX_EXPORT_LABEL {
        return Err(ExportError::LabelTooLong {
            len: label.len(),
            max: MAX_EXPORT_LABEL,
        });
    }
    if out.len() > MAX_EXPORT_LEN {
        return Err(ExportError::OutputTooLong {
            len: out.len(),
            max: MAX_EXPORT_LEN,
        });
    }
    let per_label = derive(exporter.as_bytes(), label, &EMPTY_HASH);
    let context_hash: [u8; 32] = Sha256::digest(context).into();
    expand_label(per_label.as_bytes(), b"exporter", &context_hash, out);
    Ok(())
}

/// The Finished MAC: `HMAC(Expand-Label(base, "finished", "", 32), transcript_hash)`.
pub fn finished_mac(base: &Secret, transcript_hash: &[u8; 32]) -> [u8; 32] {
    let key = derive(base.as_bytes(), b"finished", &[]);
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(transcript_hash);
    mac.finalize().into_bytes().into()
}

/// Checks a received Finished MAC in constant time.
pub fn verify_finished(base: &Secret, transcript_hash: &[u8; 32], received: &[u8; 32]) -> bool {
    let key = derive(base.as_bytes(), b"finished", &[]);
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(transcript_hash);
    mac.verify_slice(received).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::tests::hex;
    use crate::crypto::{CipherSuite, PacketKey};

    fn h(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    #[test]
    fn constants_are_what_they_stand_for() {
        assert_eq!(EMPTY_HASH, h(b""));
        assert_eq!(*extract(&[0u8; 32], &[0u8; 32]), FULL_EARLY_SECRET);
    }

    #[test]
    fn transcript_hash_follows_every_message() {
        let mut t = Transcript::default();
        assert_eq!(t.hash(), h(b""));
        t.add(b"client hello");
        assert_eq!(t.hash(), h(b"client hello"));
        assert_eq!(t.hash(), h(b"client hello"), "asked twice, the same");
        t.add(b", server hello");
        assert_eq!(t.hash(), h(b"client hello, server hello"));
        let copy = t.clone();
        t.add(b"!");
        assert_eq!(copy.hash(), h(b"client hello, server hello"));
        assert_eq!(t.hash(), h(b"client hello, server hello!"));
    }

    /// The vectors block of `docs/security.md`, as (name, value) pairs.
    fn documented() -> std::collections::HashMap<String, String> {
        let doc = include_str!("../../../docs/security.md");
        let start = doc
            .find("```text stoq-key-schedule-vectors")
            .expect("docs/security.md has the vectors block");
        let body = &doc[start..];
        let body = &body[body.find('\n').unwrap() + 1..];
        let body = &body[..body.find("```").expect("block ends")];
        body.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }

    fn value(v: &std::collections::HashMap<String, String>, k: &str) -> Vec<u8> {
        let s = v
            .get(k)
            .unwrap_or_else(|| panic!("docs/security.md lacks `{k}`"));
        match s
            .strip_prefix("sha256(\"")
            .and_then(|r| r.strip_suffix("\")"))
        {
            Some(text) => h(text.as_bytes()).to_vec(),
            None => hex(s),
        }
    }

    /// The vectors in docs/security.md (computed with Python's hmac/hashlib), read from the
    /// document itself.
    #[test]
    fn documented_vectors() {
        let v = documented();
        assert!(v.len() >= 18, "{v:?}");
        let (ci, si) = initial_secrets(&value(&v, "input dcid"));
        assert_eq!(ci.as_bytes().to_vec(), value(&v, "client_in"));
        assert_eq!(si.as_bytes().to_vec(), value(&v, "server_in"));
        let (mut key, mut iv, mut hp) = ([0u8; 32], [0u8; 12], [0u8; 32]);
        expand_label(ci.as_bytes(), b"key", &[], &mut key);
        expand_label(ci.as_bytes(), b"iv", &[], &mut iv);
        expand_label(ci.as_bytes(), b"hp", &[], &mut hp);
        assert_eq!(key.to_vec(), value(&v, "client_in key"));
        assert_eq!(iv.to_vec(), value(&v, "client_in iv"));
        assert_eq!(hp.to_vec(), value(&v, "client_in hp"));
        let _ = PacketKey::from_secret(CipherSuite::ChaCha20Poly1305, &ci);

        let mut mlkem = [0u8; 32];
        mlkem.copy_from_slice(&value(&v, "input mlkem secret"));
        let mut x25519 = [0u8; 32];
        x25519.copy_from_slice(&value(&v, "input x25519 secret"));
        let hybrid = HybridSecret {
            mlkem: Zeroizing::new(mlkem),
            x25519: Zeroizing::new(x25519),
        };
        let th = |k: &str| -> [u8; 32] { value(&v, k).try_into().expect("32 bytes") };
        let hs = HandshakeSecrets::new(&EarlySecret::full(), &hybrid, &th("input H(CH..SH)"));
        assert_eq!(hs.client.as_bytes().to_vec(), value(&v, "c_hs"));
        assert_eq!(hs.server.as_bytes().to_vec(), value(&v, "s_hs"));
        assert_eq!(hs.master.to_vec(), value(&v, "master"));
        let (c_ap, s_ap) = hs.application(&th("input H(CH..server Fin)"));
        assert_eq!(c_ap.as_bytes().to_vec(), value(&v, "c_ap"));
        assert_eq!(s_ap.as_bytes().to_vec(), value(&v, "s_ap"));
        let cv = th("input H(CH..CV)");
        let fin = finished_mac(&hs.server, &cv);
        assert_eq!(fin.to_vec(), value(&v, "server finished MAC"));
        assert!(verify_finished(&hs.server, &cv, &fin));
        let mut bad = fin;
        bad[0] ^= 1;
        assert!(!verify_finished(&hs.server, &cv, &bad));
        assert_eq!(
            hs.client.next_phase().as_bytes().to_vec(),
            value(&v, "c_hs next phase (ku)")
        );

        // Resumption: the early secret from a PSK, the binder, the resumed handshake's
        // secrets and the next ticket's PSK.
        let psk = Secret::new(value(&v, "input psk").try_into().expect("32 bytes"));
        let early = EarlySecret::resumption(&psk);
        assert_eq!(early.0.to_vec(), value(&v, "early (resumed)"));
        let binder = early.binder(&th("input H(CH to binder)"));
        assert_eq!(binder.to_vec(), value(&v, "binder"));
        assert!(early.verify_binder(&th("input H(CH to binder)"), &binder));
        assert!(!EarlySecret::full().verify_binder(&th("input H(CH to binder)"), &binder));
        assert_eq!(
            early
                .client_early_traffic(&th("input H(CH)"))
                .as_bytes()
                .to_vec(),
            value(&v, "c e traffic (resumed)")
        );
        let resumed = HandshakeSecrets::new(&early, &hybrid, &th("input H(CH..SH)"));
        assert_eq!(
            resumed.client.as_bytes().to_vec(),
            value(&v, "c_hs (resumed)")
        );
        let res = resumed.resumption(&th("input H(CH..client Fin)"));
        assert_eq!(res.as_bytes().to_vec(), value(&v, "res master (resumed)"));
        assert_eq!(
            ticket_psk(&res, &[0]).as_bytes().to_vec(),
            value(&v, "ticket psk (nonce 00)")
        );
    }

    #[test]
    fn transcript_is_incremental() {
        let mut t = Transcript::default();
        t.add(b"ClientHello..");
        t.add(b"ServerHello");
        assert_eq!(t.hash(), h(b"ClientHello..ServerHello"));
    }

    /// The exporter against HKDF-Expand-Label computed independently (Python's hmac and
    /// hashlib): exporter secret 00..1f, label "EXPORTER-test", context "context", 40 bytes.
    #[test]
    fn export_matches_an_independent_computation() {
        let exporter = Secret::new(core::array::from_fn(|i| i as u8));
        let mut out = [0u8; 40];
        export(&exporter, b"EXPORTER-test", b"context", &mut out).unwrap();
        assert_eq!(
            out.to_vec(),
            hex("c3e3d2aca7989146efdac6507fb35a483c262c1c7d63c1b998df1c968568804128a5e0cfd6905931")
        );
        let long = [b'x'; MAX_EXPORT_LABEL + 1];
        assert_eq!(
            export(&exporter, &long, b"", &mut out),
            Err(crate::handshake::ExportError::LabelTooLong {
                len: MAX_EXPORT_LABEL + 1,
                max: MAX_EXPORT_LABEL
            })
        );
        assert!(export(&exporter, &long[1..], b"", &mut out).is_ok());
        let mut big = vec![0u8; MAX_EXPORT_LEN + 1];
        assert!(matches!(
            export(&exporter, b"l", b"", &mut big),
            Err(crate::handshake::ExportError::OutputTooLong { .. })
        ));
        assert!(export(&exporter, b"l", b"", &mut big[1..]).is_ok());
    }
}
