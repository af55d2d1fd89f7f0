//! The service around broadcasts: `polypush run` follows the schedule, reloads on SIGHUP,
//! serves the status endpoints and talks to systemd.
//!
//! ```text
//!            ┌──── outside every window ────┐
//! start ──► idle (no camera, no connection) ──► window opens ──► broadcast (supervisor)
//!   ▲                                                              │ window ends / SIGTERM
//!   └──────────────────────────────────────────────────────────────┘
//! ```
//!
//! - **No schedule** means one broadcast for as long as the process runs (the behaviour of
//!   `polypush run` before schedules existed, and what tests and `--duration` use).
//! - **Windows** come from [`crate::schedule`]: wall-clock times in IANA zones, merged. The
//!   loop re-reads the clock at least every 30 s, so a clock step (NTP at boot on a Pi
//!   without an RTC) moves the next start with it.
//! - **SIGHUP** reloads the config file. An invalid file is refused with an ERROR line and
//!   the old config kept. What changed decides what happens: `[[schedule]]` applies at once
//!   (a window that no longer contains now ends the broadcast); `[video]`/`[audio]` restart
//!   capture and encoding inside the running broadcast (same connection, the new encoder
//!   starts with an IDR and a new sequence header); `[adapt]` replaces the controller;
//!   `[status]` rebinds the status server; `[log]` sets the level (unless `--log-level` or
//!   `RUST_LOG` fixed it);
//!   `[polyv]`, `[target]` and `[record]` restart the broadcast (a new login and session).
//! - **systemd**: `READY=1` once the config is loaded and the daemon idles, or when a live
//!   start first publishes (after 60 s without a publish, READY anyway so the unit's start
//!   timeout does not restart a box that is retrying an unreachable ingest: the watchdog
//!   and health endpoint still say what is wrong); `STATUS=` lines and `WATCHDOG=1` from
//!   [`crate::notify`]; `STOPPING=1` on SIGTERM/SIGINT. A SIGTERM/SIGINT is a clean stop
//!   (exit 0) even before the first publish; `--duration` without a publish is an error.
//! - A broadcast that fails (capture or encoder error, a fatal config problem) ends the
//!   process with its exit code: systemd restarts it (`Restart=on-failure`) with a fresh
//!   device open, which is what a wedged camera needs.

use crate::config::Config;
use crate::schedule::{Schedule, Window};
use crate::status::{DaemonState, ScheduleStatus, StatusHub};
use crate::supervisor::{self, BroadcastCommand, BroadcastIo, RunError, RunOptions, RunSummary};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How the daemon was started.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// The config file, re-read on SIGHUP.
    pub config_path: PathBuf,
    /// `--test-pattern`: re-applied to every reloaded config.
    pub test_pattern: bool,
    /// The log level follows `[log] level` (no `--log-level`): a reload applies a new one.
    pub log_level_from_config: bool,
    /// Per-broadcast options; `duration` bounds the whole daemon run.
    pub run: RunOptions,
}

/// What a daemon run did.
#[derive(Debug, Clone)]
pub struct DaemonSummary {
    pub elapsed: Duration,
    pub broadcasts: u64,
    /// The last broadcast's summary, if there was one.
    pub last: Option<RunSummary>,
}

/// The longest the loop sleeps without looking at the clock again.
const RECHECK: Duration = Duration::from_secs(30);
/// READY=1 at the latest this long after a live start, published or not.
const READY_FALLBACK: Duration = Duration::from_secs(60);

/// Which parts of the config differ: what a reload must do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfigChanges {
    pub schedule: bool,
    pub media: bool,
    pub adapt: bool,
    pub status: bool,
    pub log: bool,
    /// `[polyv]`, `[target]` or `[record]`: the broadcast restarts.
    pub session: bool,
}

impl ConfigChanges {
    pub fn any(&self) -> bool {
        *self != Self::default()
    }
}

fn same<T: Serialize>(a: &T, b: &T) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// Compares two configs section by section (secrets by value, not by their redacted form).
pub fn diff(old: &Config, new: &Config) -> ConfigChanges {
    let secret = |s: &Option<crate::config::Secret>| s.as_ref().map(|s| s.expose().to_string());
    let polyv_same = same(&old.polyv, &new.polyv)
        && secret(&old.polyv.password) == secret(&new.polyv.password)
        && secret(&old.polyv.app_secret) == secret(&new.polyv.app_secret);
    ConfigChanges {
        schedule: !same(&old.schedule, &new.schedule),
        media: !same(&old.video, &new.video) || !same(&old.audio, &new.audio),
        adapt: !same(&old.adapt, &new.adapt),
        status: !same(&old.status, &new.status),
        log: !same(&old.log, &new.log),
        session: !polyv_same || !same(&old.target, &new.target) || !same(&old.record, &new.record),
    }
}

/// The schedule's view of `now` for the hub.
fn schedule_status(schedule: &Schedule, now: SystemTime) -> ScheduleStatus {
    if schedule.is_empty() {
        return ScheduleStatus {
            configured: false,
            in_window: true,
            ..ScheduleStatus::default()
        };
    }
    let current = schedule.current(now);
    let next = schedule.upcoming(now, 1).into_iter().next();
    ScheduleStatus {
        configured: true,
        in_window: current.is_some(),
        window_end: current.as_ref().map(|w| w.end),
        next_start: next.as_ref().map(|w| w.start),
        next_end: next.as_ref().map(|w| w.end),
        title: current
            .as_ref()
            .or(next.as_ref())
            .and_then(|w| w.title.clone()),
    }
}

fn until(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

fn fmt_time(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// SIGHUP as a stream of `()`; pending forever where signals are unavailable.
struct Hangups {
    #[cfg(unix)]
    sig: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Self {
                sig: signal(SignalKind::hangup()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = self.sig.as_mut() {
            if s.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

/// Everything the loop keeps between iterations.
struct Daemon {
    cfg: Config,
    opts: DaemonOptions,
    schedule: Schedule,
    hub: StatusHub,
    notifier: Arc<crate::notify::Notifier>,
    /// READY=1 went out (from the loop, or from a broadcast's first publish).
    ready_sent: Arc<std::sync::atomic::AtomicBool>,
    status_server: Option<StatusServer>,
}

/// The running status server and how to stop it.
struct StatusServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusServer {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// Why the wait in a state ended.
enum Wake {
    Shutdown,
    Reload,
    Recheck,
}

impl Daemon {
    fn send_ready(&self) {
        send_ready_once(&self.ready_sent, &self.notifier);
    }

    /// Re-reads the config file. `None` (and the old config kept) when it is invalid.
    fn load_new(&self) -> Option<Config> {
        match Config::load(&self.opts.config_path) {
            Ok(mut c) => {
                if self.opts.test_pattern {
                    c.use_test_pattern();
                }
                Some(c)
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused: keeping the running config");
                self.hub.reload_failed(e.to_string());
                None
            }
        }
    }

    /// Applies what does not need the broadcast: schedule, status server, log. Returns the
    /// changes for the caller to apply to a running broadcast.
    async fn reload(&mut self) -> Option<(Config, ConfigChanges)> {
        tracing::info!(path = %self.opts.config_path.display(), "SIGHUP: reloading the config");
        let new = self.load_new()?;
        let schedule = match Schedule::from_config(&new.schedule) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "reload refused: keeping the running config");
                self.hub.reload_failed(e.to_string());
                return None;
            }
        };
        let changes = diff(&self.cfg, &new);
        if !changes.any() {
            tracing::info!("reload: nothing changed");
            self.hub.reload_applied();
            return None;
        }
        if changes.schedule {
            self.schedule = schedule;
            tracing::info!("reload: new schedule in force");
        }
        if changes.status {
            if let Some(s) = self.status_server.take() {
                s.stop().await;
            }
            match start_status_server(&new, &self.opts.config_path, &self.hub).await {
                Ok(s) => self.status_server = s,
                Err(e) => {
                    // The old server is gone already; try to bring it back as it was.
                    tracing::error!(error = %e, "reload: the new [status] settings failed; keeping the old ones");
                    self.status_server =
                        start_status_server(&self.cfg, &self.opts.config_path, &self.hub)
                            .await
                            .unwrap_or(None);
                    self.hub.reload_failed(e);
                    return None;
                }
            }
        }
        if changes.log && self.opts.log_level_from_config {
            match crate::logging::set_level(&new.log.level) {
                Ok(true) => tracing::info!(level = %new.log.level, "reload: new log level"),
                Ok(false) => tracing::info!("reload: RUST_LOG is set and wins over [log] level"),
                Err(e) => tracing::warn!(error = %e, "reload: log level not changed"),
            }
        }
        self.hub.reload_applied();
        Some((new, changes))
    }

    /// Waits while idle: until the next window may have opened, a reload or a shutdown.
    async fn idle(&mut self, shutdown: &mut ShutdownFuture, hups: &mut Hangups) -> Wake {
        let now = SystemTime::now();
        let next = self.schedule.upcoming(now, 1).into_iter().next();
        match &next {
            Some(w) => tracing::info!(
                next_start = %fmt_time(w.start),
                title = w.title.as_deref().unwrap_or(""),
                "idle until the next window"
            ),
            None => tracing::info!("idle: no window ahead in the schedule"),
        }
        let nap = next.map_or(RECHECK, |w| until(w.start).min(RECHECK));
        tokio::select! {
            _ = shutdown.as_mut() => Wake::Shutdown,
            _ = hups.recv() => Wake::Reload,
            _ = tokio::time::sleep(nap) => Wake::Recheck,
        }
    }
}

fn send_ready_once(sent: &std::sync::atomic::AtomicBool, notifier: &crate::notify::Notifier) {
    if !sent.swap(true, std::sync::atomic::Ordering::SeqCst) {
        notifier.ready();
    }
}

type ShutdownFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Starts the status server `cfg` asks for (`None` when disabled).
async fn start_status_server(
    cfg: &Config,
    config_path: &std::path::Path,
    hub: &StatusHub,
) -> Result<Option<StatusServer>, String> {
    if !cfg.status.enabled {
        return Ok(None);
    }
    let token = cfg.status.token(config_path).map_err(|e| e.to_string())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, task) = crate::status::serve(&cfg.status, hub.clone(), token, async move {
        let _ = stopped.await;
    })
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!(%addr, "status server: /metrics /healthz /status, POST /reconnect");
    Ok(Some(StatusServer { stop, task }))
}

/// Polls listUsers for the viewer count while live (at most every 10 s), when the channel
/// can be reached.
fn spawn_viewer_poller(cfg: &Config, hub: &StatusHub) -> Option<tokio::task::JoinHandle<()>> {
    if cfg.polyv.channel_id.is_empty() {
        return None;
    }
    match crate::platform::PolyvClient::from_config(&cfg.polyv) {
        Ok(client) => Some(crate::status::spawn_viewer_poller(
            client,
            hub.clone(),
            Duration::from_secs(10),
        )),
        Err(e) => {
            tracing::debug!(error = %e, "no viewer count: the Polyv client is not configured");
            None
        }
    }
}

/// Renames the channel for a window that asks for it (best effort, in the background).
fn rename_for(cfg: &Config, w: &Window) {
    let Some(name) = w.rename.clone() else { return };
    let client = match crate::platform::PolyvClient::from_config(&cfg.polyv) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot rename the channel for this window");
            return;
        }
    };
    tokio::spawn(async move {
        match client.rename_channel(&name).await {
            Ok(()) => tracing::info!(name = %name, "channel renamed for this window"),
            Err(e) => tracing::warn!(error = %e, "channel rename failed; broadcasting anyway"),
        }
    });
}

/// Runs the service until SIGTERM/SIGINT or `--duration`.
pub async fn run(cfg: Config, opts: DaemonOptions) -> Result<DaemonSummary, RunError> {
    let started = Instant::now();
    let schedule = Schedule::from_config(&cfg.schedule)
        .map_err(|e| RunError::Internal(format!("schedule: {e}")))?;
    let hub = StatusHub::new();
    let notifier = Arc::new(crate::notify::Notifier::from_env());
    // The broadcast matters more than its dashboard: without the server (a port taken, say)
    // it goes on, loudly; /healthz being unreachable is what the fleet's alert sees.
    let status_server = match start_status_server(&cfg, &opts.config_path, &hub).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "status server not started; broadcasting without it");
            None
        }
    };
    let watchdog = crate::notify::spawn_watchdog(notifier.clone(), hub.clone());
    let status_task = crate::notify::spawn_status(notifier.clone(), hub.clone());
    let viewers = spawn_viewer_poller(&cfg, &hub);

    let duration = opts.run.duration;
    // Set when SIGTERM/SIGINT (not `--duration`) ended the run: `systemctl stop` is a clean
    // stop even if the box never got to publish.
    let by_signal = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let by_signal_set = by_signal.clone();
    let mut shutdown_fut = Box::pin(async move {
        let deadline = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = supervisor::shutdown_signal() => {
                by_signal_set.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            _ = deadline => {}
        }
    }) as ShutdownFuture;
    let mut hups = Hangups::new();
    let mut d = Daemon {
        cfg,
        opts,
        schedule,
        hub,
        notifier,
        ready_sent: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        status_server,
    };
    let mut broadcasts = 0u64;
    let mut last = None;
    let result: Result<(), RunError> = 'outer: loop {
        let now = SystemTime::now();
        d.hub.set_schedule(schedule_status(&d.schedule, now));
        let window = if d.schedule.is_empty() {
            Some(None)
        } else {
            d.schedule.current(now).map(Some)
        };
        let Some(window) = window else {
            d.hub.set_state(DaemonState::Idle);
            d.send_ready();
            match d.idle(&mut shutdown_fut, &mut hups).await {
                Wake::Shutdown => break Ok(()),
                Wake::Reload => {
                    if let Some((new, _)) = d.reload().await {
                        d.cfg = new;
                    }
                }
                Wake::Recheck => {}
            }
            continue;
        };

        // Inside a window (or unscheduled): broadcast until it ends.
        if let Some(w) = &window {
            tracing::info!(
                end = %fmt_time(w.end),
                title = w.title.as_deref().unwrap_or(""),
                "window open: starting the broadcast"
            );
            rename_for(&d.cfg, w);
        }
        let mut window_end = window.as_ref().map(|w| w.end);
        d.hub.set_state(DaemonState::Live);
        broadcasts += 1;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let on_first_publish: Option<Box<dyn FnOnce() + Send>> = {
            let (n, sent) = (d.notifier.clone(), d.ready_sent.clone());
            Some(Box::new(move || send_ready_once(&sent, &n)))
        };
        let live_since = tokio::time::Instant::now();
        let ready_fallback = !d.ready_sent.load(std::sync::atomic::Ordering::SeqCst);
        let broadcast = supervisor::run_broadcast(
            d.cfg.clone(),
            d.opts.run.clone(),
            BroadcastIo {
                commands: rx,
                hub: Some(d.hub.clone()),
                on_first_publish,
            },
        );
        tokio::pin!(broadcast);
        let mut stopping = false;
        let mut restart = false;
        let mut fallback_done = !ready_fallback;
        let outcome = loop {
            let end_in = window_end.map(until);
            tokio::select! {
                r = &mut broadcast => break r,
                _ = shutdown_fut.as_mut(), if !stopping => {
                    stopping = true;
                    d.hub.set_state(DaemonState::Stopping);
                    d.notifier.stopping();
                    let _ = tx.send(BroadcastCommand::Stop);
                }
                _ = tokio::time::sleep(end_in.unwrap_or(RECHECK).min(RECHECK)), if !stopping && !restart => {
                    if window_end.is_some_and(|e| SystemTime::now() >= e) {
                        tracing::info!("window closed: stopping the broadcast");
                        let _ = tx.send(BroadcastCommand::Stop);
                        window_end = None;
                        restart = true; // back to the loop, which idles or starts the next window
                    }
                }
                _ = tokio::time::sleep_until(live_since + READY_FALLBACK), if !fallback_done => {
                    fallback_done = true;
                    if !d.ready_sent.load(std::sync::atomic::Ordering::SeqCst) {
                        tracing::warn!("not publishing after 60 s; telling systemd the service is up anyway (see /healthz)");
                    }
                    d.send_ready();
                }
                _ = hups.recv(), if !stopping && !restart => {
                    let Some((new, ch)) = d.reload().await else { continue };
                    if ch.schedule {
                        let now = SystemTime::now();
                        d.hub.set_schedule(schedule_status(&d.schedule, now));
                        if d.schedule.is_empty() {
                            window_end = None;
                        } else {
                            match d.schedule.current(now) {
                                Some(w) => window_end = Some(w.end),
                                None => {
                                    tracing::info!("reload: now is outside the new schedule; stopping the broadcast");
                                    let _ = tx.send(BroadcastCommand::Stop);
                                    restart = true;
                                }
                            }
                        }
                    }
                    if ch.session {
                        tracing::info!("reload: [polyv], [target] or [record] changed; restarting the broadcast");
                        let _ = tx.send(BroadcastCommand::Stop);
                        restart = true;
                    } else {
                        if ch.media {
                            let _ = tx.send(BroadcastCommand::RestartMedia(Box::new(new.clone())));
                        }
                        if ch.adapt {
                            let _ = tx.send(BroadcastCommand::Adapt(new.adapt.clone()));
                        }
                    }
                    d.cfg = new;
                }
            }
        };
        match outcome {
            Ok(summary) => {
                d.hub.broadcast_ended(None, false);
                last = Some(summary);
                if stopping {
                    break 'outer Ok(());
                }
            }
            Err(e @ RunError::NeverPublished { .. })
                if stopping && by_signal.load(std::sync::atomic::Ordering::SeqCst) =>
            {
                tracing::warn!(error = %e, "stopped before the first publish");
                d.hub.broadcast_ended(Some(e.to_string()), false);
                break 'outer Ok(());
            }
            Err(e) => {
                let capture = matches!(e, RunError::Media(_));
                d.hub.broadcast_ended(Some(e.to_string()), capture);
                d.hub.set_state(DaemonState::Failed {
                    reason: e.to_string(),
                });
                break 'outer Err(e);
            }
        }
    };
    if !matches!(d.hub.state(), DaemonState::Stopping) {
        d.hub.set_state(DaemonState::Stopping);
        d.notifier.stopping();
    }
    for t in [watchdog, status_task, viewers].into_iter().flatten() {
        t.abort();
    }
    if let Some(s) = d.status_server.take() {
        s.stop().await;
    }
    result?;
    Ok(DaemonSummary {
        elapsed: started.elapsed(),
        broadcasts,
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_what_changed() {
        let a = Config::default();
        let mut b = a.clone();
        assert!(!diff(&a, &b).any());
        b.video.bitrate_kbps += 100;
        b.adapt.min_kbps += 10;
        let ch = diff(&a, &b);
        assert!(
            ch.media && ch.adapt && !ch.session && !ch.schedule,
            "{ch:?}"
        );
        let mut c = a.clone();
        c.polyv.password = Some(crate::config::Secret::new("other"));
        assert!(diff(&a, &c).session, "a new password is a session change");
        let mut d = a.clone();
        d.schedule
            .push(crate::config::schedule::ScheduleEntry::default());
        let ch = diff(&a, &d);
        assert!(ch.schedule && !ch.media && !ch.session, "{ch:?}");
    }
}
