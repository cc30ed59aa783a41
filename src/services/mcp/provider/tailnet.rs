//! Agents over the shared Tailnet, with what is known about each one's liveness.
//!
//! The coordinator knows whether an agent's stream is registered (and since when, and
//! whether another process tried to take its id); the Tailnet knows the path and the last
//! handshake. [`TailnetAgentProvider`] joins the two: tools show the result as the agent's
//! status, and a call to an agent known to be offline fails at once with it instead of
//! waiting for a connect timeout.

use super::{AgentProvider, AgentState, AgentStatus, ProviderError};
use crate::proto::coord::server::Presence as CoordPresence;
use crate::proto::wg::PathAddr;
use crate::runtime::clock;
use crate::runtime::tailnet::{ConnError, DialMode, Tailnet};
use crate::services::agent::budget::ReplyRate;
use crate::services::agent::client::AgentClient;
use crate::services::agent::pool::AgentPools;
use crate::services::hub::{DERP_MAP_PATH, Hub};
use crate::services::user_api::client::{ApiError, ServerClient, server_status};
use crate::wire::addr::NodeId;
use crate::wire::derpmap::DerpMap;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// After the coordinator (re)starts, agents it has not seen yet are given this long to
/// reconnect before calls to them fail at once.
pub const RECONNECT_WINDOW: Duration = Duration::from_secs(30);

/// Where a provider learns whether agents are connected.
#[derive(Debug, Clone)]
enum Presence {
    /// Nowhere: statuses say only what the tunnel knows.
    None,
    /// The coordinator in this process: asked on every call, so calls to agents known to
    /// be offline fail before dialing.
    Hub(Arc<Hub>),
    /// The server's user API (a client on a person's machine): asked for statuses, and
    /// when a dial fails, to say why; never before a call, which must not cost a request.
    Remote(Arc<ServerClient>),
}

/// Hands MCP tools an agent client over the shared Tailnet; each client holds a lease.
#[derive(Debug, Clone)]
pub struct TailnetAgentProvider {
    tailnet: Arc<Tailnet>,
    /// Keep-alive connections per agent, shared by every call (and every clone).
    pools: Arc<AgentPools>,
    presence: Presence,
}

impl TailnetAgentProvider {
    /// A provider over `tailnet`, with no view of the coordinator. Needs a Tokio runtime
    /// (see [`AgentPools::new`]).
    pub fn new(tailnet: Arc<Tailnet>) -> Self {
        Self::with_reply_rate(tailnet, ReplyRate::default())
    }

    /// As [`Self::new`], reading each agent's replies at `rate`.
    pub fn with_reply_rate(tailnet: Arc<Tailnet>, rate: ReplyRate) -> Self {
        Self {
            pools: Arc::new(AgentPools::new(&tailnet).with_reply_rate(rate)),
            tailnet,
            presence: Presence::None,
        }
    }

    /// Consults `hub`'s coordinator for agent status and to fail fast on offline agents.
    #[must_use]
    pub fn with_presence(mut self, hub: Arc<Hub>) -> Self {
        self.presence = Presence::Hub(hub);
        self
    }

    /// Asks the server's user API for agent status, and why a dial failed.
    #[must_use]
    pub fn with_remote_presence(mut self, server: Arc<ServerClient>) -> Self {
        self.presence = Presence::Remote(server);
        self
    }
}

/// Unix milliseconds of the instant `t`, by way of the wall clock now.
fn unix_ms(t: Instant, now: Instant, wall: SystemTime) -> Option<u64> {
    let at = wall.checked_sub(now.saturating_duration_since(t))?;
    at.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

fn status_of(
    presence: &CoordPresence,
    started: Instant,
    now: Instant,
    wall: SystemTime,
) -> AgentStatus {
    let ms = |t| unix_ms(t, now, wall);
    let when = |t| ms(t).map_or_else(|| "?".to_string(), fmt_utc_ms);
    match presence {
        CoordPresence::Online {
            since,
            last_seen,
            conflict,
        } => {
            let mut detail = format!("online since {}", when(*since));
            if let Some(c) = conflict {
                detail.push_str(&format!(
                    "; {} registration(s) by another process refused, the latest at {}: \
                     is a second copy of this agent running?",
                    c.count,
                    when(c.last)
                ));
            }
            AgentStatus {
                state: AgentState::Online,
                detail,
                since_unix_ms: ms(*since),
                last_seen_unix_ms: ms(*last_seen),
                conflicts: conflict.map_or(0, |c| c.count),
                ..AgentStatus::default()
            }
        }
        // Its stream was on a replica that stopped answering: nothing is known about the
        // agent itself, whose relay and tunnels may well be fine, so calls still try it.
        CoordPresence::Offline {
            since,
            replica_lost: true,
            ..
        } => AgentStatus {
            state: AgentState::Unknown,
            detail: format!(
                "unknown since {}: the replica holding its stream stopped answering",
                when(*since)
            ),
            since_unix_ms: ms(*since),
            ..AgentStatus::default()
        },
        CoordPresence::Offline {
            since,
            graceful,
            reason,
            ..
        } => AgentStatus {
            state: AgentState::Offline,
            detail: if *graceful {
                format!("offline since {} (the agent stopped)", when(*since))
            } else {
                format!("offline since {} ({reason})", when(*since))
            },
            since_unix_ms: ms(*since),
            ..AgentStatus::default()
        },
        CoordPresence::Unknown => AgentStatus {
            state: if now.saturating_duration_since(started) < RECONNECT_WINDOW {
                AgentState::Unknown
            } else {
                AgentState::Offline
            },
            detail: format!("has not connected since {}", when(started)),
            ..AgentStatus::default()
        },
    }
}

impl TailnetAgentProvider {
    /// What this process's coordinator knows (only with [`Presence::Hub`]).
    fn local_presence(&self, agent: NodeId) -> Option<AgentStatus> {
        let Presence::Hub(hub) = &self.presence else {
            return None;
        };
        let coord = hub.coordinator();
        Some(status_of(
            &coord.presence(agent),
            coord.started(),
            clock::now(),
            clock::wall(),
        ))
    }
}

/// A dial's failure inside the serving process.
fn local_error(agent: NodeId, e: ConnError) -> ProviderError {
    match e {
        ConnError::Closed => ProviderError::ShutDown,
        // The node arrived but no session by the deadline: the tunnel's own timeout, not
        // an answer from the coordinator.
        ConnError::NoHandshake(_) => ProviderError::TimedOut { agent },
        other => ProviderError::Unreachable {
            agent,
            reason: other.to_string(),
        },
    }
}

/// `Some(reason)` if the server's API cannot be reached before `deadline` (a refusal, such
/// as a revoked token, is an answer: the dial then says what is wrong).
async fn server_unreachable(
    server: &ServerClient,
    deadline: tokio::time::Instant,
) -> Option<String> {
    match tokio::time::timeout_at(deadline, server.me()).await {
        Ok(Err(ApiError::Unreachable { reason, .. })) => Some(reason),
        Err(_) => Some("no answer before the call's deadline".into()),
        Ok(_) => None,
    }
}

/// Why a dial from a client failed, in the stages a person can act on: the server cannot
/// be reached, the agent is offline, or the tunnel did not come up.
async fn explain(
    server: &ServerClient,
    tailnet: &Tailnet,
    agent: NodeId,
    e: ConnError,
) -> ProviderError {
    if matches!(e, ConnError::Closed) {
        return ProviderError::ShutDown;
    }
    if matches!(e, ConnError::NoNode(_)) && !tailnet.coordinator_connected() {
        let why = tailnet
            .coordinator_status()
            .and_then(|s| s.last_error)
            .unwrap_or_else(|| "not connected".into());
        return ProviderError::Unreachable {
            agent,
            reason: format!(
                "the server at {} cannot be reached ({why}); agents whose tunnel is up keep working",
                server.url()
            ),
        };
    }
    let known = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        server_status(server, vec![agent]),
    )
    .await;
    if let Ok(Ok(mut m)) = known
        && let Some(s) = m.remove(&agent)
        && s.state == AgentState::Offline
    {
        return ProviderError::Offline {
            agent,
            status: s.detail,
        };
    }
    match e {
        ConnError::NoHandshake(_) => ProviderError::Unreachable {
            agent,
            reason: "no WireGuard handshake: the agent is online but neither its relay nor a \
                     direct path answered"
                .into(),
        },
        other => ProviderError::Unreachable {
            agent,
            reason: other.to_string(),
        },
    }
}

impl AgentProvider for TailnetAgentProvider {
    fn reply_pacing(&self) -> crate::services::agent::client::PacingCounts {
        self.pools.pacing()
    }

    fn connect(
        &self,
        agent: NodeId,
        deadline: tokio::time::Instant,
    ) -> BoxFuture<'static, Result<AgentClient, ProviderError>> {
        let tailnet = self.tailnet.clone();
        let pools = self.pools.clone();
        let known = self.local_presence(agent);
        let remote = match &self.presence {
            Presence::Remote(s) => Some(s.clone()),
            _ => None,
        };
        Box::pin(async move {
            if let Some(s) = known.filter(|s| s.state == AgentState::Offline) {
                return Err(ProviderError::Offline {
                    agent,
                    status: s.detail,
                });
            }
            if let Some(server) = &remote
                && !tailnet.coordinator_connected()
                && !tailnet.is_ready(agent)
            {
                // A tunnel not yet up needs the coordinator, which is away. Ask whether
                // the server answers at all: if it does not, say so now rather than at the
                // deadline; if it does, reconnect at once instead of after the backoff.
                if let Some(e) = server_unreachable(server, deadline).await {
                    return Err(ProviderError::Unreachable {
                        agent,
                        reason: format!(
                            "the server at {} cannot be reached ({e}); agents whose tunnel is up keep working",
                            server.url()
                        ),
                    });
                }
                tailnet.server_answered();
            }
            let dialled = match &remote {
                // The reference's per-call path asks the server for the connection info
                // (the DERP map) on every call before it builds the stack; so does ours.
                Some(server) if tailnet.dial_mode() == DialMode::PerCall => {
                    let info =
                        tokio::time::timeout_at(deadline, server.get::<DerpMap>(DERP_MAP_PATH));
                    let no_info = |why: String| ProviderError::Unreachable {
                        agent,
                        reason: format!("connection info from {}: {why}", server.url()),
                    };
                    match info.await {
                        Ok(Ok(map)) => tailnet.agent_conn_with_map(agent, deadline, map).await,
                        Ok(Err(e)) => return Err(no_info(e.to_string())),
                        Err(_) => return Err(no_info("timed out".to_owned())),
                    }
                }
                _ => tailnet.agent_conn(agent, deadline).await,
            };
            let conn = match dialled {
                Ok(c) => c,
                Err(e) => {
                    return Err(match remote {
                        Some(server) => explain(&server, &tailnet, agent, e).await,
                        None => local_error(agent, e),
                    });
                }
            };
            // The client holds its own lease; this handle's is released here.
            Ok(pools.client(&conn))
        })
    }

    fn status(&self, agents: Vec<NodeId>) -> BoxFuture<'static, HashMap<NodeId, AgentStatus>> {
        let mut out: HashMap<NodeId, AgentStatus> = agents
            .iter()
            .filter_map(|a| self.local_presence(*a).map(|s| (*a, s)))
            .collect();
        let tailnet = self.tailnet.clone();
        let remote = match &self.presence {
            Presence::Remote(s) => Some(s.clone()),
            _ => None,
        };
        Box::pin(async move {
            if let Some(server) = remote {
                match server_status(&server, agents).await {
                    Ok(m) => {
                        // The server's path is its own; this machine's is joined below.
                        out = m;
                        for s in out.values_mut() {
                            s.path = None;
                            s.last_handshake_unix_ms = None;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "agent status from the server"),
                }
            }
            for d in tailnet.destinations().await {
                if let Some(s) = out.get_mut(&d.agent) {
                    s.path = d.path.map(PathAddr::describe);
                    s.last_handshake_unix_ms = d
                        .last_handshake
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as u64);
                }
            }
            out
        })
    }
}

pub use crate::services::time::fmt_utc_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::coord::server::Conflict;

    #[test]
    #[allow(clippy::disallowed_methods)]
    fn statuses_say_what_is_known() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_796_238_000);
        let started = now - Duration::from_secs(100);
        let ago = |s| now - Duration::from_secs(s);
        let on = status_of(
            &CoordPresence::Online {
                since: ago(60),
                last_seen: ago(2),
                conflict: Some(Conflict {
                    count: 3,
                    first: ago(30),
                    last: ago(10),
                }),
            },
            started,
            now,
            wall,
        );
        assert_eq!(on.state, AgentState::Online);
        assert_eq!(on.conflicts, 3);
        assert!(
            on.detail.starts_with("online since 2026-12-02T18:59:00Z"),
            "{}",
            on.detail
        );
        assert!(on.detail.contains("second copy"), "{}", on.detail);
        assert_eq!(on.last_seen_unix_ms, Some(1_796_237_998_000));

        let off = status_of(
            &CoordPresence::Offline {
                since: ago(5),
                graceful: false,
                reason: "connection lost".into(),
                replica_lost: false,
            },
            started,
            now,
            wall,
        );
        assert_eq!(off.state, AgentState::Offline);
        assert_eq!(
            off.detail,
            "offline since 2026-12-02T18:59:55Z (connection lost)"
        );

        // Lost with another replica: not known to be offline, so calls still try it.
        let unsure = status_of(
            &CoordPresence::Offline {
                since: ago(5),
                graceful: false,
                reason: "the replica holding its stream stopped answering".into(),
                replica_lost: true,
            },
            started,
            now,
            wall,
        );
        assert_eq!(unsure.state, AgentState::Unknown);
        assert!(
            unsure.detail.contains("stopped answering"),
            "{}",
            unsure.detail
        );

        // Never seen: unknown while agents may still be reconnecting, offline after.
        let fresh = status_of(&CoordPresence::Unknown, ago(5), now, wall);
        assert_eq!(fresh.state, AgentState::Unknown);
        let old = status_of(&CoordPresence::Unknown, started, now, wall);
        assert_eq!(old.state, AgentState::Offline);
        assert!(old.detail.contains("has not connected since"));
    }
}
