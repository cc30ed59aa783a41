//! `agentwire agent`: a workspace agent joining a running `agentwire serve`.

use crate::services::agent::{Agent, AgentConfig};
use crate::services::hub::{AGENT_IDENTITY_PATH, AgentIdentity};
use crate::services::public_url::BaseUrl;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `agentwire agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The server's base URL, https://HOST[:PORT] (http:// only to loopback, or with
    /// --allow-insecure-http).
    #[arg(long)]
    pub url: String,
    #[command(flatten)]
    pub tls: super::ClientTlsArgs,
    /// The agent's token. Prefer the environment variable or --token-file: a command line
    /// is visible to every local user, including the workspace's own processes.
    #[arg(
        long,
        env = "AGENTWIRE_AGENT_TOKEN",
        hide_env_values = true,
        required_unless_present = "token_file"
    )]
    pub token: Option<String>,
    /// Read the agent's token from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Working directory for commands [default: the current directory].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Confine file operations to this directory.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// UDP address for direct WireGuard paths.
    #[arg(long, default_value = "0.0.0.0:0")]
    pub udp: std::net::SocketAddr,
    /// A UDP endpoint to advertise for direct paths (repeatable), such as a port forwarded
    /// on this host's NAT. Replaces what the agent finds by itself (interface addresses
    /// and what the relay's STUN server sees).
    #[arg(long, value_name = "ADDR")]
    pub advertise: Vec<std::net::SocketAddr>,
    /// Never use direct UDP paths: every packet goes through the relay.
    #[arg(long)]
    pub relay_only: bool,
    /// Do not forward tailnet connections to ports on this host.
    #[arg(long)]
    pub no_port_forwarding: bool,
}

/// The server's base URL, parsed; a path would be accepted and then not used, so it is
/// refused.
fn base_url(url: &str) -> anyhow::Result<BaseUrl> {
    Ok(BaseUrl::parse("--url", url, false)?)
}

/// Asks the server which agent the token belongs to.
async fn identity(
    tls: &crate::runtime::tls::ClientTls,
    base: &BaseUrl,
    token: &str,
) -> anyhow::Result<AgentIdentity> {
    let (status, body) = super::http::request(
        tls,
        base,
        http::Method::GET,
        AGENT_IDENTITY_PATH,
        token,
        None,
    )
    .await?;
    if !status.is_success() {
        anyhow::bail!(
            "the server refused the agent token ({status}): {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(serde_json::from_slice(&body)?)
}

/// Runs the agent until ctrl-c or SIGTERM.
///
/// # Errors
/// A refused token or an unreachable server at startup.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    super::protect_process();
    let base = base_url(&args.url)?;
    let url = base.to_url();
    let client_tls = args.tls.client_tls(&url)?;
    let token = match (&args.token_file, args.token) {
        (Some(f), _) => super::read_token_file(f)?,
        (None, Some(t)) => {
            if !super::token_came_from_env("AGENTWIRE_AGENT_TOKEN") {
                tracing::warn!(
                    "--token on the command line is visible to every local user and to the \
                     workspace's processes (ps, /proc); use AGENTWIRE_AGENT_TOKEN or --token-file"
                );
            }
            t
        }
        (None, None) => {
            anyhow::bail!("give the agent token with --token-file or AGENTWIRE_AGENT_TOKEN")
        }
    };
    let id = identity(&client_tls, &base, &token).await?;
    let dir = match args.dir {
        Some(d) => d,
        None => std::env::current_dir()?,
    };
    let mut cfg = AgentConfig::new(&url, &token, id.id, dir.clone());
    cfg.api.root = args.root;
    cfg.tailnet.udp_listen = args.udp;
    cfg.tailnet.advertise = (!args.advertise.is_empty()).then_some(args.advertise);
    cfg.tailnet.relay_only = args.relay_only;
    cfg.tailnet.tls = client_tls;
    cfg.tailnet.allow_insecure_http = args.tls.allow_insecure_http;
    cfg.forward_ports = !args.no_port_forwarding;
    let agent = Agent::start(cfg)?;
    let ready = agent.wait_ready(Duration::from_secs(15)).await;
    println!(
        "agentwire agent {} for {} ({}) in {}{}",
        id.name,
        id.workspace,
        id.id,
        dir.display(),
        if ready { "" } else { " — still connecting" }
    );
    super::shutdown_signal().await;
    agent.shutdown().await;
    Ok(())
}
