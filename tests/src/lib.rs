//! Support for STOQ's integration tests and the self-check: frame builders, network
//! namespaces and veth pairs behind RAII guards, and the rules for skipping privileged tests.
//!
//! Privileged tests need root. Without it they print why and return; with
//! `STOQ_REQUIRE_PRIVILEGED=1` (which `cargo xtask test` sets when run as root) a missing
//! capability fails the test instead, so they can never pass silently where they must run.

pub mod echo;
pub mod engine;
pub mod frames;
pub mod nat;

use stoq::xdp::{XdpError, XdpProgram};
pub use stoq_netns as netns;

/// Whether `var` is set to a non-empty value other than `0`.
fn flag(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Whether privileged tests can run here. Prints the reason and returns `false` to skip;
/// panics instead when `STOQ_REQUIRE_PRIVILEGED` is set.
pub fn privileged(test: &str) -> bool {
    let eff = stoq::xdp::effective_capabilities().unwrap_or(0);
    let needed = [
        (12, "CAP_NET_ADMIN"),
        (13, "CAP_NET_RAW"),
        (21, "CAP_SYS_ADMIN"),
    ];
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(b, _)| eff & (1 << b) == 0)
        .map(|(_, n)| *n)
        .collect();
    let ip_ok = std::process::Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    let reason = if !missing.is_empty() {
        Some(format!("missing {} (run as root)", missing.join(", ")))
    } else if !ip_ok {
        Some("the `ip` tool (iproute2) is not installed".to_string())
    } else {
        None
    };
    match reason {
        None => true,
        Some(r) if flag("STOQ_REQUIRE_PRIVILEGED") => panic!("{test}: cannot run: {r}"),
        Some(r) => {
            eprintln!("SKIPPED {test}: {r}");
            false
        }
    }
}

/// Loads `stoq_xdp`, or skips (prints the reason, returns `None`) when the object was not
/// built; panics instead when `STOQ_REQUIRE_EBPF` is set.
pub fn load_program(test: &str) -> Option<XdpProgram> {
    match XdpProgram::load() {
        Ok(p) => Some(p),
        Err(e @ XdpError::ProgramNotBuilt { .. }) if !flag("STOQ_REQUIRE_EBPF") => {
            eprintln!("SKIPPED {test}: {e}");
            None
        }
        Err(e) => panic!("{test}: loading stoq_xdp failed: {e}"),
    }
}

/// A small deterministic PRNG (xorshift64*), so that every random test replays from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator (a zero seed is replaced).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A random byte.
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.byte();
        }
    }
}
