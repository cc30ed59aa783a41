//! Raw HTTP/1.1 over any byte stream, for hostile-input tests: the request is sent exactly
//! as written (malformed or not), and the response is read by hand so that whatever the
//! server does — answer, close, or stall — is observed rather than hidden by a client.

#![allow(dead_code, clippy::disallowed_methods)]

use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A response as read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// How an exchange ended.
#[derive(Debug)]
pub enum Exchange {
    Response(RawResponse),
    /// The server closed the connection without a (complete) response.
    Closed(String),
    /// Nothing within the bound.
    Stalled,
}

impl Exchange {
    #[track_caller]
    pub fn response(self) -> RawResponse {
        match self {
            Exchange::Response(r) => r,
            other => panic!("expected a response, got {other:?}"),
        }
    }
}

/// Writes `head` then `body` (stopping quietly if the server closes early, as it may when it
/// refuses a body), optionally half-closes, and reads one response — concurrently with the
/// writing, as real clients do, so an early answer to an unwanted body is seen.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    head: &[u8],
    body: &[u8],
    half_close: bool,
    bound: Duration,
) -> Exchange {
    let (mut rd, mut wr) = tokio::io::split(s);
    let write = async {
        let _ = wr.write_all(head).await;
        let _ = wr.write_all(body).await;
        if half_close {
            let _ = wr.shutdown().await;
        }
        // Keep the write half open (unless half-closed) until the read side is done.
        std::future::pending::<()>().await;
    };
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(r) = parse(&buf) {
                        return Exchange::Response(r);
                    }
                    if buf.len() > 64 << 20 {
                        return Exchange::Closed("response over 64 MiB".into());
                    }
                }
                Err(e) => {
                    if let Some(r) = parse(&buf) {
                        return Exchange::Response(r);
                    }
                    return Exchange::Closed(format!("read error: {e}"));
                }
            }
        }
        match parse_at_eof(&buf) {
            Some(r) => Exchange::Response(r),
            None => Exchange::Closed(format!("closed after {} bytes", buf.len())),
        }
    };
    let run = async {
        tokio::select! {
            r = read => r,
            _ = write => unreachable!("the writer never finishes"),
        }
    };
    tokio::time::timeout(bound, run)
        .await
        .unwrap_or(Exchange::Stalled)
}

/// A request head with the given extra header lines (each without CRLF).
pub fn head(
    method: &str,
    target: &str,
    headers: &[String],
    content_length: Option<usize>,
) -> Vec<u8> {
    let mut h = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    for l in headers {
        h.push_str(l);
        h.push_str("\r\n");
    }
    if let Some(n) = content_length {
        h.push_str(&format!("Content-Length: {n}\r\n"));
    }
    h.push_str("\r\n");
    h.into_bytes()
}

type Headers = Vec<(String, String)>;

/// Status, headers and where the body starts.
fn split_head(buf: &[u8]) -> Option<(u16, Headers, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some((status, headers, end + 4))
}

/// A complete response, if `buf` holds one.
fn parse(buf: &[u8]) -> Option<RawResponse> {
    let (status, headers, at) = split_head(buf)?;
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let rest = &buf[at..];
    let body = if let Some(n) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if rest.len() < n {
            return None;
        }
        rest[..n].to_vec()
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if (100..200).contains(&status) || status == 204 || status == 304 {
        Vec::new()
    } else {
        // Delimited by close: only complete at EOF.
        return None;
    };
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

fn parse_at_eof(buf: &[u8]) -> Option<RawResponse> {
    parse(buf).or_else(|| {
        let (status, headers, at) = split_head(buf)?;
        Some(RawResponse {
            status,
            headers,
            body: buf[at..].to_vec(),
        })
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&b[..eol])
                .ok()?
                .split(';')
                .next()?
                .trim(),
            16,
        )
        .ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// The start of a TLS ClientHello followed by junk: what a confused client sends.
pub const TLS_HELLO: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n";

/// Refused at the HTTP layer: answered with `status`, or the connection was closed.
pub fn refused(r: &Exchange, status: u16) -> bool {
    match r {
        Exchange::Response(r) => r.status == status,
        Exchange::Closed(_) => true,
        Exchange::Stalled => false,
    }
}
