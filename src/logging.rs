//! Logging: `tracing` to the systemd journal with native fields when systemd connected our
//! stderr to it, readable lines on stderr otherwise, and repeated messages rate-limited.
//!
//! - **Where**: systemd sets `JOURNAL_STREAM=DEV:INODE` for a service whose stderr goes to the
//!   journal. When that matches our stderr (the convention: a child with stderr redirected
//!   elsewhere must not take it) and journald's socket answers, records go there through
//!   `tracing-journald`: `MESSAGE`, `PRIORITY` from the level, the event's fields as upper-cased
//!   journal fields (`ERROR=…`, `KBPS=…`), `TARGET`, `CODE_FILE`, `CODE_LINE`, and
//!   `SYSLOG_IDENTIFIER=polypush`. Otherwise lines go to stderr as before (colours only on a
//!   terminal, no target), and one INFO line says why the journal was not used when
//!   `JOURNAL_STREAM` was set.
//! - **Level**: `RUST_LOG` wins, then the level given to [`init`] (the command line); the
//!   config's `[log] level` can be applied later with [`set_level`] (a no-op under
//!   `RUST_LOG`), which a reload may call again.
//! - **Repeats**: [`RateLimit`] lets an INFO, WARN or ERROR event whose (callsite, message)
//!   pair came more than [`REPEAT_LIMIT`] times within [`REPEAT_WINDOW`] through only that
//!   often, and once the window has passed logs one line `suppressed K repeats of: MESSAGE`
//!   at the same level. DEBUG and TRACE, asked for explicitly, are never limited. Nothing on
//!   the packet path logs per packet; the limiter is the safety net for a loop that would.
//!   [`flush`] at exit logs what is still held back.

use serde::{Deserialize, Serialize};

/// `[log]`: what the daemon logs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// error, warn, info, debug or trace (or an `EnvFilter` directive); `RUST_LOG` and
    /// `--log-level` override it.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

/// Events of one (callsite, message) let through per window.
pub const REPEAT_LIMIT: u32 = 5;
/// The rate limiter's window.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10);
/// Distinct (callsite, message) pairs tracked at once; beyond, new ones pass unlimited.
const MAX_KEYS: usize = 1024;
/// The target of the limiter's own summaries (never limited).
pub const SUMMARY_TARGET: &str = "polypush::logging";
/// `SYSLOG_IDENTIFIER` in the journal.
pub const SYSLOG_IDENTIFIER: &str = "polypush";

/// Where [`init`] sent the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The systemd journal, with native fields.
    Journald,
    /// Readable lines on stderr.
    Stderr,
    /// A global subscriber was already installed (a second `init`); nothing changed.
    AlreadySet,
}

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
static LIMIT: OnceLock<RateLimit> = OnceLock::new();
static RUST_LOG_WINS: AtomicBool = AtomicBool::new(false);

/// Installs the global subscriber. `level` is the `--log-level` value (a level or an
/// `EnvFilter` directive such as `info,polypush::adapt=debug`); `RUST_LOG`, when set and
/// valid, wins over it. Never fails: an invalid level falls back to `warn` (with a WARN), an
/// unreachable journal to stderr.
pub fn init(level: &str) -> Output {
    let mut notes: Vec<String> = Vec::new();
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let from_env = rust_log
        .as_deref()
        .and_then(|v| match EnvFilter::try_new(v) {
            Ok(f) => Some(f),
            Err(e) => {
                notes.push(format!(
                    "RUST_LOG={v:?} is not a valid filter ({e}); using {level:?}"
                ));
                None
            }
        });
    RUST_LOG_WINS.store(from_env.is_some(), Ordering::Relaxed);
    let filter = match from_env {
        Some(f) => f,
        None => EnvFilter::try_new(level).unwrap_or_else(|e| {
            notes.push(format!(
                "log level {level:?} is not valid ({e}): use error, warn, info, debug or trace; using warn"
            ));
            EnvFilter::new("warn")
        }),
    };
    let (filter, handle) = reload::Layer::new(filter);

    let (journald, why_not) = match std::env::var("JOURNAL_STREAM") {
        Err(_) => (None, None),
        Ok(v) => match stderr_dev_ino() {
            Some((dev, ino)) if journal_stream_matches(&v, dev, ino) => {
                match tracing_journald::layer() {
                    Ok(l) => (
                        Some(
                            l.with_syslog_identifier(SYSLOG_IDENTIFIER.into())
                                .with_field_prefix(None),
                        ),
                        None,
                    ),
                    Err(e) => (
                        None,
                        Some(format!("the journal socket is unavailable ({e})")),
                    ),
                }
            }
            _ => (
                None,
                Some(format!(
                    "JOURNAL_STREAM={v:?} is not our stderr (it was redirected)"
                )),
            ),
        },
    };
    let output = if journald.is_some() {
        Output::Journald
    } else {
        Output::Stderr
    };
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    });
    let limit = RateLimit::new(REPEAT_LIMIT, REPEAT_WINDOW).flushing_in_background();
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(limit.clone())
        .with(journald)
        .with(stderr)
        .try_init()
        .is_ok();
    if !installed {
        return Output::AlreadySet;
    }
    let _ = FILTER.set(handle);
    let _ = LIMIT.set(limit);
    match (output, why_not) {
        (Output::Journald, _) => tracing::info!("logging to the systemd journal"),
        (_, Some(why)) => tracing::info!("logging to stderr: {why}"),
        _ => {}
    }
    for note in notes {
        tracing::warn!("{note}");
    }
    output
}

/// Applies a level (the config's `[log] level`, also on reload). `Ok(false)`: `RUST_LOG` is
/// in force and wins, nothing changed. `Err`: the directive is invalid, or [`init`] did not
/// install the subscriber.
pub fn set_level(directive: &str) -> Result<bool, String> {
    if RUST_LOG_WINS.load(Ordering::Relaxed) {
        return Ok(false);
    }
    let filter = EnvFilter::try_new(directive).map_err(|e| {
        format!("log level {directive:?} is not valid ({e}): use error, warn, info, debug or trace")
    })?;
    let handle = FILTER
        .get()
        .ok_or_else(|| "logging is not initialised".to_string())?;
    handle.reload(filter).map_err(|e| e.to_string())?;
    Ok(true)
}

/// Logs the summary of everything the rate limiter holds back now, windows still open
/// included: call it just before the process exits, so the last repeats are not lost.
pub fn flush() {
    if let Some(limit) = LIMIT.get() {
        limit.flush_all();
    }
}

/// Our stderr's device and inode, as systemd writes them into `JOURNAL_STREAM`.
fn stderr_dev_ino() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Whether `JOURNAL_STREAM` (`DEV:INODE`, decimal) names the file `dev`/`ino`.
pub fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
}

/// The repeat counter, pure: keys are (callsite, message) in the layer, anything hashable in
/// tests; time is passed in.
#[derive(Debug)]
pub struct Limiter<K> {
    limit: u32,
    window: Duration,
    max_keys: usize,
    entries: HashMap<K, Entry>,
    /// Summaries of windows that ended when a new event of their key came.
    pending: Vec<Summary<K>>,
}

#[derive(Debug)]
struct Entry {
    start: Instant,
    count: u32,
    suppressed: u64,
    level: Level,
}

/// `suppressed` events of `key` (at `level`) were held back in a window that has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary<K> {
    pub key: K,
    pub level: Level,
    pub suppressed: u64,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(limit: u32, window: Duration) -> Self {
        Limiter {
            limit,
            window,
            max_keys: MAX_KEYS,
            entries: HashMap::new(),
            pending: Vec::new(),
        }
    }

    /// Whether an event of `key` at `now` goes through. A window starts at the first event of
    /// a key and lasts `window`; within it the first `limit` events pass.
    pub fn admit(&mut self, key: K, level: Level, now: Instant) -> bool {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.max_keys {
            return true;
        }
        let window = self.window;
        let e = self.entries.entry(key.clone()).or_insert(Entry {
            start: now,
            count: 0,
            suppressed: 0,
            level,
        });
        if now.saturating_duration_since(e.start) >= window {
            if e.suppressed > 0 {
                self.pending.push(Summary {
                    key,
                    level: e.level,
                    suppressed: e.suppressed,
                });
            }
            *e = Entry {
                start: now,
                count: 0,
                suppressed: 0,
                level,
            };
        }
        e.count = e.count.saturating_add(1);
        if e.count > self.limit {
            e.suppressed += 1;
            false
        } else {
            true
        }
    }

    /// The summaries of every window that has ended by `now` with something suppressed;
    /// forgets ended windows.
    pub fn take_summaries(&mut self, now: Instant) -> Vec<Summary<K>> {
        let mut out = std::mem::take(&mut self.pending);
        let window = self.window;
        self.entries.retain(|key, e| {
            if now.saturating_duration_since(e.start) < window {
                return true;
            }
            if e.suppressed > 0 {
                out.push(Summary {
                    key: key.clone(),
                    level: e.level,
                    suppressed: e.suppressed,
                });
            }
            false
        });
        out
    }

    /// The summaries of everything suppressed so far, windows still open included (their
    /// counts start again from 0; events over the limit stay suppressed until they end).
    pub fn take_all_summaries(&mut self) -> Vec<Summary<K>> {
        let mut out = std::mem::take(&mut self.pending);
        for (key, e) in &mut self.entries {
            if e.suppressed > 0 {
                out.push(Summary {
                    key: key.clone(),
                    level: e.level,
                    suppressed: std::mem::take(&mut e.suppressed),
                });
            }
        }
        out
    }

    /// Whether anything is held back and not yet summarised.
    pub fn has_suppressed(&self) -> bool {
        !self.pending.is_empty() || self.entries.values().any(|e| e.suppressed > 0)
    }
}

/// What the layer counts by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    callsite: tracing::callsite::Identifier,
    /// The event's message (its name when it has none).
    pub message: String,
}

type Clock = Box<dyn Fn() -> Instant + Send + Sync>;

struct Shared {
    limiter: Mutex<Limiter<Key>>,
    clock: Clock,
    background: AtomicBool,
    flusher: OnceLock<()>,
}

/// The rate-limiting layer: disables (for every layer) an INFO/WARN/ERROR event whose
/// (callsite, message) is over the limit, and logs the summaries through [`RateLimit::flush`]
/// (from a background thread once something was suppressed, with
/// [`RateLimit::flushing_in_background`]). Cheap to clone.
#[derive(Clone)]
pub struct RateLimit {
    shared: Arc<Shared>,
}

impl RateLimit {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self::with_clock(limit, window, Instant::now)
    }

    /// With an injected clock (tests).
    pub fn with_clock(
        limit: u32,
        window: Duration,
        clock: impl Fn() -> Instant + Send + Sync + 'static,
    ) -> Self {
        RateLimit {
            shared: Arc::new(Shared {
                limiter: Mutex::new(Limiter::new(limit, window)),
                clock: Box::new(clock),
                background: AtomicBool::new(false),
                flusher: OnceLock::new(),
            }),
        }
    }

    /// Summaries are logged by a thread (`polypush-log`, started at the first suppressed
    /// event) that looks once a second, so they come even when the messages stop.
    pub fn flushing_in_background(self) -> Self {
        self.shared.background.store(true, Ordering::Relaxed);
        self
    }

    /// Logs a summary line for every window that has ended with suppressed events. Call it
    /// outside any event callback (it logs through the current dispatcher).
    pub fn flush(&self) {
        let now = (self.shared.clock)();
        let summaries = self.lock().take_summaries(now);
        for s in summaries {
            emit_summary(s.level, &s.key.message, s.suppressed);
        }
    }

    /// Like [`RateLimit::flush`], for windows still open too (at exit).
    pub fn flush_all(&self) {
        let summaries = self.lock().take_all_summaries();
        for s in summaries {
            emit_summary(s.level, &s.key.message, s.suppressed);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Limiter<Key>> {
        self.shared
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn start_flusher(&self) {
        if !self.shared.background.load(Ordering::Relaxed) {
            return;
        }
        let shared = self.shared.clone();
        self.shared.flusher.get_or_init(move || {
            let this = RateLimit { shared };
            let _ = std::thread::Builder::new()
                .name("polypush-log".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(1));
                    this.flush();
                });
        });
    }
}

fn emit_summary(level: Level, message: &str, n: u64) {
    macro_rules! summary {
        ($lvl:expr) => {
            tracing::event!(target: SUMMARY_TARGET, $lvl, suppressed = n, "suppressed {n} repeats of: {message}")
        };
    }
    match level {
        Level::ERROR => summary!(Level::ERROR),
        Level::WARN => summary!(Level::WARN),
        Level::INFO => summary!(Level::INFO),
        Level::DEBUG => summary!(Level::DEBUG),
        _ => summary!(Level::TRACE),
    }
}

/// Collects an event's `message`.
struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for RateLimit {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::INFO || meta.target() == SUMMARY_TARGET {
            return true;
        }
        let mut v = MessageVisitor(String::new());
        event.record(&mut v);
        if v.0.is_empty() {
            v.0 = meta.name().to_string();
        }
        let key = Key {
            callsite: meta.callsite(),
            message: v.0,
        };
        let now = (self.shared.clock)();
        let admitted = self.lock().admit(key, *meta.level(), now);
        if !admitted {
            self.start_flusher();
        }
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn limiter_passes_n_per_window_and_summarises_the_rest() {
        let t0 = Instant::now();
        let mut l = Limiter::new(5, secs(10));
        let passed = (0..20)
            .filter(|i| l.admit("a", Level::WARN, t0 + Duration::from_millis(i * 100)))
            .count();
        assert_eq!(passed, 5);
        // Another message is counted on its own.
        assert!(l.admit("b", Level::INFO, t0 + secs(1)));
        assert!(l.has_suppressed());
        // Nothing to say before the window ends.
        assert!(l.take_summaries(t0 + secs(9)).is_empty());
        let s = l.take_summaries(t0 + secs(10));
        assert_eq!(
            s,
            vec![Summary {
                key: "a",
                level: Level::WARN,
                suppressed: 15
            }]
        );
        assert!(!l.has_suppressed());
        // A fresh window: five more pass.
        let passed = (0..7)
            .filter(|_| l.admit("a", Level::WARN, t0 + secs(12)))
            .count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn a_window_ended_by_a_new_event_is_summarised_too() {
        let t0 = Instant::now();
        let mut l = Limiter::new(2, secs(10));
        for _ in 0..5 {
            l.admit("a", Level::ERROR, t0);
        }
        // The next event comes after the window, before anyone flushed.
        assert!(l.admit("a", Level::ERROR, t0 + secs(11)));
        let s = l.take_summaries(t0 + secs(11));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].suppressed, 3);
        // The new window had one event, nothing suppressed.
        assert!(l.take_summaries(t0 + secs(30)).is_empty());
    }

    #[test]
    fn at_exit_open_windows_are_summarised_too() {
        let t0 = Instant::now();
        let mut l = Limiter::new(2, secs(10));
        for _ in 0..6 {
            l.admit("a", Level::WARN, t0);
        }
        assert!(l.take_summaries(t0 + secs(1)).is_empty(), "window open");
        let s = l.take_all_summaries();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].suppressed, 4);
        assert!(l.take_all_summaries().is_empty(), "counted once");
        assert!(
            !l.admit("a", Level::WARN, t0 + secs(2)),
            "still over the limit"
        );
        assert_eq!(l.take_summaries(t0 + secs(10))[0].suppressed, 1);
    }

    #[test]
    fn unsuppressed_windows_leave_no_summary_and_are_forgotten() {
        let t0 = Instant::now();
        let mut l = Limiter::new(5, secs(10));
        for i in 0..3 {
            assert!(l.admit(i, Level::INFO, t0));
        }
        assert!(l.take_summaries(t0 + secs(10)).is_empty());
        assert!(l.entries.is_empty());
    }

    #[test]
    fn too_many_keys_pass_unlimited() {
        let t0 = Instant::now();
        let mut l = Limiter::new(1, secs(10));
        l.max_keys = 2;
        assert!(l.admit(1, Level::INFO, t0));
        assert!(l.admit(2, Level::INFO, t0));
        assert!(!l.admit(1, Level::INFO, t0));
        for _ in 0..3 {
            assert!(l.admit(3, Level::INFO, t0), "untracked");
        }
    }

    #[test]
    fn journal_stream_must_match_dev_and_inode() {
        assert!(journal_stream_matches("8:12345", 8, 12345));
        assert!(journal_stream_matches("8:12345\n", 8, 12345));
        assert!(!journal_stream_matches("8:12346", 8, 12345));
        assert!(!journal_stream_matches("9:12345", 8, 12345));
        assert!(!journal_stream_matches("bogus", 8, 12345));
        assert!(!journal_stream_matches("", 8, 12345));
        assert!(!journal_stream_matches("8:", 8, 12345));
    }

    /// Records what reaches the output.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<(Level, String)>>>);

    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let mut v = MessageVisitor(String::new());
            event.record(&mut v);
            self.0
                .lock()
                .unwrap()
                .push((*event.metadata().level(), v.0));
        }
    }

    #[test]
    fn layer_suppresses_repeats_for_every_output_and_summarises() {
        let t0 = Instant::now();
        let offset = Arc::new(AtomicU64::new(0));
        let clock = {
            let offset = offset.clone();
            move || t0 + Duration::from_millis(offset.load(Ordering::SeqCst))
        };
        let limit = RateLimit::with_clock(5, secs(10), clock);
        let out = Capture::default();
        let subscriber = tracing_subscriber::registry()
            .with(limit.clone())
            .with(out.clone());
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..12u64 {
                offset.store(i * 100, Ordering::SeqCst);
                tracing::warn!(attempt = i, "connection refused");
            }
            // Debug is never limited.
            for _ in 0..8 {
                tracing::debug!("a debug detail");
            }
            // Same message at another callsite: counted on its own.
            tracing::warn!("connection refused");
            limit.flush();
            assert_eq!(out.0.lock().unwrap().len(), 5 + 8 + 1, "no summary yet");
            offset.store(10_000, Ordering::SeqCst);
            limit.flush();
            limit.flush();
        });
        let got = out.0.lock().unwrap().clone();
        let refused = got
            .iter()
            .filter(|(_, m)| m == "connection refused")
            .count();
        assert_eq!(refused, 6);
        assert_eq!(got.iter().filter(|(_, m)| m == "a debug detail").count(), 8);
        assert_eq!(
            got.last().unwrap(),
            &(
                Level::WARN,
                "suppressed 7 repeats of: connection refused".to_string()
            ),
            "{got:?}"
        );
        assert_eq!(
            got.iter()
                .filter(|(_, m)| m.starts_with("suppressed"))
                .count(),
            1
        );
    }
}
