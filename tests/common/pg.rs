//! A throwaway PostgreSQL cluster for one test binary: `initdb` in a temporary directory as
//! the `postgres` user (initdb refuses root), started on 127.0.0.1 on a free port, each
//! test case given its own database, stopped and removed on drop.
//!
//! Not possible here (no PostgreSQL binaries, no `postgres` user, not root and not
//! `postgres`)? [`Cluster::start`] says why, and the caller skips — unless
//! `AGENTWIRE_REQUIRE_PG=1` (CI), which turns that into a failure.
//!
//! Shared by the store's suite, the replica test and the benchmarks: besides databases it
//! stops and restarts the server in place (an outage) and reads a database's transaction
//! counter (its load).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running cluster.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    run_as: Option<&'static str>,
    next: std::sync::atomic::AtomicU32,
}

fn find_bin() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("PG_BIN") {
        return Some(PathBuf::from(d));
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

impl Cluster {
    fn cmd(&self, prog: &str) -> Command {
        let bin = self.bin.join(prog);
        match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(bin);
                c
            }
            None => Command::new(bin),
        }
    }

    /// Starts a cluster, or says why it cannot.
    pub fn start() -> Result<Self, String> {
        let bin = find_bin().ok_or("no PostgreSQL binaries under /usr/lib/postgresql")?;
        let root = rustix::process::geteuid().is_root();
        let run_as = if root {
            Command::new("id")
                .arg("postgres")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .ok_or("running as root, and there is no postgres user to run initdb as")?;
            Some("postgres")
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("agentwire-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        if root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:", &dir.display().to_string()])
                .status()
                .map_err(|e| e.to_string())?
                .success();
            if !ok {
                return Err("chown of the cluster directory failed".into());
            }
        }
        let mut cluster = Self {
            dir,
            bin,
            port: 0,
            run_as,
            next: Default::default(),
        };
        let data = cluster.dir.join("data");
        let out = cluster
            .cmd("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "aw",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // A port another process takes between our probe and the start is retried.
        for _ in 0..5 {
            cluster.port = free_port();
            if cluster.pg_ctl_start().map_err(|e| format!("pg_ctl: {e}"))? {
                return Ok(cluster);
            }
        }
        let log = std::fs::read_to_string(cluster.dir.join("log")).unwrap_or_default();
        Err(format!("PostgreSQL did not start: {log}"))
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://aw@127.0.0.1:{}/{db}", self.port)
    }

    /// A fresh empty database; its URL.
    pub async fn database(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("case_{n}");
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect to the cluster");
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        drop(client);
        let _ = task.await;
        self.url(&name)
    }

    /// Stops the server (the store then answers 503), keeping its data.
    pub fn stop(&self) {
        let _ = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .output();
    }

    /// Starts the server on `self.port`; whether it started.
    fn pg_ctl_start(&self) -> std::io::Result<bool> {
        let opts = format!(
            "-k {} -h 127.0.0.1 -p {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            self.dir.display(),
            self.port
        );
        let out = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "30", "-o", &opts, "start"])
            .output()?;
        Ok(out.status.success())
    }

    /// Starts it again on the same port, after [`Cluster::stop`].
    pub fn start_again(&self) {
        assert!(
            self.pg_ctl_start().expect("pg_ctl start"),
            "PostgreSQL restarted"
        );
    }

    /// Stops the server (fast: open sessions are ended) and starts it again on the same
    /// port and data directory, as an operator's restart does.
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    /// The database name in a URL [`Cluster::database`] returned.
    pub fn name_of(url: &str) -> &str {
        url.rsplit('/').next().unwrap_or(url)
    }

    /// Transactions committed and rolled back in database `db` so far, as the statistics
    /// system reports them (it publishes each backend's counts within about a second, so
    /// compare readings taken seconds apart). Reading it is one transaction too, in the
    /// maintenance database, so it does not count itself.
    pub async fn transactions(&self, db: &str) -> Result<u64, tokio_postgres::Error> {
        let v = self
            .query_i64(
                "postgres",
                "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database \
                 WHERE datname = $1",
                &[&db],
            )
            .await?;
        Ok(u64::try_from(v.unwrap_or(0)).unwrap_or(0))
    }

    /// One number from a query in database `db`: the first column of the first row, or
    /// `None` without rows.
    pub async fn query_i64(
        &self,
        db: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Option<i64>, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::connect(&self.url(db), tokio_postgres::NoTls).await?;
        let task = tokio::spawn(conn);
        let row = client.query_opt(sql, params).await;
        drop(client);
        let _ = task.await;
        Ok(row?.map(|r| r.get::<_, i64>(0)))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
