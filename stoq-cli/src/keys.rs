//! `stoq keygen` and `stoq cert`, and loading what they write.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rand_core::OsRng;
use stoq::conn::ClusterKeys;
use stoq::crypto::sig::{SigAlg, SigningKey, VerifyingKey};
use stoq::handshake::cert::{
    self, CertParams, Certificate, PEM_CERT, PEM_PRIVATE, PEM_PUBLIC, pem_encode,
};
use stoq::handshake::chain::MAX_CHAIN_LEN;

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), String> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    o.open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Loads a private key (PEM).
pub(crate) fn private_key(path: &Path) -> Result<SigningKey, String> {
    cert::load_private_key(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

/// Loads a public key (PEM).
pub(crate) fn public_key(path: &Path) -> Result<VerifyingKey, String> {
    cert::load_public_key(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

/// Loads a certificate chain (PEM blocks, leaf first).
pub(crate) fn certificate_chain(path: &Path) -> Result<Vec<Certificate>, String> {
    cert::load_certificate_chain(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

/// Loads a trust anchor: a CA's public key, or a CA certificate (its key is the anchor;
/// the certificate's own issuer and validity are not consulted, as with a root in a TLS
/// trust store).
pub(crate) fn trust_anchor(path: &Path) -> Result<VerifyingKey, String> {
    let text = read(path)?;
    if text.contains(&format!("-----BEGIN {PEM_CERT}-----")) {
        let c = cert::load_certificate(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if !c.is_ca {
            return Err(format!(
                "{}: not a CA certificate; trust a CA's public key or certificate",
                path.display()
            ));
        }
        return Ok(c.key);
    }
    cert::load_public_key(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

pub(crate) fn keygen(out: &Path, alg: &str) -> Result<(), String> {
    let alg = match alg.to_ascii_lowercase().as_str() {
        "falcon512" | "falcon-512" => SigAlg::Falcon512,
        "falcon1024" | "falcon-1024" => SigAlg::Falcon1024,
        "falcon512-ed25519" | "falcon-512+ed25519" => SigAlg::Falcon512Ed25519,
        other => {
            return Err(format!(
                "--alg {other}: use falcon512, falcon1024 or falcon512-ed25519"
            ));
        }
    };
    let (key, public) = SigningKey::generate(alg, &mut OsRng);
    let k = with_ext(out, "key");
    let p = with_ext(out, "pub");
    write(&k, &pem_encode(PEM_PRIVATE, key.as_bytes()), true)?;
    write(&p, &pem_encode(PEM_PUBLIC, public.as_bytes()), false)?;
    say!(
        "{} key pair: {} (private, mode 0600) and {}",
        alg.name(),
        k.display(),
        p.display()
    );
    Ok(())
}

/// What `stoq cert` was given.
#[derive(Debug)]
pub(crate) struct CertArgs {
    pub(crate) issuer_key: PathBuf,
    pub(crate) issuer_pub: PathBuf,
    pub(crate) subject: PathBuf,
    pub(crate) names: Vec<String>,
    pub(crate) days: u64,
    pub(crate) ca: bool,
    pub(crate) issuer_cert: Option<PathBuf>,
    pub(crate) out: PathBuf,
}

pub(crate) fn cert(a: &CertArgs) -> Result<(), String> {
    if a.names.len() > 255 {
        return Err(format!(
            "{} names given; a certificate holds at most 255",
            a.names.len()
        ));
    }
    if let Some(n) = a.names.iter().find(|n| n.is_empty() || n.len() > 255) {
        return Err(format!("name {n:?}: names are 1 to 255 bytes"));
    }
    let issuer = private_key(&a.issuer_key)?;
    let issuer_pub = public_key(&a.issuer_pub)?;
    let subject = public_key(&a.subject)?;
    // An intermediate issuer: its chain follows the new certificate in the output.
    let issuer_chain = match &a.issuer_cert {
        Some(p) => {
            let chain = certificate_chain(p)?;
            if chain[0].key != issuer_pub {
                return Err(format!(
                    "{}: the certificate is not --issuer-pub's: give the issuer's own certificate",
                    p.display()
                ));
            }
            if !chain[0].is_ca {
                return Err(format!(
                    "{}: the issuer's certificate is not a CA certificate: issue it with --ca",
                    p.display()
                ));
            }
            chain
        }
        None => Vec::new(),
    };
    if issuer_chain.len() + 1 > MAX_CHAIN_LEN {
        return Err(format!(
            "the chain would hold {} certificates; peers accept at most {MAX_CHAIN_LEN}",
            issuer_chain.len() + 1
        ));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let params = CertParams {
        serial: u64::from_be_bytes(rand_bytes()),
        not_before: now.saturating_sub(300),
        not_after: now.saturating_add(a.days.saturating_mul(86_400)),
        names: a.names.clone(),
        is_ca: a.ca,
    };
    let c = Certificate::issue(&params, &subject, &issuer, &issuer_pub, &mut OsRng);
    c.check_signature(&issuer_pub)
        .map_err(|e| format!("the issuer's private and public keys do not match: {e}"))?;
    let mut pem = pem_encode(PEM_CERT, c.as_bytes());
    for above in &issuer_chain {
        pem.push_str(&pem_encode(PEM_CERT, above.as_bytes()));
    }
    write(&a.out, &pem, false)?;
    say!(
        "{} for {} valid {} days: {}{}",
        if a.ca {
            "CA certificate"
        } else {
            "certificate"
        },
        a.names.join(", "),
        a.days,
        a.out.display(),
        if issuer_chain.is_empty() {
            String::new()
        } else {
            format!(
                " (with the {} issuer certificates above it)",
                issuer_chain.len()
            )
        }
    );
    Ok(())
}

fn rand_bytes() -> [u8; 8] {
    use rand_core::RngCore;
    let mut b = [0u8; 8];
    OsRng.fill_bytes(&mut b);
    b
}

/// Loads a cluster key file.
pub(crate) fn cluster_keys_file(path: &Path) -> Result<ClusterKeys, String> {
    ClusterKeys::parse(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

/// `stoq cluster-keys`: a new key file at `out`, or `rotate`'s next generation.
pub(crate) fn cluster_keys(
    out: Option<&Path>,
    rotate: Option<&Path>,
    lb: bool,
) -> Result<(), String> {
    let mut secret = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut secret);
    let (path, keys) = match (out, rotate) {
        (Some(out), None) => (out, ClusterKeys::new(0, secret).map_err(|e| e.to_string())?),
        (None, Some(path)) => {
            let old = cluster_keys_file(path)?;
            let next = (old.current() + 1) % 7;
            if old.generations().any(|g| g == next) {
                return Err(format!(
                    "{}: generation {next} (the next after {}) is still in the file; remove its \
                     `key {next}` line once no connection uses it (its CIDs are gone and its \
                     tokens expired), then rotate again",
                    path.display(),
                    old.current()
                ));
            }
            let keys = old
                .with_generation(next, secret)
                .and_then(|k| k.with_current(next))
                .map_err(|e| e.to_string())?;
            (path, keys)
        }
        _ => return Err("give --out (a new key file) or --rotate (an existing one)".into()),
    };
    let keys = if lb {
        let mut k = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut OsRng, &mut k);
        let g = keys.current();
        keys.with_lb_key(g, k).map_err(|e| e.to_string())?
    } else {
        keys
    };
    secret.fill(0);
    write(path, &keys.to_file(), true)?;
    say!(
        "wrote {} (current generation {}, generations {:?}{}): give it to every server of \
         the cluster with `stoq server --cluster-keys`",
        path.display(),
        keys.current(),
        keys.generations().collect::<Vec<_>>(),
        if lb {
            ", CIDs encrypted for QUIC-LB"
        } else {
            ""
        }
    );
    Ok(())
}
