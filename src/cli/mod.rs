//! Command-line interface of the `agentwire` binary: argument structs and the `run`
//! function of each subcommand. `anyhow` is used here and in `main.rs` only.

pub mod admin;
pub mod agent;
pub mod derp;
pub mod diag;
pub mod forward;
pub mod http;
pub mod login;
pub mod mcp;
pub mod serve;

/// Sets up logging from `RUST_LOG` (default: `info`, boringtun's own logs off — it logs
/// routine handshake retries as warnings and idle expiry as errors).
pub fn init_logging() {
    init_logging_at("info");
}

/// [`init_logging`] with another default level: client commands (`ping`, `mcp`, …)
/// print their own results and log only what goes wrong unless `RUST_LOG` asks for more.
pub fn init_logging_at(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},boringtun=off")));
    use std::io::IsTerminal as _;
    // Colour codes only for a person at a terminal: in files, journals and CI logs they
    // are noise that breaks grep.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Reads a token from a file: the first line, trimmed. Files written by hand often end
/// in a newline, and a token never contains whitespace.
///
/// # Errors
/// The file cannot be read, or holds no token.
pub fn read_token_file(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        anyhow::bail!("token file {} is empty", path.display());
    }
    Ok(token)
}

/// The environment variables that carry secrets. The binary removes them at
/// start, so no process the agent or the server starts inherits them.
pub const SECRET_ENV: [&str; 6] = [
    "AGENTWIRE_AGENT_TOKEN",
    "AGENTWIRE_TOKEN",
    "AGENTWIRE_METRICS_TOKEN",
    "AGENTWIRE_ADMIN_TOKEN",
    "AGENTWIRE_DATABASE_URL",
    "AGENTWIRE_DERP_MESH_KEY",
];

/// Which of [`SECRET_ENV`] were set when the process started, so a value clap read can be
/// told apart from a command-line one after the variables are gone.
static FROM_ENV: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();

/// Records which of [`SECRET_ENV`] are set. The binary calls this, then removes them from
/// its environment before any thread starts (removing is `unsafe` once threads exist, so
/// it is done in `main`, not here).
pub fn note_secret_env() -> Vec<&'static str> {
    let seen: Vec<&'static str> = SECRET_ENV
        .into_iter()
        .filter(|n| std::env::var_os(n).is_some())
        .collect();
    let _ = FROM_ENV.set(seen.clone());
    seen
}

/// Whether `name` was set in the environment at start (see [`note_secret_env`]).
pub fn token_came_from_env(name: &str) -> bool {
    FROM_ENV.get().is_some_and(|v| v.contains(&name)) || std::env::var_os(name).is_some()
}

/// Makes this process's memory and `/proc/PID/environ` unreadable to other processes of
/// the same user, such as the commands a workspace runs: removing a variable from the
/// environment does not erase the copy the kernel shows there. Children are unaffected
/// (`execve` resets the flag). Linux only; elsewhere a no-op.
pub fn protect_process() {
    #[cfg(target_os = "linux")]
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        tracing::warn!(error = %e, "could not mark the process non-dumpable; its environment stays readable by same-user processes");
    }
}

/// Resolves when the process is asked to stop (ctrl-c or SIGTERM). The handlers are
/// installed when this is called, not when the future is first awaited: a signal that
/// arrives in between (a process stopped while it starts) is kept for it instead of
/// taking the default action, which ends the process without a goodbye.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        async fn next(s: std::io::Result<Signal>) {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        }
        let term = next(signal(SignalKind::terminate()));
        let int = next(signal(SignalKind::interrupt()));
        async move {
            tokio::select! {
                () = term => {}
                () = int => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Loads `--tls-cert`/`--tls-key` when given.
///
/// # Errors
/// Unreadable or invalid certificate or key.
pub fn server_tls(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> anyhow::Result<Option<crate::runtime::tls::ServerTls>> {
    use anyhow::Context as _;
    match (cert, key) {
        (Some(c), Some(k)) => crate::runtime::tls::ServerTls::load(c, k)
            .map(Some)
            .context("loading the TLS certificate"),
        (None, None) => Ok(None),
        _ => anyhow::bail!("--tls-cert and --tls-key go together"),
    }
}

/// How a subcommand that dials the server trusts it.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientTlsArgs {
    /// Also trust the CA certificates in this PEM file (beside the system store, which
    /// honours SSL_CERT_FILE and SSL_CERT_DIR).
    #[arg(long, value_name = "FILE", env = "AGENTWIRE_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Send tokens over plain http:// to a host that is not loopback (a network you
    /// trust end to end). Without it such URLs are refused.
    #[arg(long)]
    pub allow_insecure_http: bool,
}

impl ClientTlsArgs {
    /// The trust configuration, after checking that `url` may carry a token.
    ///
    /// # Errors
    /// An unreadable CA file, or a plain-HTTP URL to another host without the flag.
    pub fn client_tls(&self, url: &str) -> anyhow::Result<crate::runtime::tls::ClientTls> {
        crate::runtime::tls::check_secret_url(url, self.allow_insecure_http)?;
        Ok(crate::runtime::tls::ClientTls::from_flag(
            self.ca_file.as_deref(),
        )?)
    }
}
