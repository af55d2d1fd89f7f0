//! Capture and encoding for one broadcast: the pipeline's encode threads run the FLV muxers
//! where the encoders drain, and hand the packets to the [`Tee`]. The stream's headers go in
//! before the first packet; a pipeline that replaces another (a reload) starts its timeline
//! after everything the old one sent.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::tee::Tee;
use super::{BroadcastCommand, RunError};
use crate::adapt::AdaptConfig;
use crate::capture::Track;
use crate::encode::PipelineError;
use crate::encode::{spawn_pipeline, PipelineConfig, PipelineHandle};
use crate::flv::{self, AudioMuxer, VideoMuxer};
use crate::media::{EncodedPacket, StreamInfo, StreamParams, VideoParams};
use crate::status::StatusHub;
use crate::throttle::Throttle;

/// A running pipeline and what its encoders opened with.
pub(super) struct Media {
    pub(super) pipeline: PipelineHandle,
    pub(super) info: Arc<StreamInfo>,
}

/// Runs on each encode thread: muxes the packet the encoder is draining, one pass from
/// FFmpeg's buffer to the tag body, and tees it. Never blocks.
struct Sink {
    tee: Tee,
    /// Added to every timestamp (see [`start`]).
    offset_ms: u64,
    /// What the video encoder opened with; set before the first packet.
    opened: Arc<OnceLock<VideoParams>>,
    video: Option<VideoMuxer>,
    audio: AudioMuxer,
    warn: Throttle<Instant>,
}

impl Clone for Sink {
    /// Each encode thread gets its own muxer state.
    fn clone(&self) -> Self {
        Self {
            tee: self.tee.clone(),
            offset_ms: self.offset_ms,
            opened: self.opened.clone(),
            video: None,
            audio: AudioMuxer::new(self.offset_ms),
            warn: Throttle::new(Duration::from_secs(1)),
        }
    }
}

impl Sink {
    fn accept(&mut self, track: Track, pkt: &EncodedPacket<'_>) {
        match track {
            Track::Video => {
                let (opened, offset) = (&self.opened, self.offset_ms);
                let Some(params) = opened.get() else { return };
                let mux = self
                    .video
                    .get_or_insert_with(|| VideoMuxer::new(params, offset));
                let tee = &self.tee;
                if let Err(e) = mux.mux(pkt, &mut |p| tee.push(p)) {
                    // Nothing decodes without SPS/PPS: the muxer waits for a keyframe that
                    // has them.
                    if let Some(held_back) = self.warn.allow(Instant::now()) {
                        tracing::warn!(error = %e, held_back, "no SPS/PPS from the encoder yet; video waits for a keyframe that has them");
                    }
                }
            }
            Track::Audio => self.tee.push(self.audio.mux(pkt)),
        }
    }
}

/// Starts capture and encoding of `settings` into `tee`; the headers go in first.
///
/// `offset_ms` is added to every timestamp: `[target] timestamp_offset_ms` for the first
/// pipeline of a broadcast, plus the broadcast's elapsed time for one that replaces it after a
/// reload, so the timeline goes on in step with the wall clock.
pub(super) fn start(
    settings: &PipelineConfig,
    tee: &Tee,
    stop: Arc<AtomicBool>,
    offset_ms: u64,
) -> Result<Media, RunError> {
    let opened = Arc::new(OnceLock::new());
    let sink = Sink {
        tee: tee.clone(),
        offset_ms,
        opened: opened.clone(),
        video: None,
        audio: AudioMuxer::new(offset_ms),
        warn: Throttle::new(Duration::from_secs(1)),
    };
    let mut unusable: Option<flv::FlvError> = None;
    let pipeline = spawn_pipeline(
        settings.clone(),
        stop,
        |params: &StreamParams| {
            if let Some(v) = &params.video {
                let _ = opened.set(v.clone());
            }
            match flv::headers(params, offset_ms) {
                Ok(headers) => headers.into_iter().for_each(|h| tee.push(h)),
                Err(e) => unusable = Some(e),
            }
        },
        {
            let mut sink = sink;
            move |track, pkt: &EncodedPacket<'_>| sink.accept(track, pkt)
        },
    )?;
    if let Some(e) = unusable {
        let _ = pipeline.stop_and_join();
        return Err(RunError::Headers(e));
    }
    let info = Arc::new(flv::stream_info(pipeline.params()));
    Ok(Media { pipeline, info })
}

/// How long the first retry of capture and encoding waits; doubled per failure up to
/// [`MEDIA_RETRY_CAP`].
pub(super) const MEDIA_RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two attempts to open the devices and encoders: a camera plugged
/// in is streaming within seconds.
pub(super) const MEDIA_RETRY_CAP: Duration = Duration::from_secs(3);

/// How opening capture and encoding ended.
pub(super) enum MediaStart {
    Ready(Media),
    /// Told to stop before the devices opened; `reason`: the last error.
    Stopped {
        reason: String,
    },
}

/// Retries of capture and encoding: the backoff, the log (a WARN per new error, the rest at
/// debug), and the hub's "capture down".
#[derive(Debug)]
pub(super) struct MediaRetry {
    attempts: u32,
    since: tokio::time::Instant,
    /// The last error, as shown.
    pub(super) reason: String,
    /// The next attempt.
    pub(super) at: tokio::time::Instant,
}

impl MediaRetry {
    pub(super) fn new() -> Self {
        let now = tokio::time::Instant::now();
        Self {
            attempts: 0,
            since: now,
            reason: String::new(),
            at: now,
        }
    }

    /// An attempt failed with `e`: when to try again.
    pub(super) fn failed(&mut self, e: &RunError, hub: Option<&StatusHub>) -> Duration {
        self.attempts += 1;
        let delay = (MEDIA_RETRY_FIRST * 2u32.saturating_pow(self.attempts - 1).min(64))
            .min(MEDIA_RETRY_CAP);
        let reason = e.to_string();
        // The hub first: whoever reads the log line finds the state it describes.
        if let Some(hub) = hub {
            hub.media_waiting(reason.clone(), self.attempts, delay);
        }
        if reason != self.reason {
            tracing::warn!(
                error = %e,
                attempt = self.attempts,
                retry_ms = delay.as_millis() as u64,
                "capture and encoding cannot start; retrying (nothing is sent meanwhile)"
            );
            self.reason = reason;
        } else {
            tracing::debug!(
                attempt = self.attempts,
                retry_ms = delay.as_millis() as u64,
                "capture still cannot start"
            );
        }
        self.at = tokio::time::Instant::now() + delay;
        delay
    }

    pub(super) fn recovered(&self, hub: Option<&StatusHub>) {
        if self.attempts > 0 {
            tracing::info!(
                attempts = self.attempts,
                down_ms = self.since.elapsed().as_millis() as u64,
                "capture and encoding running again"
            );
        }
        if let Some(hub) = hub {
            hub.media_ready();
        }
    }
}

/// Nothing can be done about these by retrying.
pub(super) fn media_is_fatal(e: &RunError) -> bool {
    matches!(e, RunError::Media(PipelineError::NoTracks))
}

/// Opens capture and encoding, retrying with backoff until they open or the broadcast is
/// told to stop. A reload's media settings replace `settings` (and are tried at once), its
/// `[adapt]` replaces `adapt`.
pub(super) async fn open_media(
    settings: &mut PipelineConfig,
    adapt: &mut AdaptConfig,
    tee: &Tee,
    stop: &Arc<AtomicBool>,
    offset_ms: u64,
    commands: &mut mpsc::Receiver<BroadcastCommand>,
    hub: Option<&StatusHub>,
) -> Result<MediaStart, RunError> {
    let mut retry = MediaRetry::new();
    loop {
        let attempt = tokio::task::block_in_place(|| start(settings, tee, stop.clone(), offset_ms));
        let e = match attempt {
            Ok(media) => {
                retry.recovered(hub);
                return Ok(MediaStart::Ready(media));
            }
            Err(e) if media_is_fatal(&e) => return Err(e),
            Err(e) => e,
        };
        let delay = retry.failed(&e, hub);
        let wake = tokio::time::sleep(delay);
        tokio::pin!(wake);
        loop {
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    None | Some(BroadcastCommand::Stop) => {
                        return Ok(MediaStart::Stopped { reason: retry.reason });
                    }
                    Some(BroadcastCommand::Adapt(a)) => *adapt = a,
                    Some(BroadcastCommand::RestartMedia(next)) => {
                        tracing::info!("reload: trying the new media settings");
                        *settings = *next;
                        break;
                    }
                },
                _ = &mut wake => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{VideoEncoder, VideoSettings};
    use crate::media::{MediaPacket, PacketKind};
    use crate::ring::{Ring, RingConfig};

    fn x264_params(width: u32, height: u32, bitrate_kbps: u32) -> VideoParams {
        let settings = VideoSettings {
            width,
            height,
            bitrate_kbps,
            threads: 1,
            ..VideoSettings::default()
        };
        VideoEncoder::open(&settings).unwrap().params()
    }

    fn popped(ring: &Ring) -> Vec<(PacketKind, u64)> {
        std::iter::from_fn(|| ring.try_pop())
            .map(|p: MediaPacket| (p.kind, p.dts_ms))
            .collect()
    }

    /// libx264's real parameter sets through the sink, the muxer and the tee: a reopen at
    /// another bitrate keeps them (no header), one at half the size changes them (a header
    /// first, kept by the ring for the next session), and a reopen at that size again does not.
    #[test]
    fn a_reopened_encoder_gets_a_new_sequence_header_only_when_its_sps_changes() {
        let ring = Ring::new(RingConfig::default());
        let tee = Tee::new(ring.clone(), None);
        let opened = x264_params(320, 240, 500);
        let stream = StreamParams {
            video: Some(opened.clone()),
            audio: None,
        };
        for h in flv::headers(&stream, 0).unwrap() {
            tee.push(h);
        }
        assert_eq!(
            popped(&ring),
            [(PacketKind::Metadata, 0), (PacketKind::VideoHeader, 0)]
        );
        let cell = Arc::new(OnceLock::new());
        cell.set(opened.clone()).unwrap();
        let mut sink = Sink {
            tee,
            offset_ms: 0,
            opened: cell,
            video: None,
            audio: AudioMuxer::new(0),
            warn: Throttle::new(Duration::from_secs(1)),
        };
        let data = [0u8, 0, 0, 1, 0x65, 0x88, 0x84, 0x21];
        let idr = |dts_ms: i64, params: &VideoParams| EncodedPacket {
            data: &data,
            pts_ms: dts_ms,
            dts_ms,
            keyframe: true,
            reopened: Some(Arc::new(params.clone())),
        };
        let key = PacketKind::Video { keyframe: true };

        let other_rate = x264_params(320, 240, 300);
        assert_eq!(other_rate.extradata, opened.extradata);
        sink.accept(Track::Video, &idr(1000, &other_rate));
        assert_eq!(popped(&ring), [(key, 1000)]);

        let half = x264_params(160, 120, 300);
        assert_ne!(half.extradata, opened.extradata);
        sink.accept(Track::Video, &idr(2000, &half));
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

        sink.accept(Track::Video, &idr(3000, &half));
        assert_eq!(popped(&ring), [(key, 3000)]);
    }

    /// A camera that is not there is looked for again after 0.5, 1, 2 s, then every 3 s: it
    /// streams within about 3 s of being plugged in. The hub shows why, how often, and when
    /// next; a start clears it.
    #[test]
    fn capture_is_retried_at_most_3_s_apart_and_shown_on_the_hub() {
        let hub = StatusHub::new();
        let mut retry = MediaRetry::new();
        let err = RunError::Media(PipelineError::Spawn {
            name: "capture".into(),
            source: std::io::Error::other("no /dev/video0"),
        });
        let delays: Vec<Duration> = (0..6).map(|_| retry.failed(&err, Some(&hub))).collect();
        let ms = Duration::from_millis;
        assert_eq!(
            delays,
            [ms(500), ms(1000), ms(2000), ms(3000), ms(3000), ms(3000)]
        );
        let w = hub.snapshot().media_wait.unwrap();
        assert_eq!((w.attempts, w.retry_in), (6, ms(3000)));
        assert!(w.reason.contains("no /dev/video0"), "{}", w.reason);
        assert_eq!(hub.snapshot().capture_errors, 6);
        retry.recovered(Some(&hub));
        assert!(hub.snapshot().media_wait.is_none());
        assert!(!media_is_fatal(&err));
        assert!(media_is_fatal(&RunError::Media(PipelineError::NoTracks)));
    }
}
