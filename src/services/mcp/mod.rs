//! The MCP front end: a streamable-HTTP MCP endpoint whose tools act inside workspaces.
//!
//! ```text
//!  POST /mcp?toolset=standard|chatgpt          (also /api/experimental/mcp/http)
//!    │  405 for other methods; 401 without a valid `Authorization: Bearer` user token;
//!    │  400 for an unknown toolset; 403 for a bad Host or a foreign Origin (rmcp)
//!    ▼
//!  rmcp StreamableHttpService, built for this request (stateless, JSON responses,
//!  SSE only when a tool sends progress) ── serves 2025-11-25 `initialize` clients and
//!  2026-07-28 per-request `_meta` clients alike
//!    ▼
//!  Front (ServerHandler): the caller's user, the toolset's catalogue
//!    ▼  tools resolve `[owner/]name[.agent]` through the ControlPlane (a workspace the
//!    │  caller may not use looks not found), then ask the AgentProvider for a client
//!    ▼
//!  AgentClient ── the agent's HTTP API (tailnet port 4) ── dropped when the call ends
//! ```
//!
//! Module map: [`config`] (limits, hosts, origins), `http` (axum routes, auth, toolset,
//! protected-resource metadata), [`provider`] (how a tool gets an agent connection),
//! `front` (the rmcp handler), `tools` (the standard toolset: one table of definitions
//! read by catalogue and dispatch), `chatgpt` (`search`/`fetch`), `schema` (schemas in
//! standard JSON Schema), [`extension`] (extra tools for test fixtures).
//!
//! This module may use the runtime and the other services; nothing below `services`
//! imports it.

pub(crate) mod args;
mod cancel;
pub(crate) mod chatgpt;
pub mod config;
pub mod extension;
mod front;
pub(crate) mod http;
pub mod provider;
mod result;
mod schema;
mod slots;
mod stdio;
mod tools;

pub use config::{McpConfig, McpLimits};
pub use extension::ToolExtension;
pub use http::{MCP_PATH, MCP_PATH_EXPERIMENTAL, PROTECTED_RESOURCE_PATH, router};
pub use provider::tailnet::TailnetAgentProvider;
pub use provider::{AgentProvider, AgentState, AgentStatus, ProviderError, StaticAgentProvider};
pub use stdio::{StdioError, serve_stdio};

use crate::services::control::ControlPlane;
use std::sync::Arc;

/// Everything the MCP routes need, shared by every request.
#[derive(Debug, Clone)]
pub struct McpState {
    /// Who callers are and which workspaces they may use.
    pub control: Arc<dyn ControlPlane>,
    /// Hands tools a client for an agent's API.
    pub agents: Arc<dyn AgentProvider>,
    /// Public URL, hosts, origins, limits, dev options.
    pub config: McpConfig,
    /// Extra tools served in every toolset. Only test builds set this (the conformance
    /// suite's fixture tools); the shipped toolsets never need it.
    pub extension: Option<Arc<dyn ToolExtension>>,
    /// Counters for `/metrics`.
    pub stats: Arc<McpStats>,
    /// The OAuth authorization server, when this endpoint accepts its access tokens
    /// (beside static user tokens) and names it in its protected-resource metadata.
    pub oauth: Option<Arc<crate::services::oauth::OAuthServer>>,
}

/// What the endpoint has answered, for `/metrics`. Rejected requests (bad JSON, bad
/// headers, bad tokens, oversized bodies) show up here by status.
#[derive(Debug, Default)]
pub struct McpStats {
    responses: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
    tool_calls: std::sync::atomic::AtomicU64,
    tool_errors: std::sync::atomic::AtomicU64,
    /// Tool calls in flight and waiting, per user.
    slots: slots::UserSlots,
    /// Each user's share of large file reads in flight, across all its workspaces.
    tenants: crate::services::agent::tenant::TenantShares,
    /// Agent replies cut at the call's size limit, and calls that hit the time limit.
    agent_too_large: std::sync::atomic::AtomicU64,
    agent_timed_out: std::sync::atomic::AtomicU64,
}

impl McpStats {
    pub(crate) fn response(&self, status: u16) {
        let mut m = self.responses.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(status).or_default() += 1;
    }

    pub(crate) fn tool_call(&self, is_error: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.tool_calls.fetch_add(1, Relaxed);
        if is_error {
            self.tool_errors.fetch_add(1, Relaxed);
        }
    }

    /// Takes one of `user`'s `max` in-flight call slots, waiting up to `wait` for one
    /// (see `slots`), or counts a refusal.
    pub(crate) async fn enter(
        &self,
        user: &str,
        max: usize,
        wait: std::time::Duration,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<slots::CallSlot<'_>, slots::NoSlot> {
        self.slots.enter(user, max, wait, cancel).await
    }

    /// Counts a tool call that failed at a limit on the agent's reply (size or time).
    pub(crate) fn tool_failed(&self, e: &result::ToolError) {
        use std::sync::atomic::Ordering::Relaxed;
        match e.agent_limit() {
            Some(result::AgentLimit::Size) => self.agent_too_large.fetch_add(1, Relaxed),
            Some(result::AgentLimit::Time) => self.agent_timed_out.fetch_add(1, Relaxed),
            None => 0,
        };
    }

    /// Tool calls that failed because the agent's reply exceeded the call's size limit,
    /// and because it did not come within the time limit.
    pub fn agent_replies_limited(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.agent_too_large.load(Relaxed),
            self.agent_timed_out.load(Relaxed),
        )
    }

    /// Tool calls refused because their user had the maximum in flight (and as many
    /// waiting, or none finished within the wait).
    pub fn user_limited(&self) -> u64 {
        self.slots.refused()
    }

    /// Tool calls that waited for one of their user's slots.
    pub fn user_queued(&self) -> u64 {
        self.slots.queued()
    }

    /// `user`'s share of large file reads in flight (see `services::agent::tenant`).
    pub(crate) fn tenant_reads(
        &self,
        user: &str,
    ) -> Arc<crate::services::agent::tenant::TenantReads> {
        self.tenants.get(user)
    }

    /// File reads that waited for a place in their user's share of large reads.
    pub fn user_large_reads_queued(&self) -> u64 {
        self.tenants.queued()
    }

    /// Tool calls in flight, all users.
    pub fn in_flight(&self) -> usize {
        self.slots.running()
    }

    /// Tool calls waiting for a slot, all users.
    pub fn waiting(&self) -> usize {
        self.slots.waiting()
    }

    /// HTTP responses by status code.
    pub fn responses(&self) -> Vec<(u16, u64)> {
        let m = self.responses.lock().unwrap_or_else(|e| e.into_inner());
        m.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Tool calls answered, and how many of them were tool errors.
    pub fn tool_calls(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.tool_calls.load(Relaxed),
            self.tool_errors.load(Relaxed),
        )
    }
}

impl McpState {
    /// State with no extra tools.
    pub fn new(
        control: Arc<dyn ControlPlane>,
        agents: Arc<dyn AgentProvider>,
        config: McpConfig,
    ) -> Self {
        Self {
            control,
            agents,
            config,
            extension: None,
            stats: Arc::default(),
            oauth: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::McpStats;

    #[tokio::test]
    async fn in_flight_calls_are_capped_per_user() {
        let stats = McpStats::default();
        let none = tokio_util::sync::CancellationToken::new();
        let no_wait = std::time::Duration::ZERO;
        let a1 = stats.enter("alice", 2, no_wait, &none).await;
        let a2 = stats.enter("alice", 2, no_wait, &none).await;
        assert!(a1.is_ok() && a2.is_ok());
        assert!(
            stats.enter("alice", 2, no_wait, &none).await.is_err(),
            "third call refused"
        );
        assert!(
            stats.enter("bob", 2, no_wait, &none).await.is_ok(),
            "another user is not affected"
        );
        assert_eq!(stats.user_limited(), 1);
        assert_eq!(stats.in_flight(), 2);
        drop(a1);
        assert!(
            stats.enter("alice", 2, no_wait, &none).await.is_ok(),
            "a finished call frees its slot"
        );
        drop(a2);
        assert_eq!(stats.in_flight(), 0, "slots are given back");
    }

    #[test]
    fn limits_on_agent_replies_are_counted() {
        use super::result::ToolError;
        use crate::services::agent::client::AgentClientError;
        use std::time::Duration;
        let stats = McpStats::default();
        stats.tool_failed(&ToolError::Agent(AgentClientError::TooLarge));
        stats.tool_failed(&ToolError::AgentDown {
            cause: AgentClientError::Timeout,
            status: "online".into(),
        });
        stats.tool_failed(&ToolError::Timeout(Duration::from_secs(1)));
        stats.tool_failed(&ToolError::Invalid("no".into()));
        stats.tool_failed(&ToolError::Agent(AgentClientError::Decode("x".into())));
        assert_eq!(stats.agent_replies_limited(), (1, 2));
    }
}
