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
    let ids = ws
        .iter()
        .flat_map(|w| w.agents.iter().map(|a| a.id))
        .collect();
    let known = cx.state.agents.status(ids).await;
    Ok(structured(&WorkspaceList {
        workspaces: ws
            .iter()
            .map(|w| WorkspaceOut::from(w).with_status(&known))
            .collect(),
    }))
}

pub(super) async fn get(cx: &Cx, arguments: JsonObject) -> Result<CallToolResult, ToolError> {
    let a: WorkspaceArgs = args::parse("get_workspace", arguments)?;
    let r = cx.resolve(&a.workspace).await?;
    let ids = r.workspace.agents.iter().map(|a| a.id).collect();
    let known = cx.state.agents.status(ids).await;
    Ok(structured(&WorkspaceDetail {
        workspace: WorkspaceOut::from(&r.workspace).with_status(&known),
        agent: AgentOut {
            id: r.agent.id.to_string(),
            name: r.agent.name.clone(),
            tailnet_address: r.agent.id.tailnet_addr().to_string(),
            status: known.get(&r.agent.id).cloned(),
        },
    }))
}
