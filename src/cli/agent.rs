//! `agentwire agent`: a workspace agent joining a running `agentwire serve`.

use crate::services::agent::{Agent, AgentConfig};
use crate::services::hub::{AGENT_IDENTITY_PATH, AgentIdentity};
use crate::services::public_url::BaseUrl;
use anyhow::Context as _;
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
    /// Working directory for commands [default: the current directory, or the root when
    /// the current directory is outside it].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Confine the workspace to this directory: file operations resolve beneath it, and
    /// commands run in a Landlock sandbox that can read and write only beneath it (plus
    /// the system's programs and configuration). Without Landlock the agent refuses to
    /// start unless --unconfined-commands is given.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// With --root: run commands with the agent's own access (they can read and write
    /// outside the root); file operations stay confined. For systems without Landlock.
    #[arg(long, requires = "root")]
    pub unconfined_commands: bool,
    /// With --root: also let commands read and execute beneath this path (repeatable),
    /// such as a toolchain in a home directory.
    #[arg(long, value_name = "PATH", requires = "root")]
    pub allow_read: Vec<PathBuf>,
    /// With --root: also let commands read and write beneath this path (repeatable).
    #[arg(long, value_name = "PATH", requires = "root")]
    pub allow_write: Vec<PathBuf>,
    /// Start every command's shell on demand, instead of keeping one started ahead of
    /// the next command (which saves starting `sh` on a short command's path; unconfined
    /// agents on Linux only).
    #[arg(long)]
    pub no_warm_shell: bool,
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

/// The commands' default working directory: `--dir`, else the current directory; under a
/// root it must lie beneath it (the current directory falls back to the root).
fn workdir(dir: Option<PathBuf>, root: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    let (dir, given) = match dir {
        Some(d) => (d, true),
        None => (std::env::current_dir()?, false),
    };
    let Some(root) = root else { return Ok(dir) };
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.clone());
    match (canonical.starts_with(root), given) {
        (true, _) => Ok(canonical),
        (false, false) => Ok(root.to_path_buf()),
        (false, true) => anyhow::bail!(
            "--dir {} is outside --root {}",
            dir.display(),
            root.display()
        ),
    }
}

/// Refuses to run a root whose commands cannot be confined, and says how they are.
fn check_sandbox(agent: &Agent, token_file: Option<&std::path::Path>) -> anyhow::Result<()> {
    use crate::services::agent::api::CommandSandbox;
    let procs = agent.api().processes();
    let sandbox = procs.sandbox();
    match sandbox {
        CommandSandbox::Unavailable(_) => anyhow::bail!("--root: {sandbox}"),
        CommandSandbox::Unconfined => tracing::warn!("{sandbox}"),
        CommandSandbox::Landlock { partial: true, .. } => tracing::warn!("{sandbox}"),
        CommandSandbox::Landlock { .. } => tracing::info!("{sandbox}"),
        CommandSandbox::NoRoot => {}
    }
    if let Some(f) = token_file
        && let Some(via) = procs.reachable_by_commands(f)
    {
        tracing::warn!(
            "the token file {} is beneath {}, which the workspace's commands may read; keep it elsewhere",
            f.display(),
            via.display()
        );
    }
    Ok(())
}

/// Runs the agent until ctrl-c or SIGTERM.
///
/// # Errors
/// A refused token or an unreachable server at startup.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    super::protect_process();
    // Listening from the start: a stop while the agent is still connecting leaves
    // gracefully too (the coordinator then reports it stopped, not lost).
    let stop = super::shutdown_signal();
    tokio::pin!(stop);
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
    if args.dir.is_some() && args.root.is_none() {
        // --dir reads like a confinement flag; say plainly that it is not one.
        tracing::warn!(
            "--dir only sets where commands start: without --root the workspace's files and commands reach everything this user can; add --root DIR to confine them"
        );
    }
    let root = match &args.root {
        Some(r) => Some(
            r.canonicalize()
                .with_context(|| format!("--root {}", r.display()))?,
        ),
        None => None,
    };
    let dir = workdir(args.dir, root.as_deref())?;
    let id = identity(&client_tls, &base, &token).await?;
    let mut cfg = AgentConfig::new(&url, &token, id.id, dir.clone());
    cfg.api.root = root;
    cfg.api.commands = crate::services::agent::api::CommandPolicy {
        unconfined: args.unconfined_commands,
        read: args.allow_read,
        write: args.allow_write,
    };
    cfg.api.warm_shell = !args.no_warm_shell;
    cfg.tailnet.udp_listen = args.udp;
    cfg.tailnet.advertise = (!args.advertise.is_empty()).then_some(args.advertise);
    cfg.tailnet.relay_only = args.relay_only;
    cfg.tailnet.tls = client_tls;
    cfg.tailnet.allow_insecure_http = args.tls.allow_insecure_http;
    cfg.forward_ports = !args.no_port_forwarding;
    let agent = Agent::start(cfg)?;
    if let Err(e) = check_sandbox(&agent, args.token_file.as_deref()) {
        agent.shutdown().await;
        return Err(e);
    }
    let ready = tokio::select! {
        r = agent.wait_ready(Duration::from_secs(15)) => r,
        () = &mut stop => {
            agent.shutdown().await;
            return Ok(());
        }
    };
    println!(
        "agentwire agent {} for {} ({}) in {}{}",
        id.name,
        id.workspace,
        id.id,
        dir.display(),
        if ready { "" } else { " — still connecting" }
    );
    stop.await;
    agent.shutdown().await;
    Ok(())
}
