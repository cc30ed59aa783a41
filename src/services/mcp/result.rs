//! Tool results: successes carry structured content plus the same JSON as text; failures
//! are `isError` results whose one text block says what went wrong and what to do.

use super::provider::ProviderError;
use crate::services::agent::client::AgentClientError;
use crate::services::control::{ControlError, ResolveError};
use rmcp::model::{CallToolResult, ContentBlock};
use serde::Serialize;
use std::time::Duration;
use thiserror::Error;

/// Why a tool call failed. Every variant becomes an `isError` tool result, never a
/// JSON-RPC error: the model reads the message and can correct itself.
#[derive(Debug, Error)]
pub(crate) enum ToolError {
    /// The arguments do not match the tool's input schema.
    #[error("invalid arguments for {tool}: {reason}")]
    InvalidArguments {
        /// The tool.
        tool: String,
        /// serde's description (names the field).
        reason: String,
    },
    /// An argument has the right type but an unusable value.
    #[error("{0}")]
    Invalid(String),
    /// The workspace spec did not resolve (or the caller may not use it).
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The control plane is unavailable.
    #[error("{0}; try again later")]
    Control(#[from] ControlError),
    /// No connection to the agent.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The agent answered with an error or the exchange failed.
    #[error("agent request failed: {0}")]
    Agent(#[from] AgentClientError),
    /// The exchange with the agent broke; `status` is what is known about the agent now.
    #[error("agent request failed: {cause} (agent {status})")]
    AgentDown {
        /// What broke.
        cause: AgentClientError,
        /// The agent's status, as for `get_workspace`.
        status: String,
    },
    /// The agent did not answer in time.
    #[error("the agent did not answer within {0:?}; try again")]
    Timeout(Duration),
    /// Something the caller named does not exist (or is not theirs).
    #[error("{0}")]
    NotFound(String),
}

/// A limit the server puts on an agent's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AgentLimit {
    /// The reply was longer than the call allows, or did not say how long it was.
    Size,
    /// The reply did not come in time.
    Time,
}

impl ToolError {
    /// Which limit on the agent's reply this failure is, if any.
    pub(crate) fn agent_limit(&self) -> Option<AgentLimit> {
        match self {
            Self::Agent(c) | Self::AgentDown { cause: c, .. } => match c {
                AgentClientError::TooLarge | AgentClientError::Unannounced => {
                    Some(AgentLimit::Size)
                }
                AgentClientError::Timeout => Some(AgentLimit::Time),
                _ => None,
            },
            Self::Timeout(_) => Some(AgentLimit::Time),
            _ => None,
        }
    }

    /// The `isError` result for this failure.
    pub(crate) fn into_result(self) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text(self.to_string())])
    }
}

/// A successful result: `value` as structured content and as a JSON text block.
///
/// The text is written from `value` itself rather than from its `Value` (as
/// `CallToolResult::structured` does through `Display`, a `fmt` adapter that checks every
/// fragment as UTF-8 and grows the string from empty): a file read carries its content
/// in both, so this is the larger part of encoding the result.
pub(crate) fn structured<T: Serialize>(value: &T) -> CallToolResult {
    match serde_json::to_string(value).and_then(|t| Ok((t, serde_json::to_value(value)?))) {
        Ok((text, v)) => {
            let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
            r.structured_content = Some(v);
            r
        }
        // Our output types always serialise; keep serving if one somehow does not.
        Err(e) => CallToolResult::error(vec![ContentBlock::text(format!(
            "internal error encoding the result: {e}"
        ))]),
    }
}

/// A result for ChatGPT's `search`/`fetch`: exactly one text block holding the JSON.
pub(crate) fn json_text<T: Serialize>(value: &T) -> CallToolResult {
    match serde_json::to_string(value) {
        Ok(s) => CallToolResult::success(vec![ContentBlock::text(s)]),
        Err(e) => CallToolResult::error(vec![ContentBlock::text(format!(
            "internal error encoding the result: {e}"
        ))]),
    }
}

/// Runs `f` within `timeout`, mapping expiry to [`ToolError::Timeout`].
pub(crate) async fn within<T, E>(
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ToolError>
where
    ToolError: From<E>,
{
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r.map_err(ToolError::from),
        Err(_) => Err(ToolError::Timeout(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Out {
        zeta: &'static str,
        alpha: u64,
        content: Option<String>,
        nested: Vec<(u8, bool)>,
    }

    /// The text block is the structured content, encoded: a client that reads either
    /// gets the same object.
    #[test]
    fn the_text_block_is_the_structured_content() {
        let out = Out {
            zeta: "a \"quoted\" line\nand \u{1F600} and \\",
            alpha: u64::MAX,
            content: None,
            nested: vec![(1, true), (2, false)],
        };
        let r = structured(&out);
        assert_eq!(r.is_error, Some(false));
        let [block] = r.content.as_slice() else {
            panic!("one block")
        };
        let text = &block.as_text().expect("text").text;
        let parsed: serde_json::Value = serde_json::from_str(text).expect("json");
        assert_eq!(Some(&parsed), r.structured_content.as_ref());
        assert_eq!(parsed["alpha"], serde_json::json!(u64::MAX));
        assert!(parsed["content"].is_null());
    }
}
