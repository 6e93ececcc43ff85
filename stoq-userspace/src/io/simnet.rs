//! The in-memory backend: two engines joined by the transport core's simulated links
//! ([`crate::sim::Link`]: rate, queue, delay, jitter, loss, reordering, duplication,
//! corruption, blackholes), in real time. For tests of the engine and the async API
//! without sockets, and with a lossy, slow or hostile path on demand.
//!
//! Each side's readiness is a `timerfd` armed for its incoming link's next arrival: the
//! sender re-arms the receiver's when it queues an earlier datagram.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::{Backend, BackendKind, BackendStats, Capabilities, RxBatch, RxMeta, TxBatch};
use crate::sim::{Link, LinkConfig};

/// One direction: the link and the receiver's timer.
#[derive(Debug)]
struct Direction {
    link: Mutex<Link>,
    timer: OwnedFd,
}

impl Direction {
    fn new(cfg: LinkConfig, seed: u64) -> io::Result<Self> {
        // SAFETY: plain timerfd_create; the result is checked.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            link: Mutex::new(Link::new(cfg, Instant::now(), seed)),
            // SAFETY: a fresh descriptor nothing else owns.
            timer: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn link(&self) -> MutexGuard<'_, Link> {
        self.link
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Arms the receiver's timer for `at` (at once if it is past).
    fn arm(&self, at: Option<Instant>) {
        let ns = at.map_or(0, |t| {
            t.saturating_duration_since(Instant::now())
                .as_nanos()
                .max(1) as u64
        });
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: a valid timerfd and a live itimerspec; a relative time.
        unsafe {
            libc::timerfd_settime(
                self.timer.as_raw_fd(),
                0,
                &raw const spec,
                std::ptr::null_mut(),
            )
        };
    }
}

/// One end of a simulated path.
#[derive(Debug)]
pub struct SimBackend {
    local: SocketAddr,
    out: Arc<Direction>,
    inc: Arc<Direction>,
    stats: BackendStats,
}

/// Two backends at `a` and `b`, joined by a link each way (`ab` carries what `a` sends).
///
/// # Errors
/// `timerfd_create` failures.
pub fn pair(
    a: SocketAddr,
    b: SocketAddr,
    ab: LinkConfig,
    ba: LinkConfig,
    seed: u64,
) -> io::Result<(SimBackend, SimBackend)> {
    let ab = Arc::new(Direction::new(ab, seed)?);
    let ba = Arc::new(Direction::new(ba, seed ^ 0x5eed)?);
    Ok((
        SimBackend {
            local: a,
            out: ab.clone(),
            inc: ba.clone(),
            stats: BackendStats::default(),
        },
        SimBackend {
            local: b,
            out: ba,
            inc: ab,
            stats: BackendStats::default(),
        },
    ))
}

impl SimBackend {
    /// Changes the outgoing link's behaviour from now on (a blackhole, more loss, ...).
    pub fn set_link(&self, cfg: LinkConfig) {
        self.out.link().set_config(cfg);
    }
}

impl Backend for SimBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Custom
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            gso_segments: 1,
            ecn: true,
            pktinfo: true,
            ..Capabilities::default()
        }
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn recv(&mut self, batch: &mut RxBatch) -> io::Result<usize> {
        batch.clear();
        let mut drain = [0u8; 8];
        // SAFETY: reading a timerfd's 8-byte expiry count into a live buffer (clears it).
        let _ = unsafe { libc::read(self.inc.timer.as_raw_fd(), drain.as_mut_ptr().cast(), 8) };
        let now = Instant::now();
        let mut n = 0;
        let next = {
            let mut link = self.inc.link();
            while n < batch.slots() {
                let Some(d) = link.pop(now) else {
                    break;
                };
                if d.to != self.local || d.data.len() > batch.slot_size() {
                    continue;
                }
                batch.slot_mut(n)[..d.data.len()].copy_from_slice(&d.data);
                batch.set(
                    n,
                    RxMeta {
                        ecn: d.ecn,
                        dst: Some(d.to.ip()),
                        ..RxMeta::new(d.from, d.data.len())
                    },
                );
                n += 1;
            }
            link.next_arrival()
        };
        if next.is_some() {
            self.inc.arm(next);
        }
        if n > 0 {
            self.stats.rx_batches += 1;
            self.stats.rx_datagrams += n as u64;
        }
        Ok(n)
    }

    fn send(&mut self, batch: &mut TxBatch) -> io::Result<()> {
        batch.split_segments();
        let now = Instant::now();
        let next = {
            let mut link = self.out.link();
            while let Some(it) = batch.pending().first().copied() {
                link.send(now, self.local, it.to, it.ecn, batch.bytes(&it));
                self.stats.tx_datagrams += 1;
                batch.advance(1);
            }
            link.next_arrival()
        };
        self.stats.tx_batches += 1;
        self.out.arm(next);
        Ok(())
    }

    fn readiness(&self) -> RawFd {
        self.inc.timer.as_raw_fd()
    }

    fn socket_fd(&self) -> RawFd {
        self.inc.timer.as_raw_fd()
    }

    fn stats(&self) -> BackendStats {
        self.stats
    }
}
