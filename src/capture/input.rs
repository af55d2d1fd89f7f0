//! Opening an input through libavformat/libavdevice with an explicit input format.
//!
//! `ffmpeg_next::format::open_with` cannot be used as is: it drops the option dictionary that
//! `avformat_open_input` hands back, and that leftover dictionary is the only sign that an
//! option name was misspelled (FFmpeg silently ignores unknown keys). We call
//! `avformat_open_input` ourselves, fail on any leftover key, install an interrupt callback tied
//! to the stop signal (so a blocking read returns `AVERROR_EXIT` on stop), and open devices with
//! `AVFMT_FLAG_NONBLOCK` so reads return `EAGAIN` instead of blocking inside an ioctl.

use std::ffi::{c_int, c_void, CString};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ffmpeg::ffi;
use ffmpeg_next as ffmpeg;

use super::CaptureError;

/// Set by the caller's stop flag or by the pipeline when another thread failed.
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    external: Arc<AtomicBool>,
    internal: Arc<AtomicBool>,
}

impl StopSignal {
    pub fn new(external: Arc<AtomicBool>) -> Self {
        Self {
            external,
            internal: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn is_set(&self) -> bool {
        self.external.load(Ordering::Relaxed) || self.internal.load(Ordering::Relaxed)
    }

    /// Stops everything sharing this signal without touching the caller's flag.
    pub fn halt(&self) {
        self.internal.store(true, Ordering::Relaxed);
    }
}

/// An open input. The context is declared first so it is closed before the stop signal its
/// interrupt callback points to is freed.
pub(super) struct OpenedInput {
    pub ctx: ffmpeg::format::context::Input,
    _signal: Box<StopSignal>,
}

/// What to open.
pub(super) struct InputRequest<'a> {
    /// libavformat short name: `v4l2`, `alsa`, `lavfi`, or `None` to probe (files).
    pub format: Option<&'static str>,
    /// Device path, ALSA name, filter graph, or file path.
    pub url: &'a str,
    pub options: Vec<(&'static str, String)>,
    /// Devices: read without blocking (`EAGAIN` when no data yet).
    pub nonblocking: bool,
    /// Files need `avformat_find_stream_info`; devices and lavfi describe their streams in
    /// `read_header` already, and probing a non-blocking device would spin on `EAGAIN`.
    pub probe_streams: bool,
    /// For messages: `camera /dev/video0`, `test pattern`, …
    pub what: &'a str,
}

unsafe extern "C" fn interrupt_cb(opaque: *mut c_void) -> c_int {
    // SAFETY: `opaque` is the `Box<StopSignal>` owned by the `OpenedInput` (or by `open` until
    // then), which outlives the format context.
    let signal = unsafe { &*(opaque as *const StopSignal) };
    c_int::from(signal.is_set())
}

/// Opens `req` and returns the context, or an error for the raw FFmpeg failure
/// (`CaptureError::Open`) that the caller may refine into a device-specific message.
pub(super) fn open(
    req: &InputRequest<'_>,
    signal: &StopSignal,
) -> Result<OpenedInput, CaptureError> {
    super::init_ffmpeg();
    let url = CString::new(req.url).map_err(|_| CaptureError::InvalidSpec {
        message: format!("{}: the name contains a NUL byte", req.what),
    })?;
    let format = match req.format {
        Some(name) => {
            let c = CString::new(name).expect("static format names have no NUL");
            // SAFETY: plain lookup by name in libavformat's static tables.
            let f = unsafe { ffi::av_find_input_format(c.as_ptr()) };
            if f.is_null() {
                return Err(CaptureError::FormatUnavailable { format: name });
            }
            f
        }
        None => ptr::null(),
    };
    let mut dict = ffmpeg::Dictionary::new();
    for (k, v) in &req.options {
        dict.set(k, v);
    }
    let signal = Box::new(signal.clone());
    // SAFETY: standard avformat_open_input protocol: a context allocated by
    // avformat_alloc_context (freed by avformat_open_input on failure), an owned dictionary
    // whose leftover is handed back and re-owned, and the context wrapped exactly once.
    unsafe {
        let mut ps = ffi::avformat_alloc_context();
        if ps.is_null() {
            return Err(CaptureError::Open {
                what: req.what.to_string(),
                source: ffmpeg::Error::Other {
                    errno: libc::ENOMEM,
                },
            });
        }
        (*ps).interrupt_callback.callback = Some(interrupt_cb);
        (*ps).interrupt_callback.opaque = &*signal as *const StopSignal as *mut c_void;
        if req.nonblocking {
            (*ps).flags |= ffi::AVFMT_FLAG_NONBLOCK as c_int;
        }
        let mut opts = dict.disown();
        let ret = ffi::avformat_open_input(&mut ps, url.as_ptr(), format as *mut _, &mut opts);
        let leftover = ffmpeg::Dictionary::own(opts);
        if ret < 0 {
            return Err(CaptureError::Open {
                what: req.what.to_string(),
                source: ffmpeg::Error::from(ret),
            });
        }
        let ctx = ffmpeg::format::context::Input::wrap(ps);
        if let Some((key, _)) = leftover.iter().next() {
            return Err(CaptureError::UnknownOption {
                what: req.what.to_string(),
                key: key.to_string(),
            });
        }
        let mut opened = OpenedInput {
            ctx,
            _signal: signal,
        };
        if req.probe_streams {
            let ret = ffi::avformat_find_stream_info(opened.ctx.as_mut_ptr(), ptr::null_mut());
            if ret < 0 {
                return Err(CaptureError::Open {
                    what: req.what.to_string(),
                    source: ffmpeg::Error::from(ret),
                });
            }
        }
        Ok(opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lavfi(options: Vec<(&'static str, String)>) -> InputRequest<'static> {
        InputRequest {
            format: Some("lavfi"),
            url: "testsrc2=size=64x48:rate=5",
            options,
            nonblocking: false,
            probe_streams: false,
            what: "test pattern",
        }
    }

    #[test]
    fn opens_lavfi_with_an_explicit_format() {
        let input = open(&lavfi(vec![]), &StopSignal::default()).unwrap();
        assert_eq!(input.ctx.streams().count(), 1);
    }

    #[test]
    fn a_misspelled_option_is_an_error_naming_the_key() {
        let err = open(
            &lavfi(vec![("grpah_file", "x".into())]),
            &StopSignal::default(),
        )
        .err()
        .unwrap();
        let msg = err.to_string();
        assert!(msg.contains("grpah_file"), "{msg}");
    }

    /// The device option names polypush passes (see `worker.rs`) must exist in this FFmpeg's
    /// demuxers: devices cannot be opened here, so check the option tables themselves.
    #[test]
    fn device_option_names_exist_in_libavdevice() {
        super::super::init_ffmpeg();
        for (format, options) in [
            (
                "v4l2",
                &["video_size", "framerate", "timestamps", "input_format"][..],
            ),
            ("alsa", &["sample_rate", "channels"][..]),
        ] {
            let name = CString::new(format).unwrap();
            // SAFETY: lookups in libavformat's static tables; AV_OPT_SEARCH_FAKE_OBJ takes a
            // pointer to an AVClass pointer instead of an object.
            unsafe {
                let f = ffi::av_find_input_format(name.as_ptr());
                assert!(!f.is_null(), "{format} input missing");
                let class = (*f).priv_class;
                let bogus = CString::new("no_such_option").unwrap();
                let found = ffi::av_opt_find(
                    &class as *const _ as *mut c_void,
                    bogus.as_ptr(),
                    ptr::null(),
                    0,
                    ffi::AV_OPT_SEARCH_FAKE_OBJ as c_int,
                );
                assert!(found.is_null(), "the lookup must tell options apart");
                for option in options {
                    let o = CString::new(*option).unwrap();
                    let found = ffi::av_opt_find(
                        &class as *const _ as *mut c_void,
                        o.as_ptr(),
                        ptr::null(),
                        0,
                        ffi::AV_OPT_SEARCH_FAKE_OBJ as c_int,
                    );
                    assert!(!found.is_null(), "{format} has no option {option}");
                }
            }
        }
    }

    #[test]
    fn an_unknown_format_is_named() {
        let mut req = lavfi(vec![]);
        req.format = Some("nosuchformat");
        let msg = open(&req, &StopSignal::default())
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("nosuchformat"), "{msg}");
    }
}
