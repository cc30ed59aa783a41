use clap::{Parser, Subcommand};

/// agentwire: a shared WireGuard tunnel, its coordinator, DERP relay, workspace agent and
/// MCP front end.
#[derive(Debug, Parser)]
#[command(name = "agentwire", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process and matched straight away: its size is of no consequence.
#[allow(clippy::large_enum_variant)]
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
    /// Store a server URL and your user token for the client commands.
    Login(agentwire::cli::login::LoginArgs),
    /// Forget the stored server URL and token.
    Logout,
    /// Show who the stored token belongs to.
    Whoami(agentwire::cli::login::WhoamiArgs),
    /// Ping a workspace's agent through the tunnel: each probe's path and round trip.
    Ping(agentwire::cli::diag::PingArgs),
    /// Check this network: UDP, public address, NAT behaviour, latency per relay region.
    Netcheck(agentwire::cli::diag::NetcheckArgs),
    /// Show the tunnel of the running `agentwire mcp` (or the server's, --server).
    Status(agentwire::cli::diag::StatusArgs),
    /// Serve the MCP tools on this machine (stdio or --http), reaching workspaces through
    /// one long-lived tunnel; `mcp configure CLIENT` sets up an MCP client.
    Mcp(agentwire::cli::mcp::McpArgs),
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
    match cli.command {
        Command::Serve(_) | Command::Agent(_) | Command::Forward(_) | Command::Derp(_) => {
            agentwire::cli::init_logging();
        }
        Command::Mcp(ref a) => agentwire::cli::mcp::init_logging(a)?,
        _ => agentwire::cli::init_logging_at("warn"),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve(a) => agentwire::cli::serve::run(a).await,
            Command::Agent(a) => agentwire::cli::agent::run(a).await,
            Command::Forward(a) => agentwire::cli::forward::run(a).await,
            Command::Derp(a) => agentwire::cli::derp::run(a).await,
            Command::Login(a) => agentwire::cli::login::login(a).await,
            Command::Logout => agentwire::cli::login::logout(),
            Command::Whoami(a) => agentwire::cli::login::whoami(a).await,
            Command::Ping(a) => agentwire::cli::diag::ping(a).await,
            Command::Netcheck(a) => agentwire::cli::diag::netcheck(a).await,
            Command::Status(a) => agentwire::cli::diag::status(a).await,
            Command::Mcp(a) => agentwire::cli::mcp::run(a).await,
            Command::Admin(a) => agentwire::cli::admin::run(a).await,
        }
    })
}
