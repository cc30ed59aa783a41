//! The statements a replica runs. Times are the database's (`clock_timestamp()`), never
//! this process's: replicas on different machines agree only on that clock.

use super::ReplicaError;
use super::outbox::{Batch, PeerOp};
use crate::proto::coord::server::{PeerRecord, PeerRow, RemoteRole, ReplicaId, TunnelRow};
use crate::wire::addr::NodeId;
use deadpool_postgres::{ClientWrapper, StatementCache, Transaction};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

/// The notification channel. Payloads carry ids only; receivers re-read the rows.
pub(super) const CHANNEL: &str = "agentwire_coord";

/// The `replica_settings` name of the DERP mesh key.
const MESH_KEY: &str = "derp_mesh_key";

/// A notification, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Note {
    /// The rows of a peer changed.
    Peer(NodeId),
    /// The tunnel rows of a source changed.
    Tunnels(NodeId),
    /// A replica registered or expired.
    Replica(String),
    /// A remote peer is ready for a handshake with `dst`.
    Handshake(NodeId, NodeId),
}

impl Note {
    /// Parses a payload; `None` for anything else (counted by the caller).
    pub(super) fn parse(payload: &str) -> Option<Self> {
        let mut it = payload.split(' ');
        let kind = it.next()?;
        let a = it.next()?;
        let note = match kind {
            "p" => Self::Peer(a.parse().ok()?),
            "t" => Self::Tunnels(a.parse().ok()?),
            "r" => Self::Replica(a.to_string()),
            "h" => Self::Handshake(a.parse().ok()?, it.next()?.parse().ok()?),
            _ => return None,
        };
        it.next().is_none().then_some(note)
    }
}

/// Where statements run: a connection, or a transaction on one, with the connection's
/// cache of prepared statements. Each statement is parsed once per connection: unprepared,
/// a statement outside a transaction costs the database two transactions (parse, then
/// execute) and two round trips.
pub(super) trait Db: Sync {
    fn client(&self) -> &Client;
    fn cache(&self) -> &StatementCache;
}

impl Db for ClientWrapper {
    fn client(&self) -> &Client {
        self
    }
    fn cache(&self) -> &StatementCache {
        &self.statement_cache
    }
}

impl Db for Transaction<'_> {
    fn client(&self) -> &Client {
        (**self).client()
    }
    fn cache(&self) -> &StatementCache {
        &self.statement_cache
    }
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

async fn execute(db: &impl Db, q: &str, p: Params<'_>) -> Result<u64, tokio_postgres::Error> {
    let st = db.cache().prepare(db.client(), q).await?;
    db.client().execute(&st, p).await
}

async fn query(db: &impl Db, q: &str, p: Params<'_>) -> Result<Vec<Row>, tokio_postgres::Error> {
    let st = db.cache().prepare(db.client(), q).await?;
    db.client().query(&st, p).await
}

async fn query_one(db: &impl Db, q: &str, p: Params<'_>) -> Result<Row, tokio_postgres::Error> {
    let st = db.cache().prepare(db.client(), q).await?;
    db.client().query_one(&st, p).await
}

async fn notify(c: &impl Db, payload: String) -> Result<(), ReplicaError> {
    execute(c, "SELECT pg_notify($1, $2)", &[&CHANNEL, &payload]).await?;
    Ok(())
}

/// Registers replica `id` (again, after it expired), and announces it.
pub(super) async fn register(c: &impl Db, id: &str, relay_url: &str) -> Result<(), ReplicaError> {
    execute(
        c,
        "INSERT INTO replicas (id, relay_url) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET relay_url = EXCLUDED.relay_url,
             heartbeat_at = clock_timestamp()",
        &[&id, &relay_url],
    )
    .await?;
    notify(c, format!("r {id}")).await
}

/// One heartbeat, and the table as it stood: every replica with its relay URL and
/// whether its heartbeat is within `ttl` (this one counts as live when its beat landed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Beat {
    /// This replica's row was there to update; `false` means another replica expired it.
    pub(super) landed: bool,
    /// `(id, relay URL, live)` for every registered replica, ordered by id.
    pub(super) replicas: Vec<(ReplicaId, String, bool)>,
}

impl Beat {
    /// The live replicas with their relay URLs.
    pub(super) fn live(&self) -> Vec<(ReplicaId, String)> {
        self.replicas
            .iter()
            .filter(|(_, _, live)| *live)
            .map(|(id, url, _)| (id.clone(), url.clone()))
            .collect()
    }

    /// Whether some other replica has stopped beating (a sweep has work).
    pub(super) fn any_expired(&self) -> bool {
        self.replicas.iter().any(|(_, _, live)| !live)
    }
}

/// Beats and reads the table in one statement: one transaction per beat. The select sees
/// the table as it was before this beat, so this replica's own row counts as live when
/// the update found it.
pub(super) async fn heartbeat(c: &impl Db, id: &str, ttl: Duration) -> Result<Beat, ReplicaError> {
    let rows = query(
        c,
        "WITH beat AS (
             UPDATE replicas SET heartbeat_at = clock_timestamp() WHERE id = $1 RETURNING id
         )
         SELECT r.id, r.relay_url,
                (r.id = $1 AND EXISTS (SELECT 1 FROM beat))
                    OR (r.id <> $1
                        AND r.heartbeat_at >= clock_timestamp() - make_interval(secs => $2)),
                EXISTS (SELECT 1 FROM beat)
         FROM replicas r ORDER BY r.id",
        &[&id, &ttl.as_secs_f64()],
    )
    .await?;
    let mut beat = Beat {
        landed: false,
        replicas: Vec::with_capacity(rows.len()),
    };
    for row in rows {
        beat.landed = row.try_get(3)?;
        beat.replicas
            .push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
    }
    Ok(beat)
}

/// Deletes every replica (but `own`) silent for `ttl`, with its rows, and announces each.
/// Concurrent sweepers are safe: a row is deleted (and announced) once.
pub(super) async fn sweep(
    c: &mut deadpool_postgres::Object,
    own: &str,
    ttl: Duration,
) -> Result<Vec<String>, ReplicaError> {
    let tx = c.transaction().await?;
    let rows = query(
        &tx,
        "DELETE FROM replicas
         WHERE id <> $1 AND heartbeat_at < clock_timestamp() - make_interval(secs => $2)
         RETURNING id",
        &[&own, &ttl.as_secs_f64()],
    )
    .await?;
    let gone: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    for id in &gone {
        execute(&tx, "DELETE FROM coord_peers WHERE replica = $1", &[id]).await?;
        execute(&tx, "DELETE FROM coord_tunnels WHERE replica = $1", &[id]).await?;
        notify(&tx, format!("r {id}")).await?;
    }
    tx.commit().await?;
    Ok(gone)
}

/// Removes replica `own` and its rows, and announces it: a clean shutdown, so the others
/// hear at once that its streams are gone.
pub(super) async fn leave(
    c: &mut deadpool_postgres::Object,
    own: &str,
) -> Result<(), ReplicaError> {
    let tx = c.transaction().await?;
    execute(&tx, "DELETE FROM coord_peers WHERE replica = $1", &[&own]).await?;
    execute(&tx, "DELETE FROM coord_tunnels WHERE replica = $1", &[&own]).await?;
    execute(&tx, "DELETE FROM replicas WHERE id = $1", &[&own]).await?;
    notify(&tx, format!("r {own}")).await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes rows kept to say "lost" once they have said it (a minute on).
pub(super) async fn purge_lost(c: &impl Db) -> Result<u64, ReplicaError> {
    Ok(execute(
        c,
        "DELETE FROM coord_peers
         WHERE lost AND changed_at < clock_timestamp() - interval '60 seconds'",
        &[],
    )
    .await?)
}

/// The replicas whose heartbeat is within `ttl`, with their relay URLs.
pub(super) async fn live(
    c: &impl Db,
    ttl: Duration,
) -> Result<Vec<(ReplicaId, String)>, ReplicaError> {
    let rows = query(
        c,
        "SELECT id, relay_url FROM replicas
         WHERE heartbeat_at >= clock_timestamp() - make_interval(secs => $1)
         ORDER BY id",
        &[&ttl.as_secs_f64()],
    )
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The mesh key every replica shares: generated by the first, read by the rest.
pub(super) async fn mesh_key(c: &impl Db) -> Result<String, ReplicaError> {
    let mut b = [0u8; 32];
    rand::fill(&mut b);
    let fresh: String = b.iter().map(|x| format!("{x:02x}")).collect();
    execute(
        c,
        "INSERT INTO replica_settings (name, value) VALUES ($1, $2)
         ON CONFLICT (name) DO NOTHING",
        &[&MESH_KEY, &fresh],
    )
    .await?;
    let row = query_one(
        c,
        "SELECT value FROM replica_settings WHERE name = $1",
        &[&MESH_KEY],
    )
    .await?;
    Ok(row.get(0))
}

/// Writes one batch of this replica's changes in one transaction; notifications go out
/// at commit.
pub(super) async fn write(
    c: &mut deadpool_postgres::Object,
    own: &str,
    batch: &Batch,
) -> Result<(), ReplicaError> {
    let tx = c.transaction().await?;
    let mut touched_tunnels = BTreeSet::new();
    for (id, op) in &batch.peers {
        match op {
            PeerOp::Put { record, fresh } => put_peer(&tx, own, record, *fresh).await?,
            PeerOp::Gone { graceful: true } => {
                execute(
                    &tx,
                    "DELETE FROM coord_peers WHERE id = $1 AND replica = $2",
                    &[&id.0, &own],
                )
                .await?;
            }
            PeerOp::Gone { graceful: false } => {
                execute(
                    &tx,
                    "UPDATE coord_peers SET lost = TRUE, changed_at = clock_timestamp()
                     WHERE id = $1 AND replica = $2",
                    &[&id.0, &own],
                )
                .await?;
            }
        }
        if let PeerOp::Gone { .. } = op {
            execute(
                &tx,
                "DELETE FROM coord_tunnels WHERE src = $1 AND replica = $2",
                &[&id.0, &own],
            )
            .await?;
            touched_tunnels.insert(*id);
        }
        notify(&tx, format!("p {id}")).await?;
    }
    for ((src, dst), open) in &batch.tunnels {
        if *open {
            execute(
                &tx,
                "INSERT INTO coord_tunnels (src, dst, replica) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&src.0, &dst.0, &own],
            )
            .await?;
        } else {
            execute(
                &tx,
                "DELETE FROM coord_tunnels WHERE src = $1 AND dst = $2 AND replica = $3",
                &[&src.0, &dst.0, &own],
            )
            .await?;
        }
        touched_tunnels.insert(*src);
    }
    for src in touched_tunnels {
        notify(&tx, format!("t {src}")).await?;
    }
    for (src, dst) in &batch.hints {
        notify(&tx, format!("h {src} {dst}")).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn put_peer(
    tx: &impl Db,
    own: &str,
    r: &PeerRecord,
    fresh: bool,
) -> Result<(), ReplicaError> {
    let node = match &r.node {
        Some(n) => Some(serde_json::to_string(n).map_err(|e| ReplicaError::Row(e.to_string()))?),
        None => None,
    };
    // A row re-created without a new stream (written again after this replica expired)
    // binds at the epoch: any binding another replica made meanwhile is newer and wins.
    execute(
        tx,
        "INSERT INTO coord_peers
             (id, replica, name, role, principal, instance, node, lost, bound_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, FALSE,
             CASE WHEN $8 THEN clock_timestamp() ELSE 'epoch'::timestamptz END)
         ON CONFLICT (id, replica) DO UPDATE SET
             name = EXCLUDED.name, role = EXCLUDED.role, principal = EXCLUDED.principal,
             instance = EXCLUDED.instance, node = EXCLUDED.node, lost = FALSE,
             bound_at = CASE WHEN $8 THEN EXCLUDED.bound_at ELSE coord_peers.bound_at END,
             last_seen = clock_timestamp(), changed_at = clock_timestamp()",
        &[
            &r.id.0,
            &own,
            &r.name,
            &r.role.name(),
            &r.role.principal(),
            &r.instance,
            &node,
            &fresh,
        ],
    )
    .await?;
    Ok(())
}

/// Marks this replica's streams seen: `(id, silent)` for each local peer.
pub(super) async fn touch(
    c: &impl Db,
    own: &str,
    seen: &[(NodeId, Duration)],
) -> Result<(), ReplicaError> {
    if seen.is_empty() {
        return Ok(());
    }
    let ids: Vec<uuid::Uuid> = seen.iter().map(|(id, _)| id.0).collect();
    let silent: Vec<f64> = seen.iter().map(|(_, s)| s.as_secs_f64()).collect();
    execute(
        c,
        "UPDATE coord_peers p
         SET last_seen = clock_timestamp() - make_interval(secs => s.silent)
         FROM unnest($2::uuid[], $3::float8[]) AS s(id, silent)
         WHERE p.replica = $1 AND p.id = s.id AND NOT p.lost",
        &[&own, &ids, &silent],
    )
    .await?;
    Ok(())
}

const PEER_COLUMNS: &str = "id, replica, name, role, principal, instance, node, lost,
    (extract(epoch FROM bound_at) * 1000000)::bigint,
    extract(epoch FROM clock_timestamp() - last_seen)::float8,
    extract(epoch FROM clock_timestamp() - changed_at)::float8";

/// Peer rows, all or one id's. Rows that do not parse are skipped and counted in `bad`.
/// Also returns the age of the newest row read (notification-to-read latency).
pub(super) async fn peers(
    c: &impl Db,
    id: Option<NodeId>,
    bad: &mut u64,
) -> Result<(Vec<PeerRow>, Option<Duration>), ReplicaError> {
    let rows = match id {
        Some(id) => {
            let q = format!("SELECT {PEER_COLUMNS} FROM coord_peers WHERE id = $1");
            query(c, &q, &[&id.0]).await?
        }
        None => {
            let q = format!("SELECT {PEER_COLUMNS} FROM coord_peers");
            query(c, &q, &[]).await?
        }
    };
    let mut out = Vec::with_capacity(rows.len());
    let mut newest: Option<Duration> = None;
    for row in rows {
        match peer_row(&row) {
            Ok((r, age)) => {
                newest = Some(newest.map_or(age, |n| n.min(age)));
                out.push(r);
            }
            Err(e) => {
                *bad += 1;
                tracing::warn!(error = %e, "skipped a coordinator row that does not parse");
            }
        }
    }
    Ok((out, newest))
}

fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v.max(0.0)).unwrap_or(Duration::ZERO)
}

fn peer_row(row: &tokio_postgres::Row) -> Result<(PeerRow, Duration), ReplicaError> {
    let bad = |e: tokio_postgres::Error| ReplicaError::Row(e.to_string());
    let id: uuid::Uuid = row.try_get(0).map_err(bad)?;
    let role: String = row.try_get(3).map_err(bad)?;
    let principal: Option<String> = row.try_get(4).map_err(bad)?;
    let role = RemoteRole::parse(&role, principal.as_deref())
        .ok_or_else(|| ReplicaError::Row(format!("unknown role {role:?}")))?;
    let node: Option<String> = row.try_get(6).map_err(bad)?;
    let node = match node {
        Some(text) => Some(
            serde_json::from_str::<crate::wire::coord::Node>(&text)
                .map_err(|e| ReplicaError::Row(format!("node of {id}: {e}")))?,
        ),
        None => None,
    };
    if node.as_ref().is_some_and(|n| n.id.0 != id) {
        return Err(ReplicaError::Row(format!("node of {id} names another id")));
    }
    let r = PeerRow {
        record: PeerRecord {
            id: NodeId(id),
            name: row.try_get(2).map_err(bad)?,
            role,
            instance: row.try_get(5).map_err(bad)?,
            node,
        },
        replica: row.try_get(1).map_err(bad)?,
        lost: row.try_get(7).map_err(bad)?,
        bound_at: row.try_get(8).map_err(bad)?,
        silent: secs(row.try_get(9).map_err(bad)?),
    };
    let age = secs(row.try_get(10).map_err(bad)?);
    Ok((r, age))
}

/// Tunnel rows, all or one source's.
pub(super) async fn tunnels(
    c: &impl Db,
    src: Option<NodeId>,
) -> Result<Vec<TunnelRow>, ReplicaError> {
    let rows = match src {
        Some(src) => {
            query(
                c,
                "SELECT src, dst, replica FROM coord_tunnels WHERE src = $1",
                &[&src.0],
            )
            .await?
        }
        None => query(c, "SELECT src, dst, replica FROM coord_tunnels", &[]).await?,
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let src: uuid::Uuid = row.try_get(0)?;
        let dst: uuid::Uuid = row.try_get(1)?;
        out.push(TunnelRow {
            src: NodeId(src),
            dst: NodeId(dst),
            replica: row.try_get(2)?,
        });
    }
    Ok(out)
}

/// Rows of each table, for the operator and for tests looking for leftovers.
pub(super) async fn counts(c: &impl Db) -> Result<[i64; 3], ReplicaError> {
    let row = query_one(
        c,
        "SELECT (SELECT count(*) FROM replicas), (SELECT count(*) FROM coord_peers),
                (SELECT count(*) FROM coord_tunnels)",
        &[],
    )
    .await?;
    Ok([row.get(0), row.get(1), row.get(2)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_parse_and_garbage_does_not() {
        let a = NodeId(uuid::Uuid::from_bytes([1; 16]));
        let b = NodeId(uuid::Uuid::from_bytes([2; 16]));
        assert_eq!(Note::parse(&format!("p {a}")), Some(Note::Peer(a)));
        assert_eq!(Note::parse(&format!("t {a}")), Some(Note::Tunnels(a)));
        assert_eq!(Note::parse("r r-1"), Some(Note::Replica("r-1".into())));
        assert_eq!(
            Note::parse(&format!("h {a} {b}")),
            Some(Note::Handshake(a, b))
        );
        for bad in [
            "",
            "p",
            "p x",
            "q 1",
            &format!("p {a} extra"),
            &format!("h {a}"),
        ] {
            assert_eq!(Note::parse(bad), None, "{bad:?}");
        }
    }
}
