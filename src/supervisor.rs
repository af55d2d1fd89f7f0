//! Wiring and lifecycle of one broadcast: resolve the push address (Polyv login or a fixed
//! URL), start capture and encoding on their OS threads, turn encoded packets into FLV bodies
//! in the ring, publish the ring over RTMP, tell Polyv the stream is up, and stop cleanly on
//! SIGINT/SIGTERM or after `--duration`: stop capture, flush the encoders, drain the ring,
//! `deleteStream`, close.

use crate::capture::SourceSpec;
use crate::config::{AudioSource, Config, ConfigError, VideoSource};
use crate::encode::{
    spawn_pipeline, AudioEncoderSettings, EncodedPacket, PipelineConfig, PipelineError,
    PipelineHandle, PipelineStats, StreamParams, Track, VideoEncoderSettings,
};
use crate::flv::{self, AudioPacketizer, VideoPacketizer};
use crate::media::{AudioInfo, MediaPacket, PacketKind, StreamInfo};
use crate::platform::{PlatformError, PolyvClient};
use crate::ring::{Ring, RingConfig, RingStats};
use crate::rtmp::{self, ConnectOptions, Publisher, RtmpError, RtmpUrl};
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
}

/// Where the stream goes and what the platform said about it.
struct Target {
    url: RtmpUrl,
    /// Set when the address came from Polyv: notify_stream2 needs the client and stream.
    polyv: Option<(PolyvClient, String)>,
}

async fn resolve_target(cfg: &mut Config, opts: &RunOptions) -> Result<Target, RunError> {
    let fixed = opts
        .url
        .clone()
        .or_else(|| (!cfg.target.url.is_empty()).then(|| cfg.target.url.clone()));
    if let Some(url) = fixed {
        return Ok(Target {
            url: RtmpUrl::parse(&url)?,
            polyv: None,
        });
    }
    cfg.polyv.password()?;
    let client = PolyvClient::from_config(&cfg.polyv)?;
    let reply = client.teacher_login().await?;
    if let Some(max) = reply
        .max_rate
        .filter(|&m| m > 0 && m < cfg.video.bitrate_kbps)
    {
        tracing::info!(
            configured_kbps = cfg.video.bitrate_kbps,
            max_kbps = max,
            "Polyv limits this channel's bitrate; encoding at its maximum"
        );
        cfg.video.bitrate_kbps = max;
    }
    let addr = reply.push_address();
    tracing::info!(push = %addr, "logged in to Polyv");
    Ok(Target {
        url: RtmpUrl::parse(&addr.reveal())?,
        polyv: Some((client, reply.stream.clone())),
    })
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
    video: VideoPacketizer,
    audio: AudioPacketizer,
    /// Set by `on_ready` for encoders whose SPS/PPS come inline (h264_v4l2m2m): the AVC
    /// sequence header must be built from the first IDR, and nothing is sent before it.
    header_from_first_idr: Arc<AtomicBool>,
}

impl Clone for PacketSink {
    /// Each encode thread gets its own packetizer buffers.
    fn clone(&self) -> Self {
        Self {
            ring: self.ring.clone(),
            video: VideoPacketizer::new(),
            audio: AudioPacketizer::new(),
            header_from_first_idr: self.header_from_first_idr.clone(),
        }
    }
}

impl PacketSink {
    fn accept(&mut self, track: Track, pkt: EncodedPacket) {
        let dts = pkt.dts_ms.max(0) as u64;
        match track {
            Track::Video => {
                if self.header_from_first_idr.load(Ordering::Relaxed) {
                    if !pkt.keyframe {
                        return; // nothing decodes before the sequence header
                    }
                    match flv::avc_decoder_config(&pkt.data) {
                        Ok(avcc) => {
                            let body = flv::video_sequence_header_body(&avcc);
                            self.ring
                                .push(MediaPacket::new(PacketKind::VideoHeader, dts, body));
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
                self.ring.push(MediaPacket::new(kind, dts, body));
            }
            Track::Audio => {
                let body = self.audio.packetize(&pkt.data);
                self.ring
                    .push(MediaPacket::new(PacketKind::Audio, dts, body));
            }
        }
    }
}

/// Starts capture and encoding; headers go into the ring before the first packet.
fn start_pipeline(
    cfg: &Config,
    ring: &Ring,
    stop: Arc<AtomicBool>,
) -> Result<(PipelineHandle, Arc<StreamInfo>), RunError> {
    let inline = Arc::new(AtomicBool::new(false));
    let sink = PacketSink {
        ring: ring.clone(),
        video: VideoPacketizer::new(),
        audio: AudioPacketizer::new(),
        header_from_first_idr: inline.clone(),
    };
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
                for h in headers {
                    ring.push(h);
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

fn connect_options(cfg: &Config) -> ConnectOptions {
    ConnectOptions {
        connect_timeout: Duration::from_secs(cfg.target.connect_timeout_s),
        setup_timeout: Duration::from_secs(cfg.target.handshake_timeout_s),
        ..ConnectOptions::default()
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
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

/// One broadcast, from login to a clean close.
pub async fn run(mut cfg: Config, opts: RunOptions) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let target = resolve_target(&mut cfg, &opts).await?;
    let ring = Ring::new(RingConfig {
        max_bytes: cfg.target.max_queue_bytes,
        max_delay_ms: cfg.target.max_queue_delay_ms,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (pipeline, info) =
        tokio::task::block_in_place(|| start_pipeline(&cfg, &ring, stop.clone()))?;
    tracing::info!(
        width = info.width,
        height = info.height,
        fps = info.fps,
        kbps = info.video_bitrate_kbps,
        "capturing and encoding"
    );

    let mut publisher = match rtmp::connect(&target.url, &connect_options(&cfg)).await {
        Ok(p) => p,
        Err(e) => {
            stop.store(true, Ordering::SeqCst);
            let _ = tokio::task::block_in_place(|| pipeline.stop_and_join());
            return Err(e.into());
        }
    };
    if let Some((client, stream)) = &target.polyv {
        let (client, stream, w, h) = (client.clone(), stream.clone(), info.width, info.height);
        tokio::spawn(async move {
            match client.notify_stream(&stream, w, h).await {
                Ok(()) => tracing::info!(width = w, height = h, "told Polyv the stream is up"),
                Err(e) => {
                    tracing::warn!(error = %e, "notify_stream2 failed; the broadcast goes on")
                }
            }
        });
    }

    let mut status = StatusLine::new(opts.status_line && std::io::stderr().is_terminal());
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let result: Result<(), RunError> = loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break Ok(()),
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break Ok(()),
            _ = tick.tick() => {
                if pipeline.is_finished() {
                    break Err(RunError::Internal("capture or encoding stopped".into()));
                }
                status.update(started, pipeline.stats(), ring.stats(), &publisher, "publishing");
            }
            pkt = ring.pop() => match pkt {
                Some(pkt) => if let Err(e) = publisher.send(&pkt).await { break Err(e.into()) },
                None => break Ok(()),
            },
            r = publisher.service() => if let Err(e) = r { break Err(e.into()) },
        }
    };
    status.finish();

    // Stop capture, flush the encoders into the ring, then drain it to the ingest.
    stop.store(true, Ordering::SeqCst);
    let joined = tokio::task::block_in_place(|| pipeline.stop_and_join());
    ring.close();
    let pipeline_stats = match joined {
        Ok(s) => s,
        Err(e) => {
            let _ = publisher.close().await;
            return Err(match result {
                Err(first) => first,
                Ok(()) => e.into(),
            });
        }
    };
    result?;
    drain(&ring, &mut publisher).await?;
    let bytes_sent = publisher.stats().bytes_sent;
    publisher.close().await?;
    Ok(RunSummary {
        elapsed: started.elapsed(),
        pipeline: pipeline_stats,
        ring: ring.stats(),
        bytes_sent,
    })
}

/// Sends what is still queued after the encoders flushed, bounded in time.
async fn drain(ring: &Ring, publisher: &mut Publisher) -> Result<(), RunError> {
    let drain = async {
        while let Some(pkt) = ring.try_pop() {
            publisher.send(&pkt).await?;
        }
        Ok::<(), RtmpError>(())
    };
    match tokio::time::timeout(Duration::from_secs(5), drain).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => {
            tracing::warn!(
                "the ingest did not take the last queued media within 5 s; closing anyway"
            );
            Ok(())
        }
    }
}

/// The ffmpeg-like live line on a TTY: elapsed, fps, bitrate, queue delay, drops, state.
struct StatusLine {
    enabled: bool,
    last: Option<(Instant, u64, u64)>,
}

impl StatusLine {
    fn new(enabled: bool) -> Self {
        Self {
            enabled,
            last: None,
        }
    }

    fn update(
        &mut self,
        started: Instant,
        p: PipelineStats,
        r: RingStats,
        publisher: &Publisher,
        state: &str,
    ) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let frames = p.video.frames_encoded;
        let bytes = publisher.stats().bytes_sent;
        let (fps, kbps) = match self.last {
            Some((t, f, b)) => {
                let dt = now.duration_since(t).as_secs_f64().max(1e-3);
                (
                    (frames - f) as f64 / dt,
                    (bytes.saturating_sub(b)) as f64 * 8.0 / dt / 1000.0,
                )
            }
            None => (0.0, 0.0),
        };
        self.last = Some((now, frames, bytes));
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
        if self.enabled && self.last.is_some() {
            eprintln!();
        }
    }
}
