//! The one query interface both backends implement, so every operation is written once.
//!
//! An operation is a *script*: an async closure over `&mut dyn Tx` that runs inside one
//! transaction and commits only if it returns `Ok`. SQL uses PostgreSQL's `$1, $2, …`
//! placeholders; the SQLite backend binds them by name (SQLite reads `$1` as a named
//! parameter), so a statement text serves both. Values cross the interface as [`Value`]
//! and rows come back owned ([`Row`]), which keeps the two drivers' types out of the
//! operations. The few dialect differences (DDL, the advisory lock) branch on
//! [`Tx::backend`].
//!
//! The SQLite backend runs a script on a blocking thread and polls its future once: its
//! `Tx` methods finish synchronously, so the script never waits on anything else. A script
//! MUST NOT await anything but its `Tx` (no timers, no channels); the SQLite backend
//! reports such a script as an internal error rather than blocking.

use super::error::StoreError;
use futures_util::future::BoxFuture;
use std::fmt;
use uuid::Uuid;

/// Which database a transaction runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite (rusqlite, bundled library).
    Sqlite,
    /// PostgreSQL (tokio-postgres).
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        })
    }
}

/// A parameter or column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL (binds as NULL of whatever type the column has).
    Null,
    /// An integer (`BIGINT`).
    I64(i64),
    /// A boolean (`BOOLEAN` in PostgreSQL, `INTEGER` 0/1 in SQLite).
    Bool(bool),
    /// Text.
    Text(String),
    /// Bytes (`BYTEA` / `BLOB`).
    Bytes(Vec<u8>),
    /// A UUID (`UUID` in PostgreSQL, canonical text in SQLite).
    Uuid(Uuid),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Self::I64(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Self::Text(v.clone())
    }
}
impl From<Uuid> for Value {
    fn from(v: Uuid) -> Self {
        Self::Uuid(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Self::Bytes(v)
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Self::Bytes(v.to_vec())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

/// Builds a parameter list: `params![a, b, c]`.
macro_rules! params {
    ($($v:expr),* $(,)?) => { vec![$($crate::services::store::db::Value::from($v)),*] };
}
pub(crate) use params;

/// One result row, owned.
#[derive(Debug, Clone, Default)]
pub struct Row(pub(crate) Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value, DbError> {
        self.0
            .get(i)
            .ok_or_else(|| DbError::Decode(format!("no column {i}")))
    }

    fn wrong(&self, i: usize, want: &str) -> DbError {
        DbError::Decode(format!(
            "column {i}: expected {want}, got {:?}",
            self.0.get(i)
        ))
    }

    /// An integer column.
    pub fn i64(&self, i: usize) -> Result<i64, DbError> {
        match self.at(i)? {
            Value::I64(v) => Ok(*v),
            _ => Err(self.wrong(i, "integer")),
        }
    }

    /// A nullable integer column.
    pub fn opt_i64(&self, i: usize) -> Result<Option<i64>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            _ => self.i64(i).map(Some),
        }
    }

    /// A boolean column (an integer 0/1 in SQLite).
    pub fn bool(&self, i: usize) -> Result<bool, DbError> {
        match self.at(i)? {
            Value::Bool(v) => Ok(*v),
            Value::I64(v) => Ok(*v != 0),
            _ => Err(self.wrong(i, "boolean")),
        }
    }

    /// A text column.
    pub fn text(&self, i: usize) -> Result<String, DbError> {
        match self.at(i)? {
            Value::Text(v) => Ok(v.clone()),
            _ => Err(self.wrong(i, "text")),
        }
    }

    /// A nullable text column.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            _ => self.text(i).map(Some),
        }
    }

    /// A UUID column (text in SQLite).
    pub fn uuid(&self, i: usize) -> Result<Uuid, DbError> {
        match self.at(i)? {
            Value::Uuid(v) => Ok(*v),
            Value::Text(t) => t.parse().map_err(|_| self.wrong(i, "uuid")),
            _ => Err(self.wrong(i, "uuid")),
        }
    }

    /// A nullable UUID column.
    pub fn opt_uuid(&self, i: usize) -> Result<Option<Uuid>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            _ => self.uuid(i).map(Some),
        }
    }

    /// A bytes column.
    pub fn bytes(&self, i: usize) -> Result<Vec<u8>, DbError> {
        match self.at(i)? {
            Value::Bytes(v) => Ok(v.clone()),
            _ => Err(self.wrong(i, "bytes")),
        }
    }
}

/// What went wrong talking to the database, classified by what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached or is not answering (connection refused or lost,
    /// locked past the busy timeout, disk full, shutting down): try again later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness or foreign-key constraint refused the write.
    #[error("constraint violated: {0}")]
    Constraint(String),
    /// The file is not a database or is damaged.
    #[error("database damaged: {0}")]
    Corrupt(String),
    /// A value did not have the type the code expected (a schema the code does not know).
    #[error("unexpected value: {0}")]
    Decode(String),
    /// Anything else the database refused (a bug in a statement, most likely).
    #[error("database error: {0}")]
    Other(String),
}

/// One transaction's statements. See the module docs for the placeholder convention.
pub trait Tx: Send {
    /// Which database this is.
    fn backend(&self) -> Backend;

    /// Runs a statement that returns rows.
    fn query<'a>(
        &'a mut self,
        sql: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<Vec<Row>, DbError>>;

    /// Runs a statement; the number of rows it changed.
    fn execute<'a>(
        &'a mut self,
        sql: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<u64, DbError>>;

    /// Runs several statements without parameters (migrations).
    fn batch<'a>(&'a mut self, sql: &'a str) -> BoxFuture<'a, Result<(), DbError>>;
}

impl dyn Tx + '_ {
    /// The first row, if any.
    pub async fn query_opt(
        &mut self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Exactly one row.
    pub async fn query_one(&mut self, sql: &str, params: Vec<Value>) -> Result<Row, DbError> {
        self.query_opt(sql, params)
            .await?
            .ok_or_else(|| DbError::Decode(format!("no row from {sql}")))
    }
}

/// A script: one transaction's work. Write it as
/// `|tx| Box::pin(async move { ... })`.
pub trait Script<R>:
    for<'a> FnOnce(&'a mut dyn Tx) -> BoxFuture<'a, Result<R, StoreError>> + Send + 'static
{
}

impl<R, F> Script<R> for F where
    F: for<'a> FnOnce(&'a mut dyn Tx) -> BoxFuture<'a, Result<R, StoreError>> + Send + 'static
{
}

/// Whether a transaction only reads (SQLite then takes no write lock, PostgreSQL runs it
/// read-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reads only.
    Read,
    /// Reads and writes.
    Write,
}

/// The open database: one of the two backends.
#[derive(Debug, Clone)]
pub enum Db {
    /// Embedded SQLite.
    Sqlite(super::sqlite::SqliteDb),
    /// PostgreSQL.
    Postgres(super::postgres::PgDb),
}

impl Db {
    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    /// Runs `script` in one transaction, committed if it returns `Ok` and rolled back
    /// otherwise.
    ///
    /// # Errors
    /// Whatever the script returns, or [`StoreError::Unavailable`] when the database
    /// cannot be reached.
    pub async fn run<R: Send + 'static>(
        &self,
        mode: Mode,
        script: impl Script<R>,
    ) -> Result<R, StoreError> {
        match self {
            Self::Sqlite(db) => db.run(mode, script).await,
            Self::Postgres(db) => db.run(mode, script).await,
        }
    }

    /// A human description of where the data lives (no password).
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(db) => format!("sqlite {}", db.path().display()),
            Self::Postgres(db) => format!("postgres {}", db.describe()),
        }
    }
}

/// Builds a script from a closure, helping type inference with the higher-ranked
/// lifetime.
pub fn script<R, F>(f: F) -> F
where
    F: for<'a> FnOnce(&'a mut dyn Tx) -> BoxFuture<'a, Result<R, StoreError>> + Send + 'static,
{
    f
}
