//! Fetching client ID metadata documents, within the limits `proto::oauth::cimd` sets:
//! resolve, check every address, connect to a checked address (never resolving twice,
//! so a DNS answer cannot change in between), TLS with the URL's host name, one GET,
//! no redirects, `200` with a JSON content type, at most
//! [`cimd::MAX_DOCUMENT_BYTES`], all within one deadline. A few fetches at a time.

use crate::proto::oauth::OAuthError;
use crate::proto::oauth::cimd::{self, AddressPolicy};
use crate::runtime::tls::{ClientTls, TlsTarget};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// How documents are fetched.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Which addresses are allowed ([`AddressPolicy::PublicOnly`] outside tests).
    pub policy: AddressPolicy,
    /// Whom to trust for TLS.
    pub tls: ClientTls,
    /// The deadline for resolving, connecting, the handshake and the whole response.
    pub timeout: Duration,
    /// Fetches in flight at once; more wait.
    pub concurrency: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            policy: AddressPolicy::PublicOnly,
            tls: ClientTls::default(),
            timeout: Duration::from_secs(5),
            concurrency: 4,
        }
    }
}

/// A fetched document.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The body.
    pub body: Bytes,
    /// Its `Cache-Control`, if any.
    pub cache_control: Option<String>,
}

/// Fetches metadata documents.
#[derive(Debug, Clone)]
pub struct Fetcher {
    cfg: FetchConfig,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Fetcher {
    /// A fetcher with these limits.
    pub fn new(cfg: FetchConfig) -> Self {
        let slots = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency.max(1)));
        Self { cfg, slots }
    }

    /// Fetches the document at `url` (a `client_id`).
    ///
    /// # Errors
    /// `invalid_client` saying what failed (the URL, its addresses, the connection, the
    /// response), for the error page.
    pub async fn fetch(&self, url: &str) -> Result<Fetched, OAuthError> {
        let target = cimd::document_url(url)?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| OAuthError::client("metadata fetcher is shutting down"))?;
        match tokio::time::timeout(self.cfg.timeout, self.fetch_inner(&target)).await {
            Ok(r) => r,
            Err(_) => Err(OAuthError::client(format!(
                "client metadata document did not arrive within {:?}",
                self.cfg.timeout
            ))),
        }
    }

    async fn fetch_inner(&self, t: &cimd::DocumentUrl) -> Result<Fetched, OAuthError> {
        let addrs: Vec<IpAddr> = match t.literal {
            Some(ip) => vec![ip],
            None => tokio::net::lookup_host((t.host.as_str(), t.port))
                .await
                .map_err(|e| {
                    OAuthError::client(format!("client_id URL host does not resolve: {e}"))
                })?
                .map(|a| a.ip())
                .collect(),
        };
        cimd::check_addresses(&addrs, self.cfg.policy)?;
        let tls = TlsTarget::named(t.host.clone());
        let mut last = String::from("no address");
        for ip in addrs {
            match self.cfg.tls.dial(&ip.to_string(), t.port, Some(&tls)).await {
                Ok(stream) => return get(stream, t).await,
                Err(e) => last = e.to_string(),
            }
        }
        Err(OAuthError::client(format!(
            "could not connect to the client_id URL's host: {last}"
        )))
    }
}

async fn get(
    stream: crate::runtime::tls::Stream,
    t: &cimd::DocumentUrl,
) -> Result<Fetched, OAuthError> {
    let fail =
        |what: &str| OAuthError::client(format!("fetching the client metadata document: {what}"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(&e.to_string()))?;
    let req = http::Request::get(&t.target)
        .header(http::header::HOST, &t.authority)
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("agentwire/", env!("CARGO_PKG_VERSION")),
        )
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(&e.to_string()))?;
    let exchange = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| fail(&e.to_string()))?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(fail(&format!(
                "answered {status}; redirects are not followed"
            )));
        }
        if status != http::StatusCode::OK {
            return Err(fail(&format!("answered {status}")));
        }
        let header = |n: http::header::HeaderName| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let json = header(http::header::CONTENT_TYPE).is_some_and(|ct| {
            let ct = ct.to_ascii_lowercase();
            let essence = ct.split(';').next().unwrap_or("").trim();
            essence == "application/json" || essence.ends_with("+json")
        });
        if !json {
            return Err(fail("the response is not application/json"));
        }
        let cache_control = header(http::header::CACHE_CONTROL);
        let body = Limited::new(resp.into_body(), cimd::MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|_| {
                fail(&format!(
                    "the document is larger than {} bytes",
                    cimd::MAX_DOCUMENT_BYTES
                ))
            })?
            .to_bytes();
        Ok(Fetched {
            body,
            cache_control,
        })
    };
    // The connection task drives the IO; a failure there fails the request itself. It
    // ends with this function (aborted on drop) whatever happens.
    let _conn = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "metadata document connection");
        }
    }));
    exchange.await
}
