//! Shared harness for the MCP front-end tests: a real server on 127.0.0.1:0 and the
//! location of the third-party clients `tests/mcp/setup.sh` installs.
#![allow(dead_code)]

pub mod agent;

use agentwire::services::control::{ControlPlane, DemoSetup};
use agentwire::services::mcp::{
    AgentProvider, McpConfig, McpState, StaticAgentProvider, ToolExtension, router,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Where `tests/mcp/setup.sh` installs the clients.
pub fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/mcp-clients")
}

/// A child process killed and reaped when dropped.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `BIN serve --listen 127.0.0.1:0 ARGS` and returns it with the address its
/// banner names; the rest of its output is drained so it never blocks on a full pipe.
pub fn serve_binary(bin: &str, args: &[&str], env: &[(&str, &str)]) -> (Proc, String) {
    use std::io::BufRead;
    let mut c = std::process::Command::new(bin);
    c.arg("serve").args(["--listen", "127.0.0.1:0"]).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start serve");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let proc = Proc(child);
    let mut line = String::new();
    out.read_line(&mut line).expect("banner");
    let addr = line
        .split_whitespace()
        .last()
        .expect("serving on ADDR")
        .to_string();
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    (proc, addr)
}

/// A running MCP front end.
pub struct McpServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl McpServer {
    /// Serves `control` and `agents` on 127.0.0.1:0; `tweak` adjusts the config.
    pub async fn start(
        control: Arc<dyn ControlPlane>,
        agents: Arc<dyn AgentProvider>,
        extension: Option<Arc<dyn ToolExtension>>,
        tweak: impl FnOnce(&mut McpConfig),
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = McpConfig {
            listen_addr: Some(addr),
            ..Default::default()
        };
        tweak(&mut config);
        config.validate().expect("valid MCP config");
        let mut state = McpState::new(control, agents, config);
        state.extension = extension;
        let app = router(state);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            stop: Some(tx),
            task,
        }
    }

    /// The dev configuration the conformance suite needs: no auth, acting as `demo`.
    pub async fn start_dev(extension: Option<Arc<dyn ToolExtension>>) -> Self {
        let (control, _creds) = DemoSetup {
            user: Some("demo".into()),
            ..Default::default()
        }
        .build()
        .unwrap();
        Self::start(
            Arc::new(control),
            Arc::new(StaticAgentProvider::default()),
            extension,
            |c| c.allow_unauthenticated = Some("demo".into()),
        )
        .await
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), &mut self.task).await;
    }
}
