//! The client side: one trust configuration per process, shared by every outgoing
//! connection, and a stream that is plain TCP or TLS over TCP.

use super::{TlsConfigError, provider};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Why a TLS handshake failed, in terms a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsFailure {
    /// The chain does not lead to a trusted root.
    #[error(
        "certificate signed by an unknown authority (trust its CA with --ca-file or \
         AGENTWIRE_CA_FILE, or add it to the system store)"
    )]
    UnknownIssuer,
    /// The certificate's validity ended.
    #[error("certificate has expired")]
    Expired,
    /// The certificate's validity has not started.
    #[error("certificate is not valid yet (check the clocks)")]
    NotYetValid,
    /// The certificate does not name the host dialled.
    #[error("certificate is not valid for {expected} (it names {presented})")]
    NameMismatch {
        /// The name checked.
        expected: String,
        /// The names in the certificate.
        presented: String,
    },
    /// The server answered, but not with TLS: plain HTTP on the port, or a proxy that
    /// does not terminate TLS there.
    #[error("the server did not answer with TLS (plain HTTP on this port? use http://)")]
    NotTls,
    /// The server refused the handshake with an alert.
    #[error("the server refused the TLS handshake: {0}")]
    Alert(String),
    /// Anything else rustls reported.
    #[error("TLS: {0}")]
    Other(String),
}

/// Why a dial failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    /// TCP connect (or name resolution) failed.
    #[error("connecting to {addr}: {message}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The kind, for callers that branch on it.
        kind: io::ErrorKind,
        /// The OS's words.
        message: String,
    },
    /// The host is not a valid TLS server name.
    #[error("{0:?} is not a valid TLS server name")]
    BadName(String),
    /// The TLS handshake failed.
    #[error("TLS with {addr}: {failure}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// Why.
        failure: TlsFailure,
    },
}

impl DialError {
    /// The TLS failure, if that is what this is.
    pub fn tls_failure(&self) -> Option<&TlsFailure> {
        match self {
            Self::Tls { failure, .. } => Some(failure),
            _ => None,
        }
    }
}

/// How to speak TLS to one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsTarget {
    /// The name sent in SNI (and checked, unless `cert_name` is set).
    pub server_name: String,
    /// The name the certificate must carry when it differs from `server_name`
    /// (Tailscale's DERP `CertName`).
    pub cert_name: Option<String>,
    /// Skip certificate verification entirely (DERP `InsecureForTests`).
    pub insecure_skip_verify: bool,
}

impl TlsTarget {
    /// Verify the certificate against `name`, sent in SNI.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            server_name: name.into(),
            cert_name: None,
            insecure_skip_verify: false,
        }
    }
}

/// The trust configuration for outgoing TLS, cheap to clone. The system roots are loaded
/// once per process, on the first TLS dial.
#[derive(Clone)]
pub struct ClientTls {
    inner: Arc<Inner>,
}

struct Inner {
    /// Trust only what this server presents (its own nodes dialling it).
    pinned: Option<super::ServerTls>,
    extra: Vec<CertificateDer<'static>>,
    ca_files: Vec<PathBuf>,
    verifier: OnceLock<Arc<dyn ServerCertVerifier>>,
    config: OnceLock<Arc<ClientConfig>>,
    insecure: OnceLock<Arc<ClientConfig>>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_files", &self.inner.ca_files)
            .field("pinned", &self.inner.pinned.is_some())
            .finish_non_exhaustive()
    }
}

static DEFAULT: LazyLock<ClientTls> =
    LazyLock::new(|| ClientTls::from_parts(Vec::new(), Vec::new()));

impl Default for ClientTls {
    /// The system store only, shared by every default in the process.
    fn default() -> Self {
        DEFAULT.clone()
    }
}

impl ClientTls {
    fn from_parts(extra: Vec<CertificateDer<'static>>, ca_files: Vec<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                pinned: None,
                extra,
                ca_files,
                verifier: OnceLock::new(),
                config: OnceLock::new(),
                insecure: OnceLock::new(),
            }),
        }
    }

    /// The system store plus the CA certificates in `path` (PEM, one or more).
    ///
    /// # Errors
    /// The file cannot be read or holds no certificate.
    pub fn with_ca_file(path: &Path) -> Result<Self, TlsConfigError> {
        let pem = std::fs::read(path).map_err(|source| TlsConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let certs = parse_certs(path, &pem)?;
        Ok(Self::from_parts(certs, vec![path.to_path_buf()]))
    }

    /// The system store plus `extra` CA file when given (the `--ca-file` flag).
    ///
    /// # Errors
    /// As [`ClientTls::with_ca_file`].
    pub fn from_flag(ca_file: Option<&Path>) -> Result<Self, TlsConfigError> {
        match ca_file {
            Some(p) => Self::with_ca_file(p),
            None => Ok(Self::default()),
        }
    }

    /// Trusts exactly the certificate `server` presents at handshake time (it follows
    /// reloads): how a server's own nodes dial it over loopback, whatever names the
    /// certificate carries.
    pub fn trusting(server: &super::ServerTls) -> Self {
        Self {
            inner: Arc::new(Inner {
                pinned: Some(server.clone()),
                extra: Vec::new(),
                ca_files: Vec::new(),
                verifier: OnceLock::from(
                    Arc::new(Pinned::Server(server.clone())) as Arc<dyn ServerCertVerifier>
                ),
                config: OnceLock::new(),
                insecure: OnceLock::new(),
            }),
        }
    }

    fn verifier(&self) -> Arc<dyn ServerCertVerifier> {
        self.inner
            .verifier
            .get_or_init(|| {
                let mut roots = RootCertStore::empty();
                let native = rustls_native_certs::load_native_certs();
                for e in &native.errors {
                    tracing::warn!(error = %e, "reading the system certificate store");
                }
                let (added, ignored) = roots.add_parsable_certificates(native.certs);
                let (extra, bad) =
                    roots.add_parsable_certificates(self.inner.extra.iter().cloned());
                if ignored + bad > 0 {
                    tracing::debug!(
                        ignored = ignored + bad,
                        "unparsable CA certificates skipped"
                    );
                }
                if added + extra == 0 {
                    tracing::warn!(
                        "no trusted CA certificates (system store empty and no --ca-file): \
                         every TLS server will be refused"
                    );
                }
                tracing::debug!(system = added, extra, "TLS trust roots loaded");
                // An empty store makes the builder fail; a store that rejects everything
                // is what an empty trust set means, so fall back to that.
                match WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                {
                    Ok(v) => v as Arc<dyn ServerCertVerifier>,
                    Err(_) => Arc::new(RejectAll),
                }
            })
            .clone()
    }

    fn config(&self) -> Arc<ClientConfig> {
        self.inner
            .config
            .get_or_init(|| build_config(self.verifier()))
            .clone()
    }

    fn insecure_config(&self) -> Arc<ClientConfig> {
        self.inner
            .insecure
            .get_or_init(|| build_config(Arc::new(NoVerify)))
            .clone()
    }

    fn config_for(&self, target: &TlsTarget) -> Result<Arc<ClientConfig>, DialError> {
        if target.insecure_skip_verify {
            return Ok(self.insecure_config());
        }
        match &target.cert_name {
            // Tailscale's form for a self-signed relay: trust exactly the leaf whose
            // SHA-256 (of its DER) is given, whatever it names and whoever issued it.
            Some(name) if name.starts_with(SHA256_RAW) => {
                let digest =
                    parse_sha256_raw(name).ok_or_else(|| DialError::BadName(name.clone()))?;
                Ok(build_config(Arc::new(Pinned::Sha256(digest))))
            }
            Some(name) if *name != target.server_name => {
                let expected = ServerName::try_from(name.clone())
                    .map_err(|_| DialError::BadName(name.clone()))?;
                Ok(build_config(Arc::new(Renamed {
                    inner: self.verifier(),
                    expected,
                })))
            }
            _ => Ok(self.config()),
        }
    }

    /// Dials `host:port` over TCP and, with `tls`, runs the handshake.
    ///
    /// # Errors
    /// [`DialError`], naming the address and the reason.
    pub async fn dial(
        &self,
        host: &str,
        port: u16,
        tls: Option<&TlsTarget>,
    ) -> Result<Stream, DialError> {
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| DialError::Connect {
                addr: addr.clone(),
                kind: e.kind(),
                message: e.to_string(),
            })?;
        // Frames and requests go out in whole batches; Nagle would only add latency.
        let _ = tcp.set_nodelay(true);
        let Some(target) = tls else {
            return Ok(Stream::Plain(tcp));
        };
        let name = ServerName::try_from(target.server_name.clone())
            .map_err(|_| DialError::BadName(target.server_name.clone()))?;
        let connector = tokio_rustls::TlsConnector::from(self.config_for(target)?);
        match connector.connect(name, tcp).await {
            Ok(s) => Ok(Stream::Tls(Box::new(s))),
            Err(e) => Err(DialError::Tls {
                addr,
                failure: classify(&e),
            }),
        }
    }
}

fn build_config(verifier: Arc<dyn ServerCertVerifier>) -> Arc<ClientConfig> {
    let mut c = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        })
        .unwrap_or_else(|_| unreachable_config());
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

/// The ring provider always supports the default versions; this keeps the type checker
/// happy without an `unwrap`.
fn unreachable_config() -> ClientConfig {
    ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RejectAll))
        .with_no_client_auth()
}

pub(super) fn parse_certs(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certs = certs.map_err(|e| TlsConfigError::Pem {
        path: path.to_path_buf(),
        what: format!("bad PEM: {e}"),
    })?;
    if certs.is_empty() {
        return Err(TlsConfigError::Pem {
            path: path.to_path_buf(),
            what: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// Maps a failed handshake to what a person can act on.
pub(crate) fn classify(e: &io::Error) -> TlsFailure {
    let Some(inner) = e.get_ref() else {
        return if e.kind() == io::ErrorKind::UnexpectedEof {
            // A peer that closes on our ClientHello is usually not speaking TLS.
            TlsFailure::NotTls
        } else {
            TlsFailure::Other(e.to_string())
        };
    };
    match inner.downcast_ref::<rustls::Error>() {
        Some(rustls::Error::InvalidCertificate(c)) => match c {
            CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                TlsFailure::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                TlsFailure::NotYetValid
            }
            CertificateError::NotValidForName => TlsFailure::NameMismatch {
                expected: "the host dialled".into(),
                presented: "other names".into(),
            },
            CertificateError::NotValidForNameContext {
                expected,
                presented,
            } => TlsFailure::NameMismatch {
                expected: expected.to_str().into_owned(),
                presented: presented.join(", "),
            },
            other => TlsFailure::Other(format!("certificate: {other:?}")),
        },
        Some(rustls::Error::InvalidMessage(_)) => TlsFailure::NotTls,
        Some(rustls::Error::AlertReceived(a)) => TlsFailure::Alert(format!("{a:?}")),
        Some(other) => TlsFailure::Other(other.to_string()),
        None => TlsFailure::Other(e.to_string()),
    }
}

/// Delegates to the real verifier with the certificate name the map asks for.
#[derive(Debug)]
struct Renamed {
    inner: Arc<dyn ServerCertVerifier>,
    expected: ServerName<'static>,
}

impl ServerCertVerifier for Renamed {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.expected, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `InsecureForTests`: any certificate, but the handshake signatures are still checked
/// so the session keys belong to whoever holds the presented key.
#[derive(Debug)]
struct NoVerify;

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The `CertName` prefix that pins a leaf by digest.
const SHA256_RAW: &str = "sha256-raw:";

/// The digest of a `sha256-raw:<64 hex digits>` certificate name.
fn parse_sha256_raw(name: &str) -> Option<[u8; 32]> {
    let hex_digits = name.strip_prefix(SHA256_RAW)?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut out).ok()?;
    Some(out)
}

/// Accepts only one leaf certificate.
#[derive(Debug)]
enum Pinned {
    /// The leaf the given server is presenting now (it may be reloaded).
    Server(super::ServerTls),
    /// The leaf whose DER has this SHA-256.
    Sha256([u8; 32]),
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use sha2::Digest as _;
        let matches = match self {
            Self::Server(s) => s.current_leaf().as_ref() == end_entity.as_ref(),
            Self::Sha256(d) => sha2::Sha256::digest(end_entity.as_ref()).as_slice() == d,
        };
        if matches {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        NoVerify.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        NoVerify.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        NoVerify.supported_verify_schemes()
    }
}

/// Trusts nothing: what an empty trust store means.
#[derive(Debug)]
struct RejectAll;

fn untrusted<T>() -> Result<T, rustls::Error> {
    Err(rustls::Error::InvalidCertificate(
        CertificateError::UnknownIssuer,
    ))
}

impl ServerCertVerifier for RejectAll {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        untrusted()
    }
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        untrusted()
    }
    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        untrusted()
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A connection to the server: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether the stream is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }
}

/// Runs `$e` with `$s` bound to the inner stream, pinned.
macro_rules! pinned {
    ($this:expr, $s:ident => $e:expr) => {
        match $this.get_mut() {
            Stream::Plain(inner) => {
                let $s = Pin::new(inner);
                $e
            }
            Stream::Tls(inner) => {
                let $s = Pin::new(inner.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        pinned!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        pinned!(self, s => s.poll_write(cx, buf))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        pinned!(self, s => s.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        pinned!(self, s => s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        pinned!(self, s => s.poll_shutdown(cx))
    }
}
