//! The system calls of an AF_XDP socket, each checked and typed.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::if_xdp;

pub(crate) fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A new AF_XDP socket.
pub(crate) fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked.
    let raw = check(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Sets an `SOL_XDP` option.
pub(crate) fn setopt<T>(fd: RawFd, opt: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` points at a live `T` of the size passed.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Reads an `SOL_XDP` option into a plain C struct of integers.
pub(crate) fn getopt<T: Copy>(fd: RawFd, opt: libc::c_int) -> io::Result<T> {
    // SAFETY: only used with libc's plain-integer structs, for which all-zero is valid.
    let mut v: T = unsafe { std::mem::zeroed() };
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is a live, writable `T` and `len` is its size.
    check(unsafe { libc::getsockopt(fd, libc::SOL_XDP, opt, (&raw mut v).cast(), &mut len) })?;
    Ok(v)
}

/// Binds the socket to a queue of an interface.
pub(crate) fn bind(fd: RawFd, sa: &if_xdp::sockaddr_xdp) -> io::Result<()> {
    // SAFETY: `sa` is a valid sockaddr_xdp of the size passed.
    check(unsafe {
        libc::bind(
            fd,
            (sa as *const if_xdp::sockaddr_xdp).cast(),
            size_of::<if_xdp::sockaddr_xdp>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Kicks the kernel's transmit processing (a `sendto` with no data). `EAGAIN` means
/// more is waiting (copy mode transmits 32 frames per kick); `EBUSY`/`ENOBUFS` a full
/// device queue.
pub(crate) fn kick(fd: RawFd) -> io::Result<()> {
    // SAFETY: sendto with no buffer only kicks the kernel's TX processing.
    let r = unsafe {
        libc::sendto(
            fd,
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `timeout_ms` for the socket to be readable.
pub(crate) fn poll_in(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = check(unsafe { libc::poll(&mut p, 1, timeout_ms) })?;
    Ok(n > 0)
}
