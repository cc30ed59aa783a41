//! The agent API through a real `AgentConn` over the tunnel: the agent is a tailnet node
//! (coordinator, DERP, WireGuard, netstack) and every call crosses it.

#![allow(clippy::disallowed_methods)]

mod common;

use agentwire::services::agent::client::{AgentClient, AgentClientError};
use agentwire::services::agent::types::*;
use bytes::Bytes;
use common::cluster::{self, AGENT_A, Cluster};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn soon() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_through_the_tunnel() {
    let c = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let agent = cluster::api_agent(&c.url(), AGENT_A, &root).await;
    let client = c.client(cluster::ALICE_TOKEN);
    let conn = client
        .agent_conn(AGENT_A.parse().unwrap(), soon())
        .await
        .unwrap();
    let api = AgentClient::over(&conn);
    let p = |rel: &str| root.join(rel).display().to_string();

    assert_eq!(api.health().await.unwrap().status, "ok");

    // Binary round trip and a large file.
    let bin: Vec<u8> = (0..=255u8).cycle().take(100_003).collect();
    assert!(
        api.write_file(&p("d/bin"), Bytes::from(bin.clone()))
            .await
            .unwrap()
            .created
    );
    assert_eq!(api.read_file(&p("d/bin"), 0, None).await.unwrap().1, bin);
    let big: Vec<u8> = (0..(12u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    api.write_file(&p("big"), Bytes::from(big.clone()))
        .await
        .unwrap();
    let (meta, back) = api.read_file(&p("big"), 0, Some(12 << 20)).await.unwrap();
    assert_eq!(meta.size, 12 << 20);
    assert!(back == big, "large file differs after the round trip");

    // Listing and lines.
    let ls = api.ls(&p("")).await.unwrap();
    assert_eq!(
        ls.entries
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["big", "d"]
    );
    api.write_file(&p("t.txt"), Bytes::from_static(b"one\ntwo\nthree\n"))
        .await
        .unwrap();
    assert_eq!(
        api.read_file_lines(&p("t.txt"), 1, Some(1))
            .await
            .unwrap()
            .lines,
        ["two"]
    );

    // Edits: applied, conflict, ambiguity.
    let req = |search: &str, all: bool| EditFilesRequest {
        files: vec![FileEdits {
            path: p("t.txt"),
            edits: vec![Edit {
                search: search.into(),
                replace: "X".into(),
                replace_all: all,
            }],
        }],
        include_diff: true,
    };
    let r = api.edit_files(&req("two", false)).await.unwrap();
    assert!(r.files[0].diff.as_deref().unwrap().contains("+X"));
    let conflict = api.edit_files(&req("absent", false)).await.unwrap_err();
    assert!(matches!(
        conflict,
        AgentClientError::Status { code: 409, .. }
    ));
    api.write_file(&p("t.txt"), Bytes::from_static(b"a a"))
        .await
        .unwrap();
    let ambiguous = api.edit_files(&req("a", false)).await.unwrap_err();
    assert!(
        matches!(&ambiguous, AgentClientError::Status { code: 409, message } if message.contains("ambiguous"))
    );

    // Concurrent writes keep the file whole.
    let versions: Vec<Vec<u8>> = (0..6u8).map(|i| vec![b'a' + i; 200_000]).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for v in versions.clone() {
        let (api, path) = (AgentClient::over(&conn), p("shared"));
        tasks.spawn(async move {
            for _ in 0..3 {
                api.write_file(&path, Bytes::from(v.clone())).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let (_, got) = api.read_file(&p("shared"), 0, None).await.unwrap();
    assert!(versions.iter().any(|v| v[..] == got[..]));

    // Processes: foreground with a capped 100 MB of output, background with signal.
    let out = api
        .start_process(&StartProcessRequest {
            command: "head -c 100000000 /dev/zero | tr '\\0' z; echo; echo done".into(),
            timeout_ms: Some(60_000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(out.exit_code, Some(0));
    assert!(out.output.len() <= 1 << 20 && out.output.ends_with("done\n"));
    assert!(out.dropped_bytes > 98_000_000);
    let bg = api
        .start_process(&StartProcessRequest {
            command: "echo ready; sleep 60".into(),
            workdir: Some(p("")),
            background: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let o = api.process_output(&bg.id, 0, 5000).await.unwrap();
    assert_eq!(o.output, "ready\n");
    assert!(
        api.signal_process(&bg.id, SignalName::Kill)
            .await
            .unwrap()
            .delivered
    );
    let o = api
        .process_output(&bg.id, o.next_offset, 5000)
        .await
        .unwrap();
    assert!(!o.running);
    assert_eq!(o.signal, Some(9));
    assert!(api.list_processes().await.unwrap().processes.len() >= 2);

    // Listening ports on the agent host.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    assert!(
        api.listening_ports()
            .await
            .unwrap()
            .ports
            .iter()
            .any(|p| p.port == port)
    );

    // Relative paths are refused.
    assert!(matches!(
        api.ls("relative").await.unwrap_err(),
        AgentClientError::Status { code: 400, .. }
    ));

    drop(api);
    drop(conn);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forwarding_reaches_a_local_server() {
    let c = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = cluster::api_agent(&c.url(), AGENT_A, dir.path()).await;
    // A local TCP server on the agent's host (this machine's loopback).
    let local = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = local.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = local.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf[..n].make_ascii_uppercase();
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let client = c.client(cluster::ALICE_TOKEN);
    let conn = client
        .agent_conn(AGENT_A.parse().unwrap(), soon())
        .await
        .unwrap();
    let mut s = conn.dial_tcp(port).await.unwrap();
    s.write_all(b"hello through the tunnel").await.unwrap();
    let mut got = vec![0u8; 24];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"HELLO THROUGH THE TUNNEL");
    // A megabyte each way.
    let data = vec![b'q'; 1 << 20];
    let (mut r, mut w) = tokio::io::split(s);
    let writer = tokio::spawn(async move { w.write_all(&data).await });
    let mut back = vec![0u8; 1 << 20];
    r.read_exact(&mut back).await.unwrap();
    writer.await.unwrap().unwrap();
    assert!(back.iter().all(|b| *b == b'Q'));
    // Reserved ports are refused, and so is a port nobody listens on.
    let t = Instant::now();
    assert!(conn.dial_tcp(5).await.is_err());
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = conn.dial_tcp(closed).await.unwrap();
    let mut b = [0u8; 1];
    assert!(
        matches!(s.read(&mut b).await, Ok(0) | Err(_)),
        "nothing listens: the connection is closed"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}
