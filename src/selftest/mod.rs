//! `polypush selftest`: a preflight that never goes live.
//!
//! One [`Check`] per thing a broadcast needs, in this order:
//!
//! | check | what it does | fails with exit code |
//! |---|---|---|
//! | `config` | loads and validates the config file (and `--url`, if given) | 2 |
//! | `video` | opens the configured video source through the capture code and counts the frames it delivers in about a second (the first within 5 s) | 5 |
//! | `audio` | the same for the audio source (`none`: not needed) | 5 |
//! | `encoder` | opens the configured H.264 encoder with the configured size, rate and bitrate, encodes 10 frames of a test pattern (ms per frame), opens the AAC encoder | 5 |
//! | `login` | Polyv `teacher_login`, one attempt within `[polyv] timeout_s` (and one at the login fallback when the default host is down): the push address, stream key masked, and which login URL answered (not needed with `--url` or `[target] url`) | 3 rejected, 4 unreachable, 2 no password |
//! | `ingest` | TCP connect, RTMP handshake and `connect` to the application, until `NetConnection.Connect.Success`, within 5 s; then hangs up without `createStream` or `publish` ([`crate::rtmp::probe`]) | 4 unreachable, 3 refused, 2 bad address |
//! | `clock` | this box's clock against the `Date` header of the Polyv login host that answered; fails outside Polyv's 3-minute signing window (not needed without Polyv) | 3, or 4 unreachable |
//! | `record` | with `[record] enabled`: creates the directory if missing, writes, fsyncs and deletes a probe file, and wants `min_free_mb` plus one segment's worth free | 2 |
//!
//! With a `[polyv]`, the report also lists where every Polyv call goes (`[polyv.endpoints]`
//! made effective: each full URL, the login fallback, the `resolve` overrides) and which
//! login URL answered: under the checks, and as `polyv` in `--json`.
//!
//! A check that needs a failed one (everything needs `config`, `ingest` needs `login`) is
//! reported skipped (`–`, `ok: false`, "skipped: needs …") and has no exit code of its own; a
//! check that does not apply (no audio track, no Polyv login with a fixed URL, recording off)
//! is skipped with `ok: true`. The exit code is 0 only if every check is ok; otherwise it is
//! the code of the *first* failed check in the order above.
//!
//! Every check is time-bounded and runs blocking work (FFmpeg, the file system) on a thread
//! of its own, so a device that hangs in the kernel costs its check, not the whole run.
//! Nothing prints a secret: push addresses are shown through [`RtmpUrl`]'s masking.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::Config;
use crate::exit::ExitCode;
use crate::rtmp::RtmpUrl;

use media::{check_audio, check_encoder, check_video};
use network::{check_clock, check_ingest, check_login};
use record::check_record;

mod media;
mod network;
mod record;
#[cfg(test)]
mod tests;

/// Polyv accepts request timestamps this far from its own clock, seconds.
pub const SIGNING_WINDOW_S: f64 = 180.0;

/// The checks, in order.
const NAMES: [&str; 8] = [
    "config", "video", "audio", "encoder", "login", "ingest", "clock", "record",
];

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `config`, `video`, `audio`, `encoder`, `login`, `ingest`, `clock` or `record`.
    pub name: &'static str,
    /// Passed, or not needed.
    pub ok: bool,
    /// Not run: not needed (`ok`), or a check it needs failed (not `ok`).
    pub skipped: bool,
    /// What was found, with numbers. Never a secret.
    pub detail: String,
    /// What to do, for a failure.
    pub fix: Option<String>,
    /// The exit code this failure asks for; [`ExitCode::Ok`] when ok or skipped.
    pub exit_code: ExitCode,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok: true,
            skipped: false,
            detail: detail.into(),
            fix: None,
            exit_code: ExitCode::Ok,
        }
    }

    /// Does not apply to this configuration.
    fn not_needed(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            skipped: true,
            ..Self::pass(name, detail)
        }
    }

    fn fail(
        name: &'static str,
        exit_code: ExitCode,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name,
            ok: false,
            skipped: false,
            detail: detail.into(),
            fix: Some(fix.into()),
            exit_code,
        }
    }

    /// Not run because `needs` failed.
    fn needs(name: &'static str, needs: &str) -> Self {
        Self {
            name,
            ok: false,
            skipped: true,
            detail: format!("skipped: needs {needs}"),
            fix: None,
            exit_code: ExitCode::Ok,
        }
    }

    fn glyph(&self) -> &'static str {
        match (self.ok, self.skipped) {
            (_, true) => "–",
            (true, false) => "✓",
            (false, false) => "✗",
        }
    }
}

/// Where the Polyv calls go: `[polyv.endpoints]` made effective, and which login URL
/// answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolyvEndpoints {
    /// (call, full URL), in the order a broadcast makes them ([`crate::platform::Endpoints::effective`]).
    pub urls: Vec<(&'static str, String)>,
    /// `resolve`: (host, address), as configured.
    pub resolve: Vec<(String, String)>,
    /// The teacher_login URL that answered with a push address, if the login check got one.
    pub login_answered_by: Option<String>,
}

impl PolyvEndpoints {
    fn of(cfg: &Config, login_answered_by: Option<String>) -> Self {
        let p = &cfg.polyv;
        let signed_viewers = p.app_id.is_some() && p.app_secret.is_some();
        Self {
            urls: p.endpoints.effective(&p.channel_id, signed_viewers),
            resolve: p
                .endpoints
                .resolve
                .iter()
                .map(|(h, a)| (h.clone(), a.clone()))
                .collect(),
            login_answered_by,
        }
    }

    fn to_json(&self) -> Value {
        let urls: serde_json::Map<String, Value> = self
            .urls
            .iter()
            .map(|(name, url)| (name.to_string(), Value::from(url.as_str())))
            .collect();
        let resolve: serde_json::Map<String, Value> = self
            .resolve
            .iter()
            .map(|(h, a)| (h.clone(), Value::from(a.as_str())))
            .collect();
        json!({
            "endpoints": urls,
            "resolve": resolve,
            "login_answered_by": self.login_answered_by,
        })
    }

    fn render(&self, s: &mut String) {
        let width = self.urls.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        s.push_str(
            "  Polyv endpoints:
",
        );
        for (name, url) in &self.urls {
            s.push_str(&format!(
                "    {name:<width$}  {url}
"
            ));
        }
        for (host, addr) in &self.resolve {
            s.push_str(&format!(
                "    {:<width$}  {host} → {addr}
",
                "resolve"
            ));
        }
        if let Some(url) = &self.login_answered_by {
            s.push_str(&format!(
                "    login answered by {url}
"
            ));
        }
    }
}

/// Every check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub config_path: PathBuf,
    pub checks: Vec<Check>,
    /// Where the Polyv calls go, when the config has a `[polyv]`.
    pub polyv: Option<PolyvEndpoints>,
}

impl Report {
    /// True when every check passed or did not apply.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// [`ExitCode::Ok`] when [`ok`](Self::ok); otherwise the exit code of the first failed
    /// check.
    pub fn exit_code(&self) -> ExitCode {
        self.checks
            .iter()
            .find(|c| !c.ok && !c.skipped)
            .map_or(ExitCode::Ok, |c| c.exit_code)
    }

    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// `{"ok", "exit_code", "config", "checks": [{name, ok, skipped, detail, fix}], "polyv":
    /// {"endpoints": {call: url}, "resolve": {host: address}, "login_answered_by"} | null}`.
    pub fn to_json(&self) -> Value {
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "ok": c.ok,
                    "skipped": c.skipped,
                    "detail": c.detail,
                    "fix": c.fix,
                })
            })
            .collect();
        json!({
            "ok": self.ok(),
            "exit_code": self.exit_code().code(),
            "config": self.config_path,
            "checks": checks,
            "polyv": self.polyv.as_ref().map(PolyvEndpoints::to_json),
        })
    }

    /// The table: one line per check, `→ fix:` under each failure, a summary line.
    pub fn render(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut s = format!(
            "polypush selftest of {} (nothing is published)\n",
            self.config_path.display()
        );
        for c in &self.checks {
            s.push_str(&format!(
                "  {} {:<width$}  {}\n",
                c.glyph(),
                c.name,
                c.detail
            ));
            if let Some(fix) = &c.fix {
                s.push_str(&format!("    {:<width$}  → fix: {fix}\n", ""));
            }
        }
        if let Some(polyv) = &self.polyv {
            polyv.render(&mut s);
        }
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| !c.ok && !c.skipped)
            .map(|c| c.name)
            .collect();
        let skipped = self.checks.iter().filter(|c| c.skipped).count();
        if failed.is_empty() {
            let passed = self.checks.len() - skipped;
            s.push_str(&format!(
                "all checks passed ({passed} passed, {skipped} not needed)\n"
            ));
        } else {
            s.push_str(&format!(
                "selftest FAILED: {} ({} failed, {skipped} skipped); exit code {}\n",
                failed.join(", "),
                failed.len(),
                self.exit_code()
            ));
        }
        s
    }
}

/// How `polypush selftest` was invoked.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The configuration file.
    pub config: PathBuf,
    /// Check this ingest instead of logging in to Polyv (overrides `[target] url`).
    pub url: Option<String>,
}

/// Runs every check. Never panics on what it finds; every check is time-bounded.
pub async fn run(opts: &Options) -> Report {
    let mut checks = Vec::with_capacity(NAMES.len());
    let cfg = match Config::load(&opts.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            checks.push(Check::fail(
                "config",
                ExitCode::Config,
                e.to_string(),
                "edit the file as the message says (packaging/polypush.toml documents every key), then run `polypush check`",
            ));
            checks.extend(NAMES[1..].iter().map(|n| Check::needs(n, "config")));
            return Report {
                config_path: opts.config.clone(),
                checks,
                polyv: None,
            };
        }
    };

    // A fixed push address (as `run --url` or `[target] url`) means no Polyv login.
    let (fixed_from, fixed) = match (&opts.url, cfg.target.url.is_empty()) {
        (Some(u), _) => ("--url", Some(u.clone())),
        (None, false) => ("[target] url", Some(cfg.target.url.clone())),
        (None, true) => ("", None),
    };
    let fixed = fixed.map(|u| RtmpUrl::parse(&u));
    checks.push(match &fixed {
        None => Check::pass("config", format!("{} valid", opts.config.display())),
        Some(Ok(url)) => Check::pass(
            "config",
            format!(
                "{} valid; pushing to {url} ({fixed_from}), no Polyv login",
                opts.config.display()
            ),
        ),
        Some(Err(e)) => Check::fail(
            "config",
            ExitCode::Config,
            format!("{fixed_from}: {e}"),
            format!("give {fixed_from} as rtmp://host[:port]/app/stream-key"),
        ),
    });

    let (video, audio) = tokio::join!(check_video(&cfg), check_audio(&cfg));
    checks.push(video);
    checks.push(audio);
    checks.push(check_encoder(&cfg).await);

    let mut answered_by = None;
    match fixed {
        Some(fixed) => {
            checks.push(Check::not_needed(
                "login",
                format!("not needed: pushing to the fixed address of {fixed_from}"),
            ));
            checks.push(match fixed {
                Ok(url) => check_ingest(&cfg, &url, false).await,
                Err(_) => Check::needs("ingest", "a valid push address"),
            });
            checks.push(Check::not_needed(
                "clock",
                format!(
                    "not needed: no Polyv calls when pushing to the fixed address of {fixed_from}"
                ),
            ));
        }
        None => {
            let login = check_login(&cfg).await;
            checks.push(login.check);
            checks.push(match &login.url {
                Some(url) => check_ingest(&cfg, url, true).await,
                None => Check::needs("ingest", "login (the push address)"),
            });
            checks.push(if login.reachable {
                check_clock(&cfg, login.answered_by.as_deref()).await
            } else {
                Check::needs("clock", "Polyv reachable")
            });
            answered_by = login.answered_by;
        }
    }
    checks.push(check_record(&cfg).await);
    Report {
        config_path: opts.config.clone(),
        checks,
        polyv: cfg
            .polyv
            .is_configured()
            .then(|| PolyvEndpoints::of(&cfg, answered_by)),
    }
}

/// How a blocking job on its own thread ended.
enum Blocking<T> {
    Done(T),
    TimedOut,
    Failed(String),
}

/// Runs `f` on a thread of its own and waits at most `limit`. A job that overruns is left to
/// finish on its own (it holds nothing the caller needs; the process does not wait for it).
async fn blocking<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Blocking<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("polypush-selftest".into())
        .spawn(move || {
            let _ = tx.send(f());
        });
    if let Err(e) = spawned {
        return Blocking::Failed(format!("cannot start a thread: {e}"));
    }
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(v)) => Blocking::Done(v),
        Ok(Err(_)) => {
            Blocking::Failed("the check panicked; this is a bug, please report it".into())
        }
        Err(_) => Blocking::TimedOut,
    }
}
