//! Early data (0-RTT): the server's policy, its anti-replay strike register, and how a
//! handshake's offer of early data went.
//!
//! A resuming client may send stream data and DATAGRAMs in its first flight, protected
//! with a key derived from the ticket's PSK and its ClientHello (`"c e traffic"`, RFC 8446
//! §7.1). Nothing in that flight is fresh: an attacker who records it can send it again.
//! A server therefore accepts early data only when
//!
//! - its policy allows it ([`EarlyDataSettings::enabled`]) and the ticket was issued
//!   while it did, under the same cipher suite, ALPN and transport limits;
//! - the ClientHello is *fresh*: the ticket age the client reports agrees, within
//!   [`EarlyDataSettings::window`], with the age the server computes from the ticket's
//!   issue time (RFC 8446 §8.3), so an old recording is refused;
//! - the ClientHello was never seen before: its binder (unique per ClientHello, and
//!   unforgeable without the PSK) goes into a bounded strike register
//!   ([`AntiReplay`], RFC 8446 §8.2) that remembers every accepted one for twice the
//!   window, which is as long as a copy could pass the freshness check.
//!
//! A refused offer costs nothing but the round trip: the handshake goes on, and the
//! client sends its early data again under 1-RTT keys. A full register refuses early
//! data rather than forget an entry. What a cluster of servers can guarantee (each
//! server refuses a replay it has seen; a copy sent to *another* server of the cluster
//! within the window is accepted there once) is in `docs/security.md`.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Shards of the strike register: a handshake takes one shard's lock, once.
const SHARDS: usize = 16;
/// Entries the default register holds.
pub const DEFAULT_REPLAY_CAPACITY: usize = 1 << 16;
/// The default freshness window.
pub const DEFAULT_EARLY_WINDOW: Duration = Duration::from_secs(10);

/// A server's early-data policy.
///
/// ```
/// use stoq::handshake::EarlyDataSettings;
/// // Accept 0-RTT from resuming clients: requests in it may be replayed to another server
/// // of the cluster, so serve only idempotent ones from it.
/// let early = EarlyDataSettings::accept();
/// assert!(early.enabled);
/// assert!(!EarlyDataSettings::default().enabled);
/// ```
#[derive(Debug, Clone)]
pub struct EarlyDataSettings {
    /// Accept early data, and issue tickets that allow it. Default: off.
    pub enabled: bool,
    /// How far the ticket age a client reports may be from the server's own account
    /// (1 s to 60 s; clocks, rounding and the round trip make up the difference).
    /// Default: 10 s.
    pub window: Duration,
    /// The strike register. Share one `Arc` between configurations that replace one
    /// another (a reload), or a ClientHello accepted under the old one could be
    /// replayed under the new.
    pub replay: Arc<AntiReplay>,
}

impl Default for EarlyDataSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            window: DEFAULT_EARLY_WINDOW,
            replay: Arc::new(AntiReplay::new(DEFAULT_REPLAY_CAPACITY)),
        }
    }
}

impl EarlyDataSettings {
    /// Early data accepted, with the default window and register.
    pub fn accept() -> Self {
        Self {
            enabled: true,
            ..Self::default()
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// A window outside 1 s..=60 s.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.window < Duration::from_secs(1) || self.window > Duration::from_secs(60) {
            return Err("the early-data freshness window must be between 1 s and 60 s");
        }
        Ok(())
    }
}

/// Why a server refused a client's early data (the handshake went on; the client sends
/// it again at 1-RTT), or, at the client, that it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EarlyDataRefusal {
    /// The server does not accept early data.
    Disabled,
    /// The ticket was not resumed (refused, or none could be used).
    NotResumed,
    /// The ticket was issued without permission for early data.
    NotInTicket,
    /// The handshake chose another cipher suite or ALPN than the ticket's connection.
    Terms,
    /// The server's transport limits changed since the ticket was issued.
    Limits,
    /// The reported ticket age is too far from the server's account: an old recording,
    /// or a client clock far off.
    Stale,
    /// The strike register has seen this ClientHello: a replay.
    Replay,
    /// The strike register is full.
    RegisterFull,
    /// Seen at the client: the server did not accept it (its reason stays there).
    Declined,
}

impl EarlyDataRefusal {
    /// Every reason, in index order.
    pub const ALL: [Self; 9] = [
        Self::Disabled,
        Self::NotResumed,
        Self::NotInTicket,
        Self::Terms,
        Self::Limits,
        Self::Stale,
        Self::Replay,
        Self::RegisterFull,
        Self::Declined,
    ];

    /// A short, stable name, for metrics labels and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::NotResumed => "not_resumed",
            Self::NotInTicket => "not_in_ticket",
            Self::Terms => "terms",
            Self::Limits => "limits",
            Self::Stale => "stale",
            Self::Replay => "replay",
            Self::RegisterFull => "register_full",
            Self::Declined => "declined",
        }
    }
}

/// How a connection's early data went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EarlyData {
    /// None was offered.
    #[default]
    NotOffered,
    /// The client offered early data and the server has not answered yet (client only).
    Pending,
    /// Accepted: the server read the first flight's data.
    Accepted,
    /// Refused, for this reason: the client sends that data again at 1-RTT.
    Refused(EarlyDataRefusal),
}

/// A bounded strike register of ClientHellos that carried accepted early data
/// (RFC 8446 §8.2), shared by every worker of a server: a ClientHello can be replayed to
/// any of them.
#[derive(Debug)]
pub struct AntiReplay {
    shards: [Mutex<Shard>; SHARDS],
    per_shard: usize,
    /// Picks a ClientHello's shard with a key of this process's: a client that can make
    /// binders at will (any holder of a ticket) cannot aim them all at one shard and
    /// fill it with a sixteenth of the effort.
    shard_key: RandomState,
}

#[derive(Debug, Default)]
struct Shard {
    /// Entry → when it may be forgotten (Unix seconds).
    seen: HashMap<[u8; 16], u64>,
    /// Entries in insertion order, with their expiry, for forgetting.
    order: VecDeque<([u8; 16], u64)>,
}

impl AntiReplay {
    /// A register of at most `capacity` ClientHellos (at least one per shard).
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: Default::default(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            shard_key: RandomState::new(),
        }
    }

    /// Records `id` (a ClientHello's binder) at `now` (Unix seconds), to be remembered for
    /// `keep` seconds. Entries are forgotten in the order they were made, so one made
    /// with a shorter `keep` may outlive its expiry until those before it go.
    ///
    /// # Errors
    /// [`EarlyDataRefusal::Replay`] if `id` is remembered; [`EarlyDataRefusal::RegisterFull`]
    /// if its shard holds `capacity / 16` unexpired entries.
    pub fn check_and_record(
        &self,
        id: &[u8; 32],
        now: u64,
        keep: u64,
    ) -> Result<(), EarlyDataRefusal> {
        let mut key = [0u8; 16];
        key.copy_from_slice(&id[..16]);
        let shard = &self.shards[(self.shard_key.hash_one(key) % SHARDS as u64) as usize];
        let mut s = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(&(k, expires)) = s.order.front() {
            if expires > now {
                break;
            }
            s.order.pop_front();
            if s.seen.get(&k) == Some(&expires) {
                s.seen.remove(&k);
            }
        }
        if s.seen.contains_key(&key) {
            return Err(EarlyDataRefusal::Replay);
        }
        if s.seen.len() >= self.per_shard {
            return Err(EarlyDataRefusal::RegisterFull);
        }
        let expires = now.saturating_add(keep);
        s.seen.insert(key, expires);
        s.order.push_back((key, expires));
        Ok(())
    }

    /// ClientHellos remembered now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .seen
                    .len()
            })
            .sum()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a client's reported ticket age (`reported_ms`, de-obfuscated) agrees with the
/// server's account (`now - issued`, seconds) within `window`.
pub(crate) fn is_fresh(issued: u64, now: u64, reported_ms: u32, window: Duration) -> bool {
    let expected_ms = now.saturating_sub(issued).saturating_mul(1000);
    // The server's clock has whole seconds: its account may be up to 1 s short.
    let slack = window.as_millis() as u64 + 1000;
    expected_ms.abs_diff(u64::from(reported_ms)) <= slack
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn a_client_hello_is_accepted_once_and_forgotten_after_its_time() {
        let r = AntiReplay::new(1024);
        assert_eq!(r.check_and_record(&id(1), 100, 20), Ok(()));
        assert_eq!(
            r.check_and_record(&id(1), 119, 20),
            Err(EarlyDataRefusal::Replay)
        );
        assert_eq!(r.check_and_record(&id(2), 119, 20), Ok(()));
        assert_eq!(r.len(), 2);
        // At its expiry it is forgotten (a copy now fails the freshness check instead).
        assert_eq!(r.check_and_record(&id(1), 120, 20), Ok(()));
    }

    #[test]
    fn a_full_register_refuses_rather_than_forgets() {
        // 16 entries: one per shard.
        let r = AntiReplay::new(16);
        let a = id(3);
        // Another ClientHello whose shard is `a`'s (the shard key is random).
        let shard = |x: &[u8; 32]| {
            let k: [u8; 16] = x[..16].try_into().expect("16 bytes");
            r.shard_key.hash_one(k) % SHARDS as u64
        };
        let b = (4..=255u8)
            .map(id)
            .find(|b| shard(b) == shard(&a))
            .expect("one of 252 shares a shard of 16");
        assert_eq!(r.check_and_record(&a, 0, 20), Ok(()));
        assert_eq!(
            r.check_and_record(&b, 5, 20),
            Err(EarlyDataRefusal::RegisterFull)
        );
        assert_eq!(r.check_and_record(&a, 5, 20), Err(EarlyDataRefusal::Replay));
        // Once `a` expires, room again.
        assert_eq!(r.check_and_record(&b, 20, 20), Ok(()));
    }

    #[test]
    fn freshness_allows_the_window_and_no_more() {
        let w = Duration::from_secs(10);
        assert!(is_fresh(1_000, 1_005, 5_000, w));
        assert!(is_fresh(1_000, 1_005, 0, w));
        assert!(is_fresh(1_000, 1_005, 16_000, w));
        assert!(!is_fresh(1_000, 1_005, 16_001, w));
        assert!(!is_fresh(1_000, 1_030, 5_000, w));
        // A ticket "issued" in the future by a skewed server clock.
        assert!(is_fresh(1_002, 1_000, 0, w));
    }
}
