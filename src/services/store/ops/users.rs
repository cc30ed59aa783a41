//! Users: create, list, show, delete, admin flag, password, revoke all tokens.

use super::super::db::{Tx, params};
use super::super::error::StoreError;
use super::super::model::UserInfo;
use super::{check_name, user_id};
use crate::services::time::fmt_ms;
use std::collections::HashMap;
use uuid::Uuid;

const SELECT: &str = "SELECT id, name, admin, password_hash IS NOT NULL, created_ms FROM users";

async fn build(
    tx: &mut dyn Tx,
    rows: Vec<super::super::db::Row>,
    now: i64,
) -> Result<Vec<UserInfo>, StoreError> {
    let mut owned: HashMap<Uuid, Vec<String>> = HashMap::new();
    let mut tokens: HashMap<Uuid, u64> = HashMap::new();
    if !rows.is_empty() {
        for r in tx
            .query(
                "SELECT w.owner_id, o.name, w.name FROM workspaces w \
                 JOIN users o ON o.id = w.owner_id",
                vec![],
            )
            .await?
        {
            owned
                .entry(r.uuid(0)?)
                .or_default()
                .push(format!("{}/{}", r.text(1)?, r.text(2)?));
        }
        for r in tx
            .query(
                "SELECT user_id, count(*) FROM tokens WHERE user_id IS NOT NULL \
                 AND revoked_ms IS NULL AND (expires_ms IS NULL OR expires_ms > $1) \
                 GROUP BY user_id",
                params![now],
            )
            .await?
        {
            tokens.insert(r.uuid(0)?, r.i64(1)?.max(0) as u64);
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id = r.uuid(0)?;
        let mut workspaces = owned.remove(&id).unwrap_or_default();
        workspaces.sort();
        out.push(UserInfo {
            id,
            name: r.text(1)?,
            admin: r.bool(2)?,
            has_password: r.bool(3)?,
            created_at: fmt_ms(r.i64(4)?),
            workspaces,
            active_tokens: tokens.get(&id).copied().unwrap_or(0),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// One user.
pub(crate) async fn info(tx: &mut dyn Tx, name: &str, now: i64) -> Result<UserInfo, StoreError> {
    check_name("name", "user", name)?;
    let rows = tx
        .query(&format!("{SELECT} WHERE name = $1"), params![name])
        .await?;
    build(tx, rows, now)
        .await?
        .pop()
        .ok_or_else(|| StoreError::NotFound(format!("user {name:?} not found")))
}

/// Every user, by name.
pub(crate) async fn list(tx: &mut dyn Tx, now: i64) -> Result<Vec<UserInfo>, StoreError> {
    let rows = tx.query(SELECT, vec![]).await?;
    build(tx, rows, now).await
}

/// Whether a user by this name exists.
pub(crate) async fn exists(tx: &mut dyn Tx, name: &str) -> Result<bool, StoreError> {
    Ok(tx
        .query_opt("SELECT 1 FROM users WHERE name = $1", params![name])
        .await?
        .is_some())
}

/// Adds a user; `name` must be free.
pub(crate) async fn create(
    tx: &mut dyn Tx,
    name: &str,
    admin: bool,
    password_hash: Option<String>,
    now: i64,
) -> Result<Uuid, StoreError> {
    check_name("name", "user", name)?;
    if exists(tx, name).await? {
        return Err(StoreError::conflict(
            "name",
            format!("user {name:?} already exists"),
        ));
    }
    let id = Uuid::new_v4();
    tx.execute(
        "INSERT INTO users (id, name, admin, password_hash, created_ms) \
         VALUES ($1, $2, $3, $4, $5)",
        params![id, name, admin, password_hash, now],
    )
    .await?;
    Ok(id)
}

async fn admins(tx: &mut dyn Tx) -> Result<i64, StoreError> {
    Ok(tx
        .query_one("SELECT count(*) FROM users WHERE admin", vec![])
        .await?
        .i64(0)?)
}

async fn is_admin(tx: &mut dyn Tx, id: Uuid) -> Result<bool, StoreError> {
    Ok(tx
        .query_one("SELECT admin FROM users WHERE id = $1", params![id])
        .await?
        .bool(0)?)
}

/// Removes a user with their tokens and shares. A user who owns workspaces is removed
/// only with `cascade` (which removes those workspaces, their agents and the agents'
/// tokens); the last admin is never removed.
pub(crate) async fn delete(tx: &mut dyn Tx, name: &str, cascade: bool) -> Result<(), StoreError> {
    let id = user_id(tx, "name", name).await?;
    let owned: Vec<String> = tx
        .query(
            "SELECT name FROM workspaces WHERE owner_id = $1 ORDER BY name",
            params![id],
        )
        .await?
        .iter()
        .map(|r| r.text(0).map(|w| format!("{name}/{w}")))
        .collect::<Result<_, _>>()?;
    if !owned.is_empty() && !cascade {
        return Err(StoreError::conflict(
            "name",
            format!(
                "user {name:?} owns {} workspace(s) ({}); delete them first, or delete the \
                 user with cascade to remove them and their agents too",
                owned.len(),
                owned.join(", ")
            ),
        ));
    }
    if is_admin(tx, id).await? && admins(tx).await? <= 1 {
        return Err(StoreError::conflict(
            "name",
            format!("{name:?} is the only admin; make another user admin first"),
        ));
    }
    tx.execute("DELETE FROM users WHERE id = $1", params![id])
        .await?;
    Ok(())
}

/// Sets or clears the admin flag (the last admin keeps it).
pub(crate) async fn set_admin(tx: &mut dyn Tx, name: &str, admin: bool) -> Result<(), StoreError> {
    let id = user_id(tx, "name", name).await?;
    if !admin && is_admin(tx, id).await? && admins(tx).await? <= 1 {
        return Err(StoreError::conflict(
            "admin",
            format!("{name:?} is the only admin; make another user admin first"),
        ));
    }
    tx.execute(
        "UPDATE users SET admin = $2 WHERE id = $1",
        params![id, admin],
    )
    .await?;
    Ok(())
}

/// Sets (or, with `None`, clears) the password hash.
pub(crate) async fn set_password(
    tx: &mut dyn Tx,
    name: &str,
    hash: Option<String>,
) -> Result<(), StoreError> {
    let id = user_id(tx, "name", name).await?;
    tx.execute(
        "UPDATE users SET password_hash = $2 WHERE id = $1",
        params![id, hash],
    )
    .await?;
    Ok(())
}

/// The user and their password hash, for sign-in.
pub(crate) async fn credentials(
    tx: &mut dyn Tx,
    name: &str,
) -> Result<Option<(crate::services::control::User, Option<String>)>, StoreError> {
    if !crate::services::control::valid_name(name) {
        return Ok(None);
    }
    let row = tx
        .query_opt(
            "SELECT name, admin, password_hash FROM users WHERE name = $1",
            params![name],
        )
        .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    Ok(Some((
        crate::services::control::User {
            name: r.text(0)?,
            admin: r.bool(1)?,
        },
        r.opt_text(2)?,
    )))
}

/// Revokes every active token of a user; how many.
pub(crate) async fn revoke_tokens(
    tx: &mut dyn Tx,
    name: &str,
    now: i64,
) -> Result<u64, StoreError> {
    let id = user_id(tx, "name", name).await?;
    Ok(tx
        .execute(
            "UPDATE tokens SET revoked_ms = $2 WHERE user_id = $1 AND revoked_ms IS NULL",
            params![id, now],
        )
        .await?)
}
