//! `agentwire forward`: a userspace WireGuard port forwarder.

use crate::netstack::NetstackConfig;
use crate::proto::wg::PeerConfig;
use crate::runtime::{Tunnel, TunnelConfig};
use crate::services::forward::{self, Mapping};
use crate::wire::wgconf::WgConfig;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Arguments of `agentwire forward`.
#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    /// wg-quick style configuration file ([Interface] and [Peer] sections).
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// LOCAL=REMOTE: listen on local TCP address LOCAL, dial REMOTE through the tunnel.
    #[arg(long = "tcp", value_name = "LOCAL=REMOTE")]
    pub tcp: Vec<String>,
    /// LOCAL=REMOTE: like --tcp, for UDP.
    #[arg(long = "udp", value_name = "LOCAL=REMOTE")]
    pub udp: Vec<String>,
    /// PORT=TARGET: listen on PORT of our tunnel address, dial local TARGET.
    #[arg(long = "remote-tcp", value_name = "PORT=TARGET")]
    pub remote_tcp: Vec<String>,
    /// PORT=TARGET: like --remote-tcp, for UDP.
    #[arg(long = "remote-udp", value_name = "PORT=TARGET")]
    pub remote_udp: Vec<String>,
    /// Address for the WireGuard UDP socket (the port defaults to the config's ListenPort).
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: std::net::IpAddr,
}

/// Parses every mapping flag.
///
/// # Errors
/// The first mapping that does not parse.
pub fn mappings(a: &ForwardArgs) -> anyhow::Result<Vec<Mapping>> {
    let mut out = Vec::new();
    for s in &a.tcp {
        let (local, remote) = forward::parse_pair(s)?;
        out.push(Mapping::Tcp { local, remote });
    }
    for s in &a.udp {
        let (local, remote) = forward::parse_pair(s)?;
        out.push(Mapping::Udp { local, remote });
    }
    for s in &a.remote_tcp {
        let (port, target) = forward::parse_remote(s)?;
        out.push(Mapping::RemoteTcp { port, target });
    }
    for s in &a.remote_udp {
        let (port, target) = forward::parse_remote(s)?;
        out.push(Mapping::RemoteUdp { port, target });
    }
    if out.is_empty() {
        anyhow::bail!(
            "nothing to forward: give at least one of --tcp, --udp, --remote-tcp, --remote-udp"
        );
    }
    Ok(out)
}

/// Builds the tunnel configuration, resolving peer endpoints.
///
/// # Errors
/// An endpoint that does not resolve.
pub async fn tunnel_config(cfg: &WgConfig, bind: std::net::IpAddr) -> anyhow::Result<TunnelConfig> {
    let mut peers = Vec::new();
    for p in &cfg.peers {
        let mut pc = PeerConfig::new(p.public_key);
        pc.preshared_key = p.preshared_key;
        pc.allowed_ips = p.allowed_ips.clone();
        pc.persistent_keepalive = p.persistent_keepalive;
        if let Some(ep) = &p.endpoint {
            let addr: SocketAddr = tokio::net::lookup_host(ep.as_str())
                .await
                .with_context(|| format!("resolving peer endpoint {ep}"))?
                .next()
                .with_context(|| format!("peer endpoint {ep} resolved to no address"))?;
            pc.endpoint = Some(addr);
        }
        peers.push(pc);
    }
    Ok(TunnelConfig {
        private: cfg.private_key.clone(),
        netstack: NetstackConfig {
            addresses: cfg.addresses.iter().map(|c| c.addr).collect(),
            ..Default::default()
        },
        listen: SocketAddr::new(bind, cfg.listen_port.unwrap_or(0)),
        peers,
    })
}

/// Runs the forwarder until ctrl-c or SIGTERM.
///
/// # Errors
/// A bad configuration file (with line and reason), a bad mapping, or a bind failure.
pub async fn run(args: ForwardArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let cfg = WgConfig::parse(&text).with_context(|| format!("in {}", args.config.display()))?;
    for (line, key) in &cfg.ignored {
        tracing::info!(line, key, "ignoring host-interface setting");
    }
    let maps = mappings(&args)?;
    let tcfg = tunnel_config(&cfg, args.bind).await?;
    let tunnel = Arc::new(Tunnel::start(tcfg)?);
    tracing::info!(
        public_key = %tunnel.public(),
        udp = %tunnel.local_udp_addr(),
        addresses = ?tunnel.addresses(),
        "tunnel up"
    );
    let diag = tokio::spawn({
        let tunnel = tunnel.clone();
        async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                if let Ok(s) = tunnel.stats().await {
                    tracing::debug!(stats = ?s, sockets = ?tunnel.tcp_sockets(), "tunnel");
                }
            }
        }
    });
    forward::run(tunnel.clone(), maps, super::shutdown_signal()).await?;
    diag.abort();
    let _ = diag.await;
    if let Ok(t) = Arc::try_unwrap(tunnel) {
        t.shutdown().await;
    }
    Ok(())
}
