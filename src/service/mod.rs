//! The service: `polypush run` follows the schedule, starts and stops broadcasts, reloads on
//! SIGHUP, serves the status endpoints and talks to systemd. It owns the lifecycle; one
//! broadcast's wiring is [`crate::broadcast`].
//!
//! ```text
//!            ┌──── outside every window ────┐
//! start ──► idle (no camera, no connection) ──► window opens ──► live (a broadcast runs)
//!   ▲                                                              │ window ends / SIGTERM
//!   └──────────────────────────────────────────────────────────────┘
//! ```
//!
//! - **No schedule** means one broadcast for as long as the process runs (what tests and
//!   `--duration` use).
//! - **Windows** come from [`crate::schedule`]: wall-clock times in IANA zones, merged. The
//!   loop reads the wall clock ([`WallClock`], injected so tests run on tokio's paused clock)
//!   at least every 30 s, so a clock step (NTP at boot on a Pi without an RTC) moves the next
//!   start with it.
//! - **Lesson control** (`control`): extend, start now, stop now, an override on the
//!   schedule, from the status server or [`ServiceCommand::Control`]; kept in the state dir.
//! - **SIGHUP** reloads the config file. An invalid file is refused with an ERROR line and
//!   the old config kept. What changed decides what happens ([`reload::diff`]):
//!   `[[schedule]]` applies at once (a window that no longer contains now ends the
//!   broadcast); `[video]`/`[audio]` restart capture and encoding inside the running
//!   broadcast (same connection, the new encoder starts with an IDR and a new sequence
//!   header); `[adapt]` replaces the controller; `[status]` rebinds the status server; `[log]`
//!   sets the level (unless `--log-level` or `RUST_LOG` fixed it); `[polyv]`, `[target]` and
//!   `[record]` restart the broadcast (a new login and session). The broadcast gets new
//!   settings values built from the new file.
//! - **systemd**: `READY=1` once the config is loaded and the service idles, or when a live
//!   start first publishes (after 60 s without a publish, READY anyway so the unit's start
//!   timeout does not restart a box that is retrying an unreachable ingest: the watchdog
//!   and health endpoint still say what is wrong); `STATUS=` lines and `WATCHDOG=1` from
//!   [`crate::notify`]; `STOPPING=1` on SIGTERM/SIGINT. A SIGTERM/SIGINT is a clean stop
//!   (exit 0) even before the first publish; `--duration` without a publish is an error.
//! - **Nothing the platform, the network or a device does ends the service.** A camera
//!   that is missing or fails is retried inside the broadcast (and Polyv is not logged in to
//!   until capture runs); refusals and outages are the sender's to wait out. A broadcast that
//!   still fails (an internal error, a configuration problem after a reload) is started again
//!   after 5 s, doubling to 60 s, in state `failed`. Only a configuration that cannot work at
//!   the process's first start ends it (exit 2, which the unit does not restart on), and an
//!   operator's own `max_attempts`. A `--duration` run ends with the broadcast's exit code.

mod control;
mod lessons;
mod reload;
mod sidecars;
use sidecars::{rename_for, spawn_viewer_poller, start_status_server, StatusServer};

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::broadcast::{
    self, BroadcastCommand, BroadcastIo, BroadcastSettings, RunError, RunOptions, RunSummary,
};
use crate::config::Config;
use crate::exit::ExitCode;
use crate::rtmp::RtmpError;
use crate::schedule::{Effective, Schedule};
use crate::status::{ControlRequest, DaemonState, StatusHub};
pub use control::{StateFile, STATE_FILE_NAME};
pub use reload::{diff, ConfigChanges};

/// How the service was started.
#[derive(Debug, Clone, Default)]
pub struct ServiceOptions {
    /// The config file, re-read on SIGHUP.
    pub config_path: PathBuf,
    /// The log level follows `[log] level` (no `--log-level`): a reload applies a new one.
    pub log_level_from_config: bool,
    /// Per-broadcast options (`--url`, `--test-pattern`, …), applied to every reloaded config.
    pub run: RunOptions,
    /// Stop after this long (otherwise on SIGINT/SIGTERM).
    pub duration: Option<Duration>,
    /// Where the lesson-control override is kept (`[service] state_dir` for `polypush run`); `None`:
    /// in memory only.
    pub state_dir: Option<PathBuf>,
}

/// What a service run did.
#[derive(Debug, Clone)]
pub struct ServiceSummary {
    pub elapsed: Duration,
    pub broadcasts: u64,
    /// The last broadcast's summary, if there was one.
    pub last: Option<RunSummary>,
}

/// The wall clock the schedule is read against.
pub trait WallClock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The future a [`Broadcaster`] returns.
pub type BroadcastFuture = Pin<Box<dyn Future<Output = Result<RunSummary, RunError>> + Send>>;

/// What runs a broadcast when a window opens: [`broadcast::run_broadcast`], unless a test of
/// the lifecycle puts something that records the starts and stops there.
pub trait Broadcaster: Send + Sync {
    fn run(&self, settings: BroadcastSettings, io: BroadcastIo) -> BroadcastFuture;
}

/// The real broadcasts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Broadcasts;

impl Broadcaster for Broadcasts {
    fn run(&self, settings: BroadcastSettings, io: BroadcastIo) -> BroadcastFuture {
        Box::pin(broadcast::run_broadcast(settings, io))
    }
}

/// The service's seams: the wall clock and what runs a broadcast.
#[derive(Clone)]
pub struct Service {
    pub clock: Arc<dyn WallClock>,
    pub broadcaster: Arc<dyn Broadcaster>,
}

impl Default for Service {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            broadcaster: Arc::new(Broadcasts),
        }
    }
}

/// Runs the service until SIGTERM/SIGINT or `--duration`, on the system clock; SIGHUP
/// reloads.
pub async fn run(cfg: Config, opts: ServiceOptions) -> Result<ServiceSummary, RunError> {
    let (tx, rx) = command_channel();
    let hangups = tokio::spawn(async move {
        let mut hangups = Hangups::new();
        loop {
            hangups.recv().await;
            if tx.send(ServiceCommand::Reload).await.is_err() {
                return;
            }
        }
    });
    let result = Service::default().run(cfg, opts, rx).await;
    hangups.abort();
    result
}

/// The longest the loop sleeps without looking at the clock again.
const RECHECK: Duration = Duration::from_secs(30);
/// READY=1 at the latest this long after a live start, published or not.
const READY_FALLBACK: Duration = Duration::from_secs(60);

/// What the service can be asked while it runs: SIGHUP and SIGTERM arrive as these, and a
/// test sends them directly (the status server sends lesson control through the hub).
#[derive(Debug)]
pub enum ServiceCommand {
    /// Re-read the config file (SIGHUP).
    Reload,
    /// Stop cleanly, as SIGTERM does.
    Stop,
    /// Lesson control: extend, start now, stop now.
    Control(ControlRequest),
}

/// How many commands may wait for the service.
pub const COMMAND_QUEUE: usize = 8;

/// The channel the service is steered through (bounded).
pub fn command_channel() -> (
    tokio::sync::mpsc::Sender<ServiceCommand>,
    tokio::sync::mpsc::Receiver<ServiceCommand>,
) {
    tokio::sync::mpsc::channel(COMMAND_QUEUE)
}

/// What woke the service.
enum Event {
    /// SIGTERM/SIGINT, [`ServiceCommand::Stop`] or `--duration`.
    Shutdown(ShutdownBy),
    /// SIGHUP or [`ServiceCommand::Reload`].
    Reload,
    /// Lesson control, from the status server or [`ServiceCommand::Control`].
    Control(ControlRequest),
}

/// What the running broadcast was told to stop for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Still running.
    Running,
    /// The service stops.
    Shutdown,
    /// The window closed or a reload needs a new broadcast: back to the loop.
    Restart,
}

/// How a shutdown came, for the exit code of a run that never published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShutdownBy {
    /// An operator: SIGTERM/SIGINT or [`ServiceCommand::Stop`].
    Operator,
    Duration,
}

type ShutdownFuture = Pin<Box<dyn Future<Output = ShutdownBy> + Send>>;

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
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
    service: Service,
    cfg: Config,
    opts: ServiceOptions,
    schedule: Schedule,
    hub: StatusHub,
    notifier: Arc<crate::notify::Notifier>,
    /// READY=1 went out (from the loop, or from a broadcast's first publish).
    ready_sent: Arc<AtomicBool>,
    status_server: Option<StatusServer>,
    shutdown: ShutdownFuture,
    shutdown_fired: bool,
    commands: tokio::sync::mpsc::Receiver<ServiceCommand>,
    /// Broadcasts that failed in a row (for the wait before the next).
    failures: u32,
    /// The lesson-control override and its state file.
    control: control::Control,
    control_rx: tokio::sync::mpsc::Receiver<ControlRequest>,
}

impl Service {
    /// Runs the service until SIGTERM/SIGINT, [`ServiceCommand::Stop`] or `opts.duration`,
    /// taking `commands` as they come.
    pub async fn run(
        &self,
        cfg: Config,
        opts: ServiceOptions,
        commands: tokio::sync::mpsc::Receiver<ServiceCommand>,
    ) -> Result<ServiceSummary, RunError> {
        let started = Instant::now();
        let schedule = Schedule::from_config(&cfg.schedule)?;
        // A configuration that cannot broadcast fails now, before anything binds or starts.
        BroadcastSettings::from_config(&cfg, &opts.run)?;
        let hub = StatusHub::new();
        let (control_tx, control_rx) = tokio::sync::mpsc::channel(COMMAND_QUEUE);
        hub.set_control(control_tx);
        let control = control::Control::load(opts.state_dir.as_deref(), self.clock.now());
        let notifier = Arc::new(crate::notify::Notifier::from_env());
        // The broadcast matters more than its dashboard: without the server (a port taken,
        // say) it goes on, loudly; /healthz being unreachable is what the fleet's alert sees.
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
        let lessons = lessons::spawn(lessons::Options::from_config(&cfg), &hub, &self.clock);
        let duration = opts.duration;
        let shutdown = Box::pin(async move {
            let deadline = async {
                match duration {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown_signal() => ShutdownBy::Operator,
                _ = deadline => ShutdownBy::Duration,
            }
        });
        let mut d = Daemon {
            service: self.clone(),
            cfg,
            opts,
            schedule,
            hub,
            notifier,
            ready_sent: Arc::new(AtomicBool::new(false)),
            status_server,
            shutdown,
            shutdown_fired: false,
            commands,
            failures: 0,
            control,
            control_rx,
        };
        let result = d.run_loop().await;
        if !matches!(d.hub.state(), DaemonState::Stopping) {
            d.hub.set_state(DaemonState::Stopping);
            d.notifier.stopping();
        }
        lessons.finish().await;
        for t in [watchdog, status_task, viewers].into_iter().flatten() {
            t.abort();
        }
        if let Some(s) = d.status_server.take() {
            s.stop().await;
        }
        let (broadcasts, last) = result?;
        Ok(ServiceSummary {
            elapsed: started.elapsed(),
            broadcasts,
            last,
        })
    }
}

/// What one live period ended with.
enum LiveEnd {
    /// Back to the loop (idle, or the next broadcast).
    Continue(RunSummary),
    /// The broadcast failed and the wait after it is over: back to the loop.
    Retry,
    /// The service stops.
    Stop(Option<RunSummary>),
}

impl Daemon {
    async fn run_loop(&mut self) -> Result<(u64, Option<RunSummary>), RunError> {
        let mut broadcasts = 0u64;
        let mut last = None;
        loop {
            let eff = self.look();
            if !eff.on {
                self.hub.set_state(DaemonState::Idle);
                self.send_ready();
                match self.idle().await {
                    Some(Event::Shutdown(_)) => return Ok((broadcasts, last)),
                    Some(Event::Reload) => {
                        if let Some((new, _)) = self.reload().await {
                            self.cfg = new;
                        }
                    }
                    Some(Event::Control(req)) => self.handle_control(req),
                    None => {} // time to look at the clock again
                }
                continue;
            };
            broadcasts += 1;
            match self.live(eff, broadcasts == 1).await? {
                LiveEnd::Continue(summary) => {
                    self.failures = 0;
                    last = Some(summary);
                }
                LiveEnd::Retry => {}
                LiveEnd::Stop(summary) => return Ok((broadcasts, summary.or(last))),
            }
        }
    }

    fn send_ready(&self) {
        send_ready_once(&self.ready_sent, &self.notifier);
    }

    /// The next shutdown or command; pending forever once both are spent.
    async fn next_event(&mut self) -> Event {
        tokio::select! {
            by = self.shutdown.as_mut(), if !self.shutdown_fired => {
                self.shutdown_fired = true;
                Event::Shutdown(by)
            }
            cmd = self.commands.recv() => match cmd {
                Some(ServiceCommand::Reload) => Event::Reload,
                Some(ServiceCommand::Stop) => Event::Shutdown(ShutdownBy::Operator),
                Some(ServiceCommand::Control(req)) => Event::Control(req),
                // Nobody can send any more: only the shutdown future is left.
                None if self.shutdown_fired => std::future::pending().await,
                None => {
                    let by = self.shutdown.as_mut().await;
                    self.shutdown_fired = true;
                    Event::Shutdown(by)
                }
            },
            Some(req) = self.control_rx.recv() => Event::Control(req),
        }
    }

    /// Waits while idle: until the next window may have opened (`None`), a reload or a
    /// shutdown.
    async fn idle(&mut self) -> Option<Event> {
        let now = self.service.clock.now();
        let next = self.schedule.upcoming(now, 1).into_iter().next();
        match &next {
            Some(w) => tracing::info!(
                next_start = %fmt_time(w.start),
                title = w.title.as_deref().unwrap_or(""),
                "idle until the next window"
            ),
            None => tracing::info!("idle: no window ahead in the schedule"),
        }
        let nap = next.map_or(RECHECK, |w| until(w.start, now).min(RECHECK));
        tokio::select! {
            ev = self.next_event() => Some(ev),
            _ = tokio::time::sleep(nap) => None,
        }
    }

    /// One broadcast while `eff` says on (a window, an override, or unscheduled), until it
    /// ends. `first`: the process's first broadcast, whose configuration errors end the
    /// process.
    async fn live(&mut self, eff: Effective, first: bool) -> Result<LiveEnd, RunError> {
        if let Some(end) = eff.end {
            let w = eff.window.as_ref();
            tracing::info!(
                end = %fmt_time(end),
                title = w.and_then(|w| w.title.as_deref()).unwrap_or(""),
                reason = eff.why.as_str(),
                "window open: starting the broadcast"
            );
        }
        if let Some(w) = &eff.window {
            rename_for(&self.cfg, w);
        }
        let mut window_end = eff.end;
        self.hub.set_state(DaemonState::Live);
        let settings = BroadcastSettings::from_config(&self.cfg, &self.opts.run)?;
        let (tx, rx) = broadcast::command_channel();
        let on_first_publish: Option<Box<dyn FnOnce() + Send>> = {
            let (n, sent) = (self.notifier.clone(), self.ready_sent.clone());
            Some(Box::new(move || send_ready_once(&sent, &n)))
        };
        let mut ready_fallback =
            (!self.ready_sent.load(Ordering::SeqCst)).then(|| Instant::now() + READY_FALLBACK);
        let broadcast = self.service.broadcaster.run(
            settings,
            BroadcastIo {
                commands: rx,
                hub: Some(self.hub.clone()),
                on_first_publish,
            },
        );
        tokio::pin!(broadcast);
        let mut ending = Ending::Running;
        let mut shutdown_by = None;
        let outcome = loop {
            let now = self.service.clock.now();
            let nap = window_end.map_or(RECHECK, |e| until(e, now).min(RECHECK));
            tokio::select! {
                r = &mut broadcast => break r,
                ev = self.next_event(), if ending != Ending::Shutdown => match ev {
                    Event::Shutdown(by) => {
                        ending = Ending::Shutdown;
                        shutdown_by = Some(by);
                        self.hub.set_state(DaemonState::Stopping);
                        self.notifier.stopping();
                        let _ = tx.send(BroadcastCommand::Stop).await;
                    }
                    Event::Reload if ending == Ending::Restart => {
                        // The next broadcast starts from the new file; this one is ending.
                        if let Some((new, _)) = self.reload().await {
                            self.cfg = new;
                        }
                    }
                    Event::Reload => {
                        let Some((new, ch)) = self.reload().await else { continue };
                        if ch.schedule {
                            let eff = self.look();
                            window_end = eff.end;
                            if !eff.on {
                                tracing::info!("reload: now is outside the new schedule; stopping the broadcast");
                                let _ = tx.send(BroadcastCommand::Stop).await;
                                ending = Ending::Restart;
                            }
                        }
                        if ch.session {
                            tracing::info!("reload: [polyv], [target] or [record] changed; restarting the broadcast");
                            let _ = tx.send(BroadcastCommand::Stop).await;
                            ending = Ending::Restart;
                        } else if ending == Ending::Running {
                            if ch.media {
                                let media = broadcast::media_settings(&new, self.opts.run.test_pattern);
                                let _ = tx.send(BroadcastCommand::RestartMedia(Box::new(media))).await;
                            }
                            if ch.adapt {
                                let _ = tx.send(BroadcastCommand::Adapt(new.adapt.clone())).await;
                            }
                        }
                        self.cfg = new;
                    }
                    Event::Control(req) => {
                        self.handle_control(req);
                        let eff = self.look();
                        if ending == Ending::Running && !eff.on {
                            tracing::info!("stop now: stopping the broadcast");
                            let _ = tx.send(BroadcastCommand::Stop).await;
                            ending = Ending::Restart;
                        }
                        window_end = eff.end;
                    }
                },
                _ = tokio::time::sleep(nap), if ending == Ending::Running => {
                    // An extension or the next window may carry on past the end seen before.
                    let eff = self.look();
                    window_end = eff.end;
                    if !eff.on {
                        tracing::info!("window closed: stopping the broadcast");
                        let _ = tx.send(BroadcastCommand::Stop).await;
                        window_end = None;
                        ending = Ending::Restart;
                    }
                }
                _ = sleep_until_opt(ready_fallback) => {
                    ready_fallback = None;
                    if !self.ready_sent.load(Ordering::SeqCst) {
                        tracing::warn!("not publishing after 60 s; telling systemd the service is up anyway (see /healthz)");
                    }
                    self.send_ready();
                }
            }
        };
        match outcome {
            Ok(summary) => {
                self.hub.broadcast_ended(None, false);
                Ok(match ending {
                    Ending::Shutdown => LiveEnd::Stop(Some(summary)),
                    Ending::Running | Ending::Restart => LiveEnd::Continue(summary),
                })
            }
            Err(e) if shutdown_by == Some(ShutdownBy::Operator) => {
                // SIGTERM is a clean stop, whatever the broadcast was struggling with.
                tracing::warn!(error = %e, "stopped before the broadcast got going");
                self.hub.broadcast_ended(Some(e.to_string()), false);
                Ok(LiveEnd::Stop(None))
            }
            Err(e) => {
                self.hub.broadcast_ended(Some(e.to_string()), false);
                self.hub.set_state(DaemonState::Failed {
                    reason: e.to_string(),
                });
                // A one-shot run (`--duration`) reports how it went; a configuration that
                // cannot work at start is for the operator (exit 2, which systemd does not
                // restart on); an operator's own `max_attempts` is theirs to have.
                let config = e.exit_code() == ExitCode::Config && first;
                let gave_up = matches!(e, RunError::Rtmp(RtmpError::GaveUp { .. }));
                if shutdown_by.is_some() || config || gave_up {
                    return Err(e);
                }
                if ending == Ending::Restart {
                    // Told to end (window closed, a reload) before it got going: no wait.
                    tracing::warn!(error = %e, "the broadcast ended before it got going");
                    return Ok(LiveEnd::Retry);
                }
                self.failures += 1;
                let wait = failure_backoff(self.failures);
                tracing::error!(
                    error = %e,
                    retry_s = wait.as_secs(),
                    "the broadcast failed; starting it again (the service stays up)"
                );
                Ok(self.wait_after_failure(wait).await)
            }
        }
    }

    /// Waits `wait` after a failed broadcast (reloads apply meanwhile).
    async fn wait_after_failure(&mut self, wait: Duration) -> LiveEnd {
        let until = Instant::now() + wait;
        loop {
            tokio::select! {
                ev = self.next_event() => match ev {
                    Event::Shutdown(_) => return LiveEnd::Stop(None),
                    Event::Reload => {
                        if let Some((new, _)) = self.reload().await {
                            self.cfg = new;
                            return LiveEnd::Retry; // the new file may be the fix: try now
                        }
                    }
                    Event::Control(req) => {
                        self.handle_control(req);
                        return LiveEnd::Retry; // look again: a stop now idles
                    }
                },
                _ = tokio::time::sleep_until(until) => return LiveEnd::Retry,
            }
        }
    }

    /// Re-reads the config file. `None` (and the old config kept) when it is invalid.
    fn load_new(&self) -> Option<Config> {
        match Config::load(&self.opts.config_path) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "reload refused: keeping the running config");
                self.hub.reload_failed(e.to_string());
                None
            }
        }
    }

    /// Applies what does not need the broadcast: schedule, status server, log. Returns the
    /// new config and the changes for the caller to apply to a running broadcast.
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
}

fn send_ready_once(sent: &AtomicBool, notifier: &crate::notify::Notifier) {
    if !sent.swap(true, Ordering::SeqCst) {
        notifier.ready();
    }
}

/// The wait after the `n`th failed broadcast in a row: 5 s, doubling, at most 60 s.
fn failure_backoff(n: u32) -> Duration {
    (Duration::from_secs(5) * 2u32.saturating_pow(n.saturating_sub(1)).min(16))
        .min(Duration::from_secs(60))
}

fn until(t: SystemTime, now: SystemTime) -> Duration {
    t.duration_since(now).unwrap_or(Duration::ZERO)
}

fn fmt_time(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
