//! Peer-to-peer connections through NATs: a rendezvous server tells two peers each other's
//! candidate addresses, the peer asked for punches a hole in its NAT toward the asking
//! peer, and the asking peer connects directly (`docs/nat.md`).
//!
//! - [`serve_rendezvous`]: the rendezvous role, on any server endpoint.
//! - [`Endpoint::join_rendezvous`]: a peer (an endpoint that both accepts and connects,
//!   [`Endpoint::server_and_client`]) registers under an id and punches when another
//!   peer asks for it; the connection that follows arrives through
//!   [`Endpoint::accept`] like any other.
//! - [`Endpoint::connect_peer`]: asks for a peer by id and connects to its candidates.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};

use super::{ConnectError, Connection, Endpoint, RecvStream, SendStream};
use crate::conn::ConnectionError;
use crate::engine::Engine;
use crate::engine::home::{State, Worker};
use crate::nat::rendezvous::{
    Candidate, CandidateKind, MAX_CANDIDATES, Message, READY_WAIT, RendezvousError,
};
use crate::nat::turn::{TurnCredentials, TurnError, TurnEvent};

/// Punches sent toward each candidate of a peer that asked for this one, spaced by
/// [`PUNCH_SPACING`]: more than one, in case the first is lost or leaves before the NAT
/// is ready.
pub const PUNCHES: usize = 3;
/// Time between punches toward one candidate.
pub const PUNCH_SPACING: Duration = Duration::from_millis(20);
/// How long a connection attempt to one candidate may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// The keep-alive of a peer connection and of a registration: a PING after this long
/// without sending, below the 30 s after which many NATs forget an idle UDP mapping (RFC
/// 4787 asks for 2 minutes at least; not every NAT complies).
pub const NAT_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Keeps `conn`'s NAT mappings open (see [`NAT_KEEP_ALIVE`]).
fn keep_open(conn: &Connection) {
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
    /// No candidate of the peer could be reached.
    #[error("the peer could not be reached at any of its {tried} candidate(s): {last}")]
    Unreachable {
        /// Candidates tried.
        tried: usize,
        /// The last attempt's failure.
        last: String,
    },
}

/// Reads one message.
async fn read_message(recv: &mut RecvStream) -> Result<Message, PeerError> {
    let mut h = [0u8; 3];
    read_exact(recv, &mut h).await?;
    let len = Message::body_len(h)?;
    let mut body = vec![0u8; len];
    read_exact(recv, &mut body).await?;
    Ok(Message::decode(h[0], &body)?)
}

async fn read_exact(recv: &mut RecvStream, buf: &mut [u8]) -> Result<(), PeerError> {
    recv.read_exact(buf)
        .await
        .map(|_| ())
        .map_err(|e| PeerError::Lost(e.to_string()))
}

/// Sends what arrives on the channel, in order, until it closes or the stream fails.
fn spawn_writer(mut send: SendStream) -> mpsc::Sender<Message> {
    let (tx, mut rx) = mpsc::channel::<Message>(16);
    tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(m) = rx.recv().await {
            buf.clear();
            if m.encode(&mut buf).is_err() || send.write_all_data(&buf).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
    });
    tx
}

/// A registered peer, as the rendezvous server keeps it.
struct Entry {
    candidates: Vec<Candidate>,
    tx: mpsc::Sender<Message>,
}

/// The rendezvous server's state: registered peers, and the asks waiting for the peer
/// asked for to say `Ready` (keyed by (peer asked for, asker)).
#[derive(Default)]
struct Directory {
    peers: HashMap<Vec<u8>, Entry>,
    ready: HashMap<(Vec<u8>, Vec<u8>), oneshot::Sender<()>>,
}

type Registry = Arc<Mutex<Directory>>;

/// The `connect_peer` calls waiting for the server's answer, oldest first.
type Waiting = Mutex<VecDeque<oneshot::Sender<Result<Vec<Candidate>, PeerError>>>>;

/// Serves the rendezvous role on `endpoint` (a server endpoint) for as long as it lives:
/// every connection it accepts is a peer that registers under an id (the last to
/// register an id holds it) and may ask for another. The server adds the address it sees
/// each peer's connection come from (its reflexive address) before the candidates the
/// peer gave. Each peer is served on its connection's worker
/// ([`serve`](Endpoint::serve)): no hop between threads on the way from one peer to the
/// other.
///
/// # Errors
/// As [`serve`](Endpoint::serve).
pub fn serve_rendezvous(endpoint: &Endpoint) -> Result<(), super::ServeError> {
    let registry: Registry = Arc::default();
    endpoint.serve(move |conn| serve_peer(conn, registry.clone()))
}

async fn serve_peer(conn: Connection, registry: Registry) {
    let Some(observed) = conn.remote_address() else {
        return;
    };
    let Ok((send, mut recv)) = conn.accept_bi().await else {
        return;
    };
    let tx = spawn_writer(send);
    let mut me: Option<Vec<u8>> = None;
    while let Ok(m) = read_message(&mut recv).await {
        match m {
            Message::Register { id, candidates } => {
                let mut c = vec![Candidate::new(observed, CandidateKind::Reflexive)];
                c.extend(
                    candidates
                        .into_iter()
                        .filter(|a| a.addr != observed)
                        .take(MAX_CANDIDATES - 1),
                );
                let mut r = registry
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                r.peers.insert(
                    id.clone(),
                    Entry {
                        candidates: c,
                        tx: tx.clone(),
                    },
                );
                me = Some(id);
            }
            Message::Connect { id } => {
                // Only a registered peer may ask: the one asked for is told who.
                let Some(mine) = me.as_ref() else { break };
                let (ready_rx, target, own) = {
                    let mut r = registry
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let target = r
                        .peers
                        .get(&id)
                        .map(|e| (e.candidates.clone(), e.tx.clone()));
                    let own = r
                        .peers
                        .get(mine)
                        .map(|e| e.candidates.clone())
                        .unwrap_or_default();
                    let (rtx, rrx) = oneshot::channel();
                    if target.is_some() {
                        r.ready.insert((id.clone(), mine.clone()), rtx);
                    }
                    (rrx, target, own)
                };
                let Some((candidates, their_tx)) = target else {
                    let _ = tx.send(Message::NotFound).await;
                    continue;
                };
                // The peer asked for hears first and punches; the asker hears once it
                // has (or after READY_WAIT), so its first packet follows the punches.
                let _ = their_tx
                    .send(Message::Incoming {
                        id: mine.clone(),
                        candidates: own,
                    })
                    .await;
                let (tx2, reg2, key) = (tx.clone(), registry.clone(), (id, mine.clone()));
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(READY_WAIT, ready_rx).await;
                    reg2.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .ready
                        .remove(&key);
                    let _ = tx2.send(Message::Peer { candidates }).await;
                });
            }
            Message::Ready { id } => {
                let Some(mine) = me.as_ref() else { break };
                let waiting = registry
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .ready
                    .remove(&(mine.clone(), id));
                if let Some(w) = waiting {
                    let _ = w.send(());
                }
            }
            // Server-bound messages only.
            _ => break,
        }
    }
    if let Some(id) = me {
        let mut r = registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if r.peers.get(&id).is_some_and(|e| e.tx.same_channel(&tx)) {
            r.peers.remove(&id);
        }
    }
}

/// A peer's registration at a rendezvous server (see [`Endpoint::join_rendezvous`]). The
/// registration ends when this is dropped.
#[derive(Debug)]
pub struct Rendezvous {
    conn: Connection,
    tx: mpsc::Sender<Message>,
    waiting: Arc<Waiting>,
    punched: Arc<std::sync::atomic::AtomicU64>,
}

impl Rendezvous {
    /// Peers that asked for this one and were punched toward, so far.
    pub fn punched(&self) -> u64 {
        self.punched.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The connection to the rendezvous server.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        self.conn.close(0, b"rendezvous left");
    }
}

/// A TURN relay a peer registers a relayed candidate on (see
/// [`Endpoint::join_rendezvous_with`]).
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
    /// Candidates tried before it, with why each failed.
    pub failed: Vec<(Candidate, String)>,
}

impl Endpoint {
    /// Registers this endpoint as `id` at the rendezvous server `server` (a STOQ server
    /// running [`serve_rendezvous`], authenticated as `server_name` by this endpoint's
    /// client settings), from this endpoint's own socket, so that the server sees the
    /// address peers can reach. When another peer asks for `id`, this endpoint sends a
    /// few 28-byte punches ([`crate::conn::Endpoint::punch`]) toward the asking peer's
    /// candidates to open its NAT; the asking peer's connection then arrives through
    /// [`accept`](Self::accept). The endpoint must accept connections
    /// ([`server_and_client`](Self::server_and_client)).
    ///
    /// # Errors
    /// [`PeerError::BadId`], or the connection to the server failing.
    pub async fn join_rendezvous(
        &self,
        server: SocketAddr,
        server_name: &str,
        id: &[u8],
    ) -> Result<Rendezvous, PeerError> {
        self.join_rendezvous_with(server, server_name, id, None)
            .await
    }

    /// As [`join_rendezvous`](Self::join_rendezvous), with a TURN relay: the endpoint
    /// allocates a relayed address on it first (on worker 0, which then holds every
    /// connection that arrives through the relay) and registers it as its last
    /// candidate. A peer that cannot reach this one directly (two symmetric NATs) connects
    /// through the relay; the relay forwards STOQ's packets, encrypted end to end. The
    /// asking peer's addresses are given permissions on the relay when it asks.
    ///
    /// # Errors
    /// As [`join_rendezvous`](Self::join_rendezvous), and [`PeerError::Relay`].
    pub async fn join_rendezvous_with(
        &self,
        server: SocketAddr,
        server_name: &str,
        id: &[u8],
        relay: Option<Relay>,
    ) -> Result<Rendezvous, PeerError> {
        if id.is_empty() || id.len() > crate::nat::rendezvous::MAX_ID {
            return Err(PeerError::BadId);
        }
        let relayed = match &relay {
            Some(r) => Some(self.allocate(r).await?),
            None => None,
        };
        let conn = self.connect(server, server_name).await?;
        // The registration lives as long as this connection, and punches only help while
        // the server's view of the mapping is true.
        keep_open(&conn);
        let (send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| PeerError::Lost(e.to_string()))?;
        let tx = spawn_writer(send);
        let local = self.local_addr();
        let mut candidates = Vec::new();
        if !local.ip().is_unspecified() {
            candidates.push(Candidate::new(local, CandidateKind::Host));
        }
        if let Some(r) = relayed {
            candidates.push(Candidate::new(r, CandidateKind::Relayed));
        }
        tx.send(Message::Register {
            id: id.to_vec(),
            candidates,
        })
        .await
        .map_err(|_| PeerError::Lost(ConnectionError::LocallyClosed.to_string()))?;
        let waiting: Arc<Waiting> = Arc::default();
        let punched = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let engine = Arc::downgrade(&self.engine);
        let (w, p) = (waiting.clone(), punched.clone());
        let relaying = relayed.is_some();
        let ready_tx = tx.clone();
        tokio::spawn(async move {
            let end = loop {
                let m = match read_message(&mut recv).await {
                    Ok(m) => m,
                    Err(e) => break e,
                };
                match m {
                    Message::Incoming { id, candidates } => {
                        p.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let addrs: Vec<SocketAddr> = candidates.iter().map(|c| c.addr).collect();
                        if relaying {
                            permit(&engine, &addrs);
                        }
                        // The first punches are queued before the Ready that lets the
                        // asker go (the worker sends them first), the others follow.
                        punch_once(&engine, &addrs);
                        let _ = ready_tx.send(Message::Ready { id }).await;
                        tokio::spawn(punch(engine.clone(), addrs));
                    }
                    Message::Peer { candidates } => answer(&w, Ok(candidates)),
                    Message::NotFound => answer(&w, Err(PeerError::NotFound)),
                    _ => break PeerError::Protocol(RendezvousError::Malformed),
                }
            };
            let mut q = w.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            while let Some(s) = q.pop_front() {
                let _ = s.send(Err(end.clone()));
            }
        });
        Ok(Rendezvous {
            conn,
            tx,
            waiting,
            punched,
        })
    }

    /// Allocates on `relay` from worker 0 and waits for the relayed address.
    async fn allocate(&self, relay: &Relay) -> Result<SocketAddr, PeerError> {
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
        let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
        loop {
            let ev = worker
                .call(|st| st.endpoint.poll_turn())
                .ok_or(PeerError::Relay(TurnError::NotAllocated))?;
            match ev {
                Some(TurnEvent::Allocated { relayed, .. }) => return Ok(relayed),
                Some(TurnEvent::Failed(e)) => return Err(PeerError::Relay(e)),
                Some(TurnEvent::Permitted(_)) | None => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err(PeerError::Relay(TurnError::TimedOut));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Connects to the peer registered as `peer_id` at `rendezvous`'s server: learns its
    /// candidates (the address the server sees it at first, then its own, its relayed
    /// one last) once the peer has punched a hole in its NAT toward this one (the server
    /// answers when the peer says so), and tries each
    /// candidate in order ([`ATTEMPT_TIMEOUT`] each); the first handshake that completes
    /// is the connection, authenticated as `server_name` like any other, and
    /// [`PeerConnection::path`] says whether it is direct or relayed and
    /// [`PeerConnection::failed`] why the candidates before it were not used. The
    /// handshake validates the path. The connection sends a PING after [`NAT_KEEP_ALIVE`]
    /// without traffic, so both NATs keep its mappings; a NAT that rebinds it anyway (a
    /// new public port) is followed by connection migration.
    ///
    /// # Errors
    /// [`PeerError::NotFound`], [`PeerError::Unreachable`], or the rendezvous connection
    /// failing.
    pub async fn connect_peer(
        &self,
        rendezvous: &Rendezvous,
        peer_id: &[u8],
        server_name: &str,
    ) -> Result<PeerConnection, PeerError> {
        if peer_id.is_empty() || peer_id.len() > crate::nat::rendezvous::MAX_ID {
            return Err(PeerError::BadId);
        }
        let (otx, orx) = oneshot::channel();
        rendezvous
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(otx);
        rendezvous
            .tx
            .send(Message::Connect {
                id: peer_id.to_vec(),
            })
            .await
            .map_err(|_| PeerError::Lost(ConnectionError::LocallyClosed.to_string()))?;
        let candidates = orx
            .await
            .map_err(|_| PeerError::Lost(ConnectionError::LocallyClosed.to_string()))??;
        let mut failed = Vec::new();
        for c in &candidates {
            match tokio::time::timeout(ATTEMPT_TIMEOUT, self.connect(c.addr, server_name)).await {
                Ok(Ok(conn)) => {
                    let path = if c.kind == CandidateKind::Relayed {
                        PeerPath::Relayed(*c)
                    } else {
                        PeerPath::Direct(*c)
                    };
                    tracing::info!(peer = %c.addr, ?path, tried = failed.len(), "peer connection");
                    // Its PINGs also make the peer answer, which keeps the peer's NAT open.
                    keep_open(&conn);
                    return Ok(PeerConnection {
                        connection: conn,
                        path,
                        failed,
                    });
                }
                Ok(Err(e)) => failed.push((*c, e.to_string())),
                Err(_) => failed.push((*c, format!("no handshake within {ATTEMPT_TIMEOUT:?}"))),
            }
        }
        Err(PeerError::Unreachable {
            tried: candidates.len(),
            last: failed.last().map_or_else(
                || "no candidates".into(),
                |(c, e)| format!("{}: {e}", c.addr),
            ),
        })
    }
}

/// Gives the asking peer's addresses permissions on worker 0's relay.
fn permit(engine: &Weak<Engine>, addrs: &[SocketAddr]) {
    let Some(engine) = engine.upgrade() else {
        return;
    };
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

/// Hands the oldest waiting `connect_peer` its answer.
fn answer(w: &Waiting, r: Result<Vec<Candidate>, PeerError>) {
    if let Some(s) = w
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .pop_front()
    {
        let _ = s.send(r);
    }
}

/// The punches after the first round: [`PUNCHES`] rounds in all, [`PUNCH_SPACING`] apart.
/// Holds the engine only while punching: a dropped endpoint stops it.
async fn punch(engine: Weak<Engine>, candidates: Vec<SocketAddr>) {
    for _ in 1..PUNCHES {
        tokio::time::sleep(PUNCH_SPACING).await;
        punch_once(&engine, &candidates);
    }
}

/// One punch toward every candidate.
fn punch_once(engine: &Weak<Engine>, candidates: &[SocketAddr]) {
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
