//! State shared between a [`super::DerpClient`] handle and its task.

use crate::wire::derp::PeerGoneReason;
use crate::wire::key::NodePublic;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// A snapshot of a DERP client: connection state, signals from the server, counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DerpStatus {
    /// The region this client serves.
    pub region: u16,
    /// Our key.
    pub public: Option<NodePublic>,
    /// Logged in right now.
    pub connected: bool,
    /// `"upgrade"` or `"websocket"` while connected.
    pub transport: Option<&'static str>,
    /// The server's key, once seen.
    pub server_key: Option<NodePublic>,
    /// Successful logins.
    pub connects: u64,
    /// Logins after the first (connection drops that were repaired).
    pub reconnects: u64,
    /// Why the last connection or attempt failed.
    pub last_error: Option<String>,
    /// The server's last Health problem; `None` when healthy.
    pub health: Option<String>,
    /// PeerGone frames received.
    pub peer_gone: u64,
    /// The last PeerGone: which peer and why.
    pub last_peer_gone: Option<(NodePublic, PeerGoneReason)>,
    /// Restarting frames received.
    pub restarting: u64,
    /// The last measured ping round trip.
    pub rtt: Option<Duration>,
    /// Packets written to the server.
    pub tx_packets: u64,
    /// Their payload bytes.
    pub tx_bytes: u64,
    /// Packets received from the server.
    pub rx_packets: u64,
    /// Their payload bytes.
    pub rx_bytes: u64,
    /// Packets `send` refused because the queue was full.
    pub dropped_send_full: u64,
    /// Received packets dropped because the inbound consumer was full or gone.
    pub dropped_inbound_full: u64,
    /// Malformed frames from the server that were skipped.
    pub skipped_frames: u64,
}

#[derive(Debug, Default)]
struct Counters {
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    dropped_send_full: AtomicU64,
    dropped_inbound_full: AtomicU64,
    skipped_frames: AtomicU64,
}

/// Owned by the task, read by the handle. The mutex guards rarely-changing state and is
/// never held across an await; packet counters are atomics.
#[derive(Debug)]
pub(super) struct Shared {
    state: Mutex<DerpStatus>,
    counters: Counters,
    connected: watch::Sender<bool>,
    /// `reconnect_now` pokes this; the task drops its connection or cuts its wait short.
    pub(super) reconnect: Notify,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Shared {
    pub(super) fn new(region: u16, public: NodePublic) -> Self {
        let state = DerpStatus {
            region,
            public: Some(public),
            ..Default::default()
        };
        Self {
            state: Mutex::new(state),
            counters: Counters::default(),
            connected: watch::Sender::new(false),
            reconnect: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DerpStatus> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn status(&self) -> DerpStatus {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DerpStatus {
            tx_packets: get(&c.tx_packets),
            tx_bytes: get(&c.tx_bytes),
            rx_packets: get(&c.rx_packets),
            rx_bytes: get(&c.rx_bytes),
            dropped_send_full: get(&c.dropped_send_full),
            dropped_inbound_full: get(&c.dropped_inbound_full),
            skipped_frames: get(&c.skipped_frames),
            ..self.lock().clone()
        }
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    pub(super) fn set_connected(&self, server_key: NodePublic, transport: &'static str) {
        let mut s = self.lock();
        s.connected = true;
        s.transport = Some(transport);
        s.server_key = Some(server_key);
        s.connects += 1;
        if s.connects > 1 {
            s.reconnects += 1;
        }
        s.last_error = None;
        s.health = None;
        drop(s);
        self.connected.send_replace(true);
    }

    pub(super) fn set_disconnected(&self) {
        let mut s = self.lock();
        s.connected = false;
        s.transport = None;
        drop(s);
        self.connected.send_replace(false);
    }

    pub(super) fn set_error(&self, error: String) {
        self.lock().last_error = Some(error);
    }

    pub(super) fn note_peer_gone(&self, peer: NodePublic, reason: PeerGoneReason) {
        let mut s = self.lock();
        s.peer_gone += 1;
        s.last_peer_gone = Some((peer, reason));
    }

    pub(super) fn note_health(&self, problem: &str) {
        self.lock().health = (!problem.is_empty()).then(|| problem.to_owned());
    }

    pub(super) fn note_restarting(&self) {
        self.lock().restarting += 1;
    }

    pub(super) fn set_rtt(&self, rtt: Duration) {
        self.lock().rtt = Some(rtt);
    }

    pub(super) fn count_tx(&self, bytes: usize) {
        add(&self.counters.tx_packets, 1);
        add(&self.counters.tx_bytes, bytes as u64);
    }

    pub(super) fn count_rx(&self, bytes: usize) {
        add(&self.counters.rx_packets, 1);
        add(&self.counters.rx_bytes, bytes as u64);
    }

    pub(super) fn note_send_full(&self) {
        add(&self.counters.dropped_send_full, 1);
    }

    pub(super) fn note_inbound_full(&self) {
        add(&self.counters.dropped_inbound_full, 1);
    }

    pub(super) fn note_skipped(&self) {
        add(&self.counters.skipped_frames, 1);
    }
}
