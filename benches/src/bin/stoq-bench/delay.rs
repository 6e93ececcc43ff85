//! The project's delay emulator, for the bottleneck run (this kernel has no netem): a
//! userspace bridge between two interfaces of a middle namespace that holds every frame
//! for a fixed one-way delay, then writes it out the other side. Frames are read and
//! written whole through `AF_PACKET` sockets, so TCP, STOQ and the probe all cross the same
//! path; a TBF qdisc on the egress interface is the bottleneck, and what it refuses is
//! dropped, as a router would.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Frames held at most per direction (beyond, new frames are dropped and counted).
const MAX_HELD: usize = 50_000;

/// An `AF_PACKET` socket bound to one interface, seeing every frame it receives but not
/// the ones it sends.
fn packet_socket(ifname: &str) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(ifname).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2) call.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let big: libc::c_int = 32 << 20;
    for (level, opt, v) in [
        (libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, one),
        (libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, big),
        (libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, big),
    ] {
        // SAFETY: an int option of the right size on a valid socket.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                opt,
                (&raw const v).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: a zeroed sockaddr_ll is valid; the fields set are the ones bind reads.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = index as i32;
    // SAFETY: binds a valid socket to a valid, correctly sized address.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const sll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Counters of a running emulator.
#[derive(Debug, Default)]
pub(crate) struct DelayStats {
    /// Frames forwarded.
    pub(crate) forwarded: AtomicU64,
    /// Frames the egress refused (the bottleneck's drops) or the hold queue had no room for.
    pub(crate) dropped: AtomicU64,
}

/// A running emulator; stops and joins on drop.
#[derive(Debug)]
pub(crate) struct Delay {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Its counters.
    pub(crate) stats: Arc<DelayStats>,
}

struct Dir {
    from: OwnedFd,
    to: OwnedFd,
    held: VecDeque<(Instant, Vec<u8>)>,
}

impl Delay {
    /// Bridges `left` and `right` (in the calling thread's namespace, which the emulator's
    /// thread inherits when spawned from it) with `one_way` delay in each direction.
    pub(crate) fn start(left: &str, right: &str, one_way: Duration) -> io::Result<Self> {
        let (l1, r1) = (packet_socket(left)?, packet_socket(right)?);
        let (l2, r2) = (l1.try_clone()?, r1.try_clone()?);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(DelayStats::default());
        let (st, s2) = (stop.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("stoq-delay".into())
            .spawn(move || {
                let mut dirs = [
                    Dir {
                        from: l1,
                        to: r2,
                        held: VecDeque::new(),
                    },
                    Dir {
                        from: r1,
                        to: l2,
                        held: VecDeque::new(),
                    },
                ];
                let mut pool: Vec<Vec<u8>> = Vec::new();
                let mut scratch = vec![0u8; 65_536];
                while !st.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    let next = dirs
                        .iter()
                        .filter_map(|d| d.held.front().map(|f| f.0))
                        .min()
                        .map_or(Duration::from_millis(50), |t| {
                            t.saturating_duration_since(now)
                        });
                    let mut fds = [
                        libc::pollfd {
                            fd: dirs[0].from.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        },
                        libc::pollfd {
                            fd: dirs[1].from.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        },
                    ];
                    let ts = libc::timespec {
                        tv_sec: next.as_secs() as libc::time_t,
                        tv_nsec: libc::c_long::from(next.subsec_nanos() as i32),
                    };
                    // SAFETY: two valid pollfds, a valid timeout, no signal mask.
                    unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &ts, std::ptr::null()) };
                    let now = Instant::now();
                    for d in &mut dirs {
                        for _ in 0..256 {
                            // SAFETY: receives into a buffer we own, of its length.
                            let n = unsafe {
                                libc::recv(
                                    d.from.as_raw_fd(),
                                    scratch.as_mut_ptr().cast(),
                                    scratch.len(),
                                    0,
                                )
                            };
                            if n <= 0 {
                                break;
                            }
                            if d.held.len() >= MAX_HELD {
                                s2.dropped.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            let mut b = pool.pop().unwrap_or_default();
                            b.clear();
                            b.extend_from_slice(&scratch[..n as usize]);
                            d.held.push_back((now + one_way, b));
                        }
                        while d.held.front().is_some_and(|f| f.0 <= now) {
                            let Some((_, b)) = d.held.pop_front() else {
                                break;
                            };
                            // SAFETY: sends the initialised bytes of a buffer we own.
                            let r = unsafe {
                                libc::send(d.to.as_raw_fd(), b.as_ptr().cast(), b.len(), 0)
                            };
                            if r < 0 {
                                s2.dropped.fetch_add(1, Ordering::Relaxed);
                            } else {
                                s2.forwarded.fetch_add(1, Ordering::Relaxed);
                            }
                            pool.push(b);
                        }
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
            stats,
        })
    }
}

impl Drop for Delay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
