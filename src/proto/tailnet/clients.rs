//! Agent role: the clients the coordinator introduced, programmed as peers.
//!
//! A client that says goodbye is forgotten at once (`disconnected`). One whose stream
//! was lost (it crashed, slept, or its stream was replaced before it could take its
//! tunnel back) stays programmed, because its sessions keep working without the
//! coordinator. If it never comes back, though, nothing would ever remove it: an agent
//! serving many short-lived clients would keep a peer for every one that went away
//! without a word. So a lost client is checked once it has been lost for
//! `lost_client_timeout`: if its tunnel has had no handshake for that long (a tunnel in
//! use renews its session every two minutes) it is forgotten; otherwise it is checked
//! again a timeout later. The reference does the same (its lost-peer timeout).

use super::{Action, Destinations};
use crate::wire::addr::NodeId;
use crate::wire::coord::{PeerKind, PeerUpdate};
use crate::wire::key::NodePublic;
use std::time::Instant;

/// A client programmed as a peer.
#[derive(Debug)]
pub(super) struct Client {
    pub(super) key: NodePublic,
    /// Since when the coordinator has reported it lost (and not introduced it again),
    /// or since its last check found its tunnel in use.
    lost_since: Option<Instant>,
}

impl Destinations {
    pub(super) fn handle_client_peer(&mut self, u: PeerUpdate, now: Instant) {
        match u.kind {
            PeerKind::Node => {
                let Some(node) = u.node else { return };
                let old = self.clients.insert(
                    node.id,
                    Client {
                        key: node.key,
                        lost_since: None,
                    },
                );
                if let Some(k) = old.map(|c| c.key).filter(|k| *k != node.key) {
                    self.actions.push_back(Action::ResetConnections(node.id));
                    self.actions.push_back(Action::RemovePeer(k));
                }
                self.actions
                    .push_back(Action::ProgramClient(Box::new(node)));
            }
            PeerKind::Disconnected => self.forget_client(u.id),
            PeerKind::Lost => {
                if let Some(c) = self.clients.get_mut(&u.id) {
                    c.lost_since.get_or_insert(now);
                }
            }
            PeerKind::ReadyForHandshake => {}
        }
    }

    fn forget_client(&mut self, id: NodeId) {
        if let Some(c) = self.clients.remove(&id) {
            self.actions.push_back(Action::ResetConnections(id));
            self.actions.push_back(Action::RemovePeer(c.key));
        }
    }

    /// Asks the shell about every client lost for the timeout (see the module docs).
    pub(super) fn check_lost_clients(&mut self, now: Instant) {
        let timeout = self.cfg.lost_client_timeout;
        let mut due: Vec<NodeId> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                c.lost_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= timeout)
            })
            .map(|(id, _)| *id)
            .collect();
        due.sort();
        for id in due {
            let Some(c) = self.clients.get_mut(&id) else {
                continue;
            };
            // Checked again a timeout from now unless the answer forgets it.
            c.lost_since = Some(now);
            self.actions.push_back(Action::CheckClientIdle {
                id,
                key: c.key,
                idle_for: timeout,
            });
        }
    }

    /// When the next lost client is due for a check.
    pub(super) fn lost_clients_due(&self) -> Option<Instant> {
        self.clients
            .values()
            .filter_map(|c| c.lost_since)
            .min()
            .map(|t| t + self.cfg.lost_client_timeout)
    }

    /// The shell's answer to [`Action::CheckClientIdle`]: whether the client's tunnel had
    /// no handshake for the time asked. An idle client that is still lost, with the same
    /// key, is forgotten; anything else (it came back meanwhile, or its tunnel is in use)
    /// keeps it.
    pub fn handle_client_idle(&mut self, id: NodeId, key: NodePublic, idle: bool) {
        let still_lost = self
            .clients
            .get(&id)
            .is_some_and(|c| c.key == key && c.lost_since.is_some());
        if idle && still_lost {
            self.forget_client(id);
        }
    }
}
