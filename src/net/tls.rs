//! TLS towards clients: the certificate store that reloads itself when the
//! files change, and the rustls server configuration (TLS 1.2 and 1.3, ring).
//!
//! Kubernetes replaces Secret files by swapping a symlink, so the files are
//! re-read by path on a timer and compared by content; a new pair that fails
//! to load keeps the old certificate in service.

use crate::files::{read_secret, Reload};
use arc_swap::ArcSwap;
use rustls::crypto::ring;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

pub use crate::files::FileError as TlsError;

/// The certificate in service, swapped atomically on reload.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    cert_path: PathBuf,
    key_path: PathBuf,
    loaded: std::sync::Mutex<(Vec<u8>, Zeroizing<Vec<u8>>)>,
}

impl CertStore {
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<CertStore>, TlsError> {
        let (cert_pem, key_pem) = (read(cert_path)?, read_secret(key_path)?);
        let key = certified_key(&cert_pem, &key_pem, cert_path, key_path)?;
        Ok(Arc::new(CertStore {
            current: ArcSwap::from_pointee(key),
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            loaded: std::sync::Mutex::new((cert_pem, key_pem)),
        }))
    }

    pub fn server_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        Arc::new(config)
    }
}

impl Reload for CertStore {
    /// Swaps in the new pair when the files changed and it loads.
    fn reload(&self) -> Option<Result<String, String>> {
        let files = read(&self.cert_path).and_then(|c| Ok((c, read_secret(&self.key_path)?)));
        let (cert_pem, key_pem) = match files {
            Ok(f) => f,
            Err(e) => return Some(Err(e.to_string())),
        };
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.0 == cert_pem && loaded.1 == key_pem {
            return None;
        }
        let result = certified_key(&cert_pem, &key_pem, &self.cert_path, &self.key_path)
            .map(|key| self.current.store(Arc::new(key)))
            .map(|()| self.cert_path.display().to_string())
            .map_err(|e| e.to_string());
        // Remember a broken pair too, so it is reported once, not every tick.
        *loaded = (cert_pem, key_pem);
        Some(result)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let invalid = |path: &Path, message: String| TlsError::Invalid {
        path: path.display().to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(cert_path, format!("bad PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(invalid(cert_path, "no certificate found".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| invalid(key_path, format!("bad PEM private key: {e}")))?;
    let signing = ring::sign::any_supported_type(&key)
        .map_err(|e| invalid(key_path, format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| invalid(key_path, format!("key does not match the certificate: {e}")))?;
    Ok(certified)
}

/// The rustls client configuration for the upstream: verification against
/// `ca_file` or the system's roots, or none at all when asked loudly.
pub fn client_config(
    ca_file: Option<&Path>,
    skip_verify: bool,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3");
    let config = if skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let pem = read(path)?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| TlsError::Invalid {
                        path: path.display().to_string(),
                        message: format!("bad PEM certificate: {e}"),
                    })?;
                    roots.add(cert).map_err(|e| TlsError::Invalid {
                        path: path.display().to_string(),
                        message: format!("unusable CA certificate: {e}"),
                    })?;
                }
                if roots.is_empty() {
                    return Err(TlsError::Invalid {
                        path: path.display().to_string(),
                        message: "no CA certificate found".into(),
                    });
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// `upstream.dangerous_skip_verify`: checks signatures, trusts any
/// certificate.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(&self, msg: &[u8], cert: &CertificateDer<'_>, dss: &Dss) -> Verdict {
        rustls::crypto::verify_tls12_signature(msg, cert, dss, self.algorithms())
    }

    fn verify_tls13_signature(&self, msg: &[u8], cert: &CertificateDer<'_>, dss: &Dss) -> Verdict {
        rustls::crypto::verify_tls13_signature(msg, cert, dss, self.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms().supported_schemes()
    }
}

impl AcceptAnyCertificate {
    fn algorithms(&self) -> &rustls::crypto::WebPkiSupportedAlgorithms {
        &self.0.signature_verification_algorithms
    }
}

type Dss = rustls::DigitallySignedStruct;
type Verdict = Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error>;
