//! The UDP socket backend: the one that runs everywhere.
//!
//! On Linux it moves batches with `recvmmsg`/`sendmmsg`, sends runs of same-size datagrams
//! as one GSO send (`UDP_SEGMENT`), and lets the kernel coalesce received datagrams (GRO,
//! `UDP_GRO`). Control messages carry each datagram's ECN codepoint both ways (`IP_TOS`
//! and `IPV6_TCLASS`, received through `IP_RECVTOS`/`IPV6_RECVTCLASS`) and, on a socket
//! bound to a wildcard address, the local address: received through `IP_PKTINFO`/
//! `IPV6_RECVPKTINFO` and set on sends, so a multi-homed server answers from the address
//! the client chose. A device that refuses GSO (`EIO`) turns it off for the socket's lifetime,
//! and the batch is resent datagram by datagram. On other systems it sends and receives
//! one datagram per call through the standard library.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use super::{Backend, BackendKind, BackendStats, Capabilities, RxBatch, TxBatch};

/// Settings of a UDP socket backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpConfig {
    /// The address to bind (`[::]:port` binds both IPv6 and IPv4).
    pub bind: SocketAddr,
    /// Share the port with other sockets (one per worker) through `SO_REUSEPORT`.
    pub reuse_port: bool,
    /// Kernel socket buffer size asked for, each way (as root the `rmem_max`/`wmem_max`
    /// ceilings are bypassed with `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`).
    pub buffer_bytes: usize,
    /// Use UDP GSO where the kernel has it.
    pub gso: bool,
    /// Use UDP GRO where the kernel has it.
    pub gro: bool,
}

impl UdpConfig {
    /// Defaults for `bind`: 8 MiB buffers, GSO and GRO on, no port sharing.
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            bind,
            reuse_port: false,
            buffer_bytes: 8 << 20,
            gso: true,
            gro: true,
        }
    }
}

/// Datagrams per `recvmmsg`/`sendmmsg` call.
pub const BATCH: usize = 64;

/// Most GSO segments per send the kernel accepts (`UDP_MAX_SEGMENTS`).
pub const MAX_GSO_SEGMENTS: u16 = 64;

/// A UDP socket backend.
#[derive(Debug)]
pub struct UdpBackend {
    socket: Socket,
    local: SocketAddr,
    /// Bound to a wildcard address: sends name their source address (`IP_PKTINFO`).
    wildcard: bool,
    caps: Capabilities,
    stats: BackendStats,
    /// Addresses and control messages of a receive batch, kept between calls.
    scratch: sys::RecvScratch,
}

impl UdpBackend {
    /// Opens and binds the socket, non-blocking, and probes GSO and GRO.
    ///
    /// # Errors
    /// The OS error of `socket`, `bind` or a required option.
    pub fn bind(config: &UdpConfig) -> io::Result<Self> {
        let socket = Socket::new(
            Domain::for_address(config.bind),
            Type::DGRAM,
            Some(Protocol::UDP),
        )?;
        if config.bind.is_ipv6() {
            // Dual stack for [::]; ignored where the OS refuses.
            let _ = socket.set_only_v6(false);
        }
        #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
        if config.reuse_port {
            socket.set_reuse_port(true)?;
        }
        set_buffers(&socket, config.buffer_bytes);
        socket.set_nonblocking(true)?;
        socket.bind(&config.bind.into())?;
        let local = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("bound socket has no IP address"))?;
        let mut caps = probe_offloads(&socket, config);
        (caps.ecn, caps.pktinfo) = enable_rx_info(&socket, local.is_ipv6());
        #[cfg(target_os = "linux")]
        forbid_fragmentation(&socket, local.is_ipv6());
        Ok(Self {
            socket,
            local,
            wildcard: local.ip().is_unspecified(),
            caps,
            stats: BackendStats::default(),
            scratch: sys::RecvScratch::new(),
        })
    }

    /// The socket, for options this backend does not set (e.g. a reuseport BPF program).
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Receives into `batch` as [`Backend::recv`] does, but at most `max` datagrams (or
    /// GRO batches): a caller copying them into a fuller batch takes only what fits, and
    /// leaves the rest queued in the socket.
    ///
    /// # Errors
    /// The OS error of the receive (`WouldBlock` is not one: it returns 0).
    pub fn recv_at_most(&mut self, batch: &mut RxBatch, max: usize) -> io::Result<usize> {
        batch.clear();
        let n = sys::recv(&self.socket, batch, max, &mut self.scratch)?;
        if n > 0 {
            self.stats.rx_batches += 1;
            for i in 0..n {
                let (m, _) = batch.get_mut(i);
                let stride = if m.stride == 0 { m.len } else { m.stride }.max(1);
                self.stats.rx_datagrams += m.len.div_ceil(stride).max(1) as u64;
            }
        }
        Ok(n)
    }
}

/// Sets the `c_int` socket option `level`/`opt` of `fd` to `v`; returns whether the kernel
/// took it.
#[cfg(target_os = "linux")]
fn set_int_opt(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> bool {
    // SAFETY: the caller's descriptor is a valid socket; the value is a c_int of the size
    // given, alive for the call.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&raw const v).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// Asks for `bytes` of socket buffer each way; as root, past the sysctl ceilings.
fn set_buffers(socket: &Socket, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let v = bytes.min(i32::MAX as usize) as libc::c_int;
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
            let _ = set_int_opt(socket.as_raw_fd(), libc::SOL_SOCKET, opt, v);
        }
    }
    // Without privilege the forced variants fail: fall back to the capped ones.
    if socket.recv_buffer_size().is_ok_and(|n| n < bytes) {
        let _ = socket.set_recv_buffer_size(bytes);
    }
    if socket.send_buffer_size().is_ok_and(|n| n < bytes) {
        let _ = socket.set_send_buffer_size(bytes);
    }
}

/// The IPv4 or IPv6 address in `s` (of `len` bytes), if it is one.
#[cfg(target_os = "linux")]
pub(crate) fn socket_addr(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, which fits.
            let a = unsafe { &*(&raw const *s).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(std::net::SocketAddrV4::new(
                std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which fits.
            let a = unsafe { &*(&raw const *s).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            // A v4-mapped sender on a dual-stack socket is an IPv4 peer.
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => {
                    SocketAddr::V4(std::net::SocketAddrV4::new(v4, u16::from_be(a.sin6_port)))
                }
                None => SocketAddr::V6(std::net::SocketAddrV6::new(
                    ip,
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )),
            })
        }
        _ => None,
    }
}

/// A placeholder address.
#[cfg(target_os = "linux")]
pub(crate) const UNSPECIFIED: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));

/// `to` as an IPv6 socket can address it: IPv4 peers of a dual-stack socket are written
/// v4-mapped.
pub(crate) fn mapped(to: SocketAddr, v6_socket: bool) -> SocketAddr {
    match to {
        SocketAddr::V4(a) if v6_socket => SocketAddr::V6(std::net::SocketAddrV6::new(
            a.ip().to_ipv6_mapped(),
            a.port(),
            0,
            0,
        )),
        other => other,
    }
}

#[cfg(target_os = "linux")]
fn probe_offloads(socket: &Socket, config: &UdpConfig) -> Capabilities {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let mut caps = Capabilities {
        gso_segments: 1,
        ..Capabilities::default()
    };
    if config.gso {
        let mut v: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: valid fd; `v` and `len` describe a c_int buffer.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                (&raw mut v).cast(),
                &raw mut len,
            )
        };
        if r == 0 {
            caps.gso_segments = MAX_GSO_SEGMENTS;
        }
    }
    if config.gro {
        caps.gro = set_int_opt(fd, libc::SOL_UDP, libc::UDP_GRO, 1);
    }
    caps
}

/// Asks for each datagram's TOS / traffic class (ECN) and destination address in control
/// messages. A dual-stack IPv6 socket asks for both families' (IPv4 peers arrive on it
/// too). Returns whether ECN and pktinfo are available.
#[cfg(target_os = "linux")]
fn enable_rx_info(socket: &Socket, v6: bool) -> (bool, bool) {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let on = |level: libc::c_int, opt: libc::c_int| set_int_opt(fd, level, opt, 1);
    let v4_ecn = on(libc::IPPROTO_IP, libc::IP_RECVTOS);
    let v4_info = on(libc::IPPROTO_IP, libc::IP_PKTINFO);
    if v6 {
        let ecn = on(libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS);
        let info = on(libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO);
        (ecn, info)
    } else {
        (v4_ecn, v4_info)
    }
}

/// Sets the Don't Fragment bit and never fragments locally (RFC 9000 §14: QUIC datagrams
/// must not be fragmented): a datagram larger than the interface's MTU fails to send
/// instead of leaving in IP fragments, so a path that shrinks shows up as loss, which path
/// MTU discovery detects (a black hole), rather than as fragments a middlebox may drop.
/// `PROBE` rather than `DO`: the kernel's per-route PMTU cache, fed by ICMP anyone can
/// forge, does not cap what STOQ sends; its own discovery decides.
#[cfg(target_os = "linux")]
fn forbid_fragmentation(socket: &Socket, v6: bool) {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    // A dual-stack IPv6 socket sends IPv4 too: both families' settings.
    let _ = set_int_opt(
        fd,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    );
    if v6 {
        let _ = set_int_opt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        );
    }
}

/// The portable path reads no control messages.
#[cfg(not(target_os = "linux"))]
fn enable_rx_info(_socket: &Socket, _v6: bool) -> (bool, bool) {
    (false, false)
}

#[cfg(not(target_os = "linux"))]
fn probe_offloads(_socket: &Socket, _config: &UdpConfig) -> Capabilities {
    Capabilities {
        gso_segments: 1,
        ..Capabilities::default()
    }
}

impl Backend for UdpBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Udp
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn recv(&mut self, batch: &mut RxBatch) -> io::Result<usize> {
        self.recv_at_most(batch, usize::MAX)
    }

    fn send(&mut self, batch: &mut TxBatch) -> io::Result<()> {
        if self.caps.gso_segments <= 1 {
            batch.set_max_segments(1);
        }
        sys::send(
            &self.socket,
            batch,
            self.local.is_ipv6(),
            self.wildcard,
            &mut self.caps,
            &mut self.stats,
        )
    }

    #[cfg(unix)]
    fn readiness(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.socket.as_raw_fd()
    }

    #[cfg(unix)]
    fn socket_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.socket.as_raw_fd()
    }

    fn stats(&self) -> BackendStats {
        BackendStats {
            rx_dropped: self.kernel_drops(),
            ..self.stats
        }
    }
}

impl UdpBackend {
    /// Datagrams the kernel dropped because the socket's receive buffer was full (or
    /// failed a socket filter): `SK_MEMINFO_DROPS` of `SO_MEMINFO`. 0 where unknown.
    pub fn kernel_drops(&self) -> u64 {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let mut info = [0u32; 9];
            let mut len = size_of_val(&info) as libc::socklen_t;
            // SAFETY: valid fd; `info` and `len` describe a writable u32 array, which the
            // kernel fills up to `len` bytes.
            let r = unsafe {
                libc::getsockopt(
                    self.socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_MEMINFO,
                    info.as_mut_ptr().cast(),
                    &raw mut len,
                )
            };
            let at = libc::SK_MEMINFO_DROPS as usize;
            if r == 0 && len as usize >= (at + 1) * size_of::<u32>() {
                return u64::from(info[at]);
            }
        }
        0
    }
}

#[cfg(target_os = "linux")]
pub(crate) mod sys {
    //! `recvmmsg`/`sendmmsg` with GSO and GRO control messages.

    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::AsRawFd;

    use socket2::{SockAddr, Socket};

    use super::BATCH;
    use crate::io::{BackendStats, Capabilities, RxBatch, RxMeta, TxBatch};

    /// Room for the control messages of one datagram: on send UDP_SEGMENT, a TOS or
    /// traffic class and a pktinfo (24 + 24 + 40 bytes); on receive UDP_GRO, TOS and
    /// traffic class, and both pktinfos (a v4 datagram on a dual-stack socket).
    #[repr(C, align(8))]
    #[derive(Clone, Copy)]
    pub(crate) struct Control(pub(crate) [u8; CONTROL_LEN]);

    /// Bytes of [`Control`].
    pub(crate) const CONTROL_LEN: usize = 160;

    impl Control {
        pub(crate) const ZERO: Self = Self([0; CONTROL_LEN]);

        /// Appends a control message at `*off` (a multiple of 8), advancing it; a message
        /// that does not fit is left out.
        fn push(&mut self, off: &mut usize, level: libc::c_int, ty: libc::c_int, data: &[u8]) {
            // SAFETY: CMSG_SPACE and CMSG_LEN are pure size computations.
            let (space, len) = unsafe {
                (
                    libc::CMSG_SPACE(data.len() as u32) as usize,
                    libc::CMSG_LEN(data.len() as u32) as usize,
                )
            };
            if *off + space > CONTROL_LEN {
                return;
            }
            let hdr = libc::cmsghdr {
                cmsg_len: len as _,
                cmsg_level: level,
                cmsg_type: ty,
            };
            let data_off = len - data.len();
            // SAFETY: `*off + space` ≤ the buffer, the header and its data fit in `space`
            // bytes; written unaligned, so the buffer's alignment does not matter.
            unsafe {
                std::ptr::write_unaligned(
                    self.0.as_mut_ptr().add(*off).cast::<libc::cmsghdr>(),
                    hdr,
                );
            }
            self.0[*off + data_off..*off + data_off + data.len()].copy_from_slice(data);
            self.0[*off + len..*off + space].fill(0);
            *off += space;
        }
    }

    /// Points `h` at `bytes` (through `iov`) for `name`, with control messages in
    /// `control`: UDP_SEGMENT when `it` is a GSO group, its ECN codepoint, and its source
    /// address when `send_src` (a wildcard-bound socket). All of them must stay alive and
    /// unmoved until the send completes. (Shared by `sendmmsg` and io_uring's `sendmsg`.)
    pub(crate) fn prepare_send(
        h: &mut libc::msghdr,
        iov: &mut libc::iovec,
        name: &SockAddr,
        bytes: &[u8],
        control: &mut Control,
        it: &crate::io::TxItem,
        send_src: bool,
    ) {
        use std::net::{IpAddr, SocketAddr};
        iov.iov_base = bytes.as_ptr().cast_mut().cast();
        iov.iov_len = bytes.len();
        h.msg_name = name.as_ptr().cast_mut().cast();
        h.msg_namelen = name.len();
        h.msg_iov = iov;
        h.msg_iovlen = 1;
        let mut off = 0;
        if it.segments > 1 {
            let seg = it.segment_size as u16;
            control.push(
                &mut off,
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                &seg.to_ne_bytes(),
            );
        }
        let v4 = matches!(it.to, SocketAddr::V4(_));
        if it.ecn != crate::io::EcnCodepoint::NotEct {
            let tos = libc::c_int::from(it.ecn.bits()).to_ne_bytes();
            // An IPv4 destination, even on a dual-stack IPv6 socket, takes IPv4 options.
            if v4 {
                control.push(&mut off, libc::IPPROTO_IP, libc::IP_TOS, &tos);
            } else {
                control.push(&mut off, libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &tos);
            }
        }
        match (send_src, it.src, v4) {
            (true, Some(IpAddr::V4(a)), true) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(a).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                // SAFETY: a plain C struct viewed as its bytes.
                let b = unsafe {
                    std::slice::from_raw_parts(
                        (&raw const info).cast::<u8>(),
                        size_of::<libc::in_pktinfo>(),
                    )
                };
                control.push(&mut off, libc::IPPROTO_IP, libc::IP_PKTINFO, b);
            }
            (true, Some(IpAddr::V6(a)), false) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: a.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                // SAFETY: a plain C struct viewed as its bytes.
                let b = unsafe {
                    std::slice::from_raw_parts(
                        (&raw const info).cast::<u8>(),
                        size_of::<libc::in6_pktinfo>(),
                    )
                };
                control.push(&mut off, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, b);
            }
            _ => {}
        }
        if off > 0 {
            h.msg_control = control.0.as_mut_ptr().cast();
            h.msg_controllen = off as _;
        }
    }

    fn errno() -> io::Error {
        io::Error::last_os_error()
    }

    /// The address and control-message buffers of a receive batch: zeroed once, then
    /// written by the kernel call after call. Clearing 18 KiB of them for every receive
    /// was a tenth of a polling worker's time.
    pub(crate) struct RecvScratch {
        names: Box<[MaybeUninit<libc::sockaddr_storage>; BATCH]>,
        control: Box<[Control; BATCH]>,
    }

    impl RecvScratch {
        pub(crate) fn new() -> Self {
            Self {
                names: Box::new([MaybeUninit::zeroed(); BATCH]),
                control: Box::new([Control::ZERO; BATCH]),
            }
        }
    }

    impl std::fmt::Debug for RecvScratch {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RecvScratch").finish_non_exhaustive()
        }
    }

    pub(super) fn recv(
        socket: &Socket,
        batch: &mut RxBatch,
        max: usize,
        scratch: &mut RecvScratch,
    ) -> io::Result<usize> {
        let n = batch.slots().min(BATCH).min(max);
        let slot = batch.slot_size();
        let names = &mut *scratch.names;
        let control = &mut *scratch.control;
        // SAFETY: iovec and mmsghdr are plain C structs for which all-zero is a valid
        // value (null pointers, zero lengths).
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            iov[i].iov_base = batch.slot_mut(i).as_mut_ptr().cast();
            iov[i].iov_len = slot;
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = names[i].as_mut_ptr().cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &raw mut iov[i];
            h.msg_iovlen = 1;
            h.msg_control = control[i].0.as_mut_ptr().cast();
            h.msg_controllen = control[i].0.len();
        }
        let got = loop {
            // SAFETY: `hdrs[..n]` point at live buffers (slots, names, control) that
            // outlive the call; the kernel writes within the lengths given.
            let r = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r >= 0 {
                break r as usize;
            }
            let e = errno();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(0),
                io::ErrorKind::Interrupted => {}
                // An ICMP error from an earlier send: not this socket's failure.
                io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => {}
                _ => return Err(e),
            }
        };
        for i in 0..got {
            let h = &hdrs[i].msg_hdr;
            let len = hdrs[i].msg_len as usize;
            // SAFETY: zero-initialised when the scratch was made, since then only written by
            // the kernel: initialised.
            let name = unsafe { names[i].assume_init_ref() };
            let Some(from) = super::socket_addr(name, h.msg_namelen) else {
                batch.set(i, RxMeta::new(super::UNSPECIFIED, 0));
                continue;
            };
            let c = parse_control(h);
            batch.set(
                i,
                RxMeta {
                    from,
                    len,
                    stride: c.gro.unwrap_or(len),
                    ecn: c.ecn,
                    dst: c.dst,
                },
            );
        }
        Ok(got)
    }

    /// What a received message's control data said.
    #[derive(Debug, Default, Clone, Copy)]
    pub(crate) struct Received {
        /// UDP_GRO segment size.
        pub(crate) gro: Option<usize>,
        /// ECN codepoint from the TOS or traffic class.
        pub(crate) ecn: crate::io::EcnCodepoint,
        /// Destination address from the pktinfo.
        pub(crate) dst: Option<std::net::IpAddr>,
    }

    /// Parses a received message's control data: UDP_GRO, IP_TOS / IPV6_TCLASS and
    /// IP_PKTINFO / IPV6_PKTINFO. Messages shorter than their type needs are ignored.
    pub(crate) fn parse_control(h: &libc::msghdr) -> Received {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let mut r = Received::default();
        // SAFETY: `h` is a msghdr the kernel filled; CMSG_FIRSTHDR/NXTHDR stay within
        // `msg_controllen` and return null at the end.
        let mut c = unsafe { libc::CMSG_FIRSTHDR(h) };
        while !c.is_null() {
            // SAFETY: `c` is non-null and points inside the control buffer.
            let cm = unsafe { &*c };
            // SAFETY: CMSG_LEN(0) is a pure size computation.
            let header = unsafe { libc::CMSG_LEN(0) } as usize;
            let n = (cm.cmsg_len as usize).saturating_sub(header);
            // SAFETY: the kernel wrote `n` data bytes after the header, inside the buffer.
            let data = unsafe { std::slice::from_raw_parts(libc::CMSG_DATA(c), n) };
            let int = || -> Option<libc::c_int> {
                Some(libc::c_int::from_ne_bytes(data.get(..4)?.try_into().ok()?))
            };
            match (cm.cmsg_level, cm.cmsg_type) {
                (libc::SOL_UDP, libc::UDP_GRO) => {
                    r.gro = int()
                        .and_then(|v| usize::try_from(v).ok())
                        .filter(|v| *v > 0);
                }
                // IPv4 reports the TOS as one byte; IPv6 the traffic class as an int.
                (libc::IPPROTO_IP, libc::IP_TOS) => {
                    if let Some(b) = data.first() {
                        r.ecn = crate::io::EcnCodepoint::from_bits(*b);
                    }
                }
                (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => {
                    if let Some(v) = int() {
                        r.ecn = crate::io::EcnCodepoint::from_bits(v as u8);
                    }
                }
                (libc::IPPROTO_IP, libc::IP_PKTINFO) if n >= size_of::<libc::in_pktinfo>() => {
                    // ipi_ifindex (4 bytes), ipi_spec_dst, then ipi_addr: the header's
                    // destination address.
                    let a: [u8; 4] = data[8..12].try_into().expect("4 bytes");
                    r.dst = Some(IpAddr::V4(Ipv4Addr::from(a)));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if n >= size_of::<libc::in6_pktinfo>() => {
                    let a: [u8; 16] = data[..16].try_into().expect("16 bytes");
                    let ip = Ipv6Addr::from(a);
                    // An IPv4 datagram on a dual-stack socket reports a v4-mapped address.
                    r.dst = Some(ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4));
                }
                _ => {}
            }
            // SAFETY: as for CMSG_FIRSTHDR.
            c = unsafe { libc::CMSG_NXTHDR(h, c) };
        }
        r
    }

    pub(super) fn send(
        socket: &Socket,
        batch: &mut TxBatch,
        v6_socket: bool,
        send_src: bool,
        caps: &mut Capabilities,
        stats: &mut BackendStats,
    ) -> io::Result<()> {
        while !batch.is_empty() {
            let pending = batch.pending();
            let n = pending.len().min(BATCH);
            let mut names: [MaybeUninit<SockAddr>; BATCH] =
                [const { MaybeUninit::uninit() }; BATCH];
            let mut control = [Control::ZERO; BATCH];
            // SAFETY: plain C structs; all-zero is valid.
            let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for i in 0..n {
                let it = pending[i];
                let name = names[i].write(SockAddr::from(super::mapped(it.to, v6_socket)));
                prepare_send(
                    &mut hdrs[i].msg_hdr,
                    &mut iov[i],
                    name,
                    batch.bytes(&it),
                    &mut control[i],
                    &it,
                    send_src,
                );
            }
            // SAFETY: `hdrs[..n]` point at the arena, `names` and `control`, all alive
            // for the call; the kernel only reads them.
            let r = unsafe {
                libc::sendmmsg(socket.as_raw_fd(), hdrs.as_mut_ptr(), n as libc::c_uint, 0)
            };
            // The addresses were written for i < n only.
            for name in names.iter_mut().take(n) {
                // SAFETY: initialised in the loop above.
                unsafe { name.assume_init_drop() };
            }
            if r >= 0 {
                let sent = r as usize;
                stats.tx_batches += 1;
                stats.tx_datagrams += batch.pending()[..sent]
                    .iter()
                    .map(|it| u64::from(it.segments))
                    .sum::<u64>();
                batch.advance(sent);
                continue;
            }
            let e = errno();
            let first = batch.pending()[0];
            match e.raw_os_error() {
                Some(libc::EAGAIN) => {
                    stats.tx_would_block += 1;
                    return Ok(());
                }
                Some(libc::EINTR) => {}
                Some(libc::EIO) if first.segments > 1 => {
                    // The device cannot segment (no checksum offload, for one): GSO off
                    // for good, and the batch goes out datagram by datagram.
                    tracing::warn!("UDP GSO refused by the device ({e}); sending without it");
                    caps.gso_segments = 1;
                    batch.split_segments();
                }
                Some(libc::EINVAL) if first.segments > 1 => {
                    // Segments larger than the interface's MTU now (the path shrank) or
                    // more than it takes: this batch goes out datagram by datagram, where
                    // a datagram too large fails alone (EMSGSIZE, counted as lost). GSO
                    // stays on.
                    batch.split_segments();
                }
                Some(libc::EBADF | libc::ENOTSOCK | libc::EFAULT) => return Err(e),
                _ => {
                    // Unreachable, no route, refused by a firewall, too large: this
                    // datagram is lost (loss recovery will see it); the rest go on.
                    stats.tx_errors += u64::from(first.segments);
                    batch.advance(1);
                }
            }
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    //! One datagram per call, through the standard library's calls via socket2.

    use std::io;
    use std::mem::MaybeUninit;

    use socket2::Socket;

    use crate::io::{BackendStats, Capabilities, RxBatch, RxMeta, TxBatch};

    /// Nothing to keep between receives on the portable path.
    #[derive(Debug)]
    pub(crate) struct RecvScratch;

    impl RecvScratch {
        pub(crate) fn new() -> Self {
            Self
        }
    }

    pub(super) fn recv(
        socket: &Socket,
        batch: &mut RxBatch,
        max: usize,
        _scratch: &mut RecvScratch,
    ) -> io::Result<usize> {
        let mut n = 0;
        while n < batch.slots().min(max) {
            let slot = batch.slot_mut(n);
            // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and recv_from
            // only writes initialised bytes into it.
            let uninit = unsafe {
                std::slice::from_raw_parts_mut(
                    slot.as_mut_ptr().cast::<MaybeUninit<u8>>(),
                    slot.len(),
                )
            };
            match socket.recv_from(uninit) {
                Ok((len, addr)) => {
                    let Some(from) = addr.as_socket() else {
                        continue;
                    };
                    batch.set(n, RxMeta::new(from, len));
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    pub(super) fn send(
        socket: &Socket,
        batch: &mut TxBatch,
        v6_socket: bool,
        _send_src: bool,
        _caps: &mut Capabilities,
        stats: &mut BackendStats,
    ) -> io::Result<()> {
        batch.split_segments();
        while let Some(it) = batch.pending().first().copied() {
            match socket.send_to(batch.bytes(&it), &super::mapped(it.to, v6_socket).into()) {
                Ok(_) => {
                    stats.tx_datagrams += 1;
                    batch.advance(1);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    stats.tx_would_block += 1;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    stats.tx_errors += 1;
                    batch.advance(1);
                }
            }
        }
        stats.tx_batches += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{RxBatch, Transmit, TxBatch};

    fn pair() -> (UdpBackend, UdpBackend) {
        let cfg = UdpConfig::new("127.0.0.1:0".parse().expect("addr"));
        (
            UdpBackend::bind(&cfg).expect("bind a"),
            UdpBackend::bind(&cfg).expect("bind b"),
        )
    }

    /// Waits (bounded) until `b` has received `want` datagrams.
    fn drain(b: &mut UdpBackend, want: usize) -> Vec<Vec<u8>> {
        drain_info(b, want).into_iter().map(|d| d.2).collect()
    }

    /// As [`drain`], with each datagram's sender and what the backend knew of it.
    pub(super) fn drain_info(
        b: &mut UdpBackend,
        want: usize,
    ) -> Vec<(SocketAddr, crate::io::DatagramInfo, Vec<u8>)> {
        let mut rx = RxBatch::new(8, 65_536);
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < want && std::time::Instant::now() < deadline {
            if b.recv(&mut rx).expect("recv") == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            rx.for_each(|from, info, d| got.push((from, info, d.to_vec())));
        }
        got
    }

    #[test]
    fn batches_arrive_intact_and_in_order() {
        let (mut a, mut b) = pair();
        let to = b.local_addr();
        let mut tx = TxBatch::new(100, 1500);
        tx.set_max_segments(a.capabilities().gso_segments);
        for i in 0..100u16 {
            let len = if i == 99 { 17 } else { 1200 };
            assert!(tx.push_with(|buf| {
                buf[..len].fill(i as u8);
                buf[..2].copy_from_slice(&i.to_be_bytes());
                Some(Transmit::new(to, len))
            }));
        }
        a.send(&mut tx).expect("send");
        assert!(tx.is_empty(), "100 datagrams fit the socket buffer");
        let got = drain(&mut b, 100);
        assert_eq!(got.len(), 100);
        for (i, d) in got.iter().enumerate() {
            assert_eq!(u16::from_be_bytes([d[0], d[1]]) as usize, i);
            assert_eq!(d.len(), if i == 99 { 17 } else { 1200 });
            assert!(d[2..].iter().all(|x| *x == i as u8));
        }
        assert_eq!(a.stats().tx_datagrams, 100);
        assert_eq!(b.stats().rx_datagrams, 100);
    }

    /// A bounded receive takes only what it was allowed, and what it left stays queued
    /// in order (the AF_XDP backend's companion socket relies on both).
    #[test]
    fn bounded_receive_leaves_the_rest_queued() {
        let (a, _) = pair();
        // Without GRO: one datagram per slot, as on the companion socket.
        let mut b = UdpBackend::bind(&UdpConfig {
            gro: false,
            ..UdpConfig::new("127.0.0.1:0".parse().expect("addr"))
        })
        .expect("bind b");
        let to = b.local_addr();
        for i in 0..6u8 {
            a.socket.send_to(&[i; 100], &to.into()).expect("send");
        }
        let mut rx = RxBatch::new(8, 2048);
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 6 && std::time::Instant::now() < deadline {
            let n = b.recv_at_most(&mut rx, 4).expect("recv");
            assert!(n <= 4, "took {n} of at most 4");
            if n == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            for k in 0..n {
                got.push(rx.get_mut(k).1[0]);
            }
        }
        assert_eq!(got, [0, 1, 2, 3, 4, 5]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_has_gso_and_gro() {
        let (a, _) = pair();
        let c = a.capabilities();
        assert_eq!(
            c.gso_segments, MAX_GSO_SEGMENTS,
            "UDP_SEGMENT since Linux 4.18"
        );
        assert!(c.gro, "UDP_GRO since Linux 5.0");
    }

    #[test]
    fn unreachable_destination_is_counted_not_fatal() {
        let (mut a, mut b) = pair();
        let mut tx = TxBatch::new(4, 1500);
        // Port 0 is never a valid destination: the OS refuses it.
        let bad: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let to = b.local_addr();
        assert!(tx.push_with(|_| Some(Transmit::new(bad, 100))));
        assert!(tx.push_with(|buf| {
            buf[0] = 42;
            Some(Transmit::new(to, 100))
        }));
        a.send(&mut tx).expect("send carries on");
        assert!(tx.is_empty());
        assert_eq!(a.stats().tx_errors, 1);
        let got = drain(&mut b, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0][0], 42);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod control_tests {
    //! ECN and pktinfo control messages, over loopback.

    use std::net::IpAddr;

    use super::*;
    use crate::io::{EcnCodepoint, Transmit, TxBatch};

    fn recv_all(b: &mut UdpBackend, want: usize) -> Vec<(SocketAddr, crate::io::DatagramInfo)> {
        tests::drain_info(b, want)
            .into_iter()
            .map(|(from, info, _)| (from, info))
            .collect()
    }

    fn send(a: &mut UdpBackend, to: SocketAddr, ecn: EcnCodepoint, src: Option<IpAddr>, n: usize) {
        let mut tx = TxBatch::new(n, 1500);
        tx.set_max_segments(a.capabilities().gso_segments);
        for _ in 0..n {
            assert!(tx.push_with(|_| Some(Transmit {
                destination: to,
                size: 1200,
                ecn,
                src_ip: src,
            })));
        }
        a.send(&mut tx).expect("send");
        assert!(tx.is_empty());
        assert_eq!(a.stats().tx_errors, 0);
    }

    /// Each ECN codepoint crosses loopback, in GSO groups and singly, both families (the
    /// IPv4 case on a dual-stack IPv6 socket too).
    #[test]
    fn ecn_marks_cross_both_ways() {
        for (bind_a, bind_b, dst) in [
            ("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1"),
            ("[::1]:0", "[::1]:0", "::1"),
            ("[::]:0", "[::]:0", "127.0.0.1"),
        ] {
            let mut a = UdpBackend::bind(&UdpConfig::new(bind_a.parse().unwrap())).unwrap();
            let mut b = UdpBackend::bind(&UdpConfig::new(bind_b.parse().unwrap())).unwrap();
            assert!(b.capabilities().ecn && b.capabilities().pktinfo);
            let to = SocketAddr::new(dst.parse().unwrap(), b.local_addr().port());
            for ecn in [
                EcnCodepoint::Ect0,
                EcnCodepoint::Ce,
                EcnCodepoint::NotEct,
                EcnCodepoint::Ect1,
            ] {
                send(&mut a, to, ecn, None, 3);
                let got = recv_all(&mut b, 3);
                assert_eq!(got.len(), 3, "{bind_a} -> {to}");
                for (_, info) in got {
                    assert_eq!(info.ecn, ecn, "{bind_a} -> {to}");
                    assert_eq!(info.local_ip, Some(to.ip()), "pktinfo: {bind_a} -> {to}");
                }
            }
        }
    }

    /// A wildcard-bound socket sends from the address named in the transmit: the
    /// receiver sees it as the sender, whichever of the host's addresses it is.
    #[test]
    fn the_source_address_is_the_one_asked_for() {
        let mut a = UdpBackend::bind(&UdpConfig::new("0.0.0.0:0".parse().unwrap())).unwrap();
        let mut b = UdpBackend::bind(&UdpConfig::new("0.0.0.0:0".parse().unwrap())).unwrap();
        let to: SocketAddr = SocketAddr::new("127.0.0.1".parse().unwrap(), b.local_addr().port());
        // All of 127.0.0.0/8 is local: 127.0.0.2 is an address the OS would not pick.
        let src: IpAddr = "127.0.0.2".parse().unwrap();
        send(&mut a, to, EcnCodepoint::Ect0, Some(src), 2);
        let got = recv_all(&mut b, 2);
        assert_eq!(got.len(), 2);
        for (from, info) in got {
            assert_eq!(from.ip(), src);
            assert_eq!(from.port(), a.local_addr().port());
            assert_eq!(info.ecn, EcnCodepoint::Ect0);
        }
        // Without a source the OS picks 127.0.0.1.
        send(&mut a, to, EcnCodepoint::NotEct, None, 1);
        let got = recv_all(&mut b, 1);
        assert_eq!(got[0].0.ip(), IpAddr::from([127, 0, 0, 1]));
    }
}
