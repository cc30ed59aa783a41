//! Grant and client administration, shared by the `agentwire admin oauth` commands, the
//! JSON API and the connected-apps page: listing what exists and revoking it.

use super::store::{GrantFilter, OAuthStore, StoreError};
use crate::proto::oauth::UnixTime;
use crate::proto::oauth::records::{ClientRecord, GrantRecord};
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;

/// A grant as shown to admins and users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantView {
    /// Its id (what `revoke` takes).
    pub id: String,
    /// The client.
    pub client_id: String,
    /// The client's name, if it has one and still exists.
    pub client_name: Option<String>,
    /// The user.
    pub user: String,
    /// The scope.
    pub scope: String,
    /// The resource tokens are for.
    pub resource: String,
    /// `active`, `revoked` or `expired`.
    pub status: &'static str,
    /// When the user consented (Unix seconds).
    pub created_at: u64,
    /// When tokens were last issued.
    pub refreshed_at: u64,
    /// When the refresh token lapses unused.
    pub refresh_expires_at: u64,
    /// When it was revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_reason: Option<String>,
}

impl GrantView {
    /// The view of `g` at `now` (access tokens living `access_ttl`), naming its client
    /// from `names`.
    pub fn new(
        g: &GrantRecord,
        names: &HashMap<String, Option<String>>,
        now: UnixTime,
        access_ttl: Duration,
    ) -> Self {
        let status = match &g.revoked {
            Some(_) => "revoked",
            None if !g.is_live(now, access_ttl) => "expired",
            None => "active",
        };
        Self {
            id: g.id.clone(),
            client_id: g.client_id.clone(),
            client_name: names.get(&g.client_id).cloned().flatten(),
            user: g.user.clone(),
            scope: g.scope.clone(),
            resource: g.resource.clone(),
            status,
            created_at: g.created_at.0,
            refreshed_at: g.refreshed_at.0,
            refresh_expires_at: g.refresh_expires_at.0,
            revoked_at: g.revoked.as_ref().map(|r| r.at.0),
            revoked_reason: g.revoked.as_ref().map(|r| r.reason.clone()),
        }
    }
}

/// A client as shown to admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientView {
    /// Its id.
    pub client_id: String,
    /// Its name.
    pub name: Option<String>,
    /// `registered` or `metadata_document`.
    pub source: &'static str,
    /// Its token endpoint authentication.
    pub auth_method: &'static str,
    /// Its redirect URIs.
    pub redirect_uris: Vec<String>,
    /// When it registered (or was first fetched).
    pub created_at: u64,
    /// Grants that are not revoked.
    pub live_grants: usize,
}

/// Grants matching `filter`, newest first, with their clients' names.
///
/// # Errors
/// The store failed.
pub async fn grants(
    store: &dyn OAuthStore,
    filter: &GrantFilter,
    now: UnixTime,
    access_ttl: Duration,
) -> Result<Vec<GrantView>, StoreError> {
    let names: HashMap<String, Option<String>> = store
        .clients()
        .await?
        .into_iter()
        .map(|c| (c.client_id, c.name))
        .collect();
    Ok(store
        .grants(filter)
        .await?
        .iter()
        .map(|g| GrantView::new(g, &names, now, access_ttl))
        .collect())
}

/// Every client, with how many live grants each has.
///
/// # Errors
/// The store failed.
pub async fn clients(store: &dyn OAuthStore) -> Result<Vec<ClientView>, StoreError> {
    let live = store.grants(&GrantFilter::default()).await?;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for g in &live {
        *counts.entry(g.client_id.as_str()).or_default() += 1;
    }
    Ok(store
        .clients()
        .await?
        .iter()
        .map(|c: &ClientRecord| ClientView {
            client_id: c.client_id.clone(),
            name: c.name.clone(),
            source: c.source.as_str(),
            auth_method: c.auth_method.as_str(),
            redirect_uris: c.redirect_uris.clone(),
            created_at: c.created_at.0,
            live_grants: counts.get(c.client_id.as_str()).copied().unwrap_or(0),
        })
        .collect())
}
