//! The deployment docs/deploy.md describes, through a real reverse proxy: caddy terminates
//! TLS (certificate from a throwaway CA) in front of a plain-HTTP `serve` on loopback
//! with `--public-url https://…`; a real `agentwire agent` process joins through caddy
//! (identity call, coordinator websocket, DERP upgrade), and MCP tool calls through caddy
//! reach it, with the server's own tailnet on the relay only so every packet crosses it.

#![allow(clippy::disallowed_methods)]

mod common;

use agentwire::runtime::tls::ClientTls;
use agentwire::services::serve::{ServeConfig, Server};
use agentwire::wire::addr::NodeId;
use common::mcp_http::{McpHttp, Outcome};
use common::pki::{Ca, Validity};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const USER_TOKEN: &str = "caddy-user-token-0123456789abcdef";
const AGENT_TOKEN: &str = "caddy-agent-token-0123456789abcdef";

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn have_caddy() -> bool {
    let ok = Command::new("caddy")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "caddy is not installed; the test script installs it"
        );
        eprintln!("SKIPPED: caddy not installed (run the README test command)");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_behind_caddy_with_an_agent_and_mcp_through_it() {
    if !have_caddy() {
        return;
    }
    common::cluster::init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(tmp.path(), "ca");
    let leaf = ca.leaf(
        tmp.path(),
        "proxy",
        &["127.0.0.1", "localhost"],
        Validity::Good,
    );
    let proxy_port = free_port();
    let public = format!("https://127.0.0.1:{proxy_port}");
    let agent_id = NodeId::random();
    let config = tmp.path().join("control.toml");
    std::fs::write(
        &config,
        format!(
            "[[users]]\nname = \"alice\"\ntoken = \"{USER_TOKEN}\"\n[[workspaces]]\nowner = \"alice\"\n\
             name = \"dev\"\n[[workspaces.agents]]\nid = \"{agent_id}\"\ntoken = \"{AGENT_TOKEN}\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(ServeConfig {
        config_file: Some(config),
        public_url: Some(public.clone()),
        relay_only: true,
        ..ServeConfig::loopback(tmp.path().join("state"))
    })
    .await
    .unwrap();
    assert!(server.wait_ready(Duration::from_secs(10)).await);
    // Every URL handed out names the proxy, not the loopback listener.
    assert_eq!(server.public_url, public);
    assert_eq!(
        server.hub().derp_map.connect_url(999).unwrap(),
        format!("{public}/derp")
    );

    let caddyfile = tmp.path().join("Caddyfile");
    std::fs::write(
        &caddyfile,
        format!(
            "{{\n  admin off\n  auto_https disable_redirects\n  skip_install_trust\n  \
             http_port {http}\n  default_sni 127.0.0.1\n  storage file_system {dir}\n}}\n\
             :{proxy_port} {{\n  tls {cert} {key}\n  reverse_proxy {backend} {{\n    \
             flush_interval -1\n  }}\n}}\n",
            http = free_port(),
            dir = tmp.path().join("caddy-data").display(),
            cert = leaf.cert.display(),
            key = leaf.key.display(),
            backend = server.addr,
        ),
    )
    .unwrap();
    let caddy_log = std::fs::File::create(tmp.path().join("caddy.log")).unwrap();
    let _caddy = KillOnDrop(
        Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&caddyfile)
            .env("HOME", tmp.path())
            .env("XDG_DATA_HOME", tmp.path().join("xdg-data"))
            .env("XDG_CONFIG_HOME", tmp.path().join("xdg-config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(caddy_log)
            .spawn()
            .expect("start caddy"),
    );
    let trust = ClientTls::with_ca_file(&ca.file).unwrap();
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", proxy_port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "caddy did not start: {}",
            std::fs::read_to_string(tmp.path().join("caddy.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let ws = tmp.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let token_file = tmp.path().join("agent-token");
    std::fs::write(&token_file, AGENT_TOKEN).unwrap();
    let _agent = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_agentwire"))
            .args([
                "agent",
                "--url",
                &public,
                "--udp",
                "127.0.0.1:0",
                "--ca-file",
            ])
            .arg(&ca.file)
            .arg("--token-file")
            .arg(&token_file)
            .arg("--dir")
            .arg(&ws)
            .env_remove("AGENTWIRE_AGENT_TOKEN")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start agentwire agent"),
    );

    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], proxy_port));
    let mut mcp = McpHttp::new(proxy, USER_TOKEN).with_tls(trust, "127.0.0.1");
    let t0 = Instant::now();
    let first = loop {
        let o = mcp
            .call(
                "workspace_bash",
                json!({"workspace": "alice/dev", "command": "echo through-caddy"}),
                Duration::from_secs(30),
            )
            .await;
        if let Outcome::Ok(v) = &o {
            assert!(v.to_string().contains("through-caddy"), "{v}");
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "no call through caddy: {o:?}\ncaddy log:\n{}",
            std::fs::read_to_string(tmp.path().join("caddy.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("first call through caddy after {first:?}");
    for i in 0..10 {
        match mcp
            .call(
                "workspace_write_file",
                json!({"workspace": "alice/dev", "path": ws.join(format!("f{i}.txt")), "content": format!("v{i}")}),
                Duration::from_secs(30),
            )
            .await
        {
            Outcome::Ok(_) => {}
            other => panic!("write {i} through caddy: {other:?}"),
        }
        assert_eq!(
            std::fs::read_to_string(ws.join(format!("f{i}.txt"))).unwrap(),
            format!("v{i}")
        );
    }
    // The agent's relay connection came through caddy (the server's own tailnet is
    // relay-only, so the calls above crossed it).
    let relay = server.hub().derp().stats();
    assert!(relay.counters.packets_relayed > 0, "{relay:?}");
    drop(mcp);
    server.shutdown().await;
}
