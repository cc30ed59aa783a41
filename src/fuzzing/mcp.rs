//! MCP front-end input parsing: fetch ids, request peeking, bearer headers, workspace specs,
//! the public URL and tool arguments.

use crate::services::control::{WorkspaceSpec, valid_name};
use crate::services::mcp::args::{self, BashArgs, EditFilesArgs, ReadFileArgs, WriteFileArgs};
use crate::services::mcp::chatgpt::FetchId;
use crate::services::mcp::config::{McpLimits, PublicUrl};
use crate::services::mcp::http::{Peek, bearer, peek};

/// Every parser accepts or rejects without panicking, and what it accepts round-trips or
/// satisfies its documented shape.
pub fn mcp_input(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match FetchId::parse(&text) {
        Some(FetchId::Workspace(w)) => {
            assert_eq!(
                FetchId::parse(&format!("workspace:{w}")),
                Some(FetchId::Workspace(w))
            );
        }
        Some(FetchId::File(w, p)) => {
            assert!(p.starts_with('/') && !p.contains('\0'));
            let again = FetchId::parse(&format!("file:{w}:{p}"));
            assert_eq!(again, Some(FetchId::File(w, p)));
        }
        None => {}
    }
    match peek(data) {
        Peek::Cancelled(id) | Peek::ToolCall(id) => {
            let v: serde_json::Value = serde_json::from_str(&id).expect("id is JSON");
            assert!(v.is_string() || v.is_number());
        }
        Peek::Other => {}
    }
    if let Ok(v) = http::HeaderValue::from_bytes(data) {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v);
        if let Some(t) = bearer(&h) {
            assert!(!t.is_empty() && t.trim() == t);
        }
    }
    if let Ok(s) = WorkspaceSpec::parse(&text) {
        assert!(valid_name(&s.name));
        assert!(s.owner.iter().chain(s.agent.iter()).all(|p| valid_name(p)));
    }
    if let Ok(u) = PublicUrl::parse(&text) {
        assert!(u.scheme == "http" || u.scheme == "https");
        assert!(!u.host.is_empty() && !u.base_path.ends_with('/'));
    }
    let limits = McpLimits::default();
    let _ = args::check_path(&text, &limits);
    let _ = args::check_command(&text, &limits);
    let _ = args::check_process_id(&text);
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_slice(data) {
        let _ = args::parse::<BashArgs>("t", o.clone());
        let _ = args::parse::<ReadFileArgs>("t", o.clone());
        if let Ok(a) = args::parse::<EditFilesArgs>("t", o.clone()) {
            let _ = args::check_edits(&a, &limits);
        }
        if let Ok(a) = args::parse::<WriteFileArgs>("t", o)
            && let Ok(b) = args::write_content(&a, &limits)
        {
            assert!(b.len() <= limits.write_max_bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_entry_point_runs() {
        for d in [
            &b"file:00000000-0000-0000-0000-000000000007:/a:b"[..],
            b"workspace:00000000-0000-0000-0000-000000000007",
            br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"x"}}"#,
            b"Bearer  tok ",
            b"alice/dev.main",
            b"https://h:1/p/",
            br#"{"workspace":"w","path":"/f","content_base64":"AAA="}"#,
            b"\xff\x00",
        ] {
            super::mcp_input(d);
        }
    }
}
