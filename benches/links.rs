//! Figures on a real round-trip time: this process (the client side: a shared Tailnet, a
//! per-call Tailnet, kernel TCP) in the root namespace; the hub (coordinator and DERP
//! relay over TLS) and a workspace agent in a namespace behind an emulated link (`linkem`)
//! of 10 ms each way, run on a thread that entered that namespace. Everything the client
//! does crosses the link once each way, as from a user's machine to a remote workspace
//! and control plane.
//!
//! Prints, one per line: the emulator's own overhead; a small call (the agent API call a
//! workspace tool makes: read a 100-byte file over a warm handle and connection) p50/p99
//! at 0 % and 1 % loss each way; `workspace_bash`'s first request for `echo` (start and
//! wait for the exit in one round trip); 64 MiB written and read through the tunnel at 1 % loss
//! beside kernel TCP over the same link; the small call per-call (a whole stack per call)
//! beside shared, with TLS.
//!
//! Run: `cargo bench --bench links` (root, python3; skipped otherwise).
//! `LINKS_BULK_MIB` sets the bulk size (64), `LINKS_CUBIC_MIB` kernel CUBIC's (8),
//! `LINKS_CALLS` the calls per loss level (1000), `LINKS_SECTIONS` a comma-separated
//! list of sections to run (names in `SECTIONS`);
//! `LINKS_WARM_SHELL=0` has the agent start a shell per command.
//!
//! To add a figure: write an `async fn(&Env) -> Vec<Figure>` and list it in `SECTIONS`.

#![allow(clippy::disallowed_methods)]

#[path = "../tests/common/cluster.rs"]
mod cluster;
mod common;
#[path = "../tests/common/pki.rs"]
mod pki;

use agentwire::runtime::tailnet::{AgentConn, DialMode, Tailnet, TailnetConfig};
use agentwire::runtime::tls::{ClientTls, ServerTls};
use agentwire::services::agent::client::AgentClient;
use agentwire::services::agent::types::StartProcessRequest;
use agentwire::services::agent::{Agent, AgentConfig};
use agentwire::services::hub::DERP_MAP_PATH;
use agentwire::services::public_url::BaseUrl;
use agentwire::services::user_api::client::ServerClient;
use agentwire::wire::addr::NodeId;
use agentwire::wire::derpmap::DerpMap;
use bytes::Bytes;
use cluster::{AGENT_A, Cluster, SERVICE_TOKEN, agent_token};
use common::link::{self, LinkParams};
use common::netns::{Netns, available};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// One-way delay of the emulated link.
const ONE_WAY_MS: f64 = 10.0;

/// One printed figure: `name: value unit`.
pub struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
}

fn fig(name: impl Into<String>, value: f64, unit: &'static str) -> Figure {
    Figure {
        name: name.into(),
        value,
        unit,
    }
}

type Section = for<'a> fn(&'a mut Env) -> Pin<Box<dyn Future<Output = Vec<Figure>> + 'a>>;

/// The figures, in order. Each runs against the same environment.
const SECTIONS: &[(&str, Section)] = &[
    ("small calls", |e| Box::pin(small_calls(e))),
    ("bash echo", |e| Box::pin(bash_echo(e))),
    ("bulk at 1% loss", |e| Box::pin(bulk(e))),
    ("per-call vs shared", |e| Box::pin(per_call_vs_shared(e))),
];

/// What every section gets: the namespace and its link, the remote side, the client.
pub struct Env {
    ns: Netns,
    remote: Remote,
    client: Tailnet,
    client_cfg: TailnetConfig,
    agent: NodeId,
    workdir: PathBuf,
}

impl Env {
    fn set_link(&mut self, p: &LinkParams) {
        self.ns.link().set("both", p);
    }

    /// A file in the agent's working directory (the API takes absolute paths).
    fn path(&self, name: &str) -> String {
        self.workdir.join(name).to_string_lossy().into_owned()
    }

    /// How far this side's TCP buffers grew (see the netstack's `autotune`).
    async fn print_growth(&self, when: &str) {
        let Ok(s) = self.client.tunnel().stats().await else {
            return;
        };
        let s = s.netstack;
        eprintln!(
            "links: client buffers {when}: grown {} times, {} KiB held beyond the start, \
             {} refused",
            s.tcp_buffers_grown,
            s.tcp_grown_bytes >> 10,
            s.tcp_growth_refused
        );
    }

    async fn conn(&self) -> AgentConn {
        self.client
            .agent_conn(
                self.agent,
                tokio::time::Instant::now() + Duration::from_secs(30),
            )
            .await
            .expect("agent_conn")
    }
}

/// The hub and the agent, on a thread inside the namespace (sockets created there belong
/// to it), with their own runtime. Dropping it stops them.
struct Remote {
    url: String,
    trust: ClientTls,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_remote(ns: &str, ip: &str, workdir: PathBuf, certs: PathBuf) -> Remote {
    let (ns, ip) = (ns.to_string(), ip.to_string());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("namespace file");
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        // Built after setns: the runtime's threads inherit the namespace.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let ca = pki::Ca::new(&certs, "ca");
            let leaf = ca.leaf(&certs, "hub", &[ip.as_str()], pki::Validity::Good);
            let trust = ClientTls::with_ca_file(&ca.file).unwrap();
            let hub = Cluster::start_tls_on(
                format!("{ip}:0").parse().unwrap(),
                ServerTls::load(&leaf.cert, &leaf.key).unwrap(),
                trust.clone(),
            )
            .await;
            let id: NodeId = AGENT_A.parse().unwrap();
            let mut cfg = AgentConfig::new(&hub.url(), &agent_token(AGENT_A), id, workdir.clone());
            cfg.tailnet.udp_listen = format!("{ip}:0").parse().unwrap();
            // The bulk figure moves one file of LINKS_BULK_MIB in one request each way.
            let bulk = env_usize("LINKS_BULK_MIB", 64) << 20;
            cfg.api.body_limit = cfg.api.body_limit.max(bulk + (1 << 20));
            cfg.api.read_max_limit = cfg.api.read_max_limit.max(bulk as u64);
            cfg.tailnet.tls = trust.clone();
            // LINKS_WARM_SHELL=0: a shell per command, to compare with the one started ahead.
            cfg.api.warm_shell = std::env::var("LINKS_WARM_SHELL").map_or(true, |v| v != "0");
            common::tune(&mut cfg.tailnet.netstack);
            let agent = Agent::start(cfg).unwrap();
            assert!(agent.wait_ready(Duration::from_secs(10)).await, "agent");
            ready_tx.send((hub.url(), trust)).unwrap();
            let _ = stop_rx.await;
            agent.shutdown().await;
            hub.stop().await;
        });
    });
    let (url, trust) = ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("remote side started");
    Remote {
        url,
        trust,
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// `n` small calls (read a 100-byte file) over one warm handle, sorted.
async fn read_small(env: &Env, n: usize) -> Vec<Duration> {
    let conn = env.conn().await;
    let api = AgentClient::over(&conn);
    let path = env.path("small.txt");
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (_, body) = api.read_file(&path, 0, None).await.expect("read");
        v.push(t.elapsed());
        assert_eq!(body.len(), 100);
    }
    v.sort();
    v
}

async fn small_calls(env: &mut Env) -> Vec<Figure> {
    let n = env_usize("LINKS_CALLS", 1000);
    let rtt = 2.0 * ONE_WAY_MS;
    let mut out = vec![fig("link_rtt", rtt, "ms")];
    for (label, loss) in [("0pct", 0.0), ("1pct", 0.01)] {
        env.set_link(&LinkParams::delay_ms(ONE_WAY_MS).loss(loss));
        // Warm: the path, the connection pool, the RTT estimate.
        read_small(env, 20).await;
        let v = read_small(env, n).await;
        out.push(fig(
            format!("small_call_{label}_loss_p50"),
            ms(pct(&v, 0.5)),
            "ms",
        ));
        out.push(fig(
            format!("small_call_{label}_loss_p99"),
            ms(pct(&v, 0.99)),
            "ms",
        ));
        out.push(fig(
            format!("small_call_{label}_loss_max"),
            ms(pct(&v, 1.0)),
            "ms",
        ));
        out.push(fig(
            format!("small_call_{label}_loss_p50_over_rtt"),
            ms(pct(&v, 0.5)) - rtt,
            "ms",
        ));
    }
    out
}

/// The network part of `workspace_bash` running `echo`: the start request that waits
/// for the exit in the same round trip (what the tool sends first, with its first wait of
/// 200 ms), over a warm handle and connection, on a loss-free link.
async fn bash_echo(env: &mut Env) -> Vec<Figure> {
    env.set_link(&LinkParams::delay_ms(ONE_WAY_MS));
    let n = env_usize("LINKS_CALLS", 1000).min(500);
    let conn = env.conn().await;
    let api = AgentClient::over(&conn);
    let req = StartProcessRequest {
        command: "echo hi".into(),
        background: true,
        wait_ms: Some(200),
        ..Default::default()
    };
    let mut v = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let t = Instant::now();
        let out = api.start_process(&req).await.expect("start");
        let took = t.elapsed();
        assert!(!out.running && out.output == "hi\n", "{out:?}");
        // The first 20 warm the path and the connection.
        if i >= 20 {
            v.push(took);
        }
    }
    v.sort();
    let rtt = 2.0 * ONE_WAY_MS;
    vec![
        fig("bash_echo_p50", ms(pct(&v, 0.5)), "ms"),
        fig("bash_echo_p99", ms(pct(&v, 0.99)), "ms"),
        fig("bash_echo_p50_over_rtt", ms(pct(&v, 0.5)) - rtt, "ms"),
    ]
}

async fn bulk(env: &mut Env) -> Vec<Figure> {
    let bytes = env_usize("LINKS_BULK_MIB", 64) << 20;
    env.set_link(&LinkParams::delay_ms(ONE_WAY_MS).loss(0.01));
    let conn = env.conn().await;
    let api = AgentClient::over(&conn).with_timeout(Duration::from_secs(600));
    let data = Bytes::from(vec![0x5au8; bytes]);
    let t = Instant::now();
    let path = env.path("bulk.bin");
    api.write_file(&path, data).await.expect("write");
    let write = bytes as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e6;
    env.print_growth("after the write").await;
    let t = Instant::now();
    let (_, body) = api
        .read_file(&path, 0, Some(bytes as u64))
        .await
        .expect("read");
    let read = bytes as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e6;
    env.print_growth("after the read").await;
    assert_eq!(body.len(), bytes);
    let _ = std::fs::remove_file(env.workdir.join("bulk.bin"));
    // Kernel TCP over the same link, same direction each.
    let ip = env.ns.ns_ip.clone();
    // Twice: with the system's default congestion control (often BBR, which does not
    // read random loss as congestion), and with CUBIC, the loss-based controller the
    // tunnel's TCP uses, so like is compared with like.
    let default_cc = link::default_congestion_control();
    eprintln!("links: the kernel's default congestion control is {default_cc}");
    // CUBIC holds ~6 Mbit/s here from its first second on: 64 MiB each way would take
    // three minutes to say so.
    let cubic_bytes = (env_usize("LINKS_CUBIC_MIB", 8) << 20).min(bytes);
    eprintln!(
        "links: kernel CUBIC moves {} MiB each way",
        cubic_bytes >> 20
    );
    let (ksend, krecv, csend, crecv) = tokio::task::spawn_blocking(move || {
        (
            link::kernel_send((ip.as_str(), 7002), bytes),
            link::kernel_receive((ip.as_str(), 7003), bytes),
            link::kernel_send_with(&ip, 7002, cubic_bytes, "cubic"),
            link::kernel_receive_with((ip.as_str(), 7003), cubic_bytes, Some("cubic")),
        )
    })
    .await
    .unwrap();
    vec![
        fig("bulk_write_1pct_loss", write, "Mbit/s"),
        fig("bulk_read_1pct_loss", read, "Mbit/s"),
        fig(
            format!("kernel_tcp_{default_cc}_send_1pct_loss"),
            ksend,
            "Mbit/s",
        ),
        fig(
            format!("kernel_tcp_{default_cc}_receive_1pct_loss"),
            krecv,
            "Mbit/s",
        ),
        fig("kernel_tcp_cubic_send_1pct_loss", csend, "Mbit/s"),
        fig("kernel_tcp_cubic_receive_1pct_loss", crecv, "Mbit/s"),
        fig(
            format!("ratio_bulk_write_vs_kernel_{default_cc}"),
            write / ksend,
            "x",
        ),
        fig(
            format!("ratio_bulk_read_vs_kernel_{default_cc}"),
            read / krecv,
            "x",
        ),
        fig("ratio_bulk_write_vs_kernel_cubic", write / csend, "x"),
        fig("ratio_bulk_read_vs_kernel_cubic", read / crecv, "x"),
    ]
}

async fn per_call_vs_shared(env: &mut Env) -> Vec<Figure> {
    env.set_link(&LinkParams::delay_ms(ONE_WAY_MS));
    read_small(env, 20).await;
    let shared = read_small(env, 200).await;
    let mut cfg = env.client_cfg.clone();
    cfg.dial_mode = DialMode::PerCall;
    let per_call = Tailnet::start(cfg).unwrap();
    // The reference's per-call path asks the server for the connection info (the DERP
    // map) before it builds each stack, over one kept-alive HTTP client.
    let base = BaseUrl::parse("url", &env.remote.url, false).expect("server url");
    let server = ServerClient::new(base, SERVICE_TOKEN, env.remote.trust.clone());
    let mut pc = Vec::new();
    let small = env.path("small.txt");
    for _ in 0..env_usize("LINKS_PER_CALLS", 30) {
        let t = Instant::now();
        let map: DerpMap = server.get(DERP_MAP_PATH).await.expect("connection info");
        let h = per_call
            .agent_conn_with_map(
                env.agent,
                tokio::time::Instant::now() + Duration::from_secs(30),
                map,
            )
            .await
            .expect("per-call agent_conn");
        let (_, body) = AgentClient::over(&h)
            .read_file(&small, 0, None)
            .await
            .expect("read");
        h.close().await;
        pc.push(t.elapsed());
        assert_eq!(body.len(), 100);
    }
    per_call.shutdown().await;
    pc.sort();
    let (s50, p50) = (pct(&shared, 0.5), pct(&pc, 0.5));
    vec![
        fig("tls_small_call_shared_p50", ms(s50), "ms"),
        fig("tls_small_call_per_call_p50", ms(p50), "ms"),
        fig("tls_small_call_per_call_p99", ms(pct(&pc, 0.99)), "ms"),
        fig(
            "ratio_per_call_vs_shared_p50",
            p50.as_secs_f64() / s50.as_secs_f64(),
            "x",
        ),
    ]
}

fn main() {
    if let Err(why) = available(&["python3"]) {
        println!("links: skipped ({why}; needs root for namespaces and python3)");
        return;
    }
    // The emulator's own cost, on a perfect link, before anything else runs.
    let o = link::overhead(env_usize("LINKS_OVERHEAD_MIB", 256) << 20);
    print!("{}", o.lines());

    let p = LinkParams::delay_ms(ONE_WAY_MS);
    let mut ns = Netns::with_link(&p, &p, 15);
    ns.kernel_peer("sink", 7002);
    ns.kernel_peer("source", 7003);
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().join("work");
    std::fs::create_dir_all(&workdir).unwrap();
    std::fs::write(workdir.join("small.txt"), [b'x'; 100]).unwrap();
    let remote = start_remote(
        &ns.name,
        &ns.ns_ip,
        workdir.clone(),
        dir.path().to_path_buf(),
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut cfg = TailnetConfig::client(remote.url.clone(), SERVICE_TOKEN);
        cfg.udp_listen = format!("{}:0", ns.host_ip).parse().unwrap();
        cfg.tls = remote.trust.clone();
        common::tune(&mut cfg.netstack);
        let client = Tailnet::start(cfg.clone()).unwrap();
        assert!(client.wait_ready(Duration::from_secs(20)).await, "client");
        let mut env = Env {
            ns,
            remote,
            client,
            client_cfg: cfg,
            agent: AGENT_A.parse().unwrap(),
            workdir,
        };
        // Let the path go direct (UDP across the link) before measuring.
        read_small(&env, 50).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprintln!(
            "links: path to the agent: {:?}",
            env.client.destinations().await
        );
        let only = std::env::var("LINKS_SECTIONS").ok();
        for (name, section) in SECTIONS {
            if only
                .as_ref()
                .is_some_and(|o| !o.split(',').any(|n| n.trim() == *name))
            {
                continue;
            }
            let t = Instant::now();
            for f in section(&mut env).await {
                println!("{}: {:.2} {}", f.name, f.value, f.unit);
            }
            eprintln!("links: {name} took {:.1} s", t.elapsed().as_secs_f64());
        }
        if std::env::var("BENCH_VERBOSE").is_ok() {
            eprintln!("{:?}", env.client.destinations().await);
            eprintln!("{:?}", env.ns.link().stats());
        }
        let Env {
            client, remote, ns, ..
        } = env;
        client.shutdown().await;
        drop(remote);
        drop(ns);
    });
}
