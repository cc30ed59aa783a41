//! Coordinator client state: our node, the tunnels to replay after a reconnect, what is
//! queued for the current stream, and the reconnect backoff.
//!
//! Sans-IO. The runtime shell (`runtime::coord`) owns the websocket and calls, in order:
//! [`ClientState::hello`] on a fresh stream, [`ClientState::handle_message`] for each
//! message, [`ClientState::poll_transmit`] until `None` whenever it may write, and
//! [`ClientState::handle_disconnect`] when the stream ends, then [`ClientState::next_delay`] to
//! learn how long to wait. Commands ([`ClientState::update_self`], ...) may come at any time;
//! while no stream is up they only change the desired state, which the next `welcome`
//! replays in full (node first, then every tunnel).
//!
//! Must not import tokio or read the clock.

use crate::proto::backoff::Backoff;
use crate::wire::addr::NodeId;
use crate::wire::coord::{self, ClientMsg, Hello, Node, PeerKind, PeerUpdate, ServerMsg};
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;
use thiserror::Error;

/// Reconnect backoff used by default: 50 ms doubling to 5 s, jittered.
pub const DEFAULT_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(50), Duration::from_secs(5));

/// A stream that stayed up at least this long resets the backoff; a shorter one does not,
/// so a server that accepts and drops at once is not hammered.
pub const STABLE_AFTER: Duration = Duration::from_secs(5);

/// Attempt number that makes [`Backoff::delay`] return its cap.
const CAPPED_ATTEMPT: u32 = 31;

/// Retry delays after the coordinator refused us because another live process holds our
/// id ([`coord::CLOSE_CONFLICT`]). The first retry is soon, because the usual cause is a
/// restart whose old stream the server has not yet seen close; then it doubles to the cap,
/// so a second copy of an agent costs the server one attempt per half minute. (Refusal
/// never displaces the live stream, so the copies cannot take turns either way.)
pub const CONFLICT_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

/// Why a coordinator URL is unusable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("coordinator URL {0:?} must start with http://, https://, ws:// or wss://")]
pub struct UrlError(pub String);

/// The websocket URL for `base` (`http://host:port[/prefix]`): the scheme mapped to
/// `ws`/`wss` and `/api/v0/coordinate` appended.
///
/// # Errors
/// [`UrlError`] for any other scheme.
pub fn coordinate_url(base: &str) -> Result<String, UrlError> {
    let base = base.trim().trim_end_matches('/');
    let rest = [
        ("http://", "ws://"),
        ("https://", "wss://"),
        ("ws://", "ws://"),
        ("wss://", "wss://"),
    ]
    .iter()
    .find_map(|(from, to)| base.strip_prefix(from).map(|r| (to, r)));
    match rest {
        Some((scheme, host)) if !host.is_empty() => Ok(format!("{scheme}{host}/api/v0/coordinate")),
        _ => Err(UrlError(base.to_string())),
    }
}

/// What a server message means to the client's owner.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The stream is registered; the DERP map came with it.
    Connected {
        /// The server's DERP map, if it has one.
        derp_map: Option<serde_json::Value>,
    },
    /// A peer changed.
    Peer(PeerUpdate),
    /// The server refused a request or could not parse one.
    Error(String),
}

/// Where the current stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No stream.
    Down,
    /// `hello` sent, waiting for `welcome`.
    Greeting,
    /// Registered: requests flow.
    Up,
}

/// The client's state; see the module docs for the call order.
#[derive(Debug)]
pub struct ClientState {
    id: NodeId,
    name: String,
    /// Our latest node; only the newest is ever sent.
    node: Option<Node>,
    /// Every destination we want a tunnel to; replayed after each `welcome`.
    tunnels: BTreeSet<NodeId>,
    phase: Phase,
    /// Requests for the current stream, coalesced so the queue is bounded by twice the
    /// number of distinct destinations (plus one node and one disconnect).
    pending: VecDeque<ClientMsg>,
    /// Peers the server told us about on this stream; reported `lost` if it drops.
    known: BTreeSet<NodeId>,
    /// Consecutive failed or short-lived attempts; drives the backoff.
    attempt: u32,
    backoff: Backoff,
    /// Set by [`ClientState::disconnect`]: no new requests, no reconnects.
    closing: bool,
    /// Sent in `hello` so a reconnect of this process is told apart from another copy.
    instance: String,
    /// Attempts refused as conflicts in a row; cleared by a welcome.
    conflicts: u32,
}

impl ClientState {
    /// A client for node `id`, with the given reconnect backoff.
    pub fn new(id: NodeId, name: impl Into<String>, backoff: Backoff) -> Self {
        Self {
            id,
            name: name.into(),
            node: None,
            tunnels: BTreeSet::new(),
            phase: Phase::Down,
            pending: VecDeque::new(),
            known: BTreeSet::new(),
            attempt: 0,
            backoff,
            closing: false,
            instance: String::new(),
            conflicts: 0,
        }
    }

    /// Sets the per-process instance sent in `hello` (a random value chosen at start).
    #[must_use]
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = instance.into();
        self
    }

    /// Our node id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Whether the current stream is registered.
    pub fn is_up(&self) -> bool {
        self.phase == Phase::Up
    }

    /// Whether [`ClientState::disconnect`] was called.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// The destinations we want tunnels to.
    pub fn tunnels(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.tunnels.iter().copied()
    }

    /// Our latest node, if set.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    /// The first message for a fresh stream. Resets per-stream state.
    pub fn hello(&mut self) -> ClientMsg {
        self.phase = Phase::Greeting;
        self.pending.clear();
        self.known.clear();
        ClientMsg::Hello(Hello {
            version: coord::PROTOCOL_VERSION,
            id: self.id,
            name: self.name.clone(),
            instance: self.instance.clone(),
        })
    }

    /// Replaces our node; the newest wins, older unsent ones are dropped.
    pub fn update_self(&mut self, node: Node) {
        if self.closing {
            return;
        }
        self.node = Some(node.clone());
        if self.phase != Phase::Up {
            return;
        }
        let queued = self
            .pending
            .iter_mut()
            .find(|m| matches!(m, ClientMsg::UpdateSelf { .. }));
        match queued {
            Some(m) => *m = ClientMsg::UpdateSelf { node },
            None => self.pending.push_back(ClientMsg::UpdateSelf { node }),
        }
    }

    /// Wants a tunnel to `id`, now and after every reconnect.
    pub fn add_tunnel(&mut self, id: NodeId) {
        if self.closing || !self.tunnels.insert(id) {
            return;
        }
        self.queue_tunnel_change(ClientMsg::AddTunnel { id }, id);
    }

    /// No longer wants a tunnel to `id`.
    pub fn remove_tunnel(&mut self, id: NodeId) {
        if self.closing || !self.tunnels.remove(&id) {
            return;
        }
        self.queue_tunnel_change(ClientMsg::RemoveTunnel { id }, id);
    }

    fn queue_tunnel_change(&mut self, msg: ClientMsg, id: NodeId) {
        if self.phase != Phase::Up {
            return;
        }
        // An unsent add is cancelled by a removal: the peer never heard of the tunnel. An
        // unsent removal is not cancelled by a new add, though: we dropped our WireGuard
        // state for the peer in between, and the peer must hear `disconnected` to drop
        // its own (else it refuses our new handshake if our wall clock went back).
        let unsent_add = self
            .pending
            .iter()
            .position(|m| matches!(m, ClientMsg::AddTunnel { id: i } if *i == id));
        match (&msg, unsent_add) {
            (ClientMsg::RemoveTunnel { .. }, Some(i)) => {
                self.pending.remove(i);
            }
            (ClientMsg::AddTunnel { .. }, Some(_)) => {}
            _ => self.pending.push_back(msg),
        }
    }

    /// Tells tunnel peer `id` we are ready for a handshake. Dropped when no stream is up:
    /// it would be stale by the time one is.
    pub fn ready_for_handshake(&mut self, id: NodeId) {
        if self.closing || self.phase != Phase::Up {
            return;
        }
        let msg = ClientMsg::ReadyForHandshake { id };
        if !self.pending.contains(&msg) {
            self.pending.push_back(msg);
        }
    }

    /// Says goodbye: queues `disconnect` if a stream is up or greeting, and stops
    /// accepting requests. The server registers us on `hello`, before its `welcome`
    /// arrives; a stream closed without a goodbye then would be reported as lost.
    pub fn disconnect(&mut self) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.pending.clear();
        if self.phase != Phase::Down {
            self.pending.push_back(ClientMsg::Disconnect {});
        }
    }

    /// The next request to write on the current stream.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<ClientMsg> {
        self.pending.pop_front()
    }

    /// Whether requests are waiting for [`ClientState::poll_transmit`].
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Handles a message from the server; returns what the owner should hear, if anything.
    pub fn handle_message(&mut self, msg: ServerMsg) -> Option<ClientEvent> {
        match msg {
            ServerMsg::Welcome { id, derp_map, .. } => {
                if self.phase != Phase::Greeting || id != self.id {
                    return Some(ClientEvent::Error(format!("unexpected welcome for {id}")));
                }
                self.phase = Phase::Up;
                self.conflicts = 0;
                if self.closing {
                    self.pending.push_back(ClientMsg::Disconnect {});
                    return None;
                }
                // Replay: node first, so every add_tunnel delivers it to the destination.
                if let Some(node) = self.node.clone() {
                    self.pending.push_back(ClientMsg::UpdateSelf { node });
                }
                self.pending
                    .extend(self.tunnels.iter().map(|&id| ClientMsg::AddTunnel { id }));
                Some(ClientEvent::Connected { derp_map })
            }
            ServerMsg::PeerUpdate(u) => {
                if self.phase != Phase::Up {
                    return None;
                }
                match u.kind {
                    PeerKind::Node => {
                        // A node update must carry that peer's node; anything else is dropped.
                        if u.node.as_ref().is_none_or(|n| n.id != u.id) {
                            return None;
                        }
                        self.known.insert(u.id);
                    }
                    PeerKind::Disconnected | PeerKind::Lost => {
                        self.known.remove(&u.id);
                    }
                    PeerKind::ReadyForHandshake => {}
                }
                Some(ClientEvent::Peer(u))
            }
            ServerMsg::Error { message } => Some(ClientEvent::Error(message)),
        }
    }

    /// The stream ended. Returns a `lost` update for every peer the server had told us
    /// about: their live sessions may continue, but their nodes are no longer being kept
    /// current. `lasted` is how long the stream was registered (`None` if it never was).
    pub fn handle_disconnect(&mut self, lasted: Option<Duration>) -> Vec<PeerUpdate> {
        self.phase = Phase::Down;
        self.pending.clear();
        match lasted {
            Some(d) if d >= STABLE_AFTER => self.attempt = 0,
            _ => self.attempt = self.attempt.saturating_add(1),
        }
        std::mem::take(&mut self.known)
            .into_iter()
            .map(|id| PeerUpdate {
                id,
                kind: PeerKind::Lost,
                node: None,
                reason: Some("coordinator connection lost".into()),
            })
            .collect()
    }

    /// The server refused us (401/403, a policy close): retry only at the backoff's cap.
    pub fn handle_refused(&mut self) {
        self.attempt = CAPPED_ATTEMPT;
    }

    /// The server refused us because another live process holds our id: retry on
    /// [`CONFLICT_BACKOFF`].
    pub fn handle_conflict(&mut self) {
        self.conflicts = self.conflicts.saturating_add(1);
    }

    /// Whether the last attempt was refused as a conflict.
    pub fn is_conflicted(&self) -> bool {
        self.conflicts > 0
    }

    /// Reconnect promptly (sleep/wake, network change): the next delay starts from the base.
    pub fn reset_backoff(&mut self) {
        self.attempt = 0;
    }

    /// How long to wait before the next attempt. `rand` is uniform in `[0, 1)`.
    pub fn next_delay(&self, rand: f64) -> Duration {
        if self.conflicts > 0 {
            return CONFLICT_BACKOFF.delay(self.conflicts - 1, rand);
        }
        self.backoff.delay(self.attempt.saturating_sub(1), rand)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::key::NodePublic;

    fn id(n: u8) -> NodeId {
        NodeId(uuid::Uuid::from_bytes([n; 16]))
    }

    fn node(as_of: u64) -> Node {
        Node {
            id: id(1),
            key: NodePublic::from_bytes([7; 32]),
            preferred_derp: 0,
            addresses: vec![],
            allowed_ips: vec![],
            endpoints: vec![],
            as_of,
        }
    }

    fn drain(s: &mut ClientState) -> Vec<ClientMsg> {
        std::iter::from_fn(|| s.poll_transmit()).collect()
    }

    fn welcome(s: &mut ClientState) -> Option<ClientEvent> {
        s.handle_message(ServerMsg::Welcome {
            version: 1,
            id: s.id(),
            derp_map: None,
        })
    }

    fn up(s: &mut ClientState) {
        s.hello();
        assert_eq!(welcome(s), Some(ClientEvent::Connected { derp_map: None }));
    }

    #[test]
    fn urls() {
        assert_eq!(
            coordinate_url("http://h:1/").unwrap(),
            "ws://h:1/api/v0/coordinate"
        );
        assert_eq!(
            coordinate_url("https://h/p").unwrap(),
            "wss://h/p/api/v0/coordinate"
        );
        assert_eq!(
            coordinate_url("ws://h").unwrap(),
            "ws://h/api/v0/coordinate"
        );
        assert!(coordinate_url("ftp://h").is_err());
        assert!(coordinate_url("http://").is_err());
    }

    #[test]
    fn a_removal_is_not_cancelled_by_a_new_add_but_an_add_is_by_a_removal() {
        let mut s = ClientState::new(id(1), "c", DEFAULT_BACKOFF);
        up(&mut s);
        s.add_tunnel(id(2));
        drain(&mut s);
        // Removed and wanted again before anything was written: the peer must still hear
        // the removal, then the new tunnel.
        s.remove_tunnel(id(2));
        s.add_tunnel(id(2));
        s.add_tunnel(id(2));
        assert_eq!(
            drain(&mut s),
            vec![
                ClientMsg::RemoveTunnel { id: id(2) },
                ClientMsg::AddTunnel { id: id(2) }
            ]
        );
        // Wanted and dropped again before anything was written: nothing to say.
        s.add_tunnel(id(3));
        s.remove_tunnel(id(3));
        assert!(drain(&mut s).is_empty());
        // Remove, add, remove: the removal alone.
        s.remove_tunnel(id(2));
        s.add_tunnel(id(2));
        s.remove_tunnel(id(2));
        assert_eq!(drain(&mut s), vec![ClientMsg::RemoveTunnel { id: id(2) }]);
    }

    #[test]
    fn replays_node_then_tunnels_after_welcome() {
        let mut s = ClientState::new(id(1), "c", DEFAULT_BACKOFF);
        s.update_self(node(1));
        s.add_tunnel(id(2));
        s.add_tunnel(id(3));
        s.ready_for_handshake(id(2));
        assert!(
            drain(&mut s).is_empty(),
            "nothing is sent before a stream is up"
        );
        assert!(matches!(
            s.hello(),
            ClientMsg::Hello(Hello { version: 1, .. })
        ));
        assert!(drain(&mut s).is_empty(), "nothing before welcome");
        welcome(&mut s);
        assert_eq!(
            drain(&mut s),
            vec![
                ClientMsg::UpdateSelf { node: node(1) },
                ClientMsg::AddTunnel { id: id(2) },
                ClientMsg::AddTunnel { id: id(3) },
            ]
        );
        // Again after a reconnect.
        s.handle_disconnect(Some(Duration::from_secs(60)));
        s.remove_tunnel(id(3));
        up(&mut s);
        assert_eq!(drain(&mut s).len(), 2);
    }

    #[test]
    fn latest_node_wins_and_tunnel_changes_coalesce() {
        let mut s = ClientState::new(id(1), "c", DEFAULT_BACKOFF);
        up(&mut s);
        let (a, b) = (node(1), node(2));
        s.update_self(a);
        s.add_tunnel(id(5));
        s.update_self(b.clone());
        s.remove_tunnel(id(5));
        s.add_tunnel(id(6));
        s.ready_for_handshake(id(6));
        s.ready_for_handshake(id(6));
        assert_eq!(
            drain(&mut s),
            vec![
                ClientMsg::UpdateSelf { node: b },
                ClientMsg::AddTunnel { id: id(6) },
                ClientMsg::ReadyForHandshake { id: id(6) },
            ]
        );
        s.add_tunnel(id(6));
        assert!(drain(&mut s).is_empty(), "already wanted");
    }

    #[test]
    fn drop_reports_known_peers_lost() {
        let mut s = ClientState::new(id(1), "c", DEFAULT_BACKOFF);
        up(&mut s);
        let peer = Node {
            id: id(2),
            ..node(1)
        };
        let upd = |kind, node| {
            ServerMsg::PeerUpdate(PeerUpdate {
                id: id(2),
                kind,
                node,
                reason: None,
            })
        };
        assert!(matches!(
            s.handle_message(upd(PeerKind::Node, Some(peer.clone()))),
            Some(ClientEvent::Peer(_))
        ));
        // A node update whose node is someone else's is dropped.
        let mut wrong = peer.clone();
        wrong.id = id(3);
        assert_eq!(s.handle_message(upd(PeerKind::Node, Some(wrong))), None);
        let lost = s.handle_disconnect(None);
        assert_eq!(lost.len(), 1);
        assert_eq!((lost[0].id, lost[0].kind), (id(2), PeerKind::Lost));
        assert!(s.handle_disconnect(None).is_empty(), "reported once");
    }

    #[test]
    fn a_conflict_holds_off_until_a_welcome() {
        let mut s = ClientState::new(id(1), "c", DEFAULT_BACKOFF).with_instance("p1");
        assert!(matches!(s.hello(), ClientMsg::Hello(h) if h.instance == "p1"));
        s.handle_disconnect(None);
        s.handle_conflict();
        assert!(s.is_conflicted());
        assert_eq!(s.next_delay(1.0), Duration::from_secs(1));
        for _ in 0..10 {
            s.handle_conflict();
        }
        assert_eq!(s.next_delay(1.0), Duration::from_secs(30));
        assert!(s.next_delay(0.0) >= Duration::from_secs(15));
        // A wake does not shorten it: only the coordinator accepting us does.
        s.reset_backoff();
        assert_eq!(s.next_delay(1.0), Duration::from_secs(30));
        s.hello();
        welcome(&mut s);
        assert!(!s.is_conflicted());
        s.handle_disconnect(Some(STABLE_AFTER));
        assert_eq!(s.next_delay(1.0), Duration::from_millis(50));
    }

    #[test]
    fn backoff_grows_resets_and_caps() {
        let mut s = ClientState::new(id(1), "c", DEFAULT_BACKOFF);
        s.handle_disconnect(None);
        assert_eq!(s.next_delay(1.0), Duration::from_millis(50));
        s.handle_disconnect(None);
        s.handle_disconnect(Some(Duration::from_secs(1)));
        assert_eq!(
            s.next_delay(1.0),
            Duration::from_millis(200),
            "short streams do not reset"
        );
        s.handle_disconnect(Some(STABLE_AFTER));
        assert_eq!(s.next_delay(1.0), Duration::from_millis(50));
        s.handle_refused();
        assert_eq!(s.next_delay(1.0), Duration::from_secs(5));
        assert!(s.next_delay(0.0) >= Duration::from_millis(2500));
        s.reset_backoff();
        assert_eq!(s.next_delay(1.0), Duration::from_millis(50));
    }

    #[test]
    fn disconnect_is_last() {
        let mut s = ClientState::new(id(1), "c", DEFAULT_BACKOFF);
        up(&mut s);
        s.add_tunnel(id(2));
        s.disconnect();
        s.add_tunnel(id(3));
        s.update_self(node(9));
        assert_eq!(drain(&mut s), vec![ClientMsg::Disconnect {}]);
        assert!(s.is_closing());
    }

    #[test]
    fn disconnect_while_greeting_still_says_goodbye() {
        let mut s = ClientState::new(id(1), "c", DEFAULT_BACKOFF);
        s.hello();
        s.disconnect();
        assert_eq!(drain(&mut s), vec![ClientMsg::Disconnect {}]);
        let mut down = ClientState::new(id(1), "c", DEFAULT_BACKOFF);
        down.disconnect();
        assert_eq!(drain(&mut down), vec![]);
    }

    #[test]
    fn unexpected_welcome_is_an_error() {
        let mut s = ClientState::new(id(1), "c", DEFAULT_BACKOFF);
        s.hello();
        let other = ServerMsg::Welcome {
            version: 1,
            id: id(9),
            derp_map: None,
        };
        assert!(matches!(
            s.handle_message(other),
            Some(ClientEvent::Error(_))
        ));
        assert!(!s.is_up());
    }
}
