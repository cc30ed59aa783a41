//! The manager task: coordinator events, destination setup, idle expiry.

use super::state::{Dest, Failure, Stage};
use super::{Inner, Role};
use crate::proto::wg::PeerConfig;
use crate::runtime::clock;
use crate::runtime::coord::CoordEvent;
use crate::wire::addr::{IpCidr, NodeId};
use crate::wire::coord::{Node, PeerKind, PeerUpdate};
use crate::wire::derpmap::DerpMap;
use crate::wire::key::NodePublic;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// How often idle expiry and ready-wait timeouts are checked.
const TICK: Duration = Duration::from_millis(250);
/// A clock gap this much beyond a tick counts as sleep/wake.
const WAKE_THRESHOLD: Duration = Duration::from_secs(3);
/// How long one handshake attempt is awaited before the destination may retry.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(30);

/// The lowest region that is not marked `Avoid` and has a node.
pub(super) fn default_home(map: &DerpMap) -> Option<u16> {
    map.regions
        .iter()
        .find(|(_, r)| !r.avoid && !r.nodes.is_empty())
        .map(|(id, _)| *id)
}

/// UDP endpoints to advertise for direct paths.
fn advertise(inner: &Inner) -> Vec<SocketAddr> {
    if inner.cfg.relay_only {
        return Vec::new();
    }
    if let Some(a) = &inner.cfg.advertise {
        return a.clone();
    }
    let local = inner.tunnel.local_udp_addr();
    if !local.ip().is_unspecified() {
        return vec![local];
    }
    // Bound to every interface: advertise the address the route to the coordinator uses
    // (connecting a UDP socket sends nothing; it only consults the routing table).
    let host = inner
        .cfg
        .coordinator_url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
        .unwrap_or("");
    let target: Option<SocketAddr> = host.parse::<SocketAddr>().ok().or_else(|| {
        host.rsplit_once(':').and_then(|(h, p)| {
            let h = if h == "localhost" { "127.0.0.1" } else { h };
            format!("{h}:{p}").parse().ok()
        })
    });
    let ip = target.and_then(|t| {
        let s = std::net::UdpSocket::bind(if t.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).ok()?;
        s.connect(t).ok()?;
        s.local_addr().ok().map(|a| a.ip())
    });
    match ip {
        Some(ip) => vec![SocketAddr::new(ip, local.port())],
        None => Vec::new(),
    }
}

/// Sends our node to the coordinator (it re-sends it after every reconnect).
pub(super) fn publish_self(inner: &Inner) {
    let home = inner.state().home;
    let me = IpCidr::host(IpAddr::V6(inner.addr));
    let as_of = clock::wall()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let node = Node {
        id: inner.cfg.id,
        key: inner.cfg.private.public(),
        preferred_derp: home.unwrap_or(0),
        addresses: vec![me],
        allowed_ips: vec![me],
        endpoints: advertise(inner),
        as_of,
    };
    inner.coord(|c| c.update_self(node));
}

/// The WireGuard peer for a node. Only addresses the node's id owns are accepted, even
/// though the coordinator already enforces that.
fn peer_config(inner: &Inner, node: &Node) -> PeerConfig {
    let mut p = PeerConfig::new(node.key);
    p.allowed_ips = node
        .addresses
        .iter()
        .chain(node.allowed_ips.iter())
        .filter(|c| node.id.owns(&c.to_string()))
        .copied()
        .collect();
    p.allowed_ips.dedup();
    p.derp_region = (node.preferred_derp != 0).then_some(node.preferred_derp);
    p.relay_only = inner.cfg.relay_only;
    if !inner.cfg.relay_only {
        p.candidates = node.endpoints.clone();
    }
    p
}

type Sessions = JoinSet<(NodeId, NodePublic, bool)>;

pub(super) async fn run(
    inner: Arc<Inner>,
    mut events: mpsc::Receiver<CoordEvent>,
    mut wake: mpsc::Receiver<NodeId>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sessions = Sessions::new();
    let mut wake_detector = crate::proto::wake::WakeDetector::new(WAKE_THRESHOLD);
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => break,
            ev = events.recv() => match ev {
                Some(ev) => on_event(&inner, ev, &mut sessions).await,
                None => break,
            },
            Some(id) = wake.recv() => ensure(&inner, id, &mut sessions).await,
            Some(res) = sessions.join_next(), if !sessions.is_empty() => {
                if let Ok((id, key, ok)) = res {
                    on_session(&inner, id, key, ok);
                }
            }
            _ = tick.tick() => {
                let gap = wake_detector.observe(clock::now(), clock::wall(), TICK);
                if gap != crate::proto::wake::Gap::None {
                    on_wake(&inner, gap).await;
                }
                housekeeping(&inner, &mut sessions).await;
            }
        }
    }
    // Waiters see their sender dropped: `ConnError::Closed`.
    for d in inner.state().dests.values_mut() {
        d.waiters.clear();
    }
    sessions.shutdown().await;
}

async fn on_event(inner: &Arc<Inner>, ev: CoordEvent, sessions: &mut Sessions) {
    match ev {
        CoordEvent::Connected { derp_map } => {
            if inner.cfg.derp_map.is_none()
                && let Some(v) = derp_map
            {
                match serde_json::from_value::<DerpMap>(v) {
                    Ok(map) => {
                        let home = inner.cfg.home_region.or_else(|| default_home(&map));
                        inner.relay.set_map(map, home);
                        let changed = {
                            let mut st = inner.state();
                            let changed = st.home != home;
                            st.home = home;
                            changed
                        };
                        if changed {
                            publish_self(inner);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "coordinator sent an unusable DERP map"),
                }
            }
            for d in inner.state().dests.values_mut() {
                d.lost = false;
            }
        }
        CoordEvent::Disconnected { error } => {
            tracing::info!(%error, "coordinator connection lost; keeping peers");
            for d in inner.state().dests.values_mut() {
                d.lost = true;
            }
        }
        CoordEvent::Closed { reason } => {
            tracing::warn!(%reason, "coordinator closed the stream");
            refuse_named(inner, &reason);
        }
        CoordEvent::Error(message) => {
            tracing::debug!(%message, "coordinator error");
        }
        CoordEvent::Peer(u) => on_peer(inner, u, sessions).await,
    }
}

/// A policy close naming a destination we asked for: stop asking (it would be replayed
/// after every reconnect) and fail its callers with the coordinator's reason.
fn refuse_named(inner: &Inner, reason: &str) {
    let refused: Vec<NodeId> = {
        let mut st = inner.state();
        let ids: Vec<NodeId> = st
            .dests
            .iter()
            .filter(|(id, d)| d.stage == Stage::AwaitingNode && reason.contains(&id.to_string()))
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some(mut d) = st.dests.remove(id) {
                d.wake_all(Err(Failure::Refused(reason.to_string())));
            }
            st.leases.forget_idle(id);
        }
        ids
    };
    for id in refused {
        inner.coord(|c| c.remove_tunnel(id));
    }
}

async fn on_peer(inner: &Arc<Inner>, u: PeerUpdate, sessions: &mut Sessions) {
    if inner.cfg.role == Role::Agent {
        return on_client_peer(inner, u).await;
    }
    let now = clock::now();
    match u.kind {
        PeerKind::Node => {
            let Some(node) = u.node else { return };
            let (program, key_changed) = {
                let mut st = inner.state();
                let Some(d) = st.dests.get_mut(&u.id) else {
                    return;
                };
                let key_changed = d.programmed.is_some_and(|k| k != node.key);
                d.lost = false;
                d.node = Some(node.clone());
                if d.node_at.is_none() || key_changed {
                    d.node_at = Some(now);
                }
                let program = match d.stage {
                    Stage::AwaitingNode => {
                        d.stage = Stage::AwaitingReady;
                        d.ready_received
                    }
                    // A restarted agent (new key): set up again, and forget pooled API
                    // connections, which died with the old agent.
                    _ if key_changed => {
                        d.stage = Stage::AwaitingReady;
                        d.ready_received = false;
                        d.client = None;
                        false
                    }
                    // Same key: paths or endpoints may have changed.
                    _ => d.programmed.is_some(),
                };
                (program, key_changed)
            };
            if key_changed {
                // Requests in flight to the old incarnation would wait for answers it
                // can no longer give: fail them now.
                reset_connections(inner, u.id);
            }
            if program {
                program_peer(inner, u.id, sessions).await;
            }
        }
        PeerKind::ReadyForHandshake => {
            let program = {
                let mut st = inner.state();
                let Some(d) = st.dests.get_mut(&u.id) else {
                    return;
                };
                d.ready_received = true;
                d.stage == Stage::AwaitingReady
            };
            if program {
                program_peer(inner, u.id, sessions).await;
            }
        }
        PeerKind::Lost => {
            if let Some(d) = inner.state().dests.get_mut(&u.id) {
                d.lost = true;
            }
        }
        PeerKind::Disconnected => {
            let old = {
                let mut st = inner.state();
                let Some(d) = st.dests.get_mut(&u.id) else {
                    return;
                };
                d.node = None;
                d.node_at = None;
                d.ready_received = false;
                d.stage = Stage::AwaitingNode;
                d.client = None;
                d.programmed.take()
            };
            reset_connections(inner, u.id);
            if let Some(k) = old {
                let _ = inner.tunnel.remove_peer(k).await;
            }
        }
    }
}

/// Resets our TCP connections to node `id`'s tailnet address: that node left or restarted.
fn reset_connections(inner: &Inner, id: NodeId) {
    let n = inner
        .tunnel
        .reset_connections_to(std::net::IpAddr::V6(id.tailnet_addr()));
    if n > 0 {
        tracing::debug!(node = %id, connections = n, "reset connections to a departed node");
    }
}

/// Agent role: every client the coordinator introduces becomes a peer; acknowledge it.
async fn on_client_peer(inner: &Arc<Inner>, u: PeerUpdate) {
    match u.kind {
        PeerKind::Node => {
            let Some(node) = u.node else { return };
            let cfg = peer_config(inner, &node);
            let old = inner.state().clients.insert(node.id, node.key);
            if let Some(k) = old.filter(|k| *k != node.key) {
                reset_connections(inner, node.id);
                let _ = inner.tunnel.remove_peer(k).await;
            }
            if let Err(e) = inner.tunnel.upsert_peer(cfg).await {
                tracing::warn!(client = %node.id, error = %e, "could not add client peer");
                return;
            }
            inner.coord(|c| c.ready_for_handshake(node.id));
        }
        PeerKind::Disconnected => {
            let old = inner.state().clients.remove(&u.id);
            if let Some(k) = old {
                reset_connections(inner, u.id);
                let _ = inner.tunnel.remove_peer(k).await;
            }
        }
        PeerKind::Lost | PeerKind::ReadyForHandshake => {}
    }
}

/// Programs the destination's WireGuard peer and starts a handshake.
async fn program_peer(inner: &Arc<Inner>, id: NodeId, sessions: &mut Sessions) {
    let (node, old) = {
        let mut st = inner.state();
        let Some(d) = st.dests.get_mut(&id) else {
            return;
        };
        let Some(node) = d.node.clone() else { return };
        let old = d.programmed.filter(|k| *k != node.key);
        d.programmed = Some(node.key);
        if d.stage != Stage::Ready {
            d.stage = Stage::Handshaking;
        }
        (node, old)
    };
    if let Some(k) = old {
        let _ = inner.tunnel.remove_peer(k).await;
    }
    if let Err(e) = inner.tunnel.upsert_peer(peer_config(inner, &node)).await {
        tracing::warn!(agent = %id, error = %e, "could not program peer");
        return;
    }
    let _ = inner.tunnel.initiate(node.key).await;
    let inner2 = inner.clone();
    let key = node.key;
    sessions.spawn(async move {
        let ok = tokio::time::timeout(HANDSHAKE_WAIT, inner2.tunnel.await_session(key)).await;
        (id, key, matches!(ok, Ok(Ok(()))))
    });
}

fn on_session(inner: &Inner, id: NodeId, key: NodePublic, ok: bool) {
    let mut st = inner.state();
    let Some(d) = st.dests.get_mut(&id) else {
        return;
    };
    if d.programmed != Some(key) {
        return;
    }
    if ok {
        d.stage = Stage::Ready;
        d.wake_all(Ok(()));
    } else {
        tracing::debug!(agent = %id, "handshake did not complete");
        // Leave it handshaking: boringtun keeps retrying; a new caller re-initiates.
    }
}

/// A caller wants `id`: make sure the tunnel exists and setup is moving.
async fn ensure(inner: &Arc<Inner>, id: NodeId, sessions: &mut Sessions) {
    let stage = inner.state().dests.get(&id).map(|d| d.stage);
    match stage {
        Some(Stage::AwaitingNode) => {
            inner.coord(|c| c.add_tunnel(id));
        }
        Some(Stage::Handshaking) => {
            // Nudge: the earlier attempt may have given up.
            let key = inner.state().dests.get(&id).and_then(|d| d.programmed);
            if let Some(k) = key {
                let _ = inner.tunnel.initiate(k).await;
            }
            let _ = sessions;
        }
        _ => {}
    }
}

/// After sleep or a long stall every connection is suspect: reconnect the relays and the
/// coordinator now (the coordinator client replays our tunnels), and re-handshake peers.
async fn on_wake(inner: &Arc<Inner>, gap: crate::proto::wake::Gap) {
    tracing::info!(?gap, "clock gap: assuming sleep/wake; reconnecting");
    inner
        .wakes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    inner.relay.reconnect_all();
    inner.coord(|c| c.reconnect_now());
    let _ = inner.tunnel.rehandshake_all().await;
}

async fn housekeeping(inner: &Arc<Inner>, sessions: &mut Sessions) {
    let now = clock::now();
    // Ready-wait timeouts: handshake anyway.
    let due: Vec<NodeId> = {
        let mut st = inner.state();
        for d in st.dests.values_mut() {
            d.waiters.retain(|w| !w.is_closed());
        }
        st.dests
            .iter()
            .filter(|(_, d)| {
                d.stage == Stage::AwaitingReady
                    && d.node_at
                        .is_some_and(|t| now.saturating_duration_since(t) >= inner.cfg.ready_wait)
            })
            .map(|(id, _)| *id)
            .collect()
    };
    for id in due {
        tracing::debug!(agent = %id, "no ready_for_handshake in time; handshaking anyway");
        program_peer(inner, id, sessions).await;
    }
    // Idle destinations.
    let expired: Vec<(NodeId, Option<NodePublic>)> = {
        let mut st = inner.state();
        let ids = st.leases.expire(now, inner.cfg.idle_timeout);
        ids.into_iter()
            .map(|id| {
                let key = st.dests.remove(&id).and_then(|mut d: Dest| {
                    d.waiters.clear();
                    d.programmed
                });
                (id, key)
            })
            .collect()
    };
    for (id, key) in expired {
        tracing::debug!(agent = %id, "destination idle; removing tunnel");
        inner.coord(|c| c.remove_tunnel(id));
        if let Some(k) = key {
            let _ = inner.tunnel.remove_peer(k).await;
        }
    }
}
