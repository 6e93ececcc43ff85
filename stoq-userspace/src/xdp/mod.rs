//! The `stoq_xdp` program: load, configure, attach, read counters, detach.
//!
//! ```no_run
//! use stoq::xdp::{AttachMode, XdpProgram};
//! use stoq::wire::cid::CidLayout;
//!
//! let mut prog = XdpProgram::load()?;
//! prog.configure(&CidLayout::DEFAULT, &[4433])?;
//! let attachment = prog.attach("eth0", AttachMode::Auto)?;
//! println!("attached in {:?} mode", attachment.mode());
//! println!("{}", prog.stats()?);
//! # Ok::<(), stoq::xdp::XdpError>(())
//! ```
//!
//! Attachments are bpf_links owned by this process: when the [`Attachment`] is dropped, or
//! the process dies, the kernel detaches the program. Nothing is left behind.

pub(crate) mod caps;
mod error;
mod stats;
pub mod xsk;

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use aya::maps::{Array, MapData, PerCpuArray, XskMap};
use aya::programs::links::FdLink;
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
pub use caps::{Capability, effective_capabilities};
pub use error::XdpError;
pub use stats::SteerStats;
use stoq_common::cid::CidLayout;
use stoq_common::limit::INITIAL_LIMIT_MAP;
pub use stoq_common::limit::InitialLimit;
use stoq_common::maps::{
    CONFIG_MAP, COUNTERS_MAP, ClassifierConfig, MAX_QUEUES, NUM_COUNTERS, PORTS_MAP, PROGRAM_NAME,
    PortSet, XSK_MAP,
};

mod object {
    include!(concat!(env!("OUT_DIR"), "/ebpf_status.rs"));
}

/// The embedded XDP object (empty when it was not built).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/stoq-xdp.o"));

/// The environment variable naming an XDP object to load instead of the embedded one (to
/// ship the object separately, or to test what happens without a valid one).
pub const OBJECT_ENV: &str = "STOQ_XDP_OBJECT";

/// The `stoq_xdp` object: the file named by [`OBJECT_ENV`] if set, else the embedded one;
/// or why there is none.
pub fn program_object() -> Result<&'static [u8], XdpError> {
    if let Some(path) = std::env::var_os(OBJECT_ENV) {
        static LOADED: std::sync::OnceLock<Result<&'static [u8], String>> =
            std::sync::OnceLock::new();
        let r = LOADED.get_or_init(|| {
            let p = std::path::Path::new(&path);
            match std::fs::read(p) {
                Ok(b) if b.starts_with(b"\x7fELF") => Ok(leak_aligned(&b)),
                Ok(_) => Err(format!(
                    "{} ({OBJECT_ENV}) is not an ELF object",
                    p.display()
                )),
                Err(e) => Err(format!(
                    "{} ({OBJECT_ENV}) could not be read: {e}",
                    p.display()
                )),
            }
        });
        return r
            .clone()
            .map_err(|reason| XdpError::ProgramNotBuilt { reason });
    }
    match object::NOT_BUILT {
        None if !OBJECT.is_empty() => Ok(OBJECT),
        reason => Err(XdpError::ProgramNotBuilt {
            reason: reason.unwrap_or("the embedded object is empty").to_string(),
        }),
    }
}

/// Copies `b` into 8-byte-aligned memory that lives for the process (the ELF parser reads
/// its structures in place, as `include_bytes_aligned` provides for the embedded object).
fn leak_aligned(b: &[u8]) -> &'static [u8] {
    let words: &'static mut [u64] = Box::leak(vec![0u64; b.len().div_ceil(8)].into_boxed_slice());
    // SAFETY: `words` spans at least `b.len()` bytes, is initialised, lives forever and is
    // not referenced elsewhere; u8 has no alignment requirement.
    let bytes = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), b.len()) };
    bytes.copy_from_slice(b);
    bytes
}

/// How to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// Driver (native) mode, falling back to skb (generic) mode when the driver refuses.
    #[default]
    Auto,
    /// Driver mode only.
    Driver,
    /// Skb (generic) mode only.
    Skb,
}

/// The mode an attachment ended up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachedMode {
    /// Native XDP in the driver.
    Driver,
    /// Generic XDP in the kernel stack.
    Skb,
}

/// The result of an XDP program run, as returned by the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpAction {
    /// `XDP_ABORTED`.
    Aborted,
    /// `XDP_DROP`.
    Drop,
    /// `XDP_PASS`.
    Pass,
    /// `XDP_TX`.
    Tx,
    /// `XDP_REDIRECT`.
    Redirect,
    /// A value outside the known actions.
    Unknown(u32),
}

impl From<u32> for XdpAction {
    fn from(v: u32) -> Self {
        match v {
            0 => Self::Aborted,
            1 => Self::Drop,
            2 => Self::Pass,
            3 => Self::Tx,
            4 => Self::Redirect,
            other => Self::Unknown(other),
        }
    }
}

/// A live attachment to one interface. Dropping it detaches the program.
#[derive(Debug)]
pub struct Attachment {
    ifname: String,
    ifindex: u32,
    mode: AttachedMode,
    link: Option<FdLink>,
}

impl Attachment {
    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The mode the program runs in.
    pub fn mode(&self) -> AttachedMode {
        self.mode
    }

    /// Detaches now (also done on drop).
    pub fn detach(mut self) {
        self.link.take();
    }
}

/// Outcome of an in-kernel test run (`BPF_PROG_TEST_RUN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The action the program returned.
    pub action: XdpAction,
    /// Average time per run, as measured by the kernel.
    pub duration: Duration,
}

/// The loaded `stoq_xdp` program and its maps.
///
/// ```no_run
/// # fn f() -> Result<(), stoq::xdp::XdpError> {
/// use stoq::xdp::{AttachMode, XdpProgram};
/// let mut prog = XdpProgram::load()?; // `cargo xtask build-ebpf` builds the object
/// prog.configure(&stoq::wire::cid::CidLayout::default(), &[4433])?;
/// let link = prog.attach("eth0", AttachMode::Auto)?; // detached when dropped
/// println!("{}", prog.stats()?); // redirected, passed and dropped, by reason
/// # drop(link); Ok(()) }
/// ```
#[derive(Debug)]
pub struct XdpProgram {
    ebpf: Ebpf,
    /// What the kernel's port bitmap holds (it starts zeroed).
    ports: Box<PortSet>,
}

impl XdpProgram {
    /// Loads the embedded object and its program into the kernel (through the verifier).
    ///
    /// # Errors
    /// [`XdpError::ProgramNotBuilt`] when the object was not built,
    /// [`XdpError::MissingCapability`] without CAP_BPF, [`XdpError::Verifier`] when the kernel
    /// rejects the program.
    pub fn load() -> Result<Self, XdpError> {
        Self::load_bytes(program_object()?)
    }

    /// Loads a given object (for tools that ship their own build).
    pub fn load_bytes(object: &[u8]) -> Result<Self, XdpError> {
        caps::raise_memlock_limit();
        let mut ebpf = EbpfLoader::new()
            .load(object)
            .map_err(|e| error::from_load(&e))?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(XdpError::ObjectMismatch {
                missing: PROGRAM_NAME,
            })?
            .try_into()
            .map_err(|_| XdpError::ObjectMismatch {
                missing: PROGRAM_NAME,
            })?;
        prog.load().map_err(|e| error::from_program("load", &e))?;
        let mut me = Self {
            ebpf,
            ports: Box::default(),
        };
        // A fresh program starts configured for the default layout and no ports.
        me.configure(&CidLayout::DEFAULT, &[])?;
        Ok(me)
    }

    fn program(&mut self) -> Result<&mut Xdp, XdpError> {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .ok_or(XdpError::ObjectMismatch {
                missing: PROGRAM_NAME,
            })
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, XdpError> {
        self.ebpf
            .map_mut(name)
            .ok_or(XdpError::ObjectMismatch { missing: name })
    }

    /// Sets the CID layout and replaces the STOQ port set (any number of ports: the
    /// program holds them as a 65,536-bit bitmap). Only the bitmap words that change are
    /// written.
    ///
    /// # Errors
    /// Map update failures ([`XdpError::Map`], [`XdpError::MissingCapability`]).
    pub fn configure(&mut self, layout: &CidLayout, ports: &[u16]) -> Result<(), XdpError> {
        {
            // The value is the 8-byte `ClassifierConfig`, written as a `u64`.
            let mut cfg: Array<&mut MapData, u64> = Array::try_from(self.map_mut(CONFIG_MAP)?)
                .map_err(|e| error::from_map(CONFIG_MAP, e))?;
            cfg.set(0, ClassifierConfig::new(layout).to_u64(), 0)
                .map_err(|e| error::from_map(CONFIG_MAP, e))?;
        }
        let new = PortSet::from_ports(ports);
        let old = std::mem::take(&mut *self.ports);
        let mut map: Array<&mut MapData, u32> =
            Array::try_from(self.map_mut(PORTS_MAP)?).map_err(|e| error::from_map(PORTS_MAP, e))?;
        for (i, (n, o)) in new.words().iter().zip(old.words()).enumerate() {
            if n != o {
                if let Err(e) = map.set(i as u32, *n, 0) {
                    // The kernel holds a mix of old and new words; forget the shadow so the
                    // next configure rewrites every word.
                    *self.ports = PortSet::from_ports(&(0..=u16::MAX).collect::<Vec<_>>());
                    return Err(error::from_map(PORTS_MAP, e));
                }
            }
        }
        *self.ports = new;
        Ok(())
    }

    /// Sets the per-source-prefix Initial rate limit ([`InitialLimit::OFF`] turns it off,
    /// which is how a program starts). Buckets already holding state keep it.
    ///
    /// # Errors
    /// Map update failures ([`XdpError::Map`], [`XdpError::MissingCapability`]).
    pub fn set_initial_limit(&mut self, limit: &InitialLimit) -> Result<(), XdpError> {
        // The value is the 40-byte `InitialLimit`, written as five `u64`s.
        let mut map: Array<&mut MapData, [u64; 5]> =
            Array::try_from(self.map_mut(INITIAL_LIMIT_MAP)?)
                .map_err(|e| error::from_map(INITIAL_LIMIT_MAP, e))?;
        map.set(0, limit.to_words(), 0)
            .map_err(|e| error::from_map(INITIAL_LIMIT_MAP, e))
    }

    /// The STOQ ports currently configured.
    pub fn ports(&self) -> &PortSet {
        &self.ports
    }

    /// Attaches to `ifname`. With [`AttachMode::Auto`], driver mode is tried first and skb
    /// mode is used when the driver refuses.
    ///
    /// # Errors
    /// [`XdpError::InterfaceNotFound`], [`XdpError::MissingCapability`] without
    /// CAP_NET_ADMIN, [`XdpError::AttachRefused`] with the errno of the last refusal,
    /// [`XdpError::NotABpfLink`] if the kernel only offers legacy netlink attachment.
    pub fn attach(&mut self, ifname: &str, mode: AttachMode) -> Result<Attachment, XdpError> {
        let ifindex = caps::ifindex(ifname)?;
        let tries: &[(XdpMode, AttachedMode)] = match mode {
            AttachMode::Auto => &[
                (XdpMode::Driver, AttachedMode::Driver),
                (XdpMode::Skb, AttachedMode::Skb),
            ],
            AttachMode::Driver => &[(XdpMode::Driver, AttachedMode::Driver)],
            AttachMode::Skb => &[(XdpMode::Skb, AttachedMode::Skb)],
        };
        let mut last = None;
        for (xmode, attached) in tries {
            let prog = self.program()?;
            match prog.attach_to_if_index(ifindex, *xmode) {
                Ok(id) => {
                    let link = prog
                        .take_link(id)
                        .map_err(|e| error::from_program("take_link", &e))?;
                    let Ok(fd_link) = FdLink::try_from(link) else {
                        // The legacy netlink attachment survives a crash; refuse it. (The
                        // aya link dropped here detaches it again.)
                        return Err(XdpError::NotABpfLink {
                            ifname: ifname.to_string(),
                        });
                    };
                    return Ok(Attachment {
                        ifname: ifname.to_string(),
                        ifindex,
                        mode: *attached,
                        link: Some(fd_link),
                    });
                }
                Err(e) => {
                    let err = error::from_attach(ifname, *attached, &e);
                    if matches!(err, XdpError::MissingCapability { .. }) {
                        return Err(err);
                    }
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or(XdpError::InterfaceNotFound {
            ifname: ifname.to_string(),
        }))
    }

    /// Registers an AF_XDP socket for `queue`: STOQ packets arriving on that rx queue are
    /// redirected to it.
    pub fn register_socket(&mut self, queue: u32, socket: &impl AsRawFd) -> Result<(), XdpError> {
        if queue >= MAX_QUEUES {
            return Err(XdpError::QueueOutOfRange {
                queue,
                max: MAX_QUEUES,
            });
        }
        let mut map: XskMap<&mut MapData> =
            XskMap::try_from(self.map_mut(XSK_MAP)?).map_err(|e| error::from_map(XSK_MAP, e))?;
        map.set(queue, socket.as_raw_fd(), 0)
            .map_err(|e| error::from_map(XSK_MAP, e))
    }

    /// Removes the socket registered for `queue`, if any.
    pub fn unregister_socket(&mut self, queue: u32) -> Result<(), XdpError> {
        let mut map: XskMap<&mut MapData> =
            XskMap::try_from(self.map_mut(XSK_MAP)?).map_err(|e| error::from_map(XSK_MAP, e))?;
        match map.unset(queue) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::SyscallError(s))
                if s.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            Err(e) => Err(error::from_map(XSK_MAP, e)),
        }
    }

    /// A snapshot of the verdict counters, summed over CPUs.
    pub fn stats(&self) -> Result<SteerStats, XdpError> {
        let map = self
            .ebpf
            .map(COUNTERS_MAP)
            .ok_or(XdpError::ObjectMismatch {
                missing: COUNTERS_MAP,
            })?;
        let arr: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(|e| error::from_map(COUNTERS_MAP, e))?;
        let mut raw = [0u64; NUM_COUNTERS as usize];
        for (i, slot) in raw.iter_mut().enumerate() {
            let v = arr
                .get(&(i as u32), 0)
                .map_err(|e| error::from_map(COUNTERS_MAP, e))?;
            *slot = v.iter().sum();
        }
        Ok(SteerStats::from_raw(raw))
    }

    /// Runs the program on `frame` in the kernel (`BPF_PROG_TEST_RUN`) `repeat` times and
    /// returns its action and the kernel-measured time per run. Counters are updated as for
    /// real traffic.
    pub fn test_run(&mut self, frame: &[u8], repeat: u32) -> Result<TestRunOutcome, XdpError> {
        let prog = self.program()?;
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat: repeat.max(1),
            ..TestRunOptions::new()
        };
        let r = prog
            .test_run(opts)
            .map_err(|e| error::from_program("BPF_PROG_TEST_RUN", &e))?;
        Ok(TestRunOutcome {
            action: XdpAction::from(r.return_value),
            duration: r.duration,
        })
    }
}

/// Turns an `io::Error` from an interface lookup into the typed error.
fn not_found(ifname: &str, _e: io::Error) -> XdpError {
    XdpError::InterfaceNotFound {
        ifname: ifname.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_built_names_the_fix() {
        let e = XdpError::ProgramNotBuilt {
            reason: "target/stoq-ebpf-object/stoq-xdp.o could not be read".into(),
        };
        let msg = e.to_string();
        assert!(msg.starts_with("eBPF program not built: "), "{msg}");
        assert!(msg.contains("cargo xtask build-ebpf"), "{msg}");
    }

    #[test]
    fn embedded_object_is_an_elf_or_a_reason() {
        match program_object() {
            Ok(obj) => assert!(obj.starts_with(b"\x7fELF")),
            Err(XdpError::ProgramNotBuilt { reason }) => assert!(!reason.is_empty()),
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn missing_capabilities_are_named() {
        let e = XdpError::MissingCapability {
            action: "attaching XDP",
            missing: vec![Capability::NetAdmin, Capability::Bpf],
        };
        let msg = e.to_string();
        assert!(msg.contains("CAP_NET_ADMIN and CAP_BPF"), "{msg}");
        assert!(msg.contains("run as root"), "{msg}");
    }

    #[test]
    fn actions_round_trip() {
        for (v, a) in [
            (0, XdpAction::Aborted),
            (1, XdpAction::Drop),
            (2, XdpAction::Pass),
            (3, XdpAction::Tx),
            (4, XdpAction::Redirect),
        ] {
            assert_eq!(XdpAction::from(v), a);
        }
        assert_eq!(XdpAction::from(9), XdpAction::Unknown(9));
    }
}
