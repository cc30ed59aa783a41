//! `agentwire mcp` on a person's machine, in figures: this process is the MCP client (in
//! the root namespace) talking to the real `agentwire mcp --http` binary beside it, which
//! reaches a real `agentwire serve` and real `agentwire agent`s over TLS through the NAT
//! lab's emulated links (`tests/common/nat.rs`): 5 ms each way per segment, so 10 ms each
//! way (20 ms RTT) between client, server and every agent.
//!
//! Prints, one per line: a warm tool call (`workspace_read_file` of 100 bytes) p50/p99 on
//! the shared tunnel (target p50 ≤ RTT + 1 ms), and its excess over the nominal RTT and
//! over the path's measured one (kernel TCP echoes to an agent's namespace: the emulator's
//! own cost, about 60 µs per link crossed, is part of the path); the first call to each of three agents
//! not yet used (target ≤ 4 RTT + 10 ms); the same warm call with `--per-call` (a whole
//! network stack per call, as the reference CLI) and the ratio per-call/shared (target
//! ≥ 10×); the `agentwire mcp` process's tokio tasks and open descriptors before and
//! after 1000 warm calls (from its status socket; no growth expected).
//!
//! Run: `cargo bench --bench client` (root, iptables, conntrack, python3; skipped
//! otherwise). `CLIENT_CALLS` sets the warm calls (1000), `CLIENT_PER_CALL` the per-call
//! calls (30); `CLIENT_MCP_LOG` and `CLIENT_AGENT_LOG` the `RUST_LOG` of the `agentwire
//! mcp` processes and of the agents, and `CLIENT_KEEP_LOGS` a directory every process's
//! log is copied to.

#![allow(clippy::disallowed_methods)]

mod common;
#[path = "../tests/common/mcp_http.rs"]
mod mcp_http;
#[path = "../tests/common/nat.rs"]
mod nat;
#[path = "../tests/common/pki.rs"]
mod pki;

use common::link::{self, LinkParams};
use common::netns::require;
use common::{figure, ms, pct};
use mcp_http::{McpHttp, Outcome};
use nat::Lab;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const USER_TOKEN: &str = "client-bench-user-token-0123456789";
const PORT: u16 = 7443;
/// One-way delay per lab segment; two segments lie between any two hosts.
const SEGMENT_MS: f64 = 5.0;
const RTT_MS: f64 = 4.0 * SEGMENT_MS;
const AGENTS: usize = 4;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_agentwire")
}

fn agent_token(i: usize) -> String {
    format!("client-bench-agent-{i}-abcdefghijkl")
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// An `agentwire mcp --http` child; killed on drop.
struct McpProc {
    child: Child,
    addr: SocketAddr,
    config: PathBuf,
}

impl Drop for McpProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl McpProc {
    fn start(config: &Path, log: &Path, extra: &[&str]) -> McpProc {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(bin())
            .args(["mcp", "--http", &addr.to_string(), "--log-file"])
            .arg(log)
            .args(extra)
            .env("AGENTWIRE_CONFIG_DIR", config)
            .env(
                "RUST_LOG",
                std::env::var("CLIENT_MCP_LOG").unwrap_or_else(|_| "warn,agentwire=info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn agentwire mcp");
        let t = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "agentwire mcp did not listen: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        McpProc {
            child,
            addr,
            config: config.to_path_buf(),
        }
    }

    /// Tokio tasks and open descriptors, from the process's status socket.
    fn resources(&self) -> (u64, u64) {
        let sock = self
            .config
            .join("run")
            .join(format!("mcp-{}.sock", self.child.id()));
        let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("status socket");
        let mut body = String::new();
        s.read_to_string(&mut body).expect("status");
        let v: serde_json::Value = serde_json::from_str(&body).expect("status JSON");
        let p = &v["process"];
        (
            p["tasks"].as_u64().unwrap_or(0),
            p["open_fds"].as_u64().unwrap_or(0),
        )
    }
}

async fn read(c: &mut McpHttp, ws: &str, path: &str) -> Duration {
    let t = Instant::now();
    let out = c
        .call(
            "workspace_read_file",
            serde_json::json!({"workspace": ws, "path": path}),
            Duration::from_secs(30),
        )
        .await;
    let e = t.elapsed();
    match out {
        Outcome::Ok(v) => assert_eq!(v["structuredContent"]["bytes_read"], 100, "{v}"),
        other => panic!("read in {ws}: {other:?}"),
    }
    e
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !require(&["iptables", "conntrack", "python3"]) {
        println!("client: skipped (needs root, iptables, conntrack and python3)");
        return;
    }
    let calls = env_usize("CLIENT_CALLS", 1000);
    let per_calls = env_usize("CLIENT_PER_CALL", 30);
    print!("{}", link::overhead(8 << 20).lines());

    let mut lab = Lab::with_links(LinkParams::delay_ms(SEGMENT_MS));
    let dir = lab.dir().to_path_buf();
    let server = lab.public_host("server");
    let ip = server.ip.to_string();
    let ca = pki::Ca::new(&dir, "ca");
    let leaf = ca.leaf(&dir, "server", &[ip.as_str()], pki::Validity::Good);
    let url = format!("https://{ip}:{PORT}");

    let mut toml = format!("[[users]]\nname = \"alice\"\ntoken = \"{USER_TOKEN}\"\n");
    for i in 0..AGENTS {
        toml.push_str(&format!(
            "[[workspaces]]\nowner = \"alice\"\nname = \"ws{i}\"\n[[workspaces.agents]]\n\
             id = \"{}\"\ntoken = \"{}\"\n",
            uuid::Uuid::new_v4(),
            agent_token(i)
        ));
    }
    std::fs::write(dir.join("control.toml"), toml).expect("control file");
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--listen", &format!("{ip}:{PORT}")])
        .args(["--public-url", &url])
        .args(["--stun-listen", &format!("{ip}:3478")])
        .arg("--tls-cert")
        .arg(&leaf.cert)
        .arg("--tls-key")
        .arg(&leaf.key)
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

    let small = dir.join("small.txt");
    std::fs::write(&small, [b'x'; 100]).unwrap();
    let mut agent_hosts = Vec::new();
    for i in 0..AGENTS {
        let host = lab.public_host(&format!("agent{i}"));
        agent_hosts.push(host.clone());
        let mut cmd = Command::new(bin());
        cmd.args(["agent", "--url", &url, "--ca-file"])
            .arg(&ca.file)
            .arg("--dir")
            .arg(&dir)
            .env("AGENTWIRE_AGENT_TOKEN", agent_token(i))
            .env(
                "RUST_LOG",
                std::env::var("CLIENT_AGENT_LOG").unwrap_or_else(|_| "warn,agentwire=info".into()),
            );
        let a = lab.spawn(&host, &mut cmd);
        assert!(
            a.wait_for("agentwire agent", Duration::from_secs(30)),
            "agent did not start: {}",
            lab.dump()
        );
    }

    // The path's own round trip, emulator included: 64-byte kernel TCP echoes between
    // this namespace and an agent's. The warm call's excess over it is ours.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/echo.py");
    let echo = lab.spawn(
        &agent_hosts[0],
        Command::new("python3").args([script, "serve", "7001"]),
    );
    assert!(
        echo.wait_for("ready", Duration::from_secs(10)),
        "echo.py did not start: {}",
        lab.dump()
    );
    let path_rtt = link::echo_rtt((agent_hosts[0].ip, 7001), 200);

    let config = dir.join("client-config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(dir.join("user-token"), USER_TOKEN).unwrap();
    let st = Command::new(bin())
        .args(["login", &url, "--ca-file"])
        .arg(&ca.file)
        .arg("--token-file")
        .arg(dir.join("user-token"))
        .env("AGENTWIRE_CONFIG_DIR", &config)
        .status()
        .expect("login");
    assert!(st.success(), "login failed");

    let shared = McpProc::start(&config, &dir.join("mcp-shared.log"), &[]);
    let per_call = McpProc::start(&config, &dir.join("mcp-per-call.log"), &["--per-call"]);
    let path = small.to_string_lossy().into_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // A running client has its relay and coordinator connections up before the first
        // call; the first-call figure is about a new agent, not a new process.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut c = McpHttp::new(shared.addr, USER_TOKEN);
        let mut firsts = Vec::new();
        for i in 1..AGENTS {
            let d = read(&mut c, &format!("ws{i}"), &path).await;
            figure(&format!("first_call_new_agent_{i}"), ms(d), "ms");
            firsts.push(d);
        }
        firsts.sort();
        figure("first_call_new_agent_p50", ms(pct(&firsts, 0.5)), "ms");
        figure("first_call_target", 4.0 * RTT_MS + 10.0, "ms");

        for _ in 0..20 {
            read(&mut c, "ws0", &path).await;
        }
        let (tasks0, fds0) = shared.resources();
        let mut warm = Vec::with_capacity(calls);
        for _ in 0..calls {
            warm.push(read(&mut c, "ws0", &path).await);
        }
        let (tasks1, fds1) = shared.resources();
        warm.sort();
        let shared_p50 = pct(&warm, 0.5);
        figure("rtt", RTT_MS, "ms");
        figure("warm_call_shared_p50", ms(shared_p50), "ms");
        figure("warm_call_shared_p99", ms(pct(&warm, 0.99)), "ms");
        figure(
            "warm_call_shared_p50_minus_rtt",
            ms(shared_p50) - RTT_MS,
            "ms",
        );
        figure("rtt_path_measured_p50", ms(path_rtt), "ms");
        figure(
            "warm_call_shared_p50_minus_path_rtt",
            ms(shared_p50) - ms(path_rtt),
            "ms",
        );

        let mut pc = McpHttp::new(per_call.addr, USER_TOKEN);
        read(&mut pc, "ws0", &path).await;
        let mut per = Vec::with_capacity(per_calls);
        for _ in 0..per_calls {
            per.push(read(&mut pc, "ws0", &path).await);
        }
        per.sort();
        let per_p50 = pct(&per, 0.5);
        figure("warm_call_per_call_p50", ms(per_p50), "ms");
        figure(
            "ratio_per_call_vs_shared_p50",
            ms(per_p50) / ms(shared_p50),
            "x",
        );
        figure("mcp_tasks_before", tasks0 as f64, "tasks");
        figure(
            &format!("mcp_tasks_after_{calls}_calls"),
            tasks1 as f64,
            "tasks",
        );
        figure("mcp_open_fds_before", fds0 as f64, "fds");
        figure(
            &format!("mcp_open_fds_after_{calls}_calls"),
            fds1 as f64,
            "fds",
        );
    });
    drop(per_call);
    drop(shared);
    if let Ok(keep) = std::env::var("CLIENT_KEEP_LOGS") {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".log") || name.ends_with(".err") || name.ends_with(".out") {
                let _ = std::fs::copy(e.path(), Path::new(&keep).join(&name));
            }
        }
    }
    drop(lab);
}
