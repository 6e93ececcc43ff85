//! The AF_XDP backend: STOQ packets arrive through an XSK socket that the `stoq_xdp`
//! program redirects them to, and leave through its TX ring, with Ethernet, IP and UDP
//! headers written in place in UMEM frames.
//!
//! - **Receive**: frames from the RX ring are parsed with the typed wire views
//!   (`stoq-common`), their payload copied into the engine's batch, and the frames
//!   recycled into the fill ring. The source MAC of each frame is remembered for its
//!   source IP: replies go back through the hop they came from.
//! - **Send** ([`Backend::send_direct`]): the transport writes each datagram straight into
//!   a UMEM frame, after room for the largest headers; the headers are then written in
//!   front of it (IPv4 headers start 20 bytes later than IPv6 ones) with their checksums.
//!   There is no copy between the encryption and the wire.
//! - **Next hop**: the learned MAC, else the kernel's route and neighbour tables over
//!   netlink; when the kernel does not know the neighbour yet, an empty datagram through
//!   the kernel socket makes it resolve it, and the packet waiting is dropped (loss
//!   recovery resends it).
//! - **The port**: a normal UDP socket on the same address and port keeps it reserved and
//!   receives anything the program passes to the kernel.
//! - **Readiness**: an epoll descriptor watching both the XSK and the UDP socket.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use stoq_common::wire::{ethernet, ipv4, ipv6, udp};

use super::netlink::{self, Netlink};
use super::udp::{UdpBackend, UdpConfig};
use super::{
    Backend, BackendKind, BackendStats, Capabilities, EcnCodepoint, Fill, RxBatch, RxMeta,
    Transmit, TxBatch,
};
use crate::xdp::xsk::{XskConfig, XskSocket};

/// Room in front of each transmitted datagram: Ethernet, IPv6 (the larger) and UDP.
const HEADROOM: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN + udp::HEADER_LEN;
/// Learned next-hop MACs kept at most (the table is cleared when it fills).
const MAX_LEARNED: usize = 4096;
/// How often one destination may be primed.
const PRIME_INTERVAL: Duration = Duration::from_millis(100);

/// Settings of one AF_XDP socket (one per receive queue).
#[derive(Debug, Clone, Copy)]
pub struct AfXdpConfig {
    /// The local address: a specific IP (it names the interface) and the port.
    pub bind: SocketAddr,
    /// The interface's receive queue this socket serves.
    pub queue: u32,
    /// Ring and UMEM sizes.
    pub xsk: XskConfig,
    /// Kernel buffer of the companion UDP socket.
    pub buffer_bytes: usize,
}

/// One AF_XDP socket with its companion UDP socket.
pub struct AfXdpBackend {
    xsk: XskSocket,
    udp: UdpBackend,
    epoll: OwnedFd,
    local: SocketAddr,
    ifindex: u32,
    mac: [u8; 6],
    learned: HashMap<IpAddr, [u8; 6]>,
    netlink: Netlink,
    primed: HashMap<IpAddr, Instant>,
    stats: BackendStats,
    /// Datagrams dropped because the next hop's MAC was not known yet.
    unresolved: u64,
    /// (source IP, source MAC) pairs seen in the current receive batch.
    seen: Vec<(IpAddr, [u8; 6])>,
    /// Datagrams the companion UDP socket received.
    side: RxBatch,
}

impl std::fmt::Debug for AfXdpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpBackend")
            .field("local", &self.local)
            .field("ifindex", &self.ifindex)
            .field("zero_copy", &self.xsk.is_zero_copy())
            .finish_non_exhaustive()
    }
}

impl AfXdpBackend {
    /// Binds the XSK to `queue` of the interface holding `bind`'s IP and opens the
    /// companion UDP socket. The caller registers [`xsk_fd`](Self::xsk_fd) in the
    /// program's XSKMAP.
    ///
    /// # Errors
    /// An unspecified address, an unknown interface, or the kernel's refusals.
    pub fn bind(cfg: &AfXdpConfig, udp: UdpBackend) -> io::Result<Self> {
        let local = udp.local_addr();
        let (_, ifindex) = netlink::interface_of(cfg.bind.ip())?;
        let mut netlink = Netlink::new()?;
        let (mac, _) = netlink.link(ifindex)?;
        let xsk = XskSocket::bind(ifindex, cfg.queue, cfg.xsk)?;
        // SAFETY: plain epoll_create1; the result is checked.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
        for fd in [xsk.as_raw_fd(), udp.socket_fd()] {
            // Readable only: the UDP socket is nearly always writable, and a descriptor
            // that is always ready would hide every new event from the engine.
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: fd as u64,
            };
            // SAFETY: valid epoll and target descriptors; `ev` is a live epoll_event.
            if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &raw mut ev) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Self {
            xsk,
            udp,
            epoll,
            local,
            ifindex,
            mac,
            learned: HashMap::new(),
            netlink,
            primed: HashMap::new(),
            stats: BackendStats::default(),
            unresolved: 0,
            seen: Vec::with_capacity(64),
            side: RxBatch::new(8, 2048),
        })
    }

    /// The XSK socket's descriptor, for the program's XSKMAP.
    pub fn xsk_fd(&self) -> RawFd {
        self.xsk.as_raw_fd()
    }

    /// Datagrams dropped because the next hop's MAC was not known yet (resolution was
    /// started; loss recovery resends them).
    pub fn unresolved(&self) -> u64 {
        self.unresolved
    }

    /// The kernel's counters for the XSK socket.
    pub fn xsk_statistics(&self) -> Option<libc::xdp_statistics> {
        self.xsk.statistics().ok()
    }

    /// Whether the socket runs in zero-copy mode (copy mode otherwise).
    pub fn is_zero_copy(&self) -> bool {
        self.xsk.is_zero_copy()
    }

    /// The next hop's MAC for `ip`, or `None` (resolution primed) when unknown.
    fn next_hop(&mut self, to: SocketAddr) -> Option<[u8; 6]> {
        if let Some(m) = self.learned.get(&to.ip()) {
            return Some(*m);
        }
        let hop = self.netlink.route(to.ip()).ok();
        if let Some((oif, gw)) = hop
            && oif == self.ifindex
            && let Ok(Some(mac)) = self.netlink.neighbour(oif, gw)
        {
            self.learn(to.ip(), mac);
            return Some(mac);
        }
        // Unknown: let the kernel resolve it, at most every PRIME_INTERVAL.
        let now = Instant::now();
        let due = self
            .primed
            .get(&to.ip())
            .is_none_or(|t| now.saturating_duration_since(*t) >= PRIME_INTERVAL);
        if due {
            if self.primed.len() >= MAX_LEARNED {
                self.primed.clear();
            }
            self.primed.insert(to.ip(), now);
            let _ = self
                .udp
                .socket()
                .send_to(&[], &super::udp::mapped(to, self.local.is_ipv6()).into());
        }
        None
    }

    fn learn(&mut self, ip: IpAddr, mac: [u8; 6]) {
        if self.learned.len() >= MAX_LEARNED && !self.learned.contains_key(&ip) {
            self.learned.clear();
        }
        self.learned.insert(ip, mac);
    }
}

/// Parses an Ethernet/IP/UDP frame: (source MAC, source, destination, payload range).
/// What [`parse`] found in a received frame.
struct Parsed {
    /// The sender's MAC address.
    mac: [u8; 6],
    from: SocketAddr,
    to: SocketAddr,
    /// The ECN bits of the TOS or traffic class.
    ecn: EcnCodepoint,
    /// Where the UDP payload lies in the frame.
    payload: std::ops::Range<usize>,
}

fn parse(frame: &[u8]) -> Option<Parsed> {
    let e = ethernet::Packet::new_checked(frame).ok()?;
    let eth = ethernet::Repr::parse(&e).ok()?;
    let l3 = e.header_len();
    let (src, dst, tos, l4, l4_len) = match eth.ethertype {
        ethernet::ETHERTYPE_IPV4 => {
            let p = ipv4::Packet::new_checked(&frame[l3..]).ok()?;
            let r = ipv4::Repr::parse(&p).ok()?;
            if r.protocol != ipv4::PROTO_UDP {
                return None;
            }
            (
                IpAddr::from(r.src),
                IpAddr::from(r.dst),
                r.tos,
                l3 + p.header_len(),
                r.payload_len,
            )
        }
        ethernet::ETHERTYPE_IPV6 => {
            let p = ipv6::Packet::new_checked(&frame[l3..]).ok()?;
            let r = ipv6::Repr::parse(&p).ok()?;
            if r.next_header != 17 {
                return None;
            }
            (
                IpAddr::from(r.src),
                IpAddr::from(r.dst),
                r.traffic_class,
                l3 + ipv6::HEADER_LEN,
                r.payload_len,
            )
        }
        _ => return None,
    };
    let u = udp::Packet::new_checked(frame.get(l4..l4 + l4_len)?).ok()?;
    let r = udp::Repr::parse(&u).ok()?;
    let start = l4 + udp::HEADER_LEN;
    Some(Parsed {
        mac: eth.src.0,
        from: SocketAddr::new(src, r.src_port),
        to: SocketAddr::new(dst, r.dst_port),
        ecn: EcnCodepoint::from_bits(tos),
        payload: start..start + r.payload_len,
    })
}

/// Writes Ethernet, IP and UDP headers in front of `payload_len` bytes at `HEADROOM` in
/// `frame`; returns where the frame starts and its length.
fn emit_headers(
    frame: &mut [u8],
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    from: SocketAddr,
    to: SocketAddr,
    ecn: EcnCodepoint,
    payload_len: usize,
) -> Option<(usize, usize)> {
    let udp_len = udp::HEADER_LEN + payload_len;
    let (start, ethertype, l3_len) = match to.ip() {
        IpAddr::V4(_) => (
            ipv6::HEADER_LEN - ipv4::MIN_HEADER_LEN,
            ethernet::ETHERTYPE_IPV4,
            ipv4::MIN_HEADER_LEN,
        ),
        IpAddr::V6(_) => (0, ethernet::ETHERTYPE_IPV6, ipv6::HEADER_LEN),
    };
    let l3 = start + ethernet::HEADER_LEN;
    let l4 = l3 + l3_len;
    debug_assert_eq!(l4 + udp::HEADER_LEN, HEADROOM);
    ethernet::Repr {
        src: ethernet::Address(src_mac),
        dst: ethernet::Address(dst_mac),
        vlan: None,
        ethertype,
    }
    .emit(frame.get_mut(start..)?)
    .ok()?;
    match (from.ip(), to.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4::Repr {
            src: s,
            dst: d,
            protocol: ipv4::PROTO_UDP,
            payload_len: udp_len,
            ttl: 64,
            tos: ecn.bits(),
        }
        .emit(frame.get_mut(l3..)?)
        .ok()?,
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6::Repr {
            src: s,
            dst: d,
            next_header: 17,
            payload_len: udp_len,
            hop_limit: 64,
            traffic_class: ecn.bits(),
        }
        .emit(frame.get_mut(l3..)?)
        .ok()?,
        _ => return None,
    };
    udp::Repr {
        src_port: from.port(),
        dst_port: to.port(),
        payload_len,
    }
    .emit(frame.get_mut(l4..)?, from.ip(), to.ip())
    .ok()?;
    Some((start, HEADROOM - start + payload_len))
}

impl Backend for AfXdpBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::AfXdp
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            gso_segments: 1,
            gro: false,
            // The program's frames carry the IP header: its ECN bits are read and written
            // directly, and the destination address is the header's.
            ecn: true,
            pktinfo: true,
            zero_copy: self.xsk.is_zero_copy(),
        }
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn recv(&mut self, batch: &mut RxBatch) -> io::Result<usize> {
        batch.clear();
        // The engine waits on this epoll descriptor edge-triggered: consume its ready list,
        // so that the next arrival makes it ready again (level-triggered inside, it lists
        // again what still has data).
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
        // SAFETY: a valid epoll fd and a live buffer of 4 events; zero timeout.
        unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), evs.as_mut_ptr(), 4, 0) };
        let mut n = 0;
        let slots = batch.slots();
        let local = self.local;
        let seen = &mut self.seen;
        seen.clear();
        self.xsk.recv(slots, |frame| {
            let Some(Parsed {
                mac,
                from,
                to,
                ecn,
                payload: range,
            }) = parse(frame)
            else {
                return;
            };
            if to.port() != local.port() || range.len() > batch.slot_size() {
                return;
            }
            batch.slot_mut(n)[..range.len()].copy_from_slice(&frame[range.clone()]);
            batch.set(
                n,
                RxMeta {
                    ecn,
                    dst: Some(to.ip()),
                    ..RxMeta::new(from, range.len())
                },
            );
            if seen.last() != Some(&(from.ip(), mac)) {
                seen.push((from.ip(), mac));
            }
            n += 1;
        });
        for k in 0..self.seen.len() {
            let (ip, mac) = self.seen[k];
            if self.learned.get(&ip) != Some(&mac) {
                self.learn(ip, mac);
            }
        }
        // What the program passed to the kernel on our port (GSO super-packets in generic
        // mode, or datagrams for a queue without a socket), copied from a side batch. Read
        // only what the engine's batch has room for, and until the socket is drained or
        // the batch is full: the engine waits edge-triggered on the epoll descriptor, and
        // a datagram left behind in a socket that reported nothing new would sit there
        // until some later arrival (a transfer stalled on exactly that, its sender waiting
        // for the acknowledgments in the queue).
        while n < slots {
            let want = (slots - n).min(self.side.slots());
            let got = self.udp.recv_at_most(&mut self.side, want)?;
            for k in 0..got {
                let (m, d) = self.side.get_mut(k);
                if m.len <= batch.slot_size() {
                    batch.slot_mut(n)[..m.len].copy_from_slice(d);
                    batch.set(n, m);
                    n += 1;
                }
            }
            if got < want {
                break;
            }
        }
        if n > 0 {
            self.stats.rx_batches += 1;
            self.stats.rx_datagrams += n as u64;
        }
        Ok(n)
    }

    fn send(&mut self, batch: &mut TxBatch) -> io::Result<()> {
        // The engine uses `send_direct`; a batch (from elsewhere) is copied into frames.
        batch.split_segments();
        while let Some(it) = batch.pending().first().copied() {
            let bytes = batch.bytes(&it).to_vec();
            let mut one = Some(bytes);
            let sent = self.send_direct(&mut |buf: &mut [u8]| {
                let b = one.take()?;
                buf.get_mut(..b.len())?.copy_from_slice(&b);
                Some(Transmit {
                    destination: it.to,
                    size: b.len(),
                    ecn: it.ecn,
                    src_ip: it.src,
                })
            });
            batch.advance(1);
            if let Some(Err(e)) = sent {
                return Err(e);
            }
        }
        self.flush()
    }

    fn has_direct_tx(&self) -> bool {
        true
    }

    fn send_direct(&mut self, fill: &mut Fill<'_>) -> Option<io::Result<usize>> {
        let mut sent = 0;
        let (src_mac, local) = (self.mac, self.local);
        while let Some((frame, buf)) = self.xsk.tx_frame() {
            let Some(t) = buf.get_mut(HEADROOM..).and_then(&mut *fill) else {
                self.xsk.tx_cancel(frame);
                break;
            };
            let (to, len) = (t.destination, t.size);
            if to.is_ipv4() != local.is_ipv4() {
                // An IPv4 peer of an IPv6 address (or the reverse) has no route here.
                self.stats.tx_errors += 1;
                self.xsk.tx_cancel(frame);
                continue;
            }
            let Some(dst_mac) = self.next_hop(to) else {
                self.unresolved += 1;
                self.stats.tx_errors += 1;
                self.xsk.tx_cancel(frame);
                continue;
            };
            // The interface's address: the socket holds one (a transmit's `src_ip` is the
            // address the peer's datagram arrived at, which is this one).
            let from = SocketAddr::new(local.ip(), local.port());
            let buf = self.xsk.frame_mut(frame);
            let Some((start, flen)) = emit_headers(buf, src_mac, dst_mac, from, to, t.ecn, len)
            else {
                self.stats.tx_errors += 1;
                self.xsk.tx_cancel(frame);
                continue;
            };
            if !self.xsk.tx_submit(frame, start, flen) {
                // The TX ring is full: what was queued goes out with the next flush.
                self.stats.tx_would_block += 1;
                break;
            }
            sent += 1;
        }
        self.stats.tx_datagrams += sent as u64;
        if sent > 0 {
            self.stats.tx_batches += 1;
        }
        Some(Ok(sent))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.xsk.tx_flush()
    }

    fn readiness(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    fn socket_fd(&self) -> RawFd {
        self.udp.socket_fd()
    }

    fn stats(&self) -> BackendStats {
        // Frames the kernel had for this socket but could not place: no free frame in the
        // fill ring (`rx_dropped`) or no room in the RX ring (`rx_ring_full`).
        let ring = self
            .xsk_statistics()
            .map_or(0, |x| x.rx_dropped + x.rx_ring_full);
        BackendStats {
            rx_dropped: ring + self.udp.kernel_drops(),
            ..self.stats
        }
    }
}

/// Opens the companion UDP socket (which picks the port when `bind` has port 0).
///
/// # Errors
/// The bind error.
pub fn companion_socket(
    bind: SocketAddr,
    buffer_bytes: usize,
    reuse_port: bool,
) -> io::Result<UdpBackend> {
    UdpBackend::bind(&UdpConfig {
        buffer_bytes,
        reuse_port,
        gso: false,
        gro: false,
        ..UdpConfig::new(bind)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_the_parser() {
        for (from, to) in [
            ("10.200.1.2:4433", "10.200.1.1:5555"),
            ("[fd00:5710::1:2]:4433", "[fd00:5710::1:1]:5555"),
        ] {
            let from: SocketAddr = from.parse().expect("addr");
            let to: SocketAddr = to.parse().expect("addr");
            let mut frame = vec![0u8; 2048];
            let payload: Vec<u8> = (0..1200u32).map(|i| i as u8).collect();
            frame[HEADROOM..HEADROOM + payload.len()].copy_from_slice(&payload);
            let ecn = EcnCodepoint::Ect0;
            let (start, len) =
                emit_headers(&mut frame, [2; 6], [4; 6], from, to, ecn, 1200).expect("emit");
            let wire = &frame[start..start + len];
            let p = parse(wire).expect("parse");
            assert_eq!(p.mac, [2; 6]);
            assert_eq!((p.from, p.to), (from, to));
            assert_eq!(p.ecn, ecn, "the ECN bits cross in the IP header");
            assert_eq!(&wire[p.payload], &payload[..]);
            // The UDP checksum is complete (required for IPv6).
            let l4 = len - payload.len() - udp::HEADER_LEN;
            let u = udp::Packet::new_checked(&wire[l4..]).expect("udp");
            assert!(u.verify_checksum(from.ip(), to.ip()));
        }
    }

    #[test]
    fn parser_rejects_garbage_without_panicking() {
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut frame = [0u8; 200];
        for _ in 0..100_000 {
            for b in &mut frame {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                *b = rng as u8;
            }
            // Make some look like IPv4/IPv6 to reach the deeper parsers.
            if rng.is_multiple_of(3) {
                frame[12..14].copy_from_slice(&ethernet::ETHERTYPE_IPV4.to_be_bytes());
                frame[14] = 0x45;
            }
            let len = (rng % 200) as usize;
            if let Some(p) = parse(&frame[..len]) {
                assert!(p.payload.end <= len);
            }
        }
    }
}
