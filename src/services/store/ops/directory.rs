//! Reads behind the `ControlPlane` answers: who holds a token digest, and workspaces with
//! their shares and agents (three queries for any number of workspaces).

use super::super::db::{Tx, Value, params};
use super::super::error::StoreError;
use crate::services::control::{Agent, User, Workspace};
use crate::wire::addr::NodeId;
use std::collections::HashMap;
use uuid::Uuid;

/// Which workspaces to load.
#[derive(Debug, Clone)]
pub(crate) enum WsFilter {
    /// Every workspace.
    All,
    /// Those owned by this user.
    Owner(String),
    /// `owner/name`.
    Named(String, String),
    /// By id.
    Id(Uuid),
    /// The one holding this agent.
    Agent(Uuid),
    /// Those this (non-admin) user owns or has been shared, optionally of one owner.
    VisibleTo {
        /// The user.
        user: String,
        /// Only this owner's.
        owner: Option<String>,
    },
}

impl WsFilter {
    /// A condition over `workspaces w JOIN users o ON o.id = w.owner_id`.
    fn clause(&self) -> (&'static str, Vec<Value>) {
        match self {
            Self::All => ("1 = 1", vec![]),
            Self::Owner(o) => ("o.name = $1", params![o]),
            Self::Named(o, n) => ("o.name = $1 AND w.name = $2", params![o, n]),
            Self::Id(id) => ("w.id = $1", params![*id]),
            Self::Agent(a) => (
                "w.id IN (SELECT ag.workspace_id FROM agents ag WHERE ag.id = $1)",
                params![*a],
            ),
            Self::VisibleTo { user, owner: None } => (
                "(o.name = $1 OR w.id IN (SELECT s.workspace_id FROM workspace_shares s \
                 JOIN users su ON su.id = s.user_id WHERE su.name = $1))",
                params![user],
            ),
            Self::VisibleTo {
                user,
                owner: Some(owner),
            } => (
                "o.name = $2 AND (o.name = $1 OR w.id IN (SELECT s.workspace_id FROM \
                 workspace_shares s JOIN users su ON su.id = s.user_id WHERE su.name = $1))",
                params![user, owner],
            ),
        }
    }
}

/// A workspace and the times the admin view shows.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub workspace: Workspace,
    pub created_ms: i64,
    /// Agent id → created, in `workspace.agents` order.
    pub agents_created: Vec<i64>,
}

/// Loads the workspaces `filter` selects, ordered by owner then name (byte order, the
/// same on both backends), each with its shares and agents ordered by name.
pub(crate) async fn load(tx: &mut dyn Tx, filter: &WsFilter) -> Result<Vec<Loaded>, StoreError> {
    let (cond, p) = filter.clause();
    let from = "FROM workspaces w JOIN users o ON o.id = w.owner_id";
    let rows = tx
        .query(
            &format!("SELECT w.id, w.name, o.name, w.created_ms {from} WHERE {cond}"),
            p.clone(),
        )
        .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(rows.len());
    let mut index = HashMap::with_capacity(rows.len());
    for r in &rows {
        let id = r.uuid(0)?;
        index.insert(id, out.len());
        out.push(Loaded {
            workspace: Workspace {
                id,
                name: r.text(1)?,
                owner: r.text(2)?,
                shared_with: Vec::new(),
                agents: Vec::new(),
            },
            created_ms: r.i64(3)?,
            agents_created: Vec::new(),
        });
    }
    let ids = format!("SELECT w.id {from} WHERE {cond}");
    let shares = tx
        .query(
            &format!(
                "SELECT s.workspace_id, u.name FROM workspace_shares s \
                 JOIN users u ON u.id = s.user_id WHERE s.workspace_id IN ({ids})"
            ),
            p.clone(),
        )
        .await?;
    for r in &shares {
        if let Some(&i) = index.get(&r.uuid(0)?) {
            out[i].workspace.shared_with.push(r.text(1)?);
        }
    }
    let agents = tx
        .query(
            &format!(
                "SELECT a.workspace_id, a.id, a.name, a.created_ms FROM agents a \
                 WHERE a.workspace_id IN ({ids})"
            ),
            p,
        )
        .await?;
    let mut per: HashMap<usize, Vec<(Agent, i64)>> = HashMap::new();
    for r in &agents {
        if let Some(&i) = index.get(&r.uuid(0)?) {
            per.entry(i).or_default().push((
                Agent {
                    id: NodeId(r.uuid(1)?),
                    name: r.text(2)?,
                },
                r.i64(3)?,
            ));
        }
    }
    for (i, mut list) in per {
        list.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let (agents, created): (Vec<_>, Vec<_>) = list.into_iter().unzip();
        out[i].workspace.agents = agents;
        out[i].agents_created = created;
    }
    for l in &mut out {
        l.workspace.shared_with.sort();
    }
    out.sort_by(|a, b| {
        (&a.workspace.owner, &a.workspace.name).cmp(&(&b.workspace.owner, &b.workspace.name))
    });
    Ok(out)
}

/// Loads workspaces without the admin details.
pub(crate) async fn workspaces(
    tx: &mut dyn Tx,
    filter: &WsFilter,
) -> Result<Vec<Workspace>, StoreError> {
    Ok(load(tx, filter)
        .await?
        .into_iter()
        .map(|l| l.workspace)
        .collect())
}

/// At most one workspace.
pub(crate) async fn workspace(
    tx: &mut dyn Tx,
    filter: &WsFilter,
) -> Result<Option<Workspace>, StoreError> {
    Ok(workspaces(tx, filter).await?.into_iter().next())
}

/// Whose a token digest is.
#[derive(Debug, Clone)]
pub(crate) enum Holder {
    /// A user's token.
    User(User),
    /// An agent's token: its id and workspace.
    Agent(NodeId, Workspace),
}

/// A token found by digest.
#[derive(Debug, Clone)]
pub(crate) struct FoundToken {
    pub id: Uuid,
    pub holder: Holder,
    pub expires_ms: Option<i64>,
    pub revoked: bool,
}

/// The token with this digest, if any.
pub(crate) async fn token(
    tx: &mut dyn Tx,
    digest: &[u8; 32],
) -> Result<Option<FoundToken>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT t.id, t.expires_ms, t.revoked_ms, t.agent_id, u.name, u.admin \
             FROM tokens t LEFT JOIN users u ON u.id = t.user_id WHERE t.digest = $1",
            params![&digest[..]],
        )
        .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let holder = match r.opt_uuid(3)? {
        Some(agent) => {
            let Some(ws) = workspace(tx, &WsFilter::Agent(agent)).await? else {
                return Ok(None);
            };
            Holder::Agent(NodeId(agent), ws)
        }
        None => Holder::User(User {
            name: r.text(4)?,
            admin: r.bool(5)?,
        }),
    };
    Ok(Some(FoundToken {
        id: r.uuid(0)?,
        holder,
        expires_ms: r.opt_i64(1)?,
        revoked: r.opt_i64(2)?.is_some(),
    }))
}
