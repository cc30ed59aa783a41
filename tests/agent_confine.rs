//! Commands under a workspace root, through the agent API on loopback: they read and
//! write beneath the root and nowhere else (Landlock), and a directory swapped for a
//! symlink while they run, or while they are being started in it, never lets them out.
//! Skipped with a message where the kernel has no Landlock.

#![allow(clippy::disallowed_methods)]

use agentwire::services::agent::api::{self, AgentApi, AgentApiConfig, CommandPolicy};
use agentwire::services::agent::client::{AgentClient, TcpDialer};
use agentwire::services::agent::types::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

struct Workspace {
    client: AgentClient,
    _api: AgentApi,
    root: PathBuf,
    outside: PathBuf,
    _tmp: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// An API confined to `tmp/root`, with a secret in `tmp/out`; `None` (after saying why)
/// where commands cannot be confined.
async fn workspace(policy: CommandPolicy) -> Option<Workspace> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("out");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let (root, outside) = (
        root.canonicalize().unwrap(),
        outside.canonicalize().unwrap(),
    );
    std::fs::write(outside.join("secret"), "s3cret\n").unwrap();
    std::fs::write(root.join("inside.txt"), "inside\n").unwrap();
    let api = AgentApi::new(AgentApiConfig {
        root: Some(root.clone()),
        workdir: root.clone(),
        commands: policy,
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(api::serve(listener, api::router(api.clone()), async move {
        let _ = rx.await;
    }));
    let client = AgentClient::new(Arc::new(TcpDialer(addr)));
    let mode = client.health().await.unwrap().commands.unwrap().mode;
    if mode == "refused" {
        eprintln!("SKIP: this kernel cannot confine commands (no Landlock)");
        return None;
    }
    Some(Workspace {
        client,
        _api: api,
        root,
        outside,
        _tmp: tmp,
        _stop: tx,
    })
}

impl Workspace {
    async fn run_in(&self, workdir: Option<&Path>, command: &str) -> ProcessOutput {
        self.client
            .start_process(&StartProcessRequest {
                command: command.into(),
                workdir: workdir.map(|w| w.display().to_string()),
                env: Default::default(),
                background: false,
                timeout_ms: Some(20_000),
                wait_ms: None,
            })
            .await
            .unwrap()
    }

    async fn run(&self, command: &str) -> ProcessOutput {
        self.run_in(None, command).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_read_and_write_only_beneath_the_root() {
    let Some(w) = workspace(CommandPolicy::default()).await else {
        return;
    };
    let health = w.client.health().await.unwrap().commands.unwrap();
    assert!(health.mode.starts_with("landlock"), "{health:?}");
    let (out, secret) = (w.outside.display(), w.outside.join("secret"));
    let secret = secret.display();

    // Inside: everything a shell session needs.
    let ok = w
        .run(
            "cat inside.txt && echo new > new.txt && mkdir -p d/e && mv new.txt d/e/ && \
             cat d/e/new.txt && echo t > \"$TMPDIR/t\" && cat \"$TMPDIR/t\" && \
             echo quiet > /dev/null && ls /usr/bin > /dev/null && echo done",
        )
        .await;
    assert_eq!(ok.exit_code, Some(0), "{}", ok.output);
    assert_eq!(ok.output, "inside\nnew\nt\ndone\n");

    // Outside: no read, no listing, no write, no truncation, no link, no rename in.
    for (what, cmd) in [
        ("read", format!("cat {secret}")),
        ("list", format!("ls {out}")),
        ("list /tmp", "ls /tmp".to_string()),
        ("write", format!("echo x > {out}/new")),
        ("append", format!("echo x >> {secret}")),
        ("truncate", format!("truncate -s 0 {secret}")),
        ("hard link", format!("ln {secret} leaked")),
        ("move in", format!("mv {secret} stolen")),
        ("copy", format!("cp {secret} copied")),
        ("environ", "cat /proc/$PPID/environ".to_string()),
    ] {
        let r = w.run(&cmd).await;
        assert_ne!(r.exit_code, Some(0), "{what} succeeded: {}", r.output);
        assert!(!r.output.contains("s3cret"), "{what}: {}", r.output);
    }
    assert_eq!(
        std::fs::read_to_string(w.outside.join("secret")).unwrap(),
        "s3cret\n",
        "the secret was modified"
    );
    let outside: Vec<_> = std::fs::read_dir(&w.outside).unwrap().collect();
    assert_eq!(outside.len(), 1, "something was created outside");
    for name in ["leaked", "stolen", "copied"] {
        assert!(!w.root.join(name).exists(), "{name}");
    }

    // Nor can they signal the agent (Landlock scoping, Linux 6.12+).
    if !health.detail.contains("signal") {
        // Signal 0 goes through the same permission check without stopping anything.
        let r = w.run("kill -0 $PPID").await;
        assert_ne!(
            r.exit_code,
            Some(0),
            "a command may signal the agent: {r:?}"
        );
        assert!(
            w.run("kill -0 $$").await.exit_code == Some(0),
            "kill works inside"
        );
    }

    // The agent still signals its sandboxed process groups (a timeout kills them).
    let r = w
        .client
        .start_process(&StartProcessRequest {
            command: "echo started; sleep 30".into(),
            workdir: None,
            env: Default::default(),
            background: false,
            timeout_ms: Some(300),
            wait_ms: None,
        })
        .await
        .unwrap();
    assert!(r.timed_out && r.signal == Some(9), "{r:?}");
    assert_eq!(r.output, "started\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_widens_or_opts_out() {
    let extra = tempfile::tempdir().unwrap();
    std::fs::write(extra.path().join("tool"), "tool\n").unwrap();
    let Some(w) = workspace(CommandPolicy {
        read: vec![extra.path().to_path_buf()],
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let tool = extra.path().join("tool");
    let r = w.run(&format!("cat {}", tool.display())).await;
    assert_eq!(r.output, "tool\n");
    let r = w.run(&format!("echo x > {}", tool.display())).await;
    assert_ne!(r.exit_code, Some(0), "a read-only path was written");

    let open = workspace(CommandPolicy {
        unconfined: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let h = open.client.health().await.unwrap().commands.unwrap();
    assert_eq!(h.mode, "unconfined");
    let r = open
        .run(&format!("cat {}", open.outside.join("secret").display()))
        .await;
    assert_eq!(r.output, "s3cret\n");
}

/// Swaps `root/d` between a directory and a symlink to the outside directory until told.
fn swapper(root: &Path, outside: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let (root, outside) = (root.to_path_buf(), outside.to_path_buf());
    std::fs::write(outside.join("f"), "outside\n").unwrap();
    std::thread::spawn(move || {
        let d = root.join("d");
        let mut swaps = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let _ = std::fs::remove_dir_all(&d).or_else(|_| std::fs::remove_file(&d));
            if swaps.is_multiple_of(2) {
                let _ = std::os::unix::fs::symlink(&outside, &d);
            } else {
                let _ = std::fs::create_dir(&d);
                let _ = std::fs::write(d.join("f"), "inside\n");
            }
            swaps += 1;
            // Leave each state in place long enough for both outcomes to be common.
            std::thread::sleep(Duration::from_micros(200));
        }
        swaps
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlink_swaps_never_let_a_command_out() {
    let Some(w) = workspace(CommandPolicy::default()).await else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = swapper(&w.root, &w.outside, stop.clone());

    // A command reading and writing through the swapped directory for 1.5 s.
    let inside_loop = w
        .run(
            "end=$(($(date +%s) + 2)); n=0; \
             while [ $(date +%s) -lt $end ]; do \
               cat d/f 2>/dev/null; echo w 2>/dev/null > d/w; n=$((n+1)); \
             done; echo \"tries=$n\"",
        )
        .await;
    // Commands started in the swapped directory: the check may pass while it is a
    // directory and the start happen while it is a symlink.
    let started = Instant::now();
    let (mut starts, mut inside, mut refused) = (0u32, 0u32, 0u32);
    while started.elapsed() < Duration::from_millis(1500) {
        let r = w
            .client
            .start_process(&StartProcessRequest {
                command: "cat f; pwd -P".into(),
                workdir: Some(w.root.join("d").display().to_string()),
                env: Default::default(),
                background: false,
                timeout_ms: Some(5_000),
                wait_ms: None,
            })
            .await;
        match r {
            Ok(o) => {
                starts += 1;
                inside += u32::from(o.output.starts_with("inside"));
                assert!(!o.output.contains("outside"), "{}", o.output);
                assert!(
                    !o.output.contains(&w.outside.display().to_string()),
                    "a command started outside: {}",
                    o.output
                );
            }
            Err(_) => refused += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swaps.join().unwrap();
    let out = &inside_loop.output;
    println!(
        "swaps {swaps}; in-command reads of `inside` {}, {}; starts in d {starts} ({inside} read d/f), refused {refused}",
        out.matches("inside").count(),
        out.lines().last().unwrap_or_default(),
    );
    assert!(!out.contains("outside"), "a command read outside the root");
    assert!(
        !w.outside.join("w").exists(),
        "a command wrote outside the root"
    );
    assert!(swaps > 100 && starts > 10, "the race ran");
}
