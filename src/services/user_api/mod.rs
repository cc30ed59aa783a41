//! The user API: what a client on a person's machine needs from the server besides the
//! tunnel (who am I, my workspaces, resolving `[owner/]name[.agent]`, agent status).
//!
//! JSON over HTTP under `/api/v0/`, authenticated with a user token (`Authorization:
//! Bearer`), with the same authorization rules as the MCP tools: it asks the same
//! [`ControlPlane`](super::control::ControlPlane). [`server`] serves it inside `serve`;
//! [`client`] is what `agentwire login`, `ping` and `mcp` use. The routes and bodies are
//! in `docs/protocol.md`.

pub mod client;
pub mod directory;
pub mod server;

use super::control::{ControlError, ResolveError};
use super::mcp::AgentStatus;
use crate::wire::addr::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `GET`: the caller ([`User`]).
pub const ME_PATH: &str = "/api/v0/me";
/// `GET [?owner=NAME]`: [`WorkspaceList`].
pub const WORKSPACES_PATH: &str = "/api/v0/workspaces";
/// `GET ?spec=[owner/]name[.agent]`: a `ResolvedAgent`.
pub const RESOLVE_PATH: &str = "/api/v0/workspaces/resolve";
/// `GET /api/v0/workspaces/{id}[?agent=NAME]`: a `ResolvedAgent`, the first agent when
/// none is named.
pub const WORKSPACE_BY_ID_PREFIX: &str = "/api/v0/workspaces/";
/// `POST` [`StatusRequest`]: [`StatusResponse`].
pub const STATUS_PATH: &str = "/api/v0/agents/status";

/// The answer to [`WORKSPACES_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceList {
    /// Ordered by owner, then name.
    pub workspaces: Vec<super::control::Workspace>,
}

/// The body of a [`STATUS_PATH`] request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequest {
    /// At most [`MAX_STATUS_AGENTS`] agent ids; ids the caller may not use are left out
    /// of the answer.
    pub agents: Vec<NodeId>,
}

/// The most agents one status request may ask about.
pub const MAX_STATUS_AGENTS: usize = 256;

/// The answer to [`STATUS_PATH`]: the server's view of each agent (the coordinator's
/// presence and the server's own tunnel to it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// By agent id.
    pub agents: HashMap<NodeId, AgentStatus>,
}

/// Every error answer: a kind a program can match, a sentence for people, and the fields
/// the kind has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `unauthorized`, `forbidden`, `invalid_request`, `invalid_spec`, `not_found`,
    /// `agent_not_found`, `ambiguous_agent`, `no_agents`, `unavailable`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
    /// The workspace concerned, as the request named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// The agent asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The workspace's agents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
}

impl ErrorBody {
    /// A body with only a kind and a message.
    pub fn new(error: &str, message: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            message: message.into(),
            workspace: None,
            agent: None,
            agents: Vec::new(),
        }
    }
}

impl From<&ResolveError> for ErrorBody {
    fn from(e: &ResolveError) -> Self {
        let mut b = Self::new("", e.to_string());
        match e {
            ResolveError::InvalidSpec { spec } => {
                b.error = "invalid_spec".into();
                b.workspace = Some(spec.clone());
            }
            // Forbidden reads as not found, as everywhere else.
            ResolveError::NotFound { workspace } | ResolveError::Forbidden { workspace } => {
                b.error = "not_found".into();
                b.workspace = Some(workspace.clone());
            }
            ResolveError::AgentNotFound {
                workspace,
                agent,
                available,
            } => {
                b.error = "agent_not_found".into();
                b.workspace = Some(workspace.clone());
                b.agent = Some(agent.clone());
                b.agents = available.clone();
            }
            ResolveError::AmbiguousAgent { workspace, agents } => {
                b.error = "ambiguous_agent".into();
                b.workspace = Some(workspace.clone());
                b.agents = agents.clone();
            }
            ResolveError::NoAgents { workspace } => {
                b.error = "no_agents".into();
                b.workspace = Some(workspace.clone());
            }
            ResolveError::Unavailable(_) => b.error = "unavailable".into(),
        }
        b
    }
}

impl From<ErrorBody> for ResolveError {
    fn from(b: ErrorBody) -> Self {
        let workspace = b.workspace.unwrap_or_default();
        match b.error.as_str() {
            "invalid_spec" => Self::InvalidSpec { spec: workspace },
            "not_found" => Self::NotFound { workspace },
            "agent_not_found" => Self::AgentNotFound {
                workspace,
                agent: b.agent.unwrap_or_default(),
                available: b.agents,
            },
            "ambiguous_agent" => Self::AmbiguousAgent {
                workspace,
                agents: b.agents,
            },
            "no_agents" => Self::NoAgents { workspace },
            _ => {
                // The message is the error's own sentence; keep only its cause so it is
                // not prefixed twice.
                let cause = b
                    .message
                    .strip_prefix("control plane unavailable: ")
                    .unwrap_or(&b.message)
                    .to_string();
                Self::Unavailable(ControlError(cause))
            }
        }
    }
}

/// The HTTP status for an error kind.
pub fn status_of(kind: &str) -> http::StatusCode {
    use http::StatusCode as S;
    match kind {
        "unauthorized" => S::UNAUTHORIZED,
        "forbidden" => S::FORBIDDEN,
        "not_found" | "agent_not_found" => S::NOT_FOUND,
        "ambiguous_agent" | "no_agents" => S::CONFLICT,
        "unavailable" => S::SERVICE_UNAVAILABLE,
        _ => S::BAD_REQUEST,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_errors_cross_the_wire_unchanged() {
        let cases = [
            ResolveError::InvalidSpec { spec: "a b".into() },
            ResolveError::NotFound {
                workspace: "bob/x".into(),
            },
            ResolveError::AgentNotFound {
                workspace: "a/dev".into(),
                agent: "tpu".into(),
                available: vec!["main".into(), "gpu".into()],
            },
            ResolveError::AmbiguousAgent {
                workspace: "a/dev".into(),
                agents: vec!["main".into(), "gpu".into()],
            },
            ResolveError::NoAgents {
                workspace: "a/dev".into(),
            },
            ResolveError::Unavailable(ControlError("database down".into())),
        ];
        for e in cases {
            let body = ErrorBody::from(&e);
            let json = serde_json::to_string(&body).expect("json");
            let back: ErrorBody = serde_json::from_str(&json).expect("parse");
            let again = ResolveError::from(back);
            assert_eq!(again.to_string(), e.to_string(), "{json}");
        }
        // Forbidden is sent as not found: the client cannot tell them apart.
        let f = ErrorBody::from(&ResolveError::Forbidden {
            workspace: "bob/x".into(),
        });
        assert_eq!(f.error, "not_found");
        assert_eq!(status_of(&f.error), http::StatusCode::NOT_FOUND);
    }
}
