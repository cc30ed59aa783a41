//! Keep-alive connections to agents' APIs, shared by every call to the same agent.
//!
//! A tool call takes an [`AgentConn`] (a lease) and gets an [`AgentClient`] dialling
//! through it; the idle connections it leaves behind belong to the destination, not to
//! the call, so the next call to the same agent costs one round trip instead of a TCP
//! handshake. Pools hold no lease (that would keep a destination from ever going idle):
//! when the Tailnet says a destination is gone, its pool is emptied and forgotten at once.

use super::budget::ReplyRate;
use super::client::{AgentClient, IdlePool, ReplyPacing};
use crate::runtime::tailnet::{AgentConn, Gone, GoneEvents, Tailnet};
use crate::wire::addr::NodeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tokio::task::JoinHandle;

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
    /// destination's budget.
    pub fn pacing(&self) -> (u64, u64) {
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
