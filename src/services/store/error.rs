//! What a store operation can fail with, classified by what the caller should do: fix the
//! request (400), look elsewhere (404), pick another name (409), retry later (503), or
//! fix the deployment (the start-up errors).

use super::db::DbError;
use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The request is malformed; `field` names the offending input.
    #[error("{message}")]
    Invalid {
        /// The input at fault (`name`, `owner`, `expires_in`, …).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Something the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request collides with what exists (a duplicate name, an id in use, a user who
    /// still owns workspaces); `field` names the input.
    #[error("{message}")]
    Conflict {
        /// The input at fault.
        field: &'static str,
        /// What it collides with.
        message: String,
    },
    /// The database cannot be reached or did not answer; nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The SQLite file is not a database or is damaged. It is left untouched.
    #[error(
        "{path} is not a usable SQLite database ({detail}); it was left untouched: restore \
         it from a backup, or move it aside to start with an empty store"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// The database was migrated by a newer agentwire than this one.
    #[error(
        "the database schema is at version {found}, newer than this agentwire ({binary}) knows \
         (version {known}){by}; run that version or newer, or restore a backup taken before \
         the upgrade"
    )]
    SchemaTooNew {
        /// The schema version found.
        found: i64,
        /// The newest version this binary has.
        known: i64,
        /// This binary's version.
        binary: &'static str,
        /// ", migrated by agentwire X" when known.
        by: String,
    },
    /// The database's migration history does not match this binary's migrations.
    #[error("database migrations: {0}")]
    Migration(String),
    /// The database URL or path cannot be used.
    #[error("database configuration: {0}")]
    Config(String),
    /// A bug or an unexpected database answer; nothing was written.
    #[error("internal store error: {0}")]
    Internal(String),
}

impl StoreError {
    /// A 400 naming `field`.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }

    /// A 409 naming `field`.
    pub fn conflict(field: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            field,
            message: message.into(),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Self::Invalid { .. } => S::BAD_REQUEST,
            Self::NotFound(_) => S::NOT_FOUND,
            Self::Conflict { .. } => S::CONFLICT,
            Self::Unavailable(_) => S::SERVICE_UNAVAILABLE,
            Self::Corrupt { .. }
            | Self::SchemaTooNew { .. }
            | Self::Migration(_)
            | Self::Config(_)
            | Self::Internal(_) => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// The field at fault, for 400 and 409 answers.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Invalid { field, .. } | Self::Conflict { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(m) => Self::Unavailable(m),
            // Operations check names before writing; a constraint that still fires is a
            // concurrent write of the same thing.
            DbError::Constraint(m) => Self::conflict(
                "name",
                format!("a concurrent change collided with this one ({m}); try again"),
            ),
            DbError::Corrupt(m) => Self::Unavailable(format!("database damaged: {m}")),
            DbError::Decode(m) | DbError::Other(m) => Self::Internal(m),
        }
    }
}

impl From<StoreError> for crate::services::control::ControlError {
    fn from(e: StoreError) -> Self {
        Self(e.to_string())
    }
}
