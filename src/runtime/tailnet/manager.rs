//! The manager task: the thin executor of the destinations machine.

use super::Inner;
use super::endpoints::{advertise, discover_with};
use crate::proto::tailnet::Action;
use crate::proto::wg::PeerConfig;
use crate::runtime::clock;
use crate::runtime::coord::CoordEvent;
use crate::wire::addr::{IpCidr, NodeId};
use crate::wire::coord::Node;
use crate::wire::derpmap::DerpMap;
use crate::wire::key::NodePublic;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// How often the clock is checked for sleep/wake gaps (the machine's own timers are
/// slept on exactly).
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
    inner.state().advertised = node.endpoints.clone();
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

/// The manager task: feeds coordinator events, handshake outcomes, timers and wakes into
/// the destinations machine and carries out what it decides.
pub(super) async fn run(inner: Arc<Inner>, mut events: mpsc::Receiver<CoordEvent>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sessions = Sessions::new();
    let mut wake_detector = crate::proto::wake::WakeDetector::new(WAKE_THRESHOLD);
    let mut discovered = inner.tunnel.discovery();
    // One pending notice is enough; a major change is remembered beside it so that a
    // minor one queued first cannot hide it.
    let (net_tx, mut net_rx) = mpsc::channel::<()>(1);
    let major = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let targets = super::endpoints::coordinator_addr(&inner.cfg.coordinator_url)
        .into_iter()
        .collect();
    let netmon = tokio_util::task::AbortOnDropHandle::new(tokio::spawn({
        let major = major.clone();
        crate::runtime::netmon::watch(inner.cancel.child_token(), targets, move |kind| {
            if kind == crate::runtime::netmon::NetChange::Major {
                major.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let _ = net_tx.try_send(());
        })
    }));
    let _ = inner.tunnel.set_endpoints(advertise(&inner)).await;
    if let Some(map) = inner.cfg.derp_map.clone() {
        let home = inner.state().home;
        inner.state().chooser = super::home::chooser_for(&map, home);
        discover_with(&inner, &map, home).await;
    }
    loop {
        let due = inner.state().machine.poll_timeout();
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(
            due.unwrap_or_else(|| clock::now() + TICK),
        ));
        tokio::select! {
            _ = inner.cancel.cancelled() => break,
            ev = events.recv() => match ev {
                Some(ev) => on_event(&inner, ev).await,
                None => break,
            },
            Ok(()) = discovered.changed() => {
                let report = discovered.borrow_and_update().clone();
                on_discovery(&inner, &report).await;
            }
            () = inner.kick.notified() => {}
            Some(()) = net_rx.recv() => {
                if major.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    on_network_change(&inner).await;
                } else {
                    on_addresses_changed(&inner).await;
                }
            }
            Some(res) = sessions.join_next(), if !sessions.is_empty() => {
                if let Ok((id, key, ok)) = res {
                    tracing::debug!(agent = %id, ok, "handshake outcome");
                    inner.state().machine.handle_session(id, key, ok);
                }
            }
            () = sleep, if due.is_some() => {
                inner.state().machine.handle_timeout(clock::now());
            }
            _ = tick.tick() => {
                let gap = wake_detector.observe(clock::now(), clock::wall(), TICK);
                // Timers first: a destination that idled out while we slept is removed on
                // the coordinator stream that is still open, before the wake's reconnect
                // drops it. Otherwise the agent never hears of the removal, keeps our old
                // WireGuard state, and refuses the new handshake if our wall clock went
                // back meanwhile (its timestamp is older than the last one it saw).
                inner.state().machine.handle_timeout(clock::now());
                if gap != crate::proto::wake::Gap::None {
                    tracing::info!(?gap, "clock gap: assuming sleep/wake; reconnecting");
                    inner.wakes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    inner.state().machine.handle_wake();
                }
            }
        }
        execute(&inner, &mut sessions).await;
    }
    drop(netmon);
    // Waiters are failed with `Closed`; later callers are refused by the closed machine.
    {
        let mut st = inner.state();
        st.machine.close();
        st.settle();
        st.pending.clear();
        st.waiters.clear();
    }
    sessions.shutdown().await;
}

/// Carries out every action the machine has queued.
async fn execute(inner: &Arc<Inner>, sessions: &mut Sessions) {
    loop {
        let batch = {
            let mut st = inner.state();
            st.settle();
            std::mem::take(&mut st.pending)
        };
        if batch.is_empty() {
            return;
        }
        for a in batch {
            act(inner, a, sessions).await;
        }
    }
}

async fn act(inner: &Arc<Inner>, a: Action, sessions: &mut Sessions) {
    match a {
        Action::AddTunnel(id) => {
            tracing::debug!(agent = %id, "asking the coordinator for a tunnel");
            inner.coord(|c| c.add_tunnel(id));
        }
        Action::RemoveTunnel(id) => {
            tracing::debug!(agent = %id, "destination gone; removing tunnel");
            inner.coord(|c| c.remove_tunnel(id));
        }
        Action::ProgramPeer { id, node, replace } => {
            if let Some(k) = replace {
                let _ = inner.tunnel.remove_peer(k).await;
            }
            if let Err(e) = inner.tunnel.upsert_peer(peer_config(inner, &node)).await {
                tracing::warn!(agent = %id, error = %e, "could not program peer");
                return;
            }
            let _ = inner.tunnel.initiate(node.key, false).await;
            let inner2 = inner.clone();
            let key = node.key;
            sessions.spawn(async move {
                let ok =
                    tokio::time::timeout(HANDSHAKE_WAIT, inner2.tunnel.await_session(key)).await;
                (id, key, matches!(ok, Ok(Ok(()))))
            });
        }
        Action::Initiate(k) => {
            let _ = inner.tunnel.initiate(k, false).await;
        }
        Action::Reinitiate(k) => {
            tracing::debug!(key = %k, "agent acknowledged us but the handshake went unanswered; beginning it again");
            let _ = inner.tunnel.initiate(k, true).await;
        }
        Action::RemovePeer(k) => {
            let _ = inner.tunnel.remove_peer(k).await;
        }
        Action::ResetConnections(id) => reset_connections(inner, id),
        Action::ProgramClient(node) => {
            if let Err(e) = inner.tunnel.upsert_peer(peer_config(inner, &node)).await {
                tracing::warn!(client = %node.id, error = %e, "could not add client peer");
                return;
            }
            inner.coord(|c| c.ready_for_handshake(node.id));
        }
        // After sleep or a long stall every connection is suspect: reconnect the relays
        // and the coordinator now (the coordinator client replays our tunnels), and
        // re-handshake peers.
        Action::Reconnect => {
            inner.relay.reconnect_all();
            inner.coord(|c| c.reconnect_now());
            let _ = inner.tunnel.rehandshake_all().await;
        }
        Action::CheckClientIdle { id, key, idle_for } => {
            let last = match inner.tunnel.peer_stats(key).await {
                Ok(Some((stats, _))) => stats.last_handshake,
                // Gone already, or the tunnel is closing: nothing to keep.
                _ => None,
            };
            let idle = last.is_none_or(|t| clock::now().saturating_duration_since(t) >= idle_for);
            if idle {
                tracing::info!(client = %id, "forgetting a client lost without a goodbye and idle since");
            }
            inner.state().machine.handle_client_idle(id, key, idle);
        }
        // Handled by `State::settle`.
        Action::Resolve { .. } | Action::Gone(_) => {}
    }
}

/// Addresses came or went without moving our routes: announce the new local endpoints;
/// open connections are unaffected.
async fn on_addresses_changed(inner: &Arc<Inner>) {
    let eps = advertise(inner);
    if inner.state().advertised == eps {
        return;
    }
    if inner.tunnel.set_endpoints(eps).await.is_ok() {
        publish_self(inner);
    }
}

/// Routes changed: announce the new local endpoints at once, then treat it
/// as a wake (reconnect relay and coordinator, forget direct paths, rediscover,
/// re-handshake) so calls move to whatever path works now.
async fn on_network_change(inner: &Arc<Inner>) {
    inner
        .net_changes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _ = inner.tunnel.set_endpoints(advertise(inner)).await;
    publish_self(inner);
    inner.state().machine.handle_wake();
}

/// A discovery round ended: publish what changed.
async fn on_discovery(inner: &Arc<Inner>, report: &crate::proto::discovery::Report) {
    let reflexive = if report.mapping_varies == Some(true) {
        Vec::new()
    } else {
        report.reflexive.clone()
    };
    let changed = {
        let mut st = inner.state();
        let changed = st.reflexive != reflexive;
        st.reflexive = reflexive;
        changed
    };
    if changed {
        tracing::info!(
            reflexive = ?report.reflexive,
            udp = report.udp,
            mapping_varies = ?report.mapping_varies,
            "endpoints discovered"
        );
        let eps = advertise(inner);
        let _ = inner.tunnel.set_endpoints(eps).await;
        publish_self(inner);
    }
    super::home::on_report(inner, report).await;
}

async fn on_event(inner: &Arc<Inner>, ev: CoordEvent) {
    match ev {
        CoordEvent::Connected { derp_map } => {
            if inner.cfg.derp_map.is_none()
                && let Some(v) = derp_map
            {
                match serde_json::from_value::<DerpMap>(v) {
                    Ok(map) => {
                        // Keep a home chosen by latency while the map still has it.
                        let kept = inner.state().home.filter(|h| map.regions.contains_key(h));
                        let home = inner
                            .cfg
                            .home_region
                            .or(kept)
                            .or_else(|| default_home(&map));
                        discover_with(inner, &map, home).await;
                        let chooser = super::home::chooser_for(&map, home);
                        inner.relay.set_map(map, home);
                        let changed = {
                            let mut st = inner.state();
                            let changed = st.home != home;
                            st.home = home;
                            st.chooser = chooser;
                            changed
                        };
                        if changed {
                            publish_self(inner);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "coordinator sent an unusable DERP map"),
                }
            }
            inner.state().machine.handle_coordinator_up();
        }
        CoordEvent::Disconnected { error } => {
            tracing::info!(%error, "coordinator connection lost; keeping peers");
            inner.state().machine.handle_coordinator_down();
        }
        CoordEvent::Closed { reason } => {
            tracing::warn!(%reason, "coordinator closed the stream");
            inner.state().machine.handle_coordinator_closed(&reason);
        }
        CoordEvent::Error(message) => {
            tracing::debug!(%message, "coordinator error");
        }
        CoordEvent::Peer(u) => {
            tracing::debug!(peer = %u.id, kind = ?u.kind, "peer update");
            inner.state().machine.handle_peer(u, clock::now());
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
