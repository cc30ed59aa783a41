//! The agent HTTP API's request and response bodies (JSON), shared by the server and the
//! typed client. Documented in `docs/protocol.md` ("Agent API"). Fields may be added;
//! existing names are the contract.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Base path of every endpoint.
pub const API_PREFIX: &str = "/api/v0";
/// Response header on `read-file`: the file's total size in bytes.
pub const HEADER_FILE_SIZE: &str = "x-agentwire-file-size";
/// Response header on `read-file`: the offset the returned bytes start at.
pub const HEADER_OFFSET: &str = "x-agentwire-offset";

/// Body of every non-2xx response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong, for a person.
    pub message: String,
    /// Extra detail (the OS error, the offending value), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `GET /api/v0/health` and `/api/v0/version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// "ok" when serving.
    pub status: String,
    /// agentwire version of the agent.
    pub version: String,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
    /// The agent host's name.
    #[serde(default)]
    pub hostname: String,
    /// Requests answered with a 4xx status since the agent started (bad input, refused
    /// paths, unknown endpoints).
    #[serde(default)]
    pub rejected_requests: u64,
    /// How the agent confines the commands it runs (absent from older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<CommandConfinement>,
    /// Commands started since the agent started, and how many of them in a shell started
    /// ahead of need (absent from older agents: 0).
    #[serde(default)]
    pub commands_started: u64,
    #[serde(default)]
    pub commands_started_warm: u64,
}

/// How an agent confines its commands, in `health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandConfinement {
    /// `off` (no root), `landlock`, `landlock-partial` (a kernel that cannot refuse every
    /// write outside the root), `unconfined` (the operator opted out) or `refused` (a root
    /// without a sandbox: commands are not run).
    pub mode: String,
    /// The same for a person, with what this kernel does not cover.
    pub detail: String,
}

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (not followed).
    Symlink,
    /// Anything else (socket, device, fifo).
    Other,
}

/// One entry of `ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// File name.
    pub name: String,
    /// Absolute path.
    pub path: String,
    /// Entry type.
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// Size in bytes (of the link itself for symlinks).
    pub size: u64,
    /// Unix permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// Where a symlink points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
}

/// `GET /api/v0/ls?path=ABS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LsResponse {
    /// The directory listed (as given, absolute).
    pub path: String,
    /// Entries sorted by name.
    pub entries: Vec<DirEntry>,
}

/// What `read-file` returned besides the bytes (from response headers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadFileMeta {
    /// The file's total size.
    pub size: u64,
    /// Offset the returned bytes start at.
    pub offset: u64,
    /// MIME type guessed from the name.
    pub mime_type: String,
}

/// `GET /api/v0/read-file-lines?path=&line_offset=&line_limit=&max_line_bytes=&max_response_bytes=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadLinesResponse {
    /// The file read.
    pub path: String,
    /// 0-based index of the first returned line.
    pub line_offset: u64,
    /// The lines, without line terminators.
    pub lines: Vec<String>,
    /// Lines shortened to `max_line_bytes`.
    pub truncated_lines: u64,
    /// Whether lines remain after the last one returned.
    pub more: bool,
    /// MIME type guessed from the name.
    pub mime_type: String,
    /// File size in bytes.
    pub size: u64,
}

/// `POST /api/v0/write-file?path=` (raw body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFileResponse {
    /// The file written.
    pub path: String,
    /// Bytes written.
    pub bytes_written: u64,
    /// Whether the file did not exist before.
    pub created: bool,
}

/// One search/replace edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    /// Exact text to find. Must match exactly once unless `replace_all`.
    pub search: String,
    /// Replacement text.
    pub replace: String,
    /// Replace every match (at least one is still required).
    #[serde(default)]
    pub replace_all: bool,
}

/// Edits to one file; all apply or none do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEdits {
    /// Absolute path.
    pub path: String,
    /// Applied in order, each to the result of the previous.
    pub edits: Vec<Edit>,
}

fn yes() -> bool {
    true
}

/// `POST /api/v0/edit-files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditFilesRequest {
    /// Files to edit.
    pub files: Vec<FileEdits>,
    /// Return a unified diff per file.
    #[serde(default = "yes")]
    pub include_diff: bool,
}

/// Result for one edited file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEditResult {
    /// The file.
    pub path: String,
    /// Matches replaced, over all its edits.
    pub replacements: u64,
    /// Unified diff of the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// Response of `edit-files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditFilesResponse {
    /// One result per file, in request order.
    pub files: Vec<FileEditResult>,
}

/// `POST /api/v0/processes/start`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartProcessRequest {
    /// Run with `sh -c`.
    pub command: String,
    /// Working directory (absolute); the agent's directory if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Return at once with the id instead of waiting.
    #[serde(default)]
    pub background: bool,
    /// Foreground only: kill the process group after this long (default 60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Background only: answer when the process exits or after this long, whichever comes
    /// first; a process still running then stays running. While the request waits, the
    /// process group is killed if the request is dropped (the caller does not know its id
    /// yet). This makes starting a short command and collecting its result one request.
    /// Agents that predate the field ignore it and answer at once, which a caller that
    /// polls `output` while `running` handles the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// A process's state and (for foreground starts and `output`) its output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessOutput {
    /// Process id (agent-assigned, not the pid).
    pub id: String,
    /// Absolute offset in the output stream where `output` starts.
    pub offset: u64,
    /// Offset to ask for next.
    pub next_offset: u64,
    /// stdout and stderr interleaved, as lossy UTF-8.
    pub output: String,
    /// Bytes between the requested offset and the oldest byte still kept (the per-process
    /// buffer is bounded).
    pub dropped_bytes: u64,
    /// Still running.
    pub running: bool,
    /// Exit code, once exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Terminating signal, once killed by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// A foreground start hit its timeout (the process group was killed).
    #[serde(default)]
    pub timed_out: bool,
}

/// One process in `processes/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Agent-assigned id.
    pub id: String,
    /// The command line.
    pub command: String,
    /// Working directory.
    pub workdir: String,
    /// OS pid while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Still running.
    pub running: bool,
    /// Exit code, once exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Terminating signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Start time, Unix milliseconds.
    pub started_at_ms: u64,
    /// Total output bytes produced so far.
    pub output_bytes: u64,
}

/// `GET /api/v0/processes/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessList {
    /// Known processes, newest first.
    pub processes: Vec<ProcessInfo>,
}

/// Signals the API can deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalName {
    /// SIGTERM.
    Terminate,
    /// SIGKILL.
    Kill,
    /// SIGINT.
    Interrupt,
}

/// `POST /api/v0/processes/{id}/signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalRequest {
    /// Which signal, sent to the process group.
    pub signal: SignalName,
}

/// Response of `signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalResponse {
    /// The process.
    pub id: String,
    /// Whether the process was still running to receive it.
    pub delivered: bool,
}

/// One listening TCP port on the agent host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListeningPort {
    /// Port number.
    pub port: u16,
    /// "tcp" or "tcp6".
    pub network: String,
    /// Local address listened on.
    pub address: String,
}

/// `GET /api/v0/listening-ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListeningPorts {
    /// Ports, sorted, without duplicates across families.
    pub ports: Vec<ListeningPort>,
}
