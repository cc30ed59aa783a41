//! Versioned schema migrations, embedded in the binary and applied at start.
//!
//! [`MIGRATIONS`] is the schema's whole history. To change the schema, **append** an entry
//! with the next version and one SQL file per backend (`sqlite/NNNN_name.sql`,
//! `postgres/NNNN_name.sql`); never edit or renumber an entry that has been released,
//! since databases in the field record which versions they have applied, by number and
//! name. A unit test checks that versions are dense and increasing and that every file is
//! non-empty.
//!
//! Applying runs in one transaction under a lock (SQLite's write lock via `BEGIN
//! IMMEDIATE`; a PostgreSQL transaction-scoped advisory lock), so processes starting
//! together against an empty database apply each migration exactly once: the second
//! waits, then finds nothing left to do. A database whose newest applied version is
//! beyond this binary's refuses to start ([`StoreError::SchemaTooNew`]), and one whose
//! history disagrees with this binary's (a gap, another name under the same number) is an
//! error rather than a guess.

use super::db::{Backend, Db, Mode, Tx, Value, params, script};
use super::error::StoreError;

/// One schema change.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// 1, 2, 3, … in order, without gaps.
    pub version: i64,
    /// A short name, recorded beside the version.
    pub name: &'static str,
    /// The change in SQLite's dialect.
    pub sqlite: &'static str,
    /// The change in PostgreSQL's dialect.
    pub postgres: &'static str,
}

impl Migration {
    fn sql(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::Sqlite => self.sqlite,
            Backend::Postgres => self.postgres,
        }
    }
}

/// Every migration, oldest first. Append only.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "control plane",
        sqlite: include_str!("sqlite/0001_control_plane.sql"),
        postgres: include_str!("postgres/0001_control_plane.sql"),
    },
    Migration {
        version: 2,
        name: "audit log",
        sqlite: include_str!("sqlite/0002_audit_log.sql"),
        postgres: include_str!("postgres/0002_audit_log.sql"),
    },
    Migration {
        version: 3,
        name: "oauth",
        sqlite: include_str!("sqlite/0003_oauth.sql"),
        postgres: include_str!("postgres/0003_oauth.sql"),
    },
    Migration {
        version: 4,
        name: "replicas",
        sqlite: include_str!("sqlite/0004_replicas.sql"),
        postgres: include_str!("postgres/0004_replicas.sql"),
    },
];

/// The schema version this binary brings a database to.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The key of the PostgreSQL advisory lock held while migrating ("agentwir" in ASCII).
const LOCK_KEY: i64 = 0x6167_656e_7477_6972;

const HISTORY_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version           BIGINT PRIMARY KEY,
    name              TEXT NOT NULL,
    applied_ms        BIGINT NOT NULL,
    agentwire_version TEXT NOT NULL
)";

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The version found.
    pub from: i64,
    /// The version now.
    pub to: i64,
}

/// Brings the database to [`latest`].
///
/// # Errors
/// [`StoreError::SchemaTooNew`], [`StoreError::Migration`] for a history that does not
/// match, or the database's own errors (nothing is applied then).
pub async fn apply(db: &Db) -> Result<Applied, StoreError> {
    apply_list(db, MIGRATIONS).await
}

pub(crate) async fn apply_list(db: &Db, list: &'static [Migration]) -> Result<Applied, StoreError> {
    let applied = db
        .run(
            Mode::Write,
            script(move |tx| Box::pin(async move { migrate(tx, list).await })),
        )
        .await?;
    if applied.from != applied.to {
        tracing::info!(
            from = applied.from,
            to = applied.to,
            db = %db.describe(),
            "database schema migrated"
        );
    }
    Ok(applied)
}

async fn migrate(tx: &mut dyn Tx, list: &'static [Migration]) -> Result<Applied, StoreError> {
    if tx.backend() == Backend::Postgres {
        // Held until the transaction ends; a second process starting now waits here.
        tx.execute("SELECT pg_advisory_xact_lock($1)", params![LOCK_KEY])
            .await?;
    }
    tx.batch(HISTORY_TABLE).await?;
    let rows = tx
        .query(
            "SELECT version, name, agentwire_version FROM schema_migrations ORDER BY version",
            vec![],
        )
        .await?;
    let known = list.last().map_or(0, |m| m.version);
    let mut from = 0;
    for (i, row) in rows.iter().enumerate() {
        let (version, name, by) = (row.i64(0)?, row.text(1)?, row.text(2)?);
        if version > known {
            return Err(StoreError::SchemaTooNew {
                found: rows.last().map_or(version, |r| r.i64(0).unwrap_or(version)),
                known,
                binary: env!("CARGO_PKG_VERSION"),
                by: format!(", migrated by agentwire {by}"),
            });
        }
        let expected = i as i64 + 1;
        if version != expected {
            return Err(StoreError::Migration(format!(
                "the database has applied version {version} without version {expected}"
            )));
        }
        let ours = list.get(i).map_or("", |m| m.name);
        if name != ours {
            return Err(StoreError::Migration(format!(
                "the database's migration {version} is {name:?}, this binary's is {ours:?}; \
                 it was migrated by another build of agentwire ({by})"
            )));
        }
        from = version;
    }
    for m in list.iter().filter(|m| m.version > from) {
        tx.batch(m.sql(tx.backend())).await.map_err(|e| {
            StoreError::Migration(format!("applying {} ({}): {e}", m.version, m.name))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_ms, agentwire_version) \
             VALUES ($1, $2, $3, $4)",
            vec![
                Value::I64(m.version),
                m.name.into(),
                Value::I64(super::now_ms()),
                env!("CARGO_PKG_VERSION").into(),
            ],
        )
        .await?;
    }
    Ok(Applied {
        from,
        to: known.max(from),
    })
}

/// The schema version a database is at (0 when never migrated).
///
/// # Errors
/// The database's own errors.
pub async fn current(db: &Db) -> Result<i64, StoreError> {
    db.run(
        Mode::Write,
        script(|tx| {
            Box::pin(async move {
                tx.batch(HISTORY_TABLE).await?;
                let row = tx
                    .query_opt("SELECT max(version) FROM schema_migrations", vec![])
                    .await?;
                Ok(row.and_then(|r| r.opt_i64(0).ok().flatten()).unwrap_or(0))
            })
        }),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::store::sqlite::SqliteDb;

    #[test]
    fn versions_are_dense_and_every_file_has_content() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
            assert!(!m.sqlite.trim().is_empty() && !m.postgres.trim().is_empty());
            assert!(!m.name.is_empty());
        }
        assert_eq!(latest(), MIGRATIONS.len() as i64);
    }

    async fn sqlite(dir: &std::path::Path) -> Db {
        Db::Sqlite(SqliteDb::open(&dir.join("m.db")).await.unwrap())
    }

    #[tokio::test]
    async fn applies_once_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite(dir.path()).await;
        let a = apply(&db).await.unwrap();
        assert_eq!((a.from, a.to), (0, latest()));
        let b = apply(&db).await.unwrap();
        assert_eq!((b.from, b.to), (latest(), latest()));
        assert_eq!(current(&db).await.unwrap(), latest());
    }

    #[tokio::test]
    async fn a_newer_schema_refuses_to_start() {
        let next = MIGRATIONS.len() as i64 + 1;
        let mut future = MIGRATIONS.to_vec();
        future.push(Migration {
            version: next,
            name: "from the future",
            sqlite: "CREATE TABLE future (x INTEGER)",
            postgres: "CREATE TABLE future (x BIGINT)",
        });
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite(dir.path()).await;
        // apply_list takes the 'static list a binary carries.
        let future: &'static [Migration] = Box::leak(future.into_boxed_slice());
        apply_list(&db, future).await.unwrap();
        let err = apply(&db).await.unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found, .. } if found == next),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("version {next}")) && msg.contains("newer"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn another_history_under_the_same_number_is_an_error() {
        const OTHER: &[Migration] = &[Migration {
            version: 1,
            name: "something else",
            sqlite: "CREATE TABLE other (x INTEGER)",
            postgres: "CREATE TABLE other (x BIGINT)",
        }];
        let dir = tempfile::tempdir().unwrap();
        let db = sqlite(dir.path()).await;
        apply_list(&db, OTHER).await.unwrap();
        let err = apply(&db).await.unwrap_err();
        assert!(matches!(err, StoreError::Migration(_)), "{err:?}");
    }
}
