//! The client's store of session tickets and address tokens (NEW_TOKEN), by server name
//! and trust.
//!
//! A ticket is used once (RFC 8446 §C.4: a reused ticket would link the connections for
//! an observer), the newest first. Tickets are kept per server name *and* per trust
//! setting: a ticket earned while trusting one key or CA is never offered under another,
//! since a resumed handshake does not show the server's credential again. The store is
//! bounded (servers and tickets per server), and its lock is taken twice per connection
//! (offer, store), never per packet.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use sha2::{Digest, Sha256};

use super::Trust;
use crate::crypto::Secret;
use crate::crypto::sig::VerifyingKey;

/// Tickets kept per server: enough for a client that opens a few connections at once to
/// resume each (a server sends two per connection by default); the oldest go first.
pub const TICKETS_PER_SERVER: usize = 16;

/// A ticket the client holds, with what it needs to resume.
#[derive(Clone)]
pub(crate) struct StoredTicket {
    /// The ticket, opaque.
    pub ticket: Vec<u8>,
    /// Its PSK.
    pub psk: Secret,
    /// When it stops being usable, Unix seconds (client clock).
    pub expires: u64,
    /// The server's key, authenticated by the full handshake the ticket descends from.
    pub server_key: VerifyingKey,
    /// When it was received, Unix seconds (client clock): its age is reported.
    pub received: u64,
    /// The server's obfuscation of the reported age.
    pub age_add: u32,
    /// What the connection that earned it had, if the ticket allows early data.
    pub early: Option<Box<RememberedTerms>>,
}

/// What a client remembers from the connection that earned a ticket allowing early
/// data: 0-RTT uses its suite and the server's limits then (RFC 9000 §7.4.1).
#[derive(Clone)]
pub(crate) struct RememberedTerms {
    pub suite: crate::crypto::CipherSuite,
    pub params: super::params::TransportParams,
}

type Key = (String, [u8; 32]);

/// A bounded, shared store of session tickets (one per client configuration by default;
/// share one `Arc` between configurations to resume across them).
///
/// ```
/// use std::sync::Arc;
/// use stoq::crypto::sig::{SigAlg, SigningKey};
/// use stoq::handshake::{ClientConfig, SessionCache};
/// let (_, server) = SigningKey::generate(SigAlg::Falcon512, &mut rand_core::OsRng);
/// let mut client = ClientConfig::pinned("files.example", server);
/// // Resumption is on by default with a cache of 256 servers; this shares a larger one,
/// // and `client.resumption = None` turns resumption off.
/// client.resumption = Some(Arc::new(SessionCache::new(10_000)));
/// ```
pub struct SessionCache {
    inner: Mutex<Inner>,
    max_servers: usize,
}

#[derive(Default)]
struct Inner {
    tickets: PerServer<StoredTicket>,
    /// Address tokens from NEW_TOKEN, each used once, newest first.
    tokens: PerServer<Vec<u8>>,
    /// The trust setting last looked up, and its digest. A client uses one setting for
    /// its connections, and comparing keys costs less than hashing them again: SHA-256
    /// over a FALCON public key, four times per handshake, was 2.8 % of a resuming
    /// client's CPU at 8 handshakes in flight.
    last_trust: Option<(Trust, [u8; 32])>,
}

impl Inner {
    /// The map key for `server_name` under `trust`.
    fn key(&mut self, server_name: &str, trust: &Trust) -> Key {
        let id = match &self.last_trust {
            Some((t, id)) if t == trust => *id,
            _ => {
                let id = trust_id(trust);
                self.last_trust = Some((trust.clone(), id));
                id
            }
        };
        (server_name.to_string(), id)
    }
}

/// Items kept per server, at most [`TICKETS_PER_SERVER`] each (the oldest dropped), for at
/// most `max_servers` servers (the server stored first dropped to make room).
struct PerServer<T> {
    map: HashMap<Key, VecDeque<T>>,
    /// Servers in the order they were first stored, for eviction.
    order: VecDeque<Key>,
}

impl<T> Default for PerServer<T> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<T> PerServer<T> {
    fn len(&self, key: &Key) -> usize {
        self.map.get(key).map_or(0, VecDeque::len)
    }

    fn put(&mut self, key: Key, item: T, max_servers: usize) {
        if !self.map.contains_key(&key) {
            while self.map.len() >= max_servers {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                self.map.remove(&old);
            }
            self.order.push_back(key.clone());
        }
        let list = self.map.entry(key).or_default();
        if list.len() == TICKETS_PER_SERVER {
            list.pop_front();
        }
        list.push_back(item);
    }

    /// The newest item for `key` that `usable` accepts; the unusable ones are dropped.
    fn take(&mut self, key: &Key, usable: impl FnMut(&T) -> bool) -> Option<T> {
        let list = self.map.get_mut(key)?;
        list.retain(usable);
        let item = list.pop_back();
        if list.is_empty() {
            self.map.remove(key);
            self.order.retain(|k| k != key);
        }
        item
    }
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("servers", &self.servers())
            .field("max_servers", &self.max_servers)
            .finish()
    }
}

impl SessionCache {
    /// A store for the tickets of up to `max_servers` servers (at least 1); the oldest
    /// server's are dropped to make room. Address tokens are bounded alike.
    pub fn new(max_servers: usize) -> Self {
        Self {
            inner: Mutex::default(),
            max_servers: max_servers.max(1),
        }
    }

    /// Servers with tickets stored.
    pub fn servers(&self) -> usize {
        self.lock().tickets.map.len()
    }

    /// Tickets stored for `server_name` under `trust`.
    pub fn tickets_for(&self, server_name: &str, trust: &Trust) -> usize {
        let (g, k) = self.locked(server_name, trust);
        g.tickets.len(&k)
    }

    /// Address tokens stored for `server_name` under `trust`.
    pub fn address_tokens_for(&self, server_name: &str, trust: &Trust) -> usize {
        let (g, k) = self.locked(server_name, trust);
        g.tokens.len(&k)
    }

    /// Forgets every ticket and address token.
    pub fn clear(&self) {
        *self.lock() = Inner::default();
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves valid data: go on with it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The locked cache and the map key for `server_name` under `trust`.
    fn locked(&self, server_name: &str, trust: &Trust) -> (MutexGuard<'_, Inner>, Key) {
        let mut g = self.lock();
        let k = g.key(server_name, trust);
        (g, k)
    }

    /// Takes the newest usable ticket for `server_name` under `trust` at `now` (Unix
    /// seconds), dropping expired ones.
    pub(crate) fn take(&self, server_name: &str, trust: &Trust, now: u64) -> Option<StoredTicket> {
        let (mut g, k) = self.locked(server_name, trust);
        g.tickets.take(&k, |t| t.expires > now)
    }

    /// Takes the newest address token for `server_name` under `trust`.
    pub(crate) fn take_address_token(&self, server_name: &str, trust: &Trust) -> Option<Vec<u8>> {
        let (mut g, k) = self.locked(server_name, trust);
        g.tokens.take(&k, |_| true)
    }

    /// Stores an address token for `server_name` under `trust`.
    pub(crate) fn put_address_token(&self, server_name: &str, trust: &Trust, token: &[u8]) {
        let max = self.max_servers;
        let (mut g, k) = self.locked(server_name, trust);
        g.tokens.put(k, token.to_vec(), max);
    }

    /// Stores a ticket for `server_name` under `trust`.
    pub(crate) fn put(&self, server_name: &str, trust: &Trust, t: StoredTicket) {
        let max = self.max_servers;
        let (mut g, k) = self.locked(server_name, trust);
        g.tickets.put(k, t, max);
    }
}

/// A digest of a trust setting: tickets are kept apart per setting.
fn trust_id(trust: &Trust) -> [u8; 32] {
    let mut h = Sha256::new();
    match trust {
        Trust::PinnedKey(k) => {
            h.update(b"pinned");
            h.update(k.as_bytes());
        }
        Trust::Anchors(list) => {
            h.update(b"anchors");
            for k in list {
                h.update((k.as_bytes().len() as u32).to_be_bytes());
                h.update(k.as_bytes());
            }
        }
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::sig::{SigAlg, SigningKey};
    use rand_core::OsRng;

    fn ticket(n: u8, expires: u64, key: &VerifyingKey) -> StoredTicket {
        StoredTicket {
            ticket: vec![n],
            psk: Secret::new([n; 32]),
            expires,
            server_key: key.clone(),
            received: 0,
            age_add: 0,
            early: None,
        }
    }

    #[test]
    fn tickets_are_single_use_newest_first_and_kept_apart_by_trust() {
        let (_, a) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
        let (_, b) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
        let (ta, tb) = (Trust::PinnedKey(a.clone()), Trust::PinnedKey(b.clone()));
        let cache = SessionCache::new(2);
        let last = TICKETS_PER_SERVER as u8 + 1;
        for n in 1..=last {
            cache.put("s", &ta, ticket(n, 100, &a));
        }
        // TICKETS_PER_SERVER kept, the oldest dropped; newest taken first, once each.
        assert_eq!(cache.tickets_for("s", &ta), TICKETS_PER_SERVER);
        assert_eq!(cache.take("s", &tb, 10).map(|t| t.ticket), None);
        // The same key as an anchor is another setting.
        let anchored = Trust::Anchors(vec![a.clone()]);
        assert_eq!(cache.take("s", &anchored, 10).map(|t| t.ticket), None);
        assert_eq!(cache.take("s", &ta, 10).map(|t| t.ticket), Some(vec![last]));
        assert_eq!(
            cache.take("s", &ta, 10).map(|t| t.ticket),
            Some(vec![last - 1])
        );
        assert_eq!(cache.tickets_for("s", &ta), TICKETS_PER_SERVER - 2);
        // Expired tickets are dropped, not offered.
        assert!(cache.take("s", &ta, 100).is_none());
        assert_eq!(cache.servers(), 0);
        // At most `max_servers` servers: the first stored goes first.
        cache.put("one", &ta, ticket(1, 100, &a));
        cache.put("two", &ta, ticket(2, 100, &a));
        cache.put("three", &tb, ticket(3, 100, &b));
        assert_eq!(cache.servers(), 2);
        assert!(cache.take("one", &ta, 10).is_none());
        assert!(cache.take("three", &tb, 10).is_some());
        cache.clear();
        assert_eq!(cache.servers(), 0);
    }

    /// Address tokens are bounded like tickets: per server, and the server stored first
    /// makes room.
    #[test]
    fn address_tokens_are_bounded_alike() {
        let (_, a) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
        let t = Trust::PinnedKey(a);
        let cache = SessionCache::new(2);
        for n in 0..=TICKETS_PER_SERVER as u8 {
            cache.put_address_token("one", &t, &[n]);
        }
        assert_eq!(cache.address_tokens_for("one", &t), TICKETS_PER_SERVER);
        cache.put_address_token("two", &t, &[1]);
        cache.put_address_token("three", &t, &[2]);
        assert_eq!(
            cache.address_tokens_for("one", &t),
            0,
            "the first server made room"
        );
        assert_eq!(cache.take_address_token("three", &t), Some(vec![2]));
        assert_eq!(cache.take_address_token("three", &t), None);
        assert_eq!(cache.address_tokens_for("two", &t), 1);
    }
}
