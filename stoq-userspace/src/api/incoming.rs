//! [`Incoming`]: a new client waiting for the application's decision (under
//! [`Admission::Application`](crate::engine::Admission::Application)).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Connection;
use crate::conn::{self, ConnectionError};
use crate::engine::app::ConnShared;
use crate::engine::home::{State, Worker};

/// A new client whose first Initial passed the endpoint's admission policy (it
/// authenticated, and under load it proved its address), waiting for the application to
/// [`accept`](Self::accept), [`refuse`](Self::refuse), [`retry`](Self::retry) or
/// [`ignore`](Self::ignore) it. Dropping it ignores it.
///
/// The decision is carried to the client's worker; until it comes, the worker holds the
/// client's first datagrams (at most 4) and nothing else. Decide quickly: the client
/// resends its Initial after about a second and gives up at its idle timeout.
///
/// ```no_run
/// # async fn demo(server: stoq::Endpoint) {
/// while let Ok(incoming) = server.incoming().await {
///     if is_blocked(incoming.remote_address()) {
///         incoming.refuse();
///     } else if !incoming.remote_address_validated() {
///         // Make every client prove its address first (no state, no signature yet).
///         let _ = incoming.retry();
///     } else {
///         tokio::spawn(async move {
///             if let Ok(conn) = incoming.accept().await {
///                 // serve conn
///                 # drop(conn);
///             }
///         });
///     }
/// }
/// # }
/// # fn is_blocked(_: std::net::SocketAddr) -> bool { false }
/// ```
#[derive(Debug)]
pub struct Incoming {
    inner: Option<conn::Incoming>,
    worker: Arc<Worker>,
}

/// Why [`Incoming::accept`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The endpoint refused it (connection or memory limit); the client was sent
    /// `CONNECTION_REFUSED`.
    #[error(transparent)]
    Refused(#[from] conn::AcceptError),
    /// The endpoint is shutting down; the client was refused.
    #[error("the endpoint is shutting down; the client was refused")]
    ShuttingDown,
    /// The handshake failed or the connection ended before it completed.
    #[error("connection failed during its handshake: {0}")]
    Lost(ConnectionError),
}

/// [`Incoming::retry`] on a client that already answered a Retry (a second one would
/// loop): accept, refuse or ignore the client it gives back.
#[derive(Debug, thiserror::Error)]
#[error("client already validated its address with a Retry token; accept or refuse it")]
pub struct RetryError(Box<Incoming>);

impl RetryError {
    /// The client, to accept, refuse or ignore.
    pub fn into_incoming(self) -> Incoming {
        *self.0
    }
}

impl Incoming {
    pub(crate) fn new(inner: conn::Incoming, worker: Arc<Worker>) -> Self {
        Self {
            inner: Some(inner),
            worker,
        }
    }

    fn get(&self) -> &conn::Incoming {
        self.inner
            .as_ref()
            .expect("taken only by a method that consumes the Incoming")
    }

    /// The client's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.get().remote_address()
    }

    /// Whether the client proved its address with a Retry token.
    pub fn remote_address_validated(&self) -> bool {
        self.get().remote_address_validated()
    }

    /// The local address the client's Initial arrived at, where the backend reports it.
    pub fn local_ip(&self) -> Option<IpAddr> {
        self.get().local_ip()
    }

    /// Starts the handshake and resolves once it completes. The connection lives on the
    /// worker that received the client; like one from [`Endpoint::accept`](crate::Endpoint::accept)
    /// (crate::Endpoint::accept), its calls from another thread cross to it
    /// ([`Connection::spawn_on_worker`] runs a task there instead).
    ///
    /// # Errors
    /// [`AcceptError`].
    pub async fn accept(mut self) -> Result<Connection, AcceptError> {
        let inc = self.inner.take().expect("not yet decided");
        let worker = self.worker.clone();
        let shared = if worker.is_here() {
            let r = worker
                .with(|st| accept_here(st, &worker, inc))
                .expect("this thread reaches the worker's state");
            worker.kick();
            r?
        } else {
            let (tx, rx) = tokio::sync::oneshot::channel();
            worker.crossings.count.fetch_add(1, Ordering::Relaxed);
            let posted = worker.post(Box::new(move |w: &Arc<Worker>| {
                if let Some(r) = w.with(|st| accept_here(st, w, inc)) {
                    let _ = tx.send(r);
                }
            }));
            if !posted {
                return Err(AcceptError::ShuttingDown);
            }
            rx.await.map_err(|_| AcceptError::ShuttingDown)??
        };
        let c = Connection::from_shared(shared);
        c.connected().await.map_err(AcceptError::Lost)?;
        Ok(c)
    }

    /// Refuses the client with `CONNECTION_REFUSED`, keeping no state.
    pub fn refuse(mut self) {
        let inc = self.inner.take().expect("not yet decided");
        decide(&self.worker, move |st| {
            st.endpoint.refuse(inc, Instant::now())
        });
    }

    /// Answers the client with a Retry, keeping no state: it comes back (as a new
    /// `Incoming`, [`remote_address_validated`](Self::remote_address_validated)) once it
    /// has proved it owns its address. No signature is computed for it until then.
    ///
    /// # Errors
    /// [`RetryError`] if it already answered a Retry; the error gives it back.
    pub fn retry(mut self) -> Result<(), RetryError> {
        if self.remote_address_validated() {
            return Err(RetryError(Box::new(self)));
        }
        let inc = self.inner.take().expect("not yet decided");
        decide(&self.worker, move |st| {
            // Not validated (checked above), so the endpoint cannot refuse to retry it.
            let _ = st.endpoint.retry(inc, Instant::now());
        });
        Ok(())
    }

    /// Drops the client's attempt silently (it may try again).
    pub fn ignore(mut self) {
        if let Some(inc) = self.inner.take() {
            decide(&self.worker, move |st| st.endpoint.ignore(inc));
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(inc) = self.inner.take() {
            decide(&self.worker, move |st| st.endpoint.ignore(inc));
        }
    }
}

/// Runs the decision on the worker: here if this thread reaches its state, else as a job.
/// A stopped worker has nothing left to decide.
fn decide(worker: &Arc<Worker>, f: impl FnOnce(&mut State) + Send + 'static) {
    if worker.is_here() {
        worker.with(f);
        worker.kick();
    } else {
        worker.post(Box::new(move |w: &Arc<Worker>| {
            w.with(f);
        }));
    }
}

fn accept_here(
    st: &mut State,
    w: &Arc<Worker>,
    inc: conn::Incoming,
) -> Result<Arc<ConnShared>, AcceptError> {
    let now = Instant::now();
    if st.api.shutting_down {
        st.endpoint.refuse(inc, now);
        return Err(AcceptError::ShuttingDown);
    }
    let h = st.endpoint.accept(inc, now)?;
    // Not `server_side`: the caller gets this connection, it is neither served nor queued
    // for `Endpoint::accept`.
    Ok(st.api.track(w, &st.endpoint, h, false))
}
