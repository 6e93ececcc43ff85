//! Memory mappings shared with the kernel (AF_XDP rings and UMEM, io_uring buffer rings).

use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;

/// An anonymous or socket-backed shared mapping, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mmap {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) len: usize,
}

impl Mmap {
    /// Maps `len` bytes: anonymous memory, or `fd` at `offset`.
    pub(crate) fn new(len: usize, fd: Option<RawFd>, offset: u64) -> io::Result<Self> {
        let (flags, fd) = match fd {
            Some(fd) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd),
            None => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
            ),
        };
        // SAFETY: a fresh mapping at an address of the kernel's choosing; no existing
        // memory is affected. The result is checked against MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping created by `Mmap::new` and not yet unmapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

// SAFETY: a mapping is plain memory owned by this value; moving it to another thread moves
// the ownership with it (the users synchronise any sharing with the kernel themselves).
unsafe impl Send for Mmap {}
