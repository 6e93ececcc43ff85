//! Metrics through the async API: counters that rise with a transfer, the RTT histogram,
//! handshakes by outcome, the HTTP endpoint's answers (and refusals), and the text checked
//! by `promtool check metrics` when it is installed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{endpoints, pattern};

/// The value of the sample `name{labels}` in `text` (labels in the order rendered).
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name_and_labels)?
            .strip_prefix(' ')?
            .parse()
            .ok()
    })
}

fn http_get(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    c.write_all(request).expect("request");
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap_or_else(|e| {
        panic!(
            "{}: {e}",
            String::from_utf8_lossy(&request[..request.len().min(40)])
        )
    });
    out
}

/// `promtool check metrics` on `text`: `None` when promtool is not installed.
fn promtool(text: &str) -> Option<(bool, String)> {
    let mut p = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    p.stdin.take()?.write_all(text.as_bytes()).ok()?;
    let o = p.wait_with_output().ok()?;
    let msg = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    Some((o.status.success(), msg))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_rise_with_a_transfer_and_the_text_lints_clean() {
    let (server, client, target) = endpoints("127.0.0.1:0", 1);
    let metrics = server.metrics();
    let before = metrics.render();
    assert_eq!(
        sample(&before, "stoq_backend_info{backend=\"udp\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&before, "stoq_bytes_total{worker=\"0\",direction=\"rx\"}"),
        Some(0.0)
    );
    let http = metrics
        .serve("127.0.0.1:0".parse().unwrap())
        .expect("serve");

    const SIZE: usize = 4 << 20;
    let srv = tokio::spawn(async move {
        let conn = server.accept().await.expect("a client");
        let mut recv = conn.accept_uni().await.expect("stream");
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0;
        loop {
            let n = recv.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            total += n;
        }
        let mut s = conn.open_uni().await.expect("open");
        s.write_all(b"ok").await.expect("write");
        s.finished().await.expect("acknowledged");
        (total, server)
    });
    let conn = client.connect(target, "test.stoq").await.expect("connect");
    let mut s = conn.open_uni().await.expect("open");
    s.write_all(&pattern(SIZE)).await.expect("write");
    s.finish().expect("finish");
    let mut back = conn.accept_uni().await.expect("answer");
    let mut ok = Vec::new();
    back.read_to_end(&mut ok).await.expect("read");
    let (total, server) = srv.await.expect("server");
    assert_eq!(total, SIZE);

    let after = metrics.render();
    let rx = sample(&after, "stoq_bytes_total{worker=\"0\",direction=\"rx\"}").expect("rx bytes");
    assert!(
        rx > SIZE as f64,
        "{rx} bytes received for a {SIZE}-byte upload"
    );
    let completed = sample(
        &after,
        "stoq_handshakes_total{worker=\"0\",outcome=\"completed\"}",
    );
    assert_eq!(completed, Some(1.0), "{after}");
    assert_eq!(sample(&after, "stoq_connections{worker=\"0\"}"), Some(1.0));
    let rtts = sample(&after, "stoq_rtt_seconds_count{worker=\"0\"}").expect("rtt count");
    assert!(rtts > 0.0, "RTT samples: {rtts}");
    let inf = sample(&after, "stoq_rtt_seconds_bucket{worker=\"0\",le=\"+Inf\"}");
    assert_eq!(inf, Some(rtts), "the +Inf bucket holds every sample");

    // Over HTTP: the same families; other paths and methods are refused.
    let got = http_get(
        http.local_addr(),
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(
        got.contains("Content-Type: text/plain; version=0.0.4"),
        "{got}"
    );
    assert!(
        got.contains("# TYPE stoq_handshakes_total counter"),
        "{got}"
    );
    let nf = http_get(http.local_addr(), b"GET /nope HTTP/1.1\r\n\r\n");
    assert!(nf.starts_with("HTTP/1.1 404"), "{nf}");
    let post = http_get(http.local_addr(), b"POST /metrics HTTP/1.1\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.resize(20_000, b'a');
    let big = http_get(http.local_addr(), &huge);
    assert!(
        big.starts_with("HTTP/1.1 431"),
        "an endless head is cut off: {big}"
    );

    match promtool(&after) {
        Some((ok, msg)) => assert!(ok, "promtool check metrics:\n{msg}\n{after}"),
        None => eprintln!("promtool not installed (Debian: prometheus): lint skipped"),
    }
    drop(http);
    conn.close(0, b"done");
    client.shutdown(Duration::from_secs(2)).await;
    server.shutdown(Duration::from_secs(2)).await;
}
