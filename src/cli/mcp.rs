//! `agentwire mcp`: the MCP tools served on a person's own machine, over stdio (for MCP
//! clients that spawn it) or `--http 127.0.0.1:PORT`, dialing workspaces from here
//! through one long-lived client tunnel. `agentwire mcp configure CLIENT` adds it to an
//! MCP client's configuration.
//!
//! Nothing but MCP messages goes to stdout: logs go to stderr, or to `--log-file`.

use crate::runtime::tailnet::DialMode;
use crate::services::client::configure::{self, McpClient};
use crate::services::client::{ClientSession, SessionOptions, local};
use crate::services::control::User;
use crate::services::mcp::{self, McpConfig, McpState};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `agentwire mcp`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct McpArgs {
    #[command(subcommand)]
    pub command: Option<McpCommand>,
    /// Serve streamable HTTP on this loopback address instead of stdio (clients then
    /// present your token as a bearer token).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// Which tools: `standard` (workspace and file tools) or `chatgpt` (search, fetch).
    #[arg(long, default_value = "standard")]
    pub toolset: String,
    /// Never use direct UDP paths to workspaces.
    #[arg(long)]
    pub relay_only: bool,
    /// Write logs to this file instead of stderr.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Destinations unused for this long are closed (seconds).
    #[arg(long, value_name = "SECS", default_value = "1800")]
    pub idle_timeout: u64,
    /// Where the tunnel's UDP socket binds.
    #[arg(long, default_value = "0.0.0.0:0")]
    pub udp: SocketAddr,
    /// Build a whole network stack per tool call, as the reference CLI does: for the
    /// benchmark only.
    #[arg(long, hide = true)]
    pub per_call: bool,
}

/// Subcommands of `agentwire mcp`.
#[derive(Debug, clap::Subcommand)]
pub enum McpCommand {
    /// Add `agentwire mcp` to an MCP client's configuration (backing up the old file).
    Configure(ConfigureArgs),
}

/// Arguments of `agentwire mcp configure`.
#[derive(Debug, clap::Args)]
pub struct ConfigureArgs {
    /// The client.
    #[arg(value_enum)]
    pub client: McpClient,
    /// Print the configuration instead of writing it.
    #[arg(long)]
    pub print: bool,
    /// The toolset the client gets.
    #[arg(long, default_value = "standard")]
    pub toolset: String,
}

/// Logging for `mcp`: stderr, or a file; never stdout.
///
/// # Errors
/// The log file cannot be opened.
pub fn init_logging(args: &McpArgs) -> anyhow::Result<()> {
    let Some(path) = &args.log_file else {
        super::init_logging_at("warn");
        return Ok(());
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the log file {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,boringtun=off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .try_init();
    Ok(())
}

fn configure(a: ConfigureArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this program's path")?;
    let command = exe.to_string_lossy().into_owned();
    let mut args = vec!["mcp".to_string()];
    if a.toolset != "standard" {
        args.extend(["--toolset".to_string(), a.toolset.clone()]);
    }
    if a.print {
        let snippet = a.client.snippet(&command, &args);
        println!("{}", serde_json::to_string_pretty(&snippet)?);
        return Ok(());
    }
    // A configuration that cannot work is no help: check the login first.
    super::login::stored().context("log in first (`agentwire login URL`)")?;
    let path = a.client.config_path()?;
    let backup = configure::write(a.client, &path, &command, &args)?;
    eprintln!(
        "Added `{command} mcp` as \"{}\" to {}{}. Restart the client to pick it up.",
        configure::ENTRY,
        path.display(),
        backup
            .map(|b| format!(" (the old file is in {})", b.display()))
            .unwrap_or_default()
    );
    Ok(())
}

/// Runs `agentwire mcp` until the client goes away (stdin closes) or ctrl-c/SIGTERM.
///
/// # Errors
/// Not logged in, a refused token, a bad `--http` address.
pub async fn run(args: McpArgs) -> anyhow::Result<()> {
    if let Some(McpCommand::Configure(c)) = args.command {
        return configure(c);
    }
    if let Some(addr) = args.http
        && !addr.ip().is_loopback()
    {
        anyhow::bail!(
            "--http {addr}: the local endpoint answers with your own token's rights; listen \
             on loopback (127.0.0.1 or [::1]) only"
        );
    }
    let (creds, tls) = super::login::stored()?;
    let known = (!creds.user.is_empty()).then(|| User {
        name: creds.user.clone(),
        admin: false,
    });
    let opts = SessionOptions {
        relay_only: args.relay_only,
        udp_listen: args.udp,
        dial_mode: if args.per_call {
            DialMode::PerCall
        } else {
            DialMode::Shared
        },
        name: "mcp".into(),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
    };
    let session = ClientSession::start(
        &creds.url,
        &creds.token,
        tls,
        creds.allow_insecure_http,
        opts,
        known,
    )
    .await
    .with_context(|| format!("connecting to {}", creds.url))?;
    let status = match local::serve(session.tailnet.clone()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!(error = %e, "no status socket for `agentwire status`");
            None
        }
    };
    let state = McpState::new(
        session.control.clone(),
        Arc::new(session.provider()),
        McpConfig {
            listen_addr: args.http,
            ..McpConfig::default()
        },
    );
    let served = match args.http {
        None => mcp::serve_stdio(
            state,
            session.me.clone(),
            Some(&args.toolset),
            super::shutdown_signal(),
        )
        .await
        .map_err(anyhow::Error::from),
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            eprintln!(
                "agentwire mcp: http://{}/mcp for {} (token: yours, as stored by login)",
                listener.local_addr()?,
                session.me.name
            );
            crate::services::http::serve_tls(
                listener,
                mcp::router(state),
                None,
                super::shutdown_signal(),
            )
            .await
            .map_err(anyhow::Error::from)
        }
    };
    drop(status);
    session.shutdown().await;
    served
}
