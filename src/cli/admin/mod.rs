//! `agentwire admin`: the admin API's client (users, workspaces, agents, tokens, the
//! audit log, imports).
//!
//! Where it connects: `--url` (or `AGENTWIRE_URL`, default `http://127.0.0.1:7080`, the
//! address `serve` listens on by default). With which token: `--token-file FILE`, else
//! `AGENTWIRE_ADMIN_TOKEN`, else the file `admin-token` in the data directory (`--data-dir`
//! or `AGENTWIRE_DATA_DIR`, default as for `serve`) that `serve` writes when it creates
//! the first admin, so on the server's own machine it needs no flags.

mod args;
mod output;

pub use args::{AdminArgs, AdminCommand};

use crate::services::admin::ADMIN_PREFIX;
use crate::services::public_url::BaseUrl;
use crate::services::store::boot::ADMIN_TOKEN_FILE;
use anyhow::Context as _;
use args::{AgentsCmd, OauthCmd, TokensCmd, UsersCmd, WorkspacesCmd};
use serde::de::DeserializeOwned;
use serde_json::json;

/// The default server URL.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7080";

/// A connection to the admin API.
struct Api {
    base: BaseUrl,
    tls: crate::runtime::tls::ClientTls,
    token: String,
}

/// Percent-encodes one path segment.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string from the pairs that have a value.
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", seg(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

impl Api {
    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<bytes::Bytes> {
        self.call_at(method, &format!("{ADMIN_PREFIX}{path}"), body)
            .await
    }

    /// `call` on a path outside the admin API (the OAuth grants API).
    async fn call_at(
        &self,
        method: http::Method,
        full: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<bytes::Bytes> {
        let (status, bytes) =
            super::http::request(&self.tls, &self.base, method, full, &self.token, body).await?;
        if status.is_success() {
            return Ok(bytes);
        }
        #[derive(serde::Deserialize)]
        struct Err {
            message: String,
            field: Option<String>,
        }
        match serde_json::from_slice::<Err>(&bytes) {
            Ok(e) => match e.field {
                Some(f) => anyhow::bail!("{status}: {} (field: {f})", e.message),
                None => anyhow::bail!("{status}: {}", e.message),
            },
            Err(_) => anyhow::bail!(
                "{status}: {}",
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(500)
                    .collect::<String>()
            ),
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let b = self.call(http::Method::GET, path, None).await?;
        serde_json::from_slice(&b).context("reading the server's answer")
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<T> {
        let b = self
            .call(
                method,
                path,
                Some(("application/json", body.to_string().into_bytes())),
            )
            .await?;
        serde_json::from_slice(&b).context("reading the server's answer")
    }

    async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.call(http::Method::DELETE, path, None)
            .await
            .map(|_| ())
    }
}

fn token(args: &AdminArgs) -> anyhow::Result<String> {
    if let Some(f) = &args.token_file {
        return super::read_token_file(f);
    }
    if let Some(t) = &args.token {
        if !super::token_came_from_env("AGENTWIRE_ADMIN_TOKEN") {
            tracing::warn!(
                "--token on the command line is visible to every local user; use AGENTWIRE_ADMIN_TOKEN or --token-file"
            );
        }
        return Ok(t.clone());
    }
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(super::serve::default_data_dir);
    let file = dir.join(ADMIN_TOKEN_FILE);
    if file.exists() {
        return super::read_token_file(&file);
    }
    anyhow::bail!(
        "no admin token: give --token-file FILE or AGENTWIRE_ADMIN_TOKEN (an admin user's token), \
         or run this where the server keeps {} (--data-dir)",
        file.display()
    )
}

/// Reads a password: one line from standard input with `--password-stdin`, else a prompt
/// on the terminal (not echoed on Unix) asked twice.
fn password(from_stdin: bool) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let read_line = || -> anyhow::Result<String> {
        let mut s = String::new();
        std::io::stdin().lock().read_line(&mut s)?;
        Ok(s.trim_end_matches(['\r', '\n']).to_string())
    };
    if from_stdin || !std::io::stdin().is_terminal() {
        return read_line();
    }
    let ask = |prompt: &str| -> anyhow::Result<String> {
        let mut err = std::io::stderr();
        write!(err, "{prompt}")?;
        err.flush()?;
        let _quiet = output::NoEcho::new();
        let p = read_line()?;
        writeln!(err)?;
        Ok(p)
    };
    let p = ask("Password: ")?;
    if ask("Again: ")? != p {
        anyhow::bail!("the passwords differ");
    }
    Ok(p)
}

/// Runs one admin command.
///
/// # Errors
/// The server is unreachable, refuses the token, or refuses the request (its message is
/// shown, with the field at fault).
pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let url = args.url.clone().unwrap_or_else(|| DEFAULT_URL.to_string());
    let base = BaseUrl::parse("--url", &url, false)?;
    let tls = super::ClientTlsArgs {
        ca_file: args.ca_file.clone(),
        allow_insecure_http: args.allow_insecure_http,
    }
    .client_tls(&base.to_url())?;
    let api = Api {
        base,
        tls,
        token: token(&args)?,
    };
    let out = output::Out { json: args.json };
    use http::Method as M;
    match args.command {
        AdminCommand::Users(c) => match c {
            UsersCmd::List => out.users(api.get("/users").await?),
            UsersCmd::Show { name } => out.user(&api.get(&format!("/users/{}", seg(&name))).await?),
            UsersCmd::Create {
                name,
                admin,
                password: with_password,
                password_stdin,
            } => {
                let pw = (with_password || password_stdin)
                    .then(|| password(password_stdin))
                    .transpose()?;
                let body = json!({"name": name, "admin": admin, "password": pw});
                out.user(&api.send(M::POST, "/users", body).await?)
            }
            UsersCmd::Delete { name, cascade } => {
                let q = if cascade { "?cascade=true" } else { "" };
                api.delete(&format!("/users/{}{q}", seg(&name))).await?;
                out.done(&format!("user {name} deleted"))
            }
            UsersCmd::Revoke { name } => {
                let r: serde_json::Value = api
                    .send(M::POST, &format!("/users/{}/revoke", seg(&name)), json!({}))
                    .await?;
                out.revoked(&format!("user {name}"), &r)
            }
            UsersCmd::SetPassword {
                name,
                clear,
                password_stdin,
            } => {
                let path = format!("/users/{}/password", seg(&name));
                if clear {
                    api.delete(&path).await?;
                    out.done(&format!("password of {name} cleared"))
                } else {
                    let pw = password(password_stdin)?;
                    api.call(
                        M::PUT,
                        &path,
                        Some((
                            "application/json",
                            json!({ "password": pw }).to_string().into_bytes(),
                        )),
                    )
                    .await?;
                    out.done(&format!("password of {name} set"))
                }
            }
            UsersCmd::SetAdmin { name, admin } => out.user(
                &api.send(
                    M::PATCH,
                    &format!("/users/{}", seg(&name)),
                    json!({ "admin": admin }),
                )
                .await?,
            ),
        },
        AdminCommand::Workspaces(c) => match c {
            WorkspacesCmd::List { owner } => out.workspaces(
                api.get(&format!("/workspaces{}", query(&[("owner", owner)])))
                    .await?,
            ),
            WorkspacesCmd::Show { workspace } => {
                out.workspace(&api.get(&ws_path(&workspace)?).await?)
            }
            WorkspacesCmd::Create { workspace, share } => {
                let (owner, name) = split(&workspace)?;
                let body = json!({"owner": owner, "name": name, "shared_with": share});
                out.workspace(&api.send(M::POST, "/workspaces", body).await?)
            }
            WorkspacesCmd::Delete { workspace } => {
                api.delete(&ws_path(&workspace)?).await?;
                out.done(&format!("workspace {workspace} deleted, with its agents"))
            }
            WorkspacesCmd::Share { workspace, user } => out.workspace(
                &api.send(
                    M::PUT,
                    &format!("{}/shares/{}", ws_path(&workspace)?, seg(&user)),
                    json!({}),
                )
                .await?,
            ),
            WorkspacesCmd::Unshare { workspace, user } => {
                let b = api
                    .call(
                        M::DELETE,
                        &format!("{}/shares/{}", ws_path(&workspace)?, seg(&user)),
                        None,
                    )
                    .await?;
                out.workspace(&serde_json::from_slice(&b)?)
            }
        },
        AdminCommand::Agents(c) => match c {
            AgentsCmd::List { workspace } => out.agents(
                api.get(&format!("/agents{}", query(&[("workspace", workspace)])))
                    .await?,
            ),
            AgentsCmd::Show { agent } => {
                out.agent(&api.get(&format!("/agents/{}", seg(&agent))).await?)
            }
            AgentsCmd::Create {
                agent,
                id,
                expires_in,
            } => {
                let (workspace, name) = match agent.split_once('.') {
                    Some((w, a)) => (w.to_string(), a.to_string()),
                    None => (
                        agent.clone(),
                        crate::services::store::DEMO_AGENT.to_string(),
                    ),
                };
                let body = json!({"workspace": workspace, "name": name, "id": id, "expires_in": expires_in});
                out.created_agent(&api.send(M::POST, "/agents", body).await?)
            }
            AgentsCmd::Delete { agent } => {
                api.delete(&format!("/agents/{}", seg(&agent))).await?;
                out.done(&format!("agent {agent} deleted, with its tokens"))
            }
            AgentsCmd::Revoke { agent } => {
                let r: serde_json::Value = api
                    .send(
                        M::POST,
                        &format!("/agents/{}/revoke", seg(&agent)),
                        json!({}),
                    )
                    .await?;
                out.revoked(&format!("agent {agent}"), &r)
            }
        },
        AdminCommand::Tokens(c) => match c {
            TokensCmd::List { user, agent, all } => {
                let q = query(&[
                    ("user", user),
                    ("agent", agent),
                    ("all", all.then(|| "true".into())),
                ]);
                out.tokens(api.get(&format!("/tokens{q}")).await?)
            }
            TokensCmd::Show { id } => out.token(&api.get(&format!("/tokens/{}", seg(&id))).await?),
            TokensCmd::Create {
                user,
                agent,
                name,
                expires_in,
            } => {
                let body =
                    json!({"user": user, "agent": agent, "name": name, "expires_in": expires_in});
                out.issued(&api.send(M::POST, "/tokens", body).await?)
            }
            TokensCmd::Revoke { id } => out.token(
                &api.send(M::POST, &format!("/tokens/{}/revoke", seg(&id)), json!({}))
                    .await?,
            ),
            TokensCmd::Delete { id } => {
                api.delete(&format!("/tokens/{}", seg(&id))).await?;
                out.done(&format!("token {id} deleted"))
            }
        },
        AdminCommand::Audit {
            user,
            workspace,
            since,
            limit,
            before,
        } => {
            let q = query(&[
                ("user", user),
                ("workspace", workspace),
                ("since", since),
                ("limit", limit.map(|l| l.to_string())),
                ("before", before.map(|b| b.to_string())),
            ]);
            out.audit(api.get(&format!("/audit{q}")).await?)
        }
        AdminCommand::Oauth(c) => oauth(&api, &out, c).await,
        AdminCommand::Import { file } => {
            let text =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let b = api
                .call(M::POST, "/import", Some(("application/toml", text)))
                .await?;
            out.import(&serde_json::from_slice(&b)?)
        }
    }
}

fn split(workspace: &str) -> anyhow::Result<(&str, &str)> {
    workspace
        .split_once('/')
        .filter(|(o, n)| !o.is_empty() && !n.is_empty())
        .ok_or_else(|| anyhow::anyhow!("{workspace:?}: name the workspace as OWNER/NAME"))
}

fn ws_path(workspace: &str) -> anyhow::Result<String> {
    let (o, n) = split(workspace)?;
    Ok(format!("/workspaces/{}/{}", seg(o), seg(n)))
}

/// `agentwire admin oauth`, over the OAuth grants API (`/api/oauth/…`).
async fn oauth(api: &Api, out: &output::Out, c: OauthCmd) -> anyhow::Result<()> {
    use http::Method as M;
    let get = |path: String| async move {
        let b = api.call_at(M::GET, &path, None).await?;
        serde_json::from_slice::<serde_json::Value>(&b).context("reading the server's answer")
    };
    let list = |user: Option<String>, client: Option<String>, all: bool| {
        let q = query(&[
            ("user", user),
            ("client", client),
            ("all", all.then(|| "1".into())),
        ]);
        get(format!("/api/oauth/grants{q}"))
    };
    match c {
        OauthCmd::Grants { user, client, all } => out.oauth_grants(list(user, client, all).await?),
        OauthCmd::Revoke { id } => {
            api.call_at(M::DELETE, &format!("/api/oauth/grants/{}", seg(&id)), None)
                .await?;
            out.done(&format!("grant {id} revoked"))
        }
        OauthCmd::RevokeAll { user, client } => {
            let v = list(user, client, false).await?;
            let mut n = 0;
            for g in v["grants"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                if let Some(id) = g["id"].as_str() {
                    api.call_at(M::DELETE, &format!("/api/oauth/grants/{}", seg(id)), None)
                        .await?;
                    n += 1;
                }
            }
            out.done(&format!("{n} grants revoked"))
        }
        OauthCmd::Clients => out.oauth_clients(get("/api/oauth/clients".into()).await?),
        OauthCmd::DeleteClient { id } => {
            api.call_at(M::DELETE, &format!("/api/oauth/clients/{}", seg(&id)), None)
                .await?;
            out.done(&format!("client {id} deleted and its grants revoked"))
        }
    }
}
