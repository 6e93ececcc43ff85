//! Connecting again after a failure or a lost connection: exponential backoff with jitter,
//! a cap, and a limit on attempts, each attempt reported.
//!
//! Only failures that another attempt may cure are retried: a timeout, a stateless reset
//! (a restarted server), a close by the peer (a full or restarting server). A handshake
//! that fails (wrong key, bad certificate, no common version) or a local misuse fails at
//! once, with its error. STOQ has no session resumption yet (it is planned with 0-RTT),
//! so every attempt is a full handshake.

use std::net::SocketAddr;
use std::time::Duration;

use rand_core::{OsRng, RngCore};

use super::{ConnectError, Connection, Endpoint};
use crate::conn::ConnectionError;

/// When to try again: the `n`-th retry waits `first × factorⁿ⁻¹`, at most `max`, scaled by
/// a random factor in `[1 − jitter, 1 + jitter]` (so clients that lost one server do not
/// all come back at once); after `max_attempts` attempts the caller gets the last error.
///
/// ```no_run
/// # async fn f(client: stoq::Endpoint) -> Result<(), Box<dyn std::error::Error>> {
/// let backoff = stoq::api::Backoff { max_attempts: Some(5), ..Default::default() };
/// let conn = client
///     .connect_with_backoff("[::1]:4433".parse()?, "server.example", &backoff, |a| {
///         eprintln!("attempt {} failed: {} (next in {:?})", a.number, a.error, a.retry_in)
///     })
///     .await?;
/// # let _ = conn; Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// The wait before the first retry.
    pub first: Duration,
    /// The longest wait between attempts.
    pub max: Duration,
    /// How much each wait grows over the one before (at least 1).
    pub factor: f64,
    /// The random spread of each wait, as a fraction of it (0 to 1).
    pub jitter: f64,
    /// Attempts in all, the first included; `None` tries for ever.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    /// 100 ms, doubling up to 10 s, ±20 %, 10 attempts (about 40 s in all).
    fn default() -> Self {
        Self {
            first: Duration::from_millis(100),
            max: Duration::from_secs(10),
            factor: 2.0,
            jitter: 0.2,
            max_attempts: Some(10),
        }
    }
}

/// A [`Backoff`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackoffError {
    /// A setting is out of range; the message names it and the fix.
    #[error("backoff: {0}")]
    Invalid(&'static str),
}

impl Backoff {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`BackoffError::Invalid`] naming the setting: a zero `first` or `max_attempts`, a
    /// `max` below `first`, a `factor` below 1, a `jitter` outside 0..=1.
    pub fn check(&self) -> Result<(), BackoffError> {
        if self.first.is_zero() {
            return Err(BackoffError::Invalid(
                "first is zero: attempts would follow each other without a pause",
            ));
        }
        if self.max < self.first {
            return Err(BackoffError::Invalid("max is below first"));
        }
        if !(self.factor >= 1.0 && self.factor.is_finite()) {
            return Err(BackoffError::Invalid(
                "factor must be at least 1 (2 doubles each wait)",
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(BackoffError::Invalid("jitter must be between 0 and 1"));
        }
        if self.max_attempts == Some(0) {
            return Err(BackoffError::Invalid(
                "max_attempts is 0: not even one attempt (None tries for ever)",
            ));
        }
        Ok(())
    }

    /// The wait after failed attempt `attempt` (1 for the first), before jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let d = self.first.as_secs_f64() * self.factor.powi(exp);
        Duration::from_secs_f64(d.min(self.max.as_secs_f64()))
    }

    /// The wait after failed attempt `attempt`, with jitter drawn from `unit` (in 0..1).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let spread = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        self.base_delay(attempt).mul_f64(spread)
    }
}

/// One failed attempt, as [`Endpoint::connect_with_backoff`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Which attempt failed (1 for the first).
    pub number: u32,
    /// Why it failed.
    pub error: ConnectError,
    /// The wait before the next attempt; `None` when there is none (the error is final,
    /// or the attempts are used up).
    pub retry_in: Option<Duration>,
}

/// Why [`Endpoint::connect_with_backoff`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReconnectError {
    /// The backoff settings are unusable.
    #[error(transparent)]
    Backoff(#[from] BackoffError),
    /// An attempt failed in a way another attempt cannot cure (a failed handshake, a
    /// misuse).
    #[error("not retried: {0}")]
    Final(ConnectError),
    /// Every attempt failed; the last one's error.
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: ConnectError,
    },
}

/// Whether another attempt may cure `e`: the server may be back, or less busy, by then.
pub fn is_transient(e: &ConnectError) -> bool {
    match e {
        ConnectError::Lost(c) => matches!(
            c,
            ConnectionError::TimedOut
                | ConnectionError::HandshakeTimedOut
                | ConnectionError::Reset
                | ConnectionError::PeerClosed { .. }
                | ConnectionError::ApplicationClosed { .. }
        ),
        _ => false,
    }
}

impl Endpoint {
    /// Connects to `addr`, trying again after each failure another attempt may cure
    /// ([`is_transient`]) as `backoff` says; `report` hears of each failed attempt, with
    /// the wait before the next. For re-establishing a lost connection, call it again
    /// once [`Connection::closed`] resolves.
    ///
    /// ```no_run
    /// # async fn f(ep: stoq::Endpoint, addr: std::net::SocketAddr) -> Result<(), stoq::api::ReconnectError> {
    /// use stoq::api::Backoff;
    /// let conn = ep
    ///     .connect_with_backoff(addr, "files.example", &Backoff::default(), |a| {
    ///         eprintln!("attempt {} failed: {}; next in {:?}", a.number, a.error, a.retry_in)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ReconnectError::Final`] for a failure no retry cures, [`ReconnectError::GaveUp`]
    /// once the attempts are used up, [`ReconnectError::Backoff`] for unusable settings.
    pub async fn connect_with_backoff(
        &self,
        addr: SocketAddr,
        server_name: &str,
        backoff: &Backoff,
        mut report: impl FnMut(&Attempt),
    ) -> Result<Connection, ReconnectError> {
        backoff.check()?;
        let mut number = 0u32;
        loop {
            number += 1;
            let error = match self.connect(addr, server_name).await {
                Ok(c) => return Ok(c),
                Err(e) => e,
            };
            let transient = is_transient(&error);
            let more = backoff.max_attempts.is_none_or(|m| number < m);
            let retry_in = (transient && more).then(|| {
                let unit = f64::from(OsRng.next_u32()) / f64::from(u32::MAX);
                backoff.delay(number, unit)
            });
            report(&Attempt {
                number,
                error: error.clone(),
                retry_in,
            });
            match retry_in {
                Some(d) => tokio::time::sleep(d).await,
                None if transient => {
                    return Err(ReconnectError::GaveUp {
                        attempts: number,
                        last: error,
                    });
                }
                None => return Err(ReconnectError::Final(error)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_within_the_jitter() {
        let b = Backoff::default();
        let ms = |d: Duration| d.as_millis();
        assert_eq!(
            (1..=9).map(|n| ms(b.base_delay(n))).collect::<Vec<_>>(),
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
        assert_eq!(ms(b.base_delay(u32::MAX)), 10_000);
        assert_eq!(ms(b.delay(1, 0.0)), 80);
        assert_eq!(ms(b.delay(1, 0.5)), 100);
        assert_eq!(ms(b.delay(1, 1.0)), 120);
    }

    #[test]
    fn unusable_settings_name_the_fix() {
        let bad = [
            Backoff {
                first: Duration::ZERO,
                ..Backoff::default()
            },
            Backoff {
                max: Duration::from_millis(1),
                ..Backoff::default()
            },
            Backoff {
                factor: 0.5,
                ..Backoff::default()
            },
            Backoff {
                factor: f64::NAN,
                ..Backoff::default()
            },
            Backoff {
                jitter: 1.5,
                ..Backoff::default()
            },
            Backoff {
                max_attempts: Some(0),
                ..Backoff::default()
            },
        ];
        for b in bad {
            assert!(b.check().is_err(), "{b:?}");
        }
        assert!(Backoff::default().check().is_ok());
    }

    #[test]
    fn only_what_a_retry_may_cure_is_retried() {
        assert!(is_transient(&ConnectError::Lost(ConnectionError::TimedOut)));
        assert!(is_transient(&ConnectError::Lost(ConnectionError::Reset)));
        assert!(!is_transient(&ConnectError::NotAClient));
        assert!(!is_transient(&ConnectError::Lost(
            ConnectionError::VersionMismatch
        )));
    }
}
