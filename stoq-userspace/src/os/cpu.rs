//! CPU affinity.

/// The CPUs the calling thread may run on, in ascending order (empty where that cannot be
/// read).
#[cfg(target_os = "linux")]
pub(crate) fn allowed() -> Vec<usize> {
    // SAFETY: cpu_set_t is a plain bitmask; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is this thread; the size matches the set.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// The set holding CPU `cpu` alone; `cpu` must be below `CPU_SETSIZE`.
#[cfg(target_os = "linux")]
fn only(cpu: usize) -> libc::cpu_set_t {
    debug_assert!(cpu < libc::CPU_SETSIZE as usize);
    // SAFETY: cpu_set_t is a plain bitmask; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the caller keeps `cpu` below CPU_SETSIZE (CPU_SET also bounds it).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set
}

/// Pins the calling thread to core `i` modulo the cores it may use (best effort).
pub(crate) fn pin_to_core(i: usize) {
    #[cfg(target_os = "linux")]
    {
        let cores = allowed();
        if cores.is_empty() {
            return;
        }
        let set = only(cores[i % cores.len()]);
        // SAFETY: pid 0 is this thread; the size matches the set.
        let _ = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = i;
}

/// Pins thread `t` to CPU `cpu` alone (the operator's choice, so exactly that CPU or an error
/// saying why).
pub(crate) fn pin_thread<T>(t: &std::thread::JoinHandle<T>, cpu: usize) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::io::{Error, ErrorKind};
        use std::os::unix::thread::JoinHandleExt;
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("CPU {cpu} is beyond CPU_SETSIZE ({})", libc::CPU_SETSIZE),
            ));
        }
        let set = only(cpu);
        // SAFETY: the handle keeps its thread joinable, so its pthread_t is valid; the size
        // matches the set.
        let rc = unsafe {
            libc::pthread_setaffinity_np(
                t.as_pthread_t(),
                size_of::<libc::cpu_set_t>(),
                &raw const set,
            )
        };
        if rc != 0 {
            let e = Error::from_raw_os_error(rc);
            return Err(Error::new(
                e.kind(),
                format!(
                    "cannot pin to CPU {cpu}: {e} (is it online and in this process's allowed \
                     set? `taskset -p $PID` shows the set)"
                ),
            ));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (t, cpu);
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "pinning a thread to a CPU is supported on Linux only",
        ))
    }
}
