//! HTTPS: the rustls server configuration from the PEM certificate chain and
//! private key the configuration names. The crypto provider is ring, the one
//! the rest of the workspace uses, named explicitly so that a process whose
//! other crates enable another rustls provider still starts.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::Error;

/// The acceptor for `certificate` (the server's chain, leaf first) and `key`.
pub(crate) fn acceptor(certificate: &Path, key: &Path) -> Result<TlsAcceptor, Error> {
    let fail = |reason: String| Error::Tls {
        certificate: certificate.to_path_buf(),
        key: key.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(certificate)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| fail(format!("cannot read the certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(fail("the certificate file holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| fail(format!("cannot read the private key: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| fail(e.to_string()))?;
    // The connection builder speaks both; ALPN lets the client pick.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
