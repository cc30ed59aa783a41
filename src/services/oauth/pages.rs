//! The HTML pages people see: sign in, consent, errors, connected apps.
//!
//! Plain server-rendered HTML that works without JavaScript (there is none), with real
//! `<label>`s, `autocomplete` hints, visible focus, a light and a dark scheme, and
//! one inline stylesheet allowed by its hash in the Content-Security-Policy. Everything
//! that comes from a client or a user is escaped.

use crate::proto::oauth::redirect::Target;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use std::fmt::Write as _;
use std::sync::LazyLock;

const CSS: &str = "\
:root{color-scheme:light dark;--bg:#f4f5f7;--card:#fff;--fg:#1c2128;--muted:#59636e;--line:#d1d9e0;\
--accent:#0a58ca;--accent-fg:#fff;--warn-bg:#fff8c5;--warn-line:#bf8700;--err-bg:#ffebe9;--err-line:#cf222e}\
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--card:#151b23;--fg:#e6edf3;--muted:#9198a1;\
--line:#3d444d;--accent:#4493f8;--accent-fg:#0d1117;--warn-bg:#2e2608;--warn-line:#bb8009;--err-bg:#2d1216;--err-line:#f85149}}\
*{box-sizing:border-box}\
body{margin:0;background:var(--bg);color:var(--fg);font:16px/1.55 system-ui,-apple-system,\"Segoe UI\",Roboto,\"Noto Sans\",sans-serif}\
main{max-width:30rem;margin:0 auto;padding:3rem 1rem}\
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:1.75rem 1.75rem 1.5rem;box-shadow:0 1px 3px rgba(0,0,0,.06)}\
.brand{margin:0 0 1.25rem;font-size:.85rem;color:var(--muted);letter-spacing:.02em}\
.brand b{color:var(--fg)}\
h1{font-size:1.4rem;line-height:1.3;margin:0 0 .5rem}\
h2{font-size:1rem;margin:1.25rem 0 .5rem}\
p{margin:.5rem 0}\
ul{margin:.25rem 0 .5rem;padding-left:1.25rem}\
label{display:block;font-weight:600;margin:1rem 0 .35rem}\
input[type=text],input[type=password]{width:100%;padding:.65rem .75rem;font:inherit;color:inherit;background:var(--bg);border:1px solid var(--line);border-radius:8px}\
input:focus-visible,button:focus-visible,a:focus-visible,summary:focus-visible{outline:3px solid var(--accent);outline-offset:2px}\
button{font:inherit;font-weight:600;padding:.6rem 1.2rem;border-radius:8px;border:1px solid var(--line);background:var(--card);color:var(--fg);cursor:pointer}\
button.primary{background:var(--accent);border-color:var(--accent);color:var(--accent-fg)}\
button.link{border:0;background:none;padding:0;color:var(--accent);font-weight:400;text-decoration:underline}\
a{color:var(--accent)}\
.actions{display:flex;gap:.75rem;margin-top:1.5rem;flex-wrap:wrap}\
.note{color:var(--muted);font-size:.9rem}\
.alert,.warn{border:1px solid var(--err-line);background:var(--err-bg);border-radius:8px;padding:.65rem .85rem;margin:1rem 0}\
.warn{border-color:var(--warn-line);background:var(--warn-bg)}\
.box{border:1px solid var(--line);border-radius:8px;padding:.25rem 1rem .5rem;margin:1rem 0}\
dl{margin:1rem 0 0}dt{font-size:.85rem;color:var(--muted);margin-top:.75rem}dd{margin:.1rem 0 0}\
code{font-size:.9em;word-break:break-all}\
details{margin-top:1.25rem;border-top:1px solid var(--line);padding-top:1rem}\
summary{cursor:pointer;font-weight:600}\
table{width:100%;border-collapse:collapse;margin-top:1rem;font-size:.95rem}\
th,td{text-align:left;padding:.5rem .35rem;border-bottom:1px solid var(--line);vertical-align:top}\
th{font-size:.8rem;color:var(--muted);font-weight:600}\
.inline{display:inline}\
.foot{text-align:center;font-size:.8rem;color:var(--muted);margin-top:1.25rem}";

/// The Content-Security-Policy: nothing but this stylesheet; no scripts, no frames, no
/// plugins, and nobody may frame these pages (clickjacking on the consent button).
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(CSS.as_bytes()));
    let v = format!(
        "default-src 'none'; style-src 'sha256-{hash}'; img-src data:; base-uri 'none'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// Escapes text for HTML content and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => {}
            c => out.push(c),
        }
    }
    out
}

/// A page: title and body HTML (already escaped where needed).
pub(crate) struct Page {
    pub status: StatusCode,
    pub title: String,
    pub body: String,
    /// `Set-Cookie` values to send with it.
    pub cookies: Vec<String>,
}

impl Page {
    pub(crate) fn new(status: StatusCode, title: impl Into<String>, body: String) -> Self {
        Self {
            status,
            title: title.into(),
            body,
            cookies: Vec::new(),
        }
    }

    pub(crate) fn with_cookie(mut self, c: String) -> Self {
        self.cookies.push(c);
        self
    }
}

/// Headers every page and form response carries.
pub(crate) fn secure_headers(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it browsers send `Origin: null` on our own form posts,
    // which the cross-origin check must then refuse. `same-origin` still sends nothing
    // to the client's redirect URI or any other site.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let html = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta name=\"robots\" content=\"noindex\"><link rel=\"icon\" href=\"data:,\"><title>{} · agentwire</title><style>{CSS}</style></head>\
<body><main>{}<p class=\"foot\">agentwire</p></main></body></html>\n",
            esc(&self.title),
            self.body
        );
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response();
        secure_headers(&mut r);
        for c in self.cookies {
            if let Ok(v) = HeaderValue::from_str(&c) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        r
    }
}

/// Who is asking, as shown on the pages.
#[derive(Debug, Clone)]
pub(crate) struct ClientView {
    /// Display name (the client's, or its id).
    pub name: String,
    /// `client_id`.
    pub client_id: String,
    /// Whether the id is a metadata document URL (its host vouches for the metadata).
    pub document: bool,
}

/// Hidden fields every form of one authorization carries.
pub(crate) struct Flow<'a> {
    /// Where forms post (`{base path}/oauth/…`).
    pub base: &'a str,
    /// The issuer's host, for the header line.
    pub host: &'a str,
    /// The pending request id.
    pub request: &'a str,
    /// Its CSRF token.
    pub csrf: &'a str,
}

fn hidden(f: &Flow<'_>) -> String {
    format!(
        "<input type=\"hidden\" name=\"request\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(f.request),
        esc(f.csrf)
    )
}

fn brand(host: &str) -> String {
    format!("<p class=\"brand\"><b>agentwire</b> · {}</p>", esc(host))
}

fn alert(error: Option<&str>) -> String {
    error.map_or_else(String::new, |e| {
        format!(
            "<div class=\"alert\" role=\"alert\" id=\"error\">{}</div>",
            esc(e)
        )
    })
}

/// The sign-in page of an authorization (`client` set) or of the connected-apps page.
pub(crate) fn login(
    f: &Flow<'_>,
    client: Option<&ClientView>,
    passwords: bool,
    error: Option<&str>,
    status: StatusCode,
) -> Page {
    let mut b = String::from("<div class=\"card\">");
    b.push_str(&brand(f.host));
    b.push_str("<h1>Sign in</h1>");
    match client {
        Some(c) => {
            let _ = write!(
                b,
                "<p>to connect <strong>{}</strong> to agentwire.</p>",
                esc(&c.name)
            );
        }
        None => b.push_str("<p>to see the apps connected to your account.</p>"),
    }
    b.push_str(&alert(error));
    let described = if error.is_some() {
        " aria-describedby=\"error\""
    } else {
        ""
    };
    let action = format!("{}/oauth/login", f.base);
    if passwords {
        let _ = write!(
            b,
            "<form method=\"post\" action=\"{action}\">{}<input type=\"hidden\" name=\"method\" value=\"password\">\
<label for=\"username\">User name</label>\
<input id=\"username\" name=\"username\" type=\"text\" autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required autofocus{described}>\
<label for=\"password\">Password</label>\
<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
<div class=\"actions\"><button class=\"primary\" type=\"submit\">Sign in</button></div></form>",
            hidden(f)
        );
    }
    let open = if passwords { "" } else { " open" };
    let autofocus = if passwords { "" } else { " autofocus" };
    let _ = write!(
        b,
        "<details{open}><summary>Sign in with a user token</summary>\
<form method=\"post\" action=\"{action}\">{}<input type=\"hidden\" name=\"method\" value=\"token\">\
<label for=\"token\">User token</label>\
<input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" spellcheck=\"false\" required aria-describedby=\"token-help\"{autofocus}>\
<p class=\"note\" id=\"token-help\">The <code>aw_…</code> token you use with <code>Authorization: Bearer</code>.</p>\
<div class=\"actions\"><button type=\"submit\"{}>Sign in with token</button></div></form></details>",
        hidden(f),
        if passwords { "" } else { " class=\"primary\"" }
    );
    b.push_str("</div>");
    Page::new(status, "Sign in", b)
}

/// Where the consent goes, in words.
fn target_words(t: &Target) -> String {
    match t {
        Target::Web(host) => format!("<strong>{}</strong>", esc(host)),
        Target::Loopback(at) => format!("an app on this computer (<code>{}</code>)", esc(at)),
        Target::Native(scheme) => format!(
            "the app on this device that opens <code>{}:</code> links",
            esc(scheme)
        ),
    }
}

/// What the consent page needs to say.
pub(crate) struct Consent<'a> {
    pub client: &'a ClientView,
    pub user: &'a str,
    pub target: Target,
    pub resource: &'a str,
    pub refresh_days: u64,
    pub grants_url: &'a str,
}

/// The consent page.
pub(crate) fn consent(f: &Flow<'_>, c: &Consent<'_>) -> Page {
    let name = esc(&c.client.name);
    let mut b = String::from("<div class=\"card\">");
    b.push_str(&brand(f.host));
    let _ = write!(b, "<h1>Allow {name} to use agentwire?</h1>");
    let _ = write!(
        b,
        "<form class=\"inline\" method=\"post\" action=\"{}/oauth/logout\">{}\
<p>Signed in as <strong>{}</strong>. <button class=\"link\" type=\"submit\">Not you? Sign out</button></p></form>",
        f.base,
        hidden(f),
        esc(c.user)
    );
    let _ = write!(
        b,
        "<div class=\"box\"><h2>{name} will be able to</h2><ul>\
<li>list your workspaces and those shared with you</li>\
<li>run commands in them</li>\
<li>read, write and edit their files</li></ul>\
<p class=\"note\">as <strong>{}</strong>, with your permissions, through <code>{}</code></p></div>",
        esc(c.user),
        esc(c.resource)
    );
    b.push_str("<dl>");
    let _ = write!(
        b,
        "<dt>After you choose, you go to</dt><dd>{}</dd>",
        target_words(&c.target)
    );
    if c.client.document {
        let host = crate::wire::oauth::uri::Uri::parse(&c.client.client_id)
            .ok()
            .and_then(|u| u.authority.map(|a| a.host_raw.to_string()))
            .unwrap_or_default();
        let _ = write!(
            b,
            "<dt>Who says this is {name}</dt><dd><strong>{}</strong>, which publishes its details at <code>{}</code></dd>",
            esc(&host),
            esc(&c.client.client_id)
        );
    } else {
        let _ = write!(
            b,
            "<dt>Who says this is {name}</dt><dd>Nobody: the app registered itself with this server, and its name is not verified (client <code>{}</code>).</dd>",
            esc(&c.client.client_id)
        );
    }
    let _ = write!(
        b,
        "<dt>Access lasts</dt><dd>until you disconnect it on <a href=\"{}\">Connected apps</a>, or it goes unused for {} days</dd></dl>",
        esc(c.grants_url),
        c.refresh_days
    );
    if !c.client.document {
        b.push_str("<p class=\"warn\">Only allow this if you started connecting this app yourself, just now.</p>");
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"{}/oauth/consent\">{}\
<div class=\"actions\"><button class=\"primary\" type=\"submit\" name=\"decision\" value=\"approve\">Allow</button>\
<button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></div></form></div>",
        f.base,
        hidden(f)
    );
    Page::new(StatusCode::OK, format!("Allow {}?", c.client.name), b)
}

/// An error page: the request cannot continue and nothing was sent to the app.
pub(crate) fn error(status: StatusCode, host: &str, title: &str, detail: &str) -> Page {
    let b = format!(
        "<div class=\"card\">{}<h1>{}</h1><p role=\"alert\">{}</p>\
<p class=\"note\">Nothing was sent to the app. Close this page and start connecting again from the app.</p></div>",
        brand(host),
        esc(title),
        esc(detail)
    );
    Page::new(status, title, b)
}

/// A short message page.
pub(crate) fn message(host: &str, title: &str, detail: &str) -> Page {
    let b = format!(
        "<div class=\"card\">{}<h1>{}</h1><p>{}</p></div>",
        brand(host),
        esc(title),
        esc(detail)
    );
    Page::new(StatusCode::OK, title, b)
}

/// One row of the connected-apps page.
pub(crate) struct GrantRow {
    pub id: String,
    pub app: String,
    pub since: String,
    pub last: String,
}

/// The connected-apps page.
pub(crate) fn grants(
    base: &str,
    host: &str,
    user: &str,
    csrf: &str,
    rows: &[GrantRow],
    notice: Option<&str>,
) -> Page {
    let mut b = String::from("<div class=\"card\">");
    b.push_str(&brand(host));
    b.push_str("<h1>Connected apps</h1>");
    let _ = write!(
        b,
        "<form class=\"inline\" method=\"post\" action=\"{base}/oauth/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<p>Signed in as <strong>{}</strong>. <button class=\"link\" type=\"submit\">Sign out</button></p></form>",
        esc(csrf),
        esc(user)
    );
    if let Some(n) = notice {
        let _ = write!(b, "<p class=\"note\" role=\"status\">{}</p>", esc(n));
    }
    if rows.is_empty() {
        b.push_str("<p>No apps are connected to your account.</p>");
    } else {
        b.push_str("<table><caption class=\"note\">Apps that can use agentwire as you. Disconnecting one ends its access at once.</caption>\
<thead><tr><th scope=\"col\">App</th><th scope=\"col\">Connected</th><th scope=\"col\">Last refreshed</th><th scope=\"col\"><span class=\"note\">Action</span></th></tr></thead><tbody>");
        for r in rows {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><form method=\"post\" action=\"{base}/oauth/grants/revoke\">\
<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"grant\" value=\"{}\">\
<button type=\"submit\" aria-label=\"Disconnect {}\">Disconnect</button></form></td></tr>",
                esc(&r.app),
                esc(&r.since),
                esc(&r.last),
                esc(csrf),
                esc(&r.id),
                esc(&r.app)
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</div>");
    Page::new(StatusCode::OK, "Connected apps", b)
}

/// A Unix time as `2026-12-02T19:00:00Z`.
pub(crate) fn date(t: crate::proto::oauth::UnixTime) -> String {
    crate::services::mcp::provider::tailnet::fmt_utc_ms(t.0.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc("<script>\"a\"&'b'</script>\u{7}"),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn hostile_names_are_inert() {
        let c = ClientView {
            name: "<img src=x onerror=alert(1)>".into(),
            client_id: "aw-1\"><script>".into(),
            document: false,
        };
        let f = Flow {
            base: "",
            host: "h",
            request: "r\"",
            csrf: "c",
        };
        let page = consent(
            &f,
            &Consent {
                client: &c,
                user: "alice",
                target: Target::Web("evil.example\"".into()),
                resource: "https://h/mcp",
                refresh_days: 30,
                grants_url: "/oauth/grants",
            },
        );
        assert!(!page.body.contains("<img") && !page.body.contains("<script"));
        assert!(page.body.contains("&lt;img src=x"));
        let page = login(
            &f,
            Some(&c),
            true,
            Some("<b>bad</b>"),
            StatusCode::UNAUTHORIZED,
        );
        assert!(!page.body.contains("<b>bad"));
        assert!(page.body.contains("autocomplete=\"current-password\""));
    }
}
