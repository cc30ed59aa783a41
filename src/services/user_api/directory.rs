//! The user's workspaces as the server last listed them, kept on the client so that the
//! first call to a workspace need not ask the server which agent it means.
//!
//! A resolution is a hint, never an authorization: the coordinator checks every tunnel
//! the client asks for. So a listing is used while fresh, and for a while after that too
//! (a stale hit starts a refresh in the background, and the call goes on at once); only a
//! listing too old to trust, or a name it does not hold, sends the caller to the server,
//! whose answer carries the authoritative error. No clock is read here: callers pass
//! `now`.

use crate::services::control::{
    AgentChoice, ResolvedAgent, User, Workspace, WorkspaceSpec, choose_agent,
};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A listing this young is used without refreshing it.
pub const FRESH_FOR: Duration = Duration::from_secs(30);
/// A listing older than [`FRESH_FOR`] and younger than this is still used, and refreshed.
pub const USABLE_FOR: Duration = Duration::from_secs(600);
/// A refresh that has not come back in this long is assumed lost, and may be started again.
const REFRESH_WAIT: Duration = Duration::from_secs(15);

/// What the directory made of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The listing names this workspace and agent.
    Hit(ResolvedAgent),
    /// Ask the server.
    Miss,
}

/// The listing and its age. See the module docs.
#[derive(Debug, Default)]
pub struct Directory {
    listed: Option<(Instant, Vec<Workspace>)>,
    refresh_started: Option<Instant>,
    hits: u64,
    misses: u64,
}

impl Directory {
    /// An empty directory: every lookup misses until a listing is stored.
    pub fn new() -> Self {
        Self::default()
    }

    /// A full listing of the user's workspaces (no owner filter) arrived.
    pub fn store(&mut self, workspaces: Vec<Workspace>, now: Instant) {
        self.listed = Some((now, workspaces));
        self.refresh_started = None;
    }

    /// A refresh failed: another may start at once.
    pub fn refresh_failed(&mut self) {
        self.refresh_started = None;
    }

    /// Whether the caller should list the workspaces now (the listing is missing or no
    /// longer fresh, and no refresh is under way). Returning `true` claims the refresh:
    /// the caller must end it with [`Self::store`] or [`Self::refresh_failed`].
    pub fn claim_refresh(&mut self, now: Instant) -> bool {
        let fresh = self
            .listed
            .as_ref()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) < FRESH_FOR);
        let running = self
            .refresh_started
            .is_some_and(|t| now.saturating_duration_since(t) < REFRESH_WAIT);
        if fresh || running {
            return false;
        }
        self.refresh_started = Some(now);
        true
    }

    fn usable(&self, now: Instant) -> Option<&[Workspace]> {
        self.listed
            .as_ref()
            .filter(|(at, _)| now.saturating_duration_since(*at) < USABLE_FOR)
            .map(|(_, w)| w.as_slice())
    }

    fn count(&mut self, l: Lookup) -> Lookup {
        match l {
            Lookup::Hit(_) => self.hits += 1,
            Lookup::Miss => self.misses += 1,
        }
        l
    }

    /// `[owner/]name[.agent]` for `me` (no owner means `me`'s own), as the server resolves
    /// it. Anything but a clean hit (unknown name, unknown or ambiguous agent) is a miss:
    /// the server says what is wrong.
    pub fn resolve_spec(&mut self, me: &User, spec: &WorkspaceSpec, now: Instant) -> Lookup {
        let owner = spec.owner.as_deref().unwrap_or(&me.name);
        let found = self.usable(now).and_then(|list| {
            let ws = list
                .iter()
                .find(|w| w.owner == owner && w.name == spec.name)?;
            hit(ws, AgentChoice::from_spec(spec.agent.as_deref()))
        });
        self.count(found.map_or(Lookup::Miss, Lookup::Hit))
    }

    /// The workspace with id `id` and the agent `choice` means.
    pub fn resolve_id(&mut self, id: Uuid, choice: AgentChoice<'_>, now: Instant) -> Lookup {
        let found = self.usable(now).and_then(|list| {
            let ws = list.iter().find(|w| w.id == id)?;
            hit(ws, choice)
        });
        self.count(found.map_or(Lookup::Miss, Lookup::Hit))
    }

    /// Lookups answered from the listing, and those sent to the server.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

fn hit(ws: &Workspace, choice: AgentChoice<'_>) -> Option<ResolvedAgent> {
    let agent = choose_agent(ws, choice).ok()?;
    Some(ResolvedAgent {
        workspace: ws.clone(),
        agent,
    })
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::services::control::Agent;
    use crate::wire::addr::NodeId;

    fn user(name: &str) -> User {
        User {
            name: name.into(),
            admin: false,
        }
    }

    fn ws(owner: &str, name: &str, agents: &[&str]) -> Workspace {
        Workspace {
            id: Uuid::new_v4(),
            owner: owner.into(),
            name: name.into(),
            shared_with: Vec::new(),
            agents: agents
                .iter()
                .map(|a| Agent {
                    id: NodeId::random(),
                    name: (*a).into(),
                })
                .collect(),
        }
    }

    fn spec(s: &str) -> WorkspaceSpec {
        WorkspaceSpec::parse(s).unwrap()
    }

    #[test]
    fn names_resolve_as_the_server_resolves_them() {
        let t0 = Instant::now();
        let mine = ws("alice", "dev", &["main"]);
        let shared = ws("bob", "dev", &["a", "b"]);
        let mut d = Directory::new();
        d.store(vec![mine.clone(), shared.clone()], t0);
        let alice = user("alice");
        let Lookup::Hit(r) = d.resolve_spec(&alice, &spec("dev"), t0) else {
            panic!("own workspace by name")
        };
        assert_eq!(r.agent, mine.agents[0]);
        let Lookup::Hit(r) = d.resolve_spec(&alice, &spec("bob/dev.b"), t0) else {
            panic!("shared workspace and agent by name")
        };
        assert_eq!(r.agent, shared.agents[1]);
        // Ambiguous, unknown agent, unknown workspace: the server words the error.
        assert_eq!(d.resolve_spec(&alice, &spec("bob/dev"), t0), Lookup::Miss);
        assert_eq!(d.resolve_spec(&alice, &spec("dev.other"), t0), Lookup::Miss);
        assert_eq!(d.resolve_spec(&alice, &spec("carol/dev"), t0), Lookup::Miss);
        // By id: the chatgpt toolset's default is the first agent.
        let Lookup::Hit(r) = d.resolve_id(shared.id, AgentChoice::Default, t0) else {
            panic!("by id")
        };
        assert_eq!(r.agent, shared.agents[0]);
        assert_eq!(d.resolve_id(shared.id, AgentChoice::Only, t0), Lookup::Miss);
        assert_eq!(
            d.resolve_id(Uuid::new_v4(), AgentChoice::Default, t0),
            Lookup::Miss
        );
        assert_eq!(d.counts(), (3, 5));
    }

    #[test]
    fn a_stale_listing_is_used_and_refreshed_once_and_an_old_one_is_not_used() {
        let t0 = Instant::now();
        let alice = user("alice");
        let mut d = Directory::new();
        assert!(d.claim_refresh(t0), "nothing listed yet");
        assert!(!d.claim_refresh(t0), "one refresh at a time");
        d.store(vec![ws("alice", "dev", &["main"])], t0);
        assert!(!d.claim_refresh(t0 + FRESH_FOR / 2));

        let stale = t0 + FRESH_FOR + Duration::from_secs(1);
        assert!(matches!(
            d.resolve_spec(&alice, &spec("dev"), stale),
            Lookup::Hit(_)
        ));
        assert!(d.claim_refresh(stale));
        assert!(!d.claim_refresh(stale + Duration::from_secs(1)));
        d.refresh_failed();
        assert!(
            d.claim_refresh(stale + Duration::from_secs(2)),
            "after a failure"
        );
        // A refresh that never ended is given up after a while.
        assert!(d.claim_refresh(stale + Duration::from_secs(2) + REFRESH_WAIT));

        let old = t0 + USABLE_FOR;
        assert_eq!(d.resolve_spec(&alice, &spec("dev"), old), Lookup::Miss);
        d.store(vec![], old);
        assert_eq!(
            d.resolve_spec(&alice, &spec("dev"), old),
            Lookup::Miss,
            "deleted"
        );
    }
}
