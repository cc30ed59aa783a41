//! How `agentwire admin` shows answers: aligned tables for people, the server's JSON with
//! `--json`.

use crate::services::store::model::{
    AgentInfo, AuditEntry, CreatedAgent, ImportReport, IssuedToken, TokenInfo, UserInfo,
    WorkspaceInfo,
};
use serde::Serialize;
use std::io::Write as _;

/// Prints to stdout, ignoring a closed pipe (`| head`).
macro_rules! say {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// Columns padded to their widest cell.
fn table(head: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let n = cells.len();
        let mut out = String::new();
        for (i, (c, w)) in cells.into_iter().zip(&widths).enumerate() {
            if i + 1 == n {
                out.push_str(&c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        say!("{}", out.trim_end());
    };
    line(head.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn or_dash(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

/// The output mode.
pub(super) struct Out {
    pub(super) json: bool,
}

impl Out {
    /// `admin oauth grants`: the API's `{"grants": [...]}`.
    pub(super) fn oauth_grants(&self, v: serde_json::Value) -> anyhow::Result<()> {
        if self.raw(&v) {
            return Ok(());
        }
        let s = |g: &serde_json::Value, k: &str| match &g[k] {
            serde_json::Value::String(x) => x.clone(),
            serde_json::Value::Null => "-".into(),
            x => x.to_string(),
        };
        let rows = v["grants"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|g| {
                let client = match g["client_name"].as_str() {
                    Some(n) => format!("{n} ({})", s(g, "client_id")),
                    None => s(g, "client_id"),
                };
                vec![
                    s(g, "id"),
                    s(g, "user"),
                    client,
                    s(g, "status"),
                    crate::services::time::fmt_ms(g["created_at"].as_i64().unwrap_or(0) * 1000),
                    s(g, "revoked_reason"),
                ]
            })
            .collect();
        table(
            &["ID", "USER", "CLIENT", "STATUS", "CREATED", "REVOKED"],
            rows,
        );
        Ok(())
    }

    /// `admin oauth clients`: the API's `{"clients": [...]}`.
    pub(super) fn oauth_clients(&self, v: serde_json::Value) -> anyhow::Result<()> {
        if self.raw(&v) {
            return Ok(());
        }
        let rows = v["clients"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|c| {
                vec![
                    c["client_id"].as_str().unwrap_or("-").to_string(),
                    c["name"].as_str().unwrap_or("-").to_string(),
                    c["source"].as_str().unwrap_or("-").to_string(),
                    c["live_grants"].to_string(),
                    c["redirect_uris"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|u| u.as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default(),
                ]
            })
            .collect();
        table(
            &["CLIENT_ID", "NAME", "SOURCE", "GRANTS", "REDIRECT_URIS"],
            rows,
        );
        Ok(())
    }

    fn raw<T: Serialize>(&self, v: &T) -> bool {
        if self.json {
            say!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        }
        self.json
    }

    /// One object: with `--json` as the server sent it (not a list of one), else a
    /// one-row table.
    fn one<T: Serialize + Clone>(
        &self,
        v: &T,
        table: fn(&Self, Vec<T>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        if self.raw(v) {
            return Ok(());
        }
        table(self, vec![v.clone()])
    }

    pub(super) fn done(&self, what: &str) -> anyhow::Result<()> {
        if !self.raw(&serde_json::json!({ "ok": true })) {
            say!("{what}");
        }
        Ok(())
    }

    pub(super) fn revoked(&self, whose: &str, r: &serde_json::Value) -> anyhow::Result<()> {
        if !self.raw(r) {
            say!(
                "{} token(s) of {whose} revoked",
                r.get("revoked").and_then(|v| v.as_u64()).unwrap_or(0)
            );
        }
        Ok(())
    }

    pub(super) fn users(&self, v: Vec<UserInfo>) -> anyhow::Result<()> {
        if !self.raw(&v) {
            table(
                &[
                    "NAME",
                    "ADMIN",
                    "PASSWORD",
                    "TOKENS",
                    "WORKSPACES",
                    "CREATED",
                ],
                v.iter()
                    .map(|u| {
                        vec![
                            u.name.clone(),
                            if u.admin { "yes" } else { "no" }.into(),
                            if u.has_password { "set" } else { "-" }.into(),
                            u.active_tokens.to_string(),
                            list(&u.workspaces),
                            u.created_at.clone(),
                        ]
                    })
                    .collect(),
            );
        }
        Ok(())
    }

    pub(super) fn user(&self, u: &UserInfo) -> anyhow::Result<()> {
        self.one(u, Self::users)
    }

    pub(super) fn workspaces(&self, v: Vec<WorkspaceInfo>) -> anyhow::Result<()> {
        if !self.raw(&v) {
            table(
                &["WORKSPACE", "SHARED WITH", "AGENTS", "ID", "CREATED"],
                v.iter()
                    .map(|w| {
                        let agents: Vec<String> = w.agents.iter().map(|a| a.name.clone()).collect();
                        vec![
                            w.full_name.clone(),
                            list(&w.shared_with),
                            list(&agents),
                            w.id.to_string(),
                            w.created_at.clone(),
                        ]
                    })
                    .collect(),
            );
        }
        Ok(())
    }

    pub(super) fn workspace(&self, w: &WorkspaceInfo) -> anyhow::Result<()> {
        self.one(w, Self::workspaces)
    }

    pub(super) fn agents(&self, v: Vec<AgentInfo>) -> anyhow::Result<()> {
        if !self.raw(&v) {
            table(
                &["AGENT", "ID", "TOKENS", "CREATED"],
                v.iter()
                    .map(|a| {
                        vec![
                            a.full_name.clone(),
                            a.id.to_string(),
                            a.active_tokens.to_string(),
                            a.created_at.clone(),
                        ]
                    })
                    .collect(),
            );
        }
        Ok(())
    }

    pub(super) fn agent(&self, a: &AgentInfo) -> anyhow::Result<()> {
        self.one(a, Self::agents)
    }

    pub(super) fn created_agent(&self, c: &CreatedAgent) -> anyhow::Result<()> {
        if self.raw(c) {
            return Ok(());
        }
        let t = &c.token.token;
        say!("agent {} created (id {})", c.agent.full_name, c.agent.id);
        if let Some(e) = &c.token.info.expires_at {
            say!("its token expires at {e}");
        }
        say!("\nRun this in the workspace (the token is shown only now):\n");
        say!("  {}", c.join_command);
        let with_file = c
            .join_command
            .replace(&format!("--token {t}"), "--token-file agent-token");
        say!(
            "\nA command line is visible to every local user (ps). To keep the token out of \
             sight, store it in a file instead:\n"
        );
        say!("  (umask 077; printf '%s\\n' '{t}' > agent-token)");
        say!("  {with_file}");
        Ok(())
    }

    pub(super) fn tokens(&self, v: Vec<TokenInfo>) -> anyhow::Result<()> {
        if !self.raw(&v) {
            table(
                &[
                    "ID",
                    "FOR",
                    "NAME",
                    "STATUS",
                    "EXPIRES",
                    "LAST USED",
                    "CREATED",
                ],
                v.iter()
                    .map(|t| {
                        let holder = match (&t.user, &t.agent) {
                            (Some(u), _) => format!("user {u}"),
                            (None, Some(a)) => format!("agent {a}"),
                            (None, None) => "-".into(),
                        };
                        let status = serde_json::to_value(t.status)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default();
                        vec![
                            t.id.to_string(),
                            holder,
                            t.name.clone(),
                            status,
                            or_dash(&t.expires_at),
                            or_dash(&t.last_used_at),
                            t.created_at.clone(),
                        ]
                    })
                    .collect(),
            );
        }
        Ok(())
    }

    pub(super) fn token(&self, t: &TokenInfo) -> anyhow::Result<()> {
        self.one(t, Self::tokens)
    }

    pub(super) fn issued(&self, t: &IssuedToken) -> anyhow::Result<()> {
        if self.raw(t) {
            return Ok(());
        }
        self.token(&t.info)?;
        say!("\ntoken (shown only now; store it, for example in a file only you can read):\n");
        say!("  {}", t.token);
        Ok(())
    }

    pub(super) fn audit(&self, v: Vec<AuditEntry>) -> anyhow::Result<()> {
        if !self.raw(&v) {
            table(
                &[
                    "ID",
                    "TIME",
                    "USER",
                    "WORKSPACE",
                    "TOOL",
                    "OUTCOME",
                    "ARGS",
                    "RESULT",
                    "MS",
                ],
                v.iter()
                    .map(|e| {
                        let ws = match (&e.workspace, &e.agent) {
                            (Some(w), Some(a)) => format!("{w}.{a}"),
                            (Some(w), None) => w.clone(),
                            _ => "-".into(),
                        };
                        // The whole message is in --json; a table cell keeps its start.
                        let outcome = match &e.detail {
                            Some(d) => {
                                let short: String = d.replace('\n', " ").chars().take(60).collect();
                                let more = if d.chars().count() > 60 { "…" } else { "" };
                                format!("{}: {short}{more}", e.outcome)
                            }
                            None => e.outcome.clone(),
                        };
                        vec![
                            e.id.to_string(),
                            e.at.clone(),
                            e.user.clone(),
                            ws,
                            e.tool.clone(),
                            outcome,
                            e.args_bytes.to_string(),
                            e.result_bytes.to_string(),
                            format!("{:.1}", e.duration_ms),
                        ]
                    })
                    .collect(),
            );
        }
        Ok(())
    }

    pub(super) fn import(&self, r: &ImportReport) -> anyhow::Result<()> {
        if !self.raw(r) {
            say!(
                "imported: {} user(s) created, {} updated; {} workspace(s) created, {} with \
                 shares changed; {} agent(s) created; {} token(s) added, {} revoked",
                r.users_created,
                r.users_updated,
                r.workspaces_created,
                r.shares_changed,
                r.agents_created,
                r.tokens_added,
                r.tokens_revoked
            );
        }
        Ok(())
    }
}

/// Turns terminal echo off until dropped (Unix; elsewhere the input is echoed).
pub(super) struct NoEcho {
    #[cfg(unix)]
    saved: Option<rustix::termios::Termios>,
}

impl NoEcho {
    pub(super) fn new() -> Self {
        #[cfg(unix)]
        {
            use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
            let stdin = std::io::stdin();
            let saved = tcgetattr(&stdin).ok();
            if let Some(t) = &saved {
                let mut quiet = t.clone();
                quiet.local_modes.remove(LocalModes::ECHO);
                let _ = tcsetattr(&stdin, OptionalActions::Now, &quiet);
            }
            Self { saved }
        }
        #[cfg(not(unix))]
        Self {}
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(t) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                t,
            );
        }
    }
}
