//! MCP front-end configuration: where it is reachable (for Host/Origin checks and the
//! protected-resource metadata), limits, and the loopback-only dev option.

use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;

/// Front-end settings. `Default` suits a loopback test server once `listen_addr` is set.
#[derive(Debug, Clone, Default)]
pub struct McpConfig {
    /// The URL clients use to reach this server (scheme, host, optional port, optional base
    /// path), e.g. `https://mcp.example.com`. Its host is an allowed `Host`, its origin an
    /// allowed `Origin`, and it prefixes the URLs in `WWW-Authenticate` and the
    /// protected-resource metadata. Without it those derive from `listen_addr`.
    pub public_url: Option<String>,
    /// The socket address the server listens on. A loopback address allows the loopback
    /// names (`localhost`, `127.0.0.1`, `::1`) as hosts and their `http://…:PORT` origins.
    pub listen_addr: Option<SocketAddr>,
    /// More allowed `Host` values (`name` for any port, or `name:port`), e.g. behind a proxy.
    pub allowed_hosts: Vec<String>,
    /// More allowed browser origins (`scheme://host[:port|:*]`). Requests without an
    /// `Origin` header are always accepted; ones with any other origin get 403.
    pub allowed_origins: Vec<String>,
    /// Size and time limits.
    pub limits: McpLimits,
    /// **Development only.** Serve requests without a bearer token, acting as this user.
    /// Honoured only when `listen_addr` is a loopback address (see [`McpConfig::validate`]);
    /// it exists so third-party test suites that send no credentials can run. A warning is
    /// logged on every unauthenticated request.
    pub allow_unauthenticated: Option<String>,
}

/// Size and time limits. Every bound a caller's input can reach is here.
#[derive(Debug, Clone)]
pub struct McpLimits {
    /// Largest HTTP request body (413 beyond).
    pub max_body_bytes: usize,
    /// How long a tool waits for an agent connection.
    pub connect_timeout: Duration,
    /// How long one agent API call (other than a running command) may take.
    pub request_timeout: Duration,
    /// `workspace_bash` timeout when none is given.
    pub bash_default_timeout_ms: u64,
    /// Largest `workspace_bash` timeout accepted.
    pub bash_max_timeout_ms: u64,
    /// How long one output poll waits on the agent; also the longest gap between progress
    /// notifications while a command prints nothing.
    pub poll_interval: Duration,
    /// Command output returned by a tool; beyond it the tail is kept.
    pub max_output_bytes: usize,
    /// Longest `command`.
    pub max_command_bytes: usize,
    /// Longest path argument.
    pub max_path_bytes: usize,
    /// `workspace_read_file` limit when none is given.
    pub read_default_bytes: u64,
    /// Largest `workspace_read_file` limit.
    pub read_max_bytes: u64,
    /// `workspace_read_file_lines` limit when none is given.
    pub lines_default: u64,
    /// Largest `workspace_read_file_lines` limit.
    pub lines_max: u64,
    /// Largest decoded `workspace_write_file` content.
    pub write_max_bytes: usize,
    /// Most files in one `workspace_edit_files` call.
    pub edit_max_files: usize,
    /// Bounds on `search` (chatgpt toolset).
    pub search: SearchLimits,
    /// Tool calls one user may have in flight at once, across all sessions, so one user
    /// cannot occupy the server. Beyond it as many more may wait for a slot, each up to
    /// `call_queue_wait`; the rest, and those whose wait runs out, are answered with a
    /// tool error.
    pub max_calls_per_user: usize,
    /// How long a call over its user's cap waits for a slot (zero: refused at once).
    pub call_queue_wait: Duration,
}

impl Default for McpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 8 << 20,
            connect_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(60),
            bash_default_timeout_ms: 60_000,
            bash_max_timeout_ms: 600_000,
            poll_interval: Duration::from_secs(1),
            max_output_bytes: 256 << 10,
            max_command_bytes: 64 << 10,
            max_path_bytes: 4096,
            read_default_bytes: 256 << 10,
            read_max_bytes: 1 << 20,
            lines_default: 500,
            lines_max: 5000,
            write_max_bytes: 4 << 20,
            edit_max_files: 100,
            search: SearchLimits::default(),
            max_calls_per_user: 64,
            call_queue_wait: Duration::from_secs(2),
        }
    }
}

/// Bounds on one `search`: it walks each workspace's directory tree through the agent API,
/// so every dimension of that walk is capped.
#[derive(Debug, Clone)]
pub struct SearchLimits {
    /// Longest query.
    pub max_query_bytes: usize,
    /// Workspaces whose files are searched (name matches are not limited by this).
    pub max_workspaces: usize,
    /// Directory levels below the workspace's directory.
    pub max_depth: usize,
    /// Directory entries examined per workspace.
    pub max_entries: usize,
    /// Directories listed per workspace.
    pub max_dirs: usize,
    /// File bytes read per workspace to match content.
    pub max_bytes: u64,
    /// Bytes read from one file (files larger than this are matched by path only).
    pub max_file_bytes: u64,
    /// Results returned.
    pub max_results: usize,
    /// Wall time for the whole search.
    pub timeout: Duration,
}

impl Default for SearchLimits {
    fn default() -> Self {
        Self {
            max_query_bytes: 512,
            max_workspaces: 8,
            max_depth: 4,
            max_entries: 2000,
            max_dirs: 200,
            max_bytes: 4 << 20,
            max_file_bytes: 256 << 10,
            max_results: 20,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why an [`McpConfig`] was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum McpConfigError {
    /// `public_url` is not an absolute `http`/`https` URL.
    #[error("public_url {0:?} is not an absolute http(s) URL")]
    PublicUrl(String),
    /// The dev option was asked for on a non-loopback listener.
    #[error(
        "allow_unauthenticated is only allowed when listening on a loopback address (listen address: {0})"
    )]
    UnauthenticatedNotLoopback(String),
}

/// A parsed `public_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublicUrl {
    /// `http` or `https`.
    pub scheme: String,
    /// Host as written (IPv6 in brackets).
    pub host: String,
    /// Explicit port, if any.
    pub port: Option<u16>,
    /// Base path without a trailing slash (empty for the root).
    pub base_path: String,
}

impl PublicUrl {
    pub(crate) fn parse(s: &str) -> Result<Self, McpConfigError> {
        let bad = || McpConfigError::PublicUrl(s.chars().take(200).collect());
        let uri: http::Uri = s.parse().map_err(|_| bad())?;
        let scheme = uri.scheme_str().ok_or_else(bad)?.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(bad());
        }
        let auth = uri.authority().ok_or_else(bad)?;
        if auth.as_str().contains('@') || uri.query().is_some() {
            return Err(bad());
        }
        let host = auth.host().to_ascii_lowercase();
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            scheme,
            host,
            port: auth.port_u16(),
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// `scheme://host[:port]`.
    pub(crate) fn origin(&self) -> String {
        match self.port {
            Some(p) => format!("{}://{}:{p}", self.scheme, self.host),
            None => format!("{}://{}", self.scheme, self.host),
        }
    }
}

impl McpConfig {
    /// Checks the config: `public_url` parses, and `allow_unauthenticated` is only set with
    /// a loopback `listen_addr`.
    ///
    /// # Errors
    /// [`McpConfigError`] naming the problem.
    pub fn validate(&self) -> Result<(), McpConfigError> {
        if let Some(u) = &self.public_url {
            PublicUrl::parse(u)?;
        }
        if self.allow_unauthenticated.is_some() && !self.is_loopback() {
            let addr = self
                .listen_addr
                .map_or_else(|| "unknown".to_string(), |a| a.to_string());
            return Err(McpConfigError::UnauthenticatedNotLoopback(addr));
        }
        Ok(())
    }

    fn is_loopback(&self) -> bool {
        self.listen_addr.is_some_and(|a| a.ip().is_loopback())
    }

    /// The dev user to act as, only when the config allows it.
    pub(crate) fn dev_user(&self) -> Option<&str> {
        self.allow_unauthenticated
            .as_deref()
            .filter(|_| self.is_loopback())
    }

    pub(crate) fn public(&self) -> Option<PublicUrl> {
        self.public_url
            .as_deref()
            .and_then(|u| PublicUrl::parse(u).ok())
    }

    /// Base URL the server's own links start with (no trailing slash).
    pub(crate) fn base_url(&self) -> String {
        if let Some(p) = self.public() {
            return format!("{}{}", p.origin(), p.base_path);
        }
        match self.listen_addr {
            Some(a) if a.ip().is_unspecified() => format!("http://localhost:{}", a.port()),
            Some(a) => format!("http://{a}"),
            None => "http://localhost".into(),
        }
    }

    /// `Host` values rmcp accepts: the public URL's host, the loopback names when listening
    /// on loopback, the listen address itself, and the configured extras.
    pub(crate) fn effective_hosts(&self) -> Vec<String> {
        let mut hosts = Vec::new();
        if let Some(p) = self.public() {
            hosts.push(match p.port {
                Some(port) => format!("{}:{port}", p.host),
                None => p.host.clone(),
            });
        }
        if let Some(a) = self.listen_addr {
            if a.ip().is_loopback() || a.ip().is_unspecified() {
                for h in ["localhost", "127.0.0.1", "[::1]"] {
                    hosts.push(format!("{h}:{}", a.port()));
                }
            }
            if !a.ip().is_unspecified() {
                hosts.push(a.to_string());
            }
        }
        hosts.extend(self.allowed_hosts.iter().cloned());
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// Origins rmcp accepts (always enforced): the public URL's origin, the server's own
    /// loopback origins, and the configured extras.
    pub(crate) fn effective_origins(&self) -> Vec<String> {
        let mut origins = Vec::new();
        if let Some(p) = self.public() {
            let port = p.port.unwrap_or(if p.scheme == "https" { 443 } else { 80 });
            origins.push(format!("{}://{}:{port}", p.scheme, p.host));
        }
        if let Some(a) = self.listen_addr {
            if a.ip().is_loopback() || a.ip().is_unspecified() {
                for h in ["localhost", "127.0.0.1", "[::1]"] {
                    origins.push(format!("http://{h}:{}", a.port()));
                }
            } else {
                origins.push(format!("http://{a}"));
            }
        }
        origins.extend(self.allowed_origins.iter().cloned());
        origins.sort();
        origins.dedup();
        origins
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_parsing() {
        let p = PublicUrl::parse("https://MCP.example.com/base/").unwrap();
        assert_eq!(p.scheme, "https");
        assert_eq!(p.host, "mcp.example.com");
        assert_eq!(p.port, None);
        assert_eq!(p.base_path, "/base");
        assert_eq!(p.origin(), "https://mcp.example.com");
        let p = PublicUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("[::1]", Some(8080)));
        for bad in [
            "",
            "mcp.example.com",
            "ftp://x",
            "/relative",
            "https://user@host",
            "https://host/?q=1",
        ] {
            assert!(PublicUrl::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts_and_origins_from_listen_and_public_url() {
        let cfg = McpConfig {
            public_url: Some("https://mcp.example.com".into()),
            listen_addr: Some("127.0.0.1:4000".parse().unwrap()),
            allowed_hosts: vec!["proxy.internal".into()],
            ..Default::default()
        };
        let hosts = cfg.effective_hosts();
        for h in [
            "mcp.example.com",
            "localhost:4000",
            "127.0.0.1:4000",
            "[::1]:4000",
            "proxy.internal",
        ] {
            assert!(hosts.contains(&h.to_string()), "{h} in {hosts:?}");
        }
        let origins = cfg.effective_origins();
        assert!(origins.contains(&"https://mcp.example.com:443".to_string()));
        assert!(origins.contains(&"http://localhost:4000".to_string()));
        assert_eq!(cfg.base_url(), "https://mcp.example.com");
    }

    #[test]
    fn unauthenticated_only_on_loopback() {
        let mut cfg = McpConfig {
            listen_addr: Some("0.0.0.0:4000".parse().unwrap()),
            allow_unauthenticated: Some("demo".into()),
            ..Default::default()
        };
        assert!(matches!(
            cfg.validate(),
            Err(McpConfigError::UnauthenticatedNotLoopback(_))
        ));
        assert_eq!(cfg.dev_user(), None);
        cfg.listen_addr = Some("127.0.0.1:4000".parse().unwrap());
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!(cfg.dev_user(), Some("demo"));
        cfg.listen_addr = None;
        assert_eq!(cfg.dev_user(), None);
    }
}
