//! The store's writes and administrative reads: what the admin API and `serve`'s start-up
//! call. Every write runs in one transaction that also bumps the control-plane version,
//! and clears the cache once committed, so the next request sees it.

use super::db::{Mode, Script, script};
use super::error::StoreError;
use super::model::{
    AgentInfo, AuditEntry, AuditFilter, CreatedAgent, ImportReport, IssuedToken, TokenInfo,
    UserInfo, WorkspaceInfo,
};
use super::ops::agents::AgentSel;
use super::ops::tokens::{TokenFilter, TokenFor};
use super::ops::{self, split_full};
use super::{DemoSeed, DemoState, Store, now_ms, password};
use crate::services::control::{ControlConfig, User};
use crate::wire::addr::NodeId;
use std::time::Duration;
use uuid::Uuid;

/// The longest expiry a token may be given.
pub const MAX_EXPIRY: Duration = Duration::from_secs(10 * 366 * 86_400);

/// Whom a new token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenHolder {
    /// A user, by name.
    User(String),
    /// An agent: its id or `owner/workspace[.agent]`.
    Agent(String),
}

fn expiry(expires_in: Option<Duration>, now: i64) -> Result<Option<i64>, StoreError> {
    match expires_in {
        None => Ok(None),
        Some(d) if d.is_zero() || d > MAX_EXPIRY => Err(StoreError::invalid(
            "expires_in",
            "an expiry is between 1 second and 10 years",
        )),
        Some(d) => Ok(Some(now + d.as_millis() as i64)),
    }
}

async fn hash_off_thread(pw: String) -> Result<String, StoreError> {
    tokio::task::spawn_blocking(move || password::hash(&pw))
        .await
        .map_err(|e| StoreError::Internal(format!("hashing task: {e}")))?
}

impl Store {
    async fn read<R: Send + 'static>(&self, f: impl Script<R>) -> Result<R, StoreError> {
        self.inner
            .db
            .run(Mode::Read, f)
            .await
            .inspect_err(|e| self.note(e))
    }

    fn note(&self, e: &StoreError) {
        if matches!(e, StoreError::Unavailable(_) | StoreError::Internal(_)) {
            self.inner.count_error();
        }
    }

    /// Runs a control-plane write: the script, then the version bump, in one transaction;
    /// once committed, the cache is cleared and listeners told.
    async fn write<R: Send + 'static>(&self, f: impl Script<R>) -> Result<R, StoreError> {
        let r = self
            .inner
            .db
            .run(
                Mode::Write,
                script(move |tx| {
                    Box::pin(async move {
                        ops::serialize_writes(&mut *tx).await?;
                        let r = f(&mut *tx).await?;
                        let v = ops::bump_version(tx).await?;
                        Ok((r, v))
                    })
                }),
            )
            .await;
        match r {
            Ok((r, v)) => {
                self.inner.changed(v);
                Ok(r)
            }
            Err(e) => {
                self.note(&e);
                Err(e)
            }
        }
    }

    // ---- users ----

    /// Creates a user, optionally admin, optionally with a password.
    ///
    /// # Errors
    /// 400 for an invalid name or password, 409 for a name in use, 503.
    pub async fn create_user(
        &self,
        name: &str,
        admin: bool,
        password: Option<&str>,
    ) -> Result<UserInfo, StoreError> {
        let hash = match password {
            Some(p) => Some(hash_off_thread(p.to_string()).await?),
            None => None,
        };
        let name = name.to_string();
        self.write(script(move |tx| {
            Box::pin(async move {
                let now = now_ms();
                ops::users::create(tx, &name, admin, hash, now).await?;
                ops::users::info(tx, &name, now).await
            })
        }))
        .await
    }

    /// Every user.
    ///
    /// # Errors
    /// 503.
    pub async fn users(&self) -> Result<Vec<UserInfo>, StoreError> {
        self.read(script(|tx| {
            Box::pin(async move { ops::users::list(tx, now_ms()).await })
        }))
        .await
    }

    /// One user.
    ///
    /// # Errors
    /// 404, 503.
    pub async fn user(&self, name: &str) -> Result<UserInfo, StoreError> {
        let name = name.to_string();
        self.read(script(move |tx| {
            Box::pin(async move { ops::users::info(tx, &name, now_ms()).await })
        }))
        .await
    }

    /// Deletes a user (with `cascade`, also the workspaces they own).
    ///
    /// # Errors
    /// 404, 409 (owns workspaces without `cascade`; the only admin), 503.
    pub async fn delete_user(&self, name: &str, cascade: bool) -> Result<(), StoreError> {
        let name = name.to_string();
        self.write(script(move |tx| {
            Box::pin(async move { ops::users::delete(tx, &name, cascade).await })
        }))
        .await
    }

    /// Sets or clears a user's admin flag.
    ///
    /// # Errors
    /// 404, 409 (the only admin), 503.
    pub async fn set_admin(&self, name: &str, admin: bool) -> Result<UserInfo, StoreError> {
        let name = name.to_string();
        self.write(script(move |tx| {
            Box::pin(async move {
                ops::users::set_admin(tx, &name, admin).await?;
                ops::users::info(tx, &name, now_ms()).await
            })
        }))
        .await
    }

    /// Sets a user's password (argon2id), or clears it with `None`.
    ///
    /// # Errors
    /// 400 for a password out of bounds, 404, 503.
    pub async fn set_password(&self, name: &str, password: Option<&str>) -> Result<(), StoreError> {
        let hash = match password {
            Some(p) => Some(hash_off_thread(p.to_string()).await?),
            None => None,
        };
        let name = name.to_string();
        self.write(script(move |tx| {
            Box::pin(async move { ops::users::set_password(tx, &name, hash).await })
        }))
        .await
    }

    /// The user if `password` is theirs; `None` for an unknown user, a user without a
    /// password, or a wrong one (all three take the same time).
    ///
    /// # Errors
    /// 503.
    pub async fn verify_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<User>, StoreError> {
        let n = name.to_string();
        let found = self
            .read(script(move |tx| {
                Box::pin(async move { ops::users::credentials(tx, &n).await })
            }))
            .await?;
        let pw = password.to_string();
        tokio::task::spawn_blocking(move || match found {
            Some((user, Some(hash))) => password::verify(&hash, &pw).then_some(user),
            _ => {
                password::verify_nothing(&pw);
                None
            }
        })
        .await
        .map_err(|e| StoreError::Internal(format!("password check: {e}")))
    }

    /// Revokes every token of a user; how many.
    ///
    /// # Errors
    /// 404, 503.
    pub async fn revoke_user_tokens(&self, name: &str) -> Result<u64, StoreError> {
        let name = name.to_string();
        self.write(script(move |tx| {
            Box::pin(async move { ops::users::revoke_tokens(tx, &name, now_ms()).await })
        }))
        .await
    }

    // ---- workspaces ----

    /// Creates `owner/name`, shared with `shared_with`.
    ///
    /// # Errors
    /// 400 (invalid name, unknown owner or user), 409 (exists), 503.
    pub async fn create_workspace(
        &self,
        owner: &str,
        name: &str,
        shared_with: &[String],
    ) -> Result<WorkspaceInfo, StoreError> {
        let (owner, name, shared) = (owner.to_string(), name.to_string(), shared_with.to_vec());
        self.write(script(move |tx| {
            Box::pin(async move {
                let now = now_ms();
                ops::workspaces::create(tx, &owner, &name, &shared, None, now).await?;
                ops::workspaces::info(tx, &owner, &name, now).await
            })
        }))
        .await
    }

    /// Workspaces, optionally of one owner.
    ///
    /// # Errors
    /// 404 (unknown owner), 503.
    pub async fn workspaces(&self, owner: Option<&str>) -> Result<Vec<WorkspaceInfo>, StoreError> {
        let owner = owner.map(str::to_string);
        self.read(script(move |tx| {
            Box::pin(async move { ops::workspaces::list(tx, owner.as_deref(), now_ms()).await })
        }))
        .await
    }

    /// One workspace, `owner/name`.
    ///
    /// # Errors
    /// 400, 404, 503.
    pub async fn workspace(&self, full: &str) -> Result<WorkspaceInfo, StoreError> {
        let (owner, name) = split_full("workspace", full)?;
        self.read(script(move |tx| {
            Box::pin(async move { ops::workspaces::info(tx, &owner, &name, now_ms()).await })
        }))
        .await
    }

    /// Deletes a workspace with its agents and their tokens.
    ///
    /// # Errors
    /// 400, 404, 503.
    pub async fn delete_workspace(&self, full: &str) -> Result<(), StoreError> {
        let (owner, name) = split_full("workspace", full)?;
        self.write(script(move |tx| {
            Box::pin(async move { ops::workspaces::delete(tx, &owner, &name).await })
        }))
        .await
    }

    /// Shares a workspace with `user`.
    ///
    /// # Errors
    /// 400, 404, 503.
    pub async fn share(&self, full: &str, user: &str) -> Result<WorkspaceInfo, StoreError> {
        let (owner, name) = split_full("workspace", full)?;
        let user = user.to_string();
        self.write(script(move |tx| {
            Box::pin(async move {
                ops::workspaces::share(tx, &owner, &name, &user).await?;
                ops::workspaces::info(tx, &owner, &name, now_ms()).await
            })
        }))
        .await
    }

    /// Stops sharing a workspace with `user`.
    ///
    /// # Errors
    /// 400, 404 (not shared), 503.
    pub async fn unshare(&self, full: &str, user: &str) -> Result<WorkspaceInfo, StoreError> {
        let (owner, name) = split_full("workspace", full)?;
        let user = user.to_string();
        self.write(script(move |tx| {
            Box::pin(async move {
                ops::workspaces::unshare(tx, &owner, &name, &user).await?;
                ops::workspaces::info(tx, &owner, &name, now_ms()).await
            })
        }))
        .await
    }

    // ---- agents ----

    /// Adds agent `name` to workspace `owner/ws` (node id `id`, random when `None`) and
    /// issues its first token.
    ///
    /// # Errors
    /// 400, 409 (name or id in use), 503.
    pub async fn create_agent(
        &self,
        workspace: &str,
        name: &str,
        id: Option<NodeId>,
        expires_in: Option<Duration>,
    ) -> Result<CreatedAgent, StoreError> {
        let (ws, name) = (workspace.to_string(), name.to_string());
        self.write(script(move |tx| {
            Box::pin(async move {
                let now = now_ms();
                let expires = expiry(expires_in, now)?;
                let (agent, token) = ops::agents::create(tx, &ws, &name, id, expires, now).await?;
                Ok(CreatedAgent {
                    agent,
                    token,
                    join_command: String::new(),
                })
            })
        }))
        .await
    }

    /// Agents of one workspace (`owner/name`), or all.
    ///
    /// # Errors
    /// 400, 404, 503.
    pub async fn agents(&self, workspace: Option<&str>) -> Result<Vec<AgentInfo>, StoreError> {
        let ws = workspace.map(str::to_string);
        self.read(script(move |tx| {
            Box::pin(async move { ops::agents::list(tx, ws.as_deref(), now_ms()).await })
        }))
        .await
    }

    /// One agent, by id or `owner/workspace[.agent]`.
    ///
    /// # Errors
    /// 400, 404, 503.
    pub async fn agent(&self, spec: &str) -> Result<AgentInfo, StoreError> {
        let sel = AgentSel::parse("agent", spec)?;
        self.read(script(move |tx| {
            Box::pin(async move { ops::agents::info(tx, &sel, now_ms()).await })
        }))
        .await
    }

    /// Deletes an agent and its tokens.
    ///
    /// # Errors
    /// 400, 404, 503.
    pub async fn delete_agent(&self, spec: &str) -> Result<(), StoreError> {
        let sel = AgentSel::parse("agent", spec)?;
        self.write(script(move |tx| {
            Box::pin(async move { ops::agents::delete(tx, &sel).await })
        }))
        .await
    }

    /// Revokes every token of an agent; how many.
    ///
    /// # Errors
    /// 400, 404, 503.
    pub async fn revoke_agent_tokens(&self, spec: &str) -> Result<u64, StoreError> {
        let sel = AgentSel::parse("agent", spec)?;
        self.write(script(move |tx| {
            Box::pin(async move { ops::agents::revoke_tokens(tx, &sel, now_ms()).await })
        }))
        .await
    }

    // ---- tokens ----

    /// Issues a token for `holder` (shown once).
    ///
    /// # Errors
    /// 400 (unknown holder, bad name or expiry), 503.
    pub async fn create_token(
        &self,
        holder: &TokenHolder,
        name: &str,
        expires_in: Option<Duration>,
    ) -> Result<IssuedToken, StoreError> {
        let holder = match holder {
            TokenHolder::User(u) => TokenFor::User(u.clone()),
            TokenHolder::Agent(a) => TokenFor::Agent(AgentSel::parse("agent", a)?),
        };
        let name = name.to_string();
        self.write(script(move |tx| {
            Box::pin(async move {
                let now = now_ms();
                let expires = expiry(expires_in, now)?;
                ops::tokens::issue(tx, &holder, &name, expires, now).await
            })
        }))
        .await
    }

    /// Tokens of a user or an agent (or all), newest first; with `all`, revoked and
    /// expired ones too.
    ///
    /// # Errors
    /// 400, 404, 503.
    pub async fn tokens(
        &self,
        user: Option<&str>,
        agent: Option<&str>,
        all: bool,
    ) -> Result<Vec<TokenInfo>, StoreError> {
        let filter = TokenFilter {
            user: user.map(str::to_string),
            agent: agent.map(|a| AgentSel::parse("agent", a)).transpose()?,
            all,
        };
        self.read(script(move |tx| {
            Box::pin(async move { ops::tokens::list(tx, &filter, now_ms()).await })
        }))
        .await
    }

    /// One token.
    ///
    /// # Errors
    /// 404, 503.
    pub async fn token(&self, id: Uuid) -> Result<TokenInfo, StoreError> {
        self.read(script(move |tx| {
            Box::pin(async move { ops::tokens::info(tx, id, now_ms()).await })
        }))
        .await
    }

    /// Revokes a token.
    ///
    /// # Errors
    /// 404, 503.
    pub async fn revoke_token(&self, id: Uuid) -> Result<TokenInfo, StoreError> {
        self.write(script(move |tx| {
            Box::pin(async move { ops::tokens::revoke(tx, id, now_ms()).await })
        }))
        .await
    }

    /// Deletes a token.
    ///
    /// # Errors
    /// 404, 503.
    pub async fn delete_token(&self, id: Uuid) -> Result<(), StoreError> {
        self.write(script(move |tx| {
            Box::pin(async move { ops::tokens::delete(tx, id).await })
        }))
        .await
    }

    // ---- audit, import, start-up ----

    /// Audit entries matching `filter`, newest first.
    ///
    /// # Errors
    /// 503.
    pub async fn audit_log(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(script(move |tx| {
            Box::pin(async move { ops::audit::list(tx, &filter).await })
        }))
        .await
    }

    /// Imports a `control.toml` (see `ops::import`).
    ///
    /// # Errors
    /// 400 for an invalid file, 409 for collisions with what is stored, 503.
    pub async fn import(&self, cfg: &ControlConfig) -> Result<ImportReport, StoreError> {
        let cfg = cfg.clone();
        self.write(script(move |tx| {
            Box::pin(async move { ops::import::import(tx, &cfg, now_ms()).await })
        }))
        .await
    }

    /// Creates the embedded default's demo user, workspace and agent if missing.
    ///
    /// # Errors
    /// 400, 409, 503.
    pub async fn seed_demo(&self, seed: DemoSeed) -> Result<DemoState, StoreError> {
        self.write(script(move |tx| {
            Box::pin(async move { ops::seed::demo(tx, &seed, now_ms()).await })
        }))
        .await
    }

    /// When no user is an admin, creates one and returns its name and token.
    ///
    /// # Errors
    /// 503.
    pub async fn ensure_admin(&self) -> Result<Option<(String, String)>, StoreError> {
        self.write(script(|tx| {
            Box::pin(async move { ops::seed::admin(tx, now_ms()).await })
        }))
        .await
    }
}
