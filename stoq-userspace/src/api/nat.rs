//! NAT traversal in the async API: the endpoint's reflexive address, and how its NAT maps
//! it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Endpoint;
use crate::engine::home::{State, Worker};
use crate::nat::BindingError;

type Reply = tokio::sync::oneshot::Sender<Result<SocketAddr, BindingError>>;
type Outcome = tokio::sync::oneshot::Receiver<Result<SocketAddr, BindingError>>;

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
        self.start_binding(stun_server, timeout)?
            .await
            .map_err(|_| BindingError::Stopped)?
    }

    /// Asks every server in `stun_servers` at once (each as
    /// [`reflexive_address`](Self::reflexive_address) does) and says how the NAT in front
    /// of this endpoint maps its socket ([`NatReport::mapping`]): the same public address
    /// and port toward every server (endpoint-independent mapping, "cone": a peer can
    /// reach the address any server reported), or a different one per server
    /// (dependent, "symmetric": direct connections through it need a relay). Telling
    /// them apart takes answers from at least two servers on different IP addresses.
    ///
    /// Failures of single servers are in [`NatReport::answers`]; this does not fail.
    pub async fn nat_report(&self, stun_servers: &[SocketAddr], timeout: Duration) -> NatReport {
        let started: Vec<_> = stun_servers
            .iter()
            .map(|&s| (s, self.start_binding(s, timeout)))
            .collect();
        let mut answers = Vec::with_capacity(started.len());
        for (server, r) in started {
            let got = match r {
                Ok(rx) => rx.await.unwrap_or(Err(BindingError::Stopped)),
                Err(e) => Err(e),
            };
            answers.push((server, got));
        }
        let local = self.local_addr();
        NatReport {
            local,
            mapping: Mapping::of(local, &answers),
            answers,
        }
    }

    /// Starts a Binding transaction on a worker; the receiver gets its outcome.
    fn start_binding(
        &self,
        stun_server: SocketAddr,
        timeout: Duration,
    ) -> Result<Outcome, BindingError> {
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
        Ok(rx)
    }
}

/// How a NAT maps an endpoint's socket toward different destinations (RFC 4787 §4.1), as
/// seen from the answers of several STUN servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Every server saw the endpoint's own bound address: no NAT in between.
    NotTranslated,
    /// Every server (at least two, on different IP addresses) saw the same address and
    /// port: endpoint-independent mapping ("cone"). A peer can be told this address.
    EndpointIndependent,
    /// Servers saw different addresses or ports: the mapping depends on the destination
    /// ("symmetric"). The address a server saw is of no use to a peer.
    Dependent,
    /// Too few answers to tell: none, or only from servers on one IP address.
    Unknown,
}

impl Mapping {
    /// The mapping that `answers` (server, what it saw) show for a socket bound to `local`.
    pub fn of(
        local: SocketAddr,
        answers: &[(SocketAddr, Result<SocketAddr, BindingError>)],
    ) -> Self {
        let seen: Vec<(SocketAddr, SocketAddr)> = answers
            .iter()
            .filter_map(|(s, r)| r.ok().map(|a| (*s, canonical(a))))
            .collect();
        let Some(&(first_server, first)) = seen.first() else {
            return Self::Unknown;
        };
        if seen.iter().any(|(_, a)| *a != first) {
            return Self::Dependent;
        }
        if !local.ip().is_unspecified() && canonical(local) == first {
            return Self::NotTranslated;
        }
        if seen
            .iter()
            .any(|(s, _)| s.ip().to_canonical() != first_server.ip().to_canonical())
        {
            Self::EndpointIndependent
        } else {
            Self::Unknown
        }
    }

    /// A short, stable name (logs, the CLI).
    pub fn name(self) -> &'static str {
        match self {
            Self::NotTranslated => "not translated",
            Self::EndpointIndependent => "endpoint-independent",
            Self::Dependent => "dependent",
            Self::Unknown => "unknown",
        }
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// What [`Endpoint::nat_report`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatReport {
    /// The endpoint's bound address.
    pub local: SocketAddr,
    /// Each server asked, with the address it saw or why there is none.
    pub answers: Vec<(SocketAddr, Result<SocketAddr, BindingError>)>,
    /// How the NAT maps the socket.
    pub mapping: Mapping,
}

impl NatReport {
    /// The address a peer can use to reach this endpoint: the one every server saw, unless
    /// the mapping is [`Mapping::Dependent`] (then there is none).
    pub fn reflexive(&self) -> Option<SocketAddr> {
        if self.mapping == Mapping::Dependent {
            return None;
        }
        self.answers.iter().find_map(|(_, r)| r.ok())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mappings_from_answers() {
        let (s1, s2, s1b) = (
            a("100.64.0.2:3478"),
            a("100.64.0.3:3478"),
            a("100.64.0.2:3479"),
        );
        let local = a("10.200.0.2:5000");
        let pub1 = a("100.64.0.1:5000");
        let pub2 = a("100.64.0.1:40002");
        let to = |r: &[(SocketAddr, SocketAddr)]| -> Vec<_> {
            r.iter().map(|(s, x)| (*s, Ok(*x))).collect()
        };
        assert_eq!(
            Mapping::of(local, &to(&[(s1, pub1), (s2, pub1)])),
            Mapping::EndpointIndependent
        );
        assert_eq!(
            Mapping::of(local, &to(&[(s1, pub1), (s2, pub2)])),
            Mapping::Dependent
        );
        // Another port of the same server proves nothing about other destinations.
        assert_eq!(
            Mapping::of(local, &to(&[(s1, pub1), (s1b, pub1)])),
            Mapping::Unknown
        );
        assert_eq!(Mapping::of(local, &to(&[(s1, pub1)])), Mapping::Unknown);
        // But two ports of one server that disagree do show a dependent mapping.
        assert_eq!(
            Mapping::of(local, &to(&[(s1, pub1), (s1b, pub2)])),
            Mapping::Dependent
        );
        assert_eq!(
            Mapping::of(pub1, &to(&[(s1, pub1), (s2, pub1)])),
            Mapping::NotTranslated
        );
        // A dual-stack socket's IPv4-mapped form is the same address.
        let mapped = a("[::ffff:100.64.0.1]:5000");
        assert_eq!(
            Mapping::of(local, &to(&[(s1, pub1), (s2, mapped)])),
            Mapping::EndpointIndependent
        );
        let failed = vec![
            (s1, Err(BindingError::TimedOut { requests: 7 })),
            (s2, Ok(pub1)),
        ];
        assert_eq!(Mapping::of(local, &failed), Mapping::Unknown);
        assert_eq!(Mapping::of(local, &[]), Mapping::Unknown);
        let r = NatReport {
            local,
            answers: to(&[(s1, pub1), (s2, pub2)]),
            mapping: Mapping::Dependent,
        };
        assert_eq!(r.reflexive(), None);
        let r = NatReport {
            local,
            answers: failed,
            mapping: Mapping::Unknown,
        };
        assert_eq!(r.reflexive(), Some(pub1));
    }
}
