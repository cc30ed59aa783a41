//! `agentwire serve`: everything in one process on one address — the MCP endpoint, the
//! coordinator, the DERP relay and its map, health and metrics — plus the shared Tailnet
//! the MCP tools use, and, in the embedded default, a demo workspace agent running
//! in-process and reached over the real tunnel like any remote agent.

use super::agent::{Agent, AgentConfig};
use super::control::{ControlPlane, generate_token};
use super::hub::{self, Hub};
pub use super::mcp::TailnetAgentProvider;
use super::mcp::{self, McpConfig, McpState};
use super::stun::StunServer;
use crate::runtime::tailnet::{Tailnet, TailnetConfig};
use crate::wire::key::NodePrivate;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod config;
pub use config::{ExternalControl, ServeConfig, ServeError};

/// What the embedded default created, for the banner.
#[derive(Debug, Clone)]
pub struct EmbeddedInfo {
    /// The user's name.
    pub user: String,
    /// The user's token, when it was generated or given in this run (`None` when it was
    /// read back from the data directory).
    pub new_token: Option<String>,
    /// Where the token is stored.
    pub token_file: PathBuf,
    /// The demo workspace's directory.
    pub workspace_dir: PathBuf,
    /// How the demo workspace's commands are confined.
    pub commands: super::agent::api::CommandSandbox,
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// The bound address.
    pub addr: SocketAddr,
    /// The URL clients use.
    pub public_url: String,
    /// Set in the embedded default.
    pub embedded: Option<EmbeddedInfo>,
    /// Who administers the store (`None` with an external control plane).
    pub admin: Option<super::store::boot::AdminBooted>,
    store: Option<Arc<super::store::Store>>,
    hub: Arc<Hub>,
    tailnet: Arc<Tailnet>,
    agent: Option<Agent>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    metrics: Option<MetricsListener>,
    stun: Option<StunServer>,
    /// Reloads the certificate on SIGHUP; aborted on shutdown and drop.
    reload: Option<tokio_util::task::AbortOnDropHandle<()>>,
    /// The OAuth authorization server, when it runs.
    oauth: Option<Arc<super::oauth::OAuthServer>>,
    /// Purges its expired records; aborted on shutdown and drop.
    oauth_maintenance: Option<tokio_util::task::AbortOnDropHandle<()>>,
    /// This process as one of several replicas (a PostgreSQL store).
    replica: Option<Arc<super::replica::Replica>>,
}

/// The authorization server over the control-plane store (its users sign in, its
/// database keeps grants), or over what the options bring.
fn build_oauth(
    opts: &super::oauth::OAuthOptions,
    base: &str,
    store: Option<&Arc<super::store::Store>>,
) -> Result<Option<Arc<super::oauth::OAuthServer>>, String> {
    let accounts = store.map(|s| {
        Arc::new(super::oauth::StoreAccounts::new(s.clone())) as Arc<dyn super::oauth::Accounts>
    });
    let records = store.map(|s| s.clone() as Arc<dyn super::oauth::OAuthStore>);
    opts.build(
        base,
        &[mcp::MCP_PATH, mcp::MCP_PATH_EXPERIMENTAL],
        accounts,
        records,
    )
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ServeError + '_ {
    move |source| ServeError::DataDir {
        path: path.to_path_buf(),
        source,
    }
}

impl Server {
    /// Binds, builds and starts everything. Returns once serving; the shared Tailnet and
    /// the embedded agent connect in the background.
    ///
    /// # Errors
    /// [`ServeError`] for data-directory, bind or configuration problems.
    pub async fn start(cfg: ServeConfig) -> Result<Self, ServeError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(io_err(&cfg.data_dir))?;
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let advertised = super::public_url::advertise(
            addr,
            cfg.tls.is_some(),
            cfg.public_url.as_deref(),
            cfg.derp_url.as_deref(),
        )?;
        for w in &advertised.warnings {
            tracing::warn!("{w}");
        }
        let mut warnings = advertised.warnings.clone();
        let stun = match cfg.stun_listen {
            None => None,
            Some(at) => match StunServer::bind(at).await {
                Ok(s) => Some(s),
                Err(e) if cfg.stun_optional => {
                    let w = format!(
                        "no STUN server: UDP {at}: {e}; nodes cannot learn their public \
                         address from this relay (set --stun-listen, or --stun-listen off)"
                    );
                    tracing::warn!("{w}");
                    warnings.push(w);
                    None
                }
                Err(source) => return Err(ServeError::Stun { addr: at, source }),
            },
        };
        let public_url = advertised.public.to_url();
        // The process's own nodes talk to the hub over loopback when it listens there or on
        // every interface; otherwise over the listen address.
        let local_ip = if addr.ip().is_unspecified() {
            if addr.is_ipv4() {
                std::net::IpAddr::from([127, 0, 0, 1])
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            }
        } else {
            addr.ip()
        };
        let local = SocketAddr::new(local_ip, addr.port());
        // The process's own nodes dial the listener directly, over TLS when it speaks it,
        // trusting exactly the certificate it presents (whatever names that carries).
        let local_url = match &cfg.tls {
            Some(_) => format!("https://{local}"),
            None => format!("http://{local}"),
        };
        let own_tls = match &cfg.tls {
            Some(t) => crate::runtime::tls::ClientTls::trusting(t),
            None => crate::runtime::tls::ClientTls::default(),
        };
        // Without STUN (-1): asked over loopback, it would only tell the process's own
        // nodes their loopback address.
        let own_map =
            super::hub::embedded_map(&local_ip.to_string(), addr.port(), cfg.tls.is_some());
        let own_node = |t: &mut TailnetConfig| {
            t.tls = own_tls.clone();
            t.derp_map = Some(own_map.clone());
            // The listen address is this machine's own.
            t.allow_insecure_http = true;
        };

        let derp_key_file = cfg.data_dir.join("derp.key");
        let (derp_key, _) =
            super::secrets::read_or_create(&derp_key_file, || NodePrivate::generate().to_base64())?;
        let derp_key: NodePrivate = derp_key.parse().unwrap_or_else(|_| NodePrivate::generate());

        // The serving process's own tailnet authenticates with a fresh service token,
        // known to this process only (or the one an external control plane knows).
        let (control, store, admin, demo, service_token) = match &cfg.control {
            Some(ext) => (
                ext.plane.clone(),
                None,
                None,
                None,
                ext.service_token.0.clone(),
            ),
            None => {
                let service_token = generate_token();
                let embedded_default = cfg.config_file.is_none() && cfg.database_url.is_none();
                let booted = super::store::boot::start(super::store::boot::Boot {
                    data_dir: &cfg.data_dir,
                    database_url: cfg.database_url.as_deref(),
                    import: cfg.config_file.as_deref(),
                    demo: (embedded_default && !cfg.no_demo).then(|| {
                        super::store::boot::DemoBoot {
                            user: "demo".into(),
                            chosen_token: cfg.token.clone(),
                        }
                    }),
                    options: cfg.store.clone(),
                })
                .await?;
                booted.store.set_service_token(&service_token);
                let control: Arc<dyn ControlPlane> = booted.store.clone();
                (
                    control,
                    Some(booted.store),
                    Some(booted.admin),
                    booted.demo,
                    service_token,
                )
            }
        };
        let mut embedded = None;
        let mut agent_cfg = None;
        if let Some(demo) = demo {
            let workspace_dir = super::demo::prepare(&cfg.data_dir, cfg.demo_dir.as_deref())?;
            let mut ac = AgentConfig::new(
                &local_url,
                &demo.agent_token,
                demo.agent_id,
                workspace_dir.clone(),
            );
            ac.api.root = Some(workspace_dir.clone());
            ac.api.commands.unconfined = cfg.unconfined_commands;
            ac.tailnet.udp_listen = SocketAddr::new(local_ip, 0);
            own_node(&mut ac.tailnet);
            agent_cfg = Some(ac);
            embedded = Some(EmbeddedInfo {
                user: demo.user,
                new_token: demo.new_token,
                token_file: demo.token_file,
                workspace_dir,
                commands: super::agent::api::CommandSandbox::NoRoot,
            });
        }

        // STUN is advertised at the relay's host: the public URL's, or --derp-url's. A
        // loopback socket is no use to nodes elsewhere (the default behind a reverse
        // proxy), and advertising it would only have them wait for answers.
        let stun_port = stun.as_ref().and_then(|s| {
            let at = s.local_addr();
            if at.ip().is_loopback()
                && !crate::runtime::tls::url_is_loopback(&advertised.relay.to_url())
            {
                let w = format!(
                    "the STUN server listens on {at}, which nodes reaching the relay at {} \
                     cannot use, so the DERP map does not offer it; set --stun-listen \
                     0.0.0.0:{} (and open the UDP port) or --stun-listen off",
                    advertised.relay.host,
                    at.port()
                );
                tracing::warn!("{w}");
                warnings.push(w);
                None
            } else {
                Some(at.port())
            }
        });
        let mut relay_map = advertised.relay.derp_map();
        super::hub::set_stun_port(&mut relay_map, stun_port);
        let hub = Arc::new(Hub::with_map(control.clone(), relay_map, derp_key));
        for w in warnings {
            hub.add_health_warning(w);
        }
        if let Some(s) = &stun {
            hub.set_stun(s.counters().clone());
        }
        if let Some(t) = &cfg.tls {
            hub.set_tls(t.clone());
        }
        let replica = match (&store, &cfg.database_url) {
            (Some(s), Some(url)) if s.backend() == super::store::db::Backend::Postgres => {
                let relay_url = match &cfg.replica_url {
                    Some(u) => u.clone(),
                    None => {
                        if addr.ip().is_unspecified() {
                            // One server on PostgreSQL needs no mesh; several do.
                            tracing::warn!(
                                "listening on every interface without --replica-url: \
                                 other replicas cannot reach this one's relay; set \
                                 --replica-url when running several"
                            );
                        }
                        local_url.clone()
                    }
                };
                let mut cfg = super::replica::ReplicaConfig::new(url.clone(), relay_url);
                // Replicas share one certificate (one public name): the mesh trusts exactly
                // it, whatever names it carries, so --replica-url may be an address.
                cfg.tls = own_tls.clone();
                let r = Arc::new(super::replica::Replica::start(cfg, hub.clone()).await?);
                hub.set_replica(&r);
                Some(r)
            }
            _ => None,
        };
        let mut tcfg = TailnetConfig::client(&local_url, &service_token);
        tcfg.name = "serve".into();
        tcfg.relay_only = cfg.relay_only;
        tcfg.advertise = cfg.advertise.clone();
        own_node(&mut tcfg);
        tcfg.udp_listen = if addr.ip().is_loopback() {
            SocketAddr::new(local_ip, 0)
        } else {
            SocketAddr::from(([0, 0, 0, 0], 0))
        };
        let tailnet = Arc::new(Tailnet::start(tcfg)?);
        let mcp_config = McpConfig {
            public_url: cfg.public_url.as_ref().map(|_| public_url.clone()),
            listen_addr: Some(addr),
            allow_unauthenticated: cfg.dev_no_auth_user.clone(),
            limits: cfg.mcp_limits.clone(),
            ..Default::default()
        };
        mcp_config
            .validate()
            .map_err(|e| ServeError::Mcp(e.to_string()))?;
        let agents: Arc<dyn super::mcp::AgentProvider> = Arc::new(
            TailnetAgentProvider::with_reply_rate(tailnet.clone(), cfg.agent_reply_rate)
                .with_presence(hub.clone()),
        );
        let user_api = super::user_api::server::UserApi::new(control.clone(), agents.clone())
            .with_tailnet(tailnet.clone());
        let oauth = match build_oauth(&cfg.oauth, &mcp_config.base_url(), store.as_ref()) {
            Ok(o) => o,
            Err(w) => {
                tracing::warn!("{w}");
                hub.add_health_warning(w);
                None
            }
        };
        let metrics_agents = agents.clone();
        let mut state = McpState::new(control, agents, mcp_config);
        state.oauth = oauth.clone();
        let local_only =
            addr.ip().is_loopback() && crate::runtime::tls::url_is_loopback(&public_url);
        let main_gate = super::metrics::MetricsGate::new(
            local_only && cfg.metrics_listen.is_none() && cfg.metrics_token.is_none(),
            cfg.metrics_token.as_deref(),
        );
        let stats = state.stats.clone();
        let metrics_router = |gate| {
            super::metrics::router(
                hub.clone(),
                tailnet.clone(),
                stats.clone(),
                metrics_agents.clone(),
                gate,
            )
        };
        let metrics = match cfg.metrics_listen {
            Some(at) => {
                let l = tokio::net::TcpListener::bind(at)
                    .await
                    .map_err(|source| ServeError::Bind { addr: at, source })?;
                let metrics_addr = l
                    .local_addr()
                    .map_err(|source| ServeError::Bind { addr: at, source })?;
                tracing::info!(%metrics_addr, "metrics listener");
                let app = metrics_router(super::metrics::MetricsGate::new(true, None))
                    .route("/healthz", axum::routing::get(|| async { "ok\n" }));
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let task = tokio::spawn(hub::serve(l, app, async move {
                    let _ = stopped.await;
                }));
                Some(MetricsListener {
                    addr: metrics_addr,
                    stop,
                    task,
                })
            }
            None => None,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut app = hub
            .router()
            .merge(metrics_router(main_gate))
            .merge(mcp::router(state))
            .merge(user_api.router());
        if let Some(store) = &store {
            app = app.merge(super::admin::router(super::admin::AdminState {
                store: store.clone(),
                public_url: public_url.clone(),
            }));
        }
        if let Some(o) = &oauth {
            app = app.merge(o.router());
        }
        let oauth_maintenance = oauth
            .as_ref()
            .map(|o| o.spawn_maintenance(Duration::from_secs(60)));
        let reload = cfg
            .tls
            .as_ref()
            .map(|t| tokio_util::task::AbortOnDropHandle::new(t.spawn_reload_on_sighup()));
        let task = tokio::spawn(super::http::serve_tls(
            listener,
            app,
            cfg.tls.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        let agent = match agent_cfg {
            Some(ac) => Some(Agent::start(ac)?),
            None => None,
        };
        if let (Some(a), Some(e)) = (&agent, &mut embedded) {
            e.commands = super::demo::report(a.api().processes(), &cfg.data_dir);
        }
        Ok(Self {
            addr,
            public_url,
            embedded,
            admin,
            store,
            hub,
            tailnet,
            agent,
            stop: Some(tx),
            task: Some(task),
            metrics,
            stun,
            reload,
            oauth,
            oauth_maintenance,
            replica,
        })
    }

    /// The OAuth authorization server, when it runs.
    pub fn oauth(&self) -> Option<&Arc<super::oauth::OAuthServer>> {
        self.oauth.as_ref()
    }

    /// The allowlisted path through which the demo workspace's commands could read
    /// `path` (a secret such as the TLS key), if any.
    pub fn demo_commands_reach(&self, path: &Path) -> Option<PathBuf> {
        self.agent
            .as_ref()?
            .api()
            .processes()
            .reachable_by_commands(path)
    }

    /// The MCP endpoint URL.
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.public_url.trim_end_matches('/'))
    }

    /// The coordinator and relay.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The shared Tailnet the tools use.
    pub fn tailnet(&self) -> &Arc<Tailnet> {
        &self.tailnet
    }

    /// The embedded agent, in the default setup.
    pub fn agent(&self) -> Option<&Agent> {
        self.agent.as_ref()
    }

    /// Waits until the shared Tailnet (and the embedded agent) are connected.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let t = self.tailnet.wait_ready(timeout).await;
        let a = match &self.agent {
            Some(a) => a.wait_ready(timeout).await,
            None => true,
        };
        t && a
    }

    /// Stops everything: the embedded agent, the Tailnet, coordinator streams, relay
    /// connections, then the listener.
    pub async fn shutdown(mut self) {
        drop(self.reload.take());
        drop(self.oauth_maintenance.take());
        if let Some(a) = self.agent.take() {
            a.shutdown().await;
        }
        if let Ok(t) = Arc::try_unwrap(self.tailnet) {
            t.shutdown().await;
        }
        if let Some(r) = self.replica.take() {
            r.shutdown().await;
        }
        self.hub.shutdown().await;
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        if let Some(m) = self.metrics.take() {
            let _ = m.stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), m.task).await;
        }
        if let Some(s) = self.stun.take() {
            s.shutdown().await;
        }
        // Last: the calls that finished above are still written to the audit log.
        if let Some(s) = self.store.take() {
            s.close().await;
        }
    }

    /// The store holding users, tokens, workspaces, agents and the audit log (`None` with
    /// an external control plane).
    pub fn store(&self) -> Option<&Arc<super::store::Store>> {
        self.store.as_ref()
    }

    /// This process as a replica, with a PostgreSQL store.
    pub fn replica(&self) -> Option<&Arc<super::replica::Replica>> {
        self.replica.as_ref()
    }

    /// Where the STUN server listens, if one runs.
    pub fn stun_addr(&self) -> Option<SocketAddr> {
        self.stun.as_ref().map(StunServer::local_addr)
    }

    /// Where the separate metrics listener (`metrics_listen`) is bound.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.addr)
    }
}

/// The optional second listener for `/metrics`.
#[derive(Debug)]
struct MetricsListener {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}
