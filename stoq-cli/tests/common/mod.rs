//! What the CLI tests share: the binary under test, a guard that kills a child process,
//! key generation, and the address a server announces. Each test binary uses some of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command};

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

/// `stoq server` listening on `listen` over the UDP backend with one worker, proving
/// itself with the key pair `<key>.key` / `<key>.pub`; its standard output piped (for
/// [`listening_addr`]) and its standard error dropped. Tests add their own arguments
/// (a later `--workers` overrides this one).
pub(crate) fn server_command(listen: &str, key: &Path) -> Command {
    let mut c = Command::new(STOQ);
    c.args([
        "server",
        "--listen",
        listen,
        "--backend",
        "udp",
        "--workers",
        "1",
    ])
    .arg("--key")
    .arg(ext(key, "key"))
    .arg("--public")
    .arg(ext(key, "pub"))
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null());
    c
}

/// Writes a FALCON key pair to `<prefix>.key` and `<prefix>.pub`.
pub(crate) fn keygen(prefix: &Path) {
    let o = Command::new(STOQ)
        .args(["keygen", "--out"])
        .arg(prefix)
        .output();
    assert!(o.expect("keygen").status.success());
}

/// `<prefix>.<e>`: a key file `keygen` wrote.
pub(crate) fn ext(prefix: &Path, e: &str) -> PathBuf {
    PathBuf::from(format!("{}.{e}", prefix.display()))
}

/// Writes `mib` MiB of a xorshift pattern from `seed` (it changes everywhere, so any
/// misplaced or repeated block shows in a hash) to `path`.
pub(crate) fn pattern_file(path: &Path, mib: usize, seed: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("pattern file");
    let mut x = seed;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for b in &mut block {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        f.write_all(&block).expect("write the pattern");
    }
}

/// The size of the file at `p`, 0 if there is none.
pub(crate) fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// Reads `stoq server`'s banner ("listening on ADDR ...") from its piped standard output:
/// the address, and the output for what the server says later.
pub(crate) fn listening_addr(server: &mut Child) -> (String, BufReader<ChildStdout>) {
    let mut out = BufReader::new(server.stdout.take().expect("piped stdout"));
    let mut banner = String::new();
    out.read_line(&mut banner).expect("banner");
    let addr = banner.split_whitespace().nth(2).expect("listening on ADDR");
    (addr.to_string(), out)
}
