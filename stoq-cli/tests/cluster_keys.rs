//! `stoq cluster-keys` and `stoq server --cluster-keys`: a server killed mid-transfer and
//! started again with the cluster's key file resets its old clients at once (they fail
//! fast with a stateless reset instead of waiting 30 s for their idle timeout); with keys
//! of its own it cannot. Over loopback on the UDP backend: no privileges needed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Kill, STOQ};

fn stoq(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(STOQ)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("stoq runs")
}

/// A server on `listen`; returns it, the address it reports, and its output.
fn server(
    dir: &Path,
    listen: &str,
    keys: Option<&str>,
) -> (Kill, String, BufReader<std::process::ChildStdout>) {
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
    .args(["--key", "server.key", "--public", "server.pub"])
    .current_dir(dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(k) = keys {
        c.args(["--cluster-keys", k]);
    }
    let mut s = Kill(c.spawn().expect("server"));
    let mut line = String::new();
    let mut out = BufReader::new(s.0.stdout.take().expect("stdout"));
    out.read_line(&mut line).expect("banner");
    let addr = line
        .split_whitespace()
        .nth(2)
        .expect("listening on <addr>")
        .to_string();
    (s, addr, out)
}

/// Kills the server mid-transfer and starts another on its port (with `second_keys`):
/// how long the client took to fail after that, or `None` if it was still running 4 s
/// later; and its error output.
fn restart_under_a_client(
    dir: &Path,
    first_keys: &str,
    second_keys: &str,
    before_client: impl FnOnce(&Kill, &mut BufReader<std::process::ChildStdout>),
) -> (Option<Duration>, String) {
    let (first, addr, mut out) = server(dir, "127.0.0.1:0", Some(first_keys));
    before_client(&first, &mut out);
    let mut client = Kill(
        Command::new(STOQ)
            .args(["client", &addr, "--pin", "server.pub", "--load", "1000G"])
            .args(["--backend", "udp"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("client"),
    );
    // Let the transfer run.
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        client.0.try_wait().expect("wait").is_none(),
        "the client runs"
    );
    drop(first);
    let (_second, again, _) = server(dir, &addr, Some(second_keys));
    assert_eq!(again, addr, "the new server took the old one's port");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        if client.0.try_wait().expect("wait").is_some() {
            let took = start.elapsed();
            let mut err = String::new();
            std::io::Read::read_to_string(&mut client.0.stderr.take().expect("stderr"), &mut err)
                .expect("stderr");
            return (Some(took), err);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (None, String::new())
}

#[test]
fn a_restarted_server_with_the_cluster_keys_resets_its_old_clients() {
    let dir = std::env::temp_dir().join(format!("stoq-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    assert!(stoq(&["keygen", "--out", "server"], &dir).status.success());
    let made = stoq(&["cluster-keys", "--out", "cluster.keys"], &dir);
    assert!(made.status.success(), "{made:?}");
    let made = stoq(&["cluster-keys", "--out", "other.keys"], &dir);
    assert!(made.status.success(), "{made:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("cluster.keys"))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key file is private: {mode:o}");
    }

    let (failed, err) = restart_under_a_client(&dir, "cluster.keys", "cluster.keys", |_, _| {});
    let took = failed.expect("the client failed fast after the restart");
    assert!(err.contains("reset"), "{err}");
    eprintln!("with the cluster keys the client failed {took:?} after the restart: {err}");

    // With other keys the new server's reset cannot match: the client keeps waiting (its
    // idle timeout is 30 s).
    let (failed, _) = restart_under_a_client(&dir, "cluster.keys", "other.keys", |_, _| {});
    assert_eq!(failed, None, "no reset matched");

    // A rotated file (a new current generation, the old one kept) still resets the
    // connections of the generation before.
    std::fs::copy(dir.join("cluster.keys"), dir.join("before.keys")).expect("copy");
    let rotated = stoq(&["cluster-keys", "--rotate", "cluster.keys"], &dir);
    assert!(rotated.status.success(), "{rotated:?}");
    let text = std::fs::read_to_string(dir.join("cluster.keys")).expect("read");
    assert!(text.contains("current 1") && text.contains("key 0 ") && text.contains("key 1 "));
    let (failed, err) = restart_under_a_client(&dir, "before.keys", "cluster.keys", |_, _| {});
    assert!(
        failed.is_some() && err.contains("reset"),
        "{failed:?} {err}"
    );
    // SIGHUP reloads the file: a server started with generation 0 only, reloaded with the
    // rotated file, gives a new client generation-1 CIDs, which a server holding only
    // generation 1 can reset.
    let only_new: Vec<&str> = text.lines().filter(|l| !l.starts_with("key 0 ")).collect();
    std::fs::write(dir.join("only1.keys"), only_new.join("\n") + "\n").expect("write");
    std::fs::copy(dir.join("before.keys"), dir.join("live.keys")).expect("copy");
    let (failed, err) = restart_under_a_client(&dir, "live.keys", "only1.keys", |srv, out| {
        std::fs::copy(dir.join("cluster.keys"), dir.join("live.keys")).expect("copy");
        let pid = libc::pid_t::try_from(srv.0.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
        let mut line = String::new();
        out.read_line(&mut line).expect("reload line");
        assert!(
            line.contains("SIGHUP: cluster keys reloaded (current generation 1"),
            "{line}"
        );
    });
    assert!(
        failed.is_some() && err.contains("reset"),
        "{failed:?} {err}"
    );
    // Without the reload the client's CIDs are generation 0, which that server cannot
    // reset.
    let (failed, _) = restart_under_a_client(&dir, "before.keys", "only1.keys", |_, _| {});
    assert_eq!(failed, None);
    // Encrypted CIDs (`--lb`): the transfer runs, and the restarted server's reset still
    // matches.
    let made = stoq(&["cluster-keys", "--out", "lb.keys", "--lb"], &dir);
    assert!(made.status.success(), "{made:?}");
    let text = std::fs::read_to_string(dir.join("lb.keys")).expect("read");
    assert!(text.contains("lb-key 0 "), "{text}");
    let (failed, err) = restart_under_a_client(&dir, "lb.keys", "lb.keys", |_, _| {});
    assert!(
        failed.is_some() && err.contains("reset"),
        "{failed:?} {err}"
    );
    let bad = stoq(
        &[
            "server",
            "--key",
            "server.key",
            "--public",
            "server.pub",
            "--cluster-keys",
            "server.pub",
        ],
        &dir,
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("not a STOQ cluster key file"),
        "{bad:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
