//! What the control plane is told about each tool call (the audit log), and the counters
//! it can add to `/metrics`.

use crate::wire::addr::NodeId;
use std::time::{Duration, SystemTime};

/// How a tool call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolOutcome {
    /// The tool ran and returned a result.
    Ok,
    /// The tool ran and reported an error (`isError: true`).
    Error,
    /// Refused before running (the caller's in-flight limit).
    Refused,
    /// Not a call the toolset can run (unknown tool, arguments of the wrong shape).
    Invalid,
    /// The caller went away or cancelled before the result.
    Cancelled,
}

impl ToolOutcome {
    /// The name stored in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Refused => "refused",
            Self::Invalid => "invalid",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One MCP tool call, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallRecord {
    /// When the call started.
    pub at: SystemTime,
    /// The calling user.
    pub user: String,
    /// `owner/name` of the workspace the call resolved, if it reached one.
    pub workspace: Option<String>,
    /// The agent's name in that workspace.
    pub agent: Option<String>,
    /// The agent's node id.
    pub agent_id: Option<NodeId>,
    /// The tool's name (truncated to 128 characters).
    pub tool: String,
    /// Size of the call's arguments, as JSON.
    pub args_bytes: u64,
    /// Size of the result, as JSON (0 when there was none).
    pub result_bytes: u64,
    /// How it ended.
    pub outcome: ToolOutcome,
    /// A short error message for failed calls (at most 200 characters).
    pub detail: Option<String>,
    /// How long the call took.
    pub duration: Duration,
}

/// One metric family for `/metrics` (Prometheus text format).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricFamily {
    /// `agentwire_…`.
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// Label sets (`reason="queue_full"`, or empty) and values.
    pub samples: Vec<(String, f64)>,
}
