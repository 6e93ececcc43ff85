//! Batch signing at the endpoint: the handshakes whose ClientHello arrives before the
//! server is next polled share one signature; a lone one is signed alone.

use super::*;

struct Clients {
    server: Endpoint,
    clients: Vec<(Endpoint, ConnectionHandle, SocketAddr)>,
    now: Instant,
}

const SERVER: &str = "[fd00:5710::1]:4433";

impl Clients {
    fn new() -> Self {
        let (server_cfg, _) = configs(Setup::default());
        let now = Instant::now();
        let server = Endpoint::new(endpoint_config(9, 1452, now), Some(Arc::new(server_cfg)))
            .expect("server");
        Self {
            server,
            clients: Vec::new(),
            now,
        }
    }

    /// A new client, its ClientHello not yet sent.
    fn add(&mut self, batch_signatures: bool) {
        let (_, client_cfg) = configs(Setup::default());
        let k = self.clients.len();
        let mut ep =
            Endpoint::new(endpoint_config(20 + k as u8, 1452, self.now), None).expect("client");
        let cfg = ClientConfig {
            batch_signatures,
            ..client_cfg
        };
        let h = ep
            .connect(self.now, SERVER.parse().unwrap(), Arc::new(cfg))
            .expect("connect");
        let addr = format!("[fd00:5710::{}]:5000", 100 + k).parse().unwrap();
        self.clients.push((ep, h, addr));
    }

    /// Delivers everything every client has to send, then everything the server has,
    /// until nothing moves.
    fn run(&mut self) {
        let mut buf = Vec::new();
        for _ in 0..20 {
            let mut moved = false;
            for (ep, _, addr) in &mut self.clients {
                while let Some(t) = ep.poll_transmit(self.now, &mut buf) {
                    moved = true;
                    let ev = self.server.handle_datagram(
                        self.now,
                        *addr,
                        DatagramInfo::default(),
                        &mut buf[..t.size],
                    );
                    if let Some(DatagramEvent::Incoming(i)) = ev {
                        self.server.accept(i, self.now).expect("accepted");
                    }
                }
            }
            while let Some(t) = self.server.poll_transmit(self.now, &mut buf) {
                moved = true;
                let (ep, ..) = self
                    .clients
                    .iter_mut()
                    .find(|(_, _, a)| *a == t.destination)
                    .expect("a client's address");
                ep.handle_datagram(
                    self.now,
                    SERVER.parse().unwrap(),
                    DatagramInfo::default(),
                    &mut buf[..t.size],
                );
            }
            while self.server.poll_event().is_some() {}
            for (ep, ..) in &mut self.clients {
                while ep.poll_event().is_some() {}
            }
            if !moved {
                break;
            }
        }
    }

    fn all_established(&self) -> bool {
        self.clients
            .iter()
            .all(|(ep, h, _)| ep.connection(*h).is_some_and(Connection::is_established))
    }
}

#[test]
fn handshakes_arriving_together_share_one_signature() {
    let mut t = Clients::new();
    // Five clients that accept batch signatures and one that does not, all of whose
    // ClientHellos reach the server before it is polled.
    for k in 0..6 {
        t.add(k != 5);
    }
    t.run();
    assert!(t.all_established());
    let st = t.server.stats();
    assert_eq!(st.handshakes_completed, 6);
    assert_eq!(
        (st.signatures, st.batch_signed, st.largest_batch),
        (2, 5, 5),
        "one batch of five and one signed alone"
    );

    // Later clients that arrive one at a time are each signed alone.
    for _ in 0..2 {
        t.add(true);
        t.run();
    }
    assert!(t.all_established());
    let st = t.server.stats();
    assert_eq!((st.signatures, st.batch_signed), (4, 5));
}

#[test]
fn a_server_with_batch_signing_off_signs_each_handshake() {
    let mut t = Clients::new();
    let (mut server_cfg, _) = configs(Setup::default());
    server_cfg.batch_signing = false;
    t.server =
        Endpoint::new(endpoint_config(9, 1452, t.now), Some(Arc::new(server_cfg))).expect("server");
    for _ in 0..3 {
        t.add(true);
    }
    t.run();
    assert!(t.all_established());
    let st = t.server.stats();
    assert_eq!(
        (st.signatures, st.batch_signed, st.largest_batch),
        (3, 0, 1)
    );
}

#[test]
fn held_signatures_wait_for_the_release_and_then_share_one() {
    let mut t = Clients::new();
    for _ in 0..3 {
        t.add(true);
    }
    // The first ClientHello arrives, the server sends part-way through its receive batch
    // (signatures held): nothing of that handshake leaves, nothing is signed.
    t.server.hold_signatures(true);
    let mut buf = Vec::new();
    let mut deliver = |t: &mut Clients, k: usize| {
        let (ep, _, addr) = &mut t.clients[k];
        while let Some(tx) = ep.poll_transmit(t.now, &mut buf) {
            if let Some(DatagramEvent::Incoming(i)) =
                t.server
                    .handle_datagram(t.now, *addr, DatagramInfo::default(), &mut buf[..tx.size])
            {
                t.server.accept(i, t.now).expect("accepted");
            }
        }
    };
    deliver(&mut t, 0);
    let mut out = Vec::new();
    assert!(t.server.poll_transmit(t.now, &mut out).is_none());
    assert_eq!(t.server.stats().signatures, 0);
    // The rest of the batch, then the release: the three share one signature.
    deliver(&mut t, 1);
    deliver(&mut t, 2);
    t.server.hold_signatures(false);
    t.run();
    assert!(t.all_established());
    let st = t.server.stats();
    assert_eq!((st.signatures, st.batch_signed), (1, 3));
}
