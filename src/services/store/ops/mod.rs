//! The store's operations, each written once as a script over [`Tx`] and so run
//! unchanged on SQLite and PostgreSQL. Each checks its input and what it would collide
//! with before writing (so errors name the field), and runs in one transaction (so a
//! failure writes nothing).

pub(crate) mod agents;
pub(crate) mod audit;
pub(crate) mod directory;
pub(crate) mod import;
pub(crate) mod seed;
pub(crate) mod tokens;
pub(crate) mod users;
pub(crate) mod workspaces;

use super::db::{Tx, params};
use super::error::StoreError;
use crate::services::control::valid_name;
use uuid::Uuid;

/// The key of the PostgreSQL advisory lock every control-plane write holds ("agentwrt").
const WRITE_LOCK: i64 = 0x6167_656e_7477_7274;

/// Serializes control-plane writes. Operations check before they write (so errors name
/// the field); on PostgreSQL two transactions could otherwise both pass a check (two
/// servers starting together both creating the first admin). SQLite's `BEGIN IMMEDIATE`
/// already serializes writers. Writes are an admin's commands: rare, so one at a time
/// costs nothing.
pub(crate) async fn serialize_writes(tx: &mut dyn Tx) -> Result<(), StoreError> {
    if tx.backend() == super::db::Backend::Postgres {
        tx.execute("SELECT pg_advisory_xact_lock($1)", params![WRITE_LOCK])
            .await?;
    }
    Ok(())
}

/// Marks the control-plane tables changed; returns the new version. Every write to
/// users, tokens, workspaces, shares or agents calls this in its transaction.
pub(crate) async fn bump_version(tx: &mut dyn Tx) -> Result<i64, StoreError> {
    let row = tx
        .query_one(
            "UPDATE control_version SET version = version + 1 WHERE id = 1 RETURNING version",
            vec![],
        )
        .await?;
    Ok(row.i64(0)?)
}

/// The control-plane version (see [`bump_version`]).
pub(crate) async fn version(tx: &mut dyn Tx) -> Result<i64, StoreError> {
    let row = tx
        .query_one("SELECT version FROM control_version WHERE id = 1", vec![])
        .await?;
    Ok(row.i64(0)?)
}

/// A 400 unless `value` is a valid name (letters, digits, `-`, `_`, 1–64 characters).
pub(crate) fn check_name(field: &'static str, what: &str, value: &str) -> Result<(), StoreError> {
    if valid_name(value) {
        return Ok(());
    }
    let shown: String = value.chars().take(80).collect();
    Err(StoreError::invalid(
        field,
        format!("{what} name {shown:?} is not valid: use 1 to 64 letters, digits, '-' or '_'"),
    ))
}

/// A user's id by name.
pub(crate) async fn user_id(
    tx: &mut dyn Tx,
    field: &'static str,
    name: &str,
) -> Result<Uuid, StoreError> {
    check_name(field, "user", name)?;
    let row = tx
        .query_opt("SELECT id FROM users WHERE name = $1", params![name])
        .await?;
    match row {
        Some(r) => Ok(r.uuid(0)?),
        None => Err(StoreError::NotFound(format!("user {name:?} not found"))),
    }
}

/// `owner/name` split and checked; `field` names the input in errors.
pub(crate) fn split_full(field: &'static str, full: &str) -> Result<(String, String), StoreError> {
    let Some((owner, name)) = full.trim().split_once('/') else {
        return Err(StoreError::invalid(
            field,
            format!("{full:?}: name the workspace as OWNER/NAME"),
        ));
    };
    check_name(field, "owner", owner)?;
    check_name(field, "workspace", name)?;
    Ok((owner.to_string(), name.to_string()))
}

/// A workspace's id by `owner` and `name`.
pub(crate) async fn workspace_id(
    tx: &mut dyn Tx,
    owner: &str,
    name: &str,
) -> Result<Uuid, StoreError> {
    let row = tx
        .query_opt(
            "SELECT w.id FROM workspaces w JOIN users o ON o.id = w.owner_id \
             WHERE o.name = $1 AND w.name = $2",
            params![owner, name],
        )
        .await?;
    match row {
        Some(r) => Ok(r.uuid(0)?),
        None => Err(StoreError::NotFound(format!(
            "workspace {owner}/{name} not found"
        ))),
    }
}

/// `true` when `ms` is set and not after `now`.
pub(crate) fn passed(ms: Option<i64>, now: i64) -> bool {
    ms.is_some_and(|t| t <= now)
}
