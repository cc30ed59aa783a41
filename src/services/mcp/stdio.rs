//! The MCP front end over standard input and output: one session for the whole life of
//! the process (`agentwire mcp`, spawned by an MCP client on a person's machine). The
//! tools and toolsets are the same as the HTTP endpoint's; the caller is fixed (the
//! logged-in user), so there is no token to check per request.

use super::McpState;
use super::front::{Front, Toolset};
use crate::services::control::User;
use rmcp::ServiceExt as _;

/// Errors serving over stdio.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    /// `--toolset` named no toolset.
    #[error("unknown toolset {0:?}: use standard or chatgpt")]
    Toolset(String),
    /// The session could not start (the client sent no valid `initialize`).
    #[error("the MCP session did not start: {0}")]
    Start(String),
    /// The session ended with an error.
    #[error("the MCP session failed: {0}")]
    Session(String),
}

/// Serves MCP on stdin/stdout until the client closes stdin or `shutdown` resolves.
/// Nothing else may write to stdout meanwhile: every byte there is read as MCP.
///
/// # Errors
/// [`StdioError`].
pub async fn serve_stdio(
    state: McpState,
    user: User,
    toolset: Option<&str>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), StdioError> {
    let toolset = Toolset::parse(toolset).map_err(StdioError::Toolset)?;
    let front = Front::new(state, user, toolset, None);
    let running = front
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| StdioError::Start(e.to_string()))?;
    let cancel = running.cancellation_token();
    tokio::select! {
        r = running.waiting() => {
            r.map_err(|e| StdioError::Session(e.to_string()))?;
        }
        () = shutdown => cancel.cancel(),
    }
    Ok(())
}
