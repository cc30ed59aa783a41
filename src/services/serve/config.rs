//! What `agentwire serve` is told ([`ServeConfig`]) and how starting it fails
//! ([`ServeError`]).

use crate::services::control::ControlPlane;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Settings for [`super::Server::start`].
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// State directory (keys, the generated token, the demo agent's id).
    pub data_dir: PathBuf,
    /// The demo workspace (embedded default); `None` puts it beside the data directory
    /// (`<data_dir>-demo`), never inside it.
    pub demo_dir: Option<PathBuf>,
    /// Run the demo workspace's commands without the Landlock sandbox (for systems that
    /// lack it; otherwise they are refused there).
    pub unconfined_commands: bool,
    /// A `control.toml` imported into the store at start (users, workspaces, agents and
    /// their token digests; see `docs/config.md`). With it there is no demo workspace.
    pub config_file: Option<PathBuf>,
    /// The store: a PostgreSQL URL (`postgres://…`) or `sqlite:PATH`; `None` is the
    /// SQLite file `data_dir/agentwire.db`. With PostgreSQL there is no demo workspace.
    pub database_url: Option<String>,
    /// No demo user and workspace even in the embedded default.
    pub no_demo: bool,
    /// Store tunables (audit retention and queue).
    pub store: crate::services::store::StoreOptions,
    /// A control plane of the embedder's own, used instead of the store (no admin API, no
    /// demo workspace; `config_file` and `database_url` are ignored).
    pub control: Option<ExternalControl>,
    /// The URL clients use, `http(s)://HOST[:PORT]`; defaults to the listen address.
    /// Every URL handed out (DERP map, coordinator, join command, OAuth metadata) uses its
    /// scheme, host and port.
    pub public_url: Option<String>,
    /// Where nodes reach the relay when not at the public URL (`--derp-url`).
    pub derp_url: Option<String>,
    /// With a PostgreSQL store this process is one of several replicas: where the others
    /// reach this one's relay directly (not through the load balancer). `None` is the
    /// listen address (reachable by the others only when it is a specific one).
    pub replica_url: Option<String>,
    /// Terminate TLS on the listener with this certificate (reloaded on SIGHUP).
    pub tls: Option<crate::runtime::tls::ServerTls>,
    /// The user's token for the embedded default (else read from the data dir or generated).
    pub token: Option<String>,
    /// Development only: serve MCP without a token, as this user (loopback only).
    pub dev_no_auth_user: Option<String>,
    /// Force DERP-only paths for the shared Tailnet.
    pub relay_only: bool,
    /// UDP endpoints the shared Tailnet advertises for direct paths (for example a
    /// NAT's public address); `None` derives them from the socket.
    pub advertise: Option<Vec<SocketAddr>>,
    /// A second listener serving only `/metrics` and `/healthz`, without a token (keep it
    /// on loopback or a private network).
    pub metrics_listen: Option<SocketAddr>,
    /// Bearer token that opens `/metrics` on the main listener. Without it (and without
    /// `metrics_listen`) the main listener serves metrics only when neither it nor the
    /// public URL is reachable from elsewhere.
    pub metrics_token: Option<String>,
    /// Where the STUN server listens (UDP); `None` runs none. The DERP map advertises its
    /// port as `STUNPort`, or -1 without one.
    pub stun_listen: Option<SocketAddr>,
    /// When `stun_listen` cannot be bound, warn and run without STUN instead of failing
    /// to start (the CLI's default address, which another process may hold).
    pub stun_optional: bool,
    /// The OAuth authorization server for hosted MCP clients.
    pub oauth: crate::services::oauth::OAuthOptions,
    /// How fast one agent's replies are read, all calls to it together (see
    /// [`crate::services::agent::budget`]).
    pub agent_reply_rate: crate::services::agent::budget::ReplyRate,
    /// The MCP endpoint's limits (per-user calls in flight, sizes, timeouts).
    pub mcp_limits: crate::services::mcp::config::McpLimits,
}

impl ServeConfig {
    /// The embedded default on `127.0.0.1` (a free port), keeping state in `data_dir`;
    /// change fields from there.
    pub fn loopback(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            demo_dir: None,
            unconfined_commands: false,
            config_file: None,
            database_url: None,
            no_demo: false,
            store: crate::services::store::StoreOptions::default(),
            control: None,
            public_url: None,
            derp_url: None,
            replica_url: None,
            tls: None,
            token: None,
            dev_no_auth_user: None,
            relay_only: false,
            advertise: None,
            metrics_listen: None,
            metrics_token: None,
            // Off: the tests built on this run their nodes on this host, where STUN
            // teaches nothing and would only add traffic; a test of STUN sets it.
            stun_listen: None,
            stun_optional: false,
            oauth: crate::services::oauth::OAuthOptions::default(),
            agent_reply_rate: crate::services::agent::budget::ReplyRate::default(),
            mcp_limits: crate::services::mcp::config::McpLimits::default(),
        }
    }
}

/// A control plane an embedder brings (see [`ServeConfig::control`]).
#[derive(Debug, Clone)]
pub struct ExternalControl {
    /// Who callers are and what they may use.
    pub plane: Arc<dyn ControlPlane>,
    /// The token this process's own tailnet presents; `plane` must authenticate it as
    /// [`crate::services::control::Principal::Service`].
    pub service_token: crate::services::control::Secret,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Filesystem trouble with the data directory.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The STUN address could not be bound.
    #[error("binding the STUN server to {addr} (UDP): {source}")]
    Stun {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The store could not start (unreachable, corrupt, too new) or `--config` is invalid.
    #[error(transparent)]
    Store(#[from] crate::services::store::boot::BootError),
    /// The MCP configuration is invalid.
    #[error("MCP configuration: {0}")]
    Mcp(String),
    /// A URL to hand out cannot work.
    #[error(transparent)]
    PublicUrl(#[from] crate::services::public_url::PublicUrlError),
    /// The demo workspace cannot be placed.
    #[error(transparent)]
    DemoDir(#[from] crate::services::demo::DemoDirError),
    /// The shared Tailnet or the embedded agent could not start.
    #[error(transparent)]
    Tailnet(#[from] crate::runtime::tailnet::TailnetError),
    /// Joining the other replicas in the database failed.
    #[error("replica: {0}")]
    Replica(#[from] crate::services::replica::ReplicaError),
}

impl From<crate::services::secrets::FileError> for ServeError {
    fn from(e: crate::services::secrets::FileError) -> Self {
        Self::DataDir {
            path: e.path,
            source: e.source,
        }
    }
}
