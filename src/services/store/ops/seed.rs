//! What `serve` puts in the store at start: the embedded default's demo user, workspace
//! and agent (created once, reused after), and an admin when there is none.

use super::super::db::{Tx, params};
use super::super::error::StoreError;
use super::agents::AgentSel;
use super::tokens::{TokenFor, insert_digest, issue};
use super::{user_id, users, workspace_id, workspaces};
use crate::services::control::{derived_workspace_id, generate_token, token_digest};
use crate::wire::addr::NodeId;

/// The demo workspace's name.
pub const DEMO_WORKSPACE: &str = "demo";
/// The demo agent's name.
pub const DEMO_AGENT: &str = "main";
/// The name of the in-process agent's token (replaced at every start).
const EMBEDDED_TOKEN: &str = "embedded agent";

/// Inputs for [`demo`].
#[derive(Debug, Clone)]
pub struct DemoSeed {
    /// The demo user's name.
    pub user: String,
    /// A token the operator chose (`--token`): made valid for the user whatever happened
    /// to it before.
    pub chosen_token: Option<String>,
    /// The token kept in the data directory from an earlier start, if any.
    pub kept_token: Option<String>,
    /// The agent id kept in the data directory, used when the agent is first created.
    pub kept_agent_id: Option<NodeId>,
    /// The in-process agent's token for this run.
    pub agent_token: String,
}

/// What [`demo`] found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoState {
    /// The user was created now (first start).
    pub created: bool,
    /// The agent's node id.
    pub agent_id: NodeId,
    /// A token generated now for the user, to keep in the data directory.
    pub new_token: Option<String>,
    /// The kept token no longer opens anything (revoked, expired or deleted by an admin);
    /// it is not brought back.
    pub kept_token_stale: bool,
}

async fn token_state(
    tx: &mut dyn Tx,
    token: &str,
    now: i64,
) -> Result<Option<(Option<uuid::Uuid>, bool)>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT user_id, revoked_ms IS NULL AND (expires_ms IS NULL OR expires_ms > $2) \
             FROM tokens WHERE digest = $1",
            params![&token_digest(token)[..], now],
        )
        .await?;
    match row {
        Some(r) => Ok(Some((r.opt_uuid(0)?, r.bool(1)?))),
        None => Ok(None),
    }
}

/// Creates the demo user, workspace and agent if missing, and sets up their tokens.
pub(crate) async fn demo(
    tx: &mut dyn Tx,
    seed: &DemoSeed,
    now: i64,
) -> Result<DemoState, StoreError> {
    let created = !users::exists(tx, &seed.user).await?;
    if created {
        users::create(tx, &seed.user, false, None, now).await?;
    }
    let uid = user_id(tx, "user", &seed.user).await?;
    let ws_id = match workspace_id(tx, &seed.user, DEMO_WORKSPACE).await {
        Ok(id) => id,
        Err(StoreError::NotFound(_)) => {
            let id = derived_workspace_id(&format!("{}/{DEMO_WORKSPACE}", seed.user));
            let id = tx
                .query_opt("SELECT 1 FROM workspaces WHERE id = $1", params![id])
                .await?
                .is_none()
                .then_some(id);
            workspaces::create(tx, &seed.user, DEMO_WORKSPACE, &[], id, now).await?
        }
        Err(e) => return Err(e),
    };
    let existing = tx
        .query_opt(
            "SELECT id FROM agents WHERE workspace_id = $1 AND name = $2",
            params![ws_id, DEMO_AGENT],
        )
        .await?;
    let agent_id = match existing {
        Some(r) => NodeId(r.uuid(0)?),
        None => {
            let mut id = seed.kept_agent_id.unwrap_or_else(NodeId::random);
            if tx
                .query_opt("SELECT 1 FROM agents WHERE id = $1", params![id.0])
                .await?
                .is_some()
            {
                id = NodeId::random();
            }
            let full = format!("{}/{DEMO_WORKSPACE}", seed.user);
            super::agents::insert(tx, ws_id, &full, DEMO_AGENT, id, "name", now).await?;
            id
        }
    };
    tx.execute(
        "DELETE FROM tokens WHERE agent_id = $1 AND name = $2",
        params![agent_id.0, EMBEDDED_TOKEN],
    )
    .await?;
    insert_digest(
        tx,
        &TokenFor::Agent(AgentSel::Id(agent_id)),
        &token_digest(&seed.agent_token),
        EMBEDDED_TOKEN,
        false,
        None,
        now,
    )
    .await?;

    let holder = TokenFor::User(seed.user.clone());
    let mut state = DemoState {
        created,
        agent_id,
        new_token: None,
        kept_token_stale: false,
    };
    if let Some(t) = &seed.chosen_token {
        match token_state(tx, t, now).await? {
            None => {
                insert_digest(
                    tx,
                    &holder,
                    &token_digest(t),
                    "chosen at start",
                    false,
                    None,
                    now,
                )
                .await?;
            }
            Some((Some(owner), _)) if owner == uid => {
                tx.execute(
                    "UPDATE tokens SET revoked_ms = NULL, expires_ms = NULL WHERE digest = $1",
                    params![&token_digest(t)[..]],
                )
                .await?;
            }
            Some(_) => {
                return Err(StoreError::conflict(
                    "token",
                    "the chosen token already belongs to another user or an agent",
                ));
            }
        }
        return Ok(state);
    }
    match &seed.kept_token {
        Some(t) => match token_state(tx, t, now).await? {
            Some((Some(owner), true)) if owner == uid => {}
            None if created => {
                insert_digest(tx, &holder, &token_digest(t), "demo", false, None, now).await?;
            }
            _ => state.kept_token_stale = true,
        },
        None => {
            let t = generate_token();
            insert_digest(tx, &holder, &token_digest(&t), "demo", false, None, now).await?;
            state.new_token = Some(t);
        }
    }
    Ok(state)
}

/// When no user is an admin, creates one (`admin`, or `admin-2`, … if taken) and returns
/// its name and a fresh token.
pub(crate) async fn admin(
    tx: &mut dyn Tx,
    now: i64,
) -> Result<Option<(String, String)>, StoreError> {
    let n = tx
        .query_one("SELECT count(*) FROM users WHERE admin", vec![])
        .await?
        .i64(0)?;
    if n > 0 {
        return Ok(None);
    }
    let mut name = "admin".to_string();
    let mut i = 1;
    while users::exists(tx, &name).await? {
        i += 1;
        name = format!("admin-{i}");
    }
    users::create(tx, &name, true, None, now).await?;
    let t = issue(tx, &TokenFor::User(name.clone()), "bootstrap", None, now).await?;
    Ok(Some((name, t.token)))
}
