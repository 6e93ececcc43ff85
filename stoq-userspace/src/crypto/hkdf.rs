//! HKDF-SHA256 (RFC 5869) and the TLS 1.3-style `HKDF-Expand-Label` (RFC 8446 §7.1).

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The label prefix of STOQ's key schedule (TLS 1.3 uses `"tls13 "`).
pub const LABEL_PREFIX: &[u8] = b"stoq ";

/// `HKDF-Extract(salt, ikm)`: a 32-byte pseudorandom key.
pub fn extract(salt: &[u8], ikm: &[u8]) -> Zeroizing<[u8; 32]> {
    let (prk, _) = Hkdf::<Sha256>::extract(Some(salt), ikm);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&prk);
    out
}

/// `HKDF-Expand-Label(secret, label, context, out.len())` with STOQ's `"stoq "` prefix.
pub fn expand_label(secret: &[u8], label: &[u8], context: &[u8], out: &mut [u8]) {
    expand_label_with_prefix(LABEL_PREFIX, secret, label, context, out);
}

/// `HKDF-Expand-Label` with an explicit prefix (`b"tls13 "` reproduces RFC 8446/9001).
///
/// # Panics
/// If `secret` is shorter than 32 bytes, `out` is longer than 255 × 32 bytes, or the label
/// or context exceeds 255 bytes: all are programming errors with fixed, internal inputs.
pub fn expand_label_with_prefix(
    prefix: &[u8],
    secret: &[u8],
    label: &[u8],
    context: &[u8],
    out: &mut [u8],
) {
    Expander::new(secret).label_with_prefix(prefix, label, context, out);
}

/// One secret expanded under several labels: HMAC's keyed state (two SHA-256 blocks) is
/// computed once, not once a label, as a traffic secret's `key`, `iv` and `hp` need.
/// Kept only for the derivations at hand, never stored: unlike the secrets, it is not
/// zeroized when dropped.
pub(crate) struct Expander(Hkdf<Sha256>);

impl std::fmt::Debug for Expander {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Expander(..)")
    }
}

impl Expander {
    /// The expander for `secret`, a pseudorandom key.
    ///
    /// # Panics
    /// If `secret` is shorter than 32 bytes (a programming error: secrets are 32 bytes).
    pub(crate) fn new(secret: &[u8]) -> Self {
        Self(Hkdf::<Sha256>::from_prk(secret).expect("secret is a 32-byte PRK"))
    }

    /// `HKDF-Expand-Label(secret, label, context, out.len())` with STOQ's `"stoq "` prefix.
    ///
    /// # Panics
    /// As [`expand_label_with_prefix`].
    pub(crate) fn label(&self, label: &[u8], context: &[u8], out: &mut [u8]) {
        self.label_with_prefix(LABEL_PREFIX, label, context, out);
    }

    /// `HKDF-Expand-Label` with an explicit prefix.
    ///
    /// # Panics
    /// As [`expand_label_with_prefix`].
    pub(crate) fn label_with_prefix(
        &self,
        prefix: &[u8],
        label: &[u8],
        context: &[u8],
        out: &mut [u8],
    ) {
        let full_label_len =
            u8::try_from(prefix.len() + label.len()).expect("label under 256 bytes");
        let ctx_len = u8::try_from(context.len()).expect("context under 256 bytes");
        let len = u16::try_from(out.len()).expect("output under 64 KiB");
        let info: [&[u8]; 6] = [
            &len.to_be_bytes(),
            &[full_label_len],
            prefix,
            label,
            &[ctx_len],
            context,
        ];
        self.0
            .expand_multi_info(&info, out)
            .expect("output within HKDF's limit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::crypto::tests::hex;

    /// RFC 9001 Appendix A.1: the Initial secrets from the client's DCID.
    #[test]
    fn rfc9001_a1_initial_secrets() {
        let salt = hex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a");
        let dcid = hex("8394c8f03e515708");
        let initial = extract(&salt, &dcid);
        assert_eq!(
            &initial[..],
            &hex("7db5df06e7a69e432496adedb00851923595221596ae2ae9fb8115c1e9ed0a44")[..]
        );
        let mut client = [0u8; 32];
        expand_label_with_prefix(b"tls13 ", &initial[..], b"client in", &[], &mut client);
        assert_eq!(
            client.to_vec(),
            hex("c00cf151ca5be075ed0ebfb5c80323c42d6b7db67881289af4008f1f6c357aea")
        );
        let mut key = [0u8; 16];
        expand_label_with_prefix(b"tls13 ", &client, b"quic key", &[], &mut key);
        assert_eq!(key.to_vec(), hex("1f369613dd76d5467730efcbe3b1a22d"));
        let mut iv = [0u8; 12];
        expand_label_with_prefix(b"tls13 ", &client, b"quic iv", &[], &mut iv);
        assert_eq!(iv.to_vec(), hex("fa044b2f42a3fd3b46fb255c"));
        let mut hp = [0u8; 16];
        expand_label_with_prefix(b"tls13 ", &client, b"quic hp", &[], &mut hp);
        assert_eq!(hp.to_vec(), hex("9f50449e04a0e810283a1e9933adedd2"));
        // One expander for all three gives the same bytes.
        let x = Expander::new(&client);
        let (mut key2, mut iv2, mut hp2) = ([0u8; 16], [0u8; 12], [0u8; 16]);
        x.label_with_prefix(b"tls13 ", b"quic key", &[], &mut key2);
        x.label_with_prefix(b"tls13 ", b"quic iv", &[], &mut iv2);
        x.label_with_prefix(b"tls13 ", b"quic hp", &[], &mut hp2);
        assert_eq!((key2, iv2, hp2), (key, iv, hp));
    }
}
