//! Batch signatures through whole handshakes: several servers' flights signed once, each
//! client accepting only its own proof.

use rand_core::OsRng;

use super::tests::*;
use super::*;

/// `n` client/server pairs whose servers have read their ClientHello and wait to sign;
/// the server configuration they share.
fn waiting(n: usize, batch_signatures: bool) -> (Vec<(Handshake, Handshake)>, Arc<ServerConfig>) {
    let (cred, public) = raw(SigAlg::Falcon512);
    let cfg = Arc::new(server_cfg(cred, &CipherSuite::ALL, None));
    let pairs = (0..n)
        .map(|_| {
            let mut c = new_client(
                ClientConfig {
                    batch_signatures,
                    ..client_cfg(Trust::PinnedKey(public.clone()), &CipherSuite::ALL, None)
                },
                &mut OsRng,
            );
            let tickets = Arc::new(ticket::test_keys(&[TICKET_KEY], cfg.tickets));
            let mut s = Handshake::server(cfg.clone(), TransportParams::default(), tickets);
            let ch = c.take_outgoing(Epoch::Initial);
            s.read(Epoch::Initial, &ch, NOW, &mut OsRng).unwrap();
            assert!(s.awaits_signature());
            (c, s)
        })
        .collect();
    (pairs, cfg)
}

/// Signs every waiting server of `pairs` with one batch signature; the proofs, in order.
fn sign_all(pairs: &mut [(Handshake, Handshake)], cfg: &ServerConfig) -> Vec<BatchProof> {
    let requests: Vec<SignatureRequest> = pairs
        .iter()
        .map(|(_, s)| s.signature_request().expect("waits"))
        .collect();
    assert!(requests.iter().all(|r| r.batch));
    let transcripts: Vec<[u8; 32]> = requests.iter().map(|r| r.transcript).collect();
    let (sig, proofs) = cfg.credential.sign_batch(&transcripts, &mut OsRng);
    for ((_, s), p) in pairs.iter_mut().zip(&proofs) {
        s.sign_in_batch(p.clone(), sig.clone(), transcripts.len() as u32);
        assert!(!s.awaits_signature());
    }
    proofs
}

#[test]
fn clients_of_one_batch_all_complete() {
    let (mut pairs, cfg) = waiting(5, true);
    sign_all(&mut pairs, &cfg);
    for (c, s) in pairs {
        let (c, s) = run(c, s, &mut no_tamper).expect("completes");
        assert_eq!(s.signature_batch_size(), 5);
        assert_agree(c, s);
    }
}

#[test]
fn a_proof_for_another_transcript_is_refused() {
    let (mut pairs, cfg) = waiting(2, true);
    let proofs = sign_all(&mut pairs, &cfg);
    let enc = |p: &BatchProof| {
        let mut w = crate::codec::Writer::new();
        p.encode(&mut w);
        w.buf
    };
    let (mine, theirs) = (enc(&proofs[0]), enc(&proofs[1]));
    let (c, s) = pairs.remove(0);
    // The first client receives the second's proof in its CertificateVerify.
    let (side, e) = expect_failure(c, s, &mut |to_server, epoch, bytes| {
        if !to_server && epoch == Epoch::Handshake {
            let at = bytes
                .windows(mine.len())
                .position(|w| w == mine.as_slice())
                .expect("the proof is in the flight");
            bytes[at..at + mine.len()].copy_from_slice(&theirs);
        }
    });
    assert!(matches!(side, Side::Client), "{side:?}");
    assert_eq!(e, HandshakeError::BadSignature);
}

#[test]
fn a_client_that_did_not_ask_refuses_a_batch_signature() {
    // The client's ClientHello is changed in flight to accept batch signatures: the
    // server signs in a batch, and the client, which did not ask, refuses before it
    // checks anything else.
    let (cred, public) = raw(SigAlg::Falcon512);
    let cfg = Arc::new(server_cfg(cred, &CipherSuite::ALL, None));
    let mut c = new_client(
        ClientConfig {
            batch_signatures: false,
            ..client_cfg(Trust::PinnedKey(public), &CipherSuite::ALL, None)
        },
        &mut OsRng,
    );
    let mut ch = c.take_outgoing(Epoch::Initial);
    let Ok(Message::ClientHello(mut m)) = Message::decode(&ch) else {
        panic!("a ClientHello")
    };
    m.batch_signatures = true;
    ch = Message::ClientHello(m).encode();
    let tickets = Arc::new(ticket::test_keys(&[TICKET_KEY], cfg.tickets));
    let mut s = Handshake::server(cfg.clone(), TransportParams::default(), tickets);
    s.read(Epoch::Initial, &ch, NOW, &mut OsRng).unwrap();
    let mut pairs = vec![(c, s)];
    // Two leaves (the second a stranger's), so the signature is a batch one.
    let req = pairs[0].1.signature_request().unwrap();
    let (sig, proofs) = cfg
        .credential
        .sign_batch(&[req.transcript, [9; 32]], &mut OsRng);
    pairs[0].1.sign_in_batch(proofs[0].clone(), sig, 2);
    let (c, s) = pairs.remove(0);
    let (side, e) = expect_failure(c, s, &mut no_tamper);
    assert!(matches!(side, Side::Client), "{side:?}");
    assert_eq!(e, HandshakeError::UnsolicitedBatchSignature);
}

#[test]
fn a_server_signs_alone_for_a_client_without_batch_signatures() {
    let (pairs, _) = waiting(1, false);
    for (c, mut s) in pairs {
        assert!(!s.signature_request().unwrap().batch);
        s.sign_alone(&mut OsRng);
        let (c, s) = run(c, s, &mut no_tamper).expect("completes");
        assert_eq!(s.signature_batch_size(), 1);
        assert_agree(c, s);
    }
}
