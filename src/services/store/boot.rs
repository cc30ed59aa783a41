//! `serve`'s start with a store: open (and migrate) it, import `--config` if given, seed
//! the embedded default's demo, make sure someone can administer it.
//!
//! Data-directory files it keeps, all owner-only:
//! - `user-token`: the demo user's token (embedded default);
//! - `demo-agent-id`: the demo agent's node id, for a store created afresh;
//! - `admin-token`: the token of the admin user created when the store had no admin, read
//!   by `agentwire admin` on the same machine by default.

use super::{DemoSeed, Location, Store, StoreError, StoreOptions};
use crate::services::control::{ConfigError, ControlConfig, generate_token};
use crate::services::secrets::{self, FileError};
use crate::wire::addr::NodeId;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The admin token's file in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The demo user's token file in the data directory.
pub const USER_TOKEN_FILE: &str = "user-token";
/// The demo agent's id file in the data directory.
pub const AGENT_ID_FILE: &str = "demo-agent-id";

/// What to start with.
#[derive(Debug, Clone)]
pub struct Boot<'a> {
    /// The data directory (exists).
    pub data_dir: &'a Path,
    /// `--database-url`.
    pub database_url: Option<&'a str>,
    /// `--config`: imported at every start.
    pub import: Option<&'a Path>,
    /// Seed the embedded default's demo user (with this name) and workspace.
    pub demo: Option<DemoBoot>,
    /// Store tunables.
    pub options: StoreOptions,
}

/// The demo's inputs.
#[derive(Debug, Clone)]
pub struct DemoBoot {
    /// The demo user's name.
    pub user: String,
    /// A token the operator chose for the demo user (`--token`, `AGENTWIRE_TOKEN`).
    pub chosen_token: Option<String>,
}

/// The demo as started.
#[derive(Debug, Clone)]
pub struct DemoBooted {
    /// The demo user.
    pub user: String,
    /// The user's token, when generated or given in this run (`None` when kept from an
    /// earlier one).
    pub new_token: Option<String>,
    /// Where the token is kept.
    pub token_file: PathBuf,
    /// The kept token no longer works (an admin revoked it).
    pub stale_token: bool,
    /// The demo agent's node id.
    pub agent_id: NodeId,
    /// The in-process agent's token for this run.
    pub agent_token: String,
}

/// Who administers the store.
#[derive(Debug, Clone)]
pub struct AdminBooted {
    /// The admin user created now (the store had none).
    pub created: Option<String>,
    /// Where the created admin's token is kept (`agentwire admin` reads it by default).
    pub token_file: PathBuf,
}

/// A started store.
#[derive(Debug)]
pub struct Booted {
    /// The store.
    pub store: Arc<Store>,
    /// The demo, when seeded.
    pub demo: Option<DemoBooted>,
    /// The admin bootstrap.
    pub admin: AdminBooted,
}

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The store itself.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A data-directory file.
    #[error("data directory: {0}")]
    File(#[from] FileError),
    /// The `--config` file.
    #[error("--config {path}: {message}")]
    Import {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Opens the store and brings it to what `boot` asks for.
///
/// # Errors
/// See [`BootError`]; a store that is corrupt, too new or unreachable stops the start.
pub async fn start(boot: Boot<'_>) -> Result<Booted, BootError> {
    let location = Location::from_flag(boot.database_url, boot.data_dir)?;
    let store = Arc::new(Store::open(&location, boot.options.clone()).await?);
    if let Some(path) = boot.import {
        import(&store, path).await?;
    }
    let demo = match &boot.demo {
        Some(d) => Some(demo(&store, boot.data_dir, d).await?),
        None => None,
    };
    let token_file = boot.data_dir.join(ADMIN_TOKEN_FILE);
    let created = match store.ensure_admin().await? {
        Some((name, token)) => {
            secrets::write(&token_file, &token)?;
            tracing::info!(
                user = name,
                token_file = %token_file.display(),
                "the store had no admin: created one; `agentwire admin` uses its token"
            );
            Some(name)
        }
        None => None,
    };
    Ok(Booted {
        store,
        demo,
        admin: AdminBooted {
            created,
            token_file,
        },
    })
}

async fn import(store: &Store, path: &Path) -> Result<(), BootError> {
    let err = |message: String| BootError::Import {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let cfg: ControlConfig =
        toml::from_str(&text).map_err(|e| err(ConfigError::from(e).to_string()))?;
    if cfg.service_token_sha256.is_some() || cfg.service_token.is_some() {
        tracing::info!("the config's service token is ignored: each process uses its own");
    }
    let report = store.import(&cfg).await.map_err(|e| match e {
        StoreError::Unavailable(_) => BootError::Store(e),
        other => err(other.to_string()),
    })?;
    tracing::info!(?report, file = %path.display(), "control-plane config imported");
    Ok(())
}

async fn demo(store: &Store, dir: &Path, d: &DemoBoot) -> Result<DemoBooted, BootError> {
    let token_file = dir.join(USER_TOKEN_FILE);
    let kept_token = secrets::read(&token_file)?.filter(|t| !t.is_empty());
    let id_file = dir.join(AGENT_ID_FILE);
    let kept_agent_id = secrets::read(&id_file)?.and_then(|s| s.parse().ok());
    let agent_token = generate_token();
    let state = store
        .seed_demo(DemoSeed {
            user: d.user.clone(),
            chosen_token: d.chosen_token.clone(),
            kept_token: kept_token.clone(),
            kept_agent_id,
            agent_token: agent_token.clone(),
        })
        .await?;
    let new_token = match (&d.chosen_token, &state.new_token) {
        (Some(t), _) | (None, Some(t)) => {
            secrets::write(&token_file, t)?;
            Some(t.clone())
        }
        (None, None) => None,
    };
    if kept_agent_id != Some(state.agent_id) {
        secrets::write(&id_file, &state.agent_id.to_string())?;
    }
    if state.kept_token_stale {
        tracing::warn!(
            file = %token_file.display(),
            "the demo token kept in the data directory was revoked, expired or deleted; \
             issue a new one with `agentwire admin tokens create --user {}`",
            d.user
        );
    }
    Ok(DemoBooted {
        user: d.user.clone(),
        new_token,
        token_file,
        stale_token: state.kept_token_stale,
        agent_id: state.agent_id,
        agent_token,
    })
}
