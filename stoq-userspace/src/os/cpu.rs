//! CPU affinity.

/// Pins the calling thread to core `i` modulo the cores it may use (best effort).
pub(crate) fn pin_to_core(i: usize) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: cpu_set_t is a plain bitmask; all-zero is the empty set.
        let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 is this thread; the size matches the set.
        if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut allowed) }
            != 0
        {
            return;
        }
        let cores: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `c` is below CPU_SETSIZE.
            .filter(|c| unsafe { libc::CPU_ISSET(*c, &allowed) })
            .collect();
        if cores.is_empty() {
            return;
        }
        // SAFETY: as above.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the core number comes from the allowed set, below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cores[i % cores.len()], &mut set) };
        // SAFETY: pid 0 is this thread; the size matches the set.
        let _ = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = i;
}
