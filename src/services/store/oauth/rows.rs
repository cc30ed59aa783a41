//! Rows of the OAuth tables to records and back, and the SQL pieces the operations in
//! [`super`] share.

use super::super::db::{Row, Tx, Value, params};
use super::super::error::StoreError as DbStoreError;
use crate::proto::oauth::UnixTime;
use crate::proto::oauth::records::{
    AccessRecord, AuthMethod, AuthorizationRequest, ClientRecord, ClientSource, CodeRecord,
    GrantRecord, PendingRecord, Revocation,
};
use crate::proto::oauth::secret::Digest;
use crate::services::oauth::store::{GrantFilter, StoreError};

impl From<DbStoreError> for StoreError {
    fn from(e: DbStoreError) -> Self {
        Self(e.to_string())
    }
}

pub(super) fn t(v: UnixTime) -> i64 {
    i64::try_from(v.0).unwrap_or(i64::MAX)
}

pub(super) fn time(r: &Row, i: usize) -> Result<UnixTime, DbStoreError> {
    Ok(UnixTime(u64::try_from(r.i64(i)?).unwrap_or(0)))
}

pub(super) fn opt_time(r: &Row, i: usize) -> Result<Option<UnixTime>, DbStoreError> {
    Ok(r.opt_i64(i)?
        .map(|v| UnixTime(u64::try_from(v).unwrap_or(0))))
}

pub(super) fn d(v: &Digest) -> Value {
    Value::Bytes(v.0.to_vec())
}

pub(super) fn digest(r: &Row, i: usize) -> Result<Digest, DbStoreError> {
    let b = r.bytes(i)?;
    <[u8; 32]>::try_from(b.as_slice())
        .map(Digest)
        .map_err(|_| DbStoreError::Internal(format!("column {i}: not a 32-byte digest")))
}

pub(super) fn opt_digest(r: &Row, i: usize) -> Result<Option<Digest>, DbStoreError> {
    match r.0.get(i) {
        Some(Value::Null) | None => Ok(None),
        _ => digest(r, i).map(Some),
    }
}

pub(super) fn bad(what: &str) -> DbStoreError {
    DbStoreError::Internal(format!("stored OAuth record has an unknown {what}"))
}

pub(super) const CLIENT: &str = "SELECT client_id, source, auth_method, secret, redirect_uris, \
     refresh_tokens, name, client_uri, metadata, created_s, fetched_until_s FROM oauth_clients";

pub(super) fn to_client(r: &Row) -> Result<ClientRecord, DbStoreError> {
    let uris: Vec<String> =
        serde_json::from_str(&r.text(4)?).map_err(|_| bad("redirect URI list"))?;
    Ok(ClientRecord {
        client_id: r.text(0)?,
        source: ClientSource::parse(&r.text(1)?).ok_or_else(|| bad("client source"))?,
        auth_method: AuthMethod::parse(&r.text(2)?).ok_or_else(|| bad("auth method"))?,
        secret: opt_digest(r, 3)?,
        redirect_uris: uris,
        refresh_tokens: r.bool(5)?,
        name: r.opt_text(6)?,
        client_uri: r.opt_text(7)?,
        metadata: r.text(8)?,
        created_at: time(r, 9)?,
        fetched_until: opt_time(r, 10)?,
    })
}

pub(super) const PENDING: &str = "SELECT id, client_id, redirect_uri, redirect_explicit, code_challenge, \
     scope, resource, state, browser, csrf, expires_s FROM oauth_pending";

pub(super) fn to_pending(r: &Row) -> Result<PendingRecord, DbStoreError> {
    Ok(PendingRecord {
        id: digest(r, 0)?,
        request: AuthorizationRequest {
            client_id: r.text(1)?,
            redirect_uri: r.text(2)?,
            redirect_explicit: r.bool(3)?,
            code_challenge: r.text(4)?,
            scope: r.text(5)?,
            resource: r.text(6)?,
            state: r.opt_text(7)?,
        },
        browser: digest(r, 8)?,
        csrf: digest(r, 9)?,
        expires_at: time(r, 10)?,
    })
}

pub(super) const CODE: &str = "SELECT digest, client_id, redirect_uri, redirect_explicit, code_challenge, \
     scope, resource, user_name, issued_s, expires_s, used, grant_id FROM oauth_codes";

pub(super) fn to_code(r: &Row) -> Result<CodeRecord, DbStoreError> {
    Ok(CodeRecord {
        digest: digest(r, 0)?,
        client_id: r.text(1)?,
        redirect_uri: r.text(2)?,
        redirect_explicit: r.bool(3)?,
        code_challenge: r.text(4)?,
        scope: r.text(5)?,
        resource: r.text(6)?,
        user: r.text(7)?,
        issued_at: time(r, 8)?,
        expires_at: time(r, 9)?,
    })
}

pub(super) const GRANT_COLS: &str = "g.id, g.client_id, g.user_name, g.scope, g.resource, g.created_s, \
     g.refreshed_s, g.refresh, g.refresh_expires_s, g.revoked_s, g.revoked_reason";

pub(super) fn to_grant(r: &Row, at: usize) -> Result<GrantRecord, DbStoreError> {
    let revoked = match (r.opt_i64(at + 9)?, r.opt_text(at + 10)?) {
        (Some(s), reason) => Some(Revocation {
            at: UnixTime(u64::try_from(s).unwrap_or(0)),
            reason: reason.unwrap_or_default(),
        }),
        (None, _) => None,
    };
    Ok(GrantRecord {
        id: r.text(at)?,
        client_id: r.text(at + 1)?,
        user: r.text(at + 2)?,
        scope: r.text(at + 3)?,
        resource: r.text(at + 4)?,
        created_at: time(r, at + 5)?,
        refreshed_at: time(r, at + 6)?,
        refresh: opt_digest(r, at + 7)?,
        refresh_expires_at: time(r, at + 8)?,
        revoked,
    })
}

pub(super) async fn grant_by_id(
    tx: &mut dyn Tx,
    id: &str,
) -> Result<Option<GrantRecord>, DbStoreError> {
    let sql = format!("SELECT {GRANT_COLS} FROM oauth_grants g WHERE g.id = $1");
    tx.query_opt(&sql, params![id])
        .await?
        .map(|r| to_grant(&r, 0))
        .transpose()
}

pub(super) async fn revoke(
    tx: &mut dyn Tx,
    id: &str,
    at: UnixTime,
    reason: &str,
) -> Result<bool, DbStoreError> {
    let n = tx
        .execute(
            "UPDATE oauth_grants SET revoked_s = $2, revoked_reason = $3 \
             WHERE id = $1 AND revoked_s IS NULL",
            params![id, t(at), reason],
        )
        .await?;
    Ok(n > 0)
}

/// `WHERE` clause and parameters for a grant filter (built, not `$n IS NULL OR …`, so
/// PostgreSQL never has to guess a parameter's type).
pub(super) fn filter_sql(f: &GrantFilter) -> (String, Vec<Value>) {
    let mut conds = vec!["1 = 1".to_string()];
    let mut ps = Vec::new();
    if let Some(u) = &f.user {
        ps.push(Value::from(u.as_str()));
        conds.push(format!("g.user_name = ${}", ps.len()));
    }
    if let Some(c) = &f.client_id {
        ps.push(Value::from(c.as_str()));
        conds.push(format!("g.client_id = ${}", ps.len()));
    }
    if !f.include_revoked {
        conds.push("g.revoked_s IS NULL".into());
    }
    (conds.join(" AND "), ps)
}

pub(super) fn put_grant_sql() -> &'static str {
    "INSERT INTO oauth_grants (id, client_id, user_name, scope, resource, created_s, \
     refreshed_s, refresh, refresh_expires_s, revoked_s, revoked_reason) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
}

pub(super) fn grant_params(g: &GrantRecord) -> Vec<Value> {
    params![
        g.id.as_str(),
        g.client_id.as_str(),
        g.user.as_str(),
        g.scope.as_str(),
        g.resource.as_str(),
        t(g.created_at),
        t(g.refreshed_at),
        g.refresh.as_ref().map(|x| x.0.to_vec()),
        t(g.refresh_expires_at),
        g.revoked.as_ref().map(|r| t(r.at)),
        g.revoked.as_ref().map(|r| r.reason.clone())
    ]
}

pub(super) async fn insert_access(tx: &mut dyn Tx, a: &AccessRecord) -> Result<(), DbStoreError> {
    tx.execute(
        "INSERT INTO oauth_access (digest, grant_id, expires_s) VALUES ($1, $2, $3)",
        vec![
            d(&a.digest),
            a.grant_id.as_str().into(),
            t(a.expires_at).into(),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn insert_refresh(tx: &mut dyn Tx, g: &GrantRecord) -> Result<(), DbStoreError> {
    if let Some(r) = &g.refresh {
        tx.execute(
            "INSERT INTO oauth_refresh (digest, grant_id) VALUES ($1, $2)",
            vec![d(r), g.id.as_str().into()],
        )
        .await?;
    }
    Ok(())
}
