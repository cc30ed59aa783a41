//! Tool calls through the MCP endpoint of `agentwire serve` (in-process, embedded default:
//! the demo agent reached over the real tunnel): `workspace_read_file` of a 4 KiB file with
//! 1, 16 and 256 concurrent clients, each with its own keep-alive HTTP connection.
//! Prints calls per second and latency p50/p99 per concurrency level.
//!
//! Run: `cargo bench --bench mcp` (`BENCH_SECS` sets seconds per level).

#![allow(clippy::disallowed_methods)]

use agentwire::services::serve::{ServeConfig, Server};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn call(
    send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    token: &str,
    body: &Bytes,
) -> bool {
    send.ready().await.unwrap();
    let req = http::Request::post("/mcp")
        .header(http::header::HOST, addr.to_string())
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .body(Full::new(body.clone()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let ok = resp.status().is_success();
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    ok && memchr_ok(&b)
}

fn memchr_ok(b: &[u8]) -> bool {
    let s = String::from_utf8_lossy(b);
    s.contains("\"isError\":false") && s.contains("xxxx")
}

async fn run() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let data = tempfile::tempdir().unwrap();
    let token = "bench-token-0123456789".to_string();
    let server = Server::start(ServeConfig {
        token: Some(token.clone()),
        ..ServeConfig::loopback(data.path().join("state"))
    })
    .await
    .unwrap();
    assert!(server.wait_ready(Duration::from_secs(15)).await);
    let file = server
        .embedded
        .as_ref()
        .unwrap()
        .workspace_dir
        .join("bench.txt");
    std::fs::write(&file, vec![b'x'; 4096]).unwrap();
    let body = Bytes::from(
        serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "workspace_read_file", "arguments": {"workspace": "demo", "path": file.display().to_string()}}
        })
        .to_string(),
    );
    let addr = server.addr;
    // Warm-up: the tunnel to the agent and the keep-alive pool.
    let mut warm = connect(addr).await;
    for _ in 0..200 {
        assert!(
            call(&mut warm, addr, &token, &body).await,
            "warm-up call failed"
        );
    }
    for clients in [1usize, 16, 256] {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        let start = Instant::now();
        for _ in 0..clients {
            let (lat, token, body) = (lat.clone(), token.clone(), body.clone());
            tasks.spawn(async move {
                let mut send = connect(addr).await;
                let mut mine = Vec::new();
                let mut failed = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if call(&mut send, addr, &token, &body).await {
                        mine.push(t.elapsed());
                    } else {
                        failed += 1;
                    }
                }
                lat.lock().unwrap().extend(mine);
                failed
            });
        }
        let mut failed = 0;
        while let Some(r) = tasks.join_next().await {
            failed += r.unwrap();
        }
        let elapsed = start.elapsed().as_secs_f64();
        let mut lat = std::mem::take(&mut *lat.lock().unwrap());
        lat.sort();
        let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3;
        println!(
            "mcp_read_file_c{clients}_calls_per_sec: {:.0} calls/s",
            lat.len() as f64 / elapsed
        );
        println!("mcp_read_file_c{clients}_p50: {:.2} ms", p(0.5));
        println!("mcp_read_file_c{clients}_p99: {:.2} ms", p(0.99));
        println!("mcp_read_file_c{clients}_failed: {failed} calls");
    }
    server.shutdown().await;
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}
