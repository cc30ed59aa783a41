//! The client side: a person's machine reaching workspaces through one long-lived
//! client-role Tailnet authenticated with their user token (`agentwire ping`, `status`,
//! `mcp`). [`config`] keeps what `agentwire login` stored; [`ClientSession`] builds the
//! tunnel, the server's user API client and the control plane and agent provider the MCP
//! front end uses.

pub mod config;
pub mod configure;
pub mod local;
pub mod netcheck;
pub mod status;

use crate::runtime::tailnet::{DialMode, Tailnet, TailnetConfig, TailnetError};
use crate::runtime::tls::ClientTls;
use crate::services::control::User;
use crate::services::mcp::TailnetAgentProvider;
use crate::services::public_url::BaseUrl;
use crate::services::user_api::client::{ApiError, RemoteControlPlane, ServerClient};
use std::net::SocketAddr;
use std::sync::Arc;

/// How a client session's tunnel is set up.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Never use direct UDP paths.
    pub relay_only: bool,
    /// Where the UDP socket binds.
    pub udp_listen: SocketAddr,
    /// Shared (the default), or a whole stack per call (for the benchmark only).
    pub dial_mode: DialMode,
    /// A name for logs and the coordinator.
    pub name: String,
    /// Destinations unused for this long are closed.
    pub idle_timeout: std::time::Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            relay_only: false,
            udp_listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            dial_mode: DialMode::Shared,
            name: "client".into(),
            idle_timeout: std::time::Duration::from_secs(30 * 60),
        }
    }
}

/// Errors starting a client session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The stored URL is not a server base URL.
    #[error(transparent)]
    Url(#[from] crate::services::public_url::PublicUrlError),
    /// The server refused the token or could not be reached.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The tunnel could not start.
    #[error(transparent)]
    Tailnet(#[from] TailnetError),
}

/// One client: the server's API, the user it knows us as, and the shared tunnel.
#[derive(Debug)]
pub struct ClientSession {
    /// The server's user API, on a kept-alive connection.
    pub server: Arc<ServerClient>,
    /// Who the token belongs to.
    pub me: User,
    /// The shared client-role Tailnet.
    pub tailnet: Arc<Tailnet>,
    /// Workspace resolution through the server, cached.
    pub control: Arc<RemoteControlPlane>,
}

impl ClientSession {
    /// Checks the token with the server (one request, which also opens the connection
    /// later lookups reuse), then starts the tunnel. When the server cannot be reached
    /// and `known` names the user (from `login`), the session starts anyway: tunnels come
    /// up once the server is back, and every call says what is wrong meanwhile. A token
    /// the server refuses is always an error.
    ///
    /// # Errors
    /// [`SessionError`].
    pub async fn start(
        url: &str,
        token: &str,
        tls: ClientTls,
        allow_insecure_http: bool,
        opts: SessionOptions,
        known: Option<User>,
    ) -> Result<Self, SessionError> {
        let base = BaseUrl::parse("url", url, false)?;
        let server = Arc::new(ServerClient::new(base.clone(), token, tls.clone()));
        let me = match (server.me().await, known) {
            (Ok(me), _) => me,
            (Err(e @ ApiError::Unreachable { .. }), Some(known)) => {
                tracing::warn!(error = %e, "starting without the server; retrying in the background");
                known
            }
            (Err(e), _) => return Err(e.into()),
        };
        let mut cfg = TailnetConfig::client(base.to_url(), token);
        cfg.name = opts.name;
        cfg.tls = tls;
        cfg.allow_insecure_http = allow_insecure_http;
        cfg.relay_only = opts.relay_only;
        cfg.udp_listen = opts.udp_listen;
        cfg.dial_mode = opts.dial_mode;
        cfg.idle_timeout = opts.idle_timeout;
        let tailnet = Arc::new(Tailnet::start(cfg)?);
        let control = RemoteControlPlane::new(server.clone(), me.clone());
        let control = Arc::new(if opts.dial_mode == DialMode::PerCall {
            // The reference's per-call path resolves the workspace at the server on every
            // call, as it builds everything else per call.
            control.uncached()
        } else {
            control
        });
        // The first call to a workspace then finds its agent here, not at the server.
        control.refresh_directory();
        Ok(Self {
            server,
            me,
            tailnet,
            control,
        })
    }

    /// The agent provider MCP tools dial through: this session's tunnel, with statuses
    /// and failure reasons from the server.
    pub fn provider(&self) -> TailnetAgentProvider {
        TailnetAgentProvider::new(self.tailnet.clone()).with_remote_presence(self.server.clone())
    }

    /// Stops the tunnel (a graceful goodbye to the coordinator) and waits for it.
    pub async fn shutdown(self) {
        let (listed, asked) = self.control.directory_counts();
        tracing::info!(
            from_listing = listed,
            from_server = asked,
            wakes = self.tailnet.wake_count(),
            "workspace lookups this session"
        );
        match Arc::try_unwrap(self.tailnet) {
            Ok(t) => t.shutdown().await,
            Err(t) => drop(t),
        }
    }
}
