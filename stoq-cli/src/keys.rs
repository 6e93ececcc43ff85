//! `stoq keygen` and `stoq cert`, and loading what they write.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rand_core::OsRng;
use stoq::crypto::sig::{SigAlg, SigningKey, VerifyingKey};
use stoq::handshake::cert::{
    self, CertParams, Certificate, PEM_CERT, PEM_PRIVATE, PEM_PUBLIC, pem_encode,
};

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

/// Loads a certificate (PEM).
pub(crate) fn certificate(path: &Path) -> Result<Certificate, String> {
    cert::load_certificate(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))
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
        other => return Err(format!("--alg {other}: use falcon512 or falcon1024")),
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
    if !a.ca {
        c.verify(std::slice::from_ref(&issuer_pub), None, now)
            .map_err(|e| format!("the issuer's private and public keys do not match: {e}"))?;
    }
    write(&a.out, &pem_encode(PEM_CERT, c.as_bytes()), false)?;
    say!(
        "certificate for {} valid {} days: {}",
        a.names.join(", "),
        a.days,
        a.out.display()
    );
    Ok(())
}

fn rand_bytes() -> [u8; 8] {
    use rand_core::RngCore;
    let mut b = [0u8; 8];
    OsRng.fill_bytes(&mut b);
    b
}
