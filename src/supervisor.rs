//! Wiring and lifecycle of one broadcast: resolve the push address (Polyv login or a fixed
//! URL), start capture and encoding on their OS threads, turn encoded packets into FLV bodies
//! in the ring, publish the ring over RTMP, tell Polyv the stream is up, and stop cleanly on
//! SIGINT/SIGTERM or after `--duration`: stop capture, flush the encoders, drain the ring,
//! `deleteStream`, close.

use crate::adapt::{Controller, DelayController, LinkStats, Target};
use crate::capture::SourceSpec;
use crate::config::{AudioSource, Config, ConfigError, VideoSource};
use crate::encode::{
    spawn_pipeline, AudioEncoderSettings, EncodedPacket, PipelineConfig, PipelineError,
    PipelineHandle, PipelineStats, StreamParams, Track, VideoEncoderSettings, VideoParams,
};
use crate::flv::{self, AudioPacketizer, VideoPacketizer};
use crate::media::{AudioInfo, MediaPacket, PacketKind, StreamInfo};
use crate::platform::{PlatformError, PolyvClient};
use crate::record::{RecordError, Recorder};
use crate::ring::{Ring, RingConfig, RingStats};
#[cfg(unix)]
use crate::rtmp::reconnect_on_sigusr1;
use crate::rtmp::{
    run_sender, AddressError, AddressFuture, AddressSource, BackoffConfig, ConnectOptions,
    RtmpError, RtmpUrl, SenderControl, SenderHooks, SenderOptions, MAX_STALL_TIMEOUT,
};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How one `run` is invoked, beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Push here instead of logging in to Polyv (overrides `[target] url`).
    pub url: Option<String>,
    /// Stop after this long (otherwise on SIGINT/SIGTERM).
    pub duration: Option<Duration>,
    /// Show the live status line (on a TTY).
    pub status_line: bool,
    /// Append one JSON line of live numbers per second here (tests, benchmarks, field logs).
    pub stats_file: Option<std::path::PathBuf>,
}

/// Why a broadcast ended badly. The CLI maps these to exit codes.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error(transparent)]
    Media(#[from] PipelineError),
    #[error(transparent)]
    Rtmp(#[from] RtmpError),
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The run ended (signal or `--duration`) without ever publishing.
    #[error("never published in {elapsed_s:.0} s: {reason}")]
    NeverPublished {
        elapsed_s: f64,
        reason: String,
        /// The ingest or Polyv refused (rather than could not be reached).
        refused: bool,
    },
    #[error("{0}")]
    Internal(String),
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

/// The push address from Polyv: teacher_login, cached until the ingest refuses it (the
/// address may change, so a refused publish logs in again).
struct PolyvAddress {
    client: PolyvClient,
    cached: std::sync::Mutex<Option<(RtmpUrl, String)>>,
}

impl PolyvAddress {
    /// The stream name of the last login, for notify_stream2.
    fn stream(&self) -> Option<String> {
        self.cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|(_, s)| s.clone())
    }

    async fn login(&self) -> Result<(RtmpUrl, Option<u32>), AddressError> {
        let reply = self.client.teacher_login().await.map_err(|e| match e {
            // An operator must act (password, appId, clock) or Polyv asked us to wait 5 min:
            // the slow retry.
            PlatformError::CredentialsRejected { .. }
            | PlatformError::AppRejected { .. }
            | PlatformError::SignatureRejected { .. }
            | PlatformError::StaleTimestamp { .. }
            | PlatformError::RateLimited { .. } => AddressError::CredentialsRejected(e.to_string()),
            PlatformError::Validation { .. } => AddressError::Fatal(e.to_string()),
            PlatformError::Server { .. }
            | PlatformError::Transport { .. }
            | PlatformError::Undecodable { .. } => AddressError::Transient(e.to_string()),
        })?;
        let addr = reply.push_address();
        let url = RtmpUrl::parse(&addr.reveal()).map_err(|e| {
            AddressError::Transient(format!(
                "Polyv returned a push address polypush cannot use: {e}"
            ))
        })?;
        tracing::info!(push = %addr, "logged in to Polyv");
        *self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((url.clone(), reply.stream.clone()));
        Ok((url, reply.max_rate))
    }
}

impl AddressSource for PolyvAddress {
    fn address(&self, fresh: bool) -> AddressFuture<'_> {
        Box::pin(async move {
            if !fresh {
                let cached = self
                    .cached
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some((url, _)) = cached.as_ref() {
                    return Ok(url.clone());
                }
            }
            self.login().await.map(|(url, _)| url)
        })
    }
}

/// Where the stream goes: a fixed URL, or Polyv's address (logged in once up front so the
/// channel's bitrate limit is known before the encoder opens).
async fn resolve_target(
    cfg: &mut Config,
    opts: &RunOptions,
) -> Result<(Arc<dyn AddressSource>, Option<Arc<PolyvAddress>>), RunError> {
    let fixed = opts
        .url
        .clone()
        .or_else(|| (!cfg.target.url.is_empty()).then(|| cfg.target.url.clone()));
    if let Some(url) = fixed {
        return Ok((Arc::new(RtmpUrl::parse(&url)?), None));
    }
    cfg.polyv.password()?;
    let polyv = Arc::new(PolyvAddress {
        client: PolyvClient::from_config(&cfg.polyv)?,
        cached: std::sync::Mutex::new(None),
    });
    match polyv.login().await {
        Ok((_, Some(max))) if max > 0 && max < cfg.video.bitrate_kbps => {
            tracing::info!(
                configured_kbps = cfg.video.bitrate_kbps,
                max_kbps = max,
                "Polyv limits this channel's bitrate; encoding at its maximum"
            );
            cfg.video.bitrate_kbps = max;
        }
        Ok(_) => {}
        Err(AddressError::Fatal(m)) => return Err(RunError::Internal(m)),
        // The sender keeps trying (slowly for rejected credentials); capture starts anyway so
        // the safety recording runs.
        Err(e) => tracing::warn!(error = %e, "no push address yet; retrying in the background"),
    }
    Ok((polyv.clone(), Some(polyv)))
}

/// The capture and encoder settings `cfg` describes.
pub fn pipeline_config(cfg: &Config) -> PipelineConfig {
    let v = &cfg.video;
    let a = &cfg.audio;
    let file = v.file.clone().unwrap_or_default();
    let video_source = Some(match v.source {
        VideoSource::V4l2 => SourceSpec::V4l2 {
            device: v.device.clone(),
            input_format: (!v.input_format.is_empty()).then(|| v.input_format.clone()),
            width: v.width,
            height: v.height,
            fps: v.fps,
        },
        VideoSource::Test => SourceSpec::TestPatternVideo {
            width: v.width,
            height: v.height,
            fps: v.fps,
        },
        VideoSource::File => SourceSpec::File {
            path: file.clone(),
            looped: true,
        },
    });
    let audio_source = match a.source {
        AudioSource::Alsa => Some(SourceSpec::Alsa {
            device: a.device.clone(),
            sample_rate: a.sample_rate,
            channels: a.channels,
        }),
        AudioSource::Test => Some(SourceSpec::TestPatternAudio {
            sample_rate: a.sample_rate,
            channels: a.channels,
            frequency_hz: 440,
        }),
        AudioSource::File => Some(SourceSpec::File {
            path: file,
            looped: true,
        }),
        AudioSource::None => None,
    };
    PipelineConfig {
        video_source,
        audio_source,
        video_encoder: VideoEncoderSettings {
            encoder: v.encoder.clone(),
            width: v.width,
            height: v.height,
            fps: v.fps,
            bitrate_kbps: v.bitrate_kbps,
            preset: v.preset.clone(),
            profile: v.profile.clone(),
            keyframe_interval_s: v.keyframe_interval_s,
            vbv_seconds: v.vbv_seconds,
            threads: v.threads,
            // Reopens (hardware encoders, frame-rate and size steps) at most every 5 s.
            ..VideoEncoderSettings::default()
        },
        audio_encoder: AudioEncoderSettings {
            bitrate_kbps: a.bitrate_kbps,
            sample_rate: a.sample_rate,
            channels: a.channels,
        },
    }
}

/// onMetaData contents for what the encoders opened with.
fn stream_info(params: &StreamParams) -> StreamInfo {
    let (width, height, fps, kbps, enc) = params
        .video
        .as_ref()
        .map(|v| {
            (
                v.width,
                v.height,
                f64::from(v.fps),
                v.bitrate_kbps,
                v.encoder.as_str(),
            )
        })
        .unwrap_or((0, 0, 0.0, 0, "none"));
    StreamInfo {
        width,
        height,
        fps,
        video_bitrate_kbps: kbps,
        audio: params.audio.as_ref().map(|a| AudioInfo {
            sample_rate: a.sample_rate,
            channels: a.channels,
            bitrate_kbps: a.bitrate_kbps,
        }),
        encoder: format!("polypush {} ({enc})", env!("CARGO_PKG_VERSION")),
    }
}

/// The packets every session starts with: metadata and the sequence headers known at open.
fn header_packets(
    params: &StreamParams,
    info: Arc<StreamInfo>,
) -> Result<Vec<MediaPacket>, RunError> {
    let mut out = vec![MediaPacket {
        kind: PacketKind::Metadata,
        dts_ms: 0,
        body: flv::script_metadata_body(&info),
        info: Some(info),
    }];
    if let Some(extradata) = params.video.as_ref().and_then(|v| v.extradata.as_ref()) {
        let avcc = flv::avc_decoder_config(extradata)
            .map_err(|e| RunError::Internal(format!("encoder headers: {e}")))?;
        out.push(MediaPacket::new(
            PacketKind::VideoHeader,
            0,
            flv::video_sequence_header_body(&avcc),
        ));
    }
    if let Some(a) = &params.audio {
        out.push(MediaPacket::new(
            PacketKind::AudioHeader,
            0,
            flv::audio_sequence_header_body(&a.asc),
        ));
    }
    Ok(out)
}

/// Runs on each encode thread: FLV-packetizes and pushes into the ring. Never blocks.
struct PacketSink {
    ring: Ring,
    /// The safety recording gets every packet before the ring, whose drops must not touch it.
    recorder: Option<Recorder>,
    /// `[target] timestamp_offset_ms`, added to every timestamp.
    offset_ms: u64,
    video: VideoPacketizer,
    audio: AudioPacketizer,
    /// Set by `on_ready` for encoders whose SPS/PPS come inline (h264_v4l2m2m): the AVC
    /// sequence header must be built from the first IDR, and nothing is sent before it.
    header_from_first_idr: Arc<AtomicBool>,
    /// The newest timestamp handed on, over every pipeline of the broadcast: a pipeline
    /// started after a reload begins after it.
    newest_dts: Arc<std::sync::atomic::AtomicU64>,
}

impl Clone for PacketSink {
    /// Each encode thread gets its own packetizer buffers.
    fn clone(&self) -> Self {
        Self {
            ring: self.ring.clone(),
            recorder: self.recorder.clone(),
            offset_ms: self.offset_ms,
            video: VideoPacketizer::new(),
            audio: AudioPacketizer::new(),
            header_from_first_idr: self.header_from_first_idr.clone(),
            newest_dts: self.newest_dts.clone(),
        }
    }
}

impl PacketSink {
    /// Hands one packet to the recorder and the ring. Never blocks.
    fn emit(&self, pkt: MediaPacket) {
        self.newest_dts.fetch_max(pkt.dts_ms, Ordering::Relaxed);
        if let Some(rec) = &self.recorder {
            rec.push(&pkt);
        }
        self.ring.push(pkt);
    }

    /// The first packet of a reopened encoder (an IDR at a new bitrate, frame rate or size):
    /// a new AVC sequence header goes before it when the SPS/PPS changed (a new size always
    /// changes them). FLV players and nginx-rtmp take a sequence header mid-stream; the ring
    /// keeps it for the next session and the recorder cuts nothing for it.
    fn video_reopened(&self, params: &VideoParams, pkt: &EncodedPacket, dts: u64) {
        // Inline parameter sets (h264_v4l2m2m) are in front of this IDR.
        let annexb = params.extradata.as_ref().unwrap_or(&pkt.data);
        match flv::avc_decoder_config(annexb) {
            Ok(avcc) => {
                let body = flv::video_sequence_header_body(&avcc);
                let current = self
                    .ring
                    .headers()
                    .into_iter()
                    .find(|h| h.kind == PacketKind::VideoHeader);
                if current.is_none_or(|h| h.body != body) {
                    tracing::debug!(
                        width = params.width,
                        height = params.height,
                        "new AVC sequence header"
                    );
                    self.emit(MediaPacket::new(PacketKind::VideoHeader, dts, body));
                }
            }
            Err(e) => {
                // Nothing decodes without them: wait for an IDR that has them.
                tracing::warn!(error = %e, "no SPS/PPS from the reopened encoder yet");
                self.header_from_first_idr.store(true, Ordering::Relaxed);
            }
        }
    }

    fn accept(&mut self, track: Track, pkt: EncodedPacket) {
        let dts = pkt.dts_ms.max(0) as u64 + self.offset_ms;
        match track {
            Track::Video => {
                if let Some(params) = &pkt.reopened {
                    self.video_reopened(params, &pkt, dts);
                }
                if self.header_from_first_idr.load(Ordering::Relaxed) {
                    if !pkt.keyframe {
                        return; // nothing decodes before the sequence header
                    }
                    match flv::avc_decoder_config(&pkt.data) {
                        Ok(avcc) => {
                            let body = flv::video_sequence_header_body(&avcc);
                            self.emit(MediaPacket::new(PacketKind::VideoHeader, dts, body));
                            self.header_from_first_idr.store(false, Ordering::Relaxed);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "no SPS/PPS in the keyframe yet");
                            return;
                        }
                    }
                }
                let cts = (pkt.pts_ms - pkt.dts_ms).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
                let body = self.video.packetize(&pkt.data, pkt.keyframe, cts, true);
                let kind = PacketKind::Video {
                    keyframe: pkt.keyframe,
                };
                self.emit(MediaPacket::new(kind, dts, body));
            }
            Track::Audio => {
                let body = self.audio.packetize(&pkt.data);
                self.emit(MediaPacket::new(PacketKind::Audio, dts, body));
            }
        }
    }
}

/// Starts capture and encoding; headers go into the ring before the first packet.
///
/// `base_ms` is added to every timestamp: 0 for the first pipeline of a broadcast, the
/// broadcast's elapsed time for one that replaces it after a reload, so the timeline goes on
/// in step with the wall clock.
fn start_pipeline(
    cfg: &Config,
    ring: &Ring,
    recorder: Option<Recorder>,
    stop: Arc<AtomicBool>,
    base_ms: u64,
    newest_dts: Arc<std::sync::atomic::AtomicU64>,
) -> Result<(PipelineHandle, Arc<StreamInfo>), RunError> {
    let inline = Arc::new(AtomicBool::new(false));
    let offset_ms = cfg.target.timestamp_offset_ms + base_ms;
    let sink = PacketSink {
        ring: ring.clone(),
        recorder,
        offset_ms,
        video: VideoPacketizer::new(),
        audio: AudioPacketizer::new(),
        header_from_first_idr: inline.clone(),
        newest_dts,
    };
    let sink_for_headers = sink.clone();
    let mut ready: Option<Result<Arc<StreamInfo>, RunError>> = None;
    let handle = spawn_pipeline(
        pipeline_config(cfg),
        stop,
        |params: &StreamParams| {
            let info = Arc::new(stream_info(params));
            let needs_idr = params
                .video
                .as_ref()
                .is_some_and(|v| v.parameter_sets_inline || v.extradata.is_none());
            inline.store(needs_idr, Ordering::Relaxed);
            ready = Some(header_packets(params, info.clone()).map(|headers| {
                for mut h in headers {
                    h.dts_ms += offset_ms;
                    sink_for_headers.emit(h);
                }
                info
            }));
        },
        {
            let mut sink = sink;
            move |track, pkt| sink.accept(track, pkt)
        },
    )?;
    match ready {
        Some(Ok(info)) => Ok((handle, info)),
        Some(Err(e)) => {
            let _ = handle.stop_and_join();
            Err(e)
        }
        None => {
            let _ = handle.stop_and_join();
            Err(RunError::Internal(
                "the pipeline started without stream parameters".into(),
            ))
        }
    }
}

fn sender_options(cfg: &Config) -> SenderOptions {
    let t = &cfg.target;
    SenderOptions {
        connect: ConnectOptions {
            connect_timeout: Duration::from_secs(t.connect_timeout_s),
            setup_timeout: Duration::from_secs(t.handshake_timeout_s),
            ..ConnectOptions::default()
        },
        backoff: BackoffConfig {
            cap: Duration::from_secs(t.reconnect_max_delay_s),
            ..BackoffConfig::default()
        },
        stall_timeout: Duration::from_secs(t.stall_timeout_s).min(MAX_STALL_TIMEOUT),
        credentials_retry: Duration::from_secs(t.credentials_retry_s),
        ..SenderOptions::default()
    }
}

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

/// What the daemon can ask of a running broadcast.
#[derive(Debug)]
pub enum BroadcastCommand {
    /// Stop cleanly: flush the encoders, drain the ring, close the stream.
    Stop,
    /// New `[video]`/`[audio]` settings (a reload): stop capture and encoding, start them
    /// again with these, into the same ring and connection. The new encoder starts with an
    /// IDR and a new sequence header; the timeline goes on with the wall clock.
    RestartMedia(Box<Config>),
    /// New `[adapt]` settings (a reload): a fresh controller from the current target.
    Adapt(crate::adapt::AdaptConfig),
}

/// How the daemon steers and watches one broadcast.
pub struct BroadcastIo {
    pub commands: tokio::sync::mpsc::UnboundedReceiver<BroadcastCommand>,
    /// Refreshed twice a second with the live numbers; told the sender's handle.
    pub hub: Option<crate::status::StatusHub>,
    /// Called once, when the first session publishes (systemd READY=1 "and the first
    /// publish, when live").
    pub on_first_publish: Option<Box<dyn FnOnce() + Send>>,
}

/// One broadcast, from login to a clean close, stopped by SIGINT/SIGTERM or `--duration`.
pub async fn run(cfg: Config, opts: RunOptions) -> Result<RunSummary, RunError> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let duration = opts.duration;
    let stopper = tokio::spawn(async move {
        let deadline = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = deadline => {}
        }
        let _ = tx.send(BroadcastCommand::Stop);
        // Keep the channel open until the broadcast is done with it.
        std::future::pending::<()>().await;
    });
    let out = run_broadcast(
        cfg,
        opts,
        BroadcastIo {
            commands: rx,
            hub: None,
            on_first_publish: None,
        },
    )
    .await;
    stopper.abort();
    out
}

/// One broadcast, from login to a clean close. Network trouble never ends it: the sender
/// reconnects on its own; only [`BroadcastCommand::Stop`] (or the command channel closing),
/// a capture/encoder failure or a fatal configuration error does.
pub async fn run_broadcast(
    mut cfg: Config,
    opts: RunOptions,
    io: BroadcastIo,
) -> Result<RunSummary, RunError> {
    let BroadcastIo {
        mut commands,
        hub,
        on_first_publish,
    } = io;
    let started = Instant::now();
    let (source, polyv) = resolve_target(&mut cfg, &opts).await?;
    let ring = Ring::new(RingConfig {
        max_bytes: cfg.target.max_queue_bytes,
        // Dropping is the last resort, well behind the controller's cuts.
        max_delay_ms: cfg.adapt.hard_delay_ms,
    });
    let mut stop = Arc::new(AtomicBool::new(false));
    let newest_dts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let recorder = if cfg.record.enabled {
        let r = &cfg.record;
        let rec = Recorder::start(crate::record::RecordConfig {
            dir: r.dir.clone(),
            segment_s: r.segment_s,
            max_total_bytes: r.max_total_mb << 20,
            min_free_bytes: r.min_free_mb << 20,
            ..Default::default()
        })?;
        tracing::info!(dir = %r.dir.display(), segment_s = r.segment_s, "safety recording on");
        Some(rec)
    } else {
        None
    };
    let (mut pipeline, info) = tokio::task::block_in_place(|| {
        start_pipeline(
            &cfg,
            &ring,
            recorder.clone(),
            stop.clone(),
            0,
            newest_dts.clone(),
        )
    })?;
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
    }
    #[cfg(unix)]
    let usr1 = reconnect_on_sigusr1(control.clone()).ok();
    // The sender asks for keyframes through this; a media restart swaps the pipeline behind it.
    let keyframes = Arc::new(std::sync::Mutex::new(pipeline.control()));
    let hooks = SenderHooks {
        request_keyframe: {
            let keyframes = keyframes.clone();
            Box::new(move || {
                keyframes
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .request_keyframe()
            })
        },
        on_publishing: {
            let (w, h) = (info.width, info.height);
            let first = std::sync::Mutex::new(on_first_publish);
            Box::new(move |_url| {
                let f = first
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if let Some(f) = f {
                    f();
                }
                let Some(polyv) = polyv.clone() else { return };
                tokio::spawn(async move {
                    let Some(stream) = polyv.stream() else { return };
                    match polyv.client.notify_stream(&stream, w, h).await {
                        Ok(()) => {
                            tracing::info!(width = w, height = h, "told Polyv the stream is up")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "notify_stream2 failed; the broadcast goes on")
                        }
                    }
                });
            })
        },
    };
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
    let mut sender = tokio::spawn(run_sender(
        ring.clone(),
        source,
        sender_options(&cfg),
        control.clone(),
        hooks,
        async move {
            let _ = finish_rx.await;
        },
    ));

    let mut status = StatusLine::new(opts.status_line && std::io::stderr().is_terminal());
    let mut stats_file = match &opts.stats_file {
        Some(p) => Some(StatsFile::create(p)?),
        None => None,
    };
    let audio_kbps = cfg.audio.bitrate_kbps * u32::from(cfg.audio.source != AudioSource::None);
    let mut adapt = cfg
        .adapt
        .enabled
        .then(|| DelayController::new(cfg.adapt.clone(), info.video_bitrate_kbps));
    // The last target asked of the encoder (it may still wait for the reopen rate limit).
    let mut target = Target::kbps(info.video_bitrate_kbps);
    let mut adapt_tick = tokio::time::interval(Duration::from_millis(100));
    adapt_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut bitrate = pipeline.control();
    let mut ticks: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut rates = RateMeter::default();
    let mut configured_kbps = info.video_bitrate_kbps;
    let mut configured_fps = info.fps;
    let mut sender_result = None;
    let outcome: Result<(), RunError> = loop {
        tokio::select! {
            biased;
            cmd = commands.recv() => match cmd {
                None | Some(BroadcastCommand::Stop) => break Ok(()),
                Some(BroadcastCommand::Adapt(a)) => {
                    tracing::info!("reload: new [adapt] settings in force");
                    cfg.adapt = a;
                    adapt = cfg.adapt.enabled.then(|| {
                        let mut c = DelayController::new(cfg.adapt.clone(), configured_kbps);
                        c.resume_at(target);
                        c
                    });
                    if adapt.is_none() && target != Target::kbps(configured_kbps) {
                        target = Target::kbps(configured_kbps);
                        bitrate.set_video_target(target);
                    }
                }
                Some(BroadcastCommand::RestartMedia(new_cfg)) => {
                    let at = Instant::now();
                    let base_ms = |newest: u64| {
                        // In step with the wall clock, and after everything already sent (audio
                        // may run a little ahead of it): each stream's timestamps keep rising.
                        // (`newest` includes `[target] timestamp_offset_ms`; the base does not.)
                        (started.elapsed().as_millis() as u64)
                            .max(newest.saturating_sub(cfg.target.timestamp_offset_ms) + 100)
                    };
                    // Stop the old capture and flush its encoders into the ring first: their
                    // last packets are older than anything the new pipeline makes.
                    stop.store(true, Ordering::SeqCst);
                    let old = std::mem::replace(&mut stop, Arc::new(AtomicBool::new(false)));
                    let mut next = (*new_cfg).clone();
                    next.polyv = cfg.polyv.clone();
                    next.target = cfg.target.clone();
                    let started_new = tokio::task::block_in_place(|| {
                        let joined = pipeline.stop_in_place();
                        drop(old);
                        if let Err(e) = joined {
                            tracing::warn!(error = %e, "the old pipeline ended with an error");
                        }
                        let base = base_ms(newest_dts.load(Ordering::Relaxed));
                        start_pipeline(&next, &ring, recorder.clone(), stop.clone(), base, newest_dts.clone())
                    });
                    match started_new {
                        Ok((p, new_info)) => {
                            pipeline = p;
                            bitrate = pipeline.control();
                            *keyframes.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = pipeline.control();
                            configured_kbps = new_info.video_bitrate_kbps;
                            configured_fps = new_info.fps;
                            cfg.video = next.video;
                            cfg.audio = next.audio;
                            target = Target::kbps(configured_kbps);
                            if let Some(ctl) = adapt.as_mut() {
                                *ctl = DelayController::new(cfg.adapt.clone(), configured_kbps);
                            }
                            tracing::info!(
                                width = new_info.width,
                                height = new_info.height,
                                fps = new_info.fps,
                                kbps = new_info.video_bitrate_kbps,
                                restart_ms = at.elapsed().as_millis() as u64,
                                "reload: capture and encoding restarted with the new media settings"
                            );
                        }
                        Err(e) => {
                            // The new settings did not open (a device gone, an encoder
                            // missing): the old ones worked a moment ago, so go back to them.
                            tracing::error!(error = %e, "reload: the new media settings failed; going back to the old ones");
                            match tokio::task::block_in_place(|| {
                                start_pipeline(&cfg, &ring, recorder.clone(), stop.clone(), base_ms(newest_dts.load(Ordering::Relaxed)), newest_dts.clone())
                            }) {
                                Ok((p, _)) => {
                                    pipeline = p;
                                    bitrate = pipeline.control();
                                    *keyframes.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = pipeline.control();
                                    target = Target::kbps(configured_kbps);
                                }
                                Err(e2) => break Err(e2),
                            }
                        }
                    }
                }
            },
            r = &mut sender => {
                sender_result = Some(r);
                break Ok(());
            }
            _ = adapt_tick.tick(), if adapt.is_some() => {
                if let Some(ctl) = adapt.as_mut() {
                    // What the encoder produces now, not what it was asked for.
                    let link = LinkStats::from_stats(
                        &ring.stats(),
                        &control.stats(),
                        control.state().is_publishing(),
                        bitrate.video_target().video_kbps,
                        audio_kbps,
                    );
                    if let Some(t) = ctl.on_tick(started.elapsed(), &link) {
                        if t != target {
                            tracing::debug!(
                                from_kbps = target.video_kbps,
                                to_kbps = t.video_kbps,
                                fps_divisor = t.fps_divisor,
                                scale_divisor = t.scale_divisor,
                                "video target"
                            );
                            bitrate.set_video_target(t);
                            target = t;
                        }
                    }
                }
            }
            _ = tick.tick() => {
                if pipeline.is_finished() {
                    break Ok(()); // stop_and_join below returns the pipeline's error
                }
                status.update(started, pipeline.stats(), ring.stats(), &control);
                ticks += 1;
                if let Some(hub) = &hub {
                    let (p, snd) = (pipeline.stats(), control.stats());
                    let (delivered_kbps, encoder_fps) = rates.update(
                        if snd.bytes_delivered > 0 { snd.bytes_delivered } else { snd.bytes_sent },
                        p.video.frames_encoded,
                    );
                    hub.update_broadcast(crate::status::BroadcastSnapshot {
                        started: Some(started),
                        pipeline: p,
                        ring: ring.stats(),
                        sender: snd,
                        sender_state: control.state().name(),
                        sender_error: control.last_error().map(|(_, e)| e),
                        adapt: adapt.as_ref().map(|c| c.stats()),
                        target_kbps: target.video_kbps,
                        configured_kbps,
                        delivered_kbps,
                        encoder_fps,
                        configured_fps,
                    });
                }
                if let (Some(f), true) = (stats_file.as_mut(), ticks % 2 == 0) {
                    let (p, r, snd) = (pipeline.stats(), ring.stats(), control.stats());
                    let drops: serde_json::Map<String, serde_json::Value> = r
                        .dropped
                        .iter()
                        .map(|(reason, c)| (reason.as_str().to_string(), c.packets.into()))
                        .collect();
                    let delivered_kbps = f.delivered_kbps(snd.bytes_delivered);
                    f.write(&serde_json::json!({
                        "t": started.elapsed().as_secs_f64(),
                        "state": control.state().name(),
                        "target_kbps": target.video_kbps,
                        "queue_delay_ms": adapt.as_ref().map(|c| c.stats().queue_delay_ms),
                        "send_rate_kbps": adapt.as_ref().and_then(|c| c.stats().send_rate_kbps),
                        "adapt_state": adapt.as_ref().map(|c| c.stats().state.as_str()),
                        "delivered_kbps": delivered_kbps,
                        "ring_delay_ms": r.queued_delay_ms,
                        "ring_bytes": r.queued_bytes,
                        "socket_unsent_bytes": snd.socket_unsent_bytes,
                        "backlog_bytes": snd.backlog_bytes,
                        "dropped": drops,
                        "video_frames": p.video.frames_encoded,
                        "audio_frames": p.audio.frames_encoded,
                        "reconnects": snd.reconnects,
                    }));
                }
            }
        }
    };
    status.finish();

    // Stop capture, flush the encoders into the ring, close it; the sender drains it
    // (bounded) and closes the RTMP stream cleanly.
    stop.store(true, Ordering::SeqCst);
    let joined = tokio::task::block_in_place(|| pipeline.stop_and_join());
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
    if let Some(rec) = recorder {
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
    outcome?;
    let pipeline_stats = joined?;
    let sender_stats =
        sender_result.map_err(|e| RunError::Internal(format!("the sender task failed: {e}")))??;
    if sender_stats.sessions == 0 {
        return Err(RunError::NeverPublished {
            elapsed_s: started.elapsed().as_secs_f64(),
            reason: control
                .last_error()
                .map(|(_, r)| r)
                .unwrap_or_else(|| "no connection attempt finished".into()),
            refused: sender_stats.publish_rejections > 0 || sender_stats.credentials_rejections > 0,
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

/// The ffmpeg-like live line on a TTY: elapsed, fps, bitrate, queue delay, drops, state.
struct StatusLine {
    enabled: bool,
    rate: RateMeter,
}

impl StatusLine {
    fn new(enabled: bool) -> Self {
        Self {
            enabled,
            rate: RateMeter::default(),
        }
    }

    fn update(&mut self, started: Instant, p: PipelineStats, r: RingStats, sender: &SenderControl) {
        if !self.enabled {
            return;
        }
        let mut state = sender.state().name().to_string();
        if p.video.state.is_reconnecting() {
            state.push_str(", camera reconnecting");
        }
        if p.audio.state.is_reconnecting() {
            state.push_str(", microphone reconnecting");
        }
        let (kbps, fps) = self
            .rate
            .update(sender.stats().bytes_sent, p.video.frames_encoded);
        let e = started.elapsed().as_secs();
        let line = format!(
            "\r{:02}:{:02}:{:02}  {fps:5.1} fps  {kbps:7.0} kbit/s  queue {:4} ms  dropped {}  {state}   ",
            e / 3600,
            e / 60 % 60,
            e % 60,
            r.queued_delay_ms,
            r.dropped.total().packets
        );
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if self.enabled && self.rate.last.is_some() {
            eprintln!();
        }
    }
}

/// Delivered kbit/s and encoded video frames/s between two calls.
#[derive(Default)]
struct RateMeter {
    last: Option<(Instant, u64, u64)>,
}

impl RateMeter {
    fn update(&mut self, bytes: u64, frames: u64) -> (f64, f64) {
        let now = Instant::now();
        let out = match self.last {
            Some((t, b, f)) => {
                let dt = now.duration_since(t).as_secs_f64().max(1e-3);
                (
                    bytes.saturating_sub(b) as f64 * 8.0 / dt / 1000.0,
                    frames.saturating_sub(f) as f64 / dt,
                )
            }
            None => (0.0, 0.0),
        };
        self.last = Some((now, bytes, frames));
        out
    }
}

/// One JSON line per second of what the broadcast is doing: the numbers the status line,
/// tests and benchmarks read (`polypush run --stats-file FILE`).
struct StatsFile {
    out: std::io::BufWriter<std::fs::File>,
    /// Its own meter: the file's rates are per line (1 s), the hub's per tick.
    rate: RateMeter,
}

impl StatsFile {
    fn create(path: &std::path::Path) -> Result<Self, RunError> {
        let f = std::fs::File::create(path).map_err(|e| {
            RunError::Internal(format!(
                "--stats-file {}: cannot create: {e}",
                path.display()
            ))
        })?;
        Ok(Self {
            out: std::io::BufWriter::new(f),
            rate: RateMeter::default(),
        })
    }

    fn write(&mut self, line: &serde_json::Value) {
        let _ = serde_json::to_writer(&mut self.out, line);
        let _ = self.out.write_all(b"\n");
        let _ = self.out.flush();
    }

    /// The rate the ingest's TCP acknowledged since the last line, kbit/s.
    fn delivered_kbps(&mut self, delivered: u64) -> f64 {
        self.rate.update(delivered, 0).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::VideoEncoder;
    use bytes::Bytes;

    fn x264_params(width: u32, height: u32, bitrate_kbps: u32) -> VideoParams {
        let settings = VideoEncoderSettings {
            width,
            height,
            bitrate_kbps,
            threads: 1,
            ..VideoEncoderSettings::default()
        };
        VideoEncoder::open(&settings).unwrap().params()
    }

    fn popped(ring: &Ring) -> Vec<(PacketKind, u64)> {
        std::iter::from_fn(|| ring.try_pop())
            .map(|p| (p.kind, p.dts_ms))
            .collect()
    }

    #[test]
    fn a_reopened_encoder_gets_a_new_sequence_header_only_when_its_sps_changes() {
        let ring = Ring::new(RingConfig::default());
        let opened = x264_params(320, 240, 500);
        let stream = StreamParams {
            video: Some(opened.clone()),
            audio: None,
        };
        for h in header_packets(&stream, Arc::new(stream_info(&stream))).unwrap() {
            ring.push(h);
        }
        assert_eq!(
            popped(&ring),
            [(PacketKind::Metadata, 0), (PacketKind::VideoHeader, 0)]
        );
        let mut sink = PacketSink {
            ring: ring.clone(),
            recorder: None,
            offset_ms: 0,
            video: VideoPacketizer::new(),
            audio: AudioPacketizer::new(),
            header_from_first_idr: Arc::new(AtomicBool::new(false)),
            newest_dts: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        };
        let idr = |dts_ms: i64, params: &VideoParams| EncodedPacket {
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00]),
            pts_ms: dts_ms,
            dts_ms,
            keyframe: true,
            reopened: Some(Arc::new(params.clone())),
        };
        let key = PacketKind::Video { keyframe: true };

        // Reopened at another bitrate: the same SPS/PPS, no header.
        let other_rate = x264_params(320, 240, 300);
        assert_eq!(other_rate.extradata, opened.extradata);
        sink.accept(Track::Video, idr(1000, &other_rate));
        assert_eq!(popped(&ring), [(key, 1000)]);

        // At half the size: a new header first, kept for the next session.
        let half = x264_params(160, 120, 300);
        assert_ne!(half.extradata, opened.extradata);
        sink.accept(Track::Video, idr(2000, &half));
        assert_eq!(
            popped(&ring),
            [(PacketKind::VideoHeader, 2000), (key, 2000)]
        );
        let avcc = flv::avc_decoder_config(half.extradata.as_ref().unwrap()).unwrap();
        let header = ring
            .headers()
            .into_iter()
            .find(|h| h.kind == PacketKind::VideoHeader)
            .unwrap();
        assert_eq!(header.body, flv::video_sequence_header_body(&avcc));

        // Reopened again at that size: nothing new.
        sink.accept(Track::Video, idr(3000, &half));
        assert_eq!(popped(&ring), [(key, 3000)]);
    }
}
