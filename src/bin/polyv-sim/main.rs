//! `polyv-sim`: a local stand-in for the Polyv live platform, for integration tests and the
//! README demo.
//!
//! One port serves every Polyv host's paths (login, api, chat) from in-memory state, checks
//! requests the way Polyv documents (signatures, 3-minute timestamps, field rules) and answers
//! with the documented envelopes and messages. By default routing is by path only; with
//! `--strict-hosts` each path is served only on its real host (by the `Host` header), and with
//! `--tls-cert`/`--tls-key` the port speaks HTTPS, so a client can reach it under Polyv's real
//! host names (a DNS override plus a test CA). Push addresses carry an expiring `auth_key`
//! (CDN type-A signing, TTL `--auth-key-ttl-s`, default 1800 s) that nginx-rtmp can have
//! checked through `on_publish` pointing at `/_sim/on_publish`. Requests to api.polyv.net are
//! counted per client IP like Polyv's rate limit (1500 per 10 s, then a 5-minute block).
//!
//! The control API under `/_sim/` (see [`control`]) switches faults on (latency, HTTP 500,
//! garbage bodies, rate limit settings, login refusals, string `code`s, hosts answering 404,
//! auth_key TTL, a skewed clock) and shows the request log (method, host, path, status, time,
//! client IP), the on_publish checks and channel state.
//!
//! After binding it prints one line to stdout, `polyv-sim listening on http://ADDR` (or
//! `https://`), then, with `--plain-listen`, a second `polyv-sim listening on http://ADDR`
//! for the plain port; it logs to stderr (level from `RUST_LOG`, default `info`) without
//! passwords, secrets, password hashes, signatures or auth_keys. SIGTERM or SIGINT stop it
//! with exit status 0.
//!
//! Modules: [`config`] (file + flags + defaults), [`state`] (what the sim remembers),
//! [`faults`] (the switches and their updates), [`handlers`] (dispatch, faults, rate limit,
//! request log), [`hosts`] (which host serves which path), [`limit`] (rate-limit counting),
//! [`push`] (login, notify, rename, viewers), [`api`] (signed v3/v4 APIs), [`authkey`]
//! (auth_key signing and the on_publish check), [`control`] (`/_sim/`), [`reply`]
//! (envelopes), [`server`] (axum glue), [`tls`] (HTTPS listener), [`util`] (parsing, clock,
//! dates). Lines marked (inferred) anywhere are guesses from /work/shared/polyv-api/README.md
//! and /work/notes/polyv-research.md, not documented Polyv behaviour.

mod api;
mod authkey;
mod config;
mod control;
mod faults;
mod handlers;
mod hosts;
mod limit;
mod push;
mod reply;
mod server;
mod state;
mod tls;
mod util;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::future::IntoFuture;

use anyhow::Context;
use clap::Parser;

use crate::config::{CliOverrides, FileConfig, SimConfig};
use crate::tls::Peer;

/// How long in-flight requests may take to finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// A faithful local stand-in for the Polyv live platform.
#[derive(Parser)]
#[command(
    name = "polyv-sim",
    version,
    about = "A faithful local stand-in for the Polyv live platform, for tests and demos."
)]
struct Cli {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: String,

    /// TOML file: rtmp_base, max_channels, auth_key_ttl_s, auth_key_private_key,
    /// rate_limit_per_10s, rate_limit_block_s, `[[app]]` and `[[channel]]` tables.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// An application allowed to call the signed APIs (repeatable).
    #[arg(long = "app", value_name = "APPID:SECRET")]
    apps: Vec<String>,

    /// A channel and its password (repeatable).
    #[arg(long = "channel", value_name = "ID:PASSWORD")]
    channels: Vec<String>,

    /// RTMP base URL that push addresses start with [default: rtmp://127.0.0.1:1935/live/].
    #[arg(long, value_name = "URL")]
    rtmp_base: Option<String>,

    /// Most channels the create endpoints allow in total [default: 50].
    #[arg(long, value_name = "N")]
    max_channels: Option<u32>,

    /// Initial latency fault: delay every non-/_sim request by N ms.
    #[arg(long, value_name = "N", default_value_t = 0)]
    latency_ms: u64,

    /// Initial protected fault: the login reply uses the protected address form
    /// (bakUrl + stream + suffix) even when it carries no auth_key.
    #[arg(long)]
    protected: bool,

    /// Seconds a push address's auth_key stays valid; 0 issues none [default: 1800].
    #[arg(long, value_name = "SECONDS")]
    auth_key_ttl_s: Option<u64>,

    /// Rate limit: more requests than this from one IP to api.polyv.net within 10 s block it;
    /// 0 turns counting off [default: 1500].
    #[arg(long = "rate-limit-per-10s", value_name = "N")]
    rate_limit_per_10s: Option<u32>,

    /// Rate limit: how long a block lasts [default: 300].
    #[arg(long, value_name = "SECONDS")]
    rate_limit_block_s: Option<u64>,

    /// Serve each path only on its real Polyv host (by the Host header); everything else 404.
    #[arg(long)]
    strict_hosts: bool,

    /// Speak HTTPS with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// With TLS, also serve plain HTTP here (nginx-rtmp's on_publish cannot speak TLS).
    #[arg(long, value_name = "ADDR", requires = "tls_cert")]
    plain_listen: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` gives the context chain on one line, without a backtrace.
            eprintln!("polyv-sim: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let file = match &cli.config {
        Some(path) => config::load_file(path)?,
        None => FileConfig::default(),
    };
    let cfg = SimConfig::build(
        file,
        CliOverrides {
            apps: cli.apps,
            channels: cli.channels,
            rtmp_base: cli.rtmp_base,
            max_channels: cli.max_channels,
            auth_key_ttl_s: cli.auth_key_ttl_s,
            rate_limit_per_10s: cli.rate_limit_per_10s,
            rate_limit_block_s: cli.rate_limit_block_s,
        },
    )?;
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    tracing::info!(
        apps = cfg.apps.len(),
        channels = cfg.channels.len(),
        rtmp_base = %cfg.rtmp_base,
        max_channels = cfg.max_channels,
        auth_key_ttl_s = cfg.auth_key_ttl_s,
        rate_limit_per_10s = cfg.rate_limit_per_10s,
        rate_limit_block_s = cfg.rate_limit_block_s,
        strict_hosts = cli.strict_hosts,
        tls = tls.is_some(),
        "configuration loaded"
    );
    let mut state = cfg.into_state();
    state.faults.latency_ms = cli.latency_ms;
    state.faults.protected = cli.protected;
    state.strict_hosts = cli.strict_hosts;
    let sim: server::Shared = Arc::new(Mutex::new(state));

    let listener = bind(&cli.listen).await?;
    let addr = listener.local_addr().context("no local address")?;
    let plain = match &cli.plain_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "polyv-sim listening on {scheme}://{addr}")?;
        if let Some(p) = &plain {
            let plain_addr = p.local_addr().context("no local address")?;
            writeln!(out, "polyv-sim listening on http://{plain_addr}")?;
        }
        out.flush()?;
    }
    tracing::info!(%addr, scheme, "listening");

    // A watch channel, not a Notify: every server task must see the stop, also one that
    // starts waiting after it was sent.
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let app = || server::router(sim.clone()).into_make_service_with_connect_info::<Peer>();
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    match tls {
        Some(config) => {
            let tls_listener =
                tls::TlsListener::new(listener, config).context("cannot start the TLS listener")?;
            servers.spawn(
                axum::serve(tls_listener, app())
                    .with_graceful_shutdown(stopped(stop_rx.clone()))
                    .into_future(),
            );
        }
        None => {
            servers.spawn(
                axum::serve(listener, app())
                    .with_graceful_shutdown(stopped(stop_rx.clone()))
                    .into_future(),
            );
        }
    }
    if let Some(p) = plain {
        servers.spawn(
            axum::serve(p, app())
                .with_graceful_shutdown(stopped(stop_rx.clone()))
                .into_future(),
        );
    }
    tokio::select! {
        res = servers.join_next() => {
            // A server only returns on its own when something broke.
            if let Some(res) = res {
                res.context("server task failed")?.context("server failed")?;
            }
            return Ok(());
        }
        () = stop_signal() => {}
    }
    tracing::info!("stopping");
    let _ = stop.send(true);
    let drain = async { while servers.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!("in-flight requests did not finish in time; exiting anyway");
    }
    Ok(())
}

async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    let int = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = int => {}
        () = term => {}
    }
}
