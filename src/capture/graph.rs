//! Test patterns read straight from a libavfilter graph.
//!
//! libavdevice's `lavfi` input (FFmpeg 5.1) copies every frame the graph makes into a packet
//! (`av_image_copy_to_buffer`: 1.4 MB per 720p picture, 30 times a second), which the `rawvideo`
//! or `pcm` decoder then wraps back into a frame. Reading the graph's sink ourselves hands on
//! the frame the source filter drew, from the graph's own buffer pool: no copy, no packet, no
//! decoder, and one picture buffer fewer alive. The graph is the same (`testsrc2`, `sine`,
//! [`super::SourceSpec::lavfi_graph`]), so the pictures and samples are the same; video is
//! asked for in `yuv420p`, which `testsrc2` draws natively and the H.264 encoders take as is
//! (the `lavfi` input negotiated the same format). The graph runs single-threaded: its filters
//! draw on the capture thread, and an idle slice-thread pool would only cost threads.

use std::ffi::{c_int, c_void, CString};
use std::ptr;

use ffmpeg::ffi;
use ffmpeg::Rational;
use ffmpeg_next as ffmpeg;

use super::{CaptureError, Track};

/// A configured filter graph with one sink, read on the capture thread.
pub(super) struct SinkGraph {
    graph: *mut ffi::AVFilterGraph,
    /// Owned by `graph`.
    sink: *mut ffi::AVFilterContext,
}

impl SinkGraph {
    /// Builds `spec` (a graph with no inputs and one output) ending in a sink for `track`.
    pub(super) fn open(spec: &str, track: Track, what: &str) -> Result<Self, CaptureError> {
        super::init_ffmpeg();
        let open_error = |source: ffmpeg::Error| CaptureError::Open {
            what: what.to_string(),
            source,
        };
        let spec = CString::new(spec).map_err(|_| CaptureError::InvalidSpec {
            message: format!("{what}: the filter graph contains a NUL byte"),
        })?;
        let sink_name = match track {
            Track::Video => c"buffersink",
            Track::Audio => c"abuffersink",
        };
        // SAFETY: the graph is allocated here and owned by `Self` from the moment it exists (so
        // every error path frees it through Drop); filters created in it are owned by it; the
        // in/out lists returned by the parser are freed here.
        unsafe {
            let graph = ffi::avfilter_graph_alloc();
            if graph.is_null() {
                return Err(open_error(ffmpeg::Error::Other {
                    errno: libc::ENOMEM,
                }));
            }
            let mut this = Self {
                graph,
                sink: ptr::null_mut(),
            };
            (*graph).nb_threads = 1;
            let filter = ffi::avfilter_get_by_name(sink_name.as_ptr());
            if filter.is_null() {
                return Err(CaptureError::FormatUnavailable { format: "lavfi" });
            }
            check(
                ffi::avfilter_graph_create_filter(
                    &mut this.sink,
                    filter,
                    c"out".as_ptr(),
                    ptr::null(),
                    ptr::null_mut(),
                    graph,
                ),
                open_error,
            )?;
            if track == Track::Video {
                let formats = [ffi::AVPixelFormat::AV_PIX_FMT_YUV420P];
                check(
                    ffi::av_opt_set_bin(
                        this.sink as *mut c_void,
                        c"pix_fmts".as_ptr(),
                        formats.as_ptr() as *const u8,
                        std::mem::size_of_val(&formats) as c_int,
                        ffi::AV_OPT_SEARCH_CHILDREN as c_int,
                    ),
                    open_error,
                )?;
            }
            let mut inputs: *mut ffi::AVFilterInOut = ptr::null_mut();
            let mut outputs: *mut ffi::AVFilterInOut = ptr::null_mut();
            let parsed =
                ffi::avfilter_graph_parse2(graph, spec.as_ptr(), &mut inputs, &mut outputs);
            let linked = if parsed < 0 {
                parsed
            } else if !inputs.is_null() || outputs.is_null() || !(*outputs).next.is_null() {
                // Test patterns are sources: no open input, exactly one open output.
                ffi::AVERROR(libc::EINVAL)
            } else {
                ffi::avfilter_link(
                    (*outputs).filter_ctx,
                    (*outputs).pad_idx as u32,
                    this.sink,
                    0,
                )
            };
            ffi::avfilter_inout_free(&mut inputs);
            ffi::avfilter_inout_free(&mut outputs);
            check(linked, open_error)?;
            check(
                ffi::avfilter_graph_config(graph, ptr::null_mut()),
                open_error,
            )?;
            Ok(this)
        }
    }

    /// The next frame into `frame` (an empty shell): `Eof` when the source ended. Its time is
    /// in [`time_base`](Self::time_base), in `pts` and, as a decoder would stamp it, in
    /// `best_effort_timestamp` (what the capture clock reads).
    pub(super) fn receive(&mut self, frame: &mut ffmpeg::Frame) -> Result<(), ffmpeg::Error> {
        // SAFETY: the sink belongs to our configured graph; `frame` is a valid, empty AVFrame
        // whose plain timestamp field we set once it is filled.
        unsafe {
            let ret = ffi::av_buffersink_get_frame(self.sink, frame.as_mut_ptr());
            if ret < 0 {
                return Err(ffmpeg::Error::from(ret));
            }
            let f = frame.as_mut_ptr();
            (*f).best_effort_timestamp = (*f).pts;
        }
        Ok(())
    }

    /// The time base of the frames' timestamps.
    pub(super) fn time_base(&self) -> Rational {
        // SAFETY: a configured sink.
        unsafe { ffi::av_buffersink_get_time_base(self.sink) }.into()
    }

    /// Video: the frame rate (0/1 when unknown).
    pub(super) fn frame_rate(&self) -> Rational {
        // SAFETY: a configured sink.
        unsafe { ffi::av_buffersink_get_frame_rate(self.sink) }.into()
    }

    /// Video: width and height.
    pub(super) fn video_size(&self) -> (u32, u32) {
        // SAFETY: a configured sink.
        unsafe {
            (
                ffi::av_buffersink_get_w(self.sink).max(0) as u32,
                ffi::av_buffersink_get_h(self.sink).max(0) as u32,
            )
        }
    }

    /// Audio: sample rate and channels.
    pub(super) fn audio_format(&self) -> (u32, u16) {
        // SAFETY: a configured sink.
        unsafe {
            (
                ffi::av_buffersink_get_sample_rate(self.sink).max(0) as u32,
                ffi::av_buffersink_get_channels(self.sink).clamp(0, i32::from(u16::MAX)) as u16,
            )
        }
    }
}

impl Drop for SinkGraph {
    fn drop(&mut self) {
        // SAFETY: the graph is owned and freed once; frames handed out keep their buffers alive
        // on their own (a buffer pool is freed when its last buffer comes back).
        unsafe { ffi::avfilter_graph_free(&mut self.graph) };
    }
}

fn check(
    ret: c_int,
    error: impl FnOnce(ffmpeg::Error) -> CaptureError,
) -> Result<(), CaptureError> {
    if ret < 0 {
        Err(error(ffmpeg::Error::from(ret)))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffmpeg::format::Pixel;

    #[test]
    fn a_test_pattern_comes_straight_from_the_graph_in_yuv420p() {
        let mut g =
            SinkGraph::open("testsrc2=size=64x48:rate=5", Track::Video, "test pattern").unwrap();
        assert_eq!(g.video_size(), (64, 48));
        assert_eq!(g.frame_rate(), Rational(5, 1));
        let tb = g.time_base();
        let mut pts = Vec::new();
        for _ in 0..3 {
            let mut frame = ffmpeg::frame::Video::empty();
            g.receive(&mut frame).unwrap();
            assert_eq!(frame.format(), Pixel::YUV420P);
            assert_eq!((frame.width(), frame.height()), (64, 48));
            assert_eq!(
                frame.timestamp(),
                frame.pts(),
                "stamped like a decoded frame"
            );
            pts.push(frame.pts().unwrap());
        }
        assert_eq!(pts, [0, 1, 2]);
        assert_eq!(tb, Rational(1, 5));
    }

    /// The same graph read through libavdevice's `lavfi` input gives the same picture.
    #[test]
    fn the_picture_is_the_one_the_lavfi_input_gives() {
        let spec = "testsrc2=size=64x48:rate=5";
        let mut g = SinkGraph::open(spec, Track::Video, "test pattern").unwrap();
        let mut direct = ffmpeg::frame::Video::empty();
        g.receive(&mut direct).unwrap();

        let req = super::super::input::InputRequest {
            format: Some("lavfi"),
            url: spec,
            options: Vec::new(),
            nonblocking: false,
            probe_streams: false,
            what: "test pattern",
        };
        let mut input =
            super::super::input::open(&req, &super::super::StopSignal::default()).unwrap();
        let stream = input.ctx.streams().next().unwrap();
        let ctx = ffmpeg::codec::context::Context::from_parameters(stream.parameters()).unwrap();
        let mut decoder = ctx.decoder().video().unwrap();
        let mut packet = ffmpeg::Packet::empty();
        packet.read(&mut input.ctx).unwrap();
        decoder.send_packet(&packet).unwrap();
        let mut via_lavfi = ffmpeg::frame::Video::empty();
        decoder.receive_frame(&mut via_lavfi).unwrap();

        assert_eq!(via_lavfi.format(), direct.format());
        for plane in 0..3 {
            let (w, h) = (direct.plane_width(plane), direct.plane_height(plane));
            for y in 0..h as usize {
                let row = |f: &ffmpeg::frame::Video| {
                    let stride = f.stride(plane);
                    f.data(plane)[y * stride..y * stride + w as usize].to_vec()
                };
                assert_eq!(row(&direct), row(&via_lavfi), "plane {plane} row {y}");
            }
        }
    }

    #[test]
    fn a_test_tone_comes_straight_from_the_graph() {
        let mut g = SinkGraph::open(
            "sine=frequency=440:sample_rate=48000,aformat=channel_layouts=stereo",
            Track::Audio,
            "test tone",
        )
        .unwrap();
        assert_eq!(g.audio_format(), (48_000, 2));
        assert_eq!(g.time_base(), Rational(1, 48_000));
        let mut frame = ffmpeg::frame::Audio::empty();
        let mut starts = Vec::new();
        for _ in 0..3 {
            g.receive(&mut frame).unwrap();
            assert_eq!(frame.samples(), 1024);
            assert_eq!(frame.channels(), 2);
            starts.push(frame.timestamp().unwrap());
            // SAFETY: the frame is ours; released before the next receive.
            unsafe { ffi::av_frame_unref(frame.as_mut_ptr()) };
        }
        assert_eq!(starts, [0, 1024, 2048]);
    }

    #[test]
    fn the_sync_picture_flashes_white_for_100_ms_every_second() {
        let spec = super::super::SourceSpec::TestPatternVideo {
            width: 64,
            height: 48,
            fps: 10,
            sync: true,
        };
        let mut g = SinkGraph::open(&spec.lavfi_graph().unwrap(), Track::Video, "sync").unwrap();
        let mut lit = Vec::new();
        for _ in 0..21 {
            let mut frame = ffmpeg::frame::Video::empty();
            g.receive(&mut frame).unwrap();
            assert_eq!(frame.format(), Pixel::YUV420P);
            let luma = frame.data(0)[frame.stride(0) * 24 + 32];
            assert!(!(20..=230).contains(&luma), "black or white, not {luma}");
            lit.push(luma > 128);
        }
        let on: Vec<usize> = (0..lit.len()).filter(|&i| lit[i]).collect();
        assert_eq!(on, [0, 10, 20], "one frame of 100 ms at each whole second");
    }

    /// Where the beep starts and how long it lasts, in samples, over `seconds`.
    fn beeps(clock_ppm: i32, seconds: usize) -> Vec<(usize, usize)> {
        let spec = super::super::SourceSpec::TestPatternAudio {
            sample_rate: 48_000,
            channels: 2,
            frequency_hz: 440,
            sync: true,
            clock_ppm,
        };
        let mut g = SinkGraph::open(&spec.lavfi_graph().unwrap(), Track::Audio, "sync").unwrap();
        assert_eq!(g.audio_format(), (48_000, 2));
        let mut samples = Vec::new();
        let mut frame = ffmpeg::frame::Audio::empty();
        while samples.len() < seconds * 48_000 {
            g.receive(&mut frame).unwrap();
            samples.extend_from_slice(&frame.plane::<f32>(1)[..frame.samples()]);
            // SAFETY: the frame is ours; released before the next receive.
            unsafe { ffi::av_frame_unref(frame.as_mut_ptr()) };
        }
        let mut out: Vec<(usize, usize)> = Vec::new();
        let mut last_loud = None;
        for (i, s) in samples.iter().enumerate() {
            if s.abs() > 1e-6 {
                match (out.last_mut(), last_loud) {
                    (Some(b), Some(l)) if i - l < 100 => b.1 = i - b.0 + 1,
                    _ => out.push((i, 1)),
                }
                last_loud = Some(i);
            }
        }
        out
    }

    #[test]
    fn the_sync_beep_lasts_100_ms_at_every_whole_second_of_real_time() {
        let b = beeps(0, 3);
        assert!(b.len() >= 3, "{b:?}");
        for (k, (start, len)) in b.iter().take(3).enumerate() {
            assert!(start.abs_diff(k * 48_000) <= 1, "{b:?}");
            assert!(len.abs_diff(4_800) <= 48, "{b:?}");
        }
        // A sample clock 1000 ppm fast records the beep at second k at sample 48048 k.
        let b = beeps(1000, 3);
        assert!(b[2].0.abs_diff(96_096) <= 2, "{b:?}");
    }

    #[test]
    fn a_graph_that_is_not_a_single_source_is_refused() {
        let err = SinkGraph::open("nullsink", Track::Video, "test pattern")
            .err()
            .unwrap();
        assert!(matches!(err, CaptureError::Open { .. }), "{err}");
        let err = SinkGraph::open("no_such_filter", Track::Video, "test pattern")
            .err()
            .unwrap();
        assert!(matches!(err, CaptureError::Open { .. }), "{err}");
    }
}
