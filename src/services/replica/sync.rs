//! The replica's three tasks: heartbeat (and sweeping), listener (notifications and
//! resyncs), writer (this replica's changes).

use super::sql::{self, Note};
use super::{Counters, ReplicaError, Shared, bounded};
use crate::proto::backoff::Backoff;
use crate::runtime::clock;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Notifications queued between the connection and the listener before the queue counts
/// as overflowed (which forces a full resync rather than losing any).
const NOTE_QUEUE: usize = 4096;

/// Retries with backoff from 100 ms up to 2 s: a replica must be back within the 2 s
/// a failover may take.
struct Retry {
    backoff: Backoff,
    attempt: u32,
}

impl Retry {
    fn next_delay(&mut self, rand: f64) -> Duration {
        let d = self.backoff.delay(self.attempt, rand);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

fn backoff() -> Retry {
    Retry {
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
        attempt: 0,
    }
}

/// Beats every `cfg.heartbeat`; registers again when expired; sweeps expired replicas
/// once healthy for a whole expiry period; watches the set of live replicas; writes how
/// recently each local stream was heard from.
pub(super) async fn heartbeat(shared: Arc<Shared>) {
    let cfg = shared.cfg.clone();
    let mut tick = tokio::time::interval(cfg.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy_since: Option<Instant> = None;
    let mut last_touch = clock::now();
    let mut live_seen: Vec<(String, String)> = Vec::new();
    loop {
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match beat(&shared, &mut healthy_since, &mut live_seen, &mut last_touch).await {
            Ok(()) => shared.counters.healthy.store(true, Ordering::Relaxed),
            Err(e) => {
                if shared.counters.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "replica heartbeat failed; serving on what this replica knows");
                }
                Counters::add(&shared.counters.heartbeat_failures, 1);
                healthy_since = None;
            }
        }
    }
}

async fn beat(
    shared: &Arc<Shared>,
    healthy_since: &mut Option<Instant>,
    live_seen: &mut Vec<(String, String)>,
    last_touch: &mut Instant,
) -> Result<(), ReplicaError> {
    let cfg = &shared.cfg;
    let mut c = shared.pool.get().await?;
    let beat = bounded(sql::heartbeat(&*c, &shared.id, cfg.ttl)).await?;
    if !beat.landed {
        // The others expired this replica: it was stopped or cut off while they were
        // not. Refuse new streams until its streams are written back.
        let coord = shared.hub.coordinator();
        coord.set_fenced(true);
        tracing::warn!(
            replica = shared.id,
            "expired by the other replicas; registering again"
        );
        Counters::add(&shared.counters.reregistered, 1);
        bounded(sql::register(&*c, &shared.id, &cfg.relay_url)).await?;
        coord.with_registry(crate::proto::coord::server::Registry::replay_local);
        shared.outbox.wake.notify_one();
        coord.set_fenced(false);
        *healthy_since = None;
        shared.resync.notify_one();
    }
    let now = clock::now();
    let since = *healthy_since.get_or_insert(now);
    // Only a replica that has itself been beating for a whole expiry period may expire
    // others: after an outage everyone shared, nobody is expired for it.
    if beat.any_expired() && now.saturating_duration_since(since) >= cfg.ttl {
        let gone = bounded(sql::sweep(&mut c, &shared.id, cfg.ttl)).await?;
        if !gone.is_empty() {
            tracing::info!(?gone, "expired replicas whose heartbeat stopped");
            Counters::add(&shared.counters.expired, gone.len() as u64);
        }
    }
    let mut live = beat.live();
    if !beat.landed {
        live.push((shared.id.clone(), cfg.relay_url.clone()));
        live.sort();
    }
    shared
        .counters
        .live
        .store(live.len() as u64, Ordering::Relaxed);
    if live != *live_seen {
        *live_seen = live.clone();
        *shared.live.lock().unwrap_or_else(|e| e.into_inner()) =
            live.iter().map(|(id, _)| id.clone()).collect();
        let others: Vec<(String, String)> = live
            .into_iter()
            .filter(|(id, _)| *id != shared.id)
            .collect();
        shared.peers.send_replace(others);
        shared.resync.notify_one();
    }
    if now.saturating_duration_since(*last_touch) >= cfg.touch {
        *last_touch = now;
        let seen: Vec<_> = shared
            .hub
            .coordinator()
            .peers()
            .into_iter()
            .map(|p| (p.id, now.saturating_duration_since(p.last_seen)))
            .collect();
        bounded(sql::touch(&*c, &shared.id, &seen)).await?;
        bounded(sql::purge_lost(&*c)).await?;
    }
    Ok(())
}

/// Writes this replica's pending changes, a batch at a time; a failed batch goes back and
/// is retried with backoff.
pub(super) async fn write(shared: Arc<Shared>) {
    let mut retry = backoff();
    loop {
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            () = shared.outbox.wake.notified() => {}
        }
        loop {
            let batch = shared.outbox.take();
            if batch.is_empty() {
                break;
            }
            let result = async {
                let mut c = shared.pool.get().await?;
                bounded(sql::write(&mut c, &shared.id, &batch)).await
            }
            .await;
            match result {
                Ok(()) => {
                    Counters::add(&shared.counters.batches, 1);
                    retry.reset();
                }
                Err(e) => {
                    Counters::add(&shared.counters.batch_failures, 1);
                    tracing::debug!(error = %e, "replica write failed; will retry");
                    shared.outbox.restore(batch);
                    let wait = retry.next_delay(rand::random());
                    tokio::select! {
                        () = shared.cancel.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

/// Listens for notifications on a dedicated connection; re-reads what each names and
/// applies it; resyncs fully after every connect, on request and periodically.
pub(super) async fn listen(shared: Arc<Shared>) {
    let mut retry = backoff();
    loop {
        let result = listen_once(&shared, &mut retry).await;
        if shared.cancel.is_cancelled() {
            return;
        }
        if let Err(e) = result {
            tracing::debug!(error = %e, "replica listener lost its connection; reconnecting");
        }
        let wait = retry.next_delay(rand::random());
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn listen_once(shared: &Arc<Shared>, retry: &mut Retry) -> Result<(), ReplicaError> {
    let (client, mut conn) = tokio::time::timeout(
        super::CALL_TIMEOUT,
        shared.pg.connect(tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| ReplicaError::Timeout)??;
    let (tx, mut rx) = mpsc::channel::<Option<String>>(NOTE_QUEUE);
    let overflow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let driver = {
        let overflow = overflow.clone();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            use futures_util::StreamExt as _;
            while let Some(m) = messages.next().await {
                match m {
                    Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                        if tx.try_send(Some(n.payload().to_string())).is_err() {
                            overflow.store(true, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "replica listener connection failed");
                        break;
                    }
                }
            }
            let _ = tx.send(None).await;
        })
    };
    // The wrapper keeps the connection's prepared statements and stops its driver when
    // dropped.
    let client = deadpool_postgres::ClientWrapper::new(client, driver);
    bounded(async {
        client
            .batch_execute(&format!("LISTEN {}", sql::CHANNEL))
            .await
            .map_err(ReplicaError::from)
    })
    .await?;
    Counters::add(&shared.counters.listener_connects, 1);
    // Listening first, then reading everything: nothing changed in between is missed.
    resync(shared, &client).await?;
    retry.reset();
    let mut periodic = tokio::time::interval(shared.cfg.resync);
    periodic.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    periodic.tick().await;
    loop {
        tokio::select! {
            () = shared.cancel.cancelled() => return Ok(()),
            () = shared.resync.notified() => resync(shared, &client).await?,
            _ = periodic.tick() => resync(shared, &client).await?,
            m = rx.recv() => {
                let Some(Some(payload)) = m else {
                    return Err(ReplicaError::Config("listener connection closed".into()));
                };
                Counters::add(&shared.counters.notifications, 1);
                if overflow.swap(false, Ordering::Relaxed) {
                    Counters::add(&shared.counters.bad_notifications, 1);
                    resync(shared, &client).await?;
                    continue;
                }
                match Note::parse(&payload) {
                    Some(note) => apply(shared, &client, note).await?,
                    None => {
                        Counters::add(&shared.counters.bad_notifications, 1);
                        tracing::debug!(payload, "unexpected replica notification");
                    }
                }
            }
        }
    }
}

/// Reads the live set afresh (for a resync) and keeps it for targeted re-reads.
async fn live_set(
    shared: &Shared,
    client: &deadpool_postgres::ClientWrapper,
) -> Result<BTreeSet<String>, ReplicaError> {
    let live: BTreeSet<String> = bounded(sql::live(client, shared.cfg.ttl))
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    *shared.live.lock().unwrap_or_else(|e| e.into_inner()) = live.clone();
    Ok(live)
}

/// The live set as last read: a replica that expires since is caught by the resync its
/// expiry triggers.
fn cached_live(shared: &Shared) -> BTreeSet<String> {
    shared
        .live
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

async fn resync(
    shared: &Shared,
    client: &deadpool_postgres::ClientWrapper,
) -> Result<(), ReplicaError> {
    let live = live_set(shared, client).await?;
    let mut bad = 0;
    let (peers, _) = bounded(sql::peers(client, None, &mut bad)).await?;
    let tunnels = bounded(sql::tunnels(client, None)).await?;
    Counters::add(&shared.counters.bad_rows, bad);
    Counters::add(&shared.counters.resyncs, 1);
    let now = clock::now();
    shared
        .hub
        .coordinator()
        .with_registry(|r| r.remote_resync(&peers, &tunnels, &live, now));
    Ok(())
}

async fn apply(
    shared: &Shared,
    client: &deadpool_postgres::ClientWrapper,
    note: Note,
) -> Result<(), ReplicaError> {
    let coord = shared.hub.coordinator();
    match note {
        Note::Peer(id) => {
            let live = cached_live(shared);
            let mut bad = 0;
            let (rows, age) = bounded(sql::peers(client, Some(id), &mut bad)).await?;
            Counters::add(&shared.counters.bad_rows, bad);
            let now = clock::now();
            coord.with_registry(|r| r.remote_peer_rows(id, &rows, &live, true, now));
            if let Some(age) = age.filter(|_| rows.iter().any(|r| r.replica != shared.id)) {
                shared.counters.sample(age);
            }
        }
        Note::Tunnels(src) => {
            let rows = bounded(sql::tunnels(client, Some(src))).await?;
            let now = clock::now();
            coord.with_registry(|r| r.remote_tunnel_rows(src, &rows, now));
        }
        Note::Replica(_) => resync(shared, client).await?,
        Note::Handshake(src, dst) => {
            let now = clock::now();
            coord.with_registry(|r| r.remote_ready_for_handshake(src, dst, now));
        }
    }
    Ok(())
}
