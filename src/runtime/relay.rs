//! The device's DERP transport: one client per region in use.
//!
//! Implements the driver's [`Relay`]: a datagram for a peer whose path is a DERP region
//! goes to that region's client (connected on first use, never blocking the driver), and
//! every client delivers what it receives into one bounded channel the driver reads.
//! The home region's client says so to its server (NotePreferred); packets arriving from
//! any region are routed to the peer by the sender's key.

use super::derp::{DerpClient, DerpClientConfig, DerpClientOptions, DerpInbound, DerpStatus};
use super::driver::Relay;
use crate::wire::derpmap::DerpMap;
use crate::wire::key::{NodePrivate, NodePublic};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;

/// Datagrams buffered between the DERP clients and the driver.
pub const INBOUND_DEPTH: usize = 1024;

/// What the relay set needs to connect.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Our key (the DERP identity is the WireGuard key).
    pub private: NodePrivate,
    /// Where each region is.
    pub map: DerpMap,
    /// The region we advertise as home; its client sends NotePreferred.
    pub home: Option<u16>,
    /// Extra headers for the upgrade request (for example a bearer token).
    pub headers: Vec<(String, String)>,
    /// Client tuning.
    pub options: DerpClientOptions,
    /// Trust for relays reached over TLS.
    pub tls: crate::runtime::tls::ClientTls,
    /// Send `headers` (a bearer token) to a plain-HTTP relay that is not on loopback.
    pub allow_insecure_http: bool,
}

#[derive(Debug)]
struct State {
    cfg: RelayConfig,
    clients: HashMap<u16, DerpClient>,
    /// Regions a datagram was sent to that the map does not have.
    unknown_region: u64,
    /// Datagrams dropped because a client's queue was full or it was gone.
    dropped: u64,
    /// Regions refused because the token would cross in clear (logged once each).
    insecure: std::collections::HashSet<u16>,
}

/// The set of DERP clients. Cheap to clone; all clones share the clients.
#[derive(Debug, Clone)]
pub struct DerpRelay {
    state: Arc<Mutex<State>>,
    inbound: mpsc::Sender<DerpInbound>,
}

/// Status of one region's client.
#[derive(Debug, Clone)]
pub struct RegionStatus {
    /// Region id.
    pub region: u16,
    /// Whether this is our home region.
    pub home: bool,
    /// The client's connection state and counters.
    pub status: DerpStatus,
}

impl DerpRelay {
    /// A relay set and the receiver the driver reads inbound datagrams from. Connects to
    /// the home region at once (peers send to us there); other regions on first use.
    pub fn new(cfg: RelayConfig) -> (Self, mpsc::Receiver<DerpInbound>) {
        let (tx, rx) = mpsc::channel(INBOUND_DEPTH);
        let relay = Self {
            state: Arc::new(Mutex::new(State {
                cfg,
                clients: HashMap::new(),
                unknown_region: 0,
                dropped: 0,
                insecure: Default::default(),
            })),
            inbound: tx,
        };
        let home = relay.lock().cfg.home;
        if let Some(h) = home {
            relay.client(&mut relay.lock(), h);
        }
        (relay, rx)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client for `region`, connecting it if needed. `None` if the map lacks it.
    fn client<'a>(&self, st: &'a mut State, region: u16) -> Option<&'a DerpClient> {
        if !st.clients.contains_key(&region) {
            let node = match st.cfg.map.connect(region) {
                Ok(n) => n,
                Err(e) => {
                    st.unknown_region += 1;
                    tracing::debug!(region, error = %e, "no DERP node for region");
                    return None;
                }
            };
            if !st.cfg.headers.is_empty()
                && let Err(e) =
                    crate::runtime::tls::check_secret_url(&node.url, st.cfg.allow_insecure_http)
            {
                st.unknown_region += 1;
                if st.insecure.insert(region) {
                    tracing::warn!(region, error = %e, "not connecting to the DERP region");
                }
                return None;
            }
            let force_websocket = st
                .cfg
                .map
                .region(region)
                .map(|r| r.force_websockets)
                .unwrap_or(false);
            let cfg = DerpClientConfig {
                region,
                url: node.url,
                dial_ip: node.dial_ip,
                cert_name: node.cert_name,
                insecure_skip_verify: node.insecure_for_tests,
                tls: st.cfg.tls.clone(),
                private: st.cfg.private.clone(),
                preferred: st.cfg.home == Some(region),
                force_websocket,
                headers: st.cfg.headers.clone(),
            };
            tracing::debug!(region, "connecting to DERP region");
            let c = DerpClient::spawn_with(cfg, st.cfg.options.clone(), self.inbound.clone());
            st.clients.insert(region, c);
        }
        st.clients.get(&region)
    }

    /// Replaces the DERP map and home region. Clients whose region moved or vanished are
    /// dropped (and reconnect on next use); the new home is connected at once.
    pub fn set_map(&self, map: DerpMap, home: Option<u16>) {
        let mut st = self.lock();
        let old_map = std::mem::replace(&mut st.cfg.map, map);
        let home_changed = st.cfg.home != home;
        let old_home = st.cfg.home;
        st.cfg.home = home;
        let keep: Vec<u16> = st
            .clients
            .keys()
            .copied()
            .filter(|r| {
                old_map.connect(*r).ok() == st.cfg.map.connect(*r).ok()
                    && !(home_changed && (Some(*r) == old_home || Some(*r) == home))
            })
            .collect();
        st.clients.retain(|r, _| keep.contains(r));
        if let Some(h) = home {
            self.client(&mut st, h);
        }
    }

    /// The home region.
    pub fn home(&self) -> Option<u16> {
        self.lock().cfg.home
    }

    /// The DERP map in use.
    pub fn map(&self) -> DerpMap {
        self.lock().cfg.map.clone()
    }

    /// Reconnects every client at once (after sleep/wake or a network change).
    pub fn reconnect_all(&self) {
        for c in self.lock().clients.values() {
            c.reconnect_now();
        }
    }

    /// Each connected region's state.
    pub fn status(&self) -> Vec<RegionStatus> {
        let st = self.lock();
        let mut v: Vec<_> = st
            .clients
            .iter()
            .map(|(r, c)| RegionStatus {
                region: *r,
                home: st.cfg.home == Some(*r),
                status: c.status(),
            })
            .collect();
        v.sort_by_key(|s| s.region);
        v
    }

    /// Waits until the home region's client is logged in (or `timeout` passes).
    pub async fn wait_home(&self, timeout: std::time::Duration) -> bool {
        let waiter = {
            let mut st = self.lock();
            let Some(h) = st.cfg.home else { return false };
            self.client(&mut st, h).map(DerpClient::subscribe_connected)
        };
        match waiter {
            Some(mut rx) => matches!(
                tokio::time::timeout(timeout, rx.wait_for(|c| *c)).await,
                Ok(Ok(_))
            ),
            None => false,
        }
    }

    /// Stops every client without waiting (their tasks end on their own).
    pub fn stop_all(&self) {
        self.lock().clients.clear();
    }

    /// Stops every client.
    pub async fn shutdown(&self) {
        let clients: Vec<DerpClient> = self.lock().clients.drain().map(|(_, c)| c).collect();
        for c in clients {
            c.shutdown().await;
        }
    }
}

impl Relay for DerpRelay {
    fn send(&mut self, region: u16, dst: NodePublic, packet: &[u8]) -> bool {
        let mut st = self.lock();
        let ok = match self.client(&mut st, region) {
            Some(c) => c.send(dst, packet).is_ok(),
            None => false,
        };
        if !ok {
            st.dropped += 1;
        }
        ok
    }
}
