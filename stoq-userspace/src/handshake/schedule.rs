//! The transcript hash and the key schedule (TLS 1.3's, with STOQ's labels).
//!
//! ```text
//! initial      = HKDF-Extract(INITIAL_SALT, client's first DCID)
//! client_in    = Expand-Label(initial, "client in", "", 32)      server_in likewise
//!
//! early        = HKDF-Extract(0^32, 0^32)
//! handshake    = HKDF-Extract(Expand-Label(early, "derived", H(""), 32),
//!                             ML-KEM secret || X25519 secret)
//! c_hs / s_hs  = Expand-Label(handshake, "c hs traffic" / "s hs traffic", H(CH..SH), 32)
//! master       = HKDF-Extract(Expand-Label(handshake, "derived", H(""), 32), 0^32)
//! c_ap / s_ap  = Expand-Label(master, "c ap traffic" / "s ap traffic",
//!                             H(CH..server Finished), 32)
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
use crate::crypto::{Secret, expand_label, extract};

/// The salt of the Initial secrets: the ASCII bytes of `STOQ-v1-initial-salt`.
pub const INITIAL_SALT: [u8; 20] = *b"STOQ-v1-initial-salt";

/// SHA-256 over every handshake message so far.
#[derive(Clone, Default)]
pub struct Transcript(Sha256);

impl std::fmt::Debug for Transcript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transcript")
    }
}

impl Transcript {
    /// Adds an encoded message (header included).
    pub fn add(&mut self, msg: &[u8]) {
        self.0.update(msg);
    }

    /// The hash of the messages so far.
    pub fn hash(&self) -> [u8; 32] {
        self.0.clone().finalize().into()
    }
}

fn derive(secret: &[u8], label: &[u8], context: &[u8]) -> Secret {
    let mut out = [0u8; 32];
    expand_label(secret, label, context, &mut out);
    let s = Secret::new(out);
    out.fill(0);
    s
}

fn empty_hash() -> [u8; 32] {
    Sha256::digest([]).into()
}

/// The Initial secrets (client, server) for the client's first DCID.
pub fn initial_secrets(dcid: &[u8]) -> (Secret, Secret) {
    let initial = extract(&INITIAL_SALT, dcid);
    (
        derive(&initial[..], b"client in", &[]),
        derive(&initial[..], b"server in", &[]),
    )
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
    /// Derives them from the hybrid secret and `H(ClientHello..ServerHello)`.
    pub fn new(hybrid: &HybridSecret, th_server_hello: &[u8; 32]) -> Self {
        let early = extract(&[0u8; 32], &[0u8; 32]);
        let derived = derive(&early[..], b"derived", &empty_hash());
        let hs = extract(derived.as_bytes(), &hybrid.ikm()[..]);
        let client = derive(&hs[..], b"c hs traffic", th_server_hello);
        let server = derive(&hs[..], b"s hs traffic", th_server_hello);
        let derived2 = derive(&hs[..], b"derived", &empty_hash());
        let master = extract(derived2.as_bytes(), &[0u8; 32]);
        Self {
            client,
            server,
            master,
        }
    }

    /// The application secrets (client, server) from `H(ClientHello..server Finished)`.
    pub fn application(&self, th_server_finished: &[u8; 32]) -> (Secret, Secret) {
        (
            derive(&self.master[..], b"c ap traffic", th_server_finished),
            derive(&self.master[..], b"s ap traffic", th_server_finished),
        )
    }
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
    use crate::crypto::{CipherSuite, PacketKey};

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn h(b: &[u8]) -> [u8; 32] {
        Sha256::digest(b).into()
    }

    /// The vectors in docs/security.md, computed with Python's hmac/hashlib.
    #[test]
    fn documented_vectors() {
        let (ci, si) = initial_secrets(&hex("8394c8f03e515708"));
        assert_eq!(
            ci.as_bytes().to_vec(),
            hex("3e8fc7c94d227c4b328d678c051d21f65a42d1b057baf64dd9a0530774cef37d")
        );
        assert_eq!(
            si.as_bytes().to_vec(),
            hex("69039280ae19799da7eb7c1ac7777ac3e61d9b921e01564b65790ca04a44ba4c")
        );
        let (mut key, mut iv, mut hp) = ([0u8; 32], [0u8; 12], [0u8; 32]);
        expand_label(ci.as_bytes(), b"key", &[], &mut key);
        expand_label(ci.as_bytes(), b"iv", &[], &mut iv);
        expand_label(ci.as_bytes(), b"hp", &[], &mut hp);
        assert_eq!(
            key.to_vec(),
            hex("54be875fc0c8043fabefe27c2009dd6a9b3092a485488c6a27815e9198d785e5")
        );
        assert_eq!(iv.to_vec(), hex("70b987a9f6fec0713cd52cca"));
        assert_eq!(
            hp.to_vec(),
            hex("265cfca8635eba71cfdd130ec3810d11d0bb50f402d5327320690d74e12d0c47")
        );
        let _ = PacketKey::from_secret(CipherSuite::ChaCha20Poly1305, &ci);

        let hybrid = HybridSecret {
            mlkem: Zeroizing::new([1; 32]),
            x25519: Zeroizing::new([2; 32]),
        };
        let hs = HandshakeSecrets::new(&hybrid, &h(b"ClientHello..ServerHello"));
        assert_eq!(
            hs.client.as_bytes().to_vec(),
            hex("bdd23c8e97adc11bbce22946ce06472b5903217b51b07f3ee95c5536dbf0ae89")
        );
        assert_eq!(
            hs.server.as_bytes().to_vec(),
            hex("c1880faff3e6cea2ea014dfc03047e85ba78772c6a84a86770f59360066025ef")
        );
        assert_eq!(
            hs.master.to_vec(),
            hex("96f608390d2a485ec138178d7b5591b3597aa8e22627d48576b1143d76950efc")
        );
        let (c_ap, s_ap) = hs.application(&h(b"ClientHello..server Finished"));
        assert_eq!(
            c_ap.as_bytes().to_vec(),
            hex("c9e79df593e13bbd95cef9ef93aeb4d6342291121934717d6039de1b8df30010")
        );
        assert_eq!(
            s_ap.as_bytes().to_vec(),
            hex("ab78407856f058892a692d9e09baa0b31935941a4832c21aa98ac92d396adda2")
        );
        let fin = finished_mac(&hs.server, &h(b"ClientHello..CertificateVerify"));
        assert_eq!(
            fin.to_vec(),
            hex("63f1c90f37e34f42466547b29b5c5a65090d2fd1e8f8e74e9f5bcf5fbfecf7f6")
        );
        assert!(verify_finished(
            &hs.server,
            &h(b"ClientHello..CertificateVerify"),
            &fin
        ));
        let mut bad = fin;
        bad[0] ^= 1;
        assert!(!verify_finished(
            &hs.server,
            &h(b"ClientHello..CertificateVerify"),
            &bad
        ));
        assert_eq!(
            hs.client.next_phase().as_bytes().to_vec(),
            hex("df308404aa0dd9a5678880157cd001ff73832b1f24db3e25dd8697ffd48febdc")
        );
    }

    #[test]
    fn transcript_is_incremental() {
        let mut t = Transcript::default();
        t.add(b"ClientHello..");
        t.add(b"ServerHello");
        assert_eq!(t.hash(), h(b"ClientHello..ServerHello"));
    }
}
