//! The rmcp handler built for each HTTP request: the caller, the toolset, and dispatch.

use super::McpState;
use super::cancel::CancelRegistry;
use super::chatgpt;
use super::slots::NoSlot;
use super::tools::{self, Cx};
use crate::runtime::clock;
use crate::services::control::{ToolCallRecord, ToolOutcome, User};
use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use std::sync::{Arc, LazyLock};

/// MCP request methods whose params rmcp types; a request for one of these that reaches
/// `on_custom_request` had params of the wrong shape.
/// How long a cancelled tool call may take to wind down on its own before it is dropped.
const CANCEL_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "tools/call",
    "tools/list",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "tasks/get",
    "tasks/list",
    "tasks/cancel",
    "tasks/result",
];

/// Which tools a request sees (`?toolset=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Toolset {
    /// Workspace and file tools.
    Standard,
    /// Only `search` and `fetch`, as ChatGPT requires.
    ChatGpt,
}

impl Toolset {
    /// `None` (absent or empty) is `standard`; anything unknown is `Err` with the value.
    pub(crate) fn parse(v: Option<&str>) -> Result<Self, String> {
        match v.unwrap_or("") {
            "" | "standard" => Ok(Self::Standard),
            "chatgpt" => Ok(Self::ChatGpt),
            other => Err(other.to_string()),
        }
    }

    fn catalog(self) -> &'static [Tool] {
        static STANDARD: LazyLock<Vec<Tool>> = LazyLock::new(tools::standard_catalog);
        static CHATGPT: LazyLock<Vec<Tool>> = LazyLock::new(chatgpt::catalog);
        match self {
            Self::Standard => &STANDARD,
            Self::ChatGpt => &CHATGPT,
        }
    }
}

const INSTRUCTIONS: &str = "Tools act inside remote workspaces. A workspace is named \
[owner/]name[.agent] (no owner means yours); list_workspaces shows the ones you may use. \
Paths are absolute. workspace_bash runs shell commands; use background=true for long-running \
ones and follow them with workspace_process_output.";

/// One request's MCP server.
#[derive(Debug, Clone)]
pub(crate) struct Front {
    cx: Cx,
    toolset: Toolset,
    /// Where this request's tool call registers for `notifications/cancelled`, and its id.
    cancel: Option<(Arc<CancelRegistry>, String)>,
}

impl Front {
    pub(crate) fn new(
        state: McpState,
        user: User,
        toolset: Toolset,
        cancel: Option<(Arc<CancelRegistry>, String)>,
    ) -> Self {
        Self {
            cx: Cx {
                state,
                user: Arc::new(user),
                used: Arc::default(),
                target: Arc::default(),
            },
            toolset,
            cancel,
        }
    }

    fn tools(&self) -> Vec<Tool> {
        let mut out = self.toolset.catalog().to_vec();
        if let Some(ext) = &self.cx.state.extension {
            let own: Vec<_> = out.iter().map(|t| t.name.clone()).collect();
            out.extend(ext.tools().into_iter().filter(|t| !own.contains(&t.name)));
        }
        out
    }
}

impl ServerHandler for Front {
    // Logging is deprecated in 2026-07-28 but still part of 2025-11-25, which the fixture
    // tools of the conformance suite exercise.
    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        let logging = self
            .cx
            .state
            .extension
            .as_ref()
            .is_some_and(|e| e.logging());
        let caps = if logging {
            ServerCapabilities::builder()
                .enable_tools()
                .enable_logging()
                .build()
        } else {
            ServerCapabilities::builder().enable_tools().build()
        };
        ServerConfig::new(caps)
            .with_server_info(Implementation::new("agentwire", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        // The list depends on the toolset (the URL) but not on the caller; still, keep it
        // out of shared caches, since a proxy may not key on the query string.
        Ok(ListToolsResult::with_all_items(self.tools())
            .with_ttl_ms(60_000)
            .with_cache_scope(CacheScope::Private))
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        _request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // Only an extension sends log messages; the toolsets themselves never do.
        if self
            .cx
            .state
            .extension
            .as_ref()
            .is_some_and(|e| e.logging())
        {
            Ok(())
        } else {
            Err(ErrorData::new(
                rmcp::model::ErrorCode::METHOD_NOT_FOUND,
                "logging/setLevel",
                None,
            ))
        }
    }

    /// rmcp hands over as "custom" every request whose params did not fit the method's
    /// type, so a `tools/call` with `arguments` as a string lands here. Say what is wrong.
    async fn on_custom_request(
        &self,
        request: rmcp::model::CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CustomResult, ErrorData> {
        let method = super::args::preview(&request.method);
        if request.method.contains('/') && KNOWN_METHODS.contains(&request.method.as_str()) {
            Err(ErrorData::invalid_params(
                format!("invalid params for {method}"),
                None,
            ))
        } else {
            Err(ErrorData::new(
                rmcp::model::ErrorCode::METHOD_NOT_FOUND,
                format!("method not found: {method}"),
                None,
            ))
        }
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        mut context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let cx = self.cx.for_call();
        let mut audit = Audit::start(&cx, &request);
        // A legacy cancellation fires a child of the request's token, so tools watch one.
        let _registration = self.cancel.as_ref().map(|(registry, id)| {
            let token = context.ct.child_token();
            context.ct = token.clone();
            registry.register(&self.cx.user.name, id, token)
        });
        let name = request.name.as_ref();
        let limits = self.cx.limits();
        let (max, wait) = (limits.max_calls_per_user, limits.call_queue_wait);
        let entered = self
            .cx
            .state
            .stats
            .enter(&self.cx.user.name, max, wait, &context.ct)
            .await;
        let _slot = match entered {
            Ok(slot) => slot,
            Err(why) => {
                tracing::debug!(user = %self.cx.user.name, ?why, "tool call refused: per-user limit");
                self.cx.state.stats.tool_call(true);
                let refused =
                    rmcp::model::CallToolResult::error(vec![rmcp::model::ContentBlock::text(
                        format!(
                            "you have {max} tool calls in flight, the most allowed at once, and \
                         none finished within {} ms; wait for some to finish and try again",
                            wait.as_millis()
                        ),
                    )]);
                let outcome = match why {
                    NoSlot::Refused => ToolOutcome::Refused,
                    NoSlot::Cancelled => ToolOutcome::Cancelled,
                };
                audit.finish(outcome, Some(&refused), None);
                return Ok(refused.into());
            }
        };
        let args = request.arguments.unwrap_or_default();
        let listed = self.toolset.catalog().iter().any(|t| t.name == name);
        let cancelled = context.ct.clone();
        let call = async {
            Ok::<_, ErrorData>(if listed {
                match self.toolset {
                    Toolset::Standard => tools::call(&cx, name, args, context).await,
                    Toolset::ChatGpt => chatgpt::call(&cx, name, args).await,
                }
            } else if let Some(ext) = self
                .cx
                .state
                .extension
                .as_ref()
                .filter(|e| e.tools().iter().any(|t| t.name == name))
            {
                Some(ext.call(name, args, context).await?)
            } else {
                None
            })
        };
        tokio::pin!(call);
        // A call whose client went away or cancelled it stops now, whatever the tool: it
        // would otherwise hold one of the user's in-flight slots and its agent connection
        // until the agent answered or the request timed out. Tools that watch the token
        // themselves (bash kills its command) get a moment to finish that. (The audit
        // record, dropped unfinished, says `cancelled`.)
        let outcome = tokio::select! {
            r = &mut call => r,
            () = cancelled.cancelled() => {
                match tokio::time::timeout(CANCEL_GRACE, &mut call).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::debug!(user = %self.cx.user.name, tool = name, "tool call cancelled");
                        self.cx.state.stats.tool_call(true);
                        return Ok(rmcp::model::CallToolResult::error(vec![
                            rmcp::model::ContentBlock::text("cancelled"),
                        ])
                        .into());
                    }
                }
            }
        };
        let result = match outcome {
            Ok(r) => r,
            Err(e) => {
                audit.finish(ToolOutcome::Invalid, None, Some(e.message.as_ref()));
                return Err(e);
            }
        };
        match result {
            Some(r) => {
                let is_error = r.is_error.unwrap_or(false);
                self.cx.state.stats.tool_call(is_error);
                let outcome = if is_error {
                    ToolOutcome::Error
                } else {
                    ToolOutcome::Ok
                };
                audit.finish(outcome, Some(&r), None);
                Ok(r.into())
            }
            None => {
                let e = ErrorData::invalid_params(
                    format!("unknown tool: {}", super::args::preview(name)),
                    None,
                );
                audit.finish(ToolOutcome::Invalid, None, Some(e.message.as_ref()));
                Err(e)
            }
        }
    }
}

/// One tool call's audit record, handed to the control plane when the call ends — or, if
/// the handler is dropped first (the client went away), as `cancelled` on drop.
struct Audit {
    cx: Cx,
    record: Option<ToolCallRecord>,
    started: std::time::Instant,
}

/// Counts the bytes a value serializes to, without keeping them.
#[derive(Default)]
struct Count(u64);

impl std::io::Write for Count {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn json_size<T: serde::Serialize>(v: &T) -> u64 {
    let mut c = Count::default();
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// The first text of a failed result, shortened, as the audit log's detail.
fn detail_of(r: &rmcp::model::CallToolResult) -> Option<String> {
    if !r.is_error.unwrap_or(false) {
        return None;
    }
    r.content
        .iter()
        .find_map(|c| c.as_text().map(|t| t.text.chars().take(200).collect()))
}

impl Audit {
    fn start(cx: &Cx, request: &CallToolRequestParams) -> Self {
        Self {
            cx: cx.clone(),
            started: clock::now(),
            record: Some(ToolCallRecord {
                at: clock::wall(),
                user: cx.user.name.clone(),
                workspace: None,
                agent: None,
                agent_id: None,
                tool: request.name.chars().take(128).collect(),
                args_bytes: request.arguments.as_ref().map_or(0, json_size),
                result_bytes: 0,
                outcome: ToolOutcome::Cancelled,
                detail: None,
                duration: std::time::Duration::ZERO,
            }),
        }
    }

    fn finish(
        &mut self,
        outcome: ToolOutcome,
        result: Option<&rmcp::model::CallToolResult>,
        detail: Option<&str>,
    ) {
        if let Some(r) = self.record.as_mut() {
            r.outcome = outcome;
            r.result_bytes = result.map_or(0, json_size);
            r.detail = detail
                .map(|d| d.chars().take(200).collect())
                .or_else(|| result.and_then(detail_of));
        }
        self.send();
    }

    fn send(&mut self) {
        let Some(mut r) = self.record.take() else {
            return;
        };
        r.duration = clock::now().saturating_duration_since(self.started);
        if let Some((ws, agent)) = self.cx.target.get() {
            r.workspace = Some(ws.clone());
            r.agent = Some(agent.clone());
        }
        r.agent_id = self.cx.used.get().copied();
        self.cx.state.control.audit(r);
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        self.send();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toolset_parsing() {
        assert_eq!(Toolset::parse(None), Ok(Toolset::Standard));
        assert_eq!(Toolset::parse(Some("")), Ok(Toolset::Standard));
        assert_eq!(Toolset::parse(Some("standard")), Ok(Toolset::Standard));
        assert_eq!(Toolset::parse(Some("chatgpt")), Ok(Toolset::ChatGpt));
        assert_eq!(Toolset::parse(Some("ChatGPT")), Err("ChatGPT".into()));
    }

    #[test]
    fn every_schema_keeps_to_standard_json_schema() {
        for set in [Toolset::Standard, Toolset::ChatGpt] {
            for t in set.catalog() {
                let mut bad = Vec::new();
                let input = serde_json::Value::Object((*t.input_schema).clone());
                super::super::schema::nonstandard(&input, "#", &mut bad);
                if let Some(o) = &t.output_schema {
                    let output = serde_json::Value::Object((**o).clone());
                    super::super::schema::nonstandard(&output, "#", &mut bad);
                }
                assert!(bad.is_empty(), "{}: {bad:?}", t.name);
            }
        }
    }

    #[test]
    fn standard_catalog_is_complete_and_annotated() {
        let c = Toolset::Standard.catalog();
        let names: Vec<_> = c.iter().map(|t| t.name.as_ref()).collect();
        assert_eq!(names, tools::STANDARD_TOOLS);
        for t in c {
            let a = t.annotations.as_ref().expect("annotations");
            assert!(
                a.read_only_hint.is_some()
                    && a.destructive_hint.is_some()
                    && a.idempotent_hint.is_some()
                    && a.open_world_hint.is_some(),
                "{}",
                t.name
            );
            assert!(t.output_schema.is_some(), "{} has no output schema", t.name);
            assert_eq!(
                t.input_schema.get("type"),
                Some(&serde_json::json!("object"))
            );
            assert_eq!(
                t.input_schema.get("additionalProperties"),
                Some(&serde_json::json!(false)),
                "{}",
                t.name
            );
            if a.read_only_hint == Some(true) {
                assert_eq!(a.destructive_hint, Some(false), "{}", t.name);
                assert_eq!(a.idempotent_hint, Some(true), "{}", t.name);
            }
        }
        let bash = c.iter().find(|t| t.name == "workspace_bash").unwrap();
        let req = bash.input_schema.get("required").unwrap();
        assert_eq!(req, &serde_json::json!(["workspace", "command"]));
    }
}
