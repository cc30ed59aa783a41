//! `list_workspaces` and `get_workspace`: control-plane only, no agent connection.

use super::out::{AgentOut, WorkspaceDetail, WorkspaceList, WorkspaceOut};
use super::{Ctx, Cx};
use crate::services::control::valid_name;
use crate::services::mcp::args::{ListWorkspacesArgs, WorkspaceArgs, preview};
use crate::services::mcp::result::{ToolError, within};

pub(super) async fn list(
    cx: Cx,
    a: ListWorkspacesArgs,
    _: Ctx,
) -> Result<WorkspaceList, ToolError> {
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
    Ok(WorkspaceList {
        workspaces: ws
            .iter()
            .map(|w| WorkspaceOut::from(w).with_status(&known))
            .collect(),
    })
}

pub(super) async fn get(cx: Cx, a: WorkspaceArgs, _: Ctx) -> Result<WorkspaceDetail, ToolError> {
    let r = cx.resolve(&a.workspace).await?;
    let ids = r.workspace.agents.iter().map(|a| a.id).collect();
    let known = cx.state.agents.status(ids).await;
    Ok(WorkspaceDetail {
        workspace: WorkspaceOut::from(&r.workspace).with_status(&known),
        agent: AgentOut {
            id: r.agent.id.to_string(),
            name: r.agent.name.clone(),
            tailnet_address: r.agent.id.tailnet_addr().to_string(),
            status: known.get(&r.agent.id).cloned(),
        },
    })
}
