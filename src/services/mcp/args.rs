//! Tool arguments: their JSON shapes (which are the public interface: names must not
//! change) and the checks applied before anything is sent to an agent.

use super::config::McpLimits;
use super::result::ToolError;
use crate::services::agent::types::SignalName;
use base64::Engine as _;
use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Decodes a tool's arguments, naming the tool and the offending field on failure.
pub(crate) fn parse<T: DeserializeOwned>(tool: &str, args: JsonObject) -> Result<T, ToolError> {
    serde_json::from_value(serde_json::Value::Object(args)).map_err(|e| {
        ToolError::InvalidArguments {
            tool: tool.to_string(),
            reason: e.to_string(),
        }
    })
}

/// `list_workspaces`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListWorkspacesArgs {
    /// Only workspaces owned by this user (default: every workspace you may use).
    #[serde(default)]
    pub owner: Option<String>,
}

/// Tools that take only a workspace.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkspaceArgs {
    /// Workspace as `[owner/]name[.agent]`; no owner means your own.
    pub workspace: String,
}

/// `workspace_bash`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BashArgs {
    /// Workspace as `[owner/]name[.agent]`.
    pub workspace: String,
    /// Shell command, run with `sh -c` in the agent's working directory.
    pub command: String,
    /// Kill the command after this many milliseconds (default 60000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Start it and return its process id at once instead of waiting.
    #[serde(default)]
    pub background: Option<bool>,
}

/// `workspace_process_output`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProcessArgs {
    /// Workspace as `[owner/]name[.agent]`.
    pub workspace: String,
    /// Process id from `workspace_bash` (background) or `workspace_process_list`.
    pub process_id: String,
}

/// Signals a caller may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SignalArg {
    /// SIGTERM.
    Terminate,
    /// SIGKILL.
    Kill,
    /// SIGINT.
    Interrupt,
}

impl From<SignalArg> for SignalName {
    fn from(s: SignalArg) -> Self {
        match s {
            SignalArg::Terminate => Self::Terminate,
            SignalArg::Kill => Self::Kill,
            SignalArg::Interrupt => Self::Interrupt,
        }
    }
}

/// `workspace_process_signal`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignalArgs {
    /// Workspace as `[owner/]name[.agent]`.
    pub workspace: String,
    /// Process id.
    pub process_id: String,
    /// `terminate`, `kill` or `interrupt`; sent to the process group.
    pub signal: SignalArg,
}

/// `workspace_ls`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PathArgs {
    /// Workspace as `[owner/]name[.agent]`.
    pub workspace: String,
    /// Absolute path.
    pub path: String,
}

/// `workspace_read_file`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadFileArgs {
    /// Workspace as `[owner/]name[.agent]`.
    pub workspace: String,
    /// Absolute path of a file.
    pub path: String,
    /// Byte offset to start at (default 0).
    #[serde(default)]
    pub offset: Option<u64>,
    /// Most bytes to return (default 262144, at most 1048576).
    #[serde(default)]
    pub limit: Option<u64>,
}

/// `workspace_read_file_lines`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadLinesArgs {
    /// Workspace as `[owner/]name[.agent]`.
    pub workspace: String,
    /// Absolute path of a text file.
    pub path: String,
    /// 0-based index of the first line (default 0).
    #[serde(default)]
    pub line_offset: Option<u64>,
    /// Most lines to return (default 500, at most 5000).
    #[serde(default)]
    pub line_limit: Option<u64>,
}

/// `workspace_write_file`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WriteFileArgs {
    /// Workspace as `[owner/]name[.agent]`.
    pub workspace: String,
    /// Absolute path; missing parent directories are created.
    pub path: String,
    /// The new content as text. Give this or `content_base64`.
    #[serde(default)]
    pub content: Option<String>,
    /// The new content as base64, for binary files.
    #[serde(default)]
    pub content_base64: Option<String>,
}

/// One search/replace edit.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditArg {
    /// Exact text to find; must occur exactly once unless `replace_all`.
    pub search: String,
    /// Replacement text.
    pub replace: String,
    /// Replace every occurrence (at least one must exist).
    #[serde(default)]
    pub replace_all: Option<bool>,
}

/// Edits to one file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileEditsArg {
    /// Absolute path.
    pub path: String,
    /// Applied in order; all or none.
    pub edits: Vec<EditArg>,
}

/// `workspace_edit_files`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditFilesArgs {
    /// Workspace as `[owner/]name[.agent]`.
    pub workspace: String,
    /// Files to edit.
    pub files: Vec<FileEditsArg>,
}

/// `search` (chatgpt toolset).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchArgs {
    /// Words to look for in workspace names, file paths and file contents.
    pub query: String,
}

/// `fetch` (chatgpt toolset).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FetchArgs {
    /// An id from `search`: `workspace:<id>` or `file:<workspace id>:<path>`.
    pub id: String,
}

/// Checks a path argument: absolute, bounded, no NUL. The agent confines it further.
pub(crate) fn check_path(path: &str, limits: &McpLimits) -> Result<(), ToolError> {
    let invalid = |reason: &str| ToolError::Invalid(format!("path {}: {reason}", preview(path)));
    if path.len() > limits.max_path_bytes {
        return Err(invalid(&format!(
            "longer than {} bytes",
            limits.max_path_bytes
        )));
    }
    if path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    if !path.starts_with('/') {
        return Err(invalid("must be absolute (start with /)"));
    }
    Ok(())
}

/// The `workspace_bash` timeout to use.
pub(crate) fn bash_timeout_ms(asked: Option<u64>, limits: &McpLimits) -> Result<u64, ToolError> {
    match asked {
        None => Ok(limits.bash_default_timeout_ms),
        Some(0) => Err(ToolError::Invalid("timeout_ms must be positive".into())),
        Some(t) if t > limits.bash_max_timeout_ms => Err(ToolError::Invalid(format!(
            "timeout_ms {t} exceeds the maximum of {}",
            limits.bash_max_timeout_ms
        ))),
        Some(t) => Ok(t),
    }
}

/// Checks a command: non-empty, bounded, no NUL.
pub(crate) fn check_command(command: &str, limits: &McpLimits) -> Result<(), ToolError> {
    if command.trim().is_empty() {
        return Err(ToolError::Invalid("command is empty".into()));
    }
    if command.len() > limits.max_command_bytes {
        return Err(ToolError::Invalid(format!(
            "command is longer than {} bytes",
            limits.max_command_bytes
        )));
    }
    if command.contains('\0') {
        return Err(ToolError::Invalid("command contains a NUL byte".into()));
    }
    Ok(())
}

/// Checks a process id: the agent's ids are short tokens; anything else is refused before
/// it reaches a URL path.
pub(crate) fn check_process_id(id: &str) -> Result<(), ToolError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ToolError::Invalid(format!(
            "process_id {} is not a process id (letters, digits, - and _)",
            preview(id)
        )))
    }
}

/// The bytes to write: exactly one of `content` and `content_base64`, within the limit.
pub(crate) fn write_content(
    args: &WriteFileArgs,
    limits: &McpLimits,
) -> Result<bytes::Bytes, ToolError> {
    let data = match (&args.content, &args.content_base64) {
        (Some(t), None) => bytes::Bytes::from(t.clone().into_bytes()),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map(bytes::Bytes::from)
            .map_err(|e| ToolError::Invalid(format!("content_base64 is not valid base64: {e}")))?,
        (Some(_), Some(_)) => {
            return Err(ToolError::Invalid(
                "give either content or content_base64, not both".into(),
            ));
        }
        (None, None) => {
            return Err(ToolError::Invalid(
                "give content (text) or content_base64 (binary)".into(),
            ));
        }
    };
    if data.len() > limits.write_max_bytes {
        return Err(ToolError::Invalid(format!(
            "content is {} bytes; the limit is {}",
            data.len(),
            limits.write_max_bytes
        )));
    }
    Ok(data)
}

/// Checks `workspace_edit_files` arguments before anything is sent.
pub(crate) fn check_edits(args: &EditFilesArgs, limits: &McpLimits) -> Result<(), ToolError> {
    if args.files.is_empty() {
        return Err(ToolError::Invalid("files is empty".into()));
    }
    if args.files.len() > limits.edit_max_files {
        return Err(ToolError::Invalid(format!(
            "{} files; at most {} per call",
            args.files.len(),
            limits.edit_max_files
        )));
    }
    for f in &args.files {
        check_path(&f.path, limits)?;
        if f.edits.is_empty() {
            return Err(ToolError::Invalid(format!("no edits for {}", f.path)));
        }
        if let Some(i) = f.edits.iter().position(|e| e.search.is_empty()) {
            return Err(ToolError::Invalid(format!(
                "edit {i} for {}: search is empty",
                f.path
            )));
        }
    }
    Ok(())
}

/// A short, quoted rendering of caller input for error messages.
pub(crate) fn preview(s: &str) -> String {
    let short: String = s.chars().take(120).collect();
    if short.len() < s.len() {
        format!("{short:?}…")
    } else {
        format!("{short:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: serde_json::Value) -> JsonObject {
        match v {
            serde_json::Value::Object(o) => o,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn parse_reports_tool_and_field() {
        let e = parse::<BashArgs>("workspace_bash", obj(json!({"workspace": "w"}))).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("workspace_bash") && m.contains("command"), "{m}");
        let e = parse::<BashArgs>(
            "workspace_bash",
            obj(json!({"workspace": "w", "command": 5})),
        )
        .unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
        let e = parse::<WorkspaceArgs>("get_workspace", obj(json!({"workspace": "w", "x": 1})))
            .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let a: BashArgs = parse(
            "workspace_bash",
            obj(json!({"workspace": "w", "command": "ls", "timeout_ms": 5, "background": true})),
        )
        .unwrap();
        assert_eq!((a.timeout_ms, a.background), (Some(5), Some(true)));
        let e = parse::<SignalArgs>(
            "workspace_process_signal",
            obj(json!({"workspace": "w", "process_id": "p", "signal": "hup"})),
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
    }

    #[test]
    fn paths() {
        let l = McpLimits::default();
        assert!(check_path("/a/b", &l).is_ok());
        for bad in ["", "a/b", "./x", "/a\0b"] {
            assert!(check_path(bad, &l).is_err(), "{bad:?}");
        }
        let long = format!("/{}", "a".repeat(l.max_path_bytes));
        assert!(check_path(&long, &l).is_err());
    }

    #[test]
    fn timeouts_commands_and_ids() {
        let l = McpLimits::default();
        assert_eq!(
            bash_timeout_ms(None, &l).unwrap(),
            l.bash_default_timeout_ms
        );
        assert_eq!(bash_timeout_ms(Some(10), &l).unwrap(), 10);
        assert!(bash_timeout_ms(Some(0), &l).is_err());
        assert!(bash_timeout_ms(Some(l.bash_max_timeout_ms + 1), &l).is_err());
        assert!(check_command("echo hi", &l).is_ok());
        assert!(check_command("  ", &l).is_err());
        assert!(check_command(&"x".repeat(l.max_command_bytes + 1), &l).is_err());
        assert!(check_process_id("p-1_a").is_ok());
        for bad in ["", "../x", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_process_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn write_content_forms() {
        let l = McpLimits::default();
        let args = |c: Option<&str>, b: Option<&str>| WriteFileArgs {
            workspace: "w".into(),
            path: "/f".into(),
            content: c.map(Into::into),
            content_base64: b.map(Into::into),
        };
        assert_eq!(
            &write_content(&args(Some("hi"), None), &l).unwrap()[..],
            b"hi"
        );
        assert_eq!(
            &write_content(&args(None, Some("AAEC")), &l).unwrap()[..],
            &[0, 1, 2]
        );
        assert!(write_content(&args(None, None), &l).is_err());
        assert!(write_content(&args(Some("a"), Some("AA==")), &l).is_err());
        assert!(write_content(&args(None, Some("!!")), &l).is_err());
        let small = McpLimits {
            write_max_bytes: 1,
            ..McpLimits::default()
        };
        assert!(write_content(&args(Some("ab"), None), &small).is_err());
    }

    #[test]
    fn edits() {
        let l = McpLimits::default();
        let ok: EditFilesArgs = serde_json::from_value(json!({
            "workspace": "w",
            "files": [{"path": "/f", "edits": [{"search": "a", "replace": "b"}]}]
        }))
        .unwrap();
        assert!(check_edits(&ok, &l).is_ok());
        for bad in [
            json!({"workspace": "w", "files": []}),
            json!({"workspace": "w", "files": [{"path": "rel", "edits": [{"search": "a", "replace": "b"}]}]}),
            json!({"workspace": "w", "files": [{"path": "/f", "edits": []}]}),
            json!({"workspace": "w", "files": [{"path": "/f", "edits": [{"search": "", "replace": "b"}]}]}),
        ] {
            let a: EditFilesArgs = serde_json::from_value(bad.clone()).unwrap();
            assert!(check_edits(&a, &l).is_err(), "{bad}");
        }
    }
}
