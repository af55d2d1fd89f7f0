//! One TLS trust store for the whole program: the RTMPS connector ([`crate::rtmp`]) and the
//! Polyv HTTP client ([`crate::platform`]) check certificates against the same roots, with the
//! same `ring` provider and protocol versions.
//!
//! The roots are the system's CA store as OpenSSL-based tools read it (rustls-native-certs):
//! the PEM file `SSL_CERT_FILE` names and the directories in `SSL_CERT_DIR` when either is set,
//! Debian's `/etc/ssl/certs` otherwise. So `SSL_CERT_FILE=ca.pem` makes both RTMPS and the
//! Polyv API trust a test CA, as it does for curl.
//!
//! When the system store is empty or unreadable (no `ca-certificates` installed), polypush
//! falls back to the Mozilla roots compiled into it (webpki-roots, which reqwest's `rustls-tls`
//! already links) and says so once at WARN. A store that `SSL_CERT_FILE`/`SSL_CERT_DIR` names
//! and that holds no usable certificate is an error instead: the operator asked for exactly
//! those roots, and silently trusting others would hide the mistake.
//!
//! The roots are read each time a connection is set up: every RTMPS attempt, and every Polyv
//! client (one per broadcast). A CA the operator installs after a failed handshake (the
//! advice the error gives) therefore counts from the next attempt, without a restart; parsing
//! the store costs a few milliseconds, and attempts are seconds apart.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// No CA certificates to check a server's certificate with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TrustStoreError(String);

/// Where the certificates came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    /// `SSL_CERT_FILE` and/or `SSL_CERT_DIR`, as `NAME=value` pairs.
    Env(String),
    /// The platform's store.
    System,
}

/// The TLS client settings every TLS connection of polypush starts from, read from the store
/// now (file I/O: call it off the async threads): no ALPN (RTMPS speaks RTMP right after the
/// handshake). HTTP clients use [`http_client_config`].
pub fn client_config() -> Result<Arc<rustls::ClientConfig>, TrustStoreError> {
    let roots = load_roots()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TrustStoreError(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// [`client_config`] with ALPN for HTTP/2 and HTTP/1.1: what reqwest's own rustls setup
/// offers, and what reqwest needs to see to speak HTTP/2 over a preconfigured TLS config
/// (it adds no ALPN to one).
pub fn http_client_config() -> Result<rustls::ClientConfig, TrustStoreError> {
    let mut config = (*client_config()?).clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The roots from the environment or the system, with the fallback described above.
fn load_roots() -> Result<RootCertStore, TrustStoreError> {
    let named: Vec<String> = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .iter()
        .filter_map(|name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(|v| format!("{name}={}", v.to_string_lossy()))
        })
        .collect();
    let origin = if named.is_empty() {
        Origin::System
    } else {
        Origin::Env(named.join(", "))
    };
    let found = rustls_native_certs::load_native_certs();
    let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
    roots_from(found.certs, &errors, &origin)
}

/// The root store from what was found; pure, so the fallback rules are tested without
/// touching the process environment.
fn roots_from(
    certs: Vec<CertificateDer<'static>>,
    errors: &[String],
    origin: &Origin,
) -> Result<RootCertStore, TrustStoreError> {
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added > 0 {
        if ignored > 0 || !errors.is_empty() {
            tracing::debug!(
                added,
                ignored,
                errors = errors.join("; "),
                "some CA certificates could not be used"
            );
        }
        return Ok(roots);
    }
    let why = errors
        .first()
        .cloned()
        .unwrap_or_else(|| "no certificates found".to_string());
    match origin {
        Origin::Env(named) => Err(TrustStoreError(format!(
            "no usable CA certificate in {named} ({why}): point SSL_CERT_FILE at a PEM file \
             holding the CA certificates, or unset it (and SSL_CERT_DIR) to use the system store"
        ))),
        Origin::System => {
            // Once per process: the store is read for every connection.
            static WARNED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    reason = %why,
                    "the system's CA store is empty or unreadable; checking TLS certificates against \
                     the Mozilla roots built into polypush instead: install Debian's ca-certificates \
                     (or point SSL_CERT_FILE at a PEM file) to use this box's own store"
                );
            }
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            Ok(roots)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_system_store_falls_back_to_the_built_in_roots() {
        let roots = roots_from(Vec::new(), &[], &Origin::System).unwrap();
        assert_eq!(roots.len(), webpki_roots::TLS_SERVER_ROOTS.len());
        assert!(!roots.is_empty());
    }

    #[test]
    fn an_empty_store_the_environment_names_is_an_error() {
        let origin = Origin::Env("SSL_CERT_FILE=/nonexistent/ca.pem".into());
        let errors = vec!["No such file or directory".to_string()];
        let e = roots_from(vec![CertificateDer::from(vec![1, 2, 3])], &errors, &origin)
            .unwrap_err()
            .to_string();
        assert!(e.contains("SSL_CERT_FILE=/nonexistent/ca.pem"), "{e}");
        assert!(e.contains("No such file or directory"), "{e}");
        assert!(e.contains("point SSL_CERT_FILE at a PEM file"), "{e}");
    }

    #[test]
    fn http_config_offers_h2_and_http1_and_rtmps_offers_nothing() {
        // This process's real store (the test environment has one, or the fallback).
        let http = http_client_config().unwrap();
        assert_eq!(
            http.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(client_config().unwrap().alpn_protocols.is_empty());
    }
}
