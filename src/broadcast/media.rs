//! Capture and encoding for one broadcast: the pipeline's encode threads run the FLV muxers
//! where the encoders drain, and hand the packets to the [`Tee`]. The stream's headers go in
//! before the first packet; a pipeline that replaces another (a reload) starts its timeline
//! after everything the old one sent.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::tee::Tee;
use super::RunError;
use crate::capture::Track;
use crate::encode::{spawn_pipeline, PipelineConfig, PipelineHandle};
use crate::flv::{self, AudioMuxer, VideoMuxer};
use crate::media::{EncodedPacket, StreamInfo, StreamParams, VideoParams};
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
