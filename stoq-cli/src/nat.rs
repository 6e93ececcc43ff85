//! `stoq nat`: this host's reflexive address and its NAT's mapping, asked of STUN servers
//! from an endpoint's own socket (as a STOQ server's connections would see it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use stoq::api::Mapping;

use crate::EngineArgs;
use crate::transfer;

/// What `stoq nat` was given.
pub(crate) struct NatArgs<'a> {
    pub(crate) stun: &'a [SocketAddr],
    pub(crate) bind: Option<SocketAddr>,
    pub(crate) timeout: Duration,
    pub(crate) engine: &'a EngineArgs,
}

/// Asks every server; prints each answer, the mapping and what it means. Fails when no
/// server answered.
pub(crate) fn run(a: &NatArgs<'_>) -> Result<(), String> {
    if a.stun.is_empty() {
        return Err("name at least one STUN server: --stun ADDR:PORT".into());
    }
    // The servers' family, unless told: a wildcard address of it, any port.
    let bind = a.bind.unwrap_or_else(|| {
        if a.stun.iter().all(SocketAddr::is_ipv4) {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        }
    });
    let mut cfg = a.engine.apply(bind)?;
    cfg.workers = 1;
    // No connection is made: the client configuration only lets the endpoint open.
    let (_, public) = stoq::crypto::sig::SigningKey::generate(
        stoq::crypto::sig::SigAlg::Falcon512,
        &mut rand_core::OsRng,
    );
    let client = transfer::client_config("nat.stoq", stoq::handshake::Trust::PinnedKey(public));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let _in = rt.enter();
    let ep = stoq::Endpoint::client(cfg, Arc::new(client))
        .map_err(|e| format!("no endpoint can open on {bind}: {e}"))?;
    say!(
        "local {} on {} ({})",
        ep.local_addr(),
        ep.info().selection.chosen,
        ep.info().detail
    );
    let report = rt.block_on(ep.nat_report(a.stun, a.timeout));
    for (server, r) in &report.answers {
        match r {
            Ok(addr) => say!("stun {server}: {addr}"),
            Err(e) => say!("stun {server}: {e}"),
        }
    }
    let meaning = match (report.mapping, report.reflexive()) {
        (Mapping::NotTranslated, _) => "no NAT: peers reach the bound address".to_string(),
        (Mapping::EndpointIndependent, Some(r)) => format!(
            "one public address for every destination: peers can be told {r} (while the NAT \
             keeps the mapping)"
        ),
        (Mapping::Dependent, _) => "a public address per destination (a symmetric NAT): \
             direct connections from peers need a relay"
            .to_string(),
        _ => "ask two or more STUN servers on different addresses to tell the mapping".into(),
    };
    say!("mapping: {}: {meaning}", report.mapping.name());
    if report.answers.iter().all(|(_, r)| r.is_err()) {
        return Err("no STUN server answered".into());
    }
    Ok(())
}
