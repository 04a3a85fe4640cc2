//! TLS termination: the certificate index a snapshot carries (server name ->
//! certificate: exact names before one-label wildcards, then the default) and
//! the handshake of a downstream connection with rustls (TLS 1.2 and 1.3).
//!
//! The handshake first reads the ClientHello, then picks the certificate from
//! the snapshot current at that moment, so a rotated certificate serves the
//! next handshake with no restart, while established connections keep the
//! session they negotiated.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

/// ALPN protocols offered, in preference order.
pub const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// A parsed certificate chain and its private key, ready to serve.
#[derive(Clone)]
pub struct Certificate {
    /// Where it came from (`namespace/name` of the Secret, or a file path).
    pub source: String,
    config: Arc<ServerConfig>,
}

impl Certificate {
    /// The same certificate and key under another `source` name (the
    /// parsed key and TLS configuration are shared, not parsed again).
    pub fn renamed(&self, source: &str) -> Self {
        Self {
            source: source.to_owned(),
            config: Arc::clone(&self.config),
        }
    }

    /// Whether `other` serves from the same parse of the certificate and
    /// key as this one (not merely equal PEM).
    pub fn same_parse(&self, other: &Certificate) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Serialize for Certificate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// Serves one fixed certificate (the index already chose it by name).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

impl Certificate {
    /// Parses a PEM chain (end-entity first) and a PEM private key (PKCS#8,
    /// PKCS#1 or SEC1), checking that the key belongs to the certificate.
    pub fn from_pem(source: &str, chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls.crt is not PEM certificates: {e}"))?;
        if chain.is_empty() {
            return Err("tls.crt holds no certificate".into());
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| format!("tls.key is not a PEM private key: {e}"))?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| format!("certificate and key do not form a usable pair: {e}"))?;
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(Arc::new(certified))));
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            source: source.to_owned(),
            config: Arc::new(config),
        })
    }
}

/// Certificates by server name: exact names (`a.example.com`), one-label
/// wildcards (`*.example.com`), and a default for other names and clients
/// that send no SNI.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CertIndex {
    /// By lower-case name; wildcard entries keep their `*.` prefix.
    pub names: BTreeMap<String, Certificate>,
    /// Served when no name matches.
    pub default: Option<Certificate>,
}

impl CertIndex {
    /// Whether no certificate is known.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.default.is_none()
    }

    /// The certificate for server name `sni`: exact, then wildcard, then
    /// the default.
    pub fn lookup(&self, sni: Option<&str>) -> Option<&Certificate> {
        if let Some(name) = sni {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(c) = self.names.get(&name) {
                return Some(c);
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(c) = self.names.get(&format!("*.{parent}"))
            {
                return Some(c);
            }
        }
        self.default.as_ref()
    }
}

impl CertIndex {
    /// Like [`CertIndex::lookup`], but a `*.` name covers one or more labels
    /// (Gateway API Listener hostnames): the exact name, then every wildcard
    /// suffix from the longest, then the default.
    pub fn lookup_suffix(&self, sni: Option<&str>) -> Option<&Certificate> {
        if let Some(name) = sni {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(c) = self.names.get(&name) {
                return Some(c);
            }
            let mut rest = name.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if let Some(c) = self.names.get(&format!("*.{parent}")) {
                    return Some(c);
                }
                rest = parent;
            }
        }
        self.default.as_ref()
    }
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// No certificate for the requested name and no default.
    #[error("no certificate for server name {0:?}")]
    NoCertificate(Option<String>),
    /// The handshake did not finish in time.
    #[error("TLS handshake timed out")]
    Timeout,
    /// The peer or the protocol failed.
    #[error("TLS handshake failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the server side of a handshake on `io`, choosing the certificate
/// from `certs` by the ClientHello's server name, within `timeout`.
/// Returns the stream and the negotiated ALPN protocol.
pub async fn accept<IO>(
    io: IO,
    certs: impl FnOnce(Option<&str>) -> Option<Arc<ServerConfig>>,
    timeout: Duration,
) -> Result<TlsStream<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let run = async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
        let sni = start.client_hello().server_name().map(str::to_owned);
        let Some(config) = certs(sni.as_deref()) else {
            return Err(HandshakeError::NoCertificate(sni));
        };
        Ok(start.into_stream(config).await?)
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| HandshakeError::Timeout)?
}

impl Certificate {
    /// The server configuration serving this certificate.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }
}
