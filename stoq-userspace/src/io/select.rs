//! Choosing a backend: probe each, take the first that can run, and say why the others
//! were skipped, each reason with its fix.
//!
//! The order of preference is [`BackendKind::ALL`] (AF_XDP, UDP, io_uring). A forced
//! backend (configuration, or the `STOQ_BACKEND` environment variable) that cannot run is
//! an error, never a silent fallback.

use std::fmt;

use super::BackendKind;

/// The environment variable that forces a backend (`af_xdp`, `io_uring` or `udp`).
pub const BACKEND_ENV: &str = "STOQ_BACKEND";

/// Why a backend cannot run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unavailable {
    /// The backend needs Linux.
    #[error("needs Linux")]
    NotLinux,
    /// Capabilities are missing.
    #[error(
        "{} missing (run as root or grant cap_bpf,cap_perfmon,cap_net_admin,cap_net_raw)",
        .0.join(", ")
    )]
    MissingCapabilities(Vec<String>),
    /// The XDP program was not built into this binary.
    #[error("eBPF object not built (cargo xtask build-ebpf): {0}")]
    EbpfNotBuilt(String),
    /// io_uring is switched off by the `kernel.io_uring_disabled` sysctl.
    #[error("io_uring disabled by kernel.io_uring_disabled={0} (set it to 0)")]
    IoUringDisabled(u8),
    /// The interface offers AF_XDP only in copy mode, which moves less per CPU than the
    /// socket backends with GSO/GRO (docs/benchmarks.md): it is not chosen on its own.
    #[error(
        "{0} has no zero-copy AF_XDP (copy mode only), which is slower than io_uring/UDP with \
         GSO/GRO; force it with STOQ_BACKEND=af_xdp"
    )]
    CopyModeOnly(String),
    /// The kernel refused the setup.
    #[error("{0}")]
    Setup(String),
}

/// One backend's probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The backend.
    pub kind: BackendKind,
    /// `Ok` if it can run here, else why not.
    pub result: Result<(), Unavailable>,
}

/// The outcome of [`select`]: the backend to run and why each other one was passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The backend chosen.
    pub chosen: BackendKind,
    /// Whether it was forced (configuration or [`BACKEND_ENV`]).
    pub forced: bool,
    /// Each backend preferred to the chosen one, and why it was skipped.
    pub skipped: Vec<(BackendKind, Unavailable)>,
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend {}", self.chosen)?;
        if self.forced {
            write!(f, " (forced)")?;
        }
        for (k, why) in &self.skipped {
            write!(f, "; {k} skipped: {why}")?;
        }
        Ok(())
    }
}

/// Why no backend could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    /// The forced backend cannot run here.
    #[error("backend {kind} was forced but cannot run: {reason}")]
    ForcedUnavailable {
        /// The backend asked for.
        kind: BackendKind,
        /// Why it cannot run.
        reason: Unavailable,
    },
    /// [`BACKEND_ENV`] names no backend.
    #[error("{BACKEND_ENV}={0:?} names no backend (use af_xdp, io_uring or udp)")]
    BadEnv(String),
}

/// Probes one backend.
pub fn probe(kind: BackendKind) -> Probe {
    let result = match kind {
        BackendKind::Udp => Ok(()),
        BackendKind::Custom => Err(Unavailable::Setup(
            "a custom backend is given to the engine, not chosen (Endpoint::server_on)".into(),
        )),
        BackendKind::AfXdp => probe_af_xdp(),
        BackendKind::IoUring => probe_io_uring(),
    };
    Probe { kind, result }
}

/// Probes every backend, in order of preference.
pub fn probe_all() -> Vec<Probe> {
    BackendKind::ALL.iter().map(|k| probe(*k)).collect()
}

#[cfg(target_os = "linux")]
fn probe_af_xdp() -> Result<(), Unavailable> {
    use crate::xdp::caps::{Capability, missing};
    // CAP_PERFMON too: without it the verifier refuses the program's packet pointer
    // arithmetic, and the backend would fail later with a verifier dump as its reason.
    let lack = missing(&[
        Capability::Bpf,
        Capability::Perfmon,
        Capability::NetAdmin,
        Capability::NetRaw,
    ]);
    if !lack.is_empty() {
        return Err(Unavailable::MissingCapabilities(
            lack.iter().map(ToString::to_string).collect(),
        ));
    }
    if let Err(e) = crate::xdp::program_object() {
        return Err(Unavailable::EbpfNotBuilt(e.to_string()));
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn probe_af_xdp() -> Result<(), Unavailable> {
    Err(Unavailable::NotLinux)
}

#[cfg(target_os = "linux")]
fn probe_io_uring() -> Result<(), Unavailable> {
    // 0: enabled; 1: only for the io_uring_group; 2: off (Linux 6.6+).
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
        .unwrap_or(0);
    if disabled == 2 || (disabled == 1 && !is_root()) {
        return Err(Unavailable::IoUringDisabled(disabled));
    }
    super::uring::probe().map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => Unavailable::IoUringDisabled(disabled),
        _ => Unavailable::Setup(format!("io_uring_setup: {e}")),
    })
}

#[cfg(target_os = "linux")]
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(not(target_os = "linux"))]
fn probe_io_uring() -> Result<(), Unavailable> {
    Err(Unavailable::NotLinux)
}

/// The backend forced by [`BACKEND_ENV`], if set.
///
/// # Errors
/// [`SelectError::BadEnv`] for a value that names no backend.
pub fn forced_by_env() -> Result<Option<BackendKind>, SelectError> {
    match std::env::var(BACKEND_ENV) {
        Ok(v) if !v.trim().is_empty() => BackendKind::parse(v.trim())
            .map(Some)
            .ok_or(SelectError::BadEnv(v)),
        _ => Ok(None),
    }
}

/// Chooses a backend: `forced` (else [`BACKEND_ENV`]) if given, otherwise the first in
/// order of preference that can run.
///
/// # Errors
/// [`SelectError`] when a forced backend cannot run or the variable is malformed.
pub fn select(forced: Option<BackendKind>) -> Result<Selection, SelectError> {
    let forced = match forced {
        Some(k) => Some(k),
        None => forced_by_env()?,
    };
    if let Some(kind) = forced {
        return match probe(kind).result {
            Ok(()) => Ok(Selection {
                chosen: kind,
                forced: true,
                skipped: Vec::new(),
            }),
            Err(reason) => Err(SelectError::ForcedUnavailable { kind, reason }),
        };
    }
    let mut skipped = Vec::new();
    for p in probe_all() {
        match p.result {
            Ok(()) => {
                return Ok(Selection {
                    chosen: p.kind,
                    forced: false,
                    skipped,
                });
            }
            Err(why) => skipped.push((p.kind, why)),
        }
    }
    unreachable!("the UDP backend always probes Ok")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_always_runs_and_others_say_why() {
        let s = select(Some(BackendKind::Udp)).expect("udp");
        assert_eq!(s.chosen, BackendKind::Udp);
        assert!(s.forced);
        let probes = probe_all();
        assert_eq!(probes.len(), 3);
        for p in &probes {
            if let Err(why) = &p.result {
                assert!(!why.to_string().is_empty());
            }
        }
    }

    #[test]
    fn forcing_an_unavailable_backend_is_a_typed_error() {
        if let Err(reason) = probe(BackendKind::IoUring).result {
            let e = select(Some(BackendKind::IoUring)).expect_err("unavailable");
            assert_eq!(
                e,
                SelectError::ForcedUnavailable {
                    kind: BackendKind::IoUring,
                    reason
                }
            );
            assert!(e.to_string().contains("io_uring"));
        }
    }

    #[test]
    fn names_round_trip() {
        for k in BackendKind::ALL {
            assert_eq!(BackendKind::parse(k.name()), Some(k));
        }
        assert_eq!(BackendKind::parse("XDP"), Some(BackendKind::AfXdp));
        assert_eq!(BackendKind::parse("tcp"), None);
    }
}
