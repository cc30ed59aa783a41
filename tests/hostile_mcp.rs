//! Hostile input against the MCP endpoint of a running `agentwire serve` (embedded default:
//! its agent is rooted at the workspace directory). Every case is sent as raw bytes and its
//! exact response class asserted; after every case the server must still answer a health
//! check and a real tool call. The rejections must show up in `/metrics`.

#![allow(clippy::disallowed_methods)]

mod common;

use common::mcp_http::{McpHttp, Outcome, embedded_server};
use common::raw_http::{Exchange, RawResponse, TLS_HELLO, exchange, head, refused};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

const TOKEN: &str = "hostile-token-0123456789abcdef";
const BOUND: Duration = Duration::from_secs(10);

struct Target {
    addr: SocketAddr,
    dir: String,
}

impl Target {
    /// The headers a well-behaved client sends, minus the ones a case replaces.
    fn headers(&self, skip: &[&str]) -> Vec<String> {
        let all = [
            ("host", format!("Host: {}", self.addr)),
            ("authorization", format!("Authorization: Bearer {TOKEN}")),
            ("content-type", "Content-Type: application/json".to_string()),
            (
                "accept",
                "Accept: application/json, text/event-stream".to_string(),
            ),
            ("version", "Mcp-Protocol-Version: 2025-11-25".to_string()),
        ];
        all.into_iter()
            .filter(|(k, _)| !skip.contains(k))
            .map(|(_, v)| v)
            .collect()
    }

    async fn send(&self, head: Vec<u8>, body: &[u8], half_close: bool) -> Exchange {
        let s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        exchange(s, &head, body, half_close, BOUND).await
    }

    /// POST /mcp with the usual headers plus `extra`, minus `skip`.
    async fn post(&self, path: &str, skip: &[&str], extra: &[String], body: &[u8]) -> Exchange {
        let mut h = self.headers(skip);
        h.extend_from_slice(extra);
        self.send(head("POST", path, &h, Some(body.len())), body, false)
            .await
    }

    async fn call(&self, tool: &str, args: serde_json::Value) -> RawResponse {
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": tool, "arguments": args}});
        self.post("/mcp", &[], &[], body.to_string().as_bytes())
            .await
            .response()
    }

    /// Still serving: health, and a real tool call through the tunnel.
    async fn still_serves(&self, after: &str) {
        let h = self
            .send(
                head("GET", "/healthz", &[format!("Host: {}", self.addr)], None),
                b"",
                false,
            )
            .await;
        assert_eq!(h.response().status, 200, "health after {after}");
        let mut c = McpHttp::new(self.addr, TOKEN);
        let o = c
            .call(
                "workspace_ls",
                json!({"workspace": "demo", "path": self.dir}),
                BOUND,
            )
            .await;
        assert!(
            matches!(o, Outcome::Ok(_)),
            "tool call after {after}: {o:?}"
        );
    }
}

/// A JSON-RPC error response (HTTP 200 or 4xx) with this code.
fn rpc_error(r: &RawResponse) -> Option<i64> {
    serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()?
        .get("error")?
        .get("code")?
        .as_i64()
}

/// A tool result with `isError: true`; returns its text.
fn tool_error(r: &RawResponse) -> String {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["result"]["isError"], true, "expected a tool error: {v}");
    v["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[track_caller]
fn status(e: Exchange) -> u16 {
    e.response().status
}

fn message(r: &RawResponse) -> String {
    r.json()["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_exact_answers_and_the_server_keeps_serving() {
    let (server, _tmp) = embedded_server(TOKEN).await;
    let dir = server
        .embedded
        .as_ref()
        .unwrap()
        .workspace_dir
        .canonicalize()
        .unwrap();
    let t = Target {
        addr: server.addr,
        dir: dir.display().to_string(),
    };
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "secret").unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.join("escape")).unwrap();
    std::fs::write(dir.join("inside.txt"), "inside").unwrap();
    t.still_serves("start").await;

    // --- JSON ---
    let r = t
        .post(
            "/mcp",
            &[],
            &[],
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/ca"#,
        )
        .await
        .response();
    assert_eq!(
        (r.status, rpc_error(&r)),
        (400, Some(-32700)),
        "malformed JSON: {r:?}"
    );
    t.still_serves("malformed JSON").await;

    let deep = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let r = t.post("/mcp", &[], &[], deep.as_bytes()).await.response();
    assert_eq!(
        (r.status, rpc_error(&r)),
        (400, Some(-32700)),
        "deep nesting: {r:?}"
    );
    t.still_serves("deep nesting").await;

    let mut bad_utf8 = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"workspace_ls","arguments":{"workspace":"demo","path":"/"#.to_vec();
    bad_utf8.extend_from_slice(b"\xff\xfe\"}}}");
    let r = t.post("/mcp", &[], &[], &bad_utf8).await.response();
    assert_eq!(
        (r.status, rpc_error(&r)),
        (400, Some(-32700)),
        "invalid UTF-8: {r:?}"
    );
    t.still_serves("invalid UTF-8").await;

    let surrogate = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"workspace_ls","arguments":{"workspace":"demo","path":"/\ud800"}}}"#;
    let r = t.post("/mcp", &[], &[], surrogate).await.response();
    assert_eq!(
        (r.status, rpc_error(&r)),
        (400, Some(-32700)),
        "lone surrogate: {r:?}"
    );

    for (what, body) in [
        (
            "id is an object",
            r#"{"jsonrpc":"2.0","id":{},"method":"tools/list"}"#,
        ),
        (
            "method is a number",
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
        ),
        (
            "not JSON-RPC 2.0",
            r#"{"jsonrpc":"1.0","id":1,"method":"tools/list"}"#,
        ),
        ("a bare array", r#"[1,2,3]"#),
        (
            "a batch",
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#,
        ),
        ("a string", r#""tools/list""#),
        ("empty", ""),
    ] {
        let r = t.post("/mcp", &[], &[], body.as_bytes()).await.response();
        assert_eq!(r.status, 400, "{what}: {r:?}");
        assert!(rpc_error(&r).is_some(), "{what}: no JSON-RPC error: {r:?}");
    }
    t.still_serves("wrong JSON-RPC shapes").await;

    // Wrong argument types are the caller's mistake, reported as a tool error it can read.
    for (what, args) in [
        ("path is a number", json!({"workspace": "demo", "path": 5})),
        ("workspace missing", json!({"path": "/"})),
        (
            "workspace is an array",
            json!({"workspace": ["demo"], "path": "/"}),
        ),
        (
            "limit is negative",
            json!({"workspace": "demo", "path": "/x", "limit": -1}),
        ),
        (
            "limit is a string",
            json!({"workspace": "demo", "path": "/x", "limit": "10"}),
        ),
    ] {
        let text = tool_error(&t.call("workspace_read_file", args).await);
        assert!(!text.is_empty(), "{what}: empty error");
    }
    let r = t.call("no_such_tool", json!({})).await;
    assert_eq!(rpc_error(&r), Some(-32602), "unknown tool: {r:?}");
    let r = t.post("/mcp", &[], &[], br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"workspace_ls","arguments":"demo"}}"#).await.response();
    assert!(
        r.status == 400 || rpc_error(&r) == Some(-32602),
        "arguments not an object: {r:?}"
    );
    t.still_serves("wrong argument types").await;

    // --- Bodies ---
    let big = vec![b' '; 9 << 20];
    assert_eq!(
        status(t.post("/mcp", &[], &[], &big).await),
        413,
        "9 MiB body"
    );
    let h = {
        let mut h = t.headers(&[]);
        h.push("Content-Length: 100000000000".into());
        head("POST", "/mcp", &h, None)
    };
    let r = t.send(h, &[b'{'; 4096], false).await.response();
    assert_eq!(r.status, 413, "declared 100 GB body: {r:?}");
    let h = {
        let mut h = t.headers(&[]);
        h.push("Transfer-Encoding: chunked".into());
        head("POST", "/mcp", &h, None)
    };
    let mut chunked = Vec::new();
    for _ in 0..10 {
        chunked.extend_from_slice(format!("{:x}\r\n", 1 << 20).as_bytes());
        chunked.extend_from_slice(&vec![b' '; 1 << 20]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(
        status(t.send(h, &chunked, false).await),
        413,
        "10 MiB chunked body"
    );
    let h = {
        let mut h = t.headers(&[]);
        h.push("Content-Length: 1000".into());
        head("POST", "/mcp", &h, None)
    };
    let r = t
        .send(h, br#"{"jsonrpc":"2.0","id":1,"#, true)
        .await
        .response();
    assert_eq!(r.status, 400, "body cut off: {r:?}");
    t.still_serves("oversized and truncated bodies").await;

    // --- Headers ---
    let r = t
        .post("/mcp", &["authorization"], &[], b"{}")
        .await
        .response();
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{r:?}"
    );
    for (what, auth) in [
        ("empty bearer", "Authorization: Bearer".to_string()),
        ("basic", format!("Authorization: Basic {TOKEN}")),
        ("wrong token", "Authorization: Bearer nope".to_string()),
        ("token with junk", format!("Authorization: Bearer {TOKEN}x")),
        ("NUL in header", "Authorization: Bearer \u{1}".to_string()),
    ] {
        let r = t.post("/mcp", &["authorization"], &[auth], b"{}").await;
        match r {
            Exchange::Response(r) => assert!(r.status == 401 || r.status == 400, "{what}: {r:?}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    let r = t
        .post(
            &format!("/mcp?access_token={TOKEN}&token={TOKEN}"),
            &["authorization"],
            &[],
            b"{}",
        )
        .await;
    assert_eq!(
        status(r),
        401,
        "token in the query string is never accepted"
    );
    let r = t
        .post("/mcp", &["host"], &["Host: evil.example".into()], b"{}")
        .await;
    assert_eq!(status(r), 403, "foreign Host");
    let r = t
        .post("/mcp", &[], &["Origin: http://evil.example".into()], b"{}")
        .await;
    assert_eq!(status(r), 403, "foreign Origin");
    let r = t
        .post(
            "/mcp",
            &["content-type"],
            &["Content-Type: text/plain".into()],
            b"{}",
        )
        .await;
    assert_eq!(status(r), 415, "text/plain body");
    let r = t
        .post("/mcp", &["accept"], &["Accept: text/html".into()], b"{}")
        .await;
    assert_eq!(status(r), 406, "Accept without JSON or SSE");
    let ping = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let r = t
        .post(
            "/mcp",
            &["version"],
            &["Mcp-Protocol-Version: 1999-01-01".into()],
            ping,
        )
        .await;
    assert_eq!(status(r), 400, "unknown protocol version");
    let r = t
        .post("/mcp?toolset=evil%00", &[], &[], ping)
        .await
        .response();
    assert_eq!(
        (r.status, message(&r)),
        (400, "Invalid toolset: evil\0".to_string())
    );
    let long = format!("X-Junk: {}", "a".repeat(1 << 20));
    let r = t.post("/mcp", &[], &[long], ping).await;
    assert!(refused(&r, 431), "1 MiB header: {r:?}");
    let many: Vec<String> = (0..500).map(|i| format!("X-H{i}: v")).collect();
    let r = t.post("/mcp", &[], &many, ping).await;
    assert!(refused(&r, 431), "500 headers: {r:?}");
    let r = t
        .post("/mcp", &[], &["Transfer-Encoding: chunked".into()], ping)
        .await;
    assert_eq!(
        status(r),
        400,
        "both Content-Length and chunked (smuggling)"
    );
    let r = t
        .send(
            b"POST /mcp HTTP/1.1\r\nContent-Length: ten\r\n\r\n".to_vec(),
            b"",
            false,
        )
        .await;
    assert_eq!(status(r), 400, "non-numeric Content-Length");
    let r = t.send(TLS_HELLO.to_vec(), b"", false).await;
    assert!(refused(&r, 400), "TLS hello: {r:?}");
    let r = t
        .send(head("GET", "/mcp", &t.headers(&[]), None), b"", false)
        .await
        .response();
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")), "GET");
    assert_eq!(
        status(
            t.send(head("DELETE", "/mcp", &t.headers(&[]), None), b"", false)
                .await
        ),
        405,
        "DELETE"
    );
    t.still_serves("header abuse").await;

    // Slow clients: many connections that never finish their headers hold nothing others need.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut c = tokio::net::TcpStream::connect(t.addr).await.unwrap();
        use tokio::io::AsyncWriteExt;
        c.write_all(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Le")
            .await
            .unwrap();
        slow.push(c);
    }
    t.still_serves("200 stalled clients").await;
    drop(slow);

    // --- Paths (the agent is rooted at the workspace directory) ---
    let read = |path: String| {
        t.call(
            "workspace_read_file",
            json!({"workspace": "demo", "path": path}),
        )
    };
    let inside = tool_error(&read("inside.txt".into()).await);
    assert!(inside.contains("absolute"), "relative path: {inside}");
    let up = tool_error(&read(format!("{}/../../../../etc/passwd", t.dir)).await);
    assert!(up.contains("outside"), "`..` out of the root: {up}");
    let abs = tool_error(&read("/etc/passwd".into()).await);
    assert!(
        abs.contains("outside"),
        "absolute path outside the root: {abs}"
    );
    let link = tool_error(&read(format!("{}/escape/secret", t.dir)).await);
    assert!(link.contains("outside"), "symlink out of the root: {link}");
    let w = t.call("workspace_write_file", json!({"workspace": "demo", "path": format!("{}/escape/planted", t.dir), "content": "x"})).await;
    assert!(tool_error(&w).contains("outside"));
    assert!(
        !outside.path().join("planted").exists(),
        "a write escaped the root"
    );
    let nul = tool_error(&read(format!("{}/inside.txt\0/x", t.dir)).await);
    assert!(!nul.is_empty());
    let ok = t
        .call(
            "workspace_read_file",
            json!({"workspace": "demo", "path": format!("{}/inside.txt", t.dir)}),
        )
        .await;
    assert_eq!(
        ok.json()["result"]["structuredContent"]["content"],
        "inside"
    );
    let other = tool_error(
        &t.call(
            "workspace_ls",
            json!({"workspace": "someone/else", "path": t.dir}),
        )
        .await,
    );
    assert!(!other.is_empty());
    t.still_serves("path tricks").await;

    // Every rejection was counted.
    let m = t
        .send(
            head("GET", "/metrics", &[format!("Host: {}", t.addr)], None),
            b"",
            false,
        )
        .await
        .response();
    let text = String::from_utf8_lossy(&m.body).to_string();
    for status in [400, 401, 403, 405, 406, 413, 415] {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "agentwire_mcp_responses_total{{status=\"{status}\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("no count for {status}:\n{text}"));
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 1.0, "{line}");
    }
    server.shutdown().await;
}
