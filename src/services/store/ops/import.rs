//! Loading a `control.toml` (the format `--config` has always read) into the store.
//!
//! The file is validated as a whole first (the same rules as ever). Then, in one
//! transaction: users are added or have their admin flag set; workspaces are added and
//! their shares set to exactly the file's list; agents are added; every token the file
//! lists is stored (as its digest), and tokens an earlier import of a file added for
//! the same users and agents but this file no longer lists are revoked. What the file
//! does not mention (users, workspaces, agents and tokens made with `agentwire admin`)
//! is left alone, so importing the same file at every start changes nothing.

use super::super::db::{Tx, params};
use super::super::error::StoreError;
use super::super::model::ImportReport;
use super::agents::AgentSel;
use super::tokens::{TokenFor, insert_digest};
use super::{user_id, users, workspace_id, workspaces};
use crate::services::control::{
    ConfigError, ControlConfig, InMemoryControlPlane, Secret, derived_workspace_id,
};
use crate::wire::addr::NodeId;
use std::collections::BTreeSet;
use uuid::Uuid;

/// The name imported tokens get.
pub(crate) const IMPORTED: &str = "control.toml";

/// The digest an entry gives (the file was validated, so it is well formed).
fn digest_of(hashed: Option<&str>, plain: Option<&Secret>) -> Option<[u8; 32]> {
    crate::services::control::config_token_digest("import", hashed, plain)
        .ok()
        .flatten()
}

/// Stores `digest` for `holder` (or re-activates an imported one), returning whether it
/// was added.
async fn keep_token(
    tx: &mut dyn Tx,
    holder: &TokenFor,
    who: &str,
    digest: &[u8; 32],
    now: i64,
) -> Result<bool, StoreError> {
    let (user, agent) = match holder {
        TokenFor::User(name) => (Some(user_id(tx, "config", name).await?), None),
        TokenFor::Agent(AgentSel::Id(id)) => (None, Some(id.0)),
        TokenFor::Agent(_) => return Err(StoreError::Internal("import by agent id only".into())),
    };
    let found = tx
        .query_opt(
            "SELECT user_id, agent_id, imported FROM tokens WHERE digest = $1",
            params![&digest[..]],
        )
        .await?;
    match found {
        None => {
            insert_digest(tx, holder, digest, IMPORTED, true, None, now).await?;
            Ok(true)
        }
        Some(r) if r.opt_uuid(0)? == user && r.opt_uuid(1)? == agent => {
            if r.bool(2)? {
                tx.execute(
                    "UPDATE tokens SET revoked_ms = NULL WHERE digest = $1",
                    params![&digest[..]],
                )
                .await?;
            }
            Ok(false)
        }
        Some(_) => Err(StoreError::conflict(
            "config",
            format!("the token the file gives {who} already belongs to someone else"),
        )),
    }
}

/// Revokes tokens an earlier import added for this holder that the file no longer lists.
async fn revoke_dropped(
    tx: &mut dyn Tx,
    column: &str,
    holder: Uuid,
    keep: &[u8; 32],
    now: i64,
) -> Result<u64, StoreError> {
    let sql = format!(
        "UPDATE tokens SET revoked_ms = $3 WHERE {column} = $1 AND imported \
         AND revoked_ms IS NULL AND digest <> $2"
    );
    Ok(tx.execute(&sql, params![holder, &keep[..], now]).await?)
}

/// Imports `cfg`; see the module docs.
pub(crate) async fn import(
    tx: &mut dyn Tx,
    cfg: &ControlConfig,
    now: i64,
) -> Result<ImportReport, StoreError> {
    InMemoryControlPlane::from_config(cfg.clone()).map_err(|e| match e {
        ConfigError::Invalid(m) => StoreError::invalid("config", m),
        other => StoreError::invalid("config", other.to_string()),
    })?;
    let mut report = ImportReport::default();
    for u in &cfg.users {
        if users::exists(tx, &u.name).await? {
            let id = user_id(tx, "config", &u.name).await?;
            let changed = tx
                .execute(
                    "UPDATE users SET admin = $2 WHERE id = $1 AND admin <> $2",
                    params![id, u.admin],
                )
                .await?;
            report.users_updated += changed;
        } else {
            users::create(tx, &u.name, u.admin, None, now).await?;
            report.users_created += 1;
        }
        let Some(d) = digest_of(u.token_sha256.as_deref(), u.token.as_ref()) else {
            continue;
        };
        let holder = TokenFor::User(u.name.clone());
        if keep_token(tx, &holder, &format!("user {}", u.name), &d, now).await? {
            report.tokens_added += 1;
        }
        let id = user_id(tx, "config", &u.name).await?;
        report.tokens_revoked += revoke_dropped(tx, "user_id", id, &d, now).await?;
    }
    for w in &cfg.workspaces {
        let full = format!("{}/{}", w.owner, w.name);
        let ws_id = match workspace_id(tx, &w.owner, &w.name).await {
            Ok(id) => {
                let want: BTreeSet<&String> = w.shared_with.iter().collect();
                let have: BTreeSet<String> = tx
                    .query(
                        "SELECT u.name FROM workspace_shares s JOIN users u ON u.id = s.user_id \
                         WHERE s.workspace_id = $1",
                        params![id],
                    )
                    .await?
                    .iter()
                    .map(|r| r.text(0))
                    .collect::<Result<_, _>>()?;
                let mut changed = false;
                for u in have.iter().filter(|u| !want.contains(u)) {
                    workspaces::unshare(tx, &w.owner, &w.name, u).await?;
                    changed = true;
                }
                for u in want.iter().filter(|u| !have.contains(**u)) {
                    workspaces::share(tx, &w.owner, &w.name, u).await?;
                    changed = true;
                }
                report.shares_changed += u64::from(changed);
                id
            }
            Err(StoreError::NotFound(_)) => {
                let id = w.id.unwrap_or_else(|| derived_workspace_id(&full));
                report.workspaces_created += 1;
                workspaces::create(tx, &w.owner, &w.name, &w.shared_with, Some(id), now).await?
            }
            Err(e) => return Err(e),
        };
        for a in &w.agents {
            import_agent(tx, ws_id, &full, &a.name, a.id, &mut report, now).await?;
            let Some(d) = digest_of(a.token_sha256.as_deref(), a.token.as_ref()) else {
                continue;
            };
            let holder = TokenFor::Agent(AgentSel::Id(a.id));
            let who = format!("agent {full}.{}", a.name);
            if keep_token(tx, &holder, &who, &d, now).await? {
                report.tokens_added += 1;
            }
            report.tokens_revoked += revoke_dropped(tx, "agent_id", a.id.0, &d, now).await?;
        }
    }
    Ok(report)
}

async fn import_agent(
    tx: &mut dyn Tx,
    ws_id: Uuid,
    full: &str,
    name: &str,
    id: NodeId,
    report: &mut ImportReport,
    now: i64,
) -> Result<(), StoreError> {
    let existing = tx
        .query_opt(
            "SELECT workspace_id, name FROM agents WHERE id = $1",
            params![id.0],
        )
        .await?;
    match existing {
        Some(r) if r.uuid(0)? == ws_id && r.text(1)? == name => Ok(()),
        Some(_) => Err(StoreError::conflict(
            "config",
            format!("agent id {id} ({full}.{name} in the file) is already another agent"),
        )),
        None => {
            super::agents::insert(tx, ws_id, full, name, id, "config", now).await?;
            report.agents_created += 1;
            Ok(())
        }
    }
}
