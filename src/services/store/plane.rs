//! [`ControlPlane`] over the store: answers from the cache, the database on a miss.

use super::cache::{TokenEntry, WsKey};
use super::db::{Mode, script};
use super::ops::directory::{self, Holder, WsFilter};
use super::{Inner, Store, now_ms, ops};
use crate::runtime::clock;
use crate::services::control::{
    BoxFuture, ControlError, ControlPlane, MetricFamily, Principal, ResolveError, ResolvedAgent,
    ToolCallRecord, User, Workspace, WorkspaceSpec, ct_eq, select_agent, token_digest,
};
use crate::wire::addr::NodeId;
use std::sync::atomic::Ordering;
use uuid::Uuid;

/// Longest token looked up; anything longer is no token of ours.
const MAX_TOKEN_LEN: usize = 512;

impl Inner {
    fn is_service(&self, digest: &[u8; 32]) -> bool {
        let s = self.service.read().unwrap_or_else(|e| e.into_inner());
        s.as_ref().is_some_and(|s| ct_eq(s, digest))
    }

    fn touch(&self, id: Uuid, now_ms: i64) {
        self.last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, now_ms);
    }

    pub(super) async fn authenticate(
        &self,
        token: &str,
    ) -> Result<Option<Principal>, ControlError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Ok(None);
        }
        let digest = token_digest(token);
        if self.is_service(&digest) {
            return Ok(Some(Principal::Service));
        }
        let now = clock::now();
        let entry = match self.cache.token(&digest, now) {
            Some(e) => e,
            None => {
                let epoch = self.cache.epoch();
                let found = self
                    .db
                    .run(
                        Mode::Read,
                        script(move |tx| {
                            Box::pin(async move { directory::token(tx, &digest).await })
                        }),
                    )
                    .await
                    .inspect_err(|_| self.count_error())?;
                let entry = match found {
                    None => TokenEntry::Unknown { at: now },
                    Some(f) => TokenEntry::Known {
                        id: f.id,
                        principal: (!f.revoked).then_some(match f.holder {
                            Holder::User(u) => Principal::User(u),
                            Holder::Agent(agent_id, workspace) => Principal::Agent {
                                agent_id,
                                workspace,
                            },
                        }),
                        expires_ms: f.expires_ms,
                    },
                };
                self.cache.put_token(epoch, digest, entry.clone());
                entry
            }
        };
        match entry {
            TokenEntry::Known {
                id,
                principal: Some(p),
                expires_ms,
            } => {
                let now_ms = now_ms();
                if ops::passed(expires_ms, now_ms) {
                    return Ok(None);
                }
                self.touch(id, now_ms);
                Ok(Some(p))
            }
            _ => Ok(None),
        }
    }

    pub(super) async fn workspace(&self, key: WsKey) -> Result<Option<Workspace>, ControlError> {
        if let Some(hit) = self.cache.workspace(&key) {
            return Ok(hit);
        }
        let epoch = self.cache.epoch();
        let filter = match &key {
            WsKey::Named(o, n) => WsFilter::Named(o.clone(), n.clone()),
            WsKey::Id(id) => WsFilter::Id(*id),
            WsKey::Agent(a) => WsFilter::Agent(a.0),
        };
        let ws = self
            .db
            .run(
                Mode::Read,
                script(move |tx| Box::pin(async move { directory::workspace(tx, &filter).await })),
            )
            .await
            .inspect_err(|_| self.count_error())?;
        self.cache.put_workspace(epoch, key, ws.clone());
        Ok(ws)
    }

    async fn resolve(&self, user: &User, spec: &str) -> Result<ResolvedAgent, ResolveError> {
        let spec = WorkspaceSpec::parse(spec)?;
        let owner = spec.owner.unwrap_or_else(|| user.name.clone());
        let full = format!("{owner}/{}", spec.name);
        let ws = self
            .workspace(WsKey::Named(owner, spec.name))
            .await?
            .ok_or_else(|| ResolveError::NotFound {
                workspace: full.clone(),
            })?;
        if !ws.may_use(user) {
            return Err(ResolveError::Forbidden { workspace: full });
        }
        let agent = select_agent(&ws, spec.agent.as_deref())?;
        Ok(ResolvedAgent {
            workspace: ws,
            agent,
        })
    }

    async fn list(&self, user: &User, owner: Option<&str>) -> Result<Vec<Workspace>, ControlError> {
        let filter = match (user.admin, owner) {
            (true, None) => WsFilter::All,
            (true, Some(o)) => WsFilter::Owner(o.to_string()),
            (false, o) => WsFilter::VisibleTo {
                user: user.name.clone(),
                owner: o.map(str::to_string),
            },
        };
        self.db
            .run(
                Mode::Read,
                script(move |tx| Box::pin(async move { directory::workspaces(tx, &filter).await })),
            )
            .await
            .inspect_err(|_| self.count_error())
            .map_err(ControlError::from)
    }

    fn metrics(&self) -> Vec<MetricFamily> {
        let (hits, misses) = self.cache.stats();
        let a = self.audit.stats();
        let counter = |name, help, v: u64| MetricFamily {
            name,
            help,
            kind: "counter",
            samples: vec![(String::new(), v as f64)],
        };
        vec![
            counter(
                "agentwire_store_cache_hits_total",
                "Token and workspace lookups answered from the store's cache.",
                hits,
            ),
            counter(
                "agentwire_store_cache_misses_total",
                "Token and workspace lookups that went to the database.",
                misses,
            ),
            counter(
                "agentwire_store_errors_total",
                "Database transactions that failed (the database was unavailable or refused).",
                self.errors.load(Ordering::Relaxed),
            ),
            counter(
                "agentwire_audit_records_total",
                "Tool-call records written to the audit log.",
                a.written,
            ),
            counter(
                "agentwire_audit_batches_total",
                "Transactions that wrote audit records (a batch waits up to 100 ms for more).",
                a.batches,
            ),
            MetricFamily {
                name: "agentwire_audit_dropped_total",
                help: "Tool-call records dropped: the queue was full, or the database kept failing.",
                kind: "counter",
                samples: vec![
                    ("reason=\"queue_full\"".into(), a.dropped_queue_full as f64),
                    (
                        "reason=\"store_error\"".into(),
                        a.dropped_store_error as f64,
                    ),
                ],
            },
            MetricFamily {
                name: "agentwire_audit_queue",
                help: "Tool-call records waiting to be written.",
                kind: "gauge",
                samples: vec![(String::new(), a.pending as f64)],
            },
        ]
    }
}

impl ControlPlane for Store {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<Principal>, ControlError>> {
        Box::pin(self.inner.authenticate(token))
    }

    fn list_workspaces<'a>(
        &'a self,
        user: &'a User,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Workspace>, ControlError>> {
        Box::pin(self.inner.list(user, owner))
    }

    fn resolve_workspace<'a>(
        &'a self,
        user: &'a User,
        spec: &'a str,
    ) -> BoxFuture<'a, Result<ResolvedAgent, ResolveError>> {
        Box::pin(self.inner.resolve(user, spec))
    }

    fn may_use_agent<'a>(
        &'a self,
        principal: &'a Principal,
        agent_id: NodeId,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            // Fails closed: a store that cannot answer allows nothing.
            match self.inner.workspace(WsKey::Agent(agent_id)).await {
                Ok(ws) => principal.may_use_agent_of(ws.as_ref()),
                Err(_) => false,
            }
        })
    }

    fn workspace_by_id<'a>(
        &'a self,
        id: Uuid,
    ) -> BoxFuture<'a, Result<Option<Workspace>, ControlError>> {
        Box::pin(self.inner.workspace(WsKey::Id(id)))
    }

    fn workspace_by_agent<'a>(
        &'a self,
        agent_id: NodeId,
    ) -> BoxFuture<'a, Result<Option<Workspace>, ControlError>> {
        Box::pin(self.inner.workspace(WsKey::Agent(agent_id)))
    }

    fn audit(&self, record: ToolCallRecord) {
        self.inner.audit.push(record);
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.inner.changes.subscribe())
    }

    fn metrics(&self) -> Vec<MetricFamily> {
        self.inner.metrics()
    }
}
