//! `agentwire serve`: the MCP endpoint, coordinator, DERP relay and (by default) a demo
//! workspace agent, in one process.

use crate::services::serve::{ServeConfig, Server};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `agentwire serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7080")]
    pub listen: SocketAddr,
    /// State directory [default: $XDG_DATA_HOME/agentwire or ~/.local/share/agentwire].
    #[arg(long, env = "AGENTWIRE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The demo workspace's directory (embedded default) [default: beside the data
    /// directory, DATA_DIR-demo]. It may not contain or sit inside the data directory.
    #[arg(long, value_name = "DIR", env = "AGENTWIRE_DEMO_DIR")]
    pub demo_dir: Option<PathBuf>,
    /// Run the demo workspace's commands without the Landlock sandbox, with this
    /// process's own access (they could read the server's secrets). Without it, on a
    /// system lacking Landlock, the demo workspace refuses to run commands.
    #[arg(long)]
    pub unconfined_commands: bool,
    /// A control.toml (users, workspaces, agents, token digests) imported into the store
    /// at every start. Without it and without --database-url, the embedded default has a
    /// demo user and workspace.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The store: postgres://USER:PASSWORD@HOST:PORT/DB, or sqlite:PATH [default: the
    /// SQLite file agentwire.db in the data directory]. Prefer the environment variable:
    /// the URL may carry a password.
    #[arg(
        long,
        env = "AGENTWIRE_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database_url: Option<String>,
    /// No demo user and workspace, even in the embedded default.
    #[arg(long)]
    pub no_demo: bool,
    /// Delete audit log entries older than this (30d, 12h, …), or `forever` to keep them.
    #[arg(long, value_name = "AGE", default_value = "90d", value_parser = parse_retention)]
    pub audit_retention: Retention,
    /// The URL clients use to reach this server, http(s)://HOST[:PORT] (default: the
    /// listen address). Every URL handed out uses its scheme, host and port.
    #[arg(long)]
    pub public_url: Option<String>,
    /// Where nodes reach the relay, when not at the public URL (https://HOST[:PORT]).
    #[arg(long, value_name = "URL")]
    pub derp_url: Option<String>,
    /// With a PostgreSQL --database-url, this process is one of several replicas: where
    /// the other replicas reach this one directly, http(s)://HOST:PORT (default: the
    /// listen address; required for several replicas listening on every interface).
    #[arg(long, value_name = "URL")]
    pub replica_url: Option<String>,
    /// Terminate TLS: the certificate chain (PEM, leaf first). Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Terminate TLS: the certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The demo user's token (embedded default only). Prefer the environment variable or
    /// --token-file: a command line is visible to every local user.
    #[arg(long, env = "AGENTWIRE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the demo user's token from this file (embedded default only).
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// Print the demo user's token in the start-up banner (otherwise only where it is
    /// stored is shown).
    #[arg(long)]
    pub show_token: bool,
    /// How fast the server reads one agent's replies, all calls to it together, in MiB/s
    /// (bursts of a whole 16 MiB reply pass at once). Beyond it the server stops reading
    /// and TCP's flow control holds the agent back, so an agent answering with endless
    /// bodies cannot spend the server's cores on its replies. An agent whose reply broke
    /// its size limit is read at 1/64 of this rate for 10 s, its new calls admitted
    /// slowly. 0: no limit (and no probation).
    #[arg(long, value_name = "MIB_PER_SEC", default_value_t = 64)]
    pub agent_reply_rate: u64,
    /// Tool calls one user may have running at once, across all sessions and clients.
    /// As many more wait for a slot (see --call-queue-wait-ms); the rest are refused.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_calls_per_user: u32,
    /// How long a tool call over its user's limit waits for a slot before it is refused
    /// (0: refused at once).
    #[arg(long, value_name = "MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub call_queue_wait_ms: u64,
    /// Serve /metrics (and /healthz) on this separate address, without a token. Keep it on
    /// loopback or a private network.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// A token that opens /metrics on the main listener (`Authorization: Bearer ...`).
    /// Prefer the environment variable or --metrics-token-file.
    #[arg(long, env = "AGENTWIRE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Read the metrics token from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "metrics_token")]
    pub metrics_token_file: Option<PathBuf>,
    /// DEVELOPMENT ONLY: accept MCP requests without a token, acting as this user.
    /// Refused unless listening on loopback.
    #[arg(long, value_name = "USER")]
    pub dev_no_auth: Option<String>,
    /// Never use direct UDP paths to agents (DERP relay only).
    #[arg(long)]
    pub relay_only: bool,
    /// A UDP endpoint to advertise for direct paths (repeatable), such as a NAT's public
    /// address. Default: derived from the socket.
    #[arg(long, value_name = "ADDR")]
    pub advertise: Vec<SocketAddr>,
    /// UDP address of the STUN server nodes ask for their public address, or `off`.
    /// Default: the --listen address's IP with port 3478 (a free port when --listen's is
    /// 0); if that is taken, serve warns and runs without STUN.
    #[arg(long, value_name = "ADDR|off", value_parser = parse_stun_listen)]
    pub stun_listen: Option<StunListen>,
    /// The OAuth 2.1 authorization server for hosted MCP clients (Claude.ai, ChatGPT):
    /// `on` (default) or `off`. It needs an https public URL (or loopback).
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = on_off)]
    pub oauth: bool,
    /// Whether OAuth clients may register themselves (RFC 7591 dynamic registration).
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = on_off)]
    pub oauth_registration: bool,
    /// Whether OAuth clients may identify with an https URL to a client ID metadata
    /// document.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = on_off)]
    pub oauth_metadata_documents: bool,
}

/// Parses `on`/`off` (also `true`/`false`, `yes`/`no`).
///
/// # Errors
/// Anything else.
pub fn on_off(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        other => Err(format!("{other:?}: expected on or off")),
    }
}

/// The value of `--audit-retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

/// Parses `--audit-retention`: a duration, or `forever`.
///
/// # Errors
/// Neither.
pub fn parse_retention(s: &str) -> Result<Retention, String> {
    match s.trim() {
        "forever" | "off" | "none" => Ok(Retention(None)),
        d => crate::services::time::parse_duration(d).and_then(|d| {
            if d.is_zero() {
                Err("a retention of 0 would delete every entry; use forever to keep all".into())
            } else {
                Ok(Retention(Some(d)))
            }
        }),
    }
}

/// The value of `--stun-listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunListen {
    /// No STUN server.
    Off,
    /// Listen here.
    At(SocketAddr),
}

/// Parses `--stun-listen`: a socket address, or `off`/`none`.
///
/// # Errors
/// Neither.
pub fn parse_stun_listen(s: &str) -> Result<StunListen, String> {
    match s.trim() {
        "off" | "none" => Ok(StunListen::Off),
        a => a
            .parse()
            .map(StunListen::At)
            .map_err(|_| format!("{a:?} is not an address (IP:PORT, [IPv6]:PORT) or `off`")),
    }
}

/// Where to run STUN given `--stun-listen` and `--listen`, and whether failing to bind
/// there may be ignored (only the default may: another process, another relay, may hold
/// port 3478, and STUN is an optimisation).
pub fn stun_address(flag: Option<StunListen>, listen: SocketAddr) -> (Option<SocketAddr>, bool) {
    match flag {
        Some(StunListen::Off) => (None, false),
        Some(StunListen::At(a)) => (Some(a), false),
        None => {
            let port = if listen.port() == 0 {
                0
            } else {
                crate::services::stun::DEFAULT_PORT
            };
            (Some(SocketAddr::new(listen.ip(), port)), true)
        }
    }
}

/// The default state directory.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("agentwire");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".local/share/agentwire");
    }
    PathBuf::from("agentwire-data")
}

/// Runs until ctrl-c or SIGTERM.
///
/// # Errors
/// Startup failures (bind, data directory, configuration).
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    super::protect_process();
    if args.dev_no_auth.is_some() {
        tracing::warn!(
            "--dev-no-auth: MCP requests WITHOUT A TOKEN are accepted; never expose this server"
        );
    }
    if args.token.is_some() && !super::token_came_from_env("AGENTWIRE_TOKEN") {
        tracing::warn!(
            "--token on the command line is visible to every local user (ps, /proc); use AGENTWIRE_TOKEN or --token-file"
        );
    }
    if args
        .database_url
        .as_deref()
        .is_some_and(|u| u.contains('@') && u.contains(':'))
        && !super::token_came_from_env("AGENTWIRE_DATABASE_URL")
    {
        tracing::warn!(
            "--database-url on the command line may show a password to every local user; use AGENTWIRE_DATABASE_URL"
        );
    }
    if args.metrics_token.is_some() && !super::token_came_from_env("AGENTWIRE_METRICS_TOKEN") {
        tracing::warn!(
            "--metrics-token on the command line is visible to every local user (ps, /proc); use AGENTWIRE_METRICS_TOKEN or --metrics-token-file"
        );
    }
    let token = match &args.token_file {
        Some(f) => Some(super::read_token_file(f)?),
        None => args.token,
    };
    let metrics_token = match &args.metrics_token_file {
        Some(f) => Some(super::read_token_file(f)?),
        None => args.metrics_token,
    };
    let show_token = args.show_token;
    let tls = super::server_tls(args.tls_cert.as_deref(), args.tls_key.as_deref())?;
    let (stun_listen, stun_optional) = stun_address(args.stun_listen, args.listen);
    let cfg = ServeConfig {
        listen: args.listen,
        data_dir: args.data_dir.unwrap_or_else(default_data_dir),
        demo_dir: args.demo_dir,
        unconfined_commands: args.unconfined_commands,
        config_file: args.config,
        database_url: args.database_url,
        no_demo: args.no_demo,
        store: crate::services::store::StoreOptions {
            audit_retention: args.audit_retention.0,
            ..Default::default()
        },
        control: None,
        public_url: args.public_url,
        derp_url: args.derp_url,
        replica_url: args.replica_url,
        tls,
        token,
        dev_no_auth_user: args.dev_no_auth,
        relay_only: args.relay_only,
        advertise: (!args.advertise.is_empty()).then_some(args.advertise),
        metrics_listen: args.metrics_listen,
        metrics_token,
        agent_reply_rate: match args.agent_reply_rate {
            0 => crate::services::agent::budget::ReplyRate::UNLIMITED,
            n => crate::services::agent::budget::ReplyRate {
                bytes_per_sec: n.saturating_mul(1 << 20),
                ..Default::default()
            },
        },
        mcp_limits: crate::services::mcp::config::McpLimits {
            max_calls_per_user: args.max_calls_per_user as usize,
            call_queue_wait: std::time::Duration::from_millis(args.call_queue_wait_ms),
            ..Default::default()
        },
        stun_listen,
        stun_optional,
        oauth: crate::services::oauth::OAuthOptions {
            enabled: args.oauth,
            registration: args.oauth_registration,
            metadata_documents: args.oauth_metadata_documents,
            ..Default::default()
        },
    };
    let data_dir = cfg.data_dir.clone();
    let server = Server::start(cfg).await?;
    let secrets = [&args.tls_key, &args.token_file, &args.metrics_token_file];
    for secret in secrets.into_iter().flatten() {
        if let Some(via) = server.demo_commands_reach(secret) {
            tracing::warn!(
                "{} is beneath {}, which the demo workspace's commands may read; keep secrets elsewhere or run with --config",
                secret.display(),
                via.display()
            );
        }
    }
    let ready = server.wait_ready(Duration::from_secs(10)).await;
    print_banner(&server, &data_dir, ready, show_token);
    super::shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// Prints to stdout, ignoring errors: a closed stdout must not take the server down.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

fn print_banner(server: &Server, data_dir: &std::path::Path, ready: bool, show_token: bool) {
    let url = server.mcp_url();
    say!(
        "agentwire {} serving on {}",
        env!("CARGO_PKG_VERSION"),
        server.addr
    );
    say!("  MCP endpoint:  {url}");
    let relay = server
        .hub()
        .derp_map
        .connect_url(crate::services::hub::EMBEDDED_REGION)
        .unwrap_or_default();
    say!(
        "  coordinator:   {}/api/v0/coordinate   DERP relay: {relay}",
        server.public_url,
    );
    match server.stun_addr() {
        Some(a) => say!("  STUN:          udp {a}"),
        None => say!("  STUN:          off"),
    }
    say!("  data dir:      {}", data_dir.display());
    if let Some(store) = server.store() {
        say!("  store:         {}", store.describe());
    }
    if let Some(a) = &server.admin
        && let Some(name) = &a.created
    {
        say!(
            "  admin:         user {name} created; its token is in {} (owner-only), which \
             `agentwire admin` reads",
            a.token_file.display()
        );
    }
    if let Some(m) = server.metrics_addr() {
        say!("  metrics:       http://{m}/metrics");
    }
    if !ready {
        say!("  (still connecting the shared tailnet; tools will wait for it)");
    }
    let Some(e) = &server.embedded else {
        say!(
            "  control plane: in the store; add agents with `agentwire admin agents create OWNER/WORKSPACE`, \
             which prints the command that joins them to {}",
            server.public_url
        );
        return;
    };
    say!(
        "  workspace:     {}/demo (agent in-process, files in {})",
        e.user,
        e.workspace_dir.display()
    );
    say!("  commands:      {}", e.commands);
    let token = match (&e.new_token, show_token) {
        (Some(t), true) => {
            say!("  token:         {t}");
            say!("                 (stored in {})", e.token_file.display());
            t.clone()
        }
        (Some(_), false) => {
            say!(
                "  token:         new, stored in {} (owner-only; --show-token prints it)",
                e.token_file.display()
            );
            "<token>".to_string()
        }
        (None, _) => {
            say!(
                "  token:         in {} (or set AGENTWIRE_TOKEN)",
                e.token_file.display()
            );
            "<token>".to_string()
        }
    };
    let client = serde_json::json!({
        "mcpServers": {
            "agentwire": {
                "type": "http",
                "url": url,
                "headers": { "Authorization": format!("Bearer {token}") }
            }
        }
    });
    say!("\nClient configuration (Claude Code, Cursor and other MCP clients):\n");
    say!(
        "{}",
        serde_json::to_string_pretty(&client).unwrap_or_default()
    );
    say!("");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn stun_follows_the_listen_address_unless_told() {
        let c = Cli::try_parse_from(["x"]).expect("defaults");
        assert_eq!(c.serve.stun_listen, None);
        assert_eq!(
            stun_address(c.serve.stun_listen, c.serve.listen),
            (Some(addr("127.0.0.1:3478")), true)
        );
        assert_eq!(
            stun_address(None, addr("[::]:443")),
            (Some(addr("[::]:3478")), true)
        );
        assert_eq!(
            stun_address(None, addr("127.0.0.1:0")),
            (Some(addr("127.0.0.1:0")), true)
        );
        let c = Cli::try_parse_from(["x", "--stun-listen", "0.0.0.0:3479"]).expect("addr");
        assert_eq!(
            stun_address(c.serve.stun_listen, c.serve.listen),
            (Some(addr("0.0.0.0:3479")), false)
        );
        let c = Cli::try_parse_from(["x", "--stun-listen", "off"]).expect("off");
        assert_eq!(
            stun_address(c.serve.stun_listen, c.serve.listen),
            (None, false)
        );
        assert!(Cli::try_parse_from(["x", "--stun-listen", "3478"]).is_err());
    }

    #[test]
    fn tokens_come_from_a_flag_or_a_file_not_both() {
        let c = Cli::try_parse_from(["x", "--metrics-token-file", "m", "--token-file", "t"])
            .expect("files");
        assert_eq!(c.serve.metrics_token_file, Some(PathBuf::from("m")));
        assert_eq!(c.serve.token_file, Some(PathBuf::from("t")));
        for (flag, file) in [
            ("--metrics-token", "--metrics-token-file"),
            ("--token", "--token-file"),
        ] {
            assert!(Cli::try_parse_from(["x", flag, "v", file, "f"]).is_err());
        }
    }

    #[test]
    fn the_per_user_call_limit_and_its_queue_are_flags() {
        let c = Cli::try_parse_from(["x"]).expect("defaults");
        let d = crate::services::mcp::config::McpLimits::default();
        assert_eq!(c.serve.max_calls_per_user as usize, d.max_calls_per_user);
        assert_eq!(
            std::time::Duration::from_millis(c.serve.call_queue_wait_ms),
            d.call_queue_wait
        );
        let c = Cli::try_parse_from([
            "x",
            "--max-calls-per-user",
            "8",
            "--call-queue-wait-ms",
            "0",
        ])
        .expect("set");
        assert_eq!(
            (c.serve.max_calls_per_user, c.serve.call_queue_wait_ms),
            (8, 0)
        );
        assert!(Cli::try_parse_from(["x", "--max-calls-per-user", "0"]).is_err());
        assert!(Cli::try_parse_from(["x", "--call-queue-wait-ms", "-1"]).is_err());
    }
}
