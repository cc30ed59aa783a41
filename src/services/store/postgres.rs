//! The production backend: PostgreSQL through tokio-postgres, with a deadpool connection
//! pool. Statements are prepared once per connection (`prepare_cached`); every
//! transaction is bounded in time, so a database that stops answering yields 503s rather
//! than requests that hang.
//!
//! TLS to the database is not supported yet: connect over a Unix socket, loopback, or a
//! private network (a URL asking for `sslmode=require` is refused at start rather than
//! silently sent in clear).

use super::db::{Backend, DbError, Mode, Row, Script, Tx, Value};
use super::error::StoreError;
use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::future::BoxFuture;
use std::time::Duration;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{NoTls, config::SslMode};

/// Connections kept open.
pub const MAX_CONNECTIONS: usize = 16;

/// The longest one transaction may take, waiting for a connection included.
const TXN_TIMEOUT: Duration = Duration::from_secs(10);

/// A PostgreSQL database and its connection pool.
#[derive(Clone)]
pub struct PgDb {
    pool: Pool,
    describe: String,
}

impl std::fmt::Debug for PgDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDb")
            .field("at", &self.describe)
            .finish_non_exhaustive()
    }
}

/// `host:port/db` and the user, never the password.
fn describe(cfg: &tokio_postgres::Config) -> String {
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{host}:{port}/{} as {}",
        cfg.get_dbname().unwrap_or("(default)"),
        cfg.get_user().unwrap_or("(default user)")
    )
}

/// The connection settings in `url`, with agentwire's defaults (application name, a
/// 5 s connect timeout).
///
/// # Errors
/// [`StoreError::Config`] for a URL that cannot be used.
pub fn config(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut cfg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Config(format!("--database-url: {e}")))?;
    if cfg.get_ssl_mode() == SslMode::Require {
        return Err(StoreError::Config(
            "sslmode=require: TLS to PostgreSQL is not supported yet; connect over a Unix \
             socket, loopback or a private network"
                .into(),
        ));
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name("agentwire");
    }
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(5));
    }
    Ok(cfg)
}

impl PgDb {
    /// Connects to `url` (`postgres://user:password@host:port/db`) and checks that the
    /// database answers.
    ///
    /// # Errors
    /// [`StoreError::Config`] for a URL that cannot be used, [`StoreError::Unavailable`]
    /// when the database does not answer.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let cfg = config(url)?;
        let describe = describe(&cfg);
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(MAX_CONNECTIONS)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Config(format!("connection pool: {e}")))?;
        let db = Self { pool, describe };
        db.run(
            Mode::Read,
            super::db::script(|tx| {
                Box::pin(async move {
                    tx.query("SELECT 1", vec![]).await?;
                    Ok(())
                })
            }),
        )
        .await
        .map_err(|e| match e {
            StoreError::Unavailable(m) => {
                StoreError::Unavailable(format!("PostgreSQL at {}: {m}", db.describe))
            }
            other => other,
        })?;
        Ok(db)
    }

    /// Where the database is (no password).
    pub fn describe(&self) -> &str {
        &self.describe
    }

    pub(super) async fn run<R: Send + 'static>(
        &self,
        mode: Mode,
        script: impl Script<R>,
    ) -> Result<R, StoreError> {
        let work = async {
            let mut client = self.pool.get().await.map_err(pool_error)?;
            let tx = client
                .build_transaction()
                .read_only(mode == Mode::Read)
                .start()
                .await
                .map_err(classify)?;
            let mut ptx = PgTx { tx };
            match script(&mut ptx).await {
                Ok(v) => {
                    ptx.tx.commit().await.map_err(classify)?;
                    Ok(v)
                }
                Err(e) => {
                    let _ = ptx.tx.rollback().await;
                    Err(e)
                }
            }
        };
        tokio::time::timeout(TXN_TIMEOUT, work).await.map_err(|_| {
            StoreError::Unavailable(format!(
                "PostgreSQL did not answer within {} s",
                TXN_TIMEOUT.as_secs()
            ))
        })?
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => classify(e).into(),
        other => StoreError::Unavailable(format!("no database connection: {other}")),
    }
}

struct PgTx<'c> {
    tx: deadpool_postgres::Transaction<'c>,
}

impl PgTx<'_> {
    async fn prepare(&self, sql: &str) -> Result<tokio_postgres::Statement, DbError> {
        self.tx.prepare_cached(sql).await.map_err(classify)
    }
}

fn refs(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

impl Tx for PgTx<'_> {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn query<'a>(
        &'a mut self,
        sql: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<Vec<Row>, DbError>> {
        Box::pin(async move {
            let stmt = self.prepare(sql).await?;
            let rows = self
                .tx
                .query(&stmt, &refs(&params))
                .await
                .map_err(classify)?;
            rows.iter().map(convert).collect()
        })
    }

    fn execute<'a>(
        &'a mut self,
        sql: &'a str,
        params: Vec<Value>,
    ) -> BoxFuture<'a, Result<u64, DbError>> {
        Box::pin(async move {
            let stmt = self.prepare(sql).await?;
            self.tx
                .execute(&stmt, &refs(&params))
                .await
                .map_err(classify)
        })
    }

    fn batch<'a>(&'a mut self, sql: &'a str) -> BoxFuture<'a, Result<(), DbError>> {
        Box::pin(async move { self.tx.batch_execute(sql).await.map_err(classify) })
    }
}

fn convert(row: &tokio_postgres::Row) -> Result<Row, DbError> {
    let get_err = |e: tokio_postgres::Error| DbError::Decode(e.to_string());
    let mut out = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let t = col.type_();
        let v = if *t == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)
                .map_err(get_err)?
                .map_or(Value::Null, Value::I64)
        } else if *t == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)
                .map_err(get_err)?
                .map_or(Value::Null, |v| Value::I64(v.into()))
        } else if *t == Type::INT2 {
            row.try_get::<_, Option<i16>>(i)
                .map_err(get_err)?
                .map_or(Value::Null, |v| Value::I64(v.into()))
        } else if *t == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)
                .map_err(get_err)?
                .map_or(Value::Null, Value::Bool)
        } else if [Type::TEXT, Type::VARCHAR, Type::NAME, Type::BPCHAR].contains(t) {
            row.try_get::<_, Option<String>>(i)
                .map_err(get_err)?
                .map_or(Value::Null, Value::Text)
        } else if *t == Type::BYTEA {
            row.try_get::<_, Option<Vec<u8>>>(i)
                .map_err(get_err)?
                .map_or(Value::Null, Value::Bytes)
        } else if *t == Type::UUID {
            row.try_get::<_, Option<uuid::Uuid>>(i)
                .map_err(get_err)?
                .map_or(Value::Null, Value::Uuid)
        } else {
            return Err(DbError::Decode(format!(
                "column {} has type {t}, which the store does not read",
                col.name()
            )));
        };
        out.push(v);
    }
    Ok(Row(out))
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::I64(v) => {
                if *ty == Type::INT8 {
                    v.to_sql(ty, out)
                } else if *ty == Type::INT4 {
                    i32::try_from(*v)?.to_sql(ty, out)
                } else if *ty == Type::INT2 {
                    i16::try_from(*v)?.to_sql(ty, out)
                } else {
                    Err(format!("cannot bind an integer to a {ty} parameter").into())
                }
            }
            Value::Bool(b) => b.to_sql(ty, out),
            Value::Text(s) => {
                if *ty == Type::UUID {
                    uuid::Uuid::parse_str(s)?.to_sql(ty, out)
                } else {
                    s.as_str().to_sql(ty, out)
                }
            }
            Value::Bytes(b) => b.as_slice().to_sql(ty, out),
            Value::Uuid(u) => {
                if *ty == Type::UUID {
                    u.to_sql(ty, out)
                } else {
                    u.to_string().as_str().to_sql(ty, out)
                }
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        // Checked per value in `to_sql`, which names the mismatch.
        true
    }

    to_sql_checked!();
}

fn classify(e: tokio_postgres::Error) -> DbError {
    let Some(db) = e.as_db_error() else {
        // No server answer: the connection failed or closed.
        return DbError::Unavailable(e.to_string());
    };
    let code = db.code().code();
    let text = match db.constraint() {
        Some(c) => format!("{} (constraint {c})", db.message()),
        None => db.message().to_string(),
    };
    match code {
        // integrity_constraint_violation: unique, foreign key, check, not null.
        c if c.starts_with("23") => DbError::Constraint(text),
        // connection exception, insufficient resources, operator intervention (shutdown),
        // serialization failure and deadlock (retryable), lock not available.
        c if c.starts_with("08")
            || c.starts_with("53")
            || c.starts_with("57")
            || c == "40001"
            || c == "40P01"
            || c == "55P03" =>
        {
            DbError::Unavailable(format!("{code}: {text}"))
        }
        _ => DbError::Other(format!("{code}: {text}")),
    }
}
