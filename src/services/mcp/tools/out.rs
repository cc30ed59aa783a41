//! Tool results' JSON shapes (each tool's `outputSchema` is generated from these).

use crate::services::agent::types;
use crate::services::control::Workspace;
use crate::services::mcp::AgentStatus;
use crate::wire::addr::NodeId;
use schemars::JsonSchema;
use serde::Serialize;
use std::collections::HashMap;

/// An agent of a workspace.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct AgentOut {
    /// The agent's node id.
    pub id: String,
    /// Its name, for `owner/workspace.agent`.
    pub name: String,
    /// Its tailnet address.
    pub tailnet_address: String,
    /// Whether it is connected, since when, and the tunnel's path to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<AgentStatus>,
}

/// A workspace.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct WorkspaceOut {
    /// Stable id.
    pub id: String,
    /// Owning user.
    pub owner: String,
    /// Name, unique per owner.
    pub name: String,
    /// `owner/name`, usable as the `workspace` argument.
    pub full_name: String,
    /// Other users who may use it.
    pub shared_with: Vec<String>,
    /// Its agents.
    pub agents: Vec<AgentOut>,
}

impl From<&Workspace> for WorkspaceOut {
    fn from(w: &Workspace) -> Self {
        Self {
            id: w.id.to_string(),
            owner: w.owner.clone(),
            name: w.name.clone(),
            full_name: w.full_name(),
            shared_with: w.shared_with.clone(),
            agents: w
                .agents
                .iter()
                .map(|a| AgentOut {
                    id: a.id.to_string(),
                    name: a.name.clone(),
                    tailnet_address: a.id.tailnet_addr().to_string(),
                    status: None,
                })
                .collect(),
        }
    }
}

impl WorkspaceOut {
    /// Fills in each agent's status from `known`.
    pub(crate) fn with_status(mut self, known: &HashMap<NodeId, AgentStatus>) -> Self {
        for a in &mut self.agents {
            a.status =
                a.id.parse::<NodeId>()
                    .ok()
                    .and_then(|id| known.get(&id).cloned());
        }
        self
    }
}

/// `list_workspaces`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct WorkspaceList {
    /// Workspaces you may use, by owner then name.
    pub workspaces: Vec<WorkspaceOut>,
}

/// `get_workspace`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct WorkspaceDetail {
    /// The workspace.
    pub workspace: WorkspaceOut,
    /// The agent the spec selects (the only one, or the one named).
    pub agent: AgentOut,
}

/// `workspace_bash`.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub(crate) struct BashOut {
    /// stdout and stderr interleaved (the tail, if longer than the limit).
    pub output: String,
    /// Exit code, once it exited normally.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// It ran past `timeout_ms` and was killed.
    pub timed_out: bool,
    /// Still running (background starts).
    pub running: bool,
    /// Its process id, for `workspace_process_*`, when started in the background.
    pub process_id: Option<String>,
    /// Output bytes left out (from the front), beyond what is returned.
    pub truncated_bytes: u64,
    /// How long it ran, in milliseconds (as far as this call saw).
    pub duration_ms: u64,
}

/// One process in `workspace_process_list`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ProcessOut {
    /// Process id.
    pub process_id: String,
    /// The command line.
    pub command: String,
    /// Working directory.
    pub workdir: String,
    /// OS pid while running.
    pub pid: Option<u32>,
    /// Still running.
    pub running: bool,
    /// Exit code, once exited normally.
    pub exit_code: Option<i32>,
    /// Terminating signal.
    pub signal: Option<i32>,
    /// Start time, Unix milliseconds.
    pub started_at_ms: u64,
    /// Output bytes produced so far.
    pub output_bytes: u64,
}

impl From<types::ProcessInfo> for ProcessOut {
    fn from(p: types::ProcessInfo) -> Self {
        Self {
            process_id: p.id,
            command: p.command,
            workdir: p.workdir,
            pid: p.pid,
            running: p.running,
            exit_code: p.exit_code,
            signal: p.signal,
            started_at_ms: p.started_at_ms,
            output_bytes: p.output_bytes,
        }
    }
}

/// `workspace_process_list`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ProcessListOut {
    /// Known processes, newest first.
    pub processes: Vec<ProcessOut>,
}

/// `workspace_process_output`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ProcessOutputOut {
    /// Process id.
    pub process_id: String,
    /// Output kept by the agent (the tail, if longer than the limit).
    pub output: String,
    /// Still running.
    pub running: bool,
    /// Exit code, once exited normally.
    pub exit_code: Option<i32>,
    /// Terminating signal.
    pub signal: Option<i32>,
    /// A foreground start hit its timeout.
    pub timed_out: bool,
    /// Output bytes left out: dropped by the agent's bounded buffer or beyond the limit.
    pub truncated_bytes: u64,
}

/// `workspace_process_signal`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct SignalOut {
    /// Process id.
    pub process_id: String,
    /// The signal sent.
    pub signal: String,
    /// Whether it was still running to receive it.
    pub delivered: bool,
}

/// One directory entry.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct EntryOut {
    /// File name.
    pub name: String,
    /// Absolute path.
    pub path: String,
    /// `file`, `dir`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (octal digits as a string, e.g. "644").
    pub mode: String,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// Where a symlink points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
}

impl From<types::DirEntry> for EntryOut {
    fn from(e: types::DirEntry) -> Self {
        let kind = match e.kind {
            types::EntryKind::File => "file",
            types::EntryKind::Dir => "dir",
            types::EntryKind::Symlink => "symlink",
            types::EntryKind::Other => "other",
        };
        Self {
            name: e.name,
            path: e.path,
            kind: kind.into(),
            size: e.size,
            mode: format!("{:o}", e.mode),
            mtime: e.mtime,
            symlink_target: e.symlink_target,
        }
    }
}

/// `workspace_ls`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct LsOut {
    /// The directory listed.
    pub path: String,
    /// Entries sorted by name.
    pub entries: Vec<EntryOut>,
}

/// `workspace_read_file`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ReadFileOut {
    /// The file.
    pub path: String,
    /// Total size in bytes.
    pub size: u64,
    /// MIME type guessed from the name.
    pub mime_type: String,
    /// Offset the returned bytes start at.
    pub offset: u64,
    /// Bytes returned.
    pub bytes_read: u64,
    /// Offset to ask for next; equal to `size` at the end.
    pub next_offset: u64,
    /// Content as text, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Content as base64, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
}

/// `workspace_read_file_lines`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ReadLinesOut {
    /// The file.
    pub path: String,
    /// Index of the first returned line.
    pub line_offset: u64,
    /// The lines, without terminators.
    pub lines: Vec<String>,
    /// Lines that were shortened because they were too long.
    pub truncated_lines: u64,
    /// More lines follow.
    pub more: bool,
    /// MIME type guessed from the name.
    pub mime_type: String,
    /// File size in bytes.
    pub size: u64,
}

impl From<types::ReadLinesResponse> for ReadLinesOut {
    fn from(r: types::ReadLinesResponse) -> Self {
        Self {
            path: r.path,
            line_offset: r.line_offset,
            lines: r.lines,
            truncated_lines: r.truncated_lines,
            more: r.more,
            mime_type: r.mime_type,
            size: r.size,
        }
    }
}

/// `workspace_write_file`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct WriteFileOut {
    /// The file written.
    pub path: String,
    /// Bytes written.
    pub bytes_written: u64,
    /// It did not exist before.
    pub created: bool,
}

/// One edited file.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct EditedFileOut {
    /// The file.
    pub path: String,
    /// Matches replaced.
    pub replacements: u64,
    /// Unified diff of the change.
    pub diff: String,
}

/// `workspace_edit_files`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct EditFilesOut {
    /// One entry per file, in request order.
    pub files: Vec<EditedFileOut>,
}

/// One listening port.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct PortOut {
    /// Port number.
    pub port: u16,
    /// `tcp` or `tcp6`.
    pub network: String,
    /// Local address listened on.
    pub address: String,
}

/// `workspace_listening_ports`.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct PortsOut {
    /// Listening TCP ports on the workspace host.
    pub ports: Vec<PortOut>,
}
