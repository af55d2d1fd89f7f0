//! The command line: clap definitions only (the man page and completions are generated from
//! these, so every flag documented here is documented there).

use clap::{Args, Parser, Subcommand};
use polypush::platform::types::{ChannelObject, Scene};
use std::path::PathBuf;

/// polypush: a headless live-push daemon for the Polyv platform.
///
/// Exit codes: 0 ok, 1 internal error, 2 usage or configuration error, 3 rejected by the
/// platform or the ingest, 4 network, platform or ingest unavailable, 5 capture device or
/// encoder problem.
#[derive(Debug, Parser)]
#[command(name = "polypush", version, about, long_about)]
pub struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "POLYPUSH_CONFIG", value_name = "FILE", default_value = polypush::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Machine-readable JSON on stdout (errors too, as {"error": {...}}).
    #[arg(long, global = true)]
    pub json: bool,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides. Default: warn, and
    /// for `run` the config's `[log] level`.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Broadcast: log in to Polyv (unless a URL is given), capture, encode and publish until
    /// SIGINT/SIGTERM or --duration, then flush and close cleanly.
    Run {
        /// Publish here instead of the address from Polyv's teacher_login
        /// (rtmp://host[:port]/app/stream[?query]); overrides [target] url.
        #[arg(long, value_name = "RTMP_URL")]
        url: Option<String>,
        /// Capture the built-in test pattern and tone instead of the camera and microphone.
        #[arg(long)]
        test_pattern: bool,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        duration: Option<f64>,
        /// Append one JSON line per second of live numbers (state, target and delivered
        /// bitrate, queue delay, drops by reason) to this file.
        #[arg(long, value_name = "FILE")]
        stats_file: Option<std::path::PathBuf>,
    },
    /// List cameras (with their formats and sizes) and ALSA capture devices.
    Devices,
    /// Validate the configuration and print the effective configuration, secrets masked.
    Check,
    /// Preflight that never goes live: the config; each capture device opens and delivers
    /// frames (counted); the encoder encodes a few frames; Polyv login gives a push address;
    /// the ingest answers the RTMP handshake and connect (no publish); this box's clock is
    /// within Polyv's 3-minute signing window; the recording directory is writable with
    /// enough space. One ✓/✗ line per check, with what to do for each ✗. Exit 0 only if all
    /// pass, otherwise the code of the first failure: 2 config or recording directory, 3
    /// rejected (password, clock, ingest), 4 network, 5 device or encoder.
    Selftest {
        /// Check this ingest instead of the push address from Polyv's teacher_login (then
        /// neither login nor clock is checked); overrides [target] url, like `run --url`.
        #[arg(long, value_name = "RTMP_URL")]
        url: Option<String>,
    },
    /// Log in to Polyv (teacher_login) and print the RTMP push address.
    Login {
        /// Print the stream key in full (it lets anybody broadcast on the channel).
        #[arg(long)]
        reveal: bool,
    },
    /// Print how many viewers are online in the channel's chat room.
    Viewers,
    /// Print the broadcast windows of [[schedule]]: the one open now and the next ones, with
    /// local start and end, length, lead and title (--json: RFC 3339 instants), and the
    /// lesson-control override in force (extend, start-now, stop-now), read from the state
    /// directory ($STATE_DIRECTORY, else /var/lib/polypush).
    Schedule {
        /// How many windows to list (1-1000), the one open now included.
        #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        count: u32,
        /// List the windows as seen from this instant instead of now: RFC 3339 such as
        /// 2026-03-29T08:00:00+02:00, or 2026-03-29T08:00[Europe/Berlin].
        #[arg(long, value_name = "TIME", value_parser = polypush::schedule::parse_instant)]
        from: Option<std::time::SystemTime>,
    },
    /// Lesson control: make what is broadcasting now (a window, or an earlier extend or
    /// start-now) MINUTES longer, 1-480, ending at most 8 h from now. Refused when nothing is
    /// on (use start-now). Asks the running service through its status server ([status]
    /// listen, with the token of status.token_file); the override survives a restart.
    Extend {
        /// How many minutes longer.
        #[arg(value_name = "MINUTES")]
        minutes: u32,
    },
    /// Lesson control: broadcast now, outside the schedule, until the next window opens (it
    /// then runs to its own end), or for 8 h when none opens sooner; stop-now ends it. Inside
    /// a window that stop-now stopped, resumes it. Through the running service, like extend.
    #[command(visible_alias = "start")]
    StartNow,
    /// Lesson control: stop the broadcast now; nothing until the next window opens. Through
    /// the running service, like extend.
    #[command(visible_alias = "stop")]
    StopNow,
    /// Print the lesson reports ([service] state_dir/lessons.jsonl): per schedule window or
    /// manual broadcast, the planned window, the time on air, the share on air and each gap
    /// with its cause (--json: one JSON object per line, as logged).
    Lessons {
        /// Only lessons that ended at or after this: a date (2026-03-29, midnight in the box's
        /// time zone) or an RFC 3339 instant.
        #[arg(long, value_name = "DATE", value_parser = polypush::lessons::parse_since_local)]
        since: Option<std::time::SystemTime>,
    },
    /// Channel administration through the signed Polyv APIs (needs app_id and app_secret).
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout.
    Man,
}

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Create a channel (v3 create-cpic-channel).
    Create {
        /// Channel name (at most 60 characters).
        #[arg(long)]
        name: String,
        /// Live scene: alone (plain broadcast) or ppt (slides and video).
        #[arg(long, value_enum)]
        scene: Scene,
        /// Who may watch: in (internal) or out (public).
        #[arg(long, value_enum)]
        object: Option<ChannelObject>,
        /// Start time, 13-digit milliseconds since the epoch.
        #[arg(long, value_name = "MS")]
        start: Option<u64>,
        /// End time, 13-digit milliseconds since the epoch.
        #[arg(long, value_name = "MS")]
        end: Option<u64>,
        #[command(flatten)]
        reveal: Reveal,
    },
    /// Rename the configured channel.
    Rename {
        /// The new name.
        name: String,
    },
    /// Update a channel's basic settings (v3 basic/update).
    Update {
        /// Channel to change (default: the configured channel).
        #[arg(long, value_name = "ID")]
        channel: Option<String>,
        /// New channel name.
        #[arg(long)]
        name: Option<String>,
        /// New channel password (at most 16 characters). `-` reads it from stdin.
        #[arg(long)]
        password: Option<String>,
        /// Presenter name shown to viewers.
        #[arg(long)]
        publisher: Option<String>,
        /// Limit on viewers online at once (also turns the limit on).
        #[arg(long, value_name = "N")]
        max_viewers: Option<u32>,
        /// A JSON file with the `authSettings` array (watch conditions), sent as is.
        #[arg(long, value_name = "FILE")]
        auth_json: Option<PathBuf>,
    },
    /// Create an MR channel (v4 mr/create).
    CreateMr {
        /// Channel name (at most 100 characters).
        #[arg(long)]
        name: String,
        /// Start time, 13-digit milliseconds since the epoch (countdown display only).
        #[arg(long, value_name = "MS")]
        start: Option<u64>,
        /// Console password: 6-16 characters with letters and digits (generated if omitted).
        #[arg(long, value_name = "P")]
        channel_password: Option<String>,
        /// Assistant password: 6-16 characters with letters and digits (generated if omitted).
        #[arg(long, value_name = "P")]
        assistant_password: Option<String>,
        #[command(flatten)]
        reveal: Reveal,
    },
    /// Print a channel's RTMP push URL as the admin API returns it (v3 get-push-url).
    PushUrl {
        /// Channel (default: the configured channel).
        #[arg(long, value_name = "ID")]
        channel: Option<String>,
        #[command(flatten)]
        reveal: Reveal,
    },
    /// Print the live status of channels (v4 live-status list).
    Status {
        /// Channel ids (default: the configured channel).
        ids: Vec<String>,
    },
}

#[derive(Debug, Args, Clone, Copy)]
pub struct Reveal {
    /// Print passwords and stream keys in full instead of masked.
    #[arg(long)]
    pub reveal: bool,
}
