//! A closed standard output (`stoq probe | head -0`, `stoq demo | head`) is not a crash:
//! the command drops its remaining output and runs to its normal end, so its guards
//! (namespaces, XDP programs) still clean up. `println!` would panic at the first line.

use std::process::Command;

const STOQ: &str = env!("CARGO_BIN_EXE_stoq");

#[test]
fn a_closed_stdout_ends_the_command_normally() {
    // The read end is closed before the command starts, so its first write fails.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(STOQ)
        .arg("probe")
        .stdout(writer)
        .output()
        .expect("run stoq probe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "stoq probe panicked: {stderr}"
    );
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}
