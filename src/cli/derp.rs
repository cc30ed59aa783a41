//! `agentwire derp`: run a standalone DERP relay until ctrl-c.

use crate::services::derp::{self as derp_server, DerpServer, DerpServerConfig};
use crate::services::stun::StunServer;
use crate::wire::key::NodePrivate;
use anyhow::Context as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Arguments of `agentwire derp`.
#[derive(Debug, Clone, clap::Args)]
pub struct DerpArgs {
    /// Address to listen on (plain HTTP, or TLS with --tls-cert/--tls-key).
    #[arg(long, default_value = "127.0.0.1:3340")]
    pub listen: SocketAddr,
    /// Terminate TLS: the certificate chain (PEM, leaf first). Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Terminate TLS: the certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// File holding the server's private key (base64); created with mode 0600 if it does
    /// not exist. Without it the key is random per run and clients see a new server key.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Mesh key: clients that present it may use WatchConns, ClosePeer and
    /// ForwardPacket. Prefer the environment variable or --mesh-key-file: a command line
    /// is visible to every local user.
    #[arg(long, env = "AGENTWIRE_DERP_MESH_KEY", hide_env_values = true)]
    pub mesh_key: Option<String>,
    /// Read the mesh key from this file (its first line).
    #[arg(long, value_name = "FILE", conflicts_with = "mesh_key")]
    pub mesh_key_file: Option<PathBuf>,
    /// UDP address of the STUN server beside the relay, or `off`. Default: the --listen
    /// address's IP with port 3478; if that is taken, the relay warns and runs without.
    #[arg(long, value_name = "ADDR|off", value_parser = super::serve::parse_stun_listen)]
    pub stun_listen: Option<super::serve::StunListen>,
}

/// Reads the key file, or creates it with a fresh key.
///
/// # Errors
/// Unreadable, unwritable or invalid key files.
pub fn load_or_create_key(path: &Path) -> anyhow::Result<NodePrivate> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().with_context(|| {
            format!(
                "{} does not hold a base64 or hex private key",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = NodePrivate::generate();
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            writeln!(f, "{}", key.to_base64())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Serves a DERP relay on `args.listen` until ctrl-c.
///
/// # Errors
/// Key file problems, or the address cannot be bound.
pub async fn run(args: DerpArgs) -> anyhow::Result<()> {
    let private = match &args.key_file {
        Some(path) => load_or_create_key(path)?,
        None => NodePrivate::generate(),
    };
    if args.mesh_key.is_some() && !super::token_came_from_env("AGENTWIRE_DERP_MESH_KEY") {
        tracing::warn!(
            "--mesh-key on the command line is visible to every local user (ps, /proc); use AGENTWIRE_DERP_MESH_KEY or --mesh-key-file"
        );
    }
    let mesh_key = match &args.mesh_key_file {
        Some(f) => Some(super::read_token_file(f)?),
        None => args.mesh_key.clone(),
    };
    let config = DerpServerConfig {
        mesh_key,
        ..Default::default()
    };
    let tls = super::server_tls(args.tls_cert.as_deref(), args.tls_key.as_deref())?;
    let server = DerpServer::new(private, config);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, key = %server.public_key().to_hex(), "DERP relay listening on {scheme}://{addr}/derp");
    if tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            "listening on {addr} without TLS: relay logins and tokens cross the network in clear; use --tls-cert/--tls-key or a TLS proxy"
        );
    }
    let stun = match super::serve::stun_address(args.stun_listen, args.listen) {
        (None, _) => None,
        (Some(at), optional) => match StunServer::bind(at).await {
            Ok(s) => Some(s),
            Err(e) if optional => {
                tracing::warn!(
                    "no STUN server: UDP {at}: {e}; set --stun-listen, or --stun-listen off"
                );
                None
            }
            Err(e) => return Err(e).with_context(|| format!("cannot bind STUN to UDP {at}")),
        },
    };
    let _reload = tls
        .as_ref()
        .map(|t| tokio_util::task::AbortOnDropHandle::new(t.spawn_reload_on_sighup()));
    let served = derp_server::run_tls(listener, server, tls, super::shutdown_signal()).await;
    if let Some(s) = stun {
        let st = s.stats();
        tracing::info!(
            requests = st.requests,
            responses = st.responses,
            malformed = st.malformed,
            rate_limited = st.rate_limited,
            "STUN server stopped"
        );
        s.shutdown().await;
    }
    served?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        derp: DerpArgs,
    }

    #[test]
    fn defaults_and_flags() {
        let c = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(c.derp.listen, "127.0.0.1:3340".parse().unwrap());
        assert!(c.derp.key_file.is_none());
        let c = Cli::try_parse_from([
            "x",
            "--listen",
            "0.0.0.0:9",
            "--key-file",
            "k",
            "--mesh-key",
            "m",
        ])
        .unwrap();
        assert_eq!(c.derp.listen.port(), 9);
        assert_eq!(c.derp.mesh_key.as_deref(), Some("m"));
        let c = Cli::try_parse_from(["x", "--mesh-key-file", "f"]).unwrap();
        assert_eq!(c.derp.mesh_key_file, Some(PathBuf::from("f")));
        assert!(Cli::try_parse_from(["x", "--mesh-key", "m", "--mesh-key-file", "f"]).is_err());
        assert_eq!(c.derp.stun_listen, None);
        let c = Cli::try_parse_from(["x", "--stun-listen", "off"]).unwrap();
        assert_eq!(
            c.derp.stun_listen,
            Some(super::super::serve::StunListen::Off)
        );
    }

    #[test]
    fn key_file_is_created_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("derp.key");
        let a = load_or_create_key(&path).unwrap();
        let b = load_or_create_key(&path).unwrap();
        assert_eq!(a.public(), b.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "garbage").unwrap();
        assert!(load_or_create_key(&path).is_err());
    }
}
