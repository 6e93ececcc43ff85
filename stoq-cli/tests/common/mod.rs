//! What the CLI tests share: the binary under test and a guard that kills a child process.

use std::process::Child;

/// The `stoq` binary Cargo built for these tests.
pub(crate) const STOQ: &str = env!("CARGO_BIN_EXE_stoq");

/// Kills a child process on drop, whatever happens.
pub(crate) struct Kill(pub(crate) Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
