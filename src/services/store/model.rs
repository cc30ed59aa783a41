//! What the store hands to administrators: users, workspaces, agents, tokens, audit
//! entries. These are also the admin API's JSON bodies (`docs/protocol.md`), read back by
//! `agentwire admin`. Times are RFC 3339 UTC strings.

use crate::wire::addr::NodeId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Stable id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// May use every workspace and the admin API.
    pub admin: bool,
    /// Has a password (for interactive sign-in).
    pub has_password: bool,
    /// When created.
    pub created_at: String,
    /// The workspaces the user owns (`owner/name`).
    pub workspaces: Vec<String>,
    /// Tokens neither revoked nor expired.
    pub active_tokens: u64,
}

/// An agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent's node id.
    pub id: NodeId,
    /// Its workspace, `owner/name`.
    pub workspace: String,
    /// Its name in the workspace.
    pub name: String,
    /// `owner/name.agent`.
    pub full_name: String,
    /// When created.
    pub created_at: String,
    /// Tokens neither revoked nor expired.
    pub active_tokens: u64,
}

/// A workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceInfo {
    /// Stable id.
    pub id: Uuid,
    /// The owning user.
    pub owner: String,
    /// Name, unique per owner.
    pub name: String,
    /// `owner/name`.
    pub full_name: String,
    /// Other users who may use it.
    pub shared_with: Vec<String>,
    /// Its agents.
    pub agents: Vec<AgentInfo>,
    /// When created.
    pub created_at: String,
}

/// Whether a token still opens anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    /// Usable.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

/// A token (never its secret: only its digest is stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Stable id, for `tokens show/revoke/delete`.
    pub id: Uuid,
    /// The user it stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The agent it stands for (`owner/name.agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The agent's node id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<NodeId>,
    /// A label.
    pub name: String,
    /// Came from a `control.toml` import.
    pub imported: bool,
    /// When created.
    pub created_at: String,
    /// When it stops working, if ever.
    pub expires_at: Option<String>,
    /// When it was last presented (kept to within about 15 s).
    pub last_used_at: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<String>,
    /// Usable, expired or revoked.
    pub status: TokenStatus,
}

/// A token just created: the only time its secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    /// The secret. Shown once; only its digest is kept.
    pub token: String,
    /// The stored token.
    pub info: TokenInfo,
}

/// An agent just created, with its first token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedAgent {
    /// The agent.
    pub agent: AgentInfo,
    /// Its token (shown once).
    pub token: IssuedToken,
    /// The command to run in the workspace (filled in by the admin API, which knows the
    /// server's public URL).
    #[serde(default)]
    pub join_command: String,
}

/// One audited tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Increasing id.
    pub id: i64,
    /// When the call started.
    pub at: String,
    /// The caller.
    pub user: String,
    /// `owner/name`, when the call reached a workspace.
    pub workspace: Option<String>,
    /// The agent's name.
    pub agent: Option<String>,
    /// The agent's node id.
    pub agent_id: Option<String>,
    /// The tool.
    pub tool: String,
    /// Size of the arguments (JSON bytes).
    pub args_bytes: u64,
    /// Size of the result (JSON bytes).
    pub result_bytes: u64,
    /// `ok`, `error`, `refused`, `invalid` or `cancelled`.
    pub outcome: String,
    /// A short error message.
    pub detail: Option<String>,
    /// How long the call took, milliseconds.
    pub duration_ms: f64,
}

/// Which audit entries to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Only this user's calls.
    pub user: Option<String>,
    /// Only calls in this workspace (`owner/name`).
    pub workspace: Option<String>,
    /// Only calls at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// Only entries with a smaller id (paging).
    pub before_id: Option<i64>,
    /// At most this many (default 100, at most 10 000).
    pub limit: Option<u32>,
}

/// What an import changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Users added.
    pub users_created: u64,
    /// Existing users whose admin flag changed.
    pub users_updated: u64,
    /// Workspaces added.
    pub workspaces_created: u64,
    /// Workspaces whose shares changed.
    pub shares_changed: u64,
    /// Agents added.
    pub agents_created: u64,
    /// Token digests added.
    pub tokens_added: u64,
    /// Tokens from an earlier import that the file no longer lists, revoked.
    pub tokens_revoked: u64,
}
