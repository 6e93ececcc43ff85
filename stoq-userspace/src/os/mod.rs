//! The operating system's plumbing, in one low module that imports nothing else of STOQ:
//! shared memory mappings (AF_XDP rings and UMEM, io_uring buffer rings), CPU pinning, the
//! classic-BPF program that steers a SO_REUSEPORT group by connection ID, and the
//! machine's memory size. Most of STOQ's `unsafe` lives here and in `xdp::xsk`, each
//! block with its `SAFETY:` line; the protocol layer holds none.

#[cfg(target_os = "linux")]
pub(crate) mod cbpf;
pub(crate) mod cpu;
pub(crate) mod memory;
#[cfg(target_os = "linux")]
pub(crate) mod mmap;
