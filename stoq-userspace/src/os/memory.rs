//! How much memory the machine has.

/// Half the machine's RAM (Linux `sysinfo`), or 1 GiB where it cannot be read.
pub(crate) fn half_of_physical_memory() -> u64 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysinfo only writes the struct we pass; it is plain old data.
        let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
        // SAFETY: `si` is a valid, writable sysinfo struct for the call's duration.
        if unsafe { libc::sysinfo(&mut si) } == 0 {
            return (si.totalram as u64).saturating_mul(u64::from(si.mem_unit)) / 2;
        }
    }
    1 << 30
}
