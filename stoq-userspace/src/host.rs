//! What the sans-IO core is given from the host, read here and never under `conn/`: a
//! random seed, the wall clock, and the machine's memory size ([`EndpointConfig::new`]). The core takes them as inputs
//! ([`EndpointConfig::with_inputs`]), so a simulation replays exactly; a unit test
//! (`core_reads_no_clock_or_randomness`) keeps `Instant::now`, `SystemTime::now`, OS
//! randomness and `unsafe` out of `conn/`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand_core::{OsRng, RngCore};

use crate::conn::EndpointConfig;

impl EndpointConfig {
    /// Defaults, with a seed from the OS, the wall clock read once, and half the
    /// machine's memory as [`max_memory`](EndpointConfig::max_memory).
    pub fn new() -> Self {
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self::with_inputs(
            seed,
            (Instant::now(), unix),
            crate::os::memory::half_of_physical_memory(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every `.rs` file under `dir`, recursively.
    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).expect("source directory") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// The sans-IO core is given time and randomness; it never reads them, and it holds
    /// no `unsafe` (test modules, which may use a real clock, are not scanned).
    #[test]
    fn core_reads_no_clock_or_randomness() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/conn");
        let mut files = Vec::new();
        sources(&root, &mut files);
        assert!(files.len() > 10, "found the core's sources");
        let forbidden = [
            "Instant::now",
            "SystemTime::now",
            "OsRng",
            "getrandom",
            "thread_rng",
            "unsafe ",
        ];
        let mut found = Vec::new();
        for f in &files {
            if f.components().any(|c| c.as_os_str() == "tests") {
                continue;
            }
            let text = std::fs::read_to_string(f).expect("read");
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for (n, line) in code.lines().enumerate() {
                let line = line.split("//").next().unwrap_or("");
                for w in forbidden {
                    if line.contains(w) {
                        found.push(format!("{}:{}: {w}", f.display(), n + 1));
                    }
                }
            }
        }
        assert!(found.is_empty(), "the core reads the OS: {found:#?}");
    }
}
