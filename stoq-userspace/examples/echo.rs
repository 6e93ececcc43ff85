//! Echo over STOQ: a server that echoes every bidirectional stream, and a client that
//! sends a few messages and checks they come back.
//!
//! ```sh
//! cargo run -p stoq --example echo            # both in one process, over loopback
//! ```

use std::sync::Arc;

use rand_core::OsRng;
use stoq::crypto::sig::{SigAlg, SigningKey};
use stoq::engine::EngineConfig;
use stoq::handshake::{ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A fresh FALCON key; the client pins its public half.
    let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let server_cfg = Arc::new(ServerConfig::raw_key(key, public.clone()));
    let client_cfg = Arc::new(ClientConfig::pinned("echo.example", public));

    let server = stoq::Endpoint::server(EngineConfig::new("127.0.0.1:0".parse()?), server_cfg)?;
    let addr = server.local_addr();
    println!("server on {addr}: {}", server.info().selection);
    tokio::spawn(async move {
        while let Some(conn) = server.accept().await {
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        recv.read_to_end(&mut buf).await?;
                        send.write_all(&buf).await?;
                        send.finish()?;
                        Ok::<_, std::io::Error>(())
                    });
                }
            });
        }
    });

    let client = stoq::Endpoint::client(EngineConfig::new("127.0.0.1:0".parse()?), client_cfg)?;
    let conn = client.connect(addr, "echo.example").await?;
    for msg in ["hello", "post-quantum", "world"] {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(msg.as_bytes()).await?;
        send.finish()?;
        let mut back = Vec::new();
        recv.read_to_end(&mut back).await?;
        assert_eq!(back, msg.as_bytes());
        println!("echoed {msg:?}");
    }
    if let Some(s) = conn.stats() {
        println!("RTT {:?}, {} packets sent", s.smoothed_rtt, s.tx_packets);
    }
    conn.close(0, b"bye");
    client.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(())
}
