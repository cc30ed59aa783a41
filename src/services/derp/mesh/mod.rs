//! The DERP mesh between relays that serve one region (replicas behind a load
//! balancer): a node's connection lands on any of them, so each relay keeps a link to
//! every other one and forwards packets for keys homed there.
//!
//! [`Mesh`] owns one link task per peer relay ([`Mesh::set_peers`] is the desired
//! set). A link logs in to its peer as a DERP client presenting the mesh key, sends
//! WatchConns, and turns the PeerPresent/PeerGone stream into forwarders in this
//! relay's registry; packets our clients send to those keys go out on the link as
//! ForwardPacket. The rules live in the registry (sans-IO): a local key beats a
//! forwarder, the newest forwarder wins, a forwarder dies with its connection.
//!
//! Each relay needs its own DERP key: a link logs in with its relay's key, and a
//! relay ignores a watcher with its own key (that is itself).
//!
//! Every link task is owned by the [`Mesh`]: dropping it cancels them and removes
//! their forwarders at once; [`Mesh::shutdown`] also waits for the tasks.

mod link;
pub(super) mod queue;

use super::DerpServer;
use crate::proto::backoff::Backoff;
use crate::proto::derp::server::LinkId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Another relay of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeshPeer {
    /// A stable name for it (the replica id); a new URL under the same id restarts
    /// its link.
    pub id: String,
    /// Its DERP URL, `http(s)://host:port/derp`, reachable from this relay.
    pub url: String,
}

/// How this relay meshes.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// The pre-shared mesh key; also the key this relay accepts from its peers.
    pub mesh_key: String,
    /// Trust for `https` peer URLs.
    pub tls: crate::runtime::tls::ClientTls,
    /// This relay's own URL as it appears in peer lists, skipped there.
    pub self_url: Option<String>,
    /// Reconnect delays after a failed or lost link.
    pub backoff: Backoff,
    /// Budget for TCP connect plus upgrade, and again for the login.
    pub connect_timeout: Duration,
    /// Time between pings on an idle link: a dead peer is noticed within this plus
    /// [`Self::ping_timeout`], and its forwarders go with it.
    pub ping_interval: Duration,
    /// How long a ping may go unanswered.
    pub ping_timeout: Duration,
    /// How long one write to a peer may block before the link counts as dead.
    pub write_timeout: Duration,
    /// Packets queued per link before the oldest is dropped.
    pub queue_depth: usize,
}

impl MeshConfig {
    /// Settings for mesh key `mesh_key` with the defaults: reconnects from 100 ms up
    /// to 5 s, pings every 5 s.
    pub fn new(mesh_key: impl Into<String>, tls: crate::runtime::tls::ClientTls) -> Self {
        Self {
            mesh_key: mesh_key.into(),
            tls,
            self_url: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            connect_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            queue_depth: 1024,
        }
    }
}

/// One link as [`Mesh::stats`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshLinkStats {
    /// The peer's id.
    pub id: String,
    /// The peer's URL.
    pub url: String,
    /// Logged in and watching right now (the peer accepted the mesh key).
    pub up: bool,
    /// Logins so far.
    pub connects: u64,
    /// ForwardPacket frames written to this peer.
    pub forwarded: u64,
    /// Why the last connection or attempt failed.
    pub last_error: Option<String>,
}

/// A snapshot of the mesh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshStats {
    /// Peers with a link (the desired set, minus this relay itself).
    pub peers: usize,
    /// Links logged in and watching right now.
    pub links_up: usize,
    /// Every link, sorted by id.
    pub links: Vec<MeshLinkStats>,
}

/// State one link task shares with the [`Mesh`].
#[derive(Debug, Default)]
struct LinkState {
    up: AtomicBool,
    connects: AtomicU64,
    forwarded: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// The registry entry of the current connection, while logged in.
    current: Mutex<Option<LinkId>>,
}

impl LinkState {
    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn attach(&self, link: LinkId) {
        *Self::lock(&self.current) = Some(link);
        self.up.store(true, Ordering::Relaxed);
        self.connects.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes the current connection's link and forwarders from the registry, once.
    fn detach(&self, server: &DerpServer) {
        self.up.store(false, Ordering::Relaxed);
        let Some(link) = Self::lock(&self.current).take() else {
            return;
        };
        let fx = server.registry().remove_link(link);
        server.apply(fx);
    }

    fn set_error(&self, why: String) {
        *Self::lock(&self.last_error) = Some(why);
    }

    fn count_sent(&self, n: u64) {
        self.forwarded.fetch_add(n, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct LinkTask {
    url: String,
    state: Arc<LinkState>,
    cancel: CancellationToken,
}

/// The mesh of one relay: a link task per peer relay. Dropping it stops every link
/// and removes their forwarders.
#[derive(Debug)]
#[must_use = "dropping the mesh stops its links"]
pub struct Mesh {
    server: Arc<DerpServer>,
    cfg: Arc<MeshConfig>,
    links: Mutex<HashMap<String, LinkTask>>,
    /// Parent of every link's token.
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl DerpServer {
    /// Starts meshing this relay: sets its mesh key to `cfg.mesh_key` (so its peers'
    /// links are accepted) and returns the mesh, with no peers yet. Must be called
    /// within a tokio runtime.
    pub fn start_mesh(self: &Arc<Self>, cfg: MeshConfig) -> Mesh {
        self.set_mesh_key(Some(&cfg.mesh_key));
        Mesh {
            server: Arc::clone(self),
            cfg: Arc::new(cfg),
            links: Mutex::new(HashMap::new()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }
}

impl Mesh {
    fn links(&self) -> MutexGuard<'_, HashMap<String, LinkTask>> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The settings it was started with.
    pub fn config(&self) -> &MeshConfig {
        &self.cfg
    }

    /// The relay it serves.
    pub fn server(&self) -> &Arc<DerpServer> {
        &self.server
    }

    /// The current peer set.
    pub fn peers(&self) -> Vec<MeshPeer> {
        let mut v: Vec<_> = self
            .links()
            .iter()
            .map(|(id, l)| MeshPeer {
                id: id.clone(),
                url: l.url.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Makes `peers` the peer set: new peers get a link, removed peers lose theirs (and
    /// their forwarders, at once), a peer whose URL changed gets a new link. This
    /// relay's own URL ([`MeshConfig::self_url`]) is skipped. Must be called within a
    /// tokio runtime.
    pub fn set_peers(&self, peers: Vec<MeshPeer>) {
        let wanted: HashMap<String, String> = peers
            .into_iter()
            .filter(|p| self.cfg.self_url.as_deref() != Some(p.url.as_str()))
            .map(|p| (p.id, p.url))
            .collect();
        let mut links = self.links();
        links.retain(|id, l| {
            let keep = wanted.get(id) == Some(&l.url);
            if !keep {
                l.cancel.cancel();
                l.state.detach(&self.server);
            }
            keep
        });
        for (id, url) in wanted {
            if links.contains_key(&id) || self.cancel.is_cancelled() {
                continue;
            }
            let state = Arc::new(LinkState::default());
            let cancel = self.cancel.child_token();
            self.tasks.spawn(link::run(
                Arc::clone(&self.server),
                Arc::clone(&self.cfg),
                url.clone(),
                Arc::clone(&state),
                cancel.clone(),
            ));
            tracing::debug!(peer = %id, url = %url, "DERP mesh peer added");
            links.insert(id, LinkTask { url, state, cancel });
        }
    }

    /// Links and their state.
    pub fn stats(&self) -> MeshStats {
        let links = self.links();
        let mut out: Vec<MeshLinkStats> = links
            .iter()
            .map(|(id, l)| MeshLinkStats {
                id: id.clone(),
                url: l.url.clone(),
                up: l.state.up.load(Ordering::Relaxed),
                connects: l.state.connects.load(Ordering::Relaxed),
                forwarded: l.state.forwarded.load(Ordering::Relaxed),
                last_error: LinkState::lock(&l.state.last_error).clone(),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        MeshStats {
            peers: out.len(),
            links_up: out.iter().filter(|l| l.up).count(),
            links: out,
        }
    }

    /// Link tasks still running (for leak checks).
    pub fn tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Stops every link, removes their forwarders and waits for the tasks to end.
    pub async fn shutdown(self) {
        self.stop();
        self.tasks.close();
        self.tasks.wait().await;
    }

    fn stop(&self) {
        self.cancel.cancel();
        for l in self.links().values() {
            l.state.detach(&self.server);
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.stop();
    }
}
