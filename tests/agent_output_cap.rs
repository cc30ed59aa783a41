//! A command printing 100 MB through the agent API: the output is capped, not buffered.
//! In its own test binary so the memory figure is this test's alone.

#![allow(clippy::disallowed_methods)]

use agentwire::services::agent::api::{self, AgentApi, AgentApiConfig};
use agentwire::services::agent::client::{AgentClient, TcpDialer};
use agentwire::services::agent::types::*;
use std::sync::Arc;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_megabytes_of_output_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AgentApiConfig {
        workdir: dir.path().to_path_buf(),
        process_output_cap: 1 << 20,
        ..Default::default()
    };
    let api = AgentApi::new(cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(api::serve(
        listener,
        api::router(api.clone()),
        std::future::pending(),
    ));
    let client = AgentClient::new(Arc::new(TcpDialer(addr)));
    client.health().await.unwrap();
    let rss0 = rss_kib();
    let out = client
        .start_process(&StartProcessRequest {
            command: "head -c 100000000 /dev/zero | tr '\\0' a; echo; echo tail-marker".into(),
            timeout_ms: Some(60_000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(0));
    assert!(out.output.len() <= 1 << 20);
    assert!(out.output.ends_with("tail-marker\n"));
    assert!(out.dropped_bytes >= 100_000_000 - (1 << 20));
    let grown = rss_kib().saturating_sub(rss0);
    assert!(
        grown < 32 << 10,
        "memory grew by {grown} KiB for 100 MB of output"
    );
}
