//! Typed errors of the XDP path, each naming its fix.

use std::io;

use aya::EbpfError;
use aya::maps::MapError;
use aya::programs::ProgramError;

use super::AttachedMode;
use super::caps::{Capability, missing};

/// Everything that can go wrong loading, configuring or attaching `stoq_xdp`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XdpError {
    /// The object was not embedded at build time.
    #[error("eBPF program not built: {reason}; run `cargo xtask build-ebpf`, then rebuild")]
    ProgramNotBuilt {
        /// Why it is missing.
        reason: String,
    },
    /// The process lacks capabilities for `action`.
    #[error("{action} needs {}: run as root or grant them (setcap cap_bpf,cap_perfmon,cap_net_admin,cap_net_raw+ep <binary>)", fmt_caps(.missing))]
    MissingCapability {
        /// What was being done.
        action: &'static str,
        /// The capabilities that are missing.
        missing: Vec<Capability>,
    },
    /// The kernel lacks a feature.
    #[error(
        "the kernel lacks {feature} ({source}); STOQ's XDP path needs Linux 5.9 or later with CONFIG_BPF_SYSCALL and CONFIG_XDP_SOCKETS"
    )]
    KernelFeature {
        /// The feature.
        feature: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// The verifier rejected the program.
    #[error("the kernel verifier rejected stoq_xdp: {log}")]
    Verifier {
        /// The verifier log (tail).
        log: String,
    },
    /// The object lacks a program or map this loader expects.
    #[error(
        "the eBPF object has no `{missing}`; rebuild it with `cargo xtask build-ebpf` from the same STOQ version"
    )]
    ObjectMismatch {
        /// The missing item.
        missing: &'static str,
    },
    /// No such interface.
    #[error("network interface `{ifname}` does not exist (see `ip link`)")]
    InterfaceNotFound {
        /// The name asked for.
        ifname: String,
    },
    /// The interface refused the attachment.
    #[error("XDP attach refused by {ifname} in {mode:?} mode: {source}")]
    AttachRefused {
        /// Interface name.
        ifname: String,
        /// Mode that was tried last.
        mode: AttachedMode,
        /// The kernel's answer.
        source: io::Error,
    },
    /// Only a legacy netlink attachment was possible, which would outlive a crash.
    #[error(
        "{ifname}: the kernel offers no bpf_link for XDP (needs Linux 5.9+); refusing a netlink attachment that would survive a crash"
    )]
    NotABpfLink {
        /// Interface name.
        ifname: String,
    },
    /// A queue index beyond the XSK map.
    #[error("rx queue {queue} is beyond the XSK map's {max} entries")]
    QueueOutOfRange {
        /// The queue.
        queue: u32,
        /// Capacity.
        max: u32,
    },
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// The aya error.
        source: MapError,
    },
    /// Another syscall failed.
    #[error("{call} failed: {source}")]
    Syscall {
        /// What was called.
        call: &'static str,
        /// The error.
        source: io::Error,
    },
}

fn fmt_caps(c: &[Capability]) -> String {
    c.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Finds the `io::Error` at the bottom of an error chain.
fn io_cause<'a>(mut e: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    loop {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        e = e.source()?;
    }
}

fn permission(action: &'static str, needed: &[Capability]) -> XdpError {
    let mut m = missing(needed);
    if m.is_empty() {
        // Capabilities look fine; a LSM or seccomp policy said no. Name all of them.
        m = needed.to_vec();
    }
    XdpError::MissingCapability { action, missing: m }
}

fn is_perm(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

pub(super) fn from_load(e: &EbpfError) -> XdpError {
    match io_cause(e) {
        Some(io) if is_perm(io) => permission("loading BPF maps", &[Capability::Bpf]),
        Some(io) if io.raw_os_error() == Some(libc::ENOSYS) => XdpError::KernelFeature {
            feature: "the bpf() syscall",
            source: io::Error::from_raw_os_error(libc::ENOSYS),
        },
        Some(io) => XdpError::Syscall {
            call: "bpf(BPF_MAP_CREATE)",
            source: io::Error::from(io.kind()),
        },
        None => XdpError::Syscall {
            call: "loading the eBPF object",
            source: io::Error::other(e.to_string()),
        },
    }
}

pub(super) fn from_program(call: &'static str, e: &ProgramError) -> XdpError {
    if let ProgramError::LoadError {
        io_error,
        verifier_log,
    } = e
    {
        // EPERM/EACCES without a verifier log: the kernel refused the caller before
        // verifying anything. With a log it is a rejection by the verifier.
        if is_perm(io_error) && verifier_log.to_string().trim().is_empty() {
            return permission(
                "loading the XDP program",
                &[Capability::Bpf, Capability::Perfmon],
            );
        }
        let log = verifier_log.to_string();
        let tail: String = log
            .lines()
            .rev()
            .take(25)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        return XdpError::Verifier {
            log: format!("{io_error}\n{tail}"),
        };
    }
    match io_cause(e) {
        Some(io) if is_perm(io) => permission(call, &[Capability::Bpf]),
        Some(io) => XdpError::Syscall {
            call,
            source: io::Error::from_raw_os_error(io.raw_os_error().unwrap_or(0)),
        },
        None => XdpError::Syscall {
            call,
            source: io::Error::other(e.to_string()),
        },
    }
}

pub(super) fn from_attach(ifname: &str, mode: AttachedMode, e: &ProgramError) -> XdpError {
    if let ProgramError::UnknownInterface { name } = e {
        return XdpError::InterfaceNotFound {
            ifname: name.clone(),
        };
    }
    match io_cause(e) {
        Some(io) if is_perm(io) => {
            permission("attaching XDP", &[Capability::NetAdmin, Capability::Bpf])
        }
        Some(io) => XdpError::AttachRefused {
            ifname: ifname.to_string(),
            mode,
            source: io::Error::from_raw_os_error(io.raw_os_error().unwrap_or(libc::EINVAL)),
        },
        None => XdpError::AttachRefused {
            ifname: ifname.to_string(),
            mode,
            source: io::Error::other(e.to_string()),
        },
    }
}

pub(super) fn from_map(map: &'static str, e: MapError) -> XdpError {
    if let Some(io) = io_cause(&e) {
        if is_perm(io) {
            return permission("updating BPF maps", &[Capability::Bpf]);
        }
    }
    XdpError::Map { map, source: e }
}
