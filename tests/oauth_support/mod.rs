//! Harness for the OAuth tests: an MCP endpoint with its authorization server on
//! 127.0.0.1:0 (three users: alice, bob, and root who is an admin), and a small HTTP client
//! that keeps cookies like a browser and posts forms the way a browser does.
#![allow(dead_code, clippy::disallowed_methods)]

use agentwire::proto::oauth::pkce;
use agentwire::services::control::{ControlPlane, InMemoryControlPlane, generate_token};
use agentwire::services::mcp::{
    MCP_PATH, MCP_PATH_EXPERIMENTAL, McpConfig, McpState, StaticAgentProvider, router,
};
use agentwire::services::oauth::{
    ControlAccounts, MemoryStore, OAuthOptions, OAuthServer, OAuthStore,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

pub mod cdp;

pub struct Harness {
    pub addr: SocketAddr,
    pub base: String,
    pub oauth: Arc<OAuthServer>,
    pub store: Arc<dyn OAuthStore>,
    pub alice: String,
    pub bob: String,
    pub root: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub struct Users {
    pub alice: String,
    pub bob: String,
    pub root: String,
    pub control: Arc<InMemoryControlPlane>,
}

pub fn users() -> Users {
    let (alice, bob, root) = (generate_token(), generate_token(), generate_token());
    let toml = format!(
        r#"
[[users]]
name = "alice"
token = "{alice}"
[[users]]
name = "bob"
token = "{bob}"
[[users]]
name = "root"
token = "{root}"
admin = true
[[workspaces]]
owner = "alice"
name = "dev"
[[workspaces]]
owner = "bob"
name = "secret"
"#
    );
    let control = Arc::new(InMemoryControlPlane::from_toml(&toml).expect("control config"));
    Users {
        alice,
        bob,
        root,
        control,
    }
}

impl Harness {
    /// A server with a fresh in-memory store; `tweak` adjusts the OAuth options.
    pub async fn start(tweak: impl FnOnce(&mut OAuthOptions)) -> Self {
        Self::start_with(users(), Arc::new(MemoryStore::new()), tweak).await
    }

    /// A server over `store` (shared stores let two servers see each other's tokens).
    pub async fn start_with(
        users: Users,
        store: Arc<dyn OAuthStore>,
        tweak: impl FnOnce(&mut OAuthOptions),
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = McpConfig {
            listen_addr: Some(addr),
            ..Default::default()
        };
        let base = format!("http://{addr}");
        let mut opts = OAuthOptions {
            store: Some(store.clone()),
            ..Default::default()
        };
        tweak(&mut opts);
        let oauth = opts
            .build(
                &base,
                &[MCP_PATH, MCP_PATH_EXPERIMENTAL],
                Some(Arc::new(ControlAccounts::new(users.control.clone()))),
                None,
            )
            .expect("OAuth may run on loopback")
            .expect("OAuth on");
        let control: Arc<dyn ControlPlane> = users.control.clone();
        let mut state = McpState::new(control, Arc::new(StaticAgentProvider::default()), config);
        state.oauth = Some(oauth.clone());
        let app = router(state).merge(oauth.router());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(agentwire::services::http::serve(
            listener,
            app,
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            addr,
            base,
            oauth,
            store,
            alice: users.alice,
            bob: users.bob,
            root: users.root,
            stop: Some(tx),
            task,
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    pub fn browser(&self) -> Browser {
        Browser {
            base: self.base.clone(),
            cookies: HashMap::new(),
        }
    }

    /// Registers a client; returns its id and secret (for confidential clients).
    pub async fn register(&self, meta: serde_json::Value) -> (String, Option<String>) {
        let r = self
            .browser()
            .post_json("/oauth/register", &meta, &[])
            .await;
        assert_eq!(r.status, 201, "registration: {}", r.body);
        let j = r.json();
        (
            j["client_id"].as_str().unwrap().to_string(),
            j["client_secret"].as_str().map(str::to_string),
        )
    }

    /// A public client with one loopback redirect URI.
    pub async fn public_client(&self) -> String {
        self.register(serde_json::json!({
            "client_name": "Test App",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
        }))
        .await
        .0
    }

    pub async fn counts(&self) -> agentwire::services::oauth::store::StoreCounts {
        self.store.counts().await.unwrap()
    }
}

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, n: &str) -> Option<&str> {
        self.headers.get(n).and_then(|v| v.to_str().ok())
    }

    pub fn location(&self) -> &str {
        self.header("location")
            .unwrap_or_else(|| panic!("no Location ({}): {}", self.status, self.body))
    }

    /// A hidden or named form field's value in an HTML page.
    pub fn field(&self, name: &str) -> Option<String> {
        let needle = format!("name=\"{name}\" value=\"");
        let at = self.body.find(&needle)? + needle.len();
        let end = self.body[at..].find('"')? + at;
        Some(unescape(&self.body[at..end]))
    }

    /// The OAuth error of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_string()
    }
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The query parameters of a URL.
pub fn query(url: &str) -> HashMap<String, String> {
    let q = url.split_once('?').map_or("", |(_, q)| q);
    let f = agentwire::wire::oauth::form::Form::parse(q.as_bytes(), &Default::default()).unwrap();
    f.pairs().iter().cloned().collect()
}

/// A fresh PKCE verifier and its S256 challenge.
pub fn pkce_pair() -> (String, String) {
    let v = format!("{}{}", generate_token().replace('_', "-"), "abcdefghij");
    let c = pkce::challenge_of(&v);
    (v, c)
}

/// Keeps cookies for one server and speaks HTTP/1.1 to it, one connection per request.
#[derive(Debug, Clone)]
pub struct Browser {
    pub base: String,
    pub cookies: HashMap<String, String>,
}

impl Browser {
    pub async fn request(
        &mut self,
        method: http::Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let authority = self.base.trim_start_matches("http://").to_string();
        let tcp = tokio::net::TcpStream::connect(&authority)
            .await
            .expect("connect");
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut b = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &authority);
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        if !self.cookies.is_empty() {
            let c: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            b = b.header("cookie", c.join("; "));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = send
            .send_request(b.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        for v in headers.get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap();
            let (k, val) = pair.split_once('=').unwrap();
            if val.is_empty() || v.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), val.to_string());
            }
        }
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.request(http::Method::GET, path, None, Vec::new(), &[])
            .await
    }

    /// Posts a form as a browser does from one of the server's own pages.
    pub async fn post_form(&mut self, path: &str, pairs: &[(&str, &str)]) -> Resp {
        let origin = self.base.clone();
        self.post_form_with(
            path,
            pairs,
            &[("origin", &origin), ("sec-fetch-site", "same-origin")],
        )
        .await
    }

    pub async fn post_form_with(
        &mut self,
        path: &str,
        pairs: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Resp {
        let body = agentwire::wire::oauth::form::encode_pairs(pairs.iter().copied());
        self.request(
            http::Method::POST,
            path,
            Some("application/x-www-form-urlencoded"),
            body.into_bytes(),
            headers,
        )
        .await
    }

    pub async fn post_json(
        &mut self,
        path: &str,
        v: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> Resp {
        self.request(
            http::Method::POST,
            path,
            Some("application/json"),
            v.to_string().into_bytes(),
            headers,
        )
        .await
    }

    /// Starts an authorization for `client_id` at `redirect_uri`; returns the page.
    pub async fn authorize(
        &mut self,
        client_id: &str,
        redirect_uri: &str,
        challenge: &str,
        extra: &[(&str, &str)],
    ) -> Resp {
        let mut pairs = vec![
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("state", "st-123"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ];
        pairs.extend_from_slice(extra);
        let q = agentwire::wire::oauth::form::encode_pairs(pairs);
        self.get(&format!("/oauth/authorize?{q}")).await
    }

    /// Signs in with a user token on a sign-in page; returns the next page.
    pub async fn login_token(&mut self, page: &Resp, token: &str) -> Resp {
        let request = page.field("request").unwrap_or_default();
        let csrf = page.field("csrf").expect("csrf field");
        self.post_form(
            "/oauth/login",
            &[
                ("request", &request),
                ("csrf", &csrf),
                ("method", "token"),
                ("token", token),
            ],
        )
        .await
    }

    /// Answers a consent page.
    pub async fn consent(&mut self, page: &Resp, decision: &str) -> Resp {
        let request = page.field("request").expect("request field");
        let csrf = page.field("csrf").expect("csrf field");
        self.post_form(
            "/oauth/consent",
            &[
                ("request", &request),
                ("csrf", &csrf),
                ("decision", decision),
            ],
        )
        .await
    }

    /// The whole browser side: authorize, sign in with `token`, allow; the redirect's
    /// query parameters.
    pub async fn approve(
        &mut self,
        client_id: &str,
        redirect_uri: &str,
        challenge: &str,
        token: &str,
    ) -> HashMap<String, String> {
        let page = self
            .authorize(client_id, redirect_uri, challenge, &[])
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        let page = if page.body.contains("Sign in with a user token") {
            self.login_token(&page, token).await
        } else {
            page
        };
        assert_eq!(page.status, 200, "{}", page.body);
        let r = self.consent(&page, "approve").await;
        assert_eq!(r.status, 303, "{}", r.body);
        query(r.location())
    }

    /// A token request.
    pub async fn token(&mut self, pairs: &[(&str, &str)]) -> Resp {
        self.post_form_with("/oauth/token", pairs, &[]).await
    }

    /// Exchanges a code as a public client.
    pub async fn exchange(
        &mut self,
        client_id: &str,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Resp {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", redirect_uri),
        ])
        .await
    }

    /// `tools/list` on the MCP endpoint with `token`; the status.
    pub async fn mcp(&mut self, path: &str, token: &str) -> Resp {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}});
        let auth = format!("Bearer {token}");
        self.request(
            http::Method::POST,
            path,
            Some("application/json"),
            body.to_string().into_bytes(),
            &[
                ("authorization", &auth),
                ("accept", "application/json, text/event-stream"),
                ("mcp-protocol-version", "2025-11-25"),
            ],
        )
        .await
    }
}
