//! Agent liveness against a real `agentwire agent` process: how fast a call fails when the
//! agent is SIGKILLed, stopped cleanly, or frozen (vanished without a word), how the
//! workspace's status reads meanwhile, and how soon calls work once it is back. Also that
//! the agent's token reaches neither its commands' environment nor its command line.
//!
//! Prints the figures; rerun with `cargo test --release --test liveness -- --nocapture`.

#![allow(clippy::disallowed_methods)]

mod common;

use agentwire::services::serve::{ServeConfig, Server};
use agentwire::wire::addr::NodeId;
use common::mcp_http::{McpHttp, Outcome};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const USER_TOKEN: &str = "liveness-user-token-0123456789";
const AGENT_TOKEN: &str = "liveness-agent-token-0123456789";
const BOUND: Duration = Duration::from_secs(40);

struct Rig {
    server: Server,
    dir: PathBuf,
    tmp: tempfile::TempDir,
}

async fn rig() -> Rig {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ws");
    std::fs::create_dir(&dir).unwrap();
    let agent_id = NodeId::random();
    let config = tmp.path().join("control.toml");
    std::fs::write(
        &config,
        format!(
            "[[users]]\nname = \"alice\"\ntoken = \"{USER_TOKEN}\"\n[[workspaces]]\nowner = \"alice\"\nname = \"dev\"\n\
             [[workspaces.agents]]\nid = \"{agent_id}\"\ntoken = \"{AGENT_TOKEN}\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(ServeConfig {
        config_file: Some(config),
        ..ServeConfig::loopback(tmp.path().join("state"))
    })
    .await
    .unwrap();
    assert!(server.wait_ready(Duration::from_secs(10)).await);
    Rig { server, dir, tmp }
}

enum TokenVia<'a> {
    Env,
    File(&'a Path),
}

fn spawn_agent(r: &Rig, via: TokenVia<'_>) -> Child {
    spawn_agent_in(r, via, "--dir")
}

/// `place` is `--dir` or `--root` (the workspace directory either way).
fn spawn_agent_in(r: &Rig, via: TokenVia<'_>, place: &str) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentwire"));
    cmd.args([
        "agent",
        "--url",
        &r.server.public_url,
        "--udp",
        "127.0.0.1:0",
        place,
    ])
    .arg(&r.dir)
    .env_remove("AGENTWIRE_AGENT_TOKEN")
    .env("RUST_LOG", "warn")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    match via {
        TokenVia::Env => {
            cmd.env("AGENTWIRE_AGENT_TOKEN", AGENT_TOKEN);
        }
        TokenVia::File(f) => {
            cmd.arg("--token-file").arg(f);
        }
    }
    cmd.spawn().expect("start agentwire agent")
}

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).expect("signal the agent");
}

async fn status(mcp: &mut McpHttp) -> Value {
    match mcp.call("list_workspaces", json!({}), BOUND).await {
        Outcome::Ok(v) => v["structuredContent"]["workspaces"][0]["agents"][0]["status"].clone(),
        other => panic!("list_workspaces: {other:?}"),
    }
}

async fn bash(mcp: &mut McpHttp, command: &str) -> Outcome {
    mcp.call(
        "workspace_bash",
        json!({"workspace": "alice/dev", "command": command, "timeout_ms": 30_000}),
        BOUND,
    )
    .await
}

/// Waits until a call succeeds; returns how long that took.
async fn until_served(mcp: &mut McpHttp) -> Duration {
    let start = Instant::now();
    loop {
        if let Outcome::Ok(_) = bash(mcp, "true").await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "agent never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a long call, applies `fault` a second in, and returns how long after the fault
/// the call failed, with its message.
async fn inflight_failure(r: &Rig, fault: impl FnOnce()) -> (Duration, String) {
    let mut mcp = McpHttp::new(r.server.addr, USER_TOKEN);
    let call = tokio::spawn(async move { bash(&mut mcp, "sleep 25; echo done").await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at = Instant::now();
    fault();
    let out = call.await.unwrap();
    let took = at.elapsed();
    match out {
        Outcome::Failed(m) => (took, m),
        // A stopping agent kills its commands; a call already waiting on the command may
        // see that exit before the agent's goodbye: the call ends, saying the command was
        // killed, which tells the caller as much.
        Outcome::Ok(v) if v["structuredContent"]["signal"].is_number() => {
            (took, format!("command killed: {}", v["structuredContent"]))
        }
        other => panic!("the call should fail, got {other:?}"),
    }
}

/// One call to an agent known to be down: how long, and its message.
async fn next_call(mcp: &mut McpHttp) -> (Duration, String) {
    let start = Instant::now();
    match bash(mcp, "true").await {
        Outcome::Failed(m) => (start.elapsed(), m),
        other => panic!("the call should fail, got {other:?}"),
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_timing() {
    let r = rig().await;
    let mut mcp = McpHttp::new(r.server.addr, USER_TOKEN);
    let mut agent = spawn_agent(&r, TokenVia::Env);
    let first = until_served(&mut mcp).await;
    let s = status(&mut mcp).await;
    assert_eq!(s["state"], "online", "{s}");
    assert!(
        s["path"].as_str().is_some_and(|p| p.starts_with("direct")),
        "{s}"
    );
    println!("liveness_first_call_after_start: {} ms", ms(first));

    // SIGKILL: the kernel closes the coordinator stream; the tunnel just goes quiet.
    let (took, msg) = inflight_failure(&r, || signal(&agent, Signal::SIGKILL)).await;
    let _ = agent.wait();
    println!("liveness_sigkill_inflight: {} ms ({msg})", ms(took));
    assert!(
        took <= Duration::from_secs(5),
        "SIGKILL took {took:?}: {msg}"
    );
    assert!(
        msg.contains("offline since"),
        "the failure names what is known: {msg}"
    );
    let (took, msg) = next_call(&mut mcp).await;
    println!("liveness_sigkill_next_call: {} ms ({msg})", ms(took));
    assert!(took <= Duration::from_millis(500), "{took:?}");
    assert!(msg.contains("offline since"), "{msg}");
    let s = status(&mut mcp).await;
    assert_eq!(s["state"], "offline", "{s}");

    agent = spawn_agent(&r, TokenVia::Env);
    let back = until_served(&mut mcp).await;
    println!("liveness_first_call_after_return: {} ms", ms(back));

    // A clean stop: the agent says goodbye.
    let (took, msg) = inflight_failure(&r, || signal(&agent, Signal::SIGTERM)).await;
    let _ = agent.wait();
    println!("liveness_clean_stop_inflight: {} ms ({msg})", ms(took));
    assert!(
        took <= Duration::from_secs(1),
        "clean stop took {took:?}: {msg}"
    );
    let (took, msg) = next_call(&mut mcp).await;
    println!("liveness_clean_stop_next_call: {} ms ({msg})", ms(took));
    assert!(took <= Duration::from_millis(500), "{took:?}");
    assert!(msg.contains("the agent stopped"), "{msg}");

    // Frozen: nothing tells the server; the tunnel's keep-alive must notice.
    agent = spawn_agent(&r, TokenVia::Env);
    until_served(&mut mcp).await;
    let (took, msg) = inflight_failure(&r, || signal(&agent, Signal::SIGSTOP)).await;
    println!("liveness_vanished_inflight: {} ms ({msg})", ms(took));
    assert!(
        took <= Duration::from_secs(6),
        "vanish took {took:?}: {msg}"
    );
    // The direct path goes quiet with the agent, so by the time the call fails the path
    // may already have fallen back to the relay: either way the message names it.
    assert!(
        msg.contains("tunnel path ") && msg.contains("last handshake"),
        "the failure names what is known: {msg}"
    );
    signal(&agent, Signal::SIGCONT);
    let back = until_served(&mut mcp).await;
    println!("liveness_first_call_after_thaw: {} ms", ms(back));

    signal(&agent, Signal::SIGKILL);
    let _ = agent.wait();
    r.server.shutdown().await;
    drop(r.tmp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_token_stays_out_of_the_workspace() {
    let r = rig().await;
    let mut mcp = McpHttp::new(r.server.addr, USER_TOKEN);
    // With --root the workspace's commands also cannot read the token file (outside the
    // root) nor the agent's start-up environment, even as root.
    for (via, place) in [("env", "--dir"), ("file", "--dir"), ("env", "--root")] {
        let file = r.tmp.path().join("agent-token");
        std::fs::write(&file, format!("{AGENT_TOKEN}\n")).unwrap();
        let mut agent = match via {
            "env" => spawn_agent_in(&r, TokenVia::Env, place),
            _ => spawn_agent_in(&r, TokenVia::File(&file), place),
        };
        until_served(&mut mcp).await;
        let pid = agent.id();
        let rooted = if place == "--root" {
            format!("; echo; cat /proc/{pid}/environ {}", file.display())
        } else {
            String::new()
        };
        let out = match bash(
            &mut mcp,
            &format!("env; echo; tr '\\0' ' ' < /proc/{pid}/cmdline{rooted}"),
        )
        .await
        {
            Outcome::Ok(v) => v["structuredContent"]["output"]
                .as_str()
                .unwrap()
                .to_string(),
            other => panic!("{other:?}"),
        };
        assert!(
            out.contains("agent --url"),
            "{via}: cmdline not read: {out}"
        );
        assert!(
            !out.contains(AGENT_TOKEN),
            "{via}: token visible to the workspace: {out}"
        );
        assert!(!out.contains("AGENTWIRE_"), "{via}: {out}");
        if place == "--root" {
            assert_eq!(
                out.matches("Permission denied").count(),
                2,
                "environ and the token file: {out}"
            );
        }
        signal(&agent, Signal::SIGTERM);
        let _ = agent.wait();
        // Let the coordinator see the goodbye before the next copy registers.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    r.server.shutdown().await;
}
