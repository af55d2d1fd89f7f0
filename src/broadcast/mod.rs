//! One broadcast, wired together: the push address (Polyv's, or a fixed URL), capture and
//! encoding on their OS threads with the FLV muxers where the encoders drain, the tee to the
//! safety recording and the ring, the sender publishing the ring, the bitrate controller
//! between them, and a snapshot every 500 ms for the hub, the status line and the stats file.
//! The service ([`crate::service`]) decides when a broadcast runs; this owns one, from the
//! login to a clean close.
//!
//! ```text
//! capture ─► encode ─► flv muxer ─► tee ─► ring ─► rtmp sender ─► ingest
//!  (OS threads)  ▲                   └─► record          │ link stats (every 100 ms)
//!                └─────── target ◄── adapt ◄─────────────┘
//! ```
//!
//! # Layout
//! - `settings`: [`BroadcastSettings`], every stage's settings value built from the config.
//! - `address`: Polyv's push address as the sender's [`AddressSource`], errors classed.
//! - `media`: starting capture and encoding with the muxers and the tee.
//! - `tee`: the recorder before the ring.
//!
//! Network trouble never ends a broadcast: the sender reconnects on its own. Only
//! [`BroadcastCommand::Stop`] (or the command channel closing), a capture or encoder failure
//! or a configuration that cannot work does. Stopping: capture stops, the encoders flush into
//! the ring, the ring closes, the sender drains it (bounded) and ends the stream cleanly.

mod address;
mod media;
mod settings;
mod tee;

pub use address::{classify, PolyvAddress, REFUSAL_REASONS};
pub use settings::{media_settings, sender_options, BroadcastSettings, Destination, RunOptions};

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::adapt::{AdaptConfig, Controller, DelayController, LinkStats, Target};
use crate::config::ConfigError;
use crate::encode::{PipelineConfig, PipelineControl, PipelineError, PipelineStats};
use crate::exit::ExitCode;
use crate::flv::FlvError;
use crate::platform::PlatformError;
use crate::record::{RecordError, Recorder};
use crate::ring::{Ring, RingStats};
#[cfg(unix)]
use crate::rtmp::reconnect_on_sigusr1;
use crate::rtmp::{
    run_sender, AddressError, AddressSource, RtmpError, SenderControl, SenderHooks, SenderParts,
    SenderStats,
};
use crate::status::{
    BroadcastSnapshot, RateMeter, StatsFile, StatsFileError, StatusHub, StatusLine,
};
use media::{open_media, Media, MediaRetry, MediaStart};
use tee::Tee;

/// Why a broadcast (or the service around it) ended badly; [`RunError::exit_code`] says how
/// the process exits.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A setting that cannot work (a schedule entry, a missing channel password).
    #[error(transparent)]
    Setting(#[from] crate::setting::InvalidSetting),
    /// The Polyv client could not be set up from `[polyv]`.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// The first login said retrying cannot help.
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error(transparent)]
    Media(#[from] PipelineError),
    /// The encoder's headers cannot be carried in FLV.
    #[error("the encoder's stream headers cannot be sent: {0}")]
    Headers(#[source] FlvError),
    #[error(transparent)]
    Rtmp(#[from] RtmpError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    StatsFile(#[from] StatsFileError),
    /// The sender's task panicked or was cancelled: a bug.
    #[error("the sender task failed: {0}; this is a bug in polypush, please report it")]
    SenderTask(#[from] tokio::task::JoinError),
    /// The run ended (signal or `--duration`) without ever publishing.
    #[error("never published in {elapsed_s:.0} s: {reason}")]
    NeverPublished {
        elapsed_s: f64,
        reason: String,
        /// What kept it from publishing: capture ([`ExitCode::Media`]), a refusal
        /// ([`ExitCode::Refused`]) or an unreachable ingest or platform
        /// ([`ExitCode::Unavailable`]).
        exit: ExitCode,
    },
}

impl RunError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Config(_) | Self::Setting(_) | Self::Record(_) | Self::StatsFile(_) => {
                ExitCode::Config
            }
            Self::Platform(e) => e.exit_code(),
            Self::Address(e) | Self::Rtmp(RtmpError::Address(e)) => address_exit_code(e),
            Self::Rtmp(e) => e.exit_code(),
            Self::Media(_) => ExitCode::Media,
            Self::Headers(_) | Self::SenderTask(_) => ExitCode::Internal,
            Self::NeverPublished { exit, .. } => *exit,
        }
    }

    /// A stable name for `--json` output.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Setting(_) => "config",
            Self::Platform(e) => e.kind(),
            Self::Address(_) => "address",
            Self::Media(_) => "media",
            Self::Headers(_) => "headers",
            Self::Rtmp(_) => "rtmp",
            Self::Record(_) => "record",
            Self::StatsFile(_) => "stats_file",
            Self::SenderTask(_) => "internal",
            Self::NeverPublished { .. } => "never_published",
        }
    }
}

/// Polyv's own class when the cause is a platform error, else the address error's.
fn address_exit_code(e: &AddressError) -> ExitCode {
    e.cause()
        .downcast_ref::<PlatformError>()
        .map_or_else(|| e.exit_code(), PlatformError::exit_code)
}

/// What a finished broadcast did.
#[derive(Debug, Clone, Copy)]
pub struct RunSummary {
    pub elapsed: Duration,
    pub pipeline: PipelineStats,
    pub ring: RingStats,
    pub bytes_sent: u64,
    /// Sessions after the first.
    pub reconnects: u64,
}

/// What the service can ask of a running broadcast.
#[derive(Debug)]
pub enum BroadcastCommand {
    /// Stop cleanly: flush the encoders, drain the ring, close the stream.
    Stop,
    /// New capture and encoder settings (a reload): stop capture and encoding, start them
    /// again with these, into the same ring and connection. The new encoder starts with an
    /// IDR and a new sequence header; the timeline goes on with the wall clock.
    RestartMedia(Box<PipelineConfig>),
    /// New `[adapt]` settings (a reload): a fresh controller from the current target.
    Adapt(AdaptConfig),
}

/// How many commands may wait for a broadcast; the service sends a handful per reload.
pub const COMMAND_QUEUE: usize = 8;

/// The channel the service steers a broadcast through (bounded).
pub fn command_channel() -> (
    mpsc::Sender<BroadcastCommand>,
    mpsc::Receiver<BroadcastCommand>,
) {
    mpsc::channel(COMMAND_QUEUE)
}

/// How the service steers and watches one broadcast.
pub struct BroadcastIo {
    pub commands: mpsc::Receiver<BroadcastCommand>,
    /// Refreshed twice a second with the live numbers; told the sender's handle.
    pub hub: Option<StatusHub>,
    /// Called once, when the first session publishes (systemd READY=1 "and the first
    /// publish, when live").
    pub on_first_publish: Option<Box<dyn FnOnce() + Send>>,
}

/// How often the hub, the status line (and every other tick the stats file) are refreshed.
const STATUS_TICK: Duration = Duration::from_millis(500);
/// How often the bitrate controller decides.
const ADAPT_TICK: Duration = Duration::from_millis(100);

/// One broadcast, from opening the devices to a clean close.
///
/// Capture and encoding start first, retried with backoff ([`MEDIA_RETRY_CAP`]) for as long
/// as they fail (a camera not plugged in yet), with the reason on the hub; only then does the
/// sender start and log in, so a box without a camera does not keep a channel "live" on
/// Polyv. A pipeline that fails later is restarted in place the same way, on the same
/// connection. Stopping while the devices never opened is [`RunError::NeverPublished`] with
/// [`ExitCode::Media`].
pub async fn run_broadcast(
    settings: BroadcastSettings,
    io: BroadcastIo,
) -> Result<RunSummary, RunError> {
    let BroadcastIo {
        mut commands,
        hub,
        on_first_publish,
    } = io;
    let started = Instant::now();
    let (source, polyv) = destination(&settings)?;
    let ring = Ring::new(settings.ring);
    let recorder = match &settings.record {
        Some(r) => {
            let rec = Recorder::start(r.clone())?;
            tracing::info!(dir = %r.dir.display(), segment_s = r.segment_s, "safety recording on");
            Some(rec)
        }
        None => None,
    };
    let tee = Tee::new(ring.clone(), recorder.clone());
    let mut media_settings = settings.media.clone();
    let mut adapt_cfg = settings.adapt.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let opened = open_media(
        &mut media_settings,
        &mut adapt_cfg,
        &tee,
        &stop,
        settings.timestamp_offset_ms,
        &mut commands,
        hub.as_ref(),
    )
    .await;
    let media = match opened {
        Ok(MediaStart::Ready(media)) => media,
        Ok(MediaStart::Stopped { reason }) => {
            close_recorder(recorder);
            return Err(RunError::NeverPublished {
                elapsed_s: started.elapsed().as_secs_f64(),
                reason: format!("capture never started: {reason}"),
                exit: ExitCode::Media,
            });
        }
        Err(e) => {
            close_recorder(recorder);
            return Err(e);
        }
    };
    let info = media.info.clone();
    tracing::info!(
        width = info.width,
        height = info.height,
        fps = info.fps,
        kbps = info.video_bitrate_kbps,
        "capturing and encoding"
    );

    let control = SenderControl::new();
    if let Some(hub) = &hub {
        hub.broadcast_started(control.clone());
        // `/snapshot.jpg` and `/meter` ask this pipeline; `media_running` swaps it on a restart.
        hub.set_picture_source(Some(media.pipeline.control()));
    }
    #[cfg(unix)]
    let usr1 = reconnect_on_sigusr1(control.clone()).ok();
    // The sender asks for keyframes through this; a media restart swaps the pipeline behind it.
    let keyframes = Arc::new(Mutex::new(media.pipeline.control()));
    let hooks = sender_hooks(
        &keyframes,
        polyv.clone(),
        (info.width, info.height),
        on_first_publish,
    );
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
    let mut sender = tokio::spawn(run_sender(
        SenderParts {
            options: settings.sender.clone(),
            control: control.clone(),
            hooks,
            ..SenderParts::new(ring.clone(), source)
        },
        async move {
            let _ = finish_rx.await;
        },
    ));

    let stats_file = match &settings.options.stats_file {
        Some(p) => Some(StatsFile::create(p)?),
        None => None,
    };
    let status_line =
        StatusLine::new(settings.options.status_line && std::io::stderr().is_terminal());
    let mut b = Broadcast {
        started,
        timeline_start: Instant::now(),
        ring,
        tee,
        stop,
        control,
        hub,
        polyv,
        keyframes,
        adapt: None,
        target: Target::kbps(info.video_bitrate_kbps),
        configured_kbps: info.video_bitrate_kbps,
        configured_fps: info.fps,
        audio_kbps: settings.audio_kbps(),
        max_kbps: None,
        media_settings,
        offset_ms: settings.timestamp_offset_ms,
        media,
        media_retry: None,
        status_line,
        stats_file,
        rates: RateMeter::default(),
        ticks: 0,
    };
    b.set_adapt(&adapt_cfg, false);

    let mut adapt_tick = tokio::time::interval(ADAPT_TICK);
    adapt_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut tick = tokio::time::interval(STATUS_TICK);
    let mut sender_result = None;
    let outcome: Result<(), RunError> = loop {
        let retry_at = b.media_retry.as_ref().map(|r| r.at);
        tokio::select! {
            biased;
            cmd = commands.recv() => match cmd {
                None | Some(BroadcastCommand::Stop) => break Ok(()),
                Some(BroadcastCommand::Adapt(a)) => b.set_adapt(&a, true),
                Some(BroadcastCommand::RestartMedia(next)) => b.restart_media(*next),
            },
            r = &mut sender => {
                sender_result = Some(r);
                break Ok(());
            }
            _ = sleep_until_opt(retry_at) => b.retry_media(),
            _ = adapt_tick.tick(), if b.adapt.is_some() && b.media_retry.is_none() => b.on_adapt_tick(),
            _ = tick.tick() => {
                if b.media_retry.is_none() && b.media.pipeline.is_finished() && !b.on_pipeline_ended() {
                    break Ok(()); // the sources ended: the broadcast is over
                }
                b.on_tick();
            }
        }
    };
    b.status_line.finish();

    // Stop capture, flush the encoders into the ring, close it; the sender drains it
    // (bounded) and closes the RTMP stream cleanly.
    b.stop.store(true, Ordering::SeqCst);
    let media_down = b.media_retry.as_ref().map(|r| r.reason.clone());
    if let Some(hub) = &b.hub {
        hub.media_ready();
    }
    let Broadcast {
        media,
        ring,
        control,
        ..
    } = b;
    let joined = tokio::task::block_in_place(|| media.pipeline.stop_and_join());
    ring.close();
    let _ = finish_tx.send(());
    let sender_result = match sender_result {
        Some(r) => r,
        None => sender.await,
    };
    #[cfg(unix)]
    if let Some(h) = usr1 {
        h.abort();
    }
    // Everything encoded is in the recorder's queue now: flush and close the last segment.
    close_recorder(recorder);
    outcome?;
    // A pipeline being retried was already stopped: its error is in `media_down`.
    let pipeline_stats = match (joined, &media_down) {
        (Err(e), None) => return Err(e.into()),
        (Ok(stats), _) => stats,
        (Err(_), Some(_)) => PipelineStats::default(),
    };
    let sender_stats = sender_result??;
    if sender_stats.sessions == 0 {
        let refused = sender_stats.publish_rejections > 0
            || sender_stats.credentials_rejections > 0
            || sender_stats.platform_refusals > 0;
        return Err(RunError::NeverPublished {
            elapsed_s: started.elapsed().as_secs_f64(),
            reason: control
                .last_error()
                .map(|(_, r)| r)
                .unwrap_or_else(|| "no connection attempt finished".into()),
            exit: if refused {
                ExitCode::Refused
            } else {
                ExitCode::Unavailable
            },
        });
    }
    Ok(RunSummary {
        elapsed: started.elapsed(),
        pipeline: pipeline_stats,
        ring: ring.stats(),
        bytes_sent: sender_stats.bytes_sent,
        reconnects: sender_stats.reconnects,
    })
}

fn close_recorder(recorder: Option<Recorder>) {
    let Some(rec) = recorder else { return };
    match tokio::task::block_in_place(|| rec.stop()) {
        Ok(st) => tracing::info!(
            segments = st.segments_written,
            bytes = st.bytes_written,
            dropped = st.packets_dropped,
            "safety recording closed"
        ),
        Err(e) => tracing::error!(error = %e, "safety recording did not close cleanly"),
    }
}

/// Where the stream goes: a fixed URL, or Polyv's login (done by the sender when it first
/// asks for the address, after capture started). Polyv's client is set up here so a
/// configuration it cannot work with fails at once.
#[allow(clippy::type_complexity)]
fn destination(
    settings: &BroadcastSettings,
) -> Result<(Arc<dyn AddressSource>, Option<Arc<PolyvAddress>>), RunError> {
    match &settings.destination {
        Destination::Url(url) => Ok((Arc::new(url.clone()), None)),
        Destination::Polyv(cfg) => {
            let polyv = Arc::new(PolyvAddress::new(cfg)?);
            Ok((polyv.clone(), Some(polyv)))
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// `media` with the video bitrate held to the channel's limit.
fn capped(media: &PipelineConfig, max_kbps: Option<u32>) -> PipelineConfig {
    let mut m = media.clone();
    if let Some(max) = max_kbps {
        m.video_encoder.bitrate_kbps = m.video_encoder.bitrate_kbps.min(max);
    }
    m
}

/// The sender's calls into the broadcast: keyframes from whichever pipeline runs, the first
/// publish to the service, and notify_stream2 to Polyv on every publish.
fn sender_hooks(
    keyframes: &Arc<Mutex<PipelineControl>>,
    polyv: Option<Arc<PolyvAddress>>,
    (w, h): (u32, u32),
    on_first_publish: Option<Box<dyn FnOnce() + Send>>,
) -> SenderHooks {
    let first = Mutex::new(on_first_publish);
    SenderHooks {
        request_keyframe: {
            let keyframes = keyframes.clone();
            Box::new(move || {
                keyframes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .request_keyframe()
            })
        },
        on_publishing: Box::new(move |_url| {
            let f = first.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(f) = f {
                f();
            }
            let Some(polyv) = polyv.clone() else { return };
            tokio::spawn(async move {
                let Some(stream) = polyv.stream() else { return };
                match polyv.client().notify_stream(&stream, w, h).await {
                    Ok(()) => tracing::info!(width = w, height = h, "told Polyv the stream is up"),
                    Err(e) => {
                        tracing::warn!(error = %e, "notify_stream2 failed; the broadcast goes on")
                    }
                }
            });
        }),
    }
}

/// One tick's uplink numbers for the controller, from the ring's and the sender's snapshots.
fn link_stats(
    ring: &RingStats,
    sender: &SenderStats,
    connected: bool,
    current_target_kbps: u32,
    audio_kbps: u32,
) -> LinkStats {
    LinkStats {
        connected,
        ring_delay_ms: ring.queued_delay_ms,
        ring_bytes: ring.queued_bytes as u64,
        kernel_unsent_bytes: sender.socket_unsent_bytes,
        backlog_bytes: sender.backlog_bytes,
        bytes_sent_total: sender.bytes_sent,
        bytes_delivered_total: sender.bytes_delivered,
        bytes_acked_total: sender.bytes_acked,
        current_target_kbps,
        audio_kbps,
    }
}

/// A running broadcast's state between ticks.
struct Broadcast {
    started: Instant,
    /// When the first pipeline started: the timeline's zero (plus `offset_ms`).
    timeline_start: Instant,
    ring: Ring,
    tee: Tee,
    /// The running pipeline's stop flag.
    stop: Arc<AtomicBool>,
    control: SenderControl,
    hub: Option<StatusHub>,
    /// Polyv's login, when the address is Polyv's: the channel's bitrate limit comes from it.
    polyv: Option<Arc<PolyvAddress>>,
    keyframes: Arc<Mutex<PipelineControl>>,
    adapt: Option<DelayController>,
    /// The last target asked of the encoder (it may still wait for the reopen rate limit).
    target: Target,
    configured_kbps: u32,
    configured_fps: f64,
    audio_kbps: u32,
    /// Polyv's bitrate limit for the channel, applied to every media settings value.
    max_kbps: Option<u32>,
    /// What the running pipeline was started with.
    media_settings: PipelineConfig,
    offset_ms: u64,
    media: Media,
    /// Set while the pipeline is down and being restarted (`media` is inert meanwhile).
    media_retry: Option<MediaRetry>,
    status_line: StatusLine,
    stats_file: Option<StatsFile>,
    rates: RateMeter,
    ticks: u64,
}

impl Broadcast {
    /// A controller for `cfg` (none when disabled); `reload`: the new one resumes at the
    /// current target, and turning adaptation off goes back to the configured rate.
    fn set_adapt(&mut self, cfg: &AdaptConfig, reload: bool) {
        if reload {
            tracing::info!("reload: new [adapt] settings in force");
        }
        self.adapt = cfg.enabled.then(|| {
            let mut c = DelayController::new(cfg.clone(), self.configured_kbps);
            if reload {
                c.resume_at(self.target);
            }
            c
        });
        if self.adapt.is_none() && self.target != Target::kbps(self.configured_kbps) {
            self.target = Target::kbps(self.configured_kbps);
            self.media.pipeline.control().set_video_target(self.target);
        }
    }

    fn on_adapt_tick(&mut self) {
        let Some(ctl) = self.adapt.as_mut() else {
            return;
        };
        let pipeline = self.media.pipeline.control();
        // What the encoder produces now, not what it was asked for.
        let link = link_stats(
            &self.ring.stats(),
            &self.control.stats(),
            self.control.state().is_publishing(),
            pipeline.video_target().video_kbps,
            self.audio_kbps,
        );
        let next = ctl.on_tick(self.started.elapsed(), &link);
        // The hard delay bound is for the whole wait: what the kernel holds comes off the
        // ring's share.
        self.ring.set_outside_delay(ctl.stats().outside_delay_ms);
        if let Some(t) = next {
            if t != self.target {
                tracing::debug!(
                    from_kbps = self.target.video_kbps,
                    to_kbps = t.video_kbps,
                    fps_divisor = t.fps_divisor,
                    scale_divisor = t.scale_divisor,
                    "video target"
                );
                pipeline.set_video_target(t);
                self.target = t;
            }
        }
    }

    /// The live numbers, to the hub, the status line and (every second) the stats file.
    fn on_tick(&mut self) {
        self.apply_channel_limit();
        let now = Instant::now();
        let (p, snd) = (self.media.pipeline.stats(), self.control.stats());
        let state = self.control.state();
        let (delivered_kbps, encoder_fps) = self.rates.update(
            now,
            if snd.bytes_delivered > 0 {
                snd.bytes_delivered
            } else {
                snd.bytes_sent
            },
            p.video.frames_encoded,
        );
        let snap = BroadcastSnapshot {
            started: Some(self.started),
            pipeline: p,
            ring: self.ring.stats(),
            sender: snd,
            sender_state: state.phase(),
            sender_error: self.control.last_error().map(|(_, e)| e),
            refusal: state.refusal().cloned(),
            adapt: self.adapt.as_ref().map(|c| c.stats()),
            target_kbps: self.target.video_kbps,
            configured_kbps: self.configured_kbps,
            delivered_kbps,
            encoder_fps,
            configured_fps: self.configured_fps,
            // A pipeline being retried has no live numbers.
            media: self
                .media_retry
                .is_none()
                .then(|| self.media.pipeline.control().media())
                .flatten(),
        };
        self.ticks += 1;
        self.status_line.update(&snap, now);
        if let Some(f) = self.stats_file.as_mut().filter(|_| self.ticks % 2 == 0) {
            f.write(&snap, now);
        }
        if let Some(hub) = &self.hub {
            hub.update_broadcast(snap);
        }
    }

    /// A reload changed `[video]`/`[audio]`: stop the old capture and flush its encoders into
    /// the ring first (their last packets are older than anything the new pipeline makes),
    /// then start the new settings on the same ring and connection. When they do not open (a
    /// device gone, an encoder missing), the old ones worked a moment ago: back to them; when
    /// neither opens, the new ones are retried with backoff like a failed pipeline.
    fn restart_media(&mut self, next: PipelineConfig) {
        let at = Instant::now();
        let next = capped(&next, self.max_kbps);
        self.stop.store(true, Ordering::SeqCst);
        self.stop = Arc::new(AtomicBool::new(false));
        let was_running = self.media_retry.is_none();
        let started = tokio::task::block_in_place(|| {
            if was_running {
                if let Err(e) = self.media.pipeline.stop_in_place() {
                    tracing::warn!(error = %e, "the old pipeline ended with an error");
                }
            }
            media::start(&next, &self.tee, self.stop.clone(), self.next_offset())
        });
        match started {
            Ok(media) => {
                tracing::info!(
                    width = media.info.width,
                    height = media.info.height,
                    fps = media.info.fps,
                    kbps = media.info.video_bitrate_kbps,
                    restart_ms = at.elapsed().as_millis() as u64,
                    "reload: capture and encoding restarted with the new media settings"
                );
                self.media_settings = next;
                self.media_running(media);
            }
            Err(e) if was_running => {
                tracing::error!(error = %e, "reload: the new media settings failed; going back to the old ones");
                let old = self.media_settings.clone();
                let back = tokio::task::block_in_place(|| {
                    media::start(&old, &self.tee, self.stop.clone(), self.next_offset())
                });
                match back {
                    Ok(media) => self.media_running(media),
                    Err(e) => self.media_failed(e),
                }
            }
            Err(e) => {
                // Capture was down already: the reload's settings are the ones to retry.
                self.media_settings = next;
                self.media_failed(e);
            }
        }
    }

    /// The pipeline ended on its own. `false` when its sources simply ended (a file without
    /// `loop`): the broadcast is over. A failure restarts capture and encoding with backoff
    /// on the same connection.
    fn on_pipeline_ended(&mut self) -> bool {
        match tokio::task::block_in_place(|| self.media.pipeline.stop_in_place()) {
            Ok(_) => false,
            Err(e) => {
                tracing::error!(error = %e, "capture or encoding failed; restarting it (the connection stays up)");
                self.media_failed(RunError::Media(e));
                true
            }
        }
    }

    /// A pipeline could not start or failed: retry later.
    fn media_failed(&mut self, e: RunError) {
        let retry = self.media_retry.get_or_insert_with(MediaRetry::new);
        retry.failed(&e, self.hub.as_ref());
        if let Some(hub) = &self.hub {
            hub.set_picture_source(None);
        }
    }

    /// The retry's time has come: try the current settings again.
    fn retry_media(&mut self) {
        let settings = capped(&self.media_settings, self.max_kbps);
        self.stop = Arc::new(AtomicBool::new(false));
        let started = tokio::task::block_in_place(|| {
            media::start(&settings, &self.tee, self.stop.clone(), self.next_offset())
        });
        match started {
            Ok(media) => self.media_running(media),
            Err(e) => self.media_failed(e),
        }
    }

    /// `media` runs now: the sender's keyframe requests go to it and the targets start over.
    fn media_running(&mut self, media: Media) {
        if let Some(retry) = self.media_retry.take() {
            retry.recovered(self.hub.as_ref());
        }
        self.configured_kbps = media.info.video_bitrate_kbps;
        self.configured_fps = media.info.fps;
        if let Some(ctl) = self.adapt.as_mut() {
            *ctl = DelayController::new(ctl.config().clone(), self.configured_kbps);
        }
        *self
            .keyframes
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = media.pipeline.control();
        if let Some(hub) = &self.hub {
            hub.set_picture_source(Some(media.pipeline.control()));
        }
        self.media = media;
        self.target = Target::kbps(self.configured_kbps);
    }

    /// Polyv's login may set a bitrate limit for the channel (`maxRate`); capture started
    /// before the login, so it is applied to the running encoder (libx264 changes its rate in
    /// place) and to everything started later.
    fn apply_channel_limit(&mut self) {
        let max = self
            .polyv
            .as_ref()
            .and_then(|p| p.max_kbps())
            .filter(|m| *m > 0);
        if max == self.max_kbps {
            return;
        }
        self.max_kbps = max;
        let Some(max) = max else { return };
        if max >= self.configured_kbps {
            return;
        }
        tracing::info!(
            configured_kbps = self.configured_kbps,
            max_kbps = max,
            "Polyv limits this channel's bitrate; encoding at its maximum"
        );
        self.configured_kbps = max;
        self.media_settings.video_encoder.bitrate_kbps =
            self.media_settings.video_encoder.bitrate_kbps.min(max);
        if let Some(ctl) = self.adapt.as_mut() {
            *ctl = DelayController::new(ctl.config().clone(), max);
        }
        if self.target.video_kbps > max {
            self.target = Target::kbps(max);
        }
        self.media.pipeline.control().set_video_bitrate(max);
    }

    /// Where a new pipeline's timeline starts: in step with the wall clock, and after
    /// everything already sent (audio may run a little ahead of it), so each stream's
    /// timestamps keep rising. (The tee's newest includes `[target] timestamp_offset_ms`.)
    fn next_offset(&self) -> u64 {
        let elapsed = self.timeline_start.elapsed().as_millis() as u64;
        let base = elapsed.max(self.tee.newest_dts().saturating_sub(self.offset_ms) + 100);
        self.offset_ms + base
    }
}
