//! Agents: create (with a first token), list, show, delete, revoke all tokens.

use super::super::db::{Tx, params};
use super::super::error::StoreError;
use super::super::model::{AgentInfo, IssuedToken};
use super::directory::{self, WsFilter};
use super::tokens::{self, TokenFor};
use super::workspaces::{agent_token_counts, infos};
use super::{check_name, split_full, workspace_id};
use crate::services::control::{ResolveError, WorkspaceSpec, select_agent};
use crate::wire::addr::NodeId;

/// How a request names an agent: its node id, or `owner/workspace[.agent]` (the agent may
/// be left out when the workspace has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AgentSel {
    /// By node id.
    Id(NodeId),
    /// By name.
    Named {
        owner: String,
        workspace: String,
        agent: Option<String>,
    },
}

impl AgentSel {
    /// Parses an agent id or `owner/workspace[.agent]`.
    pub(crate) fn parse(field: &'static str, s: &str) -> Result<Self, StoreError> {
        if let Ok(id) = s.trim().parse::<NodeId>() {
            return Ok(Self::Id(id));
        }
        let spec =
            WorkspaceSpec::parse(s).map_err(|e| StoreError::invalid(field, e.to_string()))?;
        let Some(owner) = spec.owner else {
            return Err(StoreError::invalid(
                field,
                format!("{s:?}: name the agent as OWNER/WORKSPACE[.AGENT] or by its id"),
            ));
        };
        Ok(Self::Named {
            owner,
            workspace: spec.name,
            agent: spec.agent,
        })
    }
}

/// The agent `sel` names: its id and full name.
pub(crate) async fn resolve(
    tx: &mut dyn Tx,
    sel: &AgentSel,
) -> Result<(NodeId, String), StoreError> {
    let (filter, want) = match sel {
        AgentSel::Id(id) => (WsFilter::Agent(id.0), None),
        AgentSel::Named {
            owner,
            workspace,
            agent,
        } => (
            WsFilter::Named(owner.clone(), workspace.clone()),
            agent.clone(),
        ),
    };
    let Some(ws) = directory::workspace(tx, &filter).await? else {
        return Err(StoreError::NotFound(match sel {
            AgentSel::Id(id) => format!("agent {id} not found"),
            AgentSel::Named {
                owner, workspace, ..
            } => format!("workspace {owner}/{workspace} not found"),
        }));
    };
    let agent = match sel {
        AgentSel::Id(id) => ws
            .agent(*id)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(format!("agent {id} not found")))?,
        AgentSel::Named { .. } => select_agent(&ws, want.as_deref()).map_err(|e| match e {
            ResolveError::AmbiguousAgent { .. } => StoreError::invalid("agent", e.to_string()),
            other => StoreError::NotFound(other.to_string()),
        })?,
    };
    Ok((agent.id, format!("{}.{}", ws.full_name(), agent.name)))
}

/// The agents of one workspace, or of all.
pub(crate) async fn list(
    tx: &mut dyn Tx,
    workspace: Option<&str>,
    now: i64,
) -> Result<Vec<AgentInfo>, StoreError> {
    let filter = match workspace {
        Some(full) => {
            let (o, n) = split_full("workspace", full)?;
            workspace_id(tx, &o, &n).await?;
            WsFilter::Named(o, n)
        }
        None => WsFilter::All,
    };
    let loaded = directory::load(tx, &filter).await?;
    let tokens = agent_token_counts(tx, now).await?;
    Ok(infos(loaded, &tokens)
        .into_iter()
        .flat_map(|w| w.agents)
        .collect())
}

/// One agent.
pub(crate) async fn info(
    tx: &mut dyn Tx,
    sel: &AgentSel,
    now: i64,
) -> Result<AgentInfo, StoreError> {
    let (id, _) = resolve(tx, sel).await?;
    let loaded = directory::load(tx, &WsFilter::Agent(id.0)).await?;
    let tokens = agent_token_counts(tx, now).await?;
    infos(loaded, &tokens)
        .into_iter()
        .flat_map(|w| w.agents)
        .find(|a| a.id == id)
        .ok_or_else(|| StoreError::NotFound(format!("agent {id} not found")))
}

/// Adds agent `name` to workspace `owner/ws` with node id `id` (random when `None`) and
/// issues its first token.
pub(crate) async fn create(
    tx: &mut dyn Tx,
    workspace: &str,
    name: &str,
    id: Option<NodeId>,
    expires_ms: Option<i64>,
    now: i64,
) -> Result<(AgentInfo, IssuedToken), StoreError> {
    let (owner, ws) = split_full("workspace", workspace)?;
    check_name("name", "agent", name)?;
    let ws_id = workspace_id(tx, &owner, &ws).await.map_err(|e| match e {
        StoreError::NotFound(m) => StoreError::invalid("workspace", m),
        other => other,
    })?;
    let id = id.unwrap_or_else(NodeId::random);
    insert(tx, ws_id, &format!("{owner}/{ws}"), name, id, "name", now).await?;
    let token = tokens::issue(
        tx,
        &TokenFor::Agent(AgentSel::Id(id)),
        "agent",
        expires_ms,
        now,
    )
    .await?;
    let info = info(tx, &AgentSel::Id(id), now).await?;
    Ok((info, token))
}

/// Adds agent `name` with node id `id` to the workspace `ws_id` (`owner/name` is `full`),
/// refusing a name or id in use (409 naming `field`, or `id`).
pub(crate) async fn insert(
    tx: &mut dyn Tx,
    ws_id: uuid::Uuid,
    full: &str,
    name: &str,
    id: NodeId,
    field: &'static str,
    now: i64,
) -> Result<(), StoreError> {
    if tx
        .query_opt(
            "SELECT 1 FROM agents WHERE workspace_id = $1 AND name = $2",
            params![ws_id, name],
        )
        .await?
        .is_some()
    {
        return Err(StoreError::conflict(
            field,
            format!("workspace {full} already has an agent {name:?}"),
        ));
    }
    if let Some(r) = tx
        .query_opt(
            "SELECT o.name, w.name, a.name FROM agents a JOIN workspaces w \
             ON w.id = a.workspace_id JOIN users o ON o.id = w.owner_id WHERE a.id = $1",
            params![id.0],
        )
        .await?
    {
        return Err(StoreError::conflict(
            if field == "name" { "id" } else { field },
            format!(
                "agent id {id} is already {}/{}.{}",
                r.text(0)?,
                r.text(1)?,
                r.text(2)?
            ),
        ));
    }
    tx.execute(
        "INSERT INTO agents (id, workspace_id, name, created_ms) VALUES ($1, $2, $3, $4)",
        params![id.0, ws_id, name, now],
    )
    .await?;
    Ok(())
}

/// Removes an agent and its tokens.
pub(crate) async fn delete(tx: &mut dyn Tx, sel: &AgentSel) -> Result<(), StoreError> {
    let (id, _) = resolve(tx, sel).await?;
    tx.execute("DELETE FROM agents WHERE id = $1", params![id.0])
        .await?;
    Ok(())
}

/// Revokes every active token of an agent; how many.
pub(crate) async fn revoke_tokens(
    tx: &mut dyn Tx,
    sel: &AgentSel,
    now: i64,
) -> Result<u64, StoreError> {
    let (id, _) = resolve(tx, sel).await?;
    Ok(tx
        .execute(
            "UPDATE tokens SET revoked_ms = $2 WHERE agent_id = $1 AND revoked_ms IS NULL",
            params![id.0, now],
        )
        .await?)
}
