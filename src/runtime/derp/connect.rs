//! Dialing a DERP server: `GET /derp` with `Upgrade: DERP` over HTTP/1.1 (plain or
//! TLS), or the websocket variant (subprotocol `derp`, no compression).

use super::transport::{RawReader, RawWriter, WsReader, WsWriter};
use crate::runtime::tls::{ClientTls, DialError, Stream, TlsTarget};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::{SplitSink, SplitStream};
use http::{HeaderName, HeaderValue, Request, StatusCode, header};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::net::IpAddr;
use thiserror::Error;
use tokio::io::{ReadHalf, WriteHalf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

/// Why a connection attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConnectError {
    /// The URL is not `http://host[:port]/path` (or `ws://`).
    #[error("bad DERP URL {0:?}")]
    BadUrl(String),
    /// A configured header is not a valid HTTP header.
    #[error("bad header {0:?}")]
    BadHeader(String),
    /// TCP connect or the TLS handshake failed.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The HTTP exchange failed.
    #[error("http: {0}")]
    Http(String),
    /// The server answered with a status other than 101.
    #[error("server answered {0} instead of 101 Switching Protocols")]
    Status(u16),
    /// The websocket handshake failed.
    #[error("websocket: {0}")]
    WebSocket(String),
    /// The server did not agree to the `derp` subprotocol.
    #[error("server did not select the derp websocket subprotocol")]
    Subprotocol,
    /// The attempt took longer than the connect budget.
    #[error("connect timed out")]
    Timeout,
}

impl ConnectError {
    /// Whether the upgrade was refused in a way that suggests a proxy in the way, so
    /// the websocket variant is worth trying: any 4xx answer.
    pub fn suggests_websocket(&self) -> bool {
        matches!(self, Self::Status(s) if (400..500).contains(s))
    }
}

/// A parsed DERP URL, with how to dial it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerpUrl {
    /// The URL's host (brackets removed from IPv6 literals).
    pub host: String,
    /// Where to dial: the host, or the map's IP literal for the node.
    pub dial_host: String,
    /// TLS parameters for `https`/`wss` URLs; `None` for plain HTTP.
    pub tls: Option<TlsTarget>,
    /// Port to dial.
    pub port: u16,
    /// `host:port` as written, for the `Host` header.
    pub authority: String,
    /// Path and query, e.g. `/derp`.
    pub path: String,
}

impl DerpUrl {
    /// Parses `http(s)://host[:port]/path`; `ws://` and `wss://` are synonyms.
    ///
    /// # Errors
    /// [`ConnectError::BadUrl`].
    pub fn parse(url: &str) -> Result<Self, ConnectError> {
        let bad = || ConnectError::BadUrl(url.to_owned());
        let uri: http::Uri = url.parse().map_err(|_| bad())?;
        let tls = match uri.scheme_str() {
            Some("http" | "ws") => false,
            Some("https" | "wss") => true,
            _ => return Err(bad()),
        };
        let authority = uri.authority().ok_or_else(bad)?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad());
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map_or("/derp", |p| p.as_str())
            .to_owned();
        let path = if path.is_empty() {
            "/derp".to_owned()
        } else {
            path
        };
        Ok(Self {
            dial_host: host.clone(),
            tls: tls.then(|| TlsTarget::named(host.clone())),
            host,
            port,
            authority: authority.as_str().to_owned(),
            path,
        })
    }

    /// Applies what the DERP map says about the node: an IP literal to dial instead of
    /// resolving, the certificate name to expect, whether to skip verification.
    #[must_use]
    pub fn with_hints(
        mut self,
        dial_ip: Option<IpAddr>,
        cert_name: Option<&str>,
        insecure: bool,
    ) -> Self {
        if let Some(ip) = dial_ip {
            self.dial_host = ip.to_string();
        }
        if let Some(t) = &mut self.tls {
            t.cert_name = cert_name.filter(|c| !c.is_empty()).map(str::to_owned);
            t.insecure_skip_verify = insecure;
        }
        self
    }

    /// The URL as dialled, for logs.
    pub fn display(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.path)
    }
}

fn header_pair(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), ConnectError> {
    let bad = || ConnectError::BadHeader(name.to_owned());
    let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
    let v = HeaderValue::from_str(value).map_err(|_| bad())?;
    Ok((n, v))
}

/// Checks configured extra headers once, so a typo fails loudly instead of looping.
///
/// # Errors
/// [`ConnectError::BadHeader`] for the first invalid header.
pub fn check_headers(headers: &[(String, String)]) -> Result<(), ConnectError> {
    headers
        .iter()
        .try_for_each(|(n, v)| header_pair(n, v).map(|_| ()))
}

async fn dial(tls: &ClientTls, url: &DerpUrl) -> Result<Stream, ConnectError> {
    Ok(tls.dial(&url.dial_host, url.port, url.tls.as_ref()).await?)
}

/// A raw upgraded connection.
pub type RawConn = (
    RawReader<ReadHalf<TokioIo<Upgraded>>>,
    RawWriter<WriteHalf<TokioIo<Upgraded>>>,
);

/// A websocket connection.
pub type WsConn = (
    WsReader<SplitStream<WebSocketStream<Stream>>>,
    WsWriter<SplitSink<WebSocketStream<Stream>, Message>>,
);

/// Connects with `GET path` + `Upgrade: DERP` and returns the upgraded stream (bytes
/// the server sent right after its 101 are kept by hyper).
///
/// # Errors
/// [`ConnectError`]; a 4xx answer is [`ConnectError::Status`].
pub async fn connect_upgrade(
    tls: &ClientTls,
    url: &DerpUrl,
    headers: &[(String, String)],
) -> Result<RawConn, ConnectError> {
    let tcp = dial(tls, url).await?;
    let http_err = |e: hyper::Error| ConnectError::Http(e.to_string());
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tcp))
            .await
            .map_err(http_err)?;
    let mut builder = Request::get(url.path.as_str())
        .header(header::HOST, url.authority.as_str())
        .header(header::UPGRADE, "DERP")
        .header(header::CONNECTION, "Upgrade");
    for (n, v) in headers {
        let (n, v) = header_pair(n, v)?;
        builder = builder.header(n, v);
    }
    let req = builder
        .body(Empty::new())
        .map_err(|e| ConnectError::Http(e.to_string()))?;
    // The connection future must be polled while the request is in flight and until it
    // hands the socket over to the upgrade; on a 101 it may finish before the response
    // future is polled again.
    let mut conn = std::pin::pin!(conn.with_upgrades());
    let mut conn_done = None;
    let mut res_fut = std::pin::pin!(sender.send_request(req));
    let res = loop {
        tokio::select! {
            res = &mut res_fut => break res.map_err(http_err)?,
            done = &mut conn, if conn_done.is_none() => conn_done = Some(done),
        }
    };
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(ConnectError::Status(res.status().as_u16()));
    }
    let upgraded = match conn_done {
        Some(Err(e)) => return Err(http_err(e)),
        Some(Ok(())) => hyper::upgrade::on(res).await,
        None => tokio::join!(hyper::upgrade::on(res), conn).0,
    };
    let io = TokioIo::new(upgraded.map_err(http_err)?);
    let (r, w) = tokio::io::split(io);
    Ok((RawReader(r), RawWriter(w)))
}

/// Connects with a websocket handshake offering the `derp` subprotocol.
///
/// # Errors
/// [`ConnectError`]; a 4xx answer is [`ConnectError::Status`].
pub async fn connect_websocket(
    tls: &ClientTls,
    url: &DerpUrl,
    headers: &[(String, String)],
) -> Result<WsConn, ConnectError> {
    let tcp = dial(tls, url).await?;
    let scheme = if url.tls.is_some() { "wss" } else { "ws" };
    let ws_url = format!("{scheme}://{}{}", url.authority, url.path);
    let mut req = ws_url
        .into_client_request()
        .map_err(|e| ConnectError::WebSocket(e.to_string()))?;
    req.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static("derp"),
    );
    for (n, v) in headers {
        let (n, v) = header_pair(n, v)?;
        req.headers_mut().append(n, v);
    }
    // Messages carry whole write batches; allow far more than any batch we or Go send.
    let config = WebSocketConfig::default()
        .max_message_size(Some(8 << 20))
        .max_frame_size(Some(8 << 20));
    let (ws, res) = tokio_tungstenite::client_async_with_config(req, tcp, Some(config))
        .await
        .map_err(|e| match e {
            tungstenite::Error::Http(r) => ConnectError::Status(r.status().as_u16()),
            e => ConnectError::WebSocket(e.to_string()),
        })?;
    let proto = res.headers().get(header::SEC_WEBSOCKET_PROTOCOL);
    if proto.is_none_or(|p| p.as_bytes() != b"derp") {
        return Err(ConnectError::Subprotocol);
    }
    let (w, r) = ws.split();
    Ok((WsReader(r), WsWriter(w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_urls() {
        let u = DerpUrl::parse("http://127.0.0.1:3340/derp").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 3340, "/derp")
        );
        assert_eq!(u.authority, "127.0.0.1:3340");
        let u = DerpUrl::parse("http://[::1]:9/derp?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 9, "/derp?x=1")
        );
        let u = DerpUrl::parse("ws://relay.example").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = DerpUrl::parse("https://relay.example/derp").unwrap();
        assert_eq!(
            (u.port, u.tls.as_ref().map(|t| t.server_name.as_str())),
            (443, Some("relay.example"))
        );
        let u = u.with_hints(
            Some("192.0.2.1".parse().unwrap()),
            Some("cert.example"),
            false,
        );
        assert_eq!(u.dial_host, "192.0.2.1");
        assert_eq!(
            u.tls.as_ref().and_then(|t| t.cert_name.as_deref()),
            Some("cert.example")
        );
        assert_eq!(u.display(), "https://relay.example/derp");
        let u = DerpUrl::parse("wss://[::1]:9443/derp").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.tls.is_some()),
            ("::1", 9443, true)
        );
        // Hints about TLS do not turn a plain URL into TLS.
        let u = DerpUrl::parse("http://a/derp")
            .unwrap()
            .with_hints(None, Some("x"), true);
        assert!(u.tls.is_none());
        assert!(matches!(
            DerpUrl::parse("ftp://a/derp"),
            Err(ConnectError::BadUrl(_))
        ));
        assert!(matches!(
            DerpUrl::parse("not a url"),
            Err(ConnectError::BadUrl(_))
        ));
    }

    #[test]
    fn header_checks() {
        let good = vec![("Authorization".to_owned(), "Bearer t".to_owned())];
        assert!(check_headers(&good).is_ok());
        let bad = vec![("X-A".to_owned(), "a\r\nb".to_owned())];
        assert_eq!(
            check_headers(&bad),
            Err(ConnectError::BadHeader("X-A".into()))
        );
        assert!(ConnectError::Status(426).suggests_websocket());
        assert!(!ConnectError::Status(500).suggests_websocket());
    }
}
