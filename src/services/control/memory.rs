//! The built-in control plane: an immutable set of users, workspaces and agents held in
//! memory, loaded from TOML or built for the embedded default.
//!
//! Tokens are stored only as SHA-256 digests and compared in constant time. A plaintext
//! `token` in a config file is accepted for convenience, with a logged warning.

use super::{
    BoxFuture, ControlError, ControlPlane, Principal, ResolveError, ResolvedAgent, User, Workspace,
    WorkspaceSpec, select_agent, valid_name,
};
use crate::services::control::Agent;
use crate::wire::addr::NodeId;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use thiserror::Error;
use uuid::Uuid;

/// A secret string (a plaintext token). `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The control-plane config file (TOML). See `docs/config.md` for an example.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// SHA-256 (hex) of the token the serving process's own tailnet presents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_token_sha256: Option<String>,
    /// The same token in plaintext (discouraged; a warning is logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_token: Option<Secret>,
    /// Users.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Workspaces, each with its agents.
    #[serde(default)]
    pub workspaces: Vec<WorkspaceConfig>,
}

/// One `[[users]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Unique name (letters, digits, `-`, `_`).
    pub name: String,
    /// SHA-256 (hex) of the user's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    /// The token in plaintext (discouraged; a warning is logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Admins may use every workspace.
    #[serde(default)]
    pub admin: bool,
}

/// One `[[workspaces]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceConfig {
    /// Stable id; derived from `owner/name` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// The owning user.
    pub owner: String,
    /// Name, unique per owner.
    pub name: String,
    /// Other users who may use it.
    #[serde(default)]
    pub shared_with: Vec<String>,
    /// Its agents.
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
}

/// One `[[workspaces.agents]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Name, unique within the workspace.
    #[serde(default = "default_agent_name")]
    pub name: String,
    /// The agent's node id (a UUID); its tailnet address derives from it.
    pub id: NodeId,
    /// SHA-256 (hex) of the agent's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    /// The token in plaintext (discouraged; a warning is logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
}

fn default_agent_name() -> String {
    "main".into()
}

/// Why a control-plane config was rejected.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not valid TOML for this schema.
    #[error("parsing control-plane config: {0}")]
    Parse(#[from] toml::de::Error),
    /// Valid TOML, inconsistent content.
    #[error("invalid control-plane config: {0}")]
    Invalid(String),
}

/// A fresh token: `aw_` followed by 32 random bytes in URL-safe base64.
pub fn generate_token() -> String {
    let mut b = [0u8; 32];
    rand::fill(&mut b);
    format!(
        "aw_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

/// The SHA-256 of `token` in lowercase hex, as `token_sha256` stores it.
pub fn hash_token(token: &str) -> String {
    hex::encode(token_digest(token))
}

/// The SHA-256 of `token`: what is stored in place of the token.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

use token_digest as digest;

/// Compares two digests without an early exit, so timing does not reveal a matching prefix.
pub fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[derive(Clone)]
enum Holder {
    User(usize),
    Agent { workspace: usize, agent: NodeId },
    Service,
}

/// The built-in [`ControlPlane`]: immutable after construction.
pub struct InMemoryControlPlane {
    users: Vec<User>,
    workspaces: Vec<Workspace>,
    /// Every token digest and whose it is; digests are unique.
    tokens: Vec<([u8; 32], Holder)>,
}

impl fmt::Debug for InMemoryControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryControlPlane")
            .field("users", &self.users.len())
            .field("workspaces", &self.workspaces.len())
            .finish_non_exhaustive()
    }
}

impl InMemoryControlPlane {
    /// Reads and validates a TOML config file (for `--config FILE`).
    ///
    /// # Errors
    /// [`ConfigError`] if the file cannot be read, parsed or is inconsistent.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates TOML text.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`].
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_config(toml::from_str(text)?)
    }

    /// Validates a config: names well formed and unique, owners and shared users exist,
    /// agent ids unique, every user and agent has exactly one token form, no two tokens equal.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first problem.
    pub fn from_config(cfg: ControlConfig) -> Result<Self, ConfigError> {
        let invalid = |m: String| ConfigError::Invalid(m);
        let mut tokens = Vec::new();
        let mut users = Vec::new();
        let mut names = HashSet::new();
        for u in &cfg.users {
            if !valid_name(&u.name) {
                return Err(invalid(format!(
                    "user name {:?} is not a valid name",
                    u.name
                )));
            }
            if !names.insert(u.name.clone()) {
                return Err(invalid(format!("user {:?} is listed twice", u.name)));
            }
            let what = format!("user {}", u.name);
            let d = config_token_digest(&what, u.token_sha256.as_deref(), u.token.as_ref())?
                .ok_or_else(|| invalid(format!("{what} needs token_sha256 (or token)")))?;
            tokens.push((d, Holder::User(users.len())));
            users.push(User {
                name: u.name.clone(),
                admin: u.admin,
            });
        }
        if let Some(d) = config_token_digest(
            "service",
            cfg.service_token_sha256.as_deref(),
            cfg.service_token.as_ref(),
        )? {
            tokens.push((d, Holder::Service));
        }
        let mut workspaces = Vec::new();
        let mut ws_names = HashSet::new();
        let mut agent_ids = HashSet::new();
        for w in &cfg.workspaces {
            let full = format!("{}/{}", w.owner, w.name);
            if !valid_name(&w.name) {
                return Err(invalid(format!(
                    "workspace name {:?} is not a valid name",
                    w.name
                )));
            }
            if !names.contains(&w.owner) {
                return Err(invalid(format!(
                    "workspace {full}: owner {:?} is not a user",
                    w.owner
                )));
            }
            if let Some(u) = w.shared_with.iter().find(|u| !names.contains(*u)) {
                return Err(invalid(format!(
                    "workspace {full}: shared_with {u:?} is not a user"
                )));
            }
            if !ws_names.insert(full.clone()) {
                return Err(invalid(format!("workspace {full} is listed twice")));
            }
            let mut agent_names = BTreeSet::new();
            let mut agents = Vec::new();
            for a in &w.agents {
                if !valid_name(&a.name) || !agent_names.insert(a.name.clone()) {
                    return Err(invalid(format!(
                        "workspace {full}: agent name {:?} is invalid or repeated",
                        a.name
                    )));
                }
                if !agent_ids.insert(a.id) {
                    return Err(invalid(format!("agent id {} is used twice", a.id)));
                }
                let what = format!("agent {full}.{}", a.name);
                let d = config_token_digest(&what, a.token_sha256.as_deref(), a.token.as_ref())?
                    .ok_or_else(|| invalid(format!("{what} needs token_sha256 (or token)")))?;
                tokens.push((
                    d,
                    Holder::Agent {
                        workspace: workspaces.len(),
                        agent: a.id,
                    },
                ));
                agents.push(Agent {
                    id: a.id,
                    name: a.name.clone(),
                });
            }
            workspaces.push(Workspace {
                id: w.id.unwrap_or_else(|| derived_workspace_id(&full)),
                owner: w.owner.clone(),
                name: w.name.clone(),
                shared_with: w.shared_with.clone(),
                agents,
            });
        }
        let mut seen = HashSet::new();
        if tokens.iter().any(|(d, _)| !seen.insert(*d)) {
            return Err(invalid("two principals share a token".into()));
        }
        let mut ids = HashSet::new();
        if workspaces.iter().any(|w| !ids.insert(w.id)) {
            return Err(invalid("two workspaces share an id".into()));
        }
        Ok(Self {
            users,
            workspaces,
            tokens,
        })
    }

    /// The users, in config order.
    pub fn users(&self) -> &[User] {
        &self.users
    }

    /// The workspaces, in config order.
    pub fn workspaces(&self) -> &[Workspace] {
        &self.workspaces
    }

    fn lookup(&self, token: &str) -> Option<Principal> {
        if token.is_empty() {
            return None;
        }
        let d = digest(token);
        // Scan every entry so the time taken does not depend on which one matches.
        let mut found = None;
        for (stored, holder) in &self.tokens {
            if ct_eq(stored, &d) {
                found = Some(holder.clone());
            }
        }
        Some(match found? {
            Holder::User(i) => Principal::User(self.users.get(i)?.clone()),
            Holder::Agent { workspace, agent } => Principal::Agent {
                agent_id: agent,
                workspace: self.workspaces.get(workspace)?.clone(),
            },
            Holder::Service => Principal::Service,
        })
    }

    fn by_agent(&self, agent: NodeId) -> Option<&Workspace> {
        self.workspaces.iter().find(|w| w.agent(agent).is_some())
    }

    fn resolve(&self, user: &User, spec: &str) -> Result<ResolvedAgent, ResolveError> {
        let spec = WorkspaceSpec::parse(spec)?;
        let owner = spec.owner.as_deref().unwrap_or(&user.name);
        let full = format!("{owner}/{}", spec.name);
        let ws = self
            .workspaces
            .iter()
            .find(|w| w.owner == owner && w.name == spec.name)
            .ok_or_else(|| ResolveError::NotFound {
                workspace: full.clone(),
            })?;
        if !ws.may_use(user) {
            return Err(ResolveError::Forbidden { workspace: full });
        }
        let agent = select_agent(ws, spec.agent.as_deref())?;
        Ok(ResolvedAgent {
            workspace: ws.clone(),
            agent,
        })
    }
}

/// A stable workspace id from its full name (`owner/name`), so configs need not spell one
/// out.
pub fn derived_workspace_id(full_name: &str) -> Uuid {
    let d = digest(&format!("agentwire workspace {full_name}"));
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid()
}

/// The digest a config entry gives, from `token_sha256` or a plaintext `token`.
pub(crate) fn config_token_digest(
    what: &str,
    hashed: Option<&str>,
    plain: Option<&Secret>,
) -> Result<Option<[u8; 32]>, ConfigError> {
    match (hashed, plain) {
        (Some(_), Some(_)) => Err(ConfigError::Invalid(format!(
            "{what}: give token_sha256 or token, not both"
        ))),
        (Some(h), None) => {
            let bytes = hex::decode(h.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok());
            bytes.map(Some).ok_or_else(|| {
                ConfigError::Invalid(format!("{what}: token_sha256 must be 64 hex digits"))
            })
        }
        (None, Some(p)) => {
            if p.0.is_empty() {
                return Err(ConfigError::Invalid(format!("{what}: token is empty")));
            }
            tracing::warn!("{what}: plaintext token in config; store token_sha256 instead");
            Ok(Some(digest(&p.0)))
        }
        (None, None) => Ok(None),
    }
}

impl ControlPlane for InMemoryControlPlane {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<Principal>, ControlError>> {
        Box::pin(async move { Ok(self.lookup(token)) })
    }

    fn list_workspaces<'a>(
        &'a self,
        user: &'a User,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Workspace>, ControlError>> {
        Box::pin(async move {
            let mut out: Vec<Workspace> = self
                .workspaces
                .iter()
                .filter(|w| w.may_use(user) && owner.is_none_or(|o| w.owner == o))
                .cloned()
                .collect();
            out.sort_by(|a, b| (&a.owner, &a.name).cmp(&(&b.owner, &b.name)));
            Ok(out)
        })
    }

    fn resolve_workspace<'a>(
        &'a self,
        user: &'a User,
        spec: &'a str,
    ) -> BoxFuture<'a, Result<ResolvedAgent, ResolveError>> {
        Box::pin(async move { self.resolve(user, spec) })
    }

    fn may_use_agent<'a>(
        &'a self,
        principal: &'a Principal,
        agent_id: NodeId,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move { principal.may_use_agent_of(self.by_agent(agent_id)) })
    }

    fn workspace_by_id<'a>(
        &'a self,
        id: Uuid,
    ) -> BoxFuture<'a, Result<Option<Workspace>, ControlError>> {
        Box::pin(async move { Ok(self.workspaces.iter().find(|w| w.id == id).cloned()) })
    }

    fn workspace_by_agent<'a>(
        &'a self,
        agent_id: NodeId,
    ) -> BoxFuture<'a, Result<Option<Workspace>, ControlError>> {
        Box::pin(async move { Ok(self.by_agent(agent_id).cloned()) })
    }
}

/// Inputs for the embedded default: one user owning one workspace `demo` with one agent
/// `main`. Anything left `None` is generated.
#[derive(Debug, Clone, Default)]
pub struct DemoSetup {
    /// The user's name (default `demo`).
    pub user: Option<String>,
    /// The user's token.
    pub user_token: Option<Secret>,
    /// The agent's node id.
    pub agent_id: Option<NodeId>,
    /// The agent's token.
    pub agent_token: Option<Secret>,
    /// The serving process's own tailnet token.
    pub service_token: Option<Secret>,
}

/// What [`DemoSetup::build`] chose, so the caller can hand tokens to the agent and print
/// the user's.
#[derive(Debug, Clone)]
pub struct DemoCredentials {
    /// The user's name.
    pub user: String,
    /// The user's token.
    pub user_token: Secret,
    /// The workspace's full name (`user/demo`).
    pub workspace: String,
    /// The agent's node id.
    pub agent_id: NodeId,
    /// The agent's token.
    pub agent_token: Secret,
    /// The serving process's own tailnet token.
    pub service_token: Secret,
}

impl DemoSetup {
    /// The config this setup describes (tokens stored as digests) and the credentials.
    pub fn config(self) -> (ControlConfig, DemoCredentials) {
        let user = self.user.unwrap_or_else(|| "demo".into());
        let new = || Secret(generate_token());
        let creds = DemoCredentials {
            workspace: format!("{user}/demo"),
            user: user.clone(),
            user_token: self.user_token.unwrap_or_else(new),
            agent_id: self.agent_id.unwrap_or_else(NodeId::random),
            agent_token: self.agent_token.unwrap_or_else(new),
            service_token: self.service_token.unwrap_or_else(new),
        };
        let cfg = ControlConfig {
            service_token_sha256: Some(hash_token(&creds.service_token.0)),
            service_token: None,
            users: vec![UserConfig {
                name: user.clone(),
                token_sha256: Some(hash_token(&creds.user_token.0)),
                token: None,
                admin: false,
            }],
            workspaces: vec![WorkspaceConfig {
                id: None,
                owner: user,
                name: "demo".into(),
                shared_with: vec![],
                agents: vec![AgentConfig {
                    name: "main".into(),
                    id: creds.agent_id,
                    token_sha256: Some(hash_token(&creds.agent_token.0)),
                    token: None,
                }],
            }],
        };
        (cfg, creds)
    }

    /// Builds the control plane.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] if a given name is invalid or two given tokens are equal.
    pub fn build(self) -> Result<(InMemoryControlPlane, DemoCredentials), ConfigError> {
        let (cfg, creds) = self.config();
        Ok((InMemoryControlPlane::from_config(cfg)?, creds))
    }
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
