//! Route and neighbour lookups over rtnetlink, for the AF_XDP backend, which writes
//! Ethernet headers itself: where does a datagram to `ip` go next, and what is that next
//! hop's MAC address?
//!
//! Only two requests are made, each answered by the kernel: `RTM_GETROUTE` for one
//! destination (its output interface and gateway), and an `RTM_GETNEIGH` dump filtered
//! here. Replies are parsed with every length checked.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NLMSG_HDR: usize = 16;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const IFLA_ADDRESS: u16 = 1;
const IFLA_NUM_RX_QUEUES: u16 = 32;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// Neighbour states with a usable address (REACHABLE, STALE, DELAY, PROBE, NOARP,
/// PERMANENT).
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;

/// An rtnetlink socket.
#[derive(Debug)]
pub(crate) struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

fn family(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn ip_from(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

/// Iterates `(type, payload)` over the route attributes in `b`, stopping at the first
/// malformed one.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let data = &b[4..len];
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some((ty, data))
    })
}

impl Netlink {
    /// Opens the socket.
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: a valid fd and a timeval of the right size: replies never block long.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Ok(Self {
            fd,
            seq: 1,
            buf: vec![0; 64 << 10],
        })
    }

    /// Sends one request and calls `f` on each reply message of type `want` until the
    /// kernel is done.
    fn request(
        &mut self,
        ty: u16,
        flags: u16,
        body: &[u8],
        want: u16,
        mut f: impl FnMut(&[u8]),
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let len = NLMSG_HDR + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // SAFETY: `msg` is a live buffer of the length passed; the kernel is the peer
        // (a zeroed sockaddr_nl addresses it).
        let r = unsafe {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&raw const sa).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let dump = flags & NLM_F_DUMP != 0;
        // A dump ends with NLMSG_DONE; a plain request with its one answer.
        for _ in 0..10_000 {
            // SAFETY: `buf` is a live, writable buffer of the length passed.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut b = &self.buf[..n as usize];
            while b.len() >= NLMSG_HDR {
                let mlen = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let mty = u16::from_ne_bytes([b[4], b[5]]);
                let seq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
                if mlen < NLMSG_HDR || mlen > b.len() {
                    return Err(io::Error::other("malformed netlink reply"));
                }
                let payload = &b[NLMSG_HDR..mlen];
                b = &b[mlen.next_multiple_of(4).min(b.len())..];
                if seq != self.seq {
                    continue;
                }
                match mty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = payload
                            .get(..4)
                            .map_or(0, |c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
                        return if code == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    t if t == want => {
                        f(payload);
                        if !dump {
                            return Ok(());
                        }
                    }
                    _ => {}
                }
            }
        }
        Err(io::Error::other("netlink reply did not end"))
    }

    /// The output interface and next hop (the gateway, or `dst` itself when on-link).
    pub(crate) fn route(&mut self, dst: IpAddr) -> io::Result<(u32, IpAddr)> {
        let a = ip_bytes(dst);
        let mut body = vec![0u8; 12];
        body[0] = family(dst);
        body[1] = (a.len() * 8) as u8;
        let alen = 4 + a.len();
        body.extend_from_slice(&(alen as u16).to_ne_bytes());
        body.extend_from_slice(&RTA_DST.to_ne_bytes());
        body.extend_from_slice(&a);
        let mut out = None;
        self.request(RTM_GETROUTE, 0, &body, RTM_NEWROUTE, |p| {
            let (mut oif, mut gw) = (None, None);
            for (t, d) in attrs(p.get(12..).unwrap_or_default()) {
                match t {
                    RTA_OIF if d.len() == 4 => {
                        oif = Some(u32::from_ne_bytes([d[0], d[1], d[2], d[3]]));
                    }
                    RTA_GATEWAY => gw = ip_from(d),
                    _ => {}
                }
            }
            if let Some(oif) = oif {
                out = Some((oif, gw.unwrap_or(dst)));
            }
        })?;
        out.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no route to {dst}")))
    }

    /// Interface `ifindex`'s MAC address and number of receive queues. (Through netlink,
    /// not sysfs: sysfs shows the namespace it was mounted in, not this thread's.)
    pub(crate) fn link(&mut self, ifindex: u32) -> io::Result<([u8; 6], usize)> {
        let mut body = vec![0u8; 16];
        body[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        let mut out = None;
        self.request(RTM_GETLINK, 0, &body, RTM_NEWLINK, |p| {
            let (mut mac, mut queues) = (None, 1usize);
            for (t, d) in attrs(p.get(16..).unwrap_or_default()) {
                match t {
                    IFLA_ADDRESS if d.len() == 6 => mac = <[u8; 6]>::try_from(d).ok(),
                    IFLA_NUM_RX_QUEUES if d.len() == 4 => {
                        queues = u32::from_ne_bytes([d[0], d[1], d[2], d[3]]) as usize;
                    }
                    _ => {}
                }
            }
            out = Some((mac.unwrap_or([0; 6]), queues.max(1)));
        })?;
        out.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no interface {ifindex}"))
        })
    }

    /// The MAC address the kernel knows for `ip` on interface `ifindex`, if usable.
    pub(crate) fn neighbour(&mut self, ifindex: u32, ip: IpAddr) -> io::Result<Option<[u8; 6]>> {
        let mut body = vec![0u8; 12];
        body[0] = family(ip);
        body[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
        let want = ip_bytes(ip);
        let mut out = None;
        self.request(RTM_GETNEIGH, NLM_F_DUMP, &body, RTM_NEWNEIGH, |p| {
            if p.len() < 12 {
                return;
            }
            let idx = i32::from_ne_bytes([p[4], p[5], p[6], p[7]]) as u32;
            let state = u16::from_ne_bytes([p[8], p[9]]);
            if idx != ifindex || state & NUD_USABLE == 0 {
                return;
            }
            let (mut dst, mut mac) = (None, None);
            for (t, d) in attrs(&p[12..]) {
                match t {
                    NDA_DST => dst = Some(d),
                    NDA_LLADDR if d.len() == 6 => mac = <[u8; 6]>::try_from(d).ok(),
                    _ => {}
                }
            }
            if dst == Some(&want[..]) && mac.is_some() {
                out = mac;
            }
        })?;
        Ok(out)
    }
}

/// The interface that holds `ip`: its name and index.
pub(crate) fn interface_of(ip: IpAddr) -> io::Result<(String, u32)> {
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a list freed below.
    if unsafe { libc::getifaddrs(&raw mut ifap) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = None;
    let mut p = ifap;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*p };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: a non-null ifa_addr points at a sockaddr of its family's size.
            let fam = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            let addr = match fam {
                libc::AF_INET => {
                    // SAFETY: the family says it is a sockaddr_in.
                    let a = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                    Some(IpAddr::from(u32::from_be(a.sin_addr.s_addr).to_be_bytes()))
                }
                libc::AF_INET6 => {
                    // SAFETY: the family says it is a sockaddr_in6.
                    let a = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                    Some(IpAddr::from(a.sin6_addr.s6_addr))
                }
                _ => None,
            };
            if addr == Some(ip) {
                // SAFETY: ifa_name is a NUL-terminated string owned by the list.
                let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
                    .to_string_lossy()
                    .into_owned();
                found = Some(name);
                break;
            }
        }
        p = ifa.ifa_next;
    }
    // SAFETY: the list came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(ifap) };
    let name = found.ok_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("no interface holds {ip}"))
    })?;
    let c = std::ffi::CString::new(name.clone()).map_err(io::Error::other)?;
    // SAFETY: a valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((name, idx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_route_and_interface() {
        let mut nl = Netlink::new().expect("netlink");
        let lo = IpAddr::from([127, 0, 0, 1]);
        let (oif, hop) = nl.route(lo).expect("route to 127.0.0.1");
        assert_eq!(hop, lo, "on-link");
        let (name, idx) = interface_of(lo).expect("lo");
        assert_eq!(name, "lo");
        assert_eq!(idx, oif);
        let (mac, queues) = nl.link(idx).expect("link");
        assert_eq!(mac, [0; 6]);
        assert!(queues >= 1);
        // No neighbour entries on loopback.
        assert_eq!(nl.neighbour(idx, lo).expect("dump"), None);
    }

    #[test]
    fn attributes_stop_at_garbage() {
        let mut b = vec![8, 0, 1, 0, 1, 2, 3, 4];
        b.extend_from_slice(&[200, 0, 2, 0]);
        let v: Vec<_> = attrs(&b).collect();
        assert_eq!(v, vec![(1, &[1u8, 2, 3, 4][..])]);
    }
}
