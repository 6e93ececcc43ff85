//! Client authentication end to end: a CA issues a certificate to a client; the server
//! requires clients to prove a key certified by that CA, serves the one that does, and
//! refuses one that comes without a credential. Both sides learn the key the other
//! proved.
//!
//! ```sh
//! cargo run -p stoq --example client_auth      # both in one process, over loopback
//! ```
//!
//! The CLI does the same with files: `stoq server --client-ca ca.pub` (or `--client-pin
//! client.pub`) and `stoq client --key client.key --cert client.pem` (or `--public`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand_core::OsRng;
use stoq::crypto::sig::{SigAlg, SigningKey};
use stoq::engine::EngineConfig;
use stoq::handshake::cert::{CertParams, Certificate};
use stoq::handshake::{ClientConfig, Credential, ServerConfig, Trust};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The client CA, and a certificate it issues for the client's key.
    let (ca_key, ca_pub) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let (client_key, client_pub) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let params = CertParams {
        serial: 1,
        not_before: now - 60,
        not_after: now + 86_400,
        names: vec!["alice".into()],
        is_ca: false,
    };
    let cert = Certificate::issue(&params, &client_pub, &ca_key, &ca_pub, &mut OsRng);

    // The server: its own raw key (clients pin it), and client certificates from the CA.
    let (server_key, server_pub) = SigningKey::generate(SigAlg::Falcon512, &mut OsRng);
    let mut server_cfg = ServerConfig::raw_key(server_key, server_pub.clone());
    server_cfg.client_auth = Some(Trust::Anchors(vec![ca_pub]));
    let server = stoq::Endpoint::server(
        EngineConfig::new("127.0.0.1:0".parse()?),
        Arc::new(server_cfg),
    )?;
    let addr = server.local_addr();
    tokio::spawn(async move {
        while let Some(conn) = server.accept().await {
            // The key the client proved, for an authorisation decision.
            let who = conn.peer_key().map(|k| format!("{k:?}"));
            println!(
                "server: client authenticated with {}",
                who.unwrap_or_default()
            );
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let mut buf = Vec::new();
                    recv.read_to_end(&mut buf).await?;
                    send.write_all(b"hello, ").await?;
                    send.write_all(&buf).await?;
                    send.finish()?;
                }
                Ok::<_, std::io::Error>(())
            });
        }
    });

    // A client with its certificate is served.
    let mut with_cert = ClientConfig::pinned("server.example", server_pub.clone());
    with_cert.credential = Some(Credential::chain(client_key, vec![cert], &mut OsRng)?);
    let client = stoq::Endpoint::client(
        EngineConfig::new("127.0.0.1:0".parse()?),
        Arc::new(with_cert),
    )?;
    let conn = client.connect(addr, "server.example").await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(b"alice").await?;
    send.finish()?;
    let mut answer = Vec::new();
    recv.read_to_end(&mut answer).await?;
    println!("client: {}", String::from_utf8_lossy(&answer));
    assert_eq!(answer, b"hello, alice");
    conn.close(0, b"done");
    client.shutdown(Duration::from_secs(1)).await;

    // A client without a credential is refused, with the reason.
    let anonymous = ClientConfig::pinned("server.example", server_pub);
    let client = stoq::Endpoint::client(
        EngineConfig::new("127.0.0.1:0".parse()?),
        Arc::new(anonymous),
    )?;
    match client.connect(addr, "server.example").await {
        Ok(_) => return Err("the server served a client that did not authenticate".into()),
        Err(e) => println!("client without a certificate: refused ({e})"),
    }
    Ok(())
}
