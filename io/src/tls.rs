//! Loading the `[tls]` certificate and key into a rustls acceptor (ring provider; TLS 1.2
//! and 1.3; ALPN `http/1.1`). Errors name the config field and the file, so an operator
//! knows which line to fix; the server refuses to start on any of them.
//!
//! It does not reload certificates while running: renewing one means a restart.

use crate::config::TlsConfig;
use futures_rustls::TlsAcceptor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// The acceptor for `cfg`, `Ok(None)` when TLS is not configured.
pub fn acceptor(cfg: &TlsConfig) -> Result<Option<TlsAcceptor>, String> {
    let (cert, key) = match (&cfg.cert_file, &cfg.key_file) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => return Err("tls.cert_file and tls.key_file must be set together".into()),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("tls.cert_file {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls.cert_file {}: no PEM CERTIFICATE in it",
            cert.display()
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("tls.key_file {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            format!(
                "tls.key_file {} does not fit tls.cert_file {}: {e}",
                key.display(),
                cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("rb-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn loads_a_pair_and_names_the_field_of_a_bad_one() {
        let d = dir();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (c, k, k2, junk) = (
            d.join("c.pem"),
            d.join("k.pem"),
            d.join("k2.pem"),
            d.join("junk.pem"),
        );
        std::fs::write(&c, ck.cert.pem()).unwrap();
        std::fs::write(&k, ck.signing_key.serialize_pem()).unwrap();
        std::fs::write(&k2, other.signing_key.serialize_pem()).unwrap();
        std::fs::write(&junk, "not pem").unwrap();
        let cfg = |c: &PathBuf, k: &PathBuf| TlsConfig {
            cert_file: Some(c.clone()),
            key_file: Some(k.clone()),
        };
        assert!(acceptor(&TlsConfig::default()).unwrap().is_none());
        assert!(acceptor(&cfg(&c, &k)).unwrap().is_some());
        let missing = d.join("missing.pem");
        for (cfg, field) in [
            (cfg(&missing, &k), "tls.cert_file"),
            (cfg(&junk, &k), "tls.cert_file"),
            (cfg(&c, &missing), "tls.key_file"),
            (cfg(&c, &junk), "tls.key_file"),
            (cfg(&c, &k2), "tls.key_file"),
            (cfg(&k, &k), "tls.cert_file"),
        ] {
            let e = acceptor(&cfg).err().expect("refused");
            assert!(e.starts_with(field), "{e}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
