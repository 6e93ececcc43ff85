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
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, oneshot};

use super::peer::{keep_open, permit, punch, punch_once};
use super::{Connection, Endpoint, PeerConnection, PeerError, RecvStream, Relay, SendStream};
use crate::conn::ConnectionError;
use crate::nat::rendezvous::{
    Candidate, CandidateKind, MAX_CANDIDATES, Message, READY_WAIT, RendezvousError,
};

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
                        // On the relay, when this endpoint holds an allocation.
                        permit(&engine, &addrs);
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

    /// Connects to the peer registered as `peer_id` at `rendezvous`'s server: learns its
    /// candidates (the address the server sees it at first, then its own, its relayed
    /// one last) once the peer has punched a hole in its NAT toward this one (the server
    /// answers when the peer says so), and connects to them as
    /// [`connect_candidates`](Self::connect_candidates) does: staggered attempts, the
    /// first handshake to complete wins, [`PeerConnection::path`] says whether it is
    /// direct or relayed and [`PeerConnection::failed`] why the others were not used.
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
        self.connect_candidates(&candidates, server_name).await
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
