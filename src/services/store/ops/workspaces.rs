//! Workspaces: create, list, show, delete, share, unshare.

use super::super::db::{Tx, params};
use super::super::error::StoreError;
use super::super::model::{AgentInfo, WorkspaceInfo};
use super::directory::{self, Loaded, WsFilter};
use super::{check_name, user_id, workspace_id};
use crate::services::time::fmt_ms;
use crate::wire::addr::NodeId;
use std::collections::HashMap;
use uuid::Uuid;

/// Active tokens per agent.
pub(crate) async fn agent_token_counts(
    tx: &mut dyn Tx,
    now: i64,
) -> Result<HashMap<NodeId, u64>, StoreError> {
    let mut out = HashMap::new();
    for r in tx
        .query(
            "SELECT agent_id, count(*) FROM tokens WHERE agent_id IS NOT NULL \
             AND revoked_ms IS NULL AND (expires_ms IS NULL OR expires_ms > $1) \
             GROUP BY agent_id",
            params![now],
        )
        .await?
    {
        out.insert(NodeId(r.uuid(0)?), r.i64(1)?.max(0) as u64);
    }
    Ok(out)
}

/// The admin view of loaded workspaces.
pub(crate) fn infos(loaded: Vec<Loaded>, tokens: &HashMap<NodeId, u64>) -> Vec<WorkspaceInfo> {
    loaded
        .into_iter()
        .map(|l| {
            let w = l.workspace;
            let full = w.full_name();
            let agents = w
                .agents
                .iter()
                .zip(&l.agents_created)
                .map(|(a, created)| AgentInfo {
                    id: a.id,
                    workspace: full.clone(),
                    name: a.name.clone(),
                    full_name: format!("{full}.{}", a.name),
                    created_at: fmt_ms(*created),
                    active_tokens: tokens.get(&a.id).copied().unwrap_or(0),
                })
                .collect();
            WorkspaceInfo {
                id: w.id,
                full_name: full,
                owner: w.owner,
                name: w.name,
                shared_with: w.shared_with,
                agents,
                created_at: fmt_ms(l.created_ms),
            }
        })
        .collect()
}

/// Workspaces, optionally of one owner.
pub(crate) async fn list(
    tx: &mut dyn Tx,
    owner: Option<&str>,
    now: i64,
) -> Result<Vec<WorkspaceInfo>, StoreError> {
    let filter = match owner {
        Some(o) => {
            user_id(tx, "owner", o).await?;
            WsFilter::Owner(o.to_string())
        }
        None => WsFilter::All,
    };
    let loaded = directory::load(tx, &filter).await?;
    let tokens = agent_token_counts(tx, now).await?;
    Ok(infos(loaded, &tokens))
}

/// One workspace.
pub(crate) async fn info(
    tx: &mut dyn Tx,
    owner: &str,
    name: &str,
    now: i64,
) -> Result<WorkspaceInfo, StoreError> {
    let filter = WsFilter::Named(owner.to_string(), name.to_string());
    let loaded = directory::load(tx, &filter).await?;
    let tokens = agent_token_counts(tx, now).await?;
    infos(loaded, &tokens)
        .pop()
        .ok_or_else(|| StoreError::NotFound(format!("workspace {owner}/{name} not found")))
}

/// A user named in a request body: missing is the request's fault (400 naming `field`).
pub(crate) async fn referenced_user(
    tx: &mut dyn Tx,
    field: &'static str,
    name: &str,
) -> Result<Uuid, StoreError> {
    match user_id(tx, field, name).await {
        Err(StoreError::NotFound(m)) => Err(StoreError::invalid(field, m)),
        r => r,
    }
}

/// Adds a workspace owned by `owner`, shared with `shared_with`.
pub(crate) async fn create(
    tx: &mut dyn Tx,
    owner: &str,
    name: &str,
    shared_with: &[String],
    id: Option<Uuid>,
    now: i64,
) -> Result<Uuid, StoreError> {
    check_name("owner", "owner", owner)?;
    check_name("name", "workspace", name)?;
    let owner_id = referenced_user(tx, "owner", owner).await?;
    if workspace_id(tx, owner, name).await.is_ok() {
        return Err(StoreError::conflict(
            "name",
            format!("workspace {owner}/{name} already exists"),
        ));
    }
    let id = id.unwrap_or_else(Uuid::new_v4);
    if tx
        .query_opt("SELECT 1 FROM workspaces WHERE id = $1", params![id])
        .await?
        .is_some()
    {
        return Err(StoreError::conflict(
            "id",
            format!("workspace id {id} is in use"),
        ));
    }
    let mut share_ids = Vec::new();
    for u in shared_with {
        if u == owner {
            return Err(StoreError::invalid(
                "shared_with",
                format!("{u:?} owns the workspace; it needs no share"),
            ));
        }
        share_ids.push(referenced_user(tx, "shared_with", u).await?);
    }
    tx.execute(
        "INSERT INTO workspaces (id, owner_id, name, created_ms) VALUES ($1, $2, $3, $4)",
        params![id, owner_id, name, now],
    )
    .await?;
    for uid in share_ids {
        tx.execute(
            "INSERT INTO workspace_shares (workspace_id, user_id) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
            params![id, uid],
        )
        .await?;
    }
    Ok(id)
}

/// Removes a workspace with its shares, agents and the agents' tokens.
pub(crate) async fn delete(tx: &mut dyn Tx, owner: &str, name: &str) -> Result<(), StoreError> {
    let id = workspace_id(tx, owner, name).await?;
    tx.execute("DELETE FROM workspaces WHERE id = $1", params![id])
        .await?;
    Ok(())
}

/// Shares a workspace with `user` (idempotent).
pub(crate) async fn share(
    tx: &mut dyn Tx,
    owner: &str,
    name: &str,
    user: &str,
) -> Result<(), StoreError> {
    let ws = workspace_id(tx, owner, name).await?;
    let uid = referenced_user(tx, "user", user).await?;
    if user == owner {
        return Err(StoreError::invalid(
            "user",
            format!("{user:?} owns {owner}/{name}; it needs no share"),
        ));
    }
    tx.execute(
        "INSERT INTO workspace_shares (workspace_id, user_id) VALUES ($1, $2) \
         ON CONFLICT DO NOTHING",
        params![ws, uid],
    )
    .await?;
    Ok(())
}

/// Stops sharing a workspace with `user`.
pub(crate) async fn unshare(
    tx: &mut dyn Tx,
    owner: &str,
    name: &str,
    user: &str,
) -> Result<(), StoreError> {
    let ws = workspace_id(tx, owner, name).await?;
    let uid = referenced_user(tx, "user", user).await?;
    let n = tx
        .execute(
            "DELETE FROM workspace_shares WHERE workspace_id = $1 AND user_id = $2",
            params![ws, uid],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::NotFound(format!(
            "{owner}/{name} is not shared with {user:?}"
        )));
    }
    Ok(())
}
