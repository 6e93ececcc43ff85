//! Process helpers shared by the xtask commands.

use std::path::PathBuf;
use std::process::Command;

/// A failure with a message that says what to do.
#[derive(Debug)]
pub(crate) struct Fail(pub(crate) String);

/// The workspace root.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Variables the outer (stable) cargo sets that must not leak into inner builds.
const LEAKY_ENV: &[&str] = &[
    "RUSTUP_TOOLCHAIN",
    "RUSTC",
    "RUSTDOC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO",
];

/// `cargo` on the default toolchain, run at the workspace root.
pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root());
    c
}

/// `cargo` on the nightly toolchain, with the outer cargo's variables removed.
pub(crate) fn nightly_cargo() -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo"]);
    for v in LEAKY_ENV {
        c.env_remove(v);
    }
    c.current_dir(root());
    c
}

/// Runs a command, failing with its exit status.
pub(crate) fn run(c: &mut Command) -> Result<(), Fail> {
    let status = c
        .status()
        .map_err(|e| Fail(format!("could not start {:?}: {e}", c.get_program())))?;
    if status.success() {
        Ok(())
    } else {
        Err(Fail(format!(
            "{:?} {:?} failed ({status})",
            c.get_program(),
            c.get_args().collect::<Vec<_>>()
        )))
    }
}

/// Runs a command and returns its stdout.
pub(crate) fn output(c: &mut Command) -> Result<String, Fail> {
    let out = c
        .output()
        .map_err(|e| Fail(format!("could not start {:?}: {e}", c.get_program())))?;
    if !out.status.success() {
        return Err(Fail(format!(
            "{:?} {:?} failed: {}",
            c.get_program(),
            c.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the effective uid is 0.
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        .unwrap_or(false)
}

/// Whether `program` runs (`program --version` succeeds).
pub(crate) fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs cargo-fuzz if it is missing.
pub(crate) fn ensure_cargo_fuzz() -> Result<(), Fail> {
    if Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz from crates.io");
    run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

/// The fuzz targets under `fuzz/fuzz_targets`.
pub(crate) fn fuzz_targets() -> Result<Vec<String>, Fail> {
    let dir = root().join("fuzz/fuzz_targets");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| Fail(format!("{}: {e}", dir.display())))?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".rs")
                .map(str::to_owned)
        })
        .collect();
    v.sort();
    Ok(v)
}
