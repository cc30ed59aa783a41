//! Several `agentwire serve` replicas on one throwaway PostgreSQL behind the in-test load
//! balancer, as child processes of the real binary (so a kill is a real kill), with a
//! user and workspaces made through the admin API and agents run as `agentwire agent`
//! children pointed at the load balancer. Shared by `tests/replicas.rs` and
//! `benches/replicas.rs`.
//!
//! The replica flags live in [`serve_command`] alone. Replica mode is used when the binary
//! offers `--replica-url` (see [`replica_mode`]); without it the set has one replica.

#![allow(dead_code, clippy::disallowed_methods)]

use super::lb::Lb;
use super::pg::Cluster;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_agentwire");

/// How long a replica may take to answer `/healthz` after it is started.
const START_WAIT: Duration = Duration::from_secs(20);

/// Whether the binary runs replicas (`serve --replica-url`). `AGENTWIRE_REPLICAS=1`
/// forces the single-replica configuration.
pub fn replica_mode() -> bool {
    if std::env::var("AGENTWIRE_REPLICAS").as_deref() == Ok("1") {
        return false;
    }
    Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("--replica-url"))
        .unwrap_or(false)
}

/// `agentwire serve` as one replica: listening on `listen`, telling nodes the load
/// balancer's `public_url`, reachable by the other replicas at `replica_url` (replica
/// mode only), with the database URL in the environment (the CLI warns about one on the
/// command line).
pub fn serve_command(
    listen: SocketAddr,
    public_url: &str,
    replica_url: Option<&str>,
    data_dir: &Path,
    database_url: &str,
) -> Command {
    let mut c = Command::new(BIN);
    c.arg("serve")
        .args(["--listen", &listen.to_string()])
        .args(["--public-url", public_url])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--stun-listen", "off"])
        .env("AGENTWIRE_DATABASE_URL", database_url);
    if let Some(r) = replica_url {
        c.args(["--replica-url", r]);
    }
    c
}

/// `agentwire agent` for the token, joining at `url`, working in `dir`; `relay_only`
/// keeps it on the relay, otherwise it may take a direct UDP path on loopback.
pub fn agent_command(url: &str, token: &str, dir: &Path, relay_only: bool) -> Command {
    let mut c = Command::new(BIN);
    c.arg("agent")
        .args(["--url", url])
        .arg("--dir")
        .arg(dir)
        .args(["--udp", "127.0.0.1:0"])
        .env("AGENTWIRE_AGENT_TOKEN", token);
    if relay_only {
        c.arg("--relay-only");
    }
    c
}

/// A child process, its output in a log file; killed on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .env_remove("AGENTWIRE_DATA_DIR")
            .env_remove("AGENTWIRE_TOKEN")
            .env_remove("AGENTWIRE_METRICS_TOKEN")
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .env(
                "RUST_LOG",
                std::env::var("REPLICAS_LOG").unwrap_or_else(|_| "info".into()),
            );
        let child = cmd.spawn().expect("the binary starts");
        Self {
            name: name.into(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn signal(&self, s: Signal) {
        let _ = kill(self.pid(), s);
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        self.signal(Signal::SIGCONT);
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGSTOP: frozen, its sockets open.
    pub fn freeze(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Threads and open descriptors, from /proc.
    pub fn resources(&self) -> (usize, usize) {
        let pid = self.child.id();
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0);
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0);
        (threads, fds)
    }

    /// The last `n` lines of its log.
    pub fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Its whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One replica: a fixed port and data directory, so a restart is the same replica.
pub struct Replica {
    pub index: usize,
    pub addr: SocketAddr,
    pub data: PathBuf,
    pub proc: Option<Proc>,
    /// Starts so far (a restart is a new incarnation, its counters from zero).
    pub incarnation: u32,
}

impl Replica {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The replicas, their database and the load balancer in front.
pub struct ReplicaSet {
    pub pg: Arc<Cluster>,
    pub database_url: String,
    pub db: String,
    pub lb: Lb,
    pub replicas: Vec<Replica>,
    /// Replica mode (`--replica-url`) is in use.
    pub multi: bool,
    pub admin_token: String,
    pub dir: tempfile::TempDir,
    http: reqwest_lite::Client,
}

/// Starts a throwaway PostgreSQL, or says why the caller should skip: the reason, or a
/// panic when `AGENTWIRE_REQUIRE_PG=1`.
pub fn postgres_or_skip() -> Option<Cluster> {
    match Cluster::start() {
        Ok(c) => Some(c),
        Err(why) if std::env::var("AGENTWIRE_REQUIRE_PG").as_deref() == Ok("1") => {
            panic!("PostgreSQL is required (AGENTWIRE_REQUIRE_PG=1) but cannot run: {why}")
        }
        Err(why) => {
            eprintln!("skipping: PostgreSQL cannot run here: {why}");
            None
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl ReplicaSet {
    /// `n` replicas (one without replica mode) on a fresh database of `pg`, behind a
    /// load balancer with health checks; the first one started creates the admin.
    pub async fn start(pg: Arc<Cluster>, n: usize) -> Self {
        let multi = replica_mode();
        let n = if multi { n } else { 1 };
        let database_url = pg.database().await;
        let db = Cluster::name_of(&database_url).to_string();
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
            .collect();
        let lb = Lb::start(&addrs)
            .await
            .with_health_checks(Duration::from_millis(300));
        let mut dir = tempfile::Builder::new()
            .prefix("agentwire-replicas-")
            .tempdir()
            .expect("tempdir");
        // Logs and data directories kept for a look after the run.
        if std::env::var_os("REPLICAS_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("replica logs kept in {}", dir.path().display());
        }
        let replicas = addrs
            .iter()
            .enumerate()
            .map(|(index, addr)| Replica {
                index,
                addr: *addr,
                data: dir.path().join(format!("replica{index}")),
                proc: None,
                incarnation: 0,
            })
            .collect();
        let mut set = Self {
            pg,
            database_url,
            db,
            lb,
            replicas,
            multi,
            admin_token: String::new(),
            dir,
            http: reqwest_lite::Client,
        };
        // The first creates the admin and its token file; the rest start at once.
        set.start_replica(0).await;
        set.admin_token = std::fs::read_to_string(set.replicas[0].data.join("admin-token"))
            .expect("the first replica wrote the admin token")
            .trim()
            .to_string();
        let rest: Vec<usize> = (1..n).collect();
        for i in &rest {
            set.spawn_replica(*i);
        }
        for i in rest {
            set.wait_healthy(i).await;
        }
        let all: Vec<usize> = (0..n).collect();
        assert!(
            set.lb.wait_healthy(&all, START_WAIT).await,
            "the load balancer sees every replica"
        );
        set
    }

    pub fn public_url(&self) -> String {
        format!("http://{}", self.lb.addr)
    }

    fn spawn_replica(&mut self, i: usize) {
        let public = self.public_url();
        let r = &mut self.replicas[i];
        std::fs::create_dir_all(&r.data).expect("data dir");
        let own = r.url();
        let cmd = serve_command(
            r.addr,
            &public,
            self.multi.then_some(own.as_str()),
            &r.data,
            &self.database_url,
        );
        r.incarnation += 1;
        let log = self.dir.path().join(format!("replica{i}.log"));
        r.proc = Some(Proc::spawn(&format!("replica{i}"), cmd, log));
    }

    async fn wait_healthy(&mut self, i: usize) {
        let deadline = Instant::now() + START_WAIT;
        loop {
            let addr = self.replicas[i].addr;
            if let Some((200, _)) = self.http.get(addr, "/healthz", None).await {
                return;
            }
            let p = self.replicas[i].proc.as_mut().expect("started");
            if !p.alive() || Instant::now() > deadline {
                panic!("replica {i} did not come up:\n{}", p.tail(40));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts replica `i` (again, on its port and data directory) and waits for
    /// `/healthz`.
    pub async fn start_replica(&mut self, i: usize) {
        self.spawn_replica(i);
        self.wait_healthy(i).await;
        assert!(
            self.lb.wait_healthy(&[i], START_WAIT).await,
            "the load balancer sees replica {i} again"
        );
    }

    /// SIGKILL to replica `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.replicas[i].proc.take() {
            p.kill();
        }
    }

    pub fn freeze(&self, i: usize) {
        if let Some(p) = &self.replicas[i].proc {
            p.freeze();
        }
    }

    pub fn thaw(&self, i: usize) {
        if let Some(p) = &self.replicas[i].proc {
            p.thaw();
        }
    }

    /// Replica `i`'s `/metrics` (open: everything is on loopback), if it answers.
    pub async fn metrics(&self, i: usize) -> Option<String> {
        match self.http.get(self.replicas[i].addr, "/metrics", None).await {
            Some((200, body)) => Some(body),
            _ => None,
        }
    }

    /// An admin API call on replica `i`; status and JSON.
    pub async fn admin_on(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, text) = self
            .http
            .request(
                self.replicas[i].addr,
                method,
                &format!("/api/v0/admin{path}"),
                Some(&self.admin_token),
                body.map(|b| b.to_string()),
            )
            .await
            .unwrap_or((0, String::new()));
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// An admin call that must succeed, on the first replica that is up.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let i = self
            .replicas
            .iter()
            .position(|r| r.proc.is_some())
            .expect("a replica up");
        let (s, v) = self.admin_on(i, method, path, body).await;
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }

    /// Creates `user` and a token for them; the token.
    pub async fn user(&self, user: &str) -> String {
        self.admin("POST", "/users", Some(json!({ "name": user })))
            .await;
        let t = self
            .admin("POST", "/tokens", Some(json!({ "user": user })))
            .await;
        t["token"].as_str().expect("a token").to_string()
    }

    /// Creates workspace `owner/name` with one agent; the agent's id and token.
    pub async fn workspace(&self, owner: &str, name: &str) -> (String, String) {
        let body = json!({"owner": owner, "name": name, "shared_with": []});
        self.admin("POST", "/workspaces", Some(body)).await;
        let a = self
            .admin(
                "POST",
                "/agents",
                Some(json!({ "workspace": format!("{owner}/{name}") })),
            )
            .await;
        let id = a["agent"]["id"].as_str().expect("agent id").to_string();
        let token = a["token"]["token"]
            .as_str()
            .expect("agent token")
            .to_string();
        (id, token)
    }

    /// Runs an agent as a child process, joining through the load balancer.
    pub fn spawn_agent(&self, name: &str, token: &str, relay_only: bool) -> Proc {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("agent dir");
        let cmd = agent_command(&self.public_url(), token, &dir, relay_only);
        let log = self.dir.path().join(format!("{name}.log"));
        Proc::spawn(name, cmd, log)
    }

    /// The directory an agent spawned as `name` works in.
    pub fn agent_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replicas currently running.
    pub fn up(&self) -> Vec<usize> {
        (0..self.replicas.len())
            .filter(|i| self.replicas[*i].proc.is_some())
            .collect()
    }

    /// Rows the database still holds for replica incarnations that are gone: `replicas`
    /// rows other than the newest per replica URL (every replica of the set must be
    /// running), and `coord_peers` / `coord_tunnels` rows of any replica but those.
    /// `None` without replica mode (no such tables are written).
    pub async fn rows_left_behind(&self) -> Option<u64> {
        if !self.multi {
            return None;
        }
        const SQL: &str = "WITH live AS (SELECT DISTINCT ON (relay_url) id FROM replicas \
                           ORDER BY relay_url, started_at DESC) \
             SELECT ((SELECT count(*) FROM replicas WHERE id NOT IN (SELECT id FROM live)) \
             + (SELECT count(*) FROM coord_peers WHERE replica NOT IN (SELECT id FROM live)) \
             + (SELECT count(*) FROM coord_tunnels WHERE replica NOT IN (SELECT id FROM live)))::bigint";
        match self.pg.query_i64(&self.db, SQL, &[]).await {
            Ok(v) => Some(u64::try_from(v.unwrap_or(0)).unwrap_or(0)),
            Err(e) => panic!("counting the replicas' rows: {e}"),
        }
    }

    /// Whether every running replica's relay is meshed with all the others (its
    /// `/metrics` shows `agentwire_derp_mesh_peers` of at least the other replicas),
    /// waiting up to `within` for the links.
    pub async fn meshed(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let mut all = true;
            for i in self.up() {
                let peers = match self.metrics(i).await {
                    Some(page) => metric(&page, "agentwire_derp_mesh_peers", ""),
                    None => None,
                };
                all &= peers.is_some_and(|p| p as usize + 1 >= self.replicas.len());
            }
            if all || Instant::now() > deadline {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Transactions in the set's database so far.
    pub async fn transactions(&self) -> u64 {
        self.pg.transactions(&self.db).await.unwrap_or(0)
    }
}

/// A sample of metric `name` whose labels contain `labels` (`""`: the unlabelled one or
/// the first), from a Prometheus text page.
pub fn metric(page: &str, name: &str, labels: &str) -> Option<f64> {
    page.lines().find_map(|l| {
        if l.starts_with('#') {
            return None;
        }
        let (key, value) = l.rsplit_once(' ')?;
        let (n, rest) = match key.split_once('{') {
            Some((n, rest)) => (n, rest),
            None => (key, ""),
        };
        (n == name && rest.contains(labels))
            .then(|| value.parse().ok())
            .flatten()
    })
}

/// A minimal HTTP/1.1 client for the replicas' own endpoints: one request per
/// connection, bounded in time (a stopped replica must not stall the test).
pub mod reqwest_lite {
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const BOUND: Duration = Duration::from_secs(3);

    #[derive(Clone, Copy)]
    pub struct Client;

    impl Client {
        pub async fn get(
            &self,
            addr: SocketAddr,
            path: &str,
            token: Option<&str>,
        ) -> Option<(u16, String)> {
            self.request(addr, "GET", path, token, None).await
        }

        pub async fn request(
            &self,
            addr: SocketAddr,
            method: &str,
            path: &str,
            token: Option<&str>,
            body: Option<String>,
        ) -> Option<(u16, String)> {
            tokio::time::timeout(BOUND, async {
                let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
                let mut req =
                    format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
                if let Some(t) = token {
                    req.push_str(&format!("Authorization: Bearer {t}\r\n"));
                }
                let body = body.unwrap_or_default();
                if !body.is_empty() {
                    req.push_str("Content-Type: application/json\r\n");
                }
                req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
                s.write_all(req.as_bytes()).await.ok()?;
                let mut out = Vec::new();
                s.read_to_end(&mut out).await.ok()?;
                let text = String::from_utf8_lossy(&out).into_owned();
                let status = text.split(' ').nth(1)?.parse().ok()?;
                let (head, rest) = text.split_once("\r\n\r\n")?;
                let body = if head
                    .to_ascii_lowercase()
                    .contains("transfer-encoding: chunked")
                {
                    dechunk(rest)
                } else {
                    rest.to_string()
                };
                Some((status, body))
            })
            .await
            .ok()
            .flatten()
        }
    }

    fn dechunk(mut s: &str) -> String {
        let mut out = String::new();
        while let Some((size, rest)) = s.split_once("\r\n") {
            let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            if n == 0 || rest.len() < n {
                break;
            }
            out.push_str(&rest[..n]);
            s = rest[n..].trim_start_matches("\r\n");
        }
        out
    }
}
