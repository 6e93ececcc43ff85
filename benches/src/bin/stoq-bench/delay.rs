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
/// Frames per `recvmmsg`/`sendmmsg`.
const BATCH: usize = 64;
/// Room per received frame (offloads are off on the bridged links: frames are MTU-sized).
const SLOT: usize = 16 << 10;

/// Receives up to [`BATCH`] frames into `arena` (slot `i` at `i * SLOT`); returns their
/// lengths.
fn recv_batch(fd: &OwnedFd, arena: &mut [u8]) -> Vec<usize> {
    let mut iov: Vec<libc::iovec> = arena
        .chunks_mut(SLOT)
        .take(BATCH)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr().cast(),
            iov_len: c.len(),
        })
        .collect();
    // SAFETY: zeroed mmsghdrs are valid; each is pointed at one iovec below.
    let mut hdr: Vec<libc::mmsghdr> = (0..iov.len())
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    for (h, v) in hdr.iter_mut().zip(iov.iter_mut()) {
        h.msg_hdr.msg_iov = v;
        h.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: hdr and the buffers its iovecs point into outlive the call.
    let n = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            hdr.as_mut_ptr(),
            hdr.len() as u32,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n <= 0 {
        return Vec::new();
    }
    hdr[..n as usize]
        .iter()
        .map(|h| h.msg_len as usize)
        .collect()
}

/// Sends `frames` with one `sendmmsg`; returns how many the kernel took.
fn send_batch<'a>(fd: &OwnedFd, frames: impl Iterator<Item = &'a [u8]>) -> usize {
    let mut iov: Vec<libc::iovec> = frames
        .map(|f| libc::iovec {
            iov_base: f.as_ptr().cast_mut().cast(),
            iov_len: f.len(),
        })
        .collect();
    // SAFETY: zeroed mmsghdrs are valid; each is pointed at one iovec below.
    let mut hdr: Vec<libc::mmsghdr> = (0..iov.len())
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    for (h, v) in hdr.iter_mut().zip(iov.iter_mut()) {
        h.msg_hdr.msg_iov = v;
        h.msg_hdr.msg_iovlen = 1;
    }
    let mut done = 0;
    while done < hdr.len() {
        // SAFETY: the headers and the frames they point at outlive the call; the kernel
        // only reads the frames.
        let n = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                hdr[done..].as_mut_ptr(),
                (hdr.len() - done) as u32,
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            // The frame at `done` was refused: count it dropped and go on with the rest.
            return done + send_batch_rest(fd, &mut hdr[done + 1..]);
        }
        done += n as usize;
    }
    done
}

fn send_batch_rest(fd: &OwnedFd, hdr: &mut [libc::mmsghdr]) -> usize {
    let mut ok = 0;
    for h in hdr {
        // SAFETY: as in send_batch; one header at a time.
        if unsafe { libc::sendmsg(fd.as_raw_fd(), &h.msg_hdr, libc::MSG_DONTWAIT) } >= 0 {
            ok += 1;
        }
    }
    ok
}

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
                let mut rx = vec![0u8; BATCH * SLOT];
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
                        for _ in 0..8 {
                            let got = recv_batch(&d.from, &mut rx);
                            for (i, &n) in got.iter().enumerate() {
                                if d.held.len() >= MAX_HELD {
                                    s2.dropped.fetch_add(1, Ordering::Relaxed);
                                    continue;
                                }
                                let mut b = pool.pop().unwrap_or_default();
                                b.clear();
                                b.extend_from_slice(&rx[i * SLOT..i * SLOT + n]);
                                d.held.push_back((now + one_way, b));
                            }
                            if got.len() < BATCH {
                                break;
                            }
                        }
                        loop {
                            let due = d.held.iter().take(BATCH).take_while(|f| f.0 <= now).count();
                            if due == 0 {
                                break;
                            }
                            let sent = send_batch(&d.to, d.held.iter().take(due).map(|f| &f.1[..]));
                            // What the egress refused (TBF full, socket buffer full) is
                            // dropped, as a router's full queue drops.
                            let sent = sent.min(due);
                            s2.forwarded.fetch_add(sent as u64, Ordering::Relaxed);
                            s2.dropped.fetch_add((due - sent) as u64, Ordering::Relaxed);
                            for _ in 0..due {
                                if let Some((_, b)) = d.held.pop_front() {
                                    pool.push(b);
                                }
                            }
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
