//! The control plane: users, tokens, workspaces and agents.
//!
//! Everything that decides *who* a caller is and *what* it may use sits behind the
//! [`ControlPlane`] trait, so a host service can plug in its own users and authorization.
//! The coordinator and the MCP front end only ever ask the trait. [`InMemoryControlPlane`]
//! is the built-in implementation, loaded from TOML (see `docs/config.md`) or built for the
//! embedded default by [`DemoSetup`].
//!
//! Methods return boxed futures so the trait stays dyn-compatible (`Arc<dyn ControlPlane>`).

mod memory;

pub use memory::{
    AgentConfig, ConfigError, ControlConfig, DemoCredentials, DemoSetup, InMemoryControlPlane,
    Secret, UserConfig, WorkspaceConfig, generate_token, hash_token,
};

use crate::wire::addr::NodeId;
use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use thiserror::Error;
use uuid::Uuid;

/// The bearer token of an `Authorization` header, if it is one: scheme matched without
/// case, surrounding spaces ignored, an empty token is none. Every listener that takes a
/// token (MCP, coordinator, agent identity, metrics) reads it with this.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A boxed, sendable future, so [`ControlPlane`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A person (or automation) holding a user token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Unique user name; workspaces are addressed as `owner/name`.
    pub name: String,
    /// Admins may use every workspace.
    pub admin: bool,
}

/// A workspace agent: one node on the tailnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Agent {
    /// The agent's node id; its token binds it to this id.
    pub id: NodeId,
    /// Name, unique within its workspace (`owner/workspace.agent`).
    pub name: String,
}

/// A workspace: an owner, the users it is shared with, and its agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workspace {
    /// Stable id.
    pub id: Uuid,
    /// The owning user's name.
    pub owner: String,
    /// Name, unique per owner.
    pub name: String,
    /// Other users who may use it.
    pub shared_with: Vec<String>,
    /// Its agents, usually one.
    pub agents: Vec<Agent>,
}

impl Workspace {
    /// `owner/name`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// Whether `user` may use this workspace: its owner, a user it is shared with, or an admin.
    pub fn may_use(&self, user: &User) -> bool {
        user.admin || self.owner == user.name || self.shared_with.contains(&user.name)
    }

    /// The agent with id `id`, if it belongs here.
    pub fn agent(&self, id: NodeId) -> Option<&Agent> {
        self.agents.iter().find(|a| a.id == id)
    }
}

/// Who presented a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A user: may use the workspaces [`Workspace::may_use`] allows.
    User(User),
    /// A workspace agent: may register its own node and nothing else.
    Agent {
        /// The node id the token binds to.
        agent_id: NodeId,
        /// The workspace the agent belongs to.
        workspace: Workspace,
    },
    /// The serving process's own tailnet: may open tunnels to any agent. It authorizes each
    /// tool call itself, on behalf of the calling user.
    Service,
}

impl Principal {
    /// A short description for logs (never the token).
    pub fn describe(&self) -> String {
        match self {
            Self::User(u) => format!("user {}", u.name),
            Self::Agent {
                agent_id,
                workspace,
            } => {
                format!("agent {agent_id} of {}", workspace.full_name())
            }
            Self::Service => "service".into(),
        }
    }
}

/// A workspace and the agent a spec selected in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedAgent {
    /// The workspace.
    pub workspace: Workspace,
    /// The selected agent.
    pub agent: Agent,
}

/// The control plane's backing store failed; the caller should answer "try again later",
/// not "denied".
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("control plane unavailable: {0}")]
pub struct ControlError(pub String);

/// Why a workspace spec did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResolveError {
    /// Not of the form `[owner/]name[.agent]`.
    #[error("invalid workspace {spec:?}: expected [owner/]name[.agent]")]
    InvalidSpec {
        /// What the caller wrote.
        spec: String,
    },
    /// No such workspace.
    #[error("workspace {workspace:?} not found")]
    NotFound {
        /// `owner/name`.
        workspace: String,
    },
    /// The workspace exists but the caller may not use it. Its message is the same as
    /// [`ResolveError::NotFound`]'s so callers cannot probe for other users' workspaces; the
    /// variant differs so logs and counters can tell them apart.
    #[error("workspace {workspace:?} not found")]
    Forbidden {
        /// `owner/name`.
        workspace: String,
    },
    /// The named agent is not in the workspace.
    #[error(
        "workspace {workspace:?} has no agent {agent:?}; its agents: {}",
        list(available)
    )]
    AgentNotFound {
        /// `owner/name`.
        workspace: String,
        /// The agent name asked for.
        agent: String,
        /// The agents it has.
        available: Vec<String>,
    },
    /// Several agents and none named.
    #[error(
        "workspace {workspace:?} has several agents; name one as {workspace}.AGENT: {}",
        list(agents)
    )]
    AmbiguousAgent {
        /// `owner/name`.
        workspace: String,
        /// The agents it has.
        agents: Vec<String>,
    },
    /// The workspace has no agents at all.
    #[error("workspace {workspace:?} has no agents")]
    NoAgents {
        /// `owner/name`.
        workspace: String,
    },
    /// The backing store failed.
    #[error(transparent)]
    Unavailable(#[from] ControlError),
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".into()
    } else {
        names.join(", ")
    }
}

/// A parsed `[owner/]name[.agent]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceSpec {
    /// The owner, if given; otherwise the caller.
    pub owner: Option<String>,
    /// The workspace name.
    pub name: String,
    /// The agent name, if given.
    pub agent: Option<String>,
}

impl WorkspaceSpec {
    /// Parses `[owner/]name[.agent]`; each part must be a valid name (letters, digits, `-`,
    /// `_`, at most 64 characters).
    ///
    /// # Errors
    /// [`ResolveError::InvalidSpec`] for anything else.
    pub fn parse(spec: &str) -> Result<Self, ResolveError> {
        let invalid = || ResolveError::InvalidSpec {
            spec: spec.chars().take(200).collect(),
        };
        let s = spec.trim();
        let (owner, rest) = match s.split_once('/') {
            Some((o, r)) => (Some(o), r),
            None => (None, s),
        };
        let (name, agent) = match rest.split_once('.') {
            Some((n, a)) => (n, Some(a)),
            None => (rest, None),
        };
        let parts_ok = owner.into_iter().chain([name]).chain(agent).all(valid_name);
        if !parts_ok {
            return Err(invalid());
        }
        Ok(Self {
            owner: owner.map(str::to_string),
            name: name.to_string(),
            agent: agent.map(str::to_string),
        })
    }
}

/// Whether `s` is a valid user, workspace or agent name.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Which of a workspace's agents a caller means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentChoice<'a> {
    /// The agent with this name.
    Named(&'a str),
    /// The only agent; a workspace with several is ambiguous (the standard tools: the
    /// caller can name one, so guessing would be wrong).
    Only,
    /// The only agent, else the first in the workspace's order (the chatgpt toolset's
    /// ids name a workspace, not an agent, and its callers cannot choose).
    Default,
}

impl<'a> AgentChoice<'a> {
    /// The choice a spec's optional `.agent` part makes.
    pub fn from_spec(agent: Option<&'a str>) -> Self {
        agent.map_or(Self::Only, Self::Named)
    }
}

/// Picks the agent a spec names from `ws`, or the only one.
///
/// # Errors
/// [`ResolveError::AgentNotFound`], [`ResolveError::AmbiguousAgent`] or
/// [`ResolveError::NoAgents`].
pub fn select_agent(ws: &Workspace, agent: Option<&str>) -> Result<Agent, ResolveError> {
    choose_agent(ws, AgentChoice::from_spec(agent))
}

/// Picks the agent `choice` means from `ws`: the one rule both toolsets resolve by.
///
/// # Errors
/// [`ResolveError::AgentNotFound`], [`ResolveError::AmbiguousAgent`] (only for
/// [`AgentChoice::Only`]) or [`ResolveError::NoAgents`].
pub fn choose_agent(ws: &Workspace, choice: AgentChoice<'_>) -> Result<Agent, ResolveError> {
    let names = || ws.agents.iter().map(|a| a.name.clone()).collect::<Vec<_>>();
    let agent = match choice {
        AgentChoice::Named(n) => Some(n),
        AgentChoice::Only => None,
        AgentChoice::Default => match ws.agents.first() {
            Some(first) => return Ok(first.clone()),
            None => None,
        },
    };
    match (agent, ws.agents.as_slice()) {
        (Some(want), agents) => agents
            .iter()
            .find(|a| a.name == want)
            .cloned()
            .ok_or_else(|| ResolveError::AgentNotFound {
                workspace: ws.full_name(),
                agent: want.to_string(),
                available: names(),
            }),
        (None, [only]) => Ok(only.clone()),
        (None, []) => Err(ResolveError::NoAgents {
            workspace: ws.full_name(),
        }),
        (None, _) => Err(ResolveError::AmbiguousAgent {
            workspace: ws.full_name(),
            agents: names(),
        }),
    }
}

/// Users, tokens, workspaces and agents, and who may use what.
///
/// Implementations must be cheap to call concurrently; the coordinator calls
/// [`ControlPlane::may_use_agent`] on every `add_tunnel` from a user's client.
pub trait ControlPlane: Send + Sync + fmt::Debug {
    /// Who holds `token`; `Ok(None)` for an unknown token.
    ///
    /// # Errors
    /// [`ControlError`] if the backing store failed (answer 503, not 401).
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<Principal>, ControlError>>;

    /// The workspaces `user` may use, optionally only those owned by `owner`, ordered by
    /// owner then name. Other users' workspaces the caller may not use are never listed.
    ///
    /// # Errors
    /// [`ControlError`] if the backing store failed.
    fn list_workspaces<'a>(
        &'a self,
        user: &'a User,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Workspace>, ControlError>>;

    /// Resolves `[owner/]name[.agent]` (no owner means the caller) to a workspace and agent
    /// the user may use.
    ///
    /// # Errors
    /// See [`ResolveError`]; to a non-admin, a workspace they may not use looks not found.
    fn resolve_workspace<'a>(
        &'a self,
        user: &'a User,
        spec: &'a str,
    ) -> BoxFuture<'a, Result<ResolvedAgent, ResolveError>>;

    /// Whether `principal` may open a tunnel to (and so use) agent `agent_id`. Fails closed:
    /// a store failure answers `false`.
    fn may_use_agent<'a>(
        &'a self,
        principal: &'a Principal,
        agent_id: NodeId,
    ) -> BoxFuture<'a, bool>;

    /// The workspace with id `id`, without any authorization check.
    ///
    /// # Errors
    /// [`ControlError`] if the backing store failed.
    fn workspace_by_id<'a>(
        &'a self,
        id: Uuid,
    ) -> BoxFuture<'a, Result<Option<Workspace>, ControlError>>;

    /// Resolves the workspace with id `id` for `user`, and the agent `choice` means.
    /// Authorization is the same as [`ControlPlane::resolve_workspace`]'s: a workspace
    /// the user may not use reads as not found.
    ///
    /// # Errors
    /// See [`ResolveError`].
    fn resolve_workspace_id<'a>(
        &'a self,
        user: &'a User,
        id: Uuid,
        choice: AgentChoice<'a>,
    ) -> BoxFuture<'a, Result<ResolvedAgent, ResolveError>> {
        Box::pin(async move {
            let not_found = || ResolveError::NotFound {
                workspace: id.to_string(),
            };
            let ws = self.workspace_by_id(id).await?.ok_or_else(not_found)?;
            if !ws.may_use(user) {
                return Err(ResolveError::Forbidden {
                    workspace: id.to_string(),
                });
            }
            let agent = choose_agent(&ws, choice)?;
            Ok(ResolvedAgent {
                workspace: ws,
                agent,
            })
        })
    }

    /// The workspace containing agent `agent_id`, without any authorization check. The
    /// coordinator uses it to keep clients from registering under an agent's id.
    ///
    /// # Errors
    /// [`ControlError`] if the backing store failed.
    fn workspace_by_agent<'a>(
        &'a self,
        agent_id: NodeId,
    ) -> BoxFuture<'a, Result<Option<Workspace>, ControlError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parsing() {
        let s = WorkspaceSpec::parse("alice/dev.main").unwrap();
        assert_eq!(
            s,
            WorkspaceSpec {
                owner: Some("alice".into()),
                name: "dev".into(),
                agent: Some("main".into())
            }
        );
        let s = WorkspaceSpec::parse(" dev ").unwrap();
        assert_eq!((s.owner, s.name.as_str(), s.agent), (None, "dev", None));
        for bad in [
            "", "/", "a/", "/b", "a/b.", "a/b.c.d", "a/b/c", "a b", "é", "a/.x",
        ] {
            assert!(
                matches!(
                    WorkspaceSpec::parse(bad),
                    Err(ResolveError::InvalidSpec { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn forbidden_reads_like_not_found() {
        let nf = ResolveError::NotFound {
            workspace: "bob/x".into(),
        };
        let fb = ResolveError::Forbidden {
            workspace: "bob/x".into(),
        };
        assert_ne!(nf, fb);
        assert_eq!(nf.to_string(), fb.to_string());
    }

    #[test]
    fn agent_selection() {
        let agent = |n: &str| Agent {
            id: NodeId::random(),
            name: n.into(),
        };
        let mut ws = Workspace {
            id: Uuid::nil(),
            owner: "alice".into(),
            name: "dev".into(),
            shared_with: vec![],
            agents: vec![],
        };
        assert!(matches!(
            select_agent(&ws, None),
            Err(ResolveError::NoAgents { .. })
        ));
        assert!(matches!(
            choose_agent(&ws, AgentChoice::Default),
            Err(ResolveError::NoAgents { .. })
        ));
        ws.agents.push(agent("main"));
        assert_eq!(select_agent(&ws, None).unwrap().name, "main");
        ws.agents.push(agent("gpu"));
        let err = select_agent(&ws, None).unwrap_err();
        assert!(err.to_string().contains("main, gpu"), "{err}");
        assert_eq!(select_agent(&ws, Some("gpu")).unwrap().name, "gpu");
        // The chatgpt rule: the first agent when none is named, never ambiguous.
        assert_eq!(
            choose_agent(&ws, AgentChoice::Default).unwrap().name,
            "main"
        );
        assert_eq!(
            choose_agent(&ws, AgentChoice::Named("gpu")).unwrap().name,
            "gpu"
        );
        let err = select_agent(&ws, Some("tpu")).unwrap_err();
        assert!(matches!(err, ResolveError::AgentNotFound { .. }));
        assert!(err.to_string().contains("main, gpu"), "{err}");
    }
}
