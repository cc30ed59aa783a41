//! The server side: a certificate and key from PEM files, swapped in place on reload
//! (SIGHUP) so connections already open keep theirs and new handshakes get the new one.

use super::client::parse_certs;
use super::{TlsConfigError, provider};
use rustls::ServerConfig;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

/// How long a client may take from connect to a finished handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a plain-HTTP request to a TLS port gets back, so the person reading the client's
/// error learns what to change (Go's servers answer the same way).
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Connection: close\r\nContent-Length: 59\r\n\r\nthis port speaks TLS: use https:// (or wss://) to reach it\n";

/// Whether a connection's first byte starts a TLS handshake record.
pub fn is_tls_client_hello(first: u8) -> bool {
    first == 0x16
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    handshakes: AtomicU64,
    handshake_failures: AtomicU64,
    plain_http: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

/// A snapshot of the TLS counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerTlsStats {
    /// Handshakes completed.
    pub handshakes: u64,
    /// Handshakes that failed or timed out.
    pub handshake_failures: u64,
    /// Connections that spoke plain HTTP to the TLS port (answered 400 and closed).
    pub plain_http: u64,
    /// Successful reloads.
    pub reloads: u64,
    /// Reloads refused (the old certificate stays).
    pub reload_failures: u64,
}

#[derive(Debug)]
struct Resolver(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// TLS termination for a listener. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    resolver: Arc<Resolver>,
    config: Arc<ServerConfig>,
    counters: Arc<Counters>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsConfigError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsConfigError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let chain = parse_certs(cert, &read(cert)?)?;
    let der = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| TlsConfigError::Pem {
        path: key.to_path_buf(),
        what: format!("no usable PRIVATE KEY block: {e}"),
    })?;
    let certified = CertifiedKey::from_der(chain, der, &provider()).map_err(|source| {
        TlsConfigError::Rustls {
            path: key.to_path_buf(),
            source,
        }
    })?;
    Ok(Arc::new(certified))
}

impl ServerTls {
    /// Loads a certificate chain (PEM, leaf first) and its private key (PEM: PKCS#8,
    /// PKCS#1 or SEC1).
    ///
    /// # Errors
    /// Unreadable files, no certificate or key in them, or a key that does not match.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsConfigError> {
        let resolver = Arc::new(Resolver(RwLock::new(load(cert, key)?)));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsConfigError::Rustls {
                path: cert.to_path_buf(),
                source,
            })?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // HTTP/1.1 only: DERP and the websockets upgrade it; h2 would refuse both.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            resolver,
            config: Arc::new(config),
            counters: Arc::default(),
        })
    }

    /// Reads the files again and, if they hold a valid pair, serves it to new handshakes.
    /// On error the current certificate stays.
    ///
    /// # Errors
    /// As [`ServerTls::load`].
    pub fn reload(&self) -> Result<(), TlsConfigError> {
        match load(&self.cert, &self.key) {
            Ok(k) => {
                *self.resolver.0.write().unwrap_or_else(|e| e.into_inner()) = k;
                self.counters.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.counters
                    .reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Reloads on every SIGHUP until the returned task is aborted (no-op elsewhere than
    /// Unix). The owner aborts it on shutdown.
    pub fn spawn_reload_on_sighup(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let mut hup = match signal(SignalKind::hangup()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot watch SIGHUP; TLS reload disabled");
                        return;
                    }
                };
                while hup.recv().await.is_some() {
                    match this.reload() {
                        Ok(()) => {
                            tracing::info!(cert = %this.cert.display(), "TLS certificate reloaded")
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "TLS reload failed; keeping the current certificate")
                        }
                    }
                }
            }
            #[cfg(not(unix))]
            std::future::pending::<()>().await;
        })
    }

    /// The leaf certificate new handshakes get.
    pub fn current_leaf(&self) -> rustls::pki_types::CertificateDer<'static> {
        let k = self.resolver.0.read().unwrap_or_else(|e| e.into_inner());
        k.cert
            .first()
            .cloned()
            .unwrap_or_else(|| rustls::pki_types::CertificateDer::from(Vec::new()))
    }

    /// The counters.
    pub fn stats(&self) -> ServerTlsStats {
        let c = &self.counters;
        ServerTlsStats {
            handshakes: c.handshakes.load(Ordering::Relaxed),
            handshake_failures: c.handshake_failures.load(Ordering::Relaxed),
            plain_http: c.plain_http.load(Ordering::Relaxed),
            reloads: c.reloads.load(Ordering::Relaxed),
            reload_failures: c.reload_failures.load(Ordering::Relaxed),
        }
    }
}

/// Why an accepted connection was not handed on.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The client spoke plain HTTP; it was answered 400 and closed.
    #[error("plain HTTP on the TLS port")]
    PlainHttp,
    /// The handshake failed.
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    /// Nothing, or no finished handshake, within [`TLS_HANDSHAKE_TIMEOUT`].
    #[error("TLS handshake timed out")]
    Timeout,
}

/// Runs the server handshake on an accepted connection. A client that speaks plain HTTP
/// is told, in plain HTTP, to use https.
///
/// # Errors
/// [`AcceptError`]; the connection is closed.
pub async fn accept(
    tls: &ServerTls,
    tcp: TcpStream,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, AcceptError> {
    let c = &tls.counters;
    let fut = async {
        let mut first = [0u8; 1];
        let n = tcp.peek(&mut first).await.map_err(AcceptError::Handshake)?;
        if n == 1 && !is_tls_client_hello(first[0]) {
            let mut tcp = tcp;
            let _ = tcp.write_all(PLAIN_HTTP_ANSWER).await;
            let _ = tcp.shutdown().await;
            return Err(AcceptError::PlainHttp);
        }
        tokio_rustls::TlsAcceptor::from(tls.config.clone())
            .accept(tcp)
            .await
            .map_err(AcceptError::Handshake)
    };
    let r = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(AcceptError::Timeout),
    };
    match &r {
        Ok(_) => c.handshakes.fetch_add(1, Ordering::Relaxed),
        Err(AcceptError::PlainHttp) => c.plain_http.fetch_add(1, Ordering::Relaxed),
        Err(_) => c.handshake_failures.fetch_add(1, Ordering::Relaxed),
    };
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_handshake_record_counts_as_tls() {
        assert!(is_tls_client_hello(0x16));
        for b in [b'G', b'P', 0x15, 0x17, 0] {
            assert!(!is_tls_client_hello(b));
        }
        let body = PLAIN_HTTP_ANSWER
            .split(|&b| b == b'\n')
            .next_back()
            .map(<[u8]>::len);
        assert_eq!(body, Some(0));
        let head_end = PLAIN_HTTP_ANSWER
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4);
        assert_eq!(
            head_end.map(|h| PLAIN_HTTP_ANSWER.len() - h),
            Some(59),
            "Content-Length must match the body"
        );
    }
}
