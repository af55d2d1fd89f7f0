//! systemd integration (`Type=notify`): `READY=1`, `STATUS=`, `WATCHDOG=1` and `STOPPING=1`
//! over the `sd_notify` datagram protocol.
//!
//! - [`Notifier`]: the socket systemd handed us in `NOTIFY_SOCKET` (a no-op without one). The
//!   messages are `sd-notify`'s [`NotifyState`]s, byte for byte what `sd_notify::notify` sends
//!   (`READY=1\n`); the address is read once, in [`Notifier::from_env`], and the datagrams go
//!   through one socket of our own, so a notifier never depends on the environment afterwards
//!   (tests give it a socket of their own, [`Notifier::take_from_env`] may clear the variables
//!   so children do not inherit them) and abstract sockets (`@name`) work too. Nothing here
//!   panics or blocks: a failed send is logged once, at debug.
//! - [`Watchdog`]: the pure decision whether to ping. While a broadcast should run, a ping
//!   means "frames are flowing through the encoder and the sender", so a stalled capture or
//!   encoder (or a sender stuck on a live connection) gets the service restarted by systemd.
//!   While none should run (idle outside a window, starting, stopping, waiting after a
//!   failure), a ping only says the daemon loop is alive.
//! - [`spawn_watchdog`] pings at half of `WatchdogSec` from [`StatusHub::progress`];
//!   [`spawn_status`] keeps `STATUS=` in step with [`StatusHub::snapshot`] ([`status_line`]).

use crate::rtmp::{AddressClass, SenderPhase};
use crate::status::{DaemonState, Progress, Snapshot, StatusHub};
use crate::throttle::Throttle;
use sd_notify::NotifyState;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// `STATUS=` text longer than this (in characters) is cut, with an ellipsis.
pub const MAX_STATUS_CHARS: usize = 200;

/// How long frames (or sent packets) may stand still before [`spawn_watchdog`] withholds a
/// ping: twice the 500 ms in which the broadcast refreshes the hub, so two looks at the same
/// snapshot never count as a stall.
pub const STALL_GRACE: Duration = Duration::from_secs(1);

/// A WARN about withheld pings at most this often while a stall lasts.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Talks to systemd's notification socket. Cheap to clone (every clone shares one socket);
/// the default is a no-op.
#[derive(Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    /// `NOTIFY_SOCKET`, for messages.
    display: String,
    addr: Result<SocketAddr, String>,
    socket: Option<UnixDatagram>,
    watchdog: Option<Duration>,
    /// A send failed already (logged once).
    failed: AtomicBool,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            None => f.write_str("Notifier(disabled)"),
            Some(i) => f
                .debug_struct("Notifier")
                .field("socket", &i.display)
                .field("watchdog", &i.watchdog)
                .finish(),
        }
    }
}

impl Notifier {
    /// The notifier systemd asked for: `NOTIFY_SOCKET` (none: every call is a no-op) and the
    /// watchdog from `WATCHDOG_USEC`/`WATCHDOG_PID` (`sd_notify::watchdog_enabled`: only when
    /// `WATCHDOG_PID`, if set, is our PID). The variables stay set: polypush spawns no child
    /// processes, so none inherits them; see [`Notifier::take_from_env`] to clear them.
    pub fn from_env() -> Notifier {
        Self::from_vars(
            std::env::var_os("NOTIFY_SOCKET"),
            sd_notify::watchdog_enabled(),
        )
    }

    /// Like [`Notifier::from_env`], and removes `NOTIFY_SOCKET`, `WATCHDOG_USEC` and
    /// `WATCHDOG_PID` from the environment afterwards, so that child processes do not inherit
    /// them (the notifier keeps what it read).
    ///
    /// # Safety
    /// Calls [`std::env::remove_var`]: call it while the process has one thread, before the
    /// tokio runtime is built, like `sd_notify::notify_and_unset_env`.
    pub unsafe fn take_from_env() -> Notifier {
        let n = Self::from_env();
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(var);
        }
        n
    }

    /// A notifier that sends to `socket` (a path, or `@name` for an abstract socket) with the
    /// given watchdog interval (`WatchdogSec`): for tests and for callers that read the
    /// environment themselves.
    pub fn with_socket(socket: impl AsRef<OsStr>, watchdog: Option<Duration>) -> Notifier {
        Self::from_vars(Some(socket.as_ref().to_owned()), watchdog)
    }

    /// Does nothing, ever.
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    fn from_vars(socket: Option<OsString>, watchdog: Option<Duration>) -> Notifier {
        let Some(socket) = socket.filter(|s| !s.is_empty()) else {
            return Notifier::default();
        };
        let display = socket.to_string_lossy().into_owned();
        let addr = parse_addr(&socket).map_err(|e| e.to_string());
        // Non-blocking: a service manager that stopped reading must never stall a caller.
        let socket = UnixDatagram::unbound()
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|e| {
                tracing::debug!(error = %e, "cannot create the sd_notify socket; not notifying systemd");
            })
            .ok();
        Notifier {
            inner: Some(Arc::new(Inner {
                display,
                addr,
                socket,
                watchdog: watchdog.filter(|d| !d.is_zero()),
                failed: AtomicBool::new(false),
            })),
        }
    }

    /// Whether `NOTIFY_SOCKET` was set (messages go somewhere).
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// `WatchdogSec`, if systemd asked for pings (and there is a socket to ping). Ping at
    /// half of it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.inner.as_ref().and_then(|i| i.watchdog)
    }

    /// `READY=1`: configured (and, when live, publishing).
    pub fn ready(&self) {
        self.send(&[NotifyState::Ready]);
    }

    /// `STATUS=<line>`: newlines and other control characters become spaces, the text is cut
    /// at [`MAX_STATUS_CHARS`].
    pub fn status(&self, line: &str) {
        if self.inner.is_none() {
            return;
        }
        let line = one_line(line, MAX_STATUS_CHARS);
        self.send(&[NotifyState::Status(&line)]);
    }

    /// `WATCHDOG=1`.
    pub fn ping(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// `STOPPING=1`: shutting down.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// One datagram with the states, each followed by a newline (as `sd_notify::notify`).
    fn send(&self, states: &[NotifyState<'_>]) {
        let Some(inner) = &self.inner else { return };
        let mut msg = String::new();
        for s in states {
            msg.push_str(&s.to_string());
            msg.push('\n');
        }
        let result = match (&inner.addr, &inner.socket) {
            (Ok(addr), Some(socket)) => socket
                .send_to_addr(msg.as_bytes(), addr)
                .map(drop)
                .map_err(|e| e.to_string()),
            (Err(e), _) => Err(e.clone()),
            (_, None) => Err("no socket".into()),
        };
        if let Err(e) = result {
            if !inner.failed.swap(true, Ordering::Relaxed) {
                tracing::debug!(
                    socket = %inner.display,
                    error = %e,
                    "cannot notify systemd (NOTIFY_SOCKET); further failures are not logged"
                );
            }
        }
    }
}

/// `NOTIFY_SOCKET`: a path, or `@name` for Linux's abstract namespace.
fn parse_addr(socket: &OsStr) -> std::io::Result<SocketAddr> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = socket.as_bytes();
    match bytes.strip_prefix(b"@") {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Some(name) => {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        Some(_) => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "abstract sockets need Linux",
        )),
        None => SocketAddr::from_pathname(socket),
    }
}

/// `s` on one line: control characters (newlines included) become spaces, runs of spaces
/// one, cut at `max` characters with an ellipsis.
fn one_line(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 4));
    let mut count = 0;
    let mut space = false;
    for c in s.trim().chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' {
            if space {
                continue;
            }
            space = true;
        } else {
            space = false;
        }
        if count == max {
            out.pop();
            out.push('…');
            return out;
        }
        out.push(c);
        count += 1;
    }
    out
}

/// Why the watchdog withholds a ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// The encoders produced nothing for this long (capture or encoder stuck).
    NoFrames(Duration),
    /// The sender is publishing but wrote no packet for this long.
    SenderStuck(Duration),
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stall::NoFrames(d) => write!(f, "no frames encoded for {} s", d.as_secs()),
            Stall::SenderStuck(d) => write!(
                f,
                "sender stuck: publishing, but no packet sent for {} s",
                d.as_secs()
            ),
        }
    }
}

/// The watchdog's decision, pure: fed [`StatusHub::progress`] at every tick, it says whether
/// to send `WATCHDOG=1`.
///
/// - `None` (no broadcast should run: idle outside a window, starting, stopping, waiting
///   after a failure): ping, the daemon loop is alive.
/// - `Some(p)`: ping only if `p.frames_encoded` advanced since the last call, and
///   `p.packets_sent` advanced too or the sender is not publishing (while it reconnects its
///   packets cannot move, and a restart would not help). The first `Some` after a `None` (or
///   a counter that went backwards: a new broadcast) sets the baseline and pings.
///
/// With a grace ([`Watchdog::with_grace`]), a counter must stand still for longer than it
/// before a ping is withheld.
#[derive(Debug, Clone, Default)]
pub struct Watchdog {
    grace: Duration,
    last: Option<Progress>,
    frames_moved: Option<Instant>,
    packets_moved: Option<Instant>,
}

impl Watchdog {
    /// Exactly the rule above: any call without progress withholds.
    pub fn new() -> Watchdog {
        Watchdog::default()
    }

    /// Withholds only once frames (or packets, while publishing) stood still for longer than
    /// `grace`: for a caller that may look more often than the counters are refreshed.
    pub fn with_grace(grace: Duration) -> Watchdog {
        Watchdog {
            grace,
            ..Watchdog::default()
        }
    }

    /// Whether to ping now.
    pub fn should_ping(&mut self, progress: Option<Progress>) -> bool {
        self.check(progress, Instant::now()).is_ok()
    }

    /// The decision at `now`, with the reason when a ping is withheld.
    pub fn check(&mut self, progress: Option<Progress>, now: Instant) -> Result<(), Stall> {
        let Some(p) = progress else {
            *self = Watchdog::with_grace(self.grace);
            return Ok(());
        };
        let last = self.last.replace(p);
        let baseline = match last {
            None => true,
            Some(l) => p.frames_encoded < l.frames_encoded || p.packets_sent < l.packets_sent,
        };
        if baseline {
            self.frames_moved = Some(now);
            self.packets_moved = Some(now);
            return Ok(());
        }
        let last = last.unwrap_or_default();
        if p.frames_encoded > last.frames_encoded {
            self.frames_moved = Some(now);
        }
        // Not publishing: the sender's clock starts when it publishes again.
        if p.packets_sent > last.packets_sent || !p.publishing {
            self.packets_moved = Some(now);
        }
        let frames_still = now.saturating_duration_since(self.frames_moved.unwrap_or(now));
        let packets_still = now.saturating_duration_since(self.packets_moved.unwrap_or(now));
        let frames_ok = p.frames_encoded > last.frames_encoded
            || (!self.grace.is_zero() && frames_still <= self.grace);
        if !frames_ok {
            return Err(Stall::NoFrames(frames_still));
        }
        let packets_ok = !p.publishing
            || p.packets_sent > last.packets_sent
            || (!self.grace.is_zero() && packets_still <= self.grace);
        if !packets_ok {
            return Err(Stall::SenderStuck(packets_still));
        }
        Ok(())
    }
}

/// When systemd asked for a watchdog (`WATCHDOG_USEC`): a task that every half interval asks
/// `hub` for progress and pings when [`Watchdog`] (with [`STALL_GRACE`]) says so. A withheld
/// ping is logged as a WARN naming why (at most every 10 s while it lasts), and its end as an
/// INFO. Takes a `Notifier` or an `Arc<Notifier>`. Needs a tokio runtime; abort the handle
/// (or let the runtime end) to stop it.
pub fn spawn_watchdog(
    notifier: impl Into<Arc<Notifier>>,
    hub: StatusHub,
) -> Option<tokio::task::JoinHandle<()>> {
    let notifier: Arc<Notifier> = notifier.into();
    let period = (notifier.watchdog_interval()? / 2).max(Duration::from_millis(1));
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dog = Watchdog::with_grace(STALL_GRACE.min(period * 2));
        let mut warn = Throttle::new(WARN_EVERY);
        let mut withholding = false;
        loop {
            tick.tick().await;
            let now = Instant::now();
            match dog.check(hub.progress(), now) {
                Ok(()) => {
                    if withholding {
                        tracing::info!("frames are flowing again; systemd watchdog pings resumed");
                        withholding = false;
                        warn.reset();
                    }
                    notifier.ping();
                }
                Err(stall) => {
                    withholding = true;
                    if warn.ready(now) {
                        tracing::warn!(
                            reason = %stall,
                            "withholding the systemd watchdog ping: {stall}; systemd restarts the service if this lasts past WatchdogSec"
                        );
                    }
                }
            }
        }
    }))
}

/// When there is a notification socket: a task that sends `STATUS=` with [`status_line`]
/// whenever that line changes, looking once a second. Takes a `Notifier` or an
/// `Arc<Notifier>`. Needs a tokio runtime.
pub fn spawn_status(
    notifier: impl Into<Arc<Notifier>>,
    hub: StatusHub,
) -> Option<tokio::task::JoinHandle<()>> {
    let notifier: Arc<Notifier> = notifier.into();
    if !notifier.is_enabled() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = String::new();
        loop {
            tick.tick().await;
            let line = one_line(
                &status_line(&hub.snapshot(), SystemTime::now()),
                MAX_STATUS_CHARS,
            );
            if line != last {
                notifier.status(&line);
                last = line;
            }
        }
    }))
}

/// The one-line state for `STATUS=` (what `systemctl status` shows), such as
/// `live: publishing, 2480 kbit/s, 25.0 fps, queue 40 ms`, `idle: next window Mon 08:00` or
/// `live: reconnecting (connection refused)`. `now` decides how a window's start is written
/// (a weekday within the week, else the date), in the box's local time.
pub fn status_line(s: &Snapshot, now: SystemTime) -> String {
    match &s.state {
        DaemonState::Starting => "starting".into(),
        DaemonState::Stopping => "stopping".into(),
        DaemonState::Failed { reason } => format!("failed, retrying: {reason}"),
        DaemonState::Idle => {
            let sched = &s.schedule;
            match sched.next_start {
                Some(t) => {
                    let mut line = format!("idle: next window {}", local_time(t, now));
                    if let Some(title) = sched.title.as_deref().filter(|t| !t.is_empty()) {
                        line.push_str(&format!(" ({title})"));
                    }
                    line
                }
                None if sched.configured => "idle: no upcoming window".into(),
                None => "idle".into(),
            }
        }
        DaemonState::Live => {
            if let Some(w) = &s.media_wait {
                return format!(
                    "live: capture down, retrying (attempt {}): {}",
                    w.attempts, w.reason
                );
            }
            let Some(b) = &s.broadcast else {
                return "live: starting the broadcast".into();
            };
            let line = live_line(b);
            match b.alarm_text() {
                Some(alarms) => format!("{alarms}; {line}"),
                None => line,
            }
        }
    }
}

/// The `live:` line of a running broadcast (without its media alarms).
fn live_line(b: &crate::status::BroadcastSnapshot) -> String {
    let error = b.sender_error.as_deref().filter(|e| !e.is_empty());
    match b.sender_state {
        SenderPhase::Publishing => {
            let mut line = format!(
                "live: publishing, {:.0} kbit/s, {:.1} fps, queue {} ms",
                b.delivered_kbps, b.encoder_fps, b.ring.queued_delay_ms
            );
            if b.target_kbps != 0 && b.target_kbps < b.configured_kbps {
                line.push_str(&format!(
                    ", video {} of {} kbit/s",
                    b.target_kbps, b.configured_kbps
                ));
            }
            line
        }
        SenderPhase::Waiting | SenderPhase::Connecting => match (&b.refusal, error) {
            (Some(r), _) if r.class == AddressClass::Unavailable => format!(
                "live: Polyv does not answer ({}), retrying: {}",
                r.reason, r.message
            ),
            (Some(r), _) => format!(
                "live: Polyv refuses for now ({}), retrying: {}",
                r.reason, r.message
            ),
            (None, Some(e)) => format!("live: reconnecting ({e})"),
            (None, None) => "live: connecting".into(),
        },
        SenderPhase::CredentialsRejected => match error {
            Some(e) => format!("live: Polyv rejected the channel credentials ({e})"),
            None => "live: Polyv rejected the channel credentials".into(),
        },
        SenderPhase::Starting => "live: starting the broadcast".into(),
        SenderPhase::Stopped => "live: stopped".into(),
    }
}

/// `t` in local time: `Mon 08:00` within the next 6 days, else `2025-06-02 08:00`.
fn local_time(t: SystemTime, now: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs(),
        Err(_) => return "(before 1970)".into(),
    };
    let Ok(time) = libc::time_t::try_from(secs) else {
        return format!("at unix time {secs}");
    };
    // SAFETY: localtime_r only writes the `tm` we own; a zeroed tm is a valid value for it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&time, &mut tm).is_null() };
    if !ok {
        return format!("at unix time {secs}");
    }
    let soon = t
        .duration_since(now)
        .is_ok_and(|d| d < Duration::from_secs(6 * 86_400));
    if soon {
        let day = DAYS.get(tm.tm_wday as usize).copied().unwrap_or("?");
        format!("{day} {:02}:{:02}", tm.tm_hour, tm.tm_min)
    } else {
        format!(
            "{}-{:02}-{:02} {:02}:{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{BroadcastSnapshot, ScheduleStatus};

    fn p(frames: u64, packets: u64, publishing: bool) -> Option<Progress> {
        Some(Progress {
            frames_encoded: frames,
            packets_sent: packets,
            publishing,
        })
    }

    #[test]
    fn no_broadcast_always_pings() {
        let mut w = Watchdog::new();
        for _ in 0..5 {
            assert!(w.should_ping(None));
        }
    }

    #[test]
    fn pings_only_while_frames_and_packets_advance() {
        let mut w = Watchdog::new();
        assert!(
            w.should_ping(p(0, 0, true)),
            "the first look sets the baseline"
        );
        assert!(w.should_ping(p(10, 5, true)));
        assert!(w.should_ping(p(20, 9, true)));
        // The source stopped: frames stand still.
        assert!(!w.should_ping(p(20, 12, true)));
        assert!(!w.should_ping(p(20, 12, true)));
        // Frames move again.
        assert!(w.should_ping(p(30, 15, true)));
        // Frames move, the sender does not although it publishes: stuck.
        assert!(!w.should_ping(p(40, 15, true)));
        // Not publishing (reconnecting): the sender's packets cannot move; frames suffice.
        assert!(w.should_ping(p(50, 15, false)));
        assert!(w.should_ping(p(60, 15, false)));
        // Not publishing and no frames either: withheld.
        assert!(!w.should_ping(p(60, 15, false)));
    }

    #[test]
    fn none_resets_and_a_new_broadcast_is_a_new_baseline() {
        let mut w = Watchdog::new();
        assert!(w.should_ping(p(100, 50, true)));
        assert!(!w.should_ping(p(100, 50, true)));
        // Idle in between: alive; then the next broadcast starts from zero.
        assert!(w.should_ping(None));
        assert!(w.should_ping(p(0, 0, false)));
        assert!(!w.should_ping(p(0, 0, false)));
        // Counters going backwards (a new broadcast without an idle look between) are a baseline.
        assert!(w.should_ping(p(500, 500, true)));
        assert!(w.should_ping(p(3, 1, true)));
    }

    #[test]
    fn reasons_name_the_stall_and_how_long() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut w = Watchdog::new();
        assert_eq!(w.check(p(1, 1, true), t0), Ok(()));
        assert_eq!(w.check(p(2, 2, true), t0 + s), Ok(()));
        assert_eq!(
            w.check(p(2, 2, true), t0 + 4 * s),
            Err(Stall::NoFrames(3 * s))
        );
        assert_eq!(
            w.check(p(3, 2, true), t0 + 5 * s),
            Err(Stall::SenderStuck(4 * s))
        );
        assert_eq!(
            Stall::NoFrames(Duration::from_millis(3900)).to_string(),
            "no frames encoded for 3 s"
        );
        assert!(Stall::SenderStuck(s)
            .to_string()
            .starts_with("sender stuck"));
    }

    #[test]
    fn grace_tolerates_a_look_between_two_refreshes() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = Watchdog::with_grace(ms(1000));
        assert!(w.check(p(1, 1, true), t0).is_ok());
        assert!(w.check(p(2, 2, true), t0 + ms(500)).is_ok());
        // Same snapshot again 400 ms later: within the grace.
        assert!(w.check(p(2, 2, true), t0 + ms(900)).is_ok());
        assert!(w.check(p(2, 2, true), t0 + ms(1500)).is_ok());
        assert_eq!(
            w.check(p(2, 2, true), t0 + ms(1600)),
            Err(Stall::NoFrames(ms(1100)))
        );
        assert!(w.check(p(3, 3, true), t0 + ms(1700)).is_ok());
    }

    #[test]
    fn status_is_one_line_and_bounded() {
        assert_eq!(one_line("a\nb\r\n  c\t", 50), "a b c");
        let long = "x".repeat(500);
        let cut = one_line(&long, MAX_STATUS_CHARS);
        assert_eq!(cut.chars().count(), MAX_STATUS_CHARS);
        assert!(cut.ends_with('…'));
        assert_eq!(one_line("ab", 2), "ab");
        assert_eq!(one_line("推流中推流中", 3), "推流…");
    }

    #[test]
    fn disabled_and_broken_notifiers_never_panic() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog_interval(), None);
        n.ready();
        n.status("x");
        n.ping();
        n.stopping();
        let n = Notifier::from_vars(Some(OsString::new()), Some(Duration::from_secs(1)));
        assert!(!n.is_enabled(), "an empty NOTIFY_SOCKET is unset");
        let n = Notifier::with_socket("/nonexistent/polypush/notify", Some(Duration::ZERO));
        assert!(n.is_enabled());
        assert_eq!(n.watchdog_interval(), None, "WATCHDOG_USEC=0 is off");
        n.ready();
        n.ping();
        n.stopping();
        let n = Notifier::with_socket("@polypush-test-nobody-listens", None);
        n.ready();
    }

    #[test]
    fn abstract_socket_names_work() {
        let name = format!("polypush-notify-test-{}", std::process::id());
        let addr = parse_addr(OsStr::new(&format!("@{name}"))).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::with_socket(format!("@{name}"), None).ready();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
    }

    fn live(sender_state: SenderPhase, error: Option<&str>) -> Snapshot {
        Snapshot {
            state: DaemonState::Live,
            broadcast: Some(BroadcastSnapshot {
                sender_state,
                sender_error: error.map(str::to_string),
                delivered_kbps: 2480.4,
                encoder_fps: 25.0,
                target_kbps: 2500,
                configured_kbps: 2500,
                ring: crate::ring::RingStats {
                    queued_delay_ms: 40,
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn status_lines() {
        let now = SystemTime::now();
        assert_eq!(
            status_line(&live(SenderPhase::Publishing, None), now),
            "live: publishing, 2480 kbit/s, 25.0 fps, queue 40 ms"
        );
        let mut adapted = live(SenderPhase::Publishing, None);
        adapted.broadcast.as_mut().unwrap().target_kbps = 1200;
        assert_eq!(
            status_line(&adapted, now),
            "live: publishing, 2480 kbit/s, 25.0 fps, queue 40 ms, video 1200 of 2500 kbit/s"
        );
        // Media alarms first, so a cut line still shows them.
        let mut alarmed = live(SenderPhase::Publishing, None);
        let mut media = crate::health::MediaReport::disabled(true, true, 25);
        media.alarms[0].active = true;
        media.alarms[3].active = true;
        alarmed.broadcast.as_mut().unwrap().media = Some(media);
        assert_eq!(
            status_line(&alarmed, now),
            "ALARM silence,frozen; live: publishing, 2480 kbit/s, 25.0 fps, queue 40 ms"
        );
        assert_eq!(
            status_line(&live(SenderPhase::Waiting, Some("connection refused")), now),
            "live: reconnecting (connection refused)"
        );
        assert_eq!(
            status_line(&live(SenderPhase::Connecting, None), now),
            "live: connecting"
        );
        assert!(status_line(
            &live(SenderPhase::CredentialsRejected, Some("wrong password")),
            now
        )
        .contains("rejected the channel credentials (wrong password)"));
        let no_broadcast = Snapshot {
            state: DaemonState::Live,
            ..Default::default()
        };
        assert_eq!(
            status_line(&no_broadcast, now),
            "live: starting the broadcast"
        );
        assert_eq!(status_line(&Snapshot::default(), now), "starting");
        let failed = Snapshot {
            state: DaemonState::Failed {
                reason: "camera gone".into(),
            },
            ..Default::default()
        };
        assert_eq!(status_line(&failed, now), "failed, retrying: camera gone");

        let idle = |next: Option<SystemTime>| Snapshot {
            state: DaemonState::Idle,
            schedule: ScheduleStatus {
                configured: true,
                next_start: next,
                title: Some("Physics".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let soon = status_line(&idle(Some(now + Duration::from_secs(3600))), now);
        let rest = soon.strip_prefix("idle: next window ").expect(&soon);
        let (day, rest) = rest.split_once(' ').unwrap();
        assert!(
            ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"].contains(&day),
            "{soon}"
        );
        assert_eq!(&rest[2..3], ":", "{soon}");
        assert!(rest.ends_with(" (Physics)"), "{soon}");
        let later = status_line(&idle(Some(now + Duration::from_secs(30 * 86_400))), now);
        assert!(later.starts_with("idle: next window 20"), "{later}");
        assert_eq!(status_line(&idle(None), now), "idle: no upcoming window");
    }
}
