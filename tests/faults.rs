//! Faults under a steady load of tool calls through `agentwire serve` (in-process): relay
//! restart, coordinator restart, agent restart with a new key, 5% packet loss and 1%
//! corruption on the direct path. For each fault it prints calls ok / failed / hung,
//! the recovery time, and tasks, descriptors and RSS before and after, and asserts no
//! call hung, recovery within 2 s of the faulty part being back, and no growth.
//!
//! Rerun with output: `cargo test --release --test faults -- --nocapture`.

#![allow(clippy::disallowed_methods)]

mod common;

use agentwire::services::agent::{Agent, AgentConfig};
use agentwire::services::serve::{ServeConfig, Server};
use agentwire::wire::addr::NodeId;
use common::faults::{Faults, UdpFaultProxy};
use common::mcp_http::{McpHttp, Outcome, resources};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const USER_TOKEN: &str = "fault-user-token-0123456789";
const AGENT_TOKEN: &str = "fault-agent-token-0123456789";
const HUNG: Duration = Duration::from_secs(30);
const LOOPS: usize = 4;

struct Rig {
    server: Server,
    agent: Arc<tokio::sync::Mutex<Option<Agent>>>,
    agent_id: NodeId,
    agent_port: u16,
    proxy: Arc<UdpFaultProxy>,
    dir: PathBuf,
    file: String,
    _tmp: tempfile::TempDir,
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_agent(
    url: &str,
    id: NodeId,
    dir: &std::path::Path,
    port: u16,
    proxy: SocketAddr,
) -> Agent {
    let mut cfg = AgentConfig::new(url, AGENT_TOKEN, id, dir.to_path_buf());
    cfg.tailnet.udp_listen = SocketAddr::from(([127, 0, 0, 1], port));
    // The direct path goes through the fault proxy.
    cfg.tailnet.advertise = Some(vec![proxy]);
    let a = Agent::start(cfg).unwrap();
    assert!(
        a.wait_ready(Duration::from_secs(10)).await,
        "agent did not connect"
    );
    a
}

async fn start_rig(relay_only: bool) -> Rig {
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
        relay_only,
        // The server advertises nothing, so the agent cannot reach it around the proxy.
        advertise: Some(vec![]),
        ..ServeConfig::loopback(tmp.path().join("state"))
    })
    .await
    .unwrap();
    assert!(server.wait_ready(Duration::from_secs(10)).await);
    let agent_port = free_udp_port();
    let proxy = UdpFaultProxy::start(SocketAddr::from(([127, 0, 0, 1], agent_port)), 7).await;
    let url = server.public_url.clone();
    let agent = start_agent(&url, agent_id, &dir, agent_port, proxy.addr).await;
    let file = dir.join("f.txt");
    std::fs::write(&file, vec![b'x'; 4096]).unwrap();
    Rig {
        server,
        agent: Arc::new(tokio::sync::Mutex::new(Some(agent))),
        agent_id,
        agent_port,
        proxy: Arc::new(proxy),
        dir,
        file: file.display().to_string(),
        _tmp: tmp,
    }
}

#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    failed: usize,
    hung: usize,
    /// (start, end, ok) of every call.
    calls: Vec<(Instant, Instant, bool)>,
    errors: Vec<String>,
}

/// Runs the load while `fault` runs; `fault` returns the instant the faulty part is back.
async fn under_load(name: &str, rig: &Rig, fault: impl std::future::Future<Output = Instant>) {
    // Settle, then take the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = resources();
    let proxy_before = rig.proxy.stats();
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..LOOPS {
        let (stop, addr, file) = (stop.clone(), rig.server.addr, rig.file.clone());
        loops.spawn(async move {
            let mut c = McpHttp::new(addr, USER_TOKEN);
            let mut t = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let s = Instant::now();
                let o = c
                    .call(
                        "workspace_read_file",
                        serde_json::json!({"workspace": "dev", "path": file}),
                        HUNG,
                    )
                    .await;
                let ok = matches!(o, Outcome::Ok(_));
                match o {
                    Outcome::Ok(_) => t.ok += 1,
                    Outcome::Failed(m) => {
                        t.failed += 1;
                        if t.errors.len() < 3 {
                            t.errors.push(m);
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Outcome::Hung => t.hung += 1,
                }
                t.calls.push((s, Instant::now(), ok));
            }
            t
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let back = fault.await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    while let Some(r) = loops.join_next().await {
        let t = r.unwrap();
        all.ok += t.ok;
        all.failed += t.failed;
        all.hung += t.hung;
        all.calls.extend(t.calls);
        all.errors.extend(t.errors);
    }
    // Recovery: from the part being back to the first success of a call started after it.
    let recovery = all
        .calls
        .iter()
        .filter(|(s, _, ok)| *ok && *s >= back)
        .map(|(_, e, _)| e.saturating_duration_since(back))
        .min();
    let during: Vec<_> = all
        .calls
        .iter()
        .filter(|(s, _, _)| *s >= started && *s < back)
        .collect();
    let during_ok = during.iter().filter(|c| c.2).count();
    let slowest = all
        .calls
        .iter()
        .map(|(s, e, _)| e.saturating_duration_since(*s))
        .max()
        .unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = resources();
    println!(
        "{name:<26} ok {:>5}  failed {:>4}  hung {}  recovery {:>7}  fault took {:>6.0?}  \
         tasks {}→{}  fds {}→{}  rss {}→{} KiB",
        all.ok,
        all.failed,
        all.hung,
        recovery
            .map(|r| format!("{:.0?}", r))
            .unwrap_or_else(|| "never".into()),
        back.saturating_duration_since(started),
        before.0,
        after.0,
        before.1,
        after.1,
        before.2,
        after.2,
    );
    let p = rig.proxy.stats();
    println!(
        "{:<26} while faulty: {during_ok}/{} calls ok, slowest call {slowest:.0?}; direct path: {} datagrams forwarded, {} dropped, {} corrupted, {} duplicated, {} reordered",
        "",
        during.len(),
        p.forwarded - proxy_before.forwarded,
        p.dropped - proxy_before.dropped,
        p.corrupted - proxy_before.corrupted,
        p.duplicated - proxy_before.duplicated,
        p.reordered - proxy_before.reordered,
    );
    for e in all.errors.iter().take(2) {
        println!("    e.g. {}", e.chars().take(160).collect::<String>());
    }
    assert_eq!(all.hung, 0, "{name}: calls hung");
    assert!(all.ok > 0, "{name}: nothing succeeded");
    assert!(
        all.errors.iter().all(|e| !e.trim().is_empty()),
        "{name}: a failure without a message"
    );
    let recovery = recovery.unwrap_or_else(|| panic!("{name}: calls never recovered"));
    assert!(
        recovery <= Duration::from_secs(2),
        "{name}: recovery took {recovery:?}"
    );
    assert!(
        after.0 <= before.0 + 8,
        "{name}: tasks grew {} → {}",
        before.0,
        after.0
    );
    assert!(
        after.1 <= before.1 + 4,
        "{name}: descriptors grew {} → {}",
        before.1,
        after.1
    );
    assert!(
        after.2 <= before.2 + 16 * 1024,
        "{name}: RSS grew {} → {} KiB",
        before.2,
        after.2
    );
}

fn timed(proxy: Arc<UdpFaultProxy>, f: Faults) -> impl std::future::Future<Output = Instant> {
    proxy.set(f);
    async move {
        tokio::time::sleep(Duration::from_secs(4)).await;
        proxy.set(Faults::default());
        Instant::now()
    }
}

async fn restart_agent(r: &Rig) -> Instant {
    let old = r.agent.lock().await.take();
    if let Some(a) = old {
        a.shutdown().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = start_agent(
        &r.server.public_url,
        r.agent_id,
        &r.dir,
        r.agent_port,
        r.proxy.addr,
    )
    .await;
    *r.agent.lock().await = Some(a);
    Instant::now()
}

async fn finish(r: Rig) {
    if let Some(a) = r.agent.lock().await.take() {
        a.shutdown().await;
    }
    r.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_under_load() {
    // Direct path through the fault proxy.
    let rig = start_rig(false).await;
    under_load("baseline", &rig, async { Instant::now() }).await;
    under_load(
        "5% loss (4 s)",
        &rig,
        timed(
            rig.proxy.clone(),
            Faults {
                drop: 0.05,
                ..Default::default()
            },
        ),
    )
    .await;
    under_load(
        "1% corruption (4 s)",
        &rig,
        timed(
            rig.proxy.clone(),
            Faults {
                corrupt: 0.01,
                ..Default::default()
            },
        ),
    )
    .await;
    let shuffle = Faults {
        reorder: 0.05,
        duplicate: 0.05,
        ..Default::default()
    };
    under_load(
        "5% reorder + dup (4 s)",
        &rig,
        timed(rig.proxy.clone(), shuffle),
    )
    .await;
    let hub = rig.server.hub().clone();
    under_load("coordinator restart", &rig, async {
        hub.restart_coordinator().await;
        Instant::now()
    })
    .await;
    under_load("agent restart, new key", &rig, restart_agent(&rig)).await;
    println!("fault proxy: {:?}", rig.proxy.stats());
    finish(rig).await;

    // Relay only: the relay restarting interrupts every path.
    let rig = start_rig(true).await;
    let hub = rig.server.hub().clone();
    under_load("relay restart (DERP only)", &rig, async {
        hub.restart_derp().await;
        Instant::now()
    })
    .await;
    under_load("hub restart (DERP only)", &rig, async {
        hub.restart_derp().await;
        hub.restart_coordinator().await;
        Instant::now()
    })
    .await;
    finish(rig).await;
}
