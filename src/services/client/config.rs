//! Where `agentwire login` keeps the server URL and the user's token: one JSON file in
//! the user's configuration directory, readable by its owner only.
//!
//! The directory is `$AGENTWIRE_CONFIG_DIR` when set, else the platform's per-user
//! configuration directory: `$XDG_CONFIG_HOME/agentwire` or `~/.config/agentwire` on
//! Linux and other Unixes, `~/Library/Application Support/agentwire` on macOS,
//! `%APPDATA%\agentwire` on Windows.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The file name inside the configuration directory.
pub const FILE_NAME: &str = "credentials.json";

/// What `login` stored.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    /// The server's base URL, `https://host[:port]`.
    pub url: String,
    /// The user's token.
    pub token: String,
    /// A CA file to trust besides the system store, as given at login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Plain `http://` to a host that is not loopback was allowed at login.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure_http: bool,
    /// The user name the server answered at login, for messages.
    #[serde(default)]
    pub user: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("ca_file", &self.ca_file)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("user", &self.user)
            .finish()
    }
}

/// Errors reading or writing the credentials file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No configuration directory could be determined (no home directory).
    #[error("no configuration directory: set AGENTWIRE_CONFIG_DIR or HOME")]
    NoDir,
    /// Not logged in.
    #[error("not logged in (no {0}); run `agentwire login URL`")]
    NotLoggedIn(PathBuf),
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not what `login` writes.
    #[error("{path} is not a valid credentials file ({source}); run `agentwire login` again")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

/// The configuration directory (see the module docs).
///
/// # Errors
/// [`ConfigError::NoDir`].
pub fn config_dir() -> Result<PathBuf, ConfigError> {
    if let Some(d) = std::env::var_os("AGENTWIRE_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let home = || {
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
    };
    if cfg!(windows) {
        return std::env::var_os("APPDATA")
            .map(|a| PathBuf::from(a).join("agentwire"))
            .ok_or(ConfigError::NoDir);
    }
    if cfg!(target_os = "macos") {
        return home()
            .map(|h| h.join("Library/Application Support/agentwire"))
            .ok_or(ConfigError::NoDir);
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("agentwire"));
    }
    home()
        .map(|h| h.join(".config/agentwire"))
        .ok_or(ConfigError::NoDir)
}

/// The credentials file's path.
///
/// # Errors
/// [`ConfigError::NoDir`].
pub fn credentials_path() -> Result<PathBuf, ConfigError> {
    Ok(config_dir()?.join(FILE_NAME))
}

/// Reads the stored credentials.
///
/// # Errors
/// [`ConfigError::NotLoggedIn`] when there are none, else a read or format error.
pub fn load(path: &Path) -> Result<Credentials, ConfigError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::NotLoggedIn(path.to_path_buf()));
        }
        Err(source) => {
            return Err(ConfigError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_slice(&text).map_err(|source| ConfigError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `creds` to `path`, owner-only (0600 on Unix), replacing the old file in one
/// step (a temporary file renamed over it), so a crash never leaves half a token.
///
/// # Errors
/// [`ConfigError::Io`].
pub fn store(path: &Path, creds: &Credentials) -> Result<(), ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let tmp = dir.join(format!(".{FILE_NAME}.{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let write = || -> std::io::Result<()> {
        let mut f = opts.open(&tmp)?;
        #[cfg(unix)]
        {
            // An old temporary file keeps its mode through `create`: set it again.
            use std::os::unix::fs::PermissionsExt as _;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        let json = serde_json::to_vec_pretty(creds).map_err(std::io::Error::other)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Removes the stored credentials. Returns whether there were any.
///
/// # Errors
/// [`ConfigError::Io`].
pub fn remove(path: &Path) -> Result<bool, ConfigError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(ConfigError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_load_remove_owner_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("sub").join(FILE_NAME);
        assert!(matches!(load(&path), Err(ConfigError::NotLoggedIn(_))));
        let c = Credentials {
            url: "https://aw.example.com".into(),
            token: "secret-token".into(),
            ca_file: None,
            allow_insecure_http: false,
            user: "alice".into(),
        };
        store(&path, &c).expect("store");
        assert_eq!(load(&path).expect("load"), c);
        assert!(!format!("{c:?}").contains("secret-token"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"{not json").expect("write");
        assert!(matches!(load(&path), Err(ConfigError::Invalid { .. })));
        assert!(remove(&path).expect("remove"));
        assert!(!remove(&path).expect("again"));
    }
}
