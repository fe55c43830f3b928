//! `wss://`: rustls (the *ring* provider, as the server uses) over the TCP stream, before
//! the WebSocket upgrade.
//!
//! Which certificates are trusted: the PEM file of [`crate::ClientConfig::ca_file`] when
//! set — e.g. the `cert.pem` that `ringbearer dev-cert` writes, or an internal CA — else the
//! system's PEM bundle (`SSL_CERT_FILE`, else the usual distribution paths). The crate
//! carries no root store of its own (no network needed to build it).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where distributions keep the system's CA bundle, tried in order when `SSL_CERT_FILE` is
/// not set.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine (ca-certificates)
    "/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",             // openSUSE
    "/etc/ssl/cert.pem",                  // Alpine, macOS
];

/// The system bundle to trust when no `ca_file` is given.
fn system_bundle() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SSL_CERT_FILE") {
        return Some(PathBuf::from(p));
    }
    SYSTEM_BUNDLES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// The rustls client config for `wss://`, trusting the certificates in `ca_file` (PEM), or
/// the system bundle without one. Errors name the file and what is wrong with it.
pub(crate) fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let file = match ca_file {
        Some(f) => f.to_owned(),
        None => system_bundle().ok_or_else(|| {
            "wss:// needs certificates to trust: set ca_file (rb: --ca FILE), e.g. the \
             cert.pem `ringbearer dev-cert` wrote, or SSL_CERT_FILE; no system CA bundle \
             was found"
                .to_string()
        })?,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&file)
        .map_err(|e| format!("ca_file {}: {e}", file.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("ca_file {}: {e}", file.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("ca_file {}: {e}", file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "ca_file {}: no PEM certificate in it",
            file.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_ca_file_is_named() {
        let e = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("rb-client-ca-{}", std::process::id()));
        std::fs::write(&dir, "not a certificate\n").unwrap();
        let e = client_config(Some(&dir)).unwrap_err();
        let _ = std::fs::remove_file(&dir);
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
