//! Tokens: issue (random, shown once, stored as a SHA-256 digest), list, show, revoke,
//! delete.

use super::super::db::{Row, Tx, params};
use super::super::error::StoreError;
use super::super::model::{IssuedToken, TokenInfo, TokenStatus};
use super::agents::{self, AgentSel};
use super::{passed, user_id};
use crate::services::control::{generate_token, token_digest};
use crate::services::time::fmt_ms;
use crate::wire::addr::NodeId;
use uuid::Uuid;

/// Whom a token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenFor {
    /// A user, by name.
    User(String),
    /// An agent.
    Agent(AgentSel),
}

/// Which tokens to list.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenFilter {
    pub user: Option<String>,
    pub agent: Option<AgentSel>,
    /// Also revoked and expired ones.
    pub all: bool,
}

const SELECT: &str = "SELECT t.id, u.name, a.id, a.name, w.name, o.name, t.name, t.imported, \
     t.created_ms, t.expires_ms, t.last_used_ms, t.revoked_ms \
     FROM tokens t LEFT JOIN users u ON u.id = t.user_id \
     LEFT JOIN agents a ON a.id = t.agent_id \
     LEFT JOIN workspaces w ON w.id = a.workspace_id \
     LEFT JOIN users o ON o.id = w.owner_id";

fn to_info(r: &Row, now: i64) -> Result<TokenInfo, StoreError> {
    let agent_id = r.opt_uuid(2)?.map(NodeId);
    let agent = match (r.opt_text(5)?, r.opt_text(4)?, r.opt_text(3)?) {
        (Some(o), Some(w), Some(a)) => Some(format!("{o}/{w}.{a}")),
        _ => None,
    };
    let (expires, revoked) = (r.opt_i64(9)?, r.opt_i64(11)?);
    let status = if revoked.is_some() {
        TokenStatus::Revoked
    } else if passed(expires, now) {
        TokenStatus::Expired
    } else {
        TokenStatus::Active
    };
    Ok(TokenInfo {
        id: r.uuid(0)?,
        user: r.opt_text(1)?,
        agent,
        agent_id,
        name: r.text(6)?,
        imported: r.bool(7)?,
        created_at: fmt_ms(r.i64(8)?),
        expires_at: expires.map(fmt_ms),
        last_used_at: r.opt_i64(10)?.map(fmt_ms),
        revoked_at: revoked.map(fmt_ms),
        status,
    })
}

/// A 400 unless `name` is a usable label.
pub(crate) fn check_label(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            "name",
            "a token name is 1 to 64 characters, none of them control characters",
        ));
    }
    Ok(())
}

/// The user or agent ids a new token row refers to.
async fn holder_ids(
    tx: &mut dyn Tx,
    holder: &TokenFor,
) -> Result<(Option<Uuid>, Option<Uuid>), StoreError> {
    Ok(match holder {
        TokenFor::User(name) => (
            Some(match user_id(tx, "user", name).await {
                Err(StoreError::NotFound(m)) => return Err(StoreError::invalid("user", m)),
                r => r?,
            }),
            None,
        ),
        TokenFor::Agent(sel) => {
            let (id, _) = match agents::resolve(tx, sel).await {
                Err(StoreError::NotFound(m)) => return Err(StoreError::invalid("agent", m)),
                r => r?,
            };
            (None, Some(id.0))
        }
    })
}

/// Stores a token digest for `holder`; its id.
pub(crate) async fn insert_digest(
    tx: &mut dyn Tx,
    holder: &TokenFor,
    digest: &[u8; 32],
    name: &str,
    imported: bool,
    expires_ms: Option<i64>,
    now: i64,
) -> Result<Uuid, StoreError> {
    check_label(name)?;
    let (user, agent) = holder_ids(tx, holder).await?;
    if tx
        .query_opt(
            "SELECT 1 FROM tokens WHERE digest = $1",
            params![&digest[..]],
        )
        .await?
        .is_some()
    {
        return Err(StoreError::conflict(
            "token",
            "this token is already in use",
        ));
    }
    let id = Uuid::new_v4();
    tx.execute(
        "INSERT INTO tokens (id, digest, user_id, agent_id, name, imported, created_ms, expires_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        params![id, &digest[..], user, agent, name, imported, now, expires_ms],
    )
    .await?;
    Ok(id)
}

/// Issues a fresh random token for `holder`.
pub(crate) async fn issue(
    tx: &mut dyn Tx,
    holder: &TokenFor,
    name: &str,
    expires_ms: Option<i64>,
    now: i64,
) -> Result<IssuedToken, StoreError> {
    let token = generate_token();
    let id = insert_digest(
        tx,
        holder,
        &token_digest(&token),
        name,
        false,
        expires_ms,
        now,
    )
    .await?;
    Ok(IssuedToken {
        token,
        info: info(tx, id, now).await?,
    })
}

/// One token.
pub(crate) async fn info(tx: &mut dyn Tx, id: Uuid, now: i64) -> Result<TokenInfo, StoreError> {
    let row = tx
        .query_opt(&format!("{SELECT} WHERE t.id = $1"), params![id])
        .await?;
    match row {
        Some(r) => to_info(&r, now),
        None => Err(StoreError::NotFound(format!("token {id} not found"))),
    }
}

/// Tokens, newest first.
pub(crate) async fn list(
    tx: &mut dyn Tx,
    filter: &TokenFilter,
    now: i64,
) -> Result<Vec<TokenInfo>, StoreError> {
    let rows = match (&filter.user, &filter.agent) {
        (Some(u), _) => {
            let id = user_id(tx, "user", u).await?;
            tx.query(&format!("{SELECT} WHERE t.user_id = $1"), params![id])
                .await?
        }
        (None, Some(sel)) => {
            let (id, _) = agents::resolve(tx, sel).await?;
            tx.query(&format!("{SELECT} WHERE t.agent_id = $1"), params![id.0])
                .await?
        }
        (None, None) => tx.query(SELECT, vec![]).await?,
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let created = r.i64(8)?;
        let t = to_info(r, now)?;
        if filter.all || t.status == TokenStatus::Active {
            out.push((created, t));
        }
    }
    out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
    Ok(out.into_iter().map(|(_, t)| t).collect())
}

/// Revokes a token (a revoked token stays listed with `--all`).
pub(crate) async fn revoke(tx: &mut dyn Tx, id: Uuid, now: i64) -> Result<TokenInfo, StoreError> {
    let n = tx
        .execute(
            "UPDATE tokens SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL",
            params![id, now],
        )
        .await?;
    let t = info(tx, id, now).await?;
    if n == 0 && t.status != TokenStatus::Revoked {
        return Err(StoreError::Internal(format!("token {id} was not revoked")));
    }
    Ok(t)
}

/// Removes a token for good.
pub(crate) async fn delete(tx: &mut dyn Tx, id: Uuid) -> Result<(), StoreError> {
    let n = tx
        .execute("DELETE FROM tokens WHERE id = $1", params![id])
        .await?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("token {id} not found")));
    }
    Ok(())
}
