//! The control plane in a database: users, tokens, workspaces, shares, agents and the
//! audit log, in SQLite (embedded, the default: `DATA_DIR/agentwire.db`) or PostgreSQL
//! (`--database-url postgres://…`).
//!
//! ```text
//!  MCP front end, coordinator ──ControlPlane──▶ Store ──▶ cache (hit: no database)
//!  admin API (services::admin) ──Store::create_user, …─┘      │ miss
//!                                                             ▼
//!                          ops (each operation written once as a script over `Tx`)
//!                                                             ▼
//!                                 db::Db ──▶ sqlite (blocking pool, WAL) | postgres (pool)
//! ```
//!
//! - **One operation, two dialects.** Operations live in `ops`, written against the
//!   small [`db::Tx`] interface with `$N` placeholders; each backend runs them in one
//!   transaction, so a failure writes nothing.
//! - **Migrations** (`migrations`) are embedded and applied at open, under a lock.
//! - **The cache** (`cache`) answers authentications and workspace lookups; every write
//!   through this store clears it at commit, and a poller clears it when another process
//!   changes the database (the `control_version` row), within [`StoreOptions::poll`].
//!   Each clear is announced on [`ControlPlane::changes`], which the coordinator uses to
//!   re-check its live streams.
//! - **OAuth records** (`oauth`): the authorization server's clients, codes, grants
//!   and tokens ([`crate::services::oauth::OAuthStore`]), outside the cache.
//! - **The audit log** (`audit`) is written by its own task from a bounded queue.
//! - **Last-used times** of tokens are kept in memory and written every
//!   [`LAST_USED_FLUSH`], not on every request.
//!
//! Every task is owned by the [`Store`]: [`Store::close`] flushes and stops them;
//! dropping the store aborts them.

mod admin;
mod audit;
pub mod boot;
mod cache;
pub mod db;
pub mod error;
pub mod migrations;
pub mod model;
mod oauth;
pub(crate) mod ops;
pub mod password;
mod plane;
pub mod postgres;
pub mod sqlite;

pub use admin::TokenHolder;
pub use audit::AuditStats;
pub use error::StoreError;
pub use ops::seed::{DEMO_AGENT, DEMO_WORKSPACE, DemoSeed, DemoState};

use crate::runtime::clock;
use db::{Db, Mode, script};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The SQLite file's name in the data directory.
pub const SQLITE_FILE: &str = "agentwire.db";

/// How often token last-used times are written.
pub const LAST_USED_FLUSH: Duration = Duration::from_secs(15);

/// How often the audit retention is applied.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    clock::wall()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://…` or `postgresql://…`).
    Postgres(String),
}

impl Location {
    /// `--database-url` if given (a PostgreSQL URL, or `sqlite:PATH`), else
    /// `DATA_DIR/agentwire.db`.
    ///
    /// # Errors
    /// [`StoreError::Config`] for a URL of another kind.
    pub fn from_flag(database_url: Option<&str>, data_dir: &Path) -> Result<Self, StoreError> {
        let Some(url) = database_url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(Self::Sqlite(data_dir.join(SQLITE_FILE)));
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_string()));
        }
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::Config("sqlite: needs a file path".into()));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        Err(StoreError::Config(format!(
            "--database-url must start with postgres://, postgresql:// or sqlite: (got {:?})",
            url.split("://").next().unwrap_or(url)
        )))
    }
}

/// Tunables; the defaults suit a server.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Audit entries older than this are deleted (hourly); `None` keeps them forever.
    pub audit_retention: Option<Duration>,
    /// Tool-call records queued for writing at most; beyond, records are dropped and
    /// counted.
    pub audit_queue: usize,
    /// How often to look for changes made by other processes.
    pub poll: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            audit_retention: Some(Duration::from_secs(90 * 86_400)),
            audit_queue: 16_384,
            poll: Duration::from_millis(500),
        }
    }
}

/// The shared state the store's tasks also hold.
#[derive(Debug)]
pub(crate) struct Inner {
    db: Db,
    cache: cache::Cache,
    /// The serving process's own tailnet token (never stored).
    service: std::sync::RwLock<Option<[u8; 32]>>,
    /// The control-plane version the cache reflects.
    version: AtomicI64,
    changes: watch::Sender<u64>,
    /// Token id → last presented (Unix ms), not yet written.
    last_used: Mutex<HashMap<Uuid, i64>>,
    audit: audit::AuditQueue,
    opts: StoreOptions,
    errors: AtomicU64,
}

impl Inner {
    fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The database moved to control-plane version `v`: clear the cache and tell
    /// whoever listens.
    fn changed(&self, v: i64) {
        self.version.store(v, Ordering::Release);
        self.cache.invalidate();
        self.changes.send_modify(|n| *n += 1);
    }
}

/// The database-backed control plane. See the module docs.
#[derive(Debug)]
pub struct Store {
    inner: Arc<Inner>,
    stop: CancellationToken,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Store {
    /// Opens (creating if needed) the database at `location`, applies migrations and
    /// starts the store's tasks.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`], [`StoreError::SchemaTooNew`], [`StoreError::Migration`],
    /// [`StoreError::Config`] or [`StoreError::Unavailable`].
    pub async fn open(location: &Location, opts: StoreOptions) -> Result<Self, StoreError> {
        let db = match location {
            Location::Sqlite(path) => Db::Sqlite(sqlite::SqliteDb::open(path).await?),
            Location::Postgres(url) => Db::Postgres(postgres::PgDb::connect(url).await?),
        };
        migrations::apply(&db).await?;
        let version = db
            .run(
                Mode::Read,
                script(|tx| Box::pin(async move { ops::version(tx).await })),
            )
            .await?;
        let (queue, rx) = audit::AuditQueue::new(opts.audit_queue);
        let inner = Arc::new(Inner {
            db,
            cache: cache::Cache::default(),
            service: std::sync::RwLock::new(None),
            version: AtomicI64::new(version),
            changes: watch::channel(0).0,
            last_used: Mutex::new(HashMap::new()),
            audit: queue,
            opts,
            errors: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(audit::run(inner.clone(), rx, stop.clone())),
            tokio::spawn(maintain(inner.clone(), stop.clone())),
        ];
        tracing::info!(db = %inner.db.describe(), schema = migrations::latest(), "store open");
        Ok(Self {
            inner,
            stop,
            tasks: Mutex::new(tasks),
        })
    }

    /// Where the data lives (no password), for logs and the banner.
    pub fn describe(&self) -> String {
        self.inner.db.describe()
    }

    /// The schema version the database is at.
    ///
    /// # Errors
    /// The database's own.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        migrations::current(&self.inner.db).await
    }

    /// Which backend this is.
    pub fn backend(&self) -> db::Backend {
        self.inner.db.backend()
    }

    /// Accepts `token` as the serving process's own tailnet (the service principal). It
    /// is held in memory only; each process sets its own.
    pub fn set_service_token(&self, token: &str) {
        *self
            .inner
            .service
            .write()
            .unwrap_or_else(|e| e.into_inner()) =
            Some(crate::services::control::token_digest(token));
    }

    /// Audit queue counters.
    pub fn audit_stats(&self) -> AuditStats {
        self.inner.audit.stats()
    }

    /// Waits (up to `timeout`) until every queued audit record is written or dropped.
    pub async fn flush_audit(&self, timeout: Duration) -> bool {
        let deadline = clock::now() + timeout;
        while self.inner.audit.pending() > 0 {
            if clock::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Writes pending last-used times now.
    pub async fn flush_last_used(&self) {
        flush_last_used(&self.inner).await;
    }

    /// Writes what is queued (audit records, last-used times) and stops the store's
    /// tasks. Lookups still work afterwards; the audit log no longer records.
    pub async fn close(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop.cancel();
        for t in self
            .tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

/// Writes the last-used times gathered since the previous flush.
async fn flush_last_used(inner: &Inner) {
    let pending = std::mem::take(&mut *inner.last_used.lock().unwrap_or_else(|e| e.into_inner()));
    if pending.is_empty() {
        return;
    }
    let r = inner
        .db
        .run(
            Mode::Write,
            script(move |tx| {
                Box::pin(async move {
                    for (id, at) in pending {
                        tx.execute(
                            "UPDATE tokens SET last_used_ms = $2 WHERE id = $1 \
                             AND (last_used_ms IS NULL OR last_used_ms < $2)",
                            db::params![id, at],
                        )
                        .await?;
                    }
                    Ok(())
                })
            }),
        )
        .await;
    if let Err(e) = r {
        inner.count_error();
        tracing::debug!(error = %e, "token last-used times not written");
    }
}

/// The store's housekeeping: notices changes made elsewhere, writes last-used times,
/// applies the audit retention.
async fn maintain(inner: Arc<Inner>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(inner.opts.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flushed = clock::now();
    let mut pruned: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => {
                flush_last_used(&inner).await;
                return;
            }
        }
        let v = inner
            .db
            .run(
                Mode::Read,
                script(|tx| Box::pin(async move { ops::version(tx).await })),
            )
            .await;
        match v {
            Ok(v) if v != inner.version.load(Ordering::Acquire) => {
                tracing::debug!(version = v, "control plane changed by another process");
                inner.changed(v);
            }
            Ok(_) => {}
            Err(e) => {
                inner.count_error();
                tracing::debug!(error = %e, "store poll failed");
            }
        }
        let now = clock::now();
        if now.duration_since(flushed) >= LAST_USED_FLUSH {
            flushed = now;
            flush_last_used(&inner).await;
        }
        if let Some(keep) = inner.opts.audit_retention
            && pruned.is_none_or(|t| now.duration_since(t) >= PRUNE_EVERY)
        {
            pruned = Some(now);
            let before = now_ms() - keep.as_millis() as i64;
            let r = inner
                .db
                .run(
                    Mode::Write,
                    script(move |tx| Box::pin(async move { ops::audit::prune(tx, before).await })),
                )
                .await;
            match r {
                Ok(n) if n > 0 => tracing::info!(removed = n, "audit log retention applied"),
                Ok(_) => {}
                Err(e) => {
                    inner.count_error();
                    tracing::warn!(error = %e, "audit log retention not applied");
                }
            }
        }
    }
}
