//! A control plane on loopback (coordinator + DERP relay + DERP map, one port), with
//! users, workspaces and agents from TOML, and helpers to start agent nodes.

#![allow(dead_code, clippy::disallowed_methods)]

use agentwire::runtime::tailnet::{Role, Tailnet, TailnetConfig};
use agentwire::services::control::InMemoryControlPlane;
use agentwire::services::hub::{self, Hub};
use agentwire::wire::addr::NodeId;
use agentwire::wire::key::NodePrivate;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const AGENT_A: &str = "a0000000-0000-4000-8000-00000000000a";
pub const AGENT_B: &str = "b0000000-0000-4000-8000-00000000000b";
pub const AGENT_C: &str = "c0000000-0000-4000-8000-00000000000c";
pub const ALICE_TOKEN: &str = "alice-token";
pub const BOB_TOKEN: &str = "bob-token";
pub const SERVICE_TOKEN: &str = "service-token";

pub fn agent_token(id: &str) -> String {
    format!("agent-token-{id}")
}

/// alice owns a/main and b/main; bob owns c/main.
pub fn config() -> String {
    format!(
        r#"
service_token = "{SERVICE_TOKEN}"
[[users]]
name = "alice"
token = "{ALICE_TOKEN}"
[[users]]
name = "bob"
token = "{BOB_TOKEN}"
[[workspaces]]
owner = "alice"
name = "a"
[[workspaces.agents]]
id = "{AGENT_A}"
token = "{}"
[[workspaces]]
owner = "alice"
name = "b"
[[workspaces.agents]]
id = "{AGENT_B}"
token = "{}"
[[workspaces]]
owner = "bob"
name = "c"
[[workspaces.agents]]
id = "{AGENT_C}"
token = "{}"
"#,
        agent_token(AGENT_A),
        agent_token(AGENT_B),
        agent_token(AGENT_C)
    )
}

/// A running hub on 127.0.0.1.
pub struct Cluster {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    /// Set when the hub terminates TLS: the trust nodes use to reach it.
    pub tls: Option<agentwire::runtime::tls::ClientTls>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Cluster {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> Self {
        Self::start_with(addr, None).await
    }

    /// A hub on 127.0.0.1 terminating TLS with `server`; nodes trust it with `trust`.
    pub async fn start_tls(
        server: agentwire::runtime::tls::ServerTls,
        trust: agentwire::runtime::tls::ClientTls,
    ) -> Self {
        Self::start_with("127.0.0.1:0".parse().unwrap(), Some((server, trust))).await
    }

    /// A hub on `addr` terminating TLS with `server`; nodes trust it with `trust`.
    pub async fn start_tls_on(
        addr: SocketAddr,
        server: agentwire::runtime::tls::ServerTls,
        trust: agentwire::runtime::tls::ClientTls,
    ) -> Self {
        Self::start_with(addr, Some((server, trust))).await
    }

    async fn start_with(
        addr: SocketAddr,
        tls: Option<(
            agentwire::runtime::tls::ServerTls,
            agentwire::runtime::tls::ClientTls,
        )>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let control = Arc::new(InMemoryControlPlane::from_toml(&config()).unwrap());
        let map = hub::embedded_map(&addr.ip().to_string(), addr.port(), tls.is_some());
        let hub = Arc::new(Hub::with_map(control, map, NodePrivate::generate()));
        let (tx, rx) = oneshot::channel::<()>();
        let (server_tls, trust) = match tls {
            Some((s, t)) => (Some(s), Some(t)),
            None => (None, None),
        };
        let task = tokio::spawn(agentwire::services::http::serve_tls(
            listener,
            hub.router(),
            server_tls,
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            addr,
            hub,
            tls: trust,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops serving: closes every stream and the listener.
    pub async fn stop(mut self) {
        self.hub.shutdown().await;
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }

    /// A client tailnet with `token`.
    pub fn client(&self, token: &str) -> Tailnet {
        let mut cfg = TailnetConfig::client(self.url(), token);
        cfg.udp_listen = "127.0.0.1:0".parse().unwrap();
        if let Some(t) = &self.tls {
            cfg.tls = t.clone();
        }
        Tailnet::start(cfg).unwrap()
    }

    /// An agent node serving a TCP echo on tailnet port 7.
    pub async fn agent(&self, id: &str) -> Arc<Tailnet> {
        let tls = self.tls.clone();
        agent_node(&self.url(), id, move |cfg| {
            if let Some(t) = tls {
                cfg.tls = t;
            }
        })
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts an agent node for `id` with an echo service on port 7.
pub async fn agent_node(
    url: &str,
    id: &str,
    tweak: impl FnOnce(&mut TailnetConfig),
) -> Arc<Tailnet> {
    let id: NodeId = id.parse().unwrap();
    let mut cfg = TailnetConfig::agent(url, agent_token(&id.to_string()), id);
    cfg.udp_listen = "127.0.0.1:0".parse().unwrap();
    assert_eq!(cfg.role, Role::Agent);
    tweak(&mut cfg);
    let t = Arc::new(Tailnet::start(cfg).unwrap());
    let l = t.tunnel().listen_tcp(7).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(&mut s);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    assert!(
        t.wait_ready(Duration::from_secs(10)).await,
        "agent {id} not ready"
    );
    t
}

/// Echoes `data` through port 7 of the agent.
pub async fn echo(
    conn: &agentwire::runtime::tailnet::AgentConn,
    data: &[u8],
) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let s = conn.dial_tcp(7).await?;
    let (mut r, mut w) = tokio::io::split(s);
    let d = data.to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&d).await?;
        w.shutdown().await
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await?;
    writer.await.map_err(std::io::Error::other)??;
    Ok(back)
}

/// Open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Live tokio tasks on the current runtime.
pub fn task_count() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Logs to the test's output when `RUST_LOG` is set.
pub fn init_logs() {
    if std::env::var("RUST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A real workspace agent (API on port 4, port forwarding) for `id`, working in `dir`.
pub async fn api_agent(
    url: &str,
    id: &str,
    dir: &std::path::Path,
) -> agentwire::services::agent::Agent {
    let id: NodeId = id.parse().unwrap();
    let mut cfg = agentwire::services::agent::AgentConfig::new(
        url,
        &agent_token(&id.to_string()),
        id,
        dir.to_path_buf(),
    );
    cfg.tailnet.udp_listen = "127.0.0.1:0".parse().unwrap();
    let a = agentwire::services::agent::Agent::start(cfg).unwrap();
    assert!(
        a.wait_ready(Duration::from_secs(10)).await,
        "agent {id} not ready"
    );
    a
}
