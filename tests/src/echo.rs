//! The XDP echo scenario shared by the integration test and `stoq-selfcheck`: `stoq_xdp`
//! on `vb`, an AF_XDP socket answering STOQ packets through its TX ring, and a peer in the
//! other namespace sending STOQ, malformed STOQ and plain UDP.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use stoq::xdp::xsk::{XskConfig, XskSocket};
use stoq::xdp::{AttachMode, AttachedMode, SteerStats, XdpProgram};
use stoq_common::cid::CidLayout;

use crate::frames::{self, OTHER_PORT, STOQ_PORT};
use crate::netns::VethPair;

/// What to send.
#[derive(Debug, Clone, Copy)]
pub struct EchoConfig {
    /// How to attach.
    pub mode: AttachMode,
    /// STOQ request/reply round trips per address family (IPv4 and IPv6).
    pub per_family: u32,
    /// Malformed STOQ datagrams (fixed bit clear) per family.
    pub malformed: u32,
    /// Plain UDP datagrams to another port per family.
    pub plain: u32,
}

/// What happened.
#[derive(Debug)]
pub struct EchoReport {
    /// The mode the program ran in.
    pub mode: AttachedMode,
    /// What `ip link` showed while attached (`xdp` or `xdpgeneric`).
    pub kernel_mode: Option<&'static str>,
    /// Whether the AF_XDP socket ran in zero-copy mode.
    pub zero_copy: bool,
    /// STOQ packets received on the AF_XDP socket.
    pub xsk_received: u32,
    /// Frames whose UDP checksum was unfinished (veth checksum offload).
    pub partial_checksums: u32,
    /// Plain datagrams received by the kernel stack.
    pub plain_received: u32,
    /// Datagrams that reached the kernel socket reserving the STOQ port (must be 0).
    pub stoq_port_socket_received: u32,
    /// Replies the peer received (sent through the TX ring).
    pub replies: u32,
    /// Request/reply round-trip times seen by the peer.
    pub rtts: Vec<Duration>,
    /// The program's counters at the end.
    pub stats: SteerStats,
    /// Whether the program was still attached after the attachment was dropped.
    pub attached_after_drop: bool,
}

fn ifindex(name: &str) -> Result<u32, String> {
    let c = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: `c` is a valid C string for the duration of the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(format!("interface {name} not found"))
    } else {
        Ok(i)
    }
}

/// The STOQ payload the peer sends: a valid short header carrying `id`.
pub fn stoq_payload(id: u32) -> Vec<u8> {
    let mut p = frames::short(&CidLayout::DEFAULT, 5, 120);
    p[20..24].copy_from_slice(&id.to_be_bytes());
    p
}

/// Runs the scenario on `pair`. Errors describe the first thing that went wrong.
pub fn run(pair: &VethPair, cfg: EchoConfig) -> Result<EchoReport, String> {
    let (b4, b6) = (pair.b4, pair.b6);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let plain_total = 2 * cfg.plain;

    let server = pair.b.spawn(move || -> Result<_, String> {
        let mut prog = XdpProgram::load().map_err(|e| e.to_string())?;
        prog.configure(&CidLayout::DEFAULT, &[STOQ_PORT])
            .map_err(|e| e.to_string())?;
        let att = prog
            .attach(VethPair::B_IF, cfg.mode)
            .map_err(|e| e.to_string())?;
        let mut xsk = XskSocket::bind(ifindex(VethPair::B_IF)?, 0, XskConfig::default())
            .map_err(|e| format!("AF_XDP bind: {e}"))?;
        prog.register_socket(0, &xsk).map_err(|e| e.to_string())?;
        // The kernel stack: a plain socket on another port, and one that reserves the STOQ
        // port and must see nothing that the program redirected or dropped.
        let plain = UdpSocket::bind(("::", OTHER_PORT)).map_err(|e| e.to_string())?;
        let reserve = UdpSocket::bind(("::", STOQ_PORT)).map_err(|e| e.to_string())?;
        for s in [&plain, &reserve] {
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
        }
        let _ = ready_tx.send(att.mode());

        let (mut got, mut partial, mut plain_got) = (0u32, 0u32, 0u32);
        let mut pending = Vec::new();
        let mut buf = [0u8; 2048];
        // Serve until the peer is done (or gone).
        while done_rx.try_recv() == Err(mpsc::TryRecvError::Empty) {
            let _ = xsk.poll_rx(5);
            xsk.recv(64, |f| pending.push(frames::parse_udp(f)));
            for rx in pending.drain(..) {
                let rx = rx.ok_or("a redirected frame is not Ethernet/IP/UDP")?;
                if rx.dst_port != STOQ_PORT
                    || !(rx.dst == IpAddr::from(b4) || rx.dst == IpAddr::from(b6))
                {
                    return Err(format!("unexpected frame on the XSK: {rx:?}"));
                }
                let id = u32::from_be_bytes(
                    rx.payload
                        .get(20..24)
                        .ok_or("short payload")?
                        .try_into()
                        .map_err(|_| "id")?,
                );
                if rx.payload != stoq_payload(id) {
                    return Err(format!("payload {id} corrupted"));
                }
                partial += u32::from(!rx.checksum_ok);
                let reply = format!("pong {id}");
                xsk.send(|b| frames::reply_into(&rx, reply.as_bytes(), b).unwrap_or(0))
                    .map_err(|e| format!("TX ring: {e}"))?;
                got += 1;
            }
            while let Ok(n) = plain.recv(&mut buf) {
                plain_got += u32::from(buf[..n].starts_with(b"plain"));
            }
        }
        let mut reserved_got = 0;
        while reserve.recv(&mut buf).is_ok() {
            reserved_got += 1;
        }
        let stats = prog.stats().map_err(|e| e.to_string())?;
        prog.unregister_socket(0).map_err(|e| e.to_string())?;
        Ok((
            att,
            xsk.is_zero_copy(),
            got,
            partial,
            plain_got,
            reserved_got,
            stats,
        ))
    });
    let Ok(mode) = ready_rx.recv_timeout(Duration::from_secs(20)) else {
        return Err(match server.join() {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => "server stopped early".into(),
            Err(_) => "server panicked".into(),
        });
    };
    let kernel_mode = pair.xdp_mode();

    let (a4, a6) = (pair.a4, pair.a6);
    let (per_family, malformed, plain) = (cfg.per_family, cfg.malformed, cfg.plain);
    let peer = pair.a.run(move || -> Result<(u32, Vec<Duration>), String> {
        let mut replies = 0u32;
        let mut rtts = Vec::with_capacity(2 * per_family as usize);
        for (local, remote) in [
            (
                SocketAddr::new(a4.into(), 0),
                SocketAddr::new(b4.into(), STOQ_PORT),
            ),
            (
                SocketAddr::new(a6.into(), 0),
                SocketAddr::new(b6.into(), STOQ_PORT),
            ),
        ] {
            let s = UdpSocket::bind(local).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .map_err(|e| e.to_string())?;
            for i in 0..plain {
                s.send_to(
                    format!("plain {i}").as_bytes(),
                    SocketAddr::new(remote.ip(), OTHER_PORT),
                )
                .map_err(|e| e.to_string())?;
            }
            let mut bad = stoq_payload(0);
            bad[0] &= !0x40; // fixed bit clear
            for _ in 0..malformed {
                s.send_to(&bad, remote).map_err(|e| e.to_string())?;
            }
            let mut buf = [0u8; 256];
            for i in 0..per_family {
                let t0 = Instant::now();
                s.send_to(&stoq_payload(i), remote)
                    .map_err(|e| e.to_string())?;
                loop {
                    match s.recv_from(&mut buf) {
                        Ok((n, from))
                            if from == remote && buf[..n] == *format!("pong {i}").as_bytes() =>
                        {
                            rtts.push(t0.elapsed());
                            replies += 1;
                            break;
                        }
                        Ok((_, from)) => {
                            return Err(format!("unexpected reply from {from} to request {i}"));
                        }
                        Err(_) if t0.elapsed() < Duration::from_secs(3) => {}
                        Err(e) => {
                            return Err(format!("no reply to STOQ request {i} to {remote}: {e}"));
                        }
                    }
                }
            }
        }
        Ok((replies, rtts))
    });
    // Give the plain datagrams a moment to be read, then stop the server.
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(100) {
        std::thread::yield_now();
    }
    let _ = done_tx.send(());
    let served = server.join().map_err(|_| "server panicked".to_string())??;
    let (replies, rtts) = peer?;
    let (
        att,
        zero_copy,
        xsk_received,
        partial_checksums,
        plain_received,
        stoq_port_socket_received,
        stats,
    ) = served;
    drop(att);
    if plain_received < plain_total {
        return Err(format!(
            "only {plain_received} of {plain_total} plain datagrams reached the kernel stack"
        ));
    }
    Ok(EchoReport {
        mode,
        kernel_mode,
        zero_copy,
        xsk_received,
        partial_checksums,
        plain_received,
        stoq_port_socket_received,
        replies,
        rtts,
        stats,
        attached_after_drop: pair.xdp_attached(),
    })
}
