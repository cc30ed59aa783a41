//! `agentwire mcp configure CLIENT`: adds `agentwire mcp` to an MCP client's own
//! configuration file, keeping everything else in it, with a backup of what was there.

use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

/// The MCP clients whose configuration we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum McpClient {
    /// Claude Code (user scope, `~/.claude.json`).
    ClaudeCode,
    /// Claude Desktop (`claude_desktop_config.json`).
    ClaudeDesktop,
    /// Cursor (`~/.cursor/mcp.json`).
    Cursor,
    /// Visual Studio Code (user `mcp.json`).
    Vscode,
}

/// The server entry's name in every client's configuration.
pub const ENTRY: &str = "agentwire";

/// Errors configuring a client.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    /// No home directory to find the client's file in.
    #[error("no home directory (HOME or APPDATA) to find the client's configuration in")]
    NoHome,
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a JSON object, so it cannot be edited safely.
    #[error("{path} is not a JSON object ({reason}); fix it or use --print and edit by hand")]
    NotAnObject {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn app_data() -> Option<PathBuf> {
    std::env::var_os("APPDATA")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

impl McpClient {
    /// Where the client keeps its MCP servers on this platform.
    ///
    /// # Errors
    /// [`ConfigureError::NoHome`].
    pub fn config_path(self) -> Result<PathBuf, ConfigureError> {
        let home = home();
        let p = match self {
            Self::ClaudeCode => home.map(|h| h.join(".claude.json")),
            Self::Cursor => home.map(|h| h.join(".cursor").join("mcp.json")),
            Self::ClaudeDesktop => {
                if cfg!(windows) {
                    app_data().map(|a| a.join("Claude").join("claude_desktop_config.json"))
                } else if cfg!(target_os = "macos") {
                    home.map(|h| {
                        h.join("Library/Application Support/Claude/claude_desktop_config.json")
                    })
                } else {
                    home.map(|h| h.join(".config/Claude/claude_desktop_config.json"))
                }
            }
            Self::Vscode => {
                if cfg!(windows) {
                    app_data().map(|a| a.join("Code").join("User").join("mcp.json"))
                } else if cfg!(target_os = "macos") {
                    home.map(|h| h.join("Library/Application Support/Code/User/mcp.json"))
                } else {
                    home.map(|h| h.join(".config/Code/User/mcp.json"))
                }
            }
        };
        p.ok_or(ConfigureError::NoHome)
    }

    /// The key the servers live under.
    fn servers_key(self) -> &'static str {
        match self {
            Self::Vscode => "servers",
            _ => "mcpServers",
        }
    }

    /// The server entry running `command args…` over stdio.
    pub fn entry(self, command: &str, args: &[String]) -> Value {
        match self {
            Self::ClaudeDesktop => json!({ "command": command, "args": args }),
            _ => json!({ "type": "stdio", "command": command, "args": args }),
        }
    }

    /// The snippet to paste by hand (`--print`).
    pub fn snippet(self, command: &str, args: &[String]) -> Value {
        json!({ self.servers_key(): { ENTRY: self.entry(command, args) } })
    }

    /// `existing` (the file's text, if any) with our entry set, everything else kept.
    ///
    /// # Errors
    /// The text is not a JSON object (or its servers key is not one).
    pub fn merge(
        self,
        existing: Option<&str>,
        command: &str,
        args: &[String],
    ) -> Result<Value, String> {
        let mut root = match existing.map(str::trim) {
            None | Some("") => Map::new(),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(m)) => m,
                Ok(_) => return Err("the top level is not an object".into()),
                Err(e) => return Err(e.to_string()),
            },
        };
        let servers = root
            .entry(self.servers_key())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(servers) = servers else {
            return Err(format!("{:?} is not an object", self.servers_key()));
        };
        servers.insert(ENTRY.into(), self.entry(command, args));
        Ok(Value::Object(root))
    }
}

/// Writes our entry into `path`, backing the old file up beside it first
/// (`FILE.agentwire-backup`). Returns the backup's path, if there was a file.
///
/// # Errors
/// [`ConfigureError`].
pub fn write(
    client: McpClient,
    path: &Path,
    command: &str,
    args: &[String],
) -> Result<Option<PathBuf>, ConfigureError> {
    let io = |source| ConfigureError::Io {
        path: path.to_path_buf(),
        source,
    };
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(e)),
    };
    let merged = client
        .merge(existing.as_deref(), command, args)
        .map_err(|reason| ConfigureError::NotAnObject {
            path: path.to_path_buf(),
            reason,
        })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let backup = match &existing {
        Some(old) => {
            let mut name = path.as_os_str().to_owned();
            name.push(".agentwire-backup");
            let b = PathBuf::from(name);
            std::fs::write(&b, old).map_err(io)?;
            Some(b)
        }
        None => None,
    };
    let text = serde_json::to_string_pretty(&merged).unwrap_or_default() + "\n";
    let tmp = path.with_extension("agentwire-tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(io)?;
    Ok(backup)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> Vec<String> {
        vec!["mcp".into()]
    }

    #[test]
    fn merge_keeps_other_servers_and_settings() {
        let old = r#"{"theme": "dark", "mcpServers": {"other": {"command": "x"}}}"#;
        let v = McpClient::Cursor
            .merge(Some(old), "/usr/bin/agentwire", &args())
            .expect("merge");
        assert_eq!(v["theme"], "dark");
        assert_eq!(v["mcpServers"]["other"]["command"], "x");
        assert_eq!(
            v["mcpServers"]["agentwire"]["command"],
            "/usr/bin/agentwire"
        );
        assert_eq!(v["mcpServers"]["agentwire"]["type"], "stdio");
        let v = McpClient::Vscode.merge(None, "aw", &args()).expect("new");
        assert_eq!(v["servers"]["agentwire"]["args"][0], "mcp");
        let v = McpClient::ClaudeDesktop
            .merge(Some(" "), "aw", &args())
            .expect("blank");
        assert!(v["mcpServers"]["agentwire"].get("type").is_none());
    }

    #[test]
    fn broken_files_are_refused_not_overwritten() {
        assert!(
            McpClient::Cursor
                .merge(Some("[1,2]"), "aw", &args())
                .is_err()
        );
        assert!(
            McpClient::Cursor
                .merge(Some("{oops"), "aw", &args())
                .is_err()
        );
        assert!(
            McpClient::Cursor
                .merge(Some(r#"{"mcpServers": 3}"#), "aw", &args())
                .is_err()
        );
    }

    #[test]
    fn write_backs_up_and_replaces() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("cfg").join("mcp.json");
        assert_eq!(
            write(McpClient::Cursor, &path, "aw", &args()).expect("new"),
            None
        );
        std::fs::write(&path, r#"{"mcpServers": {"x": {}}}"#).expect("seed");
        let backup = write(McpClient::Cursor, &path, "aw", &args())
            .expect("again")
            .expect("backup");
        assert_eq!(
            std::fs::read_to_string(&backup).expect("backup"),
            r#"{"mcpServers": {"x": {}}}"#
        );
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert!(v["mcpServers"]["x"].is_object() && v["mcpServers"]["agentwire"].is_object());
        std::fs::write(&path, "not json").expect("break");
        assert!(matches!(
            write(McpClient::Cursor, &path, "aw", &args()),
            Err(ConfigureError::NotAnObject { .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).expect("kept"), "not json");
    }
}
