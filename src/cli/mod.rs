//! Command-line interface of the `agentwire` binary: argument structs and the `run`
//! function of each subcommand. `anyhow` is used here and in `main.rs` only.

pub mod agent;
pub mod derp;
pub mod forward;
pub mod serve;

/// Sets up logging from `RUST_LOG` (default: `info`, boringtun's own logs off — it logs
/// routine handshake retries as warnings and idle expiry as errors).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,boringtun=off"));
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

/// Resolves when the process is asked to stop (ctrl-c or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
