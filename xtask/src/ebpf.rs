//! `cargo xtask build-ebpf`: provisions the eBPF toolchain, then builds `stoq_xdp`.
//!
//! 1. The nightly toolchain must be installed (`-Z build-std=core` needs it); its `rust-src`
//!    component is added when missing.
//! 2. `bpf-linker` must link bitcode from the nightly's LLVM. Distributions rarely ship that
//!    LLVM, so the linker is built from crates.io against the nightly's own `libLLVM`, once,
//!    into a cache keyed by the nightly's commit and LLVM version
//!    (`$STOQ_CACHE_DIR`, else `$XDG_CACHE_HOME/stoq`, else `~/.cache/stoq`). Later runs
//!    find it there at once. `STOQ_BPF_LINKER=/path/to/bpf-linker` overrides all of this.
//! 3. The object is built for `bpfel-unknown-none` with BTF and copied to
//!    `target/stoq-ebpf-object/stoq-xdp.o`, where `stoq`'s build script embeds it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::util::{Fail, nightly_cargo, output, root, run};

/// The bpf-linker release known to work with aya-ebpf 0.2.1 and LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Where the built object goes.
pub(crate) fn object_path() -> PathBuf {
    root().join("target/stoq-ebpf-object/stoq-xdp.o")
}

/// Runs all steps; returns the object path.
pub(crate) fn build() -> Result<PathBuf, Fail> {
    let t0 = Instant::now();
    let info = nightly_info()?;
    ensure_rust_src(&info)?;
    let linker = ensure_bpf_linker(&info)?;
    let linker_dir = linker
        .parent()
        .expect("linker path has a parent")
        .to_path_buf();

    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![linker_dir];
    paths.extend(std::env::split_paths(&path));
    let flags = [
        "--cfg=bpf_target_arch=\"x86_64\"",
        "-Cdebuginfo=2",
        "-Clink-arg=--btf",
        "-Dwarnings",
    ]
    .join("\x1f");
    let mut c = nightly_cargo();
    c.args([
        "build",
        "--package",
        "stoq-ebpf",
        "--bins",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--target-dir",
    ])
    .arg(root().join("target/ebpf"))
    .env(
        "PATH",
        std::env::join_paths(paths).map_err(|e| Fail(e.to_string()))?,
    )
    .env("CARGO_ENCODED_RUSTFLAGS", flags);
    run(&mut c).map_err(|Fail(m)| Fail(format!("building stoq-ebpf failed: {m}")))?;

    let built = root().join("target/ebpf/bpfel-unknown-none/release/stoq-xdp");
    let dst = object_path();
    std::fs::create_dir_all(dst.parent().expect("object path has a parent"))
        .map_err(|e| Fail(format!("creating {}: {e}", dst.display())))?;
    let bytes =
        std::fs::read(&built).map_err(|e| Fail(format!("reading {}: {e}", built.display())))?;
    // Only rewrite when it changed, so `stoq` is not rebuilt for nothing.
    if std::fs::read(&dst).ok().as_deref() != Some(&bytes[..]) {
        std::fs::write(&dst, &bytes)
            .map_err(|e| Fail(format!("writing {}: {e}", dst.display())))?;
    }
    eprintln!(
        "xtask: built {} ({} bytes, BTF {}) in {:.1} s",
        dst.display(),
        bytes.len(),
        if contains(&bytes, b".BTF") {
            "present"
        } else {
            "MISSING"
        },
        t0.elapsed().as_secs_f64()
    );
    Ok(dst)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// What we need to know about the nightly toolchain.
struct Nightly {
    sysroot: PathBuf,
    commit: String,
    llvm_version: String,
}

fn nightly_info() -> Result<Nightly, Fail> {
    let vv = output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"])).map_err(|Fail(m)| {
        Fail(format!("the nightly toolchain is needed for -Z build-std ({m}); install it with `rustup toolchain install nightly`"))
    })?;
    let field = |k: &str| {
        vv.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
    };
    let sysroot =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))?;
    Ok(Nightly {
        sysroot: PathBuf::from(sysroot.trim()),
        commit: field("commit-hash:").unwrap_or_else(|| "unknown".into()),
        llvm_version: field("LLVM version:")
            .ok_or_else(|| Fail("`rustc +nightly -vV` reports no LLVM version".into()))?,
    })
}

fn ensure_rust_src(n: &Nightly) -> Result<(), Fail> {
    if n.sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Ok(());
    }
    eprintln!("xtask: adding the nightly rust-src component");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        .map_err(|Fail(m)| {
            Fail(format!(
                "{m}; run `rustup component add rust-src --toolchain nightly`"
            ))
        })
}

fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STOQ_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("stoq");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    home.join(".cache/stoq")
}

/// Whether the linker runs. rustc puts its sysroot's `lib` on the loader path when it
/// calls the linker; do the same here, for linkers built before the rpath was recorded.
fn works(linker: &Path, n: &Nightly) -> bool {
    Command::new(linker)
        .arg("--version")
        .env("LD_LIBRARY_PATH", n.sysroot.join("lib"))
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ensure_bpf_linker(n: &Nightly) -> Result<PathBuf, Fail> {
    if let Some(p) = std::env::var_os("STOQ_BPF_LINKER") {
        let p = PathBuf::from(p);
        return if works(&p, n) {
            Ok(p)
        } else {
            Err(Fail(format!(
                "STOQ_BPF_LINKER={} does not run",
                p.display()
            )))
        };
    }
    let short = &n.commit[..n.commit.len().min(12)];
    let dir = cache_dir()
        .join("bpf-linker")
        .join(format!("llvm{}-{short}", n.llvm_version));
    let linker = dir.join("bin/bpf-linker");
    if works(&linker, n) {
        return Ok(linker);
    }

    // Build it against the nightly's own libLLVM.
    let major = n.llvm_version.split('.').next().unwrap_or("");
    let lib = n.sysroot.join("lib");
    let libllvm = std::fs::read_dir(&lib)
        .map_err(|e| Fail(format!("{}: {e}", lib.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with(&format!("libLLVM.so.{major}")) || f.starts_with(&format!("libLLVM-{major}")))
        })
        .ok_or_else(|| Fail(format!("no libLLVM for LLVM {major} in {}; install the nightly's llvm-tools or set STOQ_BPF_LINKER", lib.display())))?;
    let prefix = dir.join("llvm");
    std::fs::create_dir_all(prefix.join("lib"))
        .map_err(|e| Fail(format!("{}: {e}", prefix.display())))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)
        .map_err(|e| Fail(format!("{}: {e}", link.display())))?;

    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {} (once; cached in {})",
        libllvm.display(),
        dir.display()
    );
    let mut c = Command::new("cargo");
    c.args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
        "--no-default-features",
    ])
    .args(["--features", &format!("llvm-{major}"), "--root"])
    .arg(&dir)
    .env("LLVM_PREFIX", &prefix)
    // Record where libLLVM lives, so the linker also runs outside rustc.
    .env(
        "RUSTFLAGS",
        format!("-Clink-arg=-Wl,-rpath,{}", lib.display()),
    );
    for v in [
        "RUSTUP_TOOLCHAIN",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO",
    ] {
        c.env_remove(v);
    }
    run(&mut c).map_err(|Fail(m)| {
        Fail(format!(
            "{m}; bpf-linker could not be built against {} (set STOQ_BPF_LINKER to a working one)",
            libllvm.display()
        ))
    })?;
    if works(&linker, n) {
        Ok(linker)
    } else {
        Err(Fail(format!(
            "{} was installed but does not run",
            linker.display()
        )))
    }
}
