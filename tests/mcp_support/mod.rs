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
