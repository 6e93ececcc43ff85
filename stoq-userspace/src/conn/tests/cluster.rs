//! Cluster keys: a stateless reset made by another server (or after a restart with another
//! seed) ends the client's connection; a Retry token from one server is accepted by
//! another; a key rotation drops nothing.

use super::*;
use crate::conn::keys::ClusterKeys;

fn keys(g: u8, b: u8) -> Arc<ClusterKeys> {
    Arc::new(ClusterKeys::new(g, [b; 32]).unwrap())
}

/// A server endpoint with seed `seed`, `keys` and `retry`.
fn server(p: &Pair, seed: u8, keys: Option<Arc<ClusterKeys>>, retry: RetryPolicy) -> Endpoint {
    let (cfg, _) = configs(Setup::default());
    Endpoint::new(
        EndpointConfig {
            cluster_keys: keys,
            retry,
            ..endpoint_config(seed, 1452, p.start)
        },
        Some(Arc::new(cfg)),
    )
    .unwrap()
}

fn connected_with(k: Option<Arc<ClusterKeys>>) -> Pair {
    let (s, c) = configs(Setup::default());
    let mut p = Pair::new(s, 1452, RetryPolicy::Never);
    p.server = server(&p, 2, k, RetryPolicy::Never);
    p.connect(c);
    assert!(p.handshake() && p.both_connected());
    p.exchange_datagrams(b"before");
    p
}

/// Replaces the server by another (seed 77, no connections) and has the client send:
/// whether the client's connection ended with a reset within 2 s.
fn reset_by_another_server(p: &mut Pair, k: Option<Arc<ClusterKeys>>) -> bool {
    p.server = server(p, 77, k, RetryPolicy::Never);
    p.server_conns.clear();
    p.client_conn().send_datagram(b"anyone there?").unwrap();
    p.drive_until(Duration::from_secs(2), |p| p.lost(false).is_some());
    assert!(p.server.stats().resets_sent >= 1, "the new server answered");
    p.lost(false) == Some(ConnectionError::Reset)
}

#[test]
fn a_reset_from_another_server_with_the_cluster_keys_ends_the_connection() {
    let mut p = connected_with(Some(keys(0, 9)));
    assert!(reset_by_another_server(&mut p, Some(keys(0, 9))));
    // Without shared keys the other server's reset cannot match (the client would wait
    // for its idle timeout): the test above depends on the keys, not on the seed.
    let mut p = connected_with(None);
    assert!(!reset_by_another_server(&mut p, None));
    let mut p = connected_with(Some(keys(0, 9)));
    assert!(!reset_by_another_server(&mut p, Some(keys(0, 10))));
}

#[test]
fn a_token_from_one_server_is_accepted_by_another() {
    for (other_keys, accepted) in [(keys(2, 5), true), (keys(2, 6), false)] {
        let (s, c) = configs(Setup::default());
        let mut p = Pair::new(s, 1452, RetryPolicy::Always);
        p.server = server(&p, 2, Some(keys(2, 5)), RetryPolicy::Always);
        let h = p.connect(c);
        // Server A sends the Retry...
        assert!(
            p.drive_until(Duration::from_secs(1), |p| p.server.stats().retries_sent
                >= 1)
        );
        // ...and server B (another seed, the same keys or not) gets the client's answer.
        p.server = server(&p, 3, Some(other_keys), RetryPolicy::Always);
        let up = p.drive_until(Duration::from_millis(500), |p| {
            p.client
                .connection(h)
                .is_some_and(Connection::is_established)
        });
        let st = p.server.stats();
        assert_eq!(up, accepted, "{st:?}");
        if accepted {
            assert_eq!(st.accepted, 1);
            assert_eq!(st.retries_sent, 0, "B did not need a Retry of its own");
            let conn = p.server.connection(p.server_conns[0]).unwrap();
            assert!(conn.validated);
        } else {
            assert_eq!(st.accepted, 0);
            assert!(st.invalid_token >= 1, "{st:?}");
        }
    }
}

/// Generation 0 → generation 1 on a live server: the connection carries on, the CIDs it
/// issues from then on carry generation 1, and a server restarted with the rotated set
/// still resets the connection.
#[test]
fn a_key_rotation_drops_no_connection() {
    let k0 = keys(0, 9);
    let mut p = connected_with(Some(k0.clone()));
    let first = p.server_conn().local_cid();
    assert_eq!(first.as_bytes()[0] >> 5, 0);
    let rotated = Arc::new(
        ClusterKeys::clone(&k0)
            .with_generation(1, [4; 32])
            .unwrap()
            .with_current(1)
            .unwrap(),
    );
    p.server.set_cluster_keys(&rotated);
    // A new server CID (the client migrates to it on a new path, or any NEW_CONNECTION_ID
    // issued from now on) carries generation 1.
    let fresh = p.server.new_cid_for_test();
    assert_eq!(fresh.as_bytes()[0] >> 5, 1);
    p.exchange_datagrams(b"after rotation");
    assert!(p.lost(false).is_none() && p.lost(true).is_none());
    assert!(reset_by_another_server(&mut p, Some(rotated)));
}
