//! `agentwire admin` arguments.

use std::path::PathBuf;

/// Arguments of `agentwire admin`.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The server's base URL [default: http://127.0.0.1:7080].
    #[arg(long, env = "AGENTWIRE_URL", global = true)]
    pub url: Option<String>,
    /// Read the admin token from this file [default: admin-token in the data directory].
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// An admin user's token. Prefer the environment variable or --token-file: a command
    /// line is visible to every local user.
    #[arg(
        long,
        env = "AGENTWIRE_ADMIN_TOKEN",
        hide_env_values = true,
        global = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// The server's data directory, where `serve` keeps admin-token [default: as serve].
    #[arg(long, env = "AGENTWIRE_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Also trust the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE", env = "AGENTWIRE_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Send the token over plain http:// to a host that is not loopback.
    #[arg(long, global = true)]
    pub allow_insecure_http: bool,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// `agentwire admin` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Users: people and automations holding tokens.
    #[command(subcommand)]
    Users(UsersCmd),
    /// Workspaces: owned by a user, shared with others.
    #[command(subcommand)]
    Workspaces(WorkspacesCmd),
    /// Agents: the processes that serve a workspace.
    #[command(subcommand)]
    Agents(AgentsCmd),
    /// Tokens of users and agents (shown once when created, stored as digests).
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// The audit log of tool calls, newest first.
    Audit {
        /// Only this user's calls.
        #[arg(long)]
        user: Option<String>,
        /// Only calls in this workspace (OWNER/NAME).
        #[arg(long)]
        workspace: Option<String>,
        /// Only calls since this long ago (90m, 24h, 7d) or this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many entries [default: 100].
        #[arg(long)]
        limit: Option<u32>,
        /// Only entries older than this id (to page back).
        #[arg(long)]
        before: Option<i64>,
    },
    /// OAuth grants (connected apps of hosted MCP connectors) and clients.
    #[command(subcommand)]
    Oauth(OauthCmd),
    /// Load a control.toml (the --config format) into the store.
    Import {
        /// The file.
        file: PathBuf,
    },
}

/// `agentwire admin users …`
#[derive(Debug, clap::Subcommand)]
pub enum UsersCmd {
    /// List users.
    List,
    /// Show one user.
    Show {
        /// The user.
        name: String,
    },
    /// Create a user (then give them a token with `tokens create --user NAME`).
    Create {
        /// Letters, digits, '-' and '_', at most 64.
        name: String,
        /// May use every workspace and this admin API.
        #[arg(long)]
        admin: bool,
        /// Also set a password (prompted).
        #[arg(long)]
        password: bool,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Delete a user with their tokens and shares.
    Delete {
        /// The user.
        name: String,
        /// Also delete the workspaces they own, with their agents.
        #[arg(long)]
        cascade: bool,
    },
    /// Revoke every token of a user.
    Revoke {
        /// The user.
        name: String,
    },
    /// Set (prompted) or clear a user's password, for interactive sign-in.
    SetPassword {
        /// The user.
        name: String,
        /// Remove the password instead.
        #[arg(long)]
        clear: bool,
        /// Read the password from standard input.
        #[arg(long, conflicts_with = "clear")]
        password_stdin: bool,
    },
    /// Make a user an admin, or not.
    SetAdmin {
        /// The user.
        name: String,
        /// true or false.
        #[arg(action = clap::ArgAction::Set)]
        admin: bool,
    },
}

/// `agentwire admin workspaces …`
#[derive(Debug, clap::Subcommand)]
pub enum WorkspacesCmd {
    /// List workspaces.
    List {
        /// Only this user's.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Show one workspace.
    Show {
        /// OWNER/NAME.
        workspace: String,
    },
    /// Create a workspace (then add its agent with `agents create OWNER/NAME`).
    Create {
        /// OWNER/NAME.
        workspace: String,
        /// Share it with this user (repeatable).
        #[arg(long, value_name = "USER")]
        share: Vec<String>,
    },
    /// Delete a workspace with its agents and their tokens.
    Delete {
        /// OWNER/NAME.
        workspace: String,
    },
    /// Let another user use a workspace.
    Share {
        /// OWNER/NAME.
        workspace: String,
        /// The user.
        user: String,
    },
    /// Stop sharing a workspace with a user.
    Unshare {
        /// OWNER/NAME.
        workspace: String,
        /// The user.
        user: String,
    },
}

/// `agentwire admin agents …`
#[derive(Debug, clap::Subcommand)]
pub enum AgentsCmd {
    /// List agents.
    List {
        /// Only this workspace's (OWNER/NAME).
        #[arg(long)]
        workspace: Option<String>,
    },
    /// Show one agent (OWNER/WORKSPACE[.AGENT] or its id).
    Show {
        /// The agent.
        agent: String,
    },
    /// Add an agent to a workspace and print the command that runs it.
    Create {
        /// OWNER/WORKSPACE[.AGENT] (the agent's name defaults to main).
        agent: String,
        /// Its node id [default: random].
        #[arg(long)]
        id: Option<String>,
        /// Its token stops working after this long (30d, 12h, …) [default: never].
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// Delete an agent and its tokens.
    Delete {
        /// OWNER/WORKSPACE[.AGENT] or its id.
        agent: String,
    },
    /// Revoke every token of an agent.
    Revoke {
        /// OWNER/WORKSPACE[.AGENT] or its id.
        agent: String,
    },
}

/// `agentwire admin tokens …`
#[derive(Debug, clap::Subcommand)]
pub enum TokensCmd {
    /// List tokens (active ones unless --all).
    List {
        /// Only this user's.
        #[arg(long, conflicts_with = "agent")]
        user: Option<String>,
        /// Only this agent's (OWNER/WORKSPACE[.AGENT] or its id).
        #[arg(long)]
        agent: Option<String>,
        /// Also revoked and expired ones.
        #[arg(long)]
        all: bool,
    },
    /// Show one token.
    Show {
        /// Its id.
        id: String,
    },
    /// Issue a token for a user or an agent; it is shown once.
    Create {
        /// For this user.
        #[arg(long, required_unless_present = "agent", conflicts_with = "agent")]
        user: Option<String>,
        /// For this agent (OWNER/WORKSPACE[.AGENT] or its id).
        #[arg(long)]
        agent: Option<String>,
        /// A label, to tell tokens apart.
        #[arg(long)]
        name: Option<String>,
        /// It stops working after this long (30d, 12h, …) [default: never].
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// Revoke a token: its next use fails, its live streams close.
    Revoke {
        /// Its id.
        id: String,
    },
    /// Delete a token for good.
    Delete {
        /// Its id.
        id: String,
    },
}

/// `agentwire admin oauth`.
#[derive(Debug, clap::Subcommand)]
pub enum OauthCmd {
    /// Grants, newest first: live ones, or with --all also revoked and expired ones.
    Grants {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        /// Only this client's (its client_id).
        #[arg(long)]
        client: Option<String>,
        /// Include revoked grants.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a grant: its access and refresh tokens stop working at once.
    Revoke {
        /// The grant's id (from `grants`).
        id: String,
    },
    /// Revoke every live grant of a user (`--user`) or a client (`--client`).
    RevokeAll {
        /// This user's grants.
        #[arg(long, required_unless_present = "client")]
        user: Option<String>,
        /// This client's grants.
        #[arg(long)]
        client: Option<String>,
    },
    /// Clients: registered ones and cached metadata documents.
    Clients,
    /// Delete a client and revoke its grants.
    DeleteClient {
        /// Its client_id.
        id: String,
    },
}
