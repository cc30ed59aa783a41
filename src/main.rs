use clap::{Parser, Subcommand};

/// agentwire: a shared WireGuard tunnel, its coordinator, DERP relay, workspace agent and
/// MCP front end.
#[derive(Debug, Parser)]
#[command(name = "agentwire", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the MCP endpoint, coordinator and DERP relay (with a demo workspace by default).
    Serve(agentwire::cli::serve::ServeArgs),
    /// Run a workspace agent that joins a server.
    Agent(agentwire::cli::agent::AgentArgs),
    /// Forward ports through a userspace WireGuard tunnel (wg-quick style config).
    Forward(agentwire::cli::forward::ForwardArgs),
    /// Run a DERP relay server (Tailscale DERP protocol version 2).
    Derp(agentwire::cli::derp::DerpArgs),
    /// Administer a running server: users, workspaces, agents, tokens, the audit log.
    Admin(agentwire::cli::admin::AdminArgs),
}

/// Removes the token variables from the environment.
#[allow(unsafe_code)]
fn scrub_secret_env() {
    for name in agentwire::cli::note_secret_env() {
        // SAFETY: called at the top of `main`, before the runtime or any other thread
        // exists, so nothing reads the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Tokens are in hand now: take them out of the environment before any thread, and so
    // any command a workspace runs, could see them.
    scrub_secret_env();
    agentwire::cli::init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve(a) => agentwire::cli::serve::run(a).await,
            Command::Agent(a) => agentwire::cli::agent::run(a).await,
            Command::Forward(a) => agentwire::cli::forward::run(a).await,
            Command::Derp(a) => agentwire::cli::derp::run(a).await,
            Command::Admin(a) => agentwire::cli::admin::run(a).await,
        }
    })
}
