//! `ringbearer dev-cert`: a self-signed certificate and key for local `wss://` and
//! `https://` (SPEC §4 Command line), with rcgen. ECDSA P-256, valid from yesterday for 365
//! days, for the given host names and addresses. Not for production: browsers and clients
//! trust it only when told to (`curl --cacert`, `NODE_EXTRA_CA_CERTS`, or `-k`).

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Days the certificate is valid for.
const VALID_DAYS: i64 = 365;

pub fn run(out: &Path, hosts: &str, force: bool) -> Result<()> {
    let hosts: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(String::from)
        .collect();
    if hosts.is_empty() {
        bail!("--hosts needs at least one host name or address");
    }
    let cert_path = out.join("cert.pem");
    let key_path = out.join("key.pem");
    if !force {
        for p in [&cert_path, &key_path] {
            if p.exists() {
                bail!("{} exists; pass --force to overwrite", p.display());
            }
        }
    }
    let mut params = rcgen::CertificateParams::new(hosts.clone())
        .context("--hosts: each entry must be a DNS name or an IP address")?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "ringbearer development certificate",
    );
    let today = days_since_epoch()?;
    let ymd = |days| {
        let (y, m, d) = ringbearer_core::time::civil_from_days(days);
        rcgen::date_time_ymd(y as i32, m as u8, d as u8)
    };
    params.not_before = ymd(today - 1);
    params.not_after = ymd(today + VALID_DAYS);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().context("generating a P-256 key")?;
    let cert = params
        .self_signed(&key)
        .context("signing the certificate")?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(&cert_path, cert.pem())
        .with_context(|| format!("writing {}", cert_path.display()))?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let (c, k) = (abs(&cert_path), abs(&key_path));
    println!(
        "wrote {} and {} (self-signed, ECDSA P-256, valid {VALID_DAYS} days) for: {}",
        c.display(),
        k.display(),
        hosts.join(", ")
    );
    println!();
    println!("Add to the config file (every listener then speaks TLS):");
    println!();
    println!("  [tls]");
    println!("  cert_file = {:?}", c.display().to_string());
    println!("  key_file = {:?}", k.display().to_string());
    println!();
    println!("Then, with `ringbearer serve --config FILE` on 127.0.0.1:8080:");
    println!();
    println!(
        "  curl --cacert {} https://localhost:8080/ws   # or curl -k",
        c.display()
    );
    println!(
        "  NODE_EXTRA_CA_CERTS={} wscat -c \"wss://localhost:8080/ws?token=$(ringbearer token --sub u-1 --org org-1 --role coordinator --weddings w-1)\"",
        c.display()
    );
    Ok(())
}

/// Writes `bytes` to a new file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

fn days_since_epoch() -> Result<i64> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    Ok((secs / 86_400) as i64)
}
