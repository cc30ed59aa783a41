//! One HTTP/1.1 request to the server with a bearer token, over the client trust
//! configuration (TLS for https://), for the commands that call the server's API.

use crate::runtime::tls::{ClientTls, TlsTarget};
use crate::services::public_url::BaseUrl;
use anyhow::Context as _;
use http_body_util::{BodyExt, Full};
use std::time::Duration;

/// Largest answer read.
const MAX_BODY: usize = 16 << 20;

/// Sends `method path` to `base` with `token` and an optional body (content type and
/// bytes); the status and the body of the answer.
///
/// # Errors
/// The server cannot be reached, the exchange fails, or the answer is too large.
pub async fn request(
    tls: &ClientTls,
    base: &BaseUrl,
    method: http::Method,
    path: &str,
    token: &str,
    body: Option<(&str, Vec<u8>)>,
) -> anyhow::Result<(http::StatusCode, bytes::Bytes)> {
    let url = base.to_url();
    let target = base.tls.then(|| TlsTarget::named(base.host.clone()));
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        tls.dial(&base.host, base.port, target.as_ref()),
    )
    .await
    .with_context(|| format!("connecting to {url} timed out"))?
    .with_context(|| format!("connecting to {url}"))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let authority = url.split("://").nth(1).unwrap_or_default().to_owned();
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::ACCEPT, "application/json");
    let bytes = match body {
        Some((content_type, b)) => {
            req = req.header(http::header::CONTENT_TYPE, content_type);
            b
        }
        None => Vec::new(),
    };
    let resp = tokio::time::timeout(
        Duration::from_secs(60),
        send.send_request(req.body(Full::new(bytes::Bytes::from(bytes)))?),
    )
    .await
    .with_context(|| format!("{url} did not answer within 60 s"))??;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, body))
}
