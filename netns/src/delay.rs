//! A delay line: propagation delay for a test topology on a kernel without netem.
//!
//! A TUN device in a routing namespace takes every packet that arrives on the chosen
//! interfaces (a policy rule routes them into it), holds each for a fixed time and writes
//! it back, where the namespace's stack routes it on as if it had just arrived. Order is
//! kept (a constant delay is FIFO). It exists so that a test can count round trips: on
//! bare veth a round trip is tens of microseconds and software costs dominate, while
//! behind a delay line of milliseconds the time a protocol takes is its round trips.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::NetNs;

/// The policy-routing table the delay line's default route lives in.
const TABLE: &str = "7";
/// How often the line's threads look at the stop flag when idle.
const TICK: Duration = Duration::from_millis(20);

/// A running delay line; dropping it stops its threads and removes the device.
#[derive(Debug)]
pub struct DelayLine {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl DelayLine {
    /// Creates TUN device `dev` in `ns`, routes every packet arriving on the interfaces
    /// `from` through it (`ip rule iif <from> lookup 7`, table 7's default route is `dev`),
    /// and delays each packet by `delay` before `ns` forwards it. A packet crossing `ns`
    /// from one of `from` to another is delayed once, so a round trip between two hosts
    /// behind `ns` takes at least `2 × delay`. Reverse-path filtering is turned off in `ns`:
    /// the packets come back on `dev`, not on the interface their source is routed by.
    ///
    /// # Errors
    /// Opening `/dev/net/tun` or creating the device, or the failing `ip`/`sysctl` command.
    pub fn new(ns: &NetNs, dev: &str, from: &[&str], delay: Duration) -> io::Result<Self> {
        let name = dev.to_owned();
        let tun = Arc::new(ns.run(move || open_tun(&name))?);
        ns.ip(&["link", "set", dev, "up"])?;
        ns.ip(&["route", "add", "default", "dev", dev, "table", TABLE])?;
        for i in from {
            ns.ip(&["rule", "add", "pref", "10", "iif", i, "lookup", TABLE])?;
        }
        for conf in ["all", "default", dev] {
            let key = format!("net.ipv4.conf.{conf}.rp_filter=0");
            let ok = std::process::Command::new("ip")
                .args(["netns", "exec", ns.name(), "sysctl", "-qw", &key])
                .status()?
                .success();
            if !ok {
                return Err(io::Error::other(format!("sysctl {key} failed")));
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
        let (t, s) = (tun.clone(), stop.clone());
        let reader = std::thread::spawn(move || read_side(&t, &s, &tx, delay));
        let (t, s) = (tun, stop.clone());
        let writer = std::thread::spawn(move || write_side(&t, &s, &rx));
        Ok(Self {
            stop,
            threads: vec![reader, writer],
        })
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Opens a TUN device (IP packets, no packet-information header) named `name` in the
/// calling thread's namespace.
fn open_tun(name: &str) -> io::Result<File> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::other(format!(
            "interface name {name:?} must have 1 to 15 bytes"
        )));
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req: libc::ifreq = {
        // SAFETY: ifreq is plain old data (byte arrays and a union of integers, socket
        // addresses and a pointer); all-zero bytes are a valid value of it.
        unsafe { std::mem::zeroed() }
    };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // Both flags fit a c_short (0x0001 | 0x1000).
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is and outlives the call;
    // `f` is an open /dev/net/tun descriptor.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

/// Reads packets as they come and queues each with the time it is due back.
fn read_side(tun: &File, stop: &AtomicBool, tx: &mpsc::Sender<(Instant, Vec<u8>)>, d: Duration) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd: tun.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, TICK.as_millis() as libc::c_int) };
        if n <= 0 {
            continue;
        }
        if let Ok(len @ 1..) = (&*tun).read(&mut buf)
            && tx.send((Instant::now() + d, buf[..len].to_vec())).is_err()
        {
            return;
        }
    }
}

/// Writes each packet back when it is due, in arrival order.
fn write_side(tun: &File, stop: &AtomicBool, rx: &mpsc::Receiver<(Instant, Vec<u8>)>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok((due, packet)) = rx.recv_timeout(TICK) else {
            continue;
        };
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        // A packet the stack refuses (no route, a full queue) is lost, as on a wire.
        let _ = (&*tun).write(&packet);
    }
}
