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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
        }
    })
}
