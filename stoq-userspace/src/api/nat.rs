//! NAT traversal in the async API: the endpoint's reflexive address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Endpoint;
use crate::engine::home::{State, Worker};
use crate::nat::BindingError;

type Reply = tokio::sync::oneshot::Sender<Result<SocketAddr, BindingError>>;

impl Endpoint {
    /// This endpoint's reflexive address as the STUN server at `stun_server` sees it: the
    /// public address and port a NAT maps the endpoint's socket to (its own address when
    /// there is no NAT). The Binding request (RFC 8489) goes out of the socket and backend
    /// the connections use, AF_XDP included, so the mapping is theirs; it is retransmitted
    /// from 500 ms with a doubling timeout until an answer or `timeout`.
    ///
    /// Only a response from `stun_server`'s address and port, to the request's
    /// transaction ID, with a matching FINGERPRINT when it has one, is taken. The address
    /// it reports is only returned: STOQ sends nothing to it.
    ///
    /// ```no_run
    /// # async fn f(ep: &stoq::Endpoint) -> Result<(), stoq::nat::BindingError> {
    /// let public = ep
    ///     .reflexive_address("192.0.2.1:3478".parse().unwrap(), std::time::Duration::from_secs(5))
    ///     .await?;
    /// println!("reachable at {public} (if the NAT lets answers in)");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A [`BindingError`]: no answer in time, an error response, an answer without a
    /// usable address, a bad server address, 16 transactions already running on the
    /// worker, or the endpoint stopped.
    pub async fn reflexive_address(
        &self,
        stun_server: SocketAddr,
        timeout: Duration,
    ) -> Result<SocketAddr, BindingError> {
        let worker = self.engine.pick().clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut tx = Some(tx);
        let here = worker.with(|st| start(st, stun_server, timeout, tx.take()));
        if here.is_some() {
            worker.kick();
        } else {
            let tx = tx.take().ok_or(BindingError::Stopped)?;
            worker.crossings.count.fetch_add(1, Ordering::Relaxed);
            let posted = worker.post(Box::new(move |w: &Arc<Worker>| {
                w.with(|st| start(st, stun_server, timeout, Some(tx)));
            }));
            if !posted {
                return Err(BindingError::Stopped);
            }
        }
        rx.await.map_err(|_| BindingError::Stopped)?
    }
}

/// Starts the transaction on the worker and files `reply` for its outcome (or answers
/// at once when it cannot start).
fn start(st: &mut State, server: SocketAddr, timeout: Duration, reply: Option<Reply>) {
    let Some(reply) = reply else { return };
    match st.endpoint.stun_binding(Instant::now(), server, timeout) {
        Ok(id) => {
            st.api.bindings.insert(id, reply);
        }
        Err(e) => {
            let _ = reply.send(Err(e));
        }
    }
}
