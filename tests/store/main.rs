//! The store's suite, run unchanged against both backends: SQLite (a file in a temporary
//! directory) and a real PostgreSQL (a cluster of its own, started once for this binary
//! in a temporary directory on loopback and removed after; see `../common/pg.rs`).
//!
//! Each backend is one test that runs every case in turn (each with a fresh database),
//! printing each case's name and time: the cluster is started once, not per case. Cases
//! are in `cases.rs` (the store through its API), `serve.rs` (a whole `agentwire serve`:
//! revocation timing, restart, two processes migrating one database) and `cli.rs`
//! (`agentwire admin` against it).
//!
//! Rerun with output: `cargo nextest run --test store --no-capture`.

#![allow(clippy::disallowed_methods)]

mod cases;
mod cli;
#[path = "../common/mcp_http.rs"]
mod mcp_http;
#[path = "../mcp_support/mod.rs"]
mod mcp_support;
#[path = "../oauth_support/mod.rs"]
mod oauth_support;
#[path = "../common/pg.rs"]
mod pg;
mod replica;
mod serve;

use agentwire::services::store::{Location, Store, StoreOptions};
use futures_util::future::BoxFuture;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// Which database a case runs on.
#[derive(Clone)]
pub enum Backend {
    Sqlite,
    Postgres(Arc<pg::Cluster>),
}

/// A case's surroundings: the backend and a scratch directory.
#[derive(Clone)]
pub struct Ctx {
    pub backend: Backend,
    pub dir: Arc<tempfile::TempDir>,
    n: Arc<AtomicU32>,
}

impl Ctx {
    /// A fresh, empty database: its `--database-url`.
    pub async fn database_url(&self) -> String {
        match &self.backend {
            Backend::Sqlite => {
                let n = self.n.fetch_add(1, Ordering::Relaxed);
                format!(
                    "sqlite:{}",
                    self.dir.path().join(format!("db{n}.sqlite")).display()
                )
            }
            Backend::Postgres(c) => c.database().await,
        }
    }

    /// A fresh scratch directory.
    pub fn scratch(&self) -> PathBuf {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        let d = self.dir.path().join(format!("scratch{n}"));
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    }

    pub fn location(url: &str) -> Location {
        Location::from_flag(Some(url), std::path::Path::new("/nonexistent")).expect("location")
    }

    /// A store on a fresh database.
    pub async fn store(&self) -> (Store, String) {
        let url = self.database_url().await;
        (self.open(&url, StoreOptions::default()).await, url)
    }

    /// A store on `url`.
    pub async fn open(&self, url: &str, opts: StoreOptions) -> Store {
        Store::open(&Self::location(url), opts)
            .await
            .expect("store opens")
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }
}

pub type Case = fn(Ctx) -> BoxFuture<'static, ()>;

fn run(backend: Backend) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ctx = Ctx {
        backend,
        dir: Arc::new(tempfile::tempdir().expect("tempdir")),
        n: Arc::default(),
    };
    let all: Vec<(&str, Case)> = cases::ALL
        .iter()
        .chain(serve::ALL)
        .chain(cli::ALL)
        .chain(replica::ALL)
        .copied()
        .collect();
    let filter = std::env::var("STORE_CASE").ok();
    for (name, case) in all {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        println!("case {name} ...");
        let t = Instant::now();
        rt.block_on(case(ctx.clone()));
        println!("case {name}: ok in {} ms", t.elapsed().as_millis());
    }
}

#[test]
fn sqlite() {
    run(Backend::Sqlite);
}

#[test]
fn postgres() {
    match pg::Cluster::start() {
        Ok(c) => run(Backend::Postgres(Arc::new(c))),
        Err(why) if std::env::var("AGENTWIRE_REQUIRE_PG").as_deref() == Ok("1") => {
            panic!("PostgreSQL is required (AGENTWIRE_REQUIRE_PG=1) but cannot run: {why}")
        }
        Err(why) => eprintln!("skipping the PostgreSQL run: {why}"),
    }
}
