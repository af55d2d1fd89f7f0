//! `polyv-sim`: a local stand-in for the Polyv live platform, for integration tests and the
//! README demo.
//!
//! One loopback HTTP port serves every Polyv host's paths (login, api, chat) from in-memory
//! state, checks requests the way Polyv documents (signatures, 3-minute timestamps, field
//! rules) and answers with the documented envelopes and messages. A control API under
//! `/_sim/` switches faults on (latency, HTTP 500, garbage bodies, rate limiting, protected
//! push URLs, a skewed clock) and exposes the request log and channel state.
//!
//! After binding it prints exactly one line to stdout, `polyv-sim listening on http://ADDR`,
//! and logs to stderr (level from `RUST_LOG`, default `info`) without passwords, secrets,
//! password hashes or signatures. SIGTERM or SIGINT stop it with exit status 0.
//!
//! Modules: [`config`] (file + flags + defaults), [`state`] (what the sim remembers),
//! [`handlers`] (dispatch, faults, request log), [`push`] (login, notify, rename, viewers),
//! [`api`] (signed v3/v4 APIs), [`control`] (`/_sim/`), [`reply`] (envelopes), [`server`]
//! (axum glue), [`util`] (parsing, clock, dates). Lines marked (inferred) anywhere are
//! guesses from /work/shared/polyv-api/README.md, not documented Polyv behaviour.

mod api;
mod config;
mod control;
mod handlers;
mod push;
mod reply;
mod server;
mod state;
mod util;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::sync::Notify;

use crate::config::{CliOverrides, FileConfig, SimConfig};

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

    /// TOML file with rtmp_base, max_channels, `[[app]]` and `[[channel]]` tables.
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

    /// Initial protected fault: push URLs carry an auth_key suffix.
    #[arg(long)]
    protected: bool,
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
        },
    )?;
    tracing::info!(
        apps = cfg.apps.len(),
        channels = cfg.channels.len(),
        rtmp_base = %cfg.rtmp_base,
        max_channels = cfg.max_channels,
        "configuration loaded"
    );
    let mut state = cfg.into_state();
    state.faults.latency_ms = cli.latency_ms;
    state.faults.protected = cli.protected;
    let sim: server::Shared = Arc::new(Mutex::new(state));

    let listener = tokio::net::TcpListener::bind(&cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let addr = listener.local_addr().context("no local address")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "polyv-sim listening on http://{addr}")?;
        out.flush()?;
    }
    tracing::info!(%addr, "listening");

    let stop = Arc::new(Notify::new());
    let stop_rx = stop.clone();
    let mut server = tokio::spawn(async move {
        axum::serve(listener, server::router(sim))
            .with_graceful_shutdown(async move { stop_rx.notified().await })
            .await
    });
    tokio::select! {
        res = &mut server => {
            // The server only returns on its own when something broke.
            res.context("server task failed")?.context("server failed")?;
            return Ok(());
        }
        () = stop_signal() => {}
    }
    tracing::info!("stopping");
    stop.notify_one();
    if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
        tracing::warn!("in-flight requests did not finish in time; exiting anyway");
    }
    Ok(())
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
