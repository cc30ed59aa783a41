//! Headless Chromium (the Debian `chromium` package) driven over the DevTools protocol:
//! one browser per test binary, one page, commands over its websocket.
#![allow(dead_code, clippy::disallowed_methods)]

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Chromium {
    child: Child,
    ws: Ws,
    session: String,
    next: u64,
    /// Events seen while waiting for answers: (method, params).
    events: Vec<(String, Value)>,
    _profile: tempfile::TempDir,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the Debian package puts it.
pub fn executable() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Chromium {
    /// Starts a fresh headless Chromium with its own profile.
    pub async fn launch(exe: &Path) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--window-size=900,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let (port, path) = loop {
            if let Ok(s) = std::fs::read_to_string(&port_file) {
                let mut l = s.lines();
                if let (Some(p), Some(path)) = (l.next(), l.next()) {
                    break (p.trim().to_string(), path.trim().to_string());
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}{path}"))
            .await
            .expect("DevTools websocket");
        let mut c = Self {
            child,
            ws,
            session: String::new(),
            next: 1,
            events: Vec::new(),
            _profile: profile,
        };
        let t = c
            .browser_call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target = t["targetId"].as_str().unwrap().to_string();
        let s = c
            .browser_call(
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await;
        c.session = s["sessionId"].as_str().unwrap().to_string();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            c.call(domain, json!({})).await;
        }
        c
    }

    async fn send(&mut self, method: &str, params: Value, session: bool) -> Value {
        let id = self.next;
        self.next += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if session {
            msg["sessionId"] = self.session.clone().into();
        }
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .expect("send to chromium");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"))
                .expect("chromium closed")
                .expect("websocket error");
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"].as_u64() == Some(id) {
                assert!(v.get("error").is_none(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
            if let Some(m) = v["method"].as_str() {
                self.events.push((m.to_string(), v["params"].clone()));
            }
        }
    }

    async fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, false).await
    }

    /// A command to the page.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, true).await
    }

    /// Waits for an event of `method` seen since `from` (an index into the event log).
    async fn wait_event(&mut self, method: &str, from: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.events[from..].iter().any(|(m, _)| m == method) {
                return;
            }
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no {method} from chromium"))
                .expect("chromium closed")
                .expect("websocket error");
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if let Some(m) = v["method"].as_str() {
                    self.events.push((m.to_string(), v["params"].clone()));
                }
            }
        }
    }

    /// Opens `url` and waits for it to load.
    pub async fn open(&mut self, url: &str) {
        let from = self.events.len();
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_event("Page.loadEventFired", from).await;
    }

    /// Evaluates JavaScript in the page (the test's own script, not the page's: the pages
    /// have none) and returns its value.
    pub async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Types `text` into the element `selector` as keyboard input.
    pub async fn type_into(&mut self, selector: &str, text: &str) {
        let found = self
            .eval(&format!("(() => {{ const e = document.querySelector({selector:?}); if (!e) return false; e.focus(); return true; }})()"))
            .await;
        assert_eq!(found, Value::Bool(true), "no {selector}");
        self.call("Input.insertText", json!({"text": text})).await;
    }

    /// Clicks `selector` with the mouse (at its centre) and waits for the next page load.
    pub async fn click_and_load(&mut self, selector: &str) {
        let from = self.events.len();
        self.click(selector).await;
        self.wait_event("Page.loadEventFired", from).await;
    }

    /// Clicks `selector` with the mouse at its centre.
    pub async fn click(&mut self, selector: &str) {
        let r = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({selector:?}); if (!e) return null; e.scrollIntoView(); const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
            ))
            .await;
        let (x, y) = (
            r[0].as_f64().unwrap_or_else(|| panic!("no {selector}")),
            r[1].as_f64().unwrap(),
        );
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await;
        }
    }

    /// The page's URL.
    pub async fn url(&mut self) -> String {
        self.eval("location.href")
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The page's visible text.
    pub async fn text(&mut self) -> String {
        self.eval("document.body.innerText")
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Saves a PNG screenshot of the whole page.
    pub async fn screenshot(&mut self, path: &Path) {
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).unwrap();
    }

    /// Forgets every cookie.
    pub async fn clear_cookies(&mut self) {
        self.call("Network.clearBrowserCookies", json!({})).await;
    }

    /// Prefers a dark (or light) colour scheme.
    pub async fn color_scheme(&mut self, dark: bool) {
        let v = if dark { "dark" } else { "light" };
        self.call(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": v}]}),
        )
        .await;
    }

    /// Console and browser log errors since the start (a blocked stylesheet, say).
    pub fn errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|(m, p)| {
                // Network entries report HTTP statuses (a refused sign-in is a 401 on
                // purpose); the tests assert those themselves.
                (m == "Log.entryAdded"
                    && p["entry"]["level"] == "error"
                    && p["entry"]["source"] != "network")
                    || (m == "Runtime.consoleAPICalled" && p["type"] == "error")
                    || m == "Runtime.exceptionThrown"
            })
            .map(|(_, p)| p.to_string())
            .collect()
    }

    /// Accessibility problems on the page: form controls and buttons without an
    /// accessible name, and the document's language and title.
    pub async fn accessibility_problems(&mut self) -> Vec<String> {
        let tree = self.call("Accessibility.getFullAXTree", json!({})).await;
        let mut problems = Vec::new();
        for n in tree["nodes"].as_array().cloned().unwrap_or_default() {
            if n["ignored"] == true {
                continue;
            }
            let role = n["role"]["value"].as_str().unwrap_or("");
            let name = n["name"]["value"].as_str().unwrap_or("");
            if matches!(
                role,
                "textbox" | "button" | "checkbox" | "combobox" | "link"
            ) && name.trim().is_empty()
            {
                problems.push(format!("{role} without an accessible name"));
            }
        }
        let lang = self.eval("document.documentElement.lang").await;
        if lang.as_str().is_none_or(str::is_empty) {
            problems.push("no lang on <html>".into());
        }
        let title = self.eval("document.title").await;
        if title.as_str().is_none_or(str::is_empty) {
            problems.push("no <title>".into());
        }
        problems
    }
}
