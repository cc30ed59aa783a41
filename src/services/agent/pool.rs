//! Keep-alive connections to agents' APIs, shared by every call to the same agent.
//!
//! A tool call takes an [`AgentConn`] (a lease) and gets an [`AgentClient`] dialling
//! through it; the idle connections it leaves behind belong to the destination, not to
//! the call, so the next call to the same agent costs one round trip instead of a TCP
//! handshake. Pools hold no lease (that would keep a destination from ever going idle):
//! when the Tailnet says a destination is gone, its pool is emptied and forgotten at once.

use super::budget::{ReplyBudget, ReplyRate};
use super::client::{AgentClient, Sender};
use super::tenant::{TenantReads, take_counted};
use crate::runtime::tailnet::{AgentConn, Gone, GoneEvents, Tailnet};
use crate::wire::addr::NodeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Idle connections kept per agent: as many as one user may have calls in flight (the
/// MCP front end's default cap), so a burst of concurrent calls to one agent finds its
/// connections again. With 4, at 16 concurrent calls three in four calls dialled anew (a
/// TCP handshake over the tunnel and a socket's buffers mapped and unmapped, per call).
/// Idle ones cost little (smoltcp's buffers are committed only as data passes) and the
/// agent closes them after `HEADER_READ_TIMEOUT` (10 s).
const POOL_MAX: usize = 64;

/// File reads in flight to a destination while it answers large (a reply of
/// [`super::budget::LARGE_REPLY`] or more within the last [`super::budget::LARGE_SPELL`]);
/// the others wait before sending their request. A tenant's sixty-four reads of large
/// files cost the server no more bytes a second than two (the reply budget sets that, and
/// one agent's bulk is bound by bytes, not calls), but each in flight is a TCP flow
/// bursting into the tunnel and tasks woken per burst, and the tokio run queues they
/// fill are every tenant's: with 64 in flight another tenant's small call waited 6–19×
/// its usual p99, with 2 about 5×, with 1 about 3× (docs/reliability.md).
pub const LARGE_READS: usize = 2;

/// A large file read's places: its destination's and its tenant's.
pub(super) struct LargeRead<'a> {
    _destination: tokio::sync::SemaphorePermit<'a>,
    _tenant: Option<tokio::sync::SemaphorePermit<'a>>,
}

/// Calls admitted to a destination on probation no sooner than this may fail at once:
/// a caller is told when to come back instead of holding its slot.
pub const ADMISSION_WAIT_MAX: Duration = Duration::from_secs(5);

/// Times readers of agents' replies (and calls to agents on probation) waited for their
/// destination's budget, for how long in all, the replies that broke a limit and the
/// calls refused on probation; shared by every pool of a server, for `/metrics`.
#[derive(Debug, Default)]
pub struct ReplyPacing {
    waits: AtomicU64,
    waited_us: AtomicU64,
    broken: AtomicU64,
    refused: AtomicU64,
    large_waits: AtomicU64,
}

/// A snapshot of [`ReplyPacing`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacingCounts {
    /// Waits for a destination's budget, reading or at admission.
    pub waits: u64,
    /// Microseconds waited, all waits.
    pub waited_us: u64,
    /// Replies that broke a limit (putting their destination on probation).
    pub broken: u64,
    /// Calls refused at once because their destination's probation would hold them
    /// longer than [`ADMISSION_WAIT_MAX`].
    pub refused: u64,
    /// File reads that waited for one of their destination's [`LARGE_READS`].
    pub large_waits: u64,
}

impl ReplyPacing {
    /// The counts so far.
    pub fn get(&self) -> PacingCounts {
        PacingCounts {
            waits: self.waits.load(Ordering::Relaxed),
            waited_us: self.waited_us.load(Ordering::Relaxed),
            broken: self.broken.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            large_waits: self.large_waits.load(Ordering::Relaxed),
        }
    }

    fn waited(&self, wait: Duration) {
        if !wait.is_zero() {
            self.waits.fetch_add(1, Ordering::Relaxed);
            self.waited_us
                .fetch_add(wait.as_micros() as u64, Ordering::Relaxed);
        }
    }
}

/// Idle keep-alive connections to one agent's API, shared by the clients given it, and
/// the budget its replies are read within.
pub struct IdlePool {
    idle: Mutex<Vec<Sender>>,
    budget: Mutex<ReplyBudget>,
    pacing: Arc<ReplyPacing>,
    large_reads: tokio::sync::Semaphore,
}

impl Default for IdlePool {
    fn default() -> Self {
        Self::new(ReplyRate::default(), Arc::default())
    }
}

impl std::fmt::Debug for IdlePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdlePool")
            .field("idle", &self.len())
            .finish()
    }
}

impl IdlePool {
    /// An empty pool whose replies are read at `rate`, counting waits in `pacing`.
    pub fn new(rate: ReplyRate, pacing: Arc<ReplyPacing>) -> Self {
        Self {
            idle: Mutex::default(),
            budget: Mutex::new(ReplyBudget::new(rate)),
            pacing,
            large_reads: tokio::sync::Semaphore::new(LARGE_READS),
        }
    }

    fn budget(&self) -> MutexGuard<'_, ReplyBudget> {
        self.budget.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Charges `n` bytes just read to the destination; how long to wait before reading on.
    pub(super) fn charge(&self, n: usize) -> Duration {
        let wait = self.budget().take(crate::runtime::clock::now(), n as u64);
        self.pacing.waited(wait);
        wait
    }

    /// A file read about to be sent: while the destination answers large, waits for one
    /// of its [`LARGE_READS`] and then for a place in `tenant`'s share, if the client has
    /// one (both held until dropped, after the reply is read).
    pub(super) async fn large_read<'a>(
        &'a self,
        tenant: Option<&'a TenantReads>,
    ) -> Option<LargeRead<'a>> {
        if !self.budget().answering_large(crate::runtime::clock::now()) {
            return None;
        }
        let destination = take_counted(&self.large_reads, &self.pacing.large_waits).await?;
        let tenant = match tenant {
            Some(t) => t.enter().await,
            None => None,
        };
        Some(LargeRead {
            _destination: destination,
            _tenant: tenant,
        })
    }

    /// A reply of `len` bytes was read from the destination. Most replies are small:
    /// those leave the budget's lock alone.
    pub(super) fn replied(&self, len: usize) {
        if len as u64 >= super::budget::LARGE_REPLY {
            self.budget()
                .replied(crate::runtime::clock::now(), len as u64);
        }
    }

    /// Waits until a new call may go to the destination (at once unless it is on
    /// probation); `Err(wait)` if that would take longer than [`ADMISSION_WAIT_MAX`].
    pub(super) async fn admit(&self) -> Result<(), Duration> {
        loop {
            let wait = self.budget().admit(crate::runtime::clock::now());
            if wait.is_zero() {
                return Ok(());
            }
            if wait > ADMISSION_WAIT_MAX {
                self.pacing.refused.fetch_add(1, Ordering::Relaxed);
                return Err(wait);
            }
            self.pacing.waited(wait);
            tokio::time::sleep(wait).await;
        }
    }

    /// A reply from the destination broke its limit: probation starts or is extended.
    pub(super) fn broken(&self) {
        self.pacing.broken.fetch_add(1, Ordering::Relaxed);
        self.budget().broken(crate::runtime::clock::now());
    }

    /// Whether the destination is on probation now.
    pub fn on_probation(&self) -> bool {
        self.budget().on_probation(crate::runtime::clock::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Sender>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Idle connections held (some may have been closed by the agent since).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no idle connection is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every idle connection (dropping a sender ends its connection task).
    pub fn clear(&self) {
        let drained = std::mem::take(&mut *self.lock());
        drop(drained);
    }

    pub(super) fn take(&self) -> Option<Sender> {
        let mut idle = self.lock();
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    pub(super) fn put(&self, s: Sender) {
        if s.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < POOL_MAX {
            idle.push(s);
        }
    }
}

type Pools = Mutex<HashMap<NodeId, Arc<IdlePool>>>;

/// Idle-connection pools per destination of one Tailnet. Dropping it closes them all.
#[derive(Debug)]
pub struct AgentPools {
    pools: Arc<Pools>,
    /// Each destination's reply budget, and the waits it imposed, all destinations.
    rate: ReplyRate,
    pacing: Arc<ReplyPacing>,
    /// Empties pools as destinations go; ends with the Tailnet or with this value.
    watcher: JoinHandle<()>,
}

impl AgentPools {
    /// Pools for connections made through `tailnet`'s handles. Needs a Tokio runtime: a
    /// task follows the Tailnet's departures.
    pub fn new(tailnet: &Tailnet) -> Self {
        let pools: Arc<Pools> = Arc::default();
        let watcher = tokio::spawn(follow(tailnet.gone_events(), Arc::downgrade(&pools)));
        Self {
            pools,
            rate: ReplyRate::default(),
            pacing: Arc::default(),
            watcher,
        }
    }

    /// Reads each destination's replies at `rate` (from now on; pools made already
    /// keep theirs).
    #[must_use]
    pub fn with_reply_rate(mut self, rate: ReplyRate) -> Self {
        self.rate = rate;
        self
    }

    /// How often, and how long in all, readers of replies waited for their
    /// destination's budget; replies that broke a limit; calls refused on probation.
    pub fn pacing(&self) -> PacingCounts {
        self.pacing.get()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<NodeId, Arc<IdlePool>>> {
        lock(&self.pools)
    }

    /// A client of `conn`'s agent that shares the destination's idle connections. It
    /// holds a lease (a clone of `conn`) until it and its clones are dropped.
    pub fn client(&self, conn: &AgentConn) -> AgentClient {
        if conn.owns_stack() {
            // Per-call mode: the connections die with this handle's private stack.
            return AgentClient::over(conn);
        }
        let pool = self
            .lock()
            .entry(conn.agent_id())
            .or_insert_with(|| Arc::new(IdlePool::new(self.rate, self.pacing.clone())))
            .clone();
        AgentClient::pooled(Arc::new(conn.clone()), pool)
    }

    /// Destinations with a pool, and the idle connections each holds.
    pub fn idle(&self) -> Vec<(NodeId, usize)> {
        self.lock().iter().map(|(id, p)| (*id, p.len())).collect()
    }
}

impl Drop for AgentPools {
    fn drop(&mut self) {
        self.watcher.abort();
        for (_, pool) in self.lock().drain() {
            pool.clear();
        }
    }
}

fn lock(pools: &Pools) -> MutexGuard<'_, HashMap<NodeId, Arc<IdlePool>>> {
    pools.lock().unwrap_or_else(|e| e.into_inner())
}

async fn follow(mut events: GoneEvents, pools: Weak<Pools>) {
    while let Some(gone) = events.recv().await {
        let Some(pools) = pools.upgrade() else { return };
        // Clients still running a call keep their `Arc` to the old pool and may return
        // a connection to it; the pool is forgotten here, so that connection dies with
        // the last of them.
        let emptied: Vec<Arc<IdlePool>> = match gone {
            Gone::Destination(id) => lock(&pools).remove(&id).into_iter().collect(),
            Gone::Missed => lock(&pools).drain().map(|(_, p)| p).collect(),
        };
        for p in emptied {
            p.clear();
        }
    }
}
