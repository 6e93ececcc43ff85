//! Chat over DATAGRAMs: a server relays every datagram it receives to every other client;
//! here three clients in one process say hello and read what the others said.
//!
//! DATAGRAMs are unreliable by design (a lost one is not resent), which suits presence and
//! chatter; the clients below resend until they have heard everyone.
//!
//! ```sh
//! cargo run -p stoq --example chat
//! ```

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand_core::OsRng;
use stoq::crypto::sig::{SigAlg, SigningKey};
use stoq::engine::EngineConfig;
use stoq::handshake::{ClientConfig, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (key, public) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let server_cfg = Arc::new(ServerConfig::raw_key(key, public.clone()));
    let client_cfg = Arc::new(ClientConfig::pinned("chat.example", public));

    // The relay: remember every connection, forward each datagram to the others.
    let server = stoq::Endpoint::server(EngineConfig::new("127.0.0.1:0".parse()?), server_cfg)?;
    let addr = server.local_addr();
    let room: Arc<Mutex<Vec<stoq::Connection>>> = Arc::default();
    tokio::spawn(async move {
        while let Some(conn) = server.accept().await {
            room.lock().expect("room").push(conn.clone());
            let room = room.clone();
            tokio::spawn(async move {
                while let Ok(d) = conn.read_datagram().await {
                    let others: Vec<_> = room.lock().expect("room").clone();
                    for o in others {
                        if o.remote_address() != conn.remote_address() {
                            let _ = o.send_datagram(&d);
                        }
                    }
                }
            });
        }
    });

    let names = ["ada", "grace", "alan"];
    let mut tasks = Vec::new();
    for name in names {
        let cfg = client_cfg.clone();
        tasks.push(tokio::spawn(async move {
            let ep = stoq::Endpoint::client(EngineConfig::new("127.0.0.1:0".parse()?), cfg)?;
            let conn = ep.connect(addr, "chat.example").await?;
            let mut heard = BTreeSet::new();
            // Say hello until everyone else has been heard (a DATAGRAM may be lost).
            while heard.len() < names.len() - 1 {
                conn.send_datagram(format!("{name}: hello").as_bytes())?;
                if let Ok(Ok(d)) =
                    tokio::time::timeout(Duration::from_millis(200), conn.read_datagram()).await
                {
                    let line = String::from_utf8_lossy(&d).into_owned();
                    if let Some((who, _)) = line.split_once(':') {
                        if heard.insert(who.to_string()) {
                            println!("{name} heard {line:?}");
                        }
                    }
                }
            }
            // Linger so the others hear us too.
            for _ in 0..10 {
                conn.send_datagram(format!("{name}: hello").as_bytes())?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            conn.close(0, b"bye");
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(heard)
        }));
    }
    for t in tasks {
        let heard = t.await?.map_err(|e| e.to_string())?;
        assert_eq!(heard.len(), names.len() - 1);
    }
    println!("everyone heard everyone");
    Ok(())
}
