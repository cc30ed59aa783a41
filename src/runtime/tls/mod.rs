//! TLS for every link: one client configuration for everything that dials the server
//! (coordinator websocket, DERP upgrade and websocket, the agent's identity call), and
//! the server side for `serve` and `derp` (PEM files, reloaded on SIGHUP).
//!
//! rustls with the `ring` provider: ring is already in the build (boringtun uses it), it
//! needs only a C compiler, and it keeps the build free of cmake/NASM.
//!
//! Trust is the system store (honouring `SSL_CERT_FILE` / `SSL_CERT_DIR`, loaded once per
//! process on first use) plus any extra CA files the caller names.

mod client;
mod server;
mod url;

pub use client::{ClientTls, DialError, Stream, TlsFailure, TlsTarget};
pub use server::{
    AcceptError, ServerTls, ServerTlsStats, TLS_HANDSHAKE_TIMEOUT, accept, is_tls_client_hello,
};
pub use url::{InsecureUrl, check_secret_url, url_host, url_is_loopback, url_is_tls};

use std::path::PathBuf;

/// Loading certificates, keys or CA files.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file holds no usable PEM item of the expected kind.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// rustls refused the material (key does not match the certificate, unsupported key).
    #[error("{path}: {source}")]
    Rustls {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: rustls::Error,
    },
}

/// The crypto provider every config here uses.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
