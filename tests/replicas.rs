//! Replicas: `agentwire serve` processes on one PostgreSQL behind a round-robin load
//! balancer, and what their clients see when one of them, or the database, fails.
//!
//! Three replicas (child processes of the real binary, so a kill is real), two agents
//! (`agentwire agent` children: one relay-only, one with a direct UDP path on loopback)
//! homed on one replica, MCP callers pinned (by their keep-alive connection) to the
//! other replicas, and a user Tailnet in this process homed on yet another, echoing
//! through each agent every 10 ms. Then, in turn: SIGKILL the agents' home replica,
//! SIGKILL a caller's replica (each killed replica is started again after), SIGSTOP a
//! replica for 5 s, restart PostgreSQL. For each: the longest echo gap per agent,
//! calls ok / failed (with the message) / hung, and `disconnected` peer updates seen by
//! clients (the user's Tailnet and every replica's shared Tailnet; the agents stay up
//! throughout, so every one is spurious). At the end: threads and descriptors of the
//! processes that lived through it all, tasks of the replica that was never restarted,
//! and rows left in the database for replicas that are gone.
//!
//! Targets missed today are listed in `KNOWN_MISSES` (printed, not failing the run).
//! Until the replicas' relays are meshed (`agentwire_derp_mesh_peers` on `/metrics`), the
//! relay-only agent is left out of what crosses replicas, and the run says so.
//!
//! Without replica mode in the binary (no `serve --replica-url`) the same runs with one
//! replica: the kill is a crash and restart of the only server, the caller's kill is the
//! same one (skipped), and the failover targets (echo gap) are printed, not asserted.
//!
//! Needs PostgreSQL (skips without it unless `AGENTWIRE_REQUIRE_PG=1`). Output:
//! `cargo nextest run --test replicas --no-capture`; replica and agent logs at
//! `REPLICAS_LOG` level (default info) are printed on failure.

#![allow(clippy::disallowed_methods)]

#[path = "common/lb.rs"]
mod lb;
#[path = "common/mcp_http.rs"]
mod mcp_http;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/replicas.rs"]
mod replica_set;

use agentwire::runtime::tailnet::Tailnet;
use agentwire::wire::addr::NodeId;
use mcp_http::{McpHttp, Outcome};
use replica_set::{Proc, ReplicaSet, metric};
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A call with no answer by then is hung.
const HUNG: Duration = Duration::from_secs(20);
/// The longest an echo may go unanswered across a replica's loss.
const GAP_TARGET: Duration = Duration::from_secs(2);
/// How long each failure is watched after it is caused.
const WINDOW: Duration = Duration::from_secs(5);
/// Targets missed today, by phase and agent, each with why: printed as a known miss
/// rather than failing the run, so every other target stays guarded. Remove an entry when
/// its cause is fixed.
const KNOWN_MISSES: &[(&str, &str, &str)] = &[];

/// How long echoes may take to flow again after a phase's watch.
const RECOVERY: Duration = Duration::from_secs(20);
/// How long set-up steps may take.
const SETUP: Duration = Duration::from_secs(25);

/// Calls' outcomes, by the phase in which each call started.
#[derive(Default)]
struct Calls {
    phase: AtomicUsize,
    by_phase: Mutex<HashMap<usize, PhaseCalls>>,
}

#[derive(Default, Clone)]
struct PhaseCalls {
    ok: u64,
    failed: Vec<String>,
    hung: u64,
    /// The longest a call that was answered took.
    slowest: Duration,
}

/// One echo probe's longest gap between answered echoes.
struct Gap {
    last_ok: Option<Instant>,
    max: Duration,
    echoes: u64,
}

impl Gap {
    /// The longest gap since the last take, counting one still open; starts afresh.
    fn take(&mut self) -> Duration {
        let open = self.last_ok.map(|t| t.elapsed()).unwrap_or_default();
        std::mem::take(&mut self.max).max(open)
    }
}

async fn echo_server() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// Echoes 8 bytes through `agent` every 10 ms, redialling when the stream fails.
fn echo_probe(
    user: Arc<Tailnet>,
    agent: NodeId,
    port: u16,
    gap: Arc<Mutex<Gap>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seq = 0u64;
        let mut conn = None;
        while !stop.load(Ordering::Relaxed) {
            if conn.is_none() {
                let dial = async {
                    let c = user
                        .agent_conn(agent, tokio::time::Instant::now() + Duration::from_secs(3))
                        .await
                        .ok()?;
                    let s = c.dial_tcp(port).await.ok()?;
                    Some((c, s))
                };
                conn = tokio::time::timeout(Duration::from_secs(4), dial)
                    .await
                    .ok()
                    .flatten();
                if conn.is_none() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
            let (_, s) = conn.as_mut().expect("just set");
            seq += 1;
            let ok = tokio::time::timeout(Duration::from_secs(2), async {
                s.write_all(&seq.to_be_bytes()).await?;
                let mut back = [0u8; 8];
                s.read_exact(&mut back).await?;
                Ok::<_, std::io::Error>(back == seq.to_be_bytes())
            })
            .await;
            if matches!(ok, Ok(Ok(true))) {
                {
                    let now = Instant::now();
                    let mut g = gap.lock().unwrap();
                    if let Some(t) = g.last_ok {
                        g.max = g.max.max(now - t);
                    }
                    g.last_ok = Some(now);
                    g.echoes += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            } else {
                conn = None;
            }
        }
    })
}

/// Calls `workspace_ls` on each workspace in turn through `mcp` until `stop`.
fn caller(
    mut mcp: McpHttp,
    targets: Vec<(String, String)>,
    calls: Arc<Calls>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut k = 0;
        while !stop.load(Ordering::Relaxed) {
            let (ws, dir) = &targets[k % targets.len()];
            k += 1;
            let phase = calls.phase.load(Ordering::Relaxed);
            let t = Instant::now();
            let out = mcp
                .call("workspace_ls", json!({"workspace": ws, "path": dir}), HUNG)
                .await;
            {
                let mut m = calls.by_phase.lock().unwrap();
                let p = m.entry(phase).or_default();
                if out != Outcome::Hung {
                    p.slowest = p.slowest.max(t.elapsed());
                }
                match out {
                    Outcome::Ok(_) => p.ok += 1,
                    Outcome::Failed(msg) => p.failed.push(msg),
                    Outcome::Hung => p.hung += 1,
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// `disconnected` updates seen by clients: the user's Tailnet, and each replica's shared
/// Tailnet (per incarnation, read before a replica is killed and after each phase).
#[derive(Default)]
struct Disconnects {
    seen: HashMap<(usize, u32), f64>,
}

impl Disconnects {
    async fn scrape(&mut self, set: &ReplicaSet) {
        for i in set.up() {
            let inc = set.replicas[i].incarnation;
            if let Some(page) = set.metrics(i).await
                && let Some(v) = metric(
                    &page,
                    "agentwire_tailnet_peer_updates_total",
                    "kind=\"disconnected\"",
                )
            {
                self.seen.insert((i, inc), v);
            }
        }
    }

    fn total(&self, user: &Tailnet) -> u64 {
        self.seen.values().sum::<f64>() as u64 + user.peer_update_counts().disconnected
    }
}

/// Waits until `ws` answers a tool call through replica `at` (not the load balancer).
async fn wait_reachable(at: SocketAddr, token: &str, ws: &str, dir: &str, procs: &[&Proc]) {
    let deadline = Instant::now() + SETUP;
    let mut mcp = McpHttp::new(at, token);
    let mut last = None;
    while Instant::now() < deadline {
        match mcp
            .call(
                "workspace_ls",
                json!({"workspace": ws, "path": dir}),
                Duration::from_secs(5),
            )
            .await
        {
            Outcome::Ok(_) => return,
            other => last = Some(other),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let logs: Vec<String> = procs
        .iter()
        .map(|p| format!("--- {}:\n{}", p.name, p.tail(30)))
        .collect();
    panic!(
        "{ws} not reachable through {at}: {last:?}\n{}",
        logs.join("\n")
    );
}

fn figure(name: &str, value: impl std::fmt::Display, unit: &str) {
    println!("{name}: {value} {unit}");
}

/// The results of one phase.
struct PhaseResult {
    name: &'static str,
    gaps: Vec<(&'static str, Duration)>,
    calls: PhaseCalls,
    disconnected: u64,
}

struct Run {
    set: ReplicaSet,
    user: Arc<Tailnet>,
    gaps: Vec<(&'static str, Arc<Mutex<Gap>>)>,
    calls: Arc<Calls>,
    disconnects: Disconnects,
    phase: usize,
    disconnected_at_start: u64,
    results: Vec<PhaseResult>,
}

impl Run {
    /// Starts watching a new phase.
    async fn begin(&mut self) {
        self.phase += 1;
        self.calls.phase.store(self.phase, Ordering::Relaxed);
        for (_, g) in &self.gaps {
            g.lock().unwrap().take();
        }
        self.disconnects.scrape(&self.set).await;
        self.disconnected_at_start = self.disconnects.total(&self.user);
    }

    /// Connections open per replica through the load balancer (where clients went).
    fn placement(&self) -> String {
        let counts: Vec<String> = (0..self.set.lb.len())
            .map(|i| self.set.lb.active(i).to_string())
            .collect();
        counts.join("/")
    }

    /// Records the phase once every echo flows again (so the next phase starts from a
    /// working tunnel), printing how long that took.
    async fn end(&mut self, name: &'static str) {
        let t = Instant::now();
        let flowing = |g: &Arc<Mutex<Gap>>| {
            g.lock()
                .unwrap()
                .last_ok
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        };
        while !self.gaps.iter().all(|(_, g)| flowing(g)) && t.elapsed() < RECOVERY {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (agent, g) in &self.gaps {
            if !flowing(g) {
                println!("{name}.echo_{agent}: not flowing again {RECOVERY:?} after the watch");
            }
        }
        figure(
            &format!("{name}.settled_after"),
            t.elapsed().as_millis(),
            "ms",
        );
        println!("{name}.connections_per_replica: {}", self.placement());
        self.disconnects.scrape(&self.set).await;
        let gaps = self
            .gaps
            .iter()
            .map(|(n, g)| (*n, g.lock().unwrap().take()))
            .collect();
        let r = PhaseResult {
            name,
            gaps,
            calls: PhaseCalls::default(),
            disconnected: self.disconnects.total(&self.user) - self.disconnected_at_start,
        };
        self.results.push(r);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_survive_failures() {
    let Some(pg) = replica_set::postgres_or_skip() else {
        return;
    };
    let started = Instant::now();
    let set = ReplicaSet::start(Arc::new(pg), 3).await;
    let n = set.replicas.len();
    println!(
        "replicas: {n} ({}) in {} ms",
        if set.multi {
            "replica mode"
        } else {
            "no replica mode in the binary: one replica"
        },
        started.elapsed().as_millis()
    );
    // Who sits where: agents on `home`, the user's Tailnet on `tunnel`, callers on every
    // other replica (with one replica, everything is on it).
    let home = 0;
    let tunnel = 1 % n;
    let caller_replicas: Vec<usize> = if n == 1 {
        vec![0]
    } else {
        (0..n).filter(|r| *r != home).collect()
    };

    // Relay traffic between replicas needs their relays meshed; until serve meshes
    // them, the relay-only agent is reachable only through its home replica, so it is
    // left out of the echoes and calls that cross replicas (said loudly, and judged as
    // soon as the mesh runs).
    let meshed = !set.multi || set.meshed(Duration::from_secs(5)).await;
    if !meshed {
        println!(
            "NOT JUDGED: the replicas' relays are not meshed (no agentwire_derp_mesh_peers on \
             /metrics): the relay-only agent is left out of the echoes and calls"
        );
    }
    let alice = set.user("alice").await;
    let (relay_id, relay_token) = set.workspace("alice", "relay").await;
    let (direct_id, direct_token) = set.workspace("alice", "direct").await;
    set.lb.only(Some(home));
    let agents = [
        set.spawn_agent("relay", &relay_token, true),
        set.spawn_agent("direct", &direct_token, false),
    ];
    let judged: Vec<(&'static str, &String)> = [("relay", &relay_id), ("direct", &direct_id)]
        .into_iter()
        .filter(|(a, _)| meshed || *a != "relay")
        .collect();
    let targets: Vec<(String, String)> = ["relay", "direct"]
        .iter()
        .map(|a| (format!("alice/{a}"), set.agent_dir(a).display().to_string()))
        .collect();
    let procs: Vec<&Proc> = agents
        .iter()
        .chain(set.replicas.iter().filter_map(|r| r.proc.as_ref()))
        .collect();
    for (ws, dir) in &targets {
        wait_reachable(set.replicas[home].addr, &alice, ws, dir, &procs).await;
    }
    drop(procs);

    // The user's tunnel, homed on `tunnel`, echoing through both agents.
    let port = echo_server().await;
    set.lb.only(Some(tunnel));
    let user = Arc::new(
        Tailnet::builder(set.public_url(), alice.clone())
            .name("user")
            .udp_listen("127.0.0.1:0".parse().unwrap())
            .build()
            .expect("user tailnet"),
    );
    assert!(user.wait_ready(SETUP).await, "the user's Tailnet is ready");
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut gaps = Vec::new();
    for (name, id) in judged.iter().copied() {
        let g = Arc::new(Mutex::new(Gap {
            last_ok: None,
            max: Duration::ZERO,
            echoes: 0,
        }));
        let id: NodeId = id.parse().unwrap();
        tasks.push(echo_probe(user.clone(), id, port, g.clone(), stop.clone()));
        gaps.push((name, g));
    }
    let deadline = Instant::now() + SETUP;
    while gaps.iter().any(|(_, g)| g.lock().unwrap().echoes < 10) {
        if Instant::now() > deadline {
            let echoes: Vec<(&str, u64)> = gaps
                .iter()
                .map(|(n, g)| (*n, g.lock().unwrap().echoes))
                .collect();
            let dests: Vec<String> = user
                .destinations()
                .await
                .iter()
                .map(|d| format!("{} {} lost={} path={:?}", d.agent, d.stage, d.lost, d.path))
                .collect();
            panic!(
                "echoes through both agents: {echoes:?}; the user's destinations: {dests:#?}\n{}\n{}",
                agents[0].tail(20),
                agents[1].tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Callers, each kept on its replica by its keep-alive connection.
    let calls = Arc::new(Calls::default());
    for r in &caller_replicas {
        set.lb.only(Some(*r));
        let before = set.lb.placed_count();
        let mut mcp = McpHttp::new(set.lb.addr, &alice);
        let first = mcp
            .call(
                "workspace_ls",
                json!({"workspace": targets[1].0, "path": targets[1].1}),
                HUNG,
            )
            .await;
        assert!(matches!(first, Outcome::Ok(_)), "{first:?}");
        let placed = set.lb.placed_since(before);
        assert!(
            !placed.is_empty() && placed.iter().all(|p| *p == Some(*r)),
            "caller on {r}: {placed:?}"
        );
        let crossing: Vec<(String, String)> = targets
            .iter()
            .filter(|(ws, _)| judged.iter().any(|(a, _)| ws.ends_with(a)))
            .cloned()
            .collect();
        tasks.push(caller(mcp, crossing, calls.clone(), stop.clone()));
    }
    set.lb.only(None);
    // The agents' streams are where they were put: on `home`.
    for i in 0..n {
        let peers = match set.metrics(i).await {
            Some(page) => metric(&page, "agentwire_coordinator_peers", ""),
            None => None,
        };
        println!(
            "replica {i}: {} connections through the load balancer, coordinator peers {peers:?}",
            set.lb.active(i)
        );
    }
    let path = user.path_info(direct_id.parse().unwrap()).await;
    println!("direct agent's path from the user: {path:?}");
    println!("set up in {} ms", started.elapsed().as_millis());

    // Survivors, measured before and after: the agents, and (with replica mode) the
    // replica nobody kills (the tunnel's, which is only stopped).
    let survivor = (n > 1).then_some(tunnel);
    let agent_before: Vec<(usize, usize)> = agents.iter().map(Proc::resources).collect();
    let survivor_before = match survivor {
        Some(s) => replica_resources(&set, s).await,
        None => None,
    };

    let mut run = Run {
        set,
        user: user.clone(),
        gaps,
        calls: calls.clone(),
        disconnects: Disconnects::default(),
        phase: 0,
        disconnected_at_start: 0,
        results: Vec::new(),
    };

    // 1. The agents' home replica dies; after the watch it is started again.
    run.begin().await;
    run.set.kill(home);
    tokio::time::sleep(WINDOW).await;
    run.set.start_replica(home).await;
    run.end("kill_home").await;

    // 2. A caller's replica dies (with one replica, the same one: skipped).
    let victim = *caller_replicas.last().expect("a caller");
    if n > 1 {
        run.begin().await;
        run.set.kill(victim);
        tokio::time::sleep(WINDOW).await;
        run.set.start_replica(victim).await;
        run.end("kill_caller").await;
    } else {
        println!("kill_caller: skipped (one replica)");
    }

    // 3. A replica is frozen for 5 s: the user tunnel's.
    run.begin().await;
    run.set.freeze(tunnel);
    tokio::time::sleep(Duration::from_secs(5)).await;
    run.set.thaw(tunnel);
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.end("stop_5s").await;

    // 4. PostgreSQL restarts.
    run.begin().await;
    let pg = run.set.pg.clone();
    tokio::task::spawn_blocking(move || pg.restart())
        .await
        .unwrap();
    tokio::time::sleep(WINDOW).await;
    run.end("restart_postgres").await;

    // Calls still in flight finish (or hang) before they are counted.
    calls.phase.store(usize::MAX, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(HUNG + Duration::from_secs(2), t).await;
    }
    let by_phase = calls.by_phase.lock().unwrap().clone();
    for (k, r) in run.results.iter_mut().enumerate() {
        r.calls = by_phase.get(&(k + 1)).cloned().unwrap_or_default();
    }

    // Left behind.
    let agent_after: Vec<(usize, usize)> = agents.iter().map(Proc::resources).collect();
    let survivor_after = match survivor {
        Some(s) => replica_resources(&run.set, s).await,
        None => None,
    };
    let rows = wait_rows_expired(&run.set).await;

    // Report.
    let mut failures = Vec::new();
    for r in &run.results {
        for (agent, gap) in &r.gaps {
            figure(
                &format!("{}.echo_gap_{agent}", r.name),
                gap.as_millis(),
                "ms",
            );
            let judged = run.set.multi || r.name == "restart_postgres";
            if judged && *gap > GAP_TARGET {
                let miss = format!("{}: echo gap through {agent} {gap:?}", r.name);
                match KNOWN_MISSES
                    .iter()
                    .find(|(p, a, _)| *p == r.name && a == agent)
                {
                    Some((_, _, why)) => println!("KNOWN MISS {miss}: {why}"),
                    None => failures.push(miss),
                }
            }
        }
        figure(&format!("{}.calls_ok", r.name), r.calls.ok, "calls");
        figure(
            &format!("{}.calls_failed", r.name),
            r.calls.failed.len(),
            "calls",
        );
        figure(&format!("{}.calls_hung", r.name), r.calls.hung, "calls");
        figure(
            &format!("{}.slowest_answered_call", r.name),
            r.calls.slowest.as_millis(),
            "ms",
        );
        let mut msgs: Vec<(String, usize)> = Vec::new();
        for m in &r.calls.failed {
            let m = one_line(m);
            match msgs.iter_mut().find(|(k, _)| *k == m) {
                Some((_, c)) => *c += 1,
                None => msgs.push((m, 1)),
            }
        }
        for (m, c) in msgs.iter().take(5) {
            println!("{}.failure: {c} × {m}", r.name);
        }
        figure(
            &format!("{}.disconnected_events", r.name),
            r.disconnected,
            "events",
        );
        if r.calls.hung > 0 {
            failures.push(format!("{}: {} calls hung", r.name, r.calls.hung));
        }
        if r.disconnected > 0 {
            failures.push(format!(
                "{}: {} spurious disconnected events",
                r.name, r.disconnected
            ));
        }
        if r.calls.failed.iter().any(|m| m.trim().is_empty()) {
            failures.push(format!("{}: a call failed without a message", r.name));
        }
    }
    for (k, a) in agents.iter().enumerate() {
        let (t0, f0) = agent_before[k];
        let (t1, f1) = agent_after[k];
        figure(
            &format!("left.{}_threads", a.name),
            t1 as i64 - t0 as i64,
            "threads",
        );
        figure(
            &format!("left.{}_fds", a.name),
            f1 as i64 - f0 as i64,
            "fds",
        );
        if f1 > f0 + 8 {
            failures.push(format!("{}: descriptors {f0} -> {f1}", a.name));
        }
    }
    if let (Some((t0, f0, k0)), Some((t1, f1, k1))) = (survivor_before, survivor_after) {
        figure("left.replica_threads", t1 as i64 - t0 as i64, "threads");
        figure("left.replica_fds", f1 as i64 - f0 as i64, "fds");
        figure("left.replica_tasks", k1 as i64 - k0 as i64, "tasks");
        if f1 > f0 + 16 {
            failures.push(format!("surviving replica: descriptors {f0} -> {f1}"));
        }
        if k1 > k0 + 16 {
            failures.push(format!("surviving replica: tasks {k0} -> {k1}"));
        }
    }
    match rows {
        Some(r) => {
            figure("left.rows", r, "rows");
            if r > 0 {
                failures.push(format!("{r} rows of dead replicas left in the database"));
            }
        }
        None => println!("left.rows: n/a (no replica rows in the single-replica store)"),
    }
    println!("total: {} ms", started.elapsed().as_millis());

    if !failures.is_empty() {
        let procs = agents
            .iter()
            .chain(run.set.replicas.iter().filter_map(|r| r.proc.as_ref()));
        for p in procs {
            println!("--- {} (last lines):\n{}", p.name, p.tail(25));
        }
    }
    drop(agents);
    drop(run.user);
    if let Ok(u) = Arc::try_unwrap(user) {
        u.shutdown().await;
    }
    assert!(
        failures.is_empty(),
        "targets missed:\n{}",
        failures.join("\n")
    );
}

fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    s.chars().take(200).collect()
}

/// Threads and descriptors (from /proc) and tasks (from /metrics) of replica `i`.
async fn replica_resources(set: &ReplicaSet, i: usize) -> Option<(usize, usize, usize)> {
    // Settle first: connections just closed and tasks just ending are not leaks.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (t, f) = set.replicas[i].proc.as_ref()?.resources();
    let page = set.metrics(i).await?;
    let tasks = metric(&page, "agentwire_runtime_tasks", "")? as usize;
    Some((t, f, tasks))
}

/// Rows the database keeps for replicas that are gone, once they have had time to
/// expire (bounded).
async fn wait_rows_expired(set: &ReplicaSet) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = set.rows_left_behind().await?;
        if rows == 0 || Instant::now() > deadline {
            return Some(rows);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
