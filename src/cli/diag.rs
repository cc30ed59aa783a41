//! `agentwire ping | netcheck | status`: what a person's network and tunnel are doing.

use crate::proto::wg::PathAddr;
use crate::services::client::status::{self as tstatus, TailnetStatus};
use crate::services::client::{ClientSession, SessionOptions, netcheck};
use crate::services::control::ControlPlane as _;
use crate::services::hub::DERP_MAP_PATH;
use crate::services::public_url::BaseUrl;
use crate::services::user_api::client::ServerClient;
use crate::wire::derpmap::DerpMap;
use anyhow::Context as _;
use std::time::Duration;

/// Arguments of `agentwire ping`.
#[derive(Debug, clap::Args)]
pub struct PingArgs {
    /// The workspace, `[owner/]name[.agent]`.
    pub workspace: String,
    /// Stop after this many pings (default: once a direct path answers, or after 10).
    #[arg(short = 'c', long)]
    pub count: Option<u32>,
    /// Keep pinging after a direct path answers.
    #[arg(long)]
    pub until_count: bool,
    /// How long to wait for each pong.
    #[arg(long, value_parser = humantime_ms, default_value = "2000")]
    pub timeout_ms: Duration,
    /// How long to wait for the tunnel to come up.
    #[arg(long, value_parser = humantime_ms, default_value = "15000")]
    pub connect_timeout_ms: Duration,
    /// Pause between pings.
    #[arg(long, value_parser = humantime_ms, default_value = "500")]
    pub interval_ms: Duration,
    /// Use the relay only (no direct paths).
    #[arg(long)]
    pub relay_only: bool,
}

fn humantime_ms(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("{s:?} is not a number of milliseconds"))
}

/// Arguments of `agentwire netcheck`.
#[derive(Debug, clap::Args)]
pub struct NetcheckArgs {
    /// Print JSON instead of a report.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `agentwire status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show the server's own tunnel (admins only) instead of this machine's.
    #[arg(long)]
    pub server: bool,
}

async fn session(relay_only: bool) -> anyhow::Result<ClientSession> {
    let (creds, tls) = super::login::stored()?;
    let opts = SessionOptions {
        relay_only,
        name: "ping".into(),
        ..SessionOptions::default()
    };
    ClientSession::start(
        &creds.url,
        &creds.token,
        tls,
        creds.allow_insecure_http,
        opts,
        None,
    )
    .await
    .with_context(|| format!("connecting to {}", creds.url))
}

fn via(p: PathAddr) -> String {
    match p {
        PathAddr::Udp(a) => format!("via {a}"),
        PathAddr::Derp(r) => format!("via DERP({r})"),
    }
}

/// Pings a workspace's agent through the tunnel, printing each probe's path and round
/// trip, until a direct path answers or the count is reached.
///
/// # Errors
/// Not logged in, an unknown workspace, or no tunnel within the connect timeout.
pub async fn ping(args: PingArgs) -> anyhow::Result<()> {
    let s = session(args.relay_only).await?;
    let result = ping_with(&s, &args).await;
    s.shutdown().await;
    result
}

async fn ping_with(s: &ClientSession, args: &PingArgs) -> anyhow::Result<()> {
    let r = s.control.resolve_workspace(&s.me, &args.workspace).await?;
    let agent = r.agent.id;
    let name = format!("{}.{}", r.workspace.full_name(), r.agent.name);
    let started = crate::runtime::clock::now();
    let deadline = tokio::time::Instant::from_std(started + args.connect_timeout_ms);
    let conn = s
        .tailnet
        .agent_conn(agent, deadline)
        .await
        .with_context(|| format!("reaching {name}"))?;
    println!(
        "tunnel to {name} ({}) up in {} ms",
        conn.addr(),
        crate::runtime::clock::now()
            .saturating_duration_since(started)
            .as_millis()
    );
    let max = args.count.unwrap_or(10);
    let mut direct = false;
    for i in 0..max {
        if i > 0 {
            tokio::time::sleep(args.interval_ms).await;
        }
        match s.tailnet.ping(agent, args.timeout_ms).await? {
            None => anyhow::bail!("no key for {name} yet"),
            Some((sent, None)) => {
                println!("timeout: no pong {} in {:?}", via(sent), args.timeout_ms)
            }
            Some((_, Some(pong))) => {
                println!(
                    "pong from {name} ({}) {} in {:.1} ms",
                    conn.addr(),
                    via(pong.path),
                    pong.rtt.as_secs_f64() * 1e3
                );
                direct |= matches!(pong.path, PathAddr::Udp(_));
                if direct && args.count.is_none() && !args.until_count {
                    break;
                }
            }
        }
    }
    if direct {
        println!("direct path: yes");
    } else {
        println!("direct path: no (traffic goes through the relay)");
    }
    drop(conn);
    Ok(())
}

/// Measures this machine's network against the server's relays.
///
/// # Errors
/// Not logged in, or the server's DERP map cannot be fetched.
pub async fn netcheck(args: NetcheckArgs) -> anyhow::Result<()> {
    let (creds, tls) = super::login::stored()?;
    let base = BaseUrl::parse("url", &creds.url, false)?;
    let server = ServerClient::new(base, creds.token, tls);
    let map: DerpMap = server
        .get(DERP_MAP_PATH)
        .await
        .with_context(|| format!("fetching the DERP map from {}", creds.url))?;
    let report = netcheck::run(&map).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", netcheck::render(&report));
    }
    Ok(())
}

/// Shows this machine's tunnel (the running `agentwire mcp`'s), or with `--server` the
/// server's own.
///
/// # Errors
/// Not logged in, nothing running, or (with `--server`) not an admin.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let all: Vec<TailnetStatus> = if args.server {
        let (creds, tls) = super::login::stored()?;
        let base = BaseUrl::parse("url", &creds.url, false)?;
        vec![
            ServerClient::new(base, creds.token, tls)
                .get(tstatus::DEBUG_TAILNET_PATH)
                .await
                .with_context(|| format!("asking {} for its tunnel", creds.url))?,
        ]
    } else {
        crate::services::client::local::query_all().await?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for st in &all {
            print!("{}", tstatus::render(st));
        }
    }
    Ok(())
}
