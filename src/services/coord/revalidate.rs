//! Re-checking live streams after the control plane changed (a token revoked, an agent
//! or workspace deleted, a share withdrawn), and periodically for tokens that expired:
//! each stream's token is authenticated again and each user stream's granted agents
//! looked up again; the registry then closes what may no longer stay open, with a reason.
//!
//! A lookup that fails (the store is down) leaves the streams as they are until the next
//! round: an outage of the database must not close every stream.

use super::Shared;
use crate::runtime::clock;
use crate::services::control::Principal;
use crate::wire::addr::NodeId;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often streams are re-checked without a change (tokens that expire).
pub(super) const EVERY: Duration = Duration::from_secs(30);

/// Runs until the coordinator shuts down or the control plane goes away.
pub(super) async fn watch(shared: Arc<Shared>, mut changes: watch::Receiver<u64>) {
    let first = tokio::time::Instant::from_std(clock::now()) + EVERY;
    let mut tick = tokio::time::interval_at(first, EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
            () = shared.cancel.cancelled() => return,
        }
        if let Err(e) = revalidate(&shared).await {
            tracing::debug!(error = %e, "coordinator streams not re-checked; will retry");
        }
    }
}

fn same(then: &Principal, now: &Principal) -> bool {
    match (then, now) {
        (Principal::User(a), Principal::User(b)) => a.name == b.name,
        (Principal::Agent { agent_id: a, .. }, Principal::Agent { agent_id: b, .. }) => a == b,
        (Principal::Service, Principal::Service) => true,
        _ => false,
    }
}

/// One round; see the module docs.
async fn revalidate(shared: &Shared) -> Result<(), crate::services::control::ControlError> {
    let streams: Vec<_> = shared
        .hub()
        .conns
        .iter()
        .map(|(conn, tx)| (*conn, tx.creds.clone()))
        .collect();
    let mut principals: HashMap<&str, Option<Principal>> = HashMap::new();
    let mut workspaces: HashMap<NodeId, Option<crate::services::control::Workspace>> =
        HashMap::new();
    let mut revoked = Vec::new();
    let mut regrant = Vec::new();
    for (conn, creds) in &streams {
        if matches!(creds.principal, Principal::Service) {
            continue;
        }
        let now = match principals.get(creds.token.as_str()) {
            Some(p) => p.clone(),
            None => {
                let p = shared.control.authenticate(&creds.token).await?;
                principals.insert(&creds.token, p.clone());
                p
            }
        };
        let Some(now) = now.filter(|p| same(&creds.principal, p)) else {
            revoked.push(*conn);
            continue;
        };
        let Principal::User(user) = &now else {
            continue;
        };
        for agent in creds.grants.agents() {
            let ws = match workspaces.get(&agent) {
                Some(w) => w.clone(),
                None => {
                    let w = shared.control.workspace_by_agent(agent).await?;
                    workspaces.insert(agent, w.clone());
                    w
                }
            };
            let allowed = ws.is_some_and(|w| w.may_use(user));
            if !allowed {
                regrant.push((creds.grants.clone(), agent));
            }
        }
    }
    for (grants, agent) in regrant {
        grants.set(agent, false);
    }
    if revoked.is_empty() && streams.is_empty() {
        return Ok(());
    }
    let now = clock::now();
    shared.with_registry(|r| {
        for conn in revoked {
            r.revoke(conn, "token revoked, expired or deleted", now);
        }
        r.reauthorize(now);
    });
    Ok(())
}
