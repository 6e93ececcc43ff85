//! Embeds the XDP object built by `cargo xtask build-ebpf`, or an empty stub plus the reason
//! it is missing, so that `cargo build`/`cargo test` work without the eBPF toolchain.

use std::path::PathBuf;
use std::{env, fs};

fn main() {
    println!("cargo:rerun-if-env-changed=STOQ_EBPF_OBJECT");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    // `cargo xtask build-ebpf` drops the object in a directory of its own, so that watching
    // it does not make cargo walk the whole eBPF build tree.
    let obj = match env::var_os("STOQ_EBPF_OBJECT") {
        Some(p) => PathBuf::from(p),
        None => {
            let dir = manifest.join("../target/stoq-ebpf-object");
            let _ = fs::create_dir_all(&dir);
            println!("cargo:rerun-if-changed={}", dir.display());
            dir.join("stoq-xdp.o")
        }
    };
    println!("cargo:rerun-if-changed={}", obj.display());

    let (bytes, reason) = match fs::read(&obj) {
        Ok(b) if b.starts_with(b"\x7fELF") => (b, None),
        Ok(_) => (
            Vec::new(),
            Some(format!("{} is not an ELF object", obj.display())),
        ),
        Err(e) => (
            Vec::new(),
            Some(format!("{} could not be read ({e})", obj.display())),
        ),
    };
    fs::write(out.join("stoq-xdp.o"), &bytes).expect("write OUT_DIR/stoq-xdp.o");
    let status = match reason {
        None => "None".to_string(),
        Some(r) => format!("Some({r:?})"),
    };
    fs::write(
        out.join("ebpf_status.rs"),
        format!("/// Why the object is missing, if it is.\npub(crate) const NOT_BUILT: Option<&str> = {status};\n"),
    )
    .expect("write OUT_DIR/ebpf_status.rs");
}
