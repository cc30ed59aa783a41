//! The authorization server's records ([`OAuthStore`]) in the control-plane database, so
//! grants, refresh tokens and revocations survive a restart and are shared by every
//! replica on one PostgreSQL.
//!
//! Each operation is one transaction; the ones that decide something under concurrency
//! (using a code, rotating a refresh token, taking a pending request) are a single
//! conditional `UPDATE`/`DELETE … RETURNING` whose row count says who won, so two
//! replicas racing cannot both win. OAuth writes do not touch `control_version`: they
//! change nothing the control-plane cache holds.

use super::Store;
use super::db::{Mode, Script, params, script};
use super::error::StoreError as DbStoreError;
use crate::proto::oauth::UnixTime;
use crate::proto::oauth::records::{
    AccessRecord, ClientRecord, CodeRecord, CodeState, GrantRecord, PendingRecord, RefreshLookup,
    SessionRecord, TokenLookup,
};
use crate::proto::oauth::secret::Digest;
use crate::services::control::BoxFuture;
use crate::services::oauth::store::{
    GrantFilter, OAuthStore, Purged, Retention, StoreCounts, StoreError,
};

mod rows;

use rows::*;

type R<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

impl Store {
    fn oauth<'a, T: Send + 'static>(&'a self, mode: Mode, s: impl Script<T> + 'a) -> R<'a, T> {
        Box::pin(async move { Ok(self.inner.db.run(mode, s).await?) })
    }
}

impl OAuthStore for Store {
    fn put_client<'a>(&'a self, c: &'a ClientRecord) -> R<'a, ()> {
        let c = c.clone();
        self.oauth(
            Mode::Write,
            script(move |tx| {
                Box::pin(async move {
                    let uris = serde_json::to_string(&c.redirect_uris)
                        .map_err(|e| DbStoreError::Internal(e.to_string()))?;
                    let ps = params![
                        c.client_id.as_str(),
                        c.source.as_str(),
                        c.auth_method.as_str(),
                        c.secret.as_ref().map(|x| x.0.to_vec()),
                        uris,
                        c.refresh_tokens,
                        c.name.clone(),
                        c.client_uri.clone(),
                        c.metadata.as_str(),
                        t(c.created_at),
                        c.fetched_until.map(t)
                    ];
                    tx.execute(
                        "INSERT INTO oauth_clients (client_id, source, auth_method, secret, \
                         redirect_uris, refresh_tokens, name, client_uri, metadata, created_s, \
                         fetched_until_s) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                         ON CONFLICT (client_id) DO UPDATE SET source = excluded.source, \
                         auth_method = excluded.auth_method, secret = excluded.secret, \
                         redirect_uris = excluded.redirect_uris, \
                         refresh_tokens = excluded.refresh_tokens, name = excluded.name, \
                         client_uri = excluded.client_uri, metadata = excluded.metadata, \
                         created_s = excluded.created_s, \
                         fetched_until_s = excluded.fetched_until_s",
                        ps,
                    )
                    .await?;
                    Ok(())
                })
            }),
        )
    }

    fn client<'a>(&'a self, id: &'a str) -> R<'a, Option<ClientRecord>> {
        let id = id.to_string();
        self.oauth(
            Mode::Read,
            script(move |tx| {
                Box::pin(async move {
                    let sql = format!("{CLIENT} WHERE client_id = $1");
                    tx.query_opt(&sql, params![id])
                        .await?
                        .map(|r| to_client(&r))
                        .transpose()
                })
            }),
        )
    }

    fn clients(&self) -> R<'_, Vec<ClientRecord>> {
        self.oauth(
            Mode::Read,
            script(move |tx| {
                Box::pin(async move {
                    let sql = format!("{CLIENT} ORDER BY created_s, client_id");
                    let rows = tx.query(&sql, vec![]).await?;
                    rows.iter().map(to_client).collect()
                })
            }),
        )
    }

    fn registered_clients(&self) -> R<'_, u64> {
        self.oauth(
            Mode::Read,
            script(move |tx| {
                Box::pin(async move {
                    let r = tx
                        .query_one(
                            "SELECT COUNT(*) FROM oauth_clients WHERE source = 'registered'",
                            vec![],
                        )
                        .await?;
                    Ok(u64::try_from(r.i64(0)?).unwrap_or(0))
                })
            }),
        )
    }

    fn delete_client<'a>(&'a self, id: &'a str, now: UnixTime) -> R<'a, bool> {
        let id = id.to_string();
        self.oauth(
            Mode::Write,
            script(move |tx| {
                Box::pin(async move {
                    let n = tx
                        .execute(
                            "DELETE FROM oauth_clients WHERE client_id = $1",
                            params![id.as_str()],
                        )
                        .await?;
                    tx.execute(
                        "UPDATE oauth_grants SET revoked_s = $2, revoked_reason = $3 \
                         WHERE client_id = $1 AND revoked_s IS NULL",
                        params![id.as_str(), t(now), "client deleted"],
                    )
                    .await?;
                    Ok(n > 0)
                })
            }),
        )
    }

    fn put_pending<'a>(&'a self, p: &'a PendingRecord) -> R<'a, ()> {
        let p = p.clone();
        self.oauth(
            Mode::Write,
            script(move |tx| {
                Box::pin(async move {
                    let q = &p.request;
                    let ps = vec![
                        d(&p.id),
                        q.client_id.as_str().into(),
                        q.redirect_uri.as_str().into(),
                        q.redirect_explicit.into(),
                        q.code_challenge.as_str().into(),
                        q.scope.as_str().into(),
                        q.resource.as_str().into(),
                        q.state.clone().into(),
                        d(&p.browser),
                        d(&p.csrf),
                        t(p.expires_at).into(),
                    ];
                    tx.execute(
                        "INSERT INTO oauth_pending (id, client_id, redirect_uri, \
                         redirect_explicit, code_challenge, scope, resource, state, browser, \
                         csrf, expires_s) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                        ps,
                    )
                    .await?;
                    Ok(())
                })
            }),
        )
    }

    fn pending<'a>(&'a self, id: &'a Digest, now: UnixTime) -> R<'a, Option<PendingRecord>> {
        let id = *id;
        self.oauth(
            Mode::Read,
            script(move |tx| {
                Box::pin(async move {
                    let sql = format!("{PENDING} WHERE id = $1 AND expires_s > $2");
                    tx.query_opt(&sql, vec![d(&id), t(now).into()])
                        .await?
                        .map(|r| to_pending(&r))
                        .transpose()
                })
            }),
        )
    }

    fn take_pending<'a>(&'a self, id: &'a Digest, now: UnixTime) -> R<'a, Option<PendingRecord>> {
        let id = *id;
        self.oauth(
            Mode::Write,
            script(move |tx| {
                Box::pin(async move {
                    // Deleting with RETURNING is the claim: of two consents racing, one
                    // gets the row.
                    let rows = tx
                        .query(
                            "DELETE FROM oauth_pending WHERE id = $1 RETURNING id, client_id, \
                             redirect_uri, redirect_explicit, code_challenge, scope, resource, \
                             state, browser, csrf, expires_s",
                            vec![d(&id)],
                        )
                        .await?;
                    let Some(r) = rows.first() else {
                        return Ok(None);
                    };
                    let p = to_pending(r)?;
                    Ok((now < p.expires_at).then_some(p))
                })
            }),
        )
    }

    fn put_session<'a>(&'a self, s: &'a SessionRecord) -> R<'a, ()> {
        let s = s.clone();
        self.oauth(
            Mode::Write,
            script(move |tx| {
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO oauth_sessions (id, user_name, created_s, expires_s) \
                         VALUES ($1, $2, $3, $4)",
                        vec![
                            d(&s.id),
                            s.user.as_str().into(),
                            t(s.created_at).into(),
                            t(s.expires_at).into(),
                        ],
                    )
                    .await?;
                    Ok(())
                })
            }),
        )
    }

    fn session<'a>(&'a self, id: &'a Digest, now: UnixTime) -> R<'a, Option<SessionRecord>> {
        let id = *id;
        self.oauth(
            Mode::Read,
            script(move |tx| {
                Box::pin(async move {
                    let row = tx
                        .query_opt(
                            "SELECT id, user_name, created_s, expires_s FROM oauth_sessions \
                             WHERE id = $1 AND expires_s > $2",
                            vec![d(&id), t(now).into()],
                        )
                        .await?;
                    let Some(r) = row else { return Ok(None) };
                    Ok(Some(SessionRecord {
                        id: digest(&r, 0)?,
                        user: r.text(1)?,
                        created_at: time(&r, 2)?,
                        expires_at: time(&r, 3)?,
                    }))
                })
            }),
        )
    }

    fn delete_session<'a>(&'a self, id: &'a Digest) -> R<'a, ()> {
        let id = *id;
        self.oauth(
            Mode::Write,
            script(move |tx| {
                Box::pin(async move {
                    tx.execute("DELETE FROM oauth_sessions WHERE id = $1", vec![d(&id)])
                        .await?;
                    Ok(())
                })
            }),
        )
    }

    fn put_code<'a>(&'a self, c: &'a CodeRecord) -> R<'a, ()> {
        let c = c.clone();
        self.oauth(
            Mode::Write,
            script(move |tx| {
                Box::pin(async move {
                    tx.execute(
                        "INSERT INTO oauth_codes (digest, client_id, redirect_uri, \
                         redirect_explicit, code_challenge, scope, resource, user_name, \
                         issued_s, expires_s) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                        vec![
                            d(&c.digest),
                            c.client_id.as_str().into(),
                            c.redirect_uri.as_str().into(),
                            c.redirect_explicit.into(),
                            c.code_challenge.as_str().into(),
                            c.scope.as_str().into(),
                            c.resource.as_str().into(),
                            c.user.as_str().into(),
                            t(c.issued_at).into(),
                            t(c.expires_at).into(),
                        ],
                    )
                    .await?;
                    Ok(())
                })
            }),
        )
    }

    fn use_code<'a>(&'a self, dg: &'a Digest) -> R<'a, CodeState> {
        let dg = *dg;
        self.oauth(
            Mode::Write,
            script(move |tx| {
                Box::pin(async move {
                    // The conditional update is the claim; its row count says whether
                    // this presentation was the first.
                    let claimed = tx
                        .execute(
                            "UPDATE oauth_codes SET used = $2 WHERE digest = $1 AND used = $3",
                            vec![d(&dg), true.into(), false.into()],
                        )
                        .await?;
                    let sql = format!("{CODE} WHERE digest = $1");
                    let Some(r) = tx.query_opt(&sql, vec![d(&dg)]).await? else {
                        return Ok(CodeState::Unknown);
                    };
                    let code = to_code(&r)?;
                    Ok(if claimed > 0 {
                        CodeState::Fresh(code)
                    } else {
                        CodeState::Used {
                            code,
                            grant: r.opt_text(11)?,
                        }
                    })
                })
            }),
        )
    }

    fn create_grant<'a>(
        &'a self,
        g: &'a GrantRecord,
        access: &'a AccessRecord,
        code: &'a Digest,
    ) -> R<'a, ()> {
        let (g, access, code) = (g.clone(), access.clone(), *code);
        self.oauth(
            Mode::Write,
            script(move |tx| {
                Box::pin(async move {
                    tx.execute(put_grant_sql(), grant_params(&g)).await?;
                    insert_refresh(tx, &g).await?;
                    insert_access(tx, &access).await?;
                    tx.execute(
                        "UPDATE oauth_codes SET grant_id = $2 WHERE digest = $1",
                        vec![d(&code), g.id.as_str().into()],
                    )
                    .await?;
                    Ok(())
                })
            }),
        )
    }

    fn find_refresh<'a>(&'a self, dg: &'a Digest) -> R<'a, Option<RefreshLookup>> {
        let dg = *dg;
        self.oauth(
            Mode::Read,
            script(move |tx| {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {GRANT_COLS} FROM oauth_refresh r \
                         JOIN oauth_grants g ON g.id = r.grant_id WHERE r.digest = $1"
                    );
                    let Some(r) = tx.query_opt(&sql, vec![d(&dg)]).await? else {
                        return Ok(None);
                    };
                    let grant = to_grant(&r, 0)?;
                    Ok(Some(RefreshLookup {
                        current: grant.refresh == Some(dg),
                        grant,
                    }))
                })
            }),
        )
    }

    fn rotate<'a>(
        &'a self,
        old: &'a Digest,
        g: &'a GrantRecord,
        access: &'a AccessRecord,
    ) -> R<'a, bool> {
        let (old, g, access) = (*old, g.clone(), access.clone());
        self.oauth(
            Mode::Write,
            script(move |tx| {
                Box::pin(async move {
                    // Compare-and-swap on the current refresh token: a second refresh
                    // racing with the same token finds it gone and loses.
                    let n = tx
                        .execute(
                            "UPDATE oauth_grants SET scope = $3, refreshed_s = $4, refresh = $5, \
                             refresh_expires_s = $6 \
                             WHERE id = $1 AND refresh = $2 AND revoked_s IS NULL",
                            vec![
                                g.id.as_str().into(),
                                d(&old),
                                g.scope.as_str().into(),
                                t(g.refreshed_at).into(),
                                g.refresh.as_ref().map(|x| x.0.to_vec()).into(),
                                t(g.refresh_expires_at).into(),
                            ],
                        )
                        .await?;
                    if n == 0 {
                        return Ok(false);
                    }
                    insert_refresh(tx, &g).await?;
                    insert_access(tx, &access).await?;
                    Ok(true)
                })
            }),
        )
    }

    fn access<'a>(&'a self, dg: &'a Digest) -> R<'a, Option<(AccessRecord, GrantRecord)>> {
        let dg = *dg;
        self.oauth(
            Mode::Read,
            script(move |tx| {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT a.digest, a.grant_id, a.expires_s, {GRANT_COLS} \
                         FROM oauth_access a JOIN oauth_grants g ON g.id = a.grant_id \
                         WHERE a.digest = $1"
                    );
                    let Some(r) = tx.query_opt(&sql, vec![d(&dg)]).await? else {
                        return Ok(None);
                    };
                    let a = AccessRecord {
                        digest: digest(&r, 0)?,
                        grant_id: r.text(1)?,
                        expires_at: time(&r, 2)?,
                    };
                    Ok(Some((a, to_grant(&r, 3)?)))
                })
            }),
        )
    }

    fn find_token<'a>(&'a self, dg: &'a Digest) -> R<'a, Option<TokenLookup>> {
        let dg = *dg;
        self.oauth(
            Mode::Read,
            script(move |tx| {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {GRANT_COLS} FROM oauth_access a \
                         JOIN oauth_grants g ON g.id = a.grant_id WHERE a.digest = $1"
                    );
                    if let Some(r) = tx.query_opt(&sql, vec![d(&dg)]).await? {
                        return Ok(Some(TokenLookup::Access(to_grant(&r, 0)?)));
                    }
                    let sql = format!(
                        "SELECT {GRANT_COLS} FROM oauth_refresh r \
                         JOIN oauth_grants g ON g.id = r.grant_id WHERE r.digest = $1"
                    );
                    tx.query_opt(&sql, vec![d(&dg)])
                        .await?
                        .map(|r| to_grant(&r, 0).map(TokenLookup::Refresh))
                        .transpose()
                })
            }),
        )
    }

    fn grant<'a>(&'a self, id: &'a str) -> R<'a, Option<GrantRecord>> {
        let id = id.to_string();
        self.oauth(
            Mode::Read,
            script(move |tx| Box::pin(async move { grant_by_id(tx, &id).await })),
        )
    }

    fn revoke_grant<'a>(&'a self, id: &'a str, at: UnixTime, reason: &'a str) -> R<'a, bool> {
        let (id, reason) = (id.to_string(), reason.to_string());
        self.oauth(
            Mode::Write,
            script(move |tx| Box::pin(async move { revoke(tx, &id, at, &reason).await })),
        )
    }

    fn grants<'a>(&'a self, filter: &'a GrantFilter) -> R<'a, Vec<GrantRecord>> {
        let (cond, ps) = filter_sql(filter);
        self.oauth(
            Mode::Read,
            script(move |tx| {
                Box::pin(async move {
                    let sql = format!(
                        "SELECT {GRANT_COLS} FROM oauth_grants g WHERE {cond} \
                         ORDER BY g.created_s DESC, g.id"
                    );
                    let rows = tx.query(&sql, ps).await?;
                    rows.iter().map(|r| to_grant(r, 0)).collect()
                })
            }),
        )
    }

    fn revoke_grants<'a>(
        &'a self,
        filter: &'a GrantFilter,
        at: UnixTime,
        reason: &'a str,
    ) -> R<'a, u64> {
        let (cond, mut ps) = filter_sql(filter);
        let reason = reason.to_string();
        self.oauth(
            Mode::Write,
            script(move |tx| {
                Box::pin(async move {
                    let n = ps.len();
                    ps.push(t(at).into());
                    ps.push(reason.into());
                    let sql = format!(
                        "UPDATE oauth_grants SET revoked_s = ${}, revoked_reason = ${} \
                         WHERE id IN (SELECT g.id FROM oauth_grants g WHERE {cond}) \
                         AND revoked_s IS NULL",
                        n + 1,
                        n + 2
                    );
                    Ok(tx.execute(&sql, ps).await?)
                })
            }),
        )
    }

    fn purge(&self, now: UnixTime, r: Retention) -> R<'_, Purged> {
        self.oauth(
            Mode::Write,
            script(move |tx| {
                Box::pin(async move {
                    let now_s = t(now);
                    let secs =
                        |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                    let codes = tx
                        .execute(
                            "DELETE FROM oauth_codes WHERE expires_s + $2 <= $1",
                            params![now_s, secs(r.codes)],
                        )
                        .await?;
                    let access_tokens = tx
                        .execute(
                            "DELETE FROM oauth_access WHERE expires_s <= $1",
                            params![now_s],
                        )
                        .await?;
                    let pending = tx
                        .execute(
                            "DELETE FROM oauth_pending WHERE expires_s <= $1",
                            params![now_s],
                        )
                        .await?;
                    let sessions = tx
                        .execute(
                            "DELETE FROM oauth_sessions WHERE expires_s <= $1",
                            params![now_s],
                        )
                        .await?;
                    // Kept a while after they stopped being usable, so admins and users
                    // can see what ended them; their tokens go with them.
                    let dead = "SELECT id FROM oauth_grants WHERE \
                         COALESCE(revoked_s, refresh_expires_s) + $2 <= $1";
                    let ps = params![now_s, secs(r.grants)];
                    for table in ["oauth_refresh", "oauth_access"] {
                        tx.execute(
                            &format!("DELETE FROM {table} WHERE grant_id IN ({dead})"),
                            ps.clone(),
                        )
                        .await?;
                    }
                    let grants = tx
                        .execute(
                            &format!("DELETE FROM oauth_grants WHERE id IN ({dead})"),
                            ps,
                        )
                        .await?;
                    let clients = tx
                        .execute(
                            "DELETE FROM oauth_clients WHERE source = 'registered' \
                             AND created_s + $2 <= $1 AND NOT EXISTS (SELECT 1 FROM \
                             oauth_grants g WHERE g.client_id = oauth_clients.client_id)",
                            params![now_s, secs(r.unused_clients)],
                        )
                        .await?;
                    Ok(Purged {
                        codes,
                        access_tokens,
                        grants,
                        browser: pending + sessions,
                        clients,
                    })
                })
            }),
        )
    }

    fn counts(&self) -> R<'_, StoreCounts> {
        self.oauth(
            Mode::Read,
            script(move |tx| {
                Box::pin(async move {
                    let r = tx
                        .query_one(
                            "SELECT (SELECT COUNT(*) FROM oauth_clients), \
                             (SELECT COUNT(*) FROM oauth_codes), \
                             (SELECT COUNT(*) FROM oauth_grants WHERE revoked_s IS NULL), \
                             (SELECT COUNT(*) FROM oauth_access), \
                             (SELECT COUNT(*) FROM oauth_sessions)",
                            vec![],
                        )
                        .await?;
                    let n = |i| r.i64(i).map(|v| u64::try_from(v).unwrap_or(0));
                    Ok(StoreCounts {
                        clients: n(0)?,
                        codes: n(1)?,
                        live_grants: n(2)?,
                        access_tokens: n(3)?,
                        sessions: n(4)?,
                    })
                })
            }),
        )
    }
}
