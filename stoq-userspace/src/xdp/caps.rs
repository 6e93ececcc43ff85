//! Capability checks, interface lookup and the memlock limit.

use std::ffi::CString;
use std::fmt;

use super::XdpError;

/// A Linux capability STOQ's XDP path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// CAP_NET_ADMIN (12): attach XDP programs.
    NetAdmin,
    /// CAP_NET_RAW (13): open AF_XDP sockets.
    NetRaw,
    /// CAP_SYS_ADMIN (21): stands in for CAP_BPF on older kernels.
    SysAdmin,
    /// CAP_PERFMON (38): pointer arithmetic on packets in the verifier.
    Perfmon,
    /// CAP_BPF (39): load programs and create maps.
    Bpf,
}

impl Capability {
    /// The capability number.
    pub const fn number(self) -> u32 {
        match self {
            Self::NetAdmin => 12,
            Self::NetRaw => 13,
            Self::SysAdmin => 21,
            Self::Perfmon => 38,
            Self::Bpf => 39,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NetAdmin => "CAP_NET_ADMIN",
            Self::NetRaw => "CAP_NET_RAW",
            Self::SysAdmin => "CAP_SYS_ADMIN",
            Self::Perfmon => "CAP_PERFMON",
            Self::Bpf => "CAP_BPF",
        })
    }
}

/// The effective capability set of this process, from `/proc/self/status`, or `None` where
/// it cannot be read (non-Linux, no procfs).
pub fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

/// Which of `needed` the process lacks (empty when unknown or all present). CAP_SYS_ADMIN
/// satisfies CAP_BPF and CAP_PERFMON, as the kernel allows.
pub(crate) fn missing(needed: &[Capability]) -> Vec<Capability> {
    let Some(eff) = effective_capabilities() else {
        return Vec::new();
    };
    let has = |c: Capability| eff & (1u64 << c.number()) != 0;
    needed
        .iter()
        .copied()
        .filter(|c| {
            !(has(*c)
                || (matches!(c, Capability::Bpf | Capability::Perfmon)
                    && has(Capability::SysAdmin)))
        })
        .collect()
}

/// Resolves an interface name to its index.
pub(crate) fn ifindex(ifname: &str) -> Result<u32, XdpError> {
    let c = CString::new(ifname).map_err(|_| XdpError::InterfaceNotFound {
        ifname: ifname.to_string(),
    })?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(super::not_found(ifname, std::io::Error::last_os_error()));
    }
    Ok(idx)
}

/// Raises RLIMIT_MEMLOCK, which kernels before 5.11 charge BPF maps against. Best effort:
/// newer kernels account BPF memory to the cgroup and ignore the limit.
pub(crate) fn raise_memlock_limit() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `lim` is a valid rlimit; setrlimit only reads it.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
}
