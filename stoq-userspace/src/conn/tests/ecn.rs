//! ECN over the two-endpoint harness: validation on a faithful path, failure on a
//! bleaching one, and CE marks as a congestion signal with nothing lost.

use std::cell::Cell;
use std::rc::Rc;

use super::*;

fn states(p: &mut Pair) -> (&'static str, &'static str) {
    (
        p.client_conn().stats().ecn_state,
        p.server_conn().stats().ecn_state,
    )
}

#[test]
fn a_faithful_path_validates_ecn_both_ways() {
    let mut p = connected_pair();
    p.exchange_datagrams(b"one");
    p.exchange_datagrams(b"two");
    assert_eq!(states(&mut p), ("capable", "capable"));
    // Every datagram since is marked ECT(0).
    let marked = Rc::new(Cell::new((0, 0)));
    let m = Rc::clone(&marked);
    p.tamper = Some(Box::new(move |w: &mut Wire| {
        let (all, ect) = m.get();
        m.set((all + 1, ect + usize::from(w.ecn == EcnCodepoint::Ect0)));
        Verdict::Deliver
    }));
    p.exchange_datagrams(b"three");
    let (all, ect) = marked.get();
    assert!(all > 0);
    assert_eq!(all, ect, "every datagram of a validated path is ECT(0)");
}

#[test]
fn a_bleaching_path_fails_validation_and_stops_marking() {
    let (server, client) = configs(Setup::default());
    let mut p = Pair::new(server, 1452, RetryPolicy::Never);
    let late_marks = Rc::new(Cell::new(0usize));
    let seen = Rc::clone(&late_marks);
    p.tamper = Some(Box::new(move |w: &mut Wire| {
        // After the handshake's first flights, a marked datagram means marking went on.
        if w.seq > 40 && w.ecn != EcnCodepoint::NotEct {
            seen.set(seen.get() + 1);
        }
        // A middlebox that clears the ECN bits.
        w.ecn = EcnCodepoint::NotEct;
        Verdict::Deliver
    }));
    p.connect(client);
    assert!(p.handshake() && p.both_connected());
    for i in 0..20u8 {
        p.exchange_datagrams(&[i]);
    }
    assert_eq!(states(&mut p), ("failed", "failed"));
    assert_eq!(
        late_marks.get(),
        0,
        "nothing marked after validation failed"
    );
}

#[test]
fn ce_marks_reduce_the_window_with_nothing_lost() {
    // NewReno answers a congestion signal deterministically: the window halves.
    let (mut p, client) = newreno_client_pair();
    // A router marks three of the client's datagrams CE once the transfer runs.
    let mut to_server = 0u64;
    p.tamper = Some(Box::new(move |w: &mut Wire| {
        if w.to_server {
            to_server += 1;
        }
        if w.to_server && (300..303).contains(&to_server) {
            assert_eq!(w.ecn, EcnCodepoint::Ect0, "only ECT packets are CE-marked");
            w.ecn = EcnCodepoint::Ce;
        }
        Verdict::Deliver
    }));
    p.connect(client);
    assert!(p.handshake() && p.both_connected());
    let c = p.client_conn();
    let id = c.open_stream(Dir::Uni).unwrap();
    let total = 4usize << 20;
    let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    let mut sent = 0;
    let mut got = Vec::with_capacity(total);
    let mut buf = vec![0u8; 1 << 16];
    let done = p.drive_until(Duration::from_secs(60), |p| {
        let c = p.client_conn();
        while sent < total {
            match c.write(id, &data[sent..]) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        if sent == total {
            let _ = c.finish(id);
        }
        let s = p.server_conn();
        let _ = s.accept_stream(Dir::Uni);
        while let Ok(Some(n)) = s.read(id, &mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        got.len() == total
    });
    assert!(done, "the transfer completed");
    assert!(got == data, "every byte intact and in order");
    let cs = p.client_conn().stats();
    let ss = p.server_conn().stats();
    assert_eq!(ss.ecn_ce_received, 3, "the server counted the marks");
    assert_eq!(cs.ecn_ce_reported, 3, "and reported them in ACK_ECN frames");
    assert_eq!(
        cs.ecn_state, "capable",
        "CE marks are not a validation failure"
    );
    assert_eq!(cs.lost_packets, 0, "nothing was lost");
    assert!(
        cs.congestion_events >= 1,
        "the marks were a congestion signal: {cs:?}"
    );
}
