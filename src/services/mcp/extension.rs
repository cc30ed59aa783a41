//! Extra tools served next to a toolset's own.
//!
//! The shipped toolsets never use this. It exists so a test build of the same front end can
//! serve the MCP conformance suite's fixture tools (`test_simple_text`, …) through the exact
//! HTTP, auth and dispatch path real tools use.

use futures_util::future::BoxFuture;
use rmcp::model::{CallToolResult, JsonObject, Tool};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};

/// A set of extra tools. Names must not collide with the toolset's own (the toolset wins).
pub trait ToolExtension: Send + Sync + std::fmt::Debug + 'static {
    /// The tools, in the order to list them.
    fn tools(&self) -> Vec<Tool>;

    /// Calls tool `name` (one of [`ToolExtension::tools`]) with its arguments.
    ///
    /// # Errors
    /// A JSON-RPC error for a request that cannot be served at all; tool failures are
    /// `Ok` results with `is_error` set.
    fn call(
        &self,
        name: &str,
        arguments: JsonObject,
        context: RequestContext<RoleServer>,
    ) -> BoxFuture<'static, Result<CallToolResult, ErrorData>>;

    /// Whether the server should advertise the `logging` capability (a fixture tool sends
    /// log notifications).
    fn logging(&self) -> bool {
        false
    }
}
