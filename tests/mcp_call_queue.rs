//! The per-user cap on tool calls in flight, through `agentwire serve`'s MCP endpoint with
//! the embedded demo workspace: calls over the cap wait for a slot and then run; calls
//! beyond the queue, or whose wait runs out, are refused with a tool error that says why.

#![allow(clippy::disallowed_methods)]

mod common;

use agentwire::services::mcp::config::McpLimits;
use agentwire::services::serve::{ServeConfig, Server};
use common::mcp_http::{McpHttp, Outcome};
use serde_json::json;
use std::time::{Duration, Instant};

const TOKEN: &str = "call-queue-token-0123456789abcdef";

async fn server(max: usize, wait: Duration) -> (Server, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(ServeConfig {
        token: Some(TOKEN.into()),
        mcp_limits: McpLimits {
            max_calls_per_user: max,
            call_queue_wait: wait,
            ..Default::default()
        },
        ..ServeConfig::loopback(tmp.path().join("state"))
    })
    .await
    .unwrap();
    assert!(server.wait_ready(Duration::from_secs(10)).await);
    (server, tmp)
}

/// Starts `n` concurrent `sleep` calls of `secs` each; returns each one's outcome and time.
async fn sleeps(server: &Server, n: usize, secs: f64) -> Vec<(Outcome, Duration)> {
    // Warm the agent connection so the first calls do not pay for the tunnel's setup.
    let mut warm = McpHttp::new(server.addr, TOKEN);
    let out = warm
        .call(
            "workspace_bash",
            json!({"workspace": "demo", "command": "true"}),
            Duration::from_secs(20),
        )
        .await;
    assert!(matches!(out, Outcome::Ok(_)), "{out:?}");
    let calls = (0..n).map(|i| {
        let addr = server.addr;
        async move {
            // Stagger the starts so the first `max` calls are the ones that get slots.
            tokio::time::sleep(Duration::from_millis(100 * i as u64)).await;
            let started = Instant::now();
            let mut mcp = McpHttp::new(addr, TOKEN);
            let out = mcp
                .call(
                    "workspace_bash",
                    json!({"workspace": "demo", "command": format!("sleep {secs}")}),
                    Duration::from_secs(20),
                )
                .await;
            (out, started.elapsed())
        }
    });
    futures_util::future::join_all(calls).await
}

fn refused(o: &Outcome) -> bool {
    matches!(o, Outcome::Failed(m) if m.contains("tool calls in flight"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_the_cap_wait_for_a_slot_and_the_rest_are_refused() {
    let (server, _tmp) = server(2, Duration::from_secs(5)).await;
    // Two run, two wait for them, the fifth finds the queue full.
    let out = sleeps(&server, 5, 1.0).await;
    for (i, (o, took)) in out.iter().enumerate().take(2) {
        assert!(matches!(o, Outcome::Ok(_)), "call {i}: {o:?}");
        assert!(
            *took < Duration::from_millis(1900),
            "call {i} waited: {took:?}"
        );
    }
    for (i, (o, took)) in out.iter().enumerate().skip(2).take(2) {
        assert!(matches!(o, Outcome::Ok(_)), "queued call {i}: {o:?}");
        assert!(
            *took >= Duration::from_millis(1400),
            "queued call {i} ran without waiting for a slot: {took:?}"
        );
    }
    let (o, took) = &out[4];
    assert!(refused(o), "the fifth call: {o:?}");
    assert!(*took < Duration::from_millis(500), "refused late: {took:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_runs_out_is_refused() {
    let (server, _tmp) = server(1, Duration::from_millis(300)).await;
    let out = sleeps(&server, 2, 2.0).await;
    assert!(matches!(out[0].0, Outcome::Ok(_)), "{:?}", out[0].0);
    let (o, took) = &out[1];
    assert!(refused(o), "the waiting call: {o:?}");
    assert!(
        (Duration::from_millis(250)..Duration::from_millis(1500)).contains(took),
        "refused after {took:?}, not after its 300 ms wait"
    );
    server.shutdown().await;
}
