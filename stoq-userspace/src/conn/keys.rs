//! Cluster keys: the secrets every server of a cluster shares, so that a stateless reset
//! or an address-validation token made by one server is good on another, and after a
//! restart.
//!
//! A key set holds up to seven *generations* (0..=6, QUIC-LB's config-rotation codepoints;
//! 7 means "unroutable"), each a 32-byte secret from which the stateless-reset key and the
//! token key are derived with HKDF-Expand-Label. One generation is *current*: new
//! connection IDs carry it in their first octet's top three bits and new tokens in their
//! first byte, so a server resets a connection, or opens a token, with the key of the
//! generation that made it. A generation may also carry a QUIC-LB key (16 octets): its
//! CIDs are then encrypted as draft-ietf-quic-load-balancers-21 says
//! ([`super::quic_lb`]), so a QUIC-LB load balancer holding the key routes them and an
//! observer cannot read the server ID. Rotation: add a generation and make it current on every
//! server, and remove the old one once no connection uses its CIDs and its tokens have
//! expired. Connections are never dropped by a rotation.
//!
//! The key file is text:
//!
//! ```text
//! # STOQ cluster keys: give this file to every server of the cluster; keep it secret.
//! stoq-cluster-keys 1
//! current 1
//! key 0 5f1e…(64 hex digits)
//! key 1 09ab…(64 hex digits)
//! lb-key 1 8f95…(32 hex digits, optional)
//! ```

use std::fmt::Write as _;

use rand_core::RngCore;
use zeroize::Zeroizing;

use crate::crypto::expand_label;
use crate::handshake::TicketKeys;

/// Generations a key set can hold (QUIC-LB config rotation 0..=6).
pub const GENERATIONS: usize = 7;
/// The largest key file accepted.
pub const MAX_KEY_FILE: usize = 4096;

const HEADER: &str = "stoq-cluster-keys 1";

/// The secrets a cluster of servers shares (see the module docs).
///
/// ```
/// use stoq::conn::ClusterKeys;
/// // One generation (1) of a secret every server of the cluster shares; in production
/// // `stoq cluster-keys --out FILE` writes one and `ClusterKeys::parse` reads it.
/// let keys = ClusterKeys::new(1, [7u8; 32]).expect("generations are 0..=6");
/// let mut c = stoq::conn::EndpointConfig::new();
/// c.cluster_keys = Some(std::sync::Arc::new(keys));
/// ```
#[derive(Clone)]
pub struct ClusterKeys {
    secrets: [Option<Zeroizing<[u8; 32]>>; GENERATIONS],
    lb: [Option<Zeroizing<[u8; 16]>>; GENERATIONS],
    current: u8,
}

impl std::fmt::Debug for ClusterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterKeys")
            .field("current", &self.current)
            .field("generations", &self.generations().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Why a key set or key file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file is larger than [`MAX_KEY_FILE`] bytes.
    #[error("cluster key file is larger than {MAX_KEY_FILE} bytes: is it the right file?")]
    TooLarge,
    /// The first meaningful line is not `stoq-cluster-keys 1`.
    #[error("not a STOQ cluster key file: the first line must be `{HEADER}`")]
    Header,
    /// A line does not parse.
    #[error("cluster key file, line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A generation outside 0..=6.
    #[error("generation {0} is outside 0..=6 (QUIC-LB's config rotation codepoints)")]
    BadGeneration(u8),
    /// A generation appears twice.
    #[error("generation {0} has two keys: keep one")]
    DuplicateGeneration(u8),
    /// No `current` line, or it names a generation without a key.
    #[error("the current generation {0:?} has no key: add `key <generation> <64 hex digits>`")]
    NoCurrentKey(Option<u8>),
    /// An `lb-key` for a generation that has no `key`.
    #[error("generation {0} has an lb-key but no key: add `key {0} <64 hex digits>`")]
    LbKeyWithoutKey(u8),
    /// Reading the file failed.
    #[error("cannot read the cluster key file: {0}")]
    Io(String),
}

impl ClusterKeys {
    /// One generation, `current`, with `secret`.
    ///
    /// # Errors
    /// [`KeyFileError::BadGeneration`] outside 0..=6.
    pub fn new(current: u8, secret: [u8; 32]) -> Result<Self, KeyFileError> {
        check_generation(current)?;
        let mut secrets: [Option<Zeroizing<[u8; 32]>>; GENERATIONS] = Default::default();
        secrets[usize::from(current)] = Some(Zeroizing::new(secret));
        Ok(Self {
            secrets,
            lb: Default::default(),
            current,
        })
    }

    /// A fresh random key set (generation 0), as a server without a key file uses: its
    /// resets and tokens are good only until it restarts.
    pub fn random(rng: &mut impl RngCore) -> Self {
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        let k = Self::new(0, s).expect("generation 0 is valid");
        zeroize::Zeroize::zeroize(&mut s);
        k
    }

    /// Adds (or replaces) generation `generation`'s secret.
    ///
    /// # Errors
    /// [`KeyFileError::BadGeneration`] outside 0..=6.
    pub fn with_generation(
        mut self,
        generation: u8,
        secret: [u8; 32],
    ) -> Result<Self, KeyFileError> {
        check_generation(generation)?;
        self.secrets[usize::from(generation)] = Some(Zeroizing::new(secret));
        Ok(self)
    }

    /// Gives generation `generation` a QUIC-LB key: its CIDs are encrypted.
    ///
    /// # Errors
    /// [`KeyFileError::BadGeneration`] outside 0..=6; [`KeyFileError::LbKeyWithoutKey`] if
    /// the generation has no secret.
    pub fn with_lb_key(mut self, generation: u8, key: [u8; 16]) -> Result<Self, KeyFileError> {
        check_generation(generation)?;
        if self.secret(generation).is_none() {
            return Err(KeyFileError::LbKeyWithoutKey(generation));
        }
        self.lb[usize::from(generation)] = Some(Zeroizing::new(key));
        Ok(self)
    }

    /// Generation `generation`'s QUIC-LB key, if it has one.
    pub fn lb_key(&self, generation: u8) -> Option<super::quic_lb::LbKey> {
        self.lb
            .get(usize::from(generation))?
            .as_ref()
            .map(|k| super::quic_lb::LbKey::new(k))
    }

    /// Whether any generation encrypts its CIDs.
    pub fn encrypts_cids(&self) -> bool {
        self.lb.iter().any(Option::is_some)
    }

    /// Makes `generation` current: new CIDs and tokens use it.
    ///
    /// # Errors
    /// [`KeyFileError::NoCurrentKey`] if it has no key.
    pub fn with_current(mut self, generation: u8) -> Result<Self, KeyFileError> {
        if self.secret(generation).is_none() {
            return Err(KeyFileError::NoCurrentKey(Some(generation)));
        }
        self.current = generation;
        Ok(self)
    }

    /// The current generation.
    pub fn current(&self) -> u8 {
        self.current
    }

    /// The generations that have a key, in order.
    pub fn generations(&self) -> impl Iterator<Item = u8> + '_ {
        (0..GENERATIONS as u8).filter(|g| self.secret(*g).is_some())
    }

    fn secret(&self, generation: u8) -> Option<&[u8; 32]> {
        self.secrets
            .get(usize::from(generation))?
            .as_ref()
            .map(|s| &**s)
    }

    /// Generation `generation`'s stateless-reset key.
    pub(crate) fn reset_key(&self, generation: u8) -> Option<Zeroizing<[u8; 32]>> {
        self.derive(generation, b"stoq reset")
    }

    /// Generation `generation`'s token key.
    pub(crate) fn token_key(&self, generation: u8) -> Option<Zeroizing<[u8; 32]>> {
        self.derive(generation, b"stoq token")
    }

    /// The session-ticket keys of every generation (`"stoq ticket"` derived from each
    /// secret), sealing new tickets with the current one's, under `settings`.
    pub fn ticket_keys(&self, settings: crate::handshake::TicketSettings) -> TicketKeys {
        TicketKeys::new(
            self.current,
            self.generations()
                .filter_map(|g| Some((g, self.derive(g, b"stoq ticket")?))),
            settings,
        )
    }

    fn derive(&self, generation: u8, label: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
        let secret = self.secret(generation)?;
        let mut out = Zeroizing::new([0u8; 32]);
        expand_label(secret, label, &[], &mut out[..]);
        Some(out)
    }

    /// Parses a key file (see the module docs). Blank lines and `#` comments are ignored.
    ///
    /// # Errors
    /// A [`KeyFileError`] naming the line and what is wrong.
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        if text.len() > MAX_KEY_FILE {
            return Err(KeyFileError::TooLarge);
        }
        let mut secrets: [Option<Zeroizing<[u8; 32]>>; GENERATIONS] = Default::default();
        let mut lb: [Option<Zeroizing<[u8; 16]>>; GENERATIONS] = Default::default();
        let mut current = None;
        let mut header = false;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |reason| KeyFileError::Line {
                line: i + 1,
                reason,
            };
            if !header {
                if line != HEADER {
                    return Err(KeyFileError::Header);
                }
                header = true;
                continue;
            }
            let mut words = line.split_ascii_whitespace();
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some("current"), Some(g), None, None) => {
                    if current.is_some() {
                        return Err(at("a second `current` line"));
                    }
                    let g = generation(g).ok_or(at("`current` needs a generation 0..=6"))?;
                    current = Some(g);
                }
                (Some("key"), Some(g), Some(hex), None) => {
                    let g = generation(g).ok_or(at("`key` needs a generation 0..=6"))?;
                    let secret =
                        parse_hex::<32>(hex).ok_or(at("a key is 64 hex digits (32 bytes)"))?;
                    let slot = &mut secrets[usize::from(g)];
                    if slot.is_some() {
                        return Err(KeyFileError::DuplicateGeneration(g));
                    }
                    *slot = Some(secret);
                }
                (Some("lb-key"), Some(g), Some(hex), None) => {
                    let g = generation(g).ok_or(at("`lb-key` needs a generation 0..=6"))?;
                    let key =
                        parse_hex::<16>(hex).ok_or(at("an lb-key is 32 hex digits (16 bytes)"))?;
                    let slot = &mut lb[usize::from(g)];
                    if slot.is_some() {
                        return Err(KeyFileError::DuplicateGeneration(g));
                    }
                    *slot = Some(key);
                }
                _ => {
                    return Err(at(
                        "expected `current <generation>`, `key <generation> <hex>` or `lb-key \
                         <generation> <hex>`",
                    ));
                }
            }
        }
        if !header {
            return Err(KeyFileError::Header);
        }
        let Some(current) = current else {
            return Err(KeyFileError::NoCurrentKey(None));
        };
        if secrets[usize::from(current)].is_none() {
            return Err(KeyFileError::NoCurrentKey(Some(current)));
        }
        if let Some(g) = (0..GENERATIONS).find(|&g| lb[g].is_some() && secrets[g].is_none()) {
            return Err(KeyFileError::LbKeyWithoutKey(g as u8));
        }
        Ok(Self {
            secrets,
            lb,
            current,
        })
    }

    /// The key file for this set (it holds the secrets: write it with mode 0600).
    pub fn to_file(&self) -> String {
        let mut out = String::from(
            "# STOQ cluster keys: give this file to every server of the cluster; keep it secret.\n",
        );
        let _ = writeln!(out, "{HEADER}");
        let _ = writeln!(out, "current {}", self.current);
        for g in self.generations() {
            let _ = write!(out, "key {g} ");
            for b in self.secret(g).expect("listed") {
                let _ = write!(out, "{b:02x}");
            }
            out.push('\n');
            if let Some(k) = &self.lb[usize::from(g)] {
                let _ = write!(out, "lb-key {g} ");
                for b in k.iter() {
                    let _ = write!(out, "{b:02x}");
                }
                out.push('\n');
            }
        }
        out
    }
}

fn check_generation(g: u8) -> Result<(), KeyFileError> {
    if usize::from(g) < GENERATIONS {
        Ok(())
    } else {
        Err(KeyFileError::BadGeneration(g))
    }
}

fn generation(s: &str) -> Option<u8> {
    match s.as_bytes() {
        [d @ b'0'..=b'6'] => Some(d - b'0'),
        _ => None,
    }
}

fn parse_hex<const N: usize>(s: &str) -> Option<Zeroizing<[u8; N]>> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = Zeroizing::new([0u8; N]);
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: u8) -> String {
        format!("{b:02x}").repeat(32)
    }

    #[test]
    fn a_key_file_round_trips() {
        let k = ClusterKeys::new(0, [1; 32])
            .unwrap()
            .with_generation(3, [2; 32])
            .unwrap()
            .with_current(3)
            .unwrap()
            .with_lb_key(3, [9; 16])
            .unwrap();
        assert!(k.encrypts_cids());
        assert_eq!(
            ClusterKeys::new(0, [1; 32])
                .unwrap()
                .with_lb_key(1, [0; 16])
                .unwrap_err(),
            KeyFileError::LbKeyWithoutKey(1)
        );
        let text = k.to_file();
        assert!(
            text.contains(&format!("lb-key 3 {}", "09".repeat(16))),
            "{text}"
        );
        let back = ClusterKeys::parse(&text).unwrap();
        assert_eq!(back.current(), 3);
        assert_eq!(back.generations().collect::<Vec<_>>(), [0, 3]);
        assert_eq!(back.reset_key(0), k.reset_key(0));
        assert_eq!(back.token_key(3), k.token_key(3));
        assert!(back.reset_key(1).is_none());
        assert!(back.lb_key(3).is_some() && back.lb_key(0).is_none());
        // Derived keys differ by purpose and generation.
        assert_ne!(k.reset_key(0), k.token_key(0));
        assert_ne!(k.reset_key(0), k.reset_key(3));
        assert!(!format!("{k:?}").contains("0101"), "Debug shows no secret");
    }

    #[test]
    fn bad_key_files_are_typed() {
        let ok_key = format!("key 1 {}", hex(0xab));
        let cases: Vec<(String, KeyFileError)> = vec![
            ("".into(), KeyFileError::Header),
            ("# only a comment\n".into(), KeyFileError::Header),
            ("stoq-cluster-keys 2\n".into(), KeyFileError::Header),
            (
                format!("stoq-cluster-keys 1\n{ok_key}\n"),
                KeyFileError::NoCurrentKey(None),
            ),
            (
                format!("stoq-cluster-keys 1\ncurrent 2\n{ok_key}\n"),
                KeyFileError::NoCurrentKey(Some(2)),
            ),
            (
                format!("stoq-cluster-keys 1\ncurrent 1\n{ok_key}\n{ok_key}\n"),
                KeyFileError::DuplicateGeneration(1),
            ),
            (
                format!("stoq-cluster-keys 1\ncurrent 7\n{ok_key}\n"),
                KeyFileError::Line {
                    line: 2,
                    reason: "`current` needs a generation 0..=6",
                },
            ),
            (
                "stoq-cluster-keys 1\ncurrent 1\nkey 1 abcd\n".into(),
                KeyFileError::Line {
                    line: 3,
                    reason: "a key is 64 hex digits (32 bytes)",
                },
            ),
            (
                format!(
                    "stoq-cluster-keys 1\ncurrent 1\nkey 1 {}zz\n",
                    &hex(0)[..62]
                ),
                KeyFileError::Line {
                    line: 3,
                    reason: "a key is 64 hex digits (32 bytes)",
                },
            ),
            (
                format!("stoq-cluster-keys 1\n\ncurrent 1\n{ok_key} extra\n"),
                KeyFileError::Line {
                    line: 4,
                    reason: "expected `current <generation>`, `key <generation> <hex>` or \
                             `lb-key <generation> <hex>`",
                },
            ),
            ("x".repeat(MAX_KEY_FILE + 1), KeyFileError::TooLarge),
            (
                format!(
                    "stoq-cluster-keys 1\ncurrent 1\n{ok_key}\nlb-key 2 {}\n",
                    "ab".repeat(16)
                ),
                KeyFileError::LbKeyWithoutKey(2),
            ),
            (
                format!("stoq-cluster-keys 1\ncurrent 1\n{ok_key}\nlb-key 1 abcd\n"),
                KeyFileError::Line {
                    line: 4,
                    reason: "an lb-key is 32 hex digits (16 bytes)",
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(ClusterKeys::parse(&text).unwrap_err(), want, "{text:?}");
        }
        assert_eq!(
            ClusterKeys::new(7, [0; 32]).unwrap_err(),
            KeyFileError::BadGeneration(7)
        );
        let parsed = ClusterKeys::parse(&format!(
            "  # c\nstoq-cluster-keys 1\r\ncurrent 1\n {ok_key}  \n"
        ))
        .unwrap();
        assert_eq!(parsed.current(), 1);
    }
}
