//! Hostile input against the agent API, sent as raw bytes over a real tunnel connection to
//! tailnet port 4 of an agent running with a root. Every case asserts the exact status and
//! a JSON error body; after each group the agent must still answer, no request may leave a
//! file (or a temporary file) behind, and every rejection must be counted.

#![allow(clippy::disallowed_methods)]

mod common;

use agentwire::runtime::tailnet::AgentConn;
use agentwire::services::agent::client::AgentClient;
use agentwire::services::agent::{Agent, AgentConfig};
use common::cluster::{self, AGENT_A, Cluster};
use common::raw_http::{Exchange, RawResponse, TLS_HELLO, exchange, head, refused};
use std::path::{Path, PathBuf};
use std::time::Duration;

const BOUND: Duration = Duration::from_secs(10);

struct Target {
    conn: AgentConn,
    root: PathBuf,
}

impl Target {
    async fn send(&self, head: Vec<u8>, body: &[u8], half_close: bool) -> Exchange {
        let s = self.conn.dial_tcp(4).await.expect("dial the agent API");
        exchange(s, &head, body, half_close, BOUND).await
    }

    async fn get(&self, target: &str) -> RawResponse {
        self.send(
            head("GET", target, &["Host: agent".into()], None),
            b"",
            false,
        )
        .await
        .response()
    }

    async fn post(&self, target: &str, content_type: &str, body: &[u8]) -> RawResponse {
        let h = head(
            "POST",
            target,
            &[
                "Host: agent".into(),
                format!("Content-Type: {content_type}"),
            ],
            Some(body.len()),
        );
        self.send(h, body, false).await.response()
    }

    fn q(&self, rel: &str) -> String {
        pct(&self.root.join(rel).display().to_string())
    }

    /// The agent still answers, and the root holds exactly the files the test put there.
    async fn still_serves(&self, after: &str) {
        let h = AgentClient::over(&self.conn).health().await;
        assert!(h.is_ok_and(|h| h.status == "ok"), "health after {after}");
        let mut names: Vec<String> = std::fs::read_dir(&self.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["escape", "inside.txt"], "stray files after {after}");
    }
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"/-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Asserts the status and a JSON error body with a message.
#[track_caller]
fn rejected(r: &RawResponse, status: u16, what: &str) {
    assert_eq!(
        r.status,
        status,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_else(|_| {
        panic!(
            "{what}: error body is not JSON: {}",
            String::from_utf8_lossy(&r.body)
        )
    });
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: no message: {v}"
    );
}

async fn start() -> (
    Cluster,
    Agent,
    agentwire::runtime::tailnet::Tailnet,
    tempfile::TempDir,
) {
    let c = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let root = root.canonicalize().unwrap();
    let id = AGENT_A.parse().unwrap();
    let mut cfg = AgentConfig::new(&c.url(), &cluster::agent_token(AGENT_A), id, root.clone());
    cfg.tailnet.udp_listen = "127.0.0.1:0".parse().unwrap();
    cfg.api.root = Some(root);
    let agent = Agent::start(cfg).unwrap();
    assert!(agent.wait_ready(Duration::from_secs(10)).await);
    let client = c.client(cluster::ALICE_TOKEN);
    (c, agent, client, dir)
}

fn outside_dir(base: &Path) -> PathBuf {
    let o = base.join("outside");
    std::fs::create_dir_all(&o).unwrap();
    std::fs::write(o.join("secret"), "secret").unwrap();
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_to_the_agent_api() {
    let (cluster, agent, client, dir) = start().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let conn = client
        .agent_conn(AGENT_A.parse().unwrap(), deadline)
        .await
        .unwrap();
    let root = dir.path().join("root").canonicalize().unwrap();
    let outside = outside_dir(dir.path());
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    std::fs::write(root.join("inside.txt"), "inside\n").unwrap();
    let t = Target {
        conn,
        root: root.clone(),
    };
    t.still_serves("start").await;
    let before = AgentClient::over(&t.conn)
        .health()
        .await
        .unwrap()
        .rejected_requests;
    let mut expected_rejections = 0u64;
    macro_rules! reject {
        ($r:expr, $status:expr, $what:expr) => {{
            let r = $r;
            rejected(&r, $status, $what);
            expected_rejections += 1;
        }};
    }

    // --- Paths ---
    reject!(
        t.get("/api/v0/read-file?path=inside.txt").await,
        400,
        "relative path"
    );
    reject!(t.get("/api/v0/read-file?path=").await, 400, "empty path");
    reject!(t.get("/api/v0/read-file").await, 400, "no path");
    reject!(
        t.get(&format!(
            "/api/v0/read-file?path={}",
            t.q("../outside/secret")
        ))
        .await,
        403,
        "`..` out of the root"
    );
    reject!(
        t.get("/api/v0/read-file?path=/etc/passwd").await,
        403,
        "absolute path outside the root"
    );
    reject!(
        t.get(&format!("/api/v0/read-file?path={}", t.q("escape/secret")))
            .await,
        403,
        "symlink out of the root"
    );
    reject!(
        t.get(&format!("/api/v0/ls?path={}", t.q("escape"))).await,
        403,
        "listing through a symlink out"
    );
    reject!(
        t.get(&format!("/api/v0/read-file?path={}%FF%FE", t.q("")))
            .await,
        400,
        "invalid UTF-8 in the path"
    );
    reject!(
        t.get(&format!("/api/v0/read-file?path={}%00x", t.q("inside.txt")))
            .await,
        400,
        "NUL in the path"
    );
    reject!(
        t.get(&format!("/api/v0/read-file?path={}", t.q("missing")))
            .await,
        404,
        "missing file"
    );
    reject!(
        t.get(&format!("/api/v0/read-file?path={}", t.q(""))).await,
        400,
        "reading a directory"
    );
    reject!(
        t.get(&format!(
            "/api/v0/read-file?path={}&offset=-1",
            t.q("inside.txt")
        ))
        .await,
        400,
        "negative offset"
    );
    reject!(
        t.get(&format!(
            "/api/v0/read-file?path={}&limit=lots",
            t.q("inside.txt")
        ))
        .await,
        400,
        "limit not a number"
    );
    reject!(
        t.post(
            &format!("/api/v0/write-file?path={}", t.q("escape/planted")),
            "application/octet-stream",
            b"x"
        )
        .await,
        403,
        "write through a symlink out"
    );
    reject!(
        t.post(
            "/api/v0/write-file?path=/tmp/planted-by-a-hostile-test",
            "application/octet-stream",
            b"x"
        )
        .await,
        403,
        "write outside the root"
    );
    assert!(
        !outside.join("planted").exists(),
        "a write escaped the root"
    );
    let ok = t
        .get(&format!(
            "/api/v0/read-file?path={}",
            t.q("./sub/../inside.txt")
        ))
        .await;
    assert_eq!(
        (ok.status, ok.body.as_slice()),
        (200, b"inside\n".as_slice()),
        "`.` and `..` inside the root"
    );
    t.still_serves("path tricks").await;

    // --- JSON bodies ---
    let edit = "/api/v0/edit-files";
    reject!(
        t.post(edit, "application/json", br#"{"files":[{"path":"#)
            .await,
        400,
        "truncated JSON"
    );
    reject!(
        t.post(
            edit,
            "application/json",
            format!("{{\"files\":{}{}}}", "[".repeat(50_000), "]".repeat(50_000)).as_bytes()
        )
        .await,
        400,
        "deep nesting"
    );
    reject!(
        t.post(
            edit,
            "application/json",
            b"{\"files\":[{\"path\":\"/\xff\xfe\",\"edits\":[]}]}"
        )
        .await,
        400,
        "invalid UTF-8"
    );
    reject!(
        t.post(edit, "application/json", br#"{"files":"all of them"}"#)
            .await,
        400,
        "files is a string"
    );
    reject!(
        t.post(
            edit,
            "application/json",
            br#"{"files":[{"path":5,"edits":[]}]}"#
        )
        .await,
        400,
        "path is a number"
    );
    reject!(
        t.post(edit, "text/plain", br#"{"files":[]}"#).await,
        415,
        "not declared as JSON"
    );
    reject!(
        t.post(
            "/api/v0/processes/start",
            "application/json",
            br#"{"command":5}"#
        )
        .await,
        400,
        "command is a number"
    );
    reject!(
        t.post(
            "/api/v0/processes/start",
            "application/json",
            br#"{"command":""}"#
        )
        .await,
        400,
        "empty command"
    );
    reject!(
        t.post(
            "/api/v0/processes/start",
            "application/json",
            br#"{"command":"true","timeout_ms":"soon"}"#
        )
        .await,
        400,
        "timeout is a string"
    );
    reject!(
        t.post(
            "/api/v0/processes/p-1/signal",
            "application/json",
            br#"{"signal":"explode"}"#
        )
        .await,
        400,
        "unknown signal"
    );
    reject!(
        t.get("/api/v0/processes/..%2F..%2Fetc/output").await,
        404,
        "process id with a path in it"
    );
    reject!(
        t.get("/api/v0/processes/99999999999999999999/output").await,
        404,
        "absurd process id"
    );
    let conflict = format!(
        r#"{{"files":[{{"path":"{}","edits":[{{"search":"absent","replace":"x"}}]}}]}}"#,
        root.join("inside.txt").display()
    );
    reject!(
        t.post(edit, "application/json", conflict.as_bytes()).await,
        409,
        "edit that does not apply"
    );
    let edits: Vec<String> = (0..10)
        .map(|_| r#"{"search":"e","replace":"eeeeeeeeee","replace_all":true}"#.to_string())
        .collect();
    let bomb = format!(
        r#"{{"files":[{{"path":"{}","edits":[{}]}}]}}"#,
        root.join("inside.txt").display(),
        edits.join(",")
    );
    reject!(
        t.post(edit, "application/json", bomb.as_bytes()).await,
        413,
        "edits that grow the file tenfold ten times"
    );
    assert_eq!(std::fs::read(root.join("inside.txt")).unwrap(), b"inside\n");
    t.still_serves("JSON bodies").await;

    // --- Bodies ---
    let big = vec![b'x'; (16 << 20) + 1];
    reject!(
        t.post(
            &format!("/api/v0/write-file?path={}", t.q("big")),
            "application/octet-stream",
            &big
        )
        .await,
        413,
        "body over 16 MiB"
    );
    let h = head(
        "POST",
        &format!("/api/v0/write-file?path={}", t.q("declared")),
        &["Host: agent".into(), "Content-Length: 100000000000".into()],
        None,
    );
    reject!(
        t.send(h, b"xxxx", false).await.response(),
        413,
        "declared 100 GB"
    );
    let h = head(
        "POST",
        &format!("/api/v0/write-file?path={}", t.q("cut")),
        &["Host: agent".into()],
        Some(1 << 20),
    );
    let r = t.send(h, &[b'y'; 1000], true).await;
    match r {
        Exchange::Response(r) => {
            rejected(&r, 400, "upload cut off");
            expected_rejections += 1;
        }
        Exchange::Closed(_) => {}
        Exchange::Stalled => panic!("upload cut off: stalled"),
    }
    t.still_serves("oversized and cut-off bodies").await;

    // --- Headers and framing ---
    reject!(
        t.send(
            head("PATCH", "/api/v0/ls", &["Host: agent".into()], None),
            b"",
            false
        )
        .await
        .response(),
        405,
        "unknown method"
    );
    reject!(
        t.get("/api/v0/../../etc/passwd").await,
        404,
        "path traversal in the URL"
    );
    reject!(t.get("/nothing-here").await, 404, "unknown endpoint");
    let long = format!("X-Junk: {}", "a".repeat(1 << 20));
    let r = t
        .send(
            head("GET", "/api/v0/health", &["Host: agent".into(), long], None),
            b"",
            false,
        )
        .await;
    assert!(refused(&r, 431), "1 MiB header: {r:?}");
    let many: Vec<String> = (0..500).map(|i| format!("X-H{i}: v")).collect();
    let r = t
        .send(head("GET", "/api/v0/health", &many, None), b"", false)
        .await;
    assert!(refused(&r, 431), "500 headers: {r:?}");
    let r = t
        .send(
            head(
                "POST",
                &format!("/api/v0/write-file?path={}", t.q("smuggled")),
                &["Host: agent".into(), "Transfer-Encoding: chunked".into()],
                Some(5),
            ),
            b"0\r\n\r\n",
            false,
        )
        .await;
    // RFC 9112 §6.3: Transfer-Encoding wins over Content-Length (or the request is refused).
    match &r {
        Exchange::Response(r) if r.status == 200 => {
            assert_eq!(
                r.json()["bytes_written"],
                0,
                "CL + TE: the body was not read as chunked"
            );
            assert_eq!(r.header("connection"), Some("close"));
            std::fs::remove_file(root.join("smuggled")).unwrap();
        }
        Exchange::Response(r) => assert_eq!(r.status, 400, "CL + TE"),
        Exchange::Closed(_) => {}
        Exchange::Stalled => panic!("CL + TE: stalled"),
    }
    let r = t.send(TLS_HELLO.to_vec(), b"", false).await;
    assert!(refused(&r, 400), "TLS hello: {r:?}");
    t.still_serves("header abuse").await;

    // Every rejection that reached the API was counted.
    let after = AgentClient::over(&t.conn)
        .health()
        .await
        .unwrap()
        .rejected_requests;
    assert_eq!(after - before, expected_rejections, "rejections counted");

    drop(t);
    agent.shutdown().await;
    client.shutdown().await;
    cluster.stop().await;
}

#[tokio::test]
async fn half_open_requests_are_cut_by_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (cluster, agent, client, _dir) = start().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let conn = client
        .agent_conn(AGENT_A.parse().unwrap(), deadline)
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut s = conn.dial_tcp(4).await.expect("dial the agent API");
        s.write_all(b"GET /api/v0/health HTTP/1.1\r\nHost: agent\r\nX-Slow: ")
            .await
            .unwrap();
        held.push(s);
    }
    let limit = agentwire::services::agent::api::HEADER_READ_TIMEOUT;
    for mut s in held {
        let mut buf = [0u8; 256];
        let r = tokio::time::timeout(limit + Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(r.is_ok(), "a half-open request outlived the header timeout");
    }
    let took = start.elapsed();
    println!("agent_api_half_open_closed_after: {} ms", took.as_millis());
    assert!(
        took >= limit - Duration::from_secs(1),
        "closed too early: {took:?}"
    );
    // A head larger than the cap is refused, and the agent still serves.
    let big = format!("X-Big: {}\r\n", "a".repeat(100 * 1024));
    let t = Target {
        conn,
        root: std::path::PathBuf::new(),
    };
    // hyper answers 431 and closes; over the tunnel the close can overtake the answer
    // while the rest of the head is still being sent, which the client sees as a reset.
    let x = t
        .send(
            head("GET", "/api/v0/health", &["Host: agent".into(), big], None),
            b"",
            false,
        )
        .await;
    match x {
        Exchange::Response(r) => assert_eq!(r.status, 431, "{r:?}"),
        Exchange::Closed(_) => {}
        Exchange::Stalled => panic!("an oversized head was neither refused nor closed"),
    }
    assert!(AgentClient::over(&t.conn).health().await.is_ok());
    drop(t);
    drop(agent);
    drop(client);
    cluster.stop().await;
}
