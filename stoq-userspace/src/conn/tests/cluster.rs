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

/// A client that only sends keep-alive PINGs (it is downloading, and its server went
/// away) is reset by the restarted server: its smallest packets leave room for a reset
/// shorter than themselves (RFC 9000 §10.3). An unpadded PING packet was too short to be
/// answered, so such a client waited for its idle timeout.
#[test]
fn a_keep_alive_alone_draws_the_reset() {
    let mut p = connected_with(Some(keys(0, 9)));
    p.client_conn().adapt(Adaptation {
        keep_alive: Some(Some(Duration::from_millis(200))),
        ..Adaptation::default()
    });
    // Quiet, so that only the keep-alive goes out.
    p.drive_until(Duration::from_millis(500), |_| false);
    let cid = p.client_conn().remote_cid.len();
    p.server = server(&p, 77, Some(keys(0, 9)), RetryPolicy::Never);
    p.server_conns.clear();
    let sent_before = p.log.len();
    assert!(p.drive_until(Duration::from_secs(2), |p| p.lost(false).is_some()));
    assert_eq!(p.lost(false), Some(ConnectionError::Reset));
    // What drew it: the client's small keep-alive packets.
    let smallest = p.log[sent_before..]
        .iter()
        .filter(|(_, to_server, _)| *to_server)
        .map(|(_, _, size)| *size)
        .min()
        .expect("the client sent");
    assert!(smallest >= 1 + cid + 22 && smallest < 64, "{smallest}");
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

/// A server endpoint (server id 0x0102, worker 5) whose cluster keys give generation 0 the
/// QUIC-LB key `lb`.
fn lb_server(lb: Option<[u8; 16]>) -> Endpoint {
    let mut k = ClusterKeys::new(0, [9; 32]).unwrap();
    if let Some(lb) = lb {
        k = k.with_lb_key(0, lb).unwrap();
    }
    let (cfg, _) = configs(Setup::default());
    Endpoint::new(
        EndpointConfig {
            cluster_keys: Some(Arc::new(k)),
            server_id: 0x0102,
            worker_id: 5,
            ..endpoint_config(2, 1452, Instant::now())
        },
        Some(Arc::new(cfg)),
    )
    .unwrap()
}

/// Pearson's chi-square statistic of `counts` against a uniform spread.
fn chi_square(counts: &[u32]) -> f64 {
    let total: u32 = counts.iter().sum();
    let expect = f64::from(total) / counts.len() as f64;
    counts
        .iter()
        .map(|&c| (f64::from(c) - expect).powi(2) / expect)
        .sum()
}

/// With a QUIC-LB key the CIDs are encrypted: the key recovers the server and worker ids
/// from every one of 10,000, while a wrong key (or reading the octets as they are) finds
/// the server ID's first octet spread uniformly over 256 values (chi-square below 400 for
/// 255 degrees of freedom, whose mean is 255 and standard deviation 23). Without a key
/// every CID shows the server ID in clear, and the same statistic is enormous.
#[test]
fn quic_lb_encrypted_cids_hide_the_server_id_without_the_key() {
    use crate::conn::quic_lb::LbKey;
    let right = [0x8f; 16];
    let mut ep = lb_server(Some(right));
    assert!(ep.encrypts_cids());
    let l = stoq_common::cid::CidLayout::DEFAULT;
    let (key, wrong) = (LbKey::new(&right), LbKey::new(&[0x70; 16]));
    let mut by_wrong_key = [0u32; 256];
    let mut as_seen = [0u32; 256];
    for _ in 0..10_000 {
        let cid = ep.new_cid_for_test();
        let b = cid.as_bytes();
        assert_eq!(
            b[0] & 0x1f,
            (l.len() - 1) as u8,
            "length self-description stays"
        );
        assert_eq!(ep.cid_worker(b), Some(5));
        let mut plain = b.to_vec();
        key.decrypt(&mut plain[1..]);
        assert_eq!(
            &plain[1..4],
            &[0x01, 0x02, 5],
            "server id and worker under the key"
        );
        let mut guess = b.to_vec();
        wrong.decrypt(&mut guess[1..]);
        by_wrong_key[usize::from(guess[1])] += 1;
        as_seen[usize::from(b[1])] += 1;
    }
    let (w, s) = (chi_square(&by_wrong_key), chi_square(&as_seen));
    assert!(w < 400.0, "wrong key: chi-square {w}");
    assert!(s < 400.0, "ciphertext: chi-square {s}");
    let mut clear = lb_server(None);
    assert!(!clear.encrypts_cids());
    let mut plain_seen = [0u32; 256];
    for _ in 0..10_000 {
        let cid = clear.new_cid_for_test();
        assert_eq!(clear.cid_worker(cid.as_bytes()), Some(5));
        plain_seen[usize::from(cid.as_bytes()[1])] += 1;
    }
    assert!(
        chi_square(&plain_seen) > 100_000.0,
        "plaintext CIDs show the server ID"
    );
}

/// A whole connection with encrypted CIDs: handshake, data both ways, a stateless reset
/// after a restart with the same keys.
#[test]
fn a_connection_runs_on_encrypted_cids() {
    let lb = Arc::new(
        ClusterKeys::new(0, [9; 32])
            .unwrap()
            .with_lb_key(0, [0x8f; 16])
            .unwrap(),
    );
    let mut p = connected_with(Some(lb.clone()));
    let cid = p.server_conn().local_cid();
    assert_eq!(p.server.cid_worker(cid.as_bytes()), Some(0));
    p.exchange_datagrams(b"encrypted cids");
    assert!(reset_by_another_server(&mut p, Some(lb)));
}
