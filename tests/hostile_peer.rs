//! One tenant's workspace agent is hostile while another tenant works. Bob's "agent" is a
//! test program on the tailnet: it answers the agent API with endless or gigantic bodies or
//! not at all while bob keeps many calls open against it, floods the server's tunnel with
//! UDP, and opens thousands of TCP connections at the server. A first phase has it answer
//! within every limit but as much and as fast as bob's calls take (bulk), a second spreads
//! that bulk over three of bob's workspaces (`bulk_3ws`). Meanwhile alice
//! calls her own (real) workspace. Printed per phase: alice's call p50/p99 and failures, bob's outcomes,
//! the server process's peak RSS and tasks, and the limit counters.
//!
//! The attacker (bob's agent, its flood and connections, and bob's own MCP client) runs on
//! a runtime of its own whose threads have the lowest CPU priority (`SCHED_IDLE`, or nice
//! 19 where `chrt` cannot set it): deployed, the attacker
//! pays for its traffic on its own machine, and what should show in alice's latency is what
//! the *server* spends on it, not the two sharing this machine's two cores. Each phase
//! ends by closing bob's calls and waiting until the server has none in flight, so one
//! phase's leftovers do not take the next one's slots.
//!
//! Rerun with output: `cargo test --release --test hostile_peer -- --nocapture`.

#![allow(clippy::disallowed_methods)]

mod common;

use agentwire::runtime::tailnet::{Tailnet, TailnetConfig};
use agentwire::services::agent::{Agent, AgentConfig};
use agentwire::services::serve::{ServeConfig, Server};
use agentwire::wire::addr::NodeId;
use bytes::Bytes;
use common::mcp_http::{McpHttp, Outcome, resources};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const ALICE: &str = "hostile-alice-token-0123456789";
const BOB: &str = "hostile-bob-token-0123456789";
const GOOD_AGENT: &str = "hostile-good-agent-token-0123456789";
const EVIL_AGENT: &str = "hostile-evil-agent-token-0123456789";
/// Bob's two more workspaces, for bulk spread over several (his share across them).
const MORE_EVIL: [(&str, &str); 2] = [
    ("evil2", "hostile-evil2-agent-token-0123456789"),
    ("evil3", "hostile-evil3-agent-token-0123456789"),
];
const PHASE: Duration = Duration::from_secs(4);

/// What bob's agent does with each request.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// Never answers.
    Silent = 0,
    /// 200 with a chunked body that never ends.
    Endless = 1,
    /// 200 announcing 16 GiB, sent as fast as it is read.
    Gigantic = 2,
    /// 200 with 256 KiB, as much as a read accepts by default: replies within every limit,
    /// as fast as they are read.
    Bulk = 3,
}

/// The body of a [`Mode::Bulk`] reply: the MCP tool's default read size.
const BULK_REPLY: usize = 256 << 10;
static BULK_BODY: [u8; BULK_REPLY] = [b' '; BULK_REPLY];

struct Evil {
    tailnet: Arc<Tailnet>,
    mode: Arc<AtomicU8>,
}

async fn evil_agent(url: &str, token: &str, id: NodeId) -> Evil {
    let tailnet = Arc::new(Tailnet::start(TailnetConfig::agent(url, token, id)).unwrap());
    assert!(tailnet.wait_ready(Duration::from_secs(10)).await);
    let mode = Arc::new(AtomicU8::new(Mode::Silent as u8));
    let listener = tailnet.tunnel().listen_tcp(4).unwrap();
    let m = mode.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let m = m.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let mode = m.load(Ordering::Relaxed);
                    async move {
                        let chunk = Bytes::from(vec![b' '; 64 << 10]);
                        let stream = futures_util::stream::repeat_with(move || {
                            Ok::<_, Infallible>(Frame::data(chunk.clone()))
                        });
                        let body = StreamBody::new(stream).boxed();
                        let mut resp = hyper::Response::builder()
                            .status(200)
                            .header("content-type", "application/json");
                        if mode == Mode::Silent as u8 {
                            std::future::pending::<()>().await;
                        }
                        if mode == Mode::Bulk as u8 {
                            let body = http_body_util::Full::new(Bytes::from_static(&BULK_BODY))
                                .map_err(|e: Infallible| -> Infallible { match e {} })
                                .boxed();
                            return Ok::<_, Infallible>(
                                resp.header("content-length", BULK_REPLY.to_string())
                                    .body(body)
                                    .unwrap(),
                            );
                        }
                        if mode == Mode::Gigantic as u8 {
                            resp = resp.header("content-length", (16u64 << 30).to_string());
                        }
                        Ok::<_, Infallible>(resp.body(body).unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Evil { tailnet, mode }
}

/// A runtime on its own threads at nice 19, for the attacker's tasks; dropping it stops
/// them.
struct Attacker {
    handle: tokio::runtime::Handle,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Attacker {
    fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .on_thread_start(|| {
                    let tid = rustix::thread::gettid();
                    // HOSTILE_NICE=N runs the attacker at that nice value instead (0: as
                    // an equal of the server).
                    if let Some(nice) = std::env::var("HOSTILE_NICE")
                        .ok()
                        .and_then(|v| v.parse::<i32>().ok())
                    {
                        let _ = rustix::process::setpriority_process(Some(tid), nice);
                        return;
                    }
                    // SCHED_IDLE: a server thread that wakes takes the core at once. At
                    // nice 19 the scheduler (EEVDF) lets the running attacker finish its
                    // slice first, and each of the half-dozen wake-ups in one of alice's
                    // calls could wait out a slice: her p99 measured this machine's
                    // scheduler, not the server.
                    let idle = std::process::Command::new("chrt")
                        .args(["--idle", "-p", "0", &tid.as_raw_nonzero().to_string()])
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    if !idle {
                        let _ = rustix::process::setpriority_process(Some(tid), 19);
                    }
                })
                .build()
                .unwrap();
            tx.send(rt.handle().clone()).unwrap();
            let _ = stopped.recv();
            rt.shutdown_timeout(Duration::from_secs(2));
        });
        Self {
            handle: rx.recv().unwrap(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Rig {
    server: Server,
    file: String,
    good: Agent,
    evil: Evil,
    /// Bob's other workspaces' agents (silent unless a phase says otherwise).
    more_evil: Vec<Evil>,
    attacker: Attacker,
    _tmp: tempfile::TempDir,
}

async fn rig() -> Rig {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ws");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("f.txt"), vec![b'x'; 4096]).unwrap();
    let file = dir.join("f.txt").display().to_string();
    let (good_id, evil_id) = (NodeId::random(), NodeId::random());
    let more_ids = MORE_EVIL.map(|_| NodeId::random());
    let config = tmp.path().join("control.toml");
    let mut control = format!(
        "[[users]]\nname = \"alice\"\ntoken = \"{ALICE}\"\n[[users]]\nname = \"bob\"\ntoken = \"{BOB}\"\n\
         [[workspaces]]\nowner = \"alice\"\nname = \"good\"\n[[workspaces.agents]]\nid = \"{good_id}\"\ntoken = \"{GOOD_AGENT}\"\n\
         [[workspaces]]\nowner = \"bob\"\nname = \"evil\"\n[[workspaces.agents]]\nid = \"{evil_id}\"\ntoken = \"{EVIL_AGENT}\"\n"
    );
    for ((name, token), id) in MORE_EVIL.iter().zip(more_ids) {
        control.push_str(&format!(
            "[[workspaces]]\nowner = \"bob\"\nname = \"{name}\"\n[[workspaces.agents]]\nid = \"{id}\"\ntoken = \"{token}\"\n"
        ));
    }
    std::fs::write(&config, control).unwrap();
    let server = Server::start(ServeConfig {
        config_file: Some(config),
        ..ServeConfig::loopback(tmp.path().join("state"))
    })
    .await
    .unwrap();
    assert!(server.wait_ready(Duration::from_secs(10)).await);
    let url = server.public_url.clone();
    let mut cfg = AgentConfig::new(&url, GOOD_AGENT, good_id, dir.clone());
    cfg.api.root = Some(dir);
    cfg.tailnet.udp_listen = "127.0.0.1:0".parse().unwrap();
    let good = Agent::start(cfg).unwrap();
    assert!(good.wait_ready(Duration::from_secs(10)).await);
    let attacker = Attacker::start();
    let evil = attacker
        .handle
        .spawn({
            let url = url.clone();
            async move { evil_agent(&url, EVIL_AGENT, evil_id).await }
        })
        .await
        .unwrap();
    let mut more_evil = Vec::new();
    for ((_, token), id) in MORE_EVIL.iter().zip(more_ids) {
        let url = url.clone();
        more_evil.push(
            attacker
                .handle
                .spawn(async move { evil_agent(&url, token, id).await })
                .await
                .unwrap(),
        );
    }
    Rig {
        server,
        file,
        good,
        evil,
        more_evil,
        attacker,
        _tmp: tmp,
    }
}

#[derive(Default)]
struct Figures {
    lat: Vec<Duration>,
    failed: Vec<String>,
    peak_rss_kib: u64,
    peak_tasks: usize,
}

impl Figures {
    fn pct(&self, p: f64) -> Duration {
        let mut v = self.lat.clone();
        v.sort();
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    }
}

/// Alice reads her file in a loop for `PHASE` while `hostile` runs; the resources of the
/// whole process (server, both agents, harness) are sampled every 50 ms.
async fn alice_calls(addr: SocketAddr, file: &str) -> Figures {
    let mut mcp = McpHttp::new(addr, ALICE);
    let mut f = Figures::default();
    let end = Instant::now() + PHASE;
    let mut last_sample = Instant::now();
    while Instant::now() < end {
        let start = Instant::now();
        let out = mcp
            .call(
                "workspace_read_file",
                json!({"workspace": "alice/good", "path": file}),
                Duration::from_secs(20),
            )
            .await;
        match out {
            Outcome::Ok(_) => f.lat.push(start.elapsed()),
            other => f.failed.push(format!("{other:?}")),
        }
        if last_sample.elapsed() >= Duration::from_millis(50) {
            let (tasks, _, rss) = resources();
            f.peak_tasks = f.peak_tasks.max(tasks);
            f.peak_rss_kib = f.peak_rss_kib.max(rss);
            last_sample = Instant::now();
        }
    }
    f
}

/// Bob keeps `n` calls to his `workspaces` going (in turn) until `stop`, then closes
/// them; returns (ok, failed, refused for the per-user limit) counts.
fn bob_calls(
    rt: &tokio::runtime::Handle,
    addr: SocketAddr,
    n: usize,
    workspaces: &'static [&'static str],
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<(u64, u64, u64)> {
    rt.spawn(async move {
        let tally = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
        let mut tasks = Vec::new();
        for i in 0..n {
            let (stop, tally) = (stop.clone(), tally.clone());
            let workspace = format!("bob/{}", workspaces[i % workspaces.len()]);
            tasks.push(tokio::spawn(async move {
                let mut mcp = McpHttp::new(addr, BOB);
                while !stop.is_cancelled() {
                    let call = mcp.call(
                        "workspace_read_file",
                        json!({"workspace": workspace, "path": "/x"}),
                        PHASE + Duration::from_secs(2),
                    );
                    // Stopping drops the call and its connection: the server cancels it.
                    let out = tokio::select! {
                        out = call => out,
                        _ = stop.cancelled() => break,
                    };
                    let slot = match out {
                        Outcome::Ok(_) => 0,
                        Outcome::Failed(m) if m.contains("tool calls in flight") => 2,
                        _ => 1,
                    };
                    tally[slot].fetch_add(1, Ordering::Relaxed);
                    if slot == 2 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
        }
        for t in tasks {
            let _ = tokio::time::timeout(PHASE + Duration::from_secs(5), t).await;
        }
        (
            tally[0].load(Ordering::Relaxed),
            tally[1].load(Ordering::Relaxed),
            tally[2].load(Ordering::Relaxed),
        )
    })
}

fn report(name: &str, f: &Figures, base: Option<&Figures>) {
    let (p50, p99) = (f.pct(0.5), f.pct(0.99));
    let ratio = base.map_or(1.0, |b| {
        p99.as_secs_f64() / b.pct(0.99).as_secs_f64().max(1e-6)
    });
    println!(
        "hostile_{name}_alice_p50: {:.2} ms\nhostile_{name}_alice_p99: {:.2} ms\nhostile_{name}_alice_p99_ratio: {ratio:.2} x\n\
         hostile_{name}_alice_calls: {} ok, {} failed\nhostile_{name}_peak_rss: {} KiB\nhostile_{name}_peak_tasks: {}",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        f.lat.len(),
        f.failed.len(),
        f.peak_rss_kib,
        f.peak_tasks,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_workspace_leaves_other_tenants_alone() {
    let r = rig().await;
    let addr = r.server.addr;
    // Warm up both paths.
    alice_calls(addr, &r.file).await;
    let since = unix_ms();
    let base = alice_calls(addr, &r.file).await;
    report("baseline", &base, None);
    server_side(&r.server, "baseline", since).await;
    assert!(
        base.failed.is_empty(),
        "{:?}",
        &base.failed[..base.failed.len().min(3)]
    );

    let mut worst = 1.0f64;
    let mut check = |name: &str, f: &Figures| {
        report(name, f, Some(&base));
        assert!(
            f.failed.is_empty(),
            "{name}: alice's calls failed: {:?}",
            &f.failed[..f.failed.len().min(3)]
        );
        // Bulk replies break no limit: bob reads as fast as his agent's reply budget and
        // its two large reads in flight allow, and what that costs alice is shown but not
        // yet held to the 2x target (docs/reliability.md); only a collapse fails it.
        let bulk = name.starts_with("bulk");
        if !bulk {
            worst = worst.max(f.pct(0.99).as_secs_f64() / base.pct(0.99).as_secs_f64().max(1e-6));
        }
        // The hostile agent runs in this process, on the same two cores as the server, so
        // alice's p99 carries the attacker's own CPU cost; the 2x target is checked with
        // HOSTILE_STRICT=1 on a quiet machine. By default the bound only catches a collapse
        // (before the receive queue's fair share, a UDP flood took alice's p99 to 7 s).
        let bound = if std::env::var_os("HOSTILE_STRICT").is_some() && !bulk {
            base.pct(0.99) * 2 + Duration::from_millis(2)
        } else {
            base.pct(0.99) * 10 + Duration::from_millis(100)
        };
        assert!(
            f.pct(0.99) <= bound,
            "{name}: alice p99 {:?} > {bound:?}",
            f.pct(0.99)
        );
    };

    // Bulk first: the phases after it break limits and put bob's agent on probation.
    // "bulk_3ws" spreads bob's bulk over his three workspaces: the bound on large reads
    // in flight is per destination and per user, so more workspaces do not multiply it.
    const ONE: &[&str] = &["evil"];
    const THREE: &[&str] = &["evil", "evil2", "evil3"];
    for (name, mode, workspaces) in [
        ("bulk", Mode::Bulk, ONE),
        ("bulk_3ws", Mode::Bulk, THREE),
        ("silent", Mode::Silent, ONE),
        ("endless", Mode::Endless, ONE),
        ("gigantic", Mode::Gigantic, ONE),
    ] {
        r.evil.mode.store(mode as u8, Ordering::Relaxed);
        for e in &r.more_evil {
            let m = if workspaces.len() > 1 {
                mode
            } else {
                Mode::Silent
            };
            e.mode.store(m as u8, Ordering::Relaxed);
        }
        let stop = tokio_util::sync::CancellationToken::new();
        let bob = bob_calls(&r.attacker.handle, addr, 100, workspaces, stop.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let peak = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let sampler = {
            let (tn, peak) = (r.server.tailnet().clone(), peak.clone());
            tokio::spawn(async move {
                loop {
                    if let Ok(st) = tn.tunnel().stats().await {
                        peak[0].fetch_max(st.netstack.tcp_sockets as u64, Ordering::Relaxed);
                        peak[1].fetch_max(st.netstack.lingering as u64, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let since = unix_ms();
        let f = alice_calls(addr, &r.file).await;
        server_side(&r.server, name, since).await;
        sampler.abort();
        println!(
            "hostile_{name}_server_tcp_sockets_peak: {} ({} lingering)",
            peak[0].load(Ordering::Relaxed),
            peak[1].load(Ordering::Relaxed)
        );
        stop.cancel();
        check(name, &f);
        let (ok, failed, limited) = bob.await.unwrap();
        println!(
            "hostile_{name}_bob_calls: {ok} ok, {failed} failed, {limited} refused by the per-user limit"
        );
        // Bob's client closed its calls: the server drops them (whatever the tool) instead
        // of holding his slots and the agent connections until the request timeout.
        let drained = drain(addr).await;
        println!(
            "hostile_{name}_drained_in: {:.0} ms",
            drained.as_secs_f64() * 1e3
        );
        assert!(
            drained < Duration::from_secs(3),
            "{name}: bob's closed calls stayed in flight"
        );
    }

    // UDP flood through the evil agent's tunnel at the server's tailnet address.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, sent, tn) = (stop.clone(), sent.clone(), r.evil.tailnet.clone());
        let target = SocketAddr::new(r.server_tailnet_addr().into(), 9);
        r.attacker.handle.spawn(async move {
            let sock = tn.tunnel().bind_udp(0).unwrap();
            let payload = vec![0u8; 1200];
            while !stop.load(Ordering::Relaxed) {
                if sock.send_to(&payload, target).await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let flood_start = Instant::now();
    let f = alice_calls(addr, &r.file).await;
    stop.store(true, Ordering::Relaxed);
    let _ = flood.await;
    let pps = sent.load(Ordering::Relaxed) as f64 / flood_start.elapsed().as_secs_f64();
    println!("hostile_udp_flood_rate: {pps:.0} packets/s");
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("hostile_udp_flood_rss_1s_after: {} KiB", resources().2);
    if let Ok(st) = r.server.tailnet().tunnel().stats().await {
        println!(
            "hostile_udp_flood_server_netstack: {} queued, {} dropped for no socket, {} over fair share",
            st.netstack.rx_packets, st.netstack.rx_no_socket, st.netstack.rx_fair_share
        );
        let drop = |name| {
            st.driver
                .drops
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0, |d| d.1)
        };
        println!(
            "hostile_udp_flood_server_undecrypted: {} over the backlog's fair share, {} from a peer restricted as wasteful",
            drop("fair_share"),
            drop("wasteful")
        );
        // Datagrams addressed to nothing put their peer on the wasteful rate (1 000 a
        // second), so once the flood outruns that, most of what reaches the driver is
        // dropped before decryption rather than decrypted and discarded.
        if pps > 5_000.0 {
            assert!(
                drop("wasteful") > st.netstack.rx_no_socket,
                "the flood was decrypted: {} dropped undecrypted, {} decrypted for no socket",
                drop("wasteful"),
                st.netstack.rx_no_socket
            );
        }
    }
    check("udp_flood", &f);

    // Thousands of TCP connections at the server's tailnet address.
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let conns = {
        let (stop, opened, tn) = (stop.clone(), opened.clone(), r.evil.tailnet.clone());
        let target = SocketAddr::new(r.server_tailnet_addr().into(), 4);
        r.attacker.handle.spawn(async move {
            let mut held = Vec::new();
            for _ in 0..10_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(Ok(s)) =
                    tokio::time::timeout(Duration::from_millis(50), tn.tunnel().dial_tcp(target))
                        .await
                {
                    held.push(s);
                }
                opened.fetch_add(1, Ordering::Relaxed);
            }
            held.len()
        })
    };
    let f = alice_calls(addr, &r.file).await;
    stop.store(true, Ordering::Relaxed);
    let held = conns.await.unwrap();
    println!(
        "hostile_tcp_connections: {} attempted, {held} accepted by the server",
        opened.load(Ordering::Relaxed)
    );
    check("tcp_connections", &f);

    println!("hostile_worst_p99_ratio: {worst:.2} x");
    // Each limit's counter, as the operator sees it.
    let metrics = metrics(addr).await;
    for l in metrics.lines().filter(|l| {
        !l.starts_with('#')
            && (l.contains("limited")
                || l.contains("refused")
                || l.contains("dropped")
                || l.contains("paced")
                || l.contains("broken")
                || l.contains("reason=\"fair_share\"")
                || l.contains("probation")
                || l.contains("queued")
                || l.contains("waiting")
                || l.contains("reason=\"wasteful\"")
                || l.contains("in_flight"))
    }) {
        println!("hostile_counter {l}");
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("agentwire_mcp_user_limited_total") && !l.ends_with(" 0")),
        "bob's calls beyond the per-user limit were counted"
    );
    assert!(
        metrics.lines().any(|l| l
            .starts_with("agentwire_mcp_agent_replies_limited_total{limit=\"size\"}")
            && !l.ends_with(" 0")),
        "bob's agent's endless and gigantic replies were cut and counted"
    );
    assert!(
        metrics.lines().any(
            |l| l.starts_with("agentwire_mcp_user_large_reads_queued_total") && !l.ends_with(" 0")
        ),
        "bob's large reads across his three workspaces waited for his share"
    );
    r.good.shutdown().await;
    r.server.shutdown().await;
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Alice's calls since `since` as the server timed them (from its audit log: the tool's
/// own time, connect and agent exchange, without the HTTP front end).
async fn server_side(server: &Server, name: &str, since: i64) {
    let Some(store) = server.store() else { return };
    store.flush_audit(Duration::from_secs(2)).await;
    let filter = agentwire::services::store::model::AuditFilter {
        user: Some("alice".into()),
        since_ms: Some(since),
        limit: Some(10_000),
        ..Default::default()
    };
    let Ok(entries) = store.audit_log(filter).await else {
        return;
    };
    let mut d: Vec<f64> = entries.iter().map(|e| e.duration_ms).collect();
    d.sort_by(f64::total_cmp);
    if let Some(max) = d.last() {
        println!(
            "hostile_{name}_alice_server_side_p50: {:.2} ms\nhostile_{name}_alice_server_side_p99: {:.2} ms\nhostile_{name}_alice_server_side_max: {max:.2} ms",
            d[d.len() / 2],
            d[(d.len() - 1) * 99 / 100],
        );
    }
}

/// Waits (at most 5 s) until the server has no tool call in flight; returns how long.
async fn drain(addr: SocketAddr) -> Duration {
    let start = Instant::now();
    loop {
        let m = metrics(addr).await;
        let line = m
            .lines()
            .find(|l| l.starts_with("agentwire_mcp_tool_calls_in_flight "))
            .unwrap_or_default()
            .to_string();
        if line.ends_with(" 0") || start.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

async fn metrics(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

impl Rig {
    fn server_tailnet_addr(&self) -> std::net::Ipv6Addr {
        self.server.tailnet().addr()
    }
}
