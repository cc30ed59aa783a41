//! `list_workspaces` and `get_workspace`: control-plane only, no agent connection.

use super::Cx;
use super::out::{AgentOut, WorkspaceDetail, WorkspaceList, WorkspaceOut};
use crate::services::control::valid_name;
use crate::services::mcp::args::{self, ListWorkspacesArgs, WorkspaceArgs, preview};
use crate::services::mcp::result::{ToolError, structured, within};
use rmcp::model::{CallToolResult, JsonObject};

pub(super) async fn list(cx: &Cx, arguments: JsonObject) -> Result<CallToolResult, ToolError> {
    let a: ListWorkspacesArgs = args::parse("list_workspaces", arguments)?;
    let owner = a.owner.as_deref().map(str::trim).filter(|o| !o.is_empty());
    if let Some(o) = owner
        && !valid_name(o)
    {
        return Err(ToolError::Invalid(format!(
            "owner {} is not a valid user name",
            preview(o)
        )));
    }
    let ws = within(
        cx.limits().request_timeout,
        cx.state.control.list_workspaces(&cx.user, owner),
    )
    .await?;
    Ok(structured(&WorkspaceList {
        workspaces: ws.iter().map(WorkspaceOut::from).collect(),
    }))
}

pub(super) async fn get(cx: &Cx, arguments: JsonObject) -> Result<CallToolResult, ToolError> {
    let a: WorkspaceArgs = args::parse("get_workspace", arguments)?;
    let r = cx.resolve(&a.workspace).await?;
    Ok(structured(&WorkspaceDetail {
        workspace: WorkspaceOut::from(&r.workspace),
        agent: AgentOut {
            id: r.agent.id.to_string(),
            name: r.agent.name.clone(),
            tailnet_address: r.agent.id.tailnet_addr().to_string(),
        },
    }))
}
