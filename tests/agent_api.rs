//! The agent API through its typed client against a real server on loopback.

#![allow(clippy::disallowed_methods)]

use agentwire::services::agent::api::{self, AgentApi, AgentApiConfig};
use agentwire::services::agent::client::{AgentClient, AgentClientError, TcpDialer};
use agentwire::services::agent::types::*;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Server {
    client: AgentClient,
    api: AgentApi,
    dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Server {
    fn p(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }
}

async fn start(tweak: impl FnOnce(&mut AgentApiConfig, &Path)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = AgentApiConfig {
        workdir: dir.path().to_path_buf(),
        ..Default::default()
    };
    tweak(&mut cfg, dir.path());
    let api = AgentApi::new(cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(api::serve(listener, api::router(api.clone()), async move {
        let _ = rx.await;
    }));
    let client = AgentClient::new(Arc::new(TcpDialer(addr)));
    Server {
        client,
        api,
        dir,
        _stop: tx,
    }
}

fn status(e: AgentClientError) -> u16 {
    match e {
        AgentClientError::Status { code, .. } => code,
        other => panic!("expected an HTTP status error, got {other}"),
    }
}

#[tokio::test]
async fn health_and_listing() {
    let s = start(|_, _| {}).await;
    let h = s.client.health().await.unwrap();
    assert_eq!(h.status, "ok");
    std::fs::write(s.dir.path().join("b.txt"), "bb").unwrap();
    std::fs::create_dir(s.dir.path().join("a")).unwrap();
    std::os::unix::fs::symlink("b.txt", s.dir.path().join("c")).unwrap();
    let ls = s.client.ls(&s.p("")).await.unwrap();
    let names: Vec<_> = ls
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.kind))
        .collect();
    assert_eq!(
        names,
        vec![
            ("a", EntryKind::Dir),
            ("b.txt", EntryKind::File),
            ("c", EntryKind::Symlink)
        ]
    );
    assert_eq!(ls.entries[1].size, 2);
    assert_eq!(ls.entries[2].symlink_target.as_deref(), Some("b.txt"));
    assert_eq!(status(s.client.ls("relative/path").await.unwrap_err()), 400);
    assert_eq!(status(s.client.ls(&s.p("missing")).await.unwrap_err()), 404);
    assert_eq!(status(s.client.ls(&s.p("b.txt")).await.unwrap_err()), 400);
}

#[tokio::test]
async fn binary_and_large_files_round_trip() {
    let s = start(|c, _| c.body_limit = 64 << 20).await;
    let bin: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let w = s
        .client
        .write_file(&s.p("sub/dir/bin.dat"), Bytes::from(bin.clone()))
        .await
        .unwrap();
    assert!(w.created);
    assert_eq!(w.bytes_written, 70_000);
    let (meta, got) = s
        .client
        .read_file(&s.p("sub/dir/bin.dat"), 0, None)
        .await
        .unwrap();
    assert_eq!(got, bin);
    assert_eq!(meta.size, 70_000);
    let (meta, part) = s
        .client
        .read_file(&s.p("sub/dir/bin.dat"), 1000, Some(10))
        .await
        .unwrap();
    assert_eq!((meta.offset, &part[..]), (1000, &bin[1000..1010]));
    // 32 MiB.
    let big: Vec<u8> = (0..(32u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    s.client
        .write_file(&s.p("big.bin"), Bytes::from(big.clone()))
        .await
        .unwrap();
    let (_, back) = s
        .client
        .read_file(&s.p("big.bin"), 0, Some(32 << 20))
        .await
        .unwrap();
    assert!(back == big);
    let (meta, _) = s
        .client
        .read_file(&s.p("x.json"), 0, None)
        .await
        .unwrap_or_else(|_| {
            (
                ReadFileMeta {
                    size: 0,
                    offset: 0,
                    mime_type: String::new(),
                },
                Bytes::new(),
            )
        });
    assert_eq!(meta.size, 0);
    std::fs::write(s.dir.path().join("x.json"), "{}").unwrap();
    let (meta, _) = s.client.read_file(&s.p("x.json"), 0, None).await.unwrap();
    assert_eq!(meta.mime_type, "application/json");
    assert_eq!(
        status(s.client.read_file(&s.p("sub"), 0, None).await.unwrap_err()),
        400
    );
    assert_eq!(
        status(s.client.read_file(&s.p("nope"), 0, None).await.unwrap_err()),
        404
    );
}

#[tokio::test]
async fn replacing_keeps_mode_and_oversized_bodies_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let s = start(|c, _| c.body_limit = 1 << 20).await;
    let f = s.dir.path().join("script.sh");
    std::fs::write(&f, "old").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o751)).unwrap();
    let w = s
        .client
        .write_file(&s.p("script.sh"), Bytes::from_static(b"new"))
        .await
        .unwrap();
    assert!(!w.created);
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777,
        0o751
    );
    let e = s
        .client
        .write_file(&s.p("script.sh"), Bytes::from(vec![0u8; 2 << 20]))
        .await
        .unwrap_err();
    assert_eq!(status(e), 413);
    assert_eq!(
        std::fs::read(&f).unwrap(),
        b"new",
        "a refused write leaves the file alone"
    );
    let leftovers: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("aw-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left behind");
    // Still serving.
    assert_eq!(s.client.health().await.unwrap().status, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_keep_the_file_whole() {
    let s = Arc::new(start(|_, _| {}).await);
    let path = s.p("shared.txt");
    let versions: Vec<Vec<u8>> = (0..8u8).map(|i| vec![b'a' + i; 300_000]).collect();
    s.client
        .write_file(&path, Bytes::from(versions[0].clone()))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for v in versions.clone() {
        let (s, path) = (s.clone(), path.clone());
        tasks.spawn(async move {
            for _ in 0..5 {
                s.client
                    .write_file(&path, Bytes::from(v.clone()))
                    .await
                    .unwrap();
            }
        });
    }
    for _ in 0..4 {
        let (s, path, versions) = (s.clone(), path.clone(), versions.clone());
        tasks.spawn(async move {
            for _ in 0..20 {
                let (_, got) = s.client.read_file(&path, 0, None).await.unwrap();
                assert!(
                    versions.iter().any(|v| v[..] == got[..]),
                    "a reader saw a torn file ({} bytes)",
                    got.len()
                );
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

#[tokio::test]
async fn lines_with_caps() {
    let s = start(|c, _| c.max_line_bytes = 8).await;
    let text: String = (0..100).map(|i| format!("line {i}\n")).collect::<String>()
        + "a very long line indeed\nlast";
    std::fs::write(s.dir.path().join("t.txt"), text).unwrap();
    let r = s
        .client
        .read_file_lines(&s.p("t.txt"), 10, Some(3))
        .await
        .unwrap();
    assert_eq!(r.lines, vec!["line 10", "line 11", "line 12"]);
    assert!(r.more);
    let r = s
        .client
        .read_file_lines(&s.p("t.txt"), 100, None)
        .await
        .unwrap();
    assert_eq!(r.lines, vec!["a very l", "last"]);
    assert_eq!(r.truncated_lines, 1);
    assert!(!r.more);
}

#[tokio::test]
async fn edits_apply_atomically_with_diffs() {
    let s = start(|_, _| {}).await;
    std::fs::write(s.dir.path().join("a.rs"), "fn a() {}\nfn b() {}\n").unwrap();
    std::fs::write(s.dir.path().join("b.rs"), "x x x\n").unwrap();
    let edit = |p: &str, search: &str, replace: &str, all: bool| FileEdits {
        path: s.p(p),
        edits: vec![Edit {
            search: search.into(),
            replace: replace.into(),
            replace_all: all,
        }],
    };
    let ok = s
        .client
        .edit_files(&EditFilesRequest {
            files: vec![
                edit("a.rs", "fn b", "fn bee", false),
                edit("b.rs", "x", "y", true),
            ],
            include_diff: true,
        })
        .await
        .unwrap();
    assert_eq!(ok.files[0].replacements, 1);
    assert_eq!(ok.files[1].replacements, 3);
    assert!(
        ok.files[0]
            .diff
            .as_deref()
            .unwrap()
            .contains("+fn bee() {}")
    );
    assert_eq!(
        std::fs::read_to_string(s.dir.path().join("b.rs")).unwrap(),
        "y y y\n"
    );
    // Ambiguous: nothing at all is written, even the valid first file.
    let e = s
        .client
        .edit_files(&EditFilesRequest {
            files: vec![
                edit("a.rs", "fn a", "fn A", false),
                edit("b.rs", "y", "z", false),
            ],
            include_diff: true,
        })
        .await
        .unwrap_err();
    let AgentClientError::Status { code, message } = e else {
        panic!()
    };
    assert_eq!(code, 409);
    assert!(message.contains("ambiguous (3 matches)"), "{message}");
    assert!(
        std::fs::read_to_string(s.dir.path().join("a.rs"))
            .unwrap()
            .contains("fn a()")
    );
    let e = s
        .client
        .edit_files(&EditFilesRequest {
            files: vec![edit("a.rs", "nothing like this", "", false)],
            include_diff: false,
        })
        .await
        .unwrap_err();
    let AgentClientError::Status { code, message } = e else {
        panic!()
    };
    assert_eq!(code, 409);
    assert!(message.contains("not found"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_output_and_signal() {
    let s = start(|_, _| {}).await;
    let mut env = std::collections::BTreeMap::new();
    env.insert("GREETING".to_string(), "hi".to_string());
    let p = s
        .client
        .start_process(&StartProcessRequest {
            command: "echo $GREETING; pwd; while true; do echo tick; sleep 0.05; done".into(),
            workdir: Some(s.p("")),
            env,
            background: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(p.running);
    let first = s.client.process_output(&p.id, 0, 5000).await.unwrap();
    assert!(first.output.starts_with("hi\n"), "{:?}", first.output);
    // The first answer may have held only part of the start; read on until a tick.
    let mut more = s
        .client
        .process_output(&p.id, first.next_offset, 5000)
        .await
        .unwrap();
    assert!(more.offset == first.next_offset);
    for _ in 0..20 {
        if more.output.contains("tick") {
            break;
        }
        more = s
            .client
            .process_output(&p.id, more.next_offset, 5000)
            .await
            .unwrap();
    }
    assert!(more.output.contains("tick"), "{:?}", more.output);
    let list = s.client.list_processes().await.unwrap();
    assert!(list.processes.iter().any(|i| i.id == p.id && i.running));
    let sig = s
        .client
        .signal_process(&p.id, SignalName::Terminate)
        .await
        .unwrap();
    assert!(sig.delivered);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let o = s.client.process_output(&p.id, 0, 1000).await.unwrap();
        if !o.running {
            assert_eq!(o.signal, Some(15));
            break;
        }
        assert!(Instant::now() < deadline, "process survived SIGTERM");
    }
    assert!(
        !s.client
            .signal_process(&p.id, SignalName::Kill)
            .await
            .unwrap()
            .delivered
    );
    assert_eq!(
        status(s.client.process_output("p999999", 0, 0).await.unwrap_err()),
        404
    );
}

/// A kill sent to one run of the agent and delivered to the next (the agent restarted in
/// between, same workspace) must not hit the new run's process that has the same number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_id_from_an_earlier_run_names_nothing() {
    let sleeper = || StartProcessRequest {
        command: "sleep 30".into(),
        background: true,
        ..Default::default()
    };
    let before = start(|_, _| {}).await;
    let old = before.client.start_process(&sleeper()).await.unwrap();
    before.api.processes().shutdown().await;
    drop(before);
    let after = start(|_, _| {}).await;
    let new = after.client.start_process(&sleeper()).await.unwrap();
    assert_ne!(old.id, new.id, "ids repeat across runs");
    assert_eq!(
        status(
            after
                .client
                .signal_process(&old.id, SignalName::Kill)
                .await
                .unwrap_err()
        ),
        404
    );
    let still = after.client.process_output(&new.id, 0, 0).await.unwrap();
    assert!(still.running, "the new run's process was hit: {still:?}");
    after.api.processes().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_timeout_keeps_output_and_reports_it() {
    let s = start(|_, _| {}).await;
    let t = Instant::now();
    let out = s
        .client
        .start_process(&StartProcessRequest {
            command: "echo started; sleep 30; echo never".into(),
            timeout_ms: Some(300),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(out.timed_out);
    assert_eq!(out.output, "started\n");
    assert_eq!(out.signal, Some(9));
    assert!(!out.running);
}

/// Starts `sleep 2; touch MARKER` with `mode` applied, drops the request after 300 ms and
/// checks that the process group was killed rather than left to finish.
async fn dropped_request_kills(mode: impl FnOnce(&mut StartProcessRequest)) {
    let s = start(|_, _| {}).await;
    let marker = s.p("marker");
    let impatient = s.client.clone().with_timeout(Duration::from_millis(300));
    let mut req = StartProcessRequest {
        command: format!("sleep 2; touch {marker}"),
        ..Default::default()
    };
    mode(&mut req);
    let e = impatient.start_process(&req).await.unwrap_err();
    assert!(matches!(e, AgentClientError::Timeout));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let list = s.client.list_processes().await.unwrap();
        if list.processes.iter().all(|p| !p.running) {
            assert_eq!(list.processes[0].signal, Some(9));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "process kept running after its caller left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !PathBuf::from(&marker).exists(),
        "the command ran to completion"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_foreground_request_kills_the_process() {
    dropped_request_kills(|r| r.timeout_ms = Some(60_000)).await;
}

/// `wait_ms` on a background start: the answer comes when the process exits (with all its
/// output) or when the wait ends, the process then still running and pollable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_start_waits_for_the_exit() {
    let s = start(|_, _| {}).await;
    let start_waiting = |command: &str, wait_ms: u64| {
        let req = StartProcessRequest {
            command: command.into(),
            background: true,
            wait_ms: Some(wait_ms),
            ..Default::default()
        };
        let client = &s.client;
        async move { client.start_process(&req).await }
    };
    let t = Instant::now();
    let out = start_waiting("echo hi; echo err >&2; exit 3", 10_000)
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "waited past the exit");
    assert!(!out.running);
    assert_eq!((out.output.as_str(), out.exit_code), ("hi\nerr\n", Some(3)));
    assert_eq!(out.next_offset, 7);

    let t = Instant::now();
    let out = start_waiting("echo started; sleep 0.6; echo finished", 150)
        .await
        .unwrap();
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert!(
        out.running && !out.timed_out,
        "the wait ending kills nothing"
    );
    assert_eq!(out.output, "started\n");
    let rest = s
        .client
        .process_output(&out.id, out.next_offset, 5000)
        .await
        .unwrap();
    let rest = if rest.running {
        s.client
            .process_output(&out.id, rest.next_offset, 5000)
            .await
            .unwrap()
    } else {
        rest
    };
    assert!(!rest.running);
    assert_eq!(rest.exit_code, Some(0));
    assert!(
        s.client
            .process_output(&out.id, 0, 0)
            .await
            .unwrap()
            .output
            .ends_with("finished\n")
    );
}

/// Until a background start with `wait_ms` answers, its caller cannot name the process, so
/// dropping the request kills it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_background_wait_kills_the_process() {
    dropped_request_kills(|r| {
        r.background = true;
        r.wait_ms = Some(60_000);
    })
    .await;
}

#[tokio::test]
async fn root_confinement() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "s").unwrap();
    let out = outside.path().to_path_buf();
    let s = start(move |c, dir| {
        c.root = Some(dir.to_path_buf());
        std::os::unix::fs::symlink(&out, dir.join("escape")).unwrap();
    })
    .await;
    assert_eq!(
        status(
            s.client
                .read_file(&format!("{}/../../etc/passwd", s.p("")), 0, None)
                .await
                .unwrap_err()
        ),
        403
    );
    assert_eq!(
        status(
            s.client
                .read_file(&s.p("escape/secret"), 0, None)
                .await
                .unwrap_err()
        ),
        403
    );
    assert_eq!(
        status(
            s.client
                .write_file(&s.p("escape/new"), Bytes::from_static(b"x"))
                .await
                .unwrap_err()
        ),
        403
    );
    assert!(!outside.path().join("new").exists());
    assert_eq!(status(s.client.ls("/").await.unwrap_err()), 403);
    s.client
        .write_file(&s.p("inside/ok.txt"), Bytes::from_static(b"fine"))
        .await
        .unwrap();
}

#[tokio::test]
async fn listening_ports_sees_a_listener() {
    let s = start(|_, _| {}).await;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let ports = s.client.listening_ports().await.unwrap();
    assert!(
        ports
            .ports
            .iter()
            .any(|p| p.port == port && p.address == "127.0.0.1"),
        "{ports:?}"
    );
}

#[tokio::test]
async fn redirects_are_never_followed() {
    use axum::routing::get;
    let app = axum::Router::new().fallback(get(|| async {
        (
            axum::http::StatusCode::TEMPORARY_REDIRECT,
            [("location", "http://[fd7a:115c:a1e0::99]:4/api/v0/health")],
        )
    }));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    let c = AgentClient::new(Arc::new(TcpDialer(addr)));
    match c.health().await.unwrap_err() {
        AgentClientError::Redirect { status, location } => {
            assert_eq!(status, 307);
            assert!(location.contains("fd7a"));
        }
        other => panic!("followed or misreported: {other}"),
    }
}

#[tokio::test]
async fn bad_requests_get_json_errors_and_the_server_keeps_serving() {
    let s = start(|_, _| {}).await;
    let e = s
        .client
        .start_process(&StartProcessRequest {
            command: "  ".into(),
            background: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status(e), 400);
    assert_eq!(s.client.health().await.unwrap().status, "ok");
    s.api.shutdown().await;
}

/// After its first command an unconfined agent keeps a shell started ahead of the next,
/// and later commands start in it with the same output, status, environment and timeout
/// as a shell started for them. Another working directory, or the option turned off,
/// starts a shell per command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_start_in_a_shell_started_ahead() {
    let s = start(|_, _| {}).await;
    let sub = s.dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let req = |command: &str, workdir: Option<String>| StartProcessRequest {
        command: command.into(),
        workdir,
        env: [("GREETING".to_string(), "it's".to_string())].into(),
        background: true,
        wait_ms: Some(5000),
        ..Default::default()
    };
    for _ in 0..5 {
        let out = s
            .client
            .start_process(&req("echo \"$GREETING\" $0; pwd; exit 4", None))
            .await
            .unwrap();
        assert!(!out.running);
        let want = format!("it's sh\n{}\n", s.dir.path().display());
        assert_eq!(
            (out.output.as_str(), out.exit_code),
            (want.as_str(), Some(4))
        );
        // Time for the next shell to start behind this command.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let h = s.client.health().await.unwrap();
    assert_eq!(h.commands_started, 5);
    assert!(h.commands_started_warm >= 3, "{h:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A foreground timeout kills a command that started in a waiting shell.
    let out = s
        .client
        .start_process(&StartProcessRequest {
            command: "echo started; sleep 30".into(),
            timeout_ms: Some(200),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        out.timed_out && !out.running && out.output == "started\n",
        "{out:?}"
    );
    let warm = s.client.health().await.unwrap().commands_started_warm;
    assert_eq!(
        warm,
        h.commands_started_warm + 1,
        "the timed-out command started warm"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Another working directory takes a shell of its own.
    let out = s
        .client
        .start_process(&req("pwd", Some(sub.display().to_string())))
        .await
        .unwrap();
    assert_eq!(out.output, format!("{}\n", sub.display()));
    let h = s.client.health().await.unwrap();
    assert_eq!(h.commands_started_warm, warm);

    let off = start(|c, _| c.warm_shell = false).await;
    for _ in 0..3 {
        let out = off
            .client
            .start_process(&req("echo hi", None))
            .await
            .unwrap();
        assert_eq!(out.output, "hi\n");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let h = off.client.health().await.unwrap();
    assert_eq!((h.commands_started, h.commands_started_warm), (3, 0));
}
