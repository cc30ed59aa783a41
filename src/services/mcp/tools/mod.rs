//! The standard toolset: its catalogue (names, schemas, annotations) and dispatch.
//!
//! Every workspace tool resolves the workspace through the control plane **before** it asks
//! for an agent connection, so a caller learns nothing about (and never dials) a workspace
//! they may not use; the connection is dropped, releasing its lease, when the call ends.

mod files;
pub(crate) mod out;
mod process;
mod workspace;

use super::McpState;
use super::args::{self, WorkspaceArgs};
use super::config::McpLimits;
use super::result::{ToolError, structured};
use crate::runtime::clock;
use crate::services::agent::client::AgentClient;
use crate::services::control::{ResolvedAgent, User};
use futures_util::future::BoxFuture;
use rmcp::RoleServer;
use rmcp::handler::server::common::{schema_for_input, schema_for_output};
use rmcp::model::{CallToolResult, JsonObject, Tool, ToolAnnotations};
use rmcp::service::RequestContext;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::{Arc, LazyLock};

/// Names of the standard tools, in listing order (what the catalogue test expects).
#[cfg(test)]
pub(crate) const STANDARD_TOOLS: &[&str] = &[
    "list_workspaces",
    "get_workspace",
    "workspace_bash",
    "workspace_process_list",
    "workspace_process_output",
    "workspace_process_signal",
    "workspace_ls",
    "workspace_read_file",
    "workspace_read_file_lines",
    "workspace_write_file",
    "workspace_edit_files",
    "workspace_listening_ports",
];

/// What a tool may do, as MCP annotation hints. All four hints are always sent.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Effect {
    /// Reads only.
    ReadOnly,
    /// Changes things; repeating it with the same arguments changes nothing more.
    DestructiveIdempotent,
    /// Changes things; repeating it may change more.
    Destructive,
    /// Runs arbitrary commands, which may reach anything.
    Arbitrary,
}

/// The request context a handler gets (progress, cancellation).
pub(crate) type Ctx = RequestContext<RoleServer>;

type Run = Box<
    dyn Fn(Cx, JsonObject, Ctx) -> BoxFuture<'static, Result<CallToolResult, ToolError>>
        + Send
        + Sync,
>;

/// One tool, defined once: its listing (name, title, description, annotations, schemas
/// derived from the argument and result types) and its handler. The catalogue and the
/// dispatch both read the same table, so a tool cannot be listed and not callable, or
/// parse arguments under another name.
pub(crate) struct ToolDef {
    pub(crate) tool: Tool,
    run: Run,
}

impl std::fmt::Debug for ToolDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolDef")
            .field("name", &self.tool.name)
            .finish()
    }
}

/// Defines a tool from its handler: arguments `A` are parsed from the call (errors name
/// the tool), the result `O` is returned as structured content.
fn def<A, O, F, Fut>(
    name: &'static str,
    title: &str,
    description: &'static str,
    effect: Effect,
    handler: F,
) -> ToolDef
where
    A: DeserializeOwned + JsonSchema + Send + 'static,
    O: Serialize + JsonSchema + 'static,
    F: Fn(Cx, A, Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, ToolError>> + Send + 'static,
{
    let handler = Arc::new(handler);
    ToolDef {
        tool: tool::<A, O>(name, title, description, effect),
        run: Box::new(move |cx, arguments, ctx| {
            let handler = handler.clone();
            Box::pin(async move {
                let a: A = args::parse(name, arguments)?;
                handler(cx, a, ctx).await.map(|o| structured(&o))
            })
        }),
    }
}

/// Builds a tool's listing from its argument and result types. Schemas keep to standard
/// JSON Schema (see [`super::schema`]).
pub(crate) fn tool<I: JsonSchema + 'static, O: JsonSchema + 'static>(
    name: &'static str,
    title: &str,
    description: &'static str,
    effect: Effect,
) -> Tool {
    // Our argument types are structs, so the schema root is always an object.
    let mut input = schema_for_input::<I>().unwrap_or_default();
    super::schema::standardize_object(Arc::make_mut(&mut input));
    let mut output = schema_for_output::<O>();
    super::schema::standardize_object(Arc::make_mut(&mut output));
    let (ro, destructive, idempotent, open_world) = match effect {
        Effect::ReadOnly => (true, false, true, false),
        Effect::DestructiveIdempotent => (false, true, true, false),
        Effect::Destructive => (false, true, false, false),
        Effect::Arbitrary => (false, true, false, true),
    };
    Tool::new(name, description, input)
        .with_title(title)
        .with_raw_output_schema(output)
        .with_annotations(
            ToolAnnotations::with_title(title)
                .read_only(ro)
                .destructive(destructive)
                .idempotent(idempotent)
                .open_world(open_world),
        )
}

/// The standard tools, in listing order.
pub(crate) fn standard() -> &'static [ToolDef] {
    static TOOLS: LazyLock<Vec<ToolDef>> = LazyLock::new(standard_tools);
    &TOOLS
}

/// The standard tools' listings, in order.
pub(crate) fn standard_catalog() -> Vec<Tool> {
    standard().iter().map(|d| d.tool.clone()).collect()
}

fn standard_tools() -> Vec<ToolDef> {
    use Effect::*;
    vec![
        def(
            "list_workspaces",
            "List workspaces",
            "List the workspaces you may use (yours, shared with you, or all for admins), \
             optionally only those of one owner. Each has a full_name to pass as `workspace`.",
            ReadOnly,
            workspace::list,
        ),
        def(
            "get_workspace",
            "Get workspace",
            "Describe one workspace and the agent `[owner/]name[.agent]` selects.",
            ReadOnly,
            workspace::get,
        ),
        def(
            "workspace_bash",
            "Run a command in a workspace",
            "Run a shell command (sh -c) in a workspace and return its combined stdout/stderr \
             and exit code. It is killed after timeout_ms (default 60000; timed_out is then \
             true). Progress notifications carry the output so far; cancelling the request \
             kills the command. With background=true it returns at once with a process_id \
             for workspace_process_output / workspace_process_signal.",
            Arbitrary,
            process::bash,
        ),
        def(
            "workspace_process_list",
            "List processes",
            "List the processes started through the agent, newest first.",
            ReadOnly,
            process::list,
        ),
        def(
            "workspace_process_output",
            "Process output",
            "Get a process's output so far and whether it is still running.",
            ReadOnly,
            process::output,
        ),
        def(
            "workspace_process_signal",
            "Signal a process",
            "Send terminate, kill or interrupt to a process (its whole process group).",
            Destructive,
            process::signal,
        ),
        def(
            "workspace_ls",
            "List a directory",
            "List a directory in a workspace (absolute path): name, type, size, mode, mtime.",
            ReadOnly,
            files::ls,
        ),
        def(
            "workspace_read_file",
            "Read a file",
            "Read bytes of a file (absolute path) from offset, up to limit. UTF-8 content \
             comes back as `content`, anything else as `content_base64`; size and MIME type \
             are included, and next_offset continues a long file.",
            ReadOnly,
            files::read,
        ),
        def(
            "workspace_read_file_lines",
            "Read lines of a file",
            "Read lines of a text file (absolute path) starting at line_offset (0-based), up \
             to line_limit lines; `more` says whether lines follow.",
            ReadOnly,
            files::read_lines,
        ),
        def(
            "workspace_write_file",
            "Write a file",
            "Create or replace a file (absolute path) atomically with `content` (text) or \
             `content_base64` (binary). Missing parent directories are created.",
            DestructiveIdempotent,
            files::write,
        ),
        def(
            "workspace_edit_files",
            "Edit files",
            "Apply search/replace edits to files. Each search must match exactly once unless \
             replace_all; a file's edits apply all or none. Returns a unified diff per file.",
            Destructive,
            files::edit,
        ),
        def(
            "workspace_listening_ports",
            "Listening ports",
            "List the TCP ports listening on the workspace host.",
            ReadOnly,
            ports,
        ),
    ]
}

/// What a tool runs with: the caller and the shared state.
#[derive(Debug, Clone)]
pub(crate) struct Cx {
    /// Shared state (control plane, provider, config).
    pub state: McpState,
    /// The caller; tools act as this user.
    pub user: Arc<User>,
    /// The agent this call connected to, so a broken exchange can be explained with what
    /// is known about it. Fresh per call.
    pub used: Arc<std::sync::OnceLock<crate::wire::addr::NodeId>>,
    /// The workspace (`owner/name`) and agent name the call first resolved, for the audit
    /// log. Fresh per call.
    pub target: Arc<std::sync::OnceLock<(String, String)>>,
}

impl Cx {
    /// A copy for one tool call, remembering nothing of earlier ones.
    pub(crate) fn for_call(&self) -> Cx {
        Cx {
            state: self.state.clone(),
            user: self.user.clone(),
            used: Arc::default(),
            target: Arc::default(),
        }
    }

    pub(crate) fn limits(&self) -> &McpLimits {
        &self.state.config.limits
    }

    /// Resolves `spec` for the caller (denied looks like not found).
    pub(crate) async fn resolve(&self, spec: &str) -> Result<ResolvedAgent, ToolError> {
        let r = super::result::within(
            self.limits().request_timeout,
            self.state.control.resolve_workspace(&self.user, spec),
        )
        .await;
        match &r {
            Ok(resolved) => self.note_target(resolved),
            Err(ToolError::Resolve(e)) => {
                tracing::debug!(user = %self.user.name, error = ?e, "workspace not resolved");
            }
            Err(_) => {}
        }
        r
    }

    fn note_target(&self, r: &ResolvedAgent) {
        let _ = self
            .target
            .set((r.workspace.full_name(), r.agent.name.clone()));
    }

    /// Resolves `spec`, then connects to its agent.
    pub(crate) async fn agent(
        &self,
        spec: &str,
    ) -> Result<(ResolvedAgent, AgentClient), ToolError> {
        let resolved = self.resolve(spec).await?;
        let client = self.connect(&resolved).await?;
        Ok((resolved, client))
    }

    /// Connects to an already authorized agent by the connect timeout. The provider owns
    /// that deadline (the Tailnet's destinations machine fails the wait when it passes,
    /// naming the stage), so nothing here races it with a second timer.
    pub(crate) async fn connect(&self, resolved: &ResolvedAgent) -> Result<AgentClient, ToolError> {
        let _ = self.used.set(resolved.agent.id);
        self.note_target(resolved);
        let deadline = tokio::time::Instant::from_std(clock::now()) + self.limits().connect_timeout;
        let client = self
            .state
            .agents
            .connect(resolved.agent.id, deadline)
            .await
            .map_err(ToolError::from)?;
        Ok(client.with_tenant(self.state.stats.tenant_reads(&self.user.name)))
    }
}

/// Calls standard tool `name`; `None` if it is not one.
pub(crate) async fn call(
    cx: &Cx,
    name: &str,
    arguments: JsonObject,
    ctx: Ctx,
) -> Option<CallToolResult> {
    let d = standard().iter().find(|d| d.tool.name == name)?;
    let r = match (d.run)(cx.clone(), arguments, ctx).await {
        Err(ToolError::Agent(cause)) if cause.is_transport() => Err(explain(cx, cause).await),
        r => r,
    };
    Some(r.unwrap_or_else(|e| {
        tracing::debug!(tool = name, user = %cx.user.name, error = %e, "tool call failed");
        cx.state.stats.tool_failed(&e);
        e.into_result()
    }))
}

/// A broken exchange with an agent, with what the server knows about the agent now.
async fn explain(cx: &Cx, cause: crate::services::agent::client::AgentClientError) -> ToolError {
    let Some(&agent) = cx.used.get() else {
        return ToolError::Agent(cause);
    };
    let known = cx.state.agents.status(vec![agent]).await;
    match known.get(&agent) {
        None => ToolError::Agent(cause),
        Some(s) => {
            let mut status = s.detail.clone();
            if let Some(p) = &s.path {
                status.push_str(&format!("; tunnel path {p}"));
            }
            if let Some(t) = s.last_handshake_unix_ms {
                status.push_str(&format!(
                    ", last handshake {}",
                    crate::services::mcp::provider::tailnet::fmt_utc_ms(t)
                ));
            }
            ToolError::AgentDown { cause, status }
        }
    }
}

async fn ports(cx: Cx, a: WorkspaceArgs, _: Ctx) -> Result<out::PortsOut, ToolError> {
    let (_, client) = cx.agent(&a.workspace).await?;
    let p = super::result::within(cx.limits().request_timeout, client.listening_ports()).await?;
    Ok(out::PortsOut {
        ports: p
            .ports
            .into_iter()
            .map(|p| out::PortOut {
                port: p.port,
                network: p.network,
                address: p.address,
            })
            .collect(),
    })
}
