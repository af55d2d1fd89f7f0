//! Opening a source, at start-up and again after a live device's loss. Kept apart from the
//! read loop because it is the one place that turns a [`SourceSpec`] into libavformat's terms
//! (URL, format, options, clock mode, kind) and builds the decoders, and both the first open
//! and every reopen must do it the same way.

use std::time::Instant;

use ffmpeg::{media, Rational};
use ffmpeg_next as ffmpeg;

use super::looping::Looping;
use super::precheck::{precheck_camera, refine_open_error};
use super::{Feed, Source, SourceKind};
use crate::capture::clock::ClockMode;
use crate::capture::graph::SinkGraph;
use crate::capture::input::{self, InputRequest, StopSignal};
use crate::capture::{CaptureError, SourceInfo, SourceSpec, Track};

/// How a track's frames are timed.
pub(super) struct Timing {
    pub(super) track: Track,
    pub(super) time_base: Rational,
    /// Used when a video frame carries no duration.
    pub(super) default_duration_us: i64,
    /// Source end time (timestamp + duration) of the last frame, including the loop offset.
    pub(super) last_end_us: Option<i64>,
    /// Pipeline time at which the next frame is expected (the last one's time + duration).
    pub(super) next_due_us: Option<i64>,
    /// A test tone's sample clock runs this many ppm fast: its source times (and durations)
    /// are that much shorter on the pipeline clock.
    pub(super) clock_ppm: i32,
}

impl Timing {
    fn new(track: Track, time_base: Rational, frame_rate: Rational) -> Self {
        let default_duration_us = if frame_rate.numerator() > 0 && frame_rate.denominator() > 0 {
            1_000_000 * i64::from(frame_rate.denominator()) / i64::from(frame_rate.numerator())
        } else {
            40_000
        };
        Self {
            track,
            time_base,
            default_duration_us,
            last_end_us: None,
            next_due_us: None,
            clock_ppm: 0,
        }
    }
}

/// A demuxed stream and its decoder.
pub(super) struct StreamState {
    pub(super) index: usize,
    pub(super) timing: Timing,
    pub(super) decoder: ffmpeg::decoder::Opened,
}

/// How to open a source: the libavformat request without the borrowed parts.
pub(super) struct Plan {
    url: String,
    format: Option<&'static str>,
    options: Vec<(&'static str, String)>,
    pub(super) mode: ClockMode,
    /// What the source is; decides whether it is read from a filter graph (test patterns) or
    /// non-blocking (devices). The worker keeps the first plan's kind: a reopen's is only
    /// looked at here (a looped file's timeline carries over).
    pub(super) kind: SourceKind,
}

/// How to open `spec` (not the test seam's wrapper). `first` checks a camera against what it
/// offers, for a start-up error that names the alternatives; a reopen skips that and lets the
/// driver negotiate (a replugged camera may be another model; the encoder scales).
pub(super) fn plan(spec: &SourceSpec, first: bool) -> Result<Plan, CaptureError> {
    Ok(match spec {
        SourceSpec::V4l2 {
            device,
            input_format,
            width,
            height,
            fps,
        } => {
            if first {
                precheck_camera(device, input_format.as_deref(), *width, *height)?;
            }
            let mut options = vec![
                ("video_size", format!("{width}x{height}")),
                ("framerate", fps.to_string()),
                ("timestamps", "mono2abs".to_string()),
            ];
            if let Some(f) = input_format {
                options.push(("input_format", f.clone()));
            }
            Plan {
                url: device.to_string_lossy().into_owned(),
                format: Some("v4l2"),
                options,
                mode: ClockMode::Wallclock,
                kind: SourceKind::Device,
            }
        }
        SourceSpec::Alsa {
            device,
            sample_rate,
            channels,
        } => Plan {
            url: device.clone(),
            format: Some("alsa"),
            options: vec![
                ("sample_rate", sample_rate.to_string()),
                ("channels", channels.to_string()),
            ],
            mode: ClockMode::Wallclock,
            kind: SourceKind::Device,
        },
        SourceSpec::TestPatternVideo { .. } | SourceSpec::TestPatternAudio { .. } => Plan {
            url: spec.lavfi_graph().expect("test patterns have a graph"),
            format: Some("lavfi"),
            options: Vec::new(),
            mode: ClockMode::Paced,
            kind: SourceKind::TestPattern,
        },
        SourceSpec::File { path, looped } => Plan {
            url: path.to_string_lossy().into_owned(),
            format: None,
            options: Vec::new(),
            mode: ClockMode::Paced,
            kind: SourceKind::File {
                looping: looped.then(Looping::default),
            },
        },
        SourceSpec::Faulty { inner, .. } => return plan(inner, first),
    })
}

/// Opens the input of `plan` and a decoder for each wanted track (`(video, audio)`).
pub(super) fn open_source(
    spec: &SourceSpec,
    plan: &Plan,
    wants: (bool, bool),
    signal: &StopSignal,
) -> Result<(Source, SourceInfo), CaptureError> {
    let what = spec.describe();
    if let SourceKind::TestPattern = plan.kind {
        match wants {
            (true, false) => return open_graph(&plan.url, Track::Video, what, 0),
            (false, true) => return open_graph(&plan.url, Track::Audio, what, spec.clock_ppm()),
            _ => {}
        }
    }
    let req = InputRequest {
        format: plan.format,
        url: &plan.url,
        options: plan.options.clone(),
        nonblocking: matches!(plan.kind, SourceKind::Device),
        probe_streams: plan.format.is_none(),
        what: &what,
    };
    let input = input::open(&req, signal).map_err(|e| refine_open_error(spec, e))?;

    let mut streams = Vec::new();
    let mut info = SourceInfo {
        description: what.clone(),
        video: None,
        audio: None,
    };
    for (track, kind, wanted) in [
        (Track::Video, media::Type::Video, wants.0),
        (Track::Audio, media::Type::Audio, wants.1),
    ] {
        if !wanted {
            continue;
        }
        let stream = input
            .ctx
            .streams()
            .best(kind)
            .ok_or_else(|| CaptureError::NoStream {
                what: what.clone(),
                track,
            })?;
        let ctx = ffmpeg::codec::context::Context::from_parameters(stream.parameters()).map_err(
            |source| CaptureError::Decoder {
                what: what.clone(),
                source,
            },
        )?;
        let mut decoder = ctx.decoder();
        decoder.set_packet_time_base(stream.time_base());
        let decoder = match track {
            Track::Video => decoder.video().map(|d| {
                info.video = Some((d.width(), d.height()));
                d.0
            }),
            Track::Audio => decoder.audio().map(|d| {
                info.audio = Some((d.rate(), d.channels()));
                d.0
            }),
        }
        .map_err(|source| CaptureError::Decoder {
            what: what.clone(),
            source,
        })?;
        streams.push(StreamState {
            index: stream.index(),
            timing: Timing::new(track, stream.time_base(), stream.avg_frame_rate()),
            decoder,
        });
    }
    Ok((
        Source {
            feed: Feed::Demuxer { streams, input },
            delivered: 0,
            last_data: Instant::now(),
        },
        info,
    ))
}

/// Opens a test pattern's filter graph for its one track.
fn open_graph(
    graph: &str,
    track: Track,
    what: String,
    clock_ppm: i32,
) -> Result<(Source, SourceInfo), CaptureError> {
    let graph = SinkGraph::open(graph, track, &what)?;
    let mut info = SourceInfo {
        description: what,
        video: None,
        audio: None,
    };
    let frame_rate = match track {
        Track::Video => {
            info.video = Some(graph.video_size());
            graph.frame_rate()
        }
        Track::Audio => {
            info.audio = Some(graph.audio_format());
            Rational(0, 1)
        }
    };
    let mut timing = Timing::new(track, graph.time_base(), frame_rate);
    timing.clock_ppm = clock_ppm;
    Ok((
        Source {
            feed: Feed::Graph { graph, timing },
            delivered: 0,
            last_data: Instant::now(),
        },
        info,
    ))
}
