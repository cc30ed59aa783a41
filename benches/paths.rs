//! Direct paths through NAT, in figures: the NAT lab (`tests/common/nat.rs`) with every
//! segment an emulated link of 10 ms each way. A real `agentwire serve` runs on a public
//! host, a real `agentwire agent` behind one masquerading router, and this process's
//! client Tailnet behind another (on a thread that entered that host's namespace), so
//! the client reaches the agent directly only by hole punching.
//!
//! One way, the direct path crosses four segments (40 ms) and the relay six (60 ms:
//! client to server, server to agent).
//!
//! Prints, one per line: the first call's latency and the time from the start of the
//! first call until the path is direct (target ≤ 1 s); warm small-call (read a 100-byte
//! file) p50/p99 on the direct path and through the relay (a second, relay-only client
//! in the same run) and their ratio; bytes the relay forwarded per warm call once direct
//! (target 0) and per relayed call for scale; UDP the two routers forwarded between
//! their public addresses during the direct calls (the routers' own evidence).
//!
//! Run: `cargo bench --bench paths` (root, iptables, conntrack; skipped otherwise).
//! `PATHS_CALLS` sets the warm calls per path (200).

#![allow(clippy::disallowed_methods)]

mod common;
#[path = "../tests/common/nat.rs"]
mod nat;

use agentwire::proto::wg::PathAddr;
use agentwire::runtime::tailnet::{Tailnet, TailnetConfig};
use agentwire::services::agent::client::AgentClient;
use agentwire::wire::addr::NodeId;
use common::link::{self, LinkParams};
use common::netns::require;
use common::{figure, ms, pct};
use nat::{Host, Lab, NatKind};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const USER_TOKEN: &str = "paths-user-token-0123456789";
const AGENT_TOKEN: &str = "paths-agent-token-abcdefghij";
const PORT: u16 = 7080;
const METRICS_PORT: u16 = 9090;
const ONE_WAY_MS: f64 = 10.0;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_agentwire")
}

/// The relay's forwarded bytes, from serve's metrics listener.
fn relayed_bytes(metrics: SocketAddr) -> f64 {
    let mut s = TcpStream::connect_timeout(&metrics, Duration::from_secs(5)).expect("metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).expect("metrics body");
    body.lines()
        .find_map(|l| l.strip_prefix("agentwire_derp_bytes_relayed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no relayed bytes in metrics:\n{body}"))
}

/// What the client thread measured.
struct ClientFigures {
    first_call: Duration,
    to_direct: Option<Duration>,
    direct: Vec<Duration>,
    direct_relayed: f64,
    direct_router_udp: (u64, u64),
    relay: Vec<Duration>,
    relay_relayed: f64,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !require(&["iptables", "conntrack", "python3"]) {
        println!("paths: skipped (needs root, iptables and conntrack)");
        return;
    }
    let calls: usize = std::env::var("PATHS_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    print!("{}", link::overhead(8 << 20).lines());

    let mut lab = Lab::with_links(LinkParams::delay_ms(ONE_WAY_MS));
    let dir = lab.dir().to_path_buf();
    let agent_id = NodeId::random();
    let toml = format!(
        "[[users]]\nname = \"alice\"\ntoken = \"{USER_TOKEN}\"\n\
         [[workspaces]]\nowner = \"alice\"\nname = \"ws\"\n[[workspaces.agents]]\n\
         id = \"{agent_id}\"\ntoken = \"{AGENT_TOKEN}\"\n"
    );
    std::fs::write(dir.join("control.toml"), toml).expect("control file");

    let server = lab.public_host("server");
    let url = format!("http://{}:{PORT}", server.ip);
    let metrics = SocketAddr::new(server.ip, METRICS_PORT);
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--listen", &format!("{}:{PORT}", server.ip)])
        .args(["--public-url", &url])
        .args(["--stun-listen", &format!("{}:3478", server.ip)])
        .args(["--metrics-listen", &metrics.to_string()])
        .arg("--config")
        .arg(dir.join("control.toml"))
        .arg("--data-dir")
        .arg(dir.join("server-data"))
        .env("RUST_LOG", "warn,agentwire=info");
    let p = lab.spawn(&server, &mut cmd);
    assert!(
        p.wait_for("serving on", Duration::from_secs(30)),
        "serve did not start: {}",
        lab.dump()
    );

    let agent_host = lab.nat_host("agent", NatKind::Masquerade);
    let work = dir.join("ws");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("small.txt"), [b'x'; 100]).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["agent", "--url", &url, "--allow-insecure-http", "--dir"])
        .arg(&work)
        .env("AGENTWIRE_AGENT_TOKEN", AGENT_TOKEN)
        .env("RUST_LOG", "warn,agentwire=info");
    let a = lab.spawn(&agent_host, &mut cmd);
    assert!(
        a.wait_for("agentwire agent", Duration::from_secs(30)),
        "agent did not start: {}",
        lab.dump()
    );
    let client_host = lab.nat_host("laptop", NatKind::Masquerade);

    let figures = run_client(
        &lab,
        &client_host,
        &agent_host,
        &url,
        agent_id,
        &work,
        calls,
    );

    figure("first_call", ms(figures.first_call), "ms");
    match figures.to_direct {
        Some(d) => figure("time_to_direct", ms(d), "ms"),
        None => println!("time_to_direct: none (no direct path within 10 s)"),
    }
    let d50 = pct(&figures.direct, 0.5);
    let r50 = pct(&figures.relay, 0.5);
    figure("warm_call_direct_p50", ms(d50), "ms");
    figure("warm_call_direct_p99", ms(pct(&figures.direct, 0.99)), "ms");
    figure("warm_call_relay_p50", ms(r50), "ms");
    figure("warm_call_relay_p99", ms(pct(&figures.relay, 0.99)), "ms");
    figure("ratio_relay_vs_direct_p50", ms(r50) / ms(d50), "x");
    figure(
        "relay_bytes_per_call_direct",
        figures.direct_relayed / calls as f64,
        "bytes",
    );
    figure(
        "relay_bytes_per_call_relayed",
        figures.relay_relayed / calls as f64,
        "bytes",
    );
    figure(
        "router_udp_packets_per_call_direct",
        figures.direct_router_udp.0 as f64 / calls as f64,
        "packets",
    );
    drop(lab);
}

/// Runs both clients on a thread inside `host`'s namespace (sockets created there belong
/// to it) and measures them; the relay's counter is read from this thread's namespace.
fn run_client(
    lab: &Lab,
    host: &Host,
    agent_host: &Host,
    url: &str,
    agent: NodeId,
    work: &std::path::Path,
    calls: usize,
) -> ClientFigures {
    let ns = host.ns.clone();
    let url = url.to_string();
    let path = work.join("small.txt").to_string_lossy().into_owned();
    let metrics = SocketAddr::new(
        url.trim_start_matches("http://")
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap(),
        METRICS_PORT,
    );
    // The relay's counter and the routers' counters are read between phases, outside the
    // namespace: the thread asks, this side answers.
    let (ask_tx, ask_rx) = std::sync::mpsc::channel::<()>();
    let (ans_tx, ans_rx) = std::sync::mpsc::channel::<(f64, (u64, u64))>();
    let thread = std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("namespace file");
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let sample = || {
                ask_tx.send(()).unwrap();
                ans_rx.recv().unwrap()
            };
            let start = |relay_only: bool| {
                let mut cfg = TailnetConfig::client(url.clone(), USER_TOKEN);
                cfg.allow_insecure_http = true;
                cfg.relay_only = relay_only;
                Tailnet::start(cfg).expect("client tailnet")
            };
            let deadline = || tokio::time::Instant::now() + Duration::from_secs(30);

            let direct = start(false);
            let t0 = Instant::now();
            let conn = direct
                .agent_conn(agent, deadline())
                .await
                .expect("agent_conn");
            let api = AgentClient::over(&conn);
            api.read_file(&path, 0, None).await.expect("first read");
            let first_call = t0.elapsed();
            let mut to_direct = None;
            while t0.elapsed() < Duration::from_secs(10) {
                let info = direct.path_info(agent).await;
                if matches!(info.and_then(|i| i.current), Some(PathAddr::Udp(_))) {
                    to_direct = Some(t0.elapsed());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // A few calls settle the connection pool before counting.
            for _ in 0..5 {
                api.read_file(&path, 0, None).await.expect("read");
            }
            let (r0, u0) = sample();
            let mut d = Vec::with_capacity(calls);
            for _ in 0..calls {
                let t = Instant::now();
                let (_, body) = api.read_file(&path, 0, None).await.expect("read");
                d.push(t.elapsed());
                assert_eq!(body.len(), 100);
            }
            let (r1, u1) = sample();
            drop(api);
            drop(conn);

            let relay = start(true);
            let conn = relay
                .agent_conn(agent, deadline())
                .await
                .expect("agent_conn");
            let api = AgentClient::over(&conn);
            for _ in 0..5 {
                api.read_file(&path, 0, None).await.expect("read");
            }
            let (r2, _) = sample();
            let mut r = Vec::with_capacity(calls);
            for _ in 0..calls {
                let t = Instant::now();
                api.read_file(&path, 0, None).await.expect("read");
                r.push(t.elapsed());
            }
            let (r3, _) = sample();
            drop(api);
            drop(conn);
            relay.shutdown().await;
            direct.shutdown().await;
            d.sort();
            r.sort();
            ClientFigures {
                first_call,
                to_direct,
                direct: d,
                direct_relayed: r1 - r0,
                direct_router_udp: (u1.0 - u0.0, u1.1 - u0.1),
                relay: r,
                relay_relayed: r3 - r2,
            }
        })
    });
    while ask_rx.recv().is_ok() {
        let udp = lab.udp_between_routers(agent_host, host);
        ans_tx.send((relayed_bytes(metrics), udp)).unwrap();
    }
    thread.join().expect("client thread")
}
