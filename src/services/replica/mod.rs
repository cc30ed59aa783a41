//! Replicas: several `serve` processes on one PostgreSQL database.
//!
//! Each replica registers itself (id, the relay URL other replicas dial, a heartbeat by
//! the database's clock), writes the coordinator streams it holds to its own rows, and
//! announces every change with `NOTIFY` carrying ids only; the others re-read the rows and
//! hand them to their registries (see [`crate::proto::coord::server`]'s replication
//! section). Every (re)connect of the listener, every change in the set of live replicas,
//! and a slow periodic timer trigger a full resync, so a notification lost across a
//! reconnect costs a delay, never a wrong view.
//!
//! Failure handling:
//! - Database gone: streams and the mesh keep working on what each replica knows;
//!   `/healthz` reports degraded; pending writes wait in the outbox (state, bounded by the
//!   streams held) and go out when the database returns, followed by a resync.
//! - A replica sweeps expired ones only after its own heartbeat has succeeded for a whole
//!   expiry period, so after a database outage nobody expires replicas that simply had
//!   no chance to beat yet.
//! - A replica that finds its own row gone (others expired it: it was stopped, or cut off
//!   while they were not) refuses new streams until it has registered again and written
//!   its streams back. It never fences on its own errors alone.
//!
//! Tasks: the heartbeat, the listener and the writer, owned by [`Replica`]; dropping it
//! (or [`Replica::shutdown`]) stops them and removes this replica's rows.

mod outbox;
mod sql;
mod sync;

use crate::proto::coord::server::ReplicaId;
use crate::runtime::clock;
use crate::services::hub::Hub;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why a replica operation failed.
#[derive(Debug, Error)]
pub enum ReplicaError {
    /// The database refused or did not answer.
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// No connection could be had from the pool.
    #[error("database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The database URL or pool settings cannot be used.
    #[error("{0}")]
    Config(String),
    /// A row another replica wrote does not parse.
    #[error("bad row: {0}")]
    Row(String),
    /// A database call took too long.
    #[error("database call timed out")]
    Timeout,
}

/// Settings; [`ReplicaConfig::new`] has the defaults.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// `postgres://…`
    pub database_url: String,
    /// Where other replicas reach this one's relay (the listen address, not the load
    /// balancer's).
    pub relay_url: String,
    /// How often the heartbeat runs.
    pub heartbeat: Duration,
    /// A replica whose heartbeat is older than this is expired: its peers read as `lost`.
    pub ttl: Duration,
    /// How often a full resync runs even without a reason.
    pub resync: Duration,
    /// How often this replica writes how recently each of its streams was heard from.
    pub touch: Duration,
    /// How this replica's relay trusts the other replicas' relays (the DERP mesh).
    pub tls: crate::runtime::tls::ClientTls,
}

impl ReplicaConfig {
    /// Defaults: heartbeat 1 s, expiry 4 s, resync 15 s, streams' liveness every 10 s.
    pub fn new(database_url: impl Into<String>, relay_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            relay_url: relay_url.into(),
            heartbeat: Duration::from_secs(1),
            ttl: Duration::from_secs(4),
            resync: Duration::from_secs(15),
            touch: Duration::from_secs(10),
            tls: crate::runtime::tls::ClientTls::default(),
        }
    }
}

/// Counters and gauges, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicaStats {
    /// Live replicas, this one included, as last read.
    pub live: usize,
    /// Whether the database answered the last heartbeat.
    pub healthy: bool,
    /// Whether new streams are refused.
    pub fenced: bool,
    /// Heartbeats that failed.
    pub heartbeat_failures: u64,
    /// Times this replica found itself expired and registered again.
    pub reregistered: u64,
    /// Replicas this one expired.
    pub expired: u64,
    /// Notifications received.
    pub notifications: u64,
    /// Notifications that did not parse, or overflowed the queue (each forces a resync).
    pub bad_notifications: u64,
    /// Rows from other replicas that did not parse (skipped).
    pub bad_rows: u64,
    /// Full resyncs.
    pub resyncs: u64,
    /// Listener (re)connections.
    pub listener_connects: u64,
    /// Batches of this replica's changes written.
    pub batches: u64,
    /// Batches that failed and went back to wait.
    pub batch_failures: u64,
    /// Changes waiting to be written.
    pub pending: usize,
    /// Notification-to-applied latency quantiles (p50, p99), by the database's clock,
    /// over the most recent [`LATENCY_SAMPLES`] peer changes.
    pub notify_latency: Option<(Duration, Duration)>,
}

/// Parses a notification payload (`p <id>`, `t <id>`, `r <replica>`, `h <src> <dst>`);
/// whether it is one. For the fuzz target.
#[cfg(any(test, fuzzing))]
pub fn parse_note(payload: &str) -> bool {
    sql::Note::parse(payload).is_some()
}

/// Latency samples kept for the quantiles.
pub const LATENCY_SAMPLES: usize = 1024;

#[derive(Debug, Default)]
struct Counters {
    healthy: AtomicBool,
    heartbeat_failures: AtomicU64,
    reregistered: AtomicU64,
    expired: AtomicU64,
    notifications: AtomicU64,
    bad_notifications: AtomicU64,
    bad_rows: AtomicU64,
    resyncs: AtomicU64,
    listener_connects: AtomicU64,
    batches: AtomicU64,
    batch_failures: AtomicU64,
    live: AtomicU64,
    latency: Mutex<VecDeque<Duration>>,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    fn sample(&self, d: Duration) {
        let mut l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        if l.len() == LATENCY_SAMPLES {
            l.pop_front();
        }
        l.push_back(d);
    }

    fn quantiles(&self) -> Option<(Duration, Duration)> {
        let mut v: Vec<Duration> = self
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some((at(0.5), at(0.99)))
    }
}

/// State the tasks share.
#[derive(Debug)]
struct Shared {
    id: ReplicaId,
    cfg: ReplicaConfig,
    hub: Arc<Hub>,
    pool: deadpool_postgres::Pool,
    pg: tokio_postgres::Config,
    outbox: Arc<outbox::Outbox>,
    counters: Counters,
    /// Wakes the listener for a full resync.
    resync: tokio::sync::Notify,
    /// Other live replicas' relay URLs, for the DERP mesh.
    peers: watch::Sender<Vec<(ReplicaId, String)>>,
    /// Every live replica, this one included, as the heartbeat last read it: what a
    /// targeted re-read judges bindings by, without a query of its own.
    live: Mutex<std::collections::BTreeSet<ReplicaId>>,
    cancel: CancellationToken,
    started: std::time::Instant,
    /// Latched once ready for traffic (see [`Replica::starting`]).
    ready: AtomicBool,
}

/// This process as one replica. Dropping it stops its tasks; [`Replica::shutdown`] also
/// removes its rows so the others see its peers go at once.
#[derive(Debug)]
pub struct Replica {
    shared: Arc<Shared>,
    tracker: TaskTracker,
    mesh_key: String,
}

/// The longest any one database call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a new replica may stay out of rotation (`/healthz` 503) waiting to be meshed
/// with the others. Past it, it serves anyway: one unreachable peer must not keep a
/// replica out for good.
pub const STARTUP_GRACE: Duration = Duration::from_secs(10);

async fn bounded<T>(
    f: impl std::future::Future<Output = Result<T, ReplicaError>>,
) -> Result<T, ReplicaError> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .map_err(|_| ReplicaError::Timeout)?
}

impl Replica {
    /// Registers this process as a replica in the database at `cfg.database_url`, turns
    /// replication on in `hub`'s coordinator, and starts the tasks.
    ///
    /// # Errors
    /// [`ReplicaError`] when the database cannot be used at start.
    pub async fn start(cfg: ReplicaConfig, hub: Arc<Hub>) -> Result<Self, ReplicaError> {
        let pg = crate::services::store::postgres::config(&cfg.database_url)
            .map_err(|e| ReplicaError::Config(e.to_string()))?;
        let mgr = deadpool_postgres::Manager::from_config(
            pg.clone(),
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(mgr)
            .max_size(3)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CALL_TIMEOUT))
            .create_timeout(Some(CALL_TIMEOUT))
            .recycle_timeout(Some(CALL_TIMEOUT))
            .build()
            .map_err(|e| ReplicaError::Config(format!("connection pool: {e}")))?;
        let id: ReplicaId = format!("r-{}", uuid::Uuid::new_v4().simple());
        let mesh_key = {
            let c = pool.get().await?;
            bounded(sql::register(&*c, &id, &cfg.relay_url)).await?;
            bounded(sql::mesh_key(&*c)).await?
        };
        tracing::info!(
            replica = id,
            relay = cfg.relay_url,
            "registered as a replica"
        );
        let shared = Arc::new(Shared {
            id: id.clone(),
            cfg,
            hub,
            pool,
            pg,
            outbox: Arc::new(outbox::Outbox::default()),
            counters: Counters::default(),
            resync: tokio::sync::Notify::new(),
            peers: watch::channel(Vec::new()).0,
            live: Mutex::new(std::collections::BTreeSet::new()),
            cancel: CancellationToken::new(),
            started: clock::now(),
            ready: AtomicBool::new(false),
        });
        shared.counters.healthy.store(true, Ordering::Relaxed);
        shared
            .hub
            .coordinator()
            .enable_replication(id, shared.outbox.clone());
        shared.hub.start_mesh(mesh_config(&shared.cfg, &mesh_key));
        let tracker = TaskTracker::new();
        tracker.spawn(feed_mesh(shared.clone()));
        tracker.spawn(sync::heartbeat(shared.clone()));
        tracker.spawn(sync::listen(shared.clone()));
        tracker.spawn(sync::write(shared.clone()));
        tracker.close();
        Ok(Self {
            shared,
            tracker,
            mesh_key,
        })
    }

    /// This replica's id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The DERP mesh key all replicas share (generated once, kept in the database).
    pub fn mesh_key(&self) -> &str {
        &self.mesh_key
    }

    /// The other live replicas' ids and relay URLs; changes as replicas come and go.
    pub fn mesh_peers(&self) -> watch::Receiver<Vec<(ReplicaId, String)>> {
        self.shared.peers.subscribe()
    }

    /// Counters and gauges.
    pub fn stats(&self) -> ReplicaStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ReplicaStats {
            live: get(&c.live) as usize,
            healthy: c.healthy.load(Ordering::Relaxed),
            fenced: self.shared.hub.coordinator().is_fenced(),
            heartbeat_failures: get(&c.heartbeat_failures),
            reregistered: get(&c.reregistered),
            expired: get(&c.expired),
            notifications: get(&c.notifications),
            bad_notifications: get(&c.bad_notifications),
            bad_rows: get(&c.bad_rows),
            resyncs: get(&c.resyncs),
            listener_connects: get(&c.listener_connects),
            batches: get(&c.batches),
            batch_failures: get(&c.batch_failures),
            pending: self.shared.outbox.len(),
            notify_latency: c.quantiles(),
        }
    }

    /// Rows in `replicas`, `coord_peers` and `coord_tunnels`.
    ///
    /// # Errors
    /// [`ReplicaError`] when the database does not answer.
    pub async fn row_counts(&self) -> Result<[i64; 3], ReplicaError> {
        let c = self.shared.pool.get().await?;
        bounded(sql::counts(&*c)).await
    }

    /// Stops the tasks, then deletes this replica's rows (best effort, bounded) so the
    /// others hear at once that its streams are gone.
    pub async fn shutdown(&self) {
        self.shared.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
        self.shared.hub.stop_mesh().await;
        let own = self.shared.id.clone();
        let gone = async {
            let mut c = self.shared.pool.get().await?;
            sql::leave(&mut c, &own).await
        };
        if let Err(e) = bounded(gone).await {
            tracing::warn!(error = %e, "could not remove this replica's rows; they expire");
        }
        self.shared.pool.close();
    }

    /// What `/healthz` should add: `None` when all is well.
    pub fn health(&self) -> Option<String> {
        let s = self.stats();
        if s.fenced {
            Some("replica fenced: expired by the other replicas; registering again".into())
        } else if !s.healthy {
            Some(
                "degraded: the database does not answer; serving live streams on what this \
                 replica knows"
                    .into(),
            )
        } else {
            None
        }
    }

    /// Why this replica is not ready for traffic yet, while it starts: it has not read
    /// what the others hold, or its relay is not yet meshed both ways with every live
    /// replica. Until then a first call through it would send its tunnel's handshake into
    /// a mesh that cannot yet carry the answer (WireGuard retries only after 5 s), so the
    /// load balancer is asked to wait (`/healthz` 503). Ready is latched, and given after
    /// [`STARTUP_GRACE`] whatever the mesh says.
    pub fn starting(&self) -> Option<String> {
        let s = &self.shared;
        if s.ready.load(Ordering::Relaxed) {
            return None;
        }
        let others = s.peers.borrow().len();
        let beaten = s.counters.live.load(Ordering::Relaxed) > 0;
        let synced = s.counters.resyncs.load(Ordering::Relaxed) > 0;
        let out = s.hub.mesh_stats().map_or(0, |m| m.links_up);
        let inbound = s.hub.derp().stats().watchers;
        let why = if !beaten || !synced {
            Some("reading the other replicas' state".to_string())
        } else if out < others || inbound < others {
            Some(format!(
                "meshing with {others} other replica(s): {out} link(s) out, {inbound} in"
            ))
        } else {
            None
        };
        match why {
            None => {
                s.ready.store(true, Ordering::Relaxed);
                tracing::info!(replica = s.id, others, "replica ready");
                None
            }
            Some(why) if clock::now().saturating_duration_since(s.started) >= STARTUP_GRACE => {
                s.ready.store(true, Ordering::Relaxed);
                tracing::warn!(replica = s.id, %why, "serving before the mesh is complete");
                None
            }
            Some(why) => Some(format!("starting: {why}")),
        }
    }

    /// Prometheus lines for `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        let s = self.stats();
        let mut g = |name: &str, help: &str, kind: &str, v: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        g(
            "agentwire_replica_live",
            "Live replicas, this one included.",
            "gauge",
            s.live as f64,
        );
        g(
            "agentwire_replica_healthy",
            "1 when the database answered the last heartbeat.",
            "gauge",
            f64::from(u8::from(s.healthy)),
        );
        g(
            "agentwire_replica_fenced",
            "1 while new coordinator streams are refused.",
            "gauge",
            f64::from(u8::from(s.fenced)),
        );
        g(
            "agentwire_replica_pending_changes",
            "Changes to this replica's streams waiting to be written.",
            "gauge",
            s.pending as f64,
        );
        for (name, help, v) in [
            (
                "heartbeat_failures",
                "Heartbeats that failed.",
                s.heartbeat_failures,
            ),
            (
                "reregistered",
                "Times this replica found itself expired.",
                s.reregistered,
            ),
            ("expired", "Replicas this one expired.", s.expired),
            ("notifications", "Notifications received.", s.notifications),
            (
                "bad_notifications",
                "Notifications that did not parse or overflowed (each forced a resync).",
                s.bad_notifications,
            ),
            (
                "bad_rows",
                "Rows from other replicas that did not parse.",
                s.bad_rows,
            ),
            ("resyncs", "Full resyncs.", s.resyncs),
            (
                "listener_connects",
                "Listener (re)connections.",
                s.listener_connects,
            ),
            ("batches", "Batches of changes written.", s.batches),
            (
                "batch_failures",
                "Batches that failed and wait again.",
                s.batch_failures,
            ),
        ] {
            g(
                &format!("agentwire_replica_{name}_total"),
                help,
                "counter",
                v as f64,
            );
        }
        if let Some((p50, p99)) = s.notify_latency {
            let name = "agentwire_replica_notify_apply_seconds";
            let _ = writeln!(
                out,
                "# HELP {name} From a peer row's change to its replay here, by the database's clock.\n\
                 # TYPE {name} summary\n{name}{{quantile=\"0.5\"}} {}\n{name}{{quantile=\"0.99\"}} {}",
                p50.as_secs_f64(),
                p99.as_secs_f64()
            );
        }
    }
}

/// The relay endpoint at a replica's URL.
fn derp_url(relay_url: &str) -> String {
    format!("{}/derp", relay_url.trim_end_matches('/'))
}

/// Mesh links between replicas watch each other closely: a stopped replica's relay must
/// be noticed within the 2 s a failover may take, and a restarted one rejoined as fast.
fn mesh_config(cfg: &ReplicaConfig, mesh_key: &str) -> crate::services::derp::MeshConfig {
    let mut m = crate::services::derp::MeshConfig::new(mesh_key, cfg.tls.clone());
    m.self_url = Some(derp_url(&cfg.relay_url));
    m.ping_interval = Duration::from_millis(500);
    m.ping_timeout = Duration::from_millis(1500);
    m.backoff =
        crate::proto::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    m
}

/// Keeps the relay's mesh peers equal to the other live replicas.
async fn feed_mesh(shared: Arc<Shared>) {
    let mut peers = shared.peers.subscribe();
    loop {
        let set: Vec<crate::services::derp::MeshPeer> = peers
            .borrow_and_update()
            .iter()
            .map(|(id, url)| crate::services::derp::MeshPeer {
                id: id.clone(),
                url: derp_url(url),
            })
            .collect();
        shared.hub.set_mesh_peers(set);
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            changed = peers.changed() => if changed.is_err() { return },
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}
