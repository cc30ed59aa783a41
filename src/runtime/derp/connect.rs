//! Dialing a DERP server: `GET /derp` with `Upgrade: DERP` over plain HTTP/1.1, or the
//! websocket variant (subprotocol `derp`, no compression).

use super::transport::{RawReader, RawWriter, WsReader, WsWriter};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::{SplitSink, SplitStream};
use http::{HeaderName, HeaderValue, Request, StatusCode, header};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
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
    /// The URL needs TLS, which this build does not speak.
    #[error("TLS (https/wss) is not supported yet: {0}")]
    TlsUnsupported(String),
    /// A configured header is not a valid HTTP header.
    #[error("bad header {0:?}")]
    BadHeader(String),
    /// TCP connect failed.
    #[error("connect: {0}")]
    Io(std::io::ErrorKind),
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

/// A parsed `http://` DERP URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerpUrl {
    /// Host to dial (brackets removed from IPv6 literals).
    pub host: String,
    /// Port to dial.
    pub port: u16,
    /// `host:port` as written, for the `Host` header.
    pub authority: String,
    /// Path and query, e.g. `/derp`.
    pub path: String,
}

impl DerpUrl {
    /// Parses `http://host[:port]/path`; `ws://` is accepted as a synonym.
    ///
    /// # Errors
    /// [`ConnectError::BadUrl`], or [`ConnectError::TlsUnsupported`] for `https`/`wss`.
    pub fn parse(url: &str) -> Result<Self, ConnectError> {
        let bad = || ConnectError::BadUrl(url.to_owned());
        let uri: http::Uri = url.parse().map_err(|_| bad())?;
        match uri.scheme_str() {
            Some("http" | "ws") => {}
            Some("https" | "wss") => return Err(ConnectError::TlsUnsupported(url.to_owned())),
            _ => return Err(bad()),
        }
        let authority = uri.authority().ok_or_else(bad)?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(bad());
        }
        let port = authority.port_u16().unwrap_or(80);
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
            host,
            port,
            authority: authority.as_str().to_owned(),
            path,
        })
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

async fn dial(url: &DerpUrl) -> Result<TcpStream, ConnectError> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| ConnectError::Io(e.kind()))?;
    // Frames are written in whole batches; Nagle would only add latency.
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// A raw upgraded connection.
pub type RawConn = (
    RawReader<ReadHalf<TokioIo<Upgraded>>>,
    RawWriter<WriteHalf<TokioIo<Upgraded>>>,
);

/// A websocket connection.
pub type WsConn = (
    WsReader<SplitStream<WebSocketStream<TcpStream>>>,
    WsWriter<SplitSink<WebSocketStream<TcpStream>, Message>>,
);

/// Connects with `GET path` + `Upgrade: DERP` and returns the upgraded stream (bytes
/// the server sent right after its 101 are kept by hyper).
///
/// # Errors
/// [`ConnectError`]; a 4xx answer is [`ConnectError::Status`].
pub async fn connect_upgrade(
    url: &DerpUrl,
    headers: &[(String, String)],
) -> Result<RawConn, ConnectError> {
    let tcp = dial(url).await?;
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
    url: &DerpUrl,
    headers: &[(String, String)],
) -> Result<WsConn, ConnectError> {
    let tcp = dial(url).await?;
    let ws_url = format!("ws://{}{}", url.authority, url.path);
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
        assert!(matches!(
            DerpUrl::parse("https://a/derp"),
            Err(ConnectError::TlsUnsupported(_))
        ));
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
