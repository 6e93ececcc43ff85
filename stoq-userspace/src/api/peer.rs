//! Peer connections through NATs, the parts that do not depend on how two peers trade
//! their candidates (`docs/nat.md`): gathering this endpoint's candidates (host,
//! reflexive from STUN servers, relayed from a TURN relay), punching toward another
//! peer's, and racing connection attempts to them. A rendezvous server
//! (`rendezvous.rs`) is one way to trade candidates; an application with its own
//! signalling channel uses these directly:
//!
//! 1. each peer: [`Endpoint::gather_candidates`], and sends them to the other
//!    ([`crate::nat::rendezvous::encode_candidates`]);
//! 2. the peer being reached: [`Endpoint::punch_toward`] the other's candidates, then
//!    tells it to go;
//! 3. the peer reaching: [`Endpoint::connect_candidates`]; the other gets the connection
//!    from [`Endpoint::accept`].

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{ConnectError, Connection, Endpoint};
use crate::engine::Engine;
use crate::engine::home::{State, Worker};
use crate::nat::BindingError;
use crate::nat::rendezvous::{Candidate, CandidateKind, MAX_CANDIDATES, RendezvousError};
use crate::nat::turn::{TurnCredentials, TurnError, TurnEvent};

/// Punches sent toward each candidate of a peer that asked for this one, spaced by
/// [`PUNCH_SPACING`]: more than one, in case the first is lost or leaves before the NAT
/// is ready.
pub const PUNCHES: usize = 3;
/// Time between punches toward one candidate.
pub const PUNCH_SPACING: Duration = Duration::from_millis(20);
/// How long a connection attempt to one candidate may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Between the starts of the attempts to two direct candidates (unless the earlier one
/// failed sooner): the first candidate has this long to answer alone, and a silent one
/// delays the next by no more. RFC 8305 (Happy Eyeballs) recommends 100 to 250 ms.
pub const ATTEMPT_SPACING: Duration = Duration::from_millis(100);
/// How long after the last direct attempt starts the relayed candidate is tried: a direct
/// path that answers within this is preferred to the relay.
pub const RELAY_GRACE: Duration = Duration::from_millis(250);
/// A direct peer connection that hears nothing for this long while it has data in
/// flight moves to the peer's relayed candidate, when it has one (a NAT rebinding that
/// migration cannot follow: the other NAT filters by port).
pub const RELAY_FALLBACK_SILENCE: Duration = Duration::from_secs(1);
/// How often a direct peer connection with a relayed candidate to fall back on is looked
/// at.
const FALLBACK_CHECK: Duration = Duration::from_millis(100);
/// The keep-alive of a peer connection and of a registration: a PING after this long
/// without sending, below the 30 s after which many NATs forget an idle UDP mapping (RFC
/// 4787 asks for 2 minutes at least; not every NAT complies).
pub const NAT_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Keeps `conn`'s NAT mappings open (see [`NAT_KEEP_ALIVE`]).
pub(super) fn keep_open(conn: &Connection) {
    conn.adapt(crate::conn::Adaptation {
        keep_alive: Some(Some(NAT_KEEP_ALIVE)),
        ..Default::default()
    });
}

/// Why a peer-to-peer step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The connection to the rendezvous server could not be made.
    #[error("rendezvous server: {0}")]
    Connect(#[from] ConnectError),
    /// The connection to the rendezvous server ended (the reason).
    #[error("rendezvous connection lost: {0}")]
    Lost(String),
    /// The rendezvous server (or peer) sent a message that does not decode.
    #[error("rendezvous protocol: {0}")]
    Protocol(#[from] RendezvousError),
    /// The id is empty or over 64 bytes.
    #[error("a peer id is 1 to 64 bytes")]
    BadId,
    /// No peer is registered under that id.
    #[error("no peer is registered under that id at the rendezvous server")]
    NotFound,
    /// The TURN relay could not be used.
    #[error("TURN relay: {0}")]
    Relay(TurnError),
    /// No STUN server named to [`Endpoint::gather_candidates`] answered (the last one's
    /// failure): the endpoint has no reflexive candidate.
    #[error("no STUN server gave a reflexive address: {0}")]
    Stun(BindingError),
    /// No candidate of the peer could be reached.
    #[error("the peer could not be reached at any of its {tried} candidate(s): {last}")]
    Unreachable {
        /// Candidates tried.
        tried: usize,
        /// The last attempt's failure.
        last: String,
    },
}

/// A TURN relay a peer takes a relayed candidate on (see
/// [`Endpoint::join_rendezvous_with`] and [`Endpoint::gather_candidates`]).
#[derive(Debug, Clone)]
pub struct Relay {
    /// The TURN server.
    pub server: SocketAddr,
    /// Its long-term credentials.
    pub credentials: TurnCredentials,
}

/// How a peer connection reaches the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerPath {
    /// Straight to the peer's address (its NAT's public one, or its own).
    Direct(Candidate),
    /// Through the peer's TURN relay: no direct candidate answered.
    Relayed(Candidate),
}

/// A connection to a peer, and how it got there.
#[derive(Debug)]
pub struct PeerConnection {
    /// The connection.
    pub connection: Connection,
    /// The path it uses.
    pub path: PeerPath,
    /// The candidates tried that did not become the connection, with why: each that
    /// failed before it, and each still trying when it won (abandoned).
    pub failed: Vec<(Candidate, String)>,
}

impl Endpoint {
    /// This endpoint's candidates, for an application that trades them over its own
    /// signalling channel: the reflexive address each STUN server in `stun_servers` sees
    /// (asked in turn, `timeout` each; duplicates dropped), then the endpoint's own
    /// address when it is bound to a specific one (host), then with `relay` an address
    /// allocated on that TURN relay (on worker 0, like
    /// [`join_rendezvous_with`](Self::join_rendezvous_with)'s). At most
    /// [`MAX_CANDIDATES`] in all.
    ///
    /// # Errors
    /// [`PeerError::Stun`] when STUN servers were named and none answered,
    /// [`PeerError::Relay`] when the allocation fails.
    pub async fn gather_candidates(
        &self,
        stun_servers: &[SocketAddr],
        relay: Option<&Relay>,
        timeout: Duration,
    ) -> Result<Vec<Candidate>, PeerError> {
        let mut out: Vec<Candidate> = Vec::new();
        let mut last = None;
        for s in stun_servers {
            match self.reflexive_address(*s, timeout).await {
                Ok(a) if out.len() < MAX_CANDIDATES - 2 && !out.iter().any(|c| c.addr == a) => {
                    out.push(Candidate::new(a, CandidateKind::Reflexive));
                }
                Ok(_) => {}
                Err(e) => last = Some(e),
            }
        }
        if out.is_empty()
            && let Some(e) = last
        {
            return Err(PeerError::Stun(e));
        }
        let local = self.local_addr();
        if !local.ip().is_unspecified() && !out.iter().any(|c| c.addr == local) {
            out.push(Candidate::new(local, CandidateKind::Host));
        }
        if let Some(r) = relay {
            out.push(Candidate::new(
                self.allocate(r).await?,
                CandidateKind::Relayed,
            ));
        }
        Ok(out)
    }

    /// Punches toward a peer's candidates, so that its connection gets through this
    /// endpoint's NAT: [`PUNCHES`] rounds of one 28-byte STUN Binding indication to each,
    /// [`PUNCH_SPACING`] apart; returns once the first round has been handed to the
    /// worker that sends it (tell the peer to connect after that), the other rounds follow
    /// in the background. When this endpoint holds a TURN allocation, the candidates'
    /// addresses are also given permissions on it. The peer's connection then arrives
    /// through [`accept`](Self::accept).
    pub async fn punch_toward(&self, candidates: &[Candidate]) {
        let addrs: Vec<SocketAddr> = candidates.iter().map(|c| c.addr).collect();
        let engine = Arc::downgrade(&self.engine);
        permit(&engine, &addrs);
        punch_once(&engine, &addrs);
        tokio::spawn(punch(engine, addrs));
    }

    /// Connects to a peer at its candidates (in the peer's order, relayed ones last):
    /// the first direct candidate at once, each next direct one [`ATTEMPT_SPACING`] later
    /// (at once when every attempt so far has failed), the relayed ones [`RELAY_GRACE`]
    /// after the last direct one; each attempt has [`ATTEMPT_TIMEOUT`]. The first
    /// handshake that completes is the connection, authenticated as `server_name` like any
    /// other, and the handshake validated the path; the other attempts are closed (a peer
    /// that two candidates reach may see the loser arrive and close at once).
    /// [`PeerConnection::path`] says whether it is direct or relayed and
    /// [`PeerConnection::failed`] why the others were not used. The connection sends a
    /// PING after [`NAT_KEEP_ALIVE`] without traffic, so both NATs keep its mappings; a
    /// NAT that rebinds it anyway is followed by connection migration, and when the other
    /// NAT filters by port (migration cannot get through) a direct connection that hears
    /// nothing for [`RELAY_FALLBACK_SILENCE`] with data in flight moves to the peer's
    /// relayed candidate, if it has one ([`Connection::switch_remote`]): no data is lost,
    /// and [`Connection::remote_address`] then names the relay. (An endpoint that holds a
    /// relay allocation makes its new connections on the worker that holds it, so that
    /// the peer's side of any of them can use it.)
    ///
    /// # Errors
    /// [`PeerError::Unreachable`] when no attempt completes.
    pub async fn connect_candidates(
        &self,
        candidates: &[Candidate],
        server_name: &str,
    ) -> Result<PeerConnection, PeerError> {
        let order: Vec<Candidate> = candidates
            .iter()
            .filter(|c| c.kind != CandidateKind::Relayed)
            .chain(
                candidates
                    .iter()
                    .filter(|c| c.kind == CandidateKind::Relayed),
            )
            .copied()
            .collect();
        let n = order.len();
        let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Result<(), String>)>();
        let mut running: Vec<Option<Connection>> = vec![None; n];
        let mut failed = Vec::new();
        let (mut next, mut next_at) = (0, Instant::now());
        loop {
            let now = Instant::now();
            while next < n && next_at <= now {
                let c = order[next];
                match self.start_connect(c.addr, server_name, false).await {
                    Ok(conn) => {
                        running[next] = Some(conn.clone());
                        let (tx, i) = (tx.clone(), next);
                        tokio::spawn(async move {
                            let r = match tokio::time::timeout(ATTEMPT_TIMEOUT, conn.connected())
                                .await
                            {
                                Ok(Ok(())) => Ok(()),
                                Ok(Err(e)) => Err(e.to_string()),
                                Err(_) => Err(format!("no handshake within {ATTEMPT_TIMEOUT:?}")),
                            };
                            let _ = tx.send((i, r));
                        });
                    }
                    Err(e @ ConnectError::NotAClient) => {
                        return Err(PeerError::Connect(e));
                    }
                    Err(e) => failed.push((c, e.to_string())),
                }
                next += 1;
                next_at = if running.iter().all(Option::is_none) {
                    now
                } else if next < n
                    && order[next].kind == CandidateKind::Relayed
                    && order[next - 1].kind != CandidateKind::Relayed
                {
                    now + RELAY_GRACE
                } else {
                    now + ATTEMPT_SPACING
                };
            }
            let any_running = running.iter().any(Option::is_some);
            let got = if next < n {
                match tokio::time::timeout_at(next_at, rx.recv()).await {
                    Ok(m) => m,
                    Err(_) => continue,
                }
            } else if any_running {
                rx.recv().await
            } else {
                None
            };
            let Some((i, r)) = got else { break };
            let Some(conn) = running[i].take() else {
                continue;
            };
            match r {
                Ok(()) => {
                    for (j, other) in running.iter_mut().enumerate() {
                        if let Some(o) = other.take() {
                            o.close(0, b"another candidate answered first");
                            failed.push((
                                order[j],
                                format!("abandoned: {} answered first", order[i].addr),
                            ));
                        }
                    }
                    let c = order[i];
                    let path = if c.kind == CandidateKind::Relayed {
                        PeerPath::Relayed(c)
                    } else {
                        PeerPath::Direct(c)
                    };
                    tracing::info!(peer = %c.addr, ?path, others = failed.len(), "peer connection");
                    // Its PINGs also make the peer answer, which keeps the peer's NAT open.
                    keep_open(&conn);
                    if let (PeerPath::Direct(_), Some(r)) = (
                        path,
                        order.iter().find(|c| c.kind == CandidateKind::Relayed),
                    ) {
                        tokio::spawn(fall_back(conn.clone(), r.addr));
                    }
                    return Ok(PeerConnection {
                        connection: conn,
                        path,
                        failed,
                    });
                }
                Err(e) => {
                    conn.close(0, b"attempt abandoned");
                    failed.push((order[i], e));
                    // A failure hands its turn on: the next candidate starts now.
                    next_at = Instant::now();
                }
            }
        }
        Err(PeerError::Unreachable {
            tried: n,
            last: failed.last().map_or_else(
                || "no candidates".into(),
                |(c, e)| format!("{}: {e}", c.addr),
            ),
        })
    }

    /// Allocates on `relay` from worker 0 and waits for the relayed address.
    pub(super) async fn allocate(&self, relay: &Relay) -> Result<SocketAddr, PeerError> {
        let worker = self.engine.workers[0].clone();
        let (server, creds) = (relay.server, relay.credentials.clone());
        let started = worker
            .call(move |st| {
                st.endpoint
                    .turn_allocate(std::time::Instant::now(), server, creds)
            })
            .ok_or(PeerError::Relay(TurnError::NotAllocated))?;
        started.map_err(PeerError::Relay)?;
        worker.kick();
        // Every worker steers the relay's datagrams, and new connections, to worker 0.
        self.engine
            .relaying
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for w in &self.engine.workers {
            on_worker(w, move |st| st.relay_server = Some(server));
        }
        let deadline = Instant::now() + Duration::from_secs(12);
        loop {
            let ev = worker
                .call(|st| st.endpoint.poll_turn())
                .ok_or(PeerError::Relay(TurnError::NotAllocated))?;
            match ev {
                Some(TurnEvent::Allocated { relayed, .. }) => return Ok(relayed),
                Some(TurnEvent::Failed(e)) => return Err(PeerError::Relay(e)),
                Some(TurnEvent::Permitted(_)) | None => {}
            }
            if Instant::now() > deadline {
                return Err(PeerError::Relay(TurnError::TimedOut));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Watches a direct peer connection and moves it to the peer's relayed address `relayed`
/// once it has heard nothing for [`RELAY_FALLBACK_SILENCE`] with data in flight; once,
/// and only while the connection lives. If the relay does not answer either, the
/// connection returns to the direct address (path validation fails) and idles out there.
async fn fall_back(conn: Connection, relayed: SocketAddr) {
    let (mut heard, mut since) = (0, Instant::now());
    loop {
        tokio::time::sleep(FALLBACK_CHECK).await;
        let Some(s) = conn.stats() else { return };
        if conn.close_reason().is_some() {
            return;
        }
        if s.rx_packets != heard || s.bytes_in_flight == 0 {
            (heard, since) = (s.rx_packets, Instant::now());
            continue;
        }
        if since.elapsed() >= RELAY_FALLBACK_SILENCE {
            if conn.switch_remote(relayed) {
                tracing::info!(%relayed, "direct path to the peer went silent: through its relay now");
            }
            return;
        }
    }
}

/// Gives a peer's addresses permissions on worker 0's relay, when this endpoint has one.
pub(super) fn permit(engine: &Weak<Engine>, addrs: &[SocketAddr]) {
    let Some(engine) = engine.upgrade() else {
        return;
    };
    if !engine.relaying.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let ips: Vec<std::net::IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
    on_worker(&engine.workers[0], move |st| {
        for ip in &ips {
            let _ = st.endpoint.turn_permit(std::time::Instant::now(), *ip);
        }
    });
}

/// Runs `job` on the worker's state: here when this thread may touch it, else posted to
/// the worker's loop; the loop is woken either way.
fn on_worker(worker: &Arc<Worker>, job: impl FnOnce(&mut State) + Send + 'static) {
    let mut job = Some(job);
    let ran = worker.with(|st| {
        if let Some(j) = job.take() {
            j(st);
        }
    });
    if ran.is_some() {
        worker.kick();
    } else if let Some(j) = job {
        worker.post(Box::new(move |w| {
            w.with(j);
        }));
    }
}

/// The punches after the first round: [`PUNCHES`] rounds in all, [`PUNCH_SPACING`] apart.
/// Holds the engine only while punching: a dropped endpoint stops it.
pub(super) async fn punch(engine: Weak<Engine>, candidates: Vec<SocketAddr>) {
    for _ in 1..PUNCHES {
        tokio::time::sleep(PUNCH_SPACING).await;
        punch_once(&engine, &candidates);
    }
}

/// One punch toward every candidate.
pub(super) fn punch_once(engine: &Weak<Engine>, candidates: &[SocketAddr]) {
    let Some(engine) = engine.upgrade() else {
        return;
    };
    let c = candidates.to_vec();
    on_worker(engine.pick(), move |st| {
        for a in &c {
            st.endpoint.punch(*a);
        }
    });
}
