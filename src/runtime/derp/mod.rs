//! DERP client: connects over HTTP `Upgrade: DERP` or websocket, logs in, relays
//! packets, pings, and reconnects.
//!
//! ```text
//!  DerpClient::send ──try_send──▶ [bounded queue] ──▶ writer ─┐
//!                                                            ├─ one connection (task)
//!  inbound mpsc ◀──try_send── reader (never stops reading) ◀─┘
//! ```
//!
//! The device driver holds one [`DerpClient`] per region it uses. Loading a DERP map
//! from a file is here too, because the wire layer does no IO.

mod client;
pub mod connect;
mod session;
mod status;
pub mod transport;

pub use client::{DerpClient, DerpClientConfig, DerpClientOptions, DerpInbound, DerpSendError};
pub use status::DerpStatus;

use crate::wire::derpmap::{DerpMap, DerpMapError};
use std::path::Path;
use thiserror::Error;

/// Why a DERP map file could not be loaded.
#[derive(Debug, Error)]
pub enum LoadDerpMapError {
    /// The file could not be read.
    #[error("cannot read DERP map {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The contents are not a valid map.
    #[error("invalid DERP map {path}: {source}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        source: DerpMapError,
    },
}

/// Reads and validates a DERP map in Tailscale's JSON format.
///
/// # Errors
/// [`LoadDerpMapError`].
pub fn load_derp_map(path: &Path) -> Result<DerpMap, LoadDerpMapError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadDerpMapError::Read {
        path: shown.clone(),
        source,
    })?;
    DerpMap::from_json(&text).map_err(|source| LoadDerpMapError::Invalid {
        path: shown,
        source,
    })
}
