//! The stream loops STOQ's and quinn's sides share: both expose tokio's `AsyncRead` and
//! `AsyncWrite`, so the same code measures both.

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::spec::{Outcome, quantiles};

/// Bulk chunk size: what one `write_all` hands the stack.
const CHUNK: usize = 256 << 10;

/// Echoes 64-byte requests until the stream ends or fails (the request/response server).
pub(crate) async fn echo_64(mut r: impl AsyncRead + Unpin, mut w: impl AsyncWrite + Unpin) {
    let mut b = [0u8; 64];
    while r.read_exact(&mut b).await.is_ok() {
        if w.write_all(&b).await.is_err() {
            break;
        }
    }
}

/// Reads a bulk stream to its end and returns how many bytes it carried.
pub(crate) async fn count(mut r: impl AsyncRead + Unpin) -> u64 {
    let mut buf = vec![0u8; CHUNK];
    let mut n = 0u64;
    while let Ok(k) = r.read(&mut buf).await {
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    n
}

/// Writes chunks until `secs` after `t`; returns the bytes written.
pub(crate) async fn send_for(
    s: &mut (impl AsyncWrite + Unpin),
    t: Instant,
    secs: f64,
) -> Result<u64, String> {
    let chunk = vec![0x5au8; CHUNK];
    let mut sent = 0u64;
    while t.elapsed().as_secs_f64() < secs {
        s.write_all(&chunk).await.map_err(|e| e.to_string())?;
        sent += chunk.len() as u64;
    }
    Ok(sent)
}

/// Reads the server's 8-byte count and checks it against what was sent.
pub(crate) async fn check_count(
    mut back: impl AsyncRead + Unpin,
    sent: u64,
) -> Result<u64, String> {
    let mut b = [0u8; 8];
    back.read_exact(&mut b).await.map_err(|e| e.to_string())?;
    let got = u64::from_be_bytes(b);
    if got != sent {
        return Err(format!("the server counted {got} of {sent} bytes"));
    }
    Ok(sent)
}

/// 64-byte request/response, one outstanding, for `secs`: fills the count, time and
/// latency quantiles of `out`.
pub(crate) async fn ping_pong(
    mut w: impl AsyncWrite + Unpin,
    mut r: impl AsyncRead + Unpin,
    secs: f64,
    out: &mut Outcome,
) -> Result<(), String> {
    let mut lat = Vec::with_capacity(1 << 20);
    let req = [7u8; 64];
    let mut resp = [0u8; 64];
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        let s = Instant::now();
        w.write_all(&req).await.map_err(|e| e.to_string())?;
        r.read_exact(&mut resp).await.map_err(|e| e.to_string())?;
        lat.push(s.elapsed().as_nanos() as u64);
    }
    out.secs = t.elapsed().as_secs_f64();
    out.count = lat.len() as u64;
    out.quantiles_us = quantiles(&mut lat);
    Ok(())
}
