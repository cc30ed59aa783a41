//! The embedded backend: SQLite through rusqlite (the bundled library), in WAL mode.
//!
//! Every transaction runs on tokio's blocking pool, never on an async worker. Up to
//! [`MAX_CONNECTIONS`] connections are kept: WAL lets readers proceed beside the one
//! writer, and writers queue on SQLite's lock (`BEGIN IMMEDIATE`, with a busy timeout), so
//! a script never fails halfway on a lock it could not upgrade. `synchronous = NORMAL`:
//! with WAL a crash of the process loses nothing committed; a power loss may lose the last
//! transactions, never corrupt the file.
//!
//! A file that is not a database, or is damaged, is reported as [`StoreError::Corrupt`]
//! and never replaced.

use super::db::{DbError, Mode, Row, Script, Tx, Value};
use super::error::StoreError;
use futures_util::future::BoxFuture;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Connections kept open (and transactions run at once).
pub const MAX_CONNECTIONS: usize = 4;

/// How long a writer waits for another writer's lock before the store answers 503.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A SQLite database file and its connections.
#[derive(Debug, Clone)]
pub struct SqliteDb {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl SqliteDb {
    /// Opens (creating if absent) the database at `path` and checks that it is one.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a file that is not a usable database,
    /// [`StoreError::Unavailable`] when it cannot be opened.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            }),
        };
        let inner = db.inner.clone();
        // Every connection is opened now, not on demand: the process's descriptors (three
        // per connection: the file, its WAL and shared memory) stay constant under load,
        // so a leak anywhere else is not hidden by, nor mistaken for, the pool growing.
        let conns = tokio::task::spawn_blocking(move || {
            (0..MAX_CONNECTIONS)
                .map(|_| open_conn(&inner.path))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| StoreError::Internal(format!("opening the database: {e}")))?
        .map_err(|e| db.open_error(e))?;
        for conn in conns {
            db.put_back(conn);
        }
        Ok(db)
    }

    fn open_error(&self, e: DbError) -> StoreError {
        match e {
            DbError::Corrupt(detail) => StoreError::Corrupt {
                path: self.inner.path.clone(),
                detail,
            },
            DbError::Unavailable(m) | DbError::Other(m) | DbError::Decode(m) => {
                StoreError::Unavailable(format!("{}: {m}", self.inner.path.display()))
            }
            DbError::Constraint(m) => StoreError::Internal(m),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn put_back(&self, conn: Connection) {
        self.inner
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
    }

    pub(super) async fn run<R: Send + 'static>(
        &self,
        mode: Mode,
        script: impl Script<R>,
    ) -> Result<R, StoreError> {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("store closed".into()))?;
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let idle = db
                .inner
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            let mut conn = match idle {
                Some(c) => c,
                None => open_conn(&db.inner.path).map_err(|e| db.open_error(e))?,
            };
            let (result, healthy) = transact(&mut conn, mode, script);
            if healthy {
                db.put_back(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }
}

/// Runs `f` again while SQLite answers busy, for up to [`BUSY_TIMEOUT`]. Switching a new
/// file to WAL takes an exclusive lock, and SQLite reports that busy at once rather than
/// through the busy timeout (waiting there could deadlock): two processes opening one new
/// database together meet here, and the loser must wait, not fail to start.
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = crate::runtime::clock::now() + BUSY_TIMEOUT;
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    && crate::runtime::clock::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

fn open_conn(path: &Path) -> Result<Connection, DbError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(classify)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(classify)?;
    conn.set_prepared_statement_cache_capacity(128);
    // The first statement reads the header: a file that is not a database fails here.
    let mode: String = retry_busy(|| conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)))
        .map_err(classify)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            mode,
            "SQLite did not switch to WAL; concurrency will suffer"
        );
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
        .map_err(classify)?;
    // Reading the schema touches the pages a damaged file most often breaks.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(classify)?;
    Ok(conn)
}

/// Runs `script` in one transaction on `conn`. The flag says whether the connection may
/// be reused (it is in autocommit state again).
fn transact<R>(
    conn: &mut Connection,
    mode: Mode,
    script: impl Script<R>,
) -> (Result<R, StoreError>, bool) {
    let begin = match mode {
        Mode::Read => "BEGIN DEFERRED",
        Mode::Write => "BEGIN IMMEDIATE",
    };
    if let Err(e) = conn.execute_batch(begin) {
        return (Err(classify(e).into()), conn.is_autocommit());
    }
    let outcome = {
        let mut tx = SqliteTx { conn };
        let mut fut = script(&mut tx);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => Err(StoreError::Internal(
                "a store script waited on something other than its transaction".into(),
            )),
        }
    };
    let result = match outcome {
        Ok(v) => match conn.execute_batch("COMMIT") {
            Ok(()) => Ok(v),
            Err(e) => Err(classify(e).into()),
        },
        Err(e) => Err(e),
    };
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    let healthy = conn.is_autocommit();
    (result, healthy)
}

/// A transaction on one connection. Its methods finish before returning their future.
struct SqliteTx<'c> {
    conn: &'c mut Connection,
}

impl Tx for SqliteTx<'_> {
    fn backend(&self) -> super::db::Backend {
        super::db::Backend::Sqlite
    }

    fn query<'a>(
        &'a mut self,
        sql: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<Vec<Row>, DbError>> {
        let r = query(self.conn, sql, &params);
        Box::pin(std::future::ready(r))
    }

    fn execute<'a>(
        &'a mut self,
        sql: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<u64, DbError>> {
        let r = execute(self.conn, sql, &params);
        Box::pin(std::future::ready(r))
    }

    fn batch<'a>(&'a mut self, sql: &'a str) -> BoxFuture<'a, Result<(), DbError>> {
        let r = self.conn.execute_batch(sql).map_err(classify);
        Box::pin(std::future::ready(r))
    }
}

/// Binds `params[i-1]` to `?i`: [`numbered`] has turned every `$N` into `?N`, whose index
/// SQLite takes from the text, so no parameter name is looked up (a name lookup scans the
/// statement's whole parameter list: quadratic for a 1 408-parameter audit insert).
fn bind(stmt: &mut rusqlite::Statement<'_>, params: &[Value]) -> Result<(), DbError> {
    let count = stmt.parameter_count();
    if count > params.len() {
        return Err(DbError::Other(format!(
            "the statement has {count} placeholders, {} values were given",
            params.len()
        )));
    }
    for (idx, v) in params.iter().enumerate().take(count) {
        let i = idx + 1;
        let r = match v {
            Value::Null => stmt.raw_bind_parameter(i, rusqlite::types::Null),
            Value::I64(x) => stmt.raw_bind_parameter(i, x),
            Value::Bool(b) => stmt.raw_bind_parameter(i, i64::from(*b)),
            Value::Text(s) => stmt.raw_bind_parameter(i, s.as_str()),
            Value::Bytes(b) => stmt.raw_bind_parameter(i, b.as_slice()),
            Value::Uuid(u) => stmt.raw_bind_parameter(i, u.to_string()),
        };
        r.map_err(classify)?;
    }
    Ok(())
}

/// The cached statement for `sql` with `params` bound.
fn prepared<'c>(
    conn: &'c Connection,
    sql: &str,
    params: &[Value],
) -> Result<rusqlite::CachedStatement<'c>, DbError> {
    let mut stmt = conn.prepare_cached(&numbered(sql)).map_err(classify)?;
    bind(&mut stmt, params)?;
    Ok(stmt)
}

/// `sql` with PostgreSQL's `$N` placeholders written as SQLite's numbered `?N` (the same
/// index, however often or in whatever order they appear). Quoted text is left alone.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                if c == q {
                    quote = None;
                }
                out.push(c);
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) => out.push('?'),
            None => out.push(c),
        }
    }
    out
}

fn query(conn: &Connection, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
    let mut stmt = prepared(conn, sql, params)?;
    let cols = stmt.column_count();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(classify)? {
        let mut vals = Vec::with_capacity(cols);
        for i in 0..cols {
            vals.push(match row.get_ref(i).map_err(classify)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::I64(v),
                ValueRef::Real(v) => Value::Text(v.to_string()),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
            });
        }
        out.push(Row(vals));
    }
    Ok(out)
}

fn execute(conn: &Connection, sql: &str, params: &[Value]) -> Result<u64, DbError> {
    prepared(conn, sql, params)?
        .raw_execute()
        .map(|n| n as u64)
        .map_err(classify)
}

fn classify(e: rusqlite::Error) -> DbError {
    let text = e.to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => DbError::Constraint(text),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            DbError::Unavailable(format!("{text} (another writer holds the lock)"))
        }
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => DbError::Corrupt(text),
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::OutOfMemory
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::NoLargeFileSupport,
        ) => DbError::Unavailable(text),
        _ => DbError::Other(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::store::db::{Db, Mode, params, script};

    async fn db(dir: &Path) -> Db {
        Db::Sqlite(SqliteDb::open(&dir.join("t.db")).await.unwrap())
    }

    #[tokio::test]
    async fn placeholders_bind_by_number_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path()).await;
        let row = db
            .run(
                Mode::Read,
                script(|tx| {
                    Box::pin(async move {
                        Ok(tx
                            .query_one("SELECT $2, $1, $2 || 'x'", params!["a", "b"])
                            .await?)
                    })
                }),
            )
            .await
            .unwrap();
        assert_eq!(row.text(0).unwrap(), "b");
        assert_eq!(row.text(1).unwrap(), "a");
        assert_eq!(row.text(2).unwrap(), "bx");
    }

    #[test]
    fn dollar_placeholders_become_numbered_outside_quotes() {
        assert_eq!(
            numbered("SELECT $12, '$1', \"$2\", $1 || 'it''s $3' WHERE a = $2"),
            "SELECT ?12, '$1', \"$2\", ?1 || 'it''s $3' WHERE a = ?2"
        );
        assert_eq!(numbered("SELECT $ , $x, $"), "SELECT $ , $x, $");
    }

    #[tokio::test]
    async fn too_few_values_is_an_error_not_a_null() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path()).await;
        let r = db
            .run(
                Mode::Read,
                script(|tx| {
                    Box::pin(async move { Ok(tx.query_one("SELECT $1, $2", params!["a"]).await?) })
                }),
            )
            .await;
        assert!(r.is_err(), "{r:?}");
    }

    #[tokio::test]
    async fn a_failed_script_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = db(dir.path()).await;
        db.run(
            Mode::Write,
            script(|tx| {
                Box::pin(async move {
                    tx.batch("CREATE TABLE t (v INTEGER UNIQUE)").await?;
                    Ok(())
                })
            }),
        )
        .await
        .unwrap();
        let r: Result<(), _> = db
            .run(
                Mode::Write,
                script(|tx| {
                    Box::pin(async move {
                        tx.execute("INSERT INTO t VALUES ($1)", params![1i64])
                            .await?;
                        tx.execute("INSERT INTO t VALUES ($1)", params![1i64])
                            .await?;
                        Ok(())
                    })
                }),
            )
            .await;
        assert!(matches!(r, Err(StoreError::Conflict { .. })), "{r:?}");
        let n = db
            .run(
                Mode::Read,
                script(|tx| {
                    Box::pin(async move {
                        Ok(tx
                            .query_one("SELECT count(*) FROM t", vec![])
                            .await?
                            .i64(0)?)
                    })
                }),
            )
            .await
            .unwrap();
        assert_eq!(n, 0, "the first insert was rolled back");
    }

    #[tokio::test]
    async fn garbage_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let garbage = vec![0x5au8; 8192];
        std::fs::write(&path, &garbage).unwrap();
        let err = SqliteDb::open(&path).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("left untouched"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), garbage, "file unchanged");
    }
}
