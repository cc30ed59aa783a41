//! NAT traversal end to end in the NAT lab (`tests/common/nat.rs`): a real `agentwire
//! serve` on the public segment, real `agentwire agent`s and `agentwire ping` clients in
//! namespaces behind routers that masquerade like home NATs.
//!
//! "Direct" is proved by the routers' own counters (UDP between two routers' public
//! addresses, or between a router and the server), not only by agentwire's report.
//! Root and iptables are needed; without them the tests skip (in CI they must run).

#![allow(clippy::disallowed_methods)]

mod common;

use common::nat::{Host, Lab, NatKind, Proc};
use common::netns::require;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const TOOLS: &[&str] = &["iptables", "conntrack"];
const USER_TOKEN: &str = "nat-user-token-0123456789";
const PORT: u16 = 7080;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_agentwire")
}

/// The server, its URL, and the agents' tokens.
struct World {
    lab: Lab,
    url: String,
    dir: PathBuf,
    agents: usize,
}

fn agent_token(i: usize) -> String {
    format!("nat-agent-token-{i}-abcdefghij")
}

/// A lab with `serve` on a public host, with `agents` workspaces `ws0..` for user alice.
fn world(agents: usize) -> World {
    let mut lab = Lab::new();
    let dir = lab.dir().to_path_buf();
    let mut toml = format!("[[users]]\nname = \"alice\"\ntoken = \"{USER_TOKEN}\"\n");
    for i in 0..agents {
        toml.push_str(&format!(
            "[[workspaces]]\nowner = \"alice\"\nname = \"ws{i}\"\n[[workspaces.agents]]\n\
             id = \"{}\"\ntoken = \"{}\"\n",
            uuid::Uuid::new_v4(),
            agent_token(i)
        ));
    }
    std::fs::write(dir.join("control.toml"), toml).expect("control file");
    let server = lab.public_host("server");
    let url = format!("http://{}:{PORT}", server.ip);
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--listen", &format!("{}:{PORT}", server.ip)])
        .args(["--public-url", &url])
        .args(["--stun-listen", &format!("{}:3478", server.ip)])
        .arg("--config")
        .arg(dir.join("control.toml"))
        .arg("--data-dir")
        .arg(dir.join("server-data"))
        .env("RUST_LOG", "info");
    let p = lab.spawn(&server, &mut cmd);
    assert!(
        p.wait_for("serving on", Duration::from_secs(20)),
        "serve did not start: {}",
        lab.dump()
    );
    World {
        lab,
        url,
        dir,
        agents,
    }
}

impl World {
    fn agent(&mut self, host: &Host, i: usize) -> Proc {
        assert!(i < self.agents);
        let work = self.dir.join(format!("ws{i}"));
        std::fs::create_dir_all(&work).expect("workspace dir");
        let mut cmd = Command::new(bin());
        cmd.args([
            "agent",
            "--url",
            &self.url,
            "--allow-insecure-http",
            "--dir",
        ])
        .arg(&work)
        .env("AGENTWIRE_AGENT_TOKEN", agent_token(i))
        .env("RUST_LOG", "info");
        let p = self.lab.spawn(host, &mut cmd);
        assert!(
            p.wait_for("agentwire agent", Duration::from_secs(20)),
            "agent did not start: {}",
            self.lab.dump()
        );
        p
    }

    /// Logs a client in on `host` (its own configuration directory) and returns it.
    fn client_dir(&mut self, host: &Host) -> PathBuf {
        let cfg = self.dir.join(format!("client-{}", host.name));
        std::fs::create_dir_all(&cfg).expect("config dir");
        let token = self.dir.join("user-token");
        std::fs::write(&token, USER_TOKEN).expect("token file");
        let mut cmd = Command::new(bin());
        cmd.args(["login", &self.url, "--allow-insecure-http", "--token-file"])
            .arg(&token)
            .env("AGENTWIRE_CONFIG_DIR", &cfg);
        let p = self.lab.spawn(host, &mut cmd);
        let st = self.lab.wait(&p, Duration::from_secs(20));
        assert!(
            st.is_some_and(|s| s.success()),
            "login failed: {}",
            self.lab.dump()
        );
        cfg
    }

    /// Runs `agentwire ping` on `host` to completion and returns its stdout.
    fn ping(&mut self, host: &Host, cfg: &Path, args: &[&str]) -> String {
        let mut cmd = Command::new(bin());
        cmd.arg("ping")
            .args(args)
            .env("AGENTWIRE_CONFIG_DIR", cfg)
            .env("RUST_LOG", "info");
        let p = self.lab.spawn(host, &mut cmd);
        let st = self.lab.wait(&p, Duration::from_secs(60));
        assert!(
            st.is_some_and(|s| s.success()),
            "ping failed: {}",
            self.lab.dump()
        );
        p.stdout()
    }
}

/// The round trips of pongs that came back over `direct` or DERP paths.
fn pongs(out: &str) -> (Vec<f64>, Vec<f64>) {
    let (mut direct, mut relay) = (Vec::new(), Vec::new());
    for l in out.lines().filter(|l| l.starts_with("pong from")) {
        let ms = l
            .rsplit(" in ")
            .next()
            .and_then(|t| t.trim_end_matches(" ms").parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        if l.contains("via DERP(") {
            relay.push(ms);
        } else {
            direct.push(ms);
        }
    }
    (direct, relay)
}

fn tunnel_up_ms(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix("tunnel to ")?.split(" up in ").nth(1))
        .and_then(|t| t.trim_end_matches(" ms").parse().ok())
        .unwrap_or_else(|| panic!("no tunnel line in {out}"))
}

#[test]
fn agent_and_client_behind_two_nats_punch_through() {
    if !require(TOOLS) {
        return;
    }
    let mut w = world(1);
    let agent_host = w.lab.nat_host("agent", NatKind::Masquerade);
    let client_host = w.lab.nat_host("laptop", NatKind::Masquerade);
    let _a = w.agent(&agent_host, 0);
    let cfg = w.client_dir(&client_host);
    let out = w.ping(
        &client_host,
        &cfg,
        &["ws0", "-c", "20", "--interval-ms", "100"],
    );
    let (direct, _relay) = pongs(&out);
    assert!(
        !direct.is_empty(),
        "no direct pong:\n{out}\n{}",
        w.lab.dump()
    );
    assert!(out.contains("direct path: yes"), "{out}");
    // The routers saw UDP flow between their public addresses: a real direct path.
    let (packets, _) = w.lab.udp_between_routers(&agent_host, &client_host);
    assert!(packets > 0, "no UDP between the routers:\n{}", w.lab.dump());
    println!("nat_two_masquerade: {out}");
}

#[test]
fn agent_behind_nat_reaches_a_public_client_directly() {
    if !require(TOOLS) {
        return;
    }
    let mut w = world(1);
    let agent_host = w.lab.nat_host("agent", NatKind::Masquerade);
    let client_host = w.lab.public_host("client");
    let _a = w.agent(&agent_host, 0);
    let cfg = w.client_dir(&client_host);
    let before = w.lab.udp_router_to(&agent_host, client_host.ip);
    let out = w.ping(
        &client_host,
        &cfg,
        &["ws0", "-c", "10", "--interval-ms", "100"],
    );
    assert!(out.contains("direct path: yes"), "{out}\n{}", w.lab.dump());
    let after = w.lab.udp_router_to(&agent_host, client_host.ip);
    assert!(after.0 > before.0, "no UDP between agent router and client");
}

#[test]
fn port_randomising_nat_stays_on_the_relay_and_works() {
    if !require(TOOLS) {
        return;
    }
    let mut w = world(1);
    let agent_host = w.lab.nat_host("agent", NatKind::Masquerade);
    let client_host = w.lab.nat_host("laptop", NatKind::RandomFully);
    let _a = w.agent(&agent_host, 0);
    let cfg = w.client_dir(&client_host);
    let out = w.ping(
        &client_host,
        &cfg,
        &["ws0", "-c", "8", "--interval-ms", "100"],
    );
    let (direct, relay) = pongs(&out);
    assert!(
        direct.is_empty(),
        "a direct pong through --random-fully:\n{out}"
    );
    assert!(
        relay.len() >= 7,
        "pongs over the relay should keep working:\n{out}"
    );
    assert_eq!(w.lab.udp_between_routers(&agent_host, &client_host).0, 0);
}

#[test]
fn udp_blocked_goes_through_the_relay_at_once() {
    if !require(TOOLS) {
        return;
    }
    let mut w = world(1);
    let agent_host = w.lab.nat_host("agent", NatKind::Masquerade);
    let client_host = w.lab.nat_host("laptop", NatKind::BlockUdp);
    let _a = w.agent(&agent_host, 0);
    let cfg = w.client_dir(&client_host);
    let out = w.ping(
        &client_host,
        &cfg,
        &["ws0", "-c", "5", "--interval-ms", "100"],
    );
    let (direct, relay) = pongs(&out);
    assert!(direct.is_empty(), "{out}");
    assert!(relay.len() >= 4, "{out}");
    let up = tunnel_up_ms(&out);
    println!("nat_udp_blocked_first_call_ms: {up}");
    assert!(
        up <= 1000,
        "the first call waited {up} ms with UDP blocked:\n{out}"
    );
}

#[test]
fn conntrack_flush_rebinds_without_a_long_gap() {
    if !require(TOOLS) {
        return;
    }
    let mut w = world(1);
    let agent_host = w.lab.nat_host("agent", NatKind::Masquerade);
    let client_host = w.lab.nat_host("laptop", NatKind::Masquerade);
    let _a = w.agent(&agent_host, 0);
    let cfg = w.client_dir(&client_host);
    let mut cmd = Command::new(bin());
    cmd.args([
        "ping",
        "ws0",
        "-c",
        "60",
        "--until-count",
        "--interval-ms",
        "50",
        "--timeout-ms",
        "500",
    ])
    .env("AGENTWIRE_CONFIG_DIR", &cfg)
    .env("RUST_LOG", "info");
    let p = w.lab.spawn(&client_host, &mut cmd);
    assert!(
        p.wait_for("via 10.", Duration::from_secs(20)),
        "no direct path before the flush: {}",
        w.lab.dump()
    );
    let flushed = Instant::now();
    w.lab.flush_conntrack(&agent_host);
    w.lab.flush_conntrack(&client_host);
    let st = w.lab.wait(&p, Duration::from_secs(60));
    assert!(st.is_some_and(|s| s.success()), "{}", w.lab.dump());
    let out = p.stdout();
    let timeouts = out.lines().filter(|l| l.starts_with("timeout")).count();
    // Each lost probe costs 500 ms of wait plus 50 ms: at most 2 s without an answer.
    println!(
        "nat_rebind: {timeouts} probes unanswered after the flush ({} ms ago)",
        flushed.elapsed().as_millis()
    );
    assert!(timeouts <= 3, "more than 2 s without a pong:\n{out}");
    let after_flush: Vec<&str> = out.lines().filter(|l| l.starts_with("pong from")).collect();
    assert!(after_flush.len() >= 50, "{out}");
}
