//! `agentwire login | logout | whoami`: the server and token a person's client commands
//! (`ping`, `status`, `mcp`) use.

use crate::services::client::config::{self, Credentials};
use crate::services::public_url::BaseUrl;
use crate::services::user_api::client::ServerClient;
use anyhow::Context as _;
use std::io::{BufRead as _, IsTerminal as _};
use std::path::PathBuf;

/// Arguments of `agentwire login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The server's base URL, https://HOST[:PORT].
    pub url: String,
    #[command(flatten)]
    pub tls: super::ClientTlsArgs,
    /// The user token. Without it (or AGENTWIRE_TOKEN, or --token-file) the token is read
    /// from standard input, with a prompt that does not echo when that is a terminal.
    #[arg(long, env = "AGENTWIRE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the token from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
}

/// Arguments of `agentwire whoami`.
#[derive(Debug, clap::Args)]
pub struct WhoamiArgs {}

fn read_token(args: &LoginArgs) -> anyhow::Result<String> {
    if let Some(f) = &args.token_file {
        return super::read_token_file(f);
    }
    if let Some(t) = &args.token {
        if !super::token_came_from_env("AGENTWIRE_TOKEN") {
            tracing::warn!(
                "--token on the command line is visible to every local user (ps, /proc); \
                 use AGENTWIRE_TOKEN, --token-file, or type it at the prompt"
            );
        }
        return Ok(t.trim().to_string());
    }
    let token = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Token: ").context("reading the token")?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the token from standard input")?;
        line
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        anyhow::bail!("no token given");
    }
    Ok(token)
}

/// Verifies the token with the server and stores URL and token (owner-only).
///
/// # Errors
/// A refused token, an unreachable server, or an unwritable configuration directory.
pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let base = BaseUrl::parse("URL", &args.url, false)?;
    let url = base.to_url();
    let tls = args.tls.client_tls(&url)?;
    let token = read_token(&args)?;
    let server = ServerClient::new(base, token.clone(), tls);
    let me = server.me().await.map_err(|e| {
        if e.is_unauthorized() {
            anyhow::anyhow!("the server at {url} does not accept this token: {e}")
        } else {
            anyhow::anyhow!(e)
        }
    })?;
    let path = config::credentials_path()?;
    config::store(
        &path,
        &Credentials {
            url: url.clone(),
            token,
            ca_file: args.tls.ca_file.clone(),
            allow_insecure_http: args.tls.allow_insecure_http,
            user: me.name.clone(),
        },
    )?;
    eprintln!(
        "Logged in to {url} as {}{}. Credentials: {} (owner-only).",
        me.name,
        if me.admin { " (admin)" } else { "" },
        path.display()
    );
    Ok(())
}

/// Forgets the stored credentials.
///
/// # Errors
/// The file cannot be removed.
pub fn logout() -> anyhow::Result<()> {
    let path = config::credentials_path()?;
    if config::remove(&path)? {
        eprintln!("Logged out ({} removed).", path.display());
    } else {
        eprintln!("Not logged in.");
    }
    Ok(())
}

/// The stored credentials and the trust configuration they ask for.
///
/// # Errors
/// Not logged in, or an unreadable CA file.
pub fn stored() -> anyhow::Result<(Credentials, crate::runtime::tls::ClientTls)> {
    let creds = config::load(&config::credentials_path()?)?;
    let tls = super::ClientTlsArgs {
        ca_file: creds.ca_file.clone(),
        allow_insecure_http: creds.allow_insecure_http,
    }
    .client_tls(&creds.url)?;
    Ok((creds, tls))
}

/// Prints who the stored token belongs to, as the server says now.
///
/// # Errors
/// Not logged in, a refused token or an unreachable server.
pub async fn whoami(_args: WhoamiArgs) -> anyhow::Result<()> {
    let (creds, tls) = stored()?;
    let base = BaseUrl::parse("url", &creds.url, false)?;
    let me = ServerClient::new(base, creds.token, tls)
        .me()
        .await
        .with_context(|| format!("asking {}", creds.url))?;
    println!(
        "{}{} at {}",
        me.name,
        if me.admin { " (admin)" } else { "" },
        creds.url
    );
    Ok(())
}
