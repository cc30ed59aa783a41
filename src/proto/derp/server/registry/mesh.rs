//! The forwarder table: keys connected to other relays of the mesh, each reachable
//! through one or more outbound mesh links.
//!
//! The shell adds a link when its mesh connection logs in ([`Registry::add_link`]),
//! applies the peer relay's PeerPresent/PeerGone stream to it, and removes it when the
//! connection ends, which drops every forwarder it held: a forwarder never outlives
//! the connection that announced it. A link id belongs to one connection, so a late
//! update from an older connection to the same relay finds nothing to change.
//!
//! Per key the links form a stack, newest on top: a node that moves to another relay
//! is announced there before its old relay notices it left, and the newer
//! announcement is the one to believe. When the top goes, the one below takes over
//! (as Go's `multiForwarder` keeps its other choices).

use super::{Effects, Registry};
use crate::wire::key::NodePublic;
use std::collections::HashSet;

/// Identifies one outbound mesh connection for its whole life; never reused.
pub type LinkId = u64;

/// One outbound mesh link.
#[derive(Debug)]
pub(super) struct Link<F> {
    /// The shell's handle: where forwarded packets are queued.
    handle: F,
    /// Keys this link announced and still holds.
    keys: HashSet<NodePublic>,
}

impl<H: Clone, F: Clone> Registry<H, F> {
    /// Registers an outbound mesh link that just logged in; its forwarders are added
    /// as its watch stream arrives.
    pub fn add_link(&mut self, handle: F) -> LinkId {
        let id = self.next_link;
        self.next_link += 1;
        self.links.insert(
            id,
            Link {
                handle,
                keys: HashSet::new(),
            },
        );
        id
    }

    /// Removes a link whose connection ended, with every forwarder it held. Keys left
    /// neither local nor forwarded are gone: whoever exchanged packets with them hears
    /// PeerGone(Disconnected). Removing an unknown link does nothing.
    pub fn remove_link(&mut self, link: LinkId) -> Effects<H> {
        let mut fx = Effects::default();
        if let Some(l) = self.links.remove(&link) {
            for key in l.keys {
                self.drop_forwarder(link, &key, &mut fx);
            }
        }
        fx
    }

    /// The peer relay behind `link` says `key` is connected there (PeerPresent). The
    /// link becomes the newest forwarder for `key`, also when it already was one (the
    /// key logged in there again). Returns `false` when the link is unknown (removed).
    pub fn add_forwarder(&mut self, link: LinkId, key: &NodePublic) -> bool {
        let Some(l) = self.links.get_mut(&link) else {
            return false;
        };
        l.keys.insert(*key);
        let stack = self.forwarders.entry(*key).or_default();
        stack.retain(|x| *x != link);
        stack.push(link);
        true
    }

    /// The peer relay behind `link` says `key` left (PeerGone). When no forwarder is
    /// left and the key is not local, its correspondents hear PeerGone(Disconnected).
    pub fn remove_forwarder(&mut self, link: LinkId, key: &NodePublic) -> Effects<H> {
        let mut fx = Effects::default();
        if self
            .links
            .get_mut(&link)
            .is_some_and(|l| l.keys.remove(key))
        {
            self.drop_forwarder(link, key, &mut fx);
        }
        fx
    }

    fn drop_forwarder(&mut self, link: LinkId, key: &NodePublic, fx: &mut Effects<H>) {
        let Some(stack) = self.forwarders.get_mut(key) else {
            return;
        };
        stack.retain(|x| *x != link);
        if stack.is_empty() {
            self.forwarders.remove(key);
            if !self.by_key.contains_key(key) {
                self.notify_gone(key, fx);
            }
        }
    }

    /// The newest link forwarding to `key`.
    pub(super) fn forwarder_of(&self, key: &NodePublic) -> Option<F> {
        let link = self.forwarders.get(key)?.last()?;
        self.links.get(link).map(|l| l.handle.clone())
    }

    /// The id of the link packets for `key` would take, if it is not local.
    pub fn forwarder_link(&self, key: &NodePublic) -> Option<LinkId> {
        self.forwarders.get(key).and_then(|s| s.last()).copied()
    }

    /// Outbound mesh links registered.
    pub fn links(&self) -> usize {
        self.links.len()
    }

    /// Keys reachable through at least one mesh link.
    pub fn forwarded_keys(&self) -> usize {
        self.forwarders.len()
    }

    /// Every forwarder is on a live link that lists the key, once per stack; every key
    /// a link lists has it in its stack.
    pub(super) fn forwarders_consistent(&self) -> bool {
        let stacks_ok = self.forwarders.iter().all(|(k, stack)| {
            let unique: HashSet<_> = stack.iter().collect();
            !stack.is_empty()
                && unique.len() == stack.len()
                && stack
                    .iter()
                    .all(|id| self.links.get(id).is_some_and(|l| l.keys.contains(k)))
        });
        let links_ok = self.links.iter().all(|(id, l)| {
            l.keys
                .iter()
                .all(|k| self.forwarders.get(k).is_some_and(|s| s.contains(id)))
        });
        stacks_ok && links_ok
    }
}
