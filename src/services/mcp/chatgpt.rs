//! The `chatgpt` toolset: exactly `search {query}` and `fetch {id}`, in the shapes ChatGPT
//! connectors and deep research require: one text content item whose text is JSON
//! (`{"results":[{id,title,url}]}` and `{id,title,text,url,metadata}`).
//!
//! `search` matches the caller's workspaces by name and, through their agents, files by
//! path and content. The walk is bounded in every dimension ([`SearchLimits`]): workspaces,
//! depth, directories, entries, bytes read, results and wall time; whatever was found when
//! a bound is hit is returned.

use super::args::{self, FetchArgs, SearchArgs};
use super::config::SearchLimits;
use super::result::{ToolError, json_text, within};
use super::tools::Cx;
use super::tools::out::WorkspaceOut;
use crate::runtime::clock;
use crate::services::agent::client::AgentClient;
use crate::services::agent::types::{DirEntry, EntryKind, StartProcessRequest};
use crate::services::control::{AgentChoice, ResolveError, ResolvedAgent, Workspace, choose_agent};
use futures_util::future::BoxFuture;
use rmcp::model::{CallToolResult, JsonObject, Tool, ToolAnnotations};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use uuid::Uuid;

/// Directories never descended into: large and rarely what a person searches for.
const SKIP_DIRS: &[&str] = &[".git", "node_modules", "target", ".cache", "__pycache__"];

/// The two tools. Input schemas are written out by hand: ChatGPT checks them exactly.
pub(crate) fn catalog() -> Vec<Tool> {
    let schema = |field: &str, desc: &str| {
        let v = serde_json::json!({
            "type": "object",
            "properties": { field: { "type": "string", "description": desc } },
            "required": [field],
            "additionalProperties": false
        });
        match v {
            serde_json::Value::Object(o) => o,
            _ => JsonObject::new(),
        }
    };
    let ro = |title: &str| {
        ToolAnnotations::with_title(title)
            .read_only(true)
            .destructive(false)
            .idempotent(true)
            .open_world(false)
    };
    vec![
        Tool::new(
            "search",
            "Search your workspaces: workspace names, and file paths and file contents inside \
             them (plain words, all must match, case-insensitive). Returns ids to pass to fetch.",
            schema("query", "Words to look for"),
        )
        .with_title("Search workspaces")
        .with_annotations(ro("Search workspaces")),
        Tool::new(
            "fetch",
            "Fetch a workspace or file by an id returned from search.",
            schema(
                "id",
                "An id from search: workspace:<id> or file:<workspace id>:<path>",
            ),
        )
        .with_title("Fetch")
        .with_annotations(ro("Fetch")),
    ]
}

#[derive(Debug, Serialize)]
pub(crate) struct SearchHit {
    id: String,
    title: String,
    url: String,
}

#[derive(Debug, Serialize)]
struct SearchResults {
    results: Vec<SearchHit>,
}

#[derive(Debug, Serialize)]
struct Document {
    id: String,
    title: String,
    text: String,
    url: String,
    metadata: BTreeMap<String, String>,
}

fn workspace_url(w: &Workspace) -> String {
    format!("agentwire://workspace/{}/{}", w.owner, w.name)
}

fn file_url(w: &Workspace, path: &str) -> String {
    format!("agentwire://workspace/{}/{}/file{path}", w.owner, w.name)
}

/// Calls `search` or `fetch`; `None` for any other name.
pub(crate) async fn call(cx: &Cx, name: &str, arguments: JsonObject) -> Option<CallToolResult> {
    let r = match name {
        "search" => search(cx, arguments).await,
        "fetch" => fetch(cx, arguments).await,
        _ => return None,
    };
    Some(r.unwrap_or_else(|e| {
        cx.state.stats.tool_failed(&e);
        e.into_result()
    }))
}

/// Lower-cased query terms; all must match.
pub(crate) fn terms(query: &str) -> Vec<String> {
    query
        .split_whitespace()
        .map(str::to_lowercase)
        .filter(|t| !t.is_empty())
        .collect()
}

fn matches_all(terms: &[String], haystack: &str) -> bool {
    let h = haystack.to_lowercase();
    terms.iter().all(|t| h.contains(t.as_str()))
}

async fn search(cx: &Cx, arguments: JsonObject) -> Result<CallToolResult, ToolError> {
    let a: SearchArgs = args::parse("search", arguments)?;
    let limits = &cx.limits().search;
    if a.query.len() > limits.max_query_bytes {
        return Err(ToolError::Invalid(format!(
            "query is longer than {} bytes",
            limits.max_query_bytes
        )));
    }
    let terms = terms(&a.query);
    let mut hits = Vec::new();
    if terms.is_empty() {
        return Ok(json_text(&SearchResults { results: hits }));
    }
    let deadline = clock::now() + limits.timeout;
    let workspaces = within(
        cx.limits().request_timeout,
        cx.state.control.list_workspaces(&cx.user, None),
    )
    .await?;
    for w in &workspaces {
        if matches_all(&terms, &w.full_name()) && hits.len() < limits.max_results {
            hits.push(SearchHit {
                id: format!("workspace:{}", w.id),
                title: format!("Workspace {}", w.full_name()),
                url: workspace_url(w),
            });
        }
    }
    for w in workspaces.iter().take(limits.max_workspaces) {
        if hits.len() >= limits.max_results || clock::now() >= deadline {
            break;
        }
        let Ok(agent) = choose_agent(w, AgentChoice::Default) else {
            continue;
        };
        let resolved = ResolvedAgent {
            workspace: w.clone(),
            agent,
        };
        let budget = tokio::time::Instant::from_std(deadline);
        let walk = async {
            let client = cx.connect(&resolved).await?;
            let mut walker = Walker::new(&client, limits, &terms, w, &mut hits);
            walker.run().await
        };
        match tokio::time::timeout_at(budget, walk).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(workspace = %w.full_name(), error = %e, "search skipped"),
            Err(_) => tracing::debug!(workspace = %w.full_name(), "search time budget spent"),
        }
    }
    hits.truncate(limits.max_results);
    Ok(json_text(&SearchResults { results: hits }))
}

/// What the walk needs from an agent (a trait so the bounds can be tested without one).
pub(crate) trait Tree {
    /// The directory to start from.
    fn root(&self) -> BoxFuture<'_, Result<String, ToolError>>;
    /// A directory's entries.
    fn list(&self, dir: &str) -> BoxFuture<'_, Result<Vec<DirEntry>, ToolError>>;
    /// Up to `limit` bytes of a file.
    fn read(&self, path: &str, limit: u64) -> BoxFuture<'_, Result<bytes::Bytes, ToolError>>;
}

impl Tree for AgentClient {
    /// The agent's working directory: where its commands start, so where a person works.
    fn root(&self) -> BoxFuture<'_, Result<String, ToolError>> {
        Box::pin(async move {
            let out = self
                .start_process(&StartProcessRequest {
                    command: "pwd".into(),
                    timeout_ms: Some(5000),
                    ..Default::default()
                })
                .await?;
            let dir = out.output.trim().to_string();
            if dir.starts_with('/') {
                Ok(dir)
            } else {
                Err(ToolError::Invalid(
                    "agent did not report its directory".into(),
                ))
            }
        })
    }

    fn list(&self, dir: &str) -> BoxFuture<'_, Result<Vec<DirEntry>, ToolError>> {
        let dir = dir.to_string();
        Box::pin(async move { Ok(self.ls(&dir).await?.entries) })
    }

    fn read(&self, path: &str, limit: u64) -> BoxFuture<'_, Result<bytes::Bytes, ToolError>> {
        let path = path.to_string();
        Box::pin(async move { Ok(self.read_file(&path, 0, Some(limit)).await?.1) })
    }
}

/// One workspace's bounded breadth-first walk.
pub(crate) struct Walker<'a, T: Tree + ?Sized> {
    client: &'a T,
    limits: &'a SearchLimits,
    terms: &'a [String],
    workspace: &'a Workspace,
    hits: &'a mut Vec<SearchHit>,
    entries: usize,
    dirs: usize,
    bytes: u64,
}

impl<'a, T: Tree + ?Sized> Walker<'a, T> {
    pub(crate) fn new(
        client: &'a T,
        limits: &'a SearchLimits,
        terms: &'a [String],
        workspace: &'a Workspace,
        hits: &'a mut Vec<SearchHit>,
    ) -> Self {
        Self {
            client,
            limits,
            terms,
            workspace,
            hits,
            entries: 0,
            dirs: 0,
            bytes: 0,
        }
    }

    fn full(&self) -> bool {
        self.hits.len() >= self.limits.max_results
    }

    pub(crate) async fn run(&mut self) -> Result<(), ToolError> {
        let root = self.client.root().await?;
        let mut queue = VecDeque::from([(root.clone(), 0usize)]);
        while let Some((dir, depth)) = queue.pop_front() {
            if self.full() || self.dirs >= self.limits.max_dirs {
                break;
            }
            self.dirs += 1;
            let Ok(entries) = self.client.list(&dir).await else {
                continue;
            };
            for e in entries {
                if self.full() || self.entries >= self.limits.max_entries {
                    return Ok(());
                }
                self.entries += 1;
                match e.kind {
                    EntryKind::Dir => {
                        if depth < self.limits.max_depth && !SKIP_DIRS.contains(&e.name.as_str()) {
                            queue.push_back((e.path, depth + 1));
                        }
                    }
                    EntryKind::File => {
                        let rel = e.path.strip_prefix(root.as_str()).unwrap_or(&e.path);
                        if matches_all(self.terms, rel)
                            || self.content_matches(&e.path, e.size).await
                        {
                            self.hit(&e.path);
                        }
                    }
                    EntryKind::Symlink | EntryKind::Other => {}
                }
            }
        }
        Ok(())
    }

    async fn content_matches(&mut self, path: &str, size: u64) -> bool {
        if size == 0
            || size > self.limits.max_file_bytes
            || self.bytes + size > self.limits.max_bytes
        {
            return false;
        }
        self.bytes += size;
        let Ok(data) = self.client.read(path, size).await else {
            return false;
        };
        // Binary files are matched by path only.
        if data.contains(&0) {
            return false;
        }
        matches_all(self.terms, &String::from_utf8_lossy(&data))
    }

    fn hit(&mut self, path: &str) {
        self.hits.push(SearchHit {
            id: format!("file:{}:{path}", self.workspace.id),
            title: format!("{} in {}", path, self.workspace.full_name()),
            url: file_url(self.workspace, path),
        });
    }
}

/// A parsed `fetch` id.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FetchId {
    /// `workspace:<uuid>`.
    Workspace(Uuid),
    /// `file:<workspace uuid>:<absolute path>`.
    File(Uuid, String),
}

impl FetchId {
    pub(crate) fn parse(id: &str) -> Option<Self> {
        if let Some(rest) = id.strip_prefix("workspace:") {
            return Uuid::parse_str(rest).ok().map(Self::Workspace);
        }
        let rest = id.strip_prefix("file:")?;
        let (ws, path) = rest.split_once(':')?;
        let ws = Uuid::parse_str(ws).ok()?;
        (path.starts_with('/') && !path.contains('\0')).then(|| Self::File(ws, path.to_string()))
    }
}

async fn fetch(cx: &Cx, arguments: JsonObject) -> Result<CallToolResult, ToolError> {
    let a: FetchArgs = args::parse("fetch", arguments)?;
    let id = FetchId::parse(a.id.trim()).ok_or_else(|| {
        ToolError::Invalid(format!(
            "id {} is not workspace:<id> or file:<workspace id>:<path>",
            args::preview(&a.id)
        ))
    })?;
    let ws_id = match &id {
        FetchId::Workspace(w) | FetchId::File(w, _) => *w,
    };
    let not_found = || ToolError::NotFound(format!("{} not found", args::preview(&a.id)));
    // A workspace without agents can still be fetched as a record; reading a file needs
    // the agent.
    let resolving = cx
        .state
        .control
        .resolve_workspace_id(&cx.user, ws_id, AgentChoice::Default);
    let resolved = match tokio::time::timeout(cx.limits().request_timeout, resolving)
        .await
        .map_err(|_| ToolError::Timeout(cx.limits().request_timeout))?
    {
        Ok(r) => Ok(r),
        Err(ResolveError::NotFound { .. } | ResolveError::Forbidden { .. }) => {
            return Err(not_found());
        }
        Err(e) => Err(e),
    };
    match id {
        FetchId::Workspace(_) => {
            let ws = match resolved {
                Ok(r) => r.workspace,
                Err(_) => within(
                    cx.limits().request_timeout,
                    cx.state.control.workspace_by_id(ws_id),
                )
                .await?
                .filter(|w| w.may_use(&cx.user))
                .ok_or_else(not_found)?,
            };
            let out = WorkspaceOut::from(&ws);
            let text = serde_json::to_string_pretty(&out).unwrap_or_default();
            let mut metadata = BTreeMap::new();
            metadata.insert("owner".into(), ws.owner.clone());
            metadata.insert("name".into(), ws.name.clone());
            let agents: Vec<_> = ws.agents.iter().map(|a| a.name.clone()).collect();
            metadata.insert("agents".into(), agents.join(","));
            Ok(json_text(&Document {
                id: a.id.trim().to_string(),
                title: format!("Workspace {}", ws.full_name()),
                text,
                url: workspace_url(&ws),
                metadata,
            }))
        }
        FetchId::File(_, path) => {
            args::check_path(&path, cx.limits())?;
            let resolved = resolved.map_err(ToolError::from)?;
            let ws = resolved.workspace.clone();
            let client = cx.connect(&resolved).await?;
            let max = cx.limits().read_max_bytes;
            let (meta, data) = within(
                cx.limits().request_timeout,
                client.read_file(&path, 0, Some(max)),
            )
            .await?;
            let text = if data.contains(&0) {
                format!(
                    "(binary file, {} bytes, {}; not shown)",
                    meta.size, meta.mime_type
                )
            } else {
                String::from_utf8_lossy(&data).into_owned()
            };
            let mut metadata = BTreeMap::new();
            metadata.insert("workspace".into(), ws.full_name());
            metadata.insert("path".into(), path.clone());
            metadata.insert("size".into(), meta.size.to_string());
            metadata.insert("mime_type".into(), meta.mime_type.clone());
            metadata.insert(
                "truncated".into(),
                (meta.size > data.len() as u64).to_string(),
            );
            Ok(json_text(&Document {
                id: a.id.trim().to_string(),
                title: format!("{path} in {}", ws.full_name()),
                text,
                url: file_url(&ws, &path),
                metadata,
            }))
        }
    }
}

#[cfg(test)]
#[path = "chatgpt_tests.rs"]
mod tests;
