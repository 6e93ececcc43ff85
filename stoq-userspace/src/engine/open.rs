//! Opening the backends of an engine: one per worker, of the kind chosen, falling back to
//! the next kind (with the reason) when a preferred one cannot be set up here.

use std::io;
use std::net::SocketAddr;

use super::EngineConfig;
#[cfg(target_os = "linux")]
use super::XdpMode;
use crate::io::select::Unavailable;
use crate::io::udp::{UdpBackend, UdpConfig};
use crate::io::{Backend, BackendKind};

/// The backends of an engine, and what must live as long as they do.
pub(crate) struct Opened {
    pub(crate) kind: BackendKind,
    pub(crate) backends: Vec<Box<dyn Backend>>,
    /// A few words on how the backend runs (mode, offloads).
    pub(crate) detail: String,
    /// The XDP program and its attachment (AF_XDP only), detached on drop.
    #[cfg(target_os = "linux")]
    pub(crate) xdp: Option<XdpGuard>,
}

/// Opens one socket-based backend of `kind` on `bind`. io_uring's queue depth and receive
/// buffer count follow the batch size: four batches of each in flight.
pub(crate) fn open_socket_backend(
    kind: BackendKind,
    bind: SocketAddr,
    reuse_port: bool,
    buffer: usize,
    #[cfg_attr(not(target_os = "linux"), allow(unused_variables))] batch: usize,
) -> io::Result<Box<dyn Backend>> {
    let udp = UdpConfig {
        reuse_port,
        buffer_bytes: buffer,
        ..UdpConfig::new(bind)
    };
    Ok(match kind {
        #[cfg(target_os = "linux")]
        BackendKind::IoUring => Box::new(crate::io::uring::UringBackend::bind(
            &crate::io::uring::UringConfig {
                udp,
                queue_depth: (4 * batch).clamp(64, 4096).next_power_of_two() as u32,
                buffers: (4 * batch).clamp(64, 32_768).next_power_of_two() as u16,
            },
        )?),
        BackendKind::Udp => Box::new(UdpBackend::bind(&udp)?),
        other => {
            return Err(io::Error::other(format!(
                "backend {other} is not socket-based"
            )));
        }
    })
}

/// Opens `n` backends of `kind` (AF_XDP: one per receive queue, whatever `n`). A forced
/// AF_XDP backend may run in copy mode; chosen automatically it must be zero-copy.
///
/// A server's workers share one port (a SO_REUSEPORT group the kernel steers by connection
/// ID). A client's workers each bind a port of their own: each worker's connections are
/// then one flow of their own, which the server can keep on one of its workers while it
/// receives them coalesced (GRO merges the datagrams of one address pair).
pub(crate) fn open(
    kind: BackendKind,
    config: &EngineConfig,
    n: usize,
    share_port: bool,
    #[cfg_attr(not(target_os = "linux"), allow(unused_variables))] forced: bool,
) -> Result<Opened, Unavailable> {
    match kind {
        #[cfg(target_os = "linux")]
        BackendKind::AfXdp => open_af_xdp(config, forced, share_port),
        _ => {
            let group = share_port && n > 1;
            let mut bind = config.bind;
            let mut backends = Vec::with_capacity(n);
            for _ in 0..n {
                let b = open_socket_backend(kind, bind, group, config.socket_buffer, config.batch)
                    .map_err(|e| Unavailable::Setup(format!("cannot bind {bind}: {e}")))?;
                if group {
                    // Later workers share the port the first one got.
                    bind = b.local_addr();
                }
                backends.push(b);
            }
            let c = backends[0].capabilities();
            #[cfg(target_os = "linux")]
            let xdp = if config.xdp_filter == super::XdpFilter::On && share_port {
                Some(attach_filter(config, backends[0].local_addr())?)
            } else {
                None
            };
            Ok(Opened {
                kind,
                detail: format!(
                    "GSO {}, GRO {}, ECN {}, pktinfo {}",
                    if c.gso_segments > 1 {
                        format!("{} segments", c.gso_segments)
                    } else {
                        "off".into()
                    },
                    on_off(c.gro),
                    on_off(c.ecn),
                    on_off(c.pktinfo),
                ),
                backends,
                #[cfg(target_os = "linux")]
                xdp,
            })
        }
    }
}

/// `stoq_xdp` in front of a socket backend, as a filter only: no AF_XDP socket is
/// registered, so STOQ packets pass up to the sockets, and what the program drops (a
/// server's Initials beyond their prefix's rate, malformed datagrams) never reaches them.
#[cfg(target_os = "linux")]
pub(crate) fn attach_filter(
    config: &EngineConfig,
    bind: SocketAddr,
) -> Result<XdpGuard, Unavailable> {
    use crate::xdp::XdpProgram;
    let setup = |what: &str, e: &dyn std::fmt::Display| {
        Unavailable::Setup(format!("xdp_filter: {what}: {e}"))
    };
    if bind.ip().is_unspecified() {
        return Err(Unavailable::Setup(format!(
            "xdp_filter needs a specific local address to pick its interface (bound to {}; \
             bind the interface's address, or turn xdp_filter off)",
            bind.ip()
        )));
    }
    let (ifname, _) =
        crate::io::netlink::interface_of(bind.ip()).map_err(|e| setup("interface", &e))?;
    let mut program = XdpProgram::load().map_err(|e| setup("loading stoq_xdp", &e))?;
    configure(&mut program, config, bind.port(), true).map_err(|e| setup("configuring", &e))?;
    let attachment = program
        .attach(&ifname, attach_mode(config.xdp_mode))
        .map_err(|e| setup(&format!("attaching to {ifname}"), &e))?;
    Ok(XdpGuard {
        program,
        attachment: Some(attachment),
        queues: 0,
    })
}

/// Sets the program's CID layout, the STOQ port, and (for a server) the Initial rate
/// limit.
#[cfg(target_os = "linux")]
fn configure(
    program: &mut crate::xdp::XdpProgram,
    config: &EngineConfig,
    port: u16,
    server: bool,
) -> Result<(), crate::xdp::XdpError> {
    program.configure(&config.endpoint.cid_layout, &[port])?;
    // A server sheds Initial floods in the kernel; a client's Initials come from its
    // servers, which it must never limit.
    if server && let Some(limit) = config.initial_rate_limit {
        program.set_initial_limit(&limit.to_map(config.endpoint.source_prefix))?;
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn attach_mode(mode: XdpMode) -> crate::xdp::AttachMode {
    use crate::xdp::AttachMode;
    match mode {
        XdpMode::Auto => AttachMode::Auto,
        XdpMode::Driver => AttachMode::Driver,
        XdpMode::Skb => AttachMode::Skb,
    }
}

/// The XDP program attached to the interface, with the queues whose sockets it feeds.
/// Dropping it empties the XSKMAP and detaches the program (the bpf_link would detach on
/// process exit or crash anyway).
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub(crate) struct XdpGuard {
    program: crate::xdp::XdpProgram,
    attachment: Option<crate::xdp::Attachment>,
    queues: u32,
}

#[cfg(target_os = "linux")]
impl XdpGuard {
    /// The program's verdict counters (drops by reason, redirects, passes).
    pub(crate) fn stats(&self) -> Option<crate::xdp::SteerStats> {
        self.program.stats().ok()
    }
}

#[cfg(target_os = "linux")]
impl Drop for XdpGuard {
    fn drop(&mut self) {
        for q in 0..self.queues {
            let _ = self.program.unregister_socket(q);
        }
        if let Some(a) = self.attachment.take() {
            a.detach();
        }
    }
}

#[cfg(target_os = "linux")]
fn open_af_xdp(
    config: &EngineConfig,
    allow_copy: bool,
    server: bool,
) -> Result<Opened, Unavailable> {
    use std::os::fd::BorrowedFd;

    use crate::io::afxdp::{AfXdpBackend, AfXdpConfig, companion_socket};
    use crate::io::netlink;
    use crate::xdp::xsk::{BindMode, XskConfig};
    use crate::xdp::{AttachedMode, XdpProgram};

    let setup = |what: &str, e: &dyn std::fmt::Display| Unavailable::Setup(format!("{what}: {e}"));
    let ip = config.bind.ip();
    if ip.is_unspecified() {
        return Err(Unavailable::Setup(format!(
            "needs a specific local address to pick its interface (bound to {ip}; bind the \
             interface's address)"
        )));
    }
    let (ifname, ifindex) = netlink::interface_of(ip).map_err(|e| setup("interface", &e))?;
    let (_, queues) = netlink::Netlink::new()
        .and_then(|mut n| n.link(ifindex))
        .map_err(|e| setup(&format!("reading {ifname}"), &e))?;
    let mut program = XdpProgram::load().map_err(|e| setup("loading stoq_xdp", &e))?;
    // The first companion socket picks the port when asked for port 0.
    let first = companion_socket(config.bind, config.socket_buffer, queues > 1)
        .map_err(|e| setup(&format!("cannot bind {}", config.bind), &e))?;
    let bind = first.local_addr();
    configure(&mut program, config, bind.port(), server)
        .map_err(|e| setup("configuring stoq_xdp", &e))?;
    let attachment = program
        .attach(&ifname, attach_mode(config.xdp_mode))
        .map_err(|e| Unavailable::Setup(e.to_string()))?;
    let attached = attachment.mode();
    let mut guard = XdpGuard {
        program,
        attachment: Some(attachment),
        queues: 0,
    };
    let mut backends: Vec<Box<dyn Backend>> = Vec::with_capacity(queues);
    let mut zero_copy = false;
    let mut companion = Some(first);
    for q in 0..queues as u32 {
        let udp = match companion.take() {
            Some(u) => u,
            None => companion_socket(bind, config.socket_buffer, true)
                .map_err(|e| setup(&format!("cannot bind {bind}"), &e))?,
        };
        let b = match AfXdpBackend::bind(
            &AfXdpConfig {
                bind,
                queue: q,
                xsk: XskConfig {
                    mode: if allow_copy {
                        BindMode::Auto
                    } else {
                        BindMode::ZeroCopy
                    },
                    ..XskConfig::default()
                },
                buffer_bytes: config.socket_buffer,
            },
            udp,
        ) {
            Ok(b) => b,
            // Netlink reports the queues allocated; the driver may use fewer (veth
            // allocates one per CPU and uses one): the first refused queue is the end.
            Err(e) if q > 0 && e.raw_os_error() == Some(libc::EINVAL) => break,
            Err(e) if !allow_copy && e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                return Err(Unavailable::CopyModeOnly(ifname));
            }
            Err(e) => return Err(setup(&format!("AF_XDP socket on {ifname} queue {q}"), &e)),
        };
        // SAFETY: the descriptor belongs to `b`, alive for the call.
        let fd = unsafe { BorrowedFd::borrow_raw(b.xsk_fd()) };
        guard
            .program
            .register_socket(q, &fd)
            .map_err(|e| setup("XSKMAP", &e))?;
        guard.queues = q + 1;
        zero_copy = b.is_zero_copy();
        backends.push(Box::new(b));
    }
    Ok(Opened {
        kind: BackendKind::AfXdp,
        detail: format!(
            "{} mode on {ifname}, {}, {} queue(s)",
            match attached {
                AttachedMode::Driver => "driver",
                AttachedMode::Skb => "skb",
            },
            if zero_copy { "zero-copy" } else { "copy" },
            backends.len()
        ),
        backends,
        xdp: Some(guard),
    })
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}
