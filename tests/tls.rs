//! TLS on every link, with a throwaway CA made in the test: `serve --tls-cert/--tls-key`
//! with a real `agentwire agent` process joining over https, MCP tool calls through it,
//! the relay-only path over TLS, DERP over TLS by upgrade and by websocket, a certificate
//! swapped by SIGHUP while calls run, and each refusal (wrong CA, expired, wrong name,
//! plain HTTP on a TLS port, TLS on a plain port, a token to plain http) with its exact
//! error class while the server keeps serving.

#![allow(clippy::disallowed_methods)]

mod common;
mod derp_support;

use agentwire::runtime::coord::{CoordClient, CoordClientConfig};
use agentwire::runtime::derp::DerpClientOptions;
use agentwire::runtime::tailnet::{Tailnet, TailnetConfig, TailnetError};
use agentwire::runtime::tls::{ClientTls, DialError, ServerTls, TlsFailure, TlsTarget};
use agentwire::services::derp::DerpServerConfig;
use agentwire::services::serve::{ServeConfig, Server};
use agentwire::wire::addr::NodeId;
use common::mcp_http::{McpHttp, Outcome};
use common::pki::{Ca, Validity};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USER_TOKEN: &str = "tls-user-token-0123456789abcdef";
const AGENT_TOKEN: &str = "tls-agent-token-0123456789abcdef";
const BOUND: Duration = Duration::from_secs(30);

fn control_file(dir: &Path, agent: NodeId) -> std::path::PathBuf {
    let config = dir.join("control.toml");
    std::fs::write(
        &config,
        format!(
            "[[users]]\nname = \"alice\"\ntoken = \"{USER_TOKEN}\"\n[[workspaces]]\nowner = \"alice\"\n\
             name = \"dev\"\n[[workspaces.agents]]\nid = \"{agent}\"\ntoken = \"{AGENT_TOKEN}\"\n"
        ),
    )
    .unwrap();
    config
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_agent(url: &str, ca: &Path, token_file: &Path, dir: &Path) -> KillOnDrop {
    let child = Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .args(["agent", "--url", url, "--udp", "127.0.0.1:0", "--ca-file"])
        .arg(ca)
        .arg("--token-file")
        .arg(token_file)
        .arg("--dir")
        .arg(dir)
        .env_remove("AGENTWIRE_AGENT_TOKEN")
        .env_remove("AGENTWIRE_CA_FILE")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start agentwire agent");
    KillOnDrop(child)
}

async fn until_ok(mcp: &mut McpHttp, ws: &str) -> Duration {
    let start = Instant::now();
    loop {
        let o = mcp
            .call(
                "workspace_bash",
                json!({"workspace": ws, "command": "echo tls-ok"}),
                BOUND,
            )
            .await;
        if let Outcome::Ok(v) = &o {
            assert!(v.to_string().contains("tls-ok"), "{v}");
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never served: {o:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `serve` with TLS; an agent process joins over https with `--ca-file`; MCP calls over
/// https reach it. With `relay_only` the server's tailnet uses only the relay, so every
/// packet crosses DERP over TLS.
async fn agent_over_https(relay_only: bool) {
    common::cluster::init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(tmp.path(), "ca");
    let leaf = ca.leaf(
        tmp.path(),
        "server",
        &["localhost", "127.0.0.1"],
        Validity::Good,
    );
    let tls = ServerTls::load(&leaf.cert, &leaf.key).unwrap();
    let agent_id = NodeId::random();
    let server = Server::start(ServeConfig {
        config_file: Some(control_file(tmp.path(), agent_id)),
        tls: Some(tls.clone()),
        relay_only,
        ..ServeConfig::loopback(tmp.path().join("state"))
    })
    .await
    .unwrap();
    assert!(server.public_url.starts_with("https://127.0.0.1:"));
    assert!(server.wait_ready(Duration::from_secs(10)).await);
    let map = server.hub().derp_map.connect(999).unwrap();
    assert!(map.url.starts_with("https://127.0.0.1:"), "{map:?}");

    let ws = tmp.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let token_file = tmp.path().join("agent-token");
    std::fs::write(&token_file, AGENT_TOKEN).unwrap();
    let _agent = spawn_agent(&server.public_url, &ca.file, &token_file, &ws);

    let trust = ClientTls::with_ca_file(&ca.file).unwrap();
    let mut mcp = McpHttp::new(server.addr, USER_TOKEN).with_tls(trust, "127.0.0.1");
    let first = until_ok(&mut mcp, "alice/dev").await;
    println!("relay_only={relay_only}: first call through the TLS-joined agent after {first:?}");
    for i in 0..20 {
        match mcp
            .call(
                "workspace_bash",
                json!({"workspace": "alice/dev", "command": format!("echo call-{i}")}),
                BOUND,
            )
            .await
        {
            Outcome::Ok(v) => assert!(v.to_string().contains(&format!("call-{i}"))),
            other => panic!("call {i}: {other:?}"),
        }
    }
    let s = tls.stats();
    // The server's own tailnet, the agent's coordinator stream and relay connection, the
    // identity call and the MCP connection all shook hands.
    assert!(s.handshakes >= 4, "{s:?}");
    assert_eq!(s.plain_http, 0, "{s:?}");
    if relay_only {
        let relay = server.hub().derp().stats();
        assert!(relay.counters.packets_relayed > 0, "{relay:?}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_joins_over_https_and_tool_calls_reach_it() {
    agent_over_https(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_over_tls() {
    agent_over_https(true).await;
}

/// DERP by `Upgrade: DERP` and by websocket, both over TLS, between two library clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derp_over_tls_by_upgrade_and_by_websocket() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(tmp.path(), "ca");
    let leaf = ca.leaf(
        tmp.path(),
        "relay",
        &["localhost", "127.0.0.1"],
        Validity::Good,
    );
    let tls = ServerTls::load(&leaf.cert, &leaf.key).unwrap();
    let server =
        derp_support::TestServer::start_tls(DerpServerConfig::default(), tls.clone()).await;
    assert!(server.url().starts_with("https://"));
    let trust = ClientTls::with_ca_file(&ca.file).unwrap();
    for websocket in [false, true] {
        let mut cfg_a = derp_support::config(&server.url(), websocket);
        cfg_a.tls = trust.clone();
        let mut cfg_b = derp_support::config(&server.url(), websocket);
        cfg_b.tls = trust.clone();
        let a = derp_support::peer_with(cfg_a, DerpClientOptions::default()).await;
        let mut b = derp_support::peer_with(cfg_b, DerpClientOptions::default()).await;
        let want = if websocket { "websocket" } else { "upgrade" };
        assert_eq!(a.client.status().transport, Some(want));
        a.client.send(b.public(), b"over tls").unwrap();
        let got = b.recv().await;
        assert_eq!((got.src, &got.packet[..]), (a.public(), &b"over tls"[..]));
    }
    assert!(tls.stats().handshakes >= 4, "{:?}", tls.stats());
    server.stop().await;
}

/// The certificate files are replaced and SIGHUP sent while calls run on fresh
/// connections: no call fails, new handshakes get the new certificate, and the server's
/// own nodes (which trust exactly what it presents) reconnect fine afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_while_calls_run() {
    common::cluster::init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(tmp.path(), "ca");
    let first = ca.leaf(tmp.path(), "server", &["127.0.0.1"], Validity::Good);
    let tls = ServerTls::load(&first.cert, &first.key).unwrap();
    let server = Server::start(ServeConfig {
        token: Some(USER_TOKEN.into()),
        tls: Some(tls.clone()),
        ..ServeConfig::loopback(tmp.path().join("state"))
    })
    .await
    .unwrap();
    assert!(server.wait_ready(Duration::from_secs(10)).await);
    let trust = ClientTls::with_ca_file(&ca.file).unwrap();
    let addr = server.addr;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let caller = {
        let (trust, stop) = (trust.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // A new connection per call: every call runs its own handshake.
                let mut mcp = McpHttp::new(addr, USER_TOKEN).with_tls(trust.clone(), "127.0.0.1");
                match mcp
                    .call(
                        "workspace_bash",
                        json!({"workspace": "demo", "command": "echo hup"}),
                        BOUND,
                    )
                    .await
                {
                    Outcome::Ok(_) => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Write the new pair beside the old and rename over it, as certbot and friends do.
    let second = ca.leaf(tmp.path(), "next", &["127.0.0.1"], Validity::Good);
    std::fs::rename(&second.cert, &first.cert).unwrap();
    std::fs::rename(&second.key, &first.key).unwrap();
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
    let t0 = Instant::now();
    while tls.stats().reloads == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "SIGHUP did not reload"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(tls.current_leaf().as_ref(), &second.der[..]);
    // The server's own nodes reconnect through the new certificate.
    server.hub().restart_coordinator().await;
    server.hub().restart_derp().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = caller.await.unwrap();
    println!(
        "SIGHUP reload: {ok} calls succeeded, {} failed",
        failed.len()
    );
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    assert!(ok >= 5, "only {ok} calls ran");
    // A full handshake sees the new leaf (a fresh trust object, so no session of the old
    // certificate is resumed).
    let stream = ClientTls::with_ca_file(&ca.file)
        .unwrap()
        .dial(
            "127.0.0.1",
            addr.port(),
            Some(&TlsTarget::named("127.0.0.1")),
        )
        .await
        .unwrap();
    let agentwire::runtime::tls::Stream::Tls(s) = stream else {
        panic!("not TLS")
    };
    let presented = s.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(presented.as_ref(), &second.der[..]);
    // A broken pair is refused and the current certificate stays.
    std::fs::write(&first.key, "not a key").unwrap();
    assert!(tls.reload().is_err());
    assert_eq!(tls.current_leaf().as_ref(), &second.der[..]);
    assert_eq!(tls.stats().reload_failures, 1);
    let mut mcp = McpHttp::new(addr, USER_TOKEN).with_tls(trust, "127.0.0.1");
    until_ok(&mut mcp, "demo").await;
    server.shutdown().await;
}

/// A tiny TLS listener with `leaf`, for the certificate refusals.
async fn tls_listener(tls: ServerTls) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
    tokio::spawn(agentwire::services::http::serve_tls(
        l,
        app,
        Some(tls),
        async move {
            let _ = rx.await;
        },
    ));
    (addr, tx)
}

fn failure(r: Result<agentwire::runtime::tls::Stream, DialError>) -> TlsFailure {
    match r {
        Err(DialError::Tls { failure, addr }) => {
            assert!(addr.starts_with("127.0.0.1:"), "{addr}");
            failure
        }
        Err(e) => panic!("not a TLS failure: {e}"),
        Ok(_) => panic!("handshake succeeded"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_their_reason_and_the_server_keeps_serving() {
    common::cluster::init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new(tmp.path(), "ca");
    let other_ca = Ca::new(tmp.path(), "other");
    let good = ca.leaf(
        tmp.path(),
        "good",
        &["127.0.0.1", "localhost"],
        Validity::Good,
    );
    let expired = ca.leaf(tmp.path(), "expired", &["127.0.0.1"], Validity::Expired);
    let misnamed = ca.leaf(tmp.path(), "misnamed", &["other.example"], Validity::Good);
    let tls = ServerTls::load(&good.cert, &good.key).unwrap();
    let server = Server::start(ServeConfig {
        token: Some(USER_TOKEN.into()),
        tls: Some(tls.clone()),
        ..ServeConfig::loopback(tmp.path().join("state"))
    })
    .await
    .unwrap();
    assert!(server.wait_ready(Duration::from_secs(10)).await);
    let port = server.addr.port();
    let trust = ClientTls::with_ca_file(&ca.file).unwrap();
    let named = TlsTarget::named("127.0.0.1");

    // Wrong CA.
    let wrong = ClientTls::with_ca_file(&other_ca.file).unwrap();
    let f = failure(wrong.dial("127.0.0.1", port, Some(&named)).await);
    assert_eq!(f, TlsFailure::UnknownIssuer);
    assert!(f.to_string().contains("--ca-file"), "{f}");

    // Expired.
    let (exp_addr, _stop1) =
        tls_listener(ServerTls::load(&expired.cert, &expired.key).unwrap()).await;
    let f = failure(trust.dial("127.0.0.1", exp_addr.port(), Some(&named)).await);
    assert_eq!(f, TlsFailure::Expired);

    // Wrong host name.
    let misnamed_tls = ServerTls::load(&misnamed.cert, &misnamed.key).unwrap();
    let (mis_addr, _stop2) = tls_listener(misnamed_tls.clone()).await;
    let f = failure(trust.dial("127.0.0.1", mis_addr.port(), Some(&named)).await);
    assert!(
        matches!(&f, TlsFailure::NameMismatch { expected, presented }
            if expected == "127.0.0.1" && presented.contains("other.example")),
        "{f:?}"
    );

    // A DERP map's `CertName: sha256-raw:<hex>` pins that exact leaf: trusted with no CA
    // and whatever it names; any other leaf is refused, a malformed pin is a bad name.
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(misnamed_tls.current_leaf().as_ref()));
    let pinned = |pin: String| TlsTarget {
        cert_name: Some(pin),
        ..TlsTarget::named("127.0.0.1")
    };
    let no_ca = ClientTls::default();
    no_ca
        .dial(
            "127.0.0.1",
            mis_addr.port(),
            Some(&pinned(format!("sha256-raw:{digest}"))),
        )
        .await
        .expect("the pinned leaf is trusted");
    let f = failure(
        no_ca
            .dial(
                "127.0.0.1",
                port,
                Some(&pinned(format!("sha256-raw:{digest}"))),
            )
            .await,
    );
    assert_eq!(
        f,
        TlsFailure::UnknownIssuer,
        "another leaf than the pinned one"
    );
    let bad = no_ca
        .dial("127.0.0.1", port, Some(&pinned("sha256-raw:zz".into())))
        .await;
    assert!(matches!(bad, Err(DialError::BadName(_))), "{bad:?}");

    // Plain HTTP on the TLS port: answered in plain HTTP with what to change.
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(BOUND, s.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("use https://"), "{answer}");
    // ... and a coordinator client pointed at it says so, and retries with backoff.
    let (ev_tx, _ev_rx) = tokio::sync::mpsc::channel(16);
    let coord = CoordClient::spawn(
        CoordClientConfig {
            url: format!("http://127.0.0.1:{port}"),
            token: USER_TOKEN.into(),
            id: NodeId::random(),
            name: "plain".into(),
            tls: trust.clone(),
        },
        ev_tx,
    );
    let t0 = Instant::now();
    let before = tls.stats().plain_http;
    loop {
        let st = coord.status();
        if let Some(e) = &st.last_error
            && e.contains("use https://")
        {
            break;
        }
        assert!(
            t0.elapsed() < BOUND,
            "coordinator client never said why: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The backoff starts at 50 ms and doubles: about seven attempts in two seconds,
    // where a loop without backoff would make thousands.
    let attempts = tls.stats().plain_http - before;
    println!("plain HTTP to the TLS port: {attempts} coordinator attempts in ~2 s");
    assert!(attempts <= 10, "{attempts} attempts in ~2 s: a tight loop");
    coord.shutdown().await;

    // TLS on a plain port.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain.local_addr().unwrap();
    let (ptx, prx) = tokio::sync::oneshot::channel::<()>();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
    tokio::spawn(agentwire::services::http::serve(plain, app, async move {
        let _ = prx.await;
    }));
    let f = failure(
        trust
            .dial("127.0.0.1", plain_addr.port(), Some(&named))
            .await,
    );
    assert_eq!(f, TlsFailure::NotTls);
    let _ = ptx.send(());

    // A token to a non-loopback http:// URL: refused before anything is sent.
    let Err(err) = Tailnet::start(TailnetConfig::client("http://192.0.2.10:7080", USER_TOKEN))
    else {
        panic!("a token to plain http on another host was allowed")
    };
    assert!(matches!(err, TailnetError::Insecure(_)), "{err}");
    assert!(err.to_string().contains("--allow-insecure-http"), "{err}");
    let mut allowed = TailnetConfig::client("http://192.0.2.10:7080", USER_TOKEN);
    allowed.allow_insecure_http = true;
    Tailnet::start(allowed)
        .expect("allowed with the flag")
        .shutdown()
        .await;
    let out = Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .args(["agent", "--url", "http://192.0.2.10:7080", "--token", "x"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allow-insecure-http"), "{stderr}");
    // A path in the agent URL is refused, not silently dropped.
    let out = Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .args(["agent", "--url", "https://127.0.0.1:1/mcp", "--token", "x"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has a path"), "{stderr}");

    // Through all of it the server kept serving.
    let mut mcp = McpHttp::new(server.addr, USER_TOKEN).with_tls(trust, "127.0.0.1");
    until_ok(&mut mcp, "demo").await;
    let s = tls.stats();
    assert!(s.handshake_failures >= 1 && s.plain_http >= 1, "{s:?}");
    server.shutdown().await;
}
